/* moe_lik.c (cpu): GAUSSIAN_MOE_EVAL, the fused likelihood of a Gaussian mixture of experts
 * with a 1-D covariate (core/moe_lik.c checks the operands). Per point: gate logits z_i and their
 * parameter derivatives, log g = z - logsumexp(z) over the (selected) experts, expert log
 * densities, log p = logsumexp_i(log g_i + log N_i), responsibilities r_i; the score is
 * dlogp/dz_j = r_j - g_j for the gate and r_i dlogN_i for expert i. Points are summed in fixed
 * chunks whose partial sums are added in order, so the bits do not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "vmath.h"

/* Lane-wise max, min with 0 and masking (v4d and its exp, log, tanh and splat are vmath.h's). */
static inline v4d v4_max(v4d a, v4d b) {
    for (int i = 0; i < 4; i++) a[i] = a[i] > b[i] ? a[i] : b[i];
    return a;
}
static inline v4d v4_min0(v4d a) {
    for (int i = 0; i < 4; i++) a[i] = a[i] < 0 ? a[i] : 0;
    return a;
}
/* a where the mask is 1, -inf where it is 0 */
static inline v4d v4_masked(v4d a, v4d m) {
    for (int i = 0; i < 4; i++) a[i] = m[i] != 0 ? a[i] : -INFINITY;
    return a;
}

/* The top-K mask of each lane: 1 for the K largest logits (ties to the lower index), else 0. */
static void topk_mask(const v4d *z, int64_t k, int K, v4d *m) {
    for (int q = 0; q < 4; q++) {
        for (int64_t i = 0; i < k; i++) m[i][q] = 0;
        for (int c = 0; c < K; c++) {
            int64_t best = -1;
            for (int64_t i = 0; i < k; i++)
                if (m[i][q] == 0 && (best < 0 || z[i][q] > z[best][q])) best = i;
            m[best][q] = 1;
        }
    }
}

#define MAXK GM_MOE_MAX_K
#define MAXP (5 * MAXK + 1)
#define CHUNK 2048 /* points per partial sum (and per interrupt poll) */
#define LOG_2PI 1.8378770664093453

typedef struct {
    const double *x, *y, *th;
    int64_t n, P, k, nchunk, width; /* width: doubles per partial (1 + P + P (P + 1) / 2) */
    int gate, K, what;
    double *part;
    int stop;
} ev_job;

/* The partial sums of unit u = (row, chunk): -sum log p, -sum score, sum score score^T (upper
 * triangle, row-major), four points per step in f64 vector lanes (libmvec's exp, log, tanh); a
 * short last group is padded with x = y = 0 and weight 0. The top-K gate's selection is a 0/1 mask
 * per expert and lane: unselected experts get weight and score 0 (their exponents are clamped at 0
 * before the mask, so nothing overflows). The lanes' sums are added in a fixed order at the end,
 * so the result does not depend on the thread count. */
static void ev_unit(const ev_job *e, int64_t u) {
    int64_t r = u / e->nchunk, ch = u % e->nchunk, k = e->k, P = e->P;
    const double *t = e->th + r * P, *b0 = t, *b1 = t + k, *ea = t + 2 * k, *eb = t + 3 * k,
                 *lnu = t + 4 * k;
    double *acc = e->part + u * e->width;
    double itau = exp(-t[5 * k]), inu[MAXK];
    for (int64_t i = 0; i < k; i++) inu[i] = exp(-lnu[i]);
    int gate = e->gate;
    int64_t lo = ch * CHUNK, hi = lo + CHUNK < e->n ? lo + CHUNK : e->n, W = e->width;
    v4d sum[1 + MAXP + MAXP * (MAXP + 1) / 2];
    for (int64_t w = 0; w < W; w++) sum[w] = v4_splat(0);
    v4d *gs = sum + 1, *op = sum + 1 + P;
    const v4d one = v4_splat(1), half = v4_splat(0.5);
    for (int64_t j = lo; j < hi; j += 4) {
        v4d x, y, valid;
        for (int q = 0; q < 4; q++) {
            bool in = j + q < hi;
            x[q] = in ? e->x[j + q] : 0, y[q] = in ? e->y[j + q] : 0, valid[q] = in;
        }
        v4d z[MAXK], dz1[MAXK], dzt[MAXK], ez[MAXK], el[MAXK], l[MAXK], d[MAXK], m[MAXK];
        double dz0 = gate == GM_MOE_TEMPERATURE || gate == GM_MOE_TOPK ? itau : 1;
        for (int64_t i = 0; i < k; i++) {
            v4d s = b1[i] * x;
            if (gate == GM_MOE_SOFTMAX) {
                z[i] = b0[i] + s, dz1[i] = x, dzt[i] = v4_splat(0);
            } else if (gate == GM_MOE_TEMPERATURE || gate == GM_MOE_TOPK) {
                z[i] = (b0[i] + s) * itau, dz1[i] = x * itau, dzt[i] = -z[i];
            } else {
                v4d h, dh;
                if (gate == GM_MOE_TANH) h = v4_tanh(s), dh = one - h * h;
                else h = one / (one + v4_exp(-s)), dh = h * (one - h);
                z[i] = h * itau + b0[i], dz1[i] = dh * x * itau, dzt[i] = -h * itau;
            }
        }
        for (int64_t i = 0; i < k; i++) m[i] = v4_splat(1);
        if (gate == GM_MOE_TOPK) topk_mask(z, k, e->K, m);
        v4d zm = v4_splat(-INFINITY), zs = v4_splat(0), lm = v4_splat(-INFINITY), ls = v4_splat(0);
        for (int64_t i = 0; i < k; i++) zm = v4_max(zm, v4_masked(z[i], m[i]));
        for (int64_t i = 0; i < k; i++) ez[i] = v4_exp(v4_min0(z[i] - zm)) * m[i], zs += ez[i];
        v4d lse_z = zm + v4_log(zs);
        for (int64_t i = 0; i < k; i++) {
            d[i] = y - ea[i] * x - eb[i];
            l[i] = z[i] - lse_z - half * (LOG_2PI + lnu[i] + d[i] * d[i] * inu[i]);
        }
        for (int64_t i = 0; i < k; i++) lm = v4_max(lm, v4_masked(l[i], m[i]));
        for (int64_t i = 0; i < k; i++) el[i] = v4_exp(v4_min0(l[i] - lm)) * m[i], ls += el[i];
        sum[0] -= (lm + v4_log(ls)) * valid;
        if (e->what < 2) continue;
        v4d sc[MAXP], ils = valid / ls, izs = valid / zs, st = v4_splat(0);
        for (int64_t i = 0; i < k; i++) {
            v4d ri = el[i] * ils, w = ri - ez[i] * izs, dn = d[i] * inu[i];
            sc[i] = w * dz0;
            sc[k + i] = w * dz1[i];
            st += w * dzt[i];
            sc[2 * k + i] = ri * dn * x;
            sc[3 * k + i] = ri * dn;
            sc[4 * k + i] = half * ri * (d[i] * dn - one);
        }
        sc[5 * k] = st;
        for (int64_t p = 0; p < P; p++) gs[p] -= sc[p];
        if (e->what < 3) continue;
        v4d *o = op;
        for (int64_t p = 0; p < P; p++)
            for (int64_t q = p; q < P; q++) *o++ += sc[p] * sc[q];
    }
    for (int64_t w = 0; w < W; w++) acc[w] = v4_hsum(sum[w]);
}

static void ev_range(void *ctx, int64_t lo, int64_t hi) {
    ev_job *e = ctx;
    for (int64_t u = lo; u < hi; u++) {
        if (gm_halted(&e->stop)) return;
        ev_unit(e, u);
    }
}

/* in: x [n], y [n], theta [R, P]; out: nll [R], grad [R, P], opg [R, P, P] (all contiguous
 * f64); k.moe_lik: gate, K, what (1 value, 2 + gradient, 3 + outer products). */
gm_status gm_cpu_GAUSSIAN_MOE_EVAL(gm_ctx *c, const gm_kargs *a) {
    ev_job e = {.x = a->in[0].data, .y = a->in[1].data, .th = a->in[2].data,
                .n = gm_kview_numel(&a->in[0]), .P = a->in[2].shape[1], .gate = a->k.moe_lik.gate,
                .K = a->k.moe_lik.K, .what = a->k.moe_lik.what};
    int64_t R = a->in[2].shape[0];
    e.k = (e.P - 1) / 5;
    for (int64_t j = 0; j < e.n; j++)
        if (!isfinite(e.x[j]) || !isfinite(e.y[j]))
            return gm_errf(c, GM_EARG, "gaussian_moe_eval: data point %lld (x %g, y %g) is not "
                           "finite", (long long)j, e.x[j], e.y[j]);
    e.nchunk = (e.n + CHUNK - 1) / CHUNK;
    e.width = 1 + e.P + e.P * (e.P + 1) / 2;
    int64_t units = R * e.nchunk;
    e.part = malloc((size_t)(units * e.width) * sizeof *e.part);
    if (!e.part)
        return gm_errf(c, GM_ENOMEM, "gaussian_moe_eval: out of memory for %lld partial sums",
                       (long long)units);
    gm_parallel_for(units, 1, a->nthreads, ev_range, &e);
    if (e.stop) {
        free(e.part);
        return gm_errf(c, GM_EINTR, "gaussian_moe_eval: interrupted");
    }
    double *nll = a->out[0].data, *grad = a->out[1].data, *opg = a->out[2].data;
    int64_t P = e.P;
    for (int64_t r = 0; r < R; r++) {
        double tot[1 + MAXP + MAXP * (MAXP + 1) / 2];
        memset(tot, 0, (size_t)e.width * sizeof *tot);
        for (int64_t ch = 0; ch < e.nchunk; ch++) {
            const double *p = e.part + (r * e.nchunk + ch) * e.width;
            for (int64_t w = 0; w < e.width; w++) tot[w] += p[w];
        }
        double in = 1.0 / (double)e.n;
        nll[r] = tot[0] * in;
        for (int64_t p = 0; p < P; p++) grad[r * P + p] = tot[1 + p] * in;
        const double *o = tot + 1 + P;
        double *m = opg + r * P * P;
        for (int64_t p = 0; p < P; p++)
            for (int64_t q = p; q < P; q++) m[p * P + q] = m[q * P + p] = *o++ * in;
    }
    free(e.part);
    return GM_OK;
}
