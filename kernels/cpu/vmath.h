/* vmath.h: vector math for the CPU kernels, 8 f32 lanes (v8f) and 4 f64 lanes (v4d). On x86-64
 * with AVX2 and glibc >= 2.35, exp and erf, log1p and tanh are libmvec's vector versions
 * (_ZGVdN8v_expf, _ZGVdN8v_erff, ..., _ZGVdN4v_exp: glibc documents at most 1 ulp for expf, 1-3
 * ulp for the others and 4 for exp); elsewhere the same functions call scalar libm per lane.
 * A kernel that sends EVERY element through the same vector call (tails padded) gets values
 * that do not depend on position, layout or thread count (see pointwise.c). */
#ifndef GM_CPU_VMATH_H
#define GM_CPU_VMATH_H

#include <math.h>
#include <stdint.h>

#define GM_V8_INLINE static inline __attribute__((always_inline))

/* name(x): scalar libm fn on each of the n lanes of a vector of type vt (the fallbacks where
 * libmvec is not found). */
#define GM_V_LANES(name, vt, n, fn)                        \
    GM_V8_INLINE vt name(vt x) {                           \
        for (int i = 0; i < n; i++) x[i] = fn(x[i]);       \
        return x;                                          \
    }

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

#if defined(GM_LIBMVEC) || defined(__FMA__)
#include <immintrin.h>
#endif
/* name(x) for vectors of type vt (n lanes): libmvec's sym (mt: its register type; linked through
 * libm.so's AS_NEEDED libmvec) where found, scalar libm fn per lane elsewhere. */
#ifdef GM_LIBMVEC
#define GM_V_MATH(name, vt, n, fn, mt, sym) \
    mt sym(mt x);                           \
    GM_V8_INLINE vt name(vt x) { return (vt)sym((mt)x); }
#else
#define GM_V_MATH(name, vt, n, fn, mt, sym) GM_V_LANES(name, vt, n, fn)
#endif
GM_V_MATH(v8_expf, v8f, 8, expf, __m256, _ZGVdN8v_expf)
GM_V_MATH(v8_erff, v8f, 8, erff, __m256, _ZGVdN8v_erff)
GM_V_MATH(v8_log1pf, v8f, 8, log1pf, __m256, _ZGVdN8v_log1pf)
GM_V_MATH(v8_tanhf, v8f, 8, tanhf, __m256, _ZGVdN8v_tanhf)

/* 4 f64 lanes (one AVX register), 4 f32 lanes for conversions, and a shuffle mask. */
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int64_t v4l __attribute__((vector_size(32)));

GM_V8_INLINE v4d v4_ld(const double *p) {
    v4d v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
GM_V8_INLINE void v4_st(double *p, v4d v) { __builtin_memcpy(p, &v, sizeof v); }
/* 4 f32 as f64 (exact), and 4 f64 rounded once to f32. */
GM_V8_INLINE v4d v4_ld_f32(const float *p) {
    v4f f;
    __builtin_memcpy(&f, p, sizeof f);
    return __builtin_convertvector(f, v4d);
}
GM_V8_INLINE void v4_st_f32(float *p, v4d v) {
    v4f f = __builtin_convertvector(v, v4f);
    __builtin_memcpy(p, &f, sizeof f);
}
GM_V8_INLINE v4d v4_splat(double x) { return (v4d){x, x, x, x}; }
/* (x[0] + x[1]) + (x[2] + x[3]): the one order every f64 lane sum is taken in. */
GM_V8_INLINE double v4_hsum(v4d x) { return (x[0] + x[1]) + (x[2] + x[3]); }

/* a b + c, fused where the CPU has FMA. */
GM_V8_INLINE v4d v4_fma(v4d a, v4d b, v4d c) {
#ifdef __FMA__
    return (v4d)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
    return a * b + c;
#endif
}

/* (v4_hsum x0, v4_hsum x1, v4_hsum x2, v4_hsum x3) in one vector. */
GM_V8_INLINE v4d v4_hsum4(v4d x0, v4d x1, v4d x2, v4d x3) {
    v4d a = __builtin_shuffle(x0, x1, (v4l){0, 4, 2, 6}) + __builtin_shuffle(x0, x1, (v4l){1, 5, 3, 7});
    v4d b = __builtin_shuffle(x2, x3, (v4l){0, 4, 2, 6}) + __builtin_shuffle(x2, x3, (v4l){1, 5, 3, 7});
    return __builtin_shuffle(a, b, (v4l){0, 1, 4, 5}) + __builtin_shuffle(a, b, (v4l){2, 3, 6, 7});
}

/* 4-lane exp, log and tanh (glibc documents at most 4 ulp for libmvec's). */
GM_V_MATH(v4_exp, v4d, 4, exp, __m256d, _ZGVdN4v_exp)
GM_V_MATH(v4_log, v4d, 4, log, __m256d, _ZGVdN4v_log)
GM_V_MATH(v4_tanh, v4d, 4, tanh, __m256d, _ZGVdN4v_tanh)

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
