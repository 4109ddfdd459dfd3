/* gla.c: rules of gla (the recurrent form of gated linear attention) and gla_chunk (the
 * chunkwise form, same map; kernels/cpu/gla.c). The rules check the [B, H, T, D] layouts and
 * gla_chunk's chunk sizes; forward and backward each run one dedicated kernel on row-readable
 * operands. */
#include <math.h>

#include "rules.h"
#include "sample.h"

/* Default secondary chunk of gla_chunk (4 and 8 are the fastest at Dk 32..64, chunk 32 on the
 * CPU; 16 and up spend more on exps inside secondary chunks than they save in matmul calls). */
#define GLA_SUB 8

static gm_status gla_check(gm_ctx *c, const char *op, gm_tensor **in, const gm_params *p, double *scale) {
    char b1[64], b2[64], b3[64], b4[64];
    gm_status st;
    if ((st = gm_check_same_dtype(c, op, 4, in)) != GM_OK) return st;
    if ((st = gm_check_float(c, op, in[0])) != GM_OK) return st;
    gm_tensor *q = in[0], *k = in[1], *v = in[2], *g = in[3];
    bool ok = q->ndim == 4 && k->ndim == 4 && v->ndim == 4 && g->ndim == 4;
    for (int d = 0; ok && d < 4; d++) ok = k->shape[d] == q->shape[d] && g->shape[d] == q->shape[d];
    for (int d = 0; ok && d < 3; d++) ok = v->shape[d] == q->shape[d];
    if (!ok)
        return gm_errf(c, GM_ESHAPE,
                       "%s: q, k, log_gate must be [B, H, T, Dk] and v [B, H, T, Dv], got %s, %s, %s, %s", op,
                       GM_SHAPE_STR(q, b1), GM_SHAPE_STR(k, b2), GM_SHAPE_STR(v, b3), GM_SHAPE_STR(g, b4));
    *scale = p->has_a ? p->a : 1.0 / sqrt((double)(q->shape[3] > 0 ? q->shape[3] : 1));
    if (!isfinite(*scale)) return gm_errf(c, GM_EARG, "%s: scale must be finite, got %g", op, *scale);
    return GM_OK;
}

/* The kernel arguments of a call: scale, and for gla_chunk its chunk and sub (sub defaults to
 * min(chunk, GLA_SUB) and is at most chunk). */
static gm_status gla_args(gm_ctx *c, int op, gm_tensor **in, const gm_params *p, gm_kparams *k) {
    const char *name = op == GM_OP_GLA ? "gla" : "gla_chunk";
    gm_status st = gla_check(c, name, in, p, &k->gla.scale);
    if (st != GM_OK || op == GM_OP_GLA) return st;
    if (p->n < 1)
        return gm_errf(c, GM_EARG, "gla_chunk: chunk (steps per chunk, no default) must be an integer >= 1, got %lld",
                       (long long)p->n);
    int64_t sub = p->n < GLA_SUB ? p->n : GLA_SUB;
    if (p->has_b) {
        if (!(p->b >= 1 && p->b < 9e15 && p->b == floor(p->b)))
            return gm_errf(c, GM_EARG, "gla_chunk: sub must be an integer >= 1, got %g", p->b);
        sub = p->b < (double)p->n ? (int64_t)p->b : p->n;
    }
    k->gla.chunk = p->n;
    k->gla.sub = sub;
    return GM_OK;
}

static gm_status gla_fwd_any(gm_ctx *c, gm_opcall *o, int op, int kernel) {
    gm_kparams k = {.gla = {0}};
    gm_status st = gla_args(c, op, o->in, o->p, &k);
    if (st != GM_OK) return st;
    gm_tensor *ic[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4 && st == GM_OK; i++) st = gm_rows_operand(c, o->in[i], &ic[i]);
    int64_t os[4] = {o->in[0]->shape[0], o->in[0]->shape[1], o->in[0]->shape[2], o->in[2]->shape[3]};
    if (st == GM_OK) st = gm_tensor_new(c, ic[0]->dtype, gm_tensor_device(ic[0]), 4, os, &o->out[0]);
    if (st == GM_OK) st = gm_run(c, kernel, 4, ic, 1, o->out, &k);
    gm_release_all(4, ic);
    return st;
}

static gm_status gla_bwd_any(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin, int kernel) {
    gm_kparams k = {.gla = {0}};
    gm_status st = gla_args(c, n->op, n->in, &n->p, &k);
    if (st != GM_OK) return st;
    if (!gout[0]) return gm_zero_grads(c, n, gin);
    gm_tensor *ic[5] = {NULL, NULL, NULL, NULL, NULL}, *all[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4 && st == GM_OK; i++) st = gm_rows_operand(c, n->in[i], &ic[i]);
    if (st == GM_OK) st = gm_rows_operand(c, gout[0], &ic[4]);
    for (int j = 0; j < 4 && st == GM_OK; j++) st = gm_new_like(c, n->in[j], &all[j]);
    if (st == GM_OK) st = gm_run(c, kernel, 5, ic, 4, all, &k);
    gm_release_all(5, ic);
    gm_hand_grads(st, n, all, gin);
    return st;
}

static gm_status gla_fwd(gm_ctx *c, gm_opcall *o) { return gla_fwd_any(c, o, GM_OP_GLA, GM_K_GLA); }
static gm_status gla_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return gla_bwd_any(c, n, gout, gin, GM_K_GLA_BWD);
}
static gm_status gla_chunk_fwd(gm_ctx *c, gm_opcall *o) {
    return gla_fwd_any(c, o, GM_OP_GLA_CHUNK, GM_K_GLA_CHUNK);
}
static gm_status gla_chunk_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return gla_bwd_any(c, n, gout, gin, GM_K_GLA_CHUNK_BWD);
}

/* log gates in (-0.7, -0.05): alpha in about [0.5, 0.95], as the tests of the chunkwise form. */
static gm_tensor *log_gates(gm_ctx *c, uint64_t seed, const int64_t *shape) {
    gm_tensor *g = gm_sample_randn(c, GM_F64, seed, 4, shape);
    if (!g) return NULL;
    double *d = gm_tensor_data(g);
    for (int64_t i = 0; i < gm_tensor_numel(g); i++) d[i] = -0.05 - 0.65 / (1.0 + exp(-d[i]));
    return g;
}

/* Samples shared by both forms: qk and v shapes, scale (0: default), chunk and sub (0: default)
 * for gla_chunk. */
static const struct {
    int64_t qk[4], v[4];
    double scale;
    int64_t chunk, sub;
} samples[] = {
    {{1, 2, 4, 2}, {1, 2, 4, 3}, 0, 2, 0},   /* two heads, Dv != Dk, two whole chunks */
    {{2, 1, 5, 3}, {2, 1, 5, 2}, 0.8, 2, 1}, /* explicit scale; T not a multiple of chunk, sub 1 */
    {{1, 1, 1, 2}, {1, 1, 1, 2}, 0, 4, 0},   /* T = 1 (chunk > T) */
    {{1, 1, 7, 2}, {1, 1, 7, 3}, 0, 5, 2},   /* secondary chunks of 2 inside chunks of 5 */
    {{1, 1, 6, 2}, {1, 1, 6, 2}, 0, 6, 4},   /* chunk = T, sub not dividing chunk */
};

static gm_status sample_any(gm_ctx *c, bool chunked, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof samples / sizeof samples[0])) return GM_ENOTSUP;
    if (samples[variant].scale != 0) {
        p->a = samples[variant].scale;
        p->has_a = true;
    }
    if (chunked) {
        p->n = samples[variant].chunk;
        if (samples[variant].sub) {
            p->b = (double)samples[variant].sub;
            p->has_b = true;
        }
    }
    in[0] = gm_sample_randn(c, GM_F64, 5100 + (uint64_t)variant, 4, samples[variant].qk);
    in[1] = gm_sample_randn(c, GM_F64, 5200 + (uint64_t)variant, 4, samples[variant].qk);
    in[2] = gm_sample_randn(c, GM_F64, 5300 + (uint64_t)variant, 4, samples[variant].v);
    in[3] = log_gates(c, 5400 + (uint64_t)variant, samples[variant].qk);
    return gm_sample_done(c, 4, in, n_in);
}

static gm_status gla_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    return variant < 3 ? sample_any(c, false, variant, n_in, in, p) : GM_ENOTSUP;
}
static gm_status gla_chunk_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    return sample_any(c, true, variant, n_in, in, p);
}

/* Bad calls: shapes and dtypes for both forms, then (gla_chunk only) chunk, sub and scale values
 * on good tensors (s[0]). */
static gm_status bad_any(gm_ctx *c, bool chunked, int variant, int *n_in, gm_tensor **in, gm_params *p,
                         gm_status *expect) {
    static const struct { int64_t q[4], k[4], v[4], g[4]; int nq; gm_dtype tq, tg; gm_status st; } s[] = {
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 2}, 4, GM_F64, GM_F64, GM_EARG},   /* good: options */
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 2}, 3, GM_F64, GM_F64, GM_ESHAPE}, /* 3-D q */
        {{1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 3}, {1, 2, 4, 2}, 4, GM_F64, GM_F64, GM_ESHAPE}, /* Dk mismatch */
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 5, 3}, {1, 2, 4, 2}, 4, GM_F64, GM_F64, GM_ESHAPE}, /* T mismatch */
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 1}, 4, GM_F64, GM_F64, GM_ESHAPE}, /* gate shape */
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 2}, 4, GM_F64, GM_F32, GM_EDTYPE}, /* f64 with f32 */
        {{1, 2, 4, 2}, {1, 2, 4, 2}, {1, 2, 4, 3}, {1, 2, 4, 2}, 4, GM_I32, GM_I32, GM_EDTYPE}, /* i32 */
    };
    /* gla_chunk on good tensors: chunk 0, chunk -3, sub -1, sub 1.5, scale inf (0: not given) */
    static const struct { int64_t chunk; double sub, scale; } o[] = {
        {0, 0, 0}, {-3, 0, 0}, {4, -1, 0}, {4, 1.5, 0}, {4, 0, INFINITY}};
    int ns = (int)(sizeof s / sizeof s[0]) - 1, no = chunked ? (int)(sizeof o / sizeof o[0]) : 0;
    gm_params_init(p);
    if (variant < 0 || variant >= ns + no) return GM_ENOTSUP;
    int v = variant < ns ? variant + 1 : 0;
    *expect = s[v].st;
    p->n = 2;
    if (variant >= ns) {
        int k = variant - ns;
        p->n = o[k].chunk;
        if (o[k].sub != 0) p->b = o[k].sub, p->has_b = true;
        if (o[k].scale != 0) p->a = o[k].scale, p->has_a = true;
    }
    in[0] = in[1] = in[2] = in[3] = NULL;
    gm_tensor_zeros(c, s[v].tq, GM_CPU, s[v].nq, s[v].q, &in[0]);
    gm_tensor_zeros(c, s[v].tq, GM_CPU, 4, s[v].k, &in[1]);
    gm_tensor_zeros(c, s[v].tq, GM_CPU, 4, s[v].v, &in[2]);
    gm_tensor_zeros(c, s[v].tg, GM_CPU, 4, s[v].g, &in[3]);
    return gm_sample_done(c, 4, in, n_in);
}

static gm_status gla_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    return bad_any(c, false, variant, n_in, in, p, expect);
}
static gm_status gla_chunk_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                               gm_status *expect) {
    return bad_any(c, true, variant, n_in, in, p, expect);
}

extern const gm_oprules gm_rules_GLA, gm_rules_GLA_CHUNK;
const gm_oprules gm_rules_GLA = {gla_fwd, gla_bwd, gla_sample, gla_bad};
const gm_oprules gm_rules_GLA_CHUNK = {gla_chunk_fwd, gla_chunk_bwd, gla_chunk_sample, gla_chunk_bad};
