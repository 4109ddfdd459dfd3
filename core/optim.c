/* optim.c: optimiser steps (SGD, Adam/AdamW), sum of squares and in-place scaling, with the
 * semantics of torch.optim. They write parameters and state buffers in place and are never
 * recorded by autograd. Checks here (shapes, dtypes, devices, contiguity, hyper-parameters);
 * the per-element math is in kernels/<backend>/optim.c. */
#include <math.h>
#include <stdlib.h>

#include "internal.h"

/* Same shape, dtype and device as p, and contiguous when written (`what` names the operand). */
static gm_status check_like(gm_ctx *c, const char *op, const char *what, const gm_tensor *p,
                            const gm_tensor *x, bool written) {
    char b1[64], b2[64];
    if (!x) return gm_errf(c, GM_EARG, "%s: %s is missing", op, what);
    bool same = x->ndim == p->ndim;
    for (int i = 0; same && i < p->ndim; i++) same = x->shape[i] == p->shape[i];
    if (!same)
        return gm_errf(c, GM_ESHAPE, "%s: param is %s but %s is %s", op, GM_SHAPE_STR(p, b1), what,
                       GM_SHAPE_STR(x, b2));
    if (x->dtype != p->dtype)
        return gm_errf(c, GM_EDTYPE, "%s: param is %s but %s is %s", op, gm_dtype_name(p->dtype),
                       what, gm_dtype_name(x->dtype));
    if (gm_tensor_device(x) != gm_tensor_device(p))
        return gm_errf(c, GM_EDEVICE, "%s: param is on %s but %s is on %s", op,
                       gm_device_name(gm_tensor_device(p)), what,
                       gm_device_name(gm_tensor_device(x)));
    if (written && !gm_tensor_is_contiguous(x))
        return gm_errf(c, GM_EARG, "%s: %s must be contiguous", op, what);
    return GM_OK;
}

/* A float, contiguous tensor written in place (`what` names it). */
static gm_status check_param(gm_ctx *c, const char *op, const char *what, const gm_tensor *p) {
    if (!p) return gm_errf(c, GM_EARG, "%s: %s is missing", op, what);
    gm_status st = gm_check_float(c, op, p);
    if (st != GM_OK) return st;
    if (!gm_tensor_is_contiguous(p))
        return gm_errf(c, GM_EARG, "%s: %s must be contiguous", op, what);
    return GM_OK;
}

/* A contiguous reference to the gradient (read only, so a strided one is copied). */
static gm_status grad_contiguous(gm_ctx *c, const char *op, const gm_tensor *p, const gm_tensor *g,
                                 gm_tensor **out) {
    gm_status st = check_like(c, op, "grad", p, g, false);
    if (st != GM_OK) return st;
    return gm_tensor_contiguous(c, (gm_tensor *)g, out);
}

static gm_status check_nonneg(gm_ctx *c, const char *op, const char *name, double v) {
    if (!(v >= 0.0) || isinf(v))
        return gm_errf(c, GM_EARG, "%s: %s must be finite and >= 0, got %g", op, name, v);
    return GM_OK;
}

/* Operand views of a parameter group for a multi-tensor kernel: per views per tensor, taken
 * from ops[j][t] (a NULL list ops[j] or a NULL tensor gives a view with no data); grads
 * (ops[1]) are made contiguous into held[t], which the caller releases. */
static gm_status group_views(gm_ctx *c, const char *op, int n, int per, gm_tensor **ops[], gm_kview *v,
                             gm_tensor **held) {
    for (int t = 0; t < n; t++) {
        gm_status st = grad_contiguous(c, op, ops[0][t], ops[1][t], &held[t]);
        if (st != GM_OK) return st;
        for (int j = 0; j < per; j++) {
            gm_kview *x = &v[per * t + j];
            if (j == 1) gm_kview_of(held[t], x);
            else if (ops[j] && ops[j][t]) gm_kview_of(ops[j][t], x);
            else *x = (gm_kview){.data = NULL, .dtype = ops[0][t]->dtype};
        }
    }
    return GM_OK;
}

/* Run kernel kid once over the group (n tensors of per operands each). */
static gm_status run_group(gm_ctx *c, const char *op, int kid, int n, int per, gm_tensor **ops[],
                           const gm_optim_args *args) {
    gm_kview *v = calloc((size_t)n * per, sizeof *v);
    gm_tensor **held = calloc((size_t)n, sizeof *held);
    gm_status st = v && held ? GM_OK : gm_errf(c, GM_ENOMEM, "%s: out of memory for %d tensors", op, n);
    if (st == GM_OK) st = group_views(c, op, n, per, ops, v, held);
    if (st == GM_OK) {
        gm_kargs a;
        gm_kargs_init(&a, 0, NULL, 0, NULL);
        a.k.optim = *args;
        a.list = v;
        a.n_list = n * per;
        st = gm_kernel_run(c, gm_tensor_device(ops[0][0]), kid, &a);
    }
    for (int t = 0; held && t < n; t++) gm_tensor_release(held[t]);
    free(v);
    free(held);
    return st;
}

/* The tensors of a group: float, contiguous where written, all of one dtype and device. */
static gm_status check_group(gm_ctx *c, const char *op, int n, gm_tensor *const *p) {
    if (n < 1) return gm_errf(c, GM_EARG, "%s: no parameters", op);
    for (int t = 0; t < n; t++) {
        gm_status st = check_param(c, op, "param", p[t]);
        if (st != GM_OK) return st;
        if (p[t]->dtype != p[0]->dtype || gm_tensor_device(p[t]) != gm_tensor_device(p[0]))
            return gm_errf(c, GM_EARG, "%s: param %d is %s on %s but param 1 is %s on %s (one group, one dtype and device)",
                           op, t + 1, gm_dtype_name(p[t]->dtype), gm_device_name(gm_tensor_device(p[t])),
                           gm_dtype_name(p[0]->dtype), gm_device_name(gm_tensor_device(p[0])));
    }
    return GM_OK;
}

/* What every step checks first: the group, then lr, the step's own hyperparameter `name` and
 * weight_decay, all >= 0. */
static gm_status check_step(gm_ctx *c, const char *op, int n, gm_tensor *const *p, const gm_optim_hp *hp,
                            const char *name, double value) {
    gm_status st = check_group(c, op, n, p);
    if (st == GM_OK) st = check_nonneg(c, op, "lr", hp->lr);
    if (st == GM_OK) st = check_nonneg(c, op, name, value);
    if (st == GM_OK) st = check_nonneg(c, op, "weight_decay", hp->weight_decay);
    return st;
}

gm_status gm_sgd_step_multi(gm_ctx *c, int n, gm_tensor **p, gm_tensor **g, gm_tensor **buf,
                            const gm_optim_hp *hp) {
    const char *op = "sgd";
    gm_status st = check_step(c, op, n, p, hp, "momentum", hp->momentum);
    if (st != GM_OK) return st;
    if (!(hp->dampening >= 0.0 && hp->dampening <= 1.0))
        return gm_errf(c, GM_EARG, "%s: dampening must be in [0, 1], got %g", op, hp->dampening);
    if (hp->nesterov && (hp->momentum <= 0.0 || hp->dampening != 0.0))
        return gm_errf(c, GM_EARG, "%s: nesterov needs momentum > 0 and dampening = 0 (got %g, %g)",
                       op, hp->momentum, hp->dampening);
    for (int t = 0; t < n && hp->momentum > 0.0; t++)
        if ((st = check_like(c, op, "momentum buffer", p[t], buf ? buf[t] : NULL, true)) != GM_OK) return st;
    gm_optim_args args = {.lr = hp->lr, .momentum = hp->momentum, .dampening = hp->dampening,
                          .weight_decay = hp->weight_decay, .nesterov = hp->nesterov,
                          .first = hp->step <= 1}; /* torch: the buffer starts as the first gradient */
    gm_tensor **ops[3] = {p, g, hp->momentum > 0.0 ? buf : NULL};
    return run_group(c, op, GM_K_SGD_STEP, n, 3, ops, &args);
}

gm_status gm_sgd_step(gm_ctx *c, gm_tensor *p, const gm_tensor *g, gm_tensor *buf,
                      const gm_optim_hp *hp) {
    gm_tensor *gg = (gm_tensor *)g;
    return gm_sgd_step_multi(c, 1, &p, &gg, &buf, hp);
}

gm_status gm_adam_step_multi(gm_ctx *c, int n, gm_tensor **p, gm_tensor **g, gm_tensor **m, gm_tensor **v,
                             const gm_optim_hp *hp) {
    const char *op = hp->decoupled_wd ? "adamw" : "adam";
    gm_status st = check_step(c, op, n, p, hp, "eps", hp->eps);
    if (st != GM_OK) return st;
    if (!(hp->beta1 >= 0.0 && hp->beta1 < 1.0) || !(hp->beta2 >= 0.0 && hp->beta2 < 1.0))
        return gm_errf(c, GM_EARG, "%s: betas must be in [0, 1), got (%g, %g)", op, hp->beta1,
                       hp->beta2);
    if (hp->step < 1)
        return gm_errf(c, GM_EARG, "%s: step must be >= 1 (it counts from 1), got %lld", op,
                       (long long)hp->step);
    for (int t = 0; t < n; t++)
        if ((st = check_like(c, op, "exp_avg (m)", p[t], m[t], true)) != GM_OK ||
            (st = check_like(c, op, "exp_avg_sq (v)", p[t], v[t], true)) != GM_OK)
            return st;
    gm_optim_args args = {.lr = hp->lr, .beta1 = hp->beta1, .beta2 = hp->beta2, .eps = hp->eps,
                          .weight_decay = hp->weight_decay, .decoupled = hp->decoupled_wd,
                          .bias1 = 1.0 - pow(hp->beta1, (double)hp->step),
                          .bias2 = 1.0 - pow(hp->beta2, (double)hp->step)};
    gm_tensor **ops[4] = {p, g, m, v};
    return run_group(c, op, GM_K_ADAM_STEP, n, 4, ops, &args);
}

gm_status gm_adam_step(gm_ctx *c, gm_tensor *p, const gm_tensor *g, gm_tensor *m, gm_tensor *v,
                       const gm_optim_hp *hp) {
    gm_tensor *gg = (gm_tensor *)g;
    return gm_adam_step_multi(c, 1, &p, &gg, &m, &v, hp);
}

gm_status gm_sumsq(gm_ctx *c, int n, gm_tensor **xs, double *out) {
    *out = 0.0;
    if (n <= 0) return GM_OK;
    gm_status st = GM_OK;
    for (int i = 0; i < n; i++) {
        if (!xs[i]) return gm_errf(c, GM_EARG, "sumsq: tensor %d is missing", i + 1);
        if ((st = gm_check_float(c, "sumsq", xs[i])) != GM_OK) return st;
        if (gm_tensor_device(xs[i]) != gm_tensor_device(xs[0]))
            return gm_errf(c, GM_EDEVICE, "sumsq: tensors on %s and %s",
                           gm_device_name(gm_tensor_device(xs[0])),
                           gm_device_name(gm_tensor_device(xs[i])));
    }
    /* One f64 accumulator on the tensors' device; every kernel adds into it. */
    gm_tensor *acc;
    if ((st = gm_tensor_zeros(c, GM_F64, gm_tensor_device(xs[0]), 0, NULL, &acc)) != GM_OK)
        return st;
    for (int i = 0; i < n && st == GM_OK; i++) {
        gm_tensor *x;
        if ((st = gm_tensor_contiguous(c, xs[i], &x)) != GM_OK) break;
        st = gm_run(c, GM_K_SUMSQ, 1, &x, 1, &acc, NULL);
        gm_tensor_release(x);
    }
    if (st == GM_OK) {
        gm_backend *b = gm_backend_for(gm_tensor_device(acc));
        st = b->copy(c, out, gm_tensor_data(acc), sizeof *out,
                     b->device == GM_CPU ? GM_COPY_H2H : GM_COPY_D2H);
    }
    gm_tensor_release(acc);
    return st;
}

gm_status gm_scale_(gm_ctx *c, gm_tensor *x, double s) {
    gm_status st = check_param(c, "scale_", "tensor", x);
    if (st != GM_OK) return st;
    return gm_run(c, GM_K_SCALE, 0, NULL, 1, &x, &(gm_kparams){.value = {s}});
}
