/* backend_cpu.c: the CPU backend (the reference for every other backend): host memory, the
 * kernel table built from ops.def, and the base kernels (copy, fill, random). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include "backend.h"
#include "parallel.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

/* ---- host memory: a caching allocator ------------------------------------------------------
 * Training loops free and re-allocate the same sizes every step; malloc's memalign path and
 * mmap/munmap of large blocks (with their page faults) would dominate small ops and halve the
 * bandwidth of large ones. Blocks are rounded up to size classes (4 per power of two, so at most
 * 25% slack), carry a 64-byte header with their class, and freed blocks wait in per-class free
 * lists for reuse, up to CACHE_MAX bytes in all; gm.empty_cache() returns them to the system. */
#define HDR 64
#define NCLASS 192
#define CACHE_MAX ((size_t)1 << 30)

typedef struct block { struct block *next; int cls; } block;
static block *free_list[NCLASS];
static size_t cached_bytes;

static size_t class_size(int cls) { /* cls = 4*e + j -> (4 + j) << (e - 2), from 64 bytes up */
    int e = cls / 4 + 6, j = cls % 4;
    return (size_t)(4 + j) << (e - 2);
}

static int class_of(size_t n) {
    if (n <= 64) return 0;
    int e = 63 - __builtin_clzll((unsigned long long)n); /* 2^e <= n < 2^(e+1) */
    size_t step = (size_t)1 << (e - 2);
    int j = (int)((n - ((size_t)1 << e) + step - 1) / step); /* 0..4 */
    return (e - 6) * 4 + j;
}

static gm_status cpu_alloc(gm_ctx *c, size_t nbytes, void **ptr) {
    int cls = class_of(nbytes);
    if (cls >= NCLASS) return gm_errf(c, GM_ENOMEM, "out of memory allocating %zu bytes", nbytes);
    block *b = free_list[cls];
    if (b) {
        free_list[cls] = b->next;
        cached_bytes -= class_size(cls);
    } else {
        b = aligned_alloc(64, (HDR + class_size(cls) + 63) & ~(size_t)63); /* C11: size % align == 0 */
        if (!b) return gm_errf(c, GM_ENOMEM, "out of memory allocating %zu bytes", nbytes);
        b->cls = cls;
    }
    *ptr = (char *)b + HDR;
    return GM_OK;
}

static void cpu_free(void *ptr) {
    if (!ptr) return;
    block *b = (block *)((char *)ptr - HDR);
    size_t sz = class_size(b->cls);
    if (cached_bytes + sz > CACHE_MAX) {
        free(b);
        return;
    }
    b->next = free_list[b->cls];
    free_list[b->cls] = b;
    cached_bytes += sz;
}

static size_t cpu_empty_cache(void) {
    size_t n = cached_bytes;
    for (int k = 0; k < NCLASS; k++)
        while (free_list[k]) {
            block *b = free_list[k];
            free_list[k] = b->next;
            free(b);
        }
    cached_bytes = 0;
    return n;
}

static size_t cpu_cached_bytes(void) { return cached_bytes; }

static gm_status cpu_copy(gm_ctx *c, void *dst, const void *src, size_t n, gm_copy_dir dir) {
    (void)c;
    (void)dir;
    memmove(dst, src, n);
    return GM_OK;
}

static gm_status cpu_sync(gm_ctx *c) {
    (void)c;
    return GM_OK;
}

static void cpu_set_threads(int n) {
    if (n <= 0) return;
    omp_set_num_threads(n); /* OpenBLAS stays single-threaded: kernels split products (blas.h) */
}

static int cpu_max_threads(void) { return omp_get_max_threads(); }

gm_backend gm_backend_cpu = {
    .name = "cpu",
    .device = GM_CPU,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
    .sync = cpu_sync,
    .set_threads = cpu_set_threads,
    .max_threads = cpu_max_threads,
    .empty_cache = cpu_empty_cache,
    .cached_bytes = cpu_cached_bytes,
    .kernel = {
#define GM_KERNEL(id) [GM_K_##id] = gm_cpu_##id,
#include "ops.def"
#undef GM_KERNEL
    },
};

const char *gm_blas_info(void) {
    static char buf[512];
    char ver[32] = "OpenBLAS";
    const char *cfg = openblas_get_config();
    if (cfg) sscanf(cfg, "%31s", ver);
    const char *v = cfg && strchr(cfg, ' ') ? strchr(cfg, ' ') + 1 : "";
    int vl = (int)strcspn(v, " ");
    snprintf(buf, sizeof buf, "%s %.*s (core %s: %s; single-threaded calls split over the kernel threads)", ver, vl,
             v, openblas_get_corename(), gm_blas_core_why());
    return buf;
}

bool gm_cuda_built(void) {
#ifdef GM_WITH_CUDA
    return true;
#else
    return false;
#endif
}

/* out[0] = in[0]: same shape, any strides, converting dtypes. Pieces of rows of the last dim
 * are the unit of work (split over the threads; a row longer than SEG is cut, so no unit is
 * unbounded) and the offset arithmetic runs once per piece; pieces contiguous on both sides in
 * one dtype are memcpy'd. */
#define SEG ((int64_t)1 << 16)
typedef struct {
    const gm_kview *x, *y;
    gm_kview xr, yr; /* views of the outer dims only */
    int64_t inner, nseg, sx, sy;
    int bad;      /* a float that has no i32 value (NaN, inf, out of range) was met ... */
    double value; /* ... this one first */
} copy_work;

/* Float to i32 truncates toward zero, as a C cast does where it is defined; NaN, inf and values
 * outside -2^31 .. 2^31-1 have no i32 and fail the copy, naming the value. */
static inline void to_i32(copy_work *w, int32_t *d, double v) {
    if (v > -2147483649.0 && v < 2147483648.0) {
        *d = (int32_t)v;
        return;
    }
    *d = 0;
    int zero = 0;
    if (__atomic_compare_exchange_n(&w->bad, &zero, 1, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) w->value = v;
}

static void copy_rows(void *ctx, int64_t lo, int64_t hi) {
    copy_work *w = ctx;
    const gm_kview *x = w->x, *y = w->y;
    int64_t sx = w->sx, sy = w->sy;
    size_t esz = gm_dtype_size(x->dtype);
    bool same = x->dtype == y->dtype;
    for (int64_t u = lo; u < hi; u++) {
        int64_t r = u / w->nseg, j0 = u % w->nseg * SEG;
        int64_t len = w->inner - j0 < SEG ? w->inner - j0 : SEG;
        int64_t ox = gm_kview_offset(&w->xr, r) + j0 * sx, oy = gm_kview_offset(&w->yr, r) + j0 * sy;
        if (same && (sx == 1 || len == 1) && (sy == 1 || len == 1)) {
            memcpy((char *)y->data + (size_t)oy * esz, (const char *)x->data + (size_t)ox * esz, (size_t)len * esz);
        } else if (same && x->dtype == GM_F64) {
            const double *s = (const double *)x->data + ox;
            double *d = (double *)y->data + oy;
            for (int64_t j = 0; j < len; j++) d[j * sy] = s[j * sx];
        } else if (same) { /* 4-byte dtypes: move bits */
            const uint32_t *s = (const uint32_t *)x->data + ox;
            uint32_t *d = (uint32_t *)y->data + oy;
            for (int64_t j = 0; j < len; j++) d[j * sy] = s[j * sx];
        } else if (y->dtype == GM_I32) {
            for (int64_t j = 0; j < len; j++)
                to_i32(w, (int32_t *)y->data + oy + j * sy, gm_elem_load(x->data, x->dtype, ox + j * sx));
        } else {
            for (int64_t j = 0; j < len; j++)
                gm_elem_store(y->data, y->dtype, oy + j * sy, gm_elem_load(x->data, x->dtype, ox + j * sx));
        }
    }
}

/* memmove in pieces of at most 1 MiB with an interrupt poll before each; overlapping ranges
 * are walked away from the overlap (backwards when dst is above src), as memmove does. */
static gm_status move_polled(void *dst, const void *src, size_t n) {
    const size_t piece = (size_t)1 << 20;
    bool down = (char *)dst > (const char *)src;
    for (size_t done = 0; done < n;) {
        if (gm_interrupted()) return GM_EINTR;
        size_t len = n - done < piece ? n - done : piece, at = down ? n - done - len : done;
        memmove((char *)dst + at, (const char *)src + at, len);
        done += len;
    }
    return GM_OK;
}

gm_status gm_cpu_COPY(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *x = &a->in[0], *y = &a->out[0];
    int64_t n = gm_kview_numel(y);
    if (n == 0) return GM_OK;
    if (x->dtype == y->dtype && gm_kview_contiguous(x) && gm_kview_contiguous(y))
        return move_polled(y->data, x->data, (size_t)n * gm_dtype_size(x->dtype)); /* may overlap */
    int last = y->ndim - 1;
    copy_work w = {.x = x, .y = y, .xr = *x, .yr = *y, .inner = last >= 0 ? y->shape[last] : 1};
    w.sx = last >= 0 ? x->stride[last] : 0;
    w.sy = last >= 0 ? y->stride[last] : 0;
    w.nseg = (w.inner + SEG - 1) / SEG;
    w.xr.ndim = w.yr.ndim = last > 0 ? last : 0;
    int64_t unit = w.inner < SEG ? w.inner : SEG;
    if (gm_parallel_for(n / w.inner * w.nseg, gm_min_units(unit), a->nthreads, copy_rows, &w)) return GM_EINTR;
    if (w.bad && w.value != w.value) return gm_errf(c, GM_EARG, "conversion to i32: NaN has no i32 value");
    if (w.bad)
        return gm_errf(c, GM_EARG, "conversion to i32: %.17g does not fit i32 (-2147483648 .. 2147483647)",
                       w.value);
    return GM_OK;
}

/* out[0][...] = d[0], in pieces of elements split over the threads. */
static void fill_range(void *ctx, int64_t lo, int64_t hi) {
    const gm_kargs *a = ctx;
    const gm_kview *y = &a->out[0];
    double v = a->d[0];
    if (!gm_kview_contiguous(y)) {
        for (int64_t i = lo; i < hi; i++) gm_elem_store(y->data, y->dtype, gm_kview_offset(y, i), v);
        return;
    }
    switch (y->dtype) {
    case GM_F32: { float *p = y->data, f = (float)v; for (int64_t i = lo; i < hi; i++) p[i] = f; break; }
    case GM_F64: { double *p = y->data; for (int64_t i = lo; i < hi; i++) p[i] = v; break; }
    default: { int32_t *p = y->data, k = (int32_t)v; for (int64_t i = lo; i < hi; i++) p[i] = k; break; }
    }
}

gm_status gm_cpu_FILL(gm_ctx *c, const gm_kargs *a) {
    (void)c;
    return gm_parallel_for(gm_kview_numel(&a->out[0]), GM_PAR_MIN, a->nthreads, fill_range, (void *)a) ? GM_EINTR
                                                                                                        : GM_OK;
}

/* Random fill of a contiguous out[0]. i[0] = kind (uniform [d0,d1), normal(mean d0, std d1),
 * integers [d0,d1)), i[1] = seed, i[2] = first Philox counter. Value i comes from block
 * i[2] + i / per, lane i % per (per = 2 for f64 uniform/normal, else 4); normals pair lanes
 * through Box-Muller. */
typedef struct rand_job {
    const gm_kview *y;
    int64_t n, kind, per;
    uint64_t seed, off;
    double lo, hi;
    bool wide;
} rand_job;

static void rand_blocks(void *ctx, int64_t b0, int64_t b1) {
    const rand_job *j = ctx;
    const double two32 = 4294967296.0, two53 = 9007199254740992.0;
    double lo = j->lo, hi = j->hi;
    for (int64_t b = b0; b < b1; b++) {
        uint32_t r[4];
        double v[4];
        gm_philox4x32(j->seed, 0, j->off + (uint64_t)b, r);
        if (j->wide) {
            /* two 53-bit uniforms from the four lanes */
            double u0 = (double)(((uint64_t)r[0] << 21) ^ (r[1] >> 11)) / two53;
            double u1 = (double)(((uint64_t)r[2] << 21) ^ (r[3] >> 11)) / two53;
            if (j->kind == GM_RAND_UNIFORM) {
                v[0] = lo + (hi - lo) * u0;
                v[1] = lo + (hi - lo) * u1;
            } else {
                double rad = sqrt(-2.0 * log(1.0 - u0)), th = 2.0 * M_PI * u1;
                v[0] = lo + hi * rad * cos(th);
                v[1] = lo + hi * rad * sin(th);
            }
        } else if (j->kind == GM_RAND_UNIFORM) {
            for (int k = 0; k < 4; k++) v[k] = lo + (hi - lo) * ((r[k] >> 8) * (1.0 / 16777216.0));
        } else if (j->kind == GM_RAND_NORMAL) {
            for (int k = 0; k < 4; k += 2) {
                double u0 = (r[k] + 1.0) / (two32 + 1.0), th = 2.0 * M_PI * (r[k + 1] / two32);
                double rad = sqrt(-2.0 * log(u0));
                v[k] = lo + hi * rad * cos(th);
                v[k + 1] = lo + hi * rad * sin(th);
            }
        } else {
            uint64_t range = (uint64_t)(hi - lo);
            for (int k = 0; k < 4; k++) v[k] = lo + (double)(((uint64_t)r[k] * range) >> 32);
        }
        for (int64_t k = 0; k < j->per && b * j->per + k < j->n; k++) {
            double x = v[k];
            if (j->y->dtype == GM_F32 && j->kind == GM_RAND_UNIFORM && (float)x >= hi && hi > lo)
                x = nextafterf((float)hi, (float)lo); /* keep [lo, hi) after rounding */
            gm_elem_store(j->y->data, j->y->dtype, b * j->per + k, x);
        }
    }
}

gm_status gm_cpu_RAND(gm_ctx *c, const gm_kargs *a) {
    rand_job j = {.y = &a->out[0], .n = gm_kview_numel(&a->out[0]), .kind = a->i[0],
                  .seed = (uint64_t)a->i[1], .off = (uint64_t)a->i[2], .lo = a->d[0], .hi = a->d[1]};
    j.wide = a->out[0].dtype == GM_F64 && j.kind != GM_RAND_INT;
    j.per = j.wide ? 2 : 4;
    (void)c;
    return gm_parallel_for((j.n + j.per - 1) / j.per, 4096, a->nthreads, rand_blocks, &j) ? GM_EINTR : GM_OK;
}
