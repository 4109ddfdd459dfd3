/* blas.h: the one way CPU kernels call BLAS. OpenBLAS runs single-threaded for the whole
 * process (set once at load); products are split over the kernel's threads here, with
 * gm_parallel_for, like every other kernel. OpenBLAS's own pool would otherwise spin
 * (sched_yield) between calls on the cores the OpenMP threads of the next kernel need: on a
 * 2-core machine that spinning took a quarter of a training step.
 *
 * A product split over threads is cut along M (or N when N > M) at multiples of 16 rows, one
 * piece per thread, each one single-threaded BLAS call. OpenBLAS does not always sum an element
 * of a piece in the order it sums it in the whole product (small-matrix and edge paths), so a
 * product is bitwise reproducible for a thread count but may differ in the last bits between
 * thread counts (tests/lua/t_threads.lua). Batches of products give whole entries to threads. */
#ifndef GM_CPU_BLAS_H
#define GM_CPU_BLAS_H

#include <stdbool.h>
#include <stdint.h>

#include "gm.h"

/* Flops a thread gets at least (about 20 us of sgemm): less runs on fewer threads. */
#define GM_GEMM_MIN_FLOP (1 << 21)

/* C = alpha op(A) op(B) + beta C for row-major f32 (f64 = false) or f64 matrices, on the calling
 * thread. Leading dimensions below 1 are raised to 1 (BLAS wants ld >= 1 for empty dims). */
void gm_cpu_gemm1(bool f64, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const void *A,
                  int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc);

/* A batch of products C_b = alpha op(A_b) op(B_b) + beta C_b. Entry b of the batch (row-major
 * over the nb dims bshape) starts at element offsets gm_shape_offset(nb, bshape, astride, b) of
 * A (likewise B, C); nb = 0 is a single product. */
typedef struct {
    bool f64, ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    double alpha, beta;
    const void *A, *B;
    void *C;
    int nb;
    const int64_t *bshape, *astride, *bstride, *cstride;
} gm_gemm_args;

/* Run g split over up to nthreads threads (small products stay on the calling thread); polls
 * for Ctrl-C between pieces of at most ~2^29 flops. GM_OK or GM_EINTR. */
gm_status gm_cpu_gemm(const gm_gemm_args *g, int nthreads);

#endif
