/* kernel.h: the kernel boundary. Everything a backend (kernels/cpu, kernels/cuda) may see of the
 * engine, in plain types: dtypes, devices and status codes, op and kernel ids, strided views,
 * the arguments of a launch (typed per kernel family in kargs.h), the backend table, and three
 * hooks the core provides (an error message, the interrupt flag, the Philox counter function).
 * Kernels include this header and nothing else of core (tests/t_layering.sh checks it): no
 * tensors, refcounts, autograd or Lua. */
#ifndef GM_KERNEL_H
#define GM_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kargs.h"

#define GM_MAX_DIMS 8
#define GM_MAX_OUT 4 /* outputs of one op call, and of one kernel launch */
#define GM_MAX_KIN 8 /* tensor inputs of one kernel launch */

typedef enum {
    GM_OK = 0, GM_EARG, GM_ESHAPE, GM_EDTYPE, GM_EDEVICE, GM_ENOMEM, GM_ENOTSUP,
    GM_EINTR, GM_EIO, GM_EINDEX, GM_EAUTOGRAD, GM_EINTERNAL
} gm_status;

typedef enum { GM_F32 = 0, GM_F64, GM_I32, GM_DTYPE_COUNT } gm_dtype;
typedef enum { GM_CPU = 0, GM_CUDA, GM_DEVICE_COUNT } gm_device;

static inline size_t gm_dtype_size(gm_dtype t) { return t == GM_F64 ? 8 : 4; }
static inline bool gm_dtype_is_float(gm_dtype t) { return t == GM_F32 || t == GM_F64; }

/* The calling context: opaque to kernels, which only hand it to gm_errf. */
typedef struct gm_ctx gm_ctx;

/* ---- hooks the core provides ----------------------------------------------------------- */
/* Leave a message in the context and return code (core/status.c). */
gm_status gm_errf(gm_ctx *c, gm_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The sticky process-wide interrupt flag (Ctrl-C): long kernels poll it per chunk and return
 * GM_EINTR (core/status.c). */
bool gm_interrupted(void);
/* Philox4x32-10: four 32-bit draws of counter (counter_hi, counter_lo) under seed (core/rng.c),
 * the same function on every backend so a seed gives the same stream everywhere. */
void gm_philox4x32(uint64_t seed, uint64_t counter_hi, uint64_t counter_lo, uint32_t out[4]);

/* ---- ids from the op table (core/ops.def) ---------------------------------------------- */
/* Op ids: a kernel serving a family of element functions (pointwise) is told which by id. */
typedef enum {
#define GM_OP(id, name, nin, nout, flags, sig, doc) GM_OP_##id,
#include "ops.def"
#undef GM_OP
    GM_OP_COUNT
} gm_op_id;

/* Kernel ids: every GM_KERNEL row of the family .def files. */
typedef enum {
#define GM_KERNEL(id) GM_K_##id,
#include "ops.def"
#undef GM_KERNEL
    GM_K_COUNT
} gm_kernel_id;

typedef enum { GM_RAND_UNIFORM = 0, GM_RAND_NORMAL, GM_RAND_INT } gm_rand_kind;
enum { GM_RED_MEAN = 0, GM_RED_SUM = 1, GM_RED_NONE = 2 }; /* a loss's reduction */

/* ---- strided views ------------------------------------------------------------------------ */
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

/* ---- a launch ------------------------------------------------------------------------------ */
/* Arguments of one kernel launch: operand views, the family's typed scalars (kargs.h), the
 * thread count. */
typedef struct gm_kargs {
    int n_in, n_out;
    gm_kview in[GM_MAX_KIN];
    gm_kview out[GM_MAX_OUT];
    gm_kparams k;
    int nthreads;
    /* multi-tensor kernels (optimiser steps over a parameter group): n_list views, the
     * operands of one tensor after another; NULL / 0 for every other kernel */
    const gm_kview *list;
    int n_list;
} gm_kargs;

typedef gm_status (*gm_kernel_fn)(gm_ctx *c, const gm_kargs *a);

typedef enum { GM_COPY_H2D, GM_COPY_D2H, GM_COPY_D2D, GM_COPY_H2H } gm_copy_dir;

/* ---- a backend: one table of function pointers ---------------------------------------------- */
typedef struct gm_backend {
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
    /* What the backend computes with, for build info ("OpenBLAS 0.3.21 (core Haswell: ...)"). */
    const char *(*libs)(void);
    /* Process start-up, before any kernel runs: true when the process must re-execute itself
     * (it changed an environment variable a library reads only when it loads). May be NULL. */
    bool (*preload)(void);
    gm_kernel_fn kernel[GM_K_COUNT]; /* NULL: this backend has no such kernel */
} gm_backend;

extern gm_backend gm_backend_cpu; /* kernels/cpu/backend_cpu.c */

#endif
