/* autograd.c: eager define-by-run reverse mode. gm_op records a node per differentiable call
 * whose inputs require grad; outputs own their node, nodes own their inputs (never their
 * outputs: saved outputs are storage aliases), so dropping a result frees its graph.
 * Backward collects the nodes reachable from the root and runs them in reverse creation
 * order (creation order is a topological order of an eager program). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Nodes are recycled through a free list: recording one per op must not cost a calloc. */
#define NODE_POOL_MAX 4096
static gm_node *node_pool;
static int node_pooled;

gm_node *gm_node_new(int op, int n_in, int n_out) {
    gm_node *n = node_pool;
    if (n) {
        node_pool = *(gm_node **)n;
        node_pooled--;
    } else if (!(n = malloc(sizeof *n))) {
        return NULL;
    }
    memset(n, 0, sizeof *n);
    if (n_in <= GM_MAX_IN) {
        n->in = n->in_small;
        n->needs = n->needs_small;
    } else {
        n->in = calloc((size_t)n_in, sizeof *n->in);
        n->needs = calloc((size_t)n_in, sizeof *n->needs);
        if (!n->in || !n->needs) {
            free(n->in);
            free(n->needs);
            free(n);
            return NULL;
        }
    }
    n->op = op;
    n->n_in = n_in;
    n->n_out = n_out;
    return n;
}

static void node_free_state(gm_node *n) {
    for (int i = 0; i < n->n_in; i++) {
        gm_tensor_release(n->in[i]);
        n->in[i] = NULL;
    }
    for (int i = 0; i < n->n_out; i++) {
        gm_tensor_release(n->saved_out[i]);
        gm_tensor_release(n->gout[i]);
        n->saved_out[i] = n->gout[i] = NULL;
    }
}

void gm_node_release(gm_node *n) {
    if (!n || --n->refcount > 0) return;
    node_free_state(n);
    if (n->in != n->in_small) {
        free(n->in);
        free(n->needs);
    }
    if (node_pooled >= NODE_POOL_MAX) {
        free(n);
        return;
    }
    *(gm_node **)n = node_pool;
    node_pool = n;
    node_pooled++;
}

gm_status gm_autograd_record(gm_ctx *c, int op, gm_opcall *o, const gm_params *p) {
    const gm_opdef *d = gm_opdef_get(op);
    bool any_float = false;
    for (int i = 0; i < o->n_out; i++) any_float |= gm_dtype_is_float(o->out[i]->dtype);
    if (!any_float) return GM_OK;
    if (!d->rules->backward) return gm_errf(c, GM_EINTERNAL, "%s: no backward rule", d->name);
    gm_node *n = gm_node_new(op, o->n_in, o->n_out);
    if (!n) return gm_errf(c, GM_ENOMEM, "out of memory recording %s", d->name);
    n->seq = ++c->node_seq;
    n->p = *p;
    for (int i = 0; i < o->n_in; i++) {
        n->in[i] = gm_tensor_retain(o->in[i]);
        n->needs[i] = o->in[i]->requires_grad;
    }
    for (int i = 0; i < o->n_out; i++) {
        gm_tensor *y = o->out[i];
        n->out_ndim[i] = y->ndim;
        memcpy(n->out_shape[i], y->shape, sizeof y->shape[0] * (size_t)y->ndim);
        n->out_dtype[i] = y->dtype;
        if ((d->flags & GM_F_SAVE_OUT) && gm_tensor_alias(c, y, &n->saved_out[i]) != GM_OK) {
            n->refcount = 1;
            gm_node_release(n);
            return gm_errf(c, GM_ENOMEM, "out of memory recording %s", d->name);
        }
    }
    for (int i = 0; i < o->n_out; i++) {
        gm_tensor *y = o->out[i];
        if (!gm_dtype_is_float(y->dtype)) continue;
        y->requires_grad = true;
        y->grad_fn = n;
        y->out_index = i;
        n->refcount++;
    }
    return GM_OK;
}

gm_status gm_tensor_set_requires_grad(gm_ctx *c, gm_tensor *x, bool on) {
    if (x->grad_fn)
        return gm_errf(c, GM_EAUTOGRAD, "requires_grad_: only leaf tensors can change requires_grad "
                       "(this one is the result of an op; use :detach())");
    if (on && !gm_dtype_is_float(x->dtype))
        return gm_errf(c, GM_EDTYPE, "requires_grad_: only float tensors can require gradients, got %s",
                       gm_dtype_name(x->dtype));
    x->requires_grad = on;
    return GM_OK;
}

gm_status gm_tensor_detach(gm_ctx *c, gm_tensor *x, gm_tensor **out) {
    return gm_tensor_alias(c, x, out);
}

/* g is owned; add it into *slot (which may be NULL). A leaf's .grad must own its storage. */
static gm_status accumulate(gm_ctx *c, gm_tensor **slot, gm_tensor *g, bool own_storage) {
    gm_status st = GM_OK;
    if (!*slot) {
        if (own_storage && (g->refcount > 1 || g->storage->refcount > 1 || !gm_tensor_is_contiguous(g))) {
            gm_tensor *copy;
            if ((st = gm_tensor_new(c, g->dtype, gm_tensor_device(g), g->ndim, g->shape, &copy)) == GM_OK &&
                (st = gm_tensor_copy_(c, copy, g)) == GM_OK) {
                *slot = copy;
            } else {
                gm_tensor_release(copy);
            }
            gm_tensor_release(g);
            return st;
        }
        *slot = g;
        return GM_OK;
    }
    gm_tensor *sum;
    st = gm_add(c, *slot, g, &sum);
    gm_tensor_release(g);
    if (st != GM_OK) return st;
    gm_tensor_release(*slot);
    *slot = sum;
    return GM_OK;
}

static bool same_shape(const gm_tensor *a, int ndim, const int64_t *shape) {
    if (a->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (a->shape[i] != shape[i]) return false;
    return true;
}

static int by_seq_desc(const void *a, const void *b) {
    uint64_t x = (*(gm_node *const *)a)->seq, y = (*(gm_node *const *)b)->seq;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* All nodes reachable from root (retained), in reverse creation order. */
static gm_status collect(gm_ctx *c, gm_node *root, gm_node ***list, size_t *count) {
    static uint64_t stamp;
    uint64_t mark = ++stamp;
    size_t cap = 64, n = 0, sp = 0, scap = 64;
    gm_node **out = malloc(cap * sizeof *out), **stack = malloc(scap * sizeof *stack);
    gm_status st = GM_OK;
    if (!out || !stack) {
        st = gm_errf(c, GM_ENOMEM, "backward: out of memory");
        goto done;
    }
    root->mark = mark;
    stack[sp++] = root;
    while (sp) {
        gm_node *x = stack[--sp];
        if (x->freed) {
            st = gm_errf(c, GM_EAUTOGRAD, "backward: trying to go through the graph a second time "
                         "(its saved values were freed by the first backward; pass {retain_graph=true})");
            goto done;
        }
        if (n == cap && !(out = realloc(out, (cap *= 2) * sizeof *out))) goto oom;
        out[n++] = x;
        x->refcount++;
        for (int i = 0; i < x->n_in; i++) {
            gm_node *y = x->needs[i] && x->in[i] ? x->in[i]->grad_fn : NULL;
            if (!y || y->mark == mark) continue;
            y->mark = mark;
            if (sp == scap && !(stack = realloc(stack, (scap *= 2) * sizeof *stack))) goto oom;
            stack[sp++] = y;
        }
    }
    qsort(out, n, sizeof *out, by_seq_desc);
    goto done;
oom:
    st = gm_errf(c, GM_ENOMEM, "backward: out of memory");
done:
    free(stack);
    if (st != GM_OK && out) {
        for (size_t i = 0; i < n; i++) gm_node_release(out[i]);
        free(out);
        out = NULL;
        n = 0;
    }
    *list = out;
    *count = n;
    return st;
}

static gm_status run_node(gm_ctx *c, gm_node *n) {
    const gm_opdef *d = gm_opdef_get(n->op);
    gm_tensor *gin[GM_MAX_IN] = {0}, **gins = gin;
    bool any = false;
    for (int i = 0; i < n->n_out; i++) any |= n->gout[i] != NULL;
    if (!any) return GM_OK;
    if (n->n_in > GM_MAX_IN && !(gins = calloc((size_t)n->n_in, sizeof *gins)))
        return gm_errf(c, GM_ENOMEM, "backward: out of memory");
    gm_status st = d->rules->backward(c, n, n->gout, gins);
    /* The output gradients are spent: dropping them now lets an input gradient that is a view
     * of one become a leaf's .grad without a copy. */
    for (int i = 0; i < n->n_out; i++) {
        gm_tensor_release(n->gout[i]);
        n->gout[i] = NULL;
    }
    for (int j = 0; j < n->n_in; j++) {
        gm_tensor *g = gins[j], *x = n->in[j];
        if (!g) continue;
        if (st == GM_OK && !n->needs[j]) {
            gm_tensor_release(g);
            continue;
        }
        if (st == GM_OK && !same_shape(g, x->ndim, x->shape)) {
            char s1[128], s2[128];
            st = gm_errf(c, GM_EINTERNAL, "%s backward: gradient %s for input %d of shape %s", d->name,
                         GM_SHAPE_STR(g, s1), j, GM_SHAPE_STR(x, s2));
        }
        if (st != GM_OK) {
            gm_tensor_release(g);
            continue;
        }
        if (x->grad_fn) st = accumulate(c, &x->grad_fn->gout[x->out_index], g, false);
        else st = accumulate(c, &x->grad, g, true);
    }
    if (gins != gin) free(gins);
    return st;
}

gm_status gm_backward(gm_ctx *c, gm_tensor *root, gm_tensor *grad, bool retain_graph) {
    char s1[128], s2[128];
    if (!root->requires_grad)
        return gm_errf(c, GM_EAUTOGRAD, "backward: tensor does not require grad (no input of the "
                       "computation called requires_grad_())");
    if (grad) {
        if (!same_shape(grad, root->ndim, root->shape))
            return gm_errf(c, GM_ESHAPE, "backward: gradient of shape %s for a tensor of shape %s",
                           GM_SHAPE_STR(grad, s1), GM_SHAPE_STR(root, s2));
        if (grad->dtype != root->dtype)
            return gm_errf(c, GM_EDTYPE, "backward: gradient dtype %s for a tensor of dtype %s",
                           gm_dtype_name(grad->dtype), gm_dtype_name(root->dtype));
        gm_tensor_retain(grad);
    } else {
        if (gm_tensor_numel(root) != 1)
            return gm_errf(c, GM_EAUTOGRAD, "backward: output of shape %s is not a scalar; pass a "
                           "gradient of the same shape (y:backward(g))", GM_SHAPE_STR(root, s1));
        gm_status st = gm_tensor_full(c, root->dtype, gm_tensor_device(root), root->ndim, root->shape, 1.0, &grad);
        if (st != GM_OK) return st;
    }
    gm_grad_push(c, false);
    gm_status st;
    if (!root->grad_fn) {
        st = accumulate(c, &root->grad, grad, true);
        gm_grad_pop(c);
        return st;
    }
    gm_node **list;
    size_t n;
    if ((st = collect(c, root->grad_fn, &list, &n)) != GM_OK) {
        gm_tensor_release(grad);
        gm_grad_pop(c);
        return st;
    }
    st = accumulate(c, &root->grad_fn->gout[root->out_index], grad, false);
    for (size_t i = 0; i < n && st == GM_OK; i++) {
        if (gm_interrupted()) st = gm_errf(c, GM_EINTR, "backward: interrupted");
        else st = run_node(c, list[i]); /* it releases the node's output gradients */
    }
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < GM_MAX_OUT; k++) {
            gm_tensor_release(list[i]->gout[k]);
            list[i]->gout[k] = NULL;
        }
        if (!retain_graph) {
            node_free_state(list[i]);
            list[i]->freed = true;
        }
        gm_node_release(list[i]);
    }
    free(list);
    gm_grad_pop(c);
    return st;
}
