/* rng.c: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
 * A draw of n values from a generator uses counters offset .. offset + ceil(n / per) - 1,
 * so value i depends only on (seed, offset, i): thread count and backend do not matter. */
#include <stdlib.h>

#include "internal.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void gm_philox4x32(uint64_t seed, uint64_t counter_hi, uint64_t counter_lo, uint32_t out[4]) {
    uint32_t x0 = (uint32_t)counter_lo, x1 = (uint32_t)(counter_lo >> 32);
    uint32_t x2 = (uint32_t)counter_hi, x3 = (uint32_t)(counter_hi >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * x0, p1 = (uint64_t)PHILOX_M1 * x2;
        uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0, y1 = (uint32_t)p1;
        uint32_t y2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1, y3 = (uint32_t)p0;
        x0 = y0; x1 = y1; x2 = y2; x3 = y3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = x0; out[1] = x1; out[2] = x2; out[3] = x3;
}

void gm_generator_init(gm_generator *g, uint64_t seed) {
    g->seed = seed;
    g->offset = 0;
}

gm_generator *gm_ctx_generator(gm_ctx *c) { return &c->gen; }

/* Values per Philox block: f64 uniform and normal values take 64 bits, the rest 32. The CPU
 * and CUDA RAND kernels follow the same layout (kernels/cpu/backend_cpu.c). */
static int64_t per_block(gm_dtype t, gm_rand_kind kind) {
    return t == GM_F64 && kind != GM_RAND_INT ? 2 : 4;
}

gm_status gm_rand_fill(gm_ctx *c, gm_tensor *x, gm_rand_kind kind, double a, double b,
                       gm_generator *g) {
    if (!gm_tensor_is_contiguous(x)) return gm_errf(c, GM_EARG, "rand: output must be contiguous");
    if (kind == GM_RAND_INT ? b <= a : kind == GM_RAND_UNIFORM ? b < a : b < 0)
        return gm_errf(c, GM_EARG, "rand: bad range (%g, %g)", a, b);
    if (kind == GM_RAND_INT && b - a > 4294967296.0)
        return gm_errf(c, GM_EARG, "randint: range [%.0f, %.0f) is wider than 2^32", a, b);
    if (kind == GM_RAND_INT && x->dtype == GM_I32 && (a < INT32_MIN || b - 1 > INT32_MAX))
        return gm_errf(c, GM_EARG, "randint: range [%.0f, %.0f) does not fit i32", a, b);
    if (kind != GM_RAND_INT && x->dtype == GM_I32)
        return gm_errf(c, GM_EDTYPE, "rand: uniform/normal values need a float dtype, got i32");
    if (!g) g = &c->gen;
    int64_t n = gm_tensor_numel(x), per = per_block(x->dtype, kind);
    gm_kargs extra = {0};
    extra.i[0] = kind;
    extra.i[1] = (int64_t)g->seed;
    extra.i[2] = (int64_t)g->offset;
    extra.d[0] = a;
    extra.d[1] = b;
    gm_status st = gm_run(c, GM_K_RAND, 0, NULL, 1, &x, NULL, &extra);
    if (st == GM_OK) g->offset += (uint64_t)((n + per - 1) / per);
    return st;
}

gm_status gm_randperm(gm_ctx *c, int64_t n, gm_dtype t, gm_generator *g, gm_tensor **out) {
    gm_tensor *u = NULL, *y = NULL;
    gm_status st;
    if ((st = gm_tensor_new(c, GM_F64, GM_CPU, 1, &n, &u)) != GM_OK) return st;
    if ((st = gm_rand_fill(c, u, GM_RAND_UNIFORM, 0, 1, g)) != GM_OK) goto done;
    if ((st = gm_tensor_new(c, t, GM_CPU, 1, &n, &y)) != GM_OK) goto done;
    const double *r = gm_tensor_data(u);
    int64_t *perm = malloc((size_t)(n > 0 ? n : 1) * sizeof *perm);
    if (!perm) {
        st = gm_errf(c, GM_ENOMEM, "randperm: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        if ((i & 0xffff) == 0 && gm_interrupted()) { /* a poll per 2^16 swaps */
            free(perm);
            st = gm_errf(c, GM_EINTR, "interrupted");
            goto done;
        }
        int64_t j = (int64_t)(r[i] * (double)(i + 1));
        if (j > i) j = i;
        int64_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    void *p = gm_tensor_data(y);
    for (int64_t i = 0; i < n; i++) gm_elem_store(p, t, i, (double)perm[i]);
    free(perm);
done:
    gm_tensor_release(u);
    if (st != GM_OK) gm_tensor_release(y);
    else *out = y;
    return st;
}
