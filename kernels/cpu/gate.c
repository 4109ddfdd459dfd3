/* gate.c (cpu): the routing kernels behind topk_gate, topp_gate and threshold_gate: per row a
 * softmax (in double), a stable sort of the experts by probability (descending, so ties go to
 * the lower index), a kept prefix chosen by the rule, and the backward through the softmax
 * and the optional renormalisation. Rows are independent: any thread count gives the same
 * bits. */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { RULE_TOPK = 0, RULE_TOPP = 1, RULE_THRESHOLD = 2 };

/* Stable merge sort of idx[0..n-1] by key descending (tmp: n ints of scratch). Stability
 * keeps equal keys in index order, the tie-break topk uses. */
static void sort_desc(int32_t *idx, int32_t *tmp, int64_t n, const double *key)
{
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi) tmp[o++] = key[idx[j]] > key[idx[i]] ? idx[j++] : idx[i++];
            while (i < mid) tmp[o++] = idx[i++];
            while (j < hi) tmp[o++] = idx[j++];
        }
        memcpy(idx, tmp, (size_t)n * sizeof *idx);
    }
}

/* The k largest first, in order (k passes of a selection sort: cheaper than a full sort for
 * the usual k <= 8). Only a strictly larger key displaces the candidate; the tail stays in
 * index order, so ties go to the lower index as in sort_desc. */
static void partial_desc(int32_t *idx, int64_t k, int64_t n, const double *key)
{
    for (int64_t i = 0; i < k; i++) {
        int64_t best = i;
        for (int64_t j = i + 1; j < n; j++)
            if (key[idx[j]] > key[idx[best]] || (key[idx[j]] == key[idx[best]] && idx[j] < idx[best]))
                best = j;
        int32_t t = idx[best];
        memmove(idx + i + 1, idx + i, (size_t)(best - i) * sizeof *idx);
        idx[i] = t;
    }
}

typedef struct {
    const gm_kargs *a;
    int64_t per; /* rows between interrupt polls */
    int stop;
    int nomem;
} sel_job;

static void select_range(void *ctx, int64_t lo, int64_t hi)
{
    sel_job *j = ctx;
    const gm_kargs *a = j->a;
    const gm_kview *L = &a->in[0], *W = &a->out[0], *I = &a->out[1], *P = &a->out[2],
                   *N = &a->out[3];
    const gm_gate_args *ga = &a->k.gate;
    int64_t E = L->shape[1], Wd = W->shape[1], k = ga->k;
    int rule = ga->rule;
    bool renorm = ga->renormalize;
    double thr = ga->p;
    double *p = malloc((size_t)(E + Wd) * sizeof *p);
    int32_t *idx = malloc((size_t)E * 2 * sizeof *idx);
    if (!p || !idx) {
        free(p);
        free(idx);
        __atomic_store_n(&j->nomem, 1, __ATOMIC_RELAXED);
        return;
    }
    double *w = p + E;
    int32_t *tmp = idx + E;
    for (int64_t r = lo; r < hi; r++) {
        if ((r - lo) % j->per == 0 && gm_halted(&j->stop)) break;
        gm_load_row(p, L, r, E);
        double m = -INFINITY, sum = 0;
        for (int64_t e = 0; e < E; e++)
            if (p[e] > m) m = p[e];
        for (int64_t e = 0; e < E; e++) sum += (p[e] = exp(p[e] - m));
        for (int64_t e = 0; e < E; e++) p[e] /= sum;
        for (int64_t e = 0; e < E; e++) idx[e] = (int32_t)e;
        if (rule == RULE_TOPK && k <= 8) partial_desc(idx, k, E, p);
        else sort_desc(idx, tmp, E, p);
        int64_t n = 0;
        if (rule == RULE_TOPK) {
            n = k;
        } else if (rule == RULE_TOPP) {
            if (thr >= 1) {
                n = E;
            } else {
                double cum = 0;
                while (n < E) {
                    cum += p[idx[n++]];
                    if (cum >= thr) break;
                }
            }
        } else {
            while (n < E && p[idx[n]] > thr) n++;
        }
        if (n < 1) n = 1;
        if (n > E) n = E;
        double s = 0;
        for (int64_t t = 0; t < n; t++) s += p[idx[t]];
        if (!renorm || !(s > 0)) s = 1;
        int32_t *ids = (int32_t *)I->data + r * I->stride[0];
        for (int64_t t = 0; t < Wd; t++) {
            w[t] = t < n ? p[idx[t]] / s : 0;
            ids[t * I->stride[1]] = t < n ? idx[t] : -1;
        }
        gm_store_row(W, r, w, Wd);
        gm_store_row(P, r, p, E);
        ((int32_t *)N->data)[r * N->stride[0]] = (int32_t)n;
    }
    free(p);
    free(idx);
}

gm_status gm_cpu_GATE_SELECT(gm_ctx *c, const gm_kargs *a)
{
    int64_t T = a->in[0].shape[0], E = a->in[0].shape[1];
    sel_job j = {a, gm_min_units(E * 8), 0, 0};
    gm_parallel_for(T, gm_min_units(E * 8), a->nthreads, select_range, &j);
    static const char *const name[] = {"topk_gate", "topp_gate", "threshold_gate"};
    const char *op = a->k.gate.rule >= 0 && a->k.gate.rule <= 2 ? name[a->k.gate.rule] : "gate";
    if (j.nomem) return gm_errf(c, GM_ENOMEM, "%s: out of memory (E=%lld)", op, (long long)E);
    if (j.stop) return gm_errf(c, GM_EINTR, "%s: interrupted", op);
    return GM_OK;
}

/* Backward. With p = softmax(z) over the row, kept set S (ids >= 0), w_j = p_{id_j} / Z
 * (Z = sum of kept p when renormalising, else 1), gw = dL/dw and gp = dL/dp:
 *   q = gp;  q[id_j] += renorm ? (gw_j - sum_l gw_l w_l) / Z : gw_j
 *   dz_e = p_e (q_e - sum_f p_f q_f)                                   (softmax Jacobian) */
static void select_bwd_range(void *ctx, int64_t lo, int64_t hi)
{
    sel_job *j = ctx;
    const gm_kargs *a = j->a;
    const gm_kview *P = &a->in[0], *W = &a->in[1], *I = &a->in[2], *GW = &a->in[3],
                   *GP = &a->in[4], *D = &a->out[0];
    int64_t E = P->shape[1], K = W->shape[1];
    bool renorm = a->k.gate.renormalize, has_gw = a->k.gate.given & 1, has_gp = a->k.gate.given & 2;
    double *buf = malloc((size_t)(2 * E + 2 * K) * sizeof *buf);
    if (!buf) {
        __atomic_store_n(&j->nomem, 1, __ATOMIC_RELAXED);
        return;
    }
    double *p = buf, *q = buf + E, *w = q + E, *g = w + K;
    for (int64_t r = lo; r < hi; r++) {
        if ((r - lo) % j->per == 0 && gm_halted(&j->stop)) break;
        gm_load_row(p, P, r, E);
        if (has_gp) gm_load_row(q, GP, r, E);
        else memset(q, 0, (size_t)E * sizeof *q);
        if (has_gw) {
            gm_load_row(w, W, r, K);
            gm_load_row(g, GW, r, K);
            const int32_t *ids = (const int32_t *)I->data + r * I->stride[0];
            double Z = 0, dot = 0;
            for (int64_t t = 0; t < K; t++) {
                int32_t e = ids[t * I->stride[1]];
                if (e < 0) continue;
                Z += p[e];
                dot += g[t] * w[t];
            }
            if (!renorm || !(Z > 0)) Z = 1, dot = 0;
            for (int64_t t = 0; t < K; t++) {
                int32_t e = ids[t * I->stride[1]];
                if (e >= 0 && e < E) q[e] += (g[t] - dot) / Z;
            }
        }
        double pq = 0;
        for (int64_t e = 0; e < E; e++) pq += p[e] * q[e];
        for (int64_t e = 0; e < E; e++) q[e] = p[e] * (q[e] - pq);
        gm_store_row(D, r, q, E);
    }
    free(buf);
}

gm_status gm_cpu_GATE_SELECT_BWD(gm_ctx *c, const gm_kargs *a)
{
    int64_t T = a->in[0].shape[0], E = a->in[0].shape[1];
    sel_job j = {a, gm_min_units(E * 4), 0, 0};
    gm_parallel_for(T, gm_min_units(E * 4), a->nthreads, select_bwd_range, &j);
    if (j.nomem) return gm_errf(c, GM_ENOMEM, "gate backward: out of memory (E=%lld)", (long long)E);
    if (j.stop) return gm_errf(c, GM_EINTR, "gate backward: interrupted");
    return GM_OK;
}
