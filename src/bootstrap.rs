//! Bootstrap resampling of calibration statistics without copying the inputs.
