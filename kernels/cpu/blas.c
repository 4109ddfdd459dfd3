/* blas.c (cpu): BLAS calls for the CPU kernels (see blas.h): single-threaded OpenBLAS, products
 * split over the kernel's threads with gm_parallel_for. */
#include <cblas.h>
#include <string.h>

#include "backend.h"
#include "blas.h"
#include "parallel.h"

/* OpenBLAS threads nothing: set once when the program loads, after OpenBLAS's own start-up
 * (a library's constructors run before those of the program that links it). */
__attribute__((constructor)) static void blas_single_threaded(void) { openblas_set_num_threads(1); }

static inline int ld1(int64_t n) { return n > 0 ? (int)n : 1; }

void gm_cpu_gemm1(bool f64, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const void *A,
                  int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { /* an empty sum: C = beta C (BLAS implementations differ on K = 0) */
        for (int64_t i = 0; i < m; i++) {
            if (f64) {
                double *r = (double *)C + i * ldc;
                for (int64_t j = 0; j < n; j++) r[j] = beta == 0 ? 0 : beta * r[j];
            } else {
                float *r = (float *)C + i * ldc;
                for (int64_t j = 0; j < n; j++) r[j] = beta == 0 ? 0 : (float)beta * r[j];
            }
        }
        return;
    }
    CBLAS_TRANSPOSE oa = ta ? CblasTrans : CblasNoTrans, ob = tb ? CblasTrans : CblasNoTrans;
    if (f64)
        cblas_dgemm(CblasRowMajor, oa, ob, (int)m, (int)n, (int)k, alpha, A, ld1(lda), B, ld1(ldb), beta, C,
                    ld1(ldc));
    else
        cblas_sgemm(CblasRowMajor, oa, ob, (int)m, (int)n, (int)k, (float)alpha, A, ld1(lda), B, ld1(ldb),
                    (float)beta, C, ld1(ldc));
}

/* Flops between interrupt polls inside one thread's share. */
#define GEMM_POLL_FLOP (1 << 29)

typedef struct {
    const gm_gemm_args *g;
    bool split_n;   /* pieces are column ranges of C (else row ranges) */
    int64_t parts;  /* pieces per product */
    int64_t step;   /* rows (columns) per BLAS call inside a piece */
    size_t esz;
    int stop;
} gemm_work;

/* Start of piece p of a dim of length d cut into parts: a multiple of 16 (the last ends at d). */
static int64_t cut(int64_t d, int64_t parts, int64_t p) {
    return p >= parts ? d : d * p / parts / 16 * 16;
}

static void gemm_range(void *ctx, int64_t lo, int64_t hi) {
    gemm_work *w = ctx;
    const gm_gemm_args *g = w->g;
    int64_t D = w->split_n ? g->n : g->m;
    for (int64_t u = lo; u < hi; u++) {
        int64_t b = u / w->parts, p = u % w->parts;
        const char *A = (const char *)g->A, *B = (const char *)g->B;
        char *C = g->C;
        if (g->nb > 0) {
            A += (size_t)gm_shape_offset(g->nb, g->bshape, g->astride, b) * w->esz;
            B += (size_t)gm_shape_offset(g->nb, g->bshape, g->bstride, b) * w->esz;
            C += (size_t)gm_shape_offset(g->nb, g->bshape, g->cstride, b) * w->esz;
        }
        for (int64_t s = cut(D, w->parts, p), e = cut(D, w->parts, p + 1); s < e; s += w->step) {
            if (gm_halted(&w->stop)) return;
            int64_t len = e - s < w->step ? e - s : w->step;
            if (w->split_n) /* columns s.. of op(B) and C */
                gm_cpu_gemm1(g->f64, g->ta, g->tb, g->m, len, g->k, g->alpha, A,
                             g->lda, B + (size_t)(s * (g->tb ? g->ldb : 1)) * w->esz, g->ldb, g->beta,
                             C + (size_t)s * w->esz, g->ldc);
            else /* rows s.. of op(A) and C */
                gm_cpu_gemm1(g->f64, g->ta, g->tb, len, g->n, g->k, g->alpha,
                             A + (size_t)(s * (g->ta ? 1 : g->lda)) * w->esz, g->lda, B, g->ldb, g->beta,
                             C + (size_t)(s * g->ldc) * w->esz, g->ldc);
        }
    }
}

gm_status gm_cpu_gemm(const gm_gemm_args *g, int nthreads) {
    int64_t nbatch = 1;
    for (int i = 0; i < g->nb; i++) nbatch *= g->bshape[i];
    if (g->m <= 0 || g->n <= 0 || nbatch <= 0) return GM_OK;
    double flop = 2.0 * (double)g->m * (double)g->n * (double)(g->k > 0 ? g->k : 1);
    double most = flop * (double)nbatch / GM_GEMM_MIN_FLOP;
    int64_t nt = nthreads < 1 ? 1 : nthreads;
    if ((double)nt > most) nt = most < 1 ? 1 : (int64_t)most;
    gemm_work w = {.g = g, .split_n = g->n > g->m, .parts = 1, .esz = g->f64 ? sizeof(double) : sizeof(float)};
    int64_t D = w.split_n ? g->n : g->m, other = w.split_n ? g->m : g->n;
    if (nbatch < nt) { /* cut each product into pieces of at least 16 rows (columns) */
        w.parts = (nt + nbatch - 1) / nbatch;
        if (w.parts > (D + 15) / 16) w.parts = (D + 15) / 16;
        if (w.parts < 1) w.parts = 1;
    }
    double per_row = 2.0 * (double)other * (double)(g->k > 0 ? g->k : 1);
    w.step = (int64_t)(GEMM_POLL_FLOP / per_row) / 16 * 16;
    if (w.step < 16) w.step = 16;
    gm_parallel_for(nbatch * w.parts, 1, (int)nt, gemm_range, &w);
    return w.stop ? GM_EINTR : GM_OK;
}
