/* moe.c: rules of the MoE family. moe_dispatch sorts the (token, choice) pairs by expert with
 * a per-expert capacity (kernels MOE_ROUTE, MOE_SCATTER, MOE_ROW_EXPERT); expert_mm runs one
 * gemm per expert over its rows; moe_combine adds the weighted expert outputs back in token
 * order. Dispatch and combine are each other's transpose, so their backward rules run the other
 * one's kernel. Kernels get contiguous inputs: the rules copy strided ones first. */
#include "rules.h"
#include "sample.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- helpers --------------------------------------------------------------------------- */

static gm_status need_2d(gm_ctx *c, const char *op, const char *what, const gm_tensor *x) {
    char b[64];
    if (x->ndim == 2) return GM_OK;
    return gm_errf(c, GM_ESHAPE, "%s: %s must be 2-D, got shape %s", op, what, GM_SHAPE_STR(x, b));
}

/* ---- moe_dispatch ---------------------------------------------------------------------- */

static gm_status dispatch_params(gm_ctx *c, const gm_params *p, int64_t *E, int64_t *cap) {
    if (p->n < 1 || p->n > INT32_MAX - 1)
        return gm_errf(c, GM_EARG, "moe_dispatch: experts must be >= 1, got %lld", (long long)p->n);
    double a = p->has_a ? p->a : -1;
    if (!(a >= -1) || a != floor(a) || a > INT32_MAX)
        return gm_errf(c, GM_EARG, "moe_dispatch: capacity must be an integer >= 0, or -1 for dropless, got %g", a);
    *E = p->n;
    *cap = (int64_t)a;
    return GM_OK;
}

/* x [T,D] float, ids [T,K] i32 -> xs [S,D], offsets [E+1], slot [T,K], row_expert [S]. */
static gm_status dispatch_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0], *ids = o->in[1], *xc = NULL, *ic = NULL;
    char b1[64], b2[64];
    int64_t E = 0, cap = -1;
    gm_status st = gm_check_float(c, "moe_dispatch", x);
    if (!st) st = need_2d(c, "moe_dispatch", "x", x);
    if (!st) st = gm_need_i32(c, "moe_dispatch", "ids", ids);
    if (!st) st = need_2d(c, "moe_dispatch", "ids", ids);
    if (!st && ids->shape[0] != x->shape[0])
        st = gm_errf(c, GM_ESHAPE, "moe_dispatch: ids %s must have one row per token of x %s", GM_SHAPE_STR(ids, b1),
                     GM_SHAPE_STR(x, b2));
    if (!st) st = dispatch_params(c, o->p, &E, &cap);
    if (st) return st;
    gm_device dev = gm_tensor_device(x);
    int64_t eshape[1] = {E + 1};
    if ((st = gm_tensor_contiguous(c, x, &xc)) != GM_OK) goto out;
    if ((st = gm_tensor_contiguous(c, ids, &ic)) != GM_OK) goto out;
    if ((st = gm_tensor_new(c, GM_I32, dev, 1, eshape, &o->out[1])) != GM_OK) goto out;
    if ((st = gm_tensor_new(c, GM_I32, dev, 2, ids->shape, &o->out[2])) != GM_OK) goto out;
    if ((st = gm_run(c, GM_K_MOE_ROUTE, 1, &ic, 2, &o->out[1], &(gm_kparams){.route = {E, cap}})) != GM_OK) goto out;
    int64_t S = (int64_t)gm_tensor_get_flat(o->out[1], E);
    int64_t xshape[2] = {S, x->shape[1]};
    if ((st = gm_tensor_new(c, x->dtype, dev, 2, xshape, &o->out[0])) != GM_OK) goto out;
    if ((st = gm_tensor_new(c, GM_I32, dev, 1, &S, &o->out[3])) != GM_OK) goto out;
    gm_tensor *sin[2] = {xc, o->out[2]};
    if ((st = gm_run(c, GM_K_MOE_SCATTER, 2, sin, 1, &o->out[0], NULL)) != GM_OK) goto out;
    st = gm_run(c, GM_K_MOE_ROW_EXPERT, 1, &o->out[1], 1, &o->out[3], NULL);
out:
    gm_tensor_release(xc);
    gm_tensor_release(ic);
    return st;
}

/* dx[t] = sum_k dxs[slot[t,k]]: a combine with unit weights. */
static gm_status dispatch_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0], *g = NULL;
    if (!n->needs[0]) return GM_OK;
    gm_status st = gm_gout_or_zeros(c, n, gout, 0, true, &g);
    if (!st) st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), 2, x->shape, &gin[0]);
    gm_tensor *ins[2] = {g, n->saved_out[2]};
    if (!st) st = gm_run(c, GM_K_MOE_COMBINE, 2, ins, 1, &gin[0], NULL);
    gm_tensor_release(g);
    return st;
}

static gm_status dispatch_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant == 0) { /* dropless, expert 1 gets no token */
        static const int32_t iv[] = {0, 2, 3, 0, 2, 3, 0, 2, 3, 2};
        in[0] = gm_sample_randn(c, GM_F64, 1000, 2, (int64_t[]){5, 3});
        in[1] = gm_sample_i32(c, 2, (int64_t[]){5, 2}, iv);
        p->n = 4;
    } else if (variant == 1) { /* capacity 2 overflows experts 0 and 1; -1 padding ids */
        static const int32_t iv[] = {0, 1, 1, 0, 0, -1, 1, 2, 0, 1, 2, -1};
        in[0] = gm_sample_randn(c, GM_F64, 1001, 2, (int64_t[]){6, 2});
        in[1] = gm_sample_i32(c, 2, (int64_t[]){6, 2}, iv);
        p->n = 3;
        p->a = 2;
        p->has_a = true;
    } else if (variant == 2) { /* T = 1, k = E = 3 */
        static const int32_t iv[] = {2, 0, 1};
        in[0] = gm_sample_randn(c, GM_F64, 1002, 2, (int64_t[]){1, 4});
        in[1] = gm_sample_i32(c, 2, (int64_t[]){1, 3}, iv);
        p->n = 3;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status dispatch_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    static const int32_t ok[] = {0, 1, 2, 0, 1, 2}, big[] = {0, 1, 3, 0, 1, 2}, neg[] = {0, -2, 1, 0, 1, 2};
    gm_params_init(p);
    p->n = 3;
    if (variant > 7) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, variant == 6 ? GM_F32 : GM_F64, 1100, 2, (int64_t[]){3, 2});
    *expect = GM_EARG;
    switch (variant) {
    case 0: in[1] = gm_sample_i32(c, 2, (int64_t[]){3, 2}, big); *expect = GM_EINDEX; break; /* id 3 of 3 experts */
    case 1: in[1] = gm_sample_i32(c, 2, (int64_t[]){3, 2}, neg); *expect = GM_EINDEX; break; /* id -2 */
    case 2: in[1] = gm_sample_randn(c, GM_F64, 1101, 2, (int64_t[]){3, 2}); *expect = GM_EDTYPE; break;
    case 3: in[1] = gm_sample_i32(c, 2, (int64_t[]){2, 3}, ok); *expect = GM_ESHAPE; break; /* 2 rows for 3 tokens */
    case 4: in[1] = gm_sample_i32(c, 1, (int64_t[]){6}, ok); *expect = GM_ESHAPE; break;    /* 1-D ids */
    case 5: in[1] = gm_sample_i32(c, 2, (int64_t[]){3, 2}, ok); p->a = -2; p->has_a = true; break;
    case 6: /* i32 x */
        gm_tensor_release(in[0]);
        in[0] = gm_sample_i32(c, 2, (int64_t[]){3, 2}, ok);
        in[1] = gm_sample_i32(c, 2, (int64_t[]){3, 2}, ok);
        *expect = GM_EDTYPE;
        break;
    default: in[1] = gm_sample_i32(c, 2, (int64_t[]){3, 2}, ok); p->n = 0; break; /* 0 experts */
    }
    return gm_sample_done(c, 2, in, n_in);
}

extern const gm_oprules gm_rules_MOE_DISPATCH;
const gm_oprules gm_rules_MOE_DISPATCH = {dispatch_fwd, dispatch_bwd, dispatch_sample, dispatch_bad};

/* ---- expert_mm ------------------------------------------------------------------------- */

static gm_status expert_mm_check(gm_ctx *c, gm_tensor *x, gm_tensor *w, gm_tensor *off) {
    char b1[64], b2[64];
    gm_tensor *fl[2] = {x, w};
    gm_status st = gm_check_float(c, "expert_mm", x);
    if (!st) st = gm_check_same_dtype(c, "expert_mm", 2, fl);
    if (!st) st = gm_need_i32(c, "expert_mm", "offsets", off);
    if (!st) st = need_2d(c, "expert_mm", "x", x);
    if (st) return st;
    if (w->ndim != 3 || w->shape[1] != x->shape[1])
        return gm_errf(c, GM_ESHAPE, "expert_mm: w %s must be [E, %lld, Dout] for x %s", GM_SHAPE_STR(w, b1),
                       (long long)x->shape[1], GM_SHAPE_STR(x, b2));
    if (off->ndim != 1 || off->shape[0] != w->shape[0] + 1)
        return gm_errf(c, GM_ESHAPE, "expert_mm: offsets %s must be [%lld] (E + 1) for w %s", GM_SHAPE_STR(off, b1),
                       (long long)w->shape[0] + 1, GM_SHAPE_STR(w, b2));
    return GM_OK;
}

static gm_status expert_mm_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0], *w = o->in[1], *cc[3] = {NULL, NULL, NULL};
    gm_status st = expert_mm_check(c, x, w, o->in[2]);
    if (st) return st;
    int64_t shape[2] = {x->shape[0], w->shape[2]};
    if (!(st = gm_contig_all(c, 3, o->in, cc)) &&
        !(st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), 2, shape, &o->out[0])))
        st = gm_run(c, GM_K_EXPERT_MM, 3, cc, 1, o->out, NULL);
    gm_release_all(3, cc);
    return st;
}

/* dxs_e = g_e w[e]^T, dw[e] = xs_e^T g_e. */
static gm_status expert_mm_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0], *w = n->in[1], *cc[3] = {NULL, NULL, NULL}, *g = NULL;
    gm_device dev = gm_tensor_device(x);
    gm_status st = gm_contig_all(c, 3, n->in, cc);
    if (!st) st = gm_gout_or_zeros(c, n, gout, 0, true, &g);
    if (!st && n->needs[0]) {
        gm_tensor *ins[3] = {g, cc[1], cc[2]};
        st = gm_tensor_new(c, x->dtype, dev, 2, x->shape, &gin[0]);
        if (!st) st = gm_run(c, GM_K_EXPERT_MM, 3, ins, 1, &gin[0], &(gm_kparams){.expert_mm = {.transpose_w = true}});
    }
    if (!st && n->needs[1]) {
        gm_tensor *ins[3] = {cc[0], g, cc[2]};
        st = gm_tensor_new(c, w->dtype, dev, 3, w->shape, &gin[1]);
        if (!st) st = gm_run(c, GM_K_EXPERT_MM_WGRAD, 3, ins, 1, &gin[1], NULL);
    }
    gm_release_all(3, cc);
    gm_tensor_release(g);
    return st;
}

static gm_status expert_mm_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant == 0) { /* 4 experts, expert 1 without rows */
        static const int32_t ov[] = {0, 2, 2, 4, 5};
        in[0] = gm_sample_randn(c, GM_F64, 1200, 2, (int64_t[]){5, 3});
        in[1] = gm_sample_randn(c, GM_F64, 1201, 3, (int64_t[]){4, 3, 2});
        in[2] = gm_sample_i32(c, 1, (int64_t[]){5}, ov);
    } else if (variant == 1) { /* one expert */
        static const int32_t ov[] = {0, 3};
        in[0] = gm_sample_randn(c, GM_F64, 1202, 2, (int64_t[]){3, 2});
        in[1] = gm_sample_randn(c, GM_F64, 1203, 3, (int64_t[]){1, 2, 4});
        in[2] = gm_sample_i32(c, 1, (int64_t[]){2}, ov);
    } else if (variant == 2) { /* first and last experts empty */
        static const int32_t ov[] = {0, 0, 4, 4};
        in[0] = gm_sample_randn(c, GM_F64, 1204, 2, (int64_t[]){4, 2});
        in[1] = gm_sample_randn(c, GM_F64, 1205, 3, (int64_t[]){3, 2, 3});
        in[2] = gm_sample_i32(c, 1, (int64_t[]){4}, ov);
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 3, in, n_in);
}

static gm_status expert_mm_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    static const int32_t ok[] = {0, 2, 2, 4}, dec[] = {0, 3, 2, 4}, end[] = {0, 1, 2, 3};
    gm_params_init(p);
    if (variant > 6) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, GM_F64, 1300, 2, (int64_t[]){4, 3});
    in[1] = gm_sample_randn(c, variant == 5 ? GM_F32 : GM_F64, 1301, 3, (int64_t[]){3, 3, 2});
    in[2] = gm_sample_i32(c, 1, (int64_t[]){4}, ok);
    *expect = GM_ESHAPE;
    switch (variant) {
    case 0: /* Din 2 vs 3 */
        gm_tensor_release(in[1]);
        in[1] = gm_sample_randn(c, GM_F64, 1302, 3, (int64_t[]){3, 2, 2});
        break;
    case 1: /* 2-D w */
        gm_tensor_release(in[1]);
        in[1] = gm_sample_randn(c, GM_F64, 1302, 2, (int64_t[]){3, 2});
        break;
    case 2: /* offsets of length E */
        gm_tensor_release(in[2]);
        in[2] = gm_sample_i32(c, 1, (int64_t[]){3}, ok);
        break;
    case 3: /* decreasing offsets */
        gm_tensor_release(in[2]);
        in[2] = gm_sample_i32(c, 1, (int64_t[]){4}, dec);
        *expect = GM_EINDEX;
        break;
    case 4: /* offsets end at 3, x has 4 rows */
        gm_tensor_release(in[2]);
        in[2] = gm_sample_i32(c, 1, (int64_t[]){4}, end);
        *expect = GM_EINDEX;
        break;
    case 5: *expect = GM_EDTYPE; break; /* f32 w, f64 x */
    default: /* f64 offsets */
        gm_tensor_release(in[2]);
        in[2] = gm_sample_randn(c, GM_F64, 1303, 1, (int64_t[]){4});
        *expect = GM_EDTYPE;
        break;
    }
    return gm_sample_done(c, 3, in, n_in);
}

extern const gm_oprules gm_rules_EXPERT_MM;
const gm_oprules gm_rules_EXPERT_MM = {expert_mm_fwd, expert_mm_bwd, expert_mm_sample, expert_mm_bad};

/* ---- moe_combine ----------------------------------------------------------------------- */

static gm_status combine_check(gm_ctx *c, gm_tensor *ys, gm_tensor *w, gm_tensor *slot) {
    char b1[64], b2[64];
    gm_tensor *fl[2] = {ys, w};
    gm_status st = gm_check_float(c, "moe_combine", ys);
    if (!st) st = gm_check_same_dtype(c, "moe_combine", 2, fl);
    if (!st) st = gm_need_i32(c, "moe_combine", "slot", slot);
    if (!st) st = need_2d(c, "moe_combine", "ys", ys);
    if (!st) st = need_2d(c, "moe_combine", "slot", slot);
    if (st) return st;
    if (w->ndim != 2 || w->shape[0] != slot->shape[0] || w->shape[1] != slot->shape[1])
        return gm_errf(c, GM_ESHAPE, "moe_combine: weights %s and slot %s must have the same shape [T, K]",
                       GM_SHAPE_STR(w, b1), GM_SHAPE_STR(slot, b2));
    return GM_OK;
}

static gm_status combine_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *ys = o->in[0], *w = o->in[1], *slot = o->in[2], *cc[3] = {NULL, NULL, NULL};
    gm_status st = combine_check(c, ys, w, slot);
    if (st) return st;
    int64_t shape[2] = {slot->shape[0], ys->shape[1]};
    if (!(st = gm_contig_all(c, 3, o->in, cc)) &&
        !(st = gm_tensor_new(c, ys->dtype, gm_tensor_device(ys), 2, shape, &o->out[0]))) {
        gm_tensor *ins[3] = {cc[0], cc[2], cc[1]};
        st = gm_run(c, GM_K_MOE_COMBINE, 3, ins, 1, o->out, NULL);
    }
    gm_release_all(3, cc);
    return st;
}

/* dys[slot[t,k]] = w[t,k] g[t] (unused rows 0); dw[t,k] = <ys[slot[t,k]], g[t]>. */
static gm_status combine_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *ys = n->in[0], *w = n->in[1], *cc[3] = {NULL, NULL, NULL}, *g = NULL;
    gm_device dev = gm_tensor_device(ys);
    gm_status st = gm_contig_all(c, 3, n->in, cc);
    if (!st) st = gm_gout_or_zeros(c, n, gout, 0, true, &g);
    if (!st && n->needs[0]) {
        gm_tensor *ins[3] = {g, cc[2], cc[1]};
        st = gm_tensor_new(c, ys->dtype, dev, 2, ys->shape, &gin[0]);
        if (!st) st = gm_run(c, GM_K_MOE_SCATTER, 3, ins, 1, &gin[0], NULL);
    }
    if (!st && n->needs[1]) {
        gm_tensor *ins[3] = {cc[0], cc[2], g};
        st = gm_tensor_new(c, w->dtype, dev, 2, w->shape, &gin[1]);
        if (!st) st = gm_run(c, GM_K_MOE_WGRAD, 3, ins, 1, &gin[1], NULL);
    }
    gm_release_all(3, cc);
    gm_tensor_release(g);
    return st;
}

static gm_status combine_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant == 0) { /* every row used, one dropped choice */
        static const int32_t sv[] = {0, 4, -1, 2, 3, 1};
        in[0] = gm_sample_randn(c, GM_F64, 1400, 2, (int64_t[]){5, 3});
        in[1] = gm_sample_randn(c, GM_F64, 1401, 2, (int64_t[]){3, 2});
        in[2] = gm_sample_i32(c, 2, (int64_t[]){3, 2}, sv);
    } else if (variant == 1) { /* rows 1 and 2 unused, K = 3 */
        static const int32_t sv[] = {-1, 3, -1, 0, -1, -1};
        in[0] = gm_sample_randn(c, GM_F64, 1402, 2, (int64_t[]){4, 2});
        in[1] = gm_sample_randn(c, GM_F64, 1403, 2, (int64_t[]){2, 3});
        in[2] = gm_sample_i32(c, 2, (int64_t[]){2, 3}, sv);
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 3, in, n_in);
}

static gm_status combine_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    static const int32_t ok[] = {0, 1, 2, 3}, big[] = {0, 1, 4, 3}, dup[] = {0, 1, 1, 3};
    gm_params_init(p);
    if (variant > 5) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, GM_F64, 1500, variant == 5 ? 1 : 2, (int64_t[]){4, 2});
    in[1] = gm_sample_randn(c, variant == 3 ? GM_F32 : GM_F64, 1501, 2, (int64_t[]){2, 2});
    in[2] = gm_sample_i32(c, 2, (int64_t[]){2, 2}, variant == 0 ? big : variant == 1 ? dup : ok);
    *expect = variant == 0 ? GM_EINDEX : variant == 1 ? GM_EARG : variant == 3 ? GM_EDTYPE : GM_ESHAPE;
    if (variant == 2) { /* weights [2, 3] for slot [2, 2] */
        gm_tensor_release(in[1]);
        in[1] = gm_sample_randn(c, GM_F64, 1502, 2, (int64_t[]){2, 3});
    } else if (variant == 4) { /* f64 slot */
        gm_tensor_release(in[2]);
        in[2] = gm_sample_randn(c, GM_F64, 1503, 2, (int64_t[]){2, 2});
        *expect = GM_EDTYPE;
    }
    return gm_sample_done(c, 3, in, n_in);
}

extern const gm_oprules gm_rules_MOE_COMBINE;
const gm_oprules gm_rules_MOE_COMBINE = {combine_fwd, combine_bwd, combine_sample, combine_bad};
