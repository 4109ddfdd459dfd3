/* tree_gate.c (cpu): kernels of the smooth-step tree gates: the smooth-step itself, DSelect-k's
 * binary-encoded selectors, COMET's soft trees with one softmax over (tree, leaf) pairs, and
 * log-space Sinkhorn. Rows (tokens / matrices) are independent and run in parallel; each row
 * is computed in double with scratch per range of rows, so results do not depend on the thread count. */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* Root-to-leaf paths of the heap-ordered tree with E leaves (leaf l = heap node E-1+l):
 * node[l*D + i], left[l*D + i] for i < len[l]. D = max path length. */
typedef struct paths {
    int64_t D;
    int64_t *node;
    unsigned char *left;
    int64_t *len;
} paths;

/* Rows (tokens) of a tree-gate kernel split over the threads: fn computes row n with a scratch
 * of `scratch` doubles (one per range of rows). */
typedef void (*row_fn)(const gm_kargs *a, const paths *P, int64_t n, double *scratch);

typedef struct {
    const gm_kargs *a;
    const paths *P;
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
        j->fn(j->a, j->P, n, s);
    }
    free(s);
}

/* Run fn over rows [0, N) of per_row elements each; op names the kernel in errors. */
static gm_status run_rows(gm_ctx *c, const char *op, const gm_kargs *a, const paths *P, int64_t N, int64_t per_row,
                          int64_t scratch, row_fn fn) {
    rows_job j = {a, P, fn, scratch, 0, 0};
    gm_parallel_for(N, gm_min_units(per_row), a->nthreads, rows_range, &j);
    if (j.bad) return gm_errf(c, GM_ENOMEM, "%s: out of memory for scratch", op);
    return j.stop ? GM_EINTR : GM_OK;
}

/* ---- smooth_step: elementwise, any strides in, contiguous out ---------------------------- */

gm_status gm_cpu_SMOOTH_STEP(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    const gm_kview *x = &a->in[0], *y = &a->out[0];
    int64_t n = gm_kview_numel(x);
    double g = a->k.tree.gamma;
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
    double g = a->k.tree.gamma;
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

static void dselect_row(const gm_kargs *a, const paths *P, int64_t n, double *al) {
    int64_t k = a->k.tree.k, m = a->k.tree.m, E = a->k.tree.experts;
    double g = a->k.tree.gamma;
    const gm_kview *z = &a->in[0], *w = &a->in[1], *A = &a->out[0], *R = &a->out[1];
    double *S = al + k, *acc = al + k + m;
    (void)P;
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
    int64_t N = a->k.tree.n, k = a->k.tree.k, m = a->k.tree.m, E = a->k.tree.experts;
    return run_rows(c, "dselect_k", a, NULL, N, k * E, k + m + E + 1, dselect_row);
}

/* d a_e / d alpha_s = r_se; d r_se / d S_j = sign * prod_{l != j} factor_l; the total gradient of
 * r_se is gr_se + alpha_s ga_e. */
static void dselect_bwd_row(const gm_kargs *a, const paths *P, int64_t n, double *al) {
    int64_t k = a->k.tree.k, m = a->k.tree.m, E = a->k.tree.experts;
    double g = a->k.tree.gamma;
    const gm_kview *z = &a->in[0], *w = &a->in[1], *ga = &a->in[2], *gr = &a->in[3];
    const gm_kview *gz = &a->out[0], *gw = &a->out[1];
    double *gal = al + k, *S = al + 2 * k, *gS = S + m;
    (void)P;
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
    int64_t N = a->k.tree.n, k = a->k.tree.k, m = a->k.tree.m, E = a->k.tree.experts;
    return run_rows(c, "dselect_k", a, NULL, N, k * E, 2 * k + 2 * m + 1, dselect_bwd_row);
}

/* ---- COMET: nodes [N,k,E-1], leaves [N,k,E] -> g [N,E], mu [N,k,E] ------------------------ */


static int paths_build(paths *P, int64_t E) {
    int64_t D = 0;
    for (int64_t v = 2 * E - 2; v > 0; v = (v - 1) / 2) D++;
    P->D = D;
    P->node = malloc(sizeof(int64_t) * (size_t)(E * (D + 1) + E));
    P->left = malloc((size_t)(E * (D + 1)));
    if (!P->node || !P->left) {
        free(P->node);
        free(P->left);
        return -1;
    }
    P->len = P->node + E * (D + 1);
    for (int64_t l = 0; l < E; l++) {
        int64_t i = 0;
        for (int64_t v = E - 1 + l; v > 0; v = (v - 1) / 2, i++) {
            int64_t p = (v - 1) / 2;
            P->node[l * D + i] = p;
            P->left[l * D + i] = v == 2 * p + 1;
        }
        P->len[l] = i;
    }
    return 0;
}

static void paths_free(paths *P) {
    free(P->node);
    free(P->left);
}

/* One token: p[t*(E-1)+v] = S(nodes), mu[t*E+l], and q = exp(leaf + log mu - M) / Z (written
 * into q), M, Z. */
static void comet_row(const gm_kview *nd, const gm_kview *lf, int64_t n, int64_t k, int64_t E,
                      double g, const paths *P, double *p, double *mu, double *q, double *M,
                      double *Z) {
    int64_t V = E - 1;
    for (int64_t i = 0; i < k * V; i++) p[i] = ss(ld(nd, n * k * V + i), g);
    double mx = -INFINITY;
    for (int64_t t = 0; t < k; t++)
        for (int64_t l = 0; l < E; l++) {
            double r = 1;
            for (int64_t i = 0; i < P->len[l]; i++) {
                double pv = p[t * V + P->node[l * P->D + i]];
                r *= P->left[l * P->D + i] ? pv : 1 - pv;
            }
            mu[t * E + l] = r;
            if (r > 0) {
                double u = ld(lf, n * k * E + t * E + l) + log(r);
                if (u > mx) mx = u;
            }
        }
    double z = 0;
    for (int64_t i = 0; i < k * E; i++) {
        q[i] = mu[i] > 0 ? exp(ld(lf, n * k * E + i) + log(mu[i]) - mx) : 0;
        z += q[i];
    }
    for (int64_t i = 0; i < k * E; i++) q[i] /= z;
    *M = mx;
    *Z = z;
}

static void comet_row_fwd(const gm_kargs *a, const paths *P, int64_t n, double *p) {
    int64_t k = a->k.tree.k, E = a->k.tree.experts;
    double g = a->k.tree.gamma;
    const gm_kview *nd = &a->in[0], *lf = &a->in[1], *G = &a->out[0], *MU = &a->out[1];
    double *mu = p + k * (E - 1), *q = mu + k * E;
    double M, Z;
    comet_row(nd, lf, n, k, E, g, P, p, mu, q, &M, &Z);
    for (int64_t l = 0; l < E; l++) {
        double s = 0;
        for (int64_t t = 0; t < k; t++) s += q[t * E + l];
        st(G, n * E + l, s);
    }
    for (int64_t i = 0; i < k * E; i++) st(MU, n * k * E + i, mu[i]);
}

gm_status gm_cpu_COMET_GATE(gm_ctx *c, const gm_kargs *a) {
    int64_t N = a->k.tree.n, k = a->k.tree.k, E = a->k.tree.experts;
    paths P;
    if (paths_build(&P, E)) return gm_errf(c, GM_ENOMEM, "comet_gate: out of memory for scratch");
    gm_status st = run_rows(c, "comet_gate", a, &P, N, k * E, k * (E - 1) + 2 * k * E + 1, comet_row_fwd);
    paths_free(&P);
    return st;
}

/* With pr = q (the softmax over pairs) and c = sum pr * gg: d/dleaf = pr (gg - c); d/dmu (through
 * the softmax) = exp(leaf - M) / Z (gg - c), finite also at mu = 0; then the path products. */
static void comet_row_bwd(const gm_kargs *a, const paths *P, int64_t n, double *p) {
    int64_t k = a->k.tree.k, E = a->k.tree.experts, V = E - 1;
    double g = a->k.tree.gamma;
    const gm_kview *nd = &a->in[0], *lf = &a->in[1], *gg = &a->in[2], *gmu = &a->in[3];
    const gm_kview *gnd = &a->out[0], *glf = &a->out[1];
    double *gp = p + k * V, *mu = gp + k * V, *q = mu + k * E;
    double M, Z, cc = 0;
    comet_row(nd, lf, n, k, E, g, P, p, mu, q, &M, &Z);
    for (int64_t i = 0; i < k * E; i++) cc += q[i] * ld(gg, n * E + i % E);
    for (int64_t i = 0; i < k * V; i++) gp[i] = 0;
    for (int64_t t = 0; t < k; t++)
        for (int64_t l = 0; l < E; l++) {
            int64_t i = t * E + l;
            double d = ld(gg, n * E + l) - cc, x = ld(lf, n * k * E + i) - M;
            st(glf, n * k * E + i, q[i] * d);
            double gm = ld(gmu, n * k * E + i) + exp(x < 700 ? x : 700) / Z * d;
            int64_t L = P->len[l];
            for (int64_t j = 0; j < L; j++) {
                double prod = 1;
                for (int64_t h = 0; h < L; h++) {
                    if (h == j) continue;
                    double pv = p[t * V + P->node[l * P->D + h]];
                    prod *= P->left[l * P->D + h] ? pv : 1 - pv;
                }
                gp[t * V + P->node[l * P->D + j]] += P->left[l * P->D + j] ? gm * prod : -gm * prod;
            }
        }
    for (int64_t i = 0; i < k * V; i++) {
        int64_t o = n * k * V + i;
        st(gnd, o, gp[i] * dss(ld(nd, o), g));
    }
}

gm_status gm_cpu_COMET_GATE_BWD(gm_ctx *c, const gm_kargs *a) {
    int64_t N = a->k.tree.n, k = a->k.tree.k, E = a->k.tree.experts, V = E - 1;
    paths P;
    if (paths_build(&P, E)) return gm_errf(c, GM_ENOMEM, "comet_gate: out of memory for scratch");
    gm_status st = run_rows(c, "comet_gate", a, &P, N, k * E, 2 * k * V + 2 * k * E + 1, comet_row_bwd);
    paths_free(&P);
    return st;
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
    int64_t B = a->k.tree.n, n = a->k.tree.size, it = a->k.tree.iters;
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
    int64_t B = a->k.tree.n, n = a->k.tree.size, it = a->k.tree.iters, nn = n * n;
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
