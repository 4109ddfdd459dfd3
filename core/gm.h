/* gm.h: the public C API of the gmoe engine (tensors, ops, autograd, RNG, backends).
 * Pure C11: never includes lua.h or CUDA headers. Every fallible call returns gm_status and
 * leaves its message in the context (gm_errmsg). Ownership: *_new, gm_op outputs and
 * gm_tensor_retain give owned references; release them with gm_tensor_release. */
#ifndef GM_H
#define GM_H

#include "kernel.h" /* the plain types the engine shares with its kernels */

#define GM_VERSION "0.1.0"
#define GM_MAX_IN 8 /* tensor inputs of one op call (variadic ops take more: see gm_opcall) */

typedef struct gm_node gm_node;

/* Refcounted buffer on one device. Views share it. */
typedef struct gm_storage {
    int refcount;
    gm_device device;
    size_t nbytes;
    void *data;
    gm_backend *backend;
    gm_ctx *ctx; /* for live-byte accounting */
} gm_storage;

/* A strided view of a storage. shape/stride/offset are in elements. */
typedef struct gm_tensor {
    int refcount;
    gm_dtype dtype;
    int ndim;
    int64_t shape[GM_MAX_DIMS];
    int64_t stride[GM_MAX_DIMS];
    int64_t offset;
    gm_storage *storage;
    bool requires_grad;       /* leaf that wants .grad, or a result of a recorded op */
    struct gm_tensor *grad;   /* accumulated gradient of a leaf (owned), or NULL */
    gm_node *grad_fn;         /* node that produced this tensor (owned ref), NULL for leaves */
    int out_index;            /* which output of grad_fn */
} gm_tensor;

/* ---- status and context ------------------------------------------------------------ */
gm_ctx *gm_ctx_new(void);
void gm_ctx_free(gm_ctx *c);
/* gm_errf (kernel.h) leaves the message that gm_errmsg returns. */
const char *gm_errmsg(const gm_ctx *c);
gm_status gm_err_code(const gm_ctx *c); /* the status of the last error */
void gm_err_clear(gm_ctx *c);
const char *gm_status_name(gm_status s);
size_t gm_ctx_live_bytes(const gm_ctx *c);   /* bytes held by live storages */
/* Back to a clean state after an error or interrupt: grad mode on, no message. */
void gm_ctx_reset(gm_ctx *c);
void gm_ctx_set_num_threads(gm_ctx *c, int n); /* kernels and BLAS; 0 = library default */
int gm_ctx_num_threads(const gm_ctx *c);
/* Kernel profiler: while on, every kernel run adds its wall time (after the device syncs) and
 * one call to its row; rows are indexed by kernel id (gm_kernel_name, GM_K_COUNT of them).
 * gm_profile_start zeroes the rows; gm_profile_rows is NULL while off. */
typedef struct {
    uint64_t calls;
    uint64_t ns;
} gm_kprof;
gm_status gm_profile_start(gm_ctx *c);
void gm_profile_stop(gm_ctx *c);
const gm_kprof *gm_profile_rows(const gm_ctx *c);
int gm_kernel_count(void);
const char *gm_kernel_name(int kid);

/* Grad mode: gm_grad_push(c, false) ... gm_grad_pop(c) brackets a no_grad region. */
void gm_grad_push(gm_ctx *c, bool enabled);
void gm_grad_pop(gm_ctx *c);
bool gm_grad_enabled(const gm_ctx *c);

/* Interrupt: a sticky process-wide flag set by SIGINT handlers, checked between ops and per
 * chunk inside long kernels (gm_interrupted, kernel.h: they then return GM_EINTR). Only the
 * REPL prompt clears it. */
void gm_interrupt_set(void);
void gm_interrupt_clear(void);
uint64_t gm_interrupt_polls(void); /* how many times gm_interrupted() was asked on this thread */

/* ---- dtypes ------------------------------------------------------------------------- */
/* gm_dtype_size and gm_dtype_is_float are in kernel.h */
const char *gm_dtype_name(gm_dtype t);           /* "f32" "f64" "i32" */
bool gm_dtype_parse(const char *s, gm_dtype *out); /* also accepts float32/float64/int32 etc */
const char *gm_device_name(gm_device d);

/* ---- tensors ------------------------------------------------------------------------ */
/* New contiguous tensor with uninitialised data. shape may be NULL when ndim == 0. */
gm_status gm_tensor_new(gm_ctx *c, gm_dtype t, gm_device d, int ndim, const int64_t *shape,
                        gm_tensor **out);
gm_status gm_tensor_zeros(gm_ctx *c, gm_dtype t, gm_device d, int ndim, const int64_t *shape,
                          gm_tensor **out);
gm_status gm_tensor_full(gm_ctx *c, gm_dtype t, gm_device d, int ndim, const int64_t *shape,
                         double value, gm_tensor **out);
gm_status gm_tensor_scalar(gm_ctx *c, gm_dtype t, double value, gm_tensor **out); /* 0-dim */
/* A new tensor struct viewing the same storage (no autograd link). */
gm_status gm_tensor_alias(gm_ctx *c, const gm_tensor *x, gm_tensor **out);
gm_tensor *gm_tensor_retain(gm_tensor *x);
void gm_tensor_release(gm_tensor *x); /* NULL is fine */
int64_t gm_tensor_numel(const gm_tensor *x);
bool gm_tensor_is_contiguous(const gm_tensor *x);
/* Pointer to element [0,...,0] (host or device memory). */
static inline void *gm_tensor_data(const gm_tensor *x) {
    return (char *)x->storage->data + x->offset * (int64_t)gm_dtype_size(x->dtype);
}
static inline gm_device gm_tensor_device(const gm_tensor *x) { return x->storage->device; }
/* Element access on CPU tensors, by flat row-major index over the logical shape. */
double gm_tensor_get_flat(const gm_tensor *x, int64_t i);
/* Raw element write by flat index (no autograd or in-place checks: gradcheck's perturbations). */
void gm_tensor_set_flat(gm_tensor *x, int64_t i, double v);
/* "[4, 8]" into buf; returns buf. */
const char *gm_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);
#define GM_SHAPE_STR(t, buf) gm_shape_str((t)->ndim, (t)->shape, (buf), sizeof(buf))

/* In place, outside autograd (refused on leaves that require grad while grad mode is on):
 * dst[...] = broadcast(src), with dtype conversion. */
gm_status gm_tensor_copy_(gm_ctx *c, gm_tensor *dst, const gm_tensor *src);
gm_status gm_tensor_fill_(gm_ctx *c, gm_tensor *dst, double value);
/* May op write into dst in place? Not when it requires grad (under grad mode), nor when two of
 * its elements share memory (an expand()ed view): an error naming op otherwise. */
gm_status gm_tensor_check_inplace(gm_ctx *c, const char *op, const gm_tensor *dst);
/* A number stored in an i32 tensor must be an integer in -2^31 .. 2^31-1: else an error that
 * names op and the value (never a silent wrap or truncation). */
gm_status gm_check_i32(gm_ctx *c, const char *op, double v);
/* Contiguous copy (or a new reference when already contiguous and same dtype). */
gm_status gm_tensor_contiguous(gm_ctx *c, gm_tensor *x, gm_tensor **out);
gm_status gm_tensor_to_dtype(gm_ctx *c, gm_tensor *x, gm_dtype t, gm_tensor **out);

/* Normalise a possibly negative dim against ndim; error names the op. */
gm_status gm_dim_norm(gm_ctx *c, const char *op, int dim, int ndim, int *out);
/* numpy broadcasting of two shapes; error names the op and both shapes. */
gm_status gm_broadcast_shape(gm_ctx *c, const char *op, int na, const int64_t *a, int nb,
                             const int64_t *b, int *nout, int64_t *out);

/* ---- ops ---------------------------------------------------------------------------- */
/* Parameters of an op call. Each op reads the fields its Lua signature names (see op.c). */
typedef struct gm_params {
    int ndims;                 /* dims given; -1 means "all dims" */
    int dims[GM_MAX_DIMS];
    int dim, dim1;
    bool has_dim;              /* an optional `dim` was given */
    bool keepdim;
    int64_t start, length, index;
    int64_t k, n;              /* topk k, one_hot classes, split size, ... */
    int64_t ignore_index;
    double a, b;               /* scalars: clamp min/max, pow exponent, fill value, ... */
    bool has_a, has_b;
    bool largest, sorted, unbiased;
    int reduction;             /* GM_RED_MEAN / GM_RED_SUM / GM_RED_NONE */
    int64_t shape[GM_MAX_DIMS];/* reshape/expand/permute targets */
    int nshape;
    gm_dtype dtype;            /* output dtype where an op takes one */
} gm_params;

/* GM_RED_MEAN / GM_RED_SUM / GM_RED_NONE are in kernel.h. */

/* Op ids (gm_op_id, GM_OP_<ID>) are in kernel.h. */

/* Flags of an op row. */
enum {
    GM_F_NODIFF = 1 << 0,   /* no backward rule: outputs never require grad */
    GM_F_VIEW = 1 << 1,     /* output shares the input's storage */
    GM_F_VARIADIC = 1 << 2, /* first Lua argument is an array of tensors */
    GM_F_SAVE_OUT = 1 << 3, /* backward reads the outputs: the node keeps aliases */
    GM_F_NOMETHOD = 1 << 4, /* not exposed as a tensor method, only gm.<name> */
};

/* A call of one op: inputs (borrowed), params, outputs (owned, set by forward). */
typedef struct gm_opcall {
    int n_in;
    gm_tensor **in;
    const gm_params *p;
    int n_out;
    gm_tensor *out[GM_MAX_OUT];
} gm_opcall;

/* What the backward rule of a node sees. */
struct gm_node {
    int refcount;
    uint64_t seq;             /* creation order: reverse order is a topological order */
    int op;                   /* gm_op_id */
    gm_params p;
    int n_in, n_out;
    gm_tensor **in;           /* retained inputs (their grad_fn links form the graph) */
    bool *needs;              /* needs[i]: input i requires grad */
    gm_tensor *saved_out[GM_MAX_OUT]; /* aliases of outputs when GM_F_SAVE_OUT */
    int64_t out_shape[GM_MAX_OUT][GM_MAX_DIMS];
    int out_ndim[GM_MAX_OUT];
    gm_dtype out_dtype[GM_MAX_OUT];
    gm_tensor *gout[GM_MAX_OUT]; /* gradient accumulated w.r.t. each output during backward */
    bool freed;               /* backward already ran and released the saved state */
    uint64_t mark;            /* traversal stamp of the last backward that visited it */
    gm_tensor *in_small[GM_MAX_IN]; /* storage for in/needs when n_in <= GM_MAX_IN */
    bool needs_small[GM_MAX_IN];
};

/* The rules of one op, defined next to each other in core/ops/<family>.c as
 * `const gm_oprules gm_rules_<ID> = {...}`. */
typedef struct gm_oprules {
    /* Checks inputs and params (errors name the op and the offending shapes/dtypes/values),
     * then allocates and computes o->out[] (owned). */
    gm_status (*forward)(gm_ctx *c, gm_opcall *o);
    /* gout[i] (NULL means zero) w.r.t. output i -> gin[j] (owned, new) for each input j with
     * n->needs[j], of input j's shape and dtype. Runs with grad mode off; may compose ops.
     * NULL only for GM_F_NODIFF ops. */
    gm_status (*backward)(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin);
    /* Sample inputs for the generic tests: f64 tensors (owned) and params, variant 0, 1, ...
     * until it returns GM_ENOTSUP. Inputs that need a range (log, sqrt) get it here; ops
     * with non-differentiable points keep samples away from them. */
    gm_status (*sample)(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p);
    /* Bad calls for the generic error tests: variant 0, 1, ... until GM_ENOTSUP; sets the
     * status the call must fail with (GM_ESHAPE, GM_EDTYPE, GM_EARG, GM_EINDEX). */
    gm_status (*bad)(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                     gm_status *expect);
} gm_oprules;

/* One row of the op table (core/ops.def) plus its rules. */
typedef struct gm_opdef {
    const char *name;     /* Lua name */
    int n_in;             /* tensor inputs (variadic ops: 0) */
    int n_out;
    unsigned flags;
    const char *sig;      /* Lua argument list, e.g. "x dims? keepdim?" (see lua/lgmoe.c) */
    const char *doc;
    const gm_oprules *rules;
} gm_opdef;

const gm_opdef *gm_opdef_get(int op);
int gm_op_find(const char *name); /* -1 when unknown */

/* Run op `op` eagerly; records an autograd node when an input requires grad and grad mode is
 * on. On failure everything is released and out[] is untouched. */
gm_status gm_op(gm_ctx *c, int op, int n_in, gm_tensor **in, const gm_params *p,
                gm_tensor **out);
/* Defaults: ndims = -1 (all dims), dim = 0 (has_dim false), dim1 = -1, keepdim false,
 * largest/sorted/unbiased true, reduction mean, ignore_index -100, dtype f32. */
void gm_params_init(gm_params *p);

/* Convenience wrappers used by backward rules and C callers. */
gm_status gm_add(gm_ctx *c, gm_tensor *a, gm_tensor *b, gm_tensor **out);
gm_status gm_sub(gm_ctx *c, gm_tensor *a, gm_tensor *b, gm_tensor **out);
gm_status gm_mul(gm_ctx *c, gm_tensor *a, gm_tensor *b, gm_tensor **out);
gm_status gm_div(gm_ctx *c, gm_tensor *a, gm_tensor *b, gm_tensor **out);
gm_status gm_neg(gm_ctx *c, gm_tensor *a, gm_tensor **out);
gm_status gm_mul_scalar(gm_ctx *c, gm_tensor *a, double s, gm_tensor **out);
gm_status gm_add_scalar(gm_ctx *c, gm_tensor *a, double s, gm_tensor **out);
gm_status gm_matmul(gm_ctx *c, gm_tensor *a, gm_tensor *b, gm_tensor **out);
gm_status gm_transpose(gm_ctx *c, gm_tensor *a, int d0, int d1, gm_tensor **out);
gm_status gm_reshape(gm_ctx *c, gm_tensor *a, int ndim, const int64_t *shape, gm_tensor **out);
gm_status gm_expand(gm_ctx *c, gm_tensor *a, int ndim, const int64_t *shape, gm_tensor **out);
gm_status gm_sum_dims(gm_ctx *c, gm_tensor *a, int ndims, const int *dims, bool keepdim,
                      gm_tensor **out);
/* Reduce a broadcast gradient g back to `shape` (sum over broadcast dims). New ref. */
gm_status gm_sum_to_shape(gm_ctx *c, gm_tensor *g, int ndim, const int64_t *shape,
                          gm_tensor **out);

/* ---- autograd ----------------------------------------------------------------------- */
/* root: a scalar (grad NULL) or any tensor with grad of its shape. Accumulates into the .grad
 * of leaves that require grad, then frees the graph's saved state unless retain_graph. */
gm_status gm_backward(gm_ctx *c, gm_tensor *root, gm_tensor *grad, bool retain_graph);
gm_status gm_tensor_set_requires_grad(gm_ctx *c, gm_tensor *x, bool on);
gm_status gm_tensor_detach(gm_ctx *c, gm_tensor *x, gm_tensor **out);
void gm_node_release(gm_node *n);

/* ---- randomness --------------------------------------------------------------------- */
/* Philox4x32-10 counter-based generator: element i of a draw depends only on (seed, offset,
 * i), so results do not depend on the thread count and match across backends. */
typedef struct gm_generator {
    uint64_t seed;
    uint64_t offset; /* next unused counter (in Philox blocks of 4 x 32 bits) */
} gm_generator;
void gm_generator_init(gm_generator *g, uint64_t seed);
gm_generator *gm_ctx_generator(gm_ctx *c); /* the default generator */
/* gm_philox4x32 (the counter function) and gm_rand_kind are in kernel.h. */
/* Fill contiguous x: uniform in [a,b), normal(mean a, std b), or integers in [a,b).
 * g NULL = the default generator. Advances g->offset by the blocks used. */
gm_status gm_rand_fill(gm_ctx *c, gm_tensor *x, gm_rand_kind kind, double a, double b,
                       gm_generator *g);

/* A random permutation of 0..n-1 (Fisher-Yates driven by Philox uniforms). */
gm_status gm_randperm(gm_ctx *c, int64_t n, gm_dtype t, gm_generator *g, gm_tensor **out);

/* ---- optimiser steps (in place, no autograd) ---------------------------------------- */
typedef struct gm_optim_hp {
    double lr, momentum, dampening, weight_decay, beta1, beta2, eps;
    bool nesterov, decoupled_wd; /* decoupled_wd: AdamW */
    int64_t step;                /* 1-based step count (Adam bias correction) */
} gm_optim_hp;
/* p -= lr * update; buf is the momentum buffer (may be NULL when momentum == 0). */
gm_status gm_sgd_step(gm_ctx *c, gm_tensor *p, const gm_tensor *g, gm_tensor *buf,
                      const gm_optim_hp *hp);
gm_status gm_adam_step(gm_ctx *c, gm_tensor *p, const gm_tensor *g, gm_tensor *m, gm_tensor *v,
                       const gm_optim_hp *hp);
/* The same steps over a group of n parameters (one dtype and device, one step count) in one
 * kernel call, as torch's foreach optimisers; each tensor's update is bitwise the single one. */
gm_status gm_sgd_step_multi(gm_ctx *c, int n, gm_tensor **p, gm_tensor **g, gm_tensor **buf,
                            const gm_optim_hp *hp);
gm_status gm_adam_step_multi(gm_ctx *c, int n, gm_tensor **p, gm_tensor **g, gm_tensor **m, gm_tensor **v,
                             const gm_optim_hp *hp);
/* Sum of squares of all elements of the given tensors, in f64. */
gm_status gm_sumsq(gm_ctx *c, int n, gm_tensor **xs, double *out);
gm_status gm_scale_(gm_ctx *c, gm_tensor *x, double s);

/* ---- statistics estimators (no autograd) -------------------------------------------- */
/* Gates of the Gaussian mixture of experts with a 1-D covariate x (papers.md §1, §2), the enum
 * gm_moe_gate of kargs.h: softmax: beta0 + beta1 x; temperature: (beta0 + beta1 x) / tau; tanh /
 * sigmoid (activation dense-to-sparse): act(beta1 x) / tau + beta0; topk: (beta0 + beta1 x) / tau
 * over the K largest (ties to the lower index), the others weight 0.
 * For each row of theta [R, P] (P = 5k + 1: beta0[k] beta1[k] a[k] b[k] log nu[k] log tau;
 * the softmax gate ignores tau): the mean negative log-likelihood over the data x [n], y [n] of
 * p(y | x) = sum_i g_i(x) N(y; a_i x + b_i, nu_i) -> nll [R]; with what >= 2 its gradient in
 * theta -> grad [R, P]; with what = 3 the mean outer product of the per-point scores -> opg
 * [R, P, P] (the BHHH curvature). Outputs not asked for are NULL. All f64 on the CPU. */
gm_status gm_gaussian_moe_eval(gm_ctx *c, gm_tensor *x, gm_tensor *y, gm_tensor *theta,
                               gm_moe_gate gate, int K, int what, gm_tensor **nll,
                               gm_tensor **grad, gm_tensor **opg);

/* ---- build info and process start-up (each backed by the backend table) --------------- */
/* The CPU backend's libraries: "OpenBLAS 0.3.21 (core Haswell: why; single-threaded calls ...)" */
const char *gm_blas_info(void);
bool gm_cuda_built(void); /* a CUDA backend is compiled in */
/* Threads a kernel of device d uses when the context sets none. */
int gm_default_threads(gm_device d);
/* Run each backend's start-up (the CPU's OpenBLAS core selection, kernels/cpu/blas_core.c)
 * before anything else: true when the process must re-execute itself for it to take effect. */
bool gm_backend_preload(void);

#endif
