/* attention.c (cpu): fused scaled dot-product attention and the depthwise causal convolution.
 * sdpa works one head at a time: the head's q, k, v are copied into f64 scratch (so one code
 * path serves f32 and f64 and f32 accumulates in f64), then each block of 64 query rows computes
 * its scores, softmax and output with gemms; the backward recomputes each block's probabilities
 * from the saved log-sum-exp (FlashAttention's recomputation, blocked over queries only). Heads
 * are split over threads; every head's result is computed by one thread in a fixed order, so the
 * bits do not depend on the thread count. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "parallel.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

/* n values of a contiguous f32/f64 buffer (element offset off) into dst as f64. */
static void load(double *dst, const gm_kview *v, int64_t off, int64_t n) {
    if (v->dtype == GM_F64) {
        memcpy(dst, (const double *)v->data + off, (size_t)n * sizeof(double));
    } else {
        const float *s = (const float *)v->data + off;
        for (int64_t i = 0; i < n; i++) dst[i] = s[i];
    }
}

static void store(const gm_kview *v, int64_t off, const double *src, int64_t n) {
    if (v->dtype == GM_F64) {
        memcpy((double *)v->data + off, src, (size_t)n * sizeof(double));
    } else {
        float *d = (float *)v->data + off;
        for (int64_t i = 0; i < n; i++) d[i] = (float)src[i];
    }
}

static inline double dot(const double *x, const double *y, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

/* ---- sdpa ----------------------------------------------------------------------------------- */
/* Query rows go in blocks of BR: one block's scores [BR, S] (and, in the backward, their
 * gradient) are the only part of the T x S matrix in memory, per thread. The products are f64
 * gemms (OpenBLAS held to one thread inside the head loop, as expert_mm does). */
#define BR 64

typedef struct {
    const gm_kargs *a;
    int64_t T, S, Dh, Dv;
    bool causal, bwd, has_glse;
    double scale;
    int stop, oom;
} sdpa_work;

static inline int ld(int64_t n) { return n > 0 ? (int)n : 1; }

/* Scores of query rows [t0, t0+br) against keys [0, ns), masked, turned into probabilities:
 * forward (lse == NULL): exp(s - rowmax) / rowsum, the row's log-sum-exp into Lout;
 * backward: exp(s - lse_t). P is [br, ns] row-major. */
static void block_probs(const sdpa_work *w, const double *Q, const double *K, int64_t t0, int64_t br, int64_t ns,
                        double *P, const double *lse, double *Lout) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)br, (int)ns, (int)w->Dh, w->scale, Q + t0 * w->Dh,
                ld(w->Dh), K, ld(w->Dh), 0.0, P, ld(ns));
    for (int64_t r = 0; r < br; r++) {
        double *p = P + r * ns;
        int64_t t = t0 + r, nv = w->causal ? (t + 1 < ns ? t + 1 : ns) : ns;
        for (int64_t j = nv; j < ns; j++) p[j] = 0;
        if (lse) {
            for (int64_t j = 0; j < nv; j++) p[j] = exp(p[j] - lse[t]);
            continue;
        }
        double m = -INFINITY, l = 0;
        for (int64_t j = 0; j < nv; j++) m = p[j] > m ? p[j] : m;
        for (int64_t j = 0; j < nv; j++) l += (p[j] = exp(p[j] - m));
        double inv = 1.0 / l;
        for (int64_t j = 0; j < nv; j++) p[j] *= inv;
        Lout[t] = m + log(l);
    }
}

static void sdpa_range(void *ctx, int64_t lo, int64_t hi) {
    sdpa_work *w = ctx;
    const gm_kargs *a = w->a;
    int64_t T = w->T, S = w->S, Dh = w->Dh, Dv = w->Dv;
    int64_t br0 = T < BR ? T : BR;
    /* Scratch of one head: Q K V, lse, one block of probabilities [BR, S] (+ its gradient, O, dO,
     * glse, dQ, dK, dV for the backward); the forward writes O rows into the dQ-sized slot. */
    size_t n = (size_t)(T * Dh + S * Dh + S * Dv + T + br0 * S + T * Dv);
    if (w->bwd) n += (size_t)(br0 * S + T * Dv + T + T * Dh + S * Dh + S * Dv);
    double *buf = malloc((n ? n : 1) * sizeof(double));
    if (!buf) {
        __atomic_store_n(&w->oom, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&w->stop, 1, __ATOMIC_RELAXED);
        return;
    }
    double *Q = buf, *K = Q + T * Dh, *V = K + S * Dh, *L = V + S * Dv, *P = L + T, *O = P + br0 * S;
    double *dP = O + T * Dv, *dO = dP + br0 * S, *G = dO + T * Dv, *dQ = G + T, *dK = dQ + T * Dh, *dV = dK + S * Dh;
    for (int64_t h = lo; h < hi; h++) {
        if (gm_halted(&w->stop)) break;
        load(Q, &a->in[0], h * T * Dh, T * Dh);
        load(K, &a->in[1], h * S * Dh, S * Dh);
        load(V, &a->in[2], h * S * Dv, S * Dv);
        if (!w->bwd) {
            for (int64_t t0 = 0; t0 < T; t0 += BR) {
                int64_t br = T - t0 < BR ? T - t0 : BR, ns = w->causal ? (t0 + br < S ? t0 + br : S) : S;
                block_probs(w, Q, K, t0, br, ns, P, NULL, L);
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)br, (int)Dv, (int)ns, 1.0, P, ld(ns), V,
                            ld(Dv), 0.0, O + t0 * Dv, ld(Dv));
            }
            store(&a->out[0], h * T * Dv, O, T * Dv);
            store(&a->out[1], h * T, L, T);
            continue;
        }
        /* Backward per block: dP = dO V^T; dS = scale P (dP - D), D_t = dO_t . O_t - glse_t;
         * dQ = dS K; dK += dS^T Q; dV += P^T dO. */
        load(O, &a->in[3], h * T * Dv, T * Dv);
        load(L, &a->in[4], h * T, T);
        load(dO, &a->in[5], h * T * Dv, T * Dv);
        if (w->has_glse) load(G, &a->in[6], h * T, T);
        else memset(G, 0, (size_t)T * sizeof(double));
        memset(dK, 0, (size_t)(S * Dh + S * Dv) * sizeof(double));
        for (int64_t t0 = 0; t0 < T; t0 += BR) {
            int64_t br = T - t0 < BR ? T - t0 : BR, ns = w->causal ? (t0 + br < S ? t0 + br : S) : S;
            block_probs(w, Q, K, t0, br, ns, P, L, NULL);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)br, (int)ns, (int)Dv, 1.0, dO + t0 * Dv, ld(Dv),
                        V, ld(Dv), 0.0, dP, ld(ns));
            for (int64_t r = 0; r < br; r++) {
                int64_t t = t0 + r;
                double D = dot(dO + t * Dv, O + t * Dv, Dv) - G[t];
                double *p = P + r * ns, *dp = dP + r * ns;
                for (int64_t j = 0; j < ns; j++) dp[j] = w->scale * p[j] * (dp[j] - D);
            }
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)br, (int)Dh, (int)ns, 1.0, dP, ld(ns), K,
                        ld(Dh), 0.0, dQ + t0 * Dh, ld(Dh));
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ns, (int)Dh, (int)br, 1.0, dP, ld(ns),
                        Q + t0 * Dh, ld(Dh), 1.0, dK, ld(Dh));
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ns, (int)Dv, (int)br, 1.0, P, ld(ns),
                        dO + t0 * Dv, ld(Dv), 1.0, dV, ld(Dv));
        }
        store(&a->out[0], h * T * Dh, dQ, T * Dh);
        store(&a->out[1], h * S * Dh, dK, S * Dh);
        store(&a->out[2], h * S * Dv, dV, S * Dv);
    }
    free(buf);
}

static gm_status sdpa_run(const gm_kargs *a, bool bwd) {
    const gm_kview *q = &a->in[0], *k = &a->in[1], *v = &a->in[2];
    sdpa_work w = {.a = a, .T = q->shape[2], .S = k->shape[2], .Dh = q->shape[3], .Dv = v->shape[3],
                   .causal = a->i[0] != 0, .bwd = bwd, .has_glse = bwd && a->n_in > 6, .scale = a->d[0]};
    int64_t heads = q->shape[0] * q->shape[1];
    if (heads == 0 || w.T == 0) return GM_OK;
    int blas = openblas_get_num_threads();
    openblas_set_num_threads(1);
    gm_parallel_for(heads, gm_min_units(w.T * w.S * (w.Dh + w.Dv) / 8 + 1), a->nthreads, sdpa_range, &w);
    openblas_set_num_threads(blas);
    if (w.oom) return GM_ENOMEM;
    return w.stop ? GM_EINTR : GM_OK;
}

gm_status gm_cpu_SDPA(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    return sdpa_run(a, false);
}

gm_status gm_cpu_SDPA_BWD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    return sdpa_run(a, true);
}

/* ---- causal_conv1d -------------------------------------------------------------------------- */
/* x [B,T,D] and w [K,D]; sequences are split over threads (the weight gradient over lags), each
 * unit computed in f64 on copies (extra memory: one sequence of x and dy, and w, per thread;
 * all of x and dy once for the weight gradient). */

typedef struct {
    const gm_kargs *a;
    int64_t T, D, K;
    const double *X, *W, *DY; /* f64 copies (weight gradient only) */
    int stop, oom;
} conv_work;

static void conv_fwd_range(void *ctx, int64_t lo, int64_t hi) {
    conv_work *w = ctx;
    int64_t T = w->T, D = w->D, K = w->K;
    double *buf = malloc((size_t)(2 * T * D + K * D + 1) * sizeof(double));
    if (!buf) {
        __atomic_store_n(&w->oom, 1, __ATOMIC_RELAXED);
        return;
    }
    double *x = buf, *y = x + T * D, *wt = y + T * D;
    load(wt, &w->a->in[1], 0, K * D);
    for (int64_t b = lo; b < hi; b++) {
        if (gm_halted(&w->stop)) break;
        load(x, &w->a->in[0], b * T * D, T * D);
        memset(y, 0, (size_t)(T * D) * sizeof(double));
        for (int64_t t = 0; t < T; t++)
            for (int64_t j = 0; j < K && j <= t; j++) {
                const double *xs = x + (t - j) * D, *wj = wt + j * D;
                double *yt = y + t * D;
                for (int64_t d = 0; d < D; d++) yt[d] += wj[d] * xs[d];
            }
        store(&w->a->out[0], b * T * D, y, T * D);
    }
    free(buf);
}

/* dx[b,s,d] = sum_j w[j,d] dy[b,s+j,d] */
static void conv_dx_range(void *ctx, int64_t lo, int64_t hi) {
    conv_work *w = ctx;
    int64_t T = w->T, D = w->D, K = w->K;
    double *buf = malloc((size_t)(2 * T * D + K * D + 1) * sizeof(double));
    if (!buf) {
        __atomic_store_n(&w->oom, 1, __ATOMIC_RELAXED);
        return;
    }
    double *g = buf, *dx = g + T * D, *wt = dx + T * D;
    load(wt, &w->a->in[1], 0, K * D);
    for (int64_t b = lo; b < hi; b++) {
        if (gm_halted(&w->stop)) break;
        load(g, &w->a->in[2], b * T * D, T * D);
        memset(dx, 0, (size_t)(T * D) * sizeof(double));
        for (int64_t s = 0; s < T; s++)
            for (int64_t j = 0; j < K && s + j < T; j++) {
                const double *gs = g + (s + j) * D, *wj = wt + j * D;
                double *o = dx + s * D;
                for (int64_t d = 0; d < D; d++) o[d] += wj[d] * gs[d];
            }
        store(&w->a->out[0], b * T * D, dx, T * D);
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
        store(&w->a->out[1], j * D, acc, D);
    }
    free(acc);
}

gm_status gm_cpu_CAUSAL_CONV1D(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    conv_work w = {.a = a, .T = a->in[0].shape[1], .D = a->in[0].shape[2], .K = a->in[1].shape[0]};
    int64_t kk = w.K < w.T ? w.K : w.T;
    gm_parallel_for(a->in[0].shape[0], gm_min_units(w.T * w.D * kk + 1), a->nthreads, conv_fwd_range, &w);
    if (w.oom) return GM_ENOMEM;
    return w.stop ? GM_EINTR : GM_OK;
}

gm_status gm_cpu_CAUSAL_CONV1D_BWD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    conv_work w = {.a = a, .T = a->in[0].shape[1], .D = a->in[0].shape[2], .K = a->in[1].shape[0]};
    int64_t B = a->in[0].shape[0], kk = w.K < w.T ? w.K : w.T, n = B * w.T * w.D;
    gm_parallel_for(B, gm_min_units(w.T * w.D * kk + 1), a->nthreads, conv_dx_range, &w);
    if (w.oom) return GM_ENOMEM;
    if (w.stop) return GM_EINTR;
    /* Lags >= T see no data: their gradient is 0. */
    double zero = 0;
    for (int64_t j = kk; j < w.K; j++)
        for (int64_t d = 0; d < w.D; d++) store(&a->out[1], j * w.D + d, &zero, 1);
    double *X = malloc((size_t)(2 * n + 1) * sizeof(double));
    if (!X) return GM_ENOMEM;
    load(X, &a->in[0], 0, n);
    load(X + n, &a->in[2], 0, n);
    w.X = X;
    w.DY = X + n;
    gm_parallel_for(kk, gm_min_units(B * w.T * w.D + 1), a->nthreads, conv_dw_range, &w);
    free(X);
    if (w.oom) return GM_ENOMEM;
    return w.stop ? GM_EINTR : GM_OK;
}
