/* view.c: shape ops. reshape/view/transpose/permute/narrow/select/expand/squeeze/unsqueeze/
 * flatten return views sharing the input's storage; contiguous/clone/to copy. Backward rules
 * compose other ops (reshape back, transpose back, scatter into zeros, sum over expansion). */
#include <string.h>

#include "../internal.h"
#include "sample.h"

#define RULES(id) extern const gm_oprules gm_rules_##id; const gm_oprules gm_rules_##id

/* ---- shared helpers -------------------------------------------------------------------------- */
static gm_status resolve_shape(gm_ctx *c, const char *op, const gm_tensor *x, const gm_params *p,
                               int64_t *shape) {
    int64_t known = 1, n = gm_tensor_numel(x);
    int infer = -1;
    char s1[128], s2[128];
    for (int i = 0; i < p->nshape; i++) {
        shape[i] = p->shape[i];
        if (shape[i] == -1) {
            if (infer >= 0) return gm_errf(c, GM_EARG, "%s: only one dim may be -1", op);
            infer = i;
        } else if (shape[i] < 0) {
            return gm_errf(c, GM_ESHAPE, "%s: invalid size %lld", op, (long long)shape[i]);
        } else {
            known *= shape[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || n % known)
            return gm_errf(c, GM_ESHAPE, "%s: cannot reshape %s (%lld elements) into %s", op,
                           GM_SHAPE_STR(x, s1), (long long)n, gm_shape_str(p->nshape, p->shape, s2, sizeof s2));
        shape[infer] = n / known;
        known = n;
    }
    if (known != n)
        return gm_errf(c, GM_ESHAPE, "%s: cannot reshape %s (%lld elements) into %s (%lld elements)", op,
                       GM_SHAPE_STR(x, s1), (long long)n, gm_shape_str(p->nshape, shape, s2, sizeof s2),
                       (long long)known);
    return GM_OK;
}

/* Strides viewing x as `shape` without copying, if its strides allow (PyTorch's rule: each
 * run of dims that is contiguous in memory may be re-split freely). */
static bool view_strides(const gm_tensor *x, int ndim, const int64_t *shape, int64_t *stride) {
    if (gm_tensor_numel(x) == 0 || x->ndim == 0) {
        gm_contiguous_strides(ndim, shape, stride);
        return true;
    }
    int vd = ndim - 1;
    int64_t base = x->stride[x->ndim - 1], tn = 1, vn = 1;
    for (int td = x->ndim - 1; td >= 0; td--) {
        tn *= x->shape[td];
        if (td == 0 || (x->shape[td - 1] != 1 && x->stride[td - 1] != tn * base)) {
            while (vd >= 0 && (vn < tn || shape[vd] == 1)) {
                stride[vd] = vn * base;
                vn *= shape[vd];
                vd--;
            }
            if (vn != tn) return false;
            if (td > 0) {
                base = x->stride[td - 1];
                tn = vn = 1;
            }
        }
    }
    return vd == -1;
}

static gm_status reshape_impl(gm_ctx *c, gm_opcall *o, bool allow_copy) {
    const char *op = allow_copy ? "reshape" : "view";
    gm_tensor *x = o->in[0];
    int64_t shape[GM_MAX_DIMS], stride[GM_MAX_DIMS];
    gm_status st = resolve_shape(c, op, x, o->p, shape);
    if (st != GM_OK) return st;
    int nd = o->p->nshape;
    if (view_strides(x, nd, shape, stride)) return gm_tensor_view(c, x, nd, shape, stride, x->offset, &o->out[0]);
    char s1[128];
    if (!allow_copy)
        return gm_errf(c, GM_ESHAPE, "view: the strides of %s do not allow this view; use reshape "
                       "(which copies) or contiguous() first", GM_SHAPE_STR(x, s1));
    gm_tensor *y;
    if ((st = gm_tensor_contiguous(c, x, &y)) != GM_OK) return st;
    gm_contiguous_strides(nd, shape, stride);
    st = gm_tensor_view(c, y, nd, shape, stride, y->offset, &o->out[0]);
    gm_tensor_release(y);
    return st;
}

/* Gradient reshaped back to input j's shape. */
static gm_status back_reshape(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0];
    gm_tensor *g;
    gm_status st = gm_tensor_contiguous(c, gout[0], &g);
    if (st != GM_OK) return st;
    st = gm_reshape(c, g, x->ndim, x->shape, &gin[0]);
    gm_tensor_release(g);
    return st;
}

/* zeros shaped like x, with g copied into the view chosen by `viewop` of it. */
static gm_status back_scatter_view(gm_ctx *c, gm_node *n, gm_tensor *g, gm_tensor **gin) {
    gm_tensor *x = n->in[0], *z, *v;
    /* When x's gradient so far is a buffer only autograd holds (one reference, its own
     * storage), add g into the slice of it in place: q, k, v narrowed off one projection then
     * cost one pass over the projection's gradient instead of a zeroed copy per slice plus
     * their sums. */
    gm_tensor *acc = x->grad_fn ? x->grad_fn->gout[x->out_index] : NULL;
    if (acc && acc->refcount == 1 && acc->storage->refcount == 1 && acc->dtype == g->dtype &&
        gm_tensor_is_contiguous(acc) && acc->ndim == x->ndim &&
        memcmp(acc->shape, x->shape, (size_t)x->ndim * sizeof *x->shape) == 0) {
        gm_status st = gm_op(c, n->op, 1, &acc, &n->p, &v);
        if (st == GM_OK) {
            gm_tensor *io[2] = {v, g};
            gm_kparams k = {.pw = {.op = GM_OP_ADD, .name = gm_opdef_get(n->op)->name}};
            st = gm_run(c, GM_K_PW_BINARY, 2, io, 1, &v, &k);
            gm_tensor_release(v);
        }
        return st; /* gin[0] stays NULL: nothing more to add */
    }
    gm_status st = gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &z);
    if (st != GM_OK) return st;
    if ((st = gm_op(c, n->op, 1, &z, &n->p, &v)) == GM_OK) {
        st = gm_tensor_copy_(c, v, g);
        gm_tensor_release(v);
    }
    if (st == GM_OK) gin[0] = z;
    else gm_tensor_release(z);
    return st;
}

/* in[0] = an f64 normal(0, 1) sample of the given shape (seed 4000 + variant), *n_in = 1;
 * returns from the calling sample/bad rule when it cannot be built. */
#define SAMPLE_X(...)                                                                   \
    do {                                                                                \
        int64_t shp_[] = {__VA_ARGS__};                                                 \
        in[0] = gm_sample_randn(c, GM_F64, 4000 + (uint64_t)variant,                    \
                                (int)(sizeof shp_ / sizeof shp_[0]), shp_);             \
        gm_status st_ = gm_sample_done(c, 1, in, n_in);                                 \
        if (st_ != GM_OK) return st_;                                                   \
    } while (0)

/* ---- reshape / view ---------------------------------------------------------------------- */
static gm_status reshape_fwd(gm_ctx *c, gm_opcall *o) { return reshape_impl(c, o, true); }
static gm_status view_fwd(gm_ctx *c, gm_opcall *o) { return reshape_impl(c, o, false); }

static gm_status reshape_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant == 0) {
        SAMPLE_X(2, 3, 4);
        p->nshape = 2, p->shape[0] = 4, p->shape[1] = -1;
    } else if (variant == 1) {
        SAMPLE_X(6);
        p->nshape = 3, p->shape[0] = 1, p->shape[1] = 2, p->shape[2] = 3;
    } else {
        return GM_ENOTSUP;
    }
    return GM_OK;
}

static gm_status reshape_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    gm_params_init(p);
    if (variant > 0) return GM_ENOTSUP;
    SAMPLE_X(2, 3);
    p->nshape = 2, p->shape[0] = 4, p->shape[1] = 2;
    *expect = GM_ESHAPE;
    return GM_OK;
}

RULES(RESHAPE) = {reshape_fwd, back_reshape, reshape_sample, reshape_bad};
RULES(VIEW) = {view_fwd, back_reshape, reshape_sample, reshape_bad};

/* ---- transpose / permute ------------------------------------------------------------------- */
static gm_status permute_by(gm_ctx *c, gm_tensor *x, const int *perm, gm_tensor **out) {
    int64_t shape[GM_MAX_DIMS], stride[GM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        shape[i] = x->shape[perm[i]];
        stride[i] = x->stride[perm[i]];
    }
    return gm_tensor_view(c, x, x->ndim, shape, stride, x->offset, out);
}

static gm_status transpose_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    int d0, d1, perm[GM_MAX_DIMS];
    gm_status st;
    if ((st = gm_dim_norm(c, "transpose", o->p->dim, x->ndim, &d0)) != GM_OK) return st;
    if ((st = gm_dim_norm(c, "transpose", o->p->dim1, x->ndim, &d1)) != GM_OK) return st;
    if (x->ndim == 0) return gm_tensor_alias(c, x, &o->out[0]);
    for (int i = 0; i < x->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return permute_by(c, x, perm, &o->out[0]);
}

static gm_status transpose_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return gm_transpose(c, gout[0], n->p.dim, n->p.dim1, &gin[0]);
}

static gm_status transpose_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant > 1) return GM_ENOTSUP;
    SAMPLE_X(2, 3, 4);
    p->dim = variant ? 0 : 1;
    p->dim1 = -1;
    return GM_OK;
}

static gm_status dim_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    gm_params_init(p);
    if (variant > 0) return GM_ENOTSUP;
    SAMPLE_X(2, 3);
    p->dim = 5;
    p->dim1 = 0;
    p->ndims = 1;
    p->dims[0] = 5;
    p->start = 0;
    p->length = 1;
    *expect = GM_EINDEX;
    return GM_OK;
}

RULES(TRANSPOSE) = {transpose_fwd, transpose_bwd, transpose_sample, dim_bad};

static gm_status permute_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    int perm[GM_MAX_DIMS];
    bool seen[GM_MAX_DIMS] = {0};
    if (o->p->ndims != x->ndim)
        return gm_errf(c, GM_EARG, "permute: %d dims given for a %d-dim tensor", o->p->ndims < 0 ? 0 : o->p->ndims, x->ndim);
    for (int i = 0; i < x->ndim; i++) {
        gm_status st = gm_dim_norm(c, "permute", o->p->dims[i], x->ndim, &perm[i]);
        if (st != GM_OK) return st;
        if (seen[perm[i]]) return gm_errf(c, GM_EARG, "permute: dim %d repeated", perm[i]);
        seen[perm[i]] = true;
    }
    return permute_by(c, x, perm, &o->out[0]);
}

static gm_status permute_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_params p;
    gm_params_init(&p);
    p.ndims = n->p.ndims;
    int nd = n->in[0]->ndim;
    for (int i = 0; i < nd; i++) {
        int d = n->p.dims[i] < 0 ? n->p.dims[i] + nd : n->p.dims[i];
        p.dims[d] = i;
    }
    return gm_op(c, GM_OP_PERMUTE, 1, &gout[0], &p, &gin[0]);
}

static gm_status permute_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant > 0) return GM_ENOTSUP;
    SAMPLE_X(2, 3, 4);
    p->ndims = 3, p->dims[0] = 2, p->dims[1] = 0, p->dims[2] = -2;
    return GM_OK;
}

static gm_status permute_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    gm_params_init(p);
    if (variant > 0) return GM_ENOTSUP;
    SAMPLE_X(2, 3);
    p->ndims = 2, p->dims[0] = 0, p->dims[1] = 0;
    *expect = GM_EARG;
    return GM_OK;
}

RULES(PERMUTE) = {permute_fwd, permute_bwd, permute_sample, permute_bad};

/* ---- narrow / select ----------------------------------------------------------------------- */
static gm_status narrow_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    int d;
    gm_status st = gm_dim_norm(c, "narrow", o->p->dim, x->ndim, &d);
    if (st != GM_OK) return st;
    if (x->ndim == 0) return gm_errf(c, GM_EARG, "narrow: cannot narrow a 0-dim tensor");
    int64_t size = x->shape[d], start = o->p->start < 0 ? o->p->start + size : o->p->start, len = o->p->length;
    if (start < 0 || len < 0 || start + len > size)
        return gm_errf(c, GM_EINDEX, "narrow: start %lld, length %lld out of range for dim %d of size %lld",
                       (long long)o->p->start, (long long)len, d, (long long)size);
    int64_t shape[GM_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[d] = len;
    return gm_tensor_view(c, x, x->ndim, shape, x->stride, x->offset + start * x->stride[d], &o->out[0]);
}

static gm_status narrow_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return back_scatter_view(c, n, gout[0], gin);
}

static gm_status narrow_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant > 1) return GM_ENOTSUP;
    SAMPLE_X(4, 5);
    p->dim = variant ? -1 : 0;
    p->start = variant ? -3 : 1;
    p->length = 2;
    return GM_OK;
}

RULES(NARROW) = {narrow_fwd, narrow_bwd, narrow_sample, dim_bad};

static gm_status select_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    int d;
    gm_status st = gm_dim_norm(c, "select", o->p->dim, x->ndim, &d);
    if (st != GM_OK) return st;
    if (x->ndim == 0) return gm_errf(c, GM_EINDEX, "select: cannot index a 0-dim tensor");
    int64_t size = x->shape[d], i = o->p->index < 0 ? o->p->index + size : o->p->index;
    if (i < 0 || i >= size)
        return gm_errf(c, GM_EINDEX, "select: index %lld out of range for dim %d of size %lld",
                       (long long)o->p->index, d, (long long)size);
    int64_t shape[GM_MAX_DIMS], stride[GM_MAX_DIMS];
    for (int k = 0, j = 0; k < x->ndim; k++)
        if (k != d) shape[j] = x->shape[k], stride[j++] = x->stride[k];
    return gm_tensor_view(c, x, x->ndim - 1, shape, stride, x->offset + i * x->stride[d], &o->out[0]);
}

static gm_status select_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant > 1) return GM_ENOTSUP;
    SAMPLE_X(3, 4);
    p->dim = variant ? 1 : 0;
    p->index = variant ? -1 : 2;
    return GM_OK;
}

static gm_status select_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    gm_params_init(p);
    if (variant > 0) return GM_ENOTSUP;
    SAMPLE_X(3, 4);
    p->index = 3;
    *expect = GM_EINDEX;
    return GM_OK;
}

RULES(SELECT) = {select_fwd, narrow_bwd, select_sample, select_bad};

/* ---- expand -------------------------------------------------------------------------------- */
static gm_status expand_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    int nd = o->p->nshape, lead = nd - x->ndim;
    int64_t shape[GM_MAX_DIMS];
    char s1[128], s2[128];
    if (lead < 0)
        return gm_errf(c, GM_ESHAPE, "expand: target %s has fewer dims than %s",
                       gm_shape_str(nd, o->p->shape, s1, sizeof s1), GM_SHAPE_STR(x, s2));
    for (int i = 0; i < nd; i++) {
        int64_t want = o->p->shape[i];
        if (want == -1) {
            if (i < lead) return gm_errf(c, GM_ESHAPE, "expand: -1 is not allowed for a new leading dim");
            want = x->shape[i - lead];
        }
        shape[i] = want;
    }
    return gm_tensor_broadcast_view(c, x, nd, shape, &o->out[0]);
}

static gm_status expand_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return gm_sum_to_shape(c, gout[0], n->in[0]->ndim, n->in[0]->shape, &gin[0]);
}

static gm_status expand_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant > 0) return GM_ENOTSUP;
    SAMPLE_X(3, 1);
    p->nshape = 3, p->shape[0] = 2, p->shape[1] = -1, p->shape[2] = 4;
    return GM_OK;
}

static gm_status expand_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    gm_params_init(p);
    if (variant > 0) return GM_ENOTSUP;
    SAMPLE_X(3, 2);
    p->nshape = 2, p->shape[0] = 3, p->shape[1] = 4;
    *expect = GM_ESHAPE;
    return GM_OK;
}

RULES(EXPAND) = {expand_fwd, expand_bwd, expand_sample, expand_bad};

/* ---- squeeze / unsqueeze / flatten (all reshapes) -------------------------------------------- */
static gm_status reshape_to(gm_ctx *c, gm_opcall *o, int nd, const int64_t *shape) {
    gm_params p;
    gm_params_init(&p);
    p.nshape = nd;
    memcpy(p.shape, shape, sizeof p.shape);
    gm_opcall sub = *o;
    sub.p = &p;
    gm_status st = reshape_impl(c, &sub, true);
    o->out[0] = sub.out[0];
    return st;
}

static gm_status squeeze_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    bool drop[GM_MAX_DIMS] = {0};
    int64_t shape[GM_MAX_DIMS];
    int nd = 0;
    if (o->p->ndims < 0) {
        for (int i = 0; i < x->ndim; i++) drop[i] = x->shape[i] == 1;
    } else {
        for (int k = 0; k < o->p->ndims; k++) {
            int d;
            gm_status st = gm_dim_norm(c, "squeeze", o->p->dims[k], x->ndim, &d);
            if (st != GM_OK) return st;
            if (x->ndim) drop[d] = x->shape[d] == 1;
        }
    }
    for (int i = 0; i < x->ndim; i++)
        if (!drop[i]) shape[nd++] = x->shape[i];
    return reshape_to(c, o, nd, shape);
}

static gm_status unsqueeze_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    int d;
    gm_status st = gm_dim_norm(c, "unsqueeze", o->p->dim, x->ndim + 1, &d);
    if (st != GM_OK) return st;
    if (x->ndim >= GM_MAX_DIMS) return gm_errf(c, GM_ESHAPE, "unsqueeze: already %d dims", GM_MAX_DIMS);
    int64_t shape[GM_MAX_DIMS];
    for (int i = 0, j = 0; i <= x->ndim; i++) shape[i] = i == d ? 1 : x->shape[j++];
    return reshape_to(c, o, x->ndim + 1, shape);
}

static gm_status flatten_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    int s, e, nd = 0;
    int64_t shape[GM_MAX_DIMS];
    if (x->ndim == 0) {
        shape[0] = 1;
        return reshape_to(c, o, 1, shape);
    }
    gm_status st;
    if ((st = gm_dim_norm(c, "flatten", o->p->dim, x->ndim, &s)) != GM_OK) return st;
    if ((st = gm_dim_norm(c, "flatten", o->p->dim1, x->ndim, &e)) != GM_OK) return st;
    if (s > e) return gm_errf(c, GM_EARG, "flatten: start dim %d after end dim %d", s, e);
    for (int i = 0; i < x->ndim; i++) {
        if (i <= s || i > e) shape[nd++] = x->shape[i];
        else shape[nd - 1] *= x->shape[i];
    }
    return reshape_to(c, o, nd, shape);
}

static gm_status squeeze_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant > 1) return GM_ENOTSUP;
    SAMPLE_X(2, 1, 3, 1);
    if (variant) p->ndims = 1, p->dims[0] = -1;
    return GM_OK;
}

static gm_status unsqueeze_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant > 1) return GM_ENOTSUP;
    SAMPLE_X(2, 3);
    p->dim = variant ? -1 : 1;
    return GM_OK;
}

static gm_status flatten_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant > 1) return GM_ENOTSUP;
    SAMPLE_X(2, 3, 2, 2);
    if (variant) p->dim = 1, p->dim1 = 2;
    return GM_OK;
}

RULES(SQUEEZE) = {squeeze_fwd, back_reshape, squeeze_sample, dim_bad};
RULES(UNSQUEEZE) = {unsqueeze_fwd, back_reshape, unsqueeze_sample, dim_bad};
RULES(FLATTEN) = {flatten_fwd, back_reshape, flatten_sample, dim_bad};

/* ---- contiguous / clone / to ------------------------------------------------------------- */
static gm_status contiguous_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    if (gm_tensor_is_contiguous(x)) return gm_tensor_alias(c, x, &o->out[0]);
    return gm_tensor_copy_as(c, x, x->dtype, &o->out[0]);
}

static gm_status clone_fwd(gm_ctx *c, gm_opcall *o) {
    return gm_tensor_copy_as(c, o->in[0], o->in[0]->dtype, &o->out[0]);
}

static gm_status to_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    if ((unsigned)o->p->dtype >= GM_DTYPE_COUNT) return gm_errf(c, GM_EARG, "to: bad dtype");
    if (x->dtype == o->p->dtype) return gm_tensor_alias(c, x, &o->out[0]);
    return gm_tensor_copy_as(c, x, o->p->dtype, &o->out[0]);
}

static gm_status identity_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return gm_tensor_to_dtype(c, gout[0], n->in[0]->dtype, &gin[0]);
}

static gm_status copy_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant > 1) return GM_ENOTSUP;
    SAMPLE_X(3, 4);
    p->dtype = GM_F64;
    if (variant) { /* a transposed (non-contiguous) input */
        gm_tensor *t;
        gm_status st = gm_transpose(c, in[0], 0, 1, &t);
        gm_tensor_release(in[0]);
        in[0] = t;
        return st;
    }
    return GM_OK;
}

static gm_status no_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    return GM_ENOTSUP;
}

RULES(CONTIGUOUS) = {contiguous_fwd, identity_bwd, copy_sample, no_bad};
RULES(CLONE) = {clone_fwd, identity_bwd, copy_sample, no_bad};
RULES(TO) = {to_fwd, identity_bwd, copy_sample, no_bad};
