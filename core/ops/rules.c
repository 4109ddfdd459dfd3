/* rules.c: helpers the op rules share (rules.h). */
#include "rules.h"

gm_status gm_need_i32(gm_ctx *c, const char *op, const char *what, const gm_tensor *x) {
    if (x->dtype == GM_I32) return GM_OK;
    return gm_errf(c, GM_EDTYPE, "%s: %s must be i32, got %s", op, what, gm_dtype_name(x->dtype));
}

gm_status gm_new_like(gm_ctx *c, const gm_tensor *x, gm_tensor **out) {
    return gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, out);
}

gm_status gm_zeros_like(gm_ctx *c, const gm_tensor *x, gm_tensor **out) {
    return gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, out);
}

gm_status gm_contig_all(gm_ctx *c, int n, gm_tensor **in, gm_tensor **out) {
    for (int i = 0; i < n; i++) out[i] = NULL;
    for (int i = 0; i < n; i++) {
        gm_status st = gm_tensor_contiguous(c, in[i], &out[i]);
        if (st != GM_OK) {
            gm_release_all(i, out);
            return st;
        }
    }
    return GM_OK;
}

void gm_release_all(int n, gm_tensor **t) {
    for (int i = 0; i < n; i++) {
        gm_tensor_release(t[i]);
        t[i] = NULL;
    }
}

gm_status gm_gout_or_zeros(gm_ctx *c, const gm_node *n, gm_tensor **gout, int i, bool contiguous,
                           gm_tensor **out) {
    if (gout[i] && contiguous) return gm_tensor_contiguous(c, gout[i], out);
    if (gout[i]) {
        *out = gm_tensor_retain(gout[i]);
        return GM_OK;
    }
    return gm_tensor_zeros(c, n->out_dtype[i], gm_tensor_device(n->in[0]), n->out_ndim[i], n->out_shape[i], out);
}

gm_status gm_zero_grads(gm_ctx *c, const gm_node *n, gm_tensor **gin) {
    gm_status st = GM_OK;
    for (int j = 0; j < n->n_in && st == GM_OK; j++)
        if (n->needs[j]) st = gm_zeros_like(c, n->in[j], &gin[j]);
    return st;
}

void gm_hand_grads(gm_status st, const gm_node *n, gm_tensor **all, gm_tensor **gin) {
    for (int j = 0; j < n->n_in; j++) {
        if (st == GM_OK && n->needs[j]) gin[j] = all[j];
        else gm_tensor_release(all[j]);
        all[j] = NULL;
    }
}
