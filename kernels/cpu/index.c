/* index.c (cpu): gather/scatter_add, index_select/index_add, topk and one_hot kernels.
 * Indices are i32 and every one is bounds-checked here (GM_EINDEX names the op, the index,
 * the dim and its size); a bad index never touches memory. Copy-like kernels move elements
 * by size (4 bytes: f32/i32, 8: f64); scatters add serially so results never depend on the
 * thread count; gathers run in parallel chunks. */
#include "backend.h"
#include "parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Prototypes of this backend's kernels (the CPU table is built from the same X-macro). */
#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

#define CHUNK ((int64_t)1 << 16) /* elements between interrupt polls */
#define NV 3                     /* views a walker follows at most */

/* Row-major walk over a shape keeping the element offsets of up to NV views. */
typedef struct {
    int nd, nv;
    int64_t shape[GM_MAX_DIMS];
    int64_t st[NV][GM_MAX_DIMS];
    int64_t pos[GM_MAX_DIMS];
    int64_t off[NV];
} walker;

static void walk_init(walker *w, int nd, const int64_t *shape, int nv,
                      const int64_t *const *st, int64_t start)
{
    w->nd = nd;
    w->nv = nv;
    for (int v = 0; v < nv; v++) w->off[v] = 0;
    for (int d = nd - 1; d >= 0; d--) {
        int64_t p = shape[d] > 0 ? start % shape[d] : 0;
        start = shape[d] > 0 ? start / shape[d] : 0;
        w->shape[d] = shape[d];
        w->pos[d] = p;
        for (int v = 0; v < nv; v++) {
            w->st[v][d] = st[v][d];
            w->off[v] += p * st[v][d];
        }
    }
}

static inline void walk_next(walker *w)
{
    for (int d = w->nd - 1; d >= 0; d--) {
        w->pos[d]++;
        for (int v = 0; v < w->nv; v++) w->off[v] += w->st[v][d];
        if (w->pos[d] < w->shape[d]) return;
        for (int v = 0; v < w->nv; v++) w->off[v] -= w->st[v][d] * w->shape[d];
        w->pos[d] = 0;
    }
}

/* o[oo] += s[so]; false when an i32 sum does not fit (o[oo] is then left as it was). */
static inline bool add_at(void *o, int64_t oo, const void *s, int64_t so, gm_dtype t)
{
    switch (t) {
    case GM_F32: ((float *)o)[oo] += ((const float *)s)[so]; return true;
    case GM_F64: ((double *)o)[oo] += ((const double *)s)[so]; return true;
    default: {
        int64_t v = (int64_t)((int32_t *)o)[oo] + ((const int32_t *)s)[so];
        if (v != (int32_t)v) return false;
        ((int32_t *)o)[oo] = (int32_t)v;
        return true;
    }
    }
}

static gm_status add_overflow(gm_ctx *c, const char *op, const void *o, int64_t oo, const void *s, int64_t so)
{
    return gm_errf(c, GM_EARG, "%s: i32 overflow (%d + %d does not fit i32)", op, ((const int32_t *)o)[oo],
                   ((const int32_t *)s)[so]);
}

static gm_status bad_index(gm_ctx *c, const char *op, int32_t k, int dim, int64_t size)
{
    return gm_errf(c, GM_EINDEX, "%s: index %d out of range for dim %d of size %lld", op, (int)k,
                   dim, (long long)size);
}

/* First index of view ix (any shape) outside [0, size), in row-major order. */
static gm_status check_index(gm_ctx *c, const char *op, const gm_kview *ix, int dim,
                             int64_t size)
{
    int64_t n = gm_shape_numel(ix->ndim, ix->shape);
    const int64_t *st[1] = {ix->stride};
    const int32_t *id = ix->data;
    walker w;
    walk_init(&w, ix->ndim, ix->shape, 1, st, 0);
    for (int64_t i = 0; i < n; i++) {
        int32_t k = id[w.off[0]];
        if (k < 0 || k >= size) return bad_index(c, op, k, dim, size);
        walk_next(&w);
    }
    return GM_OK;
}

/* A copy loop over elements [lo, hi) of a walk; ranges run on separate threads. */
typedef struct {
    const gm_kargs *a;
    size_t esz;
    int64_t xst[GM_MAX_DIMS];
    int stop;
} copy_job;

/* out[p] = x[p with p[dim] = index[p]] over the index shape; esz is a constant once inlined. */
static inline void gather_body(copy_job *j, int64_t lo, int64_t hi, size_t esz)
{
    const gm_kview *x = &j->a->in[0], *ix = &j->a->in[1], *o = &j->a->out[0];
    int dim = (int)j->a->i[0];
    int64_t xs = x->stride[dim];
    const int64_t *st[3] = {o->stride, ix->stride, j->xst};
    walker w;
    walk_init(&w, ix->ndim, ix->shape, 3, st, lo);
    for (int64_t c0 = lo; c0 < hi; c0 += CHUNK) {
        if (gm_halted(&j->stop)) return;
        int64_t c1 = c0 + CHUNK < hi ? c0 + CHUNK : hi;
        for (int64_t i = c0; i < c1; i++) {
            int64_t k = ((const int32_t *)ix->data)[w.off[1]];
            memcpy((char *)o->data + w.off[0] * (int64_t)esz,
                   (const char *)x->data + (w.off[2] + k * xs) * (int64_t)esz, esz);
            walk_next(&w);
        }
    }
}

static void gather_range(void *ctx, int64_t lo, int64_t hi)
{
    copy_job *j = ctx;
    if (j->esz == 4) gather_body(j, lo, hi, 4);
    else gather_body(j, lo, hi, 8);
}

static gm_status gather_run(const gm_kargs *a)
{
    copy_job j = {.a = a, .esz = gm_dtype_size(a->in[0].dtype)};
    memcpy(j.xst, a->in[0].stride, sizeof j.xst);
    j.xst[a->i[0]] = 0;
    gm_parallel_for(gm_shape_numel(a->in[1].ndim, a->in[1].shape), GM_PAR_MIN, a->nthreads,
                    gather_range, &j);
    return j.stop ? GM_EINTR : GM_OK;
}

gm_status gm_cpu_GATHER(gm_ctx *c, const gm_kargs *a)
{
    int dim = (int)a->i[0];
    gm_status s = check_index(c, "gather", &a->in[1], dim, a->in[0].shape[dim]);
    if (s) return s;
    s = gather_run(a);
    return s == GM_EINTR ? gm_errf(c, GM_EINTR, "gather: interrupted") : s;
}

/* out[p with p[dim] = index[p]] += src[p] over the index shape, serially in row-major order. */
gm_status gm_cpu_SCATTER_ADD(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *ix = &a->in[0], *src = &a->in[1], *o = &a->out[0];
    int dim = (int)a->i[0], nd = ix->ndim;
    int64_t n = gm_shape_numel(nd, ix->shape), size = o->shape[dim], os = o->stride[dim];
    int64_t ost[GM_MAX_DIMS];
    memcpy(ost, o->stride, sizeof ost);
    ost[dim] = 0;
    const int64_t *st[3] = {ix->stride, src->stride, ost};
    const int32_t *id = ix->data;
    walker w;
    walk_init(&w, nd, ix->shape, 3, st, 0);
    for (int64_t i = 0; i < n; i++) {
        if ((i & (CHUNK - 1)) == 0 && gm_interrupted())
            return gm_errf(c, GM_EINTR, "scatter_add: interrupted");
        int32_t k = id[w.off[0]];
        if (k < 0 || k >= size) return bad_index(c, "scatter_add", k, dim, size);
        if (!add_at(o->data, w.off[2] + k * os, src->data, w.off[1], o->dtype))
            return add_overflow(c, "scatter_add", o->data, w.off[2] + k * os, src->data, w.off[1]);
        walk_next(&w);
    }
    return GM_OK;
}

/* out[p] = x[p with p[dim] = index[p[dim]]] over the out shape. */
static inline void index_select_body(copy_job *j, int64_t lo, int64_t hi, size_t esz)
{
    const gm_kview *x = &j->a->in[0], *ix = &j->a->in[1], *o = &j->a->out[0];
    int dim = (int)j->a->i[0];
    int64_t xs = x->stride[dim], is = ix->stride[0];
    const int64_t *st[2] = {o->stride, j->xst};
    const int32_t *id = ix->data;
    walker w;
    walk_init(&w, o->ndim, o->shape, 2, st, lo);
    for (int64_t c0 = lo; c0 < hi; c0 += CHUNK) {
        if (gm_halted(&j->stop)) return;
        int64_t c1 = c0 + CHUNK < hi ? c0 + CHUNK : hi;
        for (int64_t i = c0; i < c1; i++) {
            int64_t k = id[w.pos[dim] * is];
            memcpy((char *)o->data + w.off[0] * (int64_t)esz,
                   (const char *)x->data + (w.off[1] + k * xs) * (int64_t)esz, esz);
            walk_next(&w);
        }
    }
}

static void index_select_range(void *ctx, int64_t lo, int64_t hi)
{
    copy_job *j = ctx;
    if (j->esz == 4) index_select_body(j, lo, hi, 4);
    else index_select_body(j, lo, hi, 8);
}

static gm_status index_select_run(const gm_kargs *a)
{
    copy_job j = {.a = a, .esz = gm_dtype_size(a->in[0].dtype)};
    memcpy(j.xst, a->in[0].stride, sizeof j.xst);
    j.xst[a->i[0]] = 0;
    gm_parallel_for(gm_shape_numel(a->out[0].ndim, a->out[0].shape), GM_PAR_MIN, a->nthreads,
                    index_select_range, &j);
    return j.stop ? GM_EINTR : GM_OK;
}

/* Contiguous x [O, S, I] and out [O, L, I]: one memcpy of I elements per (o, l). */
typedef struct {
    const char *x;
    char *o;
    const int32_t *id;
    int64_t S, Lk, inner, is, esz;
    int stop;
} rows_job;

static void index_rows_range(void *ctx, int64_t lo, int64_t hi)
{
    rows_job *j = ctx;
    size_t bytes = (size_t)(j->inner * j->esz);
    for (int64_t r = lo; r < hi; r++) {
        if (((r - lo) & 1023) == 0 && gm_halted(&j->stop)) return;
        int64_t ob = r / j->Lk, l = r % j->Lk;
        memcpy(j->o + r * (int64_t)bytes, j->x + ((ob * j->S + j->id[l * j->is]) * j->inner) * j->esz,
               bytes);
    }
}

static gm_status index_select_rows(const gm_kargs *a)
{
    const gm_kview *x = &a->in[0], *o = &a->out[0];
    int dim = (int)a->i[0];
    rows_job j = {.x = x->data, .o = o->data, .id = a->in[1].data, .S = x->shape[dim],
                  .Lk = o->shape[dim],
                  .inner = gm_shape_numel(x->ndim - dim - 1, x->shape + dim + 1),
                  .is = a->in[1].stride[0], .esz = (int64_t)gm_dtype_size(x->dtype)};
    int64_t rows = gm_shape_numel(dim, x->shape) * j.Lk;
    gm_parallel_for(rows, gm_min_units(j.inner), a->nthreads, index_rows_range, &j);
    return j.stop ? GM_EINTR : GM_OK;
}

gm_status gm_cpu_INDEX_SELECT(gm_ctx *c, const gm_kargs *a)
{
    int dim = (int)a->i[0];
    gm_status s = check_index(c, "index_select", &a->in[1], dim, a->in[0].shape[dim]);
    if (s) return s;
    if (gm_kview_contiguous(&a->in[0]) && gm_kview_contiguous(&a->out[0])) s = index_select_rows(a);
    else s = index_select_run(a);
    return s == GM_EINTR ? gm_errf(c, GM_EINTR, "index_select: interrupted") : s;
}

/* out[p with p[dim] = index[p[dim]]] += src[p] over the src shape, serially. */
gm_status gm_cpu_INDEX_ADD(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *ix = &a->in[0], *src = &a->in[1], *o = &a->out[0];
    int dim = (int)a->i[0], nd = src->ndim;
    int64_t n = gm_shape_numel(nd, src->shape), size = o->shape[dim], os = o->stride[dim];
    int64_t ost[GM_MAX_DIMS];
    memcpy(ost, o->stride, sizeof ost);
    ost[dim] = 0;
    const int64_t *st[2] = {src->stride, ost};
    const int32_t *id = ix->data;
    gm_status s = check_index(c, "index_add", ix, dim, size);
    if (s) return s;
    if (gm_kview_contiguous(src) && gm_kview_contiguous(o) && o->dtype != GM_I32) {
        /* [outer, J, inner] rows added into [outer, size, inner]: the same additions in the same
         * order as the walk below (j ascending for each destination element), a row at a time. */
        int64_t J = src->shape[dim], inner = 1, outer = 1;
        for (int d = dim + 1; d < nd; d++) inner *= src->shape[d];
        for (int d = 0; d < dim; d++) outer *= src->shape[d];
        int stop = 0;
        int64_t done = 0;
        for (int64_t b = 0; b < outer; b++) {
            for (int64_t j = 0; j < J; j++) {
                if (gm_tick(&stop, &done, inner)) return gm_errf(c, GM_EINTR, "index_add: interrupted");
                int64_t so = (b * J + j) * inner, dst = (b * size + id[j * ix->stride[0]]) * inner;
                if (o->dtype == GM_F32) {
                    float *restrict y = (float *)o->data + dst;
                    const float *restrict x = (const float *)src->data + so;
                    for (int64_t t = 0; t < inner; t++) y[t] += x[t];
                } else {
                    double *restrict y = (double *)o->data + dst;
                    const double *restrict x = (const double *)src->data + so;
                    for (int64_t t = 0; t < inner; t++) y[t] += x[t];
                }
            }
        }
        return GM_OK;
    }
    walker w;
    walk_init(&w, nd, src->shape, 2, st, 0);
    for (int64_t i = 0; i < n; i++) {
        if ((i & (CHUNK - 1)) == 0 && gm_interrupted())
            return gm_errf(c, GM_EINTR, "index_add: interrupted");
        int64_t k = id[w.pos[dim] * ix->stride[0]];
        if (!add_at(o->data, w.off[1] + k * os, src->data, w.off[0], o->dtype))
            return add_overflow(c, "index_add", o->data, w.off[1] + k * os, src->data, w.off[0]);
        walk_next(&w);
    }
    return GM_OK;
}

/* ---- topk ------------------------------------------------------------------------------ */
typedef struct {
    double v;
    int64_t i;
} pair;

/* Is a ranked before b? NaN counts as larger than every number (as in torch); equal values
 * go to the lower index, so the order is total and the result deterministic. */
static inline int before(const pair *a, const pair *b, int largest)
{
    int an = isnan(a->v), bn = isnan(b->v);
    if (an || bn) {
        if (an && bn) return a->i < b->i;
        return largest ? an : bn;
    }
    if (a->v != b->v) return largest ? a->v > b->v : a->v < b->v;
    return a->i < b->i;
}

/* Does a rank before b in mode m: 0 largest first, 1 smallest first, 2 lowest index first? */
static inline int ranks(const pair *a, const pair *b, int m)
{
    return m == 2 ? a->i < b->i : before(a, b, m == 0);
}

/* h[0..n) is a heap with its worst element (in mode m) at the root: restore it below i. */
static void sift_down(pair *h, int64_t n, int64_t i, int m)
{
    pair e = h[i];
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && ranks(&h[c], &h[c + 1], m)) c++; /* the worse child */
        if (!ranks(&e, &h[c], m)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

static void sift_up(pair *h, int64_t i, int m)
{
    pair e = h[i];
    while (i > 0 && ranks(&h[(i - 1) / 2], &e, m)) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = e;
}

/* Heap h[0..n) (worst at the root) into best-first order: heapsort, polling as it goes.
 * Returns false when interrupted. */
static bool heap_sort(pair *h, int64_t n, int m, int *stop)
{
    for (int64_t e = n - 1; e > 0; e--) {
        if ((e & (CHUNK - 1)) == 0 && gm_halted(stop)) return false;
        pair t = h[0];
        h[0] = h[e];
        h[e] = t;
        sift_down(h, e, 0, m);
    }
    return true;
}

typedef struct {
    const gm_kargs *a;
    int64_t rshape[GM_MAX_DIMS];
    int64_t per; /* rows between interrupt polls */
    int stop;    /* 1: interrupted, 2: out of memory */
} topk_job;

/* Each row streams through a bounded heap of its best k so far (worst at the root, so one
 * comparison turns most elements away): O(n log k) time and O(k) memory, where sorting the
 * row took O(n log n) and 16 bytes per element. A long row polls every CHUNK elements. */
static void topk_range(void *ctx, int64_t lo, int64_t hi)
{
    topk_job *j = ctx;
    const gm_kview *x = &j->a->in[0], *ov = &j->a->out[0], *oi = &j->a->out[1];
    int dim = (int)j->a->i[0];
    int64_t k = j->a->i[1], len = x->shape[dim];
    int mode = j->a->i[2] != 0 ? 0 : 1, sorted = j->a->i[3] != 0;
    const int64_t *st[3] = {x->stride, ov->stride, oi->stride};
    pair *h = malloc((size_t)k * sizeof *h);
    if (!h) {
        __atomic_store_n(&j->stop, 2, __ATOMIC_RELAXED);
        return;
    }
    walker w;
    walk_init(&w, x->ndim, j->rshape, 3, st, lo);
    for (int64_t r = lo; r < hi; r++) {
        if ((r - lo) % j->per == 0 && gm_halted(&j->stop)) break;
        int64_t m = 0;
        for (int64_t q = 0; q < len; q++) {
            if (q > 0 && (q & (CHUNK - 1)) == 0 && gm_halted(&j->stop)) goto out;
            pair e = {gm_elem_load(x->data, x->dtype, w.off[0] + q * x->stride[dim]), q};
            if (m < k) {
                h[m] = e;
                sift_up(h, m++, mode);
            } else if (ranks(&e, &h[0], mode)) {
                h[0] = e;
                sift_down(h, k, 0, mode);
            }
        }
        if (!sorted) /* index order: re-heap by index, worst (highest) at the root */
            for (int64_t i = k / 2 - 1; i >= 0; i--) sift_down(h, k, i, 2);
        if (!heap_sort(h, k, sorted ? mode : 2, &j->stop)) break;
        for (int64_t q = 0; q < k; q++) {
            gm_elem_store(ov->data, ov->dtype, w.off[1] + q * ov->stride[dim], h[q].v);
            ((int32_t *)oi->data)[w.off[2] + q * oi->stride[dim]] = (int32_t)h[q].i;
        }
        walk_next(&w);
    }
out:
    free(h);
}

gm_status gm_cpu_TOPK(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *x = &a->in[0];
    int dim = (int)a->i[0];
    int64_t k = a->i[1], len = x->shape[dim];
    topk_job j = {.a = a};
    memcpy(j.rshape, x->shape, sizeof j.rshape);
    j.rshape[dim] = 1;
    int64_t rows = gm_shape_numel(x->ndim, j.rshape);
    if (k == 0 || rows == 0) return GM_OK;
    j.per = len > 0 && CHUNK / len > 0 ? CHUNK / len : 1;
    gm_parallel_for(rows, gm_min_units(len), a->nthreads, topk_range, &j);
    if (j.stop == 1) return gm_errf(c, GM_EINTR, "topk: interrupted");
    if (j.stop == 2) return gm_errf(c, GM_ENOMEM, "topk: out of memory for k = %lld", (long long)k);
    return GM_OK;
}

/* out[p, j] = (index[p] == j) for j < n. */
gm_status gm_cpu_ONE_HOT(gm_ctx *c, const gm_kargs *a)
{
    const gm_kview *ix = &a->in[0], *o = &a->out[0];
    int64_t n = a->i[0], cnt = gm_shape_numel(ix->ndim, ix->shape), os = o->stride[ix->ndim];
    const int32_t *id = ix->data;
    walker w;
    const int64_t *st[2] = {ix->stride, o->stride};
    walk_init(&w, ix->ndim, ix->shape, 2, st, 0);
    for (int64_t i = 0; i < cnt; i++) {
        int32_t k = id[w.off[0]];
        if ((i & (CHUNK - 1)) == 0 && gm_interrupted()) return gm_errf(c, GM_EINTR, "one_hot: interrupted");
        if (k < 0 || k >= n)
            return gm_errf(c, GM_EINDEX, "one_hot: index %d out of range for num_classes %lld",
                           (int)k, (long long)n);
        walk_next(&w);
    }
    walk_init(&w, ix->ndim, ix->shape, 2, st, 0);
    int stop = 0;
    int64_t done = 0;
    for (int64_t i = 0; i < cnt; i++) {
        if (gm_tick(&stop, &done, n)) return gm_errf(c, GM_EINTR, "one_hot: interrupted");
        int32_t k = id[w.off[0]];
        for (int64_t j = 0; j < n; j++) {
            if (j > 0 && (j & (CHUNK - 1)) == 0 && gm_halted(&stop))
                return gm_errf(c, GM_EINTR, "one_hot: interrupted");
            gm_elem_store(o->data, o->dtype, w.off[1] + j * os, j == k);
        }
        walk_next(&w);
    }
    return GM_OK;
}
