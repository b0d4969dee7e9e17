"""Cross-entropy of a linear layer's output and InfoNCE, without the logits matrix."""

from __future__ import annotations

__all__: list[str] = []
