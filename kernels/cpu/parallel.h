/* parallel.h: the one way CPU kernels split a loop over threads. A loop runs on the calling
 * thread unless each thread would get at least a grain of work (tests/bench/grain.c measures
 * where a second thread pays for pointwise, reduction and product loops). A threaded loop is
 * cut into chunks that the caller and the pool's workers claim one at a time
 * (kernels/cpu/parallel.c): the caller never waits for a worker that has not started (it takes
 * that worker's chunks itself), so a thread descheduled by another process costs at most the
 * chunk it holds, and waits sleep after a short spin. A kernel whose units are independent
 * gives the same bits for any thread count and any chunking. */
#ifndef GM_CPU_PARALLEL_H
#define GM_CPU_PARALLEL_H

#include <stdbool.h>
#include <stdint.h>

#include "gm.h"

/* Elements per thread at least (pointwise, reductions, row loops); products count flops
 * instead (blas.c). */
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

/* Run fn over [0, n) in ranges of units, on up to nthreads threads when each gets at least
 * min_per_thread units (else on the calling thread). Ranges run in any order, concurrently; a
 * call from inside a range runs inline. Every range is walked in pieces of GM_PAR_PIECES *
 * min_per_thread units (some 10^5 elements when the caller sized min_per_thread with
 * gm_min_units) with an interrupt poll before each, so a kernel whose units are small stops
 * within a piece without polling itself; one whose single unit can be large (a long row) polls
 * inside it too. Returns true when an interrupt stopped it: the output is then incomplete. */
#define GM_PAR_PIECES 4
bool gm_parallel_for(int64_t n, int64_t min_per_thread, int nthreads, gm_range_fn fn, void *ctx);

#endif
