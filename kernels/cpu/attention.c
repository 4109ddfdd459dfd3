/* attention.c (cpu): fused scaled dot-product attention and the depthwise causal convolution.
 * sdpa works one head at a time, reading the head's q, k, v in place (strided rows) in their own
 * dtype: each block of 64 query rows computes its scores, softmax and output with gemms; the
 * backward recomputes each block's probabilities from the saved log-sum-exp (FlashAttention's
 * recomputation, blocked over queries only). Heads
 * are split over threads; every head's result is computed by one thread in a fixed order, so the
 * bits do not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "blas.h"
#include "vmath.h"

static inline double dot(const double *x, const double *y, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

/* ---- sdpa ----------------------------------------------------------------------------------- */
/* Query rows go in blocks of BR: one block's scores [BR, S] (and, in the backward, their
 * gradient) are the only part of the T x S matrix in memory, per thread. q, k, v and dO are read
 * in place through their strides (any layout whose last dim is contiguous, such as the
 * [B, T, H, Dh] -> [B, H, T, Dh] transpose of a fused qkv projection): each head's rows are a
 * matrix with leading dimension stride[2]. The products are gemms in the operands' dtype (sgemm
 * for f32, dgemm for f64, one single-threaded call each through blas.h inside the head loop);
 * outputs (rows contiguous, laid out like q by the rule) are written by the gemms directly, dK
 * and dV accumulated over blocks in place. Softmax statistics: the row max in the dtype, the row sum and D_t = dO_t . O_t in f64;
 * f32 exponentials go through 8-lane blocks (vmath.h: libmvec's expf where available, as the
 * pointwise kernels do), every element through the same block, so values do not depend on position. */
#define BR 64

typedef struct {
    const gm_kargs *a;
    int64_t T, S, Dh, Dv;
    bool causal, bwd, has_glse, f32;
    double scale;
    int stop, oom;
} sdpa_work;

/* C = alpha op(A) op(B) + beta C in the work's dtype (pointers to f32 or f64), on this thread. */
static void gemm(const sdpa_work *w, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const void *A,
                 int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
    gm_cpu_gemm1(!w->f32, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

static inline double elem(const gm_kview *v, int64_t off) {
    return v->dtype == GM_F32 ? (double)((const float *)v->data)[off] : ((const double *)v->data)[off];
}

static inline void *ptr(const gm_kview *v, int64_t off) {
    return (char *)v->data + off * (v->dtype == GM_F32 ? 4 : 8);
}

/* Scores of query rows [t0, t0+br) against keys [0, ns), masked, turned into probabilities:
 * forward (lse == NULL): exp(s - rowmax) / rowsum, the row's log-sum-exp into lout (f32 or
 * f64 per the dtype); backward: exp(s - lse_t). P is [br, ns] row-major. */
static void block_probs(const sdpa_work *w, const void *Q, int64_t ldq, const void *K, int64_t ldk, int64_t t0,
                        int64_t br, int64_t ns, void *P, const gm_kview *lse, int64_t lse_off, void *lout) {
    gemm(w, false, true, br, ns, w->Dh, w->scale, Q, ldq, K, ldk, 0.0, P, ns);
    for (int64_t r = 0; r < br; r++) {
        int64_t t = t0 + r, nv = w->causal ? (t + 1 < ns ? t + 1 : ns) : ns;
        if (w->f32) {
            float *p = (float *)P + r * ns;
            for (int64_t j = nv; j < ns; j++) p[j] = 0;
            if (lse) {
                v8_exp_shifted(p, p, nv, (float)elem(lse, lse_off + t));
                continue;
            }
            float m = -INFINITY;
            for (int64_t j = 0; j < nv; j++) m = p[j] > m ? p[j] : m;
            double l = v8_exp_shifted(p, p, nv, m);
            float inv = (float)(1.0 / l);
            for (int64_t j = 0; j < nv; j++) p[j] *= inv;
            ((float *)lout)[t] = (float)((double)m + log(l));
        } else {
            double *p = (double *)P + r * ns;
            for (int64_t j = nv; j < ns; j++) p[j] = 0;
            if (lse) {
                double L = elem(lse, lse_off + t);
                for (int64_t j = 0; j < nv; j++) p[j] = exp(p[j] - L);
                continue;
            }
            double m = -INFINITY, l = 0;
            for (int64_t j = 0; j < nv; j++) m = p[j] > m ? p[j] : m;
            for (int64_t j = 0; j < nv; j++) l += (p[j] = exp(p[j] - m));
            double inv = 1.0 / l;
            for (int64_t j = 0; j < nv; j++) p[j] *= inv;
            ((double *)lout)[t] = m + log(l);
        }
    }
}

static void sdpa_range(void *ctx, int64_t lo, int64_t hi) {
    sdpa_work *w = ctx;
    const gm_kargs *a = w->a;
    int64_t T = w->T, S = w->S, Dh = w->Dh, Dv = w->Dv;
    int64_t br0 = T < BR ? T : BR, es = w->f32 ? 4 : 8;
    /* Scratch: one block of probabilities [BR, S] (+ its gradient in the backward). */
    size_t n = (size_t)(br0 * S) * (w->bwd ? 2 : 1);
    char *buf = malloc((n ? n : 1) * (size_t)es);
    if (!buf) {
        __atomic_store_n(&w->oom, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&w->stop, 1, __ATOMIC_RELAXED);
        return;
    }
    void *P = buf, *dP = buf + (size_t)(br0 * S) * (size_t)es;
    const gm_kview *q = &a->in[0], *k = &a->in[1], *v = &a->in[2];
    int64_t lq = gm_kview_row_ld(q), lk = gm_kview_row_ld(k), lv = gm_kview_row_ld(v);
    for (int64_t hd = lo; hd < hi; hd++) {
        if (gm_halted(&w->stop)) break;
        int64_t oq = gm_kview_head_off(q, hd), ok = gm_kview_head_off(k, hd), ov = gm_kview_head_off(v, hd);
        if (!w->bwd) {
            const gm_kview *O = &a->out[0];
            int64_t oo = gm_kview_head_off(O, hd), lo_ = gm_kview_row_ld(O);
            char *L = ptr(&a->out[1], hd * T);
            for (int64_t t0 = 0; t0 < T; t0 += BR) {
                int64_t br = T - t0 < BR ? T - t0 : BR, ns = w->causal ? (t0 + br < S ? t0 + br : S) : S;
                block_probs(w, ptr(q, oq + t0 * lq), lq, ptr(k, ok), lk, t0, br, ns, P, NULL, 0, L);
                gemm(w, false, false, br, Dv, ns, 1.0, P, ns, ptr(v, ov), lv, 0.0, ptr(O, oo + t0 * lo_), lo_);
            }
            continue;
        }
        /* Backward per block: dP = dO V^T; dS = scale P (dP - D), D_t = dO_t . O_t - glse_t;
         * dQ = dS K; dK += dS^T Q; dV += P^T dO. */
        const gm_kview *O = &a->in[3], *L = &a->in[4], *dO = &a->in[5], *G = w->has_glse ? &a->in[6] : NULL;
        const gm_kview *gq = &a->out[0], *gk = &a->out[1], *gv = &a->out[2];
        int64_t ldo = gm_kview_row_ld(dO), odo = gm_kview_head_off(dO, hd), lO = gm_kview_row_ld(O), oO = gm_kview_head_off(O, hd);
        int64_t lgq = gm_kview_row_ld(gq), lgk = gm_kview_row_ld(gk), lgv = gm_kview_row_ld(gv);
        char *dQ = ptr(gq, gm_kview_head_off(gq, hd)), *dK = ptr(gk, gm_kview_head_off(gk, hd)), *dV = ptr(gv, gm_kview_head_off(gv, hd));
        for (int64_t s = 0; s < S; s++) {
            memset(dK + s * lgk * es, 0, (size_t)(Dh * es));
            memset(dV + s * lgv * es, 0, (size_t)(Dv * es));
        }
        for (int64_t t0 = 0; t0 < T; t0 += BR) {
            int64_t br = T - t0 < BR ? T - t0 : BR, ns = w->causal ? (t0 + br < S ? t0 + br : S) : S;
            const void *Qb = ptr(q, oq + t0 * lq), *dOb = ptr(dO, odo + t0 * ldo);
            block_probs(w, Qb, lq, ptr(k, ok), lk, t0, br, ns, P, L, hd * T, NULL);
            gemm(w, false, true, br, ns, Dv, 1.0, dOb, ldo, ptr(v, ov), lv, 0.0, dP, ns);
            for (int64_t r = 0; r < br; r++) {
                int64_t t = t0 + r;
                double D = G ? -elem(G, hd * T + t) : 0;
                for (int64_t j = 0; j < Dv; j++) D += elem(dO, odo + t * ldo + j) * elem(O, oO + t * lO + j);
                if (w->f32) {
                    float *p = (float *)P + r * ns, *dp = (float *)dP + r * ns, Df = (float)D, sc = (float)w->scale;
                    for (int64_t j = 0; j < ns; j++) dp[j] = sc * p[j] * (dp[j] - Df);
                } else {
                    double *p = (double *)P + r * ns, *dp = (double *)dP + r * ns;
                    for (int64_t j = 0; j < ns; j++) dp[j] = w->scale * p[j] * (dp[j] - D);
                }
            }
            gemm(w, false, false, br, Dh, ns, 1.0, dP, ns, ptr(k, ok), lk, 0.0, dQ + t0 * lgq * es, lgq);
            gemm(w, true, false, ns, Dh, br, 1.0, dP, ns, Qb, lq, 1.0, dK, lgk);
            gemm(w, true, false, ns, Dv, br, 1.0, P, ns, dOb, ldo, 1.0, dV, lgv);
        }
    }
    free(buf);
}

static gm_status sdpa_run(const gm_kargs *a, bool bwd) {
    const gm_kview *q = &a->in[0], *k = &a->in[1], *v = &a->in[2];
    sdpa_work w = {.a = a, .T = q->shape[2], .S = k->shape[2], .Dh = q->shape[3],
                   .Dv = v->shape[3], .causal = a->k.sdpa.causal, .bwd = bwd, .has_glse = bwd && a->n_in > 6,
                   .f32 = q->dtype == GM_F32, .scale = a->k.sdpa.scale};
    int64_t heads = q->shape[0] * q->shape[1];
    if (heads == 0 || w.T == 0) return GM_OK;
    gm_parallel_for(heads, gm_min_units(w.T * w.S * (w.Dh + w.Dv) / 8 + 1), a->nthreads, sdpa_range, &w);
    if (w.oom) return GM_ENOMEM;
    return w.stop ? GM_EINTR : GM_OK;
}

GM_CPU_FWD_BWD(SDPA, sdpa_run)

/* ---- causal_conv1d -------------------------------------------------------------------------- */
/* x [B,T,D] and w [K,D]; sequences are split over threads (the weight gradient over lags), each
 * unit computed in f64 on copies (extra memory: one sequence of x and dy, and w, per thread;
 * all of x and dy once for the weight gradient). */

typedef struct {
    const gm_kargs *a;
    int64_t T, D, K, dir; /* dir: -1 forward, +1 input gradient (conv_seq_range) */
    const double *X, *W, *DY; /* f64 copies (weight gradient only) */
    int stop, oom;
} conv_work;

/* Sequences [lo, hi): y[b,t,d] = sum_j w[j,d] x[b,t-j,d] (the forward, dir = -1, x = in[0]) or
 * dx[b,s,d] = sum_j w[j,d] dy[b,s+j,d] (the backward, dir = +1, dy = in[2]), j ascending. */
static void conv_seq_range(void *ctx, int64_t lo, int64_t hi) {
    conv_work *w = ctx;
    int64_t T = w->T, D = w->D, K = w->K, dir = w->dir;
    const gm_kview *src = &w->a->in[dir > 0 ? 2 : 0];
    double *buf = malloc((size_t)(2 * T * D + K * D + 1) * sizeof(double));
    if (!buf) {
        __atomic_store_n(&w->oom, 1, __ATOMIC_RELAXED);
        return;
    }
    double *x = buf, *y = x + T * D, *wt = y + T * D;
    gm_load_f64(wt, &w->a->in[1], 0, 1, K * D);
    for (int64_t b = lo; b < hi; b++) {
        if (gm_halted(&w->stop)) break;
        gm_load_f64(x, src, b * T * D, 1, T * D);
        memset(y, 0, (size_t)(T * D) * sizeof(double));
        for (int64_t t = 0; t < T; t++)
            for (int64_t j = 0; j < K && t + dir * j >= 0 && t + dir * j < T; j++) {
                const double *xs = x + (t + dir * j) * D, *wj = wt + j * D;
                double *yt = y + t * D;
                for (int64_t d = 0; d < D; d++) yt[d] += wj[d] * xs[d];
            }
        gm_store_f64(&w->a->out[0], b * T * D, 1, y, T * D);
    }
    free(buf);
}

/* dw[j,d] = sum_{b,t>=j} dy[b,t,d] x[b,t-j,d]: lags split over threads, each summing b, t in order. */
static void conv_dw_range(void *ctx, int64_t lo, int64_t hi) {
    conv_work *w = ctx;
    int64_t T = w->T, D = w->D, B = w->a->in[0].shape[0];
    double *acc = malloc((size_t)(D + 1) * sizeof(double));
    if (!acc) {
        __atomic_store_n(&w->oom, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t j = lo; j < hi; j++) {
        if (gm_halted(&w->stop)) break;
        memset(acc, 0, (size_t)D * sizeof(double));
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = j; t < T; t++) {
                const double *g = w->DY + (b * T + t) * D, *x = w->X + (b * T + t - j) * D;
                for (int64_t d = 0; d < D; d++) acc[d] += g[d] * x[d];
            }
        gm_store_f64(&w->a->out[1], j * D, 1, acc, D);
    }
    free(acc);
}

gm_status gm_cpu_CAUSAL_CONV1D(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    conv_work w = {.a = a, .T = a->in[0].shape[1], .D = a->in[0].shape[2], .K = a->in[1].shape[0], .dir = -1};
    int64_t kk = w.K < w.T ? w.K : w.T;
    gm_parallel_for(a->in[0].shape[0], gm_min_units(w.T * w.D * kk + 1), a->nthreads, conv_seq_range, &w);
    if (w.oom) return GM_ENOMEM;
    return w.stop ? GM_EINTR : GM_OK;
}

gm_status gm_cpu_CAUSAL_CONV1D_BWD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    conv_work w = {.a = a, .T = a->in[0].shape[1], .D = a->in[0].shape[2], .K = a->in[1].shape[0], .dir = 1};
    int64_t B = a->in[0].shape[0], kk = w.K < w.T ? w.K : w.T, n = B * w.T * w.D;
    gm_parallel_for(B, gm_min_units(w.T * w.D * kk + 1), a->nthreads, conv_seq_range, &w);
    if (w.oom) return GM_ENOMEM;
    if (w.stop) return GM_EINTR;
    /* Lags >= T see no data: their gradient is 0. */
    double zero = 0;
    for (int64_t j = kk; j < w.K; j++)
        for (int64_t d = 0; d < w.D; d++) gm_store_f64(&a->out[1], j * w.D + d, 1, &zero, 1);
    double *X = malloc((size_t)(2 * n + 1) * sizeof(double));
    if (!X) return GM_ENOMEM;
    gm_load_f64(X, &a->in[0], 0, 1, n);
    gm_load_f64(X + n, &a->in[2], 0, 1, n);
    w.X = X;
    w.DY = X + n;
    gm_parallel_for(kk, gm_min_units(B * w.T * w.D + 1), a->nthreads, conv_dw_range, &w);
    free(X);
    if (w.oom) return GM_ENOMEM;
    return w.stop ? GM_EINTR : GM_OK;
}
