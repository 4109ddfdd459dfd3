/* blas_core.c (cpu): which OpenBLAS core type (kernel set) the process runs. OpenBLAS picks one
 * when it loads, from its own CPU table; a release that does not know the CPU falls back to an
 * older core (0.3.21 runs Prescott's SSE3 kernels on some AVX-512 Xeons and Haswell's on Zen 5),
 * 2-3x slower than the CPU allows. The core can only be chosen before OpenBLAS loads, through
 * OPENBLAS_CORETYPE, so the gmoe executable re-executes itself (lua/process.c): this file says
 * when and with which core, and checks in the new process that the core computes right products
 * (OpenBLAS releases have had wrong-result kernels on some CPUs) before trusting it. The state
 * travels in GMOE_BLAS_CORE; a user's own OPENBLAS_CORETYPE is never overridden. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gm.h"

/* ISA level of a core type: 4 AVX-512, 3 AVX2 + FMA, 2 AVX, 1 anything older. */
static int core_level(const char *core) {
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    static const char *const avx2[] = {"Haswell", "Zen", "Excavator", "Steamroller", "Piledriver"};
    static const char *const avx[] = {"Sandybridge", "Bulldozer"};
    for (size_t i = 0; i < sizeof avx512 / sizeof *avx512; i++) if (!strcasecmp(core, avx512[i])) return 4;
    for (size_t i = 0; i < sizeof avx2 / sizeof *avx2; i++) if (!strcasecmp(core, avx2[i])) return 3;
    for (size_t i = 0; i < sizeof avx / sizeof *avx; i++) if (!strcasecmp(core, avx[i])) return 2;
    return 1;
}

/* Core types this CPU can run above OpenBLAS's fallback level, fastest first (n of them). The
 * order is by vector width: AVX-512 sgemm kernels run ~1.5-2x the AVX2 ones (BENCHMARKS.md). */
static int candidates(const char **out) {
    int n = 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        if (__builtin_cpu_supports("avx512bf16")) out[n++] = "Cooperlake";
        out[n++] = "SkylakeX";
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        out[n++] = __builtin_cpu_is("amd") ? "Zen" : "Haswell";
    if (__builtin_cpu_supports("avx")) out[n++] = "Sandybridge";
#else
    (void)out;
#endif
    return n;
}

/* ---- the product check ---------------------------------------------------------------- */

static double lcg(unsigned *s) { /* deterministic inputs in [-1, 1) */
    *s = *s * 1664525u + 1013904223u;
    return (double)(*s >> 8) / (double)(1u << 23) - 1.0;
}

/* Test hook (tests/lua/t_blas_core.lua): GMOE_BLAS_TEST="fault=CORE ..." (repeatable)
 * corrupts one element of every checked product while CORE runs, so the check must refuse it;
 * "detected=CORE" pretends OpenBLAS chose CORE, so the selection runs on any CPU. */
static const char *test_key(const char *key, char *buf, size_t n) {
    const char *t = getenv("GMOE_BLAS_TEST"), *p = t ? strstr(t, key) : NULL;
    if (!p) return NULL;
    p += strlen(key);
    size_t l = strcspn(p, " ,;");
    if (l == 0 || l >= n) return NULL;
    memcpy(buf, p, l);
    buf[l] = 0;
    return buf;
}

/* C = 1.5 op(A) op(B) + 0.5 C in f32 or f64 through cblas, against the same product summed in
 * double; every element within 4 K eps sum|a||b| of it. Shapes reach OpenBLAS's small-matrix
 * path, the edges of the micro-kernels and (K = 400) more than one K block. */
static bool product_ok(bool f64, bool ta, bool tb, int m, int n, int k, bool fault) {
    size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
    double *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c0 = malloc(nc * sizeof *c0);
    void *A = malloc(na * 8), *B = malloc(nb * 8), *C = malloc(nc * 8);
    bool ok = a && b && c0 && A && B && C;
    unsigned s = (unsigned)(m * 131 + n * 17 + k);
    for (size_t i = 0; ok && i < na; i++) a[i] = f64 ? lcg(&s) : (float)lcg(&s);
    for (size_t i = 0; ok && i < nb; i++) b[i] = f64 ? lcg(&s) : (float)lcg(&s);
    for (size_t i = 0; ok && i < nc; i++) c0[i] = f64 ? lcg(&s) : (float)lcg(&s);
    for (size_t i = 0; ok && i < na; i++) f64 ? (void)(((double *)A)[i] = a[i]) : (void)(((float *)A)[i] = (float)a[i]);
    for (size_t i = 0; ok && i < nb; i++) f64 ? (void)(((double *)B)[i] = b[i]) : (void)(((float *)B)[i] = (float)b[i]);
    for (size_t i = 0; ok && i < nc; i++) f64 ? (void)(((double *)C)[i] = c0[i]) : (void)(((float *)C)[i] = (float)c0[i]);
    if (ok) {
        /* A is stored [m, k] (or [k, m] when transposed), B [k, n] (or [n, k]) */
        int lda = ta ? m : k, ldb = tb ? k : n;
        CBLAS_TRANSPOSE oa = ta ? CblasTrans : CblasNoTrans, ob = tb ? CblasTrans : CblasNoTrans;
        if (f64) cblas_dgemm(CblasRowMajor, oa, ob, m, n, k, 1.5, A, lda, B, ldb, 0.5, C, n);
        else cblas_sgemm(CblasRowMajor, oa, ob, m, n, k, 1.5f, A, lda, B, ldb, 0.5f, C, n);
        if (fault) f64 ? (void)(((double *)C)[nc / 2] += 1) : (void)(((float *)C)[nc / 2] += 1);
        double eps = f64 ? 0x1p-52 : 0x1p-23;
        for (int i = 0; ok && i < m; i++)
            for (int j = 0; ok && j < n; j++) {
                double sum = 0, mag = 0;
                for (int p = 0; p < k; p++) {
                    double x = a[ta ? (size_t)p * m + i : (size_t)i * k + p];
                    double y = b[tb ? (size_t)j * k + p : (size_t)p * n + j];
                    sum += x * y;
                    mag += fabs(x * y);
                }
                double want = 1.5 * sum + 0.5 * c0[(size_t)i * n + j];
                double got = f64 ? ((double *)C)[(size_t)i * n + j] : ((float *)C)[(size_t)i * n + j];
                ok = fabs(got - want) <= 4.0 * (k + 2) * eps * (1.5 * mag + 0.5 * fabs(c0[(size_t)i * n + j]) + 1e-30);
            }
    }
    free(a), free(b), free(c0), free(A), free(B), free(C);
    return ok;
}

/* Does the loaded core compute right sgemm and dgemm products (all four transpose cases)? */
static bool core_products_ok(void) {
    static const int shapes[][3] = {{7, 5, 3}, {37, 29, 400}};
    char key[48];
    snprintf(key, sizeof key, "fault=%s", openblas_get_corename());
    const char *p = getenv("GMOE_BLAS_TEST");
    bool fault = false;
    while (p && (p = strstr(p, key)) && !(fault = strchr(" ,;", p[strlen(key)]) != NULL)) p++;
    for (int f64 = 0; f64 < 2; f64++)
        for (int t = 0; t < 4; t++)
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
                if (!product_ok(f64, t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], fault)) return false;
    return true;
}

/* ---- the selection -------------------------------------------------------------------- */

/* GMOE_BLAS_CORE = "detected=D try=T refused=R1:why,R2:why" (try empty once none is left). */
static char why_buf[256];

static void field(const char *mark, const char *key, char *buf, size_t n) {
    const char *p = mark ? strstr(mark, key) : NULL;
    buf[0] = 0;
    if (!p) return;
    p += strlen(key);
    size_t l = strcspn(p, " ");
    if (l >= n) l = n - 1;
    memcpy(buf, p, l);
    buf[l] = 0;
}

/* Set the environment to try the candidate after `after` (NULL: the first) that is faster than
 * the detected core, or, when none is left, OpenBLAS's own choice (OPENBLAS_CORETYPE unset).
 * True when the process must re-execute itself to load it. */
static bool try_next(const char *detected, const char *after, const char *refused) {
    const char *c[8];
    int n = candidates(c), i = 0;
    char mark[256];
    if (after)
        while (i < n && strcasecmp(c[i++], after)) continue;
    for (; i < n; i++) {
        if (core_level(c[i]) <= core_level(detected)) continue;
        snprintf(mark, sizeof mark, "detected=%s try=%s refused=%s", detected, c[i], refused);
        return setenv("GMOE_BLAS_CORE", mark, 1) == 0 && setenv("OPENBLAS_CORETYPE", c[i], 1) == 0;
    }
    snprintf(mark, sizeof mark, "detected=%s try= refused=%s", detected, refused);
    return setenv("GMOE_BLAS_CORE", mark, 1) == 0 && unsetenv("OPENBLAS_CORETYPE") == 0;
}

bool gm_blas_core_select(void) {
    const char *user = getenv("OPENBLAS_CORETYPE"), *mark = getenv("GMOE_BLAS_CORE");
    const char *loaded = openblas_get_corename();
    char detected[32], tried[32], refused[160], buf[32];
    field(mark, "detected=", detected, sizeof detected);
    field(mark, "try=", tried, sizeof tried);
    field(mark, "refused=", refused, sizeof refused);
    if (user && !(mark && !strcasecmp(user, tried))) {
        snprintf(why_buf, sizeof why_buf, "set by OPENBLAS_CORETYPE=%s", user);
        return false;
    }
    if (!mark) { /* first start: is OpenBLAS's choice below what this CPU runs? */
        const char *pretend = test_key("detected=", buf, sizeof buf);
        snprintf(detected, sizeof detected, "%s", pretend ? pretend : loaded);
        const char *c[8];
        if (candidates(c) == 0 || core_level(c[0]) <= core_level(detected)) {
            snprintf(why_buf, sizeof why_buf, "OpenBLAS's choice, the fastest kind this CPU runs");
            return false;
        }
        return try_next(detected, NULL, "");
    }
    if (!tried[0]) { /* every faster candidate was refused */
        snprintf(why_buf, sizeof why_buf, "OpenBLAS's choice, kept: the faster cores were refused (%s)", refused);
        return false;
    }
    const char *fail = strcasecmp(loaded, tried) ? "not-in-this-OpenBLAS" : core_products_ok() ? NULL : "wrong-products";
    if (!fail) {
        snprintf(why_buf, sizeof why_buf, "chosen by gmoe: OpenBLAS chose %s on a CPU that runs %s, whose products passed the check%s%s",
                 detected, tried, refused[0] ? "; refused " : "", refused);
        return false;
    }
    char more[160];
    snprintf(more, sizeof more, "%s%s%s:%s", refused, refused[0] ? "," : "", tried, fail);
    return try_next(detected, tried, more);
}

/* Without a selection (a program other than the gmoe executable), from the environment. */
const char *gm_blas_core_why(void) {
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (!why_buf[0] && user) snprintf(why_buf, sizeof why_buf, "set by OPENBLAS_CORETYPE=%s", user);
    return why_buf[0] ? why_buf : "OpenBLAS's choice";
}
