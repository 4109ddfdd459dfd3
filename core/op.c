/* op.c: the op table built from ops.def, and gm_op(): check, forward, record for autograd.
 * Every op call from Lua and from C goes through gm_op. */
#include <string.h>

#include "internal.h"

#define GM_OP(id, name, nin, nout, flags, sig, doc) extern const gm_oprules gm_rules_##id;
#include "ops.def"
#undef GM_OP

static const gm_opdef op_table[GM_OP_COUNT] = {
#define GM_OP(id, name, nin, nout, flags, sig, doc) {name, nin, nout, flags, sig, doc, &gm_rules_##id},
#include "ops.def"
#undef GM_OP
};

const gm_opdef *gm_opdef_get(int op) {
    return op >= 0 && op < GM_OP_COUNT ? &op_table[op] : NULL;
}

int gm_op_find(const char *name) {
    for (int i = 0; i < GM_OP_COUNT; i++)
        if (strcmp(op_table[i].name, name) == 0) return i;
    return -1;
}

void gm_params_init(gm_params *p) {
    memset(p, 0, sizeof *p);
    p->ndims = -1;
    p->dim1 = -1;
    p->largest = p->sorted = p->unbiased = true;
    p->reduction = GM_RED_MEAN;
    p->ignore_index = -100;
    p->dtype = GM_F32;
}

gm_status gm_check_same_dtype(gm_ctx *c, const char *op, int n, gm_tensor **in) {
    for (int i = 1; i < n; i++)
        if (in[i]->dtype != in[0]->dtype)
            return gm_errf(c, GM_EDTYPE, "%s: dtype mismatch: %s and %s (convert with x:to(\"%s\"))", op,
                           gm_dtype_name(in[0]->dtype), gm_dtype_name(in[i]->dtype),
                           gm_dtype_name(in[0]->dtype));
    return GM_OK;
}

gm_status gm_check_float(gm_ctx *c, const char *op, const gm_tensor *x) {
    if (!gm_dtype_is_float(x->dtype))
        return gm_errf(c, GM_EDTYPE, "%s: expected a float tensor (f32 or f64), got %s", op,
                       gm_dtype_name(x->dtype));
    return GM_OK;
}

gm_status gm_op(gm_ctx *c, int op, int n_in, gm_tensor **in, const gm_params *p,
                gm_tensor **out) {
    const gm_opdef *d = gm_opdef_get(op);
    if (!d) return gm_errf(c, GM_EARG, "unknown op id %d", op);
    if (d->flags & GM_F_VARIADIC) {
        if (n_in < 1) return gm_errf(c, GM_EARG, "%s: expected at least one tensor", d->name);
    } else if (n_in != d->n_in) {
        return gm_errf(c, GM_EARG, "%s: expected %d tensor inputs, got %d", d->name, d->n_in, n_in);
    }
    if (gm_interrupted()) return gm_errf(c, GM_EINTR, "%s: interrupted", d->name);
    for (int i = 0; i < n_in; i++) {
        if (!in[i]) return gm_errf(c, GM_EARG, "%s: input %d is missing", d->name, i);
        if (gm_tensor_device(in[i]) != gm_tensor_device(in[0]))
            return gm_errf(c, GM_EDEVICE, "%s: inputs on different devices (%s and %s); move one with :to()",
                           d->name, gm_device_name(gm_tensor_device(in[0])),
                           gm_device_name(gm_tensor_device(in[i])));
    }
    gm_params defaults;
    if (!p) {
        gm_params_init(&defaults);
        p = &defaults;
    }
    gm_opcall o = {.n_in = n_in, .in = in, .p = p, .n_out = d->n_out};
    gm_status st = d->rules->forward(c, &o);
    /* An output must be a tensor of its own (autograd links it to this call): alias any input
     * a forward handed back unchanged. */
    for (int i = 0; st == GM_OK && i < d->n_out; i++)
        for (int j = 0; j < n_in; j++)
            if (o.out[i] == in[j]) {
                gm_tensor *a;
                if ((st = gm_tensor_alias(c, in[j], &a)) != GM_OK) break;
                gm_tensor_release(o.out[i]);
                o.out[i] = a;
            }
    if (st == GM_OK && !(d->flags & GM_F_NODIFF) && gm_grad_enabled(c)) {
        bool any = false;
        for (int i = 0; i < n_in; i++) any |= in[i]->requires_grad;
        if (any) st = gm_autograd_record(c, op, &o, p);
    }
    if (st != GM_OK) {
        for (int i = 0; i < d->n_out; i++) gm_tensor_release(o.out[i]);
        if (!c->err[0]) gm_errf(c, st, "%s failed", d->name);
        return st;
    }
    for (int i = 0; i < d->n_out; i++) out[i] = o.out[i];
    return GM_OK;
}

/* ---- convenience wrappers for C callers and backward rules --------------------------------- */
static gm_status op2(gm_ctx *c, int op, gm_tensor *a, gm_tensor *b, gm_tensor **out) {
    gm_tensor *in[2] = {a, b};
    return gm_op(c, op, 2, in, NULL, out);
}

gm_status gm_add(gm_ctx *c, gm_tensor *a, gm_tensor *b, gm_tensor **out) { return op2(c, GM_OP_ADD, a, b, out); }
gm_status gm_sub(gm_ctx *c, gm_tensor *a, gm_tensor *b, gm_tensor **out) { return op2(c, GM_OP_SUB, a, b, out); }
gm_status gm_mul(gm_ctx *c, gm_tensor *a, gm_tensor *b, gm_tensor **out) { return op2(c, GM_OP_MUL, a, b, out); }
gm_status gm_div(gm_ctx *c, gm_tensor *a, gm_tensor *b, gm_tensor **out) { return op2(c, GM_OP_DIV, a, b, out); }
gm_status gm_matmul(gm_ctx *c, gm_tensor *a, gm_tensor *b, gm_tensor **out) { return op2(c, GM_OP_MATMUL, a, b, out); }

gm_status gm_neg(gm_ctx *c, gm_tensor *a, gm_tensor **out) { return gm_op(c, GM_OP_NEG, 1, &a, NULL, out); }

static gm_status op_scalar(gm_ctx *c, int op, gm_tensor *a, double s, gm_tensor **out) {
    gm_tensor *k;
    gm_status st = gm_tensor_full(c, a->dtype, gm_tensor_device(a), 0, NULL, s, &k);
    if (st != GM_OK) return st;
    st = op2(c, op, a, k, out);
    gm_tensor_release(k);
    return st;
}

gm_status gm_mul_scalar(gm_ctx *c, gm_tensor *a, double s, gm_tensor **out) { return op_scalar(c, GM_OP_MUL, a, s, out); }
gm_status gm_add_scalar(gm_ctx *c, gm_tensor *a, double s, gm_tensor **out) { return op_scalar(c, GM_OP_ADD, a, s, out); }

gm_status gm_transpose(gm_ctx *c, gm_tensor *a, int d0, int d1, gm_tensor **out) {
    gm_params p;
    gm_params_init(&p);
    p.dim = d0;
    p.dim1 = d1;
    return gm_op(c, GM_OP_TRANSPOSE, 1, &a, &p, out);
}

static gm_status op_shape(gm_ctx *c, int op, gm_tensor *a, int ndim, const int64_t *shape, gm_tensor **out) {
    gm_params p;
    gm_params_init(&p);
    p.nshape = ndim;
    for (int i = 0; i < ndim; i++) p.shape[i] = shape[i];
    return gm_op(c, op, 1, &a, &p, out);
}

gm_status gm_reshape(gm_ctx *c, gm_tensor *a, int ndim, const int64_t *shape, gm_tensor **out) {
    return op_shape(c, GM_OP_RESHAPE, a, ndim, shape, out);
}

gm_status gm_expand(gm_ctx *c, gm_tensor *a, int ndim, const int64_t *shape, gm_tensor **out) {
    return op_shape(c, GM_OP_EXPAND, a, ndim, shape, out);
}

gm_status gm_sum_dims(gm_ctx *c, gm_tensor *a, int ndims, const int *dims, bool keepdim,
                      gm_tensor **out) {
    gm_params p;
    gm_params_init(&p);
    p.ndims = ndims;
    for (int i = 0; i < ndims && i < GM_MAX_DIMS; i++) p.dims[i] = dims[i];
    p.keepdim = keepdim;
    return gm_op(c, GM_OP_SUM, 1, &a, &p, out);
}

/* Sum g over the dims that broadcasting added or stretched, giving `shape`. */
gm_status gm_sum_to_shape(gm_ctx *c, gm_tensor *g, int ndim, const int64_t *shape,
                          gm_tensor **out) {
    int dims[GM_MAX_DIMS], nd = 0, lead = g->ndim - ndim;
    if (lead < 0) return gm_errf(c, GM_EINTERNAL, "sum_to_shape: target has more dims than the gradient");
    for (int i = 0; i < g->ndim; i++)
        if (i < lead || (shape[i - lead] == 1 && g->shape[i] != 1)) dims[nd++] = i;
    if (nd == 0) {
        *out = gm_tensor_retain(g);
        return GM_OK;
    }
    gm_tensor *s;
    gm_status st = gm_sum_dims(c, g, nd, dims, true, &s);
    if (st != GM_OK) return st;
    st = gm_reshape(c, s, ndim, shape, out);
    gm_tensor_release(s);
    return st;
}
