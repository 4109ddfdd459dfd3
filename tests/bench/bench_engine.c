/* bench_engine.c: wall-clock benchmarks of the engine against the machine, in one process.
 * Links the engine objects (no Lua) and compares gm_matmul with a direct cblas_sgemm on the same
 * OpenBLAS and thread count (target 2), and a contiguous f32 gm_add of 2^24 elements with a
 * STREAM-style triad run with the thread count the engine's kernels use (target 3).
 * Prints table rows (name, median [min..max], target, ratio, verdict); verdicts use medians of
 * interleaved repeats, and the min/min ratio is shown too since noise from other processes only
 * ever adds time. Built and run by tests/bench/run.sh. Usage: bench_engine [repeats]. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "gm.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct stats { double med, min, max; } stats;

static stats summarise(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    stats s = {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t[0], t[n - 1]};
    return s;
}

static void row(const char *name, const char *measured, const char *target, double ratio,
                int pass) {
    printf("%-36s %-30s %-14s %7.3f  %s\n", name, measured, target, ratio, pass ? "PASS" : "FAIL");
}

static void info(const char *name, const char *measured) {
    printf("%-36s %-30s %-14s %7s  %s\n", name, measured, "-", "-", "info");
}

static void die(gm_ctx *c, gm_status s, const char *what) {
    fprintf(stderr, "bench_engine: %s: %s: %s\n", what, gm_status_name(s), gm_errmsg(c));
    exit(1);
}

/* ---- target 2: gm_matmul vs cblas_sgemm, 1024^3 f32 -------------------------------------- */
static void bench_matmul(gm_ctx *c, int reps, int nt) {
    enum { N = 1024 };
    int64_t shape[2] = {N, N};
    gm_tensor *a, *b, *out;
    gm_status s;
    if ((s = gm_tensor_new(c, GM_F32, GM_CPU, 2, shape, &a)) ||
        (s = gm_tensor_new(c, GM_F32, GM_CPU, 2, shape, &b)))
        die(c, s, "matmul inputs");
    gm_generator g;
    gm_generator_init(&g, 1);
    if ((s = gm_rand_fill(c, a, GM_RAND_NORMAL, 0, 1, &g)) ||
        (s = gm_rand_fill(c, b, GM_RAND_NORMAL, 0, 1, &g)))
        die(c, s, "matmul fill");
    float *C = aligned_alloc(64, sizeof(float) * N * N);
    const float *A = gm_tensor_data(a), *B = gm_tensor_data(b);
    double *tg = malloc(sizeof(double) * (size_t)reps), *tb = malloc(sizeof(double) * (size_t)reps);
    /* The reference is OpenBLAS threading the product itself over the same number of threads
     * (the engine keeps OpenBLAS single-threaded and splits products over its own kernel threads,
     * kernels/cpu/blas.h). The two run in separate blocks, the reference first, with a pause
     * before the engine's block: OpenBLAS's idle workers spin for a while after a call and
     * would steal the cores of whatever runs next, so interleaving them penalises the engine. */
    openblas_set_num_threads(nt);
    for (int r = -2; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, A, N, B, N, 0.0f, C, N);
        if (r >= 0) tb[r] = now() - t0;
    }
    openblas_set_num_threads(1);
    struct timespec pause = {0, 300 * 1000 * 1000};
    nanosleep(&pause, NULL);
    for (int r = -2; r < reps; r++) {
        double t0 = now();
        if ((s = gm_matmul(c, a, b, &out))) die(c, s, "gm_matmul");
        if (r >= 0) tg[r] = now() - t0;
        gm_tensor_release(out);
    }
    stats sg = summarise(tg, reps), sb = summarise(tb, reps);
    double flop = 2.0 * N * N * N;
    char m[64];
    snprintf(m, sizeof m, "%.2f ms [%.2f..%.2f]", sb.med * 1e3, sb.min * 1e3, sb.max * 1e3);
    info("cblas_sgemm 1024^3 f32 (reference)", m);
    snprintf(m, sizeof m, "%.1f GFLOP/s", flop / sb.med * 1e-9);
    info("cblas_sgemm 1024^3 f32 rate", m);
    snprintf(m, sizeof m, "%.2f ms [%.2f..%.2f]", sg.med * 1e3, sg.min * 1e3, sg.max * 1e3);
    info("gm_matmul 1024^3 f32", m);
    snprintf(m, sizeof m, "%.1f GFLOP/s", flop / sg.med * 1e-9);
    info("gm_matmul 1024^3 f32 rate", m);
    double ratio = sb.med / sg.med; /* speed of gm relative to sgemm */
    snprintf(m, sizeof m, "%.1f%% (min/min %.1f%%)", 100 * ratio, 100 * sb.min / sg.min);
    row("gm_matmul speed / cblas_sgemm", m, ">= 0.95", ratio / 0.95, ratio >= 0.95);
    free(tg);
    free(tb);
    free(C);
    gm_tensor_release(a);
    gm_tensor_release(b);
}

/* ---- target 3: gm_add of 2^24 f32 vs a STREAM triad ---------------------------------------- */
static void triad(float *restrict x, const float *restrict y, const float *restrict z, float sc,
                  int64_t n, int nt) {
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++) x[i] = y[i] + sc * z[i];
}

static void bench_add(gm_ctx *c, int reps, int nt) {
    const int64_t n = (int64_t)1 << 24;
    const double bytes = 3.0 * 4.0 * (double)n; /* 2 reads + 1 write, as STREAM counts */
    float *x = aligned_alloc(64, sizeof(float) * (size_t)n);
    float *y = aligned_alloc(64, sizeof(float) * (size_t)n);
    float *z = aligned_alloc(64, sizeof(float) * (size_t)n);
#pragma omp parallel for num_threads(nt) schedule(static) /* first touch by the same threads */
    for (int64_t i = 0; i < n; i++) x[i] = 0.0f, y[i] = 1.0f, z[i] = 2.0f;

    gm_tensor *a, *b, *out;
    gm_status s;
    if ((s = gm_tensor_full(c, GM_F32, GM_CPU, 1, &n, 1.0, &a)) ||
        (s = gm_tensor_full(c, GM_F32, GM_CPU, 1, &n, 2.0, &b)))
        die(c, s, "add inputs");
    double *tt = malloc(sizeof(double) * (size_t)reps), *ta = malloc(sizeof(double) * (size_t)reps);
    for (int r = -3; r < reps; r++) {
        double dt = 0, da = 0;
        for (int k = 0; k < 2; k++) {
            double t0 = now();
            if ((k + r) % 2 == 0) {
                triad(x, y, z, 3.0f, n, nt);
                dt = now() - t0;
            } else {
                /* The output is released each time: the caching allocator hands the same block
                 * back, as in a training loop; the first (warm-up) calls pay the page faults. */
                if ((s = gm_add(c, a, b, &out))) die(c, s, "gm_add");
                da = now() - t0;
                gm_tensor_release(out);
            }
        }
        if (r >= 0) tt[r] = dt, ta[r] = da;
    }
    if (x[n - 1] != 7.0f) fprintf(stderr, "bench_engine: triad result wrong\n");
    stats st = summarise(tt, reps), sa = summarise(ta, reps);
    char m[64];
    double bw_t = bytes / st.med * 1e-9, bw_a = bytes / sa.med * 1e-9;
    snprintf(m, sizeof m, "%.2f ms [%.2f..%.2f]", st.med * 1e3, st.min * 1e3, st.max * 1e3);
    info("triad 2^24 f32 time", m);
    snprintf(m, sizeof m, "%.1f GB/s (3 arrays; %.1f w/ WA)", bw_t, bw_t * 4.0 / 3.0);
    info("triad 2^24 f32 bandwidth", m);
    snprintf(m, sizeof m, "%.2f ms [%.2f..%.2f]", sa.med * 1e3, sa.min * 1e3, sa.max * 1e3);
    info("gm_add 2^24 f32 time", m);
    double ratio = bw_a / bw_t;
    snprintf(m, sizeof m, "%.1f GB/s", bw_a);
    info("gm_add 2^24 f32 bandwidth", m);
    snprintf(m, sizeof m, "%.1f%% (min/min %.1f%%)", 100 * ratio, 100 * st.min / sa.min);
    row("gm_add 2^24 f32 bandwidth / triad", m, ">= 0.70", ratio / 0.70, ratio >= 0.70);
    free(tt);
    free(ta);
    free(x);
    free(y);
    free(z);
    gm_tensor_release(a);
    gm_tensor_release(b);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 11;
    if (reps < 1) reps = 1;
    gm_ctx *c = gm_ctx_new();
    if (!c) return 1;
    /* The thread count the engine's kernels run with (gm.get_num_threads() in Lua). */
    int nt = gm_ctx_num_threads(c);
    if (nt <= 0) nt = omp_get_max_threads();
    printf("# engine (C, wall clock): %d threads for kernels and triad, BLAS: %s, %d repeats\n",
           nt, gm_blas_info(), reps);
    bench_matmul(c, reps, nt);
    bench_add(c, reps, nt);
    gm_ctx_free(c);
    return 0;
}
