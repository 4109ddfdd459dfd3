/* moe.c (cpu): MoE kernels. Routing (counting sort of (token, choice) pairs by expert with a
 * per-expert capacity), row scatter/combine between token order [T, D] and expert order
 * [S, D], and the grouped expert matmul (one BLAS gemm per expert with rows). The rules in
 * core/ops/moe.c hand over contiguous views; every id and slot is bounds-checked here. Each
 * row of the expert-order buffer belongs to one (t, k) at most, so scatters write disjoint
 * rows and run in parallel without atomics; results never depend on the thread count. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "blas.h"
#include "parallel.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

#define CHUNK_ROWS 64 /* rows between interrupt polls */
/* Serial loops over pairs, experts or rows: true at every GM_POLL_WORK-th step once an
 * interrupt has come. */
#define POLLED(i) (((i) & (GM_POLL_WORK - 1)) == 0 && gm_interrupted())

/* MOE_ROUTE: in ids [T,K] i32 (values in [-1, E)); out offsets [E+1], slot [T,K]; i[0] = E,
 * i[1] = capacity (-1: dropless). Pass 1 counts (t,k) pairs per expert in token order and
 * gives each its rank within the expert; pass 2 keeps ranks < capacity and places them at
 * offsets[e] + rank, which is a stable counting sort (token order t, then k). */
gm_status gm_cpu_MOE_ROUTE(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *ids = &a->in[0];
    int32_t *offsets = a->out[0].data, *slot = a->out[1].data;
    const int32_t *id = ids->data;
    int64_t E = a->i[0], cap = a->i[1], n = gm_kview_numel(ids);
    int64_t *count = calloc((size_t)E, sizeof *count);
    if (!count) return gm_errf(c, GM_ENOMEM, "moe_dispatch: out of memory (%lld experts)", (long long)E);
    for (int64_t i = 0; i < n; i++) {
        int32_t e = id[i];
        if (POLLED(i)) {
            free(count);
            return GM_EINTR;
        }
        if (e < -1 || e >= E) {
            free(count);
            return gm_errf(c, GM_EINDEX, "moe_dispatch: expert id %d (token %lld, choice %lld) out of range [-1, %lld)",
                           (int)e, (long long)(i / ids->shape[1]), (long long)(i % ids->shape[1]), (long long)E);
        }
        slot[i] = e < 0 ? -1 : (int32_t)count[e]++; /* rank within expert e for now */
    }
    int64_t total = 0;
    offsets[0] = 0;
    for (int64_t e = 0; e < E; e++) {
        int64_t kept = cap >= 0 && count[e] > cap ? cap : count[e];
        if (POLLED(e)) {
            free(count);
            return GM_EINTR;
        }
        total += kept;
        if (total > INT32_MAX) {
            free(count);
            return gm_errf(c, GM_ENOTSUP, "moe_dispatch: more than 2^31-1 dispatched rows");
        }
        offsets[e + 1] = (int32_t)total;
    }
    for (int64_t i = 0; i < n; i++) {
        int32_t e = id[i];
        if (POLLED(i)) {
            free(count);
            return GM_EINTR;
        }
        if (e < 0) continue;
        slot[i] = cap >= 0 && slot[i] >= cap ? -1 : offsets[e] + slot[i];
    }
    free(count);
    return GM_OK;
}

/* MOE_ROW_EXPERT: in offsets [E+1]; out row_expert [S]: the expert owning each row. */
gm_status gm_cpu_MOE_ROW_EXPERT(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    const int32_t *off = a->in[0].data;
    int32_t *re = a->out[0].data;
    int64_t E = a->in[0].shape[0] - 1;
    for (int64_t e = 0; e < E; e++)
        for (int32_t s = off[e]; s < off[e + 1]; s++) {
            if (POLLED(s)) return GM_EINTR;
            re[s] = (int32_t)e;
        }
    return GM_OK;
}

/* Slot values in [-1, S), each row at most once; fills inv[s] = t*K + k or -1 when inv is
 * not NULL. op names the calling op in errors. */
static gm_status check_slots(gm_ctx *c, const char *op, const int32_t *slot, int64_t n, int64_t K,
                             int64_t S, int64_t *inv) {
    unsigned char *seen = inv ? NULL : calloc((size_t)(S > 0 ? S : 1), 1);
    if (!inv && !seen) return gm_errf(c, GM_ENOMEM, "%s: out of memory", op);
    if (inv)
        for (int64_t s = 0; s < S; s++) inv[s] = -1;
    gm_status st = GM_OK;
    for (int64_t i = 0; i < n && st == GM_OK; i++) {
        int32_t s = slot[i];
        if (s == -1) continue;
        if (s < -1 || s >= S)
            st = gm_errf(c, GM_EINDEX, "%s: slot %d (token %lld, choice %lld) out of range [-1, %lld)", op, (int)s,
                         (long long)(i / K), (long long)(i % K), (long long)S);
        else if (inv ? inv[s] >= 0 : seen[s])
            st = gm_errf(c, GM_EARG, "%s: row %d of ys is used twice (tokens %lld and %lld); each row may serve one (token, choice)",
                         op, (int)s, (long long)((inv ? inv[s] : 0) / K), (long long)(i / K));
        else if (inv)
            inv[s] = i;
        else
            seen[s] = 1;
    }
    free(seen);
    return st;
}

/* Row helpers: one dtype switch per row of D elements (f32 rows stay in f32 arithmetic). */
static inline void row_scale(gm_dtype t, void *o, const void *x, double w, int64_t D) {
    if (t == GM_F32) {
        float *a = o, wf = (float)w;
        const float *b = x;
        for (int64_t d = 0; d < D; d++) a[d] = wf * b[d];
    } else {
        double *a = o;
        const double *b = x;
        for (int64_t d = 0; d < D; d++) a[d] = w * b[d];
    }
}

static inline void row_axpy(gm_dtype t, void *o, const void *x, double w, int64_t D) {
    if (t == GM_F32) {
        float *a = o, wf = (float)w;
        const float *b = x;
        for (int64_t d = 0; d < D; d++) a[d] += wf * b[d];
    } else {
        double *a = o;
        const double *b = x;
        for (int64_t d = 0; d < D; d++) a[d] += w * b[d];
    }
}

static inline double row_dot(gm_dtype t, const void *x, const void *y, int64_t D) {
    if (t == GM_F32) {
        const float *a = x, *b = y;
        float acc = 0;
        for (int64_t d = 0; d < D; d++) acc += a[d] * b[d];
        return acc;
    }
    const double *a = x, *b = y;
    double acc = 0;
    for (int64_t d = 0; d < D; d++) acc += a[d] * b[d];
    return acc;
}

/* The shared state of one row-parallel kernel. */
typedef struct {
    const gm_kargs *a;
    const int64_t *inv; /* MOE_SCATTER: the (t,k) of each row, -1 if none */
    int64_t D, K;
    size_t esz;
    int stop;
} rows_job;

/* ---- MOE_SCATTER: dst[slot[t,k]] = w[t,k] * src[t] (no weights: a copy) ----------------- */
static void scatter_range(void *ctx, int64_t lo, int64_t hi) {
    rows_job *j = ctx;
    const gm_kargs *a = j->a;
    gm_dtype t = a->out[0].dtype;
    const char *src = a->in[0].data;
    const void *w = a->n_in > 2 ? a->in[2].data : NULL;
    char *dst = a->out[0].data;
    int64_t D = j->D, K = j->K, rb = D * (int64_t)j->esz;
    for (int64_t s0 = lo; s0 < hi; s0 += CHUNK_ROWS) {
        if (gm_halted(&j->stop)) return;
        int64_t s1 = s0 + CHUNK_ROWS < hi ? s0 + CHUNK_ROWS : hi;
        for (int64_t s = s0; s < s1; s++) {
            int64_t i = j->inv[s];
            if (i < 0) memset(dst + s * rb, 0, (size_t)rb);
            else if (w) row_scale(t, dst + s * rb, src + (i / K) * rb, gm_elem_load(w, t, i), D);
            else memcpy(dst + s * rb, src + (i / K) * rb, (size_t)rb);
        }
    }
}

gm_status gm_cpu_MOE_SCATTER(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *slot = &a->in[1], *dst = &a->out[0];
    int64_t S = dst->shape[0], D = dst->shape[1], K = slot->shape[1];
    int64_t *inv = malloc((size_t)(S > 0 ? S : 1) * sizeof *inv);
    if (!inv) return gm_errf(c, GM_ENOMEM, "moe_combine: out of memory");
    gm_status st = check_slots(c, "moe_combine", slot->data, gm_kview_numel(slot), K, S, inv);
    if (st == GM_OK) {
        rows_job j = {a, inv, D, K, gm_dtype_size(dst->dtype), 0};
        gm_parallel_for(S, gm_min_units(D), a->nthreads, scatter_range, &j);
        if (j.stop) st = GM_EINTR;
    }
    free(inv);
    return st;
}

/* ---- MOE_COMBINE: y[t] = sum_k w[t,k] ys[slot[t,k]] (no weights: w = 1) ------------------ */
static void combine_range(void *ctx, int64_t lo, int64_t hi) {
    rows_job *j = ctx;
    const gm_kargs *a = j->a;
    gm_dtype t = a->out[0].dtype;
    const char *ys = a->in[0].data;
    const int32_t *slot = a->in[1].data;
    const void *w = a->n_in > 2 ? a->in[2].data : NULL;
    char *y = a->out[0].data;
    int64_t D = j->D, K = j->K, rb = D * (int64_t)j->esz;
    for (int64_t t0 = lo; t0 < hi; t0 += CHUNK_ROWS) {
        if (gm_halted(&j->stop)) return;
        int64_t t1 = t0 + CHUNK_ROWS < hi ? t0 + CHUNK_ROWS : hi;
        for (int64_t r = t0; r < t1; r++) {
            memset(y + r * rb, 0, (size_t)rb);
            for (int64_t k = 0; k < K; k++) {
                int32_t s = slot[r * K + k];
                if (s >= 0) row_axpy(t, y + r * rb, ys + s * rb, w ? gm_elem_load(w, t, r * K + k) : 1.0, D);
            }
        }
    }
}

gm_status gm_cpu_MOE_COMBINE(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *ys = &a->in[0], *slot = &a->in[1];
    int64_t T = slot->shape[0], K = slot->shape[1], S = ys->shape[0], D = ys->shape[1];
    gm_status st = check_slots(c, "moe_combine", slot->data, T * K, K, S, NULL);
    if (st) return st;
    rows_job j = {a, NULL, D, K, gm_dtype_size(a->out[0].dtype), 0};
    gm_parallel_for(T, gm_min_units(D * (K > 0 ? K : 1)), a->nthreads, combine_range, &j);
    return j.stop ? GM_EINTR : GM_OK;
}

/* ---- MOE_WGRAD: dw[t,k] = <ys[slot[t,k]], g[t]> ----------------------------------------- */
static void wgrad_range(void *ctx, int64_t lo, int64_t hi) {
    rows_job *j = ctx;
    const gm_kargs *a = j->a;
    gm_dtype t = a->out[0].dtype;
    const char *ys = a->in[0].data, *g = a->in[2].data;
    const int32_t *slot = a->in[1].data;
    void *dw = a->out[0].data;
    int64_t D = j->D, K = j->K, rb = D * (int64_t)j->esz;
    for (int64_t t0 = lo; t0 < hi; t0 += CHUNK_ROWS) {
        if (gm_halted(&j->stop)) return;
        int64_t t1 = t0 + CHUNK_ROWS < hi ? t0 + CHUNK_ROWS : hi;
        for (int64_t r = t0; r < t1; r++)
            for (int64_t k = 0; k < K; k++) {
                int32_t s = slot[r * K + k];
                gm_elem_store(dw, t, r * K + k, s >= 0 ? row_dot(t, ys + s * rb, g + r * rb, D) : 0.0);
            }
    }
}

gm_status gm_cpu_MOE_WGRAD(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    const gm_kview *ys = &a->in[0], *slot = &a->in[1];
    int64_t T = slot->shape[0], K = slot->shape[1], D = ys->shape[1];
    rows_job j = {a, NULL, D, K, gm_dtype_size(a->out[0].dtype), 0};
    gm_parallel_for(T, gm_min_units(D * (K > 0 ? K : 1)), a->nthreads, wgrad_range, &j);
    return j.stop ? GM_EINTR : GM_OK;
}

/* ---- grouped matmul -------------------------------------------------------------------- */

/* offsets [E+1]: 0, non-decreasing, ending at S. */
static gm_status check_offsets(gm_ctx *c, const int32_t *off, int64_t E, int64_t S) {
    if (off[0] != 0 || off[E] != S)
        return gm_errf(c, GM_EINDEX, "expert_mm: offsets must start at 0 and end at the %lld rows of x, got %d .. %d",
                       (long long)S, (int)off[0], (int)off[E]);
    for (int64_t e = 0; e < E; e++)
        if (off[e + 1] < off[e])
            return gm_errf(c, GM_EINDEX, "expert_mm: offsets decrease at expert %lld (%d then %d)", (long long)e,
                           (int)off[e], (int)off[e + 1]);
    return GM_OK;
}

static gm_status dims_ok(gm_ctx *c, int64_t a, int64_t b, int64_t d) {
    if (a > INT_MAX || b > INT_MAX || d > INT_MAX)
        return gm_errf(c, GM_ENOTSUP, "expert_mm: dims exceed BLAS int range");
    return GM_OK;
}

/* One expert's product of a grouped matmul: C[m,n] = op(A)[m,k] op(B)[k,n] (row-major,
 * beta 0), or nothing when m, n or k is 0 (the caller zeroes what needs zeroing). */
typedef struct {
    bool ta, tb;
    int m, n, k, lda, ldb, ldc;
    const void *A, *B;
    void *C;
} gemm_task;

static void gemm_run(gm_dtype t, const gemm_task *g) {
    if (g->m == 0 || g->n == 0 || g->k == 0) return;
    gm_cpu_gemm1(t == GM_F64, g->ta, g->tb, g->m, g->n, g->k, 1.0, g->A, g->lda, g->B, g->ldb, 0.0, g->C, g->ldc);
}

/* Per-expert products below this many flops (2mnk) run whole and concurrently on the kernel's
 * threads: cutting one small gemm over the threads costs a synchronisation per product, while
 * whole experts on separate threads need none. Bigger products are each cut over the threads
 * (gm_cpu_gemm), which balances better when experts get unequal rows. */
#define GROUPED_PAR_MAX_FLOP 4e9

typedef struct {
    gm_dtype t;
    const gemm_task *task;
    const int *order;
} grouped_work;

static void grouped_range(void *ctx, int64_t lo, int64_t hi) {
    const grouped_work *w = ctx;
    for (int64_t i = lo; i < hi; i++) gemm_run(w->t, &w->task[w->order[i]]);
}

static int by_size_desc(const void *x, const void *y, void *ctx) {
    const gemm_task *t = ctx;
    int i = *(const int *)x, j = *(const int *)y;
    double a = (double)t[i].m * t[i].n * t[i].k, b = (double)t[j].m * t[j].n * t[j].k;
    return a > b ? -1 : a < b ? 1 : i - j;
}

/* Run the E products of tasks: whole products on the threads (small ones), or each product cut
 * over the threads (blas.h). The mode and the cuts depend only on the shapes and a->nthreads,
 * so results are deterministic for a thread count. */
static gm_status grouped_gemm(gm_ctx *c, const gm_kargs *a, gm_dtype t, gemm_task *task, int64_t E) {
    int nt = a->nthreads > 0 ? a->nthreads : 1, busy = 0;
    double most = 0;
    for (int64_t e = 0; e < E; e++) {
        double f = 2.0 * task[e].m * task[e].n * task[e].k;
        if (f > 0) busy++;
        if (f > most) most = f;
    }
    bool par = nt > 1 && busy > 1 && most <= GROUPED_PAR_MAX_FLOP;
    if (!par) {
        for (int64_t e = 0; e < E; e++) {
            const gemm_task *g = &task[e];
            if (!g->m || !g->n || !g->k) continue;
            gm_gemm_args ga = {.f64 = t == GM_F64, .ta = g->ta, .tb = g->tb, .m = g->m, .n = g->n, .k = g->k,
                               .lda = g->lda, .ldb = g->ldb, .ldc = g->ldc, .alpha = 1, .beta = 0, .A = g->A,
                               .B = g->B, .C = g->C};
            gm_status st = gm_cpu_gemm(&ga, nt);
            if (st != GM_OK) return st;
        }
        return GM_OK;
    }
    if (gm_interrupted()) return GM_EINTR;
    /* Largest products first (LPT) so the threads finish together. */
    int *order = malloc((size_t)E * sizeof *order);
    if (!order) return gm_errf(c, GM_ENOMEM, "expert_mm: out of memory");
    int n = 0;
    for (int64_t e = 0; e < E; e++)
        if (task[e].m && task[e].n && task[e].k) order[n++] = (int)e;
    /* insertion sort (E is small), by flops descending, ties by expert id */
    for (int i = 1; i < n; i++) {
        int v = order[i], j = i;
        while (j > 0 && by_size_desc(&v, &order[j - 1], task) < 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
    /* threads claim whole products in that order; each gets GM_GEMM_MIN_FLOP at least */
    double total = 0;
    for (int i = 0; i < n; i++) total += 2.0 * task[order[i]].m * task[order[i]].n * task[order[i]].k;
    double per = n > 0 ? total / n : 1;
    grouped_work w = {t, task, order};
    gm_parallel_for(n, per >= GM_GEMM_MIN_FLOP ? 1 : (int64_t)(GM_GEMM_MIN_FLOP / per) + 1, nt, grouped_range, &w);
    free(order);
    return GM_OK;
}

/* EXPERT_MM: in xs [S,A], w, offsets; out [S,B]. i[0] = 0: w [E,A,B], out_e = xs_e w[e];
 * i[0] = 1: w [E,B,A], out_e = xs_e w[e]^T. Rows of experts without tokens do not exist, so
 * nothing is skipped in out. */
gm_status gm_cpu_EXPERT_MM(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *xs = &a->in[0], *w = &a->in[1], *out = &a->out[0];
    const int32_t *off = a->in[2].data;
    int64_t S = xs->shape[0], A = xs->shape[1], B = out->shape[1], E = w->shape[0];
    bool tr = a->i[0] != 0;
    gm_status st = check_offsets(c, off, E, S);
    if (!st) st = dims_ok(c, S, A, B);
    if (st) return st;
    size_t esz = gm_dtype_size(out->dtype);
    if (A == 0) { /* empty sums: BLAS differs on K = 0 */
        memset(out->data, 0, (size_t)(S * B) * esz);
        return GM_OK;
    }
    gemm_task *task = malloc((size_t)(E > 0 ? E : 1) * sizeof *task);
    if (!task) return gm_errf(c, GM_ENOMEM, "expert_mm: out of memory");
    for (int64_t e = 0; e < E; e++) {
        int64_t r0 = off[e];
        task[e] = (gemm_task){false, tr, (int)(off[e + 1] - r0), (int)B, (int)A,
                              (int)A, (int)(tr ? A : B), (int)B,
                              (const char *)xs->data + (size_t)(r0 * A) * esz,
                              (const char *)w->data + (size_t)(e * A * B) * esz,
                              (char *)out->data + (size_t)(r0 * B) * esz};
    }
    st = grouped_gemm(c, a, out->dtype, task, E);
    free(task);
    return st;
}

/* EXPERT_MM_WGRAD: in xs [S,Din], g [S,Dout], offsets; out dw [E,Din,Dout] = xs_e^T g_e
 * (zero for experts without rows). */
gm_status gm_cpu_EXPERT_MM_WGRAD(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *xs = &a->in[0], *g = &a->in[1], *dw = &a->out[0];
    const int32_t *off = a->in[2].data;
    int64_t S = xs->shape[0], Din = xs->shape[1], Dout = g->shape[1], E = dw->shape[0];
    gm_status st = check_offsets(c, off, E, S);
    if (!st) st = dims_ok(c, S, Din, Dout);
    if (st) return st;
    size_t esz = gm_dtype_size(dw->dtype);
    gemm_task *task = malloc((size_t)(E > 0 ? E : 1) * sizeof *task);
    if (!task) return gm_errf(c, GM_ENOMEM, "expert_mm: out of memory");
    for (int64_t e = 0; e < E; e++) {
        int64_t m = off[e + 1] - off[e], r0 = off[e];
        char *o = (char *)dw->data + (size_t)(e * Din * Dout) * esz;
        if (m == 0 && Din > 0 && Dout > 0) memset(o, 0, (size_t)(Din * Dout) * esz);
        task[e] = (gemm_task){true, false, (int)Din, (int)Dout, (int)m, (int)Din, (int)Dout, (int)Dout,
                              (const char *)xs->data + (size_t)(r0 * Din) * esz,
                              (const char *)g->data + (size_t)(r0 * Dout) * esz, o};
    }
    st = grouped_gemm(c, a, dw->dtype, task, E);
    free(task);
    return st;
}
