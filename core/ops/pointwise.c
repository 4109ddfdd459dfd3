/* pointwise.c: rules of the elementwise family (pointwise.def): binary ops with numpy
 * broadcasting, unary activations, comparisons, where and masked_fill. Inputs are broadcast to
 * the output's shape as stride-0 views, so kernels (kernels/cpu/pointwise.c, selected by the
 * GM_OP_* id in i[0]) see equal shapes; backward sums gradients back with gm_sum_to_shape. */
#include <math.h>
#include <string.h>

#include "rules.h"
#include "sample.h"

/* ---- shared helpers -------------------------------------------------------------------- */

static const char *pw_name(int op) { return gm_opdef_get(op)->name; }

/* The kernels' arguments for op: its name, which input a binary backward differentiates, and
 * clamp's bounds from p (absent ones infinite; p NULL: none). */
static gm_pw_args pw_args(const gm_params *p, int op, int wrt) {
    return (gm_pw_args){.op = op, .name = pw_name(op), .wrt = wrt,
                        .lo = p && p->has_a ? p->a : -INFINITY, .hi = p && p->has_b ? p->b : INFINITY};
}

/* Ops that accept i32 as well as f32/f64; every other op of the family is float-only. */
static bool pw_int_ok(int op) {
    switch (op) {
    case GM_OP_ADD: case GM_OP_SUB: case GM_OP_MUL: case GM_OP_DIV: case GM_OP_MAXIMUM:
    case GM_OP_MINIMUM: case GM_OP_NEG: case GM_OP_ABS: case GM_OP_RELU: case GM_OP_CLAMP:
    case GM_OP_EQ: case GM_OP_NE: case GM_OP_LT: case GM_OP_LE: case GM_OP_GT: case GM_OP_GE:
    case GM_OP_WHERE: case GM_OP_MASKED_FILL:
        return true;
    default:
        return false;
    }
}

static gm_status pw_check_dtype(gm_ctx *c, int op, const gm_tensor *x) {
    if (pw_int_ok(op)) return GM_OK;
    return gm_check_float(c, pw_name(op), x);
}

static gm_status pw_same_dtype(gm_ctx *c, const char *name, const gm_tensor *x,
                               const gm_tensor *y) {
    if (x->dtype == y->dtype) return GM_OK;
    return gm_errf(c, GM_EDTYPE, "%s: dtype mismatch: %s and %s (convert one with :to())", name,
                   gm_dtype_name(x->dtype), gm_dtype_name(y->dtype));
}

/* A new reference to x seen with `shape` (stride 0 along broadcast dims). */
static gm_status pw_view(gm_ctx *c, gm_tensor *x, int nd, const int64_t *shape, gm_tensor **out) {
    bool same = x->ndim == nd;
    for (int i = 0; same && i < nd; i++) same = x->shape[i] == shape[i];
    if (same) {
        *out = gm_tensor_retain(x);
        return GM_OK;
    }
    return gm_tensor_broadcast_view(c, x, nd, shape, out);
}

/* A scalar of dtype t on x's device, broadcast to shape. */
static gm_status pw_const_view(gm_ctx *c, gm_dtype t, gm_device d, double v, int nd,
                               const int64_t *shape, gm_tensor **out) {
    gm_tensor *s;
    gm_status st = gm_tensor_full(c, t, d, 0, NULL, v, &s);
    if (st != GM_OK) return st;
    st = gm_tensor_broadcast_view(c, s, nd, shape, out);
    gm_tensor_release(s);
    return st;
}

/* Run `kid` into a new tensor of g's shape and dtype, then sum it back to x's shape. */
static gm_status pw_grad_run(gm_ctx *c, int kid, int n_in, gm_tensor **ins, gm_tensor *g,
                             const gm_tensor *x, const gm_kparams *k,
                             gm_tensor **out) {
    gm_tensor *full;
    gm_status st = gm_tensor_new(c, g->dtype, gm_tensor_device(g), g->ndim, g->shape, &full);
    if (st != GM_OK) return st;
    st = gm_run(c, kid, n_in, ins, 1, &full, k);
    if (st == GM_OK) st = gm_sum_to_shape(c, full, x->ndim, x->shape, out);
    gm_tensor_release(full);
    return st;
}

/* ---- binary ops and comparisons --------------------------------------------------------- */

static gm_status binary_fwd(gm_ctx *c, gm_opcall *o, int op) {
    gm_tensor *x = o->in[0], *y = o->in[1], *v[2] = {NULL, NULL};
    const char *name = pw_name(op);
    int nd;
    int64_t shape[GM_MAX_DIMS];
    gm_status st = pw_same_dtype(c, name, x, y);
    if (st == GM_OK) st = pw_check_dtype(c, op, x);
    if (st == GM_OK) st = gm_broadcast_shape(c, name, x->ndim, x->shape, y->ndim, y->shape, &nd, shape);
    if (st == GM_OK) st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), nd, shape, &o->out[0]);
    if (st == GM_OK) st = pw_view(c, x, nd, shape, &v[0]);
    if (st == GM_OK) st = pw_view(c, y, nd, shape, &v[1]);
    if (st == GM_OK) {
        st = gm_run(c, GM_K_PW_BINARY, 2, v, 1, o->out, &(gm_kparams){.pw = pw_args(NULL, op, 0)});
    }
    gm_release_all(2, v);
    return st;
}

/* add/sub pass g through; mul/div/pow/maximum/minimum use PW_BINARY_BWD. Each gradient is
 * summed back over the dims its input was broadcast along. */
static gm_status binary_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *g = gout[0], *v[3] = {g, NULL, NULL};
    gm_status st = GM_OK;
    for (int j = 0; j < 2 && st == GM_OK; j++) {
        gm_tensor *in = n->in[j], *t = NULL;
        if (!n->needs[j]) continue;
        if (!g) {
            st = gm_zeros_like(c, in, &gin[j]);
        } else if (n->op == GM_OP_ADD || (n->op == GM_OP_SUB && j == 0)) {
            st = gm_sum_to_shape(c, g, in->ndim, in->shape, &gin[j]);
        } else if (n->op == GM_OP_SUB) {
            if ((st = gm_sum_to_shape(c, g, in->ndim, in->shape, &t)) == GM_OK) st = gm_neg(c, t, &gin[j]);
            gm_tensor_release(t);
        } else {
            if (!v[1]) st = pw_view(c, n->in[0], g->ndim, g->shape, &v[1]);
            if (st == GM_OK && !v[2]) st = pw_view(c, n->in[1], g->ndim, g->shape, &v[2]);
            gm_kparams k = {.pw = pw_args(NULL, n->op, j)};
            if (st == GM_OK) st = pw_grad_run(c, GM_K_PW_BINARY_BWD, 3, v, g, in, &k, &gin[j]);
        }
    }
    gm_release_all(2, v + 1);
    if (st != GM_OK) gm_release_all(2, gin);
    return st;
}

/* Sample values: normal; positive (|z| + 0.2, inside log/pow domains); away from 0
 * (sign(z) (|z| + 0.3), divisors and kinks); on grids offset by 0.03 and -0.02 (a value of one
 * grid is never within 0.05 of a value of the other: no maximum/minimum ties, no clamp bound
 * at x = +-0.5); small integers (comparisons hit equality). */
enum { SM_NORMAL, SM_POS, SM_AWAY, SM_GRID_A, SM_GRID_B, SM_INT };

static gm_tensor *pw_sample_t(gm_ctx *c, uint64_t seed, int kind, int nd, const int64_t *shape) {
    gm_tensor *t = gm_sample_randn(c, GM_F64, seed, nd, shape);
    if (!t) return NULL;
    double *d = gm_tensor_data(t);
    for (int64_t i = 0, n = gm_tensor_numel(t); i < n; i++) {
        double z = d[i];
        switch (kind) {
        case SM_POS: d[i] = fabs(z) + 0.2; break;
        case SM_AWAY: d[i] = z < 0 ? z - 0.3 : z + 0.3; break;
        case SM_GRID_A: d[i] = round(z * 10) / 10 + 0.03; break;
        case SM_GRID_B: d[i] = round(z * 10) / 10 - 0.02; break;
        case SM_INT: d[i] = round(z * 2); break;
        default: break;
        }
    }
    return t;
}

/* Shapes of binary samples: equal, [3,1] with [1,4], a 0-dim y, and rank-changing broadcast. */
static gm_status pw_pair_shapes(int variant, int *nx, int64_t *sx, int *ny, int64_t *sy) {
    static const int64_t shapes[4][2][3] = {
        {{3, 4}, {3, 4}}, {{3, 1}, {1, 4}}, {{2, 3}, {0}}, {{2, 1, 3}, {4, 1}}};
    static const int ndims[4][2] = {{2, 2}, {2, 2}, {2, 0}, {3, 2}};
    if (variant < 0 || variant >= 4) return GM_ENOTSUP;
    *nx = ndims[variant][0];
    *ny = ndims[variant][1];
    memcpy(sx, shapes[variant][0], sizeof shapes[variant][0]);
    memcpy(sy, shapes[variant][1], sizeof shapes[variant][1]);
    return GM_OK;
}

static gm_status binary_sample(gm_ctx *c, int op, int variant, int *n_in, gm_tensor **in,
                               gm_params *p) {
    int nx, ny, kx = SM_NORMAL, ky = SM_NORMAL;
    int64_t sx[3], sy[3];
    gm_params_init(p);
    if (pw_pair_shapes(variant, &nx, sx, &ny, sy) != GM_OK) return GM_ENOTSUP;
    switch (op) {
    case GM_OP_DIV: ky = SM_AWAY; break;
    case GM_OP_POW: kx = SM_POS; break;
    case GM_OP_MAXIMUM: case GM_OP_MINIMUM: kx = SM_GRID_A; ky = SM_GRID_B; break;
    case GM_OP_EQ: case GM_OP_NE: case GM_OP_LT: case GM_OP_LE: case GM_OP_GT: case GM_OP_GE:
        kx = ky = SM_INT;
        break;
    default: break;
    }
    in[0] = pw_sample_t(c, 1000 + (uint64_t)variant, kx, nx, sx);
    in[1] = pw_sample_t(c, 2000 + (uint64_t)variant, ky, ny, sy);
    return gm_sample_done(c, 2, in, n_in);
}

/* 0: shapes that do not broadcast; 1: f64 with f32; 2 (pow): i32; 2 (div): i32 / 0. */
static gm_status binary_bad(gm_ctx *c, int op, int variant, int *n_in, gm_tensor **in,
                            gm_params *p, gm_status *expect) {
    static const int64_t s23[2] = {2, 3}, s4[1] = {4};
    gm_status st;
    gm_params_init(p);
    *n_in = 2;
    in[0] = in[1] = NULL;
    switch (variant) {
    case 0:
        *expect = GM_ESHAPE;
        st = gm_tensor_zeros(c, GM_F64, GM_CPU, 2, s23, &in[0]);
        if (st == GM_OK) st = gm_tensor_zeros(c, GM_F64, GM_CPU, 1, s4, &in[1]);
        break;
    case 1:
        *expect = GM_EDTYPE;
        st = gm_tensor_full(c, GM_F64, GM_CPU, 2, s23, 1, &in[0]);
        if (st == GM_OK) st = gm_tensor_full(c, GM_F32, GM_CPU, 2, s23, 1, &in[1]);
        break;
    case 2:
        if (op != GM_OP_POW && op != GM_OP_DIV) return GM_ENOTSUP;
        *expect = op == GM_OP_POW ? GM_EDTYPE : GM_EARG;
        st = gm_tensor_full(c, GM_I32, GM_CPU, 2, s23, 3, &in[0]);
        if (st == GM_OK && op == GM_OP_POW) st = gm_tensor_full(c, GM_I32, GM_CPU, 2, s23, 2, &in[1]);
        if (st == GM_OK && op == GM_OP_DIV) st = gm_tensor_zeros(c, GM_I32, GM_CPU, 0, NULL, &in[1]);
        break;
    default:
        return GM_ENOTSUP;
    }
    if (st != GM_OK) gm_release_all(2, in);
    return st;
}

/* ---- unary ops ------------------------------------------------------------------------- */

static gm_status unary_fwd(gm_ctx *c, gm_opcall *o, int op) {
    gm_tensor *x = o->in[0];
    gm_status st = pw_check_dtype(c, op, x);
    if (st != GM_OK) return st;
    if (op == GM_OP_CLAMP && !o->p->has_a && !o->p->has_b)
        return gm_errf(c, GM_EARG, "clamp: give a min, a max or both");
    if (op == GM_OP_CLAMP && (isnan(o->p->a) || isnan(o->p->b)))
        return gm_errf(c, GM_EARG, "clamp: a bound is NaN");
    st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &o->out[0]);
    if (st != GM_OK) return st;
    return gm_run(c, GM_K_PW_UNARY, 1, &x, 1, o->out, &(gm_kparams){.pw = pw_args(o->p, op, 0)});
}

static gm_status unary_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0];
    if (!n->needs[0]) return GM_OK;
    if (!gout[0]) return gm_zeros_like(c, x, &gin[0]);
    gm_tensor *ins[3] = {gout[0], x, n->saved_out[0] ? n->saved_out[0] : x};
    gm_kparams k = {.pw = pw_args(&n->p, n->op, 0)};
    gm_status st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[0]);
    if (st == GM_OK) st = gm_run(c, GM_K_PW_UNARY_BWD, 3, ins, 1, &gin[0], &k);
    if (st != GM_OK) gm_release_all(1, gin);
    return st;
}

/* 0: [3,4]; 1: a 0-dim scalar; 2: [2,3,2]. clamp: min -0.5 and max 0.5, then min only, then
 * max only (grid values stay 0.02 away from the bounds). */
static gm_status unary_sample(gm_ctx *c, int op, int variant, int *n_in, gm_tensor **in,
                              gm_params *p) {
    static const int64_t shapes[3][3] = {{3, 4}, {0}, {2, 3, 2}};
    static const int ndims[3] = {2, 0, 3};
    int kind = SM_NORMAL;
    gm_params_init(p);
    if (variant < 0 || variant >= 3) return GM_ENOTSUP;
    switch (op) {
    case GM_OP_LOG: case GM_OP_SQRT: case GM_OP_RSQRT: kind = SM_POS; break;
    case GM_OP_ABS: case GM_OP_RELU: kind = SM_AWAY; break;
    case GM_OP_CLAMP:
        kind = SM_GRID_A;
        p->has_a = variant != 2;
        p->a = -0.5;
        p->has_b = variant != 1;
        p->b = 0.5;
        break;
    default: break;
    }
    in[0] = pw_sample_t(c, 1000 + (uint64_t)variant, kind, ndims[variant], shapes[variant]);
    return gm_sample_done(c, 1, in, n_in);
}

/* Float-only ops refuse i32; clamp refuses a call without bounds. */
static gm_status unary_bad(gm_ctx *c, int op, int variant, int *n_in, gm_tensor **in,
                           gm_params *p, gm_status *expect) {
    static const int64_t s23[2] = {2, 3};
    gm_params_init(p);
    *n_in = 1;
    if (variant != 0) return GM_ENOTSUP;
    if (op == GM_OP_CLAMP) {
        *expect = GM_EARG;
        return gm_tensor_zeros(c, GM_F64, GM_CPU, 2, s23, &in[0]);
    }
    if (pw_int_ok(op)) return GM_ENOTSUP;
    *expect = GM_EDTYPE;
    return gm_tensor_full(c, GM_I32, GM_CPU, 2, s23, 1, &in[0]);
}

/* ---- where and masked_fill ------------------------------------------------------------- */

static gm_status where_fwd(gm_ctx *c, gm_opcall *o, int op) {
    gm_tensor *cond = o->in[0], *x = o->in[1], *y = o->in[2], *v[3] = {NULL, NULL, NULL};
    int nd;
    int64_t shape[GM_MAX_DIMS];
    gm_status st = pw_same_dtype(c, "where", x, y);
    if (st == GM_OK) st = gm_broadcast_shape(c, "where", cond->ndim, cond->shape, x->ndim, x->shape, &nd, shape);
    if (st == GM_OK) st = gm_broadcast_shape(c, "where", nd, shape, y->ndim, y->shape, &nd, shape);
    if (st == GM_OK) st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), nd, shape, &o->out[0]);
    for (int i = 0; i < 3 && st == GM_OK; i++) st = pw_view(c, o->in[i], nd, shape, &v[i]);
    if (st == GM_OK) st = gm_run(c, GM_K_PW_WHERE, 3, v, 1, o->out, NULL);
    gm_release_all(3, v);
    (void)op;
    return st;
}

/* g where the selector (cond, or a mask) is nonzero when pick_true, else where it is zero;
 * summed back to the shape of `to`. */
static gm_status pw_select_grad(gm_ctx *c, gm_node *n, gm_tensor *sel, gm_tensor *g,
                                bool pick_true, const gm_tensor *to, gm_tensor **out) {
    gm_tensor *v[3] = {NULL, NULL, NULL};
    gm_status st = pw_view(c, sel, g->ndim, g->shape, &v[0]);
    if (st == GM_OK) st = pw_const_view(c, g->dtype, gm_tensor_device(g), 0, g->ndim, g->shape, &v[pick_true ? 2 : 1]);
    if (st == GM_OK) {
        v[pick_true ? 1 : 2] = gm_tensor_retain(g);
        st = pw_grad_run(c, GM_K_PW_WHERE, 3, v, g, to, NULL, out);
    }
    gm_release_all(3, v);
    return st;
}

/* cond gets no gradient (callers do not make it require grad); if asked, zeros. */
static gm_status where_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_status st = GM_OK;
    for (int j = 0; j < 3 && st == GM_OK; j++) {
        if (!n->needs[j]) continue;
        if (j == 0 || !gout[0]) st = gm_zeros_like(c, n->in[j], &gin[j]);
        else st = pw_select_grad(c, n, n->in[0], gout[0], j == 1, n->in[j], &gin[j]);
    }
    if (st != GM_OK) gm_release_all(3, gin);
    return st;
}

/* cond is i32 (it is not differentiable: finite differences must not perturb it): element i
 * is 0 where i % 3 == 1, else i + 1 (true values other than 1). */
static gm_status where_sample(gm_ctx *c, int op, int variant, int *n_in, gm_tensor **in,
                              gm_params *p) {
    static const int64_t shapes[2][3][2] = {{{3, 1}, {3, 4}, {4}}, {{2, 3}, {0}, {2, 3}}};
    static const int ndims[2][3] = {{2, 2, 1}, {2, 0, 2}};
    static const int32_t conds[2][6] = {{1, 0, 3}, {1, 0, 3, 4, 0, 6}};
    gm_params_init(p);
    if (variant < 0 || variant >= 2) return GM_ENOTSUP;
    in[0] = gm_sample_i32(c, ndims[variant][0], shapes[variant][0], conds[variant]);
    in[1] = pw_sample_t(c, 1000 + (uint64_t)variant, SM_NORMAL, ndims[variant][1],
                        shapes[variant][1]);
    in[2] = pw_sample_t(c, 2000 + (uint64_t)variant, SM_NORMAL, ndims[variant][2],
                        shapes[variant][2]);
    (void)op;
    return gm_sample_done(c, 3, in, n_in);
}

/* 0: cond [2,3] with x [4]; 1: x f64 with y f32. */
static gm_status where_bad(gm_ctx *c, int op, int variant, int *n_in, gm_tensor **in,
                           gm_params *p, gm_status *expect) {
    static const int64_t s23[2] = {2, 3}, s4[1] = {4};
    gm_status st;
    gm_params_init(p);
    *n_in = 3;
    in[0] = in[1] = in[2] = NULL;
    if (variant == 0) {
        *expect = GM_ESHAPE;
        st = gm_tensor_full(c, GM_I32, GM_CPU, 2, s23, 1, &in[0]);
        if (st == GM_OK) st = gm_tensor_zeros(c, GM_F64, GM_CPU, 1, s4, &in[1]);
        if (st == GM_OK) st = gm_tensor_zeros(c, GM_F64, GM_CPU, 2, s23, &in[2]);
    } else if (variant == 1) {
        *expect = GM_EDTYPE;
        st = gm_tensor_full(c, GM_I32, GM_CPU, 2, s23, 1, &in[0]);
        if (st == GM_OK) st = gm_tensor_zeros(c, GM_F64, GM_CPU, 2, s23, &in[1]);
        if (st == GM_OK) st = gm_tensor_zeros(c, GM_F32, GM_CPU, 2, s23, &in[2]);
    } else {
        return GM_ENOTSUP;
    }
    if (st != GM_OK) gm_release_all(3, in);
    (void)op;
    return st;
}

/* The mask broadcasts to x's shape (never the other way); the value is a broadcast 0-dim
 * tensor, so masked_fill is where(mask, value, x). */
static gm_status masked_fill_fwd(gm_ctx *c, gm_opcall *o, int op) {
    gm_tensor *x = o->in[0], *mask = o->in[1], *v[3] = {NULL, NULL, NULL};
    double value = o->p->a;
    int nd;
    int64_t shape[GM_MAX_DIMS];
    gm_status st = gm_broadcast_shape(c, "masked_fill", x->ndim, x->shape, mask->ndim, mask->shape, &nd, shape);
    if (st != GM_OK) return st;
    if (nd != x->ndim || memcmp(shape, x->shape, (size_t)nd * sizeof *shape) != 0) {
        char b1[128], b2[128];
        return gm_errf(c, GM_ESHAPE, "masked_fill: mask %s does not broadcast to x %s",
                       GM_SHAPE_STR(mask, b1), GM_SHAPE_STR(x, b2));
    }
    if (!o->p->has_a) return gm_errf(c, GM_EARG, "masked_fill: missing the fill value");
    if (x->dtype == GM_I32 && !(value == floor(value) && value >= INT32_MIN && value <= INT32_MAX))
        return gm_errf(c, GM_EARG, "masked_fill: value %g is not an i32", value);
    st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), nd, shape, &o->out[0]);
    if (st == GM_OK) st = pw_view(c, mask, nd, shape, &v[0]);
    if (st == GM_OK) st = pw_const_view(c, x->dtype, gm_tensor_device(x), value, nd, shape, &v[1]);
    if (st == GM_OK) v[2] = gm_tensor_retain(x);
    if (st == GM_OK) st = gm_run(c, GM_K_PW_WHERE, 3, v, 1, o->out, NULL);
    gm_release_all(3, v);
    (void)op;
    return st;
}

/* x's gradient is g with the filled positions zeroed; the mask gets none (zeros if asked). */
static gm_status masked_fill_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_status st = GM_OK;
    for (int j = 0; j < 2 && st == GM_OK; j++) {
        if (!n->needs[j]) continue;
        if (j == 1 || !gout[0]) st = gm_zeros_like(c, n->in[j], &gin[j]);
        else st = pw_select_grad(c, n, n->in[1], gout[0], false, n->in[0], &gin[0]);
    }
    if (st != GM_OK) gm_release_all(2, gin);
    return st;
}

static gm_status masked_fill_sample(gm_ctx *c, int op, int variant, int *n_in, gm_tensor **in,
                                    gm_params *p) {
    static const int64_t shapes[2][2][2] = {{{3, 4}, {1, 4}}, {{2, 3}, {2, 3}}};
    static const int32_t masks[2][6] = {{1, 0, 1, 0}, {1, 0, 1, 0, 1, 0}}; /* even positions */
    gm_params_init(p);
    if (variant < 0 || variant >= 2) return GM_ENOTSUP;
    p->has_a = true;
    p->a = variant == 0 ? 0.5 : -2.0;
    in[0] = pw_sample_t(c, 1000 + (uint64_t)variant, SM_NORMAL, 2, shapes[variant][0]);
    in[1] = gm_sample_i32(c, 2, shapes[variant][1], masks[variant]);
    (void)op;
    return gm_sample_done(c, 2, in, n_in);
}

/* 0: mask [3] with x [2,4]; 1: mask [2,3] would enlarge x [3]; 2: i32 x filled with 0.5. */
static gm_status masked_fill_bad(gm_ctx *c, int op, int variant, int *n_in, gm_tensor **in,
                                 gm_params *p, gm_status *expect) {
    static const int64_t s24[2] = {2, 4}, s23[2] = {2, 3}, s3[1] = {3};
    gm_status st;
    gm_params_init(p);
    p->has_a = true;
    p->a = 1;
    *n_in = 2;
    in[0] = in[1] = NULL;
    switch (variant) {
    case 0:
        *expect = GM_ESHAPE;
        st = gm_tensor_zeros(c, GM_F64, GM_CPU, 2, s24, &in[0]);
        if (st == GM_OK) st = gm_tensor_zeros(c, GM_I32, GM_CPU, 1, s3, &in[1]);
        break;
    case 1:
        *expect = GM_ESHAPE;
        st = gm_tensor_zeros(c, GM_F64, GM_CPU, 1, s3, &in[0]);
        if (st == GM_OK) st = gm_tensor_zeros(c, GM_I32, GM_CPU, 2, s23, &in[1]);
        break;
    case 2:
        *expect = GM_EARG;
        p->a = 0.5;
        st = gm_tensor_zeros(c, GM_I32, GM_CPU, 2, s23, &in[0]);
        if (st == GM_OK) st = gm_tensor_zeros(c, GM_I32, GM_CPU, 2, s23, &in[1]);
        break;
    default:
        return GM_ENOTSUP;
    }
    if (st != GM_OK) gm_release_all(2, in);
    (void)op;
    return st;
}

/* ---- the rules table --------------------------------------------------------------------
 * The gm_oprules callbacks do not receive the op id, so each row gets three one-line wrappers
 * that pass GM_OP_<ID> to the family's shared forward, sample and bad functions. */
#define PW_RULES(ID, FWD, BWD, SMP, BAD)                                                        \
    static gm_status fwd_##ID(gm_ctx *c, gm_opcall *o) { return FWD(c, o, GM_OP_##ID); }     \
    static gm_status smp_##ID(gm_ctx *c, int v, int *n, gm_tensor **in, gm_params *p) {       \
        return SMP(c, GM_OP_##ID, v, n, in, p);                                               \
    }                                                                                         \
    static gm_status bad_##ID(gm_ctx *c, int v, int *n, gm_tensor **in, gm_params *p,         \
                              gm_status *e) {                                                 \
        return BAD(c, GM_OP_##ID, v, n, in, p, e);                                            \
    }                                                                                         \
    extern const gm_oprules gm_rules_##ID;                                                    \
    const gm_oprules gm_rules_##ID = {fwd_##ID, BWD, smp_##ID, bad_##ID};

PW_RULES(ADD, binary_fwd, binary_bwd, binary_sample, binary_bad)
PW_RULES(SUB, binary_fwd, binary_bwd, binary_sample, binary_bad)
PW_RULES(MUL, binary_fwd, binary_bwd, binary_sample, binary_bad)
PW_RULES(DIV, binary_fwd, binary_bwd, binary_sample, binary_bad)
PW_RULES(POW, binary_fwd, binary_bwd, binary_sample, binary_bad)
PW_RULES(MAXIMUM, binary_fwd, binary_bwd, binary_sample, binary_bad)
PW_RULES(MINIMUM, binary_fwd, binary_bwd, binary_sample, binary_bad)
PW_RULES(NEG, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(EXP, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(LOG, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(SQRT, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(RSQRT, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(ABS, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(CLAMP, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(SIGMOID, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(TANH, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(RELU, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(GELU, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(SILU, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(SOFTPLUS, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(LOGSIGMOID, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(SIN, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(COS, unary_fwd, unary_bwd, unary_sample, unary_bad)
PW_RULES(EQ, binary_fwd, NULL, binary_sample, binary_bad)
PW_RULES(NE, binary_fwd, NULL, binary_sample, binary_bad)
PW_RULES(LT, binary_fwd, NULL, binary_sample, binary_bad)
PW_RULES(LE, binary_fwd, NULL, binary_sample, binary_bad)
PW_RULES(GT, binary_fwd, NULL, binary_sample, binary_bad)
PW_RULES(GE, binary_fwd, NULL, binary_sample, binary_bad)
PW_RULES(WHERE, where_fwd, where_bwd, where_sample, where_bad)
PW_RULES(MASKED_FILL, masked_fill_fwd, masked_fill_bwd, masked_fill_sample, masked_fill_bad)

#undef PW_RULES
