"""Type aliases shared by the xent_rs stubs (stub-only: there is no runtime module)."""

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
Reduced = Literal["mean", "sum"]
Unreduced = Literal["none"]
Reduction = Literal["mean", "sum", "none"]
No = Literal[False]
Yes = Literal[True]
