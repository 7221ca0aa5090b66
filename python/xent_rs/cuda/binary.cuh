// The device functions of xent_rs's element-wise and reduction kernels (python/xent_rs/_cupy.py):
// the preamble of every cupy.ElementwiseKernel / cupy.ReductionKernel, whose one-line bodies
// (python/xent_rs/_cuda.py) call these. CuPy places the kernel's typedefs (T, ...) before this
// preamble; nothing here relies on them. .ci/check-cuda compiles every body with it.

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
    // torch's order, each product rounded (the shorter -(t (lp - l1) + l1) cancels for p
    // near t near 1), as the CPU kernel computes it.
    return xent_mul(t - (F)1, l1) - xent_mul(t, lp);
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
// torchvision's sigmoid_focal_loss of one element (Focal::terms in src/kernels/binary.rs), in
// its order: with p = sigmoid(x) and 1 - p from one e^-|x| (no cancellation), ce the BCE on
// logits, q = 1 - p_t = p (1-t) + (1-p) t,
//   loss = ce q^gamma,   grad = (p - t) q^gamma + ce gamma q^(gamma-1) p (1-p) (1-2t),
// both times a = alpha t + (1-alpha)(1-t) when `alpha` (a, na: alpha and 1 - alpha). `power`
// is gamma when it is an integer up to 16 (repeated products; 0 is BCE itself), else -1
// (q^gamma as exp(gamma ln q)).
template <typename F>
__device__ void xent_bfocal(F x, F t, F gamma, int power, int alpha, F a, F na, F* loss,
                            F* grad) {
    const F e = exp(-fabs(x));
    const bool negative = x < (F)0;
    const F p = (negative ? e : (F)1) / ((F)1 + e);
    const F notp = negative ? (F)1 - p : e * p;
    const F ce = xent_bcel_loss(x, t);
    const F nott = (F)1 - t;
    const F q = xent_mul(p, nott) + xent_mul(notp, t);
    const F dq = p * notp * (nott - t);  // d q / d x
    if (power == 0) {
        *loss = ce;
        *grad = p - t;
    } else {
        F pw, slope;
        if (power > 0) {
            // q^(power-1) first: the derivative's factor, with no division by q.
            F lower = (F)1;
            for (int k = 1; k < power; ++k) lower *= q;
            pw = lower * q;
            slope = (F)power * lower * dq;
        } else {
            pw = exp(gamma * log(q));
            // gamma q^(gamma-1) dq as gamma q^gamma (dq / q): |dq| <= q for t in [0, 1], and
            // the term is 0 at q = 0 (q^gamma is), where q^(gamma-1) is infinite for gamma < 1.
            const F ratio = q == (F)0 ? (F)0 : dq / q;
            slope = gamma * pw * ratio;
        }
        *loss = ce * pw;
        *grad = xent_mul(pw, p - t) + xent_mul(ce, slope);
    }
    if (alpha) {
        const F at = xent_mul(a, t) + xent_mul(na, nott);
        *loss *= at;
        *grad *= at;
    }
}
template <typename F>
__device__ F xent_bfocal_loss(F x, F t, F gamma, int power, int alpha, F a, F na) {
    F loss, grad;
    xent_bfocal(x, t, gamma, power, alpha, a, na, &loss, &grad);
    return loss;
}
template <typename F>
__device__ F xent_bfocal_grad(F x, F t, F gamma, int power, int alpha, F a, F na) {
    F loss, grad;
    xent_bfocal(x, t, gamma, power, alpha, a, na, &loss, &grad);
    return grad;
}
// torch's kl_div of one element (src/kernels/kl_div.rs): xlogy(t, t) - t x with each product
// rounded, 0 where t = 0 whatever x (-inf included); a negative or NaN t gives NaN.
template <typename F> __device__ F xent_kl_loss(F x, F t) {
    return t == (F)0 ? (F)0 : xent_mul(t, log(t)) - xent_mul(t, x);
}
// -1 * t rather than -t or 0 - t: torch's -0 where t = 0, as the CPU kernel. (The input is a
// parameter of the gradient kernels all the same, as of every kernel of a loss.)
template <typename F> __device__ F xent_kl_grad(F, F t) { return xent_mul((F)-1, t); }
// With log-probability targets: e^t (t - x), 0 where e^t = 0.
template <typename F> __device__ F xent_klog_loss(F x, F t) {
    const F p = exp(t);
    return p == (F)0 ? (F)0 : p * (t - x);
}
template <typename F> __device__ F xent_klog_grad(F, F t) { return xent_mul((F)-1, exp(t)); }
template <typename F> __device__ bool xent_bad_target(F t, long long ignore, long long classes) {
    if ((F)(-1) < (F)0) {
        const long long v = (long long)t;
        return v != ignore && (v < 0 || v >= classes);
    }
    const unsigned long long v = (unsigned long long)t;
    if (ignore >= 0 && v == (unsigned long long)ignore) return false;
    return v >= (unsigned long long)classes;
}
