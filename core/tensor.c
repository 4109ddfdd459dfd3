/* tensor.c: refcounted storages and strided tensors: creation, views, copies, broadcasting
 * and the shape helpers every op uses. Data lives on a backend (gm_backend_for(device)). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- struct pools: every op makes a tensor (and usually a storage); recycling the structs
 * keeps malloc off the per-op path. The engine is single-threaded outside kernels. -------- */
#define POOL_MAX 32768
typedef union pooled { union pooled *next; gm_tensor t; gm_storage s; } pooled;
static pooled *tensor_pool, *storage_pool;
static int tensor_pooled, storage_pooled;

static void *pool_get(pooled **pool, int *count, size_t size) {
    pooled *p = *pool;
    if (!p) return malloc(size);
    *pool = p->next;
    (*count)--;
    return p;
}

static void pool_put(pooled **pool, int *count, void *ptr) {
    if (*count >= POOL_MAX) {
        free(ptr);
        return;
    }
    pooled *p = ptr;
    p->next = *pool;
    *pool = p;
    (*count)++;
}

/* ---- storage ------------------------------------------------------------------------------- */
static gm_status storage_new(gm_ctx *c, gm_device d, size_t nbytes, gm_storage **out) {
    gm_backend *b = gm_backend_for(d);
    if (!b) return gm_errf(c, GM_EDEVICE, "device '%s' is not available in this build", gm_device_name(d));
    gm_storage *s = pool_get(&storage_pool, &storage_pooled, sizeof(pooled));
    if (!s) return gm_errf(c, GM_ENOMEM, "out of memory allocating a storage");
    gm_status st = b->alloc(c, nbytes, &s->data);
    if (st != GM_OK) {
        pool_put(&storage_pool, &storage_pooled, s);
        return st;
    }
    s->refcount = 1;
    s->device = d;
    s->nbytes = nbytes;
    s->backend = b;
    s->ctx = c;
    c->live_bytes += nbytes;
    *out = s;
    return GM_OK;
}

static void storage_release(gm_storage *s) {
    if (!s || --s->refcount > 0) return;
    s->ctx->live_bytes -= s->nbytes;
    s->backend->free(s->data);
    pool_put(&storage_pool, &storage_pooled, s);
}

/* ---- tensors ------------------------------------------------------------------------------- */
void gm_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t st = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = st;
        st *= shape[i] > 0 ? shape[i] : 1;
    }
}

static gm_status check_shape(gm_ctx *c, int ndim, const int64_t *shape, int64_t *numel) {
    if (ndim < 0 || ndim > GM_MAX_DIMS)
        return gm_errf(c, GM_ESHAPE, "tensor: %d dims (at most %d)", ndim, GM_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return gm_errf(c, GM_ESHAPE, "tensor: negative size %lld in dim %d", (long long)shape[i], i);
        if (shape[i] > 0 && n > INT64_MAX / 16 / shape[i])
            return gm_errf(c, GM_ESHAPE, "tensor: size overflows");
        n *= shape[i];
    }
    *numel = n;
    return GM_OK;
}

static gm_tensor *tensor_struct(gm_dtype t, int ndim, const int64_t *shape) {
    gm_tensor *x = pool_get(&tensor_pool, &tensor_pooled, sizeof(pooled));
    if (!x) return NULL;
    memset(x, 0, sizeof *x);
    x->refcount = 1;
    x->dtype = t;
    x->ndim = ndim;
    for (int i = 0; i < ndim; i++) x->shape[i] = shape[i];
    return x;
}

gm_status gm_tensor_new(gm_ctx *c, gm_dtype t, gm_device d, int ndim, const int64_t *shape,
                        gm_tensor **out) {
    int64_t n = 0;
    gm_status st = check_shape(c, ndim, shape, &n);
    if (st != GM_OK) return st;
    if ((unsigned)t >= GM_DTYPE_COUNT) return gm_errf(c, GM_EDTYPE, "tensor: bad dtype %d", (int)t);
    gm_tensor *x = tensor_struct(t, ndim, shape);
    if (!x) return gm_errf(c, GM_ENOMEM, "out of memory");
    gm_contiguous_strides(ndim, shape, x->stride);
    st = storage_new(c, d, (size_t)n * gm_dtype_size(t), &x->storage);
    if (st != GM_OK) {
        pool_put(&tensor_pool, &tensor_pooled, x);
        return st;
    }
    *out = x;
    return GM_OK;
}

gm_status gm_tensor_full(gm_ctx *c, gm_dtype t, gm_device d, int ndim, const int64_t *shape,
                         double value, gm_tensor **out) {
    gm_tensor *x = NULL;
    gm_status st = gm_tensor_new(c, t, d, ndim, shape, &x);
    if (st != GM_OK) return st;
    if ((st = gm_tensor_fill_(c, x, value)) != GM_OK) {
        gm_tensor_release(x);
        return st;
    }
    *out = x;
    return GM_OK;
}

gm_status gm_tensor_zeros(gm_ctx *c, gm_dtype t, gm_device d, int ndim, const int64_t *shape,
                          gm_tensor **out) {
    return gm_tensor_full(c, t, d, ndim, shape, 0.0, out);
}

gm_status gm_tensor_scalar(gm_ctx *c, gm_dtype t, double value, gm_tensor **out) {
    return gm_tensor_full(c, t, GM_CPU, 0, NULL, value, out);
}

gm_status gm_tensor_view(gm_ctx *c, const gm_tensor *x, int ndim, const int64_t *shape,
                         const int64_t *stride, int64_t offset, gm_tensor **out) {
    gm_tensor *v = tensor_struct(x->dtype, ndim, shape);
    if (!v) return gm_errf(c, GM_ENOMEM, "out of memory");
    for (int i = 0; i < ndim; i++) v->stride[i] = stride[i];
    v->offset = offset;
    v->storage = x->storage;
    x->storage->refcount++;
    *out = v;
    return GM_OK;
}

gm_status gm_tensor_alias(gm_ctx *c, const gm_tensor *x, gm_tensor **out) {
    return gm_tensor_view(c, x, x->ndim, x->shape, x->stride, x->offset, out);
}

gm_tensor *gm_tensor_retain(gm_tensor *x) {
    if (x) x->refcount++;
    return x;
}

void gm_tensor_release(gm_tensor *x) {
    if (!x || --x->refcount > 0) return;
    gm_tensor_release(x->grad);
    if (x->grad_fn) gm_node_release(x->grad_fn);
    storage_release(x->storage);
    pool_put(&tensor_pool, &tensor_pooled, x);
}

int64_t gm_tensor_numel(const gm_tensor *x) { return gm_shape_numel(x->ndim, x->shape); }

bool gm_tensor_is_contiguous(const gm_tensor *x) {
    return gm_shape_contiguous(x->ndim, x->shape, x->stride);
}

double gm_tensor_get_flat(const gm_tensor *x, int64_t i) {
    return gm_elem_load(gm_tensor_data(x), x->dtype, gm_shape_offset(x->ndim, x->shape, x->stride, i));
}

void gm_tensor_set_flat(gm_tensor *x, int64_t i, double v) {
    gm_elem_store(gm_tensor_data(x), x->dtype, gm_shape_offset(x->ndim, x->shape, x->stride, i), v);
}

const char *gm_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* ---- shape helpers ------------------------------------------------------------------------- */
gm_status gm_dim_norm(gm_ctx *c, const char *op, int dim, int ndim, int *out) {
    int lo = ndim > 0 ? -ndim : -1, hi = ndim > 0 ? ndim - 1 : 0;
    if (dim < lo || dim > hi)
        return gm_errf(c, GM_EINDEX, "%s: dim %d out of range for a %d-dim tensor (expected %d..%d)",
                       op, dim, ndim, lo, hi);
    *out = dim < 0 ? dim + (ndim > 0 ? ndim : 1) : dim;
    return GM_OK;
}

gm_status gm_broadcast_shape(gm_ctx *c, const char *op, int na, const int64_t *a, int nb,
                             const int64_t *b, int *nout, int64_t *out) {
    int n = na > nb ? na : nb;
    int64_t tmp[GM_MAX_DIMS];
    for (int i = 0; i < n; i++) {
        int ia = na - n + i, ib = nb - n + i;
        int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char s1[128], s2[128];
            return gm_errf(c, GM_ESHAPE, "%s: shapes %s and %s do not broadcast (dim %d: %lld vs %lld)",
                           op, gm_shape_str(na, a, s1, sizeof s1), gm_shape_str(nb, b, s2, sizeof s2),
                           i - n, (long long)da, (long long)db);
        }
        tmp[i] = da == 1 ? db : da;
    }
    for (int i = 0; i < n; i++) out[i] = tmp[i];
    *nout = n;
    return GM_OK;
}

gm_status gm_tensor_broadcast_view(gm_ctx *c, const gm_tensor *x, int ndim, const int64_t *shape,
                                   gm_tensor **out) {
    int64_t stride[GM_MAX_DIMS];
    if (ndim < x->ndim) goto bad;
    for (int i = 0; i < ndim; i++) {
        int ix = x->ndim - ndim + i;
        if (ix < 0) stride[i] = 0;
        else if (x->shape[ix] == shape[i]) stride[i] = x->stride[ix];
        else if (x->shape[ix] == 1) stride[i] = 0;
        else goto bad;
    }
    return gm_tensor_view(c, x, ndim, shape, stride, x->offset, out);
bad:;
    char s1[128], s2[128];
    return gm_errf(c, GM_ESHAPE, "expand: shape %s cannot be broadcast to %s", GM_SHAPE_STR(x, s1),
                   gm_shape_str(ndim, shape, s2, sizeof s2));
}

/* ---- copies (outside autograd) ------------------------------------------------------------- */
/* Can two elements of x share a memory location (a stride-0 dim of size > 1, as expand()
 * makes, or strides that interleave)? With the dims of size > 1 sorted by stride, each must
 * step past everything the smaller ones reach; views made by reshape, transpose, narrow and
 * select always do. */
static bool overlaps_itself(const gm_tensor *x) {
    int64_t st[GM_MAX_DIMS], sz[GM_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (x->shape[d] <= 1) continue;
        int k = n++;
        for (; k > 0 && st[k - 1] > x->stride[d]; k--) st[k] = st[k - 1], sz[k] = sz[k - 1];
        st[k] = x->stride[d];
        sz[k] = x->shape[d];
    }
    int64_t reach = 0; /* the largest offset the smaller dims reach */
    for (int k = 0; k < n; k++) {
        if (st[k] <= reach) return true;
        reach += (sz[k] - 1) * st[k];
    }
    return false;
}

/* Elements [lo, hi] of its storage that x spans (x non-empty, strides >= 0). */
static void span_of(const gm_tensor *x, int64_t *lo, int64_t *hi) {
    *lo = *hi = x->offset;
    for (int d = 0; d < x->ndim; d++) *hi += (x->shape[d] - 1) * x->stride[d];
}

gm_status gm_tensor_check_inplace(gm_ctx *c, const char *op, const gm_tensor *dst) {
    if (dst->requires_grad && gm_grad_enabled(c))
        return gm_errf(c, GM_EAUTOGRAD, "%s: in-place write into a tensor that requires grad "
                       "(wrap it in gm.no_grad or detach it first)", op);
    if (gm_tensor_numel(dst) > 1 && overlaps_itself(dst))
        return gm_errf(c, GM_EARG, "%s: more than one element of the written-to tensor refers to one memory "
                       "location (an expand()ed view); write into a copy (x:clone())", op);
    return GM_OK;
}

gm_status gm_tensor_copy_(gm_ctx *c, gm_tensor *dst, const gm_tensor *src) {
    gm_status st = gm_tensor_check_inplace(c, "copy_", dst);
    if (st != GM_OK) return st;
    if (gm_tensor_device(dst) != gm_tensor_device(src))
        return gm_errf(c, GM_EDEVICE, "copy_: source on %s, destination on %s",
                       gm_device_name(gm_tensor_device(src)), gm_device_name(gm_tensor_device(dst)));
    gm_tensor *b;
    if ((st = gm_tensor_broadcast_view(c, src, dst->ndim, dst->shape, &b)) != GM_OK) return st;
    bool same = b->offset == dst->offset && b->ndim == dst->ndim &&
                !memcmp(b->stride, dst->stride, sizeof(int64_t) * (size_t)dst->ndim);
    if (b->storage == dst->storage && !same && gm_tensor_numel(dst) > 0) {
        int64_t blo, bhi, dlo, dhi;
        span_of(b, &blo, &bhi);
        span_of(dst, &dlo, &dhi);
        if (blo <= dhi && dlo <= bhi) { /* the order of the writes would decide the result */
            gm_tensor_release(b);
            return gm_errf(c, GM_EARG, "copy_: the source and the destination overlap in memory; copy from a "
                           "clone of the source (src:clone())");
        }
    }
    st = gm_run(c, GM_K_COPY, 1, &b, 1, &dst, NULL, NULL);
    gm_tensor_release(b);
    return st;
}

gm_status gm_check_i32(gm_ctx *c, const char *op, double v) {
    if (v >= -2147483648.0 && v <= 2147483647.0 && v == (double)(int32_t)v) return GM_OK;
    if (v == v && v > -2147483649.0 && v < 2147483648.0)
        return gm_errf(c, GM_EARG, "%s: %.17g is not an integer, so has no i32 value", op, v);
    if (v != v) return gm_errf(c, GM_EARG, "%s: NaN has no i32 value", op);
    return gm_errf(c, GM_EARG, "%s: %.17g does not fit i32 (-2147483648 .. 2147483647)", op, v);
}

gm_status gm_tensor_fill_(gm_ctx *c, gm_tensor *dst, double value) {
    gm_status st = gm_tensor_check_inplace(c, "fill_", dst);
    if (st != GM_OK) return st;
    if (dst->dtype == GM_I32 && (st = gm_check_i32(c, "fill", value)) != GM_OK) return st;
    gm_kargs extra = {0};
    extra.d[0] = value;
    return gm_run(c, GM_K_FILL, 0, NULL, 1, &dst, NULL, &extra);
}

gm_status gm_tensor_copy_as(gm_ctx *c, gm_tensor *x, gm_dtype t, gm_tensor **out) {
    gm_tensor *y;
    gm_status st = gm_tensor_new(c, t, gm_tensor_device(x), x->ndim, x->shape, &y);
    if (st != GM_OK) return st;
    if ((st = gm_run(c, GM_K_COPY, 1, &x, 1, &y, NULL, NULL)) != GM_OK) {
        gm_tensor_release(y);
        return st;
    }
    *out = y;
    return GM_OK;
}

gm_status gm_tensor_contiguous(gm_ctx *c, gm_tensor *x, gm_tensor **out) {
    if (gm_tensor_is_contiguous(x)) {
        *out = gm_tensor_retain(x);
        return GM_OK;
    }
    return gm_tensor_copy_as(c, x, x->dtype, out);
}

gm_status gm_tensor_to_dtype(gm_ctx *c, gm_tensor *x, gm_dtype t, gm_tensor **out) {
    if (x->dtype == t) {
        *out = gm_tensor_retain(x);
        return GM_OK;
    }
    return gm_tensor_copy_as(c, x, t, out);
}

gm_status gm_rows_operand(gm_ctx *c, gm_tensor *x, gm_tensor **out) {
    int64_t d = x->shape[3] > 1 ? x->shape[3] : 1;
    if ((x->shape[3] <= 1 || x->stride[3] == 1) && x->stride[2] >= d && x->stride[0] >= 0 && x->stride[1] >= 0 &&
        x->stride[2] <= INT32_MAX) {
        *out = gm_tensor_retain(x);
        return GM_OK;
    }
    return gm_tensor_contiguous(c, x, out);
}
