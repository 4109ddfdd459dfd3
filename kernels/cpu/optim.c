/* optim.c (cpu): optimiser update kernels (SGD, Adam/AdamW), sum of squares and in-place
 * scaling. All operands are contiguous and of one float dtype (core/optim.c checks); the
 * update of each element is computed in double and rounded once on store, as PyTorch does
 * for f64 and close to what it does for f32. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "backend.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

/* Elements per block between interrupt polls. */
#define BLOCK ((int64_t)1 << 18)
/* Elements per unit of parallel work, and per partial sum of SUMSQ (fixed, so sums do not
 * depend on the thread count). */
#define PART ((int64_t)1 << 13)
#define PAR_MIN 32768

/* Element loops carry `omp simd`: operands never overlap (core/optim.c), and at -O2 GCC
 * would not otherwise vectorise loops that need alias checks or a remainder loop. (The Adam
 * loops vectorise only under -fno-math-errno: sqrt's errno path is a branch.) */

/* Run fn(args, lo, hi) over [0, n) in PART-sized pieces, in parallel when n is large,
 * polling the interrupt flag every BLOCK elements. */
typedef void (*range_fn)(const void *args, int64_t lo, int64_t hi);

static gm_status run_ranges(int64_t n, int nthreads, range_fn fn, const void *args) {
    for (int64_t s = 0; s < n; s += BLOCK) {
        if (gm_interrupted()) return GM_EINTR;
        int64_t e = n - s < BLOCK ? n : s + BLOCK, parts = (e - s + PART - 1) / PART;
        #pragma omp parallel for num_threads(nthreads) if (e - s > PAR_MIN) schedule(static)
        for (int64_t k = 0; k < parts; k++) {
            int64_t lo = s + k * PART;
            fn(args, lo, e - lo < PART ? e : lo + PART);
        }
    }
    return GM_OK;
}

/* ---- SGD ------------------------------------------------------------------------------ */

typedef struct {
    double lr, momentum, dampening, wd;
    double ns, mb; /* step = ns*d + mb*buf: nesterov d + momentum*buf (1, m), else buf (0, 1) */
    bool first;
    void *p, *buf;
    const void *g;
} sgd_args;

static inline double sgd_plain(const sgd_args *h, double p, double g) {
    return p - h->lr * (g + h->wd * p);
}

/* torch.optim.SGD with momentum for one element: returns the new parameter, updates *b.
 * first is a constant at each call site, so the branch folds away. */
static inline double sgd_momentum(const sgd_args *h, double p, double g, double *b, bool first) {
    double d = g + h->wd * p;
    double nb = first ? d : h->momentum * *b + (1.0 - h->dampening) * d;
    *b = nb;
    return p - h->lr * (h->ns * d + h->mb * nb);
}

static void sgd_range_f32(const void *args, int64_t lo, int64_t hi) {
    const sgd_args *h = args;
    float *p = h->p, *b = h->buf;
    const float *g = h->g;
    if (!b) {
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) p[i] = (float)sgd_plain(h, p[i], g[i]);
    } else if (h->first) {
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) {
            double bi;
            p[i] = (float)sgd_momentum(h, p[i], g[i], &bi, true);
            b[i] = (float)bi;
        }
    } else {
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) {
            double bi = b[i];
            p[i] = (float)sgd_momentum(h, p[i], g[i], &bi, false);
            b[i] = (float)bi;
        }
    }
}

static void sgd_range_f64(const void *args, int64_t lo, int64_t hi) {
    const sgd_args *h = args;
    double *p = h->p, *b = h->buf;
    const double *g = h->g;
    if (!b) {
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) p[i] = sgd_plain(h, p[i], g[i]);
    } else if (h->first) {
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) p[i] = sgd_momentum(h, p[i], g[i], &b[i], true);
    } else {
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) p[i] = sgd_momentum(h, p[i], g[i], &b[i], false);
    }
}

/* out[0] = param (updated), in[0] = grad, out[1] = momentum buffer when n_out == 2.
 * d[0] = lr, d[1] = momentum, d[2] = dampening, d[3] = weight_decay;
 * i[0] = nesterov, i[1] = first step (the buffer is set to the gradient, not blended). */
gm_status gm_cpu_SGD_STEP(gm_ctx *c, const gm_kargs *a) {
    bool nesterov = a->i[0] != 0;
    sgd_args h = {
        .lr = a->d[0], .momentum = a->d[1], .dampening = a->d[2], .wd = a->d[3],
        .ns = nesterov ? 1.0 : 0.0, .mb = nesterov ? a->d[1] : 1.0, .first = a->i[1] != 0,
        .p = a->out[0].data, .buf = a->n_out > 1 ? a->out[1].data : NULL, .g = a->in[0].data,
    };
    (void)c;
    return run_ranges(gm_kview_numel(&a->out[0]), a->nthreads,
                      a->out[0].dtype == GM_F32 ? sgd_range_f32 : sgd_range_f64, &h);
}

/* ---- Adam / AdamW ---------------------------------------------------------------------- */

typedef struct {
    double decay, l2, beta1, beta2, eps, step_size, sqrt_bc2;
    void *p, *m, *v;
    const void *g;
} adam_args;

/* torch.optim.Adam / AdamW for one element: returns the new parameter, updates *m, *v.
 * Weight decay is branch-free so the loops vectorise: AdamW has decay = 1 - lr*wd, l2 = 0;
 * Adam has decay = 1, l2 = wd (g += wd*p). Then the order of operations of PyTorch:
 * denom = sqrt(v) / sqrt(bc2) + eps, p -= (lr / bc1) * m / denom. */
static inline double adam_elem(const adam_args *h, double p, double g, double *m, double *v) {
    p *= h->decay;
    g += h->l2 * p;
    *m = h->beta1 * *m + (1.0 - h->beta1) * g;
    *v = h->beta2 * *v + (1.0 - h->beta2) * g * g;
    double denom = sqrt(*v) / h->sqrt_bc2 + h->eps;
    return p - h->step_size * *m / denom;
}

static void adam_range_f32(const void *args, int64_t lo, int64_t hi) {
    const adam_args *h = args;
    float *p = h->p, *m = h->m, *v = h->v;
    const float *g = h->g;
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        double mi = m[i], vi = v[i];
        p[i] = (float)adam_elem(h, p[i], g[i], &mi, &vi);
        m[i] = (float)mi;
        v[i] = (float)vi;
    }
}

static void adam_range_f64(const void *args, int64_t lo, int64_t hi) {
    const adam_args *h = args;
    double *p = h->p, *m = h->m, *v = h->v;
    const double *g = h->g;
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++) p[i] = adam_elem(h, p[i], g[i], &m[i], &v[i]);
}

/* out[0] = param, in[0] = grad, out[1] = m (first moment), out[2] = v (second moment).
 * d[0] = lr, d[1] = beta1, d[2] = beta2, d[3] = eps, d[4] = weight_decay,
 * d[5] = 1 - beta1^step, d[6] = 1 - beta2^step (bias corrections); i[0] = decoupled (AdamW). */
gm_status gm_cpu_ADAM_STEP(gm_ctx *c, const gm_kargs *a) {
    double lr = a->d[0], wd = a->d[4];
    bool decoupled = a->i[0] != 0;
    adam_args h = {
        .decay = decoupled ? 1.0 - lr * wd : 1.0, .l2 = decoupled ? 0.0 : wd,
        .beta1 = a->d[1], .beta2 = a->d[2], .eps = a->d[3], .step_size = lr / a->d[5],
        .sqrt_bc2 = sqrt(a->d[6]),
        .p = a->out[0].data, .m = a->out[1].data, .v = a->out[2].data, .g = a->in[0].data,
    };
    (void)c;
    return run_ranges(gm_kview_numel(&a->out[0]), a->nthreads,
                      a->out[0].dtype == GM_F32 ? adam_range_f32 : adam_range_f64, &h);
}

/* ---- sum of squares, scale ------------------------------------------------------------- */

typedef struct {
    const gm_kview *x;
    double *part; /* one partial sum per PART */
} sumsq_args;

static void sumsq_range(const void *args, int64_t lo, int64_t hi) {
    const sumsq_args *s = args;
    /* Four interleaved accumulators break the add latency chain; the order stays fixed. */
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = lo;
    if (s->x->dtype == GM_F32) {
        const float *p = s->x->data;
        for (; i + 4 <= hi; i += 4)
            for (int k = 0; k < 4; k++) acc[k] += (double)p[i + k] * p[i + k];
        for (; i < hi; i++) acc[0] += (double)p[i] * p[i];
    } else {
        const double *p = s->x->data;
        for (; i + 4 <= hi; i += 4)
            for (int k = 0; k < 4; k++) acc[k] += p[i + k] * p[i + k];
        for (; i < hi; i++) acc[0] += p[i] * p[i];
    }
    s->part[lo / PART] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* out[0] (f64, one element) += sum of in[0]^2, accumulated in double. PART-sized pieces are
 * summed independently (in parallel when large) and their partial sums added in order, so
 * the result is the same for any thread count. */
gm_status gm_cpu_SUMSQ(gm_ctx *c, const gm_kargs *a) {
    int64_t n = gm_kview_numel(&a->in[0]), nparts = (n + PART - 1) / PART;
    double one, *part = nparts <= 1 ? &one : malloc((size_t)nparts * sizeof *part);
    if (!part)
        return gm_errf(c, GM_ENOMEM, "sumsq: out of memory for %lld partial sums", (long long)nparts);
    one = 0.0;
    sumsq_args s = {&a->in[0], part};
    gm_status st = run_ranges(n, a->nthreads, sumsq_range, &s);
    if (st == GM_OK) {
        double total = 0.0;
        for (int64_t k = 0; k < nparts; k++) total += part[k];
        *(double *)a->out[0].data += total;
    }
    if (part != &one) free(part);
    return st;
}

typedef struct {
    void *x;
    gm_dtype dtype;
    double s;
} scale_args;

static void scale_range(const void *args, int64_t lo, int64_t hi) {
    const scale_args *h = args;
    if (h->dtype == GM_F32) {
        float *p = h->x;
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) p[i] = (float)(p[i] * h->s);
    } else {
        double *p = h->x;
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) p[i] *= h->s;
    }
}

/* out[0] *= d[0], in place. */
gm_status gm_cpu_SCALE(gm_ctx *c, const gm_kargs *a) {
    scale_args h = {a->out[0].data, a->out[0].dtype, a->d[0]};
    (void)c;
    return run_ranges(gm_kview_numel(&a->out[0]), a->nthreads, scale_range, &h);
}
