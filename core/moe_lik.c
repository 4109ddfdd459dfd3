/* moe_lik.c: the likelihood of a Gaussian mixture of experts with a 1-D covariate for the
 * maximum-likelihood estimators of the gating-rate reproductions (papers.md §1, §2): checks
 * here, the fused per-point math in kernels/<backend>/moe_lik.c. One pass over the data gives
 * the NLL, its gradient and the outer-product curvature for several parameter rows (restarts)
 * at once, where the composed tensor expression costs tens of passes per gradient. */
#include "internal.h"

/* A contiguous f64 CPU operand (a copy when x is strided), named `what` in errors. */
static gm_status operand(gm_ctx *c, const char *what, gm_tensor *x, gm_tensor **out) {
    const char *op = "gaussian_moe_eval";
    if (!x) return gm_errf(c, GM_EARG, "%s: %s is missing", op, what);
    if (x->dtype != GM_F64)
        return gm_errf(c, GM_EDTYPE, "%s: %s must be f64, got %s", op, what,
                       gm_dtype_name(x->dtype));
    if (gm_tensor_device(x) != GM_CPU)
        return gm_errf(c, GM_EDEVICE, "%s: %s must be on the cpu, got %s", op, what,
                       gm_device_name(gm_tensor_device(x)));
    return gm_tensor_contiguous(c, x, out);
}

gm_status gm_gaussian_moe_eval(gm_ctx *c, gm_tensor *x, gm_tensor *y, gm_tensor *theta,
                               gm_moe_gate gate, int K, int what, gm_tensor **nll,
                               gm_tensor **grad, gm_tensor **opg) {
    const char *op = "gaussian_moe_eval";
    char b1[64], b2[64];
    *nll = NULL;
    if (grad) *grad = NULL;
    if (opg) *opg = NULL;
    if (what < 1 || what > 3)
        return gm_errf(c, GM_EARG, "%s: what must be 1 (value), 2 (+ gradient) or 3 (+ outer "
                       "products), got %d", op, what);
    if ((what >= 2 && !grad) || (what == 3 && !opg))
        return gm_errf(c, GM_EARG, "%s: no place for the outputs asked for", op);
    if (gate < GM_MOE_SOFTMAX || gate > GM_MOE_TOPK)
        return gm_errf(c, GM_EARG, "%s: unknown gate %d", op, (int)gate);
    gm_tensor *in[3] = {NULL, NULL, NULL}, *out[3] = {NULL, NULL, NULL}; /* x, y, theta contiguous */
    gm_status s = operand(c, "x", x, &in[0]);
    if (!s) s = operand(c, "y", y, &in[1]);
    if (!s) s = operand(c, "theta", theta, &in[2]);
    if (s) goto done;
    gm_tensor *xc = in[0], *yc = in[1], *tc = in[2];
    int64_t n = gm_tensor_numel(xc);
    bool x_ok = xc->ndim == 1 || (xc->ndim == 2 && xc->shape[1] == 1);
    if (!x_ok || yc->ndim != 1 || yc->shape[0] != n || n < 1) {
        s = gm_errf(c, GM_ESHAPE, "%s: x must be [n] or [n, 1] and y [n] with n >= 1, got x %s "
                    "and y %s", op, GM_SHAPE_STR(xc, b1), GM_SHAPE_STR(yc, b2));
        goto done;
    }
    int64_t R = tc->ndim == 2 ? tc->shape[0] : 0, P = tc->ndim == 2 ? tc->shape[1] : 0;
    int64_t k = (P - 1) / 5;
    if (tc->ndim != 2 || R < 1 || P < 6 || (P - 1) % 5 != 0 || k > GM_MOE_MAX_K) {
        s = gm_errf(c, GM_ESHAPE, "%s: theta must be [R, 5k + 1] (beta0, beta1, a, b, log nu per "
                    "expert, then log tau) with R >= 1 and 1 <= k <= %d, got %s", op, GM_MOE_MAX_K,
                    GM_SHAPE_STR(tc, b1));
        goto done;
    }
    if (gate == GM_MOE_TOPK && (K < 1 || K > k)) {
        s = gm_errf(c, GM_EARG, "%s: K must be in 1..%lld (the experts), got %d", op,
                    (long long)k, K);
        goto done;
    }
    int64_t sh[3] = {R, P, P};
    s = gm_tensor_new(c, GM_F64, GM_CPU, 1, sh, &out[0]);
    if (!s) s = gm_tensor_new(c, GM_F64, GM_CPU, 2, sh, &out[1]);
    if (!s) s = gm_tensor_new(c, GM_F64, GM_CPU, 3, sh, &out[2]);
    if (s) goto done;
    gm_kparams kp = {.moe_lik = {.gate = gate, .K = gate == GM_MOE_TOPK ? K : (int)k, .what = what}};
    s = gm_run(c, GM_K_GAUSSIAN_MOE_EVAL, 3, in, 3, out, &kp);
    if (s) goto done;
    *nll = out[0];
    out[0] = NULL;
    if (what >= 2) *grad = out[1], out[1] = NULL;
    if (what == 3) *opg = out[2], out[2] = NULL;
done:
    for (int i = 0; i < 3; i++) {
        gm_tensor_release(in[i]);
        gm_tensor_release(out[i]);
    }
    return s;
}
