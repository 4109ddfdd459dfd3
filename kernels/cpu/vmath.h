/* vmath.h: 8-lane f32 math for the CPU kernels. On x86-64 with AVX2 and glibc >= 2.35, exp and
 * erf, log1p and tanh are libmvec's 8-lane versions (_ZGVdN8v_expf, _ZGVdN8v_erff, ...: glibc
 * documents at most 1 ulp for expf and 1-3 ulp for the others); elsewhere the same functions call scalar libm per lane.
 * A kernel that sends EVERY element through the same 8-lane call (tails padded) gets values that
 * do not depend on position, layout or thread count (see pointwise.c). */
#ifndef GM_CPU_VMATH_H
#define GM_CPU_VMATH_H

#include <math.h>
#include <stdint.h>

#define GM_V8_INLINE static inline __attribute__((always_inline))

#if defined(__x86_64__) && defined(__AVX2__) && defined(__GLIBC__) && defined(__GLIBC_PREREQ)
#if __GLIBC_PREREQ(2, 35)
#define GM_LIBMVEC 1
#endif
#endif

/* 8 f32 lanes as a GCC vector: plain arithmetic maps to one AVX instruction per operation.
 * Without AVX, GCC warns that passing them changes the ABI; these functions are all static. */
#ifndef __AVX__
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

#ifdef GM_LIBMVEC
#include <immintrin.h>
__m256 _ZGVdN8v_expf(__m256 x); /* libmvec (linked through libm.so's AS_NEEDED libmvec) */
__m256 _ZGVdN8v_erff(__m256 x);
__m256 _ZGVdN8v_log1pf(__m256 x);
__m256 _ZGVdN8v_tanhf(__m256 x);
GM_V8_INLINE v8f v8_expf(v8f x) { return (v8f)_ZGVdN8v_expf((__m256)x); }
GM_V8_INLINE v8f v8_erff(v8f x) { return (v8f)_ZGVdN8v_erff((__m256)x); }
GM_V8_INLINE v8f v8_log1pf(v8f x) { return (v8f)_ZGVdN8v_log1pf((__m256)x); }
GM_V8_INLINE v8f v8_tanhf(v8f x) { return (v8f)_ZGVdN8v_tanhf((__m256)x); }
#else
GM_V8_INLINE v8f v8_expf(v8f x) {
    for (int i = 0; i < 8; i++) x[i] = expf(x[i]);
    return x;
}
GM_V8_INLINE v8f v8_erff(v8f x) {
    for (int i = 0; i < 8; i++) x[i] = erff(x[i]);
    return x;
}
GM_V8_INLINE v8f v8_log1pf(v8f x) {
    for (int i = 0; i < 8; i++) x[i] = log1pf(x[i]);
    return x;
}
GM_V8_INLINE v8f v8_tanhf(v8f x) {
    for (int i = 0; i < 8; i++) x[i] = tanhf(x[i]);
    return x;
}
#endif

GM_V8_INLINE v8f v8_splat(float v) { return (v8f){v, v, v, v, v, v, v, v}; }

/* |x| */
GM_V8_INLINE v8f v8_abs(v8f x) {
    const v8i mag = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    return (v8f)((v8i)x & mag);
}

/* sigmoid from e = exp(-|x|) (no overflow either side): 1/(1+e) for x >= 0, e/(1+e) below. */
GM_V8_INLINE v8f v8_sigmoid(v8f x) {
    const v8i mag = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    v8f one = v8_splat(1.0f), ax = (v8f)((v8i)x & mag); /* |x| */
    v8f e = v8_expf(-ax), r = one / (one + e);
    v8i pos = x >= 0;
    return (v8f)((pos & (v8i)r) | (~pos & (v8i)(e * r)));
}

/* o[i] = exp(x[i] - shift) for i < n (o may be x), every element through one 8-lane block;
 * returns the sum of the o[i] in f64, added in element order. */
GM_V8_INLINE double v8_exp_shifted(float *o, const float *x, int64_t n, float shift) {
    double sum = 0;
    int64_t i = 0;
    v8f s = v8_splat(shift);
    for (; i + 8 <= n; i += 8) {
        v8f v;
        __builtin_memcpy(&v, x + i, sizeof v);
        v = v8_expf(v - s);
        __builtin_memcpy(o + i, &v, sizeof v);
        for (int k = 0; k < 8; k++) sum += v[k];
    }
    if (i < n) {
        v8f v = v8_splat(-INFINITY);
        for (int64_t k = i; k < n; k++) v[k - i] = x[k];
        v = v8_expf(v - s);
        for (int64_t k = i; k < n; k++) sum += (o[k] = v[k - i]);
    }
    return sum;
}

#endif
