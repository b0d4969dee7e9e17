//! Fused linear + cross-entropy and InfoNCE without the logits matrix.
