/* moe_lik.c (cpu): GAUSSIAN_MOE_EVAL, the fused likelihood of a Gaussian mixture of experts
 * with a 1-D covariate (core/moe_lik.c checks the operands). Per point: gate logits z_i and their
 * parameter derivatives, log g = z - logsumexp(z) over the (selected) experts, expert log
 * densities, log p = logsumexp_i(log g_i + log N_i), responsibilities r_i; the score is
 * dlogp/dz_j = r_j - g_j for the gate and r_i dlogN_i for expert i. Points are summed in fixed
 * chunks whose partial sums are added in order, so the bits do not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "parallel.h"
#include "vmath.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

/* 4 f64 lanes: libmvec's 4-lane exp, log and tanh (glibc documents at most 4 ulp) where vmath.h
 * finds libmvec, scalar libm per lane elsewhere. */
typedef double v4d __attribute__((vector_size(32)));
#ifdef GM_LIBMVEC
__m256d _ZGVdN4v_exp(__m256d x);
__m256d _ZGVdN4v_log(__m256d x);
__m256d _ZGVdN4v_tanh(__m256d x);
static inline v4d v4d_exp(v4d x) { return (v4d)_ZGVdN4v_exp((__m256d)x); }
static inline v4d v4d_log(v4d x) { return (v4d)_ZGVdN4v_log((__m256d)x); }
static inline v4d v4d_tanh(v4d x) { return (v4d)_ZGVdN4v_tanh((__m256d)x); }
#else
static inline v4d v4d_exp(v4d x) {
    for (int i = 0; i < 4; i++) x[i] = exp(x[i]);
    return x;
}
static inline v4d v4d_log(v4d x) {
    for (int i = 0; i < 4; i++) x[i] = log(x[i]);
    return x;
}
static inline v4d v4d_tanh(v4d x) {
    for (int i = 0; i < 4; i++) x[i] = tanh(x[i]);
    return x;
}
#endif
static inline v4d v4d_splat(double v) { return (v4d){v, v, v, v}; }
static inline v4d v4d_max(v4d a, v4d b) {
    for (int i = 0; i < 4; i++) a[i] = a[i] > b[i] ? a[i] : b[i];
    return a;
}

#define MAXK 16
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
 * triangle, row-major). This scalar form serves the top-K gate (its selection differs per point);
 * ev_unit4 below is the same math four points at a time for the dense gates. */
static void ev_unit(const ev_job *e, int64_t u) {
    int64_t r = u / e->nchunk, ch = u % e->nchunk, k = e->k, P = e->P;
    const double *t = e->th + r * P, *b0 = t, *b1 = t + k, *ea = t + 2 * k, *eb = t + 3 * k,
                 *lnu = t + 4 * k;
    double *acc = e->part + u * e->width, *gs = acc + 1, *op = acc + 1 + P;
    memset(acc, 0, (size_t)e->width * sizeof *acc);
    double itau = exp(-t[5 * k]), inu[MAXK];
    for (int64_t i = 0; i < k; i++) inu[i] = exp(-lnu[i]);
    bool sm = e->gate == GM_MOE_SOFTMAX, act = e->gate == GM_MOE_TANH || e->gate == GM_MOE_SIGMOID;
    int64_t lo = ch * CHUNK, hi = lo + CHUNK < e->n ? lo + CHUNK : e->n;
    double z[MAXK], dz0[MAXK], dz1[MAXK], dzt[MAXK], l[MAXK], sc[MAXP];
    bool on[MAXK];
    for (int64_t j = lo; j < hi; j++) {
        double x = e->x[j], y = e->y[j];
        for (int64_t i = 0; i < k; i++) {
            double s = b1[i] * x;
            if (sm) {
                z[i] = b0[i] + s, dz0[i] = 1, dz1[i] = x, dzt[i] = 0;
            } else if (act) {
                double h, dh;
                if (e->gate == GM_MOE_TANH) h = tanh(s), dh = 1 - h * h;
                else h = 1 / (1 + exp(-s)), dh = h * (1 - h);
                z[i] = h * itau + b0[i], dz0[i] = 1, dz1[i] = dh * x * itau, dzt[i] = -h * itau;
            } else {
                z[i] = (b0[i] + s) * itau, dz0[i] = itau, dz1[i] = x * itau, dzt[i] = -z[i];
            }
            on[i] = true;
        }
        if (e->gate == GM_MOE_TOPK) { /* keep the K largest, ties to the lower index */
            for (int64_t i = 0; i < k; i++) on[i] = false;
            for (int q = 0; q < e->K; q++) {
                int64_t best = -1;
                for (int64_t i = 0; i < k; i++)
                    if (!on[i] && (best < 0 || z[i] > z[best])) best = i;
                on[best] = true;
            }
        }
        double zm = -INFINITY, zs = 0, lm = -INFINITY, ls = 0;
        for (int64_t i = 0; i < k; i++)
            if (on[i] && z[i] > zm) zm = z[i];
        for (int64_t i = 0; i < k; i++)
            if (on[i]) zs += exp(z[i] - zm);
        double lse_z = zm + log(zs);
        for (int64_t i = 0; i < k; i++) {
            if (!on[i]) continue;
            double d = y - ea[i] * x - eb[i];
            l[i] = z[i] - lse_z - 0.5 * (LOG_2PI + lnu[i] + d * d * inu[i]);
            if (l[i] > lm) lm = l[i];
        }
        for (int64_t i = 0; i < k; i++)
            if (on[i]) ls += exp(l[i] - lm);
        double L = lm + log(ls);
        acc[0] -= L;
        if (e->what < 2) continue;
        for (int64_t p = 0; p < P; p++) sc[p] = 0;
        for (int64_t i = 0; i < k; i++) {
            if (!on[i]) continue;
            double ri = exp(l[i] - L), gi = exp(z[i] - lse_z), w = ri - gi;
            double d = y - ea[i] * x - eb[i], dn = d * inu[i];
            sc[i] = w * dz0[i];
            sc[k + i] = w * dz1[i];
            sc[5 * k] += w * dzt[i];
            sc[2 * k + i] = ri * dn * x;
            sc[3 * k + i] = ri * dn;
            sc[4 * k + i] = 0.5 * ri * (d * dn - 1);
        }
        for (int64_t p = 0; p < P; p++) gs[p] -= sc[p];
        if (e->what < 3) continue;
        double *o = op;
        for (int64_t p = 0; p < P; p++) {
            double sp = sc[p];
            if (sp == 0) { /* a zero score adds nothing to its row */
                o += P - p;
                continue;
            }
            for (int64_t q = p; q < P; q++) *o++ += sp * sc[q];
        }
    }
}

/* ev_unit for the dense gates, four points per step in f64 vector lanes (libmvec's exp, log,
 * tanh); a short last group is padded with x = y = 0 and weight 0. The lanes' sums are added in a
 * fixed order at the end, so the result does not depend on the thread count either. */
static void ev_unit4(const ev_job *e, int64_t u) {
    int64_t r = u / e->nchunk, ch = u % e->nchunk, k = e->k, P = e->P;
    const double *t = e->th + r * P, *b0 = t, *b1 = t + k, *ea = t + 2 * k, *eb = t + 3 * k,
                 *lnu = t + 4 * k;
    double *acc = e->part + u * e->width;
    double itau = exp(-t[5 * k]), inu[MAXK];
    for (int64_t i = 0; i < k; i++) inu[i] = exp(-lnu[i]);
    int gate = e->gate;
    int64_t lo = ch * CHUNK, hi = lo + CHUNK < e->n ? lo + CHUNK : e->n, W = e->width;
    v4d sum[1 + MAXP + MAXP * (MAXP + 1) / 2];
    for (int64_t w = 0; w < W; w++) sum[w] = v4d_splat(0);
    v4d *gs = sum + 1, *op = sum + 1 + P;
    const v4d one = v4d_splat(1), half = v4d_splat(0.5);
    for (int64_t j = lo; j < hi; j += 4) {
        v4d x, y, valid;
        for (int q = 0; q < 4; q++) {
            bool in = j + q < hi;
            x[q] = in ? e->x[j + q] : 0, y[q] = in ? e->y[j + q] : 0, valid[q] = in;
        }
        v4d z[MAXK], dz1[MAXK], dzt[MAXK], ez[MAXK], el[MAXK], l[MAXK], d[MAXK];
        double dz0 = gate == GM_MOE_TEMPERATURE ? itau : 1;
        for (int64_t i = 0; i < k; i++) {
            v4d s = b1[i] * x;
            if (gate == GM_MOE_SOFTMAX) {
                z[i] = b0[i] + s, dz1[i] = x, dzt[i] = v4d_splat(0);
            } else if (gate == GM_MOE_TEMPERATURE) {
                z[i] = (b0[i] + s) * itau, dz1[i] = x * itau, dzt[i] = -z[i];
            } else {
                v4d h, dh;
                if (gate == GM_MOE_TANH) h = v4d_tanh(s), dh = one - h * h;
                else h = one / (one + v4d_exp(-s)), dh = h * (one - h);
                z[i] = h * itau + b0[i], dz1[i] = dh * x * itau, dzt[i] = -h * itau;
            }
        }
        v4d zm = v4d_splat(-INFINITY), zs = v4d_splat(0), lm = v4d_splat(-INFINITY), ls = v4d_splat(0);
        for (int64_t i = 0; i < k; i++) zm = v4d_max(zm, z[i]);
        for (int64_t i = 0; i < k; i++) ez[i] = v4d_exp(z[i] - zm), zs += ez[i];
        v4d lse_z = zm + v4d_log(zs);
        for (int64_t i = 0; i < k; i++) {
            d[i] = y - ea[i] * x - eb[i];
            l[i] = z[i] - lse_z - half * (LOG_2PI + lnu[i] + d[i] * d[i] * inu[i]);
        }
        for (int64_t i = 0; i < k; i++) lm = v4d_max(lm, l[i]);
        for (int64_t i = 0; i < k; i++) el[i] = v4d_exp(l[i] - lm), ls += el[i];
        sum[0] -= (lm + v4d_log(ls)) * valid;
        if (e->what < 2) continue;
        v4d sc[MAXP], ils = valid / ls, izs = valid / zs, st = v4d_splat(0);
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
    for (int64_t w = 0; w < W; w++) acc[w] = (sum[w][0] + sum[w][1]) + (sum[w][2] + sum[w][3]);
}

static void ev_range(void *ctx, int64_t lo, int64_t hi) {
    ev_job *e = ctx;
    for (int64_t u = lo; u < hi; u++) {
        if (gm_halted(&e->stop)) return;
        if (e->gate == GM_MOE_TOPK) ev_unit(e, u);
        else ev_unit4(e, u);
    }
}

/* in: x [n], y [n], theta [R, P]; out: nll [R], grad [R, P], opg [R, P, P] (all contiguous
 * f64); i[0] = gate, i[1] = K, i[2] = what (1 value, 2 + gradient, 3 + outer products). */
gm_status gm_cpu_GAUSSIAN_MOE_EVAL(gm_ctx *c, const gm_kargs *a) {
    ev_job e = {.x = a->in[0].data, .y = a->in[1].data, .th = a->in[2].data,
                .n = gm_kview_numel(&a->in[0]), .P = a->in[2].shape[1], .gate = (int)a->i[0],
                .K = (int)a->i[1], .what = (int)a->i[2]};
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
