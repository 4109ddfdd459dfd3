/* gla.c (cpu): the recurrent form of gated linear attention. One head at a time (heads split
 * over threads, each head by one thread in time order, so the bits do not depend on the thread
 * count), in f64 on copies of the head's q, k, v, log-gate: the state S [Dk, Dv] is decayed
 * row-wise by exp(g_t), gets k_t^T v_t, and o_t = scale q_t S_t. The backward replays the
 * forward keeping every S_t (T Dk Dv f64 per thread), then runs the state gradient backwards. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "parallel.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

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

typedef struct {
    const gm_kargs *a;
    int64_t T, Dk, Dv;
    bool bwd;
    double scale;
    int stop, oom;
} gla_work;

/* S_t from S_{t-1} (may alias) and step t: S = alpha S_prev + k^T v, alpha = exp(g) (passed as
 * alpha: each head's exp(g) is taken once, right after loading). */
static void step_state(double *S, const double *Sp, const double *alpha, const double *k, const double *v,
                       int64_t Dk, int64_t Dv) {
    for (int64_t i = 0; i < Dk; i++) {
        double al = alpha[i], ki = k[i];
        double *row = S + i * Dv;
        if (Sp) {
            const double *prow = Sp + i * Dv;
            for (int64_t j = 0; j < Dv; j++) row[j] = al * prow[j] + ki * v[j];
        } else {
            for (int64_t j = 0; j < Dv; j++) row[j] = 0 + ki * v[j];
        }
    }
}

/* out[j] = scale sum_i q[i] S[i, j] */
static void readout(double *out, const double *q, const double *S, int64_t Dk, int64_t Dv, double scale) {
    memset(out, 0, (size_t)Dv * sizeof(double));
    for (int64_t i = 0; i < Dk; i++) {
        double qi = scale * q[i];
        const double *row = S + i * Dv;
        for (int64_t j = 0; j < Dv; j++) out[j] += qi * row[j];
    }
}

static void gla_range(void *ctx, int64_t lo, int64_t hi) {
    gla_work *w = ctx;
    const gm_kargs *a = w->a;
    int64_t T = w->T, Dk = w->Dk, Dv = w->Dv, DS = Dk * Dv;
    size_t n = (size_t)(3 * T * Dk + 2 * T * Dv + (w->bwd ? (T + 1) * DS + DS + 3 * T * Dk + T * Dv : DS));
    double *buf = malloc((n ? n : 1) * sizeof(double));
    if (!buf) {
        __atomic_store_n(&w->oom, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&w->stop, 1, __ATOMIC_RELAXED);
        return;
    }
    double *Q = buf, *K = Q + T * Dk, *G = K + T * Dk, *V = G + T * Dk, *O = V + T * Dv, *St = O + T * Dv;
    for (int64_t h = lo; h < hi; h++) {
        if (gm_halted(&w->stop)) break;
        load(Q, &a->in[0], h * T * Dk, T * Dk);
        load(K, &a->in[1], h * T * Dk, T * Dk);
        load(V, &a->in[2], h * T * Dv, T * Dv);
        load(G, &a->in[3], h * T * Dk, T * Dk);
        for (int64_t i = 0; i < T * Dk; i++) G[i] = exp(G[i]); /* G holds the decays alpha from here */
        if (!w->bwd) {
            for (int64_t t = 0; t < T; t++) {
                step_state(St, t ? St : NULL, G + t * Dk, K + t * Dk, V + t * Dv, Dk, Dv);
                readout(O + t * Dv, Q + t * Dk, St, Dk, Dv, w->scale);
            }
            store(&a->out[0], h * T * Dv, O, T * Dv);
            continue;
        }
        /* St[t + 1] = S_t (St[0] = 0); dS carries d loss / d S_t back in time. */
        double *dS = St + (T + 1) * DS, *dQ = dS + DS, *dK = dQ + T * Dk, *dG = dK + T * Dk, *dV = dG + T * Dk;
        double *dO = O;
        load(dO, &a->in[4], h * T * Dv, T * Dv);
        memset(St, 0, (size_t)DS * sizeof(double));
        for (int64_t t = 0; t < T; t++)
            step_state(St + (t + 1) * DS, St + t * DS, G + t * Dk, K + t * Dk, V + t * Dv, Dk, Dv);
        memset(dS, 0, (size_t)DS * sizeof(double));
        for (int64_t t = T - 1; t >= 0; t--) {
            const double *S = St + (t + 1) * DS, *Sp = St + t * DS, *q = Q + t * Dk, *g = dO + t * Dv;
            const double *k = K + t * Dk, *v = V + t * Dv;
            for (int64_t i = 0; i < Dk; i++) { /* dS += scale q^T dO; dq = scale S dO */
                double *row = dS + i * Dv, sq = w->scale * q[i], acc = 0;
                const double *srow = S + i * Dv;
                for (int64_t j = 0; j < Dv; j++) {
                    row[j] += sq * g[j];
                    acc += srow[j] * g[j];
                }
                dQ[t * Dk + i] = w->scale * acc;
            }
            memset(dV + t * Dv, 0, (size_t)Dv * sizeof(double));
            for (int64_t i = 0; i < Dk; i++) { /* dk = dS v; dv = dS^T k; dg = alpha sum_j dS S_prev */
                const double *row = dS + i * Dv, *prow = Sp + i * Dv;
                double ak = 0, ag = 0, al = G[t * Dk + i];
                double *dv = dV + t * Dv;
                for (int64_t j = 0; j < Dv; j++) {
                    ak += row[j] * v[j];
                    ag += row[j] * prow[j];
                    dv[j] += row[j] * k[i];
                }
                dK[t * Dk + i] = ak;
                dG[t * Dk + i] = al * ag;
            }
            for (int64_t i = 0; i < Dk; i++) { /* to S_{t-1}: through the decay */
                double al = G[t * Dk + i];
                double *row = dS + i * Dv;
                for (int64_t j = 0; j < Dv; j++) row[j] *= al;
            }
        }
        store(&a->out[0], h * T * Dk, dQ, T * Dk);
        store(&a->out[1], h * T * Dk, dK, T * Dk);
        store(&a->out[2], h * T * Dv, dV, T * Dv);
        store(&a->out[3], h * T * Dk, dG, T * Dk);
    }
    free(buf);
}

static gm_status gla_run(const gm_kargs *a, bool bwd) {
    const gm_kview *q = &a->in[0], *v = &a->in[2];
    gla_work w = {.a = a, .T = q->shape[2], .Dk = q->shape[3], .Dv = v->shape[3], .bwd = bwd, .scale = a->d[0]};
    gm_parallel_for(q->shape[0] * q->shape[1], gm_min_units(w.T * w.Dk * w.Dv + 1), a->nthreads, gla_range, &w);
    if (w.oom) return GM_ENOMEM;
    return w.stop ? GM_EINTR : GM_OK;
}

gm_status gm_cpu_GLA(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    return gla_run(a, false);
}

gm_status gm_cpu_GLA_BWD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    return gla_run(a, true);
}
