/* norm.c: rules of layer_norm and rms_norm (kernels/cpu/norm.c). The rules check that weight
 * and bias have the normalised trailing shape of x (or are 0-dim: a number, spread over the
 * row here), hand the kernels contiguous [R, N] rows, and run one fused kernel forward and one
 * backward; the backward asks only for the gradients that are needed. */
#include <math.h>

#include "rules.h"
#include "sample.h"

/* One call: rows = R, n = N (elements per row), first normalised dim, eps. */
typedef struct {
    int dim;
    int64_t rows, n;
    double eps;
} norm_geo;

/* n_in is 3 for layer_norm (x, weight, bias), 2 for rms_norm (x, weight). */
static gm_status norm_check(gm_ctx *c, const char *op, int n_in, gm_tensor **in, const gm_params *p,
                            double eps_default, norm_geo *g) {
    static const char *const what[] = {"x", "weight", "bias"};
    char b1[64], b2[64], b3[64];
    gm_status st;
    if ((st = gm_check_same_dtype(c, op, n_in, in)) != GM_OK) return st;
    if ((st = gm_check_float(c, op, in[0])) != GM_OK) return st;
    gm_tensor *x = in[0];
    if (x->ndim == 0) return gm_errf(c, GM_ESHAPE, "%s: x must have at least 1 dim, got a 0-dim tensor", op);
    if ((st = gm_dim_norm(c, op, p->has_dim ? p->dim : -1, x->ndim, &g->dim)) != GM_OK) return st;
    int nt = x->ndim - g->dim;
    const int64_t *ts = x->shape + g->dim;
    g->rows = gm_shape_numel(g->dim, x->shape);
    g->n = gm_shape_numel(nt, ts);
    for (int i = 1; i < n_in; i++) {
        const gm_tensor *w = in[i];
        bool ok = w->ndim == 0 || w->ndim == nt;
        for (int d = 0; ok && w->ndim && d < nt; d++) ok = w->shape[d] == ts[d];
        if (!ok)
            return gm_errf(c, GM_ESHAPE, "%s: %s %s must have the normalised shape %s of x %s (dim %d), or be a number",
                           op, what[i], GM_SHAPE_STR(w, b1), gm_shape_str(nt, ts, b2, sizeof b2),
                           GM_SHAPE_STR(x, b3), g->dim);
    }
    g->eps = p->has_a ? p->a : eps_default;
    if (!(g->eps >= 0) || !isfinite(g->eps))
        return gm_errf(c, GM_EARG, "%s: eps must be finite and >= 0, got %g", op, g->eps);
    return GM_OK;
}

/* weight or bias as the kernel reads it: N contiguous elements (a 0-dim one spread over the row). */
static gm_status norm_affine(gm_ctx *c, gm_tensor *w, const gm_tensor *x, const norm_geo *g, gm_tensor **out) {
    if (w->ndim > 0) return gm_tensor_contiguous(c, w, out);
    gm_tensor *v;
    gm_status st = gm_tensor_broadcast_view(c, w, x->ndim - g->dim, x->shape + g->dim, &v);
    if (st != GM_OK) return st;
    st = gm_tensor_contiguous(c, v, out);
    gm_tensor_release(v);
    return st;
}

static gm_status norm_fwd(gm_ctx *c, gm_opcall *o, const char *op, int kid, double eps_default) {
    norm_geo g;
    gm_status st = norm_check(c, op, o->n_in, o->in, o->p, eps_default, &g);
    if (st != GM_OK) return st;
    gm_tensor *x = o->in[0], *ic[3] = {NULL, NULL, NULL};
    st = gm_tensor_contiguous(c, x, &ic[0]);
    for (int i = 1; i < o->n_in && st == GM_OK; i++) st = norm_affine(c, o->in[i], x, &g, &ic[i]);
    if (st == GM_OK) st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &o->out[0]);
    if (st == GM_OK) {
        st = gm_run(c, kid, o->n_in, ic, 1, o->out, &(gm_kparams){.norm = {.rows = g.rows, .n = g.n, .eps = g.eps}});
    }
    for (int i = 0; i < 3; i++) gm_tensor_release(ic[i]);
    return st;
}

/* Gradients of x (shape of x), weight and bias (the trailing shape from the kernel, summed to a
 * number for a 0-dim weight or bias), only for the inputs in n->needs. */
static gm_status norm_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin, const char *op, int kid,
                          double eps_default) {
    norm_geo g;
    gm_status st = norm_check(c, op, n->n_in, n->in, &n->p, eps_default, &g);
    if (st != GM_OK) return st;
    gm_tensor *x = n->in[0];
    if (!gout[0]) return gm_zero_grads(c, n, gin);
    gm_tensor *ic[3] = {NULL, NULL, NULL}, *outs[3] = {NULL, NULL, NULL}, *all[3] = {NULL, NULL, NULL};
    st = gm_tensor_contiguous(c, x, &ic[0]);
    if (st == GM_OK) st = norm_affine(c, n->in[1], x, &g, &ic[1]);
    if (st == GM_OK) st = gm_tensor_contiguous(c, gout[0], &ic[2]);
    int mask = 0, nout = 0;
    for (int j = 0; j < n->n_in && st == GM_OK; j++) {
        if (!n->needs[j]) continue;
        int nd = j == 0 ? x->ndim : x->ndim - g.dim;
        st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), nd, x->shape + (j == 0 ? 0 : g.dim), &all[j]);
        mask |= 1 << j;
        outs[nout++] = all[j];
    }
    if (st == GM_OK && nout > 0) {
        gm_kparams k = {.norm = {.rows = g.rows, .n = g.n, .eps = g.eps, .outs = (unsigned)mask}};
        st = gm_run(c, kid, 3, ic, nout, outs, &k);
    }
    for (int j = 0; j < n->n_in; j++) {
        if (st == GM_OK && all[j]) {
            if (n->in[j]->ndim == 0) st = gm_sum_to_shape(c, all[j], 0, NULL, &gin[j]);
            else gin[j] = gm_tensor_retain(all[j]);
        }
        gm_tensor_release(all[j]);
    }
    for (int i = 0; i < 3; i++) gm_tensor_release(ic[i]);
    return st;
}

static gm_status layer_norm_fwd(gm_ctx *c, gm_opcall *o) {
    return norm_fwd(c, o, "layer_norm", GM_K_LAYER_NORM, 1e-5);
}
static gm_status layer_norm_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return norm_bwd(c, n, gout, gin, "layer_norm", GM_K_LAYER_NORM_BWD, 1e-5);
}
static gm_status rms_norm_fwd(gm_ctx *c, gm_opcall *o) {
    return norm_fwd(c, o, "rms_norm", GM_K_RMS_NORM, 1e-6);
}
static gm_status rms_norm_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return norm_bwd(c, n, gout, gin, "rms_norm", GM_K_RMS_NORM_BWD, 1e-6);
}

/* ---- samples and bad calls -------------------------------------------------------------- */

/* Shapes of x and of weight/bias (wn = 0: numbers), dim, eps (0: the default). */
typedef struct {
    int xn;
    int64_t x[3];
    int wn;
    int64_t w[2];
    int dim;
    double eps;
} norm_case;

static const norm_case norm_samples[] = {
    {2, {3, 5}, 1, {5}, -1, 0},          /* the last dim */
    {3, {2, 3, 4}, 2, {3, 4}, -2, 0.1},  /* two trailing dims, a large eps */
    {2, {4, 1}, 1, {1}, -1, 0},          /* one-element rows: y = bias, dx = 0 */
    {2, {3, 4}, 0, {0}, 1, 0},           /* 0-dim weight and bias, a positive dim */
    {1, {6}, 1, {6}, 0, 1e-3},           /* 1-D x: one row */
};

static gm_status norm_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, int nin,
                             uint64_t seed) {
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof norm_samples / sizeof norm_samples[0])) return GM_ENOTSUP;
    const norm_case *s = &norm_samples[variant];
    p->dim = s->dim;
    p->has_dim = true;
    if (s->eps > 0) {
        p->a = s->eps;
        p->has_a = true;
    }
    in[0] = gm_sample_randn(c, GM_F64, seed + (uint64_t)variant, s->xn, s->x);
    for (int i = 1; i < nin; i++) {
        in[i] = gm_sample_randn(c, GM_F64, seed + 10 * (uint64_t)i + (uint64_t)variant, s->wn, s->w);
        if (in[i] && i == 1) { /* weights around 1, away from 0 */
            double *d = gm_tensor_data(in[i]);
            for (int64_t k = 0; k < gm_tensor_numel(in[i]); k++) d[k] = 1 + 0.5 * d[k];
        }
    }
    return gm_sample_done(c, nin, in, n_in);
}

/* x [2, 4] f64 with weight/bias shapes, dtypes or params that must fail. */
static gm_status norm_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect,
                          int nin) {
    static const struct {
        int64_t w[2];
        int wn, which; /* which input gets the shape w and the dtype t */
        gm_dtype xt, t;
        int dim;
        double eps;
        gm_status st;
    } s[] = {
        {{3}, 1, 1, GM_F64, GM_F64, -1, 0, GM_ESHAPE},     /* weight [3] for rows of 4 */
        {{2, 4}, 2, 1, GM_F64, GM_F64, -1, 0, GM_ESHAPE},  /* weight of x's whole shape, dim -1 */
        {{4}, 1, 1, GM_F64, GM_F32, -1, 0, GM_EDTYPE},     /* f32 weight with f64 x */
        {{4}, 1, 0, GM_I32, GM_I32, -1, 0, GM_EDTYPE},     /* i32 everything */
        {{4}, 1, 1, GM_F64, GM_F64, 2, 0, GM_EINDEX},      /* dim out of range */
        {{4}, 1, 1, GM_F64, GM_F64, -1, -1e-5, GM_EARG},   /* negative eps */
        {{5}, 1, 2, GM_F64, GM_F64, -1, 0, GM_ESHAPE},     /* bias [5] (layer_norm only) */
    };
    int nv = (int)(sizeof s / sizeof s[0]) - (nin == 2); /* rms_norm has no bias */
    gm_params_init(p);
    if (variant < 0 || variant >= nv) return GM_ENOTSUP;
    *expect = s[variant].st;
    p->dim = s[variant].dim;
    p->has_dim = true;
    if (s[variant].eps != 0) {
        p->a = s[variant].eps;
        p->has_a = true;
    }
    int64_t xs[2] = {2, 4}, ws[1] = {4};
    for (int i = 0; i < nin; i++) {
        gm_dtype t = i == s[variant].which ? s[variant].t : s[variant].xt;
        in[i] = NULL;
        if (i == 0) gm_tensor_zeros(c, t, GM_CPU, 2, xs, &in[i]);
        else if (i == s[variant].which) gm_tensor_zeros(c, t, GM_CPU, s[variant].wn, s[variant].w, &in[i]);
        else gm_tensor_zeros(c, t, GM_CPU, 1, ws, &in[i]);
    }
    return gm_sample_done(c, nin, in, n_in);
}

static gm_status layer_norm_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    return norm_sample(c, variant, n_in, in, p, 3, 5500);
}
static gm_status layer_norm_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    return norm_bad(c, variant, n_in, in, p, expect, 3);
}
static gm_status rms_norm_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    return norm_sample(c, variant, n_in, in, p, 2, 5600);
}
static gm_status rms_norm_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    return norm_bad(c, variant, n_in, in, p, expect, 2);
}

extern const gm_oprules gm_rules_LAYER_NORM, gm_rules_RMS_NORM;
const gm_oprules gm_rules_LAYER_NORM = {layer_norm_fwd, layer_norm_bwd, layer_norm_sample, layer_norm_bad};
const gm_oprules gm_rules_RMS_NORM = {rms_norm_fwd, rms_norm_bwd, rms_norm_sample, rms_norm_bad};
