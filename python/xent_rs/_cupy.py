"""The GPU backend: the public functions for CuPy arrays, with the CPU path's semantics.

``xent_rs._functional`` routes a call here when its arrays are CuPy arrays; CuPy is imported
only then. The row-wise operations (the softmax family, cross entropy, NLL) are one fused CUDA
kernel each, compiled once (NVRTC, cached by CuPy) from ``_SOURCE``: a row is handled by one
thread, a group of lanes of a warp or a whole block depending on its length and layout; its
maximum and sum of exponentials come from one online pass accumulated in float64, and the
loss and the gradient are written by the same kernel (the gradient possibly over the logits).
The binary losses are CuPy elementwise and reduction kernels. Everything that can fail is
checked before any output is written; the checks of class indices and probabilities read one
index back from the device.
"""

from __future__ import annotations

import importlib
import math
import operator
from functools import cache
from typing import Any

import numpy as np

from xent_rs import _arrays

FLOAT16 = _arrays.FLOAT16
FLOAT32 = _arrays.FLOAT32
FLOAT64 = _arrays.FLOAT64
NATIVE = _arrays.NATIVE

_REDUCTIONS = ("none", "mean", "sum")
_BLOCK = 256
#: Threads per block for a few rows of at least ``_BLOCK_ROW`` values (when registers allow).
_BIG_BLOCK = 1024
_MAX_GRID = 1 << 20
#: Rows at least this long (contiguous) are handled by a whole block rather than a warp.
_BLOCK_ROW = 1024
_NULL = np.uint64(0)
_NO_INDEX = (1 << 64) - 1

_SOURCE = r"""
#define XENT_NEG_INF __longlong_as_double(0xfff0000000000000ULL)
#define XENT_NAN __longlong_as_double(0x7ff8000000000000ULL)

// NaN-propagating maximum.
__device__ __forceinline__ double xent_max(double a, double b) {
    return (a > b || a != a) ? a : b;
}

// A row is handled by `size` consecutive lanes of a warp (1, 2, 4, 8, 16 or 32), or by a whole
// block (`block`). Rows are visited in a grid-stride loop.
struct XentGroup {
    long long first, step;
    int lane, size;
    unsigned mask;
    bool block;
};

__device__ __forceinline__ XentGroup xent_group(int group) {
    XentGroup g;
    if (group == 0) {
        g.first = blockIdx.x;
        g.step = gridDim.x;
        g.lane = threadIdx.x;
        g.size = blockDim.x;
        g.mask = 0xffffffffu;
        g.block = true;
    } else {
        const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        g.first = tid / group;
        g.step = (long long)gridDim.x * blockDim.x / group;
        g.lane = threadIdx.x % group;
        g.size = group;
        g.mask = group == 32 ? 0xffffffffu
                             : ((1u << group) - 1u) << ((threadIdx.x & 31) & ~(group - 1));
        g.block = false;
    }
    return g;
}

// Orders this group's earlier reads before its later writes (in-place gradients).
__device__ __forceinline__ void xent_sync(const XentGroup& g) {
    if (g.block) __syncthreads();
    else if (g.size > 1) __syncwarp(g.mask);
}

// Sum (or NaN-propagating max) over the lanes of a group; every lane gets the result.
__device__ double xent_reduce(const XentGroup& g, double v, bool is_max) {
    const int width = g.block ? 32 : g.size;
    for (int o = width >> 1; o > 0; o >>= 1) {
        const double u = __shfl_xor_sync(g.mask, v, o);
        v = is_max ? xent_max(v, u) : v + u;
    }
    if (!g.block) return v;
    __shared__ double part[32];
    const int warp = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();
    if (l == 0) part[warp] = v;
    __syncthreads();
    v = l < nw ? part[l] : (is_max ? XENT_NEG_INF : 0.0);
    for (int o = 16; o > 0; o >>= 1) {
        const double u = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? xent_max(v, u) : v + u;
    }
    return v;
}

// Merges two partial (max, sum of exp(x - max)); a max of -inf means "nothing yet" (its sum
// is 0, or NaN once a NaN was seen, which is kept).
__device__ __forceinline__ void xent_ms_merge(double* m, double* s, double m2, double s2) {
    const double mm = m2 > *m ? m2 : *m;
    const double a = *m == XENT_NEG_INF ? *s * 0.0 : *s * exp(*m - mm);
    const double b = m2 == XENT_NEG_INF ? s2 * 0.0 : s2 * exp(m2 - mm);
    *m = mm;
    *s = a + b;
}

// Values each lane loads ahead in a row (8 measured 0-10 % faster than 4 on an H200).
#define XENT_AHEAD 8

// Calls f(c, x[b + c * inner]) for this lane's classes in order, loading XENT_AHEAD values
// ahead, the last partial batch too: the loads of a row are then in flight together instead
// of one at a time (1.4-1.9x less time on rows of 1000 or more classes). Every value is read
// before f runs on it, so f may write the same element (in-place gradients).
template <typename T, typename F>
__device__ __forceinline__ void xent_each_value(const T* x, long long b, long long classes,
                                                long long inner, const XentGroup& g, F f) {
    const long long st = g.size;
    long long c = g.lane;
    for (; c + (XENT_AHEAD - 1) * st < classes; c += XENT_AHEAD * st) {
        T v[XENT_AHEAD];
#pragma unroll
        for (int k = 0; k < XENT_AHEAD; ++k) v[k] = x[b + (c + k * st) * inner];
#pragma unroll
        for (int k = 0; k < XENT_AHEAD; ++k) f(c + k * st, v[k]);
    }
    if (c < classes) {  // the last, partial batch: its loads in flight together too
        T v[XENT_AHEAD];
#pragma unroll
        for (int k = 0; k < XENT_AHEAD; ++k)
            v[k] = c + k * st < classes ? x[b + (c + k * st) * inner] : (T)0;
#pragma unroll
        for (int k = 0; k < XENT_AHEAD; ++k)
            if (c + k * st < classes) f(c + k * st, v[k]);
    }
}

// One pass over a row: m = max x, s = sum exp(x - m), with torch's special values: a +inf or
// a NaN makes s NaN; a row of -inf leaves m = -inf (x - m is then NaN everywhere).
template <typename T>
__device__ void xent_row_ms(const T* x, long long b, long long classes, long long inner,
                            const XentGroup& g, double* mo, double* so) {
    const T ninf = (T)XENT_NEG_INF;
    T m = ninf;
    double s = 0.0;
    xent_each_value(x, b, classes, inner, g, [&](long long, T v) {
        if (v > m) {
            s = (m == ninf ? s * 0.0 : s * (double)exp(m - v)) + 1.0;
            m = v;
            if (isinf(v)) s = XENT_NAN;
        } else if (v != ninf) {
            s += (double)exp(v - m);
        }
    });
    double md = (double)m;
    const int width = g.block ? 32 : g.size;
    for (int o = width >> 1; o > 0; o >>= 1) {
        const double m2 = __shfl_xor_sync(g.mask, md, o);
        const double s2 = __shfl_xor_sync(g.mask, s, o);
        xent_ms_merge(&md, &s, m2, s2);
    }
    if (g.block) {
        __shared__ double pm[32], ps[32];
        const int warp = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
        __syncthreads();
        if (l == 0) {
            pm[warp] = md;
            ps[warp] = s;
        }
        __syncthreads();
        md = l < nw ? pm[l] : XENT_NEG_INF;
        s = l < nw ? ps[l] : 0.0;
        for (int o = 16; o > 0; o >>= 1) {
            const double m2 = __shfl_xor_sync(0xffffffffu, md, o);
            const double s2 = __shfl_xor_sync(0xffffffffu, s, o);
            xent_ms_merge(&md, &s, m2, s2);
        }
    }
    *mo = md;
    *so = s;
}

#define XENT_ROWS                                                                  \
    const XentGroup g = xent_group(group);                                         \
    for (long long r = g.first; r < rows; r += g.step)

#define XENT_BASE(r) ((r) / inner * classes * inner + (r) % inner)
#define XENT_EACH(c) for (long long c = g.lane; c < classes; c += g.size)

template <typename T>
__global__ void xent_softmax(const T* x, T* y, long long rows, long long classes,
                             long long inner, int group, int log_mode) {
    XENT_ROWS {
        const long long b = XENT_BASE(r);
        double ms, ss;
        xent_row_ms(x, b, classes, inner, g, &ms, &ss);
        const T m = (T)ms;
        if (log_mode) {
            const T ls = (T)log(ss);
            xent_each_value(x, b, classes, inner, g,
                            [&](long long c, T v) { y[b + c * inner] = (v - m) - ls; });
        } else {
            xent_each_value(x, b, classes, inner, g, [&](long long c, T v) {
                y[b + c * inner] = (T)((double)exp(v - m) / ss);
            });
        }
    }
}

template <typename T>
__global__ void xent_logsumexp(const T* x, T* out, long long rows, long long classes,
                               long long inner, int group) {
    XENT_ROWS {
        const long long b = XENT_BASE(r);
        double m = XENT_NEG_INF;
        XENT_EACH(c) m = xent_max(m, (double)x[b + c * inner]);
        m = xent_reduce(g, m, true);
        if (isinf(m)) m = 0.0;  // torch: an infinite maximum is not subtracted
        const T mt = (T)m;
        double s = 0.0;
        XENT_EACH(c) s += (double)exp(x[b + c * inner] - mt);
        s = xent_reduce(g, s, false);
        if (g.lane == 0) out[r] = (T)(m + log(s));
    }
}

template <typename T>
__global__ void xent_softmax_backward(const T* gy, const T* y, T* out, long long rows,
                                      long long classes, long long inner, int group,
                                      int log_mode) {
    XENT_ROWS {
        const long long b = XENT_BASE(r);
        double s = 0.0;
        XENT_EACH(c) {
            const long long i = b + c * inner;
            s += log_mode ? (double)gy[i] : (double)gy[i] * (double)y[i];
        }
        const T st = (T)xent_reduce(g, s, false);
        XENT_EACH(c) {
            const long long i = b + c * inner;
            out[i] = log_mode ? gy[i] - exp(y[i]) * st : y[i] * (gy[i] - st);
        }
    }
}

// The upstream factor of a row (before its sample weight); `zero` when the whole gradient is 0.
template <typename T>
__device__ __forceinline__ double xent_upstream(const T* go, double gscalar, const double* denom,
                                                long long r, bool* zero) {
    if (go) return (double)go[r];
    if (denom) {
        const double d = *denom;
        if (d == 0.0) {
            *zero = true;
            return 0.0;
        }
        return gscalar / d;
    }
    return gscalar;
}

// Hard-target cross entropy (softmax != 0) or NLL; targets were checked before the launch.
template <typename T>
__global__ void xent_ce_hard(const T* x, T* grad, const long long* target, const T* weight,
                             const T* sample_weight, const T* go, double gscalar,
                             const double* denom, double* rowloss, long long rows,
                             long long classes, long long inner, int group, long long ignore,
                             double eps, double wtotal, int softmax) {
    XENT_ROWS {
        const long long b = XENT_BASE(r);
        const long long y = target[r];
        if (y == ignore || y < 0 || y >= classes) {
            if (grad) XENT_EACH(c) grad[b + c * inner] = (T)0;
            if (g.lane == 0) rowloss[r] = 0.0;
            continue;
        }
        const double wy = weight ? (double)weight[y] : 1.0;
        const double sw = sample_weight ? (double)sample_weight[r] : 1.0;
        bool zero = false;
        const double gs = grad ? xent_upstream(go, gscalar, denom, r, &zero) : 0.0;
        const T xy = x[b + y * inner];
        xent_sync(g);
        if (!softmax) {
            const double coef = sw * wy;
            if (g.lane == 0) rowloss[r] = -coef * (double)xy;
            if (grad) {
                const T hit = zero ? (T)0 : (T)(-coef * gs);
                XENT_EACH(c) grad[b + c * inner] = c == y ? hit : (T)0;
            }
            continue;
        }
        double ms, s;
        xent_row_ms(x, b, classes, inner, g, &ms, &s);
        const T m = (T)ms;
        double sd = 0.0;
        if (eps > 0.0) {
            XENT_EACH(c) {
                const T d = x[b + c * inner] - m;
                sd += weight ? (double)(d * weight[c]) : (double)d;
            }
            sd = xent_reduce(g, sd, false);
        }
        const double ln_s = log(s);
        const double cls = (double)classes;
        double loss = (1.0 - eps) * wy * ((ms - (double)xy) + ln_s);
        if (eps > 0.0) loss += eps / cls * (wtotal * ln_s - sd);
        if (g.lane == 0) rowloss[r] = sw * loss;
        if (!grad) continue;
        if (zero) {
            XENT_EACH(c) grad[b + c * inner] = (T)0;
            continue;
        }
        const double gr = gs * sw;
        const T a = (T)(gr * ((1.0 - eps) * wy + eps / cls * wtotal) / s);
        const T bs = (T)(gr * eps / cls);
        const double hit = gr * (1.0 - eps) * wy;
        xent_each_value(x, b, classes, inner, g, [&](long long c, T xc) {
            T v = exp(xc - m) * a;
            if (eps > 0.0) v -= bs * (weight ? weight[c] : (T)1);
            grad[b + c * inner] = c == y ? (T)((double)v - hit) : v;
        });
    }
}

// Soft-target (class probability) cross entropy.
template <typename T>
__global__ void xent_ce_soft(const T* x, const T* target, T* grad, const T* weight,
                             const T* sample_weight, const T* go, double gscalar,
                             const double* denom, double* rowloss, long long rows,
                             long long classes, long long inner, int group, double eps) {
    const T keep = (T)(1.0 - eps), spread = (T)(eps / (double)classes);
    XENT_ROWS {
        const long long b = XENT_BASE(r);
        const double sw = sample_weight ? (double)sample_weight[r] : 1.0;
        bool zero = false;
        const double gs = grad ? xent_upstream(go, gscalar, denom, r, &zero) : 0.0;
        double ms, s;
        xent_row_ms(x, b, classes, inner, g, &ms, &s);
        const T m = (T)ms;
        double tw = 0.0, twd = 0.0;
        XENT_EACH(c) {
            const long long i = b + c * inner;
            T wt = target[i] * keep + spread;
            if (weight) wt *= weight[c];
            tw += (double)wt;
            twd += (double)(wt * (x[i] - m));
        }
        tw = xent_reduce(g, tw, false);
        twd = xent_reduce(g, twd, false);
        if (g.lane == 0) rowloss[r] = sw * (tw * log(s) - twd);
        if (!grad) continue;
        if (zero) {
            XENT_EACH(c) grad[b + c * inner] = (T)0;
            continue;
        }
        const double gr = gs * sw;
        const T a = (T)(gr * tw / s);
        const T gt = (T)gr;
        XENT_EACH(c) {
            const long long i = b + c * inner;
            T wt = target[i] * keep + spread;
            if (weight) wt *= weight[c];
            grad[i] = exp(x[i] - m) * a - wt * gt;
        }
    }
}
"""

_KERNELS = (
    "xent_softmax",
    "xent_logsumexp",
    "xent_softmax_backward",
    "xent_ce_hard",
    "xent_ce_soft",
)
_CTYPES = {FLOAT32: "float", FLOAT64: "double"}

_BINARY_PREAMBLE = r"""
// Products the compiler may not fuse into a following addition, rounded as the CPU path
// rounds them: the BCE-with-logits loss adds two products that cancel for very negative
// logits (exactly when pos_weight is 0), and only the two rounded products cancel as torch's
// do (a fused one left -7.7 for x = -1.7e8).
__device__ __forceinline__ float xent_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double xent_mul(double a, double b) { return __dmul_rn(a, b); }
template <typename F> __device__ F xent_clamp_log(F v) { return v < (F)-100 ? (F)-100 : v; }
template <typename F> __device__ F xent_bce_loss(F p, F t) {
    const F lp = xent_clamp_log(log(p));
    const F l1 = xent_clamp_log(log1p(-p));
    return -(xent_mul(t, lp - l1) + l1);
}
template <typename F> __device__ F xent_bce_grad(F p, F t) {
    F d = p * ((F)1 - p);
    const F e = (F)1e-12f;
    if (d < e) d = e;
    return (p - t) / d;
}
template <typename F> __device__ F xent_softplus_neg(F x) {
    return log1p(exp(-fabs(x))) + (x < (F)0 ? -x : (F)0);
}
template <typename F> __device__ F xent_sigmoid(F x) {
    const F e = exp(-fabs(x));
    return (x < (F)0 ? e : (F)1) / ((F)1 + e);
}
template <typename F> __device__ F xent_bcel_loss(F x, F t) {
    return xent_mul((F)1 - t, x) + xent_softplus_neg(x);
}
template <typename F> __device__ F xent_bcel_grad(F x, F t) { return xent_sigmoid(x) - t; }
template <typename F> __device__ F xent_bcelp_loss(F x, F t, F pw) {
    const F coef = xent_mul(pw - (F)1, t) + (F)1;
    return xent_mul((F)1 - t, x) + xent_mul(coef, xent_softplus_neg(x));
}
template <typename F> __device__ F xent_bcelp_grad(F x, F t, F pw) {
    const F pt = pw * t;
    return (pt + (F)1 - t) * xent_sigmoid(x) - pt;
}
template <typename F> __device__ bool xent_bad_target(F t, long long ignore, long long classes) {
    if ((F)(-1) < (F)0) {
        const long long v = (long long)t;
        return v != ignore && (v < 0 || v >= classes);
    }
    const unsigned long long v = (unsigned long long)t;
    if (ignore >= 0 && v == (unsigned long long)ignore) return false;
    return v >= (unsigned long long)classes;
}
"""


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


def _cp() -> Any:
    return importlib.import_module("cupy")


@cache
def _module() -> Any:
    names = [f"{k}<{t}>" for k in _KERNELS for t in _CTYPES.values()]
    return _cp().RawModule(code=_SOURCE, name_expressions=names)


@cache
def _raw(name: str, dtype: np.dtype[Any]) -> Any:
    return _module().get_function(f"{name}<{_CTYPES[dtype]}>")


@cache
def _elementwise(in_params: str, out_params: str, body: str, name: str) -> Any:
    return _cp().ElementwiseKernel(in_params, out_params, body, name, preamble=_BINARY_PREAMBLE)


@cache
def _reduction(in_params: str, map_expr: str, name: str) -> Any:
    return _cp().ReductionKernel(
        in_params,
        "float64 total",
        map_expr,
        "a + b",
        "total = a",
        "0",
        name,
        reduce_type="double",
        preamble=_BINARY_PREAMBLE,
    )


def _ptr(a: Any) -> Any:
    """A kernel argument for an optional array: the array, or a null pointer."""
    return _NULL if a is None else a


# ---------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------


def _as_cupy(obj: Any, name: str) -> Any:
    """A CuPy array (array-likes such as lists are copied to the device)."""
    cp = _cp()
    if isinstance(obj, cp.ndarray):
        return obj
    host = np.asarray(obj)
    if host.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be a real numeric array, got dtype {host.dtype}")
    return cp.asarray(host)


def _contiguous(a: Any, dtype: Any) -> Any:
    return a.astype(dtype, order="C", copy=False)


def _float_input(obj: Any, name: str = "input") -> tuple[Any, np.dtype[Any]]:
    """The input as a C-contiguous float32/float64 CuPy array, and the result dtype."""
    a = _as_cupy(obj, name)
    dtype = np.dtype(a.dtype)
    if dtype in NATIVE:
        return _contiguous(a, dtype), dtype
    if dtype == FLOAT16:
        return _contiguous(a, FLOAT32), dtype
    if dtype.kind in "biu":
        return _contiguous(a, FLOAT64), FLOAT64
    raise TypeError(
        f"{name} must be a real floating (or integer) array, got dtype {dtype}; "
        "complex, object and string arrays are not supported"
    )


def _like(obj: Any, dtype: np.dtype[Any], name: str) -> Any:
    """A secondary float argument (weights, targets) as a C-contiguous ``dtype`` array."""
    a = _as_cupy(obj, name)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return _contiguous(a, dtype)


def _class_target(obj: Any, dtype: np.dtype[Any]) -> Any:
    """A multiclass target: integers keep their dtype, floats become ``dtype``."""
    a = _as_cupy(obj, "target")
    kind = a.dtype.kind
    if kind in "iu":
        return _contiguous(a, a.dtype)
    if kind == "f":
        return _contiguous(a, dtype)
    if kind == "b":
        raise TypeError("target must hold integer class indices or class probabilities, got bool")
    raise TypeError(
        f"target must hold integer class indices or floating class probabilities, "
        f"got dtype {a.dtype}"
    )


def _axis(shape: tuple[int, ...], axis: int) -> int:
    ndim = len(shape)
    if ndim == 0:
        raise ValueError(
            "the input must have at least one dimension (the class axis), got a 0-d array"
        )
    axis = operator.index(axis)  # a float axis is a TypeError, as on the CPU
    normalized = axis + ndim if axis < 0 else axis
    if not 0 <= normalized < ndim:
        raise ValueError(
            f"axis {axis} is out of range for an input of shape {shape} ({ndim} dimensions)"
        )
    return normalized


def _geometry(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """``(rows, classes, inner)`` of ``shape`` around the (normalized) class axis."""
    classes = shape[axis]
    inner = math.prod(shape[axis + 1 :])
    rows = math.prod(shape[:axis]) * inner
    return rows, classes, inner


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f'reduction must be "none", "mean" or "sum", got "{reduction}"')
    return reduction


def _output_form(obj: Any, what: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    """Checks an output buffer's type, dtype (``dtype``), shape and layout."""
    cp = _cp()
    if not isinstance(obj, cp.ndarray) or obj.dtype != dtype:
        got = getattr(obj, "dtype", type(obj).__name__)
        raise TypeError(f"{what} must be a {dtype} array like the input, got dtype {got}")
    if obj.shape != shape:
        raise ValueError(f"{what} has shape {obj.shape} but the input has shape {shape}")
    if not obj.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")


def _output(obj: Any, what: str, x: Any) -> bool:
    """Checks an output buffer for input ``x``; returns whether it is ``x`` itself."""
    _output_form(obj, what, x.dtype, x.shape)
    nbytes = x.nbytes
    a, b = x.data.ptr, obj.data.ptr
    if a != b and nbytes > 0 and a < b + nbytes and b < a + nbytes:
        raise ValueError(
            f"{what} overlaps the input; pass the input itself to write in place, "
            "or a separate array"
        )
    return bool(a == b and nbytes > 0)


def _refuse_overlap(out: Any, converted: Any, original: Any, name: str) -> None:
    """``_arrays.refuse_overlap`` for CuPy arrays."""
    _arrays.refuse_overlap(out, converted, original, name, xp=_cp(), address=_device_address)


def _device_address(a: Any) -> int:
    return int(a.data.ptr)


def _upstream(
    grad_output: Any, reduction: str, loss_shape: tuple[int, ...], dtype: np.dtype[Any]
) -> tuple[float, Any]:
    """The upstream gradient as ``(scalar, per-sample array or None)``, checked."""
    if grad_output is None:
        return 1.0, None
    ndim = getattr(grad_output, "ndim", None)
    if ndim is None:
        ndim = np.ndim(grad_output)
    if reduction != "none" and ndim == 0:
        return float(grad_output), None
    g = _like(grad_output, dtype, "grad_output")
    if reduction != "none":
        raise ValueError(f"grad_output must be a scalar for a reduced loss, got shape {g.shape}")
    if g.shape != loss_shape:
        raise ValueError(f"grad_output has shape {g.shape} but the loss has shape {loss_shape}")
    return 1.0, g


def _first_index(in_params: str, condition: str, name: str, *args: Any) -> int:
    """The first flat index where ``condition`` holds over ``args``, or -1.

    One elementwise kernel (an ``atomicMin`` on the index) and one value read back.
    """
    cp = _cp()
    if args[0].size == 0:
        return -1
    first = cp.full(1, np.uint64(_NO_INDEX), dtype=cp.uint64)
    kernel = _elementwise(
        in_params,
        "raw uint64 first",
        f"if ({condition}) atomicMin(&first[0], (unsigned long long)i)",
        name,
    )
    kernel(*args, first)
    index = int(first.get()[0])
    return -1 if index == _NO_INDEX else index


def _position(flat: int, shape: tuple[int, ...]) -> str:
    return str(tuple(int(i) for i in np.unravel_index(flat, shape)))


def _restore(result: Any, dtype: np.dtype[Any]) -> Any:
    """Casts a float32 result back to float16 (the only dtype computed in another one)."""
    return result.astype(dtype) if dtype == FLOAT16 else result


# ---------------------------------------------------------------------------------------------
# softmax family
# ---------------------------------------------------------------------------------------------


def _normalize(x: Any, axis: int, out: Any, log: bool) -> Any:
    cp = _cp()
    _arrays.uses_cupy(x, out)
    a, dtype = _float_input(x)
    if out is not None:
        _refuse_overlap(out, a, x, "out")
    if dtype == FLOAT16 and out is not None:
        _output_form(out, "out", dtype, a.shape)
        cp.copyto(out, _normalize(a, axis, None, log).astype(dtype))
        return out
    ax = _axis(a.shape, axis)
    if out is None:
        dest = cp.empty_like(a)
    else:
        _output(out, "out", a)
        dest = out
    rows, classes, inner = _geometry(a.shape, ax)
    _launch_row("xent_softmax", a.dtype, rows, classes, inner, (a, dest), (np.int32(log),))
    return _restore(dest, dtype)


def _launch_row(
    name: str,
    dtype: np.dtype[Any],
    rows: int,
    classes: int,
    inner: int,
    args: tuple[Any, ...],
    extra: tuple[Any, ...] = (),
) -> None:
    """Runs a row kernel as ``kernel(*args, rows, classes, inner, group, *extra)``.

    A contiguous row of ``classes >= _BLOCK_ROW`` values is reduced by a whole block (group 0),
    a shorter one by a power-of-two group of lanes giving each lane about 4 values; rows whose
    values are ``inner > 1`` apart (class axis not last) are handled one per thread, so that
    neighbouring threads read neighbouring values.
    """
    if rows == 0:
        return
    kernel = _raw(name, np.dtype(dtype))
    threads = _BLOCK
    if inner == 1 and classes >= _BLOCK_ROW:
        group, grid = 0, rows
        if rows < _BIG_BLOCK:  # few long rows: more threads per row
            threads = max(_BLOCK, min(_BIG_BLOCK, int(kernel.max_threads_per_block)) // 32 * 32)
    else:
        group = 1 if inner != 1 else min(32, 1 << (max(1, -(-classes // 4)) - 1).bit_length())
        grid = -(-rows * group // _BLOCK)
    grid = min(grid, _MAX_GRID)
    sizes = (np.int64(rows), np.int64(classes), np.int64(inner))
    kernel((grid,), (threads,), (*args, *sizes, np.int32(group), *extra))


def log_softmax(x: Any, axis: int = -1, *, out: Any = None) -> Any:
    """Log-softmax of a CuPy array along ``axis`` (see :func:`xent_rs.log_softmax`).

    Parameters
    ----------
    x : cupy.ndarray
        Logits.
    axis : int, default -1
        The class axis.
    out : cupy.ndarray, optional
        A C-contiguous array of ``x``'s shape and dtype to write into (may be ``x``).

    Returns
    -------
    cupy.ndarray
        Log-probabilities with ``x``'s shape and dtype.
    """
    return _normalize(x, axis, out, log=True)


def softmax(x: Any, axis: int = -1, *, out: Any = None) -> Any:
    """Softmax of a CuPy array along ``axis`` (see :func:`xent_rs.softmax`).

    Parameters
    ----------
    x : cupy.ndarray
        Logits.
    axis : int, default -1
        The class axis.
    out : cupy.ndarray, optional
        A C-contiguous array of ``x``'s shape and dtype to write into (may be ``x``).

    Returns
    -------
    cupy.ndarray
        Probabilities with ``x``'s shape and dtype.
    """
    return _normalize(x, axis, out, log=False)


def logsumexp(x: Any, axis: int = -1, *, keepdims: bool = False) -> Any:
    """``log(sum(exp(x)))`` of a CuPy array along ``axis`` (see :func:`xent_rs.logsumexp`).

    Parameters
    ----------
    x : cupy.ndarray
        Values.
    axis : int, default -1
        The axis to reduce.
    keepdims : bool, default False
        Keep ``axis`` with length 1.

    Returns
    -------
    cupy.ndarray
        ``x``'s dtype; 0-d for a 1-D input without ``keepdims``.
    """
    cp = _cp()
    a, dtype = _float_input(x)
    ax = _axis(a.shape, axis)
    rows, classes, inner = _geometry(a.shape, ax)
    dest = cp.empty(a.shape[:ax] + a.shape[ax + 1 :], dtype=a.dtype)
    _launch_row("xent_logsumexp", a.dtype, rows, classes, inner, (a, dest))
    result = _restore(dest, dtype)
    if keepdims:
        return cp.expand_dims(result, axis)
    return result


def _backward(grad_output: Any, output: Any, axis: int, log: bool) -> Any:
    cp = _cp()
    _arrays.uses_cupy(grad_output, output)
    y, dtype = _float_input(output, "output")
    g = _like(grad_output, y.dtype, "grad_output")
    ax = _axis(y.shape, axis)
    if g.shape != y.shape:
        raise ValueError(f"grad_output has shape {g.shape} but output has shape {y.shape}")
    dest = cp.empty_like(y)
    rows, classes, inner = _geometry(y.shape, ax)
    _launch_row(
        "xent_softmax_backward", y.dtype, rows, classes, inner, (g, y, dest), (np.int32(log),)
    )
    return _restore(dest, dtype)


def log_softmax_backward(grad_output: Any, output: Any, axis: int = -1) -> Any:
    """VJP of :func:`log_softmax` on CuPy arrays: ``g - exp(output) * sum(g)``.

    Parameters
    ----------
    grad_output : cupy.ndarray
        The upstream gradient, with ``output``'s shape.
    output : cupy.ndarray
        ``log_softmax(x, axis)``.
    axis : int, default -1
        The class axis.

    Returns
    -------
    cupy.ndarray
        The gradient with respect to ``x``, in ``output``'s dtype.
    """
    return _backward(grad_output, output, axis, log=True)


def softmax_backward(grad_output: Any, output: Any, axis: int = -1) -> Any:
    """VJP of :func:`softmax` on CuPy arrays: ``output * (g - sum(g * output))``.

    Parameters
    ----------
    grad_output : cupy.ndarray
        The upstream gradient, with ``output``'s shape.
    output : cupy.ndarray
        ``softmax(x, axis)``.
    axis : int, default -1
        The class axis.

    Returns
    -------
    cupy.ndarray
        The gradient with respect to ``x``, in ``output``'s dtype.
    """
    return _backward(grad_output, output, axis, log=False)


# ---------------------------------------------------------------------------------------------
# multiclass losses
# ---------------------------------------------------------------------------------------------


def _check_targets(t: Any, classes: int, ignore_index: int) -> None:
    """``IndexError`` for the first class index outside ``[0, classes)`` not ignored."""
    if t.size == 0:
        return
    flat = _first_index(
        "T t, int64 ignore, int64 classes",
        "xent_bad_target(t, ignore, classes)",
        "xent_bad_target",
        t,
        ignore_index,
        classes,
    )
    if flat < 0:
        return
    value = int(t.ravel()[flat].get())
    where = f"target {value} at position {_position(flat, t.shape)}"
    if classes == 0:  # the core's words (src/error.rs)
        raise IndexError(
            f"{where} is out of range: the input has 0 classes (every target must be ignore_index)"
        )
    raise IndexError(
        f"{where} is out of bounds for {classes} classes (valid: 0 to {classes - 1}, or "
        "ignore_index)"
    )


def _hard_denominator(t: Any, w: Any, sw: Any, ignore_index: int) -> Any:
    """``sum(w[y] * sw)`` over the counted samples, as a 0-d float64 device array."""
    params = "int64 t, int64 ignore"
    term = "1.0"
    args: list[Any] = [t, ignore_index]
    if w is not None:
        params += ", raw W w"
        term = "(double)w[t]"
        args.append(w)
    if sw is not None:
        params += ", S sw"
        term += " * (double)sw"
        args.append(sw)
    kernel = _elementwise(
        params, "float64 d", f"d = t == ignore ? 0.0 : {term}", "xent_hard_denominator"
    )
    return kernel(*args).sum()


def _class_loss(
    input: Any,
    target: Any,
    *,
    axis: int,
    weight: Any,
    sample_weight: Any,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    return_grad: bool,
    grad_output: Any,
    grad_out: Any,
    nll: bool,
) -> Any:
    cp = _cp()
    _arrays.uses_cupy(input, target, weight, sample_weight, grad_output, grad_out)
    x, dtype = _float_input(input)
    work = np.dtype(x.dtype)
    half_out = None
    if grad_out is not None and return_grad:
        _refuse_overlap(grad_out, x, input, "grad_out")
    if dtype == FLOAT16 and grad_out is not None and return_grad:
        _output_form(grad_out, "grad_out", dtype, x.shape)
        half_out, grad_out = grad_out, None
    t = _class_target(target, work)
    w = None if weight is None else _like(weight, work, "weight")
    sw = None if sample_weight is None else _like(sample_weight, work, "sample_weight")
    ignore_index = _arrays.ignore_index(ignore_index)
    eps = float(label_smoothing)

    shape = tuple(x.shape)
    ax = _axis(shape, axis)
    _check_reduction(reduction)
    sample_shape = shape[:ax] + shape[ax + 1 :]
    hard = t.dtype.kind in "iu"

    def mismatch(want: tuple[int, ...], what: str) -> ValueError:
        return ValueError(
            f"target has shape {tuple(t.shape)} but {what} {want} "
            f"(input shape {shape}, class axis {ax})"
        )

    if hard:
        if t.shape != sample_shape:
            raise mismatch(sample_shape, "class indices need shape")
    else:
        if t.shape == sample_shape:
            raise TypeError(
                f"target has the shape of class indices {sample_shape} but a floating dtype "
                f"({work}); cast it to integers, e.g. target.astype(np.int64)"
            )
        if nll:
            raise TypeError(f"nll_loss needs integer class indices, got dtype {work}")
        if t.shape != shape:
            raise mismatch(shape, "class probabilities need the input's shape")
        if ignore_index >= 0:
            raise ValueError(
                f"ignore_index ({ignore_index}) does not apply to soft (class probability) targets"
            )
    rows, classes, inner = _geometry(shape, ax)
    if w is not None and w.shape != (classes,):
        raise ValueError(f"weight has shape {w.shape} but one value per class needs {(classes,)}")
    if sw is not None and sw.shape != sample_shape:
        raise ValueError(
            f"sample_weight has shape {sw.shape} but one value per sample needs {sample_shape}"
        )
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is only used with return_grad=True")
    gscalar, go = _upstream(grad_output, reduction, sample_shape, work)
    if grad_out is not None:
        _output(grad_out, "grad_out", x)
        for other in (t, w, sw, go):  # the CPU path's borrow check refuses these too
            if other is not None and cp.may_share_memory(grad_out, other):
                raise ValueError(
                    "grad_out overlaps another argument (a target, weight or grad_output "
                    "array) that this call reads; pass a separate array"
                )
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {eps}")

    # Everything below the checks writes.
    denom = None
    if hard:
        _check_targets(t, classes, ignore_index)
        t = _contiguous(t, np.int64)
        if reduction == "mean":
            denom = _hard_denominator(t, w, sw, ignore_index)
    elif reduction == "mean":
        denom = cp.asarray(float(rows)) if sw is None else cp.sum(sw, dtype=cp.float64)
    grad = None
    if return_grad:
        grad = grad_out if grad_out is not None else cp.empty(shape, dtype=work)
    rowloss = cp.empty(sample_shape, dtype=cp.float64)
    common = (_ptr(w), _ptr(sw), _ptr(go), np.float64(gscalar), _ptr(denom), rowloss)
    if hard:
        wtotal = float(classes)
        if w is not None and eps > 0.0:
            wtotal = float(cp.sum(w, dtype=cp.float64))
        _launch_row(
            "xent_ce_hard",
            work,
            rows,
            classes,
            inner,
            (x, _ptr(grad), t, *common),
            (np.int64(ignore_index), np.float64(eps), np.float64(wtotal), np.int32(not nll)),
        )
    else:
        _launch_row(
            "xent_ce_soft",
            work,
            rows,
            classes,
            inner,
            (x, t, _ptr(grad), *common),
            (np.float64(eps),),
        )
        if classes == 0:  # as on the CPU: each row's loss is an empty sum, a mean is NaN
            rowloss.fill(0.0)
            if denom is not None:
                denom = cp.zeros((), dtype=cp.float64)

    if reduction == "none":
        loss = _restore(rowloss.astype(work), dtype)
    else:
        total = rowloss.sum()
        if reduction == "mean":  # nothing counted: NaN, whatever the sum (as on the CPU)
            total = cp.where(denom == 0, cp.nan, total / denom)
        loss = total.astype(dtype)
    if not return_grad:
        return loss
    assert grad is not None
    if dtype == FLOAT16:
        grad = grad.astype(dtype)
        if half_out is not None:
            cp.copyto(half_out, grad)
            grad = half_out
    return loss, grad


def cross_entropy(
    input: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    return_grad: bool = False,
    grad_output: Any = None,
    grad_out: Any = None,
) -> Any:
    """Cross entropy of CuPy logits (see :func:`xent_rs.cross_entropy`).

    Parameters
    ----------
    input, target, axis, weight, sample_weight, ignore_index, reduction, label_smoothing
        As in :func:`xent_rs.cross_entropy`, with CuPy arrays.
    return_grad, grad_output, grad_out
        As in :func:`xent_rs.cross_entropy`; ``grad_out`` may be ``input`` itself.

    Returns
    -------
    loss : cupy.ndarray
        0-d for ``mean``/``sum``, per sample for ``none``, in ``input``'s dtype.
    grad : cupy.ndarray
        Only with ``return_grad=True``.
    """
    return _class_loss(
        input,
        target,
        axis=axis,
        weight=weight,
        sample_weight=sample_weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        return_grad=return_grad,
        grad_output=grad_output,
        grad_out=grad_out,
        nll=False,
    )


def nll_loss(
    input: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_output: Any = None,
) -> Any:
    """Negative log-likelihood of CuPy log-probabilities (see :func:`xent_rs.nll_loss`).

    Parameters
    ----------
    input, target, axis, weight, sample_weight, ignore_index, reduction, return_grad, grad_output
        As in :func:`xent_rs.nll_loss`, with CuPy arrays.

    Returns
    -------
    loss : cupy.ndarray
    grad : cupy.ndarray
        Only with ``return_grad=True``.
    """
    return _class_loss(
        input,
        target,
        axis=axis,
        weight=weight,
        sample_weight=sample_weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=0.0,
        return_grad=return_grad,
        grad_output=grad_output,
        grad_out=None,
        nll=True,
    )


# ---------------------------------------------------------------------------------------------
# binary losses
# ---------------------------------------------------------------------------------------------


def _broadcast(operand: Any, shape: tuple[int, ...], dtype: np.dtype[Any], name: str) -> Any:
    """A weight as a (read-only) view broadcast to ``shape``, or ``None``."""
    if operand is None:
        return None
    cp = _cp()
    w = _like(operand, dtype, name)
    padded = (1,) * (len(shape) - w.ndim) + tuple(w.shape)
    if w.ndim > len(shape) or any(
        have not in (1, want) for have, want in zip(padded, shape, strict=True)
    ):
        raise ValueError(
            f"{name} of shape {w.shape} does not broadcast against the input's shape {shape}"
        )
    return cp.broadcast_to(w, shape)


def _check_probabilities(p: Any) -> None:
    """``ValueError`` naming the first probability outside ``[0, 1]`` (NaN included)."""
    flat = _first_index("T p", "!(p >= (T)0 && p <= (T)1)", "xent_bad_probability", p)
    if flat < 0:
        return
    value = p.ravel()[flat].get()[()]
    raise ValueError(
        f"all elements of input should be between 0 and 1: got {value} at position "
        f"{_position(flat, p.shape)}"
    )


def _binary_terms(logits: bool, pw: bool) -> tuple[str, str]:
    """The C expressions of one element's unweighted loss and gradient."""
    if not logits:
        return "xent_bce_loss(x, t)", "xent_bce_grad(x, t)"
    if pw:
        return "xent_bcelp_loss(x, t, pw)", "xent_bcelp_grad(x, t, pw)"
    return "xent_bcel_loss(x, t)", "xent_bcel_grad(x, t)"


def _binary_loss(
    input: Any,
    target: Any,
    weight: Any,
    pos_weight: Any,
    reduction: str,
    return_grad: bool,
    grad_output: Any,
    logits: bool,
) -> Any:
    cp = _cp()
    _arrays.uses_cupy(input, target, weight, pos_weight, grad_output)
    x, dtype = _float_input(input)
    work = np.dtype(x.dtype)
    shape = tuple(x.shape)
    t = _like(target, work, "target")
    if t.shape != shape:
        raise ValueError(f"target size {tuple(t.shape)} must be the same as input size {shape}")
    w = _broadcast(weight, shape, work, "weight")
    pw = _broadcast(pos_weight, shape, work, "pos_weight")
    _check_reduction(reduction)
    gscalar, go = _upstream(grad_output, reduction, shape, work)
    if not logits:
        _check_probabilities(x)

    loss_expr, grad_expr = _binary_terms(logits, pw is not None)
    params = "T x, T t"
    args: list[Any] = [x, t]
    if pw is not None:
        params += ", T pw"
        args.append(pw)
    weigh = ""
    if w is not None:
        params += ", T w"
        args.append(w)
        weigh = " * w"
    n = x.size
    name = "xent_bcel" if logits else "xent_bce"
    loss: Any
    if reduction == "none":
        if return_grad:
            kernel = _elementwise(
                params + ", T g",
                "T loss, T grad",
                f"loss = {loss_expr}{weigh}; grad = {grad_expr}{weigh} * g",
                name + "_none_grad",
            )
            g = go if go is not None else work.type(gscalar)
            loss, grad = kernel(*args, g)
        else:
            kernel = _elementwise(params, "T loss", f"loss = {loss_expr}{weigh}", name + "_none")
            loss = kernel(*args)
        loss = _restore(loss, dtype)
    else:
        if n == 0:
            total = cp.zeros((), dtype=cp.float64)
        else:
            total = _reduction(params, f"(double)({loss_expr}{weigh})", name + "_sum")(*args)
        if reduction == "mean":
            total = total / float(n)
        loss = total.astype(dtype)
        if return_grad:
            scale = gscalar if reduction == "sum" else (gscalar / n if n else 0.0)
            kernel = _elementwise(
                params + ", T g", "T grad", f"grad = {grad_expr}{weigh} * g", name + "_grad"
            )
            grad = kernel(*args, work.type(scale))
    if not return_grad:
        return loss
    return loss, _restore(grad, dtype)


def binary_cross_entropy(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_output: Any = None,
) -> Any:
    """Binary cross entropy of CuPy probabilities (see :func:`xent_rs.binary_cross_entropy`).

    Parameters
    ----------
    input, target, weight, reduction, return_grad, grad_output
        As in :func:`xent_rs.binary_cross_entropy`, with CuPy arrays.

    Returns
    -------
    loss : cupy.ndarray
    grad : cupy.ndarray
        Only with ``return_grad=True``.
    """
    return _binary_loss(
        input, target, weight, None, reduction, return_grad, grad_output, logits=False
    )


def binary_cross_entropy_with_logits(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    reduction: str = "mean",
    return_grad: bool = False,
    grad_output: Any = None,
) -> Any:
    """Binary cross entropy of CuPy logits (see :func:`xent_rs.binary_cross_entropy_with_logits`).

    Parameters
    ----------
    input, target, weight, pos_weight, reduction, return_grad, grad_output
        As in :func:`xent_rs.binary_cross_entropy_with_logits`, with CuPy arrays.

    Returns
    -------
    loss : cupy.ndarray
    grad : cupy.ndarray
        Only with ``return_grad=True``.
    """
    return _binary_loss(
        input, target, weight, pos_weight, reduction, return_grad, grad_output, logits=True
    )
