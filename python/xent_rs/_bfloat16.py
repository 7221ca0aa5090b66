"""bfloat16 arguments (``ml_dtypes.bfloat16``), recognised without importing ``ml_dtypes``.

The core reads bfloat16 natively: its kernels widen the values to float32 a row, tile or
chunk at a time and round their results back to bfloat16 (no float32 copy of the input), so
a bfloat16 array only needs to be C-contiguous and aligned. Its dtype is one NumPy does not
define (kind ``"V"``, two bytes, named ``bfloat16``): an array of it exists only where
``ml_dtypes`` is installed, and is known here by that name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: bfloat16's machine epsilon (8 significant bits), ``ml_dtypes.finfo(bfloat16).eps``:
#: ``log_loss`` clips bfloat16 probabilities with it, as it clips others with their dtype's.
EPS = 2.0**-7


def is_bfloat16(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is ``ml_dtypes.bfloat16``."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"


def ready(a: np.ndarray) -> np.ndarray:
    """A bfloat16 array as the core reads it: ``a`` itself when C-contiguous and aligned,
    else one bfloat16 copy (never a float32 one)."""
    flags = a.flags
    if flags.c_contiguous and flags.aligned:
        return a
    return np.require(a, a.dtype, ("C_CONTIGUOUS", "ALIGNED"))
