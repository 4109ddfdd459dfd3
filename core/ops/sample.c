/* sample.c: the shared builders of op-rule samples (see sample.h). Samples are small f64 (or
 * i32 index) CPU tensors with fixed seeds, so the generic tests are deterministic. */
#include "sample.h"

#include <string.h>

gm_tensor *gm_sample_randn(gm_ctx *c, gm_dtype t, uint64_t seed, int ndim, const int64_t *shape)
{
    gm_tensor *x = NULL;
    gm_generator g;
    gm_generator_init(&g, seed);
    if (gm_tensor_new(c, t, GM_CPU, ndim, shape, &x)) return NULL;
    if (gm_rand_fill(c, x, GM_RAND_NORMAL, 0, 1, &g)) {
        gm_tensor_release(x);
        return NULL;
    }
    return x;
}

gm_tensor *gm_sample_i32(gm_ctx *c, int ndim, const int64_t *shape, const int32_t *vals)
{
    gm_tensor *t = NULL;
    if (gm_tensor_new(c, GM_I32, GM_CPU, ndim, shape, &t)) return NULL;
    memcpy(gm_tensor_data(t), vals, (size_t)gm_tensor_numel(t) * sizeof *vals);
    return t;
}

gm_status gm_sample_done(gm_ctx *c, int n, gm_tensor **in, int *n_in)
{
    for (int i = 0; i < n; i++)
        if (!in[i]) {
            for (int j = 0; j < n; j++) gm_tensor_release(in[j]);
            return gm_errf(c, GM_ENOMEM, "sample: could not build inputs");
        }
    *n_in = n;
    return GM_OK;
}
