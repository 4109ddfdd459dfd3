/* norm.c (cpu): layer_norm and rms_norm over contiguous rows [R, N]. Each row is walked in
 * blocks of 4 elements converted to 4 doubles (GCC vector extensions; a short last block is
 * padded so that it adds nothing), so f32 rows are summed in double and y, dx are computed in
 * double and rounded once. A row's statistics take two passes (the mean, then the squares of
 * x - mean, on a row still in cache), with four block accumulators so the adds pipeline. Rows
 * are split over threads. The backward recomputes mean and rstd; dweight and dbias are summed
 * per fixed chunk of rows (the chunking depends on the shape only) in double, then the chunks
 * are added in order, so the bits do not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "vmath.h"

/* Instantiated per dtype and norm: the dtype switches and the rms branches fold away. */
#define NORM_INLINE static inline __attribute__((always_inline))

#define POLL 65536          /* forward: elements between interrupt polls (at least one row) */
#define CHUNK_ELEMS 16384   /* backward: elements of x per chunk of rows (at least one row; polls once) */
#define MAX_CHUNKS 256      /* backward: at most this many chunks (partials of 2 x 256 x N doubles) */

/* p[i..i+k-1] as doubles, k = min(n - i, 4) for a row of n; lanes past the row hold pad. */
NORM_INLINE v4d ld4(const void *p, gm_dtype t, int64_t i, int64_t n, double pad) {
    if (i + 4 <= n) return t == GM_F32 ? v4_ld_f32((const float *)p + i) : v4_ld((const double *)p + i);
    v4d v;
    for (int j = 0; j < 4; j++) v[j] = i + j < n ? gm_elem_load(p, t, i + j) : pad;
    return v;
}

/* p[i..i+k-1] = the first k lanes of v (f32 rounds once), k as ld4. */
NORM_INLINE void st4(void *p, gm_dtype t, int64_t i, int64_t n, v4d v) {
    if (i + 4 <= n) {
        if (t == GM_F32) v4_st_f32((float *)p + i, v);
        else v4_st((double *)p + i, v);
        return;
    }
    for (int j = 0; i + j < n; j++) gm_elem_store(p, t, i + j, v[j]);
}

/* Block i of row_sum: (x - m)^2, or x when sq is false. Padding lanes hold m: they give 0. */
NORM_INLINE v4d sum_term(const void *x, gm_dtype t, int64_t i, int64_t n, double m, bool sq) {
    v4d d = ld4(x, t, i, n, m) - m;
    return sq ? d * d : d;
}

/* sum_i (x[i] - m)^2 over the row x[0..n-1], or sum_i x[i] when sq is false (m = 0 then). */
NORM_INLINE double row_sum(const void *x, gm_dtype t, int64_t n, double m, bool sq) {
    v4d s0 = {0, 0, 0, 0}, s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 += sum_term(x, t, i, n, m, sq);
        s1 += sum_term(x, t, i + 4, n, m, sq);
        s2 += sum_term(x, t, i + 8, n, m, sq);
        s3 += sum_term(x, t, i + 12, n, m, sq);
    }
    for (; i < n; i += 4) s0 += sum_term(x, t, i, n, m, sq);
    return v4_hsum((s0 + s1) + (s2 + s3));
}

/* The mean (0 for rms_norm: x is not centred) and rstd = 1/sqrt(var + eps) of the row x[0..n-1]. */
NORM_INLINE void row_stats(const void *x, gm_dtype t, int64_t n, bool rms, double eps, double *mean, double *rstd) {
    double m = rms ? 0 : row_sum(x, t, n, 0, false) / (double)n;
    *mean = m;
    *rstd = 1 / sqrt(row_sum(x, t, n, m, true) / (double)n + eps);
}

typedef struct {
    const gm_kargs *a;
    gm_dtype t;
    bool rms;
    int64_t R, N;
    double eps;
    /* backward */
    int64_t chunk, nchunks;  /* rows per chunk, chunks */
    void *dx, *dw, *db;      /* outputs, NULL when not wanted */
    double *pw, *pb;         /* partial sums of dw, db per chunk [nchunks, N], NULL when not wanted */
    int stop;
} norm_work;

/* ---- forward ----------------------------------------------------------------------------- */

/* Block i of one row's y. */
NORM_INLINE void fwd_block(const void *x, const void *wt, const void *b, void *y, gm_dtype t, int64_t i, int64_t n,
                           double m, double rs, bool rms) {
    v4d v = (ld4(x, t, i, n, 0) - m) * rs * ld4(wt, t, i, n, 0);
    st4(y, t, i, n, rms ? v : v + ld4(b, t, i, n, 0));
}

NORM_INLINE void fwd_rows(norm_work *w, int64_t lo, int64_t hi, gm_dtype t, bool rms) {
    const gm_kargs *a = w->a;
    int64_t N = w->N, every = POLL / N > 0 ? POLL / N : 1, es = (int64_t)gm_dtype_size(t);
    const void *wt = a->in[1].data, *b = rms ? NULL : a->in[2].data;
    for (int64_t r = lo, poll = 0; r < hi; r++) {
        if (--poll <= 0) {
            if (gm_halted(&w->stop)) return;
            poll = every;
        }
        const void *x = (const char *)a->in[0].data + r * N * es;
        void *y = (char *)a->out[0].data + r * N * es;
        double m, rs;
        row_stats(x, t, N, rms, w->eps, &m, &rs);
        int64_t i = 0;
        for (; i + 4 <= N; i += 4) fwd_block(x, wt, b, y, t, i, N, m, rs, rms);
        if (i < N) fwd_block(x, wt, b, y, t, i, N, m, rs, rms);
    }
}

/* A gm_parallel_for range running body with the dtype and the rms flag as constants, so each of
 * the four cases compiles to its own loop. */
#define NORM_RANGE(name, body)                                  \
    static void name(void *ctx, int64_t lo, int64_t hi) {       \
        norm_work *w = ctx;                                     \
        if (w->t == GM_F32) {                                   \
            if (w->rms) body(w, lo, hi, GM_F32, true);          \
            else body(w, lo, hi, GM_F32, false);                \
        } else {                                                \
            if (w->rms) body(w, lo, hi, GM_F64, true);          \
            else body(w, lo, hi, GM_F64, false);                \
        }                                                       \
    }

NORM_RANGE(fwd_range, fwd_rows)

static gm_status norm_fwd(gm_ctx *c, const gm_kargs *a, bool rms) {
    const gm_norm_args *p = &a->k.norm;
    norm_work w = {.a = a, .t = a->in[0].dtype, .rms = rms, .R = p->rows, .N = p->n, .eps = p->eps};
    if (w.N == 0) return GM_OK;
    gm_parallel_for(w.R, gm_min_units(w.N), a->nthreads, fwd_range, &w);
    return w.stop ? gm_errf(c, GM_EINTR, "%s: interrupted", rms ? "rms_norm" : "layer_norm") : GM_OK;
}

/* ---- backward ---------------------------------------------------------------------------- */

/* Block i of one row's sums: sg += g w, sgx += g w xhat; pw += g xhat, pb += g. */
NORM_INLINE void bwd_sums(const void *x, const void *wt, const void *g, double *pw, double *pb, gm_dtype t, int64_t i,
                          int64_t n, double m, double rs, v4d *sg, v4d *sgx) {
    v4d gi = ld4(g, t, i, n, 0), xh = (ld4(x, t, i, n, m) - m) * rs, gw = gi * ld4(wt, t, i, n, 0);
    *sg += gw;
    *sgx += gw * xh;
    if (pw) st4(pw, GM_F64, i, n, ld4(pw, GM_F64, i, n, 0) + gi * xh);
    if (pb) st4(pb, GM_F64, i, n, ld4(pb, GM_F64, i, n, 0) + gi);
}

/* Block i of one row's dx = rstd (g w - mean(g w) - xhat mean(g w xhat)) (rms_norm: mg = 0). */
NORM_INLINE void bwd_dx(const void *x, const void *wt, const void *g, void *dx, gm_dtype t, int64_t i, int64_t n,
                        double m, double rs, double mg, double mgx) {
    v4d xh = (ld4(x, t, i, n, 0) - m) * rs, gw = ld4(g, t, i, n, 0) * ld4(wt, t, i, n, 0);
    st4(dx, t, i, n, rs * (gw - mg - xh * mgx));
}

/* One row: with xhat = (x - mean) rstd and gw = g w, dx = rstd (gw - mean(gw) - xhat mean(gw xhat))
 * (rms_norm: no mean(gw) term, x is not centred); pw += g xhat, pb += g. */
NORM_INLINE void bwd_row(norm_work *w, int64_t r, double *pw, double *pb, gm_dtype t, bool rms) {
    const gm_kargs *a = w->a;
    int64_t N = w->N, es = (int64_t)gm_dtype_size(t);
    const void *x = (const char *)a->in[0].data + r * N * es, *wt = a->in[1].data;
    const void *g = (const char *)a->in[2].data + r * N * es;
    void *dx = w->dx ? (char *)w->dx + r * N * es : NULL;
    double m, rs;
    row_stats(x, t, N, rms, w->eps, &m, &rs);
    v4d sg0 = {0, 0, 0, 0}, sg1 = sg0, sgx0 = sg0, sgx1 = sg0;
    int64_t i = 0;
    for (; i + 8 <= N; i += 8) {
        bwd_sums(x, wt, g, pw, pb, t, i, N, m, rs, &sg0, &sgx0);
        bwd_sums(x, wt, g, pw, pb, t, i + 4, N, m, rs, &sg1, &sgx1);
    }
    for (; i < N; i += 4) bwd_sums(x, wt, g, pw, pb, t, i, N, m, rs, &sg0, &sgx0);
    if (!dx) return;
    double mg = rms ? 0 : v4_hsum(sg0 + sg1) / (double)N, mgx = v4_hsum(sgx0 + sgx1) / (double)N;
    for (i = 0; i + 4 <= N; i += 4) bwd_dx(x, wt, g, dx, t, i, N, m, rs, mg, mgx);
    if (i < N) bwd_dx(x, wt, g, dx, t, i, N, m, rs, mg, mgx);
}

/* Chunks [lo, hi): each chunk's rows in order, into that chunk's partial sums. */
NORM_INLINE void bwd_chunks(norm_work *w, int64_t lo, int64_t hi, gm_dtype t, bool rms) {
    for (int64_t ch = lo; ch < hi; ch++) {
        if (gm_halted(&w->stop)) return;
        double *pw = w->pw ? w->pw + ch * w->N : NULL, *pb = w->pb ? w->pb + ch * w->N : NULL;
        int64_t end = (ch + 1) * w->chunk < w->R ? (ch + 1) * w->chunk : w->R;
        for (int64_t r = ch * w->chunk; r < end; r++) bwd_row(w, r, pw, pb, t, rms);
    }
}

NORM_RANGE(bwd_range, bwd_chunks)

/* Columns [lo, hi) of dw and db: the chunks' partial sums added in chunk order. */
static void sum_range(void *ctx, int64_t lo, int64_t hi) {
    norm_work *w = ctx;
    for (int64_t j = lo; j < hi; j++) {
        double sw = 0, sb = 0;
        for (int64_t ch = 0; ch < w->nchunks; ch++) {
            if (w->pw) sw += w->pw[ch * w->N + j];
            if (w->pb) sb += w->pb[ch * w->N + j];
        }
        if (w->dw) gm_elem_store(w->dw, w->t, j, sw);
        if (w->db) gm_elem_store(w->db, w->t, j, sb);
    }
}

static gm_status norm_bwd(gm_ctx *c, const gm_kargs *a, bool rms) {
    const char *op = rms ? "rms_norm" : "layer_norm";
    const gm_norm_args *p = &a->k.norm;
    norm_work w = {.a = a, .t = a->in[0].dtype, .rms = rms, .R = p->rows, .N = p->n, .eps = p->eps};
    int mask = (int)p->outs, k = 0;
    if (mask & 1) w.dx = a->out[k++].data;
    if (mask & 2) w.dw = a->out[k++].data;
    if (mask & 4) w.db = a->out[k++].data;
    if (w.N == 0) return GM_OK;
    w.chunk = CHUNK_ELEMS / w.N > 0 ? CHUNK_ELEMS / w.N : 1;
    if ((w.R + w.chunk - 1) / w.chunk > MAX_CHUNKS) w.chunk = (w.R + MAX_CHUNKS - 1) / MAX_CHUNKS;
    w.nchunks = (w.R + w.chunk - 1) / w.chunk;
    size_t np = (size_t)(w.nchunks * w.N);
    if (w.dw && !(w.pw = calloc(np ? np : 1, sizeof(double))))
        return gm_errf(c, GM_ENOMEM, "%s: out of memory for %zu partial sums", op, np);
    if (w.db && !(w.pb = calloc(np ? np : 1, sizeof(double)))) {
        free(w.pw);
        return gm_errf(c, GM_ENOMEM, "%s: out of memory for %zu partial sums", op, np);
    }
    gm_parallel_for(w.nchunks, gm_min_units(w.chunk * w.N), a->nthreads, bwd_range, &w);
    if (!w.stop && (w.dw || w.db)) gm_parallel_for(w.N, gm_min_units(w.nchunks), a->nthreads, sum_range, &w);
    free(w.pw);
    free(w.pb);
    return w.stop ? gm_errf(c, GM_EINTR, "%s: interrupted", op) : GM_OK;
}

gm_status gm_cpu_LAYER_NORM(gm_ctx *c, const gm_kargs *a) { return norm_fwd(c, a, false); }
gm_status gm_cpu_LAYER_NORM_BWD(gm_ctx *c, const gm_kargs *a) { return norm_bwd(c, a, false); }
gm_status gm_cpu_RMS_NORM(gm_ctx *c, const gm_kargs *a) { return norm_fwd(c, a, true); }
gm_status gm_cpu_RMS_NORM_BWD(gm_ctx *c, const gm_kargs *a) { return norm_bwd(c, a, true); }
