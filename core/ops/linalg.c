/* linalg.c: rules of matmul with torch.matmul semantics. 1-D operands are promoted ([K] ->
 * [1, K] on the left, [K, 1] on the right) and the added dim is dropped from the result;
 * leading (batch) dims broadcast. The kernel (kernels/cpu/linalg.c) gets [batch..., M, K] @
 * [batch..., K, N] views with broadcast batch dims as stride 0, so contiguous and transposed
 * operands reach BLAS without a copy. */
#include <limits.h>

#include "internal.h"
#include "sample.h"

/* Same test as the CPU kernel: can BLAS read this rows x cols matrix as it is (row-major, or
 * the transpose of a row-major one)? Size-1 dims take any stride. */
static bool blas_ok(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
    int64_t minr = cols > 1 ? cols : 1, minc = rows > 1 ? rows : 1;
    if (cs == 1 || cols <= 1) {
        int64_t l = rows <= 1 ? minr : rs;
        if (l >= minr && l <= INT_MAX) return true;
    }
    if (rs == 1 || rows <= 1) {
        int64_t l = cols <= 1 ? minc : cs;
        if (l >= minc && l <= INT_MAX) return true;
    }
    return false;
}

/* A 2-D-or-more description of an operand after 1-D promotion. */
typedef struct {
    int nd;
    int64_t shape[GM_MAX_DIMS], stride[GM_MAX_DIMS];
} mm_operand;

static void promote(const gm_tensor *x, bool left, mm_operand *m) {
    if (x->ndim == 1) {
        m->nd = 2;
        m->shape[left ? 0 : 1] = 1;
        m->stride[left ? 0 : 1] = 0;
        m->shape[left ? 1 : 0] = x->shape[0];
        m->stride[left ? 1 : 0] = x->stride[0];
        return;
    }
    m->nd = x->ndim;
    for (int i = 0; i < x->ndim; i++) {
        m->shape[i] = x->shape[i];
        m->stride[i] = x->stride[i];
    }
}

/* The kernel's view of an operand: batch dims of the output's batch shape (stride 0 where
 * the operand broadcasts) followed by its last two dims. */
static gm_status batch_view(gm_ctx *c, const gm_tensor *x, const mm_operand *m, int nb,
                            const int64_t *bshape, gm_tensor **out) {
    int64_t shape[GM_MAX_DIMS], stride[GM_MAX_DIMS];
    int mb = m->nd - 2;
    for (int i = 0; i < nb; i++) {
        int j = mb - nb + i;
        shape[i] = bshape[i];
        stride[i] = j >= 0 && m->shape[j] == bshape[i] ? m->stride[j] : 0;
    }
    for (int i = 0; i < 2; i++) {
        shape[nb + i] = m->shape[m->nd - 2 + i];
        stride[nb + i] = m->stride[m->nd - 2 + i];
    }
    return gm_tensor_view(c, x, nb + 2, shape, stride, x->offset, out);
}

static gm_status matmul_fwd(gm_ctx *c, gm_opcall *o) {
    gm_tensor *x = o->in[0], *y = o->in[1], *xc = NULL, *yc = NULL, *v[2] = {NULL, NULL}, *cv = NULL;
    char s1[64], s2[64];
    gm_status st;
    if (x->ndim == 0 || y->ndim == 0)
        return gm_errf(c, GM_ESHAPE, "matmul: %s @ %s: both operands need at least 1 dim (use mul for scalars)",
                       GM_SHAPE_STR(x, s1), GM_SHAPE_STR(y, s2));
    if ((st = gm_check_same_dtype(c, "matmul", 2, o->in)) != GM_OK) return st;
    if ((st = gm_check_float(c, "matmul", x)) != GM_OK) return st;
    mm_operand a, b;
    promote(x, true, &a);
    promote(y, false, &b);
    int64_t M = a.shape[a.nd - 2], K = a.shape[a.nd - 1], N = b.shape[b.nd - 1];
    if (b.shape[b.nd - 2] != K)
        return gm_errf(c, GM_ESHAPE, "matmul: %s @ %s: inner dims %lld and %lld differ", GM_SHAPE_STR(x, s1),
                       GM_SHAPE_STR(y, s2), (long long)K, (long long)b.shape[b.nd - 2]);
    int na = a.nd - 2, nbb = b.nd - 2, nb = na > nbb ? na : nbb;
    int64_t bshape[GM_MAX_DIMS], oshape[GM_MAX_DIMS];
    for (int i = 0; i < nb; i++) {
        int ia = na - nb + i, ib = nbb - nb + i;
        int64_t da = ia >= 0 ? a.shape[ia] : 1, db = ib >= 0 ? b.shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char s3[64], s4[64];
            return gm_errf(c, GM_ESHAPE, "matmul: %s @ %s: batch dims %s and %s do not broadcast",
                           GM_SHAPE_STR(x, s1), GM_SHAPE_STR(y, s2), gm_shape_str(na, a.shape, s3, sizeof s3),
                           gm_shape_str(nbb, b.shape, s4, sizeof s4));
        }
        bshape[i] = da == 1 ? db : da;
    }
    /* Operands BLAS cannot read as they are (e.g. a narrowed inner dim) get a contiguous copy. */
    if (!blas_ok(M, K, a.stride[a.nd - 2], a.stride[a.nd - 1])) {
        if ((st = gm_tensor_contiguous(c, x, &xc)) != GM_OK) goto out;
        promote(xc, true, &a);
    }
    if (!blas_ok(K, N, b.stride[b.nd - 2], b.stride[b.nd - 1])) {
        if ((st = gm_tensor_contiguous(c, y, &yc)) != GM_OK) goto out;
        promote(yc, false, &b);
    }
    int ond = 0;
    for (int i = 0; i < nb; i++) oshape[ond++] = bshape[i];
    if (x->ndim > 1) oshape[ond++] = M;
    if (y->ndim > 1) oshape[ond++] = N;
    if ((st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), ond, oshape, &o->out[0])) != GM_OK) goto out;
    int64_t cshape[GM_MAX_DIMS], cstride[GM_MAX_DIMS];
    for (int i = 0; i < nb; i++) cshape[i] = bshape[i];
    cshape[nb] = M;
    cshape[nb + 1] = N;
    gm_contiguous_strides(nb + 2, cshape, cstride);
    if ((st = batch_view(c, xc ? xc : x, &a, nb, bshape, &v[0])) != GM_OK) goto out;
    if ((st = batch_view(c, yc ? yc : y, &b, nb, bshape, &v[1])) != GM_OK) goto out;
    if ((st = gm_tensor_view(c, o->out[0], nb + 2, cshape, cstride, o->out[0]->offset, &cv)) != GM_OK) goto out;
    st = gm_run(c, GM_K_MATMUL, 2, v, 1, &cv, NULL);
out:
    gm_tensor_release(xc);
    gm_tensor_release(yc);
    gm_tensor_release(v[0]);
    gm_tensor_release(v[1]);
    gm_tensor_release(cv);
    return st;
}

/* x as a matrix operand: 1-D x becomes [1, K] (left) or [K, 1] (right). */
static gm_status as_matrix(gm_ctx *c, gm_tensor *x, bool left, gm_tensor **out) {
    if (x->ndim > 1) {
        *out = gm_tensor_retain(x);
        return GM_OK;
    }
    int64_t shape[2] = {left ? 1 : x->shape[0], left ? x->shape[0] : 1};
    return gm_reshape(c, x, 2, shape, out);
}

/* A gradient [batch..., M, K] (or [batch..., K, N]) of a promoted operand back to the
 * operand: drop the promoted size-1 dim (at -2 for the left operand, -1 for the right), then
 * sum over broadcast batch dims. */
static gm_status to_operand(gm_ctx *c, gm_tensor *g, const gm_tensor *x, bool left, gm_tensor **out) {
    gm_tensor *r = NULL;
    gm_status st;
    if (x->ndim == 1) {
        int64_t shape[GM_MAX_DIMS];
        int nd = 0;
        for (int i = 0; i < g->ndim; i++)
            if (i != g->ndim - (left ? 2 : 1)) shape[nd++] = g->shape[i];
        if ((st = gm_reshape(c, g, nd, shape, &r)) != GM_OK) return st;
    } else {
        r = gm_tensor_retain(g);
    }
    st = gm_sum_to_shape(c, r, x->ndim, x->shape, out);
    gm_tensor_release(r);
    return st;
}

/* C = A @ B: dA = dC @ B^T, dB = A^T @ dC, each reduced over its broadcast batch dims. */
/* dW for a 2-D right operand W [K, N] (a layer's weight): the rows of every batch entry of
 * a [..., M, K] and g [..., M, N] flattened into one gemm, dW = a2^T g2. When W is itself a
 * transposed view (x @ w:t() with w [N, K] contiguous, as in Linear), the product is formed as
 * (g2^T a2)^T, so the gradient reaching w is contiguous and needs no transposing copy. */
static gm_status weight_grad(gm_ctx *c, gm_tensor *a, gm_tensor *g, const gm_tensor *w, gm_tensor **out) {
    int64_t K = a->shape[a->ndim - 1], N = g->shape[g->ndim - 1];
    int64_t rows = K ? gm_tensor_numel(a) / K : 0;
    int64_t sa[2] = {rows, K}, sg[2] = {rows, N};
    gm_tensor *a2 = NULL, *g2 = NULL, *t = NULL, *p = NULL;
    bool colmajor = w->shape[0] > 1 && w->shape[1] > 1 && w->stride[0] == 1 && w->stride[1] == w->shape[0];
    gm_status st;
    if ((st = gm_reshape(c, a, 2, sa, &a2)) != GM_OK || (st = gm_reshape(c, g, 2, sg, &g2)) != GM_OK) goto out;
    if (colmajor) {
        if ((st = gm_transpose(c, g2, 0, 1, &t)) != GM_OK || (st = gm_matmul(c, t, a2, &p)) != GM_OK) goto out;
        st = gm_transpose(c, p, 0, 1, out);
    } else {
        if ((st = gm_transpose(c, a2, 0, 1, &t)) != GM_OK) goto out;
        st = gm_matmul(c, t, g2, out);
    }
out:
    gm_tensor_release(a2);
    gm_tensor_release(g2);
    gm_tensor_release(t);
    gm_tensor_release(p);
    return st;
}

static gm_status matmul_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0], *y = n->in[1], *a = NULL, *b = NULL, *g = NULL, *t = NULL, *p = NULL;
    gm_status st = GM_OK;
    if (!gout[0]) {
        for (int j = 0; j < 2; j++)
            if (n->needs[j] && (st = gm_tensor_zeros(c, n->in[j]->dtype, gm_tensor_device(n->in[j]),
                                                     n->in[j]->ndim, n->in[j]->shape, &gin[j])) != GM_OK)
                return st;
        return GM_OK;
    }
    if ((st = as_matrix(c, x, true, &a)) != GM_OK) goto out;
    if ((st = as_matrix(c, y, false, &b)) != GM_OK) goto out;
    /* dC with the promoted dims restored: [batch..., M, N]. */
    gm_tensor *go = gout[0];
    int64_t gshape[GM_MAX_DIMS];
    int nb = go->ndim - (x->ndim > 1) - (y->ndim > 1), gnd = 0;
    for (int i = 0; i < nb; i++) gshape[gnd++] = go->shape[i];
    gshape[gnd++] = a->shape[a->ndim - 2];
    gshape[gnd++] = b->shape[b->ndim - 1];
    if ((st = gm_reshape(c, go, gnd, gshape, &g)) != GM_OK) goto out;
    if (n->needs[0]) {
        if ((st = gm_transpose(c, b, b->ndim - 2, b->ndim - 1, &t)) != GM_OK) goto out;
        if ((st = gm_matmul(c, g, t, &p)) != GM_OK) goto out;
        if ((st = to_operand(c, p, x, true, &gin[0])) != GM_OK) goto out;
        gm_tensor_release(t);
        gm_tensor_release(p);
        t = p = NULL;
    }
    if (n->needs[1] && y->ndim == 2) {
        st = weight_grad(c, a, g, y, &gin[1]);
    } else if (n->needs[1]) {
        if ((st = gm_transpose(c, a, a->ndim - 2, a->ndim - 1, &t)) != GM_OK) goto out;
        if ((st = gm_matmul(c, t, g, &p)) != GM_OK) goto out;
        st = to_operand(c, p, y, false, &gin[1]);
    }
out:
    gm_tensor_release(a);
    gm_tensor_release(b);
    gm_tensor_release(g);
    gm_tensor_release(t);
    gm_tensor_release(p);
    return st;
}

/* Pairs of shapes: {ndim_a, shape_a..., ndim_b, shape_b...}; f64 normal samples. */
static gm_status pair(gm_ctx *c, int variant, const int *s, gm_tensor **in, int *n_in) {
    int64_t sa[GM_MAX_DIMS], sb[GM_MAX_DIMS];
    int na = s[0], nb = s[1 + na];
    for (int i = 0; i < na; i++) sa[i] = s[1 + i];
    for (int i = 0; i < nb; i++) sb[i] = s[2 + na + i];
    in[0] = gm_sample_randn(c, GM_F64, 1000 + (uint64_t)variant, na, sa);
    in[1] = gm_sample_randn(c, GM_F64, 2000 + (uint64_t)variant, nb, sb);
    return gm_sample_done(c, 2, in, n_in);
}

static gm_status matmul_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    static const int shapes[][10] = {
        {2, 3, 4, 2, 4, 2},          /* [3,4] @ [4,2] */
        {4, 2, 1, 2, 3, 3, 3, 3, 2}, /* [2,1,2,3] @ [3,3,2]: broadcast batch */
        {1, 3, 2, 3, 2},             /* [3] @ [3,2] */
        {2, 2, 3, 1, 3},             /* [2,3] @ [3] */
        {1, 4, 1, 4},                /* [4] @ [4]: dot */
        {3, 2, 2, 3, 1, 3},          /* [2,2,3] @ [3] */
        {1, 3, 3, 2, 3, 2},          /* [3] @ [2,3,2] */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof shapes / sizeof shapes[0])) return GM_ENOTSUP;
    *n_in = 2;
    return pair(c, variant, shapes[variant], in, n_in);
}

static gm_status matmul_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p,
                            gm_status *expect) {
    static const int shapes[][10] = {
        {2, 4, 8, 2, 7, 3},       /* inner dims differ */
        {3, 2, 3, 4, 3, 3, 4, 2}, /* batch dims 2 and 3 */
        {0, 1, 3},                /* 0-dim operand */
        {1, 3, 1, 4},             /* dot of different lengths */
    };
    static const int64_t s34[] = {3, 4}, s42[] = {4, 2};
    gm_params_init(p);
    *n_in = 2;
    gm_status st;
    if (variant < 4) {
        *expect = GM_ESHAPE;
        return pair(c, variant, shapes[variant], in, n_in);
    }
    switch (variant) {
    case 4: /* f64 @ f32 */
    case 5: /* i32 @ i32 */
        *expect = GM_EDTYPE;
        if ((st = gm_tensor_zeros(c, variant == 4 ? GM_F64 : GM_I32, GM_CPU, 2, s34, &in[0])) != GM_OK) return st;
        if ((st = gm_tensor_zeros(c, variant == 4 ? GM_F32 : GM_I32, GM_CPU, 2, s42, &in[1])) != GM_OK) {
            gm_tensor_release(in[0]);
            in[0] = NULL;
        }
        return st;
    default: return GM_ENOTSUP;
    }
}

/* ---- linear: x [..., K] @ w[N, K]^T + b[N] -------------------------------------------- */

static gm_status linear_check(gm_ctx *c, gm_tensor **in) {
    char b1[64], b2[64], b3[64];
    gm_status st = gm_check_same_dtype(c, "linear", 3, in);
    if (st == GM_OK) st = gm_check_float(c, "linear", in[0]);
    if (st != GM_OK) return st;
    gm_tensor *x = in[0], *w = in[1], *b = in[2];
    if (x->ndim < 1 || w->ndim != 2 || b->ndim != 1 || x->shape[x->ndim - 1] != w->shape[1] ||
        b->shape[0] != w->shape[0])
        return gm_errf(c, GM_ESHAPE, "linear: input %s, weight %s and bias %s do not fit: want x [..., in], "
                       "weight [out, in], bias [out]", GM_SHAPE_STR(x, b1), GM_SHAPE_STR(w, b2), GM_SHAPE_STR(b, b3));
    return GM_OK;
}

/* Rows of x [..., K]: the product of its leading dims (also when K = 0). */
static int64_t linear_nrows(const gm_tensor *x) {
    int64_t m = 1;
    for (int i = 0; i < x->ndim - 1; i++) m *= x->shape[i];
    return m;
}

/* x as rows [M, K] BLAS can read (unit column stride), a view when possible. */
static gm_status linear_rows(gm_ctx *c, gm_tensor *x, gm_tensor **out) {
    int64_t K = x->shape[x->ndim - 1], shape[2] = {linear_nrows(x), K};
    gm_tensor *r = NULL;
    gm_status st = gm_reshape(c, x, 2, shape, &r);
    if (st != GM_OK) return st;
    if (blas_ok(shape[0], K, r->stride[0], r->stride[1]) && (r->stride[1] == 1 || K <= 1)) {
        *out = r;
        return GM_OK;
    }
    st = gm_tensor_contiguous(c, r, out);
    gm_tensor_release(r);
    return st;
}

static gm_status linear_fwd(gm_ctx *c, gm_opcall *o) {
    gm_status st = linear_check(c, o->in);
    if (st != GM_OK) return st;
    gm_tensor *x = o->in[0], *v[3] = {NULL, NULL, NULL}, *y2 = NULL;
    int64_t shape[GM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = o->in[1]->shape[0];
    if ((st = linear_rows(c, x, &v[0])) == GM_OK && (st = gm_tensor_contiguous(c, o->in[1], &v[1])) == GM_OK &&
        (st = gm_tensor_contiguous(c, o->in[2], &v[2])) == GM_OK &&
        (st = gm_tensor_new(c, x->dtype, gm_tensor_device(x), x->ndim, shape, &o->out[0])) == GM_OK) {
        int64_t s2[2] = {v[0]->shape[0], shape[x->ndim - 1]};
        if ((st = gm_reshape(c, o->out[0], 2, s2, &y2)) == GM_OK) st = gm_run(c, GM_K_LINEAR, 3, v, 1, &y2, NULL);
    }
    for (int i = 0; i < 3; i++) gm_tensor_release(v[i]);
    gm_tensor_release(y2);
    return st;
}

static gm_status linear_bwd(gm_ctx *c, gm_node *n, gm_tensor **gout, gm_tensor **gin) {
    gm_tensor *x = n->in[0], *w = n->in[1], *g2 = NULL, *x2 = NULL, *t = NULL, *p = NULL;
    gm_status st = GM_OK;
    if (!gout[0]) {
        for (int j = 0; j < 3 && st == GM_OK; j++)
            if (n->needs[j])
                st = gm_tensor_zeros(c, n->in[j]->dtype, gm_tensor_device(n->in[j]), n->in[j]->ndim, n->in[j]->shape,
                                     &gin[j]);
        return st;
    }
    int64_t N = w->shape[0], gs[2] = {linear_nrows(x), N};
    if ((st = gm_reshape(c, gout[0], 2, gs, &g2)) != GM_OK) goto out;
    if (n->needs[0]) { /* dx = g w, back to x's shape */
        if ((st = gm_matmul(c, g2, w, &p)) != GM_OK || (st = gm_reshape(c, p, x->ndim, x->shape, &gin[0])) != GM_OK)
            goto out;
    }
    if (n->needs[1]) { /* dw = g^T x over all rows: [N, K], contiguous */
        if ((st = linear_rows(c, x, &x2)) != GM_OK || (st = gm_transpose(c, g2, 0, 1, &t)) != GM_OK ||
            (st = gm_matmul(c, t, x2, &gin[1])) != GM_OK)
            goto out;
    }
    if (n->needs[2]) st = gm_sum_to_shape(c, g2, 1, &N, &gin[2]);
out:
    gm_tensor_release(g2);
    gm_tensor_release(x2);
    gm_tensor_release(t);
    gm_tensor_release(p);
    return st;
}

static gm_status linear_sample(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p) {
    static const struct { int nd; int64_t x[3]; int64_t out; } s[] = {
        {2, {3, 4}, 2},    /* rows */
        {3, {2, 3, 4}, 5}, /* leading dims flattened */
        {1, {4}, 3},       /* one vector */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    int64_t K = s[variant].x[s[variant].nd - 1], ws[2] = {s[variant].out, K};
    in[0] = gm_sample_randn(c, GM_F64, 1100 + (uint64_t)variant, s[variant].nd, s[variant].x);
    in[1] = gm_sample_randn(c, GM_F64, 1200 + (uint64_t)variant, 2, ws);
    in[2] = gm_sample_randn(c, GM_F64, 1300 + (uint64_t)variant, 1, &ws[0]);
    return gm_sample_done(c, 3, in, n_in);
}

static gm_status linear_bad(gm_ctx *c, int variant, int *n_in, gm_tensor **in, gm_params *p, gm_status *expect) {
    static const struct { int64_t x[2], w[2], b; int wnd; gm_dtype tx, tb; gm_status st; } s[] = {
        {{3, 4}, {2, 5}, 2, 2, GM_F64, GM_F64, GM_ESHAPE}, /* in features differ */
        {{3, 4}, {2, 4}, 3, 2, GM_F64, GM_F64, GM_ESHAPE}, /* bias size */
        {{3, 4}, {4, 1}, 4, 1, GM_F64, GM_F64, GM_ESHAPE}, /* 1-D weight */
        {{3, 4}, {2, 4}, 2, 2, GM_F64, GM_F32, GM_EDTYPE}, /* mixed dtypes */
        {{3, 4}, {2, 4}, 2, 2, GM_I32, GM_I32, GM_EDTYPE}, /* integers */
    };
    gm_params_init(p);
    if (variant < 0 || variant >= (int)(sizeof s / sizeof s[0])) return GM_ENOTSUP;
    *expect = s[variant].st;
    in[0] = in[1] = in[2] = NULL;
    gm_tensor_zeros(c, s[variant].tx, GM_CPU, 2, s[variant].x, &in[0]);
    gm_tensor_zeros(c, s[variant].tx, GM_CPU, s[variant].wnd, s[variant].w, &in[1]);
    gm_tensor_zeros(c, s[variant].tb, GM_CPU, 1, &s[variant].b, &in[2]);
    return gm_sample_done(c, 3, in, n_in);
}

extern const gm_oprules gm_rules_LINEAR;
const gm_oprules gm_rules_LINEAR = {linear_fwd, linear_bwd, linear_sample, linear_bad};

extern const gm_oprules gm_rules_MATMUL;
const gm_oprules gm_rules_MATMUL = {matmul_fwd, matmul_bwd, matmul_sample, matmul_bad};
