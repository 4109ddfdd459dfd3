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

/* Arguments of one kernel launch. The meaning of i[]/d[] is documented at each kernel. */
typedef struct gm_kargs {
    int n_in, n_out;
    gm_kview in[GM_MAX_KIN];
    gm_kview out[GM_MAX_OUT];
    const gm_params *p;
    int64_t i[8];
    double d[8];
    int nthreads;
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
const char *gm_kernel_name(int kid);

/* Run kernel kid on device d; a missing kernel is a clean GM_ENOTSUP error. */
gm_status gm_kernel_run(gm_ctx *c, gm_device d, int kid, gm_kargs *a);
void gm_kview_of(const gm_tensor *x, gm_kview *v);
/* kargs with inputs and outputs filled from tensors (outputs first in out[]). */
void gm_kargs_init(gm_kargs *a, int n_in, gm_tensor *const *in, int n_out,
                   gm_tensor *const *out, const gm_params *p);

#endif
