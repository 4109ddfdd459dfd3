/* backend.c: the backend registry and kernel dispatch. A kernel missing on a backend is a
 * clean GM_ENOTSUP error; devices are never mixed silently. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static const char *kernel_names[GM_K_COUNT] = {
#define GM_KERNEL(id) #id,
#include "ops.def"
#undef GM_KERNEL
};

const char *gm_kernel_name(int kid) {
    return kid >= 0 && kid < GM_K_COUNT ? kernel_names[kid] : "?";
}

int gm_kernel_count(void) { return GM_K_COUNT; }

/* ---- the kernel profiler: one row per kernel id, filled by gm_kernel_run while on ------- */
gm_status gm_profile_start(gm_ctx *c) {
    if (!c->prof) {
        c->prof = calloc(GM_K_COUNT, sizeof *c->prof);
        if (!c->prof) return gm_errf(c, GM_ENOMEM, "profile: out of memory");
    } else {
        memset(c->prof, 0, GM_K_COUNT * sizeof *c->prof);
    }
    return GM_OK;
}

void gm_profile_stop(gm_ctx *c) {
    free(c->prof);
    c->prof = NULL;
}

const gm_kprof *gm_profile_rows(const gm_ctx *c) { return c->prof; }

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

gm_backend *gm_backend_for(gm_device d) {
    if (d == GM_CPU) return &gm_backend_cpu;
    return NULL; /* the CUDA backend registers here when built */
}

void gm_kview_of(const gm_tensor *x, gm_kview *v) {
    v->data = gm_tensor_data(x);
    v->dtype = x->dtype;
    v->ndim = x->ndim;
    for (int i = 0; i < x->ndim; i++) {
        v->shape[i] = x->shape[i];
        v->stride[i] = x->stride[i];
    }
}

void gm_kargs_init(gm_kargs *a, int n_in, gm_tensor *const *in, int n_out,
                   gm_tensor *const *out, const gm_params *p) {
    a->n_in = n_in;
    a->n_out = n_out;
    for (int i = 0; i < n_in; i++) gm_kview_of(in[i], &a->in[i]);
    for (int i = 0; i < n_out; i++) gm_kview_of(out[i], &a->out[i]);
    a->p = p;
    a->list = NULL;
    a->n_list = 0;
}

gm_status gm_kernel_run(gm_ctx *c, gm_device d, int kid, gm_kargs *a) {
    if (gm_interrupted()) return gm_errf(c, GM_EINTR, "interrupted");
    gm_backend *b = gm_backend_for(d);
    if (!b) return gm_errf(c, GM_EDEVICE, "device '%s' is not available in this build", gm_device_name(d));
    if (!b->kernel[kid])
        return gm_errf(c, GM_ENOTSUP, "kernel '%s' has no %s implementation", gm_kernel_name(kid), b->name);
    if (c->nthreads > 0) {
        a->nthreads = c->nthreads;
    } else {
        if (!c->default_threads) c->default_threads = b->max_threads ? b->max_threads() : 1;
        a->nthreads = c->default_threads;
    }
    gm_status st;
    if (c->prof) { /* profiling: time the kernel to completion on its device */
        uint64_t t0 = now_ns();
        st = b->kernel[kid](c, a);
        if (st == GM_OK && b->sync) st = b->sync(c);
        c->prof[kid].calls++;
        c->prof[kid].ns += now_ns() - t0;
    } else {
        st = b->kernel[kid](c, a);
    }
    /* A Ctrl-C that came while the kernel ran fails the op even when the kernel finished (or
     * stopped early without saying so): an interrupted op's result is never handed out. */
    if (st == GM_OK && gm_interrupted()) st = GM_EINTR;
    if (st == GM_EINTR && !c->err[0]) gm_errf(c, GM_EINTR, "interrupted");
    if (st != GM_OK && !c->err[0]) gm_errf(c, st, "kernel '%s' failed", gm_kernel_name(kid));
    return st;
}

gm_status gm_run(gm_ctx *c, int kid, int n_in, gm_tensor *const *in, int n_out,
                 gm_tensor *const *out, const gm_params *p, gm_kargs *extra) {
    gm_kargs a;
    if (n_in > GM_MAX_KIN || n_out > GM_MAX_OUT)
        return gm_errf(c, GM_EINTERNAL, "kernel '%s': too many operands", gm_kernel_name(kid));
    gm_kargs_init(&a, n_in, in, n_out, out, p);
    for (int i = 0; i < 8; i++) {
        a.i[i] = extra ? extra->i[i] : 0;
        a.d[i] = extra ? extra->d[i] : 0;
    }
    gm_device d = n_out ? gm_tensor_device(out[0]) : gm_tensor_device(in[0]);
    for (int i = 0; i < n_in; i++)
        if (gm_tensor_device(in[i]) != d)
            return gm_errf(c, GM_EDEVICE, "kernel '%s': operands on %s and %s", gm_kernel_name(kid),
                           gm_device_name(gm_tensor_device(in[i])), gm_device_name(d));
    return gm_kernel_run(c, d, kid, &a);
}
