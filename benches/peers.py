"""Workloads, NumPy references and peer calls for ``benches/compare.py``.

Nothing here times anything. This module says *what* is measured:

* :func:`workloads` lists the workloads (W1-W7 and the size sweep). Every array of a workload
  is generated from a fixed seed, one random stream per array, so the main process and the jax
  subprocesses see bit-identical inputs whatever order they build them in.
* :data:`OPS` names the ops; :func:`floor_bytes` gives the bytes each op must at least read and
  write (the memory-bandwidth floor).
* ``build_<lib>(op, data)`` returns a :class:`Call` (the timed callable and an optional untimed
  per-repeat setup) or ``None`` where the library has no counterpart for the op. Each timed
  callable returns its outputs, so that their allocation and release are part of the timed call
  and the harness can cross-check the values.

The NumPy references follow ``shared/peers/baseline-speed.md``: the forward CE is
``scipy.special.log_softmax`` + ``take_along_axis`` + ``mean``; the CE forward+gradient is a
hand-written reference that works in one buffer (max, shift, exp in place, sum, scale, subtract
the one-hot), which is the strongest plain-NumPy way to get the gradient.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

IGNORE_INDEX = -100
LABEL_SMOOTHING = 0.1
IGNORED_FRACTION = 0.1
Z_LOSS = 1e-4  # PaLM's z-loss scale
SOFTCAP = 30.0  # Gemma 2's final-logit cap
GAMMA = 2.0  # the focal losses' usual gamma
ALPHA = 0.25  # RetinaNet's alpha

# op id -> label printed in the tables.
OPS: dict[str, str] = {
    "ce_fwd": "CE fwd (mean)",
    "ce_fwdbwd": "CE fwd+grad, fresh grad",
    "ce_fwdbwd_buf": "CE fwd+grad, grad_out=buf (reused)",
    "ce_fwdbwd_inplace": "CE fwd+grad, grad_out=x (in place)",
    "ce_wls_fwdbwd": "CE weight+ignore_index+label_smoothing=0.1 fwd+grad",
    "log_softmax": "log_softmax, fresh output",
    "log_softmax_out": "log_softmax, out=buf",
    "bce_logits_fwd": "BCE-with-logits fwd",
    "bce_logits_fwdbwd": "BCE-with-logits fwd+grad",
    "bce_prob_fwd": "BCE on probabilities fwd",
    "bce_prob_fwdbwd": "BCE on probabilities fwd+grad",
    "log_loss_labels": "log_loss(y, proba, labels=...)",
    "log_loss": "log_loss(y, proba), labels inferred",
    "ce_sum": "CE fwd (sum) [W1: class weights]",
    "acc_update": "CrossEntropyAccumulator.update [W1: class weights]",
    "ce_none": "CE fwd (none) [W1: class weights]",
    "acc_update_losses": "CrossEntropyAccumulator.update(return_losses=True) [W1: weights]",
    "ce_z_fwdbwd": f"CE + z_loss={Z_LOSS:g} fwd+grad",
    "ce_cap_fwdbwd": f"CE softcap={SOFTCAP:g} fwd+grad",
    "focal_fwdbwd": f"focal_loss gamma={GAMMA:g} fwd+grad",
    "bfocal_fwdbwd": f"binary_focal_loss_with_logits gamma={GAMMA:g} alpha={ALPHA:g} fwd+grad",
    "kl_fwdbwd": "kl_div(log_softmax(x), probabilities) batchmean fwd+grad",
    "ce_f16_fwd": "CE fwd, float16 input",
    "ce_bf16_fwd": "CE fwd, bfloat16 input",
}

# xent_rs ops timed against another xent_rs op on the same arrays, with the largest ratio
# allowed: an accumulator's update against the one-shot call it mirrors (one native pass
# either way), an option against the plain call, bfloat16 against float16.
MIRRORS: dict[str, tuple[str, float]] = {
    "acc_update": ("ce_sum", 1.25),
    "acc_update_losses": ("ce_none", 1.25),
    "ce_z_fwdbwd": ("ce_fwdbwd", 1.10),
    "ce_cap_fwdbwd": ("ce_fwdbwd", 1.5),
    "ce_bf16_fwd": ("ce_f16_fwd", 1.0),
}
ACC_OPS = ("ce_sum", "acc_update", "ce_none", "acc_update_losses")
#: The options of cross entropy beyond the first release, and the focal losses.
OPTION_OPS = ("ce_z_fwdbwd", "ce_cap_fwdbwd")
FOCAL_OPS = ("focal_fwdbwd", "bfocal_fwdbwd")
HALF_OPS = ("ce_f16_fwd", "ce_bf16_fwd")

# The op whose torch result a variant is checked against (torch has no grad_out=).
REF_OP: dict[str, str] = {"ce_fwdbwd_buf": "ce_fwdbwd", "ce_fwdbwd_inplace": "ce_fwdbwd"}

# Short names for the plot.
OP_SHORT: dict[str, str] = {
    "ce_fwd": "CE fwd",
    "ce_fwdbwd": "CE f+g",
    "ce_fwdbwd_buf": "f+g buf",
    "ce_fwdbwd_inplace": "f+g in-place",
    "ce_wls_fwdbwd": "w+ign+ls f+g",
    "log_softmax": "log_softmax",
    "log_softmax_out": "ls out=",
    "bce_logits_fwd": "BCEl fwd",
    "bce_logits_fwdbwd": "BCEl f+g",
    "bce_prob_fwd": "BCE fwd",
    "bce_prob_fwdbwd": "BCE f+g",
    "log_loss_labels": "log_loss lab",
    "log_loss": "log_loss",
    "ce_sum": "CE sum",
    "acc_update": "acc update",
    "ce_none": "CE none",
    "acc_update_losses": "acc update+losses",
    "ce_z_fwdbwd": "z-loss f+g",
    "ce_cap_fwdbwd": "softcap f+g",
    "focal_fwdbwd": "focal f+g",
    "bfocal_fwdbwd": "bin. focal f+g",
    "kl_fwdbwd": "kl_div f+g",
    "ce_f16_fwd": "CE f16",
    "ce_bf16_fwd": "CE bf16",
}

CE_OPS = (
    "ce_fwd",
    "ce_fwdbwd",
    "ce_fwdbwd_buf",
    "ce_fwdbwd_inplace",
    "ce_wls_fwdbwd",
    "log_softmax",
    "log_softmax_out",
)
LOG_LOSS_OPS = ("log_loss_labels", "log_loss")


@dataclasses.dataclass(frozen=True)
class Workload:
    """One input shape and the ops timed on it.

    ``kind`` is ``"ce"`` (logits with a class axis and integer labels), ``"binary"`` (one logit
    or probability per sample) or ``"multilabel"`` (independent logits with a per-class
    ``pos_weight``). ``group`` is what ``--only`` matches (the name, or ``"sweep"``).
    """

    name: str
    title: str
    kind: str
    shape: tuple[int, ...]
    axis: int
    seed: int
    ops: tuple[str, ...]
    group: str

    @property
    def n_classes(self) -> int:
        return self.shape[self.axis] if self.kind == "ce" else 2

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))

    def describe(self) -> str:
        dims = " x ".join(f"{d:,}" for d in self.shape)
        axis = f", class axis {self.axis}" if self.kind == "ce" else ""
        return f"{self.title} ({dims}, float32{axis})"


def workloads(quick: bool) -> list[Workload]:
    """The workloads in table order; ``quick`` shrinks each one 16x (sweep: up to 10^6)."""
    div = 16 if quick else 1
    specs: list[tuple[str, str, str, tuple[int, ...], int, tuple[str, ...]]] = [
        (
            "W1",
            "small-C scoring",
            "ce",
            (1_048_576 // div, 10),
            -1,
            CE_OPS + LOG_LOSS_OPS + ACC_OPS + FOCAL_OPS,
        ),
        (
            "W2",
            "mid-C",
            "ce",
            (65_536 // div, 1_000),
            -1,
            CE_OPS + LOG_LOSS_OPS + ACC_OPS + OPTION_OPS + FOCAL_OPS + ("kl_fwdbwd",) + HALF_OPS,
        ),
        ("W3", "LLM vocab", "ce", (2_048 // div, 32_000), -1, CE_OPS + OPTION_OPS),
        ("W4", "big vocab", "ce", (512 // div, 128_256), -1, CE_OPS),
        ("W5", "segmentation NCHW", "ce", (16 // div or 1, 21, 256, 256), 1, CE_OPS),
        (
            "W6",
            "binary, one logit / probability per sample",
            "binary",
            (16_777_216 // div,),
            -1,
            (
                "bce_logits_fwd",
                "bce_logits_fwdbwd",
                "bce_prob_fwd",
                "bce_prob_fwdbwd",
                "bfocal_fwdbwd",
                *LOG_LOSS_OPS,
            ),
        ),
        (
            "W7",
            "multilabel BCE-with-logits + per-class pos_weight",
            "multilabel",
            (262_144 // div, 64),
            -1,
            ("bce_logits_fwd", "bce_logits_fwdbwd"),
        ),
    ]
    out = [
        Workload(name, title, kind, shape, axis, 1000 + i, ops, name)
        for i, (name, title, kind, shape, axis, ops) in enumerate(specs)
    ]
    top = 10**6 if quick else 10**8
    for c in (10, 1_000):
        size = 10 if c == 10 else 1_000
        while size <= top:
            n = size // c
            out.append(
                Workload(
                    f"sweep-C{c}-N{n}",
                    "size sweep",
                    "ce",
                    (n, c),
                    -1,
                    2000 + c + len(str(size)),
                    ("ce_fwd",),
                    "sweep",
                )
            )
            size *= 10
    return out


class Data:
    """The arrays of one workload, each generated on first use from its own seeded stream."""

    _STREAMS = ("x", "y", "ignore", "w", "t", "pw")

    def __init__(self, wl: Workload) -> None:
        self.wl = wl
        self.axis = wl.axis

    def _rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng([self.wl.seed, self._STREAMS.index(name)])

    @functools.cached_property
    def x(self) -> np.ndarray:
        """Logits: standard normal * 3, float32."""
        x = self._rng("x").standard_normal(self.wl.shape, dtype=np.float32)
        x *= 3
        return x

    @functools.cached_property
    def label_shape(self) -> tuple[int, ...]:
        shape = list(self.wl.shape)
        del shape[self.axis]
        return tuple(shape)

    @functools.cached_property
    def y(self) -> np.ndarray:
        """Integer class labels (int64), shape = input shape without the class axis."""
        c = self.wl.n_classes
        return self._rng("y").integers(0, c, size=self.label_shape, dtype=np.int64)

    @functools.cached_property
    def y_ignore(self) -> np.ndarray:
        """``y`` with about 10% of the labels set to ``ignore_index`` (-100)."""
        mask = self._rng("ignore").random(self.label_shape) < IGNORED_FRACTION
        return np.where(mask, IGNORE_INDEX, self.y)

    @functools.cached_property
    def w(self) -> np.ndarray:
        """Per-class weights in [0.5, 1.5), float32."""
        return self._rng("w").uniform(0.5, 1.5, self.wl.n_classes).astype(np.float32)

    @functools.cached_property
    def t(self) -> np.ndarray:
        """0/1 BCE targets as float32 (torch wants floating targets)."""
        return (self._rng("t").random(self.wl.shape) < 0.5).astype(np.float32)

    @functools.cached_property
    def t_int(self) -> np.ndarray:
        """The same 0/1 targets as int64, for ``log_loss``."""
        return self.t.astype(np.int64)

    @functools.cached_property
    def p(self) -> np.ndarray:
        """Probabilities sigmoid(x), float32."""
        with np.errstate(over="ignore"):
            return (1 / (1 + np.exp(-self.x))).astype(np.float32)

    @functools.cached_property
    def pw(self) -> np.ndarray | None:
        """Per-class ``pos_weight`` in [0.5, 4) for the multilabel workload, else ``None``."""
        if self.wl.kind != "multilabel":
            return None
        return self._rng("pw").uniform(0.5, 4.0, self.wl.shape[-1]).astype(np.float32)

    @functools.cached_property
    def proba(self) -> np.ndarray:
        """What ``log_loss`` gets: softmax(x) (float32) for CE workloads, ``p`` for binary."""
        if self.wl.kind == "binary":
            return self.p
        e = self.x - self.x.max(axis=self.axis, keepdims=True)
        np.exp(e, out=e)
        e /= e.sum(axis=self.axis, keepdims=True)
        return e

    @functools.cached_property
    def logp(self) -> np.ndarray:
        """log_softmax(x) along the class axis, float32 (``kl_div``'s input)."""
        import scipy.special

        return scipy.special.log_softmax(self.x, axis=self.axis).astype(np.float32)

    @functools.cached_property
    def kl_target(self) -> np.ndarray:
        """``kl_div``'s target: the probabilities of the rows in reverse order (another
        distribution than ``exp(logp)``'s, so that the divergence is not 0)."""
        return np.ascontiguousarray(self.proba[::-1])

    @functools.cached_property
    def x16(self) -> np.ndarray:
        return self.x.astype(np.float16)

    @functools.cached_property
    def xbf16(self) -> np.ndarray | None:
        """``x`` in bfloat16, or ``None`` without ``ml_dtypes``."""
        try:
            import ml_dtypes
        except ImportError:
            return None
        return self.x.astype(ml_dtypes.bfloat16)

    @functools.cached_property
    def log_loss_y(self) -> np.ndarray:
        return self.t_int if self.wl.kind == "binary" else self.y

    @functools.cached_property
    def log_loss_labels(self) -> np.ndarray:
        return np.arange(self.wl.n_classes)

    def all_labels_present(self) -> bool:
        """Whether every class occurs in the labels (else inferred-label log_loss is refused)."""
        return np.unique(self.log_loss_y).size == self.log_loss_labels.size


def floor_bytes(op: str, wl: Workload) -> int:
    """Bytes the op must at least read once and write once (float32 data, int64 labels)."""
    kind = wl.kind
    x = wl.n_elements * 4
    y = wl.n_elements // wl.n_classes * 8 if kind == "ce" else wl.n_elements * 8
    if op.startswith("log_loss"):
        return x + y
    if op in HALF_OPS:
        return x // 2 + y
    if op in ("bfocal_fwdbwd", "kl_fwdbwd"):
        return 3 * x
    if op in OPTION_OPS or op == "focal_fwdbwd":
        return 2 * x + y
    if kind == "ce":
        if op in ("ce_fwd", "ce_sum", "acc_update"):
            return x + y
        if op in ("ce_none", "acc_update_losses"):
            return x + y + wl.n_elements // wl.n_classes * 4
        if op in ("ce_fwdbwd", "ce_fwdbwd_buf", "ce_fwdbwd_inplace"):
            return 2 * x + y
        if op == "ce_wls_fwdbwd":
            return 2 * x + y + wl.n_classes * 4
        if op.startswith("log_softmax"):
            return 2 * x
    extra = wl.shape[-1] * 4 if kind == "multilabel" else 0  # pos_weight
    if op.endswith("_fwd"):
        return 2 * x + extra
    return 3 * x + extra


@dataclasses.dataclass
class Call:
    """A timed callable; ``setup`` (if any) runs, untimed, before each call."""

    fn: Callable[[], Any]
    setup: Callable[[], Any] | None = None


# --------------------------------------------------------------------------- NumPy references


def _expand(a: np.ndarray, axis: int) -> np.ndarray:
    return np.expand_dims(a, axis)


def np_ce_fwd(x: np.ndarray, y: np.ndarray, axis: int) -> np.floating:
    """Mean hard-label CE: scipy log_softmax, gather the target column, mean."""
    import scipy.special

    lp = scipy.special.log_softmax(x, axis=axis)
    return -np.take_along_axis(lp, _expand(y, axis), axis).mean()


def np_ce_fwdbwd(
    x: np.ndarray, y: np.ndarray, axis: int, out: np.ndarray | None = None
) -> tuple[np.floating, np.ndarray]:
    """Mean CE and its gradient, computed in one N x C buffer (``out`` may be ``x``)."""
    n = y.size
    g = np.empty_like(x) if out is None else out
    yk = _expand(y, axis)
    m = x.max(axis=axis, keepdims=True)
    np.subtract(x, m, out=g)
    zy = np.take_along_axis(g, yk, axis)
    np.exp(g, out=g)
    s = g.sum(axis=axis, keepdims=True)
    loss = np.mean(np.log(s) - zy, dtype=np.float64)
    np.multiply(g, np.float32(1.0 / n) / s, out=g)
    np.put_along_axis(g, yk, np.take_along_axis(g, yk, axis) - np.float32(1.0 / n), axis)
    return np.float32(loss), g


def _class_dot(a: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """sum_c w[c] * a[..., c, ...] over the class axis."""
    nd = a.ndim
    axis %= nd
    if axis == nd - 1:
        return a @ w
    return np.einsum(a, list(range(nd)), w, [axis], [i for i in range(nd) if i != axis])


def np_ce_wls_fwdbwd(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, axis: int, eps: float
) -> tuple[np.floating, np.ndarray]:
    """Mean CE with class weights, ignore_index and label smoothing, and its gradient.

    Torch's definition: ``l_i = (1-eps) w[y_i] (-log p_iy) + eps/C sum_c w_c (-log p_ic)`` over
    the non-ignored samples, divided by ``sum w[y_i]`` over them. The gradient row is
    ``[((1-eps) w_y + eps/C W) p_c - eps/C w_c - (1-eps) w_y [c == y]] / denom`` (``W = sum w``),
    zero for ignored samples. One N x C buffer plus per-row vectors.
    """
    nd = x.ndim
    ax = axis % nd
    c = x.shape[ax]
    valid = y != IGNORE_INDEX
    ys = np.where(valid, y, 0)
    yk = _expand(ys, ax)
    g = np.empty_like(x)
    np.subtract(x, x.max(axis=ax, keepdims=True), out=g)
    zy = np.take_along_axis(g, yk, ax).squeeze(ax)
    wz = _class_dot(g, w, ax)
    np.exp(g, out=g)
    s = g.sum(axis=ax)
    ls = np.log(s)
    wy = np.where(valid, w[ys], np.float32(0))
    w_sum = float(w.sum(dtype=np.float64))
    denom = float(wy.sum(dtype=np.float64))
    nll = (wy * (ls - zy)).sum(dtype=np.float64)
    smooth = np.where(valid, w_sum * ls - wz, np.float32(0)).sum(dtype=np.float64)
    loss = ((1 - eps) * nll + eps / c * smooth) / denom
    coef = ((1 - eps) * wy + (eps / c * w_sum) * valid) / (denom * s)
    np.multiply(g, _expand(coef.astype(np.float32), ax), out=g)
    w_b = (w * np.float32(eps / c / denom)).reshape((c,) + (1,) * (nd - 1 - ax))
    np.subtract(g, w_b, out=g)
    hit = _expand(((1 - eps) * wy / denom).astype(np.float32), ax)
    np.put_along_axis(g, yk, np.take_along_axis(g, yk, ax) - hit, ax)
    np.moveaxis(g, ax, -1)[~valid] = 0
    return np.float32(loss), g


def np_bce_logits(
    x: np.ndarray, t: np.ndarray, pw: np.ndarray | None, grad: bool
) -> np.floating | tuple[np.floating, np.ndarray]:
    """Mean BCE-with-logits (torch's pos_weight formula), optionally with its gradient."""
    import scipy.special

    n = x.size
    zero = np.float32(0)
    if pw is None:
        loss = np.mean(np.logaddexp(zero, x) - x * t)
        if not grad:
            return loss
        g = scipy.special.expit(x)
        g -= t
        g *= np.float32(1 / n)
        return loss, g
    coef = 1 + (pw - 1) * t
    loss = np.mean((1 - t) * x + coef * np.logaddexp(zero, -x))
    if not grad:
        return loss
    g = scipy.special.expit(-x)
    g *= coef
    np.subtract(1 - t, g, out=g)
    g *= np.float32(1 / n)
    return loss, g


def np_bce(p: np.ndarray, t: np.ndarray, grad: bool) -> np.floating | tuple[np.floating, Any]:
    """Mean BCE on probabilities, log terms clamped at -100 as torch does."""
    with np.errstate(divide="ignore"):
        loss = -np.mean(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))
    if not grad:
        return loss
    g = (p - t) / np.maximum(p * (1 - p), np.float32(1e-12))
    g *= np.float32(1 / p.size)
    return loss, g


def np_ce_option_fwdbwd(
    x: np.ndarray, y: np.ndarray, z: float, cap: float | None
) -> tuple[np.floating, np.ndarray]:
    """Mean CE with z-loss and soft-capping, and its gradient, as a NumPy user writes it:
    cap with ``tanh``, one log-softmax buffer, the chain rule by hand."""
    n = y.size
    yk = y[:, None]
    c = None if cap is None else np.tanh(x / np.float32(cap))
    xc = x if c is None else np.float32(cap) * c
    m = xc.max(axis=1, keepdims=True)
    g = np.exp(xc - m)
    s = g.sum(axis=1, keepdims=True)
    lse = np.log(s) + m
    loss = np.mean(lse[:, 0] - np.take_along_axis(xc, yk, 1)[:, 0] + z * lse[:, 0] ** 2)
    g /= s
    g *= (1 + 2 * z * lse) / np.float32(n)
    np.put_along_axis(g, yk, np.take_along_axis(g, yk, 1) - np.float32(1 / n), 1)
    if c is not None:
        g *= 1 - c * c
    return np.float32(loss), g


def np_focal_fwdbwd(x: np.ndarray, y: np.ndarray, gamma: float) -> tuple[np.floating, Any]:
    """Mean softmax focal loss and its gradient in NumPy (one log-softmax buffer)."""
    import scipy.special

    n = y.size
    yk = y[:, None]
    lp = scipy.special.log_softmax(x, axis=1)
    lpy = np.take_along_axis(lp, yk, 1)
    py = np.exp(lpy)
    q = -np.expm1(lpy)
    loss = np.mean(-(q**gamma) * lpy)
    coef = (q**gamma - gamma * py * q ** (gamma - 1) * lpy) / np.float32(n)
    g = np.exp(lp, out=lp)
    g *= coef
    np.put_along_axis(g, yk, np.take_along_axis(g, yk, 1) - coef, 1)
    return np.float32(loss), g


def np_bfocal_fwdbwd(
    x: np.ndarray, t: np.ndarray, gamma: float, alpha: float
) -> tuple[np.floating, np.ndarray]:
    """Mean sigmoid focal loss (torchvision's) and its gradient in NumPy."""
    import scipy.special

    p = scipy.special.expit(x)
    ce = np.logaddexp(np.float32(0), x) - x * t
    q = p * (1 - t) + (1 - p) * t  # 1 - p_t
    a = alpha * t + (1 - alpha) * (1 - t)
    qg = q**gamma
    loss = np.mean(a * ce * qg)
    g = a * ((p - t) * qg + ce * gamma * q ** (gamma - 1) * p * (1 - p) * (1 - 2 * t))
    g *= np.float32(1 / x.size)
    return np.float32(loss), g


def np_kl_fwdbwd(logq: np.ndarray, p: np.ndarray) -> tuple[np.floating, np.ndarray]:
    """``kl_div(logq, p, reduction="batchmean")`` and its gradient in NumPy."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - logq), 0)
    n = logq.shape[0]
    return np.float32(terms.sum(dtype=np.float64) / n), p * np.float32(-1 / n)


# --------------------------------------------------------------------------- builders


def _copy_setup(dst: np.ndarray, src: np.ndarray) -> Callable[[], None]:
    return lambda: np.copyto(dst, src)


def build_xent_rs(xr: Any, op: str, d: Data) -> Call | None:
    """xent_rs on the workload's NumPy arrays (None where the op does not apply)."""
    ax, kind = d.axis, d.wl.kind
    beyond = _beyond_xent_rs(xr, op, d)
    if beyond is not None or op in BEYOND_OPS:
        return beyond
    if op.startswith("log_loss"):
        if not hasattr(xr, "log_loss"):
            return None
        y, proba = d.log_loss_y, d.proba
        if op == "log_loss_labels":
            labels = d.log_loss_labels
            return Call(lambda: xr.log_loss(y, proba, labels=labels))
        if not d.all_labels_present():  # scikit-learn refuses it too
            return None
        return Call(lambda: xr.log_loss(y, proba))
    if kind == "ce":
        x, y = d.x, d.y
        ce = xr.cross_entropy
        if op == "ce_fwd":
            return Call(lambda: ce(x, y, axis=ax))
        if op == "ce_fwdbwd":
            return Call(lambda: ce(x, y, axis=ax, return_grad=True))
        if op == "ce_fwdbwd_buf":
            buf = np.empty_like(x)
            return Call(lambda: ce(x, y, axis=ax, return_grad=True, grad_out=buf))
        if op == "ce_fwdbwd_inplace":
            xw = np.empty_like(x)
            return Call(
                lambda: ce(xw, y, axis=ax, return_grad=True, grad_out=xw), _copy_setup(xw, x)
            )
        if op == "ce_wls_fwdbwd":
            yi, w = d.y_ignore, d.w
            return Call(
                lambda: ce(
                    x,
                    yi,
                    axis=ax,
                    weight=w,
                    ignore_index=IGNORE_INDEX,
                    label_smoothing=LABEL_SMOOTHING,
                    return_grad=True,
                )
            )
        if op == "log_softmax":
            return Call(lambda: xr.log_softmax(x, axis=ax))
        if op == "log_softmax_out":
            buf = np.empty_like(x)
            return Call(lambda: xr.log_softmax(x, axis=ax, out=buf))
        if op in ACC_OPS:
            return _accumulator_call(xr, op, d)
        return None
    t = d.t
    if op.startswith("bce_logits"):
        x, pw = d.x, d.pw
        grad = op.endswith("fwdbwd")
        bce = xr.binary_cross_entropy_with_logits
        if pw is None:
            return Call(lambda: bce(x, t, return_grad=grad))
        return Call(lambda: bce(x, t, pos_weight=pw, return_grad=grad))
    if op.startswith("bce_prob"):
        p = d.p
        grad = op.endswith("fwdbwd")
        return Call(lambda: xr.binary_cross_entropy(p, t, return_grad=grad))
    return None


BEYOND_OPS = (*OPTION_OPS, *FOCAL_OPS, "kl_fwdbwd", *HALF_OPS)


def _beyond_xent_rs(xr: Any, op: str, d: Data) -> Call | None:
    """The losses and options beyond the first release (None where xent_rs lacks them)."""
    if op not in BEYOND_OPS or not hasattr(xr, "focal_loss"):
        return None
    x, y, t = d.x, d.y, d.t
    ce = xr.cross_entropy
    if op == "ce_z_fwdbwd":
        return Call(lambda: ce(x, y, z_loss=Z_LOSS, return_grad=True))
    if op == "ce_cap_fwdbwd":
        return Call(lambda: ce(x, y, softcap=SOFTCAP, return_grad=True))
    if op == "focal_fwdbwd":
        return Call(lambda: xr.focal_loss(x, y, gamma=GAMMA, return_grad=True))
    if op == "bfocal_fwdbwd":
        bf = xr.binary_focal_loss_with_logits
        return Call(lambda: bf(x, t, gamma=GAMMA, alpha=ALPHA, return_grad=True))
    if op == "kl_fwdbwd":
        logp, target = d.logp, d.kl_target
        return Call(lambda: xr.kl_div(logp, target, reduction="batchmean", return_grad=True))
    if op == "ce_f16_fwd":
        x16 = d.x16
        return Call(lambda: ce(x16, y))
    xb = d.xbf16
    return None if xb is None else Call(lambda: ce(xb, y))


def _accumulator_call(xr: Any, op: str, d: Data) -> Call | None:
    """A streaming accumulator's ``update`` or the one-shot call it mirrors; W1 with the
    class weights, the other workloads without."""
    if not hasattr(xr, "streaming"):
        return None
    x, y, ax = d.x, d.y, d.axis
    w = d.w if d.wl.name == "W1" else None
    if op in ("ce_sum", "ce_none"):
        reduction = "sum" if op == "ce_sum" else "none"
        return Call(lambda: xr.cross_entropy(x, y, axis=ax, weight=w, reduction=reduction))
    acc = xr.streaming.CrossEntropyAccumulator(axis=ax, weight=w, reduction="sum")
    losses = op == "acc_update_losses"
    return Call(lambda: acc.update(x, y, return_losses=losses))


def build_numpy(op: str, d: Data) -> Call | None:
    """The NumPy/SciPy references (see the module docstring)."""
    ax, kind = d.axis, d.wl.kind
    x, t = d.x, d.t
    if op == "ce_z_fwdbwd":
        return Call(lambda: np_ce_option_fwdbwd(x, d.y, Z_LOSS, None))
    if op == "ce_cap_fwdbwd":
        return Call(lambda: np_ce_option_fwdbwd(x, d.y, 0.0, SOFTCAP))
    if op == "focal_fwdbwd":
        return Call(lambda: np_focal_fwdbwd(x, d.y, GAMMA))
    if op == "bfocal_fwdbwd":
        return Call(lambda: np_bfocal_fwdbwd(x, t, GAMMA, ALPHA))
    if op == "kl_fwdbwd":
        logp, target = d.logp, d.kl_target
        return Call(lambda: np_kl_fwdbwd(logp, target))
    if op in HALF_OPS:
        return None  # xent_rs against itself (MIRRORS)
    if kind == "ce":
        x, y = d.x, d.y
        if op == "ce_fwd":
            return Call(lambda: np_ce_fwd(x, y, ax))
        if op == "ce_fwdbwd":
            return Call(lambda: np_ce_fwdbwd(x, y, ax))
        if op == "ce_fwdbwd_buf":
            buf = np.empty_like(x)
            return Call(lambda: np_ce_fwdbwd(x, y, ax, out=buf))
        if op == "ce_fwdbwd_inplace":
            xw = np.empty_like(x)
            return Call(lambda: np_ce_fwdbwd(xw, y, ax, out=xw), _copy_setup(xw, x))
        if op == "ce_wls_fwdbwd":
            yi, w = d.y_ignore, d.w
            return Call(lambda: np_ce_wls_fwdbwd(x, yi, w, ax, LABEL_SMOOTHING))
        if op == "log_softmax":
            import scipy.special

            return Call(lambda: scipy.special.log_softmax(x, axis=ax))
        return None
    t = d.t
    if op.startswith("bce_logits"):
        x, pw = d.x, d.pw
        grad = op.endswith("fwdbwd")
        return Call(lambda: np_bce_logits(x, t, pw, grad))
    if op.startswith("bce_prob"):
        p = d.p
        grad = op.endswith("fwdbwd")
        return Call(lambda: np_bce(p, t, grad))
    return None


def build_sklearn(op: str, d: Data) -> Call | None:
    """scikit-learn ``log_loss`` on float32 probabilities computed outside the timed call."""
    from sklearn.metrics import log_loss

    y, proba = d.log_loss_y, d.proba
    if op == "log_loss_labels":
        labels = d.log_loss_labels
        return Call(lambda: log_loss(y, proba, labels=labels))
    if op == "log_loss" and d.all_labels_present():
        return Call(lambda: log_loss(y, proba))
    return None


def build_torch(torch: Any, op: str, d: Data) -> Call | None:
    """torch.nn.functional on tensors sharing memory with the NumPy arrays.

    A fwd+grad call runs ``loss.backward()`` on a leaf with ``requires_grad``, reads the
    gradient and resets it to ``None``, all inside the timed call.
    """
    F = torch.nn.functional
    ax, kind = d.axis, d.wl.kind

    def fwdbwd(leaf: Any, loss_fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> tuple[Any, Any]:
            loss = loss_fn()
            loss.backward()
            g = leaf.grad
            leaf.grad = None
            return loss.detach(), g

        return call

    beyond = _beyond_torch(torch, op, d, fwdbwd)
    if beyond is not None or op in BEYOND_OPS:
        return beyond
    if kind == "ce":
        tx, ty = torch.from_numpy(d.x), torch.from_numpy(d.y)
        if op == "ce_fwd":
            return Call(lambda: F.cross_entropy(tx, ty))
        if op == "ce_fwdbwd":
            leaf = torch.from_numpy(d.x).requires_grad_(True)
            return Call(fwdbwd(leaf, lambda: F.cross_entropy(leaf, ty)))
        if op == "ce_wls_fwdbwd":
            leaf = torch.from_numpy(d.x).requires_grad_(True)
            tyi, tw = torch.from_numpy(d.y_ignore), torch.from_numpy(d.w)

            def loss_wls() -> Any:
                return F.cross_entropy(
                    leaf,
                    tyi,
                    weight=tw,
                    ignore_index=IGNORE_INDEX,
                    label_smoothing=LABEL_SMOOTHING,
                )

            return Call(fwdbwd(leaf, loss_wls))
        if op == "log_softmax":
            return Call(lambda: F.log_softmax(tx, dim=ax))
        if op == "log_softmax_out":
            tbuf = torch.empty_like(tx)
            return Call(lambda: torch.log_softmax(tx, ax, out=tbuf))
        return None
    if op.startswith("log_loss"):
        return None
    tt = torch.from_numpy(d.t)
    grad = op.endswith("fwdbwd")
    if op.startswith("bce_logits"):
        tpw = None if d.pw is None else torch.from_numpy(d.pw)
        if not grad:
            tx = torch.from_numpy(d.x)
            return Call(lambda: F.binary_cross_entropy_with_logits(tx, tt, pos_weight=tpw))
        leaf = torch.from_numpy(d.x).requires_grad_(True)
        return Call(
            fwdbwd(leaf, lambda: F.binary_cross_entropy_with_logits(leaf, tt, pos_weight=tpw))
        )
    if op.startswith("bce_prob"):
        if not grad:
            tp = torch.from_numpy(d.p)
            return Call(lambda: F.binary_cross_entropy(tp, tt))
        leaf = torch.from_numpy(d.p).requires_grad_(True)
        return Call(fwdbwd(leaf, lambda: F.binary_cross_entropy(leaf, tt)))
    return None


def _beyond_torch(
    torch: Any, op: str, d: Data, fwdbwd: Callable[[Any, Callable[[], Any]], Any]
) -> Call | None:
    """The compositions a torch user writes for the losses torch lacks (with autograd), and
    ``F.kl_div``."""
    if op not in BEYOND_OPS or op in HALF_OPS:
        return None
    F = torch.nn.functional
    leaf = torch.from_numpy(d.x).requires_grad_(True)
    ty, tt = torch.from_numpy(d.y), torch.from_numpy(d.t)

    def z_loss() -> Any:
        return F.cross_entropy(leaf, ty) + Z_LOSS * torch.logsumexp(leaf, 1).pow(2).mean()

    def softcap() -> Any:
        return F.cross_entropy(SOFTCAP * torch.tanh(leaf / SOFTCAP), ty)

    def focal() -> Any:
        lp = F.log_softmax(leaf, 1).gather(1, ty[:, None]).squeeze(1)
        return (-((1 - lp.exp()).pow(GAMMA)) * lp).mean()

    def bfocal() -> Any:  # torchvision.ops.sigmoid_focal_loss
        p = torch.sigmoid(leaf)
        ce = F.binary_cross_entropy_with_logits(leaf, tt, reduction="none")
        p_t = p * tt + (1 - p) * (1 - tt)
        loss = ce * (1 - p_t) ** GAMMA
        return ((ALPHA * tt + (1 - ALPHA) * (1 - tt)) * loss).mean()

    if op == "kl_fwdbwd":
        kl_leaf = torch.from_numpy(d.logp).requires_grad_(True)
        tp = torch.from_numpy(d.kl_target)
        return Call(fwdbwd(kl_leaf, lambda: F.kl_div(kl_leaf, tp, reduction="batchmean")))
    fn = {"ce_z_fwdbwd": z_loss, "ce_cap_fwdbwd": softcap, "focal_fwdbwd": focal}.get(op, bfocal)
    return Call(fwdbwd(leaf, fn))


JAX_OPS = (
    "ce_fwd",
    "ce_fwdbwd",
    "log_softmax",
    "bce_logits_fwd",
    "bce_logits_fwdbwd",
    "ce_z_fwdbwd",
    "ce_cap_fwdbwd",
    "focal_fwdbwd",
    "bfocal_fwdbwd",
)


def build_jax(op: str, d: Data) -> Call | None:
    """``jax.jit`` of optax / jax.nn (``value_and_grad`` for fwd+grad), int32 labels.

    optax has no ``pos_weight``: the multilabel workload uses torch's formula in jax.numpy.
    """
    if op not in JAX_OPS:
        return None
    import jax
    import jax.numpy as jnp
    import optax

    ax, kind = d.axis, d.wl.kind
    if op in ("ce_z_fwdbwd", "ce_cap_fwdbwd", "focal_fwdbwd"):

        def loss(x: Any, y: Any) -> Any:
            if op == "ce_cap_fwdbwd":
                x = SOFTCAP * jnp.tanh(x / SOFTCAP)
            ce = optax.softmax_cross_entropy_with_integer_labels(x, y)
            if op == "ce_z_fwdbwd":
                return (ce + Z_LOSS * jax.nn.logsumexp(x, axis=1) ** 2).mean()
            if op == "focal_fwdbwd":
                return (-((-jnp.expm1(-ce)) ** GAMMA) * -ce).mean()
            return ce.mean()

        f = jax.jit(jax.value_and_grad(loss))
        args: tuple[Any, ...] = (jnp.asarray(d.x), jnp.asarray(d.y.astype(np.int32)))
    elif op == "bfocal_fwdbwd":

        def bfocal(x: Any, t: Any) -> Any:
            return optax.sigmoid_focal_loss(x, t, alpha=ALPHA, gamma=GAMMA).mean()

        f = jax.jit(jax.value_and_grad(bfocal))
        args = (jnp.asarray(d.x), jnp.asarray(d.t))
    elif kind == "ce":
        if op == "log_softmax":
            f = jax.jit(functools.partial(jax.nn.log_softmax, axis=ax))
            args = (jnp.asarray(d.x),)
        else:

            def ce(x: Any, y: Any) -> Any:
                return optax.softmax_cross_entropy_with_integer_labels(x, y, axis=ax).mean()

            f = jax.jit(ce if op == "ce_fwd" else jax.value_and_grad(ce))
            args = (jnp.asarray(d.x), jnp.asarray(d.y.astype(np.int32)))
    else:
        if d.pw is None:

            def bce(x: Any, t: Any) -> Any:
                return optax.sigmoid_binary_cross_entropy(x, t).mean()

            args = (jnp.asarray(d.x), jnp.asarray(d.t))
        else:

            def bce(x: Any, t: Any, pw: Any) -> Any:
                return ((1 - t) * x + (1 + (pw - 1) * t) * jax.nn.softplus(-x)).mean()

            args = (jnp.asarray(d.x), jnp.asarray(d.t), jnp.asarray(d.pw))
        f = jax.jit(bce if op == "bce_logits_fwd" else jax.value_and_grad(bce))
    jax.block_until_ready(args)
    return Call(lambda: jax.block_until_ready(f(*args)))
