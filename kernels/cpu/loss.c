/* loss.c (cpu): fused loss kernels, forward and backward: row losses (cross-entropy with label
 * smoothing, kl_div, symmetric_kl: a log-sum-exp per row) and elementwise ones (mse, binary
 * cross-entropy with logits, Gaussian NLL). Rows and chunks of elements run in parallel; their
 * sums are added serially in double, so a loss is bitwise the same for any thread count. */
#include "cpu.h"
#include "vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK ((int64_t)1 << 16) /* elements between interrupt polls */

/* ---- cross-entropy: logits [N,C] (any strides), target [N] i32 ------------------------- */

/* log(sum_j exp(x_j)) of a contiguous f32 row: the max and the exps in 8 lanes (vmath.h; tails
 * padded with -inf), the exps summed in 8 double lanes added in a fixed order. NaNs are skipped
 * by the max and propagate through the sum, as in the strided loop below. */
static double lse_contig_f32(const float *x, int64_t C)
{
    v8f mv = v8_splat(-INFINITY), v;
    int64_t j = 0;
    for (;; j += 8) {
        if (j + 8 <= C) __builtin_memcpy(&v, x + j, sizeof v);
        else if (j < C) {
            v = v8_splat(-INFINITY);
            for (int64_t k = j; k < C; k++) v[k - j] = x[k];
        } else break;
        v8i gt = v > mv; /* false for NaN */
        mv = (v8f)((gt & (v8i)v) | (~gt & (v8i)mv));
    }
    float m = -INFINITY;
    for (int k = 0; k < 8; k++) if (mv[k] > m) m = mv[k];
    if (isinf(m)) return m; /* all -inf (or +inf somewhere): the lse is that infinity */
    v4d s0 = {0, 0, 0, 0}, s1 = {0, 0, 0, 0};
    v8f sh = v8_splat(m);
    for (j = 0; j < C; j += 8) {
        if (j + 8 <= C) __builtin_memcpy(&v, x + j, sizeof v);
        else {
            v = v8_splat(-INFINITY);
            for (int64_t k = j; k < C; k++) v[k - j] = x[k];
        }
        v8f e = v8_expf(v - sh);
        v4f lo = {e[0], e[1], e[2], e[3]}, hi = {e[4], e[5], e[6], e[7]};
        s0 += __builtin_convertvector(lo, v4d);
        s1 += __builtin_convertvector(hi, v4d);
    }
    return m + log(v4_hsum(s0 + s1));
}

/* log(sum_j exp(x_j)) of one row, stable: max + log(sum exp(x - max)), summed in double. */
static double lse_f32(const float *x, int64_t s, int64_t C)
{
    if (s == 1) return lse_contig_f32(x, C);
    float m = -INFINITY;
    for (int64_t j = 0; j < C; j++)
        if (x[j * s] > m) m = x[j * s];
    if (isinf(m)) return m; /* all -inf (or +inf somewhere): the lse is that infinity */
    double sum = 0;
    for (int64_t j = 0; j < C; j++) sum += expf(x[j * s] - m);
    return m + log(sum);
}

static double lse_f64(const double *x, int64_t s, int64_t C)
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

/* Loss of row r (0 when ignored): lse - (1 - eps) x_k - eps mean_j x_j, i.e. (1 - eps) times
 * -log p_k plus eps times the mean of -log p_j (label smoothing eps; skipped at 0 so that
 * -inf logits of masked classes stay harmless). */
static double ce_row(const gm_kview *L, const gm_kview *T, int64_t r, int64_t ign, double eps)
{
    int64_t k = ((const int32_t *)T->data)[r * T->stride[0]], C = L->shape[1], s = L->stride[1];
    double lse, xk, mean = 0;
    if (k == ign) return 0;
    if (L->dtype == GM_F32) {
        const float *x = (const float *)L->data + r * L->stride[0];
        lse = lse_f32(x, s, C);
        xk = x[k * s];
        if (eps > 0)
            for (int64_t j = 0; j < C; j++) mean += x[j * s];
    } else {
        const double *x = (const double *)L->data + r * L->stride[0];
        lse = lse_f64(x, s, C);
        xk = x[k * s];
        if (eps > 0)
            for (int64_t j = 0; j < C; j++) mean += x[j * s];
    }
    if (eps == 0) return lse - xk;
    return lse - (1 - eps) * xk - eps * mean / (double)C;
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
    int64_t ign = j->a->k.loss.ignore_index;
    for (int64_t r = lo; r < hi; r++) {
        if ((r - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        double l = ce_row(L, T, r, ign, j->a->k.loss.smoothing);
        if (j->row) j->row[r] = l;
        else if (O->dtype == GM_F32) ((float *)O->data)[r * O->stride[0]] = (float)l;
        else ((double *)O->data)[r * O->stride[0]] = l;
    }
}

gm_status gm_cpu_CROSS_ENTROPY(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *L = &a->in[0], *T = &a->in[1], *O = &a->out[0];
    int64_t N = L->shape[0], C = L->shape[1], ign = a->k.loss.ignore_index, count = 0;
    int red = a->k.loss.reduction;
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

/* dlogits row = (softmax(x) - (1 - eps) onehot(k) - eps / C) * w. */
static void ce_bwd_f32(const float *x, int64_t xs, float *o, int64_t os, int64_t C, int64_t k,
                     double w, double eps)
{
    float lse = (float)lse_f32(x, xs, C), wf = (float)w, u = (float)(eps / (double)C * w);
    if (xs == 1 && os == 1) {
        v8_exp_shifted(o, x, C, lse);
        for (int64_t j = 0; j < C; j++) o[j] = o[j] * wf - u;
    } else {
        for (int64_t j = 0; j < C; j++) o[j * os] = expf(x[j * xs] - lse) * wf - u;
    }
    o[k * os] -= (float)((1 - eps) * w);
}

static void ce_bwd_f64(const double *x, int64_t xs, double *o, int64_t os, int64_t C, int64_t k,
                     double w, double eps)
{
    double lse = lse_f64(x, xs, C), u = eps / (double)C * w;
    for (int64_t j = 0; j < C; j++) o[j * os] = exp(x[j * xs] - lse) * w - u;
    o[k * os] -= (1 - eps) * w;
}

static void ce_bwd_range(void *ctx, int64_t lo, int64_t hi)
{
    ce_job *j = ctx;
    const gm_kview *L = &j->a->in[0], *T = &j->a->in[1], *G = &j->a->in[2], *O = &j->a->out[0];
    int64_t C = L->shape[1], ign = j->a->k.loss.ignore_index;
    int64_t gs = G->ndim > 0 ? G->stride[0] : 0; /* [N] for reduction none, else 0-dim */
    for (int64_t r = lo; r < hi; r++) {
        if ((r - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        int64_t k = ((const int32_t *)T->data)[r * T->stride[0]];
        double w = k == ign ? 0
                 : (G->dtype == GM_F32 ? ((const float *)G->data)[r * gs]
                                       : ((const double *)G->data)[r * gs]) * j->scale;
        if (k == ign)
            for (int64_t q = 0; q < C; q++) gm_elem_store(O->data, O->dtype, r * O->stride[0] + q * O->stride[1], 0);
        else if (L->dtype == GM_F32)
            ce_bwd_f32((const float *)L->data + r * L->stride[0], L->stride[1], (float *)O->data + r * O->stride[0],
                       O->stride[1], C, k, w, j->a->k.loss.smoothing);
        else
            ce_bwd_f64((const double *)L->data + r * L->stride[0], L->stride[1], (double *)O->data + r * O->stride[0],
                       O->stride[1], C, k, w, j->a->k.loss.smoothing);
    }
}

gm_status gm_cpu_CROSS_ENTROPY_BWD(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *L = &a->in[0], *T = &a->in[1];
    int64_t N = L->shape[0], C = L->shape[1], ign = a->k.loss.ignore_index, count = 0;
    int red = a->k.loss.reduction;
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

static double sumsq_diff_f32(const float *x, const float *y, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - y[i];
        s += d * d;
    }
    return s;
}

static double sumsq_diff_f64(const double *x, const double *y, int64_t n)
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
    int red = a->k.loss.reduction;
    bool fast = gm_kview_contiguous(X) && gm_kview_contiguous(Y);
    double sum = 0;
    for (int64_t lo = 0; lo < n; lo += CHUNK) {
        if (gm_interrupted()) return gm_errf(c, GM_EINTR, "mse_loss: interrupted");
        int64_t hi = lo + CHUNK < n ? lo + CHUNK : n;
        if (red != GM_RED_NONE && fast) {
            sum += X->dtype == GM_F32
                       ? sumsq_diff_f32((const float *)X->data + lo, (const float *)Y->data + lo,
                                      hi - lo)
                       : sumsq_diff_f64((const double *)X->data + lo,
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
static void mse_bwd_f32(const float *x, const float *y, const float *g, int64_t gs, float *o,
                      float *o2, int64_t n, double scale)
{
    float sc = (float)scale;
    for (int64_t i = 0; i < n; i++) {
        float v = sc * (x[i] - y[i]) * g[i * gs];
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
        if (j->fast && X->dtype == GM_F32) {
            mse_bwd_f32((const float *)X->data + c0, (const float *)Y->data + c0,
                        (const float *)G->data + c0 * gs, gs, (float *)O->data + c0,
                        j->two ? (float *)O2->data + c0 : NULL, c1 - c0, j->scale);
            continue;
        }
        for (int64_t i = c0; i < c1; i++) { /* f64, and any strides: in double */
            bool f = j->fast;
            double x = ld(X, f ? i : gm_kview_offset(X, i)), y = ld(Y, f ? i : gm_kview_offset(Y, i));
            double v = j->scale * (x - y) * ld(G, f ? i * gs : gm_kview_offset(G, i));
            st(O, f ? i : gm_kview_offset(O, i), v);
            if (j->two) st(O2, f ? i : gm_kview_offset(O2, i), -v);
        }
    }
}

/* out[0] = scale * (x - y) * g; out[1] (when given) = -out[0]. */
gm_status gm_cpu_MSE_LOSS_BWD(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *X = &a->in[0], *Y = &a->in[1], *G = &a->in[2];
    mse_job j = {.a = a, .scale = a->k.loss.scale, .two = a->n_out > 1};
    bool gscalar = all_zero_strides(G);
    j.gs = gscalar ? 0 : 1;
    j.fast = gm_kview_contiguous(X) && gm_kview_contiguous(Y) && gm_kview_contiguous(&a->out[0]) &&
             (!j.two || gm_kview_contiguous(&a->out[1])) && (gscalar || gm_kview_contiguous(G));
    gm_parallel_for(gm_kview_numel(X), GM_PAR_MIN, a->nthreads, mse_bwd_range, &j);
    return j.stop ? gm_errf(c, GM_EINTR, "mse_loss: interrupted") : GM_OK;
}

/* ---- elementwise losses: x, y[, z] (and g) of one shape, any strides ------------------- */

enum { EW_BCE, EW_GNLL };

/* Loss of one element: bce (x logits, y target) or gnll (x mean, y log_var, z target). */
static inline double ew_loss(int kind, double x, double y, double z)
{
    if (kind == EW_BCE) return (x > 0 ? x : 0) - x * y + log1p(exp(-fabs(x)));
    double e = z - x;
    return 0.5 * (y + e * e * exp(-y));
}

/* ew_loss in float arithmetic: the contiguous f32 path (float exp/log1p are several times
 * faster than the double ones and give f32 accuracy). */
static inline float ew_loss_f32(int kind, float x, float y, float z)
{
    if (kind == EW_BCE) return (x > 0 ? x : 0) - x * y + log1pf(expf(-fabsf(x)));
    float e = z - x;
    return 0.5f * (y + e * e * expf(-y));
}

/* w times the gradients of ew_loss with respect to x, y, z, into d[0..2]. */
static inline void ew_grad(int kind, double x, double y, double z, double w, double *d)
{
    if (kind == EW_BCE) {
        double e = exp(-fabs(x)), sig = x >= 0 ? 1 / (1 + e) : e / (1 + e);
        d[0] = (sig - y) * w;
        d[1] = -x * w;
        return;
    }
    double r = (z - x) * exp(-y); /* (target - mean) / var */
    d[0] = -r * w;
    d[1] = 0.5 * (1 - (z - x) * r) * w;
    d[2] = r * w;
}

/* One elementwise-loss kernel; its elements run in chunks of CHUNK, a chunk per task. */
typedef struct {
    const gm_kargs *a;
    int kind, nin; /* inputs that are data: 2 (bce) or 3 (gnll); in[nin] is g in backward */
    bool fast;     /* inputs and outputs contiguous: flat indexing */
    bool gscalar;  /* backward: g is one broadcast value */
    double *part;  /* forward with a reduction: per-chunk sums, added serially afterwards */
    double scale;
    int stop;
} ew_job;

static inline double ew_at(const gm_kview *v, bool fast, int64_t i)
{
    return gm_elem_load(v->data, v->dtype, fast ? i : gm_kview_offset(v, i));
}

static inline void ew_put(const gm_kview *v, bool fast, int64_t i, double x)
{
    gm_elem_store(v->data, v->dtype, fast ? i : gm_kview_offset(v, i), x);
}

static bool all_contiguous(int n, const gm_kview *v)
{
    for (int i = 0; i < n; i++)
        if (!gm_kview_contiguous(&v[i])) return false;
    return true;
}

static void ew_fwd_range(void *ctx, int64_t lo, int64_t hi)
{
    ew_job *j = ctx;
    const gm_kview *in = j->a->in, *O = &j->a->out[0];
    int64_t n = gm_kview_numel(&in[0]);
    for (int64_t ch = lo; ch < hi; ch++) {
        if (gm_halted(&j->stop)) return;
        int64_t e1 = (ch + 1) * CHUNK < n ? (ch + 1) * CHUNK : n;
        double sum = 0;
        if (j->fast && in[0].dtype == GM_F32) {
            const float *x = in[0].data, *y = in[1].data, *zz = j->nin > 2 ? in[2].data : NULL;
            float *o = j->part ? NULL : O->data;
            for (int64_t i = ch * CHUNK; i < e1; i++) {
                float l = ew_loss_f32(j->kind, x[i], y[i], zz ? zz[i] : 0);
                if (o) o[i] = l;
                else sum += l;
            }
            if (j->part) j->part[ch] = sum;
            continue;
        }
        for (int64_t i = ch * CHUNK; i < e1; i++) {
            double z = j->nin > 2 ? ew_at(&in[2], j->fast, i) : 0;
            double l = ew_loss(j->kind, ew_at(&in[0], j->fast, i), ew_at(&in[1], j->fast, i), z);
            if (j->part) sum += l;
            else ew_put(O, j->fast, i, l);
        }
        if (j->part) j->part[ch] = sum;
    }
}

static gm_status ew_forward(gm_ctx *c, const gm_kargs *a, int kind, int nin, const char *op)
{
    int64_t n = gm_kview_numel(&a->in[0]), nch = (n + CHUNK - 1) / CHUNK;
    int red = a->k.loss.reduction;
    ew_job j = {.a = a, .kind = kind, .nin = nin};
    j.fast = all_contiguous(nin, a->in) && (red != GM_RED_NONE || gm_kview_contiguous(&a->out[0]));
    if (red != GM_RED_NONE && !(j.part = malloc((size_t)(nch > 0 ? nch : 1) * sizeof *j.part)))
        return gm_errf(c, GM_ENOMEM, "%s: out of memory for %lld partial sums", op, (long long)nch);
    gm_parallel_for(nch, 1, a->nthreads, ew_fwd_range, &j);
    if (j.stop) {
        free(j.part);
        return gm_errf(c, GM_EINTR, "%s: interrupted", op);
    }
    if (j.part) {
        double sum = 0;
        for (int64_t ch = 0; ch < nch; ch++) sum += j.part[ch];
        free(j.part);
        const gm_kview *O = &a->out[0];
        gm_elem_store(O->data, O->dtype, 0, red == GM_RED_SUM ? sum : n > 0 ? sum / (double)n : NAN);
    }
    return GM_OK;
}

static void ew_bwd_range(void *ctx, int64_t lo, int64_t hi)
{
    ew_job *j = ctx;
    const gm_kargs *a = j->a;
    const gm_kview *in = a->in, *G = &a->in[j->nin];
    int64_t n = gm_kview_numel(&in[0]), mask = a->k.loss.outs;
    double g0 = j->gscalar ? gm_elem_load(G->data, G->dtype, 0) : 0, d[3] = {0, 0, 0};
    for (int64_t ch = lo; ch < hi; ch++) {
        if (gm_halted(&j->stop)) return;
        int64_t e1 = (ch + 1) * CHUNK < n ? (ch + 1) * CHUNK : n;
        for (int64_t i = ch * CHUNK; i < e1; i++) {
            double z = j->nin > 2 ? ew_at(&in[2], j->fast, i) : 0;
            double g = j->gscalar ? g0 : ew_at(G, j->fast, i);
            ew_grad(j->kind, ew_at(&in[0], j->fast, i), ew_at(&in[1], j->fast, i), z,
                    g * j->scale, d);
            for (int b = 0, k = 0; b < j->nin; b++)
                if (mask >> b & 1) ew_put(&a->out[k++], j->fast, i, d[b]);
        }
    }
}

/* out[k] = gradient for the k-th set bit b of outs (input b), times g * scale. */
static gm_status ew_backward(gm_ctx *c, const gm_kargs *a, int kind, int nin, const char *op)
{
    const gm_kview *G = &a->in[nin];
    int64_t n = gm_kview_numel(&a->in[0]);
    ew_job j = {.a = a, .kind = kind, .nin = nin, .scale = a->k.loss.scale};
    j.gscalar = true;
    for (int d = 0; d < G->ndim; d++)
        if (G->shape[d] != 1 && G->stride[d] != 0) j.gscalar = false;
    j.fast = all_contiguous(nin, a->in) && all_contiguous(a->n_out, a->out) &&
             (j.gscalar || gm_kview_contiguous(G));
    gm_parallel_for((n + CHUNK - 1) / CHUNK, 1, a->nthreads, ew_bwd_range, &j);
    return j.stop ? gm_errf(c, GM_EINTR, "%s: interrupted", op) : GM_OK;
}

gm_status gm_cpu_BCE_LOGITS(gm_ctx *c, const gm_kargs *a)
{
    return ew_forward(c, a, EW_BCE, 2, "binary_cross_entropy_with_logits");
}

gm_status gm_cpu_BCE_LOGITS_BWD(gm_ctx *c, const gm_kargs *a)
{
    return ew_backward(c, a, EW_BCE, 2, "binary_cross_entropy_with_logits");
}

gm_status gm_cpu_GAUSSIAN_NLL(gm_ctx *c, const gm_kargs *a)
{
    return ew_forward(c, a, EW_GNLL, 3, "gaussian_nll");
}

gm_status gm_cpu_GAUSSIAN_NLL_BWD(gm_ctx *c, const gm_kargs *a)
{
    return ew_backward(c, a, EW_GNLL, 3, "gaussian_nll");
}

/* ---- row divergences: x, y [N,C] (any strides), rows computed in double ---------------- */

enum { RK_KL, RK_SKL };

/* x := log softmax(x) and p := softmax(x), stable (max subtracted first). */
static void softmax_row(double *x, double *p, int64_t C)
{
    double m = -INFINITY, z = 0;
    for (int64_t j = 0; j < C; j++) m = x[j] > m ? x[j] : m;
    for (int64_t j = 0; j < C; j++) z += p[j] = exp(x[j] - m);
    double lse = m + log(z);
    for (int64_t j = 0; j < C; j++) {
        x[j] -= lse;
        p[j] /= z;
    }
}

/* Scratch doubles per row: x, y and, for symmetric_kl, p, q; then two gradient rows. */
#define RK_FWD_ROWS 4
#define RK_BWD_ROWS 6

/* kl: sum_j exp(t_j) (t_j - x_j) with x = input, t = target log-probs; terms with t_j = -inf
 * are 0 (the limit of p log p). skl: x, y logits -> log-probs in place (p, q the
 * probabilities), then 0.5 sum_j (p_j - q_j)(lp_j - lq_j); equal log-probs (both -inf
 * included) add 0. */
static double rk_loss(int kind, double *x, double *y, double *p, double *q, int64_t C)
{
    double s = 0;
    if (kind == RK_KL) {
        for (int64_t j = 0; j < C; j++)
            if (y[j] != -INFINITY) s += exp(y[j]) * (y[j] - x[j]);
        return s;
    }
    softmax_row(x, p, C);
    softmax_row(y, q, C);
    for (int64_t j = 0; j < C; j++)
        if (x[j] != y[j]) s += (p[j] - q[j]) * (x[j] - y[j]);
    return 0.5 * s;
}

/* w times the gradients of rk_loss into gx, gy (x, y as loaded; changed in place).
 * kl: d/dx_j = -t_j', d/dt_j = t_j' (t_j - x_j + 1) with t_j' = exp(t_j).
 * skl, with d = lp - lq, K = KL(p||q), K' = KL(q||p):
 *   d/dx_j = 0.5 (p_j (d_j - K) + p_j - q_j),  d/dy_j = 0.5 (q_j (-d_j - K') + q_j - p_j). */
static void rk_grad(int kind, double *x, double *y, double *p, double *q, int64_t C, double w,
                    double *gx, double *gy)
{
    if (kind == RK_KL) {
        for (int64_t j = 0; j < C; j++) {
            bool zero = y[j] == -INFINITY;
            double t = exp(y[j]);
            gx[j] = zero ? 0 : -t * w;
            gy[j] = zero ? 0 : t * (y[j] - x[j] + 1) * w;
        }
        return;
    }
    softmax_row(x, p, C);
    softmax_row(y, q, C);
    double kpq = 0, kqp = 0;
    for (int64_t j = 0; j < C; j++) {
        double d = x[j] != y[j] ? x[j] - y[j] : 0;
        gx[j] = p[j] > 0 ? p[j] * d : 0;  /* p_j d_j, 0 where p_j underflows */
        gy[j] = q[j] > 0 ? -q[j] * d : 0; /* q_j (lq_j - lp_j) */
        kpq += gx[j];
        kqp += gy[j];
    }
    for (int64_t j = 0; j < C; j++) {
        gx[j] = 0.5 * w * (gx[j] - p[j] * kpq + p[j] - q[j]);
        gy[j] = 0.5 * w * (gy[j] - q[j] * kqp + q[j] - p[j]);
    }
}

typedef struct {
    const gm_kargs *a;
    int kind;
    double *row;   /* forward with a reduction: per-row losses, added serially afterwards */
    double scale;  /* backward: 1/N for the mean, else 1 */
    int64_t per;   /* rows between interrupt polls */
    bool bwd;
    int stop, nomem;
} rk_job;

/* Row r's loss, x and y loaded in buf: into the per-row sums or straight into the output. */
static void rk_fwd_row(const rk_job *j, int64_t r, double *buf, int64_t C)
{
    const gm_kview *O = &j->a->out[0];
    double l = rk_loss(j->kind, buf, buf + C, buf + 2 * C, buf + 3 * C, C);
    if (j->row) j->row[r] = l;
    else gm_elem_store(O->data, O->dtype, r * O->stride[0], l);
}

/* Row r's gradients, x and y loaded in buf: into the outputs that a->k.loss.outs asks for. */
static void rk_bwd_row(const rk_job *j, int64_t r, double *buf, int64_t C)
{
    const gm_kargs *a = j->a;
    const gm_kview *G = &a->in[2];
    int64_t mask = a->k.loss.outs, gs = G->ndim > 0 ? G->stride[0] : 0;
    double w = gm_elem_load(G->data, G->dtype, r * gs) * j->scale;
    rk_grad(j->kind, buf, buf + C, buf + 2 * C, buf + 3 * C, C, w, buf + 4 * C, buf + 5 * C);
    int k = 0;
    if (mask & 1) gm_store_row(&a->out[k++], r, buf + 4 * C, C);
    if (mask & 2) gm_store_row(&a->out[k], r, buf + 5 * C, C);
}

/* Rows [lo, hi) of the forward or (j->bwd) the backward, each computed in double. */
static void rk_range(void *ctx, int64_t lo, int64_t hi)
{
    rk_job *j = ctx;
    const gm_kview *X = &j->a->in[0], *Y = &j->a->in[1];
    int64_t C = X->shape[1];
    double *buf = malloc((size_t)(C > 0 ? (j->bwd ? RK_BWD_ROWS : RK_FWD_ROWS) * C : 1) * sizeof *buf);
    if (!buf) {
        __atomic_store_n(&j->nomem, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&j->stop, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t r = lo; r < hi; r++) {
        if ((r - lo) % j->per == 0 && gm_halted(&j->stop)) break;
        gm_load_row(buf, X, r, C);
        gm_load_row(buf + C, Y, r, C);
        if (j->bwd) rk_bwd_row(j, r, buf, C);
        else rk_fwd_row(j, r, buf, C);
    }
    free(buf);
}

static gm_status rk_status(gm_ctx *c, const rk_job *j, const char *op)
{
    if (j->nomem) return gm_errf(c, GM_ENOMEM, "%s: out of memory for row scratch", op);
    if (j->stop) return gm_errf(c, GM_EINTR, "%s: interrupted", op);
    return GM_OK;
}

static gm_status rk_forward(gm_ctx *c, const gm_kargs *a, int kind, const char *op)
{
    const gm_kview *X = &a->in[0], *O = &a->out[0];
    int64_t N = X->shape[0], C = X->shape[1];
    int red = a->k.loss.reduction;
    rk_job j = {.a = a, .kind = kind, .per = C > 0 && CHUNK / C > 0 ? CHUNK / C : 1};
    if (red != GM_RED_NONE && !(j.row = malloc((size_t)(N > 0 ? N : 1) * sizeof *j.row)))
        return gm_errf(c, GM_ENOMEM, "%s: out of memory for %lld rows", op, (long long)N);
    gm_parallel_for(N, gm_min_units(C), a->nthreads, rk_range, &j);
    gm_status s = rk_status(c, &j, op);
    if (!s && j.row) {
        double sum = 0;
        for (int64_t r = 0; r < N; r++) sum += j.row[r];
        gm_elem_store(O->data, O->dtype, 0,
                      red == GM_RED_SUM ? sum : N > 0 ? sum / (double)N : NAN);
    }
    free(j.row);
    return s;
}

static gm_status rk_backward(gm_ctx *c, const gm_kargs *a, int kind, const char *op)
{
    int64_t N = a->in[0].shape[0], C = a->in[0].shape[1];
    rk_job j = {.a = a, .kind = kind, .scale = a->k.loss.scale,
                .per = C > 0 && CHUNK / C > 0 ? CHUNK / C : 1, .bwd = true};
    gm_parallel_for(N, gm_min_units(C), a->nthreads, rk_range, &j);
    return rk_status(c, &j, op);
}

gm_status gm_cpu_KL_DIV(gm_ctx *c, const gm_kargs *a)
{
    return rk_forward(c, a, RK_KL, "kl_div");
}

gm_status gm_cpu_KL_DIV_BWD(gm_ctx *c, const gm_kargs *a)
{
    return rk_backward(c, a, RK_KL, "kl_div");
}

gm_status gm_cpu_SYMMETRIC_KL(gm_ctx *c, const gm_kargs *a)
{
    return rk_forward(c, a, RK_SKL, "symmetric_kl");
}

gm_status gm_cpu_SYMMETRIC_KL_BWD(gm_ctx *c, const gm_kargs *a)
{
    return rk_backward(c, a, RK_SKL, "symmetric_kl");
}
