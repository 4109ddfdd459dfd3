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

/* Polling by work done, for loops whose stretches can be long (one row of 2^28 elements) or
 * short (2^28 rows of one): add each stretch's element count to *done; every GM_POLL_WORK
 * elements this polls. */
#define GM_POLL_WORK ((int64_t)1 << 16)
static inline bool gm_tick(int *stop, int64_t *done, int64_t work) {
    if ((*done += work) < GM_POLL_WORK) return false;
    *done = 0;
    return gm_halted(stop);
}

/* One thread's range [lo, hi) in pieces of grain units with an interrupt poll before each, so
 * a kernel whose units are small stops within a piece without polling itself. */
static inline void gm_range_pieces(gm_range_fn fn, void *ctx, int64_t lo, int64_t hi,
                                   int64_t grain, int *stop) {
    for (int64_t s = lo; s < hi; s += grain) {
        if (gm_halted(stop)) return;
        fn(ctx, s, hi - s < grain ? hi : s + grain);
    }
}

/* Run fn over [0, n) in up to nthreads ranges of at least min_per_thread units each. Each range
 * is walked in pieces of GM_PAR_PIECES * min_per_thread units (some 10^5 elements when the
 * caller sized min_per_thread with gm_min_units), polling for an interrupt between pieces; a
 * kernel whose single unit can be large (one long row) polls inside it as well. Returns true
 * when an interrupt stopped it: the output is then incomplete. */
#define GM_PAR_PIECES 4
static inline bool gm_parallel_for(int64_t n, int64_t min_per_thread, int nthreads, gm_range_fn fn,
                                   void *ctx) {
    int64_t most = min_per_thread > 0 ? n / min_per_thread : n;
    int64_t grain = GM_PAR_PIECES * (min_per_thread > 0 ? min_per_thread : 1);
    int nt = nthreads < most ? nthreads : (int)most, stop = 0;
    if (nt <= 1) {
        if (n > 0) gm_range_pieces(fn, ctx, 0, n, grain, &stop);
        return stop != 0;
    }
    #pragma omp parallel num_threads(nt)
    {
        int64_t t = omp_get_thread_num(), k = omp_get_num_threads();
        gm_range_pieces(fn, ctx, n * t / k, n * (t + 1) / k, grain, &stop);
    }
    return stop != 0;
}

#endif
