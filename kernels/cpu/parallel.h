/* parallel.h: the one way CPU kernels split a loop over threads. Work below a size threshold
 * runs inline on the calling thread: entering an OpenMP region costs a futex round trip even
 * when its if() clause is false, which would dominate every small op. Each thread gets one
 * contiguous range [lo, hi) of a fixed partition, so a kernel whose units are independent gives
 * the same bits for any thread count. */
#ifndef GM_CPU_PARALLEL_H
#define GM_CPU_PARALLEL_H

#include <omp.h>
#include <stdint.h>

typedef void (*gm_range_fn)(void *ctx, int64_t lo, int64_t hi);

/* Run fn over [0, n) in up to nthreads ranges of at least min_per_thread units each. */
static inline void gm_parallel_for(int64_t n, int64_t min_per_thread, int nthreads, gm_range_fn fn,
                                   void *ctx) {
    int64_t most = min_per_thread > 0 ? n / min_per_thread : n;
    int nt = nthreads < most ? nthreads : (int)most;
    if (nt <= 1) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    #pragma omp parallel num_threads(nt)
    {
        int64_t t = omp_get_thread_num(), k = omp_get_num_threads();
        fn(ctx, n * t / k, n * (t + 1) / k);
    }
}

#endif
