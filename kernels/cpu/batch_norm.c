/* batch_norm.c (cpu): batch normalisation in training mode over x [N, C, S] (S = the product of
 * the trailing dims). One channel is one unit of work: its N blocks of S contiguous elements are
 * summed in double (the mean, then the squares of x - mean), so the statistics and everything
 * computed from them are the same for any thread count. The backward needs two passes per
 * channel as well: the sums of g w and g w xhat, then dx. */
#include <math.h>

#include "backend.h"
#include "parallel.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

typedef struct {
    const gm_kargs *a;
    bool f64;
    int64_t N, C, S;
    double eps;
    int mask, given; /* backward: outputs wanted (1 dx, 2 dw, 4 db); gradients reaching mean (1), invstd (2) */
    int stop;
} bn_work;

static inline double ld(const void *p, bool f64, int64_t i) { return f64 ? ((const double *)p)[i] : ((const float *)p)[i]; }
static inline void st(void *p, bool f64, int64_t i, double v) {
    if (f64) ((double *)p)[i] = v;
    else ((float *)p)[i] = (float)v;
}

/* sum over channel c of f(x) for f = x - m (sq false) or (x - m)^2 (sq true). */
static double channel_sum(const bn_work *w, const void *x, int64_t c, double m, bool sq) {
    double total = 0;
    for (int64_t n = 0; n < w->N; n++) {
        int64_t o = (n * w->C + c) * w->S;
        double s = 0;
        if (w->f64) {
            const double *p = (const double *)x + o;
            for (int64_t i = 0; i < w->S; i++) s += sq ? (p[i] - m) * (p[i] - m) : p[i] - m;
        } else {
            const float *p = (const float *)x + o;
            for (int64_t i = 0; i < w->S; i++) s += sq ? ((double)p[i] - m) * ((double)p[i] - m) : (double)p[i] - m;
        }
        total += s;
    }
    return total;
}

static void fwd_channels(void *ctx, int64_t c0, int64_t c1) {
    bn_work *w = ctx;
    const gm_kargs *a = w->a;
    double M = (double)(w->N * w->S);
    for (int64_t c = c0; c < c1; c++) {
        if (gm_halted(&w->stop)) return;
        double m = channel_sum(w, a->in[0].data, c, 0, false) / M;
        double inv = 1 / sqrt(channel_sum(w, a->in[0].data, c, m, true) / M + w->eps);
        double scale = inv * ld(a->in[1].data, w->f64, c), shift = ld(a->in[2].data, w->f64, c) - m * scale;
        for (int64_t n = 0; n < w->N; n++) {
            int64_t o = (n * w->C + c) * w->S;
            if (w->f64) {
                const double *x = (const double *)a->in[0].data + o;
                double *y = (double *)a->out[0].data + o;
                for (int64_t i = 0; i < w->S; i++) y[i] = x[i] * scale + shift;
            } else {
                const float *x = (const float *)a->in[0].data + o;
                float *y = (float *)a->out[0].data + o;
                float fs = (float)scale, fb = (float)shift;
                for (int64_t i = 0; i < w->S; i++) y[i] = x[i] * fs + fb;
            }
        }
        st(a->out[1].data, w->f64, c, m);
        st(a->out[2].data, w->f64, c, inv);
    }
}

gm_status gm_cpu_BATCH_NORM(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    bn_work w = {.a = a, .f64 = a->in[0].dtype == GM_F64, .N = a->i[0], .C = a->i[1], .S = a->i[2], .eps = a->d[0]};
    gm_parallel_for(w.C, gm_min_units(w.N * w.S), a->nthreads, fwd_channels, &w);
    return w.stop ? GM_EINTR : GM_OK;
}

/* in: x, g, w, mean, invstd, gmean, ginvstd. With xhat = (x - m) inv and gh = g w:
 *   dx = inv (gh - mean(gh) - xhat mean(gh xhat)) + (gmean - ginv inv^2 xhat) / M,
 *   dw = sum g xhat, db = sum g. */
static void bwd_channels(void *ctx, int64_t c0, int64_t c1) {
    bn_work *w = ctx;
    const gm_kargs *a = w->a;
    const void *X = a->in[0].data, *G = a->in[1].data;
    double M = (double)(w->N * w->S);
    int k = 0;
    void *dx = (w->mask & 1) ? a->out[k++].data : NULL;
    void *dw = (w->mask & 2) ? a->out[k++].data : NULL;
    void *db = (w->mask & 4) ? a->out[k++].data : NULL;
    for (int64_t c = c0; c < c1; c++) {
        if (gm_halted(&w->stop)) return;
        double m = ld(a->in[3].data, w->f64, c), inv = ld(a->in[4].data, w->f64, c);
        double sg = 0, sgx = 0; /* sum g, sum g xhat */
        for (int64_t n = 0; n < w->N; n++) {
            int64_t o = (n * w->C + c) * w->S;
            double s1 = 0, s2 = 0;
            for (int64_t i = 0; i < w->S; i++) {
                double gi = ld(G, w->f64, o + i);
                s1 += gi;
                s2 += gi * (ld(X, w->f64, o + i) - m);
            }
            sg += s1;
            sgx += s2 * inv;
        }
        if (dw) st(dw, w->f64, c, sgx);
        if (db) st(db, w->f64, c, sg);
        if (!dx) continue;
        double wc = ld(a->in[2].data, w->f64, c);
        double gm_ = (w->given & 1) ? ld(a->in[5].data, w->f64, c) : 0, gi_ = (w->given & 2) ? ld(a->in[6].data, w->f64, c) : 0;
        /* dx = A g + B xhat + D with the channel constants below */
        double A = inv * wc, B = -inv * wc * sgx / M - gi_ * inv * inv / M, D = -inv * wc * sg / M + gm_ / M;
        for (int64_t n = 0; n < w->N; n++) {
            int64_t o = (n * w->C + c) * w->S;
            if (w->f64) {
                const double *x = (const double *)X + o, *g = (const double *)G + o;
                double *d = (double *)dx + o;
                for (int64_t i = 0; i < w->S; i++) d[i] = A * g[i] + B * (x[i] - m) * inv + D;
            } else {
                const float *x = (const float *)X + o, *g = (const float *)G + o;
                float *d = (float *)dx + o;
                float fa = (float)A, fb = (float)(B * inv), fd = (float)(D - B * inv * m);
                for (int64_t i = 0; i < w->S; i++) d[i] = fa * g[i] + fb * x[i] + fd;
            }
        }
    }
}

gm_status gm_cpu_BATCH_NORM_BWD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    bn_work w = {.a = a, .f64 = a->in[0].dtype == GM_F64, .N = a->i[0], .C = a->i[1], .S = a->i[2],
                 .mask = (int)a->i[3], .given = (int)a->i[4]};
    gm_parallel_for(w.C, gm_min_units(w.N * w.S), a->nthreads, bwd_channels, &w);
    return w.stop ? GM_EINTR : GM_OK;
}
