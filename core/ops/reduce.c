/* reduce.c: rules of the reduction family (sum mean var max min argmax argmin logsumexp
 * softmax log_softmax cumsum). A reduction is described to the kernels by a bitmask of reduced
 * dims; outputs are new contiguous tensors holding one element per kept index (row-major), with
 * reduced dims kept as size 1 when keepdim. Kernels: kernels/cpu/reduce.c. */
#include <math.h>
#include <string.h>

#include "rules.h"
#include "sample.h"

/* ---- shared helpers -------------------------------------------------------------------- */

/* Bitmask of the dims listed in p->dims (all dims when p->ndims < 0) and the number of
 * elements each output reduces. A 0-dim x accepts dim 0/-1 and reduces nothing. */
static gm_status dims_mask(gm_ctx *c, const char *op, const gm_tensor *x, const gm_params *p,
                           uint64_t *mask, int64_t *count) {
    uint64_t m = 0;
    if (p->ndims < 0) {
        m = x->ndim > 0 ? (((uint64_t)1 << x->ndim) - 1) : 0;
    } else {
        if (p->ndims > GM_MAX_DIMS) return gm_errf(c, GM_EARG, "%s: %d dims given, at most %d", op, p->ndims, GM_MAX_DIMS);
        for (int i = 0; i < p->ndims; i++) {
            int d;
            gm_status st = gm_dim_norm(c, op, p->dims[i], x->ndim, &d);
            if (st != GM_OK) return st;
            if (x->ndim == 0) continue;
            if ((m >> d) & 1) return gm_errf(c, GM_EARG, "%s: dim %d appears twice in dims", op, p->dims[i]);
            m |= (uint64_t)1 << d;
        }
    }
    int64_t n = 1;
    for (int d = 0; d < x->ndim; d++)
        if ((m >> d) & 1) n *= x->shape[d];
    *mask = m;
    *count = n;
    return GM_OK;
}

/* The mask of an optional single `dim` (max, min, argmax, argmin): all dims when absent. */
static gm_status dim_mask(gm_ctx *c, const char *op, const gm_tensor *x, const gm_params *p,
                          uint64_t *mask, int64_t *count) {
    gm_params q = *p;
    q.ndims = -1;
    if (p->has_dim) {
        q.ndims = 1;
        q.dims[0] = p->dim;
    }
    return dims_mask(c, op, x, &q, mask, count);
}

/* Shape of a reduction's output: reduced dims dropped, or kept as 1 with keepdim. */
static int reduced_shape(const gm_tensor *x, uint64_t mask, bool keepdim, int64_t *shape) {
    int n = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (!((mask >> d) & 1)) shape[n++] = x->shape[d];
        else if (keepdim) shape[n++] = 1;
    }
    return n;
}

/* Allocate out (reduction of x over mask) with dtype t and run kernel kid on x, scale as in
 * gm_reduce_args. */
static gm_status reduce_run(gm_ctx *c, gm_opcall *o, int kid, gm_dtype t, uint64_t mask, double scale) {
    gm_tensor *x = o->in[0];
    int64_t shape[GM_MAX_DIMS];
    int nd = reduced_shape(x, mask, o->p->keepdim, shape);
    gm_status st = gm_tensor_new(c, t, gm_tensor_device(x), nd, shape, &o->out[0]);
    if (st != GM_OK) return st;
    return gm_run(c, kid, 1, &x, 1, &o->out[0], &(gm_kparams){.reduce = {.mask = mask, .scale = scale}});
}

/* g (the reduced output's shape) viewed with the reduced dims kept as size 1. */
static gm_status grad_keepdim(gm_ctx *c, gm_tensor *g, const gm_tensor *x, uint64_t mask,
                              gm_tensor **out) {
    int64_t shape[GM_MAX_DIMS];
    int nd = reduced_shape(x, mask, true, shape);
    return gm_reshape(c, g, nd, shape, out);
}

/* gk (keepdim shape) broadcast to x's shape, as a contiguous tensor of its own. */
static gm_status grad_broadcast(gm_ctx *c, gm_tensor *gk, const gm_tensor *x, gm_tensor **out) {
    gm_tensor *e;
    gm_status st = gm_expand(c, gk, x->ndim, x->shape, &e);
    if (st != GM_OK) return st;
    st = gm_tensor_contiguous(c, e, out);
    gm_tensor_release(e);
    return st;
}

/* in[0] = an f64 normal(0, 1) sample seeded by the variant (the callers set *n_in). */
static gm_status randn(gm_ctx *c, int variant, int ndim, const int64_t *shape, gm_tensor **in) {
    int n;
    in[0] = gm_sample_randn(c, GM_F64, 1000 + (uint64_t)variant, ndim, shape);
    return gm_sample_done(c, 1, in, &n);
}

static void set_dims(gm_params *p, int n, int d0, int d1) {
    p->ndims = n;
    p->dims[0] = d0;
    p->dims[1] = d1;
}

/* Samples shared by the dims-reductions (sum, mean, var, logsumexp). */
static gm_status sample_dims(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    static const int64_t s34[] = {3, 4}, s234[] = {2, 3, 4};
    gm_params_init(p);
    *n_in = 1;
    switch (variant) {
    case 0: return randn(c, variant, 2, s34, &in[0]);
    case 1: set_dims(p, 2, 0, 2); p->keepdim = true; return randn(c, variant, 3, s234, &in[0]);
    case 2: set_dims(p, 1, -1, 0); return randn(c, variant, 3, s234, &in[0]);
    case 3: set_dims(p, 2, 1, -3); p->unbiased = false; return randn(c, variant, 3, s234, &in[0]);
    case 4: p->unbiased = false; return randn(c, variant, 0, NULL, &in[0]); /* var of one element: 0 */
    default: return GM_ENOTSUP;
    }
}

/* Bad calls shared by the dims-reductions; float_only adds an i32 input. */
static gm_status bad_dims(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                          gm_status *expect, bool float_only) {
    static const int64_t s34[] = {3, 4};
    gm_params_init(p);
    *n_in = 1;
    switch (variant) {
    case 0: set_dims(p, 1, 2, 0); *expect = GM_EINDEX; return randn(c, variant, 2, s34, &in[0]);
    case 1: set_dims(p, 2, 1, -1); *expect = GM_EARG; return randn(c, variant, 2, s34, &in[0]);
    case 2:
        if (!float_only) return GM_ENOTSUP;
        *expect = GM_EDTYPE;
        return gm_tensor_zeros(c, GM_I32, GM_CPU, 2, s34, &in[0]);
    default: return GM_ENOTSUP;
    }
}

/* ---- sum and mean ---------------------------------------------------------------------- */

static gm_status sum_mean_fwd(gm_ctx *c, gm_opcall *o, bool mean) {
    gm_tensor *x = o->in[0];
    const char *op = mean ? "mean" : "sum";
    uint64_t mask;
    int64_t cnt;
    gm_status st;
    if (mean && (st = gm_check_float(c, op, x)) != GM_OK) return st;
    if ((st = dims_mask(c, op, x, o->p, &mask, &cnt)) != GM_OK) return st;
    /* The mean of nothing is NaN (0 * NaN), as in torch. */
    return reduce_run(c, o, GM_K_SUM, x->dtype, mask, !mean ? 1.0 : cnt > 0 ? 1.0 / (double)cnt : NAN);
}


static gm_status sum_mean_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin, bool mean) {
    gm_tensor *x = n->in[0], *gk = NULL, *gs;
    uint64_t mask;
    int64_t cnt;
    if (!gout[0]) return gm_zeros_like(c, x, &gin[0]);
    gm_status st = dims_mask(c, mean ? "mean" : "sum", x, &n->p, &mask, &cnt);
    if (st != GM_OK) return st;
    if ((st = grad_keepdim(c, gout[0], x, mask, &gk)) != GM_OK) return st;
    if (mean && cnt > 0) { /* scale before broadcasting: fewer elements */
        st = gm_mul_scalar(c, gk, 1.0 / (double)cnt, &gs);
        gm_tensor_release(gk);
        if (st != GM_OK) return st;
        gk = gs;
    }
    st = grad_broadcast(c, gk, x, &gin[0]);
    gm_tensor_release(gk);
    return st;
}

static gm_status sum_fwd(gm_ctx *c, gm_opcall *o) { return sum_mean_fwd(c, o, false); }
static gm_status mean_fwd(gm_ctx *c, gm_opcall *o) { return sum_mean_fwd(c, o, true); }
static gm_status sum_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return sum_mean_bwd(c, n, gout, gin, false);
}
static gm_status mean_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return sum_mean_bwd(c, n, gout, gin, true);
}
static gm_status sum_bad(gm_ctx *c, int v, int *n_in, gm_tensor **in, gm_params *p, gm_status *e) {
    return bad_dims(c, v, n_in, in, p, e, false);
}
static gm_status float_bad(gm_ctx *c, int v, int *n_in, gm_tensor **in, gm_params *p, gm_status *e) {
    return bad_dims(c, v, n_in, in, p, e, true);
}

extern const gm_oprules gm_rules_SUM, gm_rules_MEAN;
const gm_oprules gm_rules_SUM = {sum_fwd, sum_bwd, sample_dims, sum_bad};
const gm_oprules gm_rules_MEAN = {mean_fwd, mean_bwd, sample_dims, float_bad};

/* ---- var ------------------------------------------------------------------------------- */

static double var_divisor(const gm_params *p, int64_t cnt) {
    return (double)(p->unbiased ? cnt - 1 : cnt);
}

static gm_status var_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    uint64_t mask;
    int64_t cnt;
    gm_status st;
    if ((st = gm_check_float(c, "var", x)) != GM_OK) return st;
    if ((st = dims_mask(c, "var", x, o->p, &mask, &cnt)) != GM_OK) return st;
    return reduce_run(c, o, GM_K_VAR, x->dtype, mask, var_divisor(o->p, cnt));
}

/* dx = g * 2 (x - mean) / divisor, with g and mean broadcast from the keepdim shape. */
static gm_status var_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0], *gk = NULL, *m = NULL, *d = NULL, *d2 = NULL;
    uint64_t mask;
    int64_t cnt;
    if (!gout[0]) return gm_zeros_like(c, x, &gin[0]);
    gm_status st = dims_mask(c, "var", x, &n->p, &mask, &cnt);
    if (st != GM_OK) return st;
    gm_params p = n->p;
    p.keepdim = true;
    if ((st = gm_op(c, GM_OP_MEAN, 1, &x, &p, &m)) != GM_OK) goto out;
    if ((st = gm_sub(c, x, m, &d)) != GM_OK) goto out;
    if ((st = gm_mul_scalar(c, d, 2.0 / var_divisor(&n->p, cnt), &d2)) != GM_OK) goto out;
    if ((st = grad_keepdim(c, gout[0], x, mask, &gk)) != GM_OK) goto out;
    st = gm_mul(c, d2, gk, &gin[0]);
out:
    gm_tensor_release(gk);
    gm_tensor_release(m);
    gm_tensor_release(d);
    gm_tensor_release(d2);
    return st;
}

extern const gm_oprules gm_rules_VAR;
const gm_oprules gm_rules_VAR = {var_fwd, var_bwd, sample_dims, float_bad};

/* ---- logsumexp ------------------------------------------------------------------------- */

static gm_status lse_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    uint64_t mask;
    int64_t cnt;
    gm_status st;
    if ((st = gm_check_float(c, "logsumexp", x)) != GM_OK) return st;
    if ((st = dims_mask(c, "logsumexp", x, o->p, &mask, &cnt)) != GM_OK) return st;
    return reduce_run(c, o, GM_K_LOGSUMEXP, x->dtype, mask, 0);
}

/* dx = g * exp(x - y): the softmax of x over the reduced dims, times g. */
static gm_status lse_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0], *gk = NULL, *yk = NULL, *d = NULL, *e = NULL;
    uint64_t mask;
    int64_t cnt;
    if (!gout[0]) return gm_zeros_like(c, x, &gin[0]);
    gm_status st = dims_mask(c, "logsumexp", x, &n->p, &mask, &cnt);
    if (st != GM_OK) return st;
    if ((st = grad_keepdim(c, n->saved_out[0], x, mask, &yk)) != GM_OK) goto out;
    if ((st = gm_sub(c, x, yk, &d)) != GM_OK) goto out;
    if ((st = gm_op(c, GM_OP_EXP, 1, &d, NULL, &e)) != GM_OK) goto out;
    if ((st = grad_keepdim(c, gout[0], x, mask, &gk)) != GM_OK) goto out;
    st = gm_mul(c, e, gk, &gin[0]);
out:
    gm_tensor_release(gk);
    gm_tensor_release(yk);
    gm_tensor_release(d);
    gm_tensor_release(e);
    return st;
}

extern const gm_oprules gm_rules_LOGSUMEXP;
const gm_oprules gm_rules_LOGSUMEXP = {lse_fwd, lse_bwd, sample_dims, float_bad};

/* ---- max, min, argmax, argmin ---------------------------------------------------------- */

static gm_status best_fwd(gm_ctx *c, gm_opcall *o, const char *op, bool min, bool values) {
    gm_tensor *x = o->in[0];
    uint64_t mask;
    int64_t cnt, shape[GM_MAX_DIMS];
    gm_status st = dim_mask(c, op, x, o->p, &mask, &cnt);
    if (st != GM_OK) return st;
    if (cnt == 0) {
        char b[64];
        if (o->p->has_dim)
            return gm_errf(c, GM_ESHAPE, "%s: dim %d of %s is empty: nothing to reduce", op, o->p->dim, GM_SHAPE_STR(x, b));
        return gm_errf(c, GM_ESHAPE, "%s: %s has no elements (give a dim to reduce along)", op, GM_SHAPE_STR(x, b));
    }
    int nd = reduced_shape(x, mask, o->p->keepdim, shape), k = 0;
    if (values && (st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), nd, shape, &o->out[k++])) != GM_OK)
        return st;
    if ((st = gm_tensor_new(c, GM_I32, gm_tensor_device(x), nd, shape, &o->out[k++])) != GM_OK) return st;
    return gm_run(c, GM_K_MAXMIN, 1, &x, k, o->out, &(gm_kparams){.reduce = {.mask = mask, .min = min}});
}

/* The selected element of each output gets g; the rest of x gets 0. */
static gm_status best_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin, const char *op) {
    gm_tensor *x = n->in[0], *g = NULL, *dx = NULL;
    uint64_t mask;
    int64_t cnt;
    gm_status st = gm_zeros_like(c, x, &dx);
    if (st != GM_OK || !gout[0]) goto out;
    if ((st = dim_mask(c, op, x, &n->p, &mask, &cnt)) != GM_OK) goto out;
    if ((st = gm_tensor_contiguous(c, gout[0], &g)) != GM_OK) goto out;
    gm_tensor *ins[2] = {g, n->saved_out[1]};
    st = gm_run(c, GM_K_MAXMIN_BACKWARD, 2, ins, 1, &dx, &(gm_kparams){.reduce = {.mask = mask}});
out:
    gm_tensor_release(g);
    if (st == GM_OK) gin[0] = dx;
    else gm_tensor_release(dx);
    return st;
}

static gm_status max_fwd(gm_ctx *c, gm_opcall *o) { return best_fwd(c, o, "max", false, true); }
static gm_status min_fwd(gm_ctx *c, gm_opcall *o) { return best_fwd(c, o, "min", true, true); }
static gm_status argmax_fwd(gm_ctx *c, gm_opcall *o) { return best_fwd(c, o, "argmax", false, false); }
static gm_status argmin_fwd(gm_ctx *c, gm_opcall *o) { return best_fwd(c, o, "argmin", true, false); }
static gm_status max_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return best_bwd(c, n, gout, gin, "max");
}
static gm_status min_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return best_bwd(c, n, gout, gin, "min");
}

/* Normal samples have no ties, so the selection is stable under finite differences. */
static gm_status best_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    static const int64_t s34[] = {3, 4}, s234[] = {2, 3, 4};
    gm_params_init(p);
    *n_in = 1;
    switch (variant) {
    case 0: p->has_dim = true; p->dim = 1; return randn(c, variant, 2, s34, &in[0]);
    case 1: p->has_dim = true; p->dim = -3; p->keepdim = true; return randn(c, variant, 3, s234, &in[0]);
    case 2: return randn(c, variant, 3, s234, &in[0]);
    case 3: p->has_dim = true; p->dim = 0; return randn(c, variant, 0, NULL, &in[0]);
    default: return GM_ENOTSUP;
    }
}

static gm_status best_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                          gm_status *expect) {
    static const int64_t s34[] = {3, 4}, s03[] = {0, 3};
    gm_params_init(p);
    *n_in = 1;
    switch (variant) {
    case 0: p->has_dim = true; p->dim = 2; *expect = GM_EINDEX; return randn(c, variant, 2, s34, &in[0]);
    case 1: p->has_dim = true; p->dim = 0; *expect = GM_ESHAPE; return randn(c, variant, 2, s03, &in[0]);
    case 2: *expect = GM_ESHAPE; return randn(c, variant, 2, s03, &in[0]);
    default: return GM_ENOTSUP;
    }
}

extern const gm_oprules gm_rules_MAX, gm_rules_MIN, gm_rules_ARGMAX, gm_rules_ARGMIN;
const gm_oprules gm_rules_MAX = {max_fwd, max_bwd, best_sample, best_bad};
const gm_oprules gm_rules_MIN = {min_fwd, min_bwd, best_sample, best_bad};
const gm_oprules gm_rules_ARGMAX = {argmax_fwd, NULL, best_sample, best_bad};
const gm_oprules gm_rules_ARGMIN = {argmin_fwd, NULL, best_sample, best_bad};

/* ---- softmax, log_softmax, cumsum: one dim, output of x's shape -------------------------- */

/* Run kid on x along dim into a new tensor of x's shape, flag as in gm_dim_args. */
static gm_status along_dim(gm_ctx *c, const char *op, int kid, gm_tensor *x, gm_tensor *g,
                           int dim, bool flag, gm_tensor **out) {
    int d;
    gm_status st = gm_dim_norm(c, op, dim, x->ndim, &d);
    if (st != GM_OK) return st;
    gm_tensor *y;
    if ((st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &y)) != GM_OK) return st;
    gm_tensor *ins[2] = {x, g};
    gm_kparams k = {.dim = {.dim = x->ndim > 0 ? d : 0, .flag = flag}};
    if ((st = gm_run(c, kid, g ? 2 : 1, ins, 1, &y, &k)) != GM_OK) {
        gm_tensor_release(y);
        return st;
    }
    *out = y;
    return GM_OK;
}

/* softmax's dim defaults to the last one. */
static int sm_dim(const gm_params *p) { return p->has_dim ? p->dim : -1; }

static gm_status sm_fwd(gm_ctx *c, gm_opcall *o, const char *op, int logsm) {
    gm_status st = gm_check_float(c, op, o->in[0]);
    if (st != GM_OK) return st;
    return along_dim(c, op, GM_K_SOFTMAX, o->in[0], NULL, sm_dim(o->p), logsm, &o->out[0]);
}

static gm_status sm_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin, const char *op, int logsm) {
    if (!gout[0]) return gm_zeros_like(c, n->in[0], &gin[0]);
    return along_dim(c, op, GM_K_SOFTMAX_BACKWARD, n->saved_out[0], gout[0], sm_dim(&n->p), logsm, &gin[0]);
}

static gm_status softmax_fwd(gm_ctx *c, gm_opcall *o) { return sm_fwd(c, o, "softmax", 0); }
static gm_status log_softmax_fwd(gm_ctx *c, gm_opcall *o) { return sm_fwd(c, o, "log_softmax", 1); }
static gm_status softmax_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return sm_bwd(c, n, gout, gin, "softmax", 0);
}
static gm_status log_softmax_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return sm_bwd(c, n, gout, gin, "log_softmax", 1);
}

static gm_status dim_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    static const int64_t s34[] = {3, 4}, s234[] = {2, 3, 4}, s5[] = {5};
    gm_params_init(p);
    *n_in = 1;
    switch (variant) {
    case 0: p->has_dim = true; p->dim = -1; return randn(c, variant, 2, s34, &in[0]);
    case 1: p->has_dim = true; p->dim = 1; return randn(c, variant, 3, s234, &in[0]);
    case 2: p->has_dim = true; p->dim = 0; return randn(c, variant, 1, s5, &in[0]);
    case 3: p->has_dim = true; p->dim = 0; return randn(c, variant, 3, s234, &in[0]);
    default: return GM_ENOTSUP;
    }
}

static gm_status dim_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                         gm_status *expect, bool float_only) {
    static const int64_t s34[] = {3, 4};
    gm_params_init(p);
    *n_in = 1;
    p->has_dim = true;
    switch (variant) {
    case 0: p->dim = -3; *expect = GM_EINDEX; return randn(c, variant, 2, s34, &in[0]);
    case 1:
        if (!float_only) return GM_ENOTSUP;
        p->dim = 1;
        *expect = GM_EDTYPE;
        return gm_tensor_zeros(c, GM_I32, GM_CPU, 2, s34, &in[0]);
    default: return GM_ENOTSUP;
    }
}
static gm_status sm_bad(gm_ctx *c, int v, int *n_in, gm_tensor **in, gm_params *p, gm_status *e) {
    return dim_bad(c, v, n_in, in, p, e, true);
}
static gm_status cumsum_bad(gm_ctx *c, int v, int *n_in, gm_tensor **in, gm_params *p, gm_status *e) {
    return dim_bad(c, v, n_in, in, p, e, false);
}

extern const gm_oprules gm_rules_SOFTMAX, gm_rules_LOG_SOFTMAX;
const gm_oprules gm_rules_SOFTMAX = {softmax_fwd, softmax_bwd, dim_sample, sm_bad};
const gm_oprules gm_rules_LOG_SOFTMAX = {log_softmax_fwd, log_softmax_bwd, dim_sample, sm_bad};

/* cumsum's dim is required (no default); i32 sums stay i32. */
static gm_status cumsum_fwd(gm_ctx *c, gm_opcall *o) {
    return along_dim(c, "cumsum", GM_K_CUMSUM, o->in[0], NULL, o->p->dim, false, &o->out[0]);
}

/* The gradient of a prefix sum is the suffix sum of g. */
static gm_status cumsum_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    if (!gout[0]) return gm_zeros_like(c, n->in[0], &gin[0]);
    return along_dim(c, "cumsum", GM_K_CUMSUM, gout[0], NULL, n->p.dim, true, &gin[0]);
}

extern const gm_oprules gm_rules_CUMSUM;
const gm_oprules gm_rules_CUMSUM = {cumsum_fwd, cumsum_bwd, dim_sample, cumsum_bad};
