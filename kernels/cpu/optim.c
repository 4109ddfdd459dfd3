/* optim.c (cpu): optimiser update kernels (SGD, Adam/AdamW), sum of squares and in-place
 * scaling. All operands are contiguous and of one float dtype (core/optim.c checks); the
 * update of each element is computed in double and rounded once on store, as PyTorch does
 * for f64 and close to what it does for f32. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "backend.h"
#include "parallel.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

/* Elements per unit of parallel work, and per partial sum of SUMSQ (fixed, so sums do not
 * depend on the thread count). */
#define PART ((int64_t)1 << 13)

/* Element loops carry `omp simd`: operands never overlap (core/optim.c), and at -O2 GCC
 * would not otherwise vectorise loops that need alias checks or a remainder loop. (The Adam
 * loops vectorise only under -fno-math-errno: sqrt's errno path is a branch.) */

/* A list of tensors (per operands each: list[per*t + j], operand 0 sets the length) cut into
 * PART-sized pieces numbered across the list in order; fn(h, operands, lo, hi) updates elements
 * [lo, hi) of one tensor. A multi-tensor step is one parallel loop over all pieces of a group,
 * and each element sees the same arithmetic as in a step of its tensor alone. */
typedef void (*piece_fn)(void *h, const gm_kview *ops, int64_t lo, int64_t hi);

typedef struct {
    const gm_kview *list;
    int per, n;
    int64_t *first; /* first[t]: number of tensor t's first piece; first[n]: all pieces */
    piece_fn fn;
    void *h;
    int stop;
} pieces;

static void pieces_range(void *ctx, int64_t lo, int64_t hi) {
    pieces *w = ctx;
    int t = 0;
    for (int64_t u = lo; u < hi; u++) {
        if (gm_halted(&w->stop)) return;
        while (u >= w->first[t + 1]) t++;
        const gm_kview *ops = w->list + (size_t)w->per * t;
        int64_t s = (u - w->first[t]) * PART, e = gm_kview_numel(&ops[0]);
        w->fn(w->h, ops, s, e - s < PART ? e : s + PART);
    }
}

static gm_status run_pieces(gm_ctx *c, const gm_kview *list, int n_list, int per, int nthreads, piece_fn fn,
                            void *h) {
    int n = n_list / per;
    int64_t one[2], *first = n <= 1 ? one : malloc(((size_t)n + 1) * sizeof *first);
    if (!first) return gm_errf(c, GM_ENOMEM, "optimiser step: out of memory for %d tensors", n);
    first[0] = 0;
    for (int t = 0; t < n; t++) first[t + 1] = first[t] + (gm_kview_numel(&list[per * t]) + PART - 1) / PART;
    pieces w = {list, per, n, first, fn, h, 0};
    gm_parallel_for(first[n], GM_PAR_MIN / PART, nthreads, pieces_range, &w);
    if (first != one) free(first);
    return w.stop ? GM_EINTR : GM_OK;
}

/* ---- SGD ------------------------------------------------------------------------------ */

typedef struct {
    double lr, momentum, dampening, wd;
    double ns, mb; /* step = ns*d + mb*buf: nesterov d + momentum*buf (1, m), else buf (0, 1) */
    bool first;
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

/* ops: param, grad, momentum buffer (data NULL without momentum) */
static void sgd_range_f32(void *args, const gm_kview *ops, int64_t lo, int64_t hi) {
    const sgd_args *h = args;
    float *p = ops[0].data, *b = ops[2].data;
    const float *g = ops[1].data;
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

static void sgd_range_f64(void *args, const gm_kview *ops, int64_t lo, int64_t hi) {
    const sgd_args *h = args;
    double *p = ops[0].data, *b = ops[2].data;
    const double *g = ops[1].data;
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

/* list = (param, grad, momentum buffer or data NULL) per tensor of the group (ops.def).
 * d[0] = lr, d[1] = momentum, d[2] = dampening, d[3] = weight_decay;
 * i[0] = nesterov, i[1] = first step (the buffer is set to the gradient, not blended). */
gm_status gm_cpu_SGD_STEP(gm_ctx *c, const gm_kargs *a) {
    bool nesterov = a->i[0] != 0;
    sgd_args h = {
        .lr = a->d[0], .momentum = a->d[1], .dampening = a->d[2], .wd = a->d[3],
        .ns = nesterov ? 1.0 : 0.0, .mb = nesterov ? a->d[1] : 1.0, .first = a->i[1] != 0,
    };
    return run_pieces(c, a->list, a->n_list, 3, a->nthreads,
                      a->list[0].dtype == GM_F32 ? sgd_range_f32 : sgd_range_f64, &h);
}

/* ---- Adam / AdamW ---------------------------------------------------------------------- */

typedef struct {
    double decay, l2, beta1, beta2, eps, step_size, sqrt_bc2;
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

/* ops: param, grad, m, v */
static void adam_range_f32(void *args, const gm_kview *ops, int64_t lo, int64_t hi) {
    const adam_args *h = args;
    float *p = ops[0].data, *m = ops[2].data, *v = ops[3].data;
    const float *g = ops[1].data;
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        double mi = m[i], vi = v[i];
        p[i] = (float)adam_elem(h, p[i], g[i], &mi, &vi);
        m[i] = (float)mi;
        v[i] = (float)vi;
    }
}

static void adam_range_f64(void *args, const gm_kview *ops, int64_t lo, int64_t hi) {
    const adam_args *h = args;
    double *p = ops[0].data, *m = ops[2].data, *v = ops[3].data;
    const double *g = ops[1].data;
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++) p[i] = adam_elem(h, p[i], g[i], &m[i], &v[i]);
}

/* list = (param, grad, m, v) per tensor of the group (ops.def).
 * d[0] = lr, d[1] = beta1, d[2] = beta2, d[3] = eps, d[4] = weight_decay,
 * d[5] = 1 - beta1^step, d[6] = 1 - beta2^step (bias corrections); i[0] = decoupled (AdamW). */
gm_status gm_cpu_ADAM_STEP(gm_ctx *c, const gm_kargs *a) {
    double lr = a->d[0], wd = a->d[4];
    bool decoupled = a->i[0] != 0;
    adam_args h = {
        .decay = decoupled ? 1.0 - lr * wd : 1.0, .l2 = decoupled ? 0.0 : wd,
        .beta1 = a->d[1], .beta2 = a->d[2], .eps = a->d[3], .step_size = lr / a->d[5],
        .sqrt_bc2 = sqrt(a->d[6]),
    };
    return run_pieces(c, a->list, a->n_list, 4, a->nthreads,
                      a->list[0].dtype == GM_F32 ? adam_range_f32 : adam_range_f64, &h);
}

/* ---- sum of squares, scale ------------------------------------------------------------- */

static void sumsq_range(void *args, const gm_kview *x, int64_t lo, int64_t hi) {
    double *part = (double *)args; /* one partial sum per PART */
    /* Four interleaved accumulators break the add latency chain; the order stays fixed. */
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = lo;
    if (x->dtype == GM_F32) {
        const float *p = x->data;
        for (; i + 4 <= hi; i += 4)
            for (int k = 0; k < 4; k++) acc[k] += (double)p[i + k] * p[i + k];
        for (; i < hi; i++) acc[0] += (double)p[i] * p[i];
    } else {
        const double *p = x->data;
        for (; i + 4 <= hi; i += 4)
            for (int k = 0; k < 4; k++) acc[k] += p[i + k] * p[i + k];
        for (; i < hi; i++) acc[0] += p[i] * p[i];
    }
    part[lo / PART] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
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
    gm_status st = run_pieces(c, &a->in[0], 1, 1, a->nthreads, sumsq_range, part);
    if (st == GM_OK) {
        double total = 0.0;
        for (int64_t k = 0; k < nparts; k++) total += part[k];
        *(double *)a->out[0].data += total;
    }
    if (part != &one) free(part);
    return st;
}

static void scale_range(void *args, const gm_kview *x, int64_t lo, int64_t hi) {
    double s = *(const double *)args;
    if (x->dtype == GM_F32) {
        float *p = x->data;
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) p[i] = (float)(p[i] * s);
    } else {
        double *p = x->data;
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) p[i] *= s;
    }
}

/* out[0] *= d[0], in place. */
gm_status gm_cpu_SCALE(gm_ctx *c, const gm_kargs *a) {
    double s = a->d[0];
    return run_pieces(c, &a->out[0], 1, 1, a->nthreads, scale_range, &s);
}
