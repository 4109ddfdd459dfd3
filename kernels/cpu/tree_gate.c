/* tree_gate.c (cpu): kernels of the smooth-step tree gates: the smooth-step itself, DSelect-k's
 * binary-encoded selectors, COMET's soft trees with one softmax over (tree, leaf) pairs, and
 * log-space Sinkhorn. Rows (tokens / matrices) are independent and run in parallel; each row
 * is computed in double with scratch per range of rows, so results do not depend on the thread count. */
#include "backend.h"
#include "parallel.h"
#include "vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

/* The cubic smooth-step of DSelect-k §3 and its derivative (0 outside the band). */
static inline double ss(double x, double g) {
    if (x <= -g / 2) return 0;
    if (x >= g / 2) return 1;
    return -2 * x * x * x / (g * g * g) + 3 * x / (2 * g) + 0.5;
}
static inline double dss(double x, double g) {
    if (x <= -g / 2 || x >= g / 2) return 0;
    return -6 * x * x / (g * g * g) + 3 / (2 * g);
}

static inline double ld(const gm_kview *v, int64_t i) { return gm_elem_load(v->data, v->dtype, i); }
static inline void st(const gm_kview *v, int64_t i, double x) { gm_elem_store(v->data, v->dtype, i, x); }

/* Rows (tokens) of a tree-gate kernel split over the threads: fn computes row n with a scratch
 * of `scratch` doubles (one per range of rows). */
typedef void (*row_fn)(const gm_kargs *a, int64_t n, double *scratch);

typedef struct {
    const gm_kargs *a;
    row_fn fn;
    int64_t scratch;
    int bad, stop;
} rows_job;

static void rows_range(void *ctx, int64_t lo, int64_t hi) {
    rows_job *j = ctx;
    double *s = malloc(sizeof(double) * (size_t)j->scratch);
    if (!s) {
        __atomic_store_n(&j->bad, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t n = lo; n < hi; n++) {
        if (((n - lo) & 1023) == 0 && gm_halted(&j->stop)) break;
        j->fn(j->a, n, s);
    }
    free(s);
}

/* Run fn over rows [0, N) of per_row elements each; op names the kernel in errors. */
static gm_status run_rows(gm_ctx *c, const char *op, const gm_kargs *a, int64_t N, int64_t per_row,
                          int64_t scratch, row_fn fn) {
    rows_job j = {a, fn, scratch, 0, 0};
    gm_parallel_for(N, gm_min_units(per_row), a->nthreads, rows_range, &j);
    if (j.bad) return gm_errf(c, GM_ENOMEM, "%s: out of memory for scratch", op);
    return j.stop ? GM_EINTR : GM_OK;
}

/* ---- smooth_step: elementwise, any strides in, contiguous out ---------------------------- */

gm_status gm_cpu_SMOOTH_STEP(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    const gm_kview *x = &a->in[0], *y = &a->out[0];
    int64_t n = gm_kview_numel(x);
    double g = a->d[0];
    bool cx = gm_kview_contiguous(x);
    for (int64_t i0 = 0; i0 < n; i0 += 65536) {
        if (gm_interrupted()) return GM_EINTR;
        int64_t i1 = i0 + 65536 < n ? i0 + 65536 : n;
        if (x->dtype == GM_F32 && cx) {
            const float *xp = x->data;
            float *yp = y->data;
            for (int64_t i = i0; i < i1; i++) yp[i] = (float)ss(xp[i], g);
        } else if (x->dtype == GM_F64 && cx) {
            const double *xp = x->data;
            double *yp = y->data;
            for (int64_t i = i0; i < i1; i++) yp[i] = ss(xp[i], g);
        } else {
            for (int64_t i = i0; i < i1; i++) st(y, i, ss(ld(x, gm_kview_offset(x, i)), g));
        }
    }
    return GM_OK;
}

gm_status gm_cpu_SMOOTH_STEP_BWD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    const gm_kview *x = &a->in[0], *gy = &a->in[1], *gx = &a->out[0];
    int64_t n = gm_kview_numel(x);
    double g = a->d[0];
    for (int64_t i0 = 0; i0 < n; i0 += 65536) {
        if (gm_interrupted()) return GM_EINTR;
        int64_t i1 = i0 + 65536 < n ? i0 + 65536 : n;
        for (int64_t i = i0; i < i1; i++)
            st(gx, i, ld(gy, gm_kview_offset(gy, i)) * dss(ld(x, gm_kview_offset(x, i)), g));
    }
    return GM_OK;
}

/* ---- DSelect-k: z [N,k,m], w [N,k] -> a [N,E], r [N,k,E] --------------------------------- */

/* Softmax of w[0..k-1] (row n of the view) into al. */
static void softmax_row(const gm_kview *w, int64_t off, int64_t k, double *al) {
    double mx = -INFINITY, s = 0;
    for (int64_t j = 0; j < k; j++) {
        al[j] = ld(w, off + j);
        if (al[j] > mx) mx = al[j];
    }
    for (int64_t j = 0; j < k; j++) s += al[j] = exp(al[j] - mx);
    for (int64_t j = 0; j < k; j++) al[j] /= s;
}

static void dselect_row(const gm_kargs *a, int64_t n, double *al) {
    int64_t k = a->i[1], m = a->i[2], E = a->i[3];
    double g = a->d[0];
    const gm_kview *z = &a->in[0], *w = &a->in[1], *A = &a->out[0], *R = &a->out[1];
    double *S = al + k, *acc = al + k + m;
    softmax_row(w, n * k, k, al);
    for (int64_t e = 0; e < E; e++) acc[e] = 0;
    for (int64_t s = 0; s < k; s++) {
        for (int64_t j = 0; j < m; j++) S[j] = ss(ld(z, (n * k + s) * m + j), g);
        for (int64_t e = 0; e < E; e++) {
            double r = 1;
            for (int64_t j = 0; j < m; j++) r *= (e >> j) & 1 ? S[j] : 1 - S[j];
            st(R, (n * k + s) * E + e, r);
            acc[e] += al[s] * r;
        }
    }
    for (int64_t e = 0; e < E; e++) st(A, n * E + e, acc[e]);
}

gm_status gm_cpu_DSELECT_K(gm_ctx *c, const gm_kargs *a) {
    int64_t N = a->i[0], k = a->i[1], m = a->i[2], E = a->i[3];
    return run_rows(c, "dselect_k", a, N, k * E, k + m + E + 1, dselect_row);
}

/* d a_e / d alpha_s = r_se; d r_se / d S_j = sign * prod_{l != j} factor_l; the total gradient of
 * r_se is gr_se + alpha_s ga_e. */
static void dselect_bwd_row(const gm_kargs *a, int64_t n, double *al) {
    int64_t k = a->i[1], m = a->i[2], E = a->i[3];
    double g = a->d[0];
    const gm_kview *z = &a->in[0], *w = &a->in[1], *ga = &a->in[2], *gr = &a->in[3];
    const gm_kview *gz = &a->out[0], *gw = &a->out[1];
    double *gal = al + k, *S = al + 2 * k, *gS = S + m;
    softmax_row(w, n * k, k, al);
    double dot = 0;
    for (int64_t s = 0; s < k; s++) {
        for (int64_t j = 0; j < m; j++) {
            S[j] = ss(ld(z, (n * k + s) * m + j), g);
            gS[j] = 0;
        }
        gal[s] = 0;
        for (int64_t e = 0; e < E; e++) {
            double gae = ld(ga, n * E + e), G = ld(gr, (n * k + s) * E + e) + al[s] * gae;
            double r = 1;
            for (int64_t j = 0; j < m; j++) r *= (e >> j) & 1 ? S[j] : 1 - S[j];
            gal[s] += gae * r;
            for (int64_t j = 0; j < m; j++) {
                double p = 1;
                for (int64_t l = 0; l < m; l++)
                    if (l != j) p *= (e >> l) & 1 ? S[l] : 1 - S[l];
                gS[j] += (e >> j) & 1 ? G * p : -G * p;
            }
        }
        for (int64_t j = 0; j < m; j++) {
            int64_t o = (n * k + s) * m + j;
            st(gz, o, gS[j] * dss(ld(z, o), g));
        }
        dot += al[s] * gal[s];
    }
    for (int64_t s = 0; s < k; s++) st(gw, n * k + s, al[s] * (gal[s] - dot));
}

gm_status gm_cpu_DSELECT_K_BWD(gm_ctx *c, const gm_kargs *a) {
    int64_t N = a->i[0], k = a->i[1], m = a->i[2], E = a->i[3];
    return run_rows(c, "dselect_k", a, N, k * E, 2 * k + 2 * m + 1, dselect_bwd_row);
}

/* ---- COMET: nodes [N,k,E-1], leaves [N,k,E] -> g [N,E], mu [N,k,E] ------------------------ */

/* The tree is a heap of 2E-1 nodes: internal nodes 0..E-2 (children 2v+1 left, 2v+2 right) and
 * leaf l = heap node E-1+l. Reach probabilities are filled top-down and gradients gathered
 * bottom-up, O(E) per tree, so children always have larger indices than their parent. */

/* The smooth-step with the divisions by gamma hoisted out of the row loops: sc = {g/2, -2/g^3,
 * 3/(2g)}; selects rather than branches, as node logits often sit near the band. */
static inline void ss_consts(double g, double sc[3]) {
    sc[0] = g / 2, sc[1] = -2 / (g * g * g), sc[2] = 3 / (2 * g);
}
static inline double ss_c(double x, const double sc[3]) {
    double y = (sc[1] * x * x + sc[2]) * x + 0.5;
    y = x >= sc[0] ? 1 : y;
    return x <= -sc[0] ? 0 : y;
}
static inline double dss_c(double x, const double sc[3]) {
    double y = 3 * sc[1] * x * x + sc[2];
    return x <= -sc[0] || x >= sc[0] ? 0 : y;
}

/* n elements of a contiguous f32 or f64 view from element off, as doubles. */
static void load_row(double *dst, const gm_kview *v, int64_t off, int64_t n) {
    if (v->dtype == GM_F32) {
        const float *s = (const float *)v->data + off;
        for (int64_t i = 0; i < n; i++) dst[i] = s[i];
    } else {
        memcpy(dst, (const double *)v->data + off, sizeof(double) * (size_t)n);
    }
}

static void store_row(const gm_kview *v, int64_t off, const double *src, int64_t n) {
    if (v->dtype == GM_F32) {
        float *d = (float *)v->data + off;
        for (int64_t i = 0; i < n; i++) d[i] = (float)src[i];
    } else {
        memcpy((double *)v->data + off, src, sizeof(double) * (size_t)n);
    }
}

/* Scratch of one token: x [k*V] node logits, p [k*V] smooth-steps, R [k*H] reach of every heap
 * node (mu = the leaf part), a [k*E] leaf scores, e [k*E] exp(a - ma), D [H] the bottom-up sums
 * of the backward, o [k*E] outputs; the backward adds gl [E] and gm [k*E], the incoming
 * gradients. */
typedef struct comet_scratch {
    double *x, *p, *R, *a, *e, *D, *o, *gl, *gm;
} comet_scratch;

static int64_t comet_scratch_len(int64_t k, int64_t E, bool bwd) {
    int64_t V = E - 1, H = 2 * E - 1;
    return 2 * k * V + k * H + 3 * k * E + H + (bwd ? E + k * E : 0) + 1;
}

static void comet_layout(comet_scratch *w, double *m, int64_t k, int64_t E) {
    int64_t V = E - 1, H = 2 * E - 1;
    w->x = m, w->p = m + k * V, w->R = w->p + k * V, w->a = w->R + k * H, w->e = w->a + k * E;
    w->D = w->e + k * E, w->o = w->D + H, w->gl = w->o + k * E, w->gm = w->gl + E;
}

/* One token: x, p, R and a; e = exp(a - ma) (ma the largest score of a reachable leaf; capped
 * for unreachable ones, whose gradient the backward still needs, at e^700, or e^80 in f32);
 * returns S = sum of mu e over reachable pairs, so the softmax is q = mu e / S. For f32 tensors
 * the exponentials run through 8-lane expf (every element through the same call, 1 ulp). */
static double comet_row(const gm_kview *nd, const gm_kview *lf, int64_t n, int64_t k, int64_t E,
                        const double sc[3], const comet_scratch *w) {
    int64_t V = E - 1, H = 2 * E - 1;
    load_row(w->x, nd, n * k * V, k * V);
    load_row(w->a, lf, n * k * E, k * E);
    for (int64_t i = 0; i < k * V; i++) w->p[i] = ss_c(w->x[i], sc);
    double ma = -INFINITY;
    for (int64_t t = 0; t < k; t++) {
        const double *p = w->p + t * V, *a = w->a + t * E;
        double *R = w->R + t * H;
        R[0] = 1;
        for (int64_t v = 0; v < V; v++) {
            R[2 * v + 1] = R[v] * p[v];
            R[2 * v + 2] = R[v] * (1 - p[v]);
        }
        for (int64_t l = 0; l < E; l++)
            if (R[V + l] > 0 && a[l] > ma) ma = a[l];
    }
    if (lf->dtype == GM_F32) {
        for (int64_t i0 = 0; i0 < k * E; i0 += 8) {
            v8f z = v8_splat(0);
            for (int64_t j = 0; j < 8 && i0 + j < k * E; j++) {
                double d = w->a[i0 + j] - ma;
                z[j] = (float)(d < 80 ? d : 80);
            }
            z = v8_expf(z);
            for (int64_t j = 0; j < 8 && i0 + j < k * E; j++) w->e[i0 + j] = z[j];
        }
    } else {
        for (int64_t i = 0; i < k * E; i++) {
            double d = w->a[i] - ma;
            w->e[i] = exp(d < 700 ? d : 700);
        }
    }
    double S = 0;
    for (int64_t t = 0; t < k; t++)
        for (int64_t l = 0; l < E; l++) {
            double mu = w->R[t * H + V + l];
            if (mu > 0) S += mu * w->e[t * E + l];
        }
    return S;
}

static void comet_row_fwd(const gm_kargs *a, int64_t n, double *m) {
    int64_t k = a->i[1], E = a->i[2], V = E - 1, H = 2 * E - 1;
    const gm_kview *nd = &a->in[0], *lf = &a->in[1], *G = &a->out[0], *MU = &a->out[1];
    double sc[3];
    comet_scratch w;
    ss_consts(a->d[0], sc);
    comet_layout(&w, m, k, E);
    double S = comet_row(nd, lf, n, k, E, sc, &w);
    for (int64_t t = 0; t < k; t++) store_row(MU, (n * k + t) * E, w.R + t * H + V, E);
    for (int64_t l = 0; l < E; l++) {
        double s = 0;
        for (int64_t t = 0; t < k; t++) {
            double mu = w.R[t * H + V + l];
            if (mu > 0) s += mu * w.e[t * E + l];
        }
        w.o[l] = s / S;
    }
    store_row(G, n * E, w.o, E);
}

gm_status gm_cpu_COMET_GATE(gm_ctx *c, const gm_kargs *a) {
    int64_t N = a->i[0], k = a->i[1], E = a->i[2];
    return run_rows(c, "comet_gate", a, N, k * E, comet_scratch_len(k, E, false), comet_row_fwd);
}

/* With q = mu e / S (the softmax over pairs) and c = sum q gg: d/dleaf = q (gg - c); d/dmu
 * (through the softmax) = e / S (gg - c), finite also at mu = 0; plus the incoming gmu. Then
 * D[leaf] = that gradient, D[v] = p_v D[left] + (1 - p_v) D[right] bottom-up, and
 * d/dp_v = R[v] (D[left] - D[right]). */
static void comet_row_bwd(const gm_kargs *a, int64_t n, double *m) {
    int64_t k = a->i[1], E = a->i[2], V = E - 1, H = 2 * E - 1;
    const gm_kview *nd = &a->in[0], *lf = &a->in[1], *gg = &a->in[2], *gmu = &a->in[3];
    const gm_kview *gnd = &a->out[0], *glf = &a->out[1];
    double sc[3];
    comet_scratch w;
    ss_consts(a->d[0], sc);
    comet_layout(&w, m, k, E);
    double S = comet_row(nd, lf, n, k, E, sc, &w), cc = 0;
    load_row(w.gl, gg, n * E, E);
    load_row(w.gm, gmu, n * k * E, k * E);
    for (int64_t t = 0; t < k; t++)
        for (int64_t l = 0; l < E; l++) {
            double mu = w.R[t * H + V + l];
            if (mu > 0) cc += mu * w.e[t * E + l] / S * w.gl[l];
        }
    for (int64_t t = 0; t < k; t++) {
        const double *p = w.p + t * V, *R = w.R + t * H, *e = w.e + t * E;
        double *D = w.D, *gx = w.x + t * V, *go = w.o + t * E;
        for (int64_t l = 0; l < E; l++) {
            double d = w.gl[l] - cc, mu = R[V + l];
            go[l] = mu > 0 ? mu * e[l] / S * d : 0;
            D[V + l] = w.gm[t * E + l] + e[l] / S * d;
        }
        for (int64_t v = V - 1; v >= 0; v--) {
            double dl = D[2 * v + 1], dr = D[2 * v + 2];
            gx[v] = R[v] * (dl - dr) * dss_c(gx[v], sc); /* gx held the node logit x */
            D[v] = p[v] * dl + (1 - p[v]) * dr;
        }
    }
    store_row(gnd, n * k * V, w.x, k * V);
    store_row(glf, n * k * E, w.o, k * E);
}

gm_status gm_cpu_COMET_GATE_BWD(gm_ctx *c, const gm_kargs *a) {
    int64_t N = a->i[0], k = a->i[1], E = a->i[2];
    return run_rows(c, "comet_gate", a, N, k * E, comet_scratch_len(k, E, true), comet_row_bwd);
}

/* ---- Sinkhorn in log space: x [B,n,n] -------------------------------------------------- */

/* y <- y - logsumexp over rows (dim 1, axis = 1) or over columns (axis = 0). */
static void lse_norm(double *y, int64_t n, int axis) {
    for (int64_t i = 0; i < n; i++) {
        int64_t s0 = axis ? i * n : i, sj = axis ? 1 : n;
        double mx = -INFINITY, s = 0;
        for (int64_t j = 0; j < n; j++) if (y[s0 + j * sj] > mx) mx = y[s0 + j * sj];
        if (mx == -INFINITY) continue;
        for (int64_t j = 0; j < n; j++) s += exp(y[s0 + j * sj] - mx);
        double lse = mx + log(s);
        for (int64_t j = 0; j < n; j++) y[s0 + j * sj] -= lse;
    }
}

gm_status gm_cpu_SINKHORN(gm_ctx *c, const gm_kargs *a) {
    int64_t B = a->i[0], n = a->i[1], it = a->i[2];
    double *y = malloc(sizeof(double) * (size_t)(n * n + 1));
    if (!y) return gm_errf(c, GM_ENOMEM, "sinkhorn: out of memory for scratch");
    for (int64_t b = 0; b < B; b++) {
        if (gm_interrupted()) {
            free(y);
            return GM_EINTR;
        }
        for (int64_t i = 0; i < n * n; i++) y[i] = ld(&a->in[0], b * n * n + i);
        for (int64_t r = 0; r < it; r++) {
            lse_norm(y, n, 1);
            lse_norm(y, n, 0);
        }
        for (int64_t i = 0; i < n * n; i++) st(&a->out[0], b * n * n + i, y[i]);
    }
    free(y);
    return GM_OK;
}

/* Each half-step y = x - lse(x) along an axis has gx = gy - exp(y) * sum_axis(gy); the forward
 * is replayed storing every half-step's output (2 * iters * n^2 doubles per matrix). */
gm_status gm_cpu_SINKHORN_BWD(gm_ctx *c, const gm_kargs *a) {
    int64_t B = a->i[0], n = a->i[1], it = a->i[2], nn = n * n;
    double *Y = malloc(sizeof(double) * (size_t)((2 * it + 1) * nn + n + 1));
    if (!Y) return gm_errf(c, GM_ENOMEM, "sinkhorn: out of memory for scratch");
    double *gy = Y + 2 * it * nn;
    for (int64_t b = 0; b < B; b++) {
        if (gm_interrupted()) {
            free(Y);
            return GM_EINTR;
        }
        for (int64_t i = 0; i < nn; i++) Y[i] = ld(&a->in[0], b * nn + i);
        /* Y[h] = output of half-step h (h = 0 .. 2it-1); replay forward */
        double *cur = malloc(sizeof(double) * (size_t)nn);
        if (!cur) {
            free(Y);
            return gm_errf(c, GM_ENOMEM, "sinkhorn: out of memory for scratch");
        }
        memcpy(cur, Y, sizeof(double) * (size_t)nn);
        for (int64_t h = 0; h < 2 * it; h++) {
            lse_norm(cur, n, h % 2 == 0 ? 1 : 0);
            memcpy(Y + h * nn, cur, sizeof(double) * (size_t)nn);
        }
        free(cur);
        for (int64_t i = 0; i < nn; i++) gy[i] = ld(&a->in[1], b * nn + i);
        for (int64_t h = 2 * it - 1; h >= 0; h--) {
            const double *y = Y + h * nn;
            int axis = h % 2 == 0 ? 1 : 0; /* 1: rows (sum over j), 0: columns (sum over i) */
            for (int64_t i = 0; i < n; i++) {
                int64_t s0 = axis ? i * n : i, sj = axis ? 1 : n;
                double s = 0;
                for (int64_t j = 0; j < n; j++) s += gy[s0 + j * sj];
                for (int64_t j = 0; j < n; j++) gy[s0 + j * sj] -= exp(y[s0 + j * sj]) * s;
            }
        }
        for (int64_t i = 0; i < nn; i++) st(&a->out[0], b * nn + i, gy[i]);
    }
    free(Y);
    return GM_OK;
}
