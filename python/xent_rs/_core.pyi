"""Type stubs of the private native module ``xent_rs._core`` (see ``src/py/``).

Float arrays are C-contiguous float32, float64 or bfloat16 (``ml_dtypes.bfloat16``, read
natively and computed in float32); every float argument of a call (targets, weights,
``grad_output``, ``out``/``grad_out``) has the input's dtype, and so do the results.

There is one function per loss family; its first argument is the call's options, the
``xent_rs._spec`` object the Python layer built, read by attribute (and checked again). A
broadcast weight of ``binary_loss`` is ``(distinct values or None, repeat count)``, as
``xent_rs._backend.broadcast`` gives it.
"""

from typing import Any, Final, final

import numpy as np

from xent_rs._spec import BinaryLoss, ClassLoss, KlDiv

__all__ = [
    "LogLossSummary",
    "Partial",
    "__version__",
    "binary_loss",
    "class_loss",
    "cross_entropy_denominator",
    "get_num_threads",
    "get_output_cache",
    "kl_div",
    "log_loss",
    "logsumexp",
    "matmul",
    "set_num_threads",
    "set_output_cache",
    "set_simd_level",
    "simd_level",
    "softmax",
    "softmax_backward",
    "supported_simd_levels",
]

__version__: str

def softmax(x: np.ndarray, axis: int, out: np.ndarray | None, log: bool) -> np.ndarray: ...
def logsumexp(x: np.ndarray, axis: int) -> np.ndarray: ...
def softmax_backward(
    grad_output: np.ndarray, output: np.ndarray, axis: int, log: bool
) -> np.ndarray: ...
def class_loss(
    spec: ClassLoss,
    input: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None,
    sample_weight: np.ndarray | None,
    grad_output: float | np.ndarray | None,
    grad_out: np.ndarray | None,
    partial: bool | None = None,
) -> Any: ...
def cross_entropy_denominator(
    target: np.ndarray,
    classes: int,
    weight: np.ndarray | None,
    sample_weight: np.ndarray | None,
    ignore_index: int,
) -> float: ...
def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, accumulate: bool) -> None: ...
def binary_loss(
    spec: BinaryLoss,
    input: np.ndarray,
    target: np.ndarray,
    weight: tuple[np.ndarray | None, int],
    pos_weight: tuple[np.ndarray | None, int],
    grad_output: float | np.ndarray | None,
    partial: bool | None = None,
) -> Any: ...
def kl_div(
    spec: KlDiv,
    input: np.ndarray,
    target: np.ndarray,
    grad_output: float | np.ndarray | None,
    partial: bool | None = None,
) -> Any: ...

@final
class Partial:
    """One chunk's contribution to a streaming loss (a loss called with ``partial=``); its
    attributes are read-only."""

    loss_sum: Final[float]
    denominator: Final[float]
    count: Final[int]
    losses: Final[np.ndarray | None]

@final
class LogLossSummary:
    """What one native log-loss pass found; its attributes are read-only."""

    loss_sum: Final[float]
    weight_sum: Final[float]
    out_of_range: Final[bool]
    normalized: Final[bool]
    labels_in_range: Final[bool]
    seen: Final[np.ndarray]

def log_loss(
    proba: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    eps: float,
    sum_rtol: float,
) -> LogLossSummary: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_output_cache(max_bytes: int) -> None: ...
def get_output_cache() -> int: ...
def simd_level() -> str: ...
def set_simd_level(name: str) -> None: ...
def supported_simd_levels() -> list[str]: ...
