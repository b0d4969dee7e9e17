"""Float64 reference twins: the cross-entropy variants: focal, sigmoid focal, poly-1, generalized CE, energy margin."""

from __future__ import annotations

__all__: list[str] = []
