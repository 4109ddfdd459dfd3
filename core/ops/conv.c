/* conv.c: rules of conv2d, max_pool2d and avg_pool2d on NCHW images. The geometry comes in the
 * `shape` param (see conv.def). Forward and backward run dedicated CPU kernels on contiguous
 * operands (kernels/cpu/conv.c: im2col + gemm for the convolution, col2im for its input
 * gradient); the rules check shapes and parameters so the kernels never see a bad geometry. */
#include <limits.h>

#include "internal.h"
#include "sample.h"

/* One convolution or pooling geometry: input [N,C,H,W], kernel kh x kw, output OH x OW. */
typedef struct {
    int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw, OH, OW;
} geom;

static gm_status need_4d(gm_ctx *c, const char *op, const char *what, const gm_tensor *x) {
    char b[64];
    if (x->ndim != 4)
        return gm_errf(c, GM_ESHAPE, "%s: %s must be 4-D [N, C, H, W]-like, got %s", op, what, GM_SHAPE_STR(x, b));
    return GM_OK;
}

/* Stride, padding and output size along one spatial dim; sets *out. */
static gm_status spatial(gm_ctx *c, const char *op, const char *dimname, int64_t in, int64_t k,
                         int64_t s, int64_t pad, bool pool, int64_t *out) {
    if (s < 1) return gm_errf(c, GM_EARG, "%s: stride_%s must be >= 1, got %lld", op, dimname, (long long)s);
    if (pad < 0) return gm_errf(c, GM_EARG, "%s: pad_%s must be >= 0, got %lld", op, dimname, (long long)pad);
    if (k < 1) return gm_errf(c, GM_EARG, "%s: kernel_%s must be >= 1, got %lld", op, dimname, (long long)k);
    if (pool && 2 * pad > k)
        return gm_errf(c, GM_EARG, "%s: pad_%s %lld is more than half the kernel size %lld", op, dimname,
                       (long long)pad, (long long)k);
    if (in + 2 * pad < k)
        return gm_errf(c, GM_ESHAPE, "%s: kernel %s size %lld is larger than the padded input (%lld + 2*%lld)", op,
                       dimname, (long long)k, (long long)in, (long long)pad);
    *out = (in + 2 * pad - k) / s + 1;
    return GM_OK;
}

static gm_status conv_geom(gm_ctx *c, const gm_tensor *x, const gm_tensor *w, const gm_params *p, geom *g) {
    char b1[64], b2[64];
    gm_status st;
    gm_tensor *ins[2] = {(gm_tensor *)x, (gm_tensor *)w};
    if ((st = gm_check_same_dtype(c, "conv2d", 2, ins)) != GM_OK) return st;
    if ((st = gm_check_float(c, "conv2d", x)) != GM_OK) return st;
    if ((st = need_4d(c, "conv2d", "input", x)) != GM_OK) return st;
    if (w->ndim != 4)
        return gm_errf(c, GM_ESHAPE, "conv2d: weight must be 4-D [out_channels, in_channels, kh, kw], got %s",
                       GM_SHAPE_STR(w, b1));
    if (p->nshape != 4)
        return gm_errf(c, GM_EARG, "conv2d: shape must be {stride_h, stride_w, pad_h, pad_w}, got %d entries", p->nshape);
    if (w->shape[1] != x->shape[1])
        return gm_errf(c, GM_ESHAPE, "conv2d: input %s has %lld channels but weight %s expects %lld", GM_SHAPE_STR(x, b1),
                       (long long)x->shape[1], GM_SHAPE_STR(w, b2), (long long)w->shape[1]);
    *g = (geom){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .O = w->shape[0],
                .kh = w->shape[2], .kw = w->shape[3], .sh = p->shape[0], .sw = p->shape[1],
                .ph = p->shape[2], .pw = p->shape[3]};
    if ((st = spatial(c, "conv2d", "h", g->H, g->kh, g->sh, g->ph, false, &g->OH)) != GM_OK) return st;
    if ((st = spatial(c, "conv2d", "w", g->W, g->kw, g->sw, g->pw, false, &g->OW)) != GM_OK) return st;
    /* gemm dims: [O, C*kh*kw] @ [C*kh*kw, OH*OW] per image. */
    if (g->C * g->kh * g->kw > INT_MAX || g->OH * g->OW > INT_MAX || g->O > INT_MAX)
        return gm_errf(c, GM_ENOTSUP, "conv2d: input %s with weight %s exceeds BLAS int range", GM_SHAPE_STR(x, b1),
                       GM_SHAPE_STR(w, b2));
    return GM_OK;
}

/* The kernels' arguments: the window, stride and padding. */
static gm_kparams geom_args(const geom *g) {
    return (gm_kparams){.conv = {.kh = g->kh, .kw = g->kw, .sh = g->sh, .sw = g->sw, .ph = g->ph, .pw = g->pw}};
}

static gm_status conv2d_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *xc = NULL, *wc = NULL;
    geom g;
    gm_status st = conv_geom(c, o->in[0], o->in[1], o->p, &g);
    if (st != GM_OK) return st;
    if ((st = gm_tensor_contiguous(c, o->in[0], &xc)) != GM_OK) goto out;
    if ((st = gm_tensor_contiguous(c, o->in[1], &wc)) != GM_OK) goto out;
    int64_t shape[4] = {g.N, g.O, g.OH, g.OW};
    if ((st = gm_tensor_new(c, xc->dtype, gm_tensor_device(xc), 4, shape, &o->out[0])) != GM_OK) goto out;
    gm_kparams k = geom_args(&g);
    gm_tensor *ins[2] = {xc, wc};
    st = gm_run(c, GM_K_CONV2D, 2, ins, 1, &o->out[0], &k);
out:
    gm_tensor_release(xc);
    gm_tensor_release(wc);
    return st;
}

/* Gradients of x [N,C,H,W] and w [O,C,kh,kw] from dy [N,O,OH,OW]:
 *   dw = sum_n dy[n] @ im2col(x[n])^T;  dx[n] = col2im(w^T @ dy[n]). */
static gm_status conv2d_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0], *w = n->in[1], *gc = NULL, *xc = NULL, *wc = NULL;
    gm_status st = GM_OK;
    for (int j = 0; j < 2; j++) {
        if (!n->needs[j]) continue;
        gm_tensor *t = n->in[j];
        st = gout[0] ? gm_tensor_new(c, t->dtype, gm_tensor_device(t), 4, t->shape, &gin[j])
                     : gm_tensor_zeros(c, t->dtype, gm_tensor_device(t), 4, t->shape, &gin[j]);
        if (st != GM_OK) return st;
    }
    if (!gout[0]) return GM_OK;
    geom g;
    if ((st = conv_geom(c, x, w, &n->p, &g)) != GM_OK) return st;
    gm_kparams k = geom_args(&g);
    if ((st = gm_tensor_contiguous(c, gout[0], &gc)) != GM_OK) goto out;
    if (n->needs[0]) {
        if ((st = gm_tensor_contiguous(c, w, &wc)) != GM_OK) goto out;
        gm_tensor *ins[2] = {wc, gc};
        if ((st = gm_run(c, GM_K_CONV2D_DX, 2, ins, 1, &gin[0], &k)) != GM_OK) goto out;
    }
    if (n->needs[1]) {
        if ((st = gm_tensor_contiguous(c, x, &xc)) != GM_OK) goto out;
        gm_tensor *ins[2] = {xc, gc};
        st = gm_run(c, GM_K_CONV2D_DW, 2, ins, 1, &gin[1], &k);
    }
out:
    gm_tensor_release(gc);
    gm_tensor_release(xc);
    gm_tensor_release(wc);
    return st;
}

/* ---- pooling ------------------------------------------------------------------------------ */

static gm_status pool_geom(gm_ctx *c, const char *op, const gm_tensor *x, const gm_params *p, geom *g) {
    gm_status st;
    if ((st = gm_check_float(c, op, x)) != GM_OK) return st;
    if ((st = need_4d(c, op, "input", x)) != GM_OK) return st;
    if (p->nshape != 6)
        return gm_errf(c, GM_EARG, "%s: shape must be {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w}, got %d entries",
                       op, p->nshape);
    *g = (geom){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .O = x->shape[1],
                .kh = p->shape[0], .kw = p->shape[1], .sh = p->shape[2], .sw = p->shape[3],
                .ph = p->shape[4], .pw = p->shape[5]};
    if ((st = spatial(c, op, "h", g->H, g->kh, g->sh, g->ph, true, &g->OH)) != GM_OK) return st;
    if ((st = spatial(c, op, "w", g->W, g->kw, g->sw, g->pw, true, &g->OW)) != GM_OK) return st;
    if (g->H * g->W > INT32_MAX) {
        char b[64];
        return gm_errf(c, GM_ENOTSUP, "%s: planes of %s exceed the i32 index range", op, GM_SHAPE_STR(x, b));
    }
    return GM_OK;
}

static gm_status pool_fwd(gm_ctx *c, gm_opcall *o, const char *op, int kid) {
    gm_tensor *xc = NULL;
    geom g;
    gm_status st = pool_geom(c, op, o->in[0], o->p, &g);
    if (st != GM_OK) return st;
    if ((st = gm_tensor_contiguous(c, o->in[0], &xc)) != GM_OK) return st;
    int64_t shape[4] = {g.N, g.C, g.OH, g.OW};
    for (int k = 0; k < o->n_out && st == GM_OK; k++)
        st = gm_tensor_new(c, k == 0 ? xc->dtype : GM_I32, gm_tensor_device(xc), 4, shape, &o->out[k]);
    if (st == GM_OK) {
        gm_kparams k = geom_args(&g);
        st = gm_run(c, kid, 1, &xc, o->n_out, o->out, &k);
    }
    gm_tensor_release(xc);
    return st;
}

static gm_status max_pool2d_fwd(gm_ctx *c, gm_opcall *o) { return pool_fwd(c, o, "max_pool2d", GM_K_MAX_POOL2D); }
static gm_status avg_pool2d_fwd(gm_ctx *c, gm_opcall *o) { return pool_fwd(c, o, "avg_pool2d", GM_K_AVG_POOL2D); }

/* dx from dy (and, for max, the saved argmax indices): each output element routes its
 * gradient to the input elements of its window. */
static gm_status pool_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin, const char *op, bool max) {
    gm_tensor *x = n->in[0], *gc = NULL;
    if (!n->needs[0]) return GM_OK;
    if (!gout[0]) return gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), 4, x->shape, &gin[0]);
    geom g;
    gm_status st = pool_geom(c, op, x, &n->p, &g);
    if (st != GM_OK) return st;
    if ((st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), 4, x->shape, &gin[0])) != GM_OK) return st;
    if ((st = gm_tensor_contiguous(c, gout[0], &gc)) != GM_OK) return st;
    gm_kparams k = geom_args(&g);
    gm_tensor *ins[2] = {gc, max ? n->saved_out[1] : NULL};
    st = gm_run(c, max ? GM_K_MAX_POOL2D_BWD : GM_K_AVG_POOL2D_BWD, max ? 2 : 1, ins, 1, &gin[0], &k);
    gm_tensor_release(gc);
    return st;
}

static gm_status max_pool2d_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return pool_bwd(c, n, gout, gin, "max_pool2d", true);
}
static gm_status avg_pool2d_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    return pool_bwd(c, n, gout, gin, "avg_pool2d", false);
}

/* ---- samples and bad calls ------------------------------------------------------------------ */

static void set_shape(gm_params *p, int n, const int64_t *v) {
    p->nshape = n;
    for (int i = 0; i < n; i++) p->shape[i] = v[i];
}

static gm_status conv2d_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    static const struct { int64_t x[4], w[4], geo[4]; } s[] = {
        {{2, 2, 5, 5}, {3, 2, 3, 3}, {2, 2, 1, 1}}, /* stride 2, padding 1 */
        {{1, 3, 4, 5}, {2, 3, 2, 3}, {1, 2, 0, 1}}, /* non-square kernel, stride and padding */
        {{2, 3, 3, 3}, {4, 3, 1, 1}, {1, 1, 0, 0}}, /* 1x1 kernel */
        {{1, 1, 4, 4}, {2, 1, 4, 4}, {1, 1, 0, 0}}, /* kernel covers the whole input */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    set_shape(p, 4, s[variant].geo);
    in[0] = gm_sample_randn(c, GM_F64, 1000 + (uint64_t)variant, 4, s[variant].x);
    in[1] = gm_sample_randn(c, GM_F64, 2000 + (uint64_t)variant, 4, s[variant].w);
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status conv2d_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    static const struct { int64_t x[4], w[4], geo[4]; int nx, ngeo; gm_dtype tx, tw; gm_status st; } s[] = {
        {{1, 2, 5, 5}, {3, 3, 3, 3}, {1, 1, 0, 0}, 4, 4, GM_F64, GM_F64, GM_ESHAPE}, /* channel mismatch */
        {{1, 2, 2, 2}, {3, 2, 5, 5}, {1, 1, 1, 1}, 4, 4, GM_F64, GM_F64, GM_ESHAPE}, /* kernel > padded input */
        {{2, 5, 5, 0}, {3, 2, 3, 3}, {1, 1, 0, 0}, 3, 4, GM_F64, GM_F64, GM_ESHAPE}, /* 3-D input */
        {{1, 2, 5, 5}, {3, 2, 3, 3}, {1, 1, 0, 0}, 4, 4, GM_F64, GM_F32, GM_EDTYPE}, /* f64 with f32 */
        {{1, 2, 5, 5}, {3, 2, 3, 3}, {1, 1, 0, 0}, 4, 4, GM_I32, GM_I32, GM_EDTYPE}, /* i32 */
        {{1, 2, 5, 5}, {3, 2, 3, 3}, {0, 1, 0, 0}, 4, 4, GM_F64, GM_F64, GM_EARG},   /* stride 0 */
        {{1, 2, 5, 5}, {3, 2, 3, 3}, {1, 1, -1, 0}, 4, 4, GM_F64, GM_F64, GM_EARG},  /* negative padding */
        {{1, 2, 5, 5}, {3, 2, 3, 3}, {1, 1, 0, 0}, 4, 2, GM_F64, GM_F64, GM_EARG},   /* 2 geometry entries */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    set_shape(p, s[variant].ngeo, s[variant].geo);
    *expect = s[variant].st;
    in[0] = in[1] = NULL;
    gm_tensor_zeros(c, s[variant].tx, GM_CPU, s[variant].nx, s[variant].x, &in[0]);
    gm_tensor_zeros(c, s[variant].tw, GM_CPU, 4, s[variant].w, &in[1]);
    return gm_sample_done(c, 2, in, n_in);
}

/* Distinct values with gaps >= 0.05, so finite differences never change a window's max. */
static gm_tensor *distinct(gm_ctx *c, int ndim, const int64_t *shape) {
    gm_tensor *x = NULL;
    if (gm_tensor_new(c, GM_F64, GM_CPU, ndim, shape, &x)) return NULL;
    double *d = gm_tensor_data(x);
    int64_t n = gm_tensor_numel(x);
    for (int64_t i = 0; i < n; i++) d[i] = 0.05 * (double)((i * 37 + 11) % n) - 1.0;
    return x;
}

static const struct { int64_t x[4], geo[6]; } pool_samples[] = {
    {{2, 2, 4, 4}, {2, 2, 2, 2, 0, 0}}, /* 2x2 windows, stride 2 */
    {{1, 2, 5, 5}, {3, 3, 2, 2, 1, 1}}, /* stride 2, padding 1: windows overlap the border */
    {{1, 1, 4, 5}, {2, 3, 1, 2, 1, 0}}, /* non-square, overlapping windows */
};

static gm_status pool_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, bool max) {
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof pool_samples / sizeof pool_samples[0])) return GM_ENOTSUP;
    set_shape(p, 6, pool_samples[variant].geo);
    in[0] = max ? distinct(c, 4, pool_samples[variant].x)
                : gm_sample_randn(c, GM_F64, 3000 + (uint64_t)variant, 4, pool_samples[variant].x);
    return gm_sample_done(c, 1, in, n_in);
}

static gm_status max_pool2d_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    return pool_sample(c, variant, n_in, in, p, true);
}
static gm_status avg_pool2d_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    return pool_sample(c, variant, n_in, in, p, false);
}

static gm_status pool_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    static const struct { int64_t x[4], geo[6]; int nx, ngeo; gm_dtype t; gm_status st; } s[] = {
        {{1, 1, 2, 2}, {3, 3, 1, 1, 0, 0}, 4, 6, GM_F64, GM_ESHAPE}, /* kernel > input */
        {{1, 4, 4, 0}, {2, 2, 2, 2, 0, 0}, 3, 6, GM_F64, GM_ESHAPE}, /* 3-D input */
        {{1, 1, 4, 4}, {2, 2, 2, 2, 0, 0}, 4, 6, GM_I32, GM_EDTYPE}, /* i32 */
        {{1, 1, 4, 4}, {2, 2, 2, 2, 2, 0}, 4, 6, GM_F64, GM_EARG},   /* pad > kernel / 2 */
        {{1, 1, 4, 4}, {2, 2, 0, 2, 0, 0}, 4, 6, GM_F64, GM_EARG},   /* stride 0 */
        {{1, 1, 4, 4}, {2, 2, 2, 2, 0, 0}, 4, 4, GM_F64, GM_EARG},   /* 4 geometry entries */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    set_shape(p, s[variant].ngeo, s[variant].geo);
    *expect = s[variant].st;
    in[0] = NULL;
    gm_tensor_zeros(c, s[variant].t, GM_CPU, s[variant].nx, s[variant].x, &in[0]);
    return gm_sample_done(c, 1, in, n_in);
}

extern const gm_oprules gm_rules_CONV2D, gm_rules_MAX_POOL2D, gm_rules_AVG_POOL2D;
const gm_oprules gm_rules_CONV2D = {conv2d_fwd, conv2d_bwd, conv2d_sample, conv2d_bad};
const gm_oprules gm_rules_MAX_POOL2D = {max_pool2d_fwd, max_pool2d_bwd, max_pool2d_sample, pool_bad};
const gm_oprules gm_rules_AVG_POOL2D = {avg_pool2d_fwd, avg_pool2d_bwd, avg_pool2d_sample, pool_bad};
