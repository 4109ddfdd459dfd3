/* cpu.h: what every CPU kernel file includes: the kernel boundary (core/kernel.h, the only
 * header of the engine a kernel sees), the thread splitting (parallel.h), and the prototypes of
 * this backend's kernels gm_cpu_<ID>, one per GM_KERNEL row (backend_cpu.c builds its table
 * from the same rows). */
#ifndef GM_CPU_H
#define GM_CPU_H

#include "kernel.h"
#include "parallel.h"

#include <string.h>

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

/* Kernel ID and its backward ID_BWD as one function run(a, backward). */
#define GM_CPU_FWD_BWD(ID, run)                                       \
    gm_status gm_cpu_##ID(gm_ctx *c, const gm_kargs *a) {             \
        (void)c;                                                      \
        return run(a, false);                                         \
    }                                                                 \
    gm_status gm_cpu_##ID##_BWD(gm_ctx *c, const gm_kargs *a) {       \
        (void)c;                                                      \
        return run(a, true);                                          \
    }

/* n values of an f32/f64 view from element off with element step s, as doubles, and back
 * (rounded once): how the kernels that compute a row in double (routing, row losses, tree gates,
 * causal conv) read and write it. */
static inline void gm_load_f64(double *dst, const gm_kview *v, int64_t off, int64_t s, int64_t n) {
    if (v->dtype == GM_F64 && s == 1) {
        memcpy(dst, (const double *)v->data + off, sizeof(double) * (size_t)n);
    } else if (v->dtype == GM_F64) {
        const double *x = (const double *)v->data + off;
        for (int64_t j = 0; j < n; j++) dst[j] = x[j * s];
    } else {
        const float *x = (const float *)v->data + off;
        for (int64_t j = 0; j < n; j++) dst[j] = x[j * s];
    }
}

static inline void gm_store_f64(const gm_kview *v, int64_t off, int64_t s, const double *src, int64_t n) {
    if (v->dtype == GM_F64 && s == 1) {
        memcpy((double *)v->data + off, src, sizeof(double) * (size_t)n);
    } else if (v->dtype == GM_F64) {
        double *x = (double *)v->data + off;
        for (int64_t j = 0; j < n; j++) x[j * s] = src[j];
    } else {
        float *x = (float *)v->data + off;
        for (int64_t j = 0; j < n; j++) x[j * s] = (float)src[j];
    }
}

/* Row r (n values) of a 2-D view, any strides. */
static inline void gm_load_row(double *dst, const gm_kview *v, int64_t r, int64_t n) {
    gm_load_f64(dst, v, r * v->stride[0], v->stride[1], n);
}

static inline void gm_store_row(const gm_kview *v, int64_t r, const double *src, int64_t n) {
    gm_store_f64(v, r * v->stride[0], v->stride[1], src, n);
}

#endif
