/* conv.c (cpu): 2-D convolution as im2col + gemm (OpenBLAS), its gradients as gemm + col2im,
 * and max/avg pooling. Images are contiguous NCHW. The column matrix of one image is
 * [C*kh*kw, OH*OW]: row r = (c, i, j) holds x[c, oh*sh - ph + i, ow*sw - pw + j] (0 in the
 * padding). The batch is split into one range of images per thread, each image one
 * single-threaded BLAS call on the thread's own column buffer (see "the three convolution
 * kernels"); the pools split over planes (disjoint outputs, so results do not depend on the
 * thread count). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "blas.h"
#include "parallel.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

#define MIN_WORK 32768 /* elements per thread below which a loop stays on one thread */

/* Geometry of one image: input C x H x W, kernel kh x kw, output OH x OW. */
typedef struct {
    int64_t C, H, W, kh, kw, sh, sw, ph, pw, OH, OW;
} cgeom;

/* x: an input [N,C,H,W] view; k: kernel dims (kh, kw); y: an output [N,*,OH,OW] view;
 * i: the stride and padding launch ints (sh sw ph pw at i[0..3], or kh kw sh sw ph pw). */
static void geom_of(cgeom *g, const gm_kview *x, int64_t kh, int64_t kw, const gm_kview *y, const int64_t *i) {
    *g = (cgeom){.C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .kh = kh, .kw = kw,
                 .sh = i[0], .sw = i[1], .ph = i[2], .pw = i[3], .OH = y->shape[2], .OW = y->shape[3]};
}

/* ---- im2col / col2im --------------------------------------------------------------------- */

/* The output columns ow whose input column ow*sw - pw + j lies inside [0, W): [*lo, *hi). */
static void valid_cols(const cgeom *g, int64_t j, int64_t *lo, int64_t *hi) {
    int64_t a = g->pw - j, b = g->W - 1 + g->pw - j; /* need a <= ow*sw <= b */
    *lo = a > 0 ? (a + g->sw - 1) / g->sw : 0;
    *hi = b < 0 ? 0 : b / g->sw + 1;
    if (*lo > g->OW) *lo = g->OW;
    if (*hi > g->OW) *hi = g->OW;
    if (*hi < *lo) *hi = *lo;
}

/* One output row of the column matrix: dst[ow] = src[ow * sw] for ow in [lo, hi), 0 elsewhere
 * (src = NULL: the whole row is padding). Plain loops the compiler vectorises: rows are short
 * (OW floats), so library memset/memcpy calls would cost more than the copy. */
static inline void fill_row_f32(float *dst, const float *src, int64_t OW, int64_t lo, int64_t hi, int64_t sw) {
    if (!src) lo = hi = OW;
    for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0;
    if (sw == 1)
        for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow];
    else if (sw == 2) /* a constant stride lets the compiler use interleaved vector loads */
        for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[2 * ow];
    else
        for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * sw];
    for (int64_t ow = hi; ow < OW; ow++) dst[ow] = 0;
}

static inline void fill_row_f64(double *dst, const double *src, int64_t OW, int64_t lo, int64_t hi, int64_t sw) {
    if (!src) lo = hi = OW;
    for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0;
    for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * sw];
    for (int64_t ow = hi; ow < OW; ow++) dst[ow] = 0;
}

/* im2col of one image x [C,H,W] into col [C*kh*kw, OH*OW]. */
static void im2col(const cgeom *g, const void *x, void *col, bool f64) {
    int64_t L = g->OH * g->OW;
    for (int64_t r = 0; r < g->C * g->kh * g->kw; r++) {
        int64_t ch = r / (g->kh * g->kw), i = r / g->kw % g->kh, j = r % g->kw, lo, hi;
        valid_cols(g, j, &lo, &hi);
        for (int64_t oh = 0; oh < g->OH; oh++) {
            int64_t ih = oh * g->sh - g->ph + i, o = r * L + oh * g->OW;
            int64_t s0 = (ch * g->H + ih) * g->W - g->pw + j; /* input offset of ow = 0 */
            bool pad = ih < 0 || ih >= g->H;
            if (f64)
                fill_row_f64((double *)col + o, pad ? NULL : (const double *)x + s0, g->OW, lo, hi, g->sw);
            else
                fill_row_f32((float *)col + o, pad ? NULL : (const float *)x + s0, g->OW, lo, hi, g->sw);
        }
    }
}

/* Adds col [C*kh*kw, OH*OW] back into the image x [C,H,W] (which the caller zeroed), in a fixed
 * order, so the sums are deterministic. */
static void col2im(const cgeom *g, const void *col, void *x, bool f64) {
    int64_t L = g->OH * g->OW;
    for (int64_t r = 0; r < g->C * g->kh * g->kw; r++) {
        int64_t ch = r / (g->kh * g->kw), i = r / g->kw % g->kh, j = r % g->kw, lo, hi;
        valid_cols(g, j, &lo, &hi);
        for (int64_t oh = 0; oh < g->OH; oh++) {
            int64_t ih = oh * g->sh - g->ph + i, o = r * L + oh * g->OW;
            if (ih < 0 || ih >= g->H) continue;
            int64_t s0 = (ch * g->H + ih) * g->W - g->pw + j;
            if (f64) {
                const double *src = (const double *)col + o;
                double *dst = (double *)x + s0;
                for (int64_t ow = lo; ow < hi; ow++) dst[ow * g->sw] += src[ow];
            } else if (g->sw == 1) {
                const float *src = (const float *)col + o;
                float *dst = (float *)x + s0;
                for (int64_t ow = lo; ow < hi; ow++) dst[ow] += src[ow];
            } else if (g->sw == 2) { /* constant stride: interleaved vector accesses */
                const float *src = (const float *)col + o;
                float *dst = (float *)x + s0;
                for (int64_t ow = lo; ow < hi; ow++) dst[2 * ow] += src[ow];
            } else {
                const float *src = (const float *)col + o;
                float *dst = (float *)x + s0;
                for (int64_t ow = lo; ow < hi; ow++) dst[ow * g->sw] += src[ow];
            }
        }
    }
}

/* ---- the three convolution kernels ---------------------------------------------------------
 * A batch of images is cut into one contiguous range of images per thread; each thread runs
 * im2col / col2im and one single-threaded gemm per image on its own column buffer, so no small
 * product is split across threads and every image's result is the same for any thread count.
 * The weight gradient sums per range into its own buffer; the ranges are added in order, so it
 * is reproducible for a thread count. A batch with fewer images than threads runs image by
 * image with each product split over the threads instead (one large image). */

typedef struct {
    cgeom g;
    bool f64;
    size_t esz;
    int64_t N, O, K, L, nranges;
    const char *x, *w, *dy; /* x [N,C,H,W], w [O,K], dy [N,O,L] as needed */
    char *y, *dx;           /* y [N,O,L] / dx [N,C,H,W] */
    char *cols;             /* nranges column buffers of K*L elements */
    char *dws;              /* weight gradient: nranges buffers of O*K elements */
    int nthreads;           /* threads for each product: 1 inside ranges */
    int stop;
    gm_status st;
} convwork;

static bool is_direct(const cgeom *g) { /* a 1x1, stride-1, unpadded kernel: x[n] is its column matrix */
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* C[M,N] = op(A) op(B) + beta C on w->nthreads threads (1: the calling thread). */
static gm_status gemm(const convwork *w, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A,
                      int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
    if (w->nthreads <= 1) {
        gm_cpu_gemm1(w->f64, ta, tb, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
        return GM_OK;
    }
    gm_gemm_args g = {.f64 = w->f64, .ta = ta, .tb = tb, .m = M, .n = N, .k = K, .lda = lda, .ldb = ldb, .ldc = ldc,
                      .alpha = 1, .beta = beta, .A = A, .B = B, .C = C};
    return gm_cpu_gemm(&g, w->nthreads);
}

static void fail(convwork *w, gm_status st) {
    w->st = st;
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELAXED);
}

/* Range r of the image ranges: images [N*r/nranges, N*(r+1)/nranges). */
static void range_of(const convwork *w, int64_t r, int64_t *n0, int64_t *n1) {
    *n0 = w->N * r / w->nranges;
    *n1 = w->N * (r + 1) / w->nranges;
}

static void fwd_ranges(void *ctx, int64_t r0, int64_t r1) {
    convwork *w = ctx;
    bool direct = is_direct(&w->g);
    size_t img = (size_t)(w->g.C * w->g.H * w->g.W) * w->esz;
    for (int64_t r = r0; r < r1; r++) {
        char *col = w->cols + (size_t)(r * w->K * w->L) * w->esz;
        int64_t n0, n1;
        range_of(w, r, &n0, &n1);
        for (int64_t n = n0; n < n1; n++) {
            if (gm_halted(&w->stop)) return;
            const char *xn = w->x + (size_t)n * img;
            if (!direct) im2col(&w->g, xn, col, w->f64);
            gm_status st = gemm(w, false, false, w->O, w->L, w->K, w->w, w->K, direct ? xn : col, w->L, 0.0,
                                w->y + (size_t)(n * w->O * w->L) * w->esz, w->L);
            if (st != GM_OK) { fail(w, st); return; }
        }
    }
}

static void dx_ranges(void *ctx, int64_t r0, int64_t r1) {
    convwork *w = ctx;
    bool direct = is_direct(&w->g);
    int64_t img = w->g.C * w->g.H * w->g.W;
    for (int64_t r = r0; r < r1; r++) {
        char *col = w->cols + (size_t)(r * w->K * w->L) * w->esz;
        int64_t n0, n1;
        range_of(w, r, &n0, &n1);
        for (int64_t n = n0; n < n1; n++) {
            if (gm_halted(&w->stop)) return;
            char *dxn = w->dx + (size_t)(n * img) * w->esz;
            gm_status st = gemm(w, true, false, w->K, w->L, w->O, w->w, w->K,
                                w->dy + (size_t)(n * w->O * w->L) * w->esz, w->L, 0.0, direct ? dxn : col, w->L);
            if (st != GM_OK) { fail(w, st); return; }
            if (!direct) {
                memset(dxn, 0, (size_t)img * w->esz);
                col2im(&w->g, col, dxn, w->f64);
            }
        }
    }
}

static void dw_ranges(void *ctx, int64_t r0, int64_t r1) {
    convwork *w = ctx;
    bool direct = is_direct(&w->g);
    size_t img = (size_t)(w->g.C * w->g.H * w->g.W) * w->esz;
    for (int64_t r = r0; r < r1; r++) {
        char *col = w->cols + (size_t)(r * w->K * w->L) * w->esz;
        char *dw = w->dws + (size_t)(r * w->O * w->K) * w->esz;
        int64_t n0, n1;
        range_of(w, r, &n0, &n1);
        for (int64_t n = n0; n < n1; n++) {
            if (gm_halted(&w->stop)) return;
            const char *xn = w->x + (size_t)n * img;
            if (!direct) im2col(&w->g, xn, col, w->f64);
            gm_status st = gemm(w, false, true, w->O, w->K, w->L, w->dy + (size_t)(n * w->O * w->L) * w->esz, w->L,
                                direct ? xn : col, w->L, n == n0 ? 0.0 : 1.0, dw, w->K);
            if (st != GM_OK) { fail(w, st); return; }
        }
    }
}

/* Sets up the work of one kernel call: the geometry from the input view xv (or dx), kernel size
 * from wv, output size from yv; nranges = min(N, threads) (1 range of products split over the
 * threads when N < threads); scratch for the column buffers and, for dw, the partial sums. */
static gm_status conv_setup(gm_ctx *c, const gm_kargs *a, const gm_kview *xv, const gm_kview *wv, const gm_kview *yv,
                            bool need_dws, const char *op, convwork *w) {
    *w = (convwork){.f64 = yv->dtype == GM_F64 || xv->dtype == GM_F64, .st = GM_OK};
    geom_of(&w->g, xv, wv->shape[2], wv->shape[3], yv, a->i);
    w->esz = w->f64 ? sizeof(double) : sizeof(float);
    w->N = xv->shape[0];
    w->O = wv->shape[0];
    w->K = w->g.C * w->g.kh * w->g.kw;
    w->L = w->g.OH * w->g.OW;
    int nt = a->nthreads > 0 ? a->nthreads : 1;
    w->nranges = w->N >= nt ? nt : 1;
    w->nthreads = w->N >= nt ? 1 : nt;
    size_t bytes = (size_t)(w->nranges * w->K * w->L) * w->esz;
    if (need_dws) bytes += (size_t)(w->nranges * w->O * w->K) * w->esz;
    w->cols = malloc(bytes ? bytes : 1);
    if (!w->cols) return gm_errf(c, GM_ENOMEM, "%s: out of memory for %zu bytes of column buffers", op, bytes);
    if (need_dws) w->dws = w->cols + (size_t)(w->nranges * w->K * w->L) * w->esz;
    return GM_OK;
}

/* Runs fn over the image ranges; GM_EINTR when interrupted. */
static gm_status conv_run(convwork *w, gm_range_fn fn) {
    gm_parallel_for(w->nranges, 1, (int)w->nranges, fn, w);
    free(w->cols);
    w->cols = NULL;
    if (w->st != GM_OK) return w->st;
    return w->stop ? GM_EINTR : GM_OK;
}

/* Bytes of a (contiguous) kernel view. */
static size_t view_bytes(const gm_kview *v) {
    return (size_t)gm_kview_numel(v) * gm_dtype_size(v->dtype);
}

/* CONV2D: y[n] = w [O, C*kh*kw] @ im2col(x[n]). */
gm_status gm_cpu_CONV2D(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *X = &a->in[0], *Wv = &a->in[1], *Y = &a->out[0];
    if (gm_kview_numel(Y) == 0) return GM_OK;
    if (X->shape[1] * Wv->shape[2] * Wv->shape[3] == 0) {
        memset(Y->data, 0, view_bytes(Y));
        return GM_OK;
    }
    convwork w;
    gm_status st = conv_setup(c, a, X, Wv, Y, false, "conv2d", &w);
    if (st != GM_OK) return st;
    w.x = X->data;
    w.w = Wv->data;
    w.y = Y->data;
    return conv_run(&w, fwd_ranges);
}

/* CONV2D_DX: dx[n] = col2im(w^T [C*kh*kw, O] @ dy[n] [O, OH*OW]). */
gm_status gm_cpu_CONV2D_DX(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *Wv = &a->in[0], *DY = &a->in[1], *DX = &a->out[0];
    if (gm_kview_numel(DX) == 0) return GM_OK;
    if (gm_kview_numel(DY) == 0) {
        memset(DX->data, 0, view_bytes(DX));
        return GM_OK;
    }
    convwork w;
    gm_status st = conv_setup(c, a, DX, Wv, DY, false, "conv2d backward", &w);
    if (st != GM_OK) return st;
    w.w = Wv->data;
    w.dy = DY->data;
    w.dx = DX->data;
    return conv_run(&w, dx_ranges);
}

/* CONV2D_DW: dw [O, C*kh*kw] = sum_n dy[n] [O, OH*OW] @ im2col(x[n])^T. */
gm_status gm_cpu_CONV2D_DW(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *X = &a->in[0], *DY = &a->in[1], *DW = &a->out[0];
    memset(DW->data, 0, view_bytes(DW));
    if (gm_kview_numel(DW) == 0 || gm_kview_numel(DY) == 0) return GM_OK;
    convwork w;
    gm_status st = conv_setup(c, a, X, DW, DY, true, "conv2d backward", &w);
    if (st != GM_OK) return st;
    w.x = X->data;
    w.dy = DY->data;
    char *dws = w.dws;
    int64_t nr = w.nranges, ok_n = w.O * w.K;
    gm_parallel_for(w.nranges, 1, (int)w.nranges, dw_ranges, &w);
    if (w.st == GM_OK && !w.stop)
        for (int64_t r = 0; r < nr; r++) /* ranges added in order: reproducible for a thread count */
            for (int64_t i = 0; i < ok_n; i++) {
                if (w.f64) ((double *)DW->data)[i] += ((const double *)dws)[r * ok_n + i];
                else ((float *)DW->data)[i] += ((const float *)dws)[r * ok_n + i];
            }
    free(w.cols);
    if (w.st != GM_OK) return w.st;
    return w.stop ? GM_EINTR : GM_OK;
}

/* ---- pooling: one unit of work is one [H,W] plane ------------------------------------------ */

typedef struct {
    cgeom g;
    const void *x, *gy;  /* input or output gradient */
    void *y, *dx;
    int32_t *idx;        /* max: argmax per output (read in backward) */
    const int32_t *cidx;
    bool f64;
} poolwork;

static double ld(const void *p, int64_t i, bool f64) { return f64 ? ((const double *)p)[i] : ((const float *)p)[i]; }
static void st(void *p, int64_t i, double v, bool f64) {
    if (f64) ((double *)p)[i] = v;
    else ((float *)p)[i] = (float)v;
}
static void acc(void *p, int64_t i, double v, bool f64) {
    if (f64) ((double *)p)[i] += v;
    else ((float *)p)[i] += (float)v;
}

/* Window of output (oh, ow) clipped to the image: rows [h0, h1), cols [w0, w1). */
static void window(const cgeom *g, int64_t oh, int64_t ow, int64_t *h0, int64_t *h1, int64_t *w0, int64_t *w1) {
    int64_t hs = oh * g->sh - g->ph, ws = ow * g->sw - g->pw;
    *h0 = hs < 0 ? 0 : hs;
    *w0 = ws < 0 ? 0 : ws;
    *h1 = hs + g->kh < g->H ? hs + g->kh : g->H;
    *w1 = ws + g->kw < g->W ? ws + g->kw : g->W;
}

/* Max over each window; ties keep the first element, a NaN wins (as torch). The rules keep the
 * padding <= half the kernel, so every window holds at least one element. */
static void max_planes(void *ctx, int64_t p0, int64_t p1) {
    const poolwork *w = ctx;
    const cgeom *g = &w->g;
    int64_t hw = g->H * g->W, ohw = g->OH * g->OW;
    for (int64_t p = p0; p < p1; p++)
        for (int64_t oh = 0; oh < g->OH; oh++)
            for (int64_t ow = 0; ow < g->OW; ow++) {
                int64_t h0, h1, w0, w1, best = -1;
                window(g, oh, ow, &h0, &h1, &w0, &w1);
                double m = 0;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) {
                        double v = ld(w->x, p * hw + ih * g->W + iw, w->f64);
                        if (best < 0 || v > m || (v != v && m == m)) {
                            m = v;
                            best = ih * g->W + iw;
                        }
                    }
                st(w->y, p * ohw + oh * g->OW + ow, m, w->f64);
                w->idx[p * ohw + oh * g->OW + ow] = (int32_t)best;
            }
}

static void max_bwd_planes(void *ctx, int64_t p0, int64_t p1) {
    const poolwork *w = ctx;
    int64_t hw = w->g.H * w->g.W, ohw = w->g.OH * w->g.OW;
    for (int64_t p = p0; p < p1; p++)
        for (int64_t o = 0; o < ohw; o++) acc(w->dx, p * hw + w->cidx[p * ohw + o], ld(w->gy, p * ohw + o, w->f64), w->f64);
}

/* Mean over each window with the padding counted: the divisor is always kh*kw. */
static void avg_planes(void *ctx, int64_t p0, int64_t p1) {
    const poolwork *w = ctx;
    const cgeom *g = &w->g;
    int64_t hw = g->H * g->W, ohw = g->OH * g->OW;
    double inv = 1.0 / (double)(g->kh * g->kw);
    for (int64_t p = p0; p < p1; p++)
        for (int64_t oh = 0; oh < g->OH; oh++)
            for (int64_t ow = 0; ow < g->OW; ow++) {
                int64_t h0, h1, w0, w1;
                window(g, oh, ow, &h0, &h1, &w0, &w1);
                double s = 0;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) s += ld(w->x, p * hw + ih * g->W + iw, w->f64);
                st(w->y, p * ohw + oh * g->OW + ow, s * inv, w->f64);
            }
}

static void avg_bwd_planes(void *ctx, int64_t p0, int64_t p1) {
    const poolwork *w = ctx;
    const cgeom *g = &w->g;
    int64_t hw = g->H * g->W, ohw = g->OH * g->OW;
    double inv = 1.0 / (double)(g->kh * g->kw);
    for (int64_t p = p0; p < p1; p++)
        for (int64_t oh = 0; oh < g->OH; oh++)
            for (int64_t ow = 0; ow < g->OW; ow++) {
                int64_t h0, h1, w0, w1;
                window(g, oh, ow, &h0, &h1, &w0, &w1);
                double v = ld(w->gy, p * ohw + oh * g->OW + ow, w->f64) * inv;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) acc(w->dx, p * hw + ih * g->W + iw, v, w->f64);
            }
}

/* Runs fn over the planes of x [N,C,H,W] (the input or dx view); y is an [N,C,OH,OW] view. */
static gm_status run_planes(const gm_kargs *a, const gm_kview *x, const gm_kview *y, poolwork *w, gm_range_fn fn) {
    geom_of(&w->g, x, a->i[0], a->i[1], y, a->i + 2);
    w->f64 = x->dtype == GM_F64;
    int64_t planes = x->shape[0] * x->shape[1];
    int64_t per = MIN_WORK / (w->g.H * w->g.W + w->g.OH * w->g.OW * w->g.kh * w->g.kw + 1) + 1;
    /* Chunks of planes, polling for an interrupt between them. */
    int64_t chunk = per * (a->nthreads > 0 ? a->nthreads : 1) * 4;
    for (int64_t p0 = 0; p0 < planes; p0 += chunk) {
        if (gm_interrupted()) return GM_EINTR;
        int64_t n = planes - p0 < chunk ? planes - p0 : chunk;
        poolwork sub = *w;
        int64_t xoff = p0 * w->g.H * w->g.W, yoff = p0 * w->g.OH * w->g.OW;
        size_t esz = w->f64 ? sizeof(double) : sizeof(float);
        if (sub.x) sub.x = (const char *)sub.x + (size_t)xoff * esz;
        if (sub.dx) sub.dx = (char *)sub.dx + (size_t)xoff * esz;
        if (sub.y) sub.y = (char *)sub.y + (size_t)yoff * esz;
        if (sub.gy) sub.gy = (const char *)sub.gy + (size_t)yoff * esz;
        if (sub.idx) sub.idx += yoff;
        if (sub.cidx) sub.cidx += yoff;
        gm_parallel_for(n, per, a->nthreads, fn, &sub);
    }
    return GM_OK;
}

/* MAX_POOL2D: in x; out values, i32 indices; i[0..5] = kh kw sh sw ph pw. */
gm_status gm_cpu_MAX_POOL2D(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    poolwork w = {.x = a->in[0].data, .y = a->out[0].data, .idx = a->out[1].data};
    return run_planes(a, &a->in[0], &a->out[0], &w, max_planes);
}

/* MAX_POOL2D_BWD: in dy, indices; out dx (overwritten). */
gm_status gm_cpu_MAX_POOL2D_BWD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    memset(a->out[0].data, 0, view_bytes(&a->out[0]));
    poolwork w = {.gy = a->in[0].data, .cidx = a->in[1].data, .dx = a->out[0].data};
    return run_planes(a, &a->out[0], &a->in[0], &w, max_bwd_planes);
}

/* AVG_POOL2D: in x; out y; i[] as MAX_POOL2D. */
gm_status gm_cpu_AVG_POOL2D(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    poolwork w = {.x = a->in[0].data, .y = a->out[0].data};
    return run_planes(a, &a->in[0], &a->out[0], &w, avg_planes);
}

/* AVG_POOL2D_BWD: in dy; out dx (overwritten); i[] as MAX_POOL2D. */
gm_status gm_cpu_AVG_POOL2D_BWD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    memset(a->out[0].data, 0, view_bytes(&a->out[0]));
    poolwork w = {.gy = a->in[0].data, .dx = a->out[0].data};
    return run_planes(a, &a->out[0], &a->in[0], &w, avg_bwd_planes);
}
