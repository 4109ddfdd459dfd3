/* loss.c (cpu): fused cross-entropy (log-sum-exp per row) and mean-squared-error kernels,
 * forward and backward. Reductions over rows/elements run serially in double so a loss is
 * bitwise the same for any thread count; per-row work (softmax rows) runs in parallel. */
#include "backend.h"
#include "parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Prototypes of this backend's kernels (the CPU table is built from the same X-macro). */
#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

#define CHUNK ((int64_t)1 << 16) /* elements between interrupt polls */

/* ---- cross-entropy: logits [N,C] (any strides), target [N] i32 ------------------------- */

/* log(sum_j exp(x_j)) of one row, stable: max + log(sum exp(x - max)), summed in double. */
static double lse_f(const float *x, int64_t s, int64_t C)
{
    float m = -INFINITY;
    for (int64_t j = 0; j < C; j++)
        if (x[j * s] > m) m = x[j * s];
    if (isinf(m)) return m; /* all -inf (or +inf somewhere): the lse is that infinity */
    double sum = 0;
    for (int64_t j = 0; j < C; j++) sum += expf(x[j * s] - m);
    return m + log(sum);
}

static double lse_d(const double *x, int64_t s, int64_t C)
{
    double m = -INFINITY;
    for (int64_t j = 0; j < C; j++)
        if (x[j * s] > m) m = x[j * s];
    if (isinf(m)) return m;
    double sum = 0;
    for (int64_t j = 0; j < C; j++) sum += exp(x[j * s] - m);
    return m + log(sum);
}

/* Every target in [0, C) or equal to ignore_index; *count = the non-ignored ones. */
static gm_status check_targets(gm_ctx *c, const gm_kview *T, int64_t C, int64_t ign,
                               int64_t *count)
{
    const int32_t *t = T->data;
    int64_t N = T->shape[0], n = 0;
    for (int64_t r = 0; r < N; r++) {
        int64_t k = t[r * T->stride[0]];
        if (k == ign) continue;
        if (k < 0 || k >= C)
            return gm_errf(c, GM_EINDEX,
                           "cross_entropy: target %lld (at row %lld) out of range for %lld "
                           "classes (ignore_index %lld)",
                           (long long)k, (long long)r, (long long)C, (long long)ign);
        n++;
    }
    *count = n;
    return GM_OK;
}

/* Loss of row r (0 when ignored). */
static double ce_row(const gm_kview *L, const gm_kview *T, int64_t r, int64_t ign)
{
    int64_t k = ((const int32_t *)T->data)[r * T->stride[0]], C = L->shape[1], s = L->stride[1];
    if (k == ign) return 0;
    if (L->dtype == GM_F32) {
        const float *x = (const float *)L->data + r * L->stride[0];
        return lse_f(x, s, C) - x[k * s];
    }
    const double *x = (const double *)L->data + r * L->stride[0];
    return lse_d(x, s, C) - x[k * s];
}

/* Rows of a cross-entropy kernel; per = rows between interrupt polls. */
typedef struct {
    const gm_kargs *a;
    double *row;  /* forward with a reduction: per-row losses, summed serially afterwards */
    double scale; /* backward: 1/count for the mean, else 1 */
    int64_t per;
    int stop;
} ce_job;

static void ce_range(void *ctx, int64_t lo, int64_t hi)
{
    ce_job *j = ctx;
    const gm_kview *L = &j->a->in[0], *T = &j->a->in[1], *O = &j->a->out[0];
    int64_t ign = j->a->i[1];
    for (int64_t r = lo; r < hi; r++) {
        if ((r - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        double l = ce_row(L, T, r, ign);
        if (j->row) j->row[r] = l;
        else if (O->dtype == GM_F32) ((float *)O->data)[r * O->stride[0]] = (float)l;
        else ((double *)O->data)[r * O->stride[0]] = l;
    }
}

gm_status gm_cpu_CROSS_ENTROPY(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *L = &a->in[0], *T = &a->in[1], *O = &a->out[0];
    int64_t N = L->shape[0], C = L->shape[1], ign = a->i[1], count;
    int red = (int)a->i[0];
    gm_status s = check_targets(c, T, C, ign, &count);
    if (s) return s;
    double *row = NULL;
    if (red != GM_RED_NONE && !(row = malloc((size_t)(N > 0 ? N : 1) * sizeof *row)))
        return gm_errf(c, GM_ENOMEM, "cross_entropy: out of memory for %lld rows", (long long)N);
    ce_job j = {.a = a, .row = row, .per = C > 0 && CHUNK / C > 0 ? CHUNK / C : 1};
    gm_parallel_for(N, gm_min_units(C), a->nthreads, ce_range, &j);
    if (j.stop) {
        free(row);
        return gm_errf(c, GM_EINTR, "cross_entropy: interrupted");
    }
    if (row) {
        double sum = 0;
        for (int64_t r = 0; r < N; r++) sum += row[r];
        free(row);
        /* mean over the non-ignored targets; none left is 0/0 = NaN, as in torch */
        double v = red == GM_RED_SUM ? sum : (count > 0 ? sum / (double)count : NAN);
        if (O->dtype == GM_F32) *(float *)O->data = (float)v;
        else *(double *)O->data = v;
    }
    return GM_OK;
}

/* dlogits row = (softmax(x) - onehot(k)) * w. */
static void ce_bwd_f(const float *x, int64_t xs, float *o, int64_t os, int64_t C, int64_t k,
                     double w)
{
    float lse = (float)lse_f(x, xs, C), wf = (float)w;
    for (int64_t j = 0; j < C; j++) o[j * os] = expf(x[j * xs] - lse) * wf;
    o[k * os] -= wf;
}

static void ce_bwd_d(const double *x, int64_t xs, double *o, int64_t os, int64_t C, int64_t k,
                     double w)
{
    double lse = lse_d(x, xs, C);
    for (int64_t j = 0; j < C; j++) o[j * os] = exp(x[j * xs] - lse) * w;
    o[k * os] -= w;
}

static void ce_bwd_range(void *ctx, int64_t lo, int64_t hi)
{
    ce_job *j = ctx;
    const gm_kview *L = &j->a->in[0], *T = &j->a->in[1], *G = &j->a->in[2], *O = &j->a->out[0];
    int64_t C = L->shape[1], ign = j->a->i[1];
    int64_t gs = G->ndim > 0 ? G->stride[0] : 0; /* [N] for reduction none, else 0-dim */
    for (int64_t r = lo; r < hi; r++) {
        if ((r - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        int64_t k = ((const int32_t *)T->data)[r * T->stride[0]];
        double w = k == ign ? 0
                 : (G->dtype == GM_F32 ? ((const float *)G->data)[r * gs]
                                       : ((const double *)G->data)[r * gs]) * j->scale;
        if (L->dtype == GM_F32) {
            float *o = (float *)O->data + r * O->stride[0];
            if (k == ign)
                for (int64_t q = 0; q < C; q++) o[q * O->stride[1]] = 0;
            else
                ce_bwd_f((const float *)L->data + r * L->stride[0], L->stride[1], o,
                         O->stride[1], C, k, w);
        } else {
            double *o = (double *)O->data + r * O->stride[0];
            if (k == ign)
                for (int64_t q = 0; q < C; q++) o[q * O->stride[1]] = 0;
            else
                ce_bwd_d((const double *)L->data + r * L->stride[0], L->stride[1], o,
                         O->stride[1], C, k, w);
        }
    }
}

gm_status gm_cpu_CROSS_ENTROPY_BWD(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *L = &a->in[0], *T = &a->in[1];
    int64_t N = L->shape[0], C = L->shape[1], ign = a->i[1], count;
    int red = (int)a->i[0];
    gm_status s = check_targets(c, T, C, ign, &count);
    if (s) return s;
    ce_job j = {.a = a, .scale = red == GM_RED_MEAN && count > 0 ? 1.0 / (double)count : 1.0,
                .per = C > 0 && CHUNK / C > 0 ? CHUNK / C : 1};
    gm_parallel_for(N, gm_min_units(C), a->nthreads, ce_bwd_range, &j);
    return j.stop ? gm_errf(c, GM_EINTR, "cross_entropy: interrupted") : GM_OK;
}

/* ---- mse: x, y (and g) of one shape, any strides --------------------------------------- */

static inline double ld(const gm_kview *v, int64_t off)
{
    return v->dtype == GM_F32 ? ((const float *)v->data)[off] : ((const double *)v->data)[off];
}

static inline void st(const gm_kview *v, int64_t off, double x)
{
    if (v->dtype == GM_F32) ((float *)v->data)[off] = (float)x;
    else ((double *)v->data)[off] = x;
}

static double sumsq_diff_f(const float *x, const float *y, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - y[i];
        s += d * d;
    }
    return s;
}

static double sumsq_diff_d(const double *x, const double *y, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - y[i];
        s += d * d;
    }
    return s;
}

gm_status gm_cpu_MSE_LOSS(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *X = &a->in[0], *Y = &a->in[1], *O = &a->out[0];
    int64_t n = gm_kview_numel(X);
    int red = (int)a->i[0];
    bool fast = gm_kview_contiguous(X) && gm_kview_contiguous(Y);
    double sum = 0;
    for (int64_t lo = 0; lo < n; lo += CHUNK) {
        if (gm_interrupted()) return gm_errf(c, GM_EINTR, "mse_loss: interrupted");
        int64_t hi = lo + CHUNK < n ? lo + CHUNK : n;
        if (red != GM_RED_NONE && fast) {
            sum += X->dtype == GM_F32
                       ? sumsq_diff_f((const float *)X->data + lo, (const float *)Y->data + lo,
                                      hi - lo)
                       : sumsq_diff_d((const double *)X->data + lo,
                                      (const double *)Y->data + lo, hi - lo);
            continue;
        }
        if (fast && gm_kview_contiguous(O)) {
            for (int64_t i = lo; i < hi; i++) {
                double d = ld(X, i) - ld(Y, i);
                st(O, i, d * d);
            }
            continue;
        }
        for (int64_t i = lo; i < hi; i++) {
            double d = ld(X, gm_kview_offset(X, i)) - ld(Y, gm_kview_offset(Y, i));
            if (red == GM_RED_NONE) st(O, gm_kview_offset(O, i), d * d);
            else sum += d * d;
        }
    }
    if (red != GM_RED_NONE) st(O, 0, red == GM_RED_SUM ? sum : sum / (double)n);
    return GM_OK;
}

/* Contiguous x, y, o and g either contiguous (gs 1) or one broadcast scalar (gs 0). */
static void mse_bwd_f(const float *x, const float *y, const float *g, int64_t gs, float *o,
                      float *o2, int64_t n, double scale)
{
    float sc = (float)scale;
    for (int64_t i = 0; i < n; i++) {
        float v = sc * (x[i] - y[i]) * g[i * gs];
        o[i] = v;
        if (o2) o2[i] = -v;
    }
}

static void mse_bwd_d(const double *x, const double *y, const double *g, int64_t gs, double *o,
                      double *o2, int64_t n, double scale)
{
    for (int64_t i = 0; i < n; i++) {
        double v = scale * (x[i] - y[i]) * g[i * gs];
        o[i] = v;
        if (o2) o2[i] = -v;
    }
}

static bool all_zero_strides(const gm_kview *v)
{
    for (int d = 0; d < v->ndim; d++)
        if (v->shape[d] != 1 && v->stride[d] != 0) return false;
    return true;
}

typedef struct {
    const gm_kargs *a;
    double scale;
    int64_t gs; /* g contiguous (1) or one broadcast scalar (0) on the fast path */
    bool two, fast;
    int stop;
} mse_job;

static void mse_bwd_range(void *ctx, int64_t lo, int64_t hi)
{
    mse_job *j = ctx;
    const gm_kview *X = &j->a->in[0], *Y = &j->a->in[1], *G = &j->a->in[2];
    const gm_kview *O = &j->a->out[0], *O2 = &j->a->out[1];
    int64_t gs = j->gs;
    for (int64_t c0 = lo; c0 < hi; c0 += CHUNK) {
        if (gm_halted(&j->stop)) return;
        int64_t c1 = c0 + CHUNK < hi ? c0 + CHUNK : hi;
        if (j->fast) {
            if (X->dtype == GM_F32)
                mse_bwd_f((const float *)X->data + c0, (const float *)Y->data + c0,
                          (const float *)G->data + c0 * gs, gs, (float *)O->data + c0,
                          j->two ? (float *)O2->data + c0 : NULL, c1 - c0, j->scale);
            else
                mse_bwd_d((const double *)X->data + c0, (const double *)Y->data + c0,
                          (const double *)G->data + c0 * gs, gs, (double *)O->data + c0,
                          j->two ? (double *)O2->data + c0 : NULL, c1 - c0, j->scale);
            continue;
        }
        for (int64_t i = c0; i < c1; i++) {
            double v = j->scale * (ld(X, gm_kview_offset(X, i)) - ld(Y, gm_kview_offset(Y, i))) *
                       ld(G, gm_kview_offset(G, i));
            st(O, gm_kview_offset(O, i), v);
            if (j->two) st(O2, gm_kview_offset(O2, i), -v);
        }
    }
}

/* out[0] = d[0] * (x - y) * g; out[1] (when given) = -out[0]. */
gm_status gm_cpu_MSE_LOSS_BWD(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *X = &a->in[0], *Y = &a->in[1], *G = &a->in[2];
    mse_job j = {.a = a, .scale = a->d[0], .two = a->n_out > 1};
    bool gscalar = all_zero_strides(G);
    j.gs = gscalar ? 0 : 1;
    j.fast = gm_kview_contiguous(X) && gm_kview_contiguous(Y) && gm_kview_contiguous(&a->out[0]) &&
             (!j.two || gm_kview_contiguous(&a->out[1])) && (gscalar || gm_kview_contiguous(G));
    gm_parallel_for(gm_kview_numel(X), GM_PAR_MIN, a->nthreads, mse_bwd_range, &j);
    return j.stop ? gm_errf(c, GM_EINTR, "mse_loss: interrupted") : GM_OK;
}
