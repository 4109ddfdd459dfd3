/* linalg.c (cpu): batched matrix products on OpenBLAS. The rules hand over [batch..., M, K] @
 * [batch..., K, N] views whose last two dims are row-major or transposed row-major (a
 * transposed operand goes to BLAS as CblasTrans, not as a copy); batch dims may have any
 * strides, broadcast ones stride 0. C is written directly by sgemm/dgemm with beta = 0, the
 * products split over the kernel's threads by gm_cpu_gemm (blas.h). */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "cpu.h"
#include "blas.h"

/* How BLAS reads a rows x cols matrix with strides (rs, cs): row-major (NoTrans, ld = rs) or
 * the transpose of a row-major cols x rows matrix (Trans, ld = cs). Size-1 dims take any
 * stride. False when neither fits (the rules make a contiguous copy first; core/ops/linalg.c
 * applies the same test). */
static bool blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, bool *trans, int64_t *ld) {
    int64_t minr = cols > 1 ? cols : 1, minc = rows > 1 ? rows : 1;
    if (cs == 1 || cols <= 1) {
        int64_t l = rows <= 1 ? minr : rs;
        if (l >= minr && l <= INT_MAX) {
            *trans = false;
            *ld = l;
            return true;
        }
    }
    if (rs == 1 || rows <= 1) {
        int64_t l = cols <= 1 ? minc : cs;
        if (l >= minc && l <= INT_MAX) {
            *trans = true;
            *ld = l;
            return true;
        }
    }
    return false;
}

/* MATMUL: in[0] = A [batch..., M, K], in[1] = B [batch..., K, N] (same batch shape, float,
 * same dtype, last two dims BLAS-compatible: see blas_layout), out[0] = C [batch..., M, N]
 * contiguous. C = A @ B per batch entry. */
gm_status gm_cpu_MATMUL(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *A = &a->in[0], *B = &a->in[1], *C = &a->out[0];
    int nd = C->ndim, nb = nd - 2;
    int64_t M = C->shape[nd - 2], N = C->shape[nd - 1], K = A->shape[nd - 1];
    int64_t nbatch = 1;
    for (int k = 0; k < nb; k++) nbatch *= C->shape[k];
    if (M == 0 || N == 0 || nbatch == 0) return GM_OK;
    size_t esz = C->dtype == GM_F32 ? sizeof(float) : sizeof(double);
    if (K == 0) { /* an empty sum: BLAS implementations differ on K = 0, so zero C here */
        memset(C->data, 0, (size_t)(nbatch * M * N) * esz);
        return GM_OK;
    }
    bool ta, tb;
    int64_t lda, ldb;
    if (!blas_layout(M, K, A->stride[nd - 2], A->stride[nd - 1], &ta, &lda) ||
        !blas_layout(K, N, B->stride[nd - 2], B->stride[nd - 1], &tb, &ldb))
        return gm_errf(c, GM_EINTERNAL, "matmul: operand strides are not BLAS-compatible");
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return gm_errf(c, GM_ENOTSUP, "matmul: dims %lld x %lld x %lld exceed BLAS int range",
                       (long long)M, (long long)K, (long long)N);
    gm_gemm_args g = {.f64 = C->dtype == GM_F64, .ta = ta, .tb = tb, .m = M, .n = N, .k = K, .lda = lda,
                      .ldb = ldb, .ldc = N, .alpha = 1, .beta = 0, .A = A->data, .B = B->data, .C = C->data,
                      .nb = nb, .bshape = C->shape, .astride = A->stride, .bstride = B->stride,
                      .cstride = C->stride};
    return gm_cpu_gemm(&g, a->nthreads);
}

/* LINEAR: in x [M, K] (unit column stride), w [N, K], b [N] contiguous; out y [M, N]
 * contiguous. y's rows are filled with b, then y += x w^T in one product (beta = 1, so BLAS
 * skips the pass that zeroes C for beta = 0: the bias is free). */
static void bias_rows(void *ctx, int64_t lo, int64_t hi) {
    const gm_kargs *a = ctx;
    const gm_kview *b = &a->in[2], *y = &a->out[0];
    int64_t N = y->shape[1];
    size_t row = (size_t)N * gm_dtype_size(y->dtype);
    for (int64_t r = lo; r < hi; r++) memcpy((char *)y->data + (size_t)r * row, b->data, row);
}

gm_status gm_cpu_LINEAR(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *X = &a->in[0], *Y = &a->out[0];
    int64_t M = Y->shape[0], N = Y->shape[1], K = X->shape[1];
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return gm_errf(c, GM_ENOTSUP, "linear: dims %lld x %lld x %lld exceed BLAS int range", (long long)M,
                       (long long)K, (long long)N);
    gm_parallel_for(M, gm_min_units(N), a->nthreads, bias_rows, (void *)a);
    gm_gemm_args g = {.f64 = Y->dtype == GM_F64, .ta = false, .tb = true, .m = M, .n = N, .k = K,
                      .lda = M > 1 ? X->stride[0] : K, .ldb = K, .ldc = N, .alpha = 1, .beta = 1, .A = X->data,
                      .B = a->in[1].data, .C = Y->data};
    return gm_cpu_gemm(&g, a->nthreads);
}
