/* loss.c: rules of the loss family. Row losses (cross_entropy, kl_div, symmetric_kl) flatten
 * [..., C] to [N, C] (language-model layout: classes last) and run one fused kernel per row,
 * forward and backward (cross_entropy: (softmax - smoothed onehot) * g / count). Elementwise
 * losses (mse_loss, binary_cross_entropy_with_logits, gaussian_nll) need equal shapes (no
 * silent broadcasting of a loss; gaussian_nll's log_var alone may broadcast). */
#include "internal.h"
#include "sample.h"

#include <math.h>
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
static gm_status ce_check(gm_ctx *c, gm_tensor *L, gm_tensor *T, const gm_params *p,
                          int64_t *N, int64_t *C)
{
    char b1[64], b2[64];
    gm_status s = gm_check_float(c, "cross_entropy", L);
    if (!s) s = check_reduction(c, "cross_entropy", p->reduction);
    if (s) return s;
    if (!(p->a >= 0 && p->a <= 1)) /* also refuses NaN */
        return gm_errf(c, GM_EARG, "cross_entropy: label smoothing a must be in [0, 1], got %g",
                       p->a);
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
    gm_status s = ce_check(c, L, T, o->p, &N, &C);
    if (s) return s;
    if (red == GM_RED_NONE)
        s = gm_tensor_new(c, L->dtype, gm_tensor_device(L), T->ndim, T->shape, &o->out[0]);
    else s = gm_tensor_new(c, L->dtype, gm_tensor_device(L), 0, NULL, &o->out[0]);
    if (!s) s = flat_view(c, L, N, C, &lv);
    if (!s) s = flat_view(c, T, N, -1, &tv);
    if (!s && red == GM_RED_NONE) s = flat_view(c, o->out[0], N, -1, &ov);
    else if (!s) ov = gm_tensor_retain(o->out[0]);
    if (!s) {
        gm_kparams k = {.loss = {.reduction = red, .ignore_index = o->p->ignore_index, .smoothing = o->p->a}};
        gm_tensor *ins[2] = {lv, tv};
        s = gm_run(c, GM_K_CROSS_ENTROPY, 2, ins, 1, &ov, &k);
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
    gm_status s = ce_check(c, L, T, &n->p, &N, &C);
    if (!s && !gout[0])
        return gm_tensor_zeros(c, L->dtype, gm_tensor_device(L), L->ndim, L->shape, &gin[0]);
    if (!s) s = gm_tensor_new(c, L->dtype, gm_tensor_device(L), L->ndim, L->shape, &gin[0]);
    if (!s) s = flat_view(c, L, N, C, &lv);
    if (!s) s = flat_view(c, T, N, -1, &tv);
    if (!s) s = flat_view(c, gin[0], N, C, &ov);
    if (!s && red == GM_RED_NONE) s = flat_view(c, gout[0], N, -1, &gv);
    else if (!s) gv = gm_tensor_retain(gout[0]);
    if (!s) {
        gm_kparams k = {.loss = {.reduction = red, .ignore_index = n->p.ignore_index, .smoothing = n->p.a}};
        gm_tensor *ins[3] = {lv, tv, gv};
        s = gm_run(c, GM_K_CROSS_ENTROPY_BWD, 3, ins, 1, &ov, &k);
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
    } else if (variant == 4 || variant == 5) { /* label smoothing: mean over [4,5], none */
        in[0] = gm_sample_randn(c, GM_F64, 3000 + (uint64_t)variant, 2, (int64_t[]){4, 5});
        in[1] = gm_sample_i32(c, 1, (int64_t[]){4}, t0);
        p->a = variant == 4 ? 0.1 : 0.3;
        p->reduction = variant == 4 ? GM_RED_MEAN : GM_RED_NONE;
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
    if (variant > 6) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, GM_F64, 3100, 2, (int64_t[]){4, 5});
    if (variant == 5 || variant == 6) { /* label smoothing outside [0, 1] */
        in[1] = gm_sample_i32(c, 1, (int64_t[]){4}, ok);
        p->a = variant == 5 ? 1.5 : -0.1;
        *expect = GM_EARG;
        return gm_sample_done(c, 2, in, n_in);
    }
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
    return gm_run(c, GM_K_MSE_LOSS, 2, o->in, 1, o->out, &(gm_kparams){.loss = {.reduction = red}});
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
    gm_kparams k = {.loss = {.scale = (n->needs[0] ? 2.0 : -2.0) /
                                      (n->p.reduction == GM_RED_MEAN ? (double)gm_tensor_numel(x) : 1.0)}};
    gm_tensor *ins[3] = {x, y, gb};
    s = gm_run(c, GM_K_MSE_LOSS_BWD, 3, ins, no, outs, &k);
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

/* ---- helpers of the losses below ------------------------------------------------------- */

static bool same_shape(const gm_tensor *x, const gm_tensor *y)
{
    bool ok = x->ndim == y->ndim;
    for (int d = 0; ok && d < x->ndim; d++) ok = x->shape[d] == y->shape[d];
    return ok;
}

/* n inputs of one float dtype and a valid reduction. */
static gm_status check_floats(gm_ctx *c, const char *op, int n, gm_tensor **in, int red)
{
    gm_status s = gm_check_float(c, op, in[0]);
    if (!s) s = gm_check_same_dtype(c, op, n, in);
    if (!s) s = check_reduction(c, op, red);
    return s;
}

/* The output of a loss: shape [ndim, shape] for reduction none, else 0-dim. */
static gm_status loss_out(gm_ctx *c, const gm_tensor *x, int red, int ndim, const int64_t *shape,
                          gm_tensor **out)
{
    if (red == GM_RED_NONE)
        return gm_tensor_new(c, x->dtype, gm_tensor_device(x), ndim, shape, out);
    return gm_tensor_new(c, x->dtype, gm_tensor_device(x), 0, NULL, out);
}

/* Forward of an elementwise loss: ins[0..n-1] all of ins[0]'s shape (broadcast views allowed). */
static gm_status ew_fwd(gm_ctx *c, gm_opcall *o, int kid, int n, gm_tensor **ins)
{
    gm_status s = loss_out(c, ins[0], o->p->reduction, ins[0]->ndim, ins[0]->shape, &o->out[0]);
    if (s) return s;
    return gm_run(c, kid, n, ins, 1, o->out, &(gm_kparams){.loss = {.reduction = o->p->reduction}});
}

/* Backward of an elementwise loss. ins[0..n-1] are the inputs as the forward kernel saw them
 * (all of the loss's shape); input j that needs a gradient gets kernel output bit 1 << j of
 * i[1], written straight into gin[j], or into a temporary summed back to input j's shape when
 * that input was broadcast. d[0] = 1/numel for the mean, else 1. */
static gm_status ew_bwd(gm_ctx *c, gm_node *nd, gm_tensor **gout, gm_tensor **gin, int kid, int n,
                        gm_tensor **ins)
{
    gm_tensor *x = ins[0], *gb = NULL, *buf[3] = {0}, *outs[3], *kin[4];
    int no = 0, mask = 0;
    gm_status s = GM_OK;
    for (int j = 0; j < n && !s; j++) {
        gm_tensor *in = nd->in[j];
        if (!nd->needs[j]) continue;
        if (!gout[0]) {
            s = gm_tensor_zeros(c, in->dtype, gm_tensor_device(in), in->ndim, in->shape, &gin[j]);
            continue;
        }
        if (same_shape(in, x)) {
            s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[j]);
            buf[j] = gin[j];
        } else {
            s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &buf[j]);
        }
        if (!s) {
            outs[no++] = buf[j];
            mask |= 1 << j;
        }
    }
    if (!s && no > 0) s = gm_tensor_broadcast_view(c, gout[0], x->ndim, x->shape, &gb);
    if (!s && no > 0) {
        int64_t numel = gm_tensor_numel(x);
        gm_kparams k = {.loss = {.outs = (unsigned)mask,
                                 .scale = nd->p.reduction == GM_RED_MEAN && numel > 0 ? 1.0 / (double)numel : 1.0}};
        for (int j = 0; j < n; j++) kin[j] = ins[j];
        kin[n] = gb;
        s = gm_run(c, kid, n + 1, kin, no, outs, &k);
    }
    for (int j = 0; j < n; j++)
        if (buf[j] && buf[j] != gin[j]) {
            if (!s) s = gm_sum_to_shape(c, buf[j], nd->in[j]->ndim, nd->in[j]->shape, &gin[j]);
            gm_tensor_release(buf[j]);
        }
    gm_tensor_release(gb);
    return s;
}

/* In-place maps of a contiguous f64 sample tensor (NULL passes through). */
static gm_tensor *sample_sigmoid(gm_tensor *t)
{
    if (!t) return t;
    double *v = gm_tensor_data(t);
    for (int64_t i = 0; i < gm_tensor_numel(t); i++) v[i] = 1 / (1 + exp(-v[i]));
    return t;
}

static gm_tensor *sample_log_softmax(gm_tensor *t)
{
    if (!t) return t;
    double *v = gm_tensor_data(t);
    int64_t C = t->shape[t->ndim - 1], N = C > 0 ? gm_tensor_numel(t) / C : 0;
    for (int64_t r = 0; r < N; r++) {
        double m = -INFINITY, z = 0, *x = v + r * C;
        for (int64_t j = 0; j < C; j++) m = x[j] > m ? x[j] : m;
        for (int64_t j = 0; j < C; j++) z += exp(x[j] - m);
        for (int64_t j = 0; j < C; j++) x[j] -= m + log(z);
    }
    return t;
}

/* ---- binary_cross_entropy_with_logits -------------------------------------------------- */

#define BCE_NAME "binary_cross_entropy_with_logits"

static gm_status bce_check(gm_ctx *c, gm_tensor **in, int red)
{
    char b1[64], b2[64];
    gm_status s = check_floats(c, BCE_NAME, 2, in, red);
    if (!s && !same_shape(in[0], in[1]))
        s = gm_errf(c, GM_ESHAPE, BCE_NAME ": logits %s and target %s must have the same shape",
                    GM_SHAPE_STR(in[0], b1), GM_SHAPE_STR(in[1], b2));
    return s;
}

static gm_status bce_fwd(gm_ctx *c, gm_opcall *o)
{
    gm_status s = bce_check(c, o->in, o->p->reduction);
    return s ? s : ew_fwd(c, o, GM_K_BCE_LOGITS, 2, o->in);
}

static gm_status bce_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    return ew_bwd(c, n, gout, gin, GM_K_BCE_LOGITS_BWD, 2, n->in);
}

static gm_status bce_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    gm_params_init(p);
    if (variant < 0 || variant > 3) return GM_ENOTSUP;
    int64_t s2[2] = {3, 4}, s3[3] = {2, 3, 2};
    int nd = variant == 3 ? 3 : 2;
    int64_t *shape = variant == 3 ? s3 : s2;
    /* logits with a few large ones (the stable form must not lose the gradient) */
    in[0] = gm_sample_randn(c, GM_F64, 3400 + (uint64_t)variant, nd, shape);
    in[1] = sample_sigmoid(gm_sample_randn(c, GM_F64, 3410 + (uint64_t)variant, nd, shape));
    if (in[0]) {
        double *x = gm_tensor_data(in[0]);
        x[0] = 6.5;
        x[1] = -7.25;
    }
    p->reduction = variant == 1 ? GM_RED_SUM : variant == 2 ? GM_RED_NONE : GM_RED_MEAN;
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status bce_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                         gm_status *expect)
{
    static const int32_t v[] = {1, 0, 1};
    gm_params_init(p);
    if (variant == 0) { /* broadcastable but not equal: refused */
        in[0] = gm_sample_randn(c, GM_F64, 3420, 2, (int64_t[]){3, 4});
        in[1] = gm_sample_randn(c, GM_F64, 3421, 1, (int64_t[]){4});
        *expect = GM_ESHAPE;
    } else if (variant == 1) { /* f64 logits, f32 target */
        in[0] = gm_sample_randn(c, GM_F64, 3422, 1, (int64_t[]){3});
        in[1] = gm_sample_randn(c, GM_F32, 3423, 1, (int64_t[]){3});
        *expect = GM_EDTYPE;
    } else if (variant == 2) { /* i32 (class ids) target */
        in[0] = gm_sample_randn(c, GM_F64, 3424, 1, (int64_t[]){3});
        in[1] = gm_sample_i32(c, 1, (int64_t[]){3}, v);
        *expect = GM_EDTYPE;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

extern const gm_oprules gm_rules_BCE_LOGITS;
const gm_oprules gm_rules_BCE_LOGITS = {bce_fwd, bce_bwd, bce_sample, bce_bad};

/* ---- gaussian_nll ---------------------------------------------------------------------- */

/* mean, log_var, target float of one dtype; target of mean's shape; log_var broadcasting to
 * mean's shape (never growing it: the loss has mean's shape). */
static gm_status gnll_check(gm_ctx *c, gm_tensor **in, int red)
{
    char b1[64], b2[64];
    gm_tensor *m = in[0], *v = in[1], *t = in[2];
    gm_status s = check_floats(c, "gaussian_nll", 3, in, red);
    if (s) return s;
    if (!same_shape(m, t))
        return gm_errf(c, GM_ESHAPE, "gaussian_nll: mean %s and target %s must have the same shape",
                       GM_SHAPE_STR(m, b1), GM_SHAPE_STR(t, b2));
    bool ok = v->ndim <= m->ndim;
    for (int d = 0; ok && d < v->ndim; d++) {
        int64_t vs = v->shape[v->ndim - 1 - d], ms = m->shape[m->ndim - 1 - d];
        ok = vs == ms || vs == 1;
    }
    if (!ok)
        return gm_errf(c, GM_ESHAPE,
                       "gaussian_nll: log_var %s must have mean's shape %s or broadcast to it",
                       GM_SHAPE_STR(v, b1), GM_SHAPE_STR(m, b2));
    return GM_OK;
}

static gm_status gnll_fwd(gm_ctx *c, gm_opcall *o)
{
    gm_tensor *m = o->in[0], *vb = NULL;
    gm_status s = gnll_check(c, o->in, o->p->reduction);
    if (!s) s = gm_tensor_broadcast_view(c, o->in[1], m->ndim, m->shape, &vb);
    if (!s) {
        gm_tensor *ins[3] = {m, vb, o->in[2]};
        s = ew_fwd(c, o, GM_K_GAUSSIAN_NLL, 3, ins);
    }
    gm_tensor_release(vb);
    return s;
}

static gm_status gnll_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *m = n->in[0], *vb = NULL;
    gm_status s = gm_tensor_broadcast_view(c, n->in[1], m->ndim, m->shape, &vb);
    if (!s) {
        gm_tensor *ins[3] = {m, vb, n->in[2]};
        s = ew_bwd(c, n, gout, gin, GM_K_GAUSSIAN_NLL_BWD, 3, ins);
    }
    gm_tensor_release(vb);
    return s;
}

static gm_status gnll_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    gm_params_init(p);
    int64_t s34[2] = {3, 4}, v4[1] = {4}, v31[2] = {3, 1};
    uint64_t k = 3500 + 10 * (uint64_t)variant;
    if (variant < 0 || variant > 3) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, GM_F64, k, 2, s34);
    in[1] = variant < 2   ? gm_sample_randn(c, GM_F64, k + 1, 2, s34)
            : variant == 2 ? gm_sample_randn(c, GM_F64, k + 1, 1, v4)  /* shared per column */
                           : gm_sample_randn(c, GM_F64, k + 1, 2, v31); /* shared per row */
    in[2] = gm_sample_randn(c, GM_F64, k + 2, 2, s34);
    p->reduction = variant == 1 ? GM_RED_SUM : variant == 3 ? GM_RED_NONE : GM_RED_MEAN;
    return gm_sample_done(c, 3, in, n_in);
}

static gm_status gnll_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                          gm_status *expect)
{
    static const int32_t v[] = {1, 0, 1};
    gm_params_init(p);
    int64_t s34[2] = {3, 4}, s4[1] = {4}, s3[1] = {3}, s234[3] = {2, 3, 4};
    uint64_t k = 3600 + 10 * (uint64_t)variant;
    if (variant < 0 || variant > 4) return GM_ENOTSUP;
    *expect = variant <= 2 ? GM_ESHAPE : GM_EDTYPE;
    in[0] = variant == 4 ? gm_sample_i32(c, 1, s3, v) : gm_sample_randn(c, GM_F64, k, 2, s34);
    if (variant == 0) { /* target [4] for mean [3,4] */
        in[1] = gm_sample_randn(c, GM_F64, k + 1, 2, s34);
        in[2] = gm_sample_randn(c, GM_F64, k + 2, 1, s4);
    } else if (variant == 1 || variant == 2) { /* log_var [3] or [2,3,4]: not mean's [3,4] */
        in[1] = variant == 1 ? gm_sample_randn(c, GM_F64, k + 1, 1, s3)
                             : gm_sample_randn(c, GM_F64, k + 1, 3, s234);
        in[2] = gm_sample_randn(c, GM_F64, k + 2, 2, s34);
    } else if (variant == 3) { /* f32 log_var with f64 mean */
        in[1] = gm_sample_randn(c, GM_F32, k + 1, 2, s34);
        in[2] = gm_sample_randn(c, GM_F64, k + 2, 2, s34);
    } else { /* i32 everywhere */
        in[1] = gm_sample_i32(c, 1, s3, v);
        in[2] = gm_sample_i32(c, 1, s3, v);
    }
    return gm_sample_done(c, 3, in, n_in);
}

extern const gm_oprules gm_rules_GAUSSIAN_NLL;
const gm_oprules gm_rules_GAUSSIAN_NLL = {gnll_fwd, gnll_bwd, gnll_sample, gnll_bad};

/* ---- row divergences: kl_div, symmetric_kl --------------------------------------------- */

/* Two float inputs of one dtype and one shape [..., C] -> N rows (product of the leading
 * dims) of C. nx, ny name the inputs in errors. */
static gm_status rows_check(gm_ctx *c, const char *op, const char *nx, const char *ny,
                            gm_tensor **in, int red, int64_t *N, int64_t *C)
{
    char b1[64], b2[64];
    gm_status s = check_floats(c, op, 2, in, red);
    if (s) return s;
    if (!same_shape(in[0], in[1]) || in[0]->ndim < 1)
        return gm_errf(c, GM_ESHAPE,
                       "%s: %s %s and %s %s must have one shape [..., C] (classes last)", op, nx,
                       GM_SHAPE_STR(in[0], b1), ny, GM_SHAPE_STR(in[1], b2));
    *C = in[0]->shape[in[0]->ndim - 1];
    *N = gm_shape_numel(in[0]->ndim - 1, in[0]->shape);
    return GM_OK;
}

static gm_status rows_fwd(gm_ctx *c, gm_opcall *o, const char *op, const char *nx,
                          const char *ny, int kid)
{
    gm_tensor *x = o->in[0], *xv = NULL, *yv = NULL, *ov = NULL;
    int red = o->p->reduction;
    int64_t N, C;
    gm_status s = rows_check(c, op, nx, ny, o->in, red, &N, &C);
    if (!s) s = loss_out(c, x, red, x->ndim - 1, x->shape, &o->out[0]);
    if (!s) s = flat_view(c, x, N, C, &xv);
    if (!s) s = flat_view(c, o->in[1], N, C, &yv);
    if (!s && red == GM_RED_NONE) s = flat_view(c, o->out[0], N, -1, &ov);
    else if (!s) ov = gm_tensor_retain(o->out[0]);
    if (!s) {
        gm_tensor *ins[2] = {xv, yv};
        s = gm_run(c, kid, 2, ins, 1, &ov, &(gm_kparams){.loss = {.reduction = red}});
    }
    gm_tensor_release(xv);
    gm_tensor_release(yv);
    gm_tensor_release(ov);
    return s;
}

/* Input j that needs a gradient gets kernel output bit 1 << j of i[1] ([N, C] views of gin[j]);
 * d[0] = 1/N for the mean, else 1. */
static gm_status rows_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin,
                          const char *op, const char *nx, const char *ny, int kid)
{
    gm_tensor *x = n->in[0], *xv = NULL, *yv = NULL, *gv = NULL, *ov[2] = {0};
    int red = n->p.reduction, no = 0, mask = 0;
    int64_t N, C;
    gm_status s = rows_check(c, op, nx, ny, n->in, red, &N, &C);
    for (int j = 0; j < 2 && !s; j++) {
        if (!n->needs[j]) continue;
        if (!gout[0]) {
            s = gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[j]);
            continue;
        }
        s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[j]);
        if (!s) s = flat_view(c, gin[j], N, C, &ov[no++]);
        mask |= 1 << j;
    }
    if (s || no == 0) goto done;
    s = flat_view(c, x, N, C, &xv);
    if (!s) s = flat_view(c, n->in[1], N, C, &yv);
    if (!s && red == GM_RED_NONE) s = flat_view(c, gout[0], N, -1, &gv);
    else if (!s) gv = gm_tensor_retain(gout[0]);
    if (!s) {
        gm_kparams k = {.loss = {.outs = (unsigned)mask, .scale = red == GM_RED_MEAN && N > 0 ? 1.0 / (double)N : 1.0}};
        gm_tensor *ins[3] = {xv, yv, gv};
        s = gm_run(c, kid, 3, ins, no, ov, &k);
    }
done:
    gm_tensor_release(xv);
    gm_tensor_release(yv);
    gm_tensor_release(gv);
    for (int j = 0; j < 2; j++) gm_tensor_release(ov[j]);
    return s;
}

/* Samples of both: [3,4] mean and sum, [2,2,3] none; log-softmax rows when logp. */
static gm_status rows_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                             uint64_t seed, bool logp)
{
    gm_params_init(p);
    if (variant < 0 || variant > 2) return GM_ENOTSUP;
    int64_t s2[2] = {3, 4}, s3[3] = {2, 2, 3};
    int nd = variant == 2 ? 3 : 2;
    int64_t *shape = variant == 2 ? s3 : s2;
    for (int j = 0; j < 2; j++) {
        in[j] = gm_sample_randn(c, GM_F64, seed + 10 * (uint64_t)variant + (uint64_t)j, nd, shape);
        if (logp) in[j] = sample_log_softmax(in[j]);
    }
    p->reduction = variant == 0 ? GM_RED_MEAN : variant == 1 ? GM_RED_SUM : GM_RED_NONE;
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status rows_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                          gm_status *expect, uint64_t seed)
{
    static const int32_t v[] = {1, 0, 1};
    int64_t s34[2] = {3, 4}, s43[2] = {4, 3}, s3[1] = {3};
    gm_params_init(p);
    if (variant == 0) { /* [3,4] vs [4,3] */
        in[0] = gm_sample_randn(c, GM_F64, seed, 2, s34);
        in[1] = gm_sample_randn(c, GM_F64, seed + 1, 2, s43);
        *expect = GM_ESHAPE;
    } else if (variant == 1) { /* 0-dim: no class dim */
        in[0] = gm_sample_randn(c, GM_F64, seed + 2, 0, NULL);
        in[1] = gm_sample_randn(c, GM_F64, seed + 3, 0, NULL);
        *expect = GM_ESHAPE;
    } else if (variant == 2) {
        in[0] = gm_sample_randn(c, GM_F64, seed + 4, 2, s34);
        in[1] = gm_sample_randn(c, GM_F32, seed + 5, 2, s34);
        *expect = GM_EDTYPE;
    } else if (variant == 3) {
        in[0] = gm_sample_i32(c, 1, s3, v);
        in[1] = gm_sample_i32(c, 1, s3, v);
        *expect = GM_EDTYPE;
    } else if (variant == 4) { /* a reduction code the Lua binding never makes */
        in[0] = gm_sample_randn(c, GM_F64, seed + 6, 2, s34);
        in[1] = gm_sample_randn(c, GM_F64, seed + 7, 2, s34);
        p->reduction = 7;
        *expect = GM_EARG;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status kl_fwd(gm_ctx *c, gm_opcall *o)
{
    return rows_fwd(c, o, "kl_div", "input", "target", GM_K_KL_DIV);
}

static gm_status kl_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    return rows_bwd(c, n, gout, gin, "kl_div", "input", "target", GM_K_KL_DIV_BWD);
}

static gm_status kl_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    return rows_sample(c, variant, n_in, in, p, 3700, true);
}

static gm_status kl_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                        gm_status *expect)
{
    return rows_bad(c, variant, n_in, in, p, expect, 3750);
}

extern const gm_oprules gm_rules_KL_DIV;
const gm_oprules gm_rules_KL_DIV = {kl_fwd, kl_bwd, kl_sample, kl_bad};

static gm_status skl_fwd(gm_ctx *c, gm_opcall *o)
{
    return rows_fwd(c, o, "symmetric_kl", "p_logits", "q_logits", GM_K_SYMMETRIC_KL);
}

static gm_status skl_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    return rows_bwd(c, n, gout, gin, "symmetric_kl", "p_logits", "q_logits",
                    GM_K_SYMMETRIC_KL_BWD);
}

static gm_status skl_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    return rows_sample(c, variant, n_in, in, p, 3800, false);
}

static gm_status skl_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                         gm_status *expect)
{
    return rows_bad(c, variant, n_in, in, p, expect, 3850);
}

extern const gm_oprules gm_rules_SYMMETRIC_KL;
const gm_oprules gm_rules_SYMMETRIC_KL = {skl_fwd, skl_bwd, skl_sample, skl_bad};
