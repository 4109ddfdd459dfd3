/* conv.c (cpu): 2-D convolution as im2col + gemm (OpenBLAS), its gradients as gemm + col2im,
 * and max/avg pooling. Images are contiguous NCHW. The column matrix of one image is
 * [C*kh*kw, OH*OW]: row r = (c, i, j) holds x[c, oh*sh - ph + i, ow*sw - pw + j] (0 in the
 * padding). Each image's gemm is one BLAS call; im2col/col2im stay on the calling thread, and
 * the pools split over planes (disjoint outputs, so results do not depend on the thread count). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "blas.h"

#define MIN_WORK 32768 /* elements per thread below which a loop stays on one thread */

/* Geometry of one image: input C x H x W, kernel kh x kw, output OH x OW. */
typedef struct {
    int64_t C, H, W, kh, kw, sh, sw, ph, pw, OH, OW;
} cgeom;

/* x: an input [N,C,H,W] view; k: kernel dims (kh, kw); y: an output [N,*,OH,OW] view; a: the
 * launch's stride and padding. */
static void geom_of(cgeom *g, const gm_kview *x, int64_t kh, int64_t kw, const gm_kview *y, const gm_conv_args *a) {
    *g = (cgeom){.C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .kh = kh, .kw = kw,
                 .sh = a->sh, .sw = a->sw, .ph = a->ph, .pw = a->pw, .OH = y->shape[2], .OW = y->shape[3]};
}

static bool is_direct(const cgeom *g) { /* a 1x1, stride-1, unpadded kernel: x[n] is its column matrix */
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
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

/* im2col of one image x [C,H,W] into col [C*kh*kw, OH*OW]. Runs on the calling thread: it
 * alternates with BLAS calls, and OpenMP threads spinning next to OpenBLAS's own threads cost
 * far more than the copy gains. Zero bits are 0.0 in both float dtypes, so padding is memset. */
static void im2col(const cgeom *g, const void *x, void *col, bool f64) {
    size_t esz = f64 ? sizeof(double) : sizeof(float);
    int64_t L = g->OH * g->OW;
    for (int64_t r = 0; r < g->C * g->kh * g->kw; r++) {
        int64_t ch = r / (g->kh * g->kw), i = r / g->kw % g->kh, j = r % g->kw, lo, hi;
        valid_cols(g, j, &lo, &hi);
        for (int64_t oh = 0; oh < g->OH; oh++) {
            int64_t ih = oh * g->sh - g->ph + i, o = r * L + oh * g->OW;
            char *dst = (char *)col + (size_t)o * esz;
            if (ih < 0 || ih >= g->H) {
                memset(dst, 0, (size_t)g->OW * esz);
                continue;
            }
            memset(dst, 0, (size_t)lo * esz);
            memset(dst + (size_t)hi * esz, 0, (size_t)(g->OW - hi) * esz);
            int64_t s0 = (ch * g->H + ih) * g->W - g->pw + j; /* input offset of ow = 0 */
            if (g->sw == 1) {
                memcpy(dst + (size_t)lo * esz, (const char *)x + (size_t)(s0 + lo) * esz, (size_t)(hi - lo) * esz);
            } else if (f64) {
                for (int64_t ow = lo; ow < hi; ow++) ((double *)dst)[ow] = ((const double *)x)[s0 + ow * g->sw];
            } else {
                for (int64_t ow = lo; ow < hi; ow++) ((float *)dst)[ow] = ((const float *)x)[s0 + ow * g->sw];
            }
        }
    }
}

/* Adds col [C*kh*kw, OH*OW] back into the image x [C,H,W] (which the caller zeroed). Serial
 * for the same reason as im2col; a fixed order keeps the sums deterministic. */
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
            } else {
                const float *src = (const float *)col + o;
                float *dst = (float *)x + s0;
                for (int64_t ow = lo; ow < hi; ow++) dst[ow * g->sw] += src[ow];
            }
        }
    }
}

/* C[M,N] = op(A) op(B) + beta C, row-major, in the view's dtype, split over nthreads. */
static gm_status gemm(bool f64, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                      const void *B, int64_t ldb, double beta, void *Cm, int64_t ldc, int nthreads) {
    gm_gemm_args g = {.f64 = f64, .ta = ta, .tb = tb, .m = M, .n = N, .k = K, .lda = lda, .ldb = ldb, .ldc = ldc,
                      .alpha = 1, .beta = beta, .A = A, .B = B, .C = Cm};
    return gm_cpu_gemm(&g, nthreads);
}

static void *scratch(gm_ctx *c, size_t n, const char *op) {
    void *p = malloc(n ? n : 1);
    if (!p) gm_errf(c, GM_ENOMEM, "%s: out of memory for a %zu-byte column buffer", op, n);
    return p;
}

/* Bytes of a (contiguous) kernel view. */
static size_t view_bytes(const gm_kview *v) {
    return (size_t)gm_kview_numel(v) * gm_dtype_size(v->dtype);
}

/* CONV2D: y[n] = w [O, C*kh*kw] @ im2col(x[n]). */
gm_status gm_cpu_CONV2D(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *X = &a->in[0], *Wv = &a->in[1], *Y = &a->out[0];
    cgeom g;
    geom_of(&g, X, Wv->shape[2], Wv->shape[3], Y, &a->k.conv);
    bool f64 = Y->dtype == GM_F64;
    size_t esz = f64 ? sizeof(double) : sizeof(float);
    int64_t N = X->shape[0], O = Wv->shape[0], K = g.C * g.kh * g.kw, L = g.OH * g.OW;
    if (N * O * L == 0) return GM_OK;
    if (K == 0) {
        memset(Y->data, 0, view_bytes(Y));
        return GM_OK;
    }
    bool direct = is_direct(&g);
    void *col = direct ? NULL : scratch(c, (size_t)(K * L) * esz, "conv2d");
    if (!direct && !col) return GM_ENOMEM;
    for (int64_t n = 0; n < N; n++) {
        if (gm_interrupted()) {
            free(col);
            return GM_EINTR;
        }
        const char *xn = (const char *)X->data + (size_t)(n * g.C * g.H * g.W) * esz;
        if (!direct) im2col(&g, xn, col, f64);
        gm_status st = gemm(f64, false, false, O, L, K, Wv->data, K, direct ? xn : col, L, 0.0,
                            (char *)Y->data + (size_t)(n * O * L) * esz, L, a->nthreads);
        if (st != GM_OK) {
            free(col);
            return st;
        }
    }
    free(col);
    return GM_OK;
}

/* CONV2D_DX: dx[n] = col2im(w^T [C*kh*kw, O] @ dy[n] [O, OH*OW]). */
gm_status gm_cpu_CONV2D_DX(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *Wv = &a->in[0], *DY = &a->in[1], *DX = &a->out[0];
    cgeom g;
    geom_of(&g, DX, Wv->shape[2], Wv->shape[3], DY, &a->k.conv);
    bool f64 = DX->dtype == GM_F64;
    size_t esz = f64 ? sizeof(double) : sizeof(float);
    int64_t N = DX->shape[0], O = Wv->shape[0], K = g.C * g.kh * g.kw, L = g.OH * g.OW, img = g.C * g.H * g.W;
    memset(DX->data, 0, view_bytes(DX));
    if (N * img == 0 || O * L == 0) return GM_OK;
    bool direct = is_direct(&g);
    void *col = direct ? NULL : scratch(c, (size_t)(K * L) * esz, "conv2d backward");
    if (!direct && !col) return GM_ENOMEM;
    for (int64_t n = 0; n < N; n++) {
        if (gm_interrupted()) {
            free(col);
            return GM_EINTR;
        }
        char *dxn = (char *)DX->data + (size_t)(n * img) * esz;
        gm_status st = gemm(f64, true, false, K, L, O, Wv->data, K, (const char *)DY->data + (size_t)(n * O * L) * esz,
                            L, 0.0, direct ? dxn : col, L, a->nthreads);
        if (st != GM_OK) {
            free(col);
            return st;
        }
        if (!direct) col2im(&g, col, dxn, f64);
    }
    free(col);
    return GM_OK;
}

/* CONV2D_DW: dw [O, C*kh*kw] = sum_n dy[n] [O, OH*OW] @ im2col(x[n])^T. */
gm_status gm_cpu_CONV2D_DW(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *X = &a->in[0], *DY = &a->in[1], *DW = &a->out[0];
    cgeom g;
    geom_of(&g, X, DW->shape[2], DW->shape[3], DY, &a->k.conv);
    bool f64 = DW->dtype == GM_F64;
    size_t esz = f64 ? sizeof(double) : sizeof(float);
    int64_t N = X->shape[0], O = DW->shape[0], K = g.C * g.kh * g.kw, L = g.OH * g.OW;
    memset(DW->data, 0, view_bytes(DW));
    if (O * K == 0 || N * L == 0) return GM_OK;
    bool direct = is_direct(&g);
    void *col = direct ? NULL : scratch(c, (size_t)(K * L) * esz, "conv2d backward");
    if (!direct && !col) return GM_ENOMEM;
    for (int64_t n = 0; n < N; n++) {
        if (gm_interrupted()) {
            free(col);
            return GM_EINTR;
        }
        const char *xn = (const char *)X->data + (size_t)(n * g.C * g.H * g.W) * esz;
        if (!direct) im2col(&g, xn, col, f64);
        gm_status st = gemm(f64, false, true, O, K, L, (const char *)DY->data + (size_t)(n * O * L) * esz, L,
                            direct ? xn : col, L, 1.0, DW->data, K, a->nthreads);
        if (st != GM_OK) {
            free(col);
            return st;
        }
    }
    free(col);
    return GM_OK;
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
    geom_of(&w->g, x, a->k.conv.kh, a->k.conv.kw, y, &a->k.conv);
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
