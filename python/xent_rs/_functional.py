"""The public functions: the softmax family and the cross-entropy losses.

Each function builds the call's checked options (``xent_rs._spec``) and hands them with its
arrays to the backend (``xent_rs._backend``), which picks NumPy's or CuPy's core from the
arrays, converts each argument once, runs the core (on the CPU: ``xent_rs._core``, which
releases the GIL and runs on a private thread pool) and gives the results the input's dtype.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from xent_rs import _backend, _spec
from xent_rs._spec import Reduction


def log_softmax(x: Any, axis: int = -1, *, out: np.ndarray | None = None) -> Any:
    """Logarithm of the softmax along ``axis``, computed stably.

    ``log_softmax(x) = x - logsumexp(x)``, with the maximum of each row subtracted first, so
    large logits neither overflow nor lose the small probabilities.

    Parameters
    ----------
    x : array_like
        Logits (float16, float32 or float64; integers are treated as float64).
    axis : int, default -1
        The class axis. PyTorch's ``(N, C, ...)`` layout is ``axis=1``.
    out : ndarray, optional
        A writable C-contiguous array of ``x``'s shape and dtype to write into (may be ``x``
        itself).

    Returns
    -------
    ndarray
        Log-probabilities, with ``x``'s shape and dtype (``out`` when given). Rows holding
        ``+inf`` or NaN, or made only of ``-inf``, are NaN (as in PyTorch).

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> x = np.array([1000.0, 1.0])
    >>> with np.errstate(all="ignore"):  # the naive formula overflows
    ...     np.log(np.exp(x) / np.exp(x).sum())
    array([ nan, -inf])
    >>> xent_rs.log_softmax(x)
    array([   0., -999.])
    """
    return _backend.normalize(x, axis, out, log=True)


def softmax(x: Any, axis: int = -1, *, out: np.ndarray | None = None) -> Any:
    """Softmax along ``axis``, computed stably: ``exp(x - max) / sum(exp(x - max))``.

    Parameters
    ----------
    x : array_like
        Logits (float16, float32 or float64; integers are treated as float64).
    axis : int, default -1
        The class axis.
    out : ndarray, optional
        A writable C-contiguous array of ``x``'s shape and dtype to write into (may be ``x``).

    Returns
    -------
    ndarray
        Probabilities summing to 1 along ``axis``, with ``x``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> xent_rs.softmax(np.array([1000.0, 1.0, 1000.0]))
    array([0.5, 0. , 0.5])
    """
    return _backend.normalize(x, axis, out, log=False)


def logsumexp(x: Any, axis: int = -1, *, keepdims: bool = False) -> Any:
    """``log(sum(exp(x)))`` along ``axis``, computed stably.

    Parameters
    ----------
    x : array_like
        Values (float16, float32 or float64; integers are treated as float64).
    axis : int, default -1
        The axis to reduce.
    keepdims : bool, default False
        Keep ``axis`` with length 1.

    Returns
    -------
    ndarray or scalar
        ``x``'s dtype; a NumPy scalar for 1-D input without ``keepdims``. A row of ``-inf``
        gives ``-inf``, a row holding ``+inf`` gives ``+inf``, a row holding NaN gives NaN.

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> float(xent_rs.logsumexp(np.array([1000.0, 1000.0])))  # 1000 + log(2)
    1000.6931471805599
    """
    return _backend.logsumexp(x, axis, keepdims)


def log_softmax_backward(grad_output: Any, output: Any, axis: int = -1) -> Any:
    """Vector-Jacobian product of :func:`log_softmax`: ``g - exp(output) * sum(g)``.

    Parameters
    ----------
    grad_output : array_like
        The upstream gradient ``g``, with ``output``'s shape.
    output : array_like
        ``log_softmax(x, axis)``.
    axis : int, default -1
        The class axis used in the forward pass.

    Returns
    -------
    ndarray
        The gradient with respect to ``x``, in ``output``'s dtype.

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> y = xent_rs.log_softmax(np.array([0.0, 0.0]))
    >>> xent_rs.log_softmax_backward(np.array([1.0, 0.0]), y)
    array([ 0.5, -0.5])
    """
    return _backend.backward(grad_output, output, axis, log=True)


def softmax_backward(grad_output: Any, output: Any, axis: int = -1) -> Any:
    """Vector-Jacobian product of :func:`softmax`: ``output * (g - sum(g * output))``.

    Parameters
    ----------
    grad_output, axis
        As in :func:`log_softmax_backward`.
    output : array_like
        ``softmax(x, axis)``.

    Returns
    -------
    ndarray
        As :func:`log_softmax_backward`'s.

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> xent_rs.softmax_backward(np.array([1.0, 0.0]), np.array([0.5, 0.5]))
    array([ 0.25, -0.25])
    """
    return _backend.backward(grad_output, output, axis, log=False)


def cross_entropy(
    input: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_grad: bool = False,
    grad_output: Any = None,
    grad_out: np.ndarray | None = None,
) -> Any:
    """Cross entropy between logits and class targets, optionally with its gradient.

    Follows ``torch.nn.functional.cross_entropy``: hard targets (integer class indices) or
    soft targets (class probabilities, same shape as ``input``), class weights,
    ``ignore_index``, label smoothing, and the ``none``/``mean``/``sum`` reductions. With
    ``return_grad=True`` the loss and ``d loss / d input`` come from one fused pass.

    Parameters
    ----------
    input : array_like
        Logits, with the classes along ``axis``.
    target : array_like
        Integer class indices with ``input``'s shape minus ``axis`` (any integer dtype), or
        floating class probabilities with ``input``'s shape.
    axis : int, default -1
        The class axis. PyTorch's ``(N, C, d1, ...)`` layout is ``axis=1``; a 1-D input is one
        sample with a 0-d target.
    weight : array_like, optional
        Per-class weights, shape ``(C,)``.
    sample_weight : array_like, optional
        Per-sample weights with the target's shape (hard) or ``input``'s shape minus ``axis``
        (soft); multiplies each sample's loss and, for ``mean``, the denominator.
    ignore_index : int, default -100
        Hard targets equal to this contribute nothing (loss and gradient 0).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``mean`` divides by the summed weight of the counted samples (hard) or by the number
        of samples (soft), like torch; with nothing counted it is NaN and the gradient zero.
    label_smoothing : float, default 0.0
        In ``[0, 1]``: mixes the target with the uniform distribution (torch's formula).
    z_loss : float, default 0.0
        ``s >= 0``: each sample's loss gains ``s * w[y] * lse**2`` (``s * lse**2`` for soft
        targets), ``lse`` the logsumexp of its (capped) logits: PaLM's auxiliary loss that
        keeps the logits' normaliser near 1 (Liger Kernel's ``lse_square_scale``).
    softcap : float, optional
        ``c > 0``: the logits become ``c * tanh(x / c)`` before anything else (Gemma 2's logit
        soft-capping); the gradient goes through the cap. ``None`` (default) leaves them.
    return_grad : bool, default False
        Also return the gradient with respect to ``input``.
    grad_output : float or array_like, optional
        Upstream gradient: a scalar for ``mean``/``sum`` (default 1), an array of the loss's
        shape for ``none`` (default ones).
    grad_out : ndarray, optional
        With ``return_grad``: a writable C-contiguous array of ``input``'s shape and dtype that
        receives the gradient; may be ``input`` itself (it is then overwritten).

    Returns
    -------
    loss : scalar or ndarray
        A NumPy scalar of ``input``'s dtype, or per-sample losses for ``none``.
    grad : ndarray
        Only with ``return_grad=True``: the gradient, with ``input``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> logits = np.array([[1000.0, 1.0], [0.0, 0.0]])
    >>> loss, grad = xent_rs.cross_entropy(logits, np.array([1, 0]), return_grad=True)
    >>> round(float(loss), 9)  # (999 + log 2) / 2
    499.84657359
    >>> grad
    array([[ 0.5 , -0.5 ],
           [-0.25,  0.25]])
    """
    spec = _spec.cross_entropy(
        axis, ignore_index, reduction, label_smoothing, z_loss, softcap, return_grad
    )
    return _backend.class_loss(spec, input, target, weight, sample_weight, grad_output, grad_out)


def nll_loss(
    input: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    return_grad: bool = False,
    grad_output: Any = None,
) -> Any:
    """Negative log-likelihood of log-probabilities, optionally with its gradient.

    Follows ``torch.nn.functional.nll_loss``: ``-weight[y] * input[y]`` per sample, with the
    same weighting, ``ignore_index`` and reductions as :func:`cross_entropy` (which equals
    ``nll_loss(log_softmax(input), target)``). The input is not checked to be
    log-probabilities.

    Parameters
    ----------
    input : array_like
        Log-probabilities, classes along ``axis``.
    target : array_like
        Integer class indices with ``input``'s shape minus ``axis``.
    axis, weight, sample_weight, ignore_index, reduction, return_grad, grad_output
        As in :func:`cross_entropy`.

    Returns
    -------
    loss, grad : as :func:`cross_entropy`'s (``grad`` only with ``return_grad=True``)

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> float(xent_rs.nll_loss(np.log(np.array([[0.25, 0.75]])), np.array([1])))
    0.2876820724517809
    """
    spec = _spec.nll_loss(axis, ignore_index, reduction, return_grad)
    return _backend.class_loss(spec, input, target, weight, sample_weight, grad_output, None)


def focal_loss(
    input: Any,
    target: Any,
    *,
    axis: int = -1,
    gamma: float = 2.0,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    return_grad: bool = False,
    grad_output: Any = None,
    grad_out: np.ndarray | None = None,
) -> Any:
    """Multiclass (softmax) focal loss of logits and class indices, optionally with its gradient.

    Lin et al.'s focal loss on the softmax: with ``p`` the probability of the target class,
    each sample's loss is ``-w[y] * (1 - p)**gamma * log p``, which down-weights the samples
    the model already gets right. ``1 - p`` is computed as ``-expm1(log p)``, without
    cancellation near ``p = 1``. ``gamma = 0`` is exactly :func:`cross_entropy`; the loss and
    its gradient come from one fused pass.

    Parameters
    ----------
    input : array_like
        Logits, with the classes along ``axis``.
    target : array_like
        Integer class indices with ``input``'s shape minus ``axis``.
    gamma : float, default 2.0
        The focusing exponent, ``>= 0``.
    axis, weight, sample_weight, ignore_index, reduction, return_grad, grad_output, grad_out
        As in :func:`cross_entropy` (``mean`` divides by the summed weight of the counted
        samples).

    Returns
    -------
    loss : scalar or ndarray
        A NumPy scalar of ``input``'s dtype, or per-sample losses for ``none``.
    grad : ndarray
        Only with ``return_grad=True``.

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> x, y = np.array([[2.0, 0.0], [0.0, 0.0]]), np.array([0, 0])
    >>> bool(xent_rs.focal_loss(x, y, gamma=2.0) < xent_rs.cross_entropy(x, y))
    True
    >>> bool(xent_rs.focal_loss(x, y, gamma=0.0) == xent_rs.cross_entropy(x, y))
    True
    """
    spec = _spec.focal_loss(axis, gamma, ignore_index, reduction, return_grad)
    return _backend.class_loss(spec, input, target, weight, sample_weight, grad_output, grad_out)


def binary_cross_entropy(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    reduction: Reduction = "mean",
    return_grad: bool = False,
    grad_output: Any = None,
) -> Any:
    """Binary cross entropy of probabilities, optionally with its gradient.

    Follows ``torch.nn.functional.binary_cross_entropy``: each log term is clamped at -100,
    and the gradient is ``w (p - y) / max(p (1 - p), 1e-12)``.

    Parameters
    ----------
    input : array_like
        Probabilities in ``[0, 1]`` (anything else, NaN included, is a ``ValueError``).
    target : array_like
        Targets with ``input``'s shape (usually 0 or 1).
    weight : array_like, optional
        Weights broadcast against ``input``.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``mean`` divides by the number of elements.
    return_grad : bool, default False
        Also return the gradient with respect to ``input``.
    grad_output : float or array_like, optional
        As in :func:`cross_entropy` (per element for ``none``).

    Returns
    -------
    loss : scalar or ndarray
    grad : ndarray
        Only with ``return_grad=True``.

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> loss = xent_rs.binary_cross_entropy(np.array([0.0, 0.5]), np.array([1.0, 1.0]))
    >>> round(float(loss), 9)  # (100 + log 2) / 2: the log term is clamped at -100
    50.34657359
    """
    spec = _spec.binary_cross_entropy(reduction, return_grad)
    return _backend.binary_loss(spec, input, target, weight, None, grad_output)


def binary_cross_entropy_with_logits(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    reduction: Reduction = "mean",
    return_grad: bool = False,
    grad_output: Any = None,
) -> Any:
    """Binary cross entropy of logits, stable for any logit, optionally with its gradient.

    Follows ``torch.nn.functional.binary_cross_entropy_with_logits``:
    ``w [(1 - y) x + (1 + (pw - 1) y) (log(1 + exp(-|x|)) + max(-x, 0))]``.

    Parameters
    ----------
    input : array_like
        Logits.
    target : array_like
        Targets with ``input``'s shape.
    pos_weight : array_like, optional
        Weight of the positive class, broadcast against ``input`` (usually shape ``(C,)`` for
        classes along the last axis).
    weight, reduction, return_grad, grad_output
        As in :func:`binary_cross_entropy`.

    Returns
    -------
    loss, grad
        As :func:`binary_cross_entropy`'s.

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> xent_rs.binary_cross_entropy_with_logits(
    ...     np.array([-1000.0, 0.0]), np.array([0.0, 1.0]), reduction="none")
    array([0.        , 0.69314718])
    """
    spec = _spec.binary_cross_entropy_with_logits(reduction, return_grad)
    return _backend.binary_loss(spec, input, target, weight, pos_weight, grad_output)


def binary_focal_loss_with_logits(
    input: Any,
    target: Any,
    *,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    weight: Any = None,
    reduction: Reduction = "mean",
    return_grad: bool = False,
    grad_output: Any = None,
) -> Any:
    """Binary (sigmoid) focal loss of logits, RetinaNet's, optionally with its gradient.

    torchvision's ``sigmoid_focal_loss``: with ``p = sigmoid(x)`` and ``p_t = p y + (1 - p)
    (1 - y)``, each element's loss is ``ce * (1 - p_t)**gamma``, ``ce`` the binary cross entropy
    of the logit, times ``alpha y + (1 - alpha) (1 - y)`` unless ``alpha`` is ``None``, times
    ``weight``. Finite for any logit; the loss and its gradient come from one fused pass.

    Parameters
    ----------
    input : array_like
        Logits.
    target : array_like
        Targets with ``input``'s shape (usually 0 or 1).
    gamma : float, default 2.0
        The focusing exponent, ``>= 0``.
    alpha : float or None, default 0.25
        The weight of the positive class, in ``[0, 1]`` (``1 - alpha`` for the negative
        class); ``None`` for none.
    weight, reduction, return_grad, grad_output
        As in :func:`binary_cross_entropy` (``mean`` is over the elements; torchvision's
        default reduction is ``"none"``).

    Returns
    -------
    loss, grad
        As :func:`binary_cross_entropy`'s.

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> x, y = np.array([3.0, -1.0]), np.array([1.0, 1.0])
    >>> loss = xent_rs.binary_focal_loss_with_logits(x, y, gamma=0.0, alpha=None)
    >>> bool(np.isclose(loss, xent_rs.binary_cross_entropy_with_logits(x, y)))
    True
    """
    spec = _spec.binary_focal_loss_with_logits(gamma, alpha, reduction, return_grad)
    return _backend.binary_loss(spec, input, target, weight, None, grad_output)


def kl_div(
    input: Any,
    target: Any,
    *,
    reduction: Literal["none", "mean", "sum", "batchmean"] = "mean",
    log_target: bool = False,
    return_grad: bool = False,
    grad_output: Any = None,
) -> Any:
    """Kullback-Leibler divergence of log-probabilities from a target, with its gradient.

    ``torch.nn.functional.kl_div``: ``input`` holds log-probabilities, ``target``
    probabilities (log-probabilities with ``log_target=True``); pointwise
    ``t * (log t - input)``, 0 where ``t = 0`` (``exp(t) * (t - input)`` with ``log_target``).

    Parameters
    ----------
    input : array_like
        Log-probabilities.
    target : array_like
        Probabilities (or log-probabilities) with ``input``'s shape.
    reduction : {"mean", "batchmean", "sum", "none"}, default "mean"
        ``mean`` divides by the number of elements (torch's, which is not the divergence per
        sample), ``batchmean`` by ``input.shape[0]`` (the divergence per sample).
    log_target : bool, default False
        ``target`` holds log-probabilities.
    return_grad, grad_output
        As in :func:`cross_entropy` (per element for ``none``).

    Returns
    -------
    loss : scalar or ndarray
    grad : ndarray
        Only with ``return_grad=True``: the gradient with respect to ``input``.

    Examples
    --------
    >>> import numpy as np, xent_rs
    >>> p, q = np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])
    >>> round(float(xent_rs.kl_div(np.log(q), p, reduction="batchmean")), 6)  # KL(p || q)
    0.510826
    """
    spec = _spec.kl_div(reduction, log_target, return_grad)
    return _backend.kl_div(spec, input, target, grad_output)
