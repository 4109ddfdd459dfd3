/* rules.h: helpers the op rules of core/ops/ share (the files of core/ops/ only): checks whose messages
 * name the op, tensors shaped like another, operand lists made contiguous, and the gradient
 * bookkeeping of backward rules (an output's gradient or zeros, zeros for the needed inputs,
 * computed gradients handed over). */
#ifndef GM_OPS_RULES_H
#define GM_OPS_RULES_H

#include "internal.h"

/* "op: what must be i32, got f32" unless x is i32. */
gm_status gm_need_i32(gm_ctx *c, const char *op, const char *what, const gm_tensor *x);

/* A new tensor of x's shape, dtype and device: uninitialised, or zeros. */
gm_status gm_new_like(gm_ctx *c, const gm_tensor *x, gm_tensor **out);
gm_status gm_zeros_like(gm_ctx *c, const gm_tensor *x, gm_tensor **out);

/* out[i] = a contiguous version of in[i] (a new reference, or a copy), for i < n; on failure
 * none is kept. */
gm_status gm_contig_all(gm_ctx *c, int n, gm_tensor **in, gm_tensor **out);
/* Release t[0..n-1] (NULLs are fine) and set them to NULL. */
void gm_release_all(int n, gm_tensor **t);

/* The gradient w.r.t. output i of node n (contiguous when asked), or zeros of that output's
 * recorded shape when it got none. */
gm_status gm_gout_or_zeros(gm_ctx *c, const gm_node *n, gm_tensor **gout, int i, bool contiguous,
                           gm_tensor **out);
/* gin[j] = zeros like input j, for each input that needs a gradient (no output got one). */
gm_status gm_zero_grads(gm_ctx *c, const gm_node *n, gm_tensor **gin);
/* After a backward kernel filled all[j] for every input: when st is GM_OK, gin[j] = all[j] for
 * the inputs that need a gradient; every other all[j] is released. */
void gm_hand_grads(gm_status st, const gm_node *n, gm_tensor **all, gm_tensor **gin);

#endif
