/* pointwise.c (cpu): elementwise kernels of core/ops/pointwise.def. One N-d strided iterator
 * (pw_iter) merges dims whose strides chain, then walks rows of the innermost dim in chunks that
 * threads share. Each kernel supplies a row function; its contiguous and scalar-broadcast cases
 * are flat restrict loops the compiler vectorises. i[0] is the GM_OP_* id of the element
 * function, so one kernel serves a whole op family (binary, unary, their backward, where). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "parallel.h"
#include "vmath.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

#define PW_OPS 4            /* operands of one kernel: out[0] + up to 3 inputs */
#define PW_CHUNK (1 << 16)  /* elements per work unit: thread grain and interrupt poll */
#define PW_PAR_MIN 32768    /* below this many elements, one thread */
#define PW_INLINE static inline __attribute__((always_inline))

static const double pw_sqrt1_2 = 0.70710678118654752440;   /* 1/sqrt(2) */
static const double pw_rsqrt2pi = 0.39894228040143267794;  /* 1/sqrt(2 pi) */

/* ---- the N-d strided iterator ---------------------------------------------------------- */

/* Operand 0 is the output; all operands have the same logical shape. */
typedef struct pw_iter {
    int nops, ndim;
    int64_t shape[GM_MAX_DIMS];
    int64_t st[PW_OPS][GM_MAX_DIMS]; /* elements */
    char *base[PW_OPS];
    int64_t esz[PW_OPS];
} pw_iter;

/* One row: n elements, operand k at p[k] with element stride st[k]. Returns nonzero to flag
 * an element error (integer division by zero), which the kernel turns into a message. */
typedef int (*pw_rowfn)(const void *ctx, char *const *p, const int64_t *st, int64_t n);

static bool pw_iter_init(pw_iter *it, int nops, const gm_kview *const *v) {
    const gm_kview *o = v[0];
    it->nops = nops;
    it->ndim = 0;
    for (int k = 0; k < nops; k++) {
        if (v[k]->ndim != o->ndim) return false;
        for (int d = 0; d < o->ndim; d++)
            if (v[k]->shape[d] != o->shape[d]) return false;
        it->base[k] = v[k]->data;
        it->esz[k] = (int64_t)gm_dtype_size(v[k]->dtype);
    }
    /* Size-1 dims carry no stride information; neighbours whose strides chain for every
     * operand become one dim, so contiguous (or broadcast-scalar) data is a single row. */
    for (int d = 0; d < o->ndim; d++) {
        int64_t s = o->shape[d];
        if (s == 1) continue;
        int m = it->ndim;
        bool merge = m > 0;
        for (int k = 0; merge && k < nops; k++) merge = it->st[k][m - 1] == v[k]->stride[d] * s;
        if (merge) {
            it->shape[m - 1] *= s;
            for (int k = 0; k < nops; k++) it->st[k][m - 1] = v[k]->stride[d];
        } else {
            it->shape[m] = s;
            for (int k = 0; k < nops; k++) it->st[k][m] = v[k]->stride[d];
            it->ndim++;
        }
    }
    if (it->ndim == 0) {
        it->ndim = 1;
        it->shape[0] = 1;
        for (int k = 0; k < nops; k++) it->st[k][0] = 0;
    }
    return true;
}

/* Pointers at outer row r (row-major over dims 0..ndim-2), off elements into the row. */
static void pw_seek(const pw_iter *it, int64_t r, int64_t off, int64_t *idx, char **p) {
    int in = it->ndim - 1;
    for (int k = 0; k < it->nops; k++) p[k] = it->base[k] + off * it->st[k][in] * it->esz[k];
    for (int d = in - 1; d >= 0; d--) {
        idx[d] = r % it->shape[d];
        r /= it->shape[d];
        for (int k = 0; k < it->nops; k++) p[k] += idx[d] * it->st[k][d] * it->esz[k];
    }
}

static void pw_next_row(const pw_iter *it, int64_t *idx, char **p) {
    for (int d = it->ndim - 2; d >= 0; d--) {
        for (int k = 0; k < it->nops; k++) p[k] += it->st[k][d] * it->esz[k];
        if (++idx[d] < it->shape[d]) return;
        for (int k = 0; k < it->nops; k++) p[k] -= it->st[k][d] * it->shape[d] * it->esz[k];
        idx[d] = 0;
    }
}

/* Work units: a piece of at most PW_CHUNK elements of one long row, or a run of short rows
 * covering about PW_CHUNK elements. Units are independent, so threads split them freely and
 * the result does not depend on the thread count. */
typedef struct pw_job {
    const pw_iter *it;
    pw_rowfn fn;
    const void *ctx;
    int64_t rows, inner, pieces, rpu, ist[PW_OPS];
    int bad; /* OR of the row functions' flags, set with an atomic OR by each range */
} pw_job;

static void pw_range(void *vj, int64_t u0, int64_t u1) {
    pw_job *j = vj;
    int bad = 0;
    for (int64_t u = u0; u < u1; u++) {
        if (gm_interrupted()) break;
        int64_t idx[GM_MAX_DIMS];
        char *p[PW_OPS];
        int64_t r0 = u / j->pieces * j->rpu, off = u % j->pieces * PW_CHUNK;
        int64_t len = j->inner - off < PW_CHUNK ? j->inner - off : PW_CHUNK;
        int64_t r1 = r0 + j->rpu < j->rows ? r0 + j->rpu : j->rows;
        pw_seek(j->it, r0, off, idx, p);
        for (int64_t r = r0; r < r1; r++) {
            bad |= j->fn(j->ctx, p, j->ist, len);
            if (r + 1 < r1) pw_next_row(j->it, idx, p);
        }
    }
    if (bad) __atomic_fetch_or(&j->bad, bad, __ATOMIC_RELAXED);
}

/* *flag ORs the row functions' flags. */
static gm_status pw_run(gm_ctx *c, const char *name, const pw_iter *it, pw_rowfn fn,
                        const void *ctx, int nthreads, int *flag) {
    int64_t n = 1;
    for (int d = 0; d < it->ndim; d++) n *= it->shape[d];
    *flag = 0;
    if (n == 0) return GM_OK;
    if (it->ndim == 1 && n <= PW_CHUNK) { /* one row, one unit: skip the work splitting */
        char *p[PW_OPS];
        int64_t st[PW_OPS];
        for (int k = 0; k < it->nops; k++) p[k] = it->base[k], st[k] = it->st[k][0];
        *flag = fn(ctx, p, st, n);
        return GM_OK;
    }
    pw_job j = {.it = it, .fn = fn, .ctx = ctx, .inner = it->shape[it->ndim - 1]};
    j.rows = n / j.inner;
    j.pieces = (j.inner + PW_CHUNK - 1) / PW_CHUNK;
    j.rpu = j.inner >= PW_CHUNK ? 1 : PW_CHUNK / j.inner;
    int64_t units = (j.rows + j.rpu - 1) / j.rpu * j.pieces;
    for (int k = 0; k < it->nops; k++) j.ist[k] = it->st[k][it->ndim - 1];
    /* Threads only past PW_PAR_MIN elements (and at least one unit each). */
    gm_parallel_for(units, 1, n > PW_PAR_MIN ? nthreads : 1, pw_range, &j);
    *flag = j.bad;
    if (gm_interrupted()) return gm_errf(c, GM_EINTR, "%s: interrupted", name);
    return GM_OK;
}

/* What a row function needs besides its operands. */
typedef struct pw_ctx {
    int op, which;   /* GM_OP_* id; binary backward: 0 = d/dx, 1 = d/dy */
    gm_dtype dt, ct; /* dtype of the value operands; where: dtype of cond */
    double lo, hi;   /* clamp bounds, -inf/+inf when absent */
} pw_ctx;

static gm_status pw_kernel(gm_ctx *c, const char *name, const gm_kargs *a, int nin, pw_rowfn fn,
                           const pw_ctx *x, int *flag) {
    const gm_kview *v[PW_OPS] = {&a->out[0]};
    for (int k = 0; k < nin; k++) v[k + 1] = &a->in[k];
    pw_iter it;
    if (a->n_out < 1 || a->n_in < nin || !pw_iter_init(&it, nin + 1, v))
        return gm_errf(c, GM_EINTERNAL, "%s: kernel operands differ in shape", name);
    return pw_run(c, name, &it, fn, x, a->nthreads, flag);
}

static const char *pw_name(int op) {
    const gm_opdef *d = gm_opdef_get(op);
    return d ? d->name : "pointwise";
}

static double pw_sigmoid(double x) {
    if (x >= 0) return 1 / (1 + exp(-x));
    double e = exp(x);
    return e / (1 + e);
}

static float pw_sigmoidf(float x) {
    if (x >= 0) return 1 / (1 + expf(-x));
    float e = expf(x);
    return e / (1 + e);
}

/* ---- f32 transcendental blocks: exp, erf and the activations built on them ------------- *
 * libm's scalar expf/erff cost 5-15 ns per call and block vectorisation of the loops around
 * them, which made gelu (and its backward) 15-25x slower than relu. On x86-64 with AVX2 and
 * glibc >= 2.35, f32 exp and erf go through libmvec's 8-lane versions (_ZGVdN8v_expf,
 * _ZGVdN8v_erff: glibc documents at most 1 ulp for expf and 1-2 ulp for erff; measured
 * against f64 libm in tests/lua/t_pointwise.lua); elsewhere the same blocks call scalar libm.
 * EVERY element, tails and strided rows included, goes through the same 8-lane block (tails
 * padded into a buffer), so a value never depends on its position, alignment, layout or the
 * thread count. f64 stays on scalar libm. The 8-lane type and functions are in vmath.h. */
/* One 8-element block of op: forward f(x) (g unused), or backward g f'(x) (bwd). */
PW_INLINE v8f v8_block(int op, bool bwd, v8f x, v8f g) {
    const v8f half = v8_splat(0.5f), one = v8_splat(1.0f);
    switch (op) {
    case GM_OP_EXP: return v8_expf(x); /* backward uses y, not this path */
    case GM_OP_SIGMOID: return v8_sigmoid(x);
    case GM_OP_GELU: {
        v8f u = v8_erff(x * v8_splat((float)pw_sqrt1_2));
        if (!bwd) return half * x * (one + u);
        v8f t = v8_expf(-half * x * x);
        return g * (half * (one + u) + x * v8_splat((float)pw_rsqrt2pi) * t);
    }
    case GM_OP_SILU: {
        v8f t = v8_sigmoid(x);
        return bwd ? g * t * (one + x * (one - t)) : x * t;
    }
    case GM_OP_SOFTPLUS:   /* max(x, 0) + log1p(e^-|x|); d/dx = sigmoid(x) */
    case GM_OP_LOGSIGMOID: { /* min(x, 0) - log1p(e^-|x|); d/dx = sigmoid(-x) */
        bool sp = op == GM_OP_SOFTPLUS;
        if (bwd) return g * v8_sigmoid(sp ? x : -x);
        v8f l = v8_log1pf(v8_expf(-v8_abs(x))), zero = v8_splat(0.0f);
        v8i pos = x > zero;
        v8f kept = (v8f)((sp ? pos : ~pos) & (v8i)x); /* x where max/min picks it, else 0 (NaN: 0) */
        return sp ? kept + l : kept - l;
    }
    case GM_OP_TANH: return v8_tanhf(x); /* backward uses y, not this path */
    default: return x;
    }
}

/* Ops the blocks serve: forward EXP SIGMOID GELU SILU SOFTPLUS LOGSIGMOID TANH, backward GELU
 * SILU SOFTPLUS LOGSIGMOID. */
static inline bool v8_serves(int op, bool bwd) {
    bool sp = op == GM_OP_SOFTPLUS || op == GM_OP_LOGSIGMOID;
    if (bwd) return op == GM_OP_GELU || op == GM_OP_SILU || sp;
    return op == GM_OP_EXP || op == GM_OP_SIGMOID || op == GM_OP_GELU || op == GM_OP_SILU || sp || op == GM_OP_TANH;
}

/* o[i*so] = block(x[i*sx], g[i*sg]) for i < n; g may be NULL (forward). */
static void v8_row(int op, bool bwd, float *o, int64_t so, const float *x, int64_t sx, const float *g,
                   int64_t sg, int64_t n) {
    v8f xb = v8_splat(0.0f), gb = v8_splat(0.0f), ob;
    int64_t i = 0;
    if (so == 1 && sx == 1 && (!g || sg == 1))
        for (; i + 8 <= n; i += 8) {
            memcpy(&xb, x + i, sizeof xb);
            if (g) memcpy(&gb, g + i, sizeof gb);
            ob = v8_block(op, bwd, xb, gb);
            memcpy(o + i, &ob, sizeof ob);
        }
    for (; i < n; i += 8) { /* tails and strided rows: the same block on a padded copy */
        int m = n - i < 8 ? (int)(n - i) : 8;
        for (int l = 0; l < 8; l++) {
            xb[l] = l < m ? x[(i + l) * sx] : 0.0f;
            if (g) gb[l] = l < m ? g[(i + l) * sg] : 0.0f;
        }
        ob = v8_block(op, bwd, xb, gb);
        for (int l = 0; l < m; l++) o[(i + l) * so] = ob[l];
    }
}

static int32_t pw_wrap(int64_t v) { return (int32_t)(uint32_t)(uint64_t)v; }

/* Row flags: an integer division by zero, an i32 result outside -2^31 .. 2^31-1. */
#define PW_DIV0 1
#define PW_OVERFLOW 2

/* ---- binary: out = x op y ------------------------------------------------------------- */

PW_INLINE float f32_bin(int op, float x, float y) {
    switch (op) {
    case GM_OP_ADD: return x + y;
    case GM_OP_SUB: return x - y;
    case GM_OP_MUL: return x * y;
    case GM_OP_DIV: return x / y;
    case GM_OP_POW: return powf(x, y);
    case GM_OP_MAXIMUM: return (x > y || x != x) ? x : y; /* NaN propagates */
    case GM_OP_MINIMUM: return (x < y || x != x) ? x : y;
    case GM_OP_EQ: return x == y ? 1.0f : 0.0f;
    case GM_OP_NE: return x != y ? 1.0f : 0.0f;
    case GM_OP_LT: return x < y ? 1.0f : 0.0f;
    case GM_OP_LE: return x <= y ? 1.0f : 0.0f;
    case GM_OP_GT: return x > y ? 1.0f : 0.0f;
    case GM_OP_GE: return x >= y ? 1.0f : 0.0f;
    default: return 0;
    }
}

PW_INLINE double f64_bin(int op, double x, double y) {
    switch (op) {
    case GM_OP_ADD: return x + y;
    case GM_OP_SUB: return x - y;
    case GM_OP_MUL: return x * y;
    case GM_OP_DIV: return x / y;
    case GM_OP_POW: return pow(x, y);
    case GM_OP_MAXIMUM: return (x > y || x != x) ? x : y;
    case GM_OP_MINIMUM: return (x < y || x != x) ? x : y;
    case GM_OP_EQ: return x == y ? 1.0 : 0.0;
    case GM_OP_NE: return x != y ? 1.0 : 0.0;
    case GM_OP_LT: return x < y ? 1.0 : 0.0;
    case GM_OP_LE: return x <= y ? 1.0 : 0.0;
    case GM_OP_GT: return x > y ? 1.0 : 0.0;
    case GM_OP_GE: return x >= y ? 1.0 : 0.0;
    default: return 0;
    }
}

/* i32 arithmetic in 64 bits: the loops store the low 32 bits and flag a result that did not fit
 * (the op then fails); DIV is separate. */
PW_INLINE int64_t i32_bin(int op, int32_t x, int32_t y) {
    switch (op) {
    case GM_OP_ADD: return (int64_t)x + y;
    case GM_OP_SUB: return (int64_t)x - y;
    case GM_OP_MUL: return (int64_t)x * y;
    case GM_OP_MAXIMUM: return x > y ? x : y;
    case GM_OP_MINIMUM: return x < y ? x : y;
    case GM_OP_EQ: return x == y;
    case GM_OP_NE: return x != y;
    case GM_OP_LT: return x < y;
    case GM_OP_LE: return x <= y;
    case GM_OP_GT: return x > y;
    case GM_OP_GE: return x >= y;
    default: return 0;
    }
}

/* Contiguous, scalar y, scalar x (stride 0 after broadcasting), then any strides. */
PW_INLINE void f32_bin_loop(int op, float *restrict o, const float *restrict x,
                            const float *restrict y, const int64_t *st, int64_t n) {
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_bin(op, x[i], y[i]);
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
        const float b = y[0];
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_bin(op, x[i], b);
    } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
        const float b = x[0];
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_bin(op, b, y[i]);
    } else {
        for (int64_t i = 0; i < n; i++) o[i * st[0]] = f32_bin(op, x[i * st[1]], y[i * st[2]]);
    }
}

PW_INLINE void f64_bin_loop(int op, double *restrict o, const double *restrict x,
                            const double *restrict y, const int64_t *st, int64_t n) {
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f64_bin(op, x[i], y[i]);
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
        const double b = y[0];
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f64_bin(op, x[i], b);
    } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
        const double b = x[0];
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f64_bin(op, b, y[i]);
    } else {
        for (int64_t i = 0; i < n; i++) o[i * st[0]] = f64_bin(op, x[i * st[1]], y[i * st[2]]);
    }
}

/* Returns PW_OVERFLOW when some result did not fit i32. */
PW_INLINE int i32_bin_loop(int op, int32_t *restrict o, const int32_t *restrict x,
                           const int32_t *restrict y, const int64_t *st, int64_t n) {
    int over = 0;
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
#pragma omp simd reduction(| : over)
        for (int64_t i = 0; i < n; i++) {
            int64_t r = i32_bin(op, x[i], y[i]);
            o[i] = pw_wrap(r);
            over |= r != (int32_t)r;
        }
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
        const int32_t b = y[0];
#pragma omp simd reduction(| : over)
        for (int64_t i = 0; i < n; i++) {
            int64_t r = i32_bin(op, x[i], b);
            o[i] = pw_wrap(r);
            over |= r != (int32_t)r;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            int64_t r = i32_bin(op, x[i * st[1]], y[i * st[2]]);
            o[i * st[0]] = pw_wrap(r);
            over |= r != (int32_t)r;
        }
    }
    return over ? PW_OVERFLOW : 0;
}

/* The switches give each loop a constant op, so the element function folds to one line. */
static void f32_bin_row(int op, float *o, const float *x, const float *y, const int64_t *st,
                        int64_t n) {
    switch (op) {
    case GM_OP_ADD: f32_bin_loop(GM_OP_ADD, o, x, y, st, n); break;
    case GM_OP_SUB: f32_bin_loop(GM_OP_SUB, o, x, y, st, n); break;
    case GM_OP_MUL: f32_bin_loop(GM_OP_MUL, o, x, y, st, n); break;
    case GM_OP_DIV: f32_bin_loop(GM_OP_DIV, o, x, y, st, n); break;
    case GM_OP_POW: f32_bin_loop(GM_OP_POW, o, x, y, st, n); break;
    case GM_OP_MAXIMUM: f32_bin_loop(GM_OP_MAXIMUM, o, x, y, st, n); break;
    case GM_OP_MINIMUM: f32_bin_loop(GM_OP_MINIMUM, o, x, y, st, n); break;
    case GM_OP_EQ: f32_bin_loop(GM_OP_EQ, o, x, y, st, n); break;
    case GM_OP_NE: f32_bin_loop(GM_OP_NE, o, x, y, st, n); break;
    case GM_OP_LT: f32_bin_loop(GM_OP_LT, o, x, y, st, n); break;
    case GM_OP_LE: f32_bin_loop(GM_OP_LE, o, x, y, st, n); break;
    case GM_OP_GT: f32_bin_loop(GM_OP_GT, o, x, y, st, n); break;
    case GM_OP_GE: f32_bin_loop(GM_OP_GE, o, x, y, st, n); break;
    default: break;
    }
}

static void f64_bin_row(int op, double *o, const double *x, const double *y, const int64_t *st,
                        int64_t n) {
    switch (op) {
    case GM_OP_ADD: f64_bin_loop(GM_OP_ADD, o, x, y, st, n); break;
    case GM_OP_SUB: f64_bin_loop(GM_OP_SUB, o, x, y, st, n); break;
    case GM_OP_MUL: f64_bin_loop(GM_OP_MUL, o, x, y, st, n); break;
    case GM_OP_DIV: f64_bin_loop(GM_OP_DIV, o, x, y, st, n); break;
    case GM_OP_POW: f64_bin_loop(GM_OP_POW, o, x, y, st, n); break;
    case GM_OP_MAXIMUM: f64_bin_loop(GM_OP_MAXIMUM, o, x, y, st, n); break;
    case GM_OP_MINIMUM: f64_bin_loop(GM_OP_MINIMUM, o, x, y, st, n); break;
    case GM_OP_EQ: f64_bin_loop(GM_OP_EQ, o, x, y, st, n); break;
    case GM_OP_NE: f64_bin_loop(GM_OP_NE, o, x, y, st, n); break;
    case GM_OP_LT: f64_bin_loop(GM_OP_LT, o, x, y, st, n); break;
    case GM_OP_LE: f64_bin_loop(GM_OP_LE, o, x, y, st, n); break;
    case GM_OP_GT: f64_bin_loop(GM_OP_GT, o, x, y, st, n); break;
    case GM_OP_GE: f64_bin_loop(GM_OP_GE, o, x, y, st, n); break;
    default: break;
    }
}

/* Integer division truncates toward zero; a zero divisor writes 0 and flags the row, and
 * INT32_MIN / -1 (2^31) flags an overflow instead of trapping. */
static int i32_div_row(int32_t *o, const int32_t *x, const int32_t *y, const int64_t *st,
                       int64_t n) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t a = x[i * st[1]], b = y[i * st[2]];
        if (b == 0) bad |= PW_DIV0;
        if (b == -1 && a == INT32_MIN) bad |= PW_OVERFLOW;
        o[i * st[0]] = b == 0 ? 0 : b == -1 ? pw_wrap(-(int64_t)a) : a / b;
    }
    return bad;
}

static int i32_bin_row(int op, int32_t *o, const int32_t *x, const int32_t *y, const int64_t *st,
                       int64_t n) {
    switch (op) {
    case GM_OP_DIV: return i32_div_row(o, x, y, st, n);
    case GM_OP_ADD: return i32_bin_loop(GM_OP_ADD, o, x, y, st, n);
    case GM_OP_SUB: return i32_bin_loop(GM_OP_SUB, o, x, y, st, n);
    case GM_OP_MUL: return i32_bin_loop(GM_OP_MUL, o, x, y, st, n);
    case GM_OP_MAXIMUM: return i32_bin_loop(GM_OP_MAXIMUM, o, x, y, st, n);
    case GM_OP_MINIMUM: return i32_bin_loop(GM_OP_MINIMUM, o, x, y, st, n);
    case GM_OP_EQ: return i32_bin_loop(GM_OP_EQ, o, x, y, st, n);
    case GM_OP_NE: return i32_bin_loop(GM_OP_NE, o, x, y, st, n);
    case GM_OP_LT: return i32_bin_loop(GM_OP_LT, o, x, y, st, n);
    case GM_OP_LE: return i32_bin_loop(GM_OP_LE, o, x, y, st, n);
    case GM_OP_GT: return i32_bin_loop(GM_OP_GT, o, x, y, st, n);
    case GM_OP_GE: return i32_bin_loop(GM_OP_GE, o, x, y, st, n);
    default: break;
    }
    return 0;
}

static int bin_row(const void *vc, char *const *p, const int64_t *st, int64_t n) {
    const pw_ctx *x = vc;
    switch (x->dt) {
    case GM_F32: f32_bin_row(x->op, (float *)p[0], (const float *)p[1], (const float *)p[2], st, n); return 0;
    case GM_F64: f64_bin_row(x->op, (double *)p[0], (const double *)p[1], (const double *)p[2], st, n); return 0;
    case GM_I32: return i32_bin_row(x->op, (int32_t *)p[0], (const int32_t *)p[1], (const int32_t *)p[2], st, n);
    default: return 0;
    }
}

static gm_status i32_overflow(gm_ctx *c, const char *name) {
    return gm_errf(c, GM_EARG, "%s: i32 overflow (a result outside -2147483648 .. 2147483647); compute in "
                   "f64 with x:to(\"f64\")", name);
}

/* out[0] = in[0] op in[1], all the same shape (broadcast views) and dtype.
 * i[0] = GM_OP_ADD..MINIMUM or GM_OP_EQ..GE (comparisons write 1/0 in the same dtype). */
gm_status gm_cpu_PW_BINARY(gm_ctx *c, const gm_kargs *a) {
    pw_ctx x = {.op = (int)a->i[0], .dt = a->out[0].dtype};
    const char *name = pw_name(x.op);
    if (a->in[0].dtype != x.dt || a->in[1].dtype != x.dt)
        return gm_errf(c, GM_EINTERNAL, "%s: kernel operands differ in dtype", name);
    int flag;
    gm_status st = pw_kernel(c, name, a, 2, bin_row, &x, &flag);
    if (st == GM_OK && (flag & PW_DIV0)) st = gm_errf(c, GM_EARG, "%s: integer division by zero", name);
    if (st == GM_OK && (flag & PW_OVERFLOW)) st = i32_overflow(c, name);
    return st;
}

/* ---- unary: out = f(x) ---------------------------------------------------------------- */

PW_INLINE float f32_un(int op, float x, float lo, float hi) {
    switch (op) {
    case GM_OP_NEG: return -x;
    case GM_OP_EXP: return expf(x);
    case GM_OP_LOG: return logf(x);
    case GM_OP_SQRT: return sqrtf(x);
    case GM_OP_RSQRT: return 1.0f / sqrtf(x);
    case GM_OP_ABS: return fabsf(x);
    case GM_OP_CLAMP: { float v = x < lo ? lo : x; return v > hi ? hi : v; } /* NaN stays NaN */
    case GM_OP_SIGMOID: return pw_sigmoidf(x);
    case GM_OP_TANH: return tanhf(x);
    case GM_OP_RELU: return x < 0 ? 0.0f : x;
    case GM_OP_GELU: return 0.5f * x * (1.0f + erff(x * (float)pw_sqrt1_2));
    case GM_OP_SILU: return x * pw_sigmoidf(x);
    /* log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large |x| */
    case GM_OP_SOFTPLUS: return (x > 0 ? x : 0.0f) + log1pf(expf(-fabsf(x)));
    case GM_OP_LOGSIGMOID: return (x < 0 ? x : 0.0f) - log1pf(expf(-fabsf(x)));
    case GM_OP_SIN: return sinf(x);
    case GM_OP_COS: return cosf(x);
    default: return 0;
    }
}

PW_INLINE double f64_un(int op, double x, double lo, double hi) {
    switch (op) {
    case GM_OP_NEG: return -x;
    case GM_OP_EXP: return exp(x);
    case GM_OP_LOG: return log(x);
    case GM_OP_SQRT: return sqrt(x);
    case GM_OP_RSQRT: return 1.0 / sqrt(x);
    case GM_OP_ABS: return fabs(x);
    case GM_OP_CLAMP: { double v = x < lo ? lo : x; return v > hi ? hi : v; }
    case GM_OP_SIGMOID: return pw_sigmoid(x);
    case GM_OP_TANH: return tanh(x);
    case GM_OP_RELU: return x < 0 ? 0.0 : x;
    case GM_OP_GELU: return 0.5 * x * (1.0 + erf(x * pw_sqrt1_2));
    case GM_OP_SILU: return x * pw_sigmoid(x);
    case GM_OP_SOFTPLUS: return (x > 0 ? x : 0.0) + log1p(exp(-fabs(x)));
    case GM_OP_LOGSIGMOID: return (x < 0 ? x : 0.0) - log1p(exp(-fabs(x)));
    case GM_OP_SIN: return sin(x);
    case GM_OP_COS: return cos(x);
    default: return 0;
    }
}

PW_INLINE int64_t i32_un(int op, int32_t x, int32_t lo, int32_t hi) {
    switch (op) {
    case GM_OP_NEG: return -(int64_t)x;
    case GM_OP_ABS: return x < 0 ? -(int64_t)x : x;
    case GM_OP_RELU: return x < 0 ? 0 : x;
    case GM_OP_CLAMP: { int32_t v = x < lo ? lo : x; return v > hi ? hi : v; }
    default: return 0;
    }
}

PW_INLINE void f32_un_loop(int op, float *restrict o, const float *restrict x, const int64_t *st,
                           int64_t n, float lo, float hi) {
    if (st[0] == 1 && st[1] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_un(op, x[i], lo, hi);
    } else {
        for (int64_t i = 0; i < n; i++) o[i * st[0]] = f32_un(op, x[i * st[1]], lo, hi);
    }
}

PW_INLINE void f64_un_loop(int op, double *restrict o, const double *restrict x,
                           const int64_t *st, int64_t n, double lo, double hi) {
    if (st[0] == 1 && st[1] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f64_un(op, x[i], lo, hi);
    } else {
        for (int64_t i = 0; i < n; i++) o[i * st[0]] = f64_un(op, x[i * st[1]], lo, hi);
    }
}

/* Returns PW_OVERFLOW when some result did not fit i32 (-(-2^31)). */
PW_INLINE int i32_un_loop(int op, int32_t *restrict o, const int32_t *restrict x,
                          const int64_t *st, int64_t n, int32_t lo, int32_t hi) {
    int over = 0;
    if (st[0] == 1 && st[1] == 1) {
#pragma omp simd reduction(| : over)
        for (int64_t i = 0; i < n; i++) {
            int64_t r = i32_un(op, x[i], lo, hi);
            o[i] = pw_wrap(r);
            over |= r != (int32_t)r;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            int64_t r = i32_un(op, x[i * st[1]], lo, hi);
            o[i * st[0]] = pw_wrap(r);
            over |= r != (int32_t)r;
        }
    }
    return over ? PW_OVERFLOW : 0;
}

static void f32_un_row(int op, float *o, const float *x, const int64_t *st, int64_t n, float lo,
                       float hi) {
    if (v8_serves(op, false)) {
        v8_row(op, false, o, st[0], x, st[1], NULL, 0, n);
        return;
    }
    switch (op) {
    case GM_OP_NEG: f32_un_loop(GM_OP_NEG, o, x, st, n, lo, hi); break;
    case GM_OP_EXP: f32_un_loop(GM_OP_EXP, o, x, st, n, lo, hi); break;
    case GM_OP_LOG: f32_un_loop(GM_OP_LOG, o, x, st, n, lo, hi); break;
    case GM_OP_SQRT: f32_un_loop(GM_OP_SQRT, o, x, st, n, lo, hi); break;
    case GM_OP_RSQRT: f32_un_loop(GM_OP_RSQRT, o, x, st, n, lo, hi); break;
    case GM_OP_ABS: f32_un_loop(GM_OP_ABS, o, x, st, n, lo, hi); break;
    case GM_OP_CLAMP: f32_un_loop(GM_OP_CLAMP, o, x, st, n, lo, hi); break;
    case GM_OP_SIGMOID: f32_un_loop(GM_OP_SIGMOID, o, x, st, n, lo, hi); break;
    case GM_OP_TANH: f32_un_loop(GM_OP_TANH, o, x, st, n, lo, hi); break;
    case GM_OP_RELU: f32_un_loop(GM_OP_RELU, o, x, st, n, lo, hi); break;
    case GM_OP_GELU: f32_un_loop(GM_OP_GELU, o, x, st, n, lo, hi); break;
    case GM_OP_SILU: f32_un_loop(GM_OP_SILU, o, x, st, n, lo, hi); break;
    case GM_OP_SOFTPLUS: f32_un_loop(GM_OP_SOFTPLUS, o, x, st, n, lo, hi); break;
    case GM_OP_LOGSIGMOID: f32_un_loop(GM_OP_LOGSIGMOID, o, x, st, n, lo, hi); break;
    case GM_OP_SIN: f32_un_loop(GM_OP_SIN, o, x, st, n, lo, hi); break;
    case GM_OP_COS: f32_un_loop(GM_OP_COS, o, x, st, n, lo, hi); break;
    default: break;
    }
}

static void f64_un_row(int op, double *o, const double *x, const int64_t *st, int64_t n,
                       double lo, double hi) {
    switch (op) {
    case GM_OP_NEG: f64_un_loop(GM_OP_NEG, o, x, st, n, lo, hi); break;
    case GM_OP_EXP: f64_un_loop(GM_OP_EXP, o, x, st, n, lo, hi); break;
    case GM_OP_LOG: f64_un_loop(GM_OP_LOG, o, x, st, n, lo, hi); break;
    case GM_OP_SQRT: f64_un_loop(GM_OP_SQRT, o, x, st, n, lo, hi); break;
    case GM_OP_RSQRT: f64_un_loop(GM_OP_RSQRT, o, x, st, n, lo, hi); break;
    case GM_OP_ABS: f64_un_loop(GM_OP_ABS, o, x, st, n, lo, hi); break;
    case GM_OP_CLAMP: f64_un_loop(GM_OP_CLAMP, o, x, st, n, lo, hi); break;
    case GM_OP_SIGMOID: f64_un_loop(GM_OP_SIGMOID, o, x, st, n, lo, hi); break;
    case GM_OP_TANH: f64_un_loop(GM_OP_TANH, o, x, st, n, lo, hi); break;
    case GM_OP_RELU: f64_un_loop(GM_OP_RELU, o, x, st, n, lo, hi); break;
    case GM_OP_GELU: f64_un_loop(GM_OP_GELU, o, x, st, n, lo, hi); break;
    case GM_OP_SILU: f64_un_loop(GM_OP_SILU, o, x, st, n, lo, hi); break;
    case GM_OP_SOFTPLUS: f64_un_loop(GM_OP_SOFTPLUS, o, x, st, n, lo, hi); break;
    case GM_OP_LOGSIGMOID: f64_un_loop(GM_OP_LOGSIGMOID, o, x, st, n, lo, hi); break;
    case GM_OP_SIN: f64_un_loop(GM_OP_SIN, o, x, st, n, lo, hi); break;
    case GM_OP_COS: f64_un_loop(GM_OP_COS, o, x, st, n, lo, hi); break;
    default: break;
    }
}

static int i32_un_row(int op, int32_t *o, const int32_t *x, const int64_t *st, int64_t n,
                      int32_t lo, int32_t hi) {
    switch (op) {
    case GM_OP_NEG: return i32_un_loop(GM_OP_NEG, o, x, st, n, lo, hi);
    case GM_OP_ABS: return i32_un_loop(GM_OP_ABS, o, x, st, n, lo, hi);
    case GM_OP_RELU: return i32_un_loop(GM_OP_RELU, o, x, st, n, lo, hi);
    case GM_OP_CLAMP: return i32_un_loop(GM_OP_CLAMP, o, x, st, n, lo, hi);
    default: return 0;
    }
}

/* An i32 clamp keeps the integers inside [lo, hi]: ceil the min, floor the max. */
static int32_t pw_i32_bound(double v, bool is_lo) {
    v = is_lo ? ceil(v) : floor(v);
    if (!(v > INT32_MIN)) return INT32_MIN; /* also -inf */
    if (v > INT32_MAX) return INT32_MAX;
    return (int32_t)v;
}

static int un_row(const void *vc, char *const *p, const int64_t *st, int64_t n) {
    const pw_ctx *x = vc;
    switch (x->dt) {
    case GM_F32: f32_un_row(x->op, (float *)p[0], (const float *)p[1], st, n, (float)x->lo, (float)x->hi); break;
    case GM_F64: f64_un_row(x->op, (double *)p[0], (const double *)p[1], st, n, x->lo, x->hi); break;
    case GM_I32:
        return i32_un_row(x->op, (int32_t *)p[0], (const int32_t *)p[1], st, n, pw_i32_bound(x->lo, true),
                          pw_i32_bound(x->hi, false));
    default: break;
    }
    return 0;
}

/* out[0] = f(in[0]), same shape and dtype. i[0] = GM_OP_NEG..LOGSIGMOID (i32: NEG ABS RELU CLAMP
 * only; the rules refuse the rest). CLAMP: d[0] = min, d[1] = max (-inf/+inf when absent). */
gm_status gm_cpu_PW_UNARY(gm_ctx *c, const gm_kargs *a) {
    pw_ctx x = {.op = (int)a->i[0], .dt = a->out[0].dtype, .lo = a->d[0], .hi = a->d[1]};
    int flag;
    if (a->in[0].dtype != x.dt)
        return gm_errf(c, GM_EINTERNAL, "%s: kernel operands differ in dtype", pw_name(x.op));
    gm_status st = pw_kernel(c, pw_name(x.op), a, 1, un_row, &x, &flag);
    return st == GM_OK && (flag & PW_OVERFLOW) ? i32_overflow(c, pw_name(x.op)) : st;
}

/* ---- unary backward: gx = g * f'(x), with y = f(x) where the op saves it -------------- */

PW_INLINE float f32_unb(int op, float g, float x, float y, float lo, float hi) {
    switch (op) {
    case GM_OP_NEG: return -g;
    case GM_OP_EXP: return g * y;
    case GM_OP_LOG: return g / x;
    case GM_OP_SQRT: return g * 0.5f / y;
    case GM_OP_RSQRT: return -0.5f * g * y * y * y;
    case GM_OP_ABS: return x > 0 ? g : x < 0 ? -g : 0.0f;
    case GM_OP_CLAMP: return x > lo && x < hi ? g : 0.0f;
    case GM_OP_SIGMOID: return g * y * (1.0f - y);
    case GM_OP_TANH: return g * (1.0f - y * y);
    case GM_OP_RELU: return x > 0 ? g : 0.0f;
    case GM_OP_GELU:
        return g * (0.5f * (1.0f + erff(x * (float)pw_sqrt1_2)) +
                    x * (float)pw_rsqrt2pi * expf(-0.5f * x * x));
    case GM_OP_SILU: { float s = pw_sigmoidf(x); return g * s * (1.0f + x * (1.0f - s)); }
    case GM_OP_SOFTPLUS: return g * pw_sigmoidf(x);
    case GM_OP_LOGSIGMOID: return g * pw_sigmoidf(-x);
    case GM_OP_SIN: return g * cosf(x);
    case GM_OP_COS: return -g * sinf(x);
    default: return 0;
    }
}

PW_INLINE double f64_unb(int op, double g, double x, double y, double lo, double hi) {
    switch (op) {
    case GM_OP_NEG: return -g;
    case GM_OP_EXP: return g * y;
    case GM_OP_LOG: return g / x;
    case GM_OP_SQRT: return g * 0.5 / y;
    case GM_OP_RSQRT: return -0.5 * g * y * y * y;
    case GM_OP_ABS: return x > 0 ? g : x < 0 ? -g : 0.0;
    case GM_OP_CLAMP: return x > lo && x < hi ? g : 0.0;
    case GM_OP_SIGMOID: return g * y * (1.0 - y);
    case GM_OP_TANH: return g * (1.0 - y * y);
    case GM_OP_RELU: return x > 0 ? g : 0.0;
    case GM_OP_GELU:
        return g * (0.5 * (1.0 + erf(x * pw_sqrt1_2)) + x * pw_rsqrt2pi * exp(-0.5 * x * x));
    case GM_OP_SILU: { double s = pw_sigmoid(x); return g * s * (1.0 + x * (1.0 - s)); }
    case GM_OP_SOFTPLUS: return g * pw_sigmoid(x);
    case GM_OP_LOGSIGMOID: return g * pw_sigmoid(-x);
    case GM_OP_SIN: return g * cos(x);
    case GM_OP_COS: return -g * sin(x);
    default: return 0;
    }
}

PW_INLINE void f32_unb_loop(int op, float *restrict o, const float *restrict g,
                            const float *restrict x, const float *restrict y, const int64_t *st,
                            int64_t n, float lo, float hi) {
    if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_unb(op, g[i], x[i], y[i], lo, hi);
    } else {
        for (int64_t i = 0; i < n; i++)
            o[i * st[0]] = f32_unb(op, g[i * st[1]], x[i * st[2]], y[i * st[3]], lo, hi);
    }
}

PW_INLINE void f64_unb_loop(int op, double *restrict o, const double *restrict g,
                            const double *restrict x, const double *restrict y, const int64_t *st,
                            int64_t n, double lo, double hi) {
    if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f64_unb(op, g[i], x[i], y[i], lo, hi);
    } else {
        for (int64_t i = 0; i < n; i++)
            o[i * st[0]] = f64_unb(op, g[i * st[1]], x[i * st[2]], y[i * st[3]], lo, hi);
    }
}

static void f32_unb_row(int op, float *o, const float *g, const float *x, const float *y,
                        const int64_t *st, int64_t n, float lo, float hi) {
    if (v8_serves(op, true)) {
        v8_row(op, true, o, st[0], x, st[2], g, st[1], n);
        return;
    }
    switch (op) {
    case GM_OP_NEG: f32_unb_loop(GM_OP_NEG, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_EXP: f32_unb_loop(GM_OP_EXP, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_LOG: f32_unb_loop(GM_OP_LOG, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_SQRT: f32_unb_loop(GM_OP_SQRT, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_RSQRT: f32_unb_loop(GM_OP_RSQRT, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_ABS: f32_unb_loop(GM_OP_ABS, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_CLAMP: f32_unb_loop(GM_OP_CLAMP, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_SIGMOID: f32_unb_loop(GM_OP_SIGMOID, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_TANH: f32_unb_loop(GM_OP_TANH, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_RELU: f32_unb_loop(GM_OP_RELU, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_GELU: f32_unb_loop(GM_OP_GELU, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_SILU: f32_unb_loop(GM_OP_SILU, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_SOFTPLUS: f32_unb_loop(GM_OP_SOFTPLUS, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_LOGSIGMOID: f32_unb_loop(GM_OP_LOGSIGMOID, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_SIN: f32_unb_loop(GM_OP_SIN, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_COS: f32_unb_loop(GM_OP_COS, o, g, x, y, st, n, lo, hi); break;
    default: break;
    }
}

static void f64_unb_row(int op, double *o, const double *g, const double *x, const double *y,
                        const int64_t *st, int64_t n, double lo, double hi) {
    switch (op) {
    case GM_OP_NEG: f64_unb_loop(GM_OP_NEG, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_EXP: f64_unb_loop(GM_OP_EXP, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_LOG: f64_unb_loop(GM_OP_LOG, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_SQRT: f64_unb_loop(GM_OP_SQRT, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_RSQRT: f64_unb_loop(GM_OP_RSQRT, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_ABS: f64_unb_loop(GM_OP_ABS, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_CLAMP: f64_unb_loop(GM_OP_CLAMP, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_SIGMOID: f64_unb_loop(GM_OP_SIGMOID, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_TANH: f64_unb_loop(GM_OP_TANH, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_RELU: f64_unb_loop(GM_OP_RELU, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_GELU: f64_unb_loop(GM_OP_GELU, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_SILU: f64_unb_loop(GM_OP_SILU, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_SOFTPLUS: f64_unb_loop(GM_OP_SOFTPLUS, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_LOGSIGMOID: f64_unb_loop(GM_OP_LOGSIGMOID, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_SIN: f64_unb_loop(GM_OP_SIN, o, g, x, y, st, n, lo, hi); break;
    case GM_OP_COS: f64_unb_loop(GM_OP_COS, o, g, x, y, st, n, lo, hi); break;
    default: break;
    }
}

static int unb_row(const void *vc, char *const *p, const int64_t *st, int64_t n) {
    const pw_ctx *x = vc;
    if (x->dt == GM_F32)
        f32_unb_row(x->op, (float *)p[0], (const float *)p[1], (const float *)p[2],
                    (const float *)p[3], st, n, (float)x->lo, (float)x->hi);
    else
        f64_unb_row(x->op, (double *)p[0], (const double *)p[1], (const double *)p[2],
                    (const double *)p[3], st, n, x->lo, x->hi);
    return 0;
}

/* out[0] = gradient w.r.t. x: in[0] = g, in[1] = x, in[2] = y = f(x) (ops with GM_F_SAVE_OUT;
 * others pass x again), all the same shape and float dtype. i[0] = op id; d[0], d[1] as in
 * PW_UNARY. */
gm_status gm_cpu_PW_UNARY_BWD(gm_ctx *c, const gm_kargs *a) {
    pw_ctx x = {.op = (int)a->i[0], .dt = a->out[0].dtype, .lo = a->d[0], .hi = a->d[1]};
    int flag;
    for (int k = 0; k < 3; k++)
        if (a->in[k].dtype != x.dt || !gm_dtype_is_float(x.dt))
            return gm_errf(c, GM_EINTERNAL, "%s backward: operands must share a float dtype", pw_name(x.op));
    return pw_kernel(c, pw_name(x.op), a, 3, unb_row, &x, &flag);
}

/* ---- binary backward: one input's gradient at the output's shape ---------------------- */

/* maximum/minimum: at a tie each input gets half of g, so the two halves add up to g. */
PW_INLINE float f32_binb(int op, int which, float g, float x, float y) {
    switch (op) {
    case GM_OP_MUL: return which ? g * x : g * y;
    case GM_OP_DIV: return which ? -g * x / (y * y) : g / y;
    case GM_OP_POW:
        if (which) return x == 0 && y >= 0 ? 0.0f : g * powf(x, y) * logf(x);
        return y == 0 ? 0.0f : g * y * powf(x, y - 1);
    case GM_OP_MAXIMUM: {
        float a = which ? y : x, b = which ? x : y;
        return a > b ? g : a == b ? 0.5f * g : 0.0f;
    }
    case GM_OP_MINIMUM: {
        float a = which ? y : x, b = which ? x : y;
        return a < b ? g : a == b ? 0.5f * g : 0.0f;
    }
    default: return 0;
    }
}

PW_INLINE double f64_binb(int op, int which, double g, double x, double y) {
    switch (op) {
    case GM_OP_MUL: return which ? g * x : g * y;
    case GM_OP_DIV: return which ? -g * x / (y * y) : g / y;
    case GM_OP_POW:
        if (which) return x == 0 && y >= 0 ? 0.0 : g * pow(x, y) * log(x);
        return y == 0 ? 0.0 : g * y * pow(x, y - 1);
    case GM_OP_MAXIMUM: {
        double a = which ? y : x, b = which ? x : y;
        return a > b ? g : a == b ? 0.5 * g : 0.0;
    }
    case GM_OP_MINIMUM: {
        double a = which ? y : x, b = which ? x : y;
        return a < b ? g : a == b ? 0.5 * g : 0.0;
    }
    default: return 0;
    }
}

PW_INLINE void f32_binb_loop(int op, int which, float *restrict o, const float *restrict g,
                             const float *restrict x, const float *restrict y, const int64_t *st,
                             int64_t n) {
    if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f32_binb(op, which, g[i], x[i], y[i]);
    } else {
        for (int64_t i = 0; i < n; i++)
            o[i * st[0]] = f32_binb(op, which, g[i * st[1]], x[i * st[2]], y[i * st[3]]);
    }
}

PW_INLINE void f64_binb_loop(int op, int which, double *restrict o, const double *restrict g,
                             const double *restrict x, const double *restrict y,
                             const int64_t *st, int64_t n) {
    if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = f64_binb(op, which, g[i], x[i], y[i]);
    } else {
        for (int64_t i = 0; i < n; i++)
            o[i * st[0]] = f64_binb(op, which, g[i * st[1]], x[i * st[2]], y[i * st[3]]);
    }
}

static void f32_binb_row(int op, int which, float *o, const float *g, const float *x,
                         const float *y, const int64_t *st, int64_t n) {
    switch (op * 2 + (which != 0)) {
    case GM_OP_MUL * 2: f32_binb_loop(GM_OP_MUL, 0, o, g, x, y, st, n); break;
    case GM_OP_MUL * 2 + 1: f32_binb_loop(GM_OP_MUL, 1, o, g, x, y, st, n); break;
    case GM_OP_DIV * 2: f32_binb_loop(GM_OP_DIV, 0, o, g, x, y, st, n); break;
    case GM_OP_DIV * 2 + 1: f32_binb_loop(GM_OP_DIV, 1, o, g, x, y, st, n); break;
    case GM_OP_POW * 2: f32_binb_loop(GM_OP_POW, 0, o, g, x, y, st, n); break;
    case GM_OP_POW * 2 + 1: f32_binb_loop(GM_OP_POW, 1, o, g, x, y, st, n); break;
    case GM_OP_MAXIMUM * 2: f32_binb_loop(GM_OP_MAXIMUM, 0, o, g, x, y, st, n); break;
    case GM_OP_MAXIMUM * 2 + 1: f32_binb_loop(GM_OP_MAXIMUM, 1, o, g, x, y, st, n); break;
    case GM_OP_MINIMUM * 2: f32_binb_loop(GM_OP_MINIMUM, 0, o, g, x, y, st, n); break;
    case GM_OP_MINIMUM * 2 + 1: f32_binb_loop(GM_OP_MINIMUM, 1, o, g, x, y, st, n); break;
    default: break;
    }
}

static void f64_binb_row(int op, int which, double *o, const double *g, const double *x,
                         const double *y, const int64_t *st, int64_t n) {
    switch (op * 2 + (which != 0)) {
    case GM_OP_MUL * 2: f64_binb_loop(GM_OP_MUL, 0, o, g, x, y, st, n); break;
    case GM_OP_MUL * 2 + 1: f64_binb_loop(GM_OP_MUL, 1, o, g, x, y, st, n); break;
    case GM_OP_DIV * 2: f64_binb_loop(GM_OP_DIV, 0, o, g, x, y, st, n); break;
    case GM_OP_DIV * 2 + 1: f64_binb_loop(GM_OP_DIV, 1, o, g, x, y, st, n); break;
    case GM_OP_POW * 2: f64_binb_loop(GM_OP_POW, 0, o, g, x, y, st, n); break;
    case GM_OP_POW * 2 + 1: f64_binb_loop(GM_OP_POW, 1, o, g, x, y, st, n); break;
    case GM_OP_MAXIMUM * 2: f64_binb_loop(GM_OP_MAXIMUM, 0, o, g, x, y, st, n); break;
    case GM_OP_MAXIMUM * 2 + 1: f64_binb_loop(GM_OP_MAXIMUM, 1, o, g, x, y, st, n); break;
    case GM_OP_MINIMUM * 2: f64_binb_loop(GM_OP_MINIMUM, 0, o, g, x, y, st, n); break;
    case GM_OP_MINIMUM * 2 + 1: f64_binb_loop(GM_OP_MINIMUM, 1, o, g, x, y, st, n); break;
    default: break;
    }
}

static int binb_row(const void *vc, char *const *p, const int64_t *st, int64_t n) {
    const pw_ctx *x = vc;
    if (x->dt == GM_F32)
        f32_binb_row(x->op, x->which, (float *)p[0], (const float *)p[1], (const float *)p[2],
                     (const float *)p[3], st, n);
    else
        f64_binb_row(x->op, x->which, (double *)p[0], (const double *)p[1], (const double *)p[2],
                     (const double *)p[3], st, n);
    return 0;
}

/* out[0] = gradient of one input at the output's shape (the rules sum it back to the input's
 * shape): in[0] = g, in[1] = x, in[2] = y (broadcast views), one float dtype.
 * i[0] = GM_OP_MUL, DIV, POW, MAXIMUM or MINIMUM; i[1] = 0 for d/dx, 1 for d/dy. */
gm_status gm_cpu_PW_BINARY_BWD(gm_ctx *c, const gm_kargs *a) {
    pw_ctx x = {.op = (int)a->i[0], .which = (int)a->i[1], .dt = a->out[0].dtype};
    int flag;
    for (int k = 0; k < 3; k++)
        if (a->in[k].dtype != x.dt || !gm_dtype_is_float(x.dt))
            return gm_errf(c, GM_EINTERNAL, "%s backward: operands must share a float dtype", pw_name(x.op));
    return pw_kernel(c, pw_name(x.op), a, 3, binb_row, &x, &flag);
}

/* ---- where: out = cond ? x : y -------------------------------------------------------- */

PW_INLINE bool pw_truth(gm_dtype t, const char *p, int64_t i) {
    switch (t) {
    case GM_F32: return ((const float *)p)[i] != 0;
    case GM_F64: return ((const double *)p)[i] != 0;
    default: return ((const int32_t *)p)[i] != 0;
    }
}

/* Values move as bytes (es = 4 or 8) so one loop serves every value dtype. */
PW_INLINE void where_loop(gm_dtype ct, size_t es, char *restrict o, const char *restrict cd,
                          const char *restrict x, const char *restrict y, const int64_t *st,
                          int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const char *src = pw_truth(ct, cd, i * st[1]) ? x + i * st[2] * (int64_t)es
                                                      : y + i * st[3] * (int64_t)es;
        memcpy(o + i * st[0] * (int64_t)es, src, es);
    }
}

static int where_row(const void *vc, char *const *p, const int64_t *st, int64_t n) {
    const pw_ctx *x = vc;
    bool wide = x->dt == GM_F64;
    switch (x->ct) {
    case GM_F32:
        if (wide) where_loop(GM_F32, 8, p[0], p[1], p[2], p[3], st, n);
        else where_loop(GM_F32, 4, p[0], p[1], p[2], p[3], st, n);
        break;
    case GM_F64:
        if (wide) where_loop(GM_F64, 8, p[0], p[1], p[2], p[3], st, n);
        else where_loop(GM_F64, 4, p[0], p[1], p[2], p[3], st, n);
        break;
    default:
        if (wide) where_loop(GM_I32, 8, p[0], p[1], p[2], p[3], st, n);
        else where_loop(GM_I32, 4, p[0], p[1], p[2], p[3], st, n);
        break;
    }
    return 0;
}

/* out[0] = in[1] where in[0] ~= 0 else in[2]; all the same shape (broadcast views); in[0] any
 * dtype, in[1], in[2] and out[0] one dtype. Also masked_fill (x = a broadcast 0-dim value) and
 * the backward of both (a broadcast zero). */
gm_status gm_cpu_PW_WHERE(gm_ctx *c, const gm_kargs *a) {
    pw_ctx x = {.op = GM_OP_WHERE, .dt = a->out[0].dtype, .ct = a->in[0].dtype};
    int flag;
    if (a->in[1].dtype != x.dt || a->in[2].dtype != x.dt)
        return gm_errf(c, GM_EINTERNAL, "where: kernel operands differ in dtype");
    return pw_kernel(c, "where", a, 3, where_row, &x, &flag);
}
