/* sample.h: builders of the inputs that the op families' sample() and bad() rules hand to the
 * generic gradcheck and error tests (gm_oprules in gm.h). Builders return NULL on failure;
 * gm_sample_done then turns any NULL into one clean error and releases the rest, so a rule can
 * build all its inputs first and check once. */
#ifndef GM_OPS_SAMPLE_H
#define GM_OPS_SAMPLE_H

#include "internal.h"

/* A CPU tensor of dtype t filled from normal(0, 1) with a generator seeded by seed (the same
 * seed gives the same values). NULL on failure. */
gm_tensor *gm_sample_randn(gm_ctx *c, gm_dtype t, uint64_t seed, int ndim, const int64_t *shape);
/* A CPU i32 tensor holding vals (numel of shape values, row-major). NULL on failure. */
gm_tensor *gm_sample_i32(gm_ctx *c, int ndim, const int64_t *shape, const int32_t *vals);
/* in[0..n-1] built: set *n_in = n and return GM_OK; when any is NULL, release them all and
 * return GM_ENOMEM. */
gm_status gm_sample_done(gm_ctx *c, int n, gm_tensor **in, int *n_in);

#endif
