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
template <typename F> __device__ bool xent_bad_target(F t, long long ignore, long long classes) {
    if ((F)(-1) < (F)0) {
        const long long v = (long long)t;
        return v != ignore && (v < 0 || v >= classes);
    }
    const unsigned long long v = (unsigned long long)t;
    if (ignore >= 0 && v == (unsigned long long)ignore) return false;
    return v >= (unsigned long long)classes;
}
