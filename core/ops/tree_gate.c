/* tree_gate.c: rules of the smooth-step tree-gate family: smooth_step (DSelect-k §3's cubic),
 * dselect_k (binary-encoded selectors + softmax over selectors), comet_gate (k soft trees, one
 * softmax over (tree, leaf) pairs) and log-space sinkhorn. The gates are fused: forward and
 * backward kernels recompute the smooth-steps and products per token (cheap: k * E * log E),
 * so nothing but the inputs is saved. Inputs are made contiguous here; kernels read them flat. */
#include "rules.h"
#include "sample.h"

#include <math.h>
#include <string.h>

static gm_status check_gamma(gm_ctx *c, const char *op, double g) {
    if (g > 0 && isfinite(g)) return GM_OK;
    return gm_errf(c, GM_EARG, "%s: gamma must be a finite number > 0, got %g", op, g);
}

/* ---- smooth_step ----------------------------------------------------------------------- */

static gm_status ss_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0];
    gm_status s = gm_check_float(c, "smooth_step", x);
    if (!s) s = check_gamma(c, "smooth_step", o->p->a);
    if (!s) s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &o->out[0]);
    if (s) return s;
    return gm_run(c, GM_K_SMOOTH_STEP, 1, &x, 1, &o->out[0], &(gm_kparams){.tree = {.gamma = o->p->a}});
}

static gm_status ss_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0];
    if (!n->needs[0]) return GM_OK;
    if (!gout[0]) return gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[0]);
    gm_status s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[0]);
    if (s) return s;
    gm_tensor *ins[2] = {x, gout[0]};
    return gm_run(c, GM_K_SMOOTH_STEP_BWD, 2, ins, 1, &gin[0], &(gm_kparams){.tree = {.gamma = n->p.a}});
}

static gm_status ss_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant == 0) { /* band [-1.5, 1.5]: most points inside, some saturated */
        in[0] = gm_sample_randn(c, GM_F64, 7000, 2, (int64_t[]){3, 4});
        p->a = 3;
    } else if (variant == 1) {
        in[0] = gm_sample_randn(c, GM_F64, 7001, 3, (int64_t[]){2, 3, 2});
        p->a = 5;
    } else {
        return GM_ENOTSUP;
    }
    p->has_a = true;
    return gm_sample_done(c, 1, in, n_in);
}

static gm_status ss_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                        gm_status *expect) {
    static const int32_t iv[] = {1, 2};
    gm_params_init(p);
    p->a = 1;
    if (variant == 0) { /* i32 input */
        in[0] = gm_sample_i32(c, 1, (int64_t[]){2}, iv);
        *expect = GM_EDTYPE;
    } else if (variant == 1 || variant == 2) { /* gamma 0 / negative */
        in[0] = gm_sample_randn(c, GM_F64, 7002, 1, (int64_t[]){3});
        p->a = variant == 1 ? 0 : -1;
        *expect = GM_EARG;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 1, in, n_in);
}

extern const gm_oprules gm_rules_SMOOTH_STEP;
const gm_oprules gm_rules_SMOOTH_STEP = {ss_fwd, ss_bwd, ss_sample, ss_bad};

/* ---- dselect_k ------------------------------------------------------------------------- */

/* ceil(log2 E) for E >= 1. */
static int64_t nbits(int64_t E) {
    int64_t m = 0;
    while (((int64_t)1 << m) < E) m++;
    return m;
}

/* z [..., k, m], w [..., k], E -> N (tokens), k, m. */
static gm_status ds_check(gm_ctx *c, gm_tensor *z, gm_tensor *w, const gm_params *p, int64_t *N,
                          int64_t *k, int64_t *m) {
    char b1[64], b2[64];
    gm_tensor *zw[2] = {z, w};
    gm_status s = gm_check_float(c, "dselect_k", z);
    if (!s) s = gm_check_same_dtype(c, "dselect_k", 2, zw);
    if (!s) s = check_gamma(c, "dselect_k", p->a);
    if (s) return s;
    if (p->n < 1 || p->n > (1 << 24))
        return gm_errf(c, GM_EARG, "dselect_k: experts must be in [1, 2^24], got %lld",
                       (long long)p->n);
    bool ok = z->ndim >= 2 && w->ndim == z->ndim - 1;
    for (int d = 0; ok && d < w->ndim; d++) ok = w->shape[d] == z->shape[d];
    if (!ok)
        return gm_errf(c, GM_ESHAPE, "dselect_k: z %s must be [..., k, m] and w %s [..., k]",
                       GM_SHAPE_STR(z, b1), GM_SHAPE_STR(w, b2));
    *m = nbits(p->n);
    if (z->shape[z->ndim - 1] != *m)
        return gm_errf(c, GM_ESHAPE, "dselect_k: z %s: last dim must be ceil(log2(experts=%lld)) = %lld",
                       GM_SHAPE_STR(z, b1), (long long)p->n, (long long)*m);
    *k = z->shape[z->ndim - 2];
    if (*k < 1)
        return gm_errf(c, GM_ESHAPE, "dselect_k: z %s: need k >= 1 selectors", GM_SHAPE_STR(z, b1));
    *N = gm_tensor_numel(w) / *k;
    return GM_OK;
}

/* The backward of dselect_k and comet_gate: kernel kid reads (input 0, input 1, the gradients
 * of both outputs, zeros for one that got none) and writes the gradients of both inputs. */
static gm_status tree_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin, int kid,
                          const gm_kparams *kp) {
    gm_tensor *in[4] = {NULL, NULL, NULL, NULL}, *out[2] = {NULL, NULL};
    gm_status s = gm_contig_all(c, 2, n->in, in);
    if (!s) s = gm_gout_or_zeros(c, n, gout, 0, true, &in[2]);
    if (!s) s = gm_gout_or_zeros(c, n, gout, 1, true, &in[3]);
    if (!s) s = gm_new_like(c, n->in[0], &out[0]);
    if (!s) s = gm_new_like(c, n->in[1], &out[1]);
    if (!s) s = gm_run(c, kid, 4, in, 2, out, kp);
    gm_release_all(4, in);
    gm_hand_grads(s, n, out, gin);
    return s;
}

static gm_status ds_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *z = o->in[0], *w = o->in[1], *in[2];
    int64_t N = 0, k = 0, m = 0, E = o->p->n, sh[GM_MAX_DIMS];
    gm_status s = ds_check(c, z, w, o->p, &N, &k, &m);
    if (s) return s;
    memcpy(sh, z->shape, sizeof(int64_t) * (size_t)z->ndim);
    sh[z->ndim - 2] = E; /* a: [..., E] */
    s = gm_tensor_new(c, z->dtype, gm_tensor_device(z), z->ndim - 1, sh, &o->out[0]);
    sh[z->ndim - 2] = k;
    sh[z->ndim - 1] = E; /* r: [..., k, E] */
    if (!s) s = gm_tensor_new(c, z->dtype, gm_tensor_device(z), z->ndim, sh, &o->out[1]);
    if (!s) s = gm_contig_all(c, 2, o->in, in);
    if (s) return s;
    gm_kparams kp = {.tree = {.n = N, .k = k, .m = m, .experts = E, .gamma = o->p->a}};
    s = gm_run(c, GM_K_DSELECT_K, 2, in, 2, o->out, &kp);
    gm_release_all(2, in);
    return s;
}

static gm_status ds_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    int64_t N = 0, k = 0, m = 0;
    gm_status s = ds_check(c, n->in[0], n->in[1], &n->p, &N, &k, &m);
    if (s) return s;
    gm_kparams kp = {.tree = {.n = N, .k = k, .m = m, .experts = n->p.n, .gamma = n->p.a}};
    return tree_bwd(c, n, gout, gin, GM_K_DSELECT_K_BWD, &kp);
}

static gm_status ds_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    p->a = 4, p->has_a = true;
    if (variant == 0) { /* E = 8 (power of two), T = 2, k = 2 */
        p->n = 8;
        in[0] = gm_sample_randn(c, GM_F64, 7100, 3, (int64_t[]){2, 2, 3});
        in[1] = gm_sample_randn(c, GM_F64, 7101, 2, (int64_t[]){2, 2});
    } else if (variant == 1) { /* E = 5, k = 1, T = 3 */
        p->n = 5;
        in[0] = gm_sample_randn(c, GM_F64, 7102, 3, (int64_t[]){3, 1, 3});
        in[1] = gm_sample_randn(c, GM_F64, 7103, 2, (int64_t[]){3, 1});
    } else if (variant == 2) { /* static gate: z [k, m], w [k], E = 6 */
        p->n = 6;
        in[0] = gm_sample_randn(c, GM_F64, 7104, 2, (int64_t[]){3, 3});
        in[1] = gm_sample_randn(c, GM_F64, 7105, 1, (int64_t[]){3});
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status ds_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                        gm_status *expect) {
    gm_params_init(p);
    p->a = 1, p->n = 8;
    if (variant > 4) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, variant == 0 ? GM_F32 : GM_F64, 7110, 3, (int64_t[]){2, 2, 3});
    in[1] = gm_sample_randn(c, GM_F64, 7111, 2, (int64_t[]){2, variant == 1 ? 3 : 2});
    *expect = variant == 0 ? GM_EDTYPE : variant <= 2 ? GM_ESHAPE : GM_EARG;
    if (variant == 2) p->n = 9;   /* needs m = 4 */
    if (variant == 3) p->a = 0;   /* gamma */
    if (variant == 4) p->n = 0;   /* experts */
    return gm_sample_done(c, 2, in, n_in);
}

extern const gm_oprules gm_rules_DSELECT_K;
const gm_oprules gm_rules_DSELECT_K = {ds_fwd, ds_bwd, ds_sample, ds_bad};

/* ---- comet_gate ------------------------------------------------------------------------ */

static gm_status cg_check(gm_ctx *c, gm_tensor *nd, gm_tensor *lf, const gm_params *p, int64_t *N,
                          int64_t *k, int64_t *E) {
    char b1[64], b2[64];
    gm_tensor *t2[2] = {nd, lf};
    gm_status s = gm_check_float(c, "comet_gate", nd);
    if (!s) s = gm_check_same_dtype(c, "comet_gate", 2, t2);
    if (!s) s = check_gamma(c, "comet_gate", p->a);
    if (s) return s;
    bool ok = nd->ndim >= 2 && lf->ndim == nd->ndim;
    for (int d = 0; ok && d < nd->ndim - 1; d++) ok = nd->shape[d] == lf->shape[d];
    if (ok) ok = lf->shape[lf->ndim - 1] >= 2 && nd->shape[nd->ndim - 1] == lf->shape[lf->ndim - 1] - 1 &&
                 nd->shape[nd->ndim - 2] >= 1;
    if (!ok)
        return gm_errf(c, GM_ESHAPE,
                       "comet_gate: nodes %s must be [..., k, E-1] and leaves %s [..., k, E] with E >= 2, k >= 1",
                       GM_SHAPE_STR(nd, b1), GM_SHAPE_STR(lf, b2));
    *E = lf->shape[lf->ndim - 1];
    *k = lf->shape[lf->ndim - 2];
    *N = gm_tensor_numel(lf) / (*k * *E);
    return GM_OK;
}

static gm_status cg_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *nd = o->in[0], *lf = o->in[1], *in[2];
    int64_t N = 0, k = 0, E = 0, sh[GM_MAX_DIMS];
    gm_status s = cg_check(c, nd, lf, o->p, &N, &k, &E);
    if (s) return s;
    memcpy(sh, lf->shape, sizeof(int64_t) * (size_t)lf->ndim);
    sh[lf->ndim - 2] = E; /* g: [..., E] */
    s = gm_tensor_new(c, lf->dtype, gm_tensor_device(lf), lf->ndim - 1, sh, &o->out[0]);
    if (!s) s = gm_tensor_new(c, lf->dtype, gm_tensor_device(lf), lf->ndim, lf->shape, &o->out[1]);
    if (!s) s = gm_contig_all(c, 2, o->in, in);
    if (s) return s;
    gm_kparams kp = {.tree = {.n = N, .k = k, .experts = E, .gamma = o->p->a}};
    s = gm_run(c, GM_K_COMET_GATE, 2, in, 2, o->out, &kp);
    gm_release_all(2, in);
    return s;
}

static gm_status cg_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    int64_t N = 0, k = 0, E = 0;
    gm_status s = cg_check(c, n->in[0], n->in[1], &n->p, &N, &k, &E);
    if (s) return s;
    gm_kparams kp = {.tree = {.n = N, .k = k, .experts = E, .gamma = n->p.a}};
    return tree_bwd(c, n, gout, gin, GM_K_COMET_GATE_BWD, &kp);
}

static gm_status cg_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    p->a = 4, p->has_a = true;
    if (variant == 0) { /* E = 4, k = 2, T = 2 */
        in[0] = gm_sample_randn(c, GM_F64, 7200, 3, (int64_t[]){2, 2, 3});
        in[1] = gm_sample_randn(c, GM_F64, 7201, 3, (int64_t[]){2, 2, 4});
    } else if (variant == 1) { /* E = 5 (leaves at two depths), k = 1, T = 3 */
        in[0] = gm_sample_randn(c, GM_F64, 7202, 3, (int64_t[]){3, 1, 4});
        in[1] = gm_sample_randn(c, GM_F64, 7203, 3, (int64_t[]){3, 1, 5});
    } else if (variant == 2) { /* static: [k, E-1], [k, E], E = 6 */
        in[0] = gm_sample_randn(c, GM_F64, 7204, 2, (int64_t[]){2, 5});
        in[1] = gm_sample_randn(c, GM_F64, 7205, 2, (int64_t[]){2, 6});
        p->a = 3;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status cg_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                        gm_status *expect) {
    gm_params_init(p);
    p->a = 1;
    if (variant > 3) return GM_ENOTSUP;
    in[0] = gm_sample_randn(c, variant == 0 ? GM_F32 : GM_F64, 7210, 3,
                            (int64_t[]){2, 2, variant == 1 ? 4 : 3});
    in[1] = gm_sample_randn(c, GM_F64, 7211, 3, (int64_t[]){variant == 2 ? 3 : 2, 2, 4});
    *expect = variant == 0 ? GM_EDTYPE : variant <= 2 ? GM_ESHAPE : GM_EARG;
    if (variant == 3) p->a = -2;
    return gm_sample_done(c, 2, in, n_in);
}

extern const gm_oprules gm_rules_COMET_GATE;
const gm_oprules gm_rules_COMET_GATE = {cg_fwd, cg_bwd, cg_sample, cg_bad};

/* ---- sinkhorn -------------------------------------------------------------------------- */

static gm_status sk_check(gm_ctx *c, gm_tensor *x, const gm_params *p, int64_t *B, int64_t *n) {
    char b1[64];
    gm_status s = gm_check_float(c, "sinkhorn", x);
    if (s) return s;
    if (x->ndim < 2 || x->shape[x->ndim - 1] != x->shape[x->ndim - 2])
        return gm_errf(c, GM_ESHAPE, "sinkhorn: x %s must be [..., n, n] (square)", GM_SHAPE_STR(x, b1));
    if (p->n < 1 || p->n > 100000)
        return gm_errf(c, GM_EARG, "sinkhorn: iters must be in [1, 100000], got %lld", (long long)p->n);
    *n = x->shape[x->ndim - 1];
    *B = *n ? gm_tensor_numel(x) / (*n * *n) : 0;
    return GM_OK;
}

static gm_status sk_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0], *xc = NULL;
    int64_t B = 0, n = 0;
    gm_status s = sk_check(c, x, o->p, &B, &n);
    if (!s) s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &o->out[0]);
    if (!s) s = gm_tensor_contiguous(c, x, &xc);
    if (s) return s;
    gm_kparams kp = {.tree = {.n = B, .size = n, .iters = o->p->n}};
    s = gm_run(c, GM_K_SINKHORN, 1, &xc, 1, &o->out[0], &kp);
    gm_tensor_release(xc);
    return s;
}

static gm_status sk_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0], *in[2] = {NULL, NULL};
    int64_t B = 0, nn = 0;
    if (!n->needs[0]) return GM_OK;
    gm_status s = sk_check(c, x, &n->p, &B, &nn);
    if (!s && !gout[0]) return gm_tensor_zeros(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[0]);
    if (!s) s = gm_contig_all(c, 1, n->in, in);
    if (!s) s = gm_tensor_contiguous(c, gout[0], &in[1]);
    if (!s) s = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, x->shape, &gin[0]);
    if (!s) {
        gm_kparams kp = {.tree = {.n = B, .size = nn, .iters = n->p.n}};
        s = gm_run(c, GM_K_SINKHORN_BWD, 2, in, 1, &gin[0], &kp);
    }
    gm_release_all(2, in);
    return s;
}

static gm_status sk_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    gm_params_init(p);
    if (variant == 0) {
        in[0] = gm_sample_randn(c, GM_F64, 7300, 2, (int64_t[]){3, 3});
        p->n = 5;
    } else if (variant == 1) { /* a batch of two 4x4 */
        in[0] = gm_sample_randn(c, GM_F64, 7301, 3, (int64_t[]){2, 4, 4});
        p->n = 3;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 1, in, n_in);
}

static gm_status sk_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                        gm_status *expect) {
    static const int32_t iv[] = {1, 2, 3, 4};
    gm_params_init(p);
    p->n = 3;
    if (variant == 0) { /* not square */
        in[0] = gm_sample_randn(c, GM_F64, 7310, 2, (int64_t[]){2, 3});
        *expect = GM_ESHAPE;
    } else if (variant == 1) {
        in[0] = gm_sample_i32(c, 2, (int64_t[]){2, 2}, iv);
        *expect = GM_EDTYPE;
    } else if (variant == 2) {
        in[0] = gm_sample_randn(c, GM_F64, 7311, 2, (int64_t[]){2, 2});
        p->n = 0;
        *expect = GM_EARG;
    } else {
        return GM_ENOTSUP;
    }
    return gm_sample_done(c, 1, in, n_in);
}

extern const gm_oprules gm_rules_SINKHORN;
const gm_oprules gm_rules_SINKHORN = {sk_fwd, sk_bwd, sk_sample, sk_bad};
