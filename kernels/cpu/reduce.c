/* reduce.c (cpu): reductions over a set of dims, softmax/log_softmax and cumsum kernels.
 * A reduction splits the input's dims into kept (outer) and reduced (inner) lists; each output
 * element is reduced over its inner index set in a fixed row-major order by one thread, so the
 * result is identical for any thread count (we parallelise over output elements only).
 * f32 data is accumulated in double. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "parallel.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

#define POLL GM_POLL_WORK /* input elements between interrupt polls (a multiple of 8) */

/* ---- dim plans ------------------------------------------------------------------------- */

/* A list of dims (sizes, strides in elements) walked in row-major order. */
typedef struct {
    int n;
    int64_t size[GM_MAX_DIMS], stride[GM_MAX_DIMS];
} rd_dims;

/* Outer (kept) dims, and the inner (reduced) set as nrows rows of len elements with step
 * stride; row r starts at rd_offset(&rows, r). */
typedef struct {
    rd_dims outer, rows;
    int64_t nout, nrows, len, step;
} rd_plan;

static void rd_push(rd_dims *s, int64_t size, int64_t stride) {
    /* Merging neighbours whose strides chain keeps the row-major flat order of the list and
     * turns contiguous runs into one long inner loop. */
    if (s->n > 0 && s->stride[s->n - 1] == stride * size) {
        s->size[s->n - 1] *= size;
        s->stride[s->n - 1] = stride;
        return;
    }
    s->size[s->n] = size;
    s->stride[s->n] = stride;
    s->n++;
}

static int64_t rd_offset(const rd_dims *s, int64_t flat) {
    int64_t off = 0;
    for (int k = s->n - 1; k >= 0; k--) {
        int64_t i = flat % s->size[k];
        flat /= s->size[k];
        off += i * s->stride[k];
    }
    return off;
}

static int64_t rd_count(const rd_dims *s) {
    int64_t n = 1;
    for (int k = 0; k < s->n; k++) n *= s->size[k];
    return n;
}

/* mask: bit d set when dim d of x is reduced. */
static void rd_plan_init(rd_plan *pl, const gm_kview *x, uint64_t mask) {
    rd_dims inner = {0};
    pl->outer.n = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (x->shape[d] == 1) continue;
        rd_push((mask >> d) & 1 ? &inner : &pl->outer, x->shape[d], x->stride[d]);
    }
    pl->nout = rd_count(&pl->outer);
    if (inner.n == 0) {
        pl->len = 1;
        pl->step = 0;
    } else {
        pl->len = inner.size[inner.n - 1];
        pl->step = inner.stride[inner.n - 1];
        inner.n--;
    }
    pl->rows = inner;
    pl->nrows = rd_count(&inner);
}

/* Element stores (loads are gm_elem_load): callers pass a constant dtype so the switch folds
 * away once inlined. i32 stores take exact integers (sums of i32 are accumulated in 64 bits)
 * and keep the low 32 bits; the sums check the range themselves (i32_fits). */
static inline void st(void *p, gm_dtype t, int64_t i, double v) {
    switch (t) {
    case GM_F32: ((float *)p)[i] = (float)v; break;
    case GM_F64: ((double *)p)[i] = v; break;
    default: ((int32_t *)p)[i] = (int32_t)(uint32_t)(uint64_t)(int64_t)v;
    }
}

/* An integer sum that does not fit i32 fails its op, naming the first value seen. */
typedef struct {
    int flag;
    int64_t value;
} overflow;

static inline bool i32_fits(overflow *ov, int64_t v) {
    if (v == (int32_t)v) return true;
    int zero = 0;
    if (__atomic_compare_exchange_n(&ov->flag, &zero, 1, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) ov->value = v;
    return false;
}

static gm_status overflow_error(gm_ctx *c, const char *op, const overflow *ov) {
    return gm_errf(c, GM_EARG, "%s: the i32 result %lld does not fit i32 (-2147483648 .. 2147483647); "
                   "sum in f64 with x:to(\"f64\")", op, (long long)ov->value);
}

/* Units of w input elements each between interrupt polls (a poll every POLL elements; threads
 * get gm_min_units(w) units at least). A unit is one or more whole outputs, so no reduction is
 * split across threads. */
static int64_t poll_units(int64_t w) { return w >= POLL ? 1 : POLL / (w > 0 ? w : 1); }

/* A reduction over the plan pl: each range of output elements (or column blocks) is one
 * thread's; fields past pl serve the kernels that need them. */
typedef struct {
    const gm_kview *x;
    void *out;
    gm_dtype t;
    const rd_plan *pl;
    double scale;  /* sum: applied to each sum; var: the divisor */
    int64_t per;   /* units between interrupt polls */
    void *vals;    /* maxmin: values (or NULL) */
    int32_t *idx;  /* maxmin: indices */
    bool min;      /* maxmin: min instead of max */
    rd_dims head;  /* sum_cols: outer dims but the last */
    int64_t m, nblk; /* sum_cols: size of the last outer dim, column blocks per head index */
    int64_t npiece;  /* sum_cols: pieces of the inner set per column block */
    int64_t bw;      /* sum_cols: columns per block (COLS, or the whole width with pieces) */
    double *part;    /* sum_cols: bw partial sums per (block, piece) when npiece > 1 */
    overflow over;   /* sum of i32 */
    int stop;
} rd_job;

static gm_status rd_launch(rd_job *j, int64_t units, int64_t w, int nth, gm_range_fn fn) {
    j->per = poll_units(w);
    gm_parallel_for(units, gm_min_units(w), nth, fn, j);
    return j->stop ? GM_EINTR : GM_OK;
}

/* ---- sum and mean ---------------------------------------------------------------------- */

/* Contiguous rows use 8 fixed lanes: vectorisable, and still one fixed order. */
static double sum_contig_f32(const float *p, int64_t n, int *stop) {
    double lane[8] = {0}, acc = 0;
    int64_t i = 0;
    for (int64_t b = 0; b < n; b += POLL) { /* blocks of POLL (a multiple of 8): same order */
        if (b > 0 && gm_halted(stop)) return 0;
        int64_t e = n - b < POLL ? n : b + POLL;
        for (; i + 8 <= e; i += 8)
            for (int j = 0; j < 8; j++) lane[j] += (double)p[i + j];
    }
    for (; i < n; i++) acc += p[i];
    return acc + (((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])));
}

static double sum_contig_f64(const double *p, int64_t n, int *stop) {
    double lane[8] = {0}, acc = 0;
    int64_t i = 0;
    for (int64_t b = 0; b < n; b += POLL) { /* blocks of POLL (a multiple of 8): same order */
        if (b > 0 && gm_halted(stop)) return 0;
        int64_t e = n - b < POLL ? n : b + POLL;
        for (; i + 8 <= e; i += 8)
            for (int j = 0; j < 8; j++) lane[j] += p[i + j];
    }
    for (; i < n; i++) acc += p[i];
    return acc + (((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])));
}

/* Sum of a row; a long one polls every POLL elements (the caller checks *stop). */
static inline double row_sum(const void *x, gm_dtype t, int64_t off, int64_t n, int64_t s, int *stop) {
    if (s == 1 && n >= 16 && t == GM_F32) return sum_contig_f32((const float *)x + off, n, stop);
    if (s == 1 && n >= 16 && t == GM_F64) return sum_contig_f64((const double *)x + off, n, stop);
    double acc = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i > 0 && (i & (POLL - 1)) == 0 && gm_halted(stop)) return 0;
        acc += gm_elem_load(x, t, off + i * s);
    }
    return acc;
}

/* Sum of each output element over its inner set, times scale. */
static inline void sum_generic_body(rd_job *j, gm_dtype t, int64_t lo, int64_t hi) {
    const rd_plan *pl = j->pl;
    for (int64_t o = lo; o < hi; o++) {
        if ((o - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        int64_t base = rd_offset(&pl->outer, o), done = 0;
        if (t == GM_I32) { /* exact, in 64 bits: 2^32 elements of i32 cannot overflow it */
            int64_t acc = 0;
            for (int64_t r = 0; r < pl->nrows; r++) {
                const int32_t *p = (const int32_t *)j->x->data + base + rd_offset(&pl->rows, r);
                for (int64_t i = 0; i < pl->len; i++) {
                    if (gm_tick(&j->stop, &done, 1)) return;
                    acc += p[i * pl->step];
                }
            }
            if (i32_fits(&j->over, acc)) ((int32_t *)j->out)[o] = (int32_t)acc;
            continue;
        }
        double acc = 0;
        for (int64_t r = 0; r < pl->nrows; r++) {
            acc += row_sum(j->x->data, t, base + rd_offset(&pl->rows, r), pl->len, pl->step, &j->stop);
            if (gm_tick(&j->stop, &done, pl->len)) return;
        }
        st(j->out, t, o, acc * j->scale);
    }
}

static void sum_generic_range(void *ctx, int64_t lo, int64_t hi) {
    rd_job *j = ctx;
    switch (j->t) {
    case GM_F32: sum_generic_body(j, GM_F32, lo, hi); break;
    case GM_F64: sum_generic_body(j, GM_F64, lo, hi); break;
    default: sum_generic_body(j, GM_I32, lo, hi);
    }
}

/* Column blocks: when the innermost kept dim has stride 1 and the reduction walks a larger
 * stride (sum over dim 0 of [N, D]), accumulate up to COLS neighbouring outputs at once so each
 * input row is read contiguously. Per output the order is still row-major over the inner set.
 * Float sums over a long inner set (a bias gradient: [8192, 384] summed over rows) instead cut
 * the inner set into pieces of CUT_INNER elements and sum each piece over the whole width of up
 * to WIDE columns (every row read in one contiguous run; narrow 64-column blocks of wide rows
 * ran at a quarter of the bandwidth), each piece into a partial, and the partials are added in
 * order: the cut depends on the shape only, so the result is the same for any thread count. */
#define COLS 64
#define WIDE 2048
#define CUT_INNER 1024

/* acc[0..w) += the inner elements [i0, i1) (row-major over the inner set) of the columns at base. */
static inline void cols_acc(rd_job *j, gm_dtype t, int64_t base, int w, int64_t i0, int64_t i1,
                            double *acc) {
    const rd_plan *pl = j->pl;
    int64_t done = 0;
    for (int64_t i = i0; i < i1;) {
        int64_t r = i / pl->len, l = i % pl->len, end = (r + 1) * pl->len < i1 ? (r + 1) * pl->len : i1;
        if (end - i > 64) end = i + 64; /* a long row in stretches, with a poll between them */
        if (gm_tick(&j->stop, &done, (end - i) * w)) return;
        int64_t off = base + rd_offset(&pl->rows, r) + l * pl->step;
        for (; i < end; i++, off += pl->step) {
            if (t == GM_F32) {
                const float *q = (const float *)j->x->data + off;
                for (int k = 0; k < w; k++) acc[k] += q[k];
            } else if (t == GM_F64) {
                const double *q = (const double *)j->x->data + off;
                for (int k = 0; k < w; k++) acc[k] += q[k];
            } else {
                for (int k = 0; k < w; k++) acc[k] += gm_elem_load(j->x->data, t, off + k);
            }
        }
    }
}

/* Unit u = (column block of j->bw columns, inner piece): sums into the output directly (one
 * piece) or into j->part[u] (bw doubles each). */
static inline void sum_cols_body(rd_job *j, gm_dtype t, int64_t lo, int64_t hi) {
    int64_t m = j->m, nblk = j->nblk, bw = j->bw, inner = j->pl->nrows * j->pl->len;
    double stack_acc[COLS], *acc = bw <= COLS ? stack_acc : malloc((size_t)bw * sizeof(double));
    if (!acc) {
        __atomic_store_n(&j->stop, 2, __ATOMIC_RELAXED); /* 2: out of memory */
        return;
    }
    for (int64_t u = lo; u < hi; u++) {
        if ((u - lo) % j->per == 0 && gm_halted(&j->stop)) break;
        int64_t task = u / j->npiece, piece = u % j->npiece;
        int64_t h = task / nblk, b0 = (task % nblk) * bw;
        int w = (int)(m - b0 < bw ? m - b0 : bw);
        int64_t base = rd_offset(&j->head, h) + b0;
        int64_t i0 = piece * CUT_INNER, i1 = j->npiece == 1 ? inner : i0 + CUT_INNER < inner ? i0 + CUT_INNER : inner;
        memset(acc, 0, (size_t)w * sizeof(double));
        cols_acc(j, t, base, w, i0, i1, acc);
        if (j->npiece > 1) memcpy(j->part + u * bw, acc, (size_t)w * sizeof(double));
        else for (int k = 0; k < w; k++) st(j->out, t, h * m + b0 + k, acc[k] * j->scale);
    }
    if (acc != stack_acc) free(acc);
}

static void sum_cols_range(void *ctx, int64_t lo, int64_t hi) {
    rd_job *j = ctx;
    switch (j->t) {
    case GM_F32: sum_cols_body(j, GM_F32, lo, hi); break;
    case GM_F64: sum_cols_body(j, GM_F64, lo, hi); break;
    default: sum_cols_body(j, GM_I32, lo, hi);
    }
}

static gm_status sum_any(gm_ctx *c, const gm_kview *x, void *out, gm_dtype t, const rd_plan *pl,
                         double scale, int nth) {
    bool cols = pl->outer.n > 0 && pl->outer.stride[pl->outer.n - 1] == 1 && pl->step != 1 &&
                pl->nrows * pl->len > 1 && t != GM_I32;
    rd_job j = {.x = x, .out = out, .t = t, .pl = pl, .scale = scale, .npiece = 1, .bw = COLS};
    if (!cols) {
        gm_status rc = rd_launch(&j, pl->nout, pl->nrows * pl->len, nth, sum_generic_range);
        return rc == GM_OK && j.over.flag ? overflow_error(c, "sum", &j.over) : rc;
    }
    j.m = pl->outer.size[pl->outer.n - 1];
    j.head = pl->outer;
    j.head.n--;
    int64_t heads = rd_count(&j.head), inner = pl->nrows * pl->len;
    if (inner < 2 * CUT_INNER || j.m > WIDE || (t != GM_F32 && t != GM_F64)) {
        j.nblk = (j.m + COLS - 1) / COLS;
        gm_status rc = rd_launch(&j, heads * j.nblk, COLS * inner, nth, sum_cols_range);
        return j.stop == 2 ? GM_ENOMEM : rc;
    }
    /* pieces of the inner set over the full width on the threads, then their partials in order */
    j.bw = j.m;
    j.nblk = 1;
    j.npiece = (inner + CUT_INNER - 1) / CUT_INNER;
    j.part = malloc((size_t)(heads * j.npiece * j.m) * sizeof(double));
    if (!j.part) return GM_ENOMEM;
    gm_status rc = rd_launch(&j, heads * j.npiece, j.m * CUT_INNER, nth, sum_cols_range);
    if (j.stop == 2) rc = GM_ENOMEM;
    for (int64_t h = 0; rc == GM_OK && h < heads; h++)
        for (int64_t k = 0; k < j.m; k++) {
            double acc = 0;
            for (int64_t p = 0; p < j.npiece; p++) acc += j.part[(h * j.npiece + p) * j.m + k];
            st(out, t, h * j.m + k, acc * scale);
        }
    free(j.part);
    return rc;
}

/* SUM: in[0]=x (any strides), out[0] contiguous with one element per kept index (row-major).
 * i[0] = bitmask of reduced dims of x; d[0] = scale applied to each sum (1 for sum, 1/n for
 * mean, NaN for the mean of nothing). i32 sums accumulate exactly in 64 bits; one that does not
 * fit i32 is an error naming it. */
gm_status gm_cpu_SUM(gm_ctx *c, const gm_kargs *a) {
    rd_plan pl;
    rd_plan_init(&pl, &a->in[0], (uint64_t)a->i[0]);
    return sum_any(c, &a->in[0], a->out[0].data, a->in[0].dtype, &pl, a->d[0], a->nthreads);
}

/* ---- variance -------------------------------------------------------------------------- */

static inline void var_body(rd_job *j, gm_dtype t, int64_t lo, int64_t hi) {
    const rd_plan *pl = j->pl;
    int64_t cnt = pl->nrows * pl->len;
    for (int64_t o = lo; o < hi; o++) {
        if ((o - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        int64_t base = rd_offset(&pl->outer, o), done = 0;
        double s = 0, ss = 0;
        for (int64_t r = 0; r < pl->nrows; r++) {
            s += row_sum(j->x->data, t, base + rd_offset(&pl->rows, r), pl->len, pl->step, &j->stop);
            if (gm_tick(&j->stop, &done, pl->len)) return;
        }
        /* Two passes: squares of deviations from the mean, no cancellation. */
        double mean = s / (double)cnt;
        for (int64_t r = 0; r < pl->nrows; r++) {
            int64_t roff = base + rd_offset(&pl->rows, r);
            for (int64_t l = 0; l < pl->len; l++) {
                if (gm_tick(&j->stop, &done, 1)) return;
                double dv = gm_elem_load(j->x->data, t, roff + l * pl->step) - mean;
                ss += dv * dv;
            }
        }
        st(j->out, t, o, cnt == 0 ? NAN : ss / j->scale);
    }
}

static void var_range(void *ctx, int64_t lo, int64_t hi) {
    rd_job *j = ctx;
    if (j->t == GM_F32) var_body(j, GM_F32, lo, hi);
    else var_body(j, GM_F64, lo, hi);
}

/* VAR: in[0]=x (float), out[0] contiguous per kept index. i[0] = reduced-dims mask, d[0] = the
 * divisor (n - 1 when unbiased, else n; a zero divisor gives NaN or inf as in torch). */
gm_status gm_cpu_VAR(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    rd_plan pl;
    rd_plan_init(&pl, &a->in[0], (uint64_t)a->i[0]);
    rd_job j = {.x = &a->in[0], .out = a->out[0].data, .t = a->in[0].dtype, .pl = &pl, .scale = a->d[0]};
    return rd_launch(&j, pl.nout, pl.nrows * pl.len, a->nthreads, var_range);
}

/* ---- logsumexp ------------------------------------------------------------------------- */

static inline void lse_body(rd_job *j, gm_dtype t, int64_t lo, int64_t hi) {
    const rd_plan *pl = j->pl;
    const void *x = j->x->data;
    for (int64_t o = lo; o < hi; o++) {
        if ((o - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        int64_t base = rd_offset(&pl->outer, o), done = 0;
        double m = -INFINITY, s = 0;
        for (int64_t r = 0; r < pl->nrows; r++) {
            int64_t roff = base + rd_offset(&pl->rows, r);
            for (int64_t l = 0; l < pl->len; l++) {
                if (gm_tick(&j->stop, &done, 1)) return;
                double v = gm_elem_load(x, t, roff + l * pl->step);
                if (v > m || v != v) m = v;
            }
        }
        if (isinf(m) || m != m) { /* all -inf, some +inf, or NaN: the max says it all */
            st(j->out, t, o, m);
            continue;
        }
        for (int64_t r = 0; r < pl->nrows; r++) {
            int64_t roff = base + rd_offset(&pl->rows, r);
            for (int64_t l = 0; l < pl->len; l++) {
                if (gm_tick(&j->stop, &done, 1)) return;
                s += exp(gm_elem_load(x, t, roff + l * pl->step) - m);
            }
        }
        st(j->out, t, o, m + log(s));
    }
}

static void lse_range(void *ctx, int64_t lo, int64_t hi) {
    rd_job *j = ctx;
    if (j->t == GM_F32) lse_body(j, GM_F32, lo, hi);
    else lse_body(j, GM_F64, lo, hi);
}

/* LOGSUMEXP: in[0]=x (float), out[0] contiguous per kept index, i[0] = reduced-dims mask.
 * max + log(sum(exp(x - max))); the logsumexp of nothing is -inf. */
gm_status gm_cpu_LOGSUMEXP(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    rd_plan pl;
    rd_plan_init(&pl, &a->in[0], (uint64_t)a->i[0]);
    rd_job j = {.x = &a->in[0], .out = a->out[0].data, .t = a->in[0].dtype, .pl = &pl};
    return rd_launch(&j, pl.nout, pl.nrows * pl.len, a->nthreads, lse_range);
}

/* ---- max / min / argmax / argmin ------------------------------------------------------- */

static inline void best_body(rd_job *j, gm_dtype t, int64_t lo, int64_t hi) {
    const rd_plan *pl = j->pl;
    const void *x = j->x->data;
    for (int64_t o = lo; o < hi; o++) {
        if ((o - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        int64_t base = rd_offset(&pl->outer, o), bi = 0, k = 0, done = 0;
        double best = gm_elem_load(x, t, base + rd_offset(&pl->rows, 0));
        /* First occurrence wins (strict comparison); a NaN wins and ends the search. */
        for (int64_t r = 0; r < pl->nrows && best == best; r++) {
            int64_t roff = base + rd_offset(&pl->rows, r);
            for (int64_t l = 0; l < pl->len; l++, k++) {
                if (gm_tick(&j->stop, &done, 1)) return;
                double v = gm_elem_load(x, t, roff + l * pl->step);
                if (v != v || (j->min ? v < best : v > best)) {
                    best = v;
                    bi = k;
                    if (v != v) break;
                }
            }
        }
        if (j->vals) st(j->vals, t, o, best);
        j->idx[o] = (int32_t)bi;
    }
}

static void best_range(void *ctx, int64_t lo, int64_t hi) {
    rd_job *j = ctx;
    switch (j->t) {
    case GM_F32: best_body(j, GM_F32, lo, hi); break;
    case GM_F64: best_body(j, GM_F64, lo, hi); break;
    default: best_body(j, GM_I32, lo, hi);
    }
}

/* MAXMIN: in[0]=x (non-empty inner set: the rules refuse empty reductions), i[0] = reduced-dims
 * mask, i[1] = 1 for min, 0 for max. With two outputs: out[0] values (x's dtype), out[1] i32
 * indices; with one output (argmax/argmin): out[0] i32 indices. An index is the row-major flat
 * position inside the reduced set (the index along dim for one dim, the flat index for all). */
gm_status gm_cpu_MAXMIN(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    rd_plan pl;
    rd_plan_init(&pl, &a->in[0], (uint64_t)a->i[0]);
    rd_job j = {.x = &a->in[0], .t = a->in[0].dtype, .pl = &pl,
                .vals = a->n_out == 2 ? a->out[0].data : NULL, .idx = a->out[a->n_out - 1].data,
                .min = a->i[1] != 0};
    return rd_launch(&j, pl.nout, pl.nrows * pl.len, a->nthreads, best_range);
}

static inline gm_status scatter_generic(const void *g, const int32_t *idx, void *dx, gm_dtype t,
                                        const rd_plan *pl) {
    for (int64_t o = 0; o < pl->nout; o++) {
        if ((o & (POLL - 1)) == 0 && gm_interrupted()) return GM_EINTR;
        int64_t k = idx[o], r = k / pl->len, l = k % pl->len;
        int64_t off = rd_offset(&pl->outer, o) + rd_offset(&pl->rows, r) + l * pl->step;
        st(dx, t, off, gm_elem_load(dx, t, off) + gm_elem_load(g, t, o));
    }
    return GM_OK;
}

/* MAXMIN_BACKWARD: in[0]=g (contiguous, one element per kept index), in[1]=indices (contiguous
 * i32, from MAXMIN), out[0]=dx (x's shape, zero-filled by the caller), i[0] = the same mask.
 * dx[selected] += g: each output element routes its gradient to the element it selected. */
gm_status gm_cpu_MAXMIN_BACKWARD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    rd_plan pl;
    rd_plan_init(&pl, &a->out[0], (uint64_t)a->i[0]);
    if (pl.nrows * pl.len == 0) return GM_OK;
    if (a->out[0].dtype == GM_F32) return scatter_generic(a->in[0].data, a->in[1].data, a->out[0].data, GM_F32, &pl);
    return scatter_generic(a->in[0].data, a->in[1].data, a->out[0].data, GM_F64, &pl);
}

/* ---- softmax and log_softmax along one dim ---------------------------------------------- */

/* Rows along one dim: plans of x, y (same shape) give row o's start and step in each. */
static void row_plan(rd_plan *pl, const gm_kview *v, int dim) {
    rd_plan_init(pl, v, v->ndim > 0 ? (uint64_t)1 << dim : 0);
}

/* In a loop over the n elements of one row: true at each POLL-th element once an interrupt has
 * come (short rows are polled per row by their callers; a long one polls inside). */
#define LONG_POLL(i) ((i) > 0 && ((i) & (POLL - 1)) == 0 && gm_halted(stop))

/* One row of n elements, x at stride sx into y at stride sy. One exp per element: y holds
 * exp(x - max) until the final scaling. f32 rows use expf, with the sum in double. */
static void softmax_row_f32(const float *x, int64_t sx, float *y, int64_t sy, int64_t n, bool logsm,
                           int *stop) {
    float m = -INFINITY;
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        if (LONG_POLL(i)) return;
        float v = x[i * sx];
        if (v > m || v != v) m = v;
    }
    if (m == -INFINITY) m = 0; /* a row of -inf: 0/0 = NaN, as in torch */
    if (logsm) {
        for (int64_t i = 0; i < n; i++) {
            if (LONG_POLL(i)) return;
            s += expf(x[i * sx] - m);
        }
        double ls = m + log(s);
        for (int64_t i = 0; i < n; i++) {
            if (LONG_POLL(i)) return;
            y[i * sy] = (float)(x[i * sx] - ls);
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        if (LONG_POLL(i)) return;
        float e = expf(x[i * sx] - m);
        y[i * sy] = e;
        s += e;
    }
    float inv = (float)(1.0 / s);
    for (int64_t i = 0; i < n; i++) {
        if (LONG_POLL(i)) return;
        y[i * sy] *= inv;
    }
}

static void softmax_row_f64(const double *x, int64_t sx, double *y, int64_t sy, int64_t n, bool logsm,
                           int *stop) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; i++) {
        if (LONG_POLL(i)) return;
        double v = x[i * sx];
        if (v > m || v != v) m = v;
    }
    if (m == -INFINITY) m = 0;
    if (logsm) {
        for (int64_t i = 0; i < n; i++) {
            if (LONG_POLL(i)) return;
            s += exp(x[i * sx] - m);
        }
        double ls = m + log(s);
        for (int64_t i = 0; i < n; i++) {
            if (LONG_POLL(i)) return;
            y[i * sy] = x[i * sx] - ls;
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        if (LONG_POLL(i)) return;
        double e = exp(x[i * sx] - m);
        y[i * sy] = e;
        s += e;
    }
    double inv = 1.0 / s;
    for (int64_t i = 0; i < n; i++) {
        if (LONG_POLL(i)) return;
        y[i * sy] *= inv;
    }
}

/* Rows along one dim: row o of each operand k starts at rd_offset(&p[k].outer, o) and steps
 * by p[k].step. One row is one unit, so a row is never split across threads. */
typedef struct {
    const gm_kargs *a;
    rd_plan p[3];
    gm_dtype t;
    bool flag; /* softmax: log_softmax; cumsum: reverse */
    int64_t per;
    overflow over; /* cumsum of i32 */
    int stop;
} row_job;

/* v[0..nv): the operands' views, v[0] the one whose rows are counted. */
static gm_status row_launch(row_job *j, int nv, const gm_kview *const *v, gm_range_fn fn) {
    for (int k = 0; k < nv; k++) row_plan(&j->p[k], v[k], (int)j->a->i[0]);
    int64_t n = j->p[0].len;
    j->per = poll_units(n);
    gm_parallel_for(j->p[0].nout, gm_min_units(n), j->a->nthreads, fn, j);
    return j->stop ? GM_EINTR : GM_OK;
}

static void softmax_range(void *ctx, int64_t lo, int64_t hi) {
    row_job *j = ctx;
    const rd_plan *px = &j->p[0], *py = &j->p[1];
    const gm_kargs *a = j->a;
    for (int64_t o = lo; o < hi; o++) {
        if ((o - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        int64_t bx = rd_offset(&px->outer, o), by = rd_offset(&py->outer, o);
        if (j->t == GM_F32)
            softmax_row_f32((const float *)a->in[0].data + bx, px->step, (float *)a->out[0].data + by,
                            py->step, px->len, j->flag, &j->stop);
        else
            softmax_row_f64((const double *)a->in[0].data + bx, px->step, (double *)a->out[0].data + by,
                            py->step, px->len, j->flag, &j->stop);
    }
}

static gm_status softmax_rows(const gm_kargs *a, bool logsm) {
    row_job j = {.a = a, .t = a->in[0].dtype, .flag = logsm};
    const gm_kview *v[2] = {&a->in[0], &a->out[0]};
    return row_launch(&j, 2, v, softmax_range);
}

/* SOFTMAX: in[0]=x (float), out[0]=y (same shape), i[0] = dim (normalised; 0 for a 0-dim x),
 * i[1] = 1 for log_softmax. Stable: exponents are taken after subtracting the row max. */
gm_status gm_cpu_SOFTMAX(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    return softmax_rows(a, a->i[1] != 0);
}

static inline void softmax_bw_body(row_job *j, gm_dtype t, int64_t lo, int64_t hi) {
    const rd_plan *py = &j->p[0], *pg = &j->p[1], *pd = &j->p[2];
    const void *y = j->a->in[0].data, *g = j->a->in[1].data;
    void *dx = j->a->out[0].data;
    int64_t n = py->len, sy = py->step, sg = pg->step, sd = pd->step;
    int *stop = &j->stop;
    for (int64_t o = lo; o < hi; o++) {
        if ((o - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        int64_t by = rd_offset(&py->outer, o), bg = rd_offset(&pg->outer, o), bd = rd_offset(&pd->outer, o);
        double s = 0;
        if (j->flag) {
            for (int64_t i = 0; i < n; i++) {
                if (LONG_POLL(i)) return;
                s += gm_elem_load(g, t, bg + i * sg);
            }
            for (int64_t i = 0; i < n; i++) {
                if (LONG_POLL(i)) return;
                st(dx, t, bd + i * sd, gm_elem_load(g, t, bg + i * sg) - exp(gm_elem_load(y, t, by + i * sy)) * s);
            }
        } else {
            for (int64_t i = 0; i < n; i++) {
                if (LONG_POLL(i)) return;
                s += gm_elem_load(g, t, bg + i * sg) * gm_elem_load(y, t, by + i * sy);
            }
            for (int64_t i = 0; i < n; i++) {
                if (LONG_POLL(i)) return;
                st(dx, t, bd + i * sd, gm_elem_load(y, t, by + i * sy) * (gm_elem_load(g, t, bg + i * sg) - s));
            }
        }
    }
}

static void softmax_bw_range(void *ctx, int64_t lo, int64_t hi) {
    row_job *j = ctx;
    if (j->t == GM_F32) softmax_bw_body(j, GM_F32, lo, hi);
    else softmax_bw_body(j, GM_F64, lo, hi);
}

/* SOFTMAX_BACKWARD: in[0]=y (the forward output), in[1]=g (dL/dy), out[0]=dx, all of one shape;
 * i[0] = dim, i[1] = 1 for log_softmax. softmax: dx = y * (g - sum(g * y));
 * log_softmax: dx = g - exp(y) * sum(g). */
gm_status gm_cpu_SOFTMAX_BACKWARD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    row_job j = {.a = a, .t = a->in[0].dtype, .flag = a->i[1] != 0};
    const gm_kview *v[3] = {&a->in[0], &a->in[1], &a->out[0]};
    return row_launch(&j, 3, v, softmax_bw_range);
}

/* ---- cumsum ---------------------------------------------------------------------------- */

static inline void cumsum_body(row_job *j, gm_dtype t, int64_t lo, int64_t hi) {
    const rd_plan *px = &j->p[0], *py = &j->p[1];
    const void *x = j->a->in[0].data;
    void *y = j->a->out[0].data;
    int64_t n = px->len, sx = px->step, sy = py->step;
    int *stop = &j->stop;
    for (int64_t o = lo; o < hi; o++) {
        if ((o - lo) % j->per == 0 && gm_halted(&j->stop)) return;
        int64_t bx = rd_offset(&px->outer, o), by = rd_offset(&py->outer, o);
        if (t == GM_I32) { /* running sums in 64 bits; the first that does not fit fails the op */
            int64_t s = 0;
            for (int64_t q = 0; q < n; q++) {
                if (LONG_POLL(q)) return;
                int64_t i = j->flag ? n - 1 - q : q;
                s += ((const int32_t *)x)[bx + i * sx];
                if (!i32_fits(&j->over, s)) return;
                ((int32_t *)y)[by + i * sy] = (int32_t)s;
            }
            continue;
        }
        double s = 0;
        for (int64_t q = 0; q < n; q++) {
            if (LONG_POLL(q)) return;
            int64_t i = j->flag ? n - 1 - q : q;
            s += gm_elem_load(x, t, bx + i * sx);
            st(y, t, by + i * sy, s);
        }
    }
}

static void cumsum_range(void *ctx, int64_t lo, int64_t hi) {
    row_job *j = ctx;
    switch (j->t) {
    case GM_F32: cumsum_body(j, GM_F32, lo, hi); break;
    case GM_F64: cumsum_body(j, GM_F64, lo, hi); break;
    default: cumsum_body(j, GM_I32, lo, hi);
    }
}

/* CUMSUM: in[0]=x, out[0]=y (same shape, same dtype), i[0] = dim (0 for a 0-dim x),
 * i[1] = 1 for the reverse scan (suffix sums: the backward of cumsum). Running sums in double
 * for floats; i32 ones in 64 bits, and one that does not fit i32 is an error naming it. */
gm_status gm_cpu_CUMSUM(gm_ctx *c, const gm_kargs *a) {
    row_job j = {.a = a, .t = a->in[0].dtype, .flag = a->i[1] != 0};
    const gm_kview *v[2] = {&a->in[0], &a->out[0]};
    gm_status rc = row_launch(&j, 2, v, cumsum_range);
    return rc == GM_OK && j.over.flag ? overflow_error(c, "cumsum", &j.over) : rc;
}
