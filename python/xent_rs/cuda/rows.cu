// The row-wise kernels of xent_rs's GPU backend (python/xent_rs/_cupy.py): the softmax family,
// cross entropy (with z-loss and the logit soft cap), NLL and the multiclass focal loss, one
// fused kernel each. Compiled once by CuPy as a RawModule (NVRTC,
// --std=c++17) with the name expressions `kernel<float>` and `kernel<double>` of every
// __global__ template below (python/xent_rs/_cuda.py lists them); .ci/check-cuda compiles this
// file the same way without a GPU.
//
// A row is handled by one thread, a group of lanes of a warp or a whole block, depending on
// its length and layout; its maximum and sum of exponentials come from one online pass
// accumulated in float64, and the loss and the gradient are written by the same kernel.

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

// The logits as cross entropy sees them: x itself, or with the soft cap c (`on`) c tanh(x / c)
// (src/kernels/cross_entropy.rs: tanh in the element precision, then the product). The cap is
// a kernel argument, the same for every thread: a call without one runs the plain arithmetic.
template <typename T>
struct XentCap {
    bool on;
    T c, inv;
    // The cap `cap` of a launch (0: none), its constants in T as the CPU kernels round them.
    static __device__ __forceinline__ XentCap from(double cap) {
        XentCap f;
        f.on = cap > 0.0;
        f.c = (T)cap;
        f.inv = f.on ? (T)(1.0 / cap) : (T)0;
        return f;
    }
    __device__ __forceinline__ T tanh_of(T v) const { return tanh(v * inv); }
    __device__ __forceinline__ T apply(T v) const { return on ? c * tanh_of(v) : v; }
    // A gradient `d` by the capped logit of `v` as the gradient by `v` itself: times the cap's
    // slope 1 - tanh^2 (as the CPU kernels form it, one fused operation).
    __device__ __forceinline__ T through(T d, T v) const {
        if (!on) return d;
        const T t = tanh_of(v);
        return d * fma(-t, t, (T)1);
    }
};

// One pass over a row: m = max f(x), s = sum exp(f(x) - m) (f the soft cap, or none), with
// torch's special values: a +inf or a NaN makes s NaN; a row of -inf leaves m = -inf (x - m
// is then NaN everywhere).
template <typename T>
__device__ void xent_row_ms(const T* x, long long b, long long classes, long long inner,
                            const XentGroup& g, double* mo, double* so, const XentCap<T>& f) {
    const T ninf = (T)XENT_NEG_INF;
    T m = ninf;
    double s = 0.0;
    xent_each_value(x, b, classes, inner, g, [&](long long, T raw) {
        const T v = f.apply(raw);
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

// Stores row r's loss (lane 0 of the group writes it), then leaves the row with `done`
// (`continue` in a row loop, `return` in a per-row function) when no gradient is asked for,
// or after writing a zero gradient when the row's upstream gradient is 0 (`zero`).
#define XENT_STORE_ROW(value, done)                                                \
    if (g.lane == 0) rowloss[r] = (value);                                         \
    if (!grad) done;                                                               \
    if (zero) {                                                                    \
        XENT_EACH(c) grad[b + c * inner] = (T)0;                                   \
        done;                                                                      \
    }

template <typename T>
__global__ void xent_softmax(const T* x, T* y, long long rows, long long classes,
                             long long inner, int group, int log_mode) {
    XENT_ROWS {
        const long long b = XENT_BASE(r);
        double ms, ss;
        xent_row_ms(x, b, classes, inner, g, &ms, &ss, XentCap<T>::from(0.0));
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

// The multiclass focal loss of a row whose target log-probability is lp (Gamma::terms in
// src/kernels/cross_entropy.rs): its loss before the weights, -(1-p)^gamma lp with
// 1 - p = -expm1(lp), and the factor that replaces 1 in cross entropy's gradient,
// (1-p)^gamma - gamma p (1-p)^(gamma-1) lp.
__device__ void xent_focal_terms(double lp, double gamma, double* loss, double* coef) {
    const double q = -expm1(lp);
    const double f = gamma == 1.0 ? q : gamma == 2.0 ? q * q : pow(q, gamma);
    // (1-p)^(gamma-1) lp = f (lp / q); lp / q tends to -1 as q -> 0, where f is 0: no
    // infinity times zero for gamma < 1.
    const double ratio = q == 0.0 ? 0.0 : lp / q;
    const double p = exp(lp);
    *loss = -f * lp;
    *coef = f - gamma * p * f * ratio;
}

// The rest of a focal-loss row once xent_ce_hard has its maximum `ms` and sum of exponentials
// `s` (`ln_s` = log s): the row loss `weighted * terms` and the gradient, cross entropy's with
// its target weight replaced by the focal factor (`scale`: the upstream factor times the
// sample and class weights).
template <typename T>
__device__ void xent_focal_row(const T* x, T* grad, long long b, long long classes,
                               long long inner, const XentGroup& g, long long r, long long y,
                               T xy, double ms, double s, double ln_s, double scale,
                               double weighted, bool zero, double gamma, double* rowloss) {
    const double lp = ((double)xy - ms) - ln_s;
    double loss, coef;
    xent_focal_terms(lp, gamma, &loss, &coef);
    XENT_STORE_ROW(weighted * loss, return);
    const T m = (T)ms;
    const double hit = scale * coef;
    const T a = (T)(hit / s);
    xent_each_value(x, b, classes, inner, g, [&](long long c, T xc) {
        const T v = exp(xc - m) * a;
        grad[b + c * inner] = c == y ? (T)((double)v - hit) : v;
    });
}

// Hard-target cross entropy (softmax != 0) or NLL; targets were checked before the launch.
// Cross entropy's options: label smoothing `eps`, the z-loss `zloss` (0: none) and the soft
// cap `cap` (0: none); `gamma > 0` makes it the focal loss (without those options), whose
// `gamma == 0` is cross entropy itself.
template <typename T>
__global__ void xent_ce_hard(const T* x, T* grad, const long long* target, const T* weight,
                             const T* sample_weight, const T* go, double gscalar,
                             const double* denom, double* rowloss, long long rows,
                             long long classes, long long inner, int group, long long ignore,
                             double eps, double wtotal, int softmax, double zloss, double cap,
                             double gamma) {
    const XentCap<T> f = XentCap<T>::from(cap);
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
        xent_row_ms(x, b, classes, inner, g, &ms, &s, f);
        const T m = (T)ms;
        const double ln_s = log(s);
        if (gamma > 0.0) {
            xent_focal_row(x, grad, b, classes, inner, g, r, y, xy, ms, s, ln_s,
                           gs * sw * wy, sw * wy, zero, gamma, rowloss);
            continue;
        }
        double sd = 0.0;
        if (eps > 0.0) {
            XENT_EACH(c) {
                const T d = f.apply(x[b + c * inner]) - m;
                sd += weight ? (double)(d * weight[c]) : (double)d;
            }
            sd = xent_reduce(g, sd, false);
        }
        const double cls = (double)classes;
        double loss = (1.0 - eps) * wy * ((ms - (double)f.apply(xy)) + ln_s);
        if (eps > 0.0) loss += eps / cls * (wtotal * ln_s - sd);
        // The factor of p in the gradient.
        double coef = (1.0 - eps) * wy + eps / cls * wtotal;
        if (zloss > 0.0) {  // s w_y lse^2, lse = m + ln s (src/kernels/cross_entropy.rs)
            const double lse = ms + ln_s;
            loss += zloss * wy * lse * lse;
            coef += 2.0 * zloss * wy * lse;
        }
        XENT_STORE_ROW(sw * loss, continue);
        const double gr = gs * sw;
        const T a = (T)(gr * coef / s);
        const T bs = (T)(gr * eps / cls);
        double hit = gr * (1.0 - eps) * wy;
        if (f.on) {  // the target's term through the cap too, in float64 as on the CPU
            const double ty = (double)f.tanh_of(xy);
            hit *= 1.0 - ty * ty;
        }
        xent_each_value(x, b, classes, inner, g, [&](long long c, T xc) {
            T v = exp(f.apply(xc) - m) * a;
            if (eps > 0.0) v -= bs * (weight ? weight[c] : (T)1);
            v = f.through(v, xc);
            grad[b + c * inner] = c == y ? (T)((double)v - hit) : v;
        });
    }
}

// Soft-target (class probability) cross entropy, with label smoothing `eps`, the z-loss
// `zloss` and the soft cap `cap` (0: none) as in xent_ce_hard.
template <typename T>
__global__ void xent_ce_soft(const T* x, const T* target, T* grad, const T* weight,
                             const T* sample_weight, const T* go, double gscalar,
                             const double* denom, double* rowloss, long long rows,
                             long long classes, long long inner, int group, double eps,
                             double zloss, double cap) {
    const T keep = (T)(1.0 - eps), spread = (T)(eps / (double)classes);
    const XentCap<T> f = XentCap<T>::from(cap);
    XENT_ROWS {
        const long long b = XENT_BASE(r);
        const double sw = sample_weight ? (double)sample_weight[r] : 1.0;
        bool zero = false;
        const double gs = grad ? xent_upstream(go, gscalar, denom, r, &zero) : 0.0;
        double ms, s;
        xent_row_ms(x, b, classes, inner, g, &ms, &s, f);
        const T m = (T)ms;
        double tw = 0.0, twd = 0.0;
        XENT_EACH(c) {
            const long long i = b + c * inner;
            T wt = target[i] * keep + spread;
            if (weight) wt *= weight[c];
            tw += (double)wt;
            twd += (double)(wt * (f.apply(x[i]) - m));
        }
        tw = xent_reduce(g, tw, false);
        twd = xent_reduce(g, twd, false);
        double loss = sw * (tw * log(s) - twd);
        // The factor of p in the gradient.
        double coef = tw;
        if (zloss > 0.0) {  // s lse^2, lse = m + ln s (src/kernels/cross_entropy.rs)
            const double lse = ms + log(s);
            loss += sw * zloss * lse * lse;
            coef += 2.0 * zloss * lse;
        }
        XENT_STORE_ROW(loss, continue);
        const double gr = gs * sw;
        const T a = (T)(gr * coef / s);
        const T gt = (T)gr;
        XENT_EACH(c) {
            const long long i = b + c * inner;
            T wt = target[i] * keep + spread;
            if (weight) wt *= weight[c];
            const T xi = x[i];
            grad[i] = f.through(exp(f.apply(xi) - m) * a - wt * gt, xi);
        }
    }
}
