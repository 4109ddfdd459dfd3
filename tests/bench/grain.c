/* grain.c: where a second kernel thread starts to pay on this machine (issue 16), for the grain
 * sizes of kernels/cpu/parallel.h and blas.h. For each kind of loop and size n it times the
 * loop on the calling thread against gm_parallel_for over 2 threads with no size threshold
 * (min_per_thread half the units), interleaved, and prints the ratio and the crossover: the smallest n from
 * which 2 threads take < 0.9x the 1-thread time at every larger size. Kinds: pointwise
 * (y = a + b, f32), transcendental (y = exp(a), f32: gelu, softmax and cross-entropy rows cost
 * about this much per element), reduction (sum of f32 in fixed 4096-element pieces), product
 * (sgemm m x m x m, cut into row pieces of 16). Run by `make bench` with the repeat count. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../../kernels/cpu/blas.h"
#include "../../kernels/cpu/parallel.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    float *a, *b, *y;
    double *part;
    int m;
} job;

static void add_range(void *ctx, int64_t lo, int64_t hi) {
    job *j = ctx;
    for (int64_t i = lo; i < hi; i++) j->y[i] = j->a[i] + j->b[i];
}
static void exp_range(void *ctx, int64_t lo, int64_t hi) {
    job *j = ctx;
    for (int64_t i = lo; i < hi; i++) j->y[i] = expf(j->a[i]);
}
static void sum_range(void *ctx, int64_t lo, int64_t hi) { /* units: pieces of 4096 */
    job *j = ctx;
    for (int64_t p = lo; p < hi; p++) {
        float s = 0;
        for (int64_t i = p * 4096; i < (p + 1) * 4096; i++) s += j->a[i];
        j->part[p] = s;
    }
}
static void mm_range(void *ctx, int64_t lo, int64_t hi) { /* units: 16-row pieces */
    job *j = ctx;
    int m = j->m;
    int64_t r0 = lo * 16, r1 = hi * 16 < m ? hi * 16 : m;
    gm_cpu_gemm1(false, false, false, r1 - r0, m, m, 1.0, j->a + r0 * m, m, j->b, m, 0.0, j->y + r0 * m, m);
}

typedef struct {
    const char *name, *unit;
    gm_range_fn fn;
    int64_t lo, hi; /* sizes: elements, or m for products */
} kind;

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Median of the per-call time of fn over reps rounds of `inner` calls, 1 thread and 2 threads
 * interleaved; returns the ratio 2 threads / 1 thread. */
static double ratio(const kind *k, int64_t n, job *j, int reps, double *t1_out) {
    int64_t units = k->fn == sum_range ? n / 4096 : k->fn == mm_range ? (n + 15) / 16 : n;
    double work = k->fn == mm_range ? 2.0 * n * n * n * 1e-9 / 20 : (double)n * 1e-9; /* ~s per call */
    int inner = (int)(2e-3 / (work > 1e-7 ? work : 1e-7));
    if (inner < 1) inner = 1;
    if (inner > 20000) inner = 20000;
    double *t1 = malloc(sizeof(double) * (size_t)reps), *t2 = malloc(sizeof(double) * (size_t)reps);
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        for (int w = 0; w < 2; w++) {
            int two = (r + w) % 2 == 0;
            double t0 = now();
            for (int i = 0; i < inner; i++) {
                /* min_per_thread = half the units: always 2 threads when there are 2 units,
                 * and pieces as large as the kernels' (the pool runs a range in pieces of
                 * GM_PAR_PIECES x min_per_thread units with an interrupt poll before each; with
                 * min 1 that was one call per 4 elements, which made 2 threads look 2-30x
                 * slower than 1 for adds and products) */
                if (two) gm_parallel_for(units, units / 2 > 0 ? units / 2 : 1, 2, k->fn, j);
                else k->fn(j, 0, units);
            }
            double dt = (now() - t0) / inner;
            if (r >= 0) (two ? t2 : t1)[r] = dt;
        }
    }
    qsort(t1, (size_t)reps, sizeof(double), cmp);
    qsort(t2, (size_t)reps, sizeof(double), cmp);
    double q = t2[reps / 2] / t1[reps / 2];
    *t1_out = t1[reps / 2];
    free(t1), free(t2);
    return q;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 15;
    if (reps < 3) reps = 3;
    int64_t most = (int64_t)1 << 22;
    job j = {malloc(sizeof(float) * most), malloc(sizeof(float) * most), malloc(sizeof(float) * most),
             malloc(sizeof(double) * (most / 4096)), 0};
    for (int64_t i = 0; i < most; i++) j.a[i] = (float)(i % 7) * 0.1f, j.b[i] = 1.0f, j.y[i] = 0;
    const kind kinds[] = {
        {"pointwise add f32", "elements", add_range, 1 << 12, 1 << 22},
        {"exp f32", "elements", exp_range, 1 << 10, 1 << 20},
        {"sum f32 (4096-element pieces)", "elements", sum_range, 1 << 13, 1 << 22},
        {"sgemm m^3", "m", mm_range, 16, 512},
    };
    printf("# grain: 2 threads (gm_parallel_for, no threshold) / 1 thread, median of %d; crossover = the\n"
           "# smallest size from which 2 threads take < 0.9x at every larger size. Grains in use: %d elements\n"
           "# per thread (GM_PAR_MIN), %d flops per thread (GM_GEMM_MIN_FLOP)\n",
           reps, GM_PAR_MIN, GM_GEMM_MIN_FLOP);
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        const kind *kd = &kinds[k];
        int64_t cross = -1;
        printf("%-30s", kd->name);
        for (int64_t n = kd->lo; n <= kd->hi; n *= 2) {
            double t1, q = ratio(kd, n, &j, reps, &t1);
            printf(" %lld:%.2f", (long long)n, q);
            if (q < 0.9 && cross < 0) cross = n;
            if (q >= 0.9) cross = -1;
        }
        if (cross > 0 && kd->fn == mm_range)
            printf("\n  crossover m = %lld (%.3g flops, %.3g per thread)\n", (long long)cross,
                   2.0 * cross * cross * cross, 1.0 * cross * cross * cross);
        else if (cross > 0)
            printf("\n  crossover n = %lld %s (%lld per thread)\n", (long long)cross, kd->unit, (long long)cross / 2);
        else
            printf("\n  no crossover in range\n");
    }
    return 0;
}
