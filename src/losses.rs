//! The cross-entropy variants: focal, sigmoid focal, poly-1, generalized CE, energy margin.
