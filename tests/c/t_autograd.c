/* t_autograd.c: the C autograd API on small graphs built with gm_op: known gradients,
 * accumulation across backward calls, freed graphs and retain_graph, non-scalar roots, grad
 * mode, gradients w.r.t. inputs, detach, shared inputs (diamonds) and graph lifetime. */
#include <math.h>
#include <string.h>

#include "gm.h"
#include "tap.h"

static gm_ctx *C;

/* An f64 tensor of the given shape holding vals (row-major). */
static gm_tensor *f64(int ndim, const int64_t *shape, const double *vals) {
    gm_tensor *x = NULL;
    if (gm_tensor_new(C, GM_F64, GM_CPU, ndim, shape, &x) != GM_OK) return NULL;
    double *p = gm_tensor_data(x);
    for (int64_t i = 0; i < gm_tensor_numel(x); i++) p[i] = vals[i];
    return x;
}

static gm_tensor *leaf(int ndim, const int64_t *shape, const double *vals) {
    gm_tensor *x = f64(ndim, shape, vals);
    if (x) gm_tensor_set_requires_grad(C, x, true);
    return x;
}

static gm_tensor *unop(int op, gm_tensor *x) {
    gm_tensor *y = NULL;
    if (gm_op(C, op, 1, &x, NULL, &y) != GM_OK) tap_diag("op %d failed: %s", op, gm_errmsg(C));
    return y;
}

static gm_tensor *binop(int op, gm_tensor *a, gm_tensor *b) {
    gm_tensor *in[2] = {a, b}, *y = NULL;
    if (gm_op(C, op, 2, in, NULL, &y) != GM_OK) tap_diag("op %d failed: %s", op, gm_errmsg(C));
    return y;
}

static gm_tensor *sum_all(gm_tensor *x) { return unop(GM_OP_SUM, x); }

/* Max |a[i] - want[i]| over the elements of a (a may be NULL: infinity). */
static double max_diff(const gm_tensor *a, const double *want, int64_t n) {
    if (!a || gm_tensor_numel(a) != n) return INFINITY;
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(gm_tensor_get_flat(a, i) - want[i]));
    return m;
}

static const double XV[6] = {0.5, -1.0, 2.0, 0.25, -0.75, 1.5};
static const double WV[6] = {1.0, -2.0, 0.5, 0.3, -1.2, 0.7};
static int64_t S23[2] = {2, 3}, S32[2] = {3, 2};

/* L = sum(h * h), h = x @ w: dL/dx = 2 h w^T, dL/dw = 2 x^T h. */
static void expected_matmul(double *h, double *gx, double *gw) {
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            h[i * 2 + j] = 0;
            for (int k = 0; k < 3; k++) h[i * 2 + j] += XV[i * 3 + k] * WV[k * 2 + j];
        }
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 3; k++) {
            gx[i * 3 + k] = 0;
            for (int j = 0; j < 2; j++) gx[i * 3 + k] += 2 * h[i * 2 + j] * WV[k * 2 + j];
        }
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 2; j++) {
            gw[k * 2 + j] = 0;
            for (int i = 0; i < 2; i++) gw[k * 2 + j] += 2 * XV[i * 3 + k] * h[i * 2 + j];
        }
}

/* The loss of expected_matmul, as a graph. *h_out (optional) gets a reference to h. */
static gm_tensor *build_loss(gm_tensor *x, gm_tensor *w, gm_tensor **h_out) {
    gm_tensor *h = binop(GM_OP_MATMUL, x, w);
    gm_tensor *hh = binop(GM_OP_MUL, h, h);
    gm_tensor *l = sum_all(hh);
    gm_tensor_release(hh);
    if (h_out) *h_out = h;
    else gm_tensor_release(h);
    return l;
}

static void test_small_graph(void) {
    size_t live0 = gm_ctx_live_bytes(C);
    double h[4], gx[6], gw[6];
    expected_matmul(h, gx, gw);
    gm_tensor *x = leaf(2, S23, XV), *w = leaf(2, S32, WV), *hh = NULL;
    gm_tensor *l = build_loss(x, w, &hh);
    tap_ok(l && l->ndim == 0 && l->requires_grad && l->grad_fn != NULL, "loss is a 0-dim result with a grad_fn");
    tap_ok(hh && hh->grad_fn && hh->grad_fn->op == GM_OP_MATMUL && !x->grad_fn, "h's node is matmul; x is a leaf");
    double lv = 0;
    for (int i = 0; i < 4; i++) lv += h[i] * h[i];
    tap_ok(l && tap_close(gm_tensor_get_flat(l, 0), lv, 1e-12), "forward value sum((x@w)^2) = %g", lv);
    tap_ok(gm_backward(C, l, NULL, false) == GM_OK, "backward ok");
    tap_ok(max_diff(x->grad, gx, 6) < 1e-12, "dL/dx = 2 (x@w) w^T");
    tap_ok(max_diff(w->grad, gw, 6) < 1e-12, "dL/dw = 2 x^T (x@w)");
    tap_ok(x->grad && x->grad->dtype == GM_F64 && x->grad->ndim == 2 && x->grad->shape[1] == 3 &&
           gm_tensor_is_contiguous(x->grad) && !x->grad->requires_grad, "x.grad: f64 [2, 3], contiguous, no grad of its own");
    tap_ok(hh->grad == NULL, "an intermediate result gets no .grad");
    tap_ok(l->grad == NULL, "the root gets no .grad");

    /* accumulation: a fresh graph, a second backward adds into the leaves' .grad */
    gm_tensor *l2 = build_loss(x, w, NULL);
    tap_ok(gm_backward(C, l2, NULL, false) == GM_OK, "second backward (new graph) ok");
    double gx2[6], gw2[6];
    for (int i = 0; i < 6; i++) gx2[i] = 2 * gx[i], gw2[i] = 2 * gw[i];
    tap_ok(max_diff(x->grad, gx2, 6) < 1e-12 && max_diff(w->grad, gw2, 6) < 1e-12,
           "gradients accumulate across two backward calls");

    /* a second backward through a freed graph */
    gm_status st = gm_backward(C, l, NULL, false);
    tap_ok(st == GM_EAUTOGRAD && strstr(gm_errmsg(C), "retain_graph"),
           "backward through a freed graph is GM_EAUTOGRAD and mentions retain_graph (%s)", gm_errmsg(C));
    gm_err_clear(C);
    tap_ok(max_diff(x->grad, gx2, 6) < 1e-12, "the failed backward left .grad unchanged");

    /* retain_graph keeps it usable */
    gm_tensor_release(x->grad);
    gm_tensor_release(w->grad);
    x->grad = w->grad = NULL;
    gm_tensor *l3 = build_loss(x, w, NULL);
    tap_ok(gm_backward(C, l3, NULL, true) == GM_OK && gm_backward(C, l3, NULL, true) == GM_OK,
           "two backward calls with retain_graph");
    tap_ok(max_diff(x->grad, gx2, 6) < 1e-12 && max_diff(w->grad, gw2, 6) < 1e-12,
           "retained graph: the second backward gives the same gradient again (accumulated)");
    tap_ok(gm_backward(C, l3, NULL, false) == GM_OK, "a third backward (not retaining) still works");
    st = gm_backward(C, l3, NULL, false);
    tap_ok(st == GM_EAUTOGRAD, "... and after it the graph is freed (GM_EAUTOGRAD)");
    gm_err_clear(C);

    gm_tensor_release(l);
    gm_tensor_release(l2);
    gm_tensor_release(l3);
    gm_tensor_release(hh);
    gm_tensor_release(x);
    gm_tensor_release(w);
    tap_ok(gm_ctx_live_bytes(C) == live0, "graphs, gradients and leaves all freed (live bytes back to start)");
}

static void test_nonscalar_root(void) {
    size_t live0 = gm_ctx_live_bytes(C);
    gm_tensor *x = leaf(2, S23, XV), *two = NULL;
    gm_tensor_scalar(C, GM_F64, 2.0, &two);
    gm_tensor *y = binop(GM_OP_MUL, x, two);
    gm_status st = gm_backward(C, y, NULL, false);
    tap_ok(st == GM_EAUTOGRAD && strstr(gm_errmsg(C), "scalar"),
           "backward of a [2, 3] result without a gradient is refused (%s)", gm_errmsg(C));
    gm_err_clear(C);
    double gv[6] = {1, 2, 3, 4, 5, 6};
    gm_tensor *gbad = f64(2, S32, gv);
    st = gm_backward(C, y, gbad, false);
    tap_ok(st == GM_ESHAPE && strstr(gm_errmsg(C), "[3, 2]") && strstr(gm_errmsg(C), "[2, 3]"),
           "a gradient of the wrong shape is GM_ESHAPE naming both shapes (%s)", gm_errmsg(C));
    gm_err_clear(C);
    gm_tensor *g32 = NULL;
    gm_tensor_full(C, GM_F32, GM_CPU, 2, S23, 1, &g32);
    st = gm_backward(C, y, g32, false);
    tap_ok(st == GM_EDTYPE, "a gradient of the wrong dtype is GM_EDTYPE (%s)", gm_errmsg(C));
    gm_err_clear(C);
    tap_ok(x->grad == NULL, "refused backward calls left no .grad");
    gm_tensor *g = f64(2, S23, gv);
    tap_ok(gm_backward(C, y, g, false) == GM_OK, "backward with a gradient of the root's shape");
    double want[6] = {2, 4, 6, 8, 10, 12};
    tap_ok(max_diff(x->grad, want, 6) < 1e-15, "d(2x)·g / dx = 2g");
    tap_ok(gm_tensor_get_flat(g, 5) == 6, "the given gradient is not modified");

    /* backward on a leaf itself */
    gm_tensor *z = leaf(2, S23, XV);
    tap_ok(gm_backward(C, z, g, false) == GM_OK && max_diff(z->grad, gv, 6) == 0, "backward on a leaf: .grad = g");
    tap_ok(z->grad != g, "... a copy, not the caller's tensor");
    gm_tensor_release(z);

    tap_ok(gm_tensor_set_requires_grad(C, y, false) == GM_EAUTOGRAD, "requires_grad cannot be changed on a non-leaf");
    gm_err_clear(C);
    gm_tensor_release(g);
    gm_tensor_release(g32);
    gm_tensor_release(gbad);
    gm_tensor_release(y);
    gm_tensor_release(two);
    gm_tensor_release(x);
    tap_ok(gm_ctx_live_bytes(C) == live0, "non-scalar: nothing leaked");
}

static void test_grad_mode(void) {
    size_t live0 = gm_ctx_live_bytes(C);
    gm_tensor *x = leaf(2, S23, XV);
    tap_ok(gm_grad_enabled(C), "grad mode is on by default");
    gm_grad_push(C, false);
    tap_ok(!gm_grad_enabled(C), "gm_grad_push(false) turns it off");
    gm_tensor *y = unop(GM_OP_EXP, x);
    tap_ok(y && !y->requires_grad && y->grad_fn == NULL, "an op under no_grad records nothing");
    gm_grad_push(C, true);
    gm_tensor *y2 = unop(GM_OP_EXP, x);
    tap_ok(gm_grad_enabled(C) && y2 && y2->requires_grad && y2->grad_fn, "gm_grad_push(true) inside re-enables");
    gm_grad_pop(C);
    tap_ok(!gm_grad_enabled(C), "pop returns to no_grad");
    gm_grad_push(C, false);
    gm_grad_pop(C);
    tap_ok(!gm_grad_enabled(C), "nested no_grad pops back to no_grad");
    gm_grad_pop(C);
    tap_ok(gm_grad_enabled(C), "the outer pop restores grad mode");
    gm_grad_pop(C); /* unbalanced: must be harmless */
    tap_ok(gm_grad_enabled(C), "an unbalanced pop leaves grad mode on");
    gm_status st = gm_backward(C, y, NULL, false);
    tap_ok(st == GM_EAUTOGRAD, "backward of a no_grad result is GM_EAUTOGRAD");
    gm_err_clear(C);

    /* gm_ctx_reset brings grad mode back after an error left it off */
    gm_grad_push(C, false);
    gm_grad_push(C, false);
    gm_ctx_reset(C);
    tap_ok(gm_grad_enabled(C) && strcmp(gm_errmsg(C), "ok") == 0, "gm_ctx_reset: grad mode on, no message");

    /* non-differentiable ops and integer outputs */
    gm_tensor *am = unop(GM_OP_ARGMAX, x);
    tap_ok(am && am->dtype == GM_I32 && !am->requires_grad && !am->grad_fn, "argmax of a grad tensor: i32, no grad");
    gm_tensor_release(am);
    gm_tensor_release(y);
    gm_tensor_release(y2);
    gm_tensor_release(x);
    tap_ok(gm_ctx_live_bytes(C) == live0, "grad mode: nothing leaked");
}

static void test_input_grad_and_detach(void) {
    size_t live0 = gm_ctx_live_bytes(C);
    double h[4], gx[6], gw[6];
    expected_matmul(h, gx, gw);
    /* gradient w.r.t. an input only: w is a constant */
    gm_tensor *x = leaf(2, S23, XV), *w = f64(2, S32, WV);
    gm_tensor *l = build_loss(x, w, NULL);
    tap_ok(gm_backward(C, l, NULL, false) == GM_OK && max_diff(x->grad, gx, 6) < 1e-12,
           "gradient w.r.t. an input (weights constant) is 2 (x@w) w^T");
    tap_ok(w->grad == NULL, "the constant gets no .grad");
    gm_tensor_release(l);

    /* detach: shares storage, cuts the graph */
    gm_tensor_release(x->grad);
    x->grad = NULL;
    gm_tensor *wl = leaf(2, S32, WV);
    gm_tensor *hh = binop(GM_OP_MATMUL, x, wl), *d = NULL;
    tap_ok(gm_tensor_detach(C, hh, &d) == GM_OK && d->storage == hh->storage && !d->requires_grad &&
           d->grad_fn == NULL, "detach: same storage, no grad, no grad_fn");
    /* L = sum(detach(x@w) * (x@w)): dL/dh = detach(h) only, not 2h */
    gm_tensor *prod = binop(GM_OP_MUL, d, hh), *l2 = sum_all(prod);
    tap_ok(gm_backward(C, l2, NULL, false) == GM_OK, "backward through a detached factor");
    double hx[6], hw[6];
    for (int i = 0; i < 6; i++) hx[i] = gx[i] / 2, hw[i] = gw[i] / 2;
    tap_ok(max_diff(x->grad, hx, 6) < 1e-12 && max_diff(wl->grad, hw, 6) < 1e-12,
           "detach cuts one path: gradients are half of the undetached ones");

    /* sum(detach(h)) alone does not require grad at all */
    gm_tensor *l3 = sum_all(d);
    tap_ok(l3 && !l3->requires_grad && gm_backward(C, l3, NULL, false) == GM_EAUTOGRAD,
           "a loss of detached values cannot backward");
    gm_err_clear(C);
    gm_tensor_release(l3);
    gm_tensor_release(l2);
    gm_tensor_release(prod);
    gm_tensor_release(d);
    gm_tensor_release(hh);
    gm_tensor_release(wl);
    gm_tensor_release(w);
    gm_tensor_release(x);
    tap_ok(gm_ctx_live_bytes(C) == live0, "input grad / detach: nothing leaked");
}

static void test_diamond(void) {
    size_t live0 = gm_ctx_live_bytes(C);
    /* x used twice in one op: d sum(x*x)/dx = 2x */
    gm_tensor *x = leaf(2, S23, XV);
    gm_tensor *xx = binop(GM_OP_MUL, x, x), *l = sum_all(xx);
    tap_ok(gm_backward(C, l, NULL, false) == GM_OK, "backward of sum(x*x)");
    double want[6];
    for (int i = 0; i < 6; i++) want[i] = 2 * XV[i];
    tap_ok(max_diff(x->grad, want, 6) < 1e-15, "x*x: both operands contribute (2x)");
    gm_tensor_release(l);
    gm_tensor_release(xx);
    gm_tensor_release(x->grad);
    x->grad = NULL;

    /* a = exp(x), b = 3x, L = sum(a * b): dL/dx = 3 exp(x) (x + 1) */
    gm_tensor *three = NULL;
    gm_tensor_scalar(C, GM_F64, 3.0, &three);
    gm_tensor *a = unop(GM_OP_EXP, x), *b = binop(GM_OP_MUL, x, three), *ab = binop(GM_OP_MUL, a, b);
    l = sum_all(ab);
    tap_ok(gm_backward(C, l, NULL, false) == GM_OK, "backward through a diamond");
    for (int i = 0; i < 6; i++) want[i] = 3 * exp(XV[i]) * (XV[i] + 1);
    tap_ok(max_diff(x->grad, want, 6) < 1e-12, "diamond: both paths summed, 3 e^x (x + 1)");
    gm_tensor_release(l);
    gm_tensor_release(ab);
    gm_tensor_release(b);
    gm_tensor_release(a);
    gm_tensor_release(x->grad);
    x->grad = NULL;

    /* views in the graph: L = sum(narrow(x, 1, 1, 2) * select(x, 0, 1) broadcast) */
    gm_params p;
    gm_params_init(&p);
    p.dim = 1, p.start = 1, p.length = 2;
    gm_tensor *n = NULL;
    gm_op(C, GM_OP_NARROW, 1, &x, &p, &n);
    gm_tensor *ns = sum_all(n);
    tap_ok(ns && gm_backward(C, ns, NULL, false) == GM_OK, "backward through narrow");
    double wn[6] = {0, 1, 1, 0, 1, 1};
    tap_ok(max_diff(x->grad, wn, 6) == 0, "narrow: gradient 1 inside the slice, 0 outside");
    gm_tensor_release(ns);
    gm_tensor_release(n);

    /* the same leaf reached through two views of it */
    gm_tensor *t = NULL, *e = NULL;
    gm_params_init(&p);
    p.dim = 0, p.dim1 = 1;
    gm_op(C, GM_OP_TRANSPOSE, 1, &x, &p, &t);
    gm_params_init(&p);
    p.nshape = 3, p.shape[0] = 4, p.shape[1] = 2, p.shape[2] = 3;
    gm_op(C, GM_OP_EXPAND, 1, &x, &p, &e);
    gm_tensor *st_ = sum_all(t), *se = sum_all(e), *tot = binop(GM_OP_ADD, st_, se);
    tap_ok(tot && gm_backward(C, tot, NULL, false) == GM_OK, "backward through transpose + expand of one leaf");
    double w5[6]; /* the earlier narrow's gradient + 1 (transpose) + 4 (expand) */
    for (int i = 0; i < 6; i++) w5[i] = wn[i] + 5;
    tap_ok(max_diff(x->grad, w5, 6) == 0, "transpose (1) + expand x4 (4) accumulate onto the earlier grad");
    gm_tensor_release(tot);
    gm_tensor_release(se);
    gm_tensor_release(st_);
    gm_tensor_release(e);
    gm_tensor_release(t);
    gm_tensor_release(three);
    gm_tensor_release(x);
    tap_ok(gm_ctx_live_bytes(C) == live0, "diamond: nothing leaked");
}

/* Dropping the result of a recorded computation frees its whole graph, saved outputs too. */
static void test_graph_lifetime(void) {
    size_t live0 = gm_ctx_live_bytes(C);
    gm_tensor *x = leaf(2, S23, XV);
    size_t with_x = gm_ctx_live_bytes(C);
    gm_tensor *a = unop(GM_OP_EXP, x), *b = unop(GM_OP_EXP, a), *l = sum_all(b);
    gm_tensor_release(a);
    gm_tensor_release(b);
    tap_ok(gm_ctx_live_bytes(C) > with_x, "the graph keeps intermediate values alive");
    gm_tensor_release(l);
    tap_ok(gm_ctx_live_bytes(C) == with_x, "releasing the root frees the graph's saved values");
    a = unop(GM_OP_EXP, x);
    b = unop(GM_OP_EXP, a);
    l = sum_all(b);
    gm_tensor_release(a);
    gm_tensor_release(b);
    tap_ok(gm_backward(C, l, NULL, false) == GM_OK, "backward of exp(exp(x))");
    double want[6];
    for (int i = 0; i < 6; i++) want[i] = exp(exp(XV[i])) * exp(XV[i]);
    tap_ok(max_diff(x->grad, want, 6) < 1e-9, "d exp(exp(x)) = exp(exp(x)) exp(x)");
    tap_ok(gm_ctx_live_bytes(C) <= with_x + 6 * 8 + 8, "backward freed the saved values (only .grad and the root remain)");
    gm_tensor_release(l);
    gm_tensor_release(x);
    tap_ok(gm_ctx_live_bytes(C) == live0, "lifetime: nothing leaked");
}

int main(void) {
    C = gm_ctx_new();
    if (!C) {
        printf("Bail out! gm_ctx_new failed\n");
        return 1;
    }
    test_small_graph();
    test_nonscalar_root();
    test_grad_mode();
    test_input_grad_and_detach();
    test_diamond();
    test_graph_lifetime();
    gm_ctx_free(C);
    return tap_done();
}
