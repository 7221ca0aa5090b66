"""The CUDA side of the GPU backend: the source files and every kernel compiled from them.

The CUDA C++ lives in files of the package, read at first use: ``cuda/rows.cu``, the row-wise
kernels of one ``cupy.RawModule`` (instantiated by the name expressions below), and
``cuda/binary.cuh``, the device functions that the element-wise and reduction kernels (the
binary losses, the binary focal loss, ``kl_div``) call, given to CuPy as their preamble. This
module lists every kernel ``xent_rs._cupy`` builds from them, bodies included (one-line
expressions, which CuPy's kernel API takes as strings), so that the backend and the NVRTC
check that needs no GPU (``.ci/check_cuda.py``, also run by ``tests/test_cuda_sources.py``)
compile the same things. It imports only the standard library:
the check loads it by path, with neither the native core nor NumPy installed.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal, NamedTuple

#: The folder of the CUDA sources, inside the package.
SOURCE_DIR = "cuda"
#: The RawModule source of the row-wise kernels.
ROWS = "rows.cu"
#: The preamble of every element-wise and reduction kernel.
BINARY = "binary.cuh"

#: The kernel templates of ``rows.cu``, each instantiated for every ``ROW_TYPES`` value.
ROW_KERNELS = (
    "xent_softmax",
    "xent_logsumexp",
    "xent_softmax_backward",
    "xent_ce_hard",
    "xent_ce_soft",
)
#: NumPy dtype name -> C type of the row kernels' template argument.
ROW_TYPES = {"float32": "float", "float64": "double"}

#: The C types of the float dtypes the kernels compute in (float16 is computed in float32).
FLOAT_CTYPES = ("float", "double")
#: The C types of the integer dtypes a class-index target may have (CuPy's names).
INT_CTYPES = (
    "signed char",
    "unsigned char",
    "short",
    "unsigned short",
    "int",
    "unsigned int",
    "long long",
    "unsigned long long",
)

BinaryKind = Literal["none", "none_grad", "grad"]


@cache
def source(name: str) -> str:
    """The text of one CUDA source file of the package (``ROWS`` or ``BINARY``)."""
    return (resources.files("xent_rs") / SOURCE_DIR / name).read_text(encoding="utf-8")


def row_name(kernel: str, ctype: str) -> str:
    """The name expression of one instantiation of a row kernel, e.g. ``xent_softmax<float>``."""
    return f"{kernel}<{ctype}>"


def row_name_expressions() -> list[str]:
    """Every name expression of the RawModule, in the order CuPy is given them."""
    return [row_name(k, t) for k in ROW_KERNELS for t in ROW_TYPES.values()]


class Elementwise(NamedTuple):
    """The arguments of one ``cupy.ElementwiseKernel`` (its preamble is ``BINARY``).

    ``bindings`` are the C types the type placeholders of the parameters (``T``, ``W``, ``S``)
    take in ``xent_rs._cupy``'s calls; each call binds all of them to one of these.
    """

    in_params: str
    out_params: str
    operation: str
    name: str
    bindings: tuple[str, ...] = FLOAT_CTYPES


class Reduction(NamedTuple):
    """The arguments of one ``cupy.ReductionKernel`` (a float64 sum; preamble ``BINARY``)."""

    in_params: str
    map_expr: str
    name: str
    out_params: str = "float64 total"
    reduce_expr: str = "a + b"
    post_map_expr: str = "total = a"
    identity: str = "0"
    reduce_type: str = "double"
    bindings: tuple[str, ...] = FLOAT_CTYPES


def first_index(
    in_params: str, condition: str, name: str, bindings: tuple[str, ...]
) -> Elementwise:
    """A kernel that leaves in ``first[0]`` the least flat index where ``condition`` holds."""
    return Elementwise(
        in_params,
        "raw uint64 first",
        f"if ({condition}) atomicMin(&first[0], (unsigned long long)i)",
        name,
        bindings,
    )


#: The first class index outside ``[0, classes)`` that is not ``ignore``.
BAD_TARGET = first_index(
    "T t, int64 ignore, int64 classes",
    "xent_bad_target(t, ignore, classes)",
    "xent_bad_target",
    INT_CTYPES,
)
#: The first probability outside ``[0, 1]`` (NaN included).
BAD_PROBABILITY = first_index(
    "T p", "!(p >= (T)0 && p <= (T)1)", "xent_bad_probability", FLOAT_CTYPES
)


def hard_denominator(weighted: bool, sample_weighted: bool) -> Elementwise:
    """Each counted sample's ``w[y] * sw`` (0 where ignored), in float64."""
    params = "int64 t, int64 ignore"
    term = "1.0"
    if weighted:
        params += ", raw W w"
        term = "(double)w[t]"
    if sample_weighted:
        params += ", S sw"
        term += " * (double)sw"
    return Elementwise(
        params, "float64 d", f"d = t == ignore ? 0.0 : {term}", "xent_hard_denominator"
    )


class Pointwise(NamedTuple):
    """One element-wise loss as its kernels see it: the parameters before the upstream
    gradient, the loss and gradient expressions of one element (weighted, unscaled) and the
    kernels' name stem."""

    params: str
    loss: str
    grad: str
    name: str


def binary_parts(logits: bool, pos_weight: bool, weighted: bool) -> Pointwise:
    """A binary cross entropy: its parameters are ``x``, ``t``, then ``pw`` and ``w`` when
    given."""
    if not logits:
        loss, grad, name = "xent_bce_loss(x, t)", "xent_bce_grad(x, t)", "xent_bce"
    elif pos_weight:
        loss, grad, name = "xent_bcelp_loss(x, t, pw)", "xent_bcelp_grad(x, t, pw)", "xent_bcel"
    else:
        loss, grad, name = "xent_bcel_loss(x, t)", "xent_bcel_grad(x, t)", "xent_bcel"
    params = "T x, T t"
    if logits and pos_weight:
        params += ", T pw"
    if weighted:
        params += ", T w"
        loss += " * w"
        grad += " * w"
    return Pointwise(params, loss, grad, name)


def focal_parts(weighted: bool) -> Pointwise:
    """The binary focal loss on logits: ``x``, ``t``, ``w`` when given, then its options
    (``gamma``; ``power``, the integral gamma or -1; ``alpha`` given or not, ``a`` and
    ``na``: alpha and 1 - alpha)."""
    params = "T x, T t"
    options = "x, t, gamma, power, alpha, a, na"
    loss, grad = f"xent_bfocal_loss({options})", f"xent_bfocal_grad({options})"
    if weighted:
        params += ", T w"
        loss += " * w"
        grad += " * w"
    params += ", T gamma, int32 power, int32 alpha, T a, T na"
    return Pointwise(params, loss, grad, "xent_bfocal")


def kl_parts(log_target: bool) -> Pointwise:
    """torch's ``kl_div`` of log-probabilities ``x`` from targets ``t`` (log-probabilities
    with ``log_target``)."""
    if log_target:
        return Pointwise("T x, T t", "xent_klog_loss(x, t)", "xent_klog_grad(x, t)", "xent_klog")
    return Pointwise("T x, T t", "xent_kl_loss(x, t)", "xent_kl_grad(x, t)", "xent_kl")


def pointwise(parts: Pointwise, kind: BinaryKind) -> Elementwise:
    """The element-wise kernel of a loss: per-element losses (``none``), with the gradient too
    (``none_grad``), or only the gradient (``grad``) scaled by ``g``."""
    params, loss, grad, name = parts
    if kind == "none":
        return Elementwise(params, "T loss", f"loss = {loss}", f"{name}_none")
    if kind == "none_grad":
        return Elementwise(
            params + ", T g",
            "T loss, T grad",
            f"loss = {loss}; grad = {grad} * g",
            f"{name}_none_grad",
        )
    return Elementwise(params + ", T g", "T grad", f"grad = {grad} * g", f"{name}_grad")


def pointwise_sum(parts: Pointwise) -> Reduction:
    """The float64 sum of a loss over all elements."""
    return Reduction(parts.params, f"(double)({parts.loss})", f"{parts.name}_sum")


def all_pointwise() -> list[Pointwise]:
    """Every element-wise loss with every set of its kernel parameters."""
    parts = [
        binary_parts(logits, pos_weight, weighted)
        for logits, pos_weight in ((False, False), (True, False), (True, True))
        for weighted in (False, True)
    ]
    parts += [focal_parts(weighted) for weighted in (False, True)]
    return parts + [kl_parts(log_target) for log_target in (False, True)]


def all_kernels() -> list[Elementwise | Reduction]:
    """Every element-wise and reduction kernel ``xent_rs._cupy`` can build."""
    kernels: list[Elementwise | Reduction] = [BAD_TARGET, BAD_PROBABILITY]
    kernels += [hard_denominator(w, sw) for w in (False, True) for sw in (False, True)]
    kinds: tuple[BinaryKind, ...] = ("none", "none_grad", "grad")
    for parts in all_pointwise():
        kernels += [pointwise(parts, kind) for kind in kinds]
        kernels.append(pointwise_sum(parts))
    return kernels
