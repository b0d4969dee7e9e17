"""Float64 reference twins: cross-entropy of a linear layer's output and InfoNCE, without the logits matrix."""

from __future__ import annotations

__all__: list[str] = []
