"""xent_rs: fast, numerically stable softmax and cross-entropy losses with fused gradients.

The compute core is Rust (explicit SIMD with runtime CPU dispatch, a private thread pool,
the GIL released while it runs). Semantics follow ``torch.nn.functional``; see
``docs/semantics.md`` in the repository for every decision where PyTorch is silent.

>>> import numpy as np, xent_rs
>>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], dtype=np.float32)
>>> loss, grad = xent_rs.cross_entropy(logits, np.array([0, 2]), return_grad=True)
>>> loss.dtype, grad.shape
(dtype('float32'), (2, 3))
"""

from xent_rs import streaming as _streaming
from xent_rs._core import (
    __version__,  # Cargo.toml's version, compiled into the native module
    get_num_threads,
    get_output_cache,
    set_num_threads,
    set_output_cache,
)
from xent_rs._functional import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    binary_focal_loss_with_logits,
    cross_entropy,
    focal_loss,
    kl_div,
    log_softmax,
    log_softmax_backward,
    logsumexp,
    nll_loss,
    softmax,
    softmax_backward,
)
from xent_rs._linear import LinearGrads, linear_cross_entropy
from xent_rs._scoring import log_loss
from xent_rs.streaming import *  # noqa: F403 (the accumulators: streaming.__all__)

__all__ = [
    # the softmax family
    "log_softmax",
    "softmax",
    "logsumexp",
    "log_softmax_backward",
    "softmax_backward",
    # the losses
    "cross_entropy",
    "nll_loss",
    "focal_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_focal_loss_with_logits",
    "kl_div",
    "linear_cross_entropy",
    "LinearGrads",
    "log_loss",
    # the native core's settings
    "__version__",
    "set_num_threads",
    "get_num_threads",
    "set_output_cache",
    "get_output_cache",
    # the streaming accumulators
    *_streaming.__all__,
]
