/* index.c: rules of the indexing family (gather, scatter_add, index_select, index_add, topk,
 * one_hot, cat, stack): shape/dtype checks, backward rules and test samples. Index tensors are
 * i32; their values are bounds-checked by the kernels. Backward rules run the forward kernels
 * of the dual op (gather <-> scatter_add, index_select <-> index_add) on fresh tensors. */
#include "rules.h"
#include "sample.h"

#include <stdint.h>
#include <string.h>

/* ---- helpers --------------------------------------------------------------------------- */

/* Run a kernel of the family along dim (gm_dim_args). */
static gm_status run_dim(gm_ctx *c, int kid, gm_tensor *const *in, gm_tensor *out, int dim)
{
    return gm_run(c, kid, 2, in, 1, &out, &(gm_kparams){.dim = {.dim = dim}});
}

static gm_status need_dims(gm_ctx *c, const char *op, const gm_tensor *x)
{
    char b[64];
    if (x->ndim > 0) return GM_OK;
    return gm_errf(c, GM_ESHAPE, "%s: x must have at least one dim, got shape %s", op,
                   GM_SHAPE_STR(x, b));
}

/* A 1-D view of a 0-dim or 1-D index (index_select/index_add accept both, as torch). */
static gm_status index_1d(gm_ctx *c, const char *op, gm_tensor *ix, gm_tensor **out)
{
    char b[64];
    int64_t one = 1, st = 1;
    gm_status s = gm_need_i32(c, op, "index", ix);
    if (s) return s;
    if (ix->ndim == 1) {
        *out = gm_tensor_retain(ix);
        return GM_OK;
    }
    if (ix->ndim == 0) return gm_tensor_view(c, ix, 1, &one, &st, ix->offset, out);
    return gm_errf(c, GM_ESHAPE, "%s: index must be 1-D, got shape %s", op, GM_SHAPE_STR(ix, b));
}

/* ---- gather ---------------------------------------------------------------------------- */

/* x [.., S, ..], index [.., K, ..] (same ndim, no larger than x outside dim) -> out [index]. */
static gm_status gather_check(gm_ctx *c, const char *op, gm_tensor *x, gm_tensor *ix, int pdim,
                              int *dim)
{
    char b1[64], b2[64];
    gm_status s = gm_need_i32(c, op, "index", ix);
    if (!s) s = need_dims(c, op, x);
    if (!s) s = gm_dim_norm(c, op, pdim, x->ndim, dim);
    if (s) return s;
    if (ix->ndim != x->ndim)
        return gm_errf(c, GM_ESHAPE, "%s: index %s must have as many dims as x %s", op,
                       GM_SHAPE_STR(ix, b1), GM_SHAPE_STR(x, b2));
    for (int d = 0; d < x->ndim; d++)
        if (d != *dim && ix->shape[d] > x->shape[d])
            return gm_errf(c, GM_ESHAPE, "%s: index %s is larger than x %s in dim %d", op,
                           GM_SHAPE_STR(ix, b1), GM_SHAPE_STR(x, b2), d);
    return GM_OK;
}

static gm_status gather_fwd(gm_ctx *c, gm_opcall *o)
{
    gm_tensor *x = o->in[0], *ix = o->in[1];
    int dim;
    gm_status s = gather_check(c, "gather", x, ix, o->p->dim, &dim);
    if (s) return s;
    s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), ix->ndim, ix->shape, &o->out[0]);
    if (s) return s;
    gm_tensor *ins[2] = {x, ix};
    return run_dim(c, GM_K_GATHER, ins, o->out[0], dim);
}

/* gx = zeros(x) with g scattered back at index. */
static gm_status gather_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *x = n->in[0], *ix = n->in[1];
    int dim;
    if (!n->needs[0]) return GM_OK;
    gm_status s = gm_dim_norm(c, "gather", n->p.dim, x->ndim, &dim);
    if (!s) s = gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[0]);
    if (s || !gout[0]) return s;
    gm_tensor *ins[2] = {ix, gout[0]};
    return run_dim(c, GM_K_SCATTER_ADD, ins, gin[0], dim);
}

static gm_status gather_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    gm_params_init(p);
    if (variant == 0) { /* x [3,4], dim 1, index [3,2] with repeats */
        static const int32_t iv[] = {0, 3, 1, 1, 2, 0};
        in[0] = gm_sample_randn(c, GM_F64, 1000, 2, (int64_t[]){3, 4});
        in[1] = gm_sample_i32(c, 2, (int64_t[]){3, 2}, iv);
        p->dim = 1;
    } else if (variant == 1) { /* dim 0 (negative), index smaller than x in dim 1 */
        static const int32_t iv[] = {2, 0, 1, 2, 2, 2};
        in[0] = gm_sample_randn(c, GM_F64, 1001, 2, (int64_t[]){3, 4});
        in[1] = gm_sample_i32(c, 2, (int64_t[]){2, 3}, iv);
        p->dim = -2;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status gather_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                            gm_status *expect)
{
    gm_params_init(p);
    p->dim = 1;
    in[0] = gm_sample_randn(c, GM_F64, 1100, 2, (int64_t[]){3, 4});
    if (variant == 0) { /* index out of range */
        static const int32_t iv[] = {0, 4, 1, 1, 2, 0};
        in[1] = gm_sample_i32(c, 2, (int64_t[]){3, 2}, iv);
        *expect = GM_EINDEX;
    } else if (variant == 1) { /* index with a different ndim */
        static const int32_t iv[] = {0, 1, 2};
        in[1] = gm_sample_i32(c, 1, (int64_t[]){3}, iv);
        *expect = GM_ESHAPE;
    } else if (variant == 2) { /* float index */
        in[1] = gm_sample_randn(c, GM_F64, 1101, 2, (int64_t[]){3, 2});
        *expect = GM_EDTYPE;
    } else if (variant == 3) { /* negative index */
        static const int32_t iv[] = {0, -1, 1, 1, 2, 0};
        in[1] = gm_sample_i32(c, 2, (int64_t[]){3, 2}, iv);
        *expect = GM_EINDEX;
    } else {
        gm_tensor_release(in[0]);
        in[0] = NULL;
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

extern const gm_oprules gm_rules_GATHER;
const gm_oprules gm_rules_GATHER = {gather_fwd, gather_bwd, gather_sample, gather_bad};

/* ---- scatter_add ----------------------------------------------------------------------- */

static gm_status scatter_check(gm_ctx *c, gm_tensor *x, gm_tensor *ix, gm_tensor *src, int pdim,
                               int *dim)
{
    char b1[64], b2[64];
    gm_status s = gather_check(c, "scatter_add", x, ix, pdim, dim);
    if (s) return s;
    if (src->dtype != x->dtype)
        return gm_errf(c, GM_EDTYPE, "scatter_add: src is %s but x is %s",
                       gm_dtype_name(src->dtype), gm_dtype_name(x->dtype));
    if (src->ndim != x->ndim)
        return gm_errf(c, GM_ESHAPE, "scatter_add: src %s must have as many dims as x %s",
                       GM_SHAPE_STR(src, b1), GM_SHAPE_STR(x, b2));
    for (int d = 0; d < x->ndim; d++)
        if (ix->shape[d] > src->shape[d])
            return gm_errf(c, GM_ESHAPE, "scatter_add: index %s is larger than src %s in dim %d",
                           GM_SHAPE_STR(ix, b1), GM_SHAPE_STR(src, b2), d);
    return GM_OK;
}

static gm_status scatter_add_fwd(gm_ctx *c, gm_opcall *o)
{
    gm_tensor *x = o->in[0], *ix = o->in[1], *src = o->in[2];
    int dim;
    gm_status s = scatter_check(c, x, ix, src, o->p->dim, &dim);
    if (!s) s = gm_tensor_copy_as(c, x, x->dtype, &o->out[0]);
    if (s) return s;
    gm_tensor *ins[2] = {ix, src};
    return run_dim(c, GM_K_SCATTER_ADD, ins, o->out[0], dim);
}

/* gx = g; gsrc = gather(g, dim, index), zero where src is larger than index. */
static gm_status scatter_add_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *x = n->in[0], *ix = n->in[1], *src = n->in[2], *g = NULL, *v = NULL;
    int dim;
    gm_status s = gm_dim_norm(c, "scatter_add", n->p.dim, x->ndim, &dim);
    if (!s) s = gm_gout_or_zeros(c, n, gout, 0, false, &g);
    if (s) return s;
    if (n->needs[0]) s = gm_tensor_copy_as(c, g, g->dtype, &gin[0]);
    if (!s && n->needs[2]) {
        s = gm_tensor_zeros(c, src->dtype, gm_tensor_device(src), src->ndim, src->shape, &gin[2]);
        if (!s) s = gm_tensor_view(c, gin[2], ix->ndim, ix->shape, gin[2]->stride,
                                   gin[2]->offset, &v);
        gm_tensor *ins[2] = {g, ix};
        if (!s && gm_tensor_numel(v) > 0)
            s = run_dim(c, GM_K_GATHER, ins, v, dim);
    }
    gm_tensor_release(v);
    gm_tensor_release(g);
    return s;
}

static gm_status scatter_add_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in,
                                    gm_params *p)
{
    gm_params_init(p);
    if (variant == 0) { /* x [3,4], dim 0, index/src [2,4] with collisions */
        static const int32_t iv[] = {0, 2, 2, 1, 0, 0, 2, 1};
        in[0] = gm_sample_randn(c, GM_F64, 1200, 2, (int64_t[]){3, 4});
        in[1] = gm_sample_i32(c, 2, (int64_t[]){2, 4}, iv);
        in[2] = gm_sample_randn(c, GM_F64, 1201, 2, (int64_t[]){2, 4});
        p->dim = 0;
    } else if (variant == 1) { /* dim -1, src larger than index */
        static const int32_t iv[] = {1, 1, 0, 2};
        in[0] = gm_sample_randn(c, GM_F64, 1202, 2, (int64_t[]){2, 3});
        in[1] = gm_sample_i32(c, 2, (int64_t[]){2, 2}, iv);
        in[2] = gm_sample_randn(c, GM_F64, 1203, 2, (int64_t[]){2, 5});
        p->dim = -1;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 3, in, n_in);
}

static gm_status scatter_add_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in,
                                 gm_params *p, gm_status *expect)
{
    static const int32_t ok[] = {0, 2, 2, 1, 0, 0, 2, 1};
    static const int32_t big[] = {0, 2, 3, 1, 0, 0, 2, 1};
    gm_params_init(p);
    p->dim = 0;
    if (variant > 3) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, GM_F64, 1300, 2, (int64_t[]){3, 4});
    in[1] = gm_sample_i32(c, 2, (int64_t[]){2, 4}, variant == 0 ? big : ok);
    if (variant == 0) { /* index 3 out of range for dim 0 of size 3 */
        in[2] = gm_sample_randn(c, GM_F64, 1301, 2, (int64_t[]){2, 4});
        *expect = GM_EINDEX;
    } else if (variant == 1) { /* src smaller than index */
        in[2] = gm_sample_randn(c, GM_F64, 1301, 2, (int64_t[]){2, 3});
        *expect = GM_ESHAPE;
    } else if (variant == 2) { /* src f32 into x f64 */
        in[2] = gm_sample_randn(c, GM_F32, 1301, 2, (int64_t[]){2, 4});
        *expect = GM_EDTYPE;
    } else { /* src with a different ndim */
        in[2] = gm_sample_randn(c, GM_F64, 1301, 3, (int64_t[]){2, 4, 1});
        *expect = GM_ESHAPE;
    }
    return gm_sample_done(c, 3, in, n_in);
}

extern const gm_oprules gm_rules_SCATTER_ADD;
const gm_oprules gm_rules_SCATTER_ADD = {scatter_add_fwd, scatter_add_bwd, scatter_add_sample,
                                         scatter_add_bad};

/* ---- index_select ---------------------------------------------------------------------- */

static gm_status index_select_fwd(gm_ctx *c, gm_opcall *o)
{
    gm_tensor *x = o->in[0], *ix = NULL;
    int dim;
    int64_t shape[GM_MAX_DIMS];
    gm_status s = need_dims(c, "index_select", x);
    if (!s) s = gm_dim_norm(c, "index_select", o->p->dim, x->ndim, &dim);
    if (!s) s = index_1d(c, "index_select", o->in[1], &ix);
    if (s) return s;
    memcpy(shape, x->shape, sizeof shape);
    shape[dim] = ix->shape[0];
    s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, shape, &o->out[0]);
    gm_tensor *ins[2] = {x, ix};
    if (!s) s = run_dim(c, GM_K_INDEX_SELECT, ins, o->out[0], dim);
    gm_tensor_release(ix);
    return s;
}

/* gx = zeros(x) with g's slices added back at index. */
static gm_status index_select_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *x = n->in[0], *ix = NULL;
    int dim;
    if (!n->needs[0]) return GM_OK;
    gm_status s = gm_dim_norm(c, "index_select", n->p.dim, x->ndim, &dim);
    if (!s) s = index_1d(c, "index_select", n->in[1], &ix);
    if (!s) s = gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[0]);
    gm_tensor *ins[2] = {ix, gout[0]};
    if (!s && gout[0]) s = run_dim(c, GM_K_INDEX_ADD, ins, gin[0], dim);
    gm_tensor_release(ix);
    return s;
}

static gm_status index_select_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in,
                                     gm_params *p)
{
    gm_params_init(p);
    if (variant == 0) { /* x [4,3], dim 0, repeated rows */
        static const int32_t iv[] = {3, 0, 3, 1, 2};
        in[0] = gm_sample_randn(c, GM_F64, 1400, 2, (int64_t[]){4, 3});
        in[1] = gm_sample_i32(c, 1, (int64_t[]){5}, iv);
        p->dim = 0;
    } else if (variant == 1) { /* x [2,3,4], dim -1 */
        static const int32_t iv[] = {2, 2};
        in[0] = gm_sample_randn(c, GM_F64, 1401, 3, (int64_t[]){2, 3, 4});
        in[1] = gm_sample_i32(c, 1, (int64_t[]){2}, iv);
        p->dim = -1;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status index_select_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in,
                                  gm_params *p, gm_status *expect)
{
    static const int32_t iv[] = {0, 5, 1, 2};
    gm_params_init(p);
    p->dim = 1;
    if (variant > 2) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, GM_F64, 1500, 2, (int64_t[]){3, 5});
    if (variant == 0) { /* index 5 for dim 1 of size 5 */
        in[1] = gm_sample_i32(c, 1, (int64_t[]){4}, iv);
        *expect = GM_EINDEX;
    } else if (variant == 1) { /* 2-D index */
        in[1] = gm_sample_i32(c, 2, (int64_t[]){2, 2}, iv);
        *expect = GM_ESHAPE;
    } else { /* float index */
        in[1] = gm_sample_randn(c, GM_F32, 1501, 1, (int64_t[]){4});
        *expect = GM_EDTYPE;
    }
    return gm_sample_done(c, 2, in, n_in);
}

extern const gm_oprules gm_rules_INDEX_SELECT;
const gm_oprules gm_rules_INDEX_SELECT = {index_select_fwd, index_select_bwd, index_select_sample,
                                          index_select_bad};

/* ---- index_add ------------------------------------------------------------------------- */

/* x [.., S, ..], index [L], src [.., L, ..] -> out like x. */
static gm_status index_add_check(gm_ctx *c, gm_tensor *x, gm_tensor *ix, gm_tensor *src,
                                 int *dim)
{
    char b1[64], b2[64];
    if (src->dtype != x->dtype)
        return gm_errf(c, GM_EDTYPE, "index_add: src is %s but x is %s",
                       gm_dtype_name(src->dtype), gm_dtype_name(x->dtype));
    bool ok = src->ndim == x->ndim;
    for (int d = 0; ok && d < x->ndim; d++)
        ok = src->shape[d] == (d == *dim ? ix->shape[0] : x->shape[d]);
    if (!ok)
        return gm_errf(c, GM_ESHAPE,
                       "index_add: src %s must be x %s with dim %d of size %lld (the index length)",
                       GM_SHAPE_STR(src, b1), GM_SHAPE_STR(x, b2), *dim,
                       (long long)ix->shape[0]);
    return GM_OK;
}

static gm_status index_add_fwd(gm_ctx *c, gm_opcall *o)
{
    gm_tensor *x = o->in[0], *ix = NULL, *src = o->in[2];
    int dim;
    gm_status s = need_dims(c, "index_add", x);
    if (!s) s = gm_dim_norm(c, "index_add", o->p->dim, x->ndim, &dim);
    if (!s) s = index_1d(c, "index_add", o->in[1], &ix);
    if (!s) s = index_add_check(c, x, ix, src, &dim);
    if (!s) s = gm_tensor_copy_as(c, x, x->dtype, &o->out[0]);
    gm_tensor *ins[2] = {ix, src};
    if (!s) s = run_dim(c, GM_K_INDEX_ADD, ins, o->out[0], dim);
    gm_tensor_release(ix);
    return s;
}

/* gx = g; gsrc = index_select(g, dim, index). */
static gm_status index_add_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *x = n->in[0], *src = n->in[2], *ix = NULL, *g = NULL;
    int dim;
    gm_status s = gm_dim_norm(c, "index_add", n->p.dim, x->ndim, &dim);
    if (!s) s = index_1d(c, "index_add", n->in[1], &ix);
    if (!s) s = gm_gout_or_zeros(c, n, gout, 0, false, &g);
    if (!s && n->needs[0]) s = gm_tensor_copy_as(c, g, g->dtype, &gin[0]);
    if (!s && n->needs[2]) {
        s = gm_tensor_new(c, src->dtype, gm_tensor_device(src), src->ndim, src->shape, &gin[2]);
        gm_tensor *ins[2] = {g, ix};
        if (!s) s = run_dim(c, GM_K_INDEX_SELECT, ins, gin[2], dim);
    }
    gm_tensor_release(ix);
    gm_tensor_release(g);
    return s;
}

static gm_status index_add_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in,
                                  gm_params *p)
{
    gm_params_init(p);
    if (variant == 0) { /* x [4,3], dim 0, index [5] with repeats */
        static const int32_t iv[] = {3, 0, 3, 1, 3};
        in[0] = gm_sample_randn(c, GM_F64, 1600, 2, (int64_t[]){4, 3});
        in[1] = gm_sample_i32(c, 1, (int64_t[]){5}, iv);
        in[2] = gm_sample_randn(c, GM_F64, 1601, 2, (int64_t[]){5, 3});
        p->dim = 0;
    } else if (variant == 1) { /* x [2,3,4], dim -1 */
        static const int32_t iv[] = {2, 0};
        in[0] = gm_sample_randn(c, GM_F64, 1602, 3, (int64_t[]){2, 3, 4});
        in[1] = gm_sample_i32(c, 1, (int64_t[]){2}, iv);
        in[2] = gm_sample_randn(c, GM_F64, 1603, 3, (int64_t[]){2, 3, 2});
        p->dim = -1;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 3, in, n_in);
}

static gm_status index_add_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                               gm_status *expect)
{
    static const int32_t ok[] = {3, 0, 1};
    static const int32_t big[] = {3, 4, 1};
    gm_params_init(p);
    p->dim = 0;
    if (variant > 2) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, GM_F64, 1700, 2, (int64_t[]){4, 3});
    in[1] = gm_sample_i32(c, 1, (int64_t[]){3}, variant == 0 ? big : ok);
    if (variant == 0) {
        in[2] = gm_sample_randn(c, GM_F64, 1701, 2, (int64_t[]){3, 3});
        *expect = GM_EINDEX;
    } else if (variant == 1) { /* src rows != index length */
        in[2] = gm_sample_randn(c, GM_F64, 1701, 2, (int64_t[]){2, 3});
        *expect = GM_ESHAPE;
    } else {
        in[2] = gm_sample_randn(c, GM_F32, 1701, 2, (int64_t[]){3, 3});
        *expect = GM_EDTYPE;
    }
    return gm_sample_done(c, 3, in, n_in);
}

extern const gm_oprules gm_rules_INDEX_ADD;
const gm_oprules gm_rules_INDEX_ADD = {index_add_fwd, index_add_bwd, index_add_sample,
                                       index_add_bad};

/* ---- topk ------------------------------------------------------------------------------ */

/* dim is optional for topk and defaults to the last dim. */
static int topk_dim(const gm_params *p) { return p->has_dim ? p->dim : -1; }

static gm_status topk_fwd(gm_ctx *c, gm_opcall *o)
{
    gm_tensor *x = o->in[0];
    const gm_params *p = o->p;
    int dim;
    int64_t shape[GM_MAX_DIMS];
    gm_status s = need_dims(c, "topk", x);
    if (!s) s = gm_dim_norm(c, "topk", topk_dim(p), x->ndim, &dim);
    if (s) return s;
    if (p->k < 0 || p->k > x->shape[dim])
        return gm_errf(c, GM_EARG, "topk: k=%lld out of range for dim %d of size %lld",
                       (long long)p->k, dim, (long long)x->shape[dim]);
    memcpy(shape, x->shape, sizeof shape);
    shape[dim] = p->k;
    s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, shape, &o->out[0]);
    if (!s) s = gm_tensor_new(c, GM_I32, gm_tensor_device(x), x->ndim, shape, &o->out[1]);
    if (s) return s;
    return gm_run(c, GM_K_TOPK, 1, &x, 2, o->out,
                  &(gm_kparams){.topk = {.dim = dim, .k = p->k, .largest = p->largest, .sorted = p->sorted}});
}

/* gx = zeros(x) with the values' gradient scattered back at the indices. */
static gm_status topk_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *x = n->in[0];
    int dim;
    if (!n->needs[0]) return GM_OK;
    gm_status s = gm_dim_norm(c, "topk", topk_dim(&n->p), x->ndim, &dim);
    if (!s) s = gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[0]);
    if (s || !gout[0]) return s;
    gm_tensor *ins[2] = {n->saved_out[1], gout[0]};
    return run_dim(c, GM_K_SCATTER_ADD, ins, gin[0], dim);
}

/* Distinct values with gaps >= 0.1 so finite differences never swap the order. */
static gm_tensor *distinct(gm_ctx *c, int ndim, const int64_t *shape, uint64_t seed)
{
    gm_tensor *x = gm_sample_randn(c, GM_F64, seed, ndim, shape);
    if (!x) return NULL;
    double *d = gm_tensor_data(x);
    int64_t n = gm_tensor_numel(x);
    for (int64_t i = 0; i < n; i++) d[i] = 0.1 * (double)((i * 7 + 3) % n) + 0.01 * (d[i] > 0);
    return x;
}

static gm_status topk_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    gm_params_init(p);
    if (variant == 0) { /* [3,5], k 2 along the last dim */
        in[0] = distinct(c, 2, (int64_t[]){3, 5}, 1800); /* dim defaults to -1 */
        p->k = 2;
    } else if (variant == 1) { /* [4,3], k 3 smallest along dim 0, unsorted */
        in[0] = distinct(c, 2, (int64_t[]){4, 3}, 1801);
        p->has_dim = true;
        p->dim = 0;
        p->k = 3;
        p->largest = false;
        p->sorted = false;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 1, in, n_in);
}

static gm_status topk_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                          gm_status *expect)
{
    gm_params_init(p);
    p->dim = -1;
    if (variant == 0) { /* k larger than the dim */
        p->k = 6;
        *expect = GM_EARG;
    } else if (variant == 1) {
        p->k = -1;
        *expect = GM_EARG;
    } else {
        return GM_ENOTSUP;
    }
    in[0] = gm_sample_randn(c, GM_F64, 1900, 2, (int64_t[]){3, 5});
    return gm_sample_done(c, 1, in, n_in);
}

extern const gm_oprules gm_rules_TOPK;
const gm_oprules gm_rules_TOPK = {topk_fwd, topk_bwd, topk_sample, topk_bad};

/* ---- one_hot --------------------------------------------------------------------------- */

static gm_status one_hot_fwd(gm_ctx *c, gm_opcall *o)
{
    gm_tensor *ix = o->in[0];
    const gm_params *p = o->p;
    char b[64];
    int64_t shape[GM_MAX_DIMS];
    gm_status s = gm_need_i32(c, "one_hot", "index", ix);
    if (s) return s;
    if (p->n <= 0 || p->n > INT32_MAX)
        return gm_errf(c, GM_EARG, "one_hot: num_classes must be > 0, got %lld", (long long)p->n);
    if (ix->ndim >= GM_MAX_DIMS)
        return gm_errf(c, GM_ESHAPE, "one_hot: index %s already has %d dims (the most is %d)",
                       GM_SHAPE_STR(ix, b), ix->ndim, GM_MAX_DIMS);
    if (p->dtype < 0 || p->dtype >= GM_DTYPE_COUNT)
        return gm_errf(c, GM_EARG, "one_hot: unknown dtype %d", (int)p->dtype);
    memcpy(shape, ix->shape, sizeof shape);
    shape[ix->ndim] = p->n;
    s = gm_tensor_new(c, p->dtype, gm_tensor_device(ix), ix->ndim + 1, shape, &o->out[0]);
    if (s) return s;
    return gm_run(c, GM_K_ONE_HOT, 1, &ix, 1, o->out, &(gm_kparams){.one_hot = {p->n}});
}

static gm_status one_hot_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    static const int32_t iv[] = {2, 0, 3, 3, 1, 0};
    gm_params_init(p);
    if (variant != 0) return GM_ENOTSUP;
    in[0] = gm_sample_i32(c, 2, (int64_t[]){2, 3}, iv);
    p->n = 4;
    p->dtype = GM_F64;
    return gm_sample_done(c, 1, in, n_in);
}

static gm_status one_hot_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                             gm_status *expect)
{
    static const int32_t iv[] = {2, 0, 4};
    gm_params_init(p);
    p->n = 4;
    if (variant == 0) { /* 4 out of range for 4 classes */
        in[0] = gm_sample_i32(c, 1, (int64_t[]){3}, iv);
        *expect = GM_EINDEX;
    } else if (variant == 1) {
        in[0] = gm_sample_i32(c, 1, (int64_t[]){2}, iv);
        p->n = 0;
        *expect = GM_EARG;
    } else if (variant == 2) {
        in[0] = gm_sample_randn(c, GM_F64, 2000, 1, (int64_t[]){3});
        *expect = GM_EDTYPE;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 1, in, n_in);
}

extern const gm_oprules gm_rules_ONE_HOT;
const gm_oprules gm_rules_ONE_HOT = {one_hot_fwd, NULL, one_hot_sample, one_hot_bad};

/* ---- cat and stack --------------------------------------------------------------------- */

/* Same dtype (and ndim, and shape outside `skip`; skip < 0: the whole shape) as tensor 1.
 * Tensors are numbered from 1, as in the Lua list the user passed. */
static gm_status join_check(gm_ctx *c, const char *op, int n, gm_tensor **in, int skip)
{
    char b1[64], b2[64];
    if (n < 1) return gm_errf(c, GM_EARG, "%s: expects a non-empty list of tensors", op);
    for (int j = 1; j < n; j++) {
        gm_tensor *t = in[j];
        if (t->dtype != in[0]->dtype)
            return gm_errf(c, GM_EDTYPE, "%s: tensor %d is %s but tensor 1 is %s", op, j + 1,
                           gm_dtype_name(t->dtype), gm_dtype_name(in[0]->dtype));
        bool ok = t->ndim == in[0]->ndim;
        for (int d = 0; ok && d < t->ndim; d++) ok = d == skip || t->shape[d] == in[0]->shape[d];
        if (!ok) {
            if (skip >= 0)
                return gm_errf(c, GM_ESHAPE,
                               "%s: tensor %d has shape %s but tensor 1 has %s "
                               "(all dims but %d must match)",
                               op, j + 1, GM_SHAPE_STR(t, b1), GM_SHAPE_STR(in[0], b2), skip);
            return gm_errf(c, GM_ESHAPE, "%s: tensor %d has shape %s but tensor 1 has %s", op,
                           j + 1, GM_SHAPE_STR(t, b1), GM_SHAPE_STR(in[0], b2));
        }
    }
    return GM_OK;
}

static gm_status cat_fwd(gm_ctx *c, gm_opcall *o)
{
    char b[64];
    int dim;
    gm_status s;
    if (o->n_in < 1) return gm_errf(c, GM_EARG, "cat: expects a non-empty list of tensors");
    for (int j = 0; j < o->n_in; j++)
        if (o->in[j]->ndim == 0)
            return gm_errf(c, GM_ESHAPE, "cat: tensor %d is 0-dim (shape %s); use stack", j + 1,
                           GM_SHAPE_STR(o->in[j], b));
    gm_tensor *x0 = o->in[0];
    s = gm_dim_norm(c, "cat", o->p->dim, x0->ndim, &dim);
    if (!s) s = join_check(c, "cat", o->n_in, o->in, dim);
    if (s) return s;
    int64_t shape[GM_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    shape[dim] = 0;
    for (int j = 0; j < o->n_in; j++) shape[dim] += o->in[j]->shape[dim];
    s = gm_tensor_new(c, x0->dtype, gm_tensor_device(x0), x0->ndim, shape, &o->out[0]);
    gm_tensor *out = o->out[0];
    int64_t at = 0;
    for (int j = 0; !s && j < o->n_in; j++) {
        gm_tensor *src = o->in[j], *v = NULL;
        if (gm_tensor_numel(src) > 0) {
            s = gm_tensor_view(c, out, out->ndim, src->shape, out->stride,
                               out->offset + at * out->stride[dim], &v);
            if (!s) s = gm_run(c, GM_K_COPY, 1, &src, 1, &v, NULL);
            gm_tensor_release(v);
        }
        at += src->shape[dim];
    }
    return s;
}

/* gin[j] = a copy of g's slice [at, at + len_j) along dim. */
static gm_status cat_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *g = NULL;
    int dim;
    gm_status s = gm_dim_norm(c, "cat", n->p.dim, n->in[0]->ndim, &dim);
    if (!s) s = gm_gout_or_zeros(c, n, gout, 0, false, &g);
    int64_t at = 0;
    for (int j = 0; !s && j < n->n_in; j++) {
        gm_tensor *x = n->in[j], *v = NULL;
        if (n->needs[j]) {
            s = gm_tensor_view(c, g, g->ndim, x->shape, g->stride,
                               g->offset + at * g->stride[dim], &v);
            if (!s) s = gm_tensor_copy_as(c, v, v->dtype, &gin[j]);
            gm_tensor_release(v);
        }
        at += x->shape[dim];
    }
    gm_tensor_release(g);
    return s;
}

static gm_status stack_fwd(gm_ctx *c, gm_opcall *o)
{
    int dim;
    gm_status s = join_check(c, "stack", o->n_in, o->in, -1);
    if (s) return s;
    gm_tensor *x0 = o->in[0];
    char b[64];
    if (x0->ndim >= GM_MAX_DIMS)
        return gm_errf(c, GM_ESHAPE, "stack: tensors of shape %s already have %d dims (the most is %d)",
                       GM_SHAPE_STR(x0, b), x0->ndim, GM_MAX_DIMS);
    s = gm_dim_norm(c, "stack", o->p->dim, x0->ndim + 1, &dim);
    if (s) return s;
    int64_t shape[GM_MAX_DIMS], st[GM_MAX_DIMS];
    for (int d = 0, e = 0; d <= x0->ndim; d++) shape[d] = d == dim ? o->n_in : x0->shape[e++];
    s = gm_tensor_new(c, x0->dtype, gm_tensor_device(x0), x0->ndim + 1, shape, &o->out[0]);
    gm_tensor *out = o->out[0];
    for (int d = 0, e = 0; d <= x0->ndim; d++)
        if (d != dim) st[e++] = out ? out->stride[d] : 0;
    for (int j = 0; !s && j < o->n_in; j++) {
        gm_tensor *src = o->in[j], *v = NULL;
        if (gm_tensor_numel(src) == 0) continue;
        s = gm_tensor_view(c, out, src->ndim, src->shape, st, out->offset + j * out->stride[dim],
                           &v);
        if (!s) s = gm_run(c, GM_K_COPY, 1, &src, 1, &v, NULL);
        gm_tensor_release(v);
    }
    return s;
}

/* gin[j] = a copy of g's slice j along the new dim. */
static gm_status stack_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *g = NULL, *x0 = n->in[0];
    int dim;
    int64_t st[GM_MAX_DIMS];
    gm_status s = gm_dim_norm(c, "stack", n->p.dim, x0->ndim + 1, &dim);
    if (!s) s = gm_gout_or_zeros(c, n, gout, 0, false, &g);
    if (s) return s;
    for (int d = 0, e = 0; d <= x0->ndim; d++)
        if (d != dim) st[e++] = g->stride[d];
    for (int j = 0; !s && j < n->n_in; j++) {
        gm_tensor *v = NULL;
        if (!n->needs[j]) continue;
        s = gm_tensor_view(c, g, x0->ndim, x0->shape, st, g->offset + j * g->stride[dim], &v);
        if (!s) s = gm_tensor_copy_as(c, v, v->dtype, &gin[j]);
        gm_tensor_release(v);
    }
    gm_tensor_release(g);
    return s;
}

static gm_status join_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                             bool cat)
{
    gm_params_init(p);
    if (variant == 0) { /* three pieces along dim 0 */
        in[0] = gm_sample_randn(c, GM_F64, 2100, 2, (int64_t[]){2, 3});
        in[1] = gm_sample_randn(c, GM_F64, 2101, 2, (int64_t[]){cat ? 1 : 2, 3});
        in[2] = gm_sample_randn(c, GM_F64, 2102, 2, (int64_t[]){2, 3});
        p->dim = 0;
    } else if (variant == 1) { /* along the last dim */
        in[0] = gm_sample_randn(c, GM_F64, 2103, 2, (int64_t[]){2, 3});
        in[1] = gm_sample_randn(c, GM_F64, 2104, 2, (int64_t[]){2, cat ? 4 : 3});
        in[2] = gm_sample_randn(c, GM_F64, 2105, 2, (int64_t[]){2, cat ? 1 : 3});
        p->dim = -1;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 3, in, n_in);
}

static gm_status join_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                          gm_status *expect)
{
    gm_params_init(p);
    p->dim = 0;
    if (variant == 0) { /* mismatched shape outside the dim */
        in[0] = gm_sample_randn(c, GM_F64, 2200, 2, (int64_t[]){2, 3});
        in[1] = gm_sample_randn(c, GM_F64, 2201, 2, (int64_t[]){2, 4});
        *expect = GM_ESHAPE;
    } else if (variant == 1) { /* mismatched dtypes */
        in[0] = gm_sample_randn(c, GM_F64, 2202, 2, (int64_t[]){2, 3});
        in[1] = gm_sample_randn(c, GM_F32, 2203, 2, (int64_t[]){2, 3});
        *expect = GM_EDTYPE;
    } else if (variant == 2) { /* mismatched ndim */
        in[0] = gm_sample_randn(c, GM_F64, 2204, 2, (int64_t[]){2, 3});
        in[1] = gm_sample_randn(c, GM_F64, 2205, 1, (int64_t[]){3});
        *expect = GM_ESHAPE;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status cat_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    return join_sample(c, variant, n_in, in, p, true);
}

static gm_status stack_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    return join_sample(c, variant, n_in, in, p, false);
}

extern const gm_oprules gm_rules_CAT;
const gm_oprules gm_rules_CAT = {cat_fwd, cat_bwd, cat_sample, join_bad};
extern const gm_oprules gm_rules_STACK;
const gm_oprules gm_rules_STACK = {stack_fwd, stack_bwd, stack_sample, join_bad};
