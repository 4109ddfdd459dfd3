/* batch_norm.c: rules of batch_norm (training-mode batch normalisation over dim 1 of x
 * [N, C, ...]; kernels/cpu/batch_norm.c). The forward returns the batch mean and invstd per
 * channel as outputs (saved for the backward, and read by gm.nn.BatchNorm2d for its running
 * statistics); gradients reaching them are honoured, so the op is differentiable in all three
 * outputs. */
#include <math.h>

#include "internal.h"
#include "sample.h"

typedef struct {
    int64_t N, C, S;
    double eps;
} bn_geo;

static gm_status bn_check(gm_ctx *c, gm_tensor **in, const gm_params *p, bn_geo *g) {
    static const char *const what[] = {"x", "weight", "bias"};
    char b1[64], b2[64];
    gm_status st;
    if ((st = gm_check_same_dtype(c, "batch_norm", 3, in)) != GM_OK) return st;
    if ((st = gm_check_float(c, "batch_norm", in[0])) != GM_OK) return st;
    gm_tensor *x = in[0];
    if (x->ndim < 2) return gm_errf(c, GM_ESHAPE, "batch_norm: x must be [N, C, ...], got %s", GM_SHAPE_STR(x, b1));
    g->N = x->shape[0];
    g->C = x->shape[1];
    g->S = gm_shape_numel(x->ndim - 2, x->shape + 2);
    for (int i = 1; i < 3; i++)
        if (in[i]->ndim != 1 || in[i]->shape[0] != g->C)
            return gm_errf(c, GM_ESHAPE, "batch_norm: %s %s must be [C] = [%lld] for x %s", what[i],
                           GM_SHAPE_STR(in[i], b1), (long long)g->C, GM_SHAPE_STR(x, b2));
    if (g->N * g->S < 1 && g->C > 0)
        return gm_errf(c, GM_ESHAPE, "batch_norm: x %s has no elements per channel", GM_SHAPE_STR(x, b1));
    g->eps = p->has_a ? p->a : 1e-5;
    if (!(g->eps >= 0) || !isfinite(g->eps))
        return gm_errf(c, GM_EARG, "batch_norm: eps must be finite and >= 0, got %g", g->eps);
    return GM_OK;
}

static void bn_extra(const bn_geo *g, gm_kargs *e) {
    *e = (gm_kargs){0};
    e->i[0] = g->N;
    e->i[1] = g->C;
    e->i[2] = g->S;
    e->d[0] = g->eps;
}

static gm_status bn_fwd(gm_ctx *c, gm_opcall *o) {
    bn_geo g;
    gm_status st = bn_check(c, o->in, o->p, &g);
    if (st != GM_OK) return st;
    gm_tensor *x = o->in[0], *ic[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3 && st == GM_OK; i++) st = gm_tensor_contiguous(c, o->in[i], &ic[i]);
    if (st == GM_OK) st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &o->out[0]);
    for (int k = 1; k < 3 && st == GM_OK; k++) st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), 1, &g.C, &o->out[k]);
    if (st == GM_OK) {
        gm_kargs e;
        bn_extra(&g, &e);
        st = gm_run(c, GM_K_BATCH_NORM, 3, ic, 3, o->out, o->p, &e);
    }
    for (int i = 0; i < 3; i++) gm_tensor_release(ic[i]);
    return st;
}

static gm_status bn_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    bn_geo g;
    gm_status st = bn_check(c, n->in, &n->p, &g);
    if (st != GM_OK) return st;
    gm_tensor *x = n->in[0];
    gm_tensor *ic[7] = {NULL}, *zero = NULL, *outs[3] = {NULL, NULL, NULL};
    int mask = 0, nout = 0, given = (gout[1] ? 1 : 0) | (gout[2] ? 2 : 0);
    st = gm_tensor_contiguous(c, x, &ic[0]);
    /* no gradient reaching y: zeros (the mean and invstd terms may still be there) */
    if (st == GM_OK) st = gout[0] ? gm_tensor_contiguous(c, gout[0], &ic[1])
                                  : gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &ic[1]);
    if (st == GM_OK) st = gm_tensor_contiguous(c, n->in[1], &ic[2]);
    if (st == GM_OK) st = gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), 1, &g.C, &zero);
    for (int k = 1; k < 3 && st == GM_OK; k++) st = gm_tensor_contiguous(c, n->saved_out[k], &ic[2 + k]);
    for (int k = 1; k < 3 && st == GM_OK; k++)
        st = gout[k] ? gm_tensor_contiguous(c, gout[k], &ic[4 + k]) : (ic[4 + k] = gm_tensor_retain(zero), GM_OK);
    for (int j = 0; j < 3 && st == GM_OK; j++) {
        if (!n->needs[j]) continue;
        st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), n->in[j]->ndim, n->in[j]->shape, &gin[j]);
        mask |= 1 << j;
        outs[nout++] = gin[j];
    }
    if (st == GM_OK && nout > 0) {
        gm_kargs e;
        bn_extra(&g, &e);
        e.i[3] = mask;
        e.i[4] = given;
        st = gm_run(c, GM_K_BATCH_NORM_BWD, 7, ic, nout, outs, &n->p, &e);
    }
    for (int i = 0; i < 7; i++) gm_tensor_release(ic[i]);
    gm_tensor_release(zero);
    return st;
}

/* ---- samples and bad calls -------------------------------------------------------------- */

static gm_status bn_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    static const struct { int nx; int64_t x[4]; double eps; } s[] = {
        {4, {3, 2, 2, 3}, 0},    /* NCHW */
        {2, {5, 3, 0, 0}, 0.1},  /* [N, C]: BatchNorm1d, a large eps */
        {3, {1, 2, 4, 0}, 0},    /* one example: statistics over the length only */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    if (s[variant].eps > 0) {
        p->a = s[variant].eps;
        p->has_a = true;
    }
    int64_t C = s[variant].x[1];
    in[0] = gm_sample_randn(c, GM_F64, 7700 + (uint64_t)variant, s[variant].nx, s[variant].x);
    in[1] = gm_sample_randn(c, GM_F64, 7710 + (uint64_t)variant, 1, &C);
    in[2] = gm_sample_randn(c, GM_F64, 7720 + (uint64_t)variant, 1, &C);
    if (in[1]) { /* weights around 1 */
        double *d = gm_tensor_data(in[1]);
        for (int64_t k = 0; k < C; k++) d[k] = 1 + 0.5 * d[k];
    }
    return gm_sample_done(c, 3, in, n_in);
}

static gm_status bn_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    static const struct { int nx; int64_t x[3]; int64_t wc, bc; gm_dtype tx, tw; double eps; gm_status st; } s[] = {
        {3, {2, 3, 4}, 2, 3, GM_F64, GM_F64, 0, GM_ESHAPE},     /* weight [2] for 3 channels */
        {3, {2, 3, 4}, 3, 4, GM_F64, GM_F64, 0, GM_ESHAPE},     /* bias [4] */
        {1, {6, 0, 0}, 6, 6, GM_F64, GM_F64, 0, GM_ESHAPE},     /* 1-D x */
        {3, {2, 3, 4}, 3, 3, GM_F64, GM_F32, 0, GM_EDTYPE},     /* f32 weight with f64 x */
        {3, {2, 3, 4}, 3, 3, GM_I32, GM_I32, 0, GM_EDTYPE},     /* i32 */
        {3, {2, 3, 4}, 3, 3, GM_F64, GM_F64, -1, GM_EARG},      /* negative eps */
        {3, {0, 3, 4}, 3, 3, GM_F64, GM_F64, 0, GM_ESHAPE},     /* an empty batch */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    *expect = s[variant].st;
    if (s[variant].eps != 0) {
        p->a = s[variant].eps;
        p->has_a = true;
    }
    in[0] = in[1] = in[2] = NULL;
    gm_tensor_zeros(c, s[variant].tx, GM_CPU, s[variant].nx, s[variant].x, &in[0]);
    gm_tensor_zeros(c, s[variant].tw, GM_CPU, 1, &s[variant].wc, &in[1]);
    gm_tensor_zeros(c, s[variant].tw, GM_CPU, 1, &s[variant].bc, &in[2]);
    return gm_sample_done(c, 3, in, n_in);
}

extern const gm_oprules gm_rules_BATCH_NORM;
const gm_oprules gm_rules_BATCH_NORM = {bn_fwd, bn_bwd, bn_sample, bn_bad};
