/* internal.h: the context struct and helpers shared by core/ files only (not by kernels). */
#ifndef GM_INTERNAL_H
#define GM_INTERNAL_H

#include "backend.h"

struct gm_ctx {
    char err[512];
    gm_status err_code;
    int grad_off_depth;      /* > 0 inside no_grad */
    int grad_stack[64];      /* saved depths for gm_grad_push(c, true) inside no_grad */
    int grad_sp;
    uint64_t node_seq;
    gm_generator gen;
    int nthreads;
    int default_threads;     /* the CPU backend's thread count, read once */
    size_t live_bytes;
    gm_kprof *prof;          /* per-kernel call counts and time while profiling, else NULL */
};

/* Allocate a node for op with n_in inputs (not retained yet). */
gm_node *gm_node_new(int op, int n_in, int n_out);
/* Record the autograd node for a finished forward call when needed. */
gm_status gm_autograd_record(gm_ctx *c, int op, gm_opcall *o, const gm_params *p);

/* Same dtype and device for all inputs, or a clear error naming the op. */
gm_status gm_check_same_dtype(gm_ctx *c, const char *op, int n, gm_tensor **in);
gm_status gm_check_float(gm_ctx *c, const char *op, const gm_tensor *x);
/* A view of x with the given shape/strides/offset (shares storage). */
gm_status gm_tensor_view(gm_ctx *c, const gm_tensor *x, int ndim, const int64_t *shape,
                         const int64_t *stride, int64_t offset, gm_tensor **out);
/* x broadcast (stride 0) to shape: a view for kernels; no autograd. */
gm_status gm_tensor_broadcast_view(gm_ctx *c, const gm_tensor *x, int ndim, const int64_t *shape,
                                   gm_tensor **out);
void gm_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);
/* A [B, H, T, D] operand for kernels that read each head's rows as a matrix (sdpa, gla): x itself
 * when its last dim is contiguous and its row stride at least D (batch, head and row strides
 * free, as the [B, T, H, D] -> [B, H, T, D] transpose of a projection has), else a contiguous
 * copy. */
gm_status gm_rows_operand(gm_ctx *c, gm_tensor *x, gm_tensor **out);
/* A fresh contiguous copy of x in dtype t on x's device (no autograd). */
gm_status gm_tensor_copy_as(gm_ctx *c, gm_tensor *x, gm_dtype t, gm_tensor **out);
/* Run a kernel on the device of out[0] (or in[0]) with its family's scalars k (NULL: none). */
gm_status gm_run(gm_ctx *c, int kid, int n_in, gm_tensor *const *in, int n_out,
                 gm_tensor *const *out, const gm_kparams *k);

#endif
