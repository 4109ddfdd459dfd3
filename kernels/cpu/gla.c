/* gla.c (cpu): gated linear attention (Yang et al. 2024), recurrent and chunkwise. Heads are
 * split over threads; each head is computed by one thread in a fixed order, so the bits do not
 * depend on the thread count.
 * Recurrent (GLA, GLA_BWD), in f64: each state element S[i, j] follows its own scalar recurrence
 * S_t[i, j] = alpha_t[i] S_{t-1}[i, j] + k_t[i] v_t[j], so the state is cut into register tiles
 * that each run through all T steps (no state in memory, forward or backward).
 * Chunkwise (GLA_CHUNK, GLA_CHUNK_BWD): chunks of C steps carry the state with matmuls, secondary
 * chunks of c steps inside a chunk interact through matmuls with decay factors exp(x), x <= 0, and
 * the scores inside a secondary chunk are taken in log space. Decays and scores are computed in
 * f64 (exps in f32 for f32 inputs); the matmuls run in the input dtype (sgemm on f32 operands,
 * dgemm on f64). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "blas.h"
#include "vmath.h"

/* x[i] = exp(x[i]) for 8 values: the 4-lane exp for f64 work; for f32 work the 8-lane expf (at
 * most 1 ulp of f32: the products these decays feed are rounded to f32 anyway). */
static inline void exp8(bool f32, double *x) {
    if (!f32) {
        v4_st(x, v4_exp(v4_ld(x)));
        v4_st(x + 4, v4_exp(v4_ld(x + 4)));
        return;
    }
#ifdef GM_LIBMVEC
    __m256 f = _mm256_set_m128(_mm256_cvtpd_ps(_mm256_loadu_pd(x + 4)), _mm256_cvtpd_ps(_mm256_loadu_pd(x)));
    f = (__m256)v8_expf((v8f)f);
    _mm256_storeu_pd(x, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
    _mm256_storeu_pd(x + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
#else
    for (int i = 0; i < 8; i++) x[i] = expf((float)x[i]);
#endif
}

/* Element offset of row t of head hd of a [B, H, T, D] operand whose last dim is contiguous
 * (the rules pass inputs so: any batch, head and row strides). */
static inline int64_t row_off(const gm_kview *v, int64_t hd, int64_t t) {
    return gm_kview_head_off(v, hd) + t * v->stride[2];
}

/* rows x cols values of an f32/f64 operand from row t0 of head hd into dst as f64 (row stride
 * ld, the padding columns zeroed), times mul. */
static void load_rows(double *dst, int64_t ld, const gm_kview *v, int64_t hd, int64_t t0, int64_t rows,
                      int64_t cols, double mul) {
    int64_t off = row_off(v, hd, t0), vs = gm_kview_row_ld(v);
    for (int64_t r = 0; r < rows; r++) {
        double *d = dst + r * ld;
        if (v->dtype == GM_F64) {
            const double *s = (const double *)v->data + off + r * vs;
            for (int64_t j = 0; j < cols; j++) d[j] = mul * s[j];
        } else {
            const float *s = (const float *)v->data + off + r * vs;
            for (int64_t j = 0; j < cols; j++) d[j] = mul * (double)s[j];
        }
        for (int64_t j = cols; j < ld; j++) d[j] = 0;
    }
}

/* Into a contiguous output from element offset off: the inverse of load_rows (mul applied before
 * rounding to the operand's dtype). */
static void store_rows(const gm_kview *v, int64_t off, int64_t rows, int64_t cols, const double *src, int64_t ld,
                       double mul) {
    for (int64_t r = 0; r < rows; r++) {
        const double *s = src + r * ld;
        if (v->dtype == GM_F64) {
            double *d = (double *)v->data + off + r * cols;
            for (int64_t j = 0; j < cols; j++) d[j] = mul * s[j];
        } else {
            float *d = (float *)v->data + off + r * cols;
            for (int64_t j = 0; j < cols; j++) d[j] = (float)(mul * s[j]);
        }
    }
}

static inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

/* n bytes, 64-byte aligned (v4d loads through pointers into them); NULL when out of memory. */
static void *alloc64(size_t n) { return aligned_alloc(64, (size_t)round_up((int64_t)(n ? n : 1), 64)); }

static void oom(int *stop, int *flag) {
    __atomic_store_n(flag, 1, __ATOMIC_RELAXED);
    __atomic_store_n(stop, 1, __ATOMIC_RELAXED);
}

/* ---- recurrent ------------------------------------------------------------------------------ */
/* A head is held padded: q (times scale), k, alpha = exp(g) as [T, Dkp] with Dkp a multiple of
 * RI, v, o (or do) as [T, Dvp] with Dvp a multiple of RJ; zero q, k, v padding keeps the padded
 * state rows and columns zero. The forward tile is RI rows x RJ columns held as RI x 2 vectors
 * along j; o_t gets its sum over the tile's rows, tiles in a fixed order. The backward tile holds
 * RJ columns of 4 rows (vectors along i, so the sums over j are lane-wise) and keeps no states: it
 * runs S_t forward in time for dq_t = scale S_t do_t^T, then dS back in time for the rest,
 *   dS_t = scale q_t^T do_t + diag(alpha_{t+1}) dS_{t+1},  dk_t = dS_t v_t^T,  dv_t = k_t dS_t;
 * the log gates get dg_t = sum over t' >= t of q_t' dq_t' - k_t' dk_t' (see the chunkwise form).
 * Sums over a tile's rows or columns are trees, not chains of FMA latencies. */
#define RI 4
#define RJ 8

typedef struct {
    const gm_kargs *a;
    int64_t T, Dk, Dv, Dkp, Dvp;
    bool bwd;
    double scale;
    int stop, oom;
} rec_work;

typedef struct {
    double *q, *k, *al, *v, *o; /* o holds do in the backward */
    double *dq, *dk, *dg, *dv;
} rec_head;

static void rec_forward(const rec_work *w, const rec_head *h) {
    const int64_t T = w->T, Dkp = w->Dkp, Dvp = w->Dvp;
    const double *restrict Q = h->q, *restrict K = h->k, *restrict A = h->al, *restrict V = h->v;
    double *restrict O = h->o;
    memset(O, 0, (size_t)(T * Dvp) * sizeof(double));
    for (int64_t i0 = 0; i0 < Dkp; i0 += RI)
        for (int64_t j0 = 0; j0 < Dvp; j0 += RJ) {
            v4d s[RI][2] = {{{0}}};
            for (int64_t t = 0; t < T; t++) {
                const double *al = A + t * Dkp + i0, *k = K + t * Dkp + i0, *q = Q + t * Dkp + i0;
                v4d v0 = v4_ld(V + t * Dvp + j0), v1 = v4_ld(V + t * Dvp + j0 + 4), o0, o1;
                v4d p0[RI], p1[RI];
                #pragma GCC unroll 4
                for (int r = 0; r < RI; r++) {
                    s[r][0] = v4_fma(v4_splat(al[r]), s[r][0], k[r] * v0);
                    s[r][1] = v4_fma(v4_splat(al[r]), s[r][1], k[r] * v1);
                    p0[r] = q[r] * s[r][0];
                    p1[r] = q[r] * s[r][1];
                }
                o0 = (p0[0] + p0[1]) + (p0[2] + p0[3]); /* a tree, not a chain of RI latencies */
                o1 = (p1[0] + p1[1]) + (p1[2] + p1[3]);
                double *o = O + t * Dvp + j0;
                v4_st(o, v4_ld(o) + o0);
                v4_st(o + 4, v4_ld(o + 4) + o1);
            }
        }
}

static void rec_backward(const rec_work *w, const rec_head *h) {
    const int64_t T = w->T, Dkp = w->Dkp, Dvp = w->Dvp;
    const double *restrict Q = h->q, *restrict K = h->k, *restrict A = h->al, *restrict V = h->v;
    const double *restrict dO = h->o;
    double *restrict dQ = h->dq, *restrict dK = h->dk, *restrict dG = h->dg, *restrict dV = h->dv;
    memset(dQ, 0, (size_t)(T * Dkp) * sizeof(double));
    memset(dK, 0, (size_t)(T * Dkp) * sizeof(double));
    memset(dV, 0, (size_t)(T * Dvp) * sizeof(double));
    for (int64_t i0 = 0; i0 < Dkp; i0 += RI)
        for (int64_t j0 = 0; j0 < Dvp; j0 += RJ) {
            v4d s[RJ] = {0}; /* forward: S_t, and dq_t = S_t do_t^T */
            for (int64_t t = 0; t < T; t++) {
                v4d al = v4_ld(A + t * Dkp + i0), k = v4_ld(K + t * Dkp + i0), p[RJ];
                const double *v = V + t * Dvp + j0, *go = dO + t * Dvp + j0;
                #pragma GCC unroll 8
                for (int c = 0; c < RJ; c++) {
                    s[c] = v4_fma(al, s[c], k * v[c]);
                    p[c] = s[c] * go[c];
                }
                double *pq = dQ + t * Dkp + i0;
                v4_st(pq, v4_ld(pq) + (((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]))));
            }
            /* backward: dS_t = q_t^T do_t + alpha_{t+1} dS_{t+1} (an = alpha_{t+1}, 0 at the end) */
            v4d d[RJ] = {0}, an = {0};
            for (int64_t t = T - 1; t >= 0; t--) {
                v4d q = v4_ld(Q + t * Dkp + i0), k = v4_ld(K + t * Dkp + i0), p[RJ], x[RJ];
                const double *go = dO + t * Dvp + j0, *v = V + t * Dvp + j0;
                #pragma GCC unroll 8
                for (int c = 0; c < RJ; c++) {
                    d[c] = v4_fma(an, d[c], q * go[c]);
                    p[c] = d[c] * v[c];
                    x[c] = d[c] * k;
                }
                an = v4_ld(A + t * Dkp + i0);
                double *pk = dK + t * Dkp + i0, *dv = dV + t * Dvp + j0;
                v4_st(pk, v4_ld(pk) + (((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]))));
                v4_st(dv, v4_ld(dv) + v4_hsum4(x[0], x[1], x[2], x[3]));
                v4_st(dv + 4, v4_ld(dv + 4) + v4_hsum4(x[4], x[5], x[6], x[7]));
            }
        }
    /* dg_t = sum over t' >= t of q_t' dq_t' - k_t' dk_t' (q, dq both with the scale): every output
     * depends on the gates through b_t - b_s, b the cumsum of the log gates */
    for (int64_t m = 0; m < Dkp; m += 4) {
        v4d acc = {0};
        for (int64_t t = T - 1; t >= 0; t--) {
            int64_t i = t * Dkp + m;
            acc += v4_ld(Q + i) * v4_ld(dQ + i) - v4_ld(K + i) * v4_ld(dK + i);
            v4_st(dG + i, acc);
        }
    }
}

static void rec_range(void *ctx, int64_t lo, int64_t hi) {
    rec_work *w = ctx;
    const gm_kargs *a = w->a;
    const int64_t T = w->T, Dk = w->Dk, Dv = w->Dv, Dkp = w->Dkp, Dvp = w->Dvp;
    size_t nk = (size_t)(T * Dkp), nv = (size_t)(T * Dvp); /* multiples of 4 and 8 doubles */
    size_t n = 3 * nk + 2 * nv + (w->bwd ? 3 * nk + nv : 0);
    double *buf = alloc64(n * sizeof(double));
    if (!buf) {
        oom(&w->stop, &w->oom);
        return;
    }
    rec_head h = {.q = buf, .k = buf + nk, .al = buf + 2 * nk, .v = buf + 3 * nk, .o = buf + 3 * nk + nv};
    if (w->bwd) h.dq = h.o + nv, h.dk = h.dq + nk, h.dg = h.dk + nk, h.dv = h.dg + nk;
    for (int64_t hd = lo; hd < hi; hd++) {
        if (gm_halted(&w->stop)) break;
        load_rows(h.q, Dkp, &a->in[0], hd, 0, T, Dk, w->scale);
        load_rows(h.k, Dkp, &a->in[1], hd, 0, T, Dk, 1);
        load_rows(h.v, Dvp, &a->in[2], hd, 0, T, Dv, 1);
        load_rows(h.al, Dkp, &a->in[3], hd, 0, T, Dk, 1);
        for (size_t i = 0; i < nk; i += 4) v4_st(h.al + i, v4_exp(v4_ld(h.al + i)));
        if (!w->bwd) {
            rec_forward(w, &h);
            store_rows(&a->out[0], hd * T * Dv, T, Dv, h.o, Dvp, 1);
            continue;
        }
        load_rows(h.o, Dvp, &a->in[4], hd, 0, T, Dv, 1);
        rec_backward(w, &h);
        store_rows(&a->out[0], hd * T * Dk, T, Dk, h.dq, Dkp, w->scale); /* dq = scale dq~ */
        store_rows(&a->out[1], hd * T * Dk, T, Dk, h.dk, Dkp, 1);
        store_rows(&a->out[2], hd * T * Dv, T, Dv, h.dv, Dvp, 1);
        store_rows(&a->out[3], hd * T * Dk, T, Dk, h.dg, Dkp, 1);
    }
    free(buf);
}

static gm_status rec_run(const gm_kargs *a, bool bwd) {
    const gm_kview *q = &a->in[0], *v = &a->in[2];
    rec_work w = {.a = a, .T = q->shape[2], .Dk = q->shape[3], .Dv = v->shape[3], .bwd = bwd, .scale = a->k.gla.scale};
    w.Dkp = round_up(w.Dk, RI), w.Dvp = round_up(w.Dv, RJ);
    gm_parallel_for(q->shape[0] * q->shape[1], gm_min_units(w.T * w.Dk * w.Dv + 1), a->nthreads, rec_range, &w);
    if (w.oom) return GM_ENOMEM;
    return w.stop ? GM_EINTR : GM_OK;
}

GM_CPU_FWD_BWD(GLA, rec_run)

/* ---- chunkwise ------------------------------------------------------------------------------ */
/* Per head, q is taken times scale. Inside a chunk of L <= C steps starting at t0, b_t is the
 * cumsum of the log gates from t0 (f64), and sub-chunk I (steps I c .. e_I, c = sub) has the
 * reference r_I = b just before it (r_0 = 0, r_nJ = b_{L-1}: decays are 1 at the chunk start).
 * Every decay factor is an exp of a non-positive difference:
 *   G_t = exp(b_t - r_I(t)),  F_s = exp(b_e(s) - b_s),  X[I][J] = exp(r_I - r_J) for J <= I
 * (X as products of the adjacent ones). With Qb_t = q_t G_t X[I(t)][0] (= q_t exp(b_t)), Kh_s =
 * k_s F_s and Kd_s = Kh_s X[nJ][J(s) + 1] (= k_s exp(b_{L-1} - b_s)):
 *   O = P V + Qb S,  S <- diag(X[nJ][0]) S + Kd^T V,  P_ts (s <= t) =
 *     (q_t G_t) . (Kh_s X[I][J + 1])   between sub-chunks J < I (one matmul per I),
 *     sum_m q_tm k_sm exp(b_tm - b_sm)  inside a sub-chunk (log space, one exp per term).
 * The backward recomputes the states at chunk starts (kept: ceil(T / C) Dk Dv) and walks the
 * chunks backwards with dS = d loss / d S at the chunk end:
 *   dP = dO V^T (s <= t),  dV = P^T dO + Kd dS,  dQb = dO S^T,  dKd = V dS^T,
 *   dS <- diag(X[nJ][0]) dS + Qb^T dO,
 * the scores' gradients going to q and k through the same factors. The log gates get theirs
 * from dB_t = q_t dq_t - k_t dk_t with the total gradients (every score depends on b_t - b_s
 * only), dg_t = sum over t' >= t of dB_t' (f64).
 * The matmul operands (Qb, Kd, Qr, Kr, P, dP, S, dS, the states) are held in the input dtype; v,
 * do, o and dv are read and written in place. Dk is padded to a multiple of 8 with zero q, k and
 * log gates, which adds nothing anywhere. */
typedef struct {
    const gm_kargs *a;
    int64_t T, Dk0, Dk, Dv, C, c, nJ; /* Dk = Dk0 padded; C chunk (<= T), c sub-chunk (<= C) */
    bool f32, bwd;
    double scale;
    int stop, oom;
} chunk_work;

typedef struct {
    double *q, *k, *b, *G, *F, *Kh, *dq, *dk, *X, *acc, *E; /* f64: the chunk's rows [C, Dk]; X; acc [Dk];
                                                            * E [c (c - 1) / 2, Dk] */
    void *Qb, *Kd, *Qr, *Kr, *P, *dP, *S, *dS, *St, *tmp; /* the input dtype */
} chunk_buf;

/* Elements of the matmul operands (the input dtype) as f64: 4 at element i, or one. */
static inline v4d xld4(bool f32, const void *p, int64_t i) {
    return f32 ? v4_ld_f32((const float *)p + i) : v4_ld((const double *)p + i);
}

static inline void xst4(bool f32, void *p, int64_t i, v4d x) {
    if (f32) v4_st_f32((float *)p + i, x);
    else v4_st((double *)p + i, x);
}

static inline double xld1(bool f32, const void *p, int64_t i) {
    return f32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

static inline void xst1(bool f32, void *p, int64_t i, double x) {
    if (f32) ((float *)p)[i] = (float)x;
    else ((double *)p)[i] = x;
}

/* Element offset i of a matmul operand of the work's dtype. */
static inline void *xat(const chunk_work *w, void *p, int64_t i) {
    return (char *)p + i * (w->f32 ? (int64_t)sizeof(float) : (int64_t)sizeof(double));
}

/* C = op(A) op(B) + beta C in the work's dtype, on this thread. */
static void mm(const chunk_work *w, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *A, int64_t lda,
               const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
    gm_cpu_gemm1(!w->f32, ta, tb, m, n, k, 1, A, lda, B, ldb, beta, C, ldc);
}

/* M[i, :] *= gam[i] for the rows of a [Dk, Dv] matmul operand. */
static void scale_rows(const chunk_work *w, void *M, const double *gam) {
    const int64_t Dk = w->Dk, Dv = w->Dv;
    for (int64_t i = 0; i < Dk; i++) {
        if (w->f32) {
            float *r = (float *)M + i * Dv, gi = (float)gam[i];
            for (int64_t j = 0; j < Dv; j++) r[j] *= gi;
        } else {
            double *r = (double *)M + i * Dv, gi = gam[i];
            for (int64_t j = 0; j < Dv; j++) r[j] *= gi;
        }
    }
}

static inline double *xrow(const chunk_work *w, const chunk_buf *u, int64_t I, int64_t J) {
    return u->X + (I * (I + 1) / 2 + J) * w->Dk;
}

/* Loads the chunk of head hd at t0 (L steps) and computes its factors: q (times scale), k, b, G,
 * F, X, Kh, and in the matmul dtype Qb and Kd. Returns the number of sub-chunks. */
static int64_t chunk_prep(const chunk_work *w, const chunk_buf *u, int64_t hd, int64_t t0, int64_t L) {
    const gm_kargs *a = w->a;
    const int64_t Dk = w->Dk, c = w->c, nJ = (L + c - 1) / c;
    double *q = u->q, *k = u->k, *b = u->b, *G = u->G, *F = u->F;
    load_rows(q, Dk, &a->in[0], hd, t0, L, w->Dk0, w->scale);
    load_rows(k, Dk, &a->in[1], hd, t0, L, w->Dk0, 1);
    load_rows(b, Dk, &a->in[3], hd, t0, L, w->Dk0, 1);
    for (int64_t t = 1; t < L; t++)
        for (int64_t m = 0; m < Dk; m += 4) v4_st(b + t * Dk + m, v4_ld(b + t * Dk + m) + v4_ld(b + (t - 1) * Dk + m));
    for (int64_t I = 0; I < nJ; I++) {
        int64_t s0 = I * c, e = (s0 + c < L ? s0 + c : L) - 1;
        for (int64_t t = s0; t <= e; t++)
            for (int64_t m = 0; m < Dk; m++) {
                G[t * Dk + m] = b[t * Dk + m] - (s0 ? b[(s0 - 1) * Dk + m] : 0);
                F[t * Dk + m] = b[e * Dk + m] - b[t * Dk + m];
            }
    }
    for (int64_t i = 0; i < L * Dk; i += 8) {
        exp8(w->f32, G + i);
        exp8(w->f32, F + i);
    }
    for (int64_t I = 0; I <= nJ; I++) {
        double *x = xrow(w, u, I, I);
        for (int64_t m = 0; m < Dk; m++) x[m] = 1;
    }
    for (int64_t J = 0; J < nJ; J++) { /* X[J + 1][J] = exp(r_{J+1} - r_J) */
        int64_t e = (J + 1) * c < L ? (J + 1) * c - 1 : L - 1;
        double *x = xrow(w, u, J + 1, J);
        for (int64_t m = 0; m < Dk; m++) x[m] = b[e * Dk + m] - (J ? b[(J * c - 1) * Dk + m] : 0);
        for (int64_t m = 0; m < Dk; m += 8) exp8(w->f32, x + m);
    }
    for (int64_t I = 2; I <= nJ; I++)
        for (int64_t J = I - 2; J >= 0; J--) {
            double *x = xrow(w, u, I, J);
            const double *x1 = xrow(w, u, I, J + 1), *x2 = xrow(w, u, J + 1, J);
            for (int64_t m = 0; m < Dk; m++) x[m] = x1[m] * x2[m];
        }
    for (int64_t t = 0; t < L; t++) {
        const double *x0 = xrow(w, u, t / c, 0), *xl = xrow(w, u, nJ, t / c + 1);
        for (int64_t m = 0; m < Dk; m += 4) {
            int64_t i = t * Dk + m;
            v4d kh = v4_ld(k + i) * v4_ld(F + i);
            v4_st(u->Kh + i, kh);
            xst4(w->f32, u->Qb, i, v4_ld(q + i) * v4_ld(G + i) * v4_ld(x0 + m));
            xst4(w->f32, u->Kd, i, kh * v4_ld(xl + m));
        }
    }
    return nJ;
}

/* The part of chunk_prep the states need: Kd (= k exp(b_{L-1} - b)) and gamma = exp(b_{L-1}),
 * returned in place of X[nJ][0] (the first row of X). */
static const double *chunk_decays(const chunk_work *w, const chunk_buf *u, int64_t hd, int64_t t0, int64_t L) {
    const int64_t Dk = w->Dk;
    double *k = u->k, *b = u->b, *F = u->F, *gam = u->X;
    load_rows(k, Dk, &w->a->in[1], hd, t0, L, w->Dk0, 1);
    load_rows(b, Dk, &w->a->in[3], hd, t0, L, w->Dk0, 1);
    for (int64_t t = 1; t < L; t++)
        for (int64_t m = 0; m < Dk; m += 4) v4_st(b + t * Dk + m, v4_ld(b + t * Dk + m) + v4_ld(b + (t - 1) * Dk + m));
    for (int64_t t = 0; t < L; t++)
        for (int64_t m = 0; m < Dk; m += 4) v4_st(F + t * Dk + m, v4_ld(b + (L - 1) * Dk + m) - v4_ld(b + t * Dk + m));
    memcpy(gam, b + (L - 1) * Dk, (size_t)Dk * sizeof(double));
    for (int64_t i = 0; i < L * Dk; i += 8) exp8(w->f32, F + i);
    for (int64_t m = 0; m < Dk; m += 8) exp8(w->f32, gam + m);
    for (int64_t i = 0; i < L * Dk; i += 4) xst4(w->f32, u->Kd, i, v4_ld(k + i) * v4_ld(F + i));
    return gam;
}

/* Scores P [L, L] of the prepared chunk (zero above the diagonal). With grad (the backward, dP
 * = d loss / d P given), also adds the scores' gradients to dq, dk. */
static void chunk_scores(const chunk_work *w, const chunk_buf *u, int64_t L, int64_t nJ, bool grad) {
    const int64_t Dk = w->Dk, c = w->c;
    const bool f32 = w->f32;
    const double *q = u->q, *k = u->k, *b = u->b, *G = u->G, *F = u->F;
    double *dq = u->dq, *dk = u->dk;
    memset(u->P, 0, (size_t)(L * L) * (f32 ? sizeof(float) : sizeof(double)));
    for (int64_t I = 0; I < nJ; I++) {
        int64_t s0 = I * c, l = L - s0 < c ? L - s0 : c;
        /* inside the sub-chunk, in log space: E holds exp(b_t - b_s) of the pairs s0 <= s < t */
        double *E = u->E;
        for (int64_t t = s0 + 1, p = 0; t < s0 + l; t++)
            for (int64_t s = s0; s < t; s++, p++)
                for (int64_t m = 0; m < Dk; m += 4) v4_st(E + p * Dk + m, v4_ld(b + t * Dk + m) - v4_ld(b + s * Dk + m));
        for (int64_t i = 0; i < l * (l - 1) / 2 * Dk; i += 8) exp8(f32, E + i);
        for (int64_t t = s0, p = 0; t < s0 + l; t++)
            for (int64_t s = s0; s <= t; s++) {
                const double *qt = q + t * Dk, *ks = k + s * Dk, *e = s < t ? E + (p++) * Dk : u->X; /* X[0][0] = 1 */
                v4d acc0 = {0}, acc1 = {0};
                for (int64_t m = 0; m < Dk; m += 8) {
                    acc0 = v4_fma(v4_ld(qt + m), v4_ld(ks + m) * v4_ld(e + m), acc0);
                    acc1 = v4_fma(v4_ld(qt + m + 4), v4_ld(ks + m + 4) * v4_ld(e + m + 4), acc1);
                }
                acc0 += acc1;
                xst1(f32, u->P, t * L + s, (acc0[0] + acc0[1]) + (acc0[2] + acc0[3]));
                if (!grad) continue;
                v4d g = v4_splat(xld1(f32, u->dP, t * L + s));
                double *dqt = dq + t * Dk, *dks = dk + s * Dk;
                for (int64_t m = 0; m < Dk; m += 4) {
                    v4d ge = g * v4_ld(e + m);
                    v4_st(dqt + m, v4_fma(ge, v4_ld(ks + m), v4_ld(dqt + m)));
                    v4_st(dks + m, v4_fma(ge, v4_ld(qt + m), v4_ld(dks + m)));
                }
            }
        if (I == 0) continue;
        /* between: rows of I against the steps 0 .. s0 - 1 of the earlier sub-chunks */
        for (int64_t t = s0; t < s0 + l; t++)
            for (int64_t m = 0; m < Dk; m += 4)
                xst4(f32, u->Qr, (t - s0) * Dk + m, v4_ld(q + t * Dk + m) * v4_ld(G + t * Dk + m));
        for (int64_t s = 0; s < s0; s++) {
            const double *x = xrow(w, u, I, s / c + 1);
            for (int64_t m = 0; m < Dk; m += 4) xst4(f32, u->Kr, s * Dk + m, v4_ld(u->Kh + s * Dk + m) * v4_ld(x + m));
        }
        mm(w, false, true, l, s0, Dk, u->Qr, Dk, u->Kr, Dk, 0, xat(w, u->P, s0 * L), L);
        if (!grad) continue;
        mm(w, false, false, l, Dk, s0, xat(w, u->dP, s0 * L), L, u->Kr, Dk, 0, u->tmp, Dk);
        for (int64_t t = s0; t < s0 + l; t++)
            for (int64_t m = 0; m < Dk; m += 4) {
                int64_t i = t * Dk + m;
                v4_st(dq + i, v4_fma(xld4(f32, u->tmp, i - s0 * Dk), v4_ld(G + i), v4_ld(dq + i)));
            }
        mm(w, true, false, s0, Dk, l, xat(w, u->dP, s0 * L), L, u->Qr, Dk, 0, u->tmp, Dk);
        for (int64_t s = 0; s < s0; s++) {
            const double *x = xrow(w, u, I, s / c + 1);
            for (int64_t m = 0; m < Dk; m += 4) {
                int64_t i = s * Dk + m;
                v4_st(dk + i, v4_fma(xld4(f32, u->tmp, i) * v4_ld(F + i), v4_ld(x + m), v4_ld(dk + i)));
            }
        }
    }
}

static void chunk_forward(const chunk_work *w, const chunk_buf *u, int64_t hd) {
    const int64_t T = w->T, Dk = w->Dk, Dv = w->Dv, C = w->C, lv = gm_kview_row_ld(&w->a->in[2]);
    void *O = xat(w, w->a->out[0].data, hd * T * Dv);
    for (int64_t t0 = 0; t0 < T; t0 += C) {
        int64_t L = T - t0 < C ? T - t0 : C, nJ = chunk_prep(w, u, hd, t0, L);
        void *Vc = xat(w, w->a->in[2].data, row_off(&w->a->in[2], hd, t0)), *Oc = xat(w, O, t0 * Dv);
        chunk_scores(w, u, L, nJ, false);
        mm(w, false, false, L, Dv, L, u->P, L, Vc, lv, 0, Oc, Dv);
        if (t0 > 0) mm(w, false, false, L, Dv, Dk, u->Qb, Dk, u->S, Dv, 1, Oc, Dv); /* S = 0 before */
        if (t0 + L == T) break;
        if (t0 == 0) {
            mm(w, true, false, Dk, Dv, L, u->Kd, Dk, Vc, lv, 0, u->S, Dv);
        } else {
            scale_rows(w, u->S, xrow(w, u, nJ, 0));
            mm(w, true, false, Dk, Dv, L, u->Kd, Dk, Vc, lv, 1, u->S, Dv);
        }
    }
}

static void chunk_backward(const chunk_work *w, const chunk_buf *u, int64_t hd) {
    const gm_kargs *a = w->a;
    const int64_t T = w->T, Dk = w->Dk, Dv = w->Dv, C = w->C, DS = Dk * Dv, N = (T + C - 1) / C;
    const bool f32 = w->f32;
    const int64_t lv = gm_kview_row_ld(&a->in[2]), lo = gm_kview_row_ld(&a->in[4]); /* V and dO are read in place */
    void *dV = xat(w, a->out[2].data, hd * T * Dv);
    for (int64_t n = 1; n < N; n++) { /* St[n] = the state before chunk n (St[0] = 0 is not used) */
        int64_t t0 = (n - 1) * C;
        const double *gam = chunk_decays(w, u, hd, t0, C);
        void *S = xat(w, u->St, n * DS);
        if (n > 1) {
            memcpy(S, xat(w, u->St, (n - 1) * DS), (size_t)DS * (f32 ? sizeof(float) : sizeof(double)));
            scale_rows(w, S, gam);
        }
        mm(w, true, false, Dk, Dv, C, u->Kd, Dk, xat(w, a->in[2].data, row_off(&a->in[2], hd, t0)), lv, n > 1, S, Dv);
    }
    for (int64_t m = 0; m < Dk; m++) u->acc[m] = 0;
    for (int64_t n = N - 1; n >= 0; n--) {
        int64_t t0 = n * C, L = T - t0 < C ? T - t0 : C, nJ = chunk_prep(w, u, hd, t0, L);
        void *Vc = xat(w, a->in[2].data, row_off(&a->in[2], hd, t0));
        void *dOc = xat(w, a->in[4].data, row_off(&a->in[4], hd, t0)), *dVc = xat(w, dV, t0 * Dv);
        double *dq = u->dq, *dk = u->dk;
        bool last = n == N - 1; /* dS = 0 after the last chunk */
        memset(dq, 0, (size_t)(L * Dk) * sizeof(double));
        memset(dk, 0, (size_t)(L * Dk) * sizeof(double));
        mm(w, false, true, L, L, Dv, dOc, lo, Vc, lv, 0, u->dP, L);
        chunk_scores(w, u, L, nJ, true);
        mm(w, true, false, L, Dv, L, u->P, L, dOc, lo, 0, dVc, Dv);
        if (!last) {
            mm(w, false, false, L, Dv, Dk, u->Kd, Dk, u->dS, Dv, 1, dVc, Dv);
            mm(w, false, true, L, Dk, Dv, Vc, lv, u->dS, Dv, 0, u->tmp, Dk); /* dKd = V dS^T */
            for (int64_t s = 0; s < L; s++) {
                const double *x = xrow(w, u, nJ, s / w->c + 1);
                for (int64_t m = 0; m < Dk; m += 4) {
                    int64_t i = s * Dk + m;
                    v4_st(dk + i, v4_fma(xld4(f32, u->tmp, i) * v4_ld(u->F + i), v4_ld(x + m), v4_ld(dk + i)));
                }
            }
        }
        if (n > 0) { /* dQb = dO S^T, then dS for the previous chunk */
            mm(w, false, true, L, Dk, Dv, dOc, lo, xat(w, u->St, n * DS), Dv, 0, u->tmp, Dk);
            for (int64_t t = 0; t < L; t++) {
                const double *x = xrow(w, u, t / w->c, 0);
                for (int64_t m = 0; m < Dk; m += 4) {
                    int64_t i = t * Dk + m;
                    v4_st(dq + i, v4_fma(xld4(f32, u->tmp, i) * v4_ld(u->G + i), v4_ld(x + m), v4_ld(dq + i)));
                }
            }
            if (!last) scale_rows(w, u->dS, xrow(w, u, nJ, 0));
            mm(w, true, false, Dk, Dv, L, u->Qb, Dk, dOc, lo, !last, u->dS, Dv);
        }
        /* dg_t = sum over t' >= t of q_t' dq_t' - k_t' dk_t' (q and dq both with the scale); b
         * is free to hold it */
        for (int64_t t = L - 1; t >= 0; t--)
            for (int64_t m = 0; m < Dk; m++) {
                u->acc[m] += u->q[t * Dk + m] * dq[t * Dk + m] - u->k[t * Dk + m] * dk[t * Dk + m];
                u->b[t * Dk + m] = u->acc[m];
            }
        int64_t off = (hd * T + t0) * w->Dk0;
        store_rows(&a->out[0], off, L, w->Dk0, dq, Dk, w->scale);
        store_rows(&a->out[1], off, L, w->Dk0, dk, Dk, 1);
        store_rows(&a->out[3], off, L, w->Dk0, u->b, Dk, 1);
    }
}

static void chunk_range(void *ctx, int64_t lo, int64_t hi) {
    chunk_work *w = ctx;
    const int64_t T = w->T, Dk = w->Dk, Dv = w->Dv, C = w->C, nJ = w->nJ, N = (T + C - 1) / C;
    const size_t esz = w->f32 ? sizeof(float) : sizeof(double);
    /* f64 blocks, then blocks of the input dtype; every size a multiple of 64 bytes */
    size_t nc = (size_t)(C * Dk) * sizeof(double), nx = (size_t)((nJ + 1) * (nJ + 2) / 2 * Dk) * sizeof(double);
    size_t mc = (size_t)round_up(C * Dk * (int64_t)esz, 64), mp = (size_t)round_up(C * C * (int64_t)esz, 64);
    size_t ms = (size_t)round_up(Dk * Dv * (int64_t)esz, 64);
    size_t ne = (size_t)(w->c * (w->c - 1) / 2 * Dk) * sizeof(double);
    size_t f64 = 8 * nc + (size_t)round_up((int64_t)nx + Dk * 8, 64) + ne;
    size_t n = f64 + 5 * mc + mp + ms + (w->bwd ? mp + ms + (size_t)N * ms : 0);
    char *buf = alloc64(n);
    if (!buf) {
        oom(&w->stop, &w->oom);
        return;
    }
    chunk_buf u;
    double *d = (double *)buf;
    u.q = d, d += C * Dk;
    u.k = d, d += C * Dk;
    u.b = d, d += C * Dk;
    u.G = d, d += C * Dk;
    u.F = d, d += C * Dk;
    u.Kh = d, d += C * Dk;
    u.dq = d, d += C * Dk;
    u.dk = d, d += C * Dk;
    u.X = d, d += (nJ + 1) * (nJ + 2) / 2 * Dk;
    u.acc = d;
    u.E = (double *)(buf + 8 * nc + round_up((int64_t)nx + Dk * 8, 64));
    char *x = buf + f64;
    u.Qb = x, x += mc;
    u.Kd = x, x += mc;
    u.Qr = x, x += mc;
    u.Kr = x, x += mc;
    u.tmp = x, x += mc;
    u.P = x, x += mp;
    u.S = x, x += ms;
    u.dP = u.dS = u.St = NULL;
    if (w->bwd) {
        u.dP = x, x += mp;
        u.dS = x, x += ms;
        u.St = x;
    }
    for (int64_t hd = lo; hd < hi; hd++) {
        if (gm_halted(&w->stop)) break;
        if (w->bwd) chunk_backward(w, &u, hd);
        else chunk_forward(w, &u, hd);
    }
    free(buf);
}

static gm_status chunk_run(const gm_kargs *a, bool bwd) {
    const gm_kview *q = &a->in[0], *v = &a->in[2];
    chunk_work w = {.a = a, .T = q->shape[2], .Dk0 = q->shape[3], .Dk = round_up(q->shape[3], 8), .Dv = v->shape[3],
                    .C = a->k.gla.chunk, .c = a->k.gla.sub, .f32 = q->dtype == GM_F32, .bwd = bwd,
                    .scale = a->k.gla.scale};
    if (w.T == 0) return GM_OK;
    if (w.C > w.T) w.C = w.T;
    if (w.c > w.C) w.c = w.C;
    w.nJ = (w.C + w.c - 1) / w.c;
    gm_parallel_for(q->shape[0] * q->shape[1], gm_min_units(w.T * w.Dk * w.Dv + 1), a->nthreads, chunk_range, &w);
    if (w.oom) return GM_ENOMEM;
    return w.stop ? GM_EINTR : GM_OK;
}

GM_CPU_FWD_BWD(GLA_CHUNK, chunk_run)
