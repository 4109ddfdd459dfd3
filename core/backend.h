/* backend.h: what a backend (kernels/cpu, kernels/cuda) implements, and how the core calls it.
 * Kernels get raw pointers, shapes and strides (gm_kview); they know nothing of autograd,
 * refcounts or Lua. A kernel returns a gm_status; long loops poll gm_interrupted(). */
#ifndef GM_BACKEND_H
#define GM_BACKEND_H

#include "gm.h"

#define GM_MAX_KIN 8

/* Kernel ids: every GM_KERNEL row of the family .def files. */
typedef enum {
#define GM_KERNEL(id) GM_K_##id,
#include "ops.def"
#undef GM_KERNEL
    GM_K_COUNT
} gm_kernel_id;

/* A strided view as a kernel sees it: data points at element [0,...,0]. */
typedef struct gm_kview {
    void *data;
    gm_dtype dtype;
    int ndim;
    int64_t shape[GM_MAX_DIMS];
    int64_t stride[GM_MAX_DIMS]; /* elements */
} gm_kview;

/* Shape arithmetic shared by the core and the kernels (static inline: kernels call these in
 * their setup, and the element loops must not pay for a call). */

/* Number of elements of shape[0..ndim-1] (1 for ndim 0). */
static inline int64_t gm_shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* Row-major contiguous: each dim of size > 1 has the stride of the dims after it. */
static inline bool gm_shape_contiguous(int ndim, const int64_t *shape, const int64_t *stride) {
    int64_t st = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        if (shape[i] != 1 && stride[i] != st) return false;
        st *= shape[i];
    }
    return true;
}

/* Element offset of flat row-major index i over dims 0..ndim-1 with the given strides. */
static inline int64_t gm_shape_offset(int ndim, const int64_t *shape, const int64_t *stride,
                                      int64_t i) {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; d--) {
        off += (i % shape[d]) * stride[d];
        i /= shape[d];
    }
    return off;
}

static inline int64_t gm_kview_numel(const gm_kview *v) {
    return gm_shape_numel(v->ndim, v->shape);
}
static inline bool gm_kview_contiguous(const gm_kview *v) {
    return gm_shape_contiguous(v->ndim, v->shape, v->stride);
}
/* Element offset of flat row-major element i of v. */
static inline int64_t gm_kview_offset(const gm_kview *v, int64_t i) {
    return gm_shape_offset(v->ndim, v->shape, v->stride, i);
}

/* [B, H, T, D] operands whose heads are read as row-major matrices (sdpa, gla): the element
 * offset of head hd = b H + h, and the row stride as BLAS wants it (any stride serves a single
 * row, where BLAS still asks for one at least the row length). */
static inline int64_t gm_kview_head_off(const gm_kview *v, int64_t hd) {
    int64_t H = v->shape[1] > 0 ? v->shape[1] : 1;
    return (hd / H) * v->stride[0] + (hd % H) * v->stride[1];
}
static inline int64_t gm_kview_row_ld(const gm_kview *v) {
    return v->shape[2] > 1 ? v->stride[2] : (v->shape[3] > 1 ? v->shape[3] : 1);
}

/* Element i of data of dtype t as a double, and back (f32 rounds, i32 truncates). */
static inline double gm_elem_load(const void *p, gm_dtype t, int64_t i) {
    switch (t) {
    case GM_F32: return ((const float *)p)[i];
    case GM_F64: return ((const double *)p)[i];
    default: return ((const int32_t *)p)[i];
    }
}

static inline void gm_elem_store(void *p, gm_dtype t, int64_t i, double v) {
    switch (t) {
    case GM_F32: ((float *)p)[i] = (float)v; break;
    case GM_F64: ((double *)p)[i] = v; break;
    default: ((int32_t *)p)[i] = (int32_t)v; break;
    }
}

/* Arguments of one kernel launch. The meaning of i[]/d[] is documented at each kernel. */
typedef struct gm_kargs {
    int n_in, n_out;
    gm_kview in[GM_MAX_KIN];
    gm_kview out[GM_MAX_OUT];
    const gm_params *p;
    int64_t i[8];
    double d[8];
    int nthreads;
    /* multi-tensor kernels (optimiser steps over a parameter group): n_list views, the
     * operands of one tensor after another; NULL / 0 for every other kernel */
    const gm_kview *list;
    int n_list;
} gm_kargs;

typedef gm_status (*gm_kernel_fn)(gm_ctx *c, const gm_kargs *a);

typedef enum { GM_COPY_H2D, GM_COPY_D2H, GM_COPY_D2D, GM_COPY_H2H } gm_copy_dir;

struct gm_backend {
    const char *name; /* "cpu" | "cuda" */
    gm_device device;
    gm_status (*alloc)(gm_ctx *c, size_t nbytes, void **ptr);
    void (*free)(void *ptr);
    gm_status (*copy)(gm_ctx *c, void *dst, const void *src, size_t n, gm_copy_dir dir);
    gm_status (*sync)(gm_ctx *c);
    void (*set_threads)(int n);
    int (*max_threads)(void); /* threads a kernel uses when the context sets none */
    size_t (*empty_cache)(void);  /* release cached free blocks; returns the bytes released */
    size_t (*cached_bytes)(void); /* bytes held in the allocator's cache */
    gm_kernel_fn kernel[GM_K_COUNT]; /* NULL: this backend has no such kernel */
};

extern gm_backend gm_backend_cpu; /* kernels/cpu/backend_cpu.c */
gm_backend *gm_backend_for(gm_device d); /* NULL when not built */

/* Run kernel kid on device d; a missing kernel is a clean GM_ENOTSUP error. */
gm_status gm_kernel_run(gm_ctx *c, gm_device d, int kid, gm_kargs *a);
void gm_kview_of(const gm_tensor *x, gm_kview *v);
/* kargs with inputs and outputs filled from tensors (outputs first in out[]). */
void gm_kargs_init(gm_kargs *a, int n_in, gm_tensor *const *in, int n_out,
                   gm_tensor *const *out, const gm_params *p);

#endif
