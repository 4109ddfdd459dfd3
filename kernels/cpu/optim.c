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

/* Elements per block between interrupt polls; a block is split across threads when large. */
#define BLOCK ((int64_t)1 << 18)
/* Elements per partial sum of SUMSQ: fixed, so the result does not depend on thread count. */
#define SUMSQ_CHUNK ((int64_t)1 << 14)
#define PAR_MIN 32768

/* sqrt may set errno, and that path keeps GCC from vectorising the Adam loops; the argument
 * is never negative there, so the errno path is dead. */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_ERRNO __attribute__((optimize("no-math-errno")))
#else
#define NO_ERRNO
#endif

static int64_t numel(const gm_kview *v) {
    int64_t n = 1;
    for (int i = 0; i < v->ndim; i++) n *= v->shape[i];
    return n;
}

/* ---- SGD ------------------------------------------------------------------------------ */

typedef struct {
    double lr, momentum, dampening, wd;
    bool nesterov, first, has_buf;
} sgd_hp;

/* torch.optim.SGD for one element: returns the new parameter, updates *buf. */
static inline double sgd_elem(const sgd_hp *h, double p, double g, double *buf) {
    g += h->wd * p;
    if (h->has_buf) {
        double b = h->first ? g : h->momentum * *buf + (1.0 - h->dampening) * g;
        *buf = b;
        g = h->nesterov ? g + h->momentum * b : b;
    }
    return p - h->lr * g;
}

static void sgd_f32(const sgd_hp *h, float *p, const float *g, float *buf, int64_t n, int nth) {
    #pragma omp parallel for num_threads(nth) if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double b = h->has_buf ? buf[i] : 0.0;
        p[i] = (float)sgd_elem(h, p[i], g[i], &b);
        if (h->has_buf) buf[i] = (float)b;
    }
}

static void sgd_f64(const sgd_hp *h, double *p, const double *g, double *buf, int64_t n,
                    int nth) {
    #pragma omp parallel for num_threads(nth) if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double b = h->has_buf ? buf[i] : 0.0;
        p[i] = sgd_elem(h, p[i], g[i], &b);
        if (h->has_buf) buf[i] = b;
    }
}

/* out[0] = param (updated), in[0] = grad, out[1] = momentum buffer when n_out == 2.
 * d[0] = lr, d[1] = momentum, d[2] = dampening, d[3] = weight_decay;
 * i[0] = nesterov, i[1] = first step (the buffer is set to the gradient, not blended). */
gm_status gm_cpu_SGD_STEP(gm_ctx *c, const gm_kargs *a) {
    sgd_hp h = {a->d[0], a->d[1], a->d[2], a->d[3], a->i[0] != 0, a->i[1] != 0, a->n_out > 1};
    int64_t n = numel(&a->out[0]);
    (void)c;
    for (int64_t s = 0; s < n; s += BLOCK) {
        if (gm_interrupted()) return GM_EINTR;
        int64_t len = n - s < BLOCK ? n - s : BLOCK;
        if (a->out[0].dtype == GM_F32)
            sgd_f32(&h, (float *)a->out[0].data + s, (const float *)a->in[0].data + s,
                    h.has_buf ? (float *)a->out[1].data + s : NULL, len, a->nthreads);
        else
            sgd_f64(&h, (double *)a->out[0].data + s, (const double *)a->in[0].data + s,
                    h.has_buf ? (double *)a->out[1].data + s : NULL, len, a->nthreads);
    }
    return GM_OK;
}

/* ---- Adam / AdamW ---------------------------------------------------------------------- */

typedef struct {
    double decay, l2, beta1, beta2, eps, step_size, sqrt_bc2;
} adam_hp;

/* torch.optim.Adam / AdamW for one element: returns the new parameter, updates *m, *v.
 * Weight decay is branch-free so the loops vectorise: AdamW has decay = 1 - lr*wd, l2 = 0;
 * Adam has decay = 1, l2 = wd (g += wd*p). Same order of operations as PyTorch after that:
 * denom = sqrt(v) / sqrt(bc2) + eps, p -= (lr / bc1) * m / denom. */
NO_ERRNO static inline double adam_elem(const adam_hp *h, double p, double g, double *m, double *v) {
    p *= h->decay;
    g += h->l2 * p;
    *m = h->beta1 * *m + (1.0 - h->beta1) * g;
    *v = h->beta2 * *v + (1.0 - h->beta2) * g * g;
    double denom = sqrt(*v) / h->sqrt_bc2 + h->eps;
    return p - h->step_size * *m / denom;
}

NO_ERRNO static void adam_f32(const adam_hp *h, float *p, const float *g, float *m, float *v, int64_t n,
                     int nth) {
    #pragma omp parallel for simd num_threads(nth) if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double mi = m[i], vi = v[i];
        p[i] = (float)adam_elem(h, p[i], g[i], &mi, &vi);
        m[i] = (float)mi;
        v[i] = (float)vi;
    }
}

NO_ERRNO static void adam_f64(const adam_hp *h, double *p, const double *g, double *m, double *v,
                     int64_t n, int nth) {
    #pragma omp parallel for simd num_threads(nth) if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) p[i] = adam_elem(h, p[i], g[i], &m[i], &v[i]);
}

/* out[0] = param, in[0] = grad, out[1] = m (first moment), out[2] = v (second moment).
 * d[0] = lr, d[1] = beta1, d[2] = beta2, d[3] = eps, d[4] = weight_decay,
 * d[5] = 1 - beta1^step, d[6] = 1 - beta2^step (bias corrections); i[0] = decoupled (AdamW). */
gm_status gm_cpu_ADAM_STEP(gm_ctx *c, const gm_kargs *a) {
    double lr = a->d[0], wd = a->d[4];
    bool decoupled = a->i[0] != 0;
    adam_hp h = {decoupled ? 1.0 - lr * wd : 1.0, decoupled ? 0.0 : wd, a->d[1], a->d[2], a->d[3],
                 lr / a->d[5], sqrt(a->d[6])};
    int64_t n = numel(&a->out[0]);
    (void)c;
    for (int64_t s = 0; s < n; s += BLOCK) {
        if (gm_interrupted()) return GM_EINTR;
        int64_t len = n - s < BLOCK ? n - s : BLOCK;
        if (a->out[0].dtype == GM_F32)
            adam_f32(&h, (float *)a->out[0].data + s, (const float *)a->in[0].data + s,
                     (float *)a->out[1].data + s, (float *)a->out[2].data + s, len, a->nthreads);
        else
            adam_f64(&h, (double *)a->out[0].data + s, (const double *)a->in[0].data + s,
                     (double *)a->out[1].data + s, (double *)a->out[2].data + s, len,
                     a->nthreads);
    }
    return GM_OK;
}

/* ---- sum of squares, scale ------------------------------------------------------------- */

static double sumsq_chunk(const gm_kview *x, int64_t s, int64_t len) {
    double acc = 0.0;
    if (x->dtype == GM_F32) {
        const float *p = (const float *)x->data + s;
        for (int64_t i = 0; i < len; i++) acc += (double)p[i] * p[i];
    } else {
        const double *p = (const double *)x->data + s;
        for (int64_t i = 0; i < len; i++) acc += p[i] * p[i];
    }
    return acc;
}

/* out[0] (f64, one element) += sum of in[0]^2, accumulated in double. Fixed-size chunks
 * are summed independently (in parallel when large) and their partial sums added in order,
 * so the result is the same for any thread count. */
gm_status gm_cpu_SUMSQ(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *x = &a->in[0];
    int64_t n = numel(x), nchunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double total = 0.0;
    if (nchunks <= 1) {
        total = sumsq_chunk(x, 0, n);
    } else {
        double *part = malloc((size_t)nchunks * sizeof *part);
        if (!part) return gm_errf(c, GM_ENOMEM, "sumsq: out of memory for %lld partial sums",
                                  (long long)nchunks);
        int64_t per_block = BLOCK / SUMSQ_CHUNK;
        for (int64_t b0 = 0; b0 < nchunks; b0 += per_block) {
            if (gm_interrupted()) {
                free(part);
                return GM_EINTR;
            }
            int64_t b1 = b0 + per_block < nchunks ? b0 + per_block : nchunks;
            #pragma omp parallel for num_threads(a->nthreads) if (b1 - b0 > 2) schedule(static)
            for (int64_t k = b0; k < b1; k++) {
                int64_t s = k * SUMSQ_CHUNK;
                part[k] = sumsq_chunk(x, s, n - s < SUMSQ_CHUNK ? n - s : SUMSQ_CHUNK);
            }
        }
        for (int64_t k = 0; k < nchunks; k++) total += part[k];
        free(part);
    }
    *(double *)a->out[0].data += total;
    return GM_OK;
}

/* out[0] *= d[0], in place. */
gm_status gm_cpu_SCALE(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *y = &a->out[0];
    int64_t n = numel(y);
    double s = a->d[0];
    (void)c;
    for (int64_t b = 0; b < n; b += BLOCK) {
        if (gm_interrupted()) return GM_EINTR;
        int64_t len = n - b < BLOCK ? n - b : BLOCK;
        if (y->dtype == GM_F32) {
            float *p = (float *)y->data + b;
            #pragma omp parallel for num_threads(a->nthreads) if (len > PAR_MIN) schedule(static)
            for (int64_t i = 0; i < len; i++) p[i] = (float)(p[i] * s);
        } else {
            double *p = (double *)y->data + b;
            #pragma omp parallel for num_threads(a->nthreads) if (len > PAR_MIN) schedule(static)
            for (int64_t i = 0; i < len; i++) p[i] *= s;
        }
    }
    return GM_OK;
}
