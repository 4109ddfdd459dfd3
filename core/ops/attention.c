/* attention.c: rules of the sequence-mixer ops: sdpa (fused scaled dot-product attention, its
 * backward recomputing probabilities from the saved log-sum-exp) and causal_conv1d (depthwise
 * causal convolution along time). Both run dedicated CPU kernels (kernels/cpu/attention.c);
 * sdpa reads q, k, v (and dO) through their strides when their rows are gemm-readable, every other
 * operand is made contiguous; the rules check shapes so the kernels never see a bad layout. */
#include <math.h>

#include "rules.h"
#include "sample.h"

/* ---- sdpa ----------------------------------------------------------------------------------- */

/* A new [B, H, T, D] tensor laid out in memory like ref: [B, T, H, D] order (a transposed view)
 * when ref's heads lie inside its time steps, as for heads split off a projection; then
 * out:transpose(1, 2) is contiguous and merging the heads back costs no copy. Contiguous otherwise. */
static gm_status sdpa_alloc_like(gm_ctx *c, const gm_tensor *ref, const int64_t *shape, gm_tensor **out) {
    if (!(shape[1] > 1 && shape[2] > 1 && ref->stride[1] < ref->stride[2]))
        return gm_tensor_new(c, ref->dtype, gm_tensor_device(ref), 4, shape, out);
    int64_t ms[4] = {shape[0], shape[2], shape[1], shape[3]}, st4[4];
    gm_tensor *m = NULL;
    gm_status st = gm_tensor_new(c, ref->dtype, gm_tensor_device(ref), 4, ms, &m);
    if (st != GM_OK) return st;
    st4[0] = shape[1] * shape[2] * shape[3], st4[1] = shape[3], st4[2] = shape[1] * shape[3], st4[3] = 1;
    st = gm_tensor_view(c, m, 4, shape, st4, m->offset, out);
    gm_tensor_release(m);
    return st;
}

static gm_status sdpa_check(gm_ctx *c, gm_tensor **in, const gm_params *p, double *scale) {
    char b1[64], b2[64], b3[64];
    gm_status st;
    if ((st = gm_check_same_dtype(c, "sdpa", 3, in)) != GM_OK) return st;
    if ((st = gm_check_float(c, "sdpa", in[0])) != GM_OK) return st;
    gm_tensor *q = in[0], *k = in[1], *v = in[2];
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
        return gm_errf(c, GM_ESHAPE, "sdpa: q, k, v must be 4-D [B, H, T, D], got %s, %s, %s", GM_SHAPE_STR(q, b1),
                       GM_SHAPE_STR(k, b2), GM_SHAPE_STR(v, b3));
    if (k->shape[0] != q->shape[0] || k->shape[1] != q->shape[1] || v->shape[0] != q->shape[0] ||
        v->shape[1] != q->shape[1])
        return gm_errf(c, GM_ESHAPE, "sdpa: batch and head dims differ: q %s, k %s, v %s", GM_SHAPE_STR(q, b1),
                       GM_SHAPE_STR(k, b2), GM_SHAPE_STR(v, b3));
    if (k->shape[3] != q->shape[3])
        return gm_errf(c, GM_ESHAPE, "sdpa: q %s and k %s differ in the head dim (%lld vs %lld)", GM_SHAPE_STR(q, b1),
                       GM_SHAPE_STR(k, b2), (long long)q->shape[3], (long long)k->shape[3]);
    if (v->shape[2] != k->shape[2])
        return gm_errf(c, GM_ESHAPE, "sdpa: k %s and v %s differ in the key count (%lld vs %lld)", GM_SHAPE_STR(k, b1),
                       GM_SHAPE_STR(v, b2), (long long)k->shape[2], (long long)v->shape[2]);
    if (k->shape[2] < 1 && q->shape[2] > 0)
        return gm_errf(c, GM_ESHAPE, "sdpa: no keys (k %s): softmax over an empty row", GM_SHAPE_STR(k, b1));
    *scale = p->has_a ? p->a : 1.0 / sqrt((double)(q->shape[3] > 0 ? q->shape[3] : 1));
    if (!isfinite(*scale)) return gm_errf(c, GM_EARG, "sdpa: scale must be finite, got %g", *scale);
    return GM_OK;
}

static gm_status sdpa_fwd(gm_ctx *c, gm_opcall *o) {
    double scale;
    gm_status st = sdpa_check(c, o->in, o->p, &scale);
    if (st != GM_OK) return st;
    gm_tensor *ic[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3 && st == GM_OK; i++) st = gm_rows_operand(c, o->in[i], &ic[i]);
    const int64_t *qs = o->in[0]->shape;
    int64_t os[4] = {qs[0], qs[1], qs[2], o->in[2]->shape[3]};
    if (st == GM_OK) st = sdpa_alloc_like(c, ic[0], os, &o->out[0]);
    if (st == GM_OK) st = gm_tensor_new(c, ic[0]->dtype, gm_tensor_device(ic[0]), 3, os, &o->out[1]);
    if (st == GM_OK) {
        st = gm_run(c, GM_K_SDPA, 3, ic, 2, o->out, &(gm_kparams){.sdpa = {.causal = o->p->largest, .scale = scale}});
    }
    gm_release_all(3, ic);
    return st;
}

static gm_status sdpa_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    double scale;
    gm_status st = sdpa_check(c, n->in, &n->p, &scale);
    if (st != GM_OK) return st;
    gm_tensor *all[3] = {NULL, NULL, NULL};
    for (int j = 0; j < 3 && st == GM_OK; j++) {
        gm_tensor *t = n->in[j];
        st = sdpa_alloc_like(c, t, t->shape, &all[j]);
    }
    gm_tensor *ic[7] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    for (int i = 0; i < 3 && st == GM_OK; i++) st = gm_rows_operand(c, n->in[i], &ic[i]);
    if (st == GM_OK) st = gm_rows_operand(c, n->saved_out[0], &ic[3]);
    if (st == GM_OK) st = gm_tensor_contiguous(c, n->saved_out[1], &ic[4]);
    if (st == GM_OK)
        st = gout[0] ? gm_rows_operand(c, gout[0], &ic[5])
                     : gm_tensor_zeros(c, ic[3]->dtype, gm_tensor_device(ic[3]), 4, ic[3]->shape, &ic[5]);
    if (st == GM_OK && gout[1]) st = gm_tensor_contiguous(c, gout[1], &ic[6]);
    if (st == GM_OK) {
        gm_kparams k = {.sdpa = {.causal = n->p.largest, .scale = scale}};
        st = gm_run(c, GM_K_SDPA_BWD, gout[1] ? 7 : 6, ic, 3, all, &k);
    }
    gm_release_all(7, ic);
    gm_hand_grads(st, n, all, gin);
    return st;
}

static gm_status sdpa_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    static const struct { int64_t q[4], k[4], v[4]; bool causal; double scale; } s[] = {
        {{1, 2, 3, 2}, {1, 2, 3, 2}, {1, 2, 3, 2}, true, 0},   /* causal, square */
        {{2, 1, 4, 3}, {2, 1, 3, 3}, {2, 1, 3, 2}, false, 0},  /* cross: S != T, Dv != Dh */
        {{1, 1, 4, 2}, {1, 1, 4, 2}, {1, 1, 4, 3}, true, 0.7}, /* causal with an explicit scale */
        {{1, 2, 4, 2}, {1, 2, 2, 2}, {1, 2, 2, 2}, true, 0},   /* causal with fewer keys than queries */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    p->largest = s[variant].causal;
    if (s[variant].scale != 0) {
        p->a = s[variant].scale;
        p->has_a = true;
    }
    in[0] = gm_sample_randn(c, GM_F64, 4100 + (uint64_t)variant, 4, s[variant].q);
    in[1] = gm_sample_randn(c, GM_F64, 4200 + (uint64_t)variant, 4, s[variant].k);
    in[2] = gm_sample_randn(c, GM_F64, 4300 + (uint64_t)variant, 4, s[variant].v);
    return gm_sample_done(c, 3, in, n_in);
}

static gm_status sdpa_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    static const struct { int64_t q[4], k[4], v[4]; int nq; gm_dtype tq, tk; gm_status st; } s[] = {
        {{1, 2, 3, 2}, {1, 2, 3, 2}, {1, 2, 3, 2}, 3, GM_F64, GM_F64, GM_ESHAPE}, /* 3-D q */
        {{1, 2, 3, 2}, {1, 2, 3, 3}, {1, 2, 3, 2}, 4, GM_F64, GM_F64, GM_ESHAPE}, /* head dim mismatch */
        {{1, 2, 3, 2}, {1, 2, 3, 2}, {1, 2, 4, 2}, 4, GM_F64, GM_F64, GM_ESHAPE}, /* key count mismatch */
        {{1, 2, 3, 2}, {1, 1, 3, 2}, {1, 1, 3, 2}, 4, GM_F64, GM_F64, GM_ESHAPE}, /* head count mismatch */
        {{1, 2, 3, 2}, {1, 2, 0, 2}, {1, 2, 0, 2}, 4, GM_F64, GM_F64, GM_ESHAPE}, /* no keys */
        {{1, 2, 3, 2}, {1, 2, 3, 2}, {1, 2, 3, 2}, 4, GM_F64, GM_F32, GM_EDTYPE}, /* f64 with f32 */
        {{1, 2, 3, 2}, {1, 2, 3, 2}, {1, 2, 3, 2}, 4, GM_I32, GM_I32, GM_EDTYPE}, /* i32 */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    *expect = s[variant].st;
    in[0] = in[1] = in[2] = NULL;
    gm_tensor_zeros(c, s[variant].tq, GM_CPU, s[variant].nq, s[variant].q, &in[0]);
    gm_tensor_zeros(c, s[variant].tk, GM_CPU, 4, s[variant].k, &in[1]);
    gm_tensor_zeros(c, s[variant].tk, GM_CPU, 4, s[variant].v, &in[2]);
    return gm_sample_done(c, 3, in, n_in);
}

/* ---- causal_conv1d -------------------------------------------------------------------------- */

static gm_status conv_check(gm_ctx *c, gm_tensor **in) {
    char b1[64], b2[64];
    gm_status st;
    if ((st = gm_check_same_dtype(c, "causal_conv1d", 2, in)) != GM_OK) return st;
    if ((st = gm_check_float(c, "causal_conv1d", in[0])) != GM_OK) return st;
    if (in[0]->ndim != 3 || in[1]->ndim != 2)
        return gm_errf(c, GM_ESHAPE, "causal_conv1d: x must be [B, T, D] and w [K, D], got %s and %s",
                       GM_SHAPE_STR(in[0], b1), GM_SHAPE_STR(in[1], b2));
    if (in[1]->shape[1] != in[0]->shape[2])
        return gm_errf(c, GM_ESHAPE, "causal_conv1d: x %s has %lld channels but w %s has %lld", GM_SHAPE_STR(in[0], b1),
                       (long long)in[0]->shape[2], GM_SHAPE_STR(in[1], b2), (long long)in[1]->shape[1]);
    if (in[1]->shape[0] < 1)
        return gm_errf(c, GM_ESHAPE, "causal_conv1d: w %s has no taps", GM_SHAPE_STR(in[1], b1));
    return GM_OK;
}

static gm_status conv_fwd(gm_ctx *c, gm_opcall *o) {
    gm_status st = conv_check(c, o->in);
    if (st != GM_OK) return st;
    gm_tensor *ic[2];
    st = gm_contig_all(c, 2, o->in, ic);
    if (st == GM_OK) st = gm_new_like(c, ic[0], &o->out[0]);
    if (st == GM_OK) st = gm_run(c, GM_K_CAUSAL_CONV1D, 2, ic, 1, o->out, NULL);
    gm_release_all(2, ic);
    return st;
}

static gm_status conv_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    if (!gout[0]) return gm_zero_grads(c, n, gin);
    gm_tensor *ins[3] = {n->in[0], n->in[1], gout[0]}, *ic[3], *all[2] = {NULL, NULL};
    gm_status st = gm_contig_all(c, 3, ins, ic);
    for (int j = 0; j < 2 && st == GM_OK; j++) st = gm_new_like(c, n->in[j], &all[j]);
    if (st == GM_OK) st = gm_run(c, GM_K_CAUSAL_CONV1D_BWD, 3, ic, 2, all, NULL);
    gm_release_all(3, ic);
    gm_hand_grads(st, n, all, gin);
    return st;
}

static gm_status conv_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    static const struct { int64_t x[3], w[2]; } s[] = {
        {{2, 4, 3}, {2, 3}}, /* short kernel */
        {{1, 5, 2}, {5, 2}}, /* kernel as long as the sequence (the long convolution) */
        {{1, 3, 2}, {4, 2}}, /* more taps than steps */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, GM_F64, 4400 + (uint64_t)variant, 3, s[variant].x);
    in[1] = gm_sample_randn(c, GM_F64, 4500 + (uint64_t)variant, 2, s[variant].w);
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status conv_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    static const struct { int64_t x[3], w[2]; int nx; gm_dtype tx, tw; gm_status st; } s[] = {
        {{2, 4, 3}, {2, 3}, 2, GM_F64, GM_F64, GM_ESHAPE}, /* 2-D x */
        {{2, 4, 3}, {2, 2}, 3, GM_F64, GM_F64, GM_ESHAPE}, /* channel mismatch */
        {{2, 4, 3}, {0, 3}, 3, GM_F64, GM_F64, GM_ESHAPE}, /* no taps */
        {{2, 4, 3}, {2, 3}, 3, GM_F64, GM_F32, GM_EDTYPE}, /* f64 with f32 */
        {{2, 4, 3}, {2, 3}, 3, GM_I32, GM_I32, GM_EDTYPE}, /* i32 */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    *expect = s[variant].st;
    in[0] = in[1] = NULL;
    gm_tensor_zeros(c, s[variant].tx, GM_CPU, s[variant].nx, s[variant].x, &in[0]);
    gm_tensor_zeros(c, s[variant].tw, GM_CPU, 2, s[variant].w, &in[1]);
    return gm_sample_done(c, 2, in, n_in);
}

extern const gm_oprules gm_rules_SDPA, gm_rules_CAUSAL_CONV1D;
const gm_oprules gm_rules_SDPA = {sdpa_fwd, sdpa_bwd, sdpa_sample, sdpa_bad};
const gm_oprules gm_rules_CAUSAL_CONV1D = {conv_fwd, conv_bwd, conv_sample, conv_bad};
