/* parallel.c (cpu): the thread pool behind gm_parallel_for (parallel.h). A threaded loop is
 * cut into chunks; the caller publishes the job, wakes the workers and claims chunks itself,
 * each thread taking the next unclaimed chunk until none is left; then the caller waits only for
 * chunks a worker has claimed and not finished. A worker that is not running (another process
 * holds its core) claims nothing and delays nothing, where an OpenMP region would wait at its
 * closing barrier for it (the small MoE step ran 1.75x its 1-thread time beside one busy
 * process). Idle workers and the waiting caller spin briefly, yielding the core each round so a
 * thread that shares it runs, then sleep on a futex. Linux only (futex). */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "parallel.h"

#define MAX_WORKERS 63
/* Chunks per thread: enough that a slow or late thread leaves its share to the others. */
#define CHUNKS_PER_THREAD 4
/* Spin before sleeping: long enough to catch the next kernel of a training step (a few us of
 * Lua and dispatch apart), short enough not to hold a core while Lua runs longer. */
#define IDLE_SPIN_NS 20000
#define WAIT_SPIN_NS 20000

static struct {
    /* the job: written by the caller before it publishes state; read by a worker only after
     * it claimed a chunk, so it cannot change under the worker */
    gm_range_fn fn;
    void *ctx;
    int64_t n, nchunks, grain; /* grain: units per interrupt poll (parallel.h) */
    int stop;           /* an interrupt was seen: every thread ends at its next poll */
    int helpers;        /* workers with id < helpers take part */
    uint64_t state;     /* job (its gen) << 32 | next unclaimed chunk */
    uint32_t done;      /* chunks finished by workers (the caller's futex word) */
    uint32_t caller_sleeps;
    uint32_t gen;       /* the current job's number, the workers' futex word */
    int busy;           /* a job is running (a second caller thread runs inline) */
    uint32_t sleepers;  /* workers asleep on gen */
    int started;        /* workers created */
    pthread_mutex_t grow;
} P = {.grow = PTHREAD_MUTEX_INITIALIZER};

static __thread bool in_range; /* this thread is running a range: nested loops run inline */

/* fn over [lo, hi) in pieces of grain units, with an interrupt poll before each. */
static void run_pieces(gm_range_fn fn, void *ctx, int64_t lo, int64_t hi, int64_t grain, int *stop) {
    for (int64_t s = lo; s < hi; s += grain) {
        if (gm_halted(stop)) return;
        fn(ctx, s, hi - s < grain ? hi : s + grain);
    }
}

static long futex(uint32_t *w, int op, uint32_t v) {
    return syscall(SYS_futex, w, op | FUTEX_PRIVATE_FLAG, v, NULL, NULL, 0);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spin (yielding) until *w != v or ns pass; true when it changed. */
static bool spin_until_change(const uint32_t *w, uint32_t v, int64_t ns) {
    int64_t end = 0;
    for (int i = 0;; i++) {
        if (__atomic_load_n(w, __ATOMIC_ACQUIRE) != v) return true;
        if ((i & 15) == 15) {
            int64_t t = now_ns();
            if (!end) end = t + ns;
            else if (t > end) return false;
        }
        sched_yield();
    }
}

/* Claim the next chunk of job `job`: its index, or -1 when the job is finished or replaced. */
static int64_t claim(uint32_t job) {
    uint64_t s = __atomic_load_n(&P.state, __ATOMIC_ACQUIRE);
    for (;;) {
        if ((uint32_t)(s >> 32) != job || (int64_t)(uint32_t)s >= __atomic_load_n(&P.nchunks, __ATOMIC_RELAXED))
            return -1;
        if (__atomic_compare_exchange_n(&P.state, &s, s + 1, true, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return (int64_t)(uint32_t)s;
    }
}

/* Run the chunks this thread can claim; returns how many it ran. */
static uint32_t run_chunks(uint32_t job) {
    uint32_t ran = 0;
    int64_t c;
    in_range = true;
    while ((c = claim(job)) >= 0) {
        int64_t n = P.n, k = P.nchunks;
        run_pieces(P.fn, P.ctx, n * c / k, n * (c + 1) / k, P.grain, &P.stop);
        ran++;
    }
    in_range = false;
    return ran;
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint32_t seen = __atomic_load_n(&P.gen, __ATOMIC_ACQUIRE);
    for (;;) {
        if (!spin_until_change(&P.gen, seen, IDLE_SPIN_NS)) {
            __atomic_add_fetch(&P.sleepers, 1, __ATOMIC_SEQ_CST);
            while (__atomic_load_n(&P.gen, __ATOMIC_SEQ_CST) == seen) futex(&P.gen, FUTEX_WAIT, seen);
            __atomic_sub_fetch(&P.sleepers, 1, __ATOMIC_SEQ_CST);
        }
        seen = __atomic_load_n(&P.gen, __ATOMIC_ACQUIRE);
        if (id >= __atomic_load_n(&P.helpers, __ATOMIC_RELAXED)) continue;
        uint32_t ran = run_chunks(seen);
        if (!ran) continue;
        __atomic_add_fetch(&P.done, ran, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&P.caller_sleeps, __ATOMIC_SEQ_CST)) futex(&P.done, FUTEX_WAKE, 1);
    }
    return NULL;
}

/* Create workers up to n (false if none could be). */
static bool grow(int n) {
    if (n > MAX_WORKERS) n = MAX_WORKERS;
    if (__atomic_load_n(&P.started, __ATOMIC_ACQUIRE) >= n) return true;
    pthread_mutex_lock(&P.grow);
    while (P.started < n) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int bad = pthread_create(&t, &at, worker, (void *)(intptr_t)P.started);
        pthread_attr_destroy(&at);
        if (bad) break;
        __atomic_add_fetch(&P.started, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&P.grow);
    return P.started > 0;
}

bool gm_parallel_for(int64_t n, int64_t min_per_thread, int nthreads, gm_range_fn fn, void *ctx) {
    int64_t most = min_per_thread > 0 ? n / min_per_thread : n;
    int64_t grain = GM_PAR_PIECES * (min_per_thread > 0 ? min_per_thread : 1);
    int nt = nthreads < most ? nthreads : (int)most;
    if (nt <= 1 || in_range || !grow(nt - 1) || __atomic_exchange_n(&P.busy, 1, __ATOMIC_ACQUIRE)) {
        int stop = 0;
        if (n > 0) run_pieces(fn, ctx, 0, n, grain, &stop);
        return stop != 0;
    }
    if (nt - 1 > P.started) nt = P.started + 1;
    int64_t chunks = (int64_t)nt * CHUNKS_PER_THREAD;
    if (chunks > n) chunks = n;
    uint32_t job = __atomic_load_n(&P.gen, __ATOMIC_RELAXED) + 1;
    P.fn = fn;
    P.ctx = ctx;
    P.n = n;
    P.grain = grain;
    P.stop = 0;
    __atomic_store_n(&P.nchunks, chunks, __ATOMIC_RELAXED);
    __atomic_store_n(&P.helpers, nt - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&P.done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&P.state, (uint64_t)job << 32, __ATOMIC_RELEASE);
    __atomic_store_n(&P.gen, job, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&P.sleepers, __ATOMIC_SEQ_CST)) futex(&P.gen, FUTEX_WAKE, INT_MAX);
    uint32_t mine = run_chunks(job);
    /* wait for the chunks workers claimed; a claimed chunk is running, so spin first */
    uint32_t want = (uint32_t)chunks - mine, d;
    while ((d = __atomic_load_n(&P.done, __ATOMIC_ACQUIRE)) != want) {
        if (spin_until_change(&P.done, d, WAIT_SPIN_NS)) continue;
        __atomic_store_n(&P.caller_sleeps, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&P.done, __ATOMIC_SEQ_CST) == d) futex(&P.done, FUTEX_WAIT, d);
        __atomic_store_n(&P.caller_sleeps, 0, __ATOMIC_SEQ_CST);
    }
    bool stopped = __atomic_load_n(&P.stop, __ATOMIC_RELAXED) != 0;
    __atomic_store_n(&P.busy, 0, __ATOMIC_RELEASE);
    return stopped;
}
