/* loss.c: rules of the loss family. cross_entropy flattens logits [..., C] to [N, C] and
 * target [...] to [N] (language-model layout: classes last) and runs a fused log-sum-exp
 * kernel; its backward is one fused kernel (softmax - onehot) * g / count. mse_loss needs
 * equal shapes (no silent broadcasting of a loss). */
#include "internal.h"
#include "sample.h"

#include <string.h>

/* A contiguous view of x as [rows, cols] (or [rows] when cols < 0), copying x when its
 * strides cannot be merged. */
static gm_status flat_view(gm_ctx *c, gm_tensor *x, int64_t rows, int64_t cols, gm_tensor **out)
{
    gm_tensor *base = NULL;
    gm_status s = GM_OK;
    if (gm_tensor_is_contiguous(x)) base = gm_tensor_retain(x);
    else s = gm_tensor_copy_as(c, x, x->dtype, &base);
    if (s) return s;
    int64_t shape[2] = {rows, cols}, st[2] = {cols, 1};
    if (cols < 0) st[0] = 1;
    s = gm_tensor_view(c, base, cols < 0 ? 1 : 2, shape, st, base->offset, out);
    gm_tensor_release(base);
    return s;
}

static gm_status check_reduction(gm_ctx *c, const char *op, int r)
{
    if (r == GM_RED_MEAN || r == GM_RED_SUM || r == GM_RED_NONE) return GM_OK;
    return gm_errf(c, GM_EARG, "%s: reduction must be \"mean\", \"sum\" or \"none\", got %d", op,
                   r);
}

/* ---- cross_entropy --------------------------------------------------------------------- */

/* logits [..., C] float, target [...] i32 -> N (rows) and C. */
static gm_status ce_check(gm_ctx *c, gm_tensor *L, gm_tensor *T, int red, int64_t *N,
                          int64_t *C)
{
    char b1[64], b2[64];
    gm_status s = gm_check_float(c, "cross_entropy", L);
    if (!s) s = check_reduction(c, "cross_entropy", red);
    if (s) return s;
    if (T->dtype != GM_I32)
        return gm_errf(c, GM_EDTYPE, "cross_entropy: target must be i32 class ids, got %s",
                       gm_dtype_name(T->dtype));
    bool ok = L->ndim >= 1 && T->ndim == L->ndim - 1;
    for (int d = 0; ok && d < T->ndim; d++) ok = T->shape[d] == L->shape[d];
    if (!ok)
        return gm_errf(c, GM_ESHAPE,
                       "cross_entropy: target %s must be logits %s without the last (class) dim",
                       GM_SHAPE_STR(T, b1), GM_SHAPE_STR(L, b2));
    *N = gm_tensor_numel(T);
    *C = L->shape[L->ndim - 1];
    return GM_OK;
}

static gm_status ce_fwd(gm_ctx *c, gm_opcall *o)
{
    gm_tensor *L = o->in[0], *T = o->in[1], *lv = NULL, *tv = NULL, *ov = NULL;
    int red = o->p->reduction;
    int64_t N, C;
    gm_status s = ce_check(c, L, T, red, &N, &C);
    if (s) return s;
    if (red == GM_RED_NONE)
        s = gm_tensor_new(c, L->dtype, gm_tensor_device(L), T->ndim, T->shape, &o->out[0]);
    else s = gm_tensor_new(c, L->dtype, gm_tensor_device(L), 0, NULL, &o->out[0]);
    if (!s) s = flat_view(c, L, N, C, &lv);
    if (!s) s = flat_view(c, T, N, -1, &tv);
    if (!s && red == GM_RED_NONE) s = flat_view(c, o->out[0], N, -1, &ov);
    else if (!s) ov = gm_tensor_retain(o->out[0]);
    if (!s) {
        gm_kargs ex;
        memset(&ex, 0, sizeof ex);
        ex.i[0] = red;
        ex.i[1] = o->p->ignore_index;
        gm_tensor *ins[2] = {lv, tv};
        s = gm_run(c, GM_K_CROSS_ENTROPY, 2, ins, 1, &ov, o->p, &ex);
    }
    gm_tensor_release(lv);
    gm_tensor_release(tv);
    gm_tensor_release(ov);
    return s;
}

static gm_status ce_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *L = n->in[0], *T = n->in[1], *lv = NULL, *tv = NULL, *gv = NULL, *ov = NULL;
    int red = n->p.reduction;
    int64_t N, C;
    if (!n->needs[0]) return GM_OK;
    gm_status s = ce_check(c, L, T, red, &N, &C);
    if (!s && !gout[0])
        return gm_tensor_zeros(c, L->dtype, gm_tensor_device(L), L->ndim, L->shape, &gin[0]);
    if (!s) s = gm_tensor_new(c, L->dtype, gm_tensor_device(L), L->ndim, L->shape, &gin[0]);
    if (!s) s = flat_view(c, L, N, C, &lv);
    if (!s) s = flat_view(c, T, N, -1, &tv);
    if (!s) s = flat_view(c, gin[0], N, C, &ov);
    if (!s && red == GM_RED_NONE) s = flat_view(c, gout[0], N, -1, &gv);
    else if (!s) gv = gm_tensor_retain(gout[0]);
    if (!s) {
        gm_kargs ex;
        memset(&ex, 0, sizeof ex);
        ex.i[0] = red;
        ex.i[1] = n->p.ignore_index;
        gm_tensor *ins[3] = {lv, tv, gv};
        s = gm_run(c, GM_K_CROSS_ENTROPY_BWD, 3, ins, 1, &ov, &n->p, &ex);
    }
    gm_tensor_release(lv);
    gm_tensor_release(tv);
    gm_tensor_release(gv);
    gm_tensor_release(ov);
    return s;
}

static gm_status ce_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    static const int32_t t0[] = {2, -100, 0, 4};
    static const int32_t t1[] = {1, 0, 2, 2, 7, 1};
    gm_params_init(p);
    if (variant >= 0 && variant <= 2) { /* [4,5] with one ignored row; mean, sum, none */
        in[0] = gm_sample_randn(c, GM_F64, 3000 + (uint64_t)variant, 2, (int64_t[]){4, 5});
        in[1] = gm_sample_i32(c, 1, (int64_t[]){4}, t0);
        p->ignore_index = -100;
        p->reduction = variant == 0 ? GM_RED_MEAN : variant == 1 ? GM_RED_SUM : GM_RED_NONE;
    } else if (variant == 3) { /* [2,3,3] language-model layout, ignore_index 7 */
        in[0] = gm_sample_randn(c, GM_F64, 3003, 3, (int64_t[]){2, 3, 3});
        in[1] = gm_sample_i32(c, 2, (int64_t[]){2, 3}, t1);
        p->ignore_index = 7;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status ce_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                        gm_status *expect)
{
    static const int32_t tv[] = {2, 5, 0, 1};
    static const int32_t ok[] = {2, 4, 0, 1};
    gm_params_init(p);
    if (variant > 4) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, GM_F64, 3100, 2, (int64_t[]){4, 5});
    if (variant == 0) { /* target 5 for 5 classes */
        in[1] = gm_sample_i32(c, 1, (int64_t[]){4}, tv);
        *expect = GM_EINDEX;
    } else if (variant == 1) { /* target [3] for 4 rows */
        in[1] = gm_sample_i32(c, 1, (int64_t[]){3}, ok);
        *expect = GM_ESHAPE;
    } else if (variant == 2) { /* float target */
        in[1] = gm_sample_randn(c, GM_F64, 3101, 1, (int64_t[]){4});
        *expect = GM_EDTYPE;
    } else if (variant == 3) { /* i32 logits */
        gm_tensor_release(in[0]);
        in[0] = gm_sample_i32(c, 2, (int64_t[]){2, 2}, ok);
        in[1] = gm_sample_i32(c, 1, (int64_t[]){2}, ok + 2);
        *expect = GM_EDTYPE;
    } else { /* negative target that is not ignore_index */
        static const int32_t neg[] = {2, -1, 0, 1};
        in[1] = gm_sample_i32(c, 1, (int64_t[]){4}, neg);
        *expect = GM_EINDEX;
    }
    return gm_sample_done(c, 2, in, n_in);
}

extern const gm_oprules gm_rules_CROSS_ENTROPY;
const gm_oprules gm_rules_CROSS_ENTROPY = {ce_fwd, ce_bwd, ce_sample, ce_bad};

/* ---- mse_loss -------------------------------------------------------------------------- */

static gm_status mse_check(gm_ctx *c, gm_tensor *x, gm_tensor *y, int red)
{
    char b1[64], b2[64];
    gm_tensor *xy[2] = {x, y};
    gm_status s = gm_check_float(c, "mse_loss", x);
    if (!s) s = gm_check_same_dtype(c, "mse_loss", 2, xy);
    if (!s) s = check_reduction(c, "mse_loss", red);
    if (s) return s;
    bool ok = x->ndim == y->ndim;
    for (int d = 0; ok && d < x->ndim; d++) ok = x->shape[d] == y->shape[d];
    if (!ok)
        return gm_errf(c, GM_ESHAPE, "mse_loss: x %s and y %s must have the same shape",
                       GM_SHAPE_STR(x, b1), GM_SHAPE_STR(y, b2));
    return GM_OK;
}

static gm_status mse_fwd(gm_ctx *c, gm_opcall *o)
{
    gm_tensor *x = o->in[0], *y = o->in[1];
    int red = o->p->reduction;
    gm_status s = mse_check(c, x, y, red);
    if (s) return s;
    if (red == GM_RED_NONE)
        s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &o->out[0]);
    else s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), 0, NULL, &o->out[0]);
    if (s) return s;
    gm_kargs ex;
    memset(&ex, 0, sizeof ex);
    ex.i[0] = red;
    return gm_run(c, GM_K_MSE_LOSS, 2, o->in, 1, o->out, o->p, &ex);
}

/* gx = 2 (x - y) g / N (mean) or 2 (x - y) g; gy = -gx. */
static gm_status mse_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *x = n->in[0], *y = n->in[1], *gb = NULL, *outs[2];
    int no = 0;
    gm_status s = GM_OK;
    for (int j = 0; j < 2 && !s; j++)
        if (n->needs[j]) {
            s = gout[0] ? gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[j])
                        : gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape,
                                          &gin[j]);
            if (!s) outs[no++] = gin[j];
        }
    if (s || !gout[0] || no == 0 || gm_tensor_numel(x) == 0) return s;
    s = gm_tensor_broadcast_view(c, gout[0], x->ndim, x->shape, &gb);
    if (s) return s;
    gm_kargs ex;
    memset(&ex, 0, sizeof ex);
    ex.d[0] = (n->needs[0] ? 2.0 : -2.0) /
              (n->p.reduction == GM_RED_MEAN ? (double)gm_tensor_numel(x) : 1.0);
    gm_tensor *ins[3] = {x, y, gb};
    s = gm_run(c, GM_K_MSE_LOSS_BWD, 3, ins, no, outs, &n->p, &ex);
    gm_tensor_release(gb);
    return s;
}

static gm_status mse_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    gm_params_init(p);
    if (variant < 0 || variant > 2) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, GM_F64, 3200 + (uint64_t)variant, 2, (int64_t[]){3, 4});
    in[1] = gm_sample_randn(c, GM_F64, 3210 + (uint64_t)variant, 2, (int64_t[]){3, 4});
    p->reduction = variant == 0 ? GM_RED_MEAN : variant == 1 ? GM_RED_SUM : GM_RED_NONE;
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status mse_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                         gm_status *expect)
{
    gm_params_init(p);
    if (variant == 0) { /* broadcastable but not equal: refused */
        in[0] = gm_sample_randn(c, GM_F64, 3300, 2, (int64_t[]){3, 4});
        in[1] = gm_sample_randn(c, GM_F64, 3301, 1, (int64_t[]){4});
        *expect = GM_ESHAPE;
    } else if (variant == 1) {
        in[0] = gm_sample_randn(c, GM_F64, 3302, 2, (int64_t[]){3, 4});
        in[1] = gm_sample_randn(c, GM_F32, 3303, 2, (int64_t[]){3, 4});
        *expect = GM_EDTYPE;
    } else if (variant == 2) { /* i32 into a float-only op */
        static const int32_t v[] = {1, 2, 3};
        in[0] = gm_sample_i32(c, 1, (int64_t[]){3}, v);
        in[1] = gm_sample_i32(c, 1, (int64_t[]){3}, v);
        *expect = GM_EDTYPE;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

extern const gm_oprules gm_rules_MSE_LOSS;
const gm_oprules gm_rules_MSE_LOSS = {mse_fwd, mse_bwd, mse_sample, mse_bad};
