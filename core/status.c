/* status.c: the context (error buffer, grad mode, default generator), status names, dtype
 * helpers and the process-wide interrupt flag. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

gm_ctx *gm_ctx_new(void) {
    gm_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    gm_generator_init(&c->gen, 0);
    c->nthreads = 0;
    return c;
}

void gm_ctx_free(gm_ctx *c) {
    if (c) free(c->prof);
    free(c);
}

gm_status gm_errf(gm_ctx *c, gm_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    c->err_code = code;
    return code;
}

const char *gm_errmsg(const gm_ctx *c) { return c->err[0] ? c->err : gm_status_name(c->err_code); }

gm_status gm_err_code(const gm_ctx *c) { return c->err_code; }

void gm_err_clear(gm_ctx *c) {
    c->err[0] = 0;
    c->err_code = GM_OK;
}

const char *gm_status_name(gm_status s) {
    switch (s) {
    case GM_OK: return "ok";
    case GM_EARG: return "bad argument";
    case GM_ESHAPE: return "shape error";
    case GM_EDTYPE: return "dtype error";
    case GM_EDEVICE: return "device error";
    case GM_ENOMEM: return "out of memory";
    case GM_ENOTSUP: return "not supported";
    case GM_EINTR: return "interrupted";
    case GM_EIO: return "i/o error";
    case GM_EINDEX: return "index out of range";
    case GM_EAUTOGRAD: return "autograd error";
    case GM_EINTERNAL: return "internal error";
    }
    return "unknown status";
}

size_t gm_ctx_live_bytes(const gm_ctx *c) { return c->live_bytes; }

void gm_ctx_set_num_threads(gm_ctx *c, int n) {
    c->nthreads = n < 0 ? 0 : n;
    for (int d = 0; d < GM_DEVICE_COUNT; d++) {
        gm_backend *b = gm_backend_for((gm_device)d);
        if (b && b->set_threads) b->set_threads(c->nthreads);
    }
}

int gm_ctx_num_threads(const gm_ctx *c) { return c->nthreads; }

/* ---- grad mode: a depth counter of no_grad regions, with enable_grad nesting ---------- */
void gm_grad_push(gm_ctx *c, bool enabled) {
    if (c->grad_sp < (int)(sizeof c->grad_stack / sizeof c->grad_stack[0]))
        c->grad_stack[c->grad_sp] = c->grad_off_depth;
    c->grad_sp++;
    c->grad_off_depth = enabled ? 0 : c->grad_off_depth + 1;
}

void gm_grad_pop(gm_ctx *c) {
    if (c->grad_sp <= 0) return;
    c->grad_sp--;
    if (c->grad_sp < (int)(sizeof c->grad_stack / sizeof c->grad_stack[0]))
        c->grad_off_depth = c->grad_stack[c->grad_sp];
}

bool gm_grad_enabled(const gm_ctx *c) { return c->grad_off_depth == 0; }

void gm_ctx_reset(gm_ctx *c) {
    c->grad_off_depth = 0;
    c->grad_sp = 0;
    gm_err_clear(c);
}

/* ---- interrupt -------------------------------------------------------------------------- */
static volatile sig_atomic_t interrupt_flag;
/* Polls so far on this thread (the tests check that long kernels poll often). Per thread: a
 * shared atomic counter cost a locked add per poll and bounced its cache line between threads. */
static _Thread_local uint64_t poll_count;
void gm_interrupt_set(void) { interrupt_flag = 1; }
void gm_interrupt_clear(void) { interrupt_flag = 0; }
bool gm_interrupted(void) {
    poll_count++;
    return interrupt_flag != 0;
}
uint64_t gm_interrupt_polls(void) { return poll_count; }

/* ---- dtypes and devices ----------------------------------------------------------------- */
const char *gm_dtype_name(gm_dtype t) {
    switch (t) {
    case GM_F32: return "f32";
    case GM_F64: return "f64";
    case GM_I32: return "i32";
    default: return "?";
    }
}

bool gm_dtype_parse(const char *s, gm_dtype *out) {
    static const struct { const char *name; gm_dtype t; } names[] = {
        {"f32", GM_F32}, {"float32", GM_F32}, {"float", GM_F32},
        {"f64", GM_F64}, {"float64", GM_F64}, {"double", GM_F64},
        {"i32", GM_I32}, {"int32", GM_I32}, {"int", GM_I32},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].t;
            return true;
        }
    return false;
}

const char *gm_device_name(gm_device d) { return d == GM_CUDA ? "cuda" : "cpu"; }
