/* gla.c: rules of gla, the recurrent form of gated linear attention (kernels/cpu/gla.c). The
 * rules check the [B, H, T, D] layouts; forward and backward each run one dedicated kernel on
 * contiguous operands. */
#include <math.h>

#include "internal.h"
#include "sample.h"

static gm_status gla_check(gm_ctx *c, gm_tensor **in, const gm_params *p, double *scale) {
    char b1[64], b2[64], b3[64], b4[64];
    gm_status st;
    if ((st = gm_check_same_dtype(c, "gla", 4, in)) != GM_OK) return st;
    if ((st = gm_check_float(c, "gla", in[0])) != GM_OK) return st;
    gm_tensor *q = in[0], *k = in[1], *v = in[2], *g = in[3];
    bool ok = q->ndim == 4 && k->ndim == 4 && v->ndim == 4 && g->ndim == 4;
    for (int d = 0; ok && d < 4; d++) ok = k->shape[d] == q->shape[d] && g->shape[d] == q->shape[d];
    for (int d = 0; ok && d < 3; d++) ok = v->shape[d] == q->shape[d];
    if (!ok)
        return gm_errf(c, GM_ESHAPE,
                       "gla: q, k, log_gate must be [B, H, T, Dk] and v [B, H, T, Dv], got %s, %s, %s, %s",
                       GM_SHAPE_STR(q, b1), GM_SHAPE_STR(k, b2), GM_SHAPE_STR(v, b3), GM_SHAPE_STR(g, b4));
    *scale = p->has_a ? p->a : 1.0 / sqrt((double)(q->shape[3] > 0 ? q->shape[3] : 1));
    if (!isfinite(*scale)) return gm_errf(c, GM_EARG, "gla: scale must be finite, got %g", *scale);
    return GM_OK;
}

static gm_status gla_fwd(gm_ctx *c, gm_opcall *o) {
    double scale;
    gm_status st = gla_check(c, o->in, o->p, &scale);
    if (st != GM_OK) return st;
    gm_tensor *ic[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4 && st == GM_OK; i++) st = gm_tensor_contiguous(c, o->in[i], &ic[i]);
    int64_t os[4] = {o->in[0]->shape[0], o->in[0]->shape[1], o->in[0]->shape[2], o->in[2]->shape[3]};
    if (st == GM_OK) st = gm_tensor_new(c, ic[0]->dtype, gm_tensor_device(ic[0]), 4, os, &o->out[0]);
    if (st == GM_OK) {
        gm_kargs e = {0};
        e.d[0] = scale;
        st = gm_run(c, GM_K_GLA, 4, ic, 1, o->out, o->p, &e);
    }
    for (int i = 0; i < 4; i++) gm_tensor_release(ic[i]);
    return st;
}

static gm_status gla_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    double scale;
    gm_status st = gla_check(c, n->in, &n->p, &scale);
    if (st != GM_OK) return st;
    if (!gout[0]) {
        for (int j = 0; j < 4 && st == GM_OK; j++)
            if (n->needs[j])
                st = gm_tensor_zeros(c, n->in[j]->dtype, gm_tensor_device(n->in[j]), 4, n->in[j]->shape, &gin[j]);
        return st;
    }
    gm_tensor *ic[5] = {NULL, NULL, NULL, NULL, NULL}, *all[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4 && st == GM_OK; i++) st = gm_tensor_contiguous(c, n->in[i], &ic[i]);
    if (st == GM_OK) st = gm_tensor_contiguous(c, gout[0], &ic[4]);
    for (int j = 0; j < 4 && st == GM_OK; j++)
        st = gm_tensor_new(c, n->in[j]->dtype, gm_tensor_device(n->in[j]), 4, n->in[j]->shape, &all[j]);
    if (st == GM_OK) {
        gm_kargs e = {0};
        e.d[0] = scale;
        st = gm_run(c, GM_K_GLA_BWD, 5, ic, 4, all, &n->p, &e);
    }
    for (int i = 0; i < 5; i++) gm_tensor_release(ic[i]);
    for (int j = 0; j < 4; j++) {
        if (st == GM_OK && n->needs[j]) gin[j] = all[j];
        else gm_tensor_release(all[j]);
    }
    return st;
}

/* log gates in (-0.7, -0.05): alpha in about [0.5, 0.95], as the tests of the chunkwise form. */
static gm_tensor *log_gates(gm_ctx *c, uint64_t seed, const int64_t *shape) {
    gm_tensor *g = gm_sample_randn(c, GM_F64, seed, 4, shape);
    if (!g) return NULL;
    double *d = gm_tensor_data(g);
    for (int64_t i = 0; i < gm_tensor_numel(g); i++) d[i] = -0.05 - 0.65 / (1.0 + exp(-d[i]));
    return g;
}

static gm_status gla_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    static const struct { int64_t qk[4], v[4]; double scale; } s[] = {
        {{1, 2, 4, 2}, {1, 2, 4, 3}, 0},   /* two heads, Dv != Dk */
        {{2, 1, 5, 3}, {2, 1, 5, 2}, 0.8}, /* explicit scale */
        {{1, 1, 1, 2}, {1, 1, 1, 2}, 0},   /* T = 1 */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    if (s[variant].scale != 0) {
        p->a = s[variant].scale;
        p->has_a = true;
    }
    in[0] = gm_sample_randn(c, GM_F64, 5100 + (uint64_t)variant, 4, s[variant].qk);
    in[1] = gm_sample_randn(c, GM_F64, 5200 + (uint64_t)variant, 4, s[variant].qk);
    in[2] = gm_sample_randn(c, GM_F64, 5300 + (uint64_t)variant, 4, s[variant].v);
    in[3] = log_gates(c, 5400 + (uint64_t)variant, s[variant].qk);
    return gm_sample_done(c, 4, in, n_in);
}

static gm_status gla_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    static const struct { int64_t q[4], k[4], v[4], g[4]; int nq; gm_dtype tq, tg; gm_status st; } s[] = {
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 2}, 3, GM_F64, GM_F64, GM_ESHAPE}, /* 3-D q */
        {{1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 3}, {1, 2, 4, 2}, 4, GM_F64, GM_F64, GM_ESHAPE}, /* Dk mismatch */
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 5, 3}, {1, 2, 4, 2}, 4, GM_F64, GM_F64, GM_ESHAPE}, /* T mismatch */
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 1}, 4, GM_F64, GM_F64, GM_ESHAPE}, /* gate shape */
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 2}, 4, GM_F64, GM_F32, GM_EDTYPE}, /* f64 with f32 */
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 2}, 4, GM_I32, GM_I32, GM_EDTYPE}, /* i32 */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    *expect = s[variant].st;
    in[0] = in[1] = in[2] = in[3] = NULL;
    gm_tensor_zeros(c, s[variant].tq, GM_CPU, s[variant].nq, s[variant].q, &in[0]);
    gm_tensor_zeros(c, s[variant].tq, GM_CPU, 4, s[variant].k, &in[1]);
    gm_tensor_zeros(c, s[variant].tq, GM_CPU, 4, s[variant].v, &in[2]);
    gm_tensor_zeros(c, s[variant].tg, GM_CPU, 4, s[variant].g, &in[3]);
    return gm_sample_done(c, 4, in, n_in);
}

extern const gm_oprules gm_rules_GLA;
const gm_oprules gm_rules_GLA = {gla_fwd, gla_bwd, gla_sample, gla_bad};
