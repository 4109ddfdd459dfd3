/* backend_cpu.c: the CPU backend (the reference for every other backend): host memory, the
 * kernel table built from ops.def, and the base kernels (copy, fill, random). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include "backend.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

static gm_status cpu_alloc(gm_ctx *c, size_t nbytes, void **ptr) {
    size_t n = (nbytes + 63) & ~(size_t)63;
    *ptr = aligned_alloc(64, n ? n : 64);
    if (!*ptr) return gm_errf(c, GM_ENOMEM, "out of memory allocating %zu bytes", nbytes);
    return GM_OK;
}

static void cpu_free(void *ptr) { free(ptr); }

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
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
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
    .kernel = {
#define GM_KERNEL(id) [GM_K_##id] = gm_cpu_##id,
#include "ops.def"
#undef GM_KERNEL
    },
};

const char *gm_blas_info(void) {
    static char buf[160];
    char ver[32] = "OpenBLAS";
    const char *cfg = openblas_get_config();
    if (cfg) sscanf(cfg, "%31s", ver);
    const char *v = cfg && strchr(cfg, ' ') ? strchr(cfg, ' ') + 1 : "";
    int vl = (int)strcspn(v, " ");
    snprintf(buf, sizeof buf, "%s %.*s (core %s, %d threads)", ver, vl, v, openblas_get_corename(),
             openblas_get_num_threads());
    return buf;
}

bool gm_cuda_built(void) {
#ifdef GM_WITH_CUDA
    return true;
#else
    return false;
#endif
}

/* ---- element access shared by the base kernels ---------------------------------------- */
static inline double load(const void *p, gm_dtype t, int64_t i) {
    switch (t) {
    case GM_F32: return ((const float *)p)[i];
    case GM_F64: return ((const double *)p)[i];
    default: return ((const int32_t *)p)[i];
    }
}

static inline void store(void *p, gm_dtype t, int64_t i, double v) {
    switch (t) {
    case GM_F32: ((float *)p)[i] = (float)v; break;
    case GM_F64: ((double *)p)[i] = v; break;
    default: ((int32_t *)p)[i] = (int32_t)v; break;
    }
}

static bool view_contiguous(const gm_kview *v) {
    int64_t st = 1;
    for (int i = v->ndim - 1; i >= 0; i--) {
        if (v->shape[i] != 1 && v->stride[i] != st) return false;
        st *= v->shape[i];
    }
    return true;
}

static int64_t view_numel(const gm_kview *v) {
    int64_t n = 1;
    for (int i = 0; i < v->ndim; i++) n *= v->shape[i];
    return n;
}

/* Element offset of flat row-major index i. */
static inline int64_t view_offset(const gm_kview *v, int64_t i) {
    int64_t off = 0;
    for (int d = v->ndim - 1; d >= 0; d--) {
        off += (i % v->shape[d]) * v->stride[d];
        i /= v->shape[d];
    }
    return off;
}

/* out[0] = in[0]: same shape, any strides, converting dtypes. Rows of the last dim are the
 * unit of work so the offset arithmetic runs once per row. */
gm_status gm_cpu_COPY(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *x = &a->in[0], *y = &a->out[0];
    int64_t n = view_numel(y);
    if (n == 0) return GM_OK;
    if (x->dtype == y->dtype && view_contiguous(x) && view_contiguous(y)) {
        memmove(y->data, x->data, (size_t)n * gm_dtype_size(x->dtype));
        return GM_OK;
    }
    int last = y->ndim - 1;
    int64_t inner = last >= 0 ? y->shape[last] : 1, rows = n / inner;
    int64_t sx = last >= 0 ? x->stride[last] : 0, sy = last >= 0 ? y->stride[last] : 0;
    gm_kview xr = *x, yr = *y; /* views of the outer dims only */
    xr.ndim = yr.ndim = last > 0 ? last : 0;
    for (int64_t r = 0; r < rows; r++) {
        if ((r & 1023) == 0 && gm_interrupted()) return GM_EINTR;
        int64_t ox = view_offset(&xr, r), oy = view_offset(&yr, r);
        if (x->dtype == y->dtype && x->dtype == GM_F64) {
            const double *s = (const double *)x->data + ox;
            double *d = (double *)y->data + oy;
            for (int64_t j = 0; j < inner; j++) d[j * sy] = s[j * sx];
        } else if (x->dtype == y->dtype) { /* 4-byte dtypes: move bits */
            const uint32_t *s = (const uint32_t *)x->data + ox;
            uint32_t *d = (uint32_t *)y->data + oy;
            for (int64_t j = 0; j < inner; j++) d[j * sy] = s[j * sx];
        } else {
            for (int64_t j = 0; j < inner; j++)
                store(y->data, y->dtype, oy + j * sy, load(x->data, x->dtype, ox + j * sx));
        }
    }
    (void)c;
    return GM_OK;
}

/* out[0][...] = d[0] */
gm_status gm_cpu_FILL(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *y = &a->out[0];
    int64_t n = view_numel(y);
    double v = a->d[0];
    (void)c;
    if (view_contiguous(y)) {
        switch (y->dtype) {
        case GM_F32: { float *p = y->data, f = (float)v; for (int64_t i = 0; i < n; i++) p[i] = f; break; }
        case GM_F64: { double *p = y->data; for (int64_t i = 0; i < n; i++) p[i] = v; break; }
        default: { int32_t *p = y->data, k = (int32_t)v; for (int64_t i = 0; i < n; i++) p[i] = k; break; }
        }
        return GM_OK;
    }
    for (int64_t i = 0; i < n; i++) store(y->data, y->dtype, view_offset(y, i), v);
    return GM_OK;
}

/* Random fill of a contiguous out[0]. i[0] = kind (uniform [d0,d1), normal(mean d0, std d1),
 * integers [d0,d1)), i[1] = seed, i[2] = first Philox counter. Value i comes from block
 * i[2] + i / per, lane i % per (per = 2 for f64 uniform/normal, else 4); normals pair lanes
 * through Box-Muller. */
gm_status gm_cpu_RAND(gm_ctx *c, const gm_kargs *a) {
    const gm_kview *y = &a->out[0];
    int64_t n = view_numel(y), kind = a->i[0];
    uint64_t seed = (uint64_t)a->i[1], off = (uint64_t)a->i[2];
    double lo = a->d[0], hi = a->d[1];
    bool wide = y->dtype == GM_F64 && kind != GM_RAND_INT;
    int64_t per = wide ? 2 : 4, blocks = (n + per - 1) / per;
    const double two32 = 4294967296.0, two53 = 9007199254740992.0;
    (void)c;
    #pragma omp parallel for num_threads(a->nthreads) if (blocks > 16384) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        uint32_t r[4];
        double v[4];
        gm_philox4x32(seed, 0, off + (uint64_t)b, r);
        if (wide) {
            /* two 53-bit uniforms from the four lanes */
            double u0 = (double)(((uint64_t)r[0] << 21) ^ (r[1] >> 11)) / two53;
            double u1 = (double)(((uint64_t)r[2] << 21) ^ (r[3] >> 11)) / two53;
            if (kind == GM_RAND_UNIFORM) {
                v[0] = lo + (hi - lo) * u0;
                v[1] = lo + (hi - lo) * u1;
            } else {
                double rad = sqrt(-2.0 * log(1.0 - u0)), th = 2.0 * M_PI * u1;
                v[0] = lo + hi * rad * cos(th);
                v[1] = lo + hi * rad * sin(th);
            }
        } else if (kind == GM_RAND_UNIFORM) {
            for (int k = 0; k < 4; k++) v[k] = lo + (hi - lo) * ((r[k] >> 8) * (1.0 / 16777216.0));
        } else if (kind == GM_RAND_NORMAL) {
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
        for (int64_t k = 0; k < per && b * per + k < n; k++) {
            double x = v[k];
            if (y->dtype == GM_F32 && kind == GM_RAND_UNIFORM && (float)x >= hi && hi > lo)
                x = nextafterf((float)hi, (float)lo); /* keep [lo, hi) after rounding */
            store(y->data, y->dtype, b * per + k, x);
        }
    }
    return GM_OK;
}
