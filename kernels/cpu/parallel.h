/* parallel.h: the one way CPU kernels split a loop over threads. Work below a size threshold
 * runs inline on the calling thread: entering an OpenMP region costs a futex round trip even
 * when its if() clause is false, which would dominate every small op. Each thread gets one
 * contiguous range [lo, hi) of a fixed partition, so a kernel whose units are independent gives
 * the same bits for any thread count. */
#ifndef GM_CPU_PARALLEL_H
#define GM_CPU_PARALLEL_H

#include <omp.h>
#include <stdbool.h>
#include <stdint.h>

#include "gm.h"

/* Elements per thread at least; less work runs inline on the calling thread. */
#define GM_PAR_MIN 32768

typedef void (*gm_range_fn)(void *ctx, int64_t lo, int64_t hi);

/* Units of per_unit elements each to hand a thread, so that it gets at least GM_PAR_MIN
 * elements (the min_per_thread of gm_parallel_for for a loop over rows, outputs, ...). */
static inline int64_t gm_min_units(int64_t per_unit) {
    return per_unit >= GM_PAR_MIN ? 1 : GM_PAR_MIN / (per_unit > 0 ? per_unit : 1);
}

/* Has a range seen an interrupt (its own poll or another range's)? The first to see one sets
 * *stop (shared by the ranges of one kernel) so the others end at their next poll. */
static inline bool gm_halted(int *stop) {
    if (__atomic_load_n(stop, __ATOMIC_RELAXED)) return true;
    if (!gm_interrupted()) return false;
    __atomic_store_n(stop, 1, __ATOMIC_RELAXED);
    return true;
}

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
