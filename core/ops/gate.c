/* gate.c: rules of the gate family: topk_gate, topp_gate and threshold_gate (one kernel pair,
 * kernels/cpu/gate.c, picked by a rule number). Forward checks logits [T, E] float and the
 * rule's parameter, runs the selection into [T, W] buffers (W = k for top-k, E otherwise) and,
 * for the variable-width rules, narrows them to K = the most experts any row kept. Backward
 * goes through the softmax and the renormalisation; the selection is a constant. */
#include "internal.h"
#include "sample.h"

#include <math.h>
#include <string.h>

enum { RULE_TOPK = 0, RULE_TOPP = 1, RULE_THRESHOLD = 2 };
static const char *const rule_op[] = {"topk_gate", "topp_gate", "threshold_gate"};

static gm_status check_logits(gm_ctx *c, const char *op, const gm_tensor *x)
{
    char b[64];
    gm_status s = gm_check_float(c, op, x);
    if (s) return s;
    if (x->ndim != 2 || x->shape[1] < 1)
        return gm_errf(c, GM_ESHAPE, "%s: logits must be [T, E] with E >= 1, got %s", op,
                       GM_SHAPE_STR(x, b));
    return GM_OK;
}

/* The first `cols` columns of a [T, W] tensor as a new contiguous tensor (or x itself). */
static gm_status narrow_cols(gm_ctx *c, gm_tensor **x, int64_t cols)
{
    gm_tensor *v = NULL, *out = NULL;
    if ((*x)->shape[1] == cols) return GM_OK;
    int64_t shape[2] = {(*x)->shape[0], cols};
    gm_status s = gm_tensor_view(c, *x, 2, shape, (*x)->stride, (*x)->offset, &v);
    if (!s) s = gm_tensor_copy_as(c, v, v->dtype, &out);
    gm_tensor_release(v);
    if (s) return s;
    gm_tensor_release(*x);
    *x = out;
    return GM_OK;
}

static gm_status select_fwd(gm_ctx *c, gm_opcall *o, int rule)
{
    const char *op = rule_op[rule];
    gm_tensor *x = o->in[0], *count = NULL;
    const gm_params *p = o->p;
    gm_status s = check_logits(c, op, x);
    if (s) return s;
    int64_t T = x->shape[0], E = x->shape[1], W = E;
    double arg = 0;
    if (rule == RULE_TOPK) {
        if (p->k < 1 || p->k > E)
            return gm_errf(c, GM_EARG, "topk_gate: k=%lld out of range for %lld experts (1..%lld)",
                           (long long)p->k, (long long)E, (long long)E);
        W = p->k;
    } else if (rule == RULE_TOPP) {
        if (!p->has_a || !(p->a >= 0 && p->a <= 1))
            return gm_errf(c, GM_EARG, "topp_gate: p must be in [0, 1], got %g", p->has_a ? p->a : NAN);
        arg = p->a;
    } else {
        if (!p->has_a || !(p->a >= 0 && p->a < 1))
            return gm_errf(c, GM_EARG, "threshold_gate: threshold must be in [0, 1), got %g",
                           p->has_a ? p->a : NAN);
        arg = p->a;
    }
    gm_device dev = gm_tensor_device(x);
    s = gm_tensor_new(c, x->dtype, dev, 2, (int64_t[]){T, W}, &o->out[0]);
    if (!s) s = gm_tensor_new(c, GM_I32, dev, 2, (int64_t[]){T, W}, &o->out[1]);
    if (!s) s = gm_tensor_new(c, x->dtype, dev, 2, (int64_t[]){T, E}, &o->out[2]);
    if (!s) s = gm_tensor_new(c, GM_I32, dev, 1, (int64_t[]){T}, &count);
    if (s) goto done;
    gm_kparams k = {.gate = {.rule = rule, .k = p->k, .renormalize = p->keepdim, .p = arg}};
    gm_tensor *outs[4] = {o->out[0], o->out[1], o->out[2], count};
    s = gm_run(c, GM_K_GATE_SELECT, 1, &x, 4, outs, &k);
    if (s || rule == RULE_TOPK) goto done;
    /* K = the widest row (the counts live on the host: CPU backend). */
    int64_t K = 1;
    for (int64_t t = 0; t < T; t++) {
        int64_t n = (int64_t)gm_tensor_get_flat(count, t);
        if (n > K) K = n;
    }
    s = narrow_cols(c, &o->out[0], K);
    if (!s) s = narrow_cols(c, &o->out[1], K);
done:
    gm_tensor_release(count);
    return s;
}

static gm_status topk_gate_fwd(gm_ctx *c, gm_opcall *o) { return select_fwd(c, o, RULE_TOPK); }
static gm_status topp_gate_fwd(gm_ctx *c, gm_opcall *o) { return select_fwd(c, o, RULE_TOPP); }
static gm_status threshold_gate_fwd(gm_ctx *c, gm_opcall *o) { return select_fwd(c, o, RULE_THRESHOLD); }

/* dlogits from the weights' and the probs' gradients (either may be absent). */
static gm_status select_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin)
{
    gm_tensor *x = n->in[0];
    if (!n->needs[0]) return GM_OK;
    gm_status s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), 2, x->shape, &gin[0]);
    if (s) return s;
    gm_tensor *w = n->saved_out[0], *ids = n->saved_out[1], *probs = n->saved_out[2];
    gm_tensor *ins[5] = {probs, w, ids, gout[0] ? gout[0] : w, gout[2] ? gout[2] : probs};
    gm_kparams k = {.gate = {.renormalize = n->p.keepdim, .given = (gout[0] ? 1u : 0u) | (gout[2] ? 2u : 0u)}};
    return gm_run(c, GM_K_GATE_SELECT_BWD, 5, ins, 1, &gin[0], &k);
}

/* ---- samples: logits whose rows are permutations of one set of well-separated values, so
 * every row has the same sorted probabilities and the rule's boundary (a cumulative sum, a
 * threshold) can sit midway between two of them: finite differences never change the set. */
static gm_tensor *perm_logits(gm_ctx *c, int64_t T, int64_t E, uint64_t seed)
{
    gm_tensor *x = gm_sample_randn(c, GM_F64, seed, 2, (int64_t[]){T, E});
    if (!x) return NULL;
    double *d = gm_tensor_data(x);
    int64_t m = 5; /* a multiplier coprime with E makes e -> m e + 3 t (mod E) a permutation */
    for (;; m++) {
        int64_t a = m, b = E;
        while (b) { int64_t r = a % b; a = b; b = r; }
        if (a == 1) break;
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t e = 0; e < E; e++) d[t * E + e] = 0.37 * (double)((e * m + t * 3) % E) - 0.5;
    return x;
}

/* Cumulative softmax mass of the top j values of the perm_logits set, for placing p. */
static double top_mass(int64_t E, int64_t j)
{
    double sum = 0, top = 0;
    for (int64_t v = 0; v < E; v++) sum += exp(0.37 * (double)v);
    for (int64_t v = E - 1; v >= E - j; v--) top += exp(0.37 * (double)v);
    return top / sum;
}

static gm_status topk_gate_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    gm_params_init(p);
    if (variant == 0) { /* [4, 5] k=2, raw probs */
        in[0] = perm_logits(c, 4, 5, 4000);
        p->k = 2;
    } else if (variant == 1) { /* [3, 7] k=3, renormalised */
        in[0] = perm_logits(c, 3, 7, 4001);
        p->k = 3;
        p->keepdim = true;
    } else if (variant == 2) { /* k = E, T = 1 */
        in[0] = perm_logits(c, 1, 6, 4002);
        p->k = 6;
        p->keepdim = true;
    } else if (variant == 3) { /* top-1 of 3 experts (Switch) */
        in[0] = perm_logits(c, 5, 3, 4003);
        p->k = 1;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 1, in, n_in);
}

static gm_status topp_gate_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p)
{
    gm_params_init(p);
    p->has_a = true;
    if (variant == 0) { /* [4, 6], boundary after 2 experts */
        in[0] = perm_logits(c, 4, 6, 4100);
        p->a = 0.5 * (top_mass(6, 1) + top_mass(6, 2));
    } else if (variant == 1) { /* [3, 5], 3 experts, renormalised */
        in[0] = perm_logits(c, 3, 5, 4101);
        p->a = 0.5 * (top_mass(5, 2) + top_mass(5, 3));
        p->keepdim = true;
    } else if (variant == 2) { /* p = 1: every expert */
        in[0] = perm_logits(c, 2, 5, 4102);
        p->a = 1;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 1, in, n_in);
}

static gm_status threshold_gate_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in,
                                       gm_params *p)
{
    gm_params_init(p);
    p->has_a = true;
    if (variant == 0) { /* [4, 6], threshold between the 3rd and the 4th prob */
        in[0] = perm_logits(c, 4, 6, 4200);
        p->a = 0.5 * (top_mass(6, 3) - top_mass(6, 2) + top_mass(6, 4) - top_mass(6, 3));
    } else if (variant == 1) { /* [3, 5], renormalised */
        in[0] = perm_logits(c, 3, 5, 4201);
        p->a = 0.5 * (top_mass(5, 2) - top_mass(5, 1) + top_mass(5, 3) - top_mass(5, 2));
        p->keepdim = true;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 1, in, n_in);
}

/* Bad calls shared by the three: a 1-D input, an i32 input, then the rule's parameter. */
static gm_status select_bad(gm_ctx *c, int rule, int variant, int *n_in, gm_tensor **in,
                            gm_params *p, gm_status *expect)
{
    gm_params_init(p);
    p->k = 1;
    p->has_a = true;
    p->a = 0.5;
    if (variant == 0) {
        in[0] = gm_sample_randn(c, GM_F64, 4300, 1, (int64_t[]){5});
        *expect = GM_ESHAPE;
    } else if (variant == 1) {
        in[0] = gm_sample_i32(c, 2, (int64_t[]){2, 2}, (const int32_t[]){0, 1, 2, 3});
        *expect = GM_EDTYPE;
    } else if (variant == 2) {
        in[0] = gm_sample_randn(c, GM_F64, 4301, 2, (int64_t[]){3, 4});
        if (rule == RULE_TOPK) p->k = 5;
        else p->a = rule == RULE_TOPP ? 1.5 : 1.0;
        *expect = GM_EARG;
    } else if (variant == 3) {
        in[0] = gm_sample_randn(c, GM_F64, 4302, 2, (int64_t[]){3, 4});
        if (rule == RULE_TOPK) p->k = 0;
        else p->a = -0.1;
        *expect = GM_EARG;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 1, in, n_in);
}

static gm_status topk_gate_bad(gm_ctx *c, int v, int *n, gm_tensor **in, gm_params *p, gm_status *e)
{
    return select_bad(c, RULE_TOPK, v, n, in, p, e);
}
static gm_status topp_gate_bad(gm_ctx *c, int v, int *n, gm_tensor **in, gm_params *p, gm_status *e)
{
    return select_bad(c, RULE_TOPP, v, n, in, p, e);
}
static gm_status threshold_gate_bad(gm_ctx *c, int v, int *n, gm_tensor **in, gm_params *p,
                                    gm_status *e)
{
    return select_bad(c, RULE_THRESHOLD, v, n, in, p, e);
}

extern const gm_oprules gm_rules_TOPK_GATE;
const gm_oprules gm_rules_TOPK_GATE = {topk_gate_fwd, select_bwd, topk_gate_sample, topk_gate_bad};
extern const gm_oprules gm_rules_TOPP_GATE;
const gm_oprules gm_rules_TOPP_GATE = {topp_gate_fwd, select_bwd, topp_gate_sample, topp_gate_bad};
extern const gm_oprules gm_rules_THRESHOLD_GATE;
const gm_oprules gm_rules_THRESHOLD_GATE = {threshold_gate_fwd, select_bwd, threshold_gate_sample,
                                            threshold_gate_bad};
