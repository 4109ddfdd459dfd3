/* t_interrupt.c: every long CPU kernel polls the interrupt flag per chunk of bounded work, not
 * per row. Each kernel runs on one long row (2^24 elements) and its polls are counted (a
 * kernel that polls only between rows, or never, polls once or not at all); one slow kernel
 * also gets a real flag raised part-way through. Kernels are called directly, with the checks
 * gm_op and gm_kernel_run make around them left out (t_repl_pty.lua presses Ctrl-C in the
 * REPL for those). */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "tap.h"

#define N ((int64_t)1 << 24)

static gm_ctx *C;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static gm_tensor *mk(gm_dtype t, int ndim, const int64_t *shape) {
    gm_tensor *x = NULL;
    if (gm_tensor_new(C, t, GM_CPU, ndim, shape, &x) != GM_OK) return NULL;
    return x;
}

/* A kernel launch: operands and parameters as gm_run would pass them. */
typedef struct {
    const char *name;
    int kid;
    int n_in, n_out;
    gm_tensor *in[3], *out[2];
    gm_kparams k;
} launch;

/* The kernel on one thread: how many times it polled the interrupt flag. */
static uint64_t polls_of(const launch *l) {
    gm_kargs a;
    memset(&a, 0, sizeof a);
    gm_kargs_init(&a, l->n_in, l->in, l->n_out, l->out);
    a.k = l->k;
    a.nthreads = 1;
    uint64_t p0 = gm_interrupt_polls();
    gm_status st = gm_backend_cpu.kernel[l->kid](C, &a);
    uint64_t p1 = gm_interrupt_polls();
    gm_err_clear(C);
    return st == GM_OK ? p1 - p0 : 0;
}

/* At least one poll per WORK elements of the row. */
#define WORK ((int64_t)1 << 18)

static void check(const launch *l) {
    uint64_t polls = polls_of(l);
    tap_ok(polls >= (uint64_t)(N / WORK), "%s polls per chunk of one long row (%llu polls for 2^24 elements)",
           l->name, (unsigned long long)polls);
}

/* A Ctrl-C as it comes: raised by another thread while the kernel runs. The kernel stops
 * within a chunk, long before it would have finished. */
typedef struct {
    double delay, at;
} raiser;

static void *raise_later(void *p) {
    raiser *r = p;
    struct timespec ts = {0, (long)(r->delay * 1e9)};
    nanosleep(&ts, NULL);
    r->at = now();
    gm_interrupt_set();
    return NULL;
}

static void check_stops(const launch *l) {
    gm_kargs a;
    memset(&a, 0, sizeof a);
    gm_kargs_init(&a, l->n_in, l->in, l->n_out, l->out);
    a.k = l->k;
    a.nthreads = 1;
    double t0 = now();
    gm_backend_cpu.kernel[l->kid](C, &a); /* uninterrupted, for scale */
    double whole = now() - t0;
    raiser r = {0.05, 0};
    pthread_t th;
    if (pthread_create(&th, NULL, raise_later, &r) != 0) return;
    gm_status st = gm_backend_cpu.kernel[l->kid](C, &a);
    double end = now();
    pthread_join(th, NULL);
    gm_interrupt_clear();
    gm_err_clear(C);
    tap_ok(st == GM_EINTR && end - r.at < whole / 2,
           "%s returns interrupted soon after a Ctrl-C (%.1f ms after it; %.0f ms uninterrupted)", l->name,
           (end - r.at) * 1e3, whole * 1e3);
}

int main(void) {
    C = gm_ctx_new();
    int64_t n = N, one = 1, row[2] = {1, N}, col[2] = {N, 1}, k = 1000;
    gm_tensor *x = mk(GM_F32, 1, &n), *y = mk(GM_F32, 1, &n), *z = mk(GM_F64, 1, &n);
    gm_tensor *s = mk(GM_F32, 0, NULL), *si = mk(GM_I32, 0, NULL);
    gm_tensor *vk = mk(GM_F32, 1, &k), *ik = mk(GM_I32, 1, &k), *ids = mk(GM_I32, 2, col);
    gm_tensor *slot = mk(GM_I32, 2, col), *offs = mk(GM_I32, 1, (int64_t[]){5});
    gm_tensor *idx1 = mk(GM_I32, 1, &one), *oh = mk(GM_F32, 2, row);
    if (!x || !y || !z || !s || !si || !vk || !ik || !ids || !slot || !offs || !idx1 || !oh) {
        printf("1..0 # SKIP cannot allocate the test tensors\n");
        return 0;
    }
    float *px = gm_tensor_data(x);
    int32_t *pid = gm_tensor_data(ids);
    for (int64_t i = 0; i < N; i++) {
        px[i] = (float)((uint64_t)i * 2654435761u % (uint64_t)N) / (float)N; /* shuffled, distinct */
        pid[i] = (int32_t)(i % 4);
    }
    *(int32_t *)gm_tensor_data(idx1) = 3;

    launch ls[] = {
        {"fill", GM_K_FILL, 0, 1, {0}, {y}, {.value = {1.5}}},
        {"rand", GM_K_RAND, 0, 1, {0}, {y}, {.rand = {.kind = GM_RAND_UNIFORM, .seed = 7, .a = 0, .b = 1}}},
        {"copy (contiguous)", GM_K_COPY, 1, 1, {x}, {y}, {.value = {0}}},
        {"copy (f32 to f64, one row)", GM_K_COPY, 1, 1, {x}, {z}, {.value = {0}}},
        {"exp (unary pointwise)", GM_K_PW_UNARY, 1, 1, {x}, {y}, {.pw = {.op = GM_OP_EXP, .name = "exp"}}},
        {"sum", GM_K_SUM, 1, 1, {x}, {s}, {.reduce = {.mask = 1, .scale = 1}}},
        {"var", GM_K_VAR, 1, 1, {x}, {s}, {.reduce = {.mask = 1, .scale = (double)N}}},
        {"logsumexp", GM_K_LOGSUMEXP, 1, 1, {x}, {s}, {.reduce = {.mask = 1}}},
        {"max", GM_K_MAXMIN, 1, 2, {x}, {s, si}, {.reduce = {.mask = 1}}},
        {"softmax", GM_K_SOFTMAX, 1, 1, {x}, {y}, {.dim = {0}}},
        {"log_softmax", GM_K_SOFTMAX, 1, 1, {x}, {y}, {.dim = {0, .flag = true}}},
        {"softmax backward", GM_K_SOFTMAX_BACKWARD, 2, 1, {x, x}, {y}, {.dim = {0}}},
        {"cumsum", GM_K_CUMSUM, 1, 1, {x}, {y}, {.dim = {0}}},
        {"topk (k = 1000)", GM_K_TOPK, 1, 2, {x}, {vk, ik}, {.topk = {0, 1000, true, true}}},
        {"one_hot (one index, 2^24 classes)", GM_K_ONE_HOT, 1, 1, {idx1}, {oh}, {.one_hot = {N}}},
        {"moe routing", GM_K_MOE_ROUTE, 1, 2, {ids}, {offs, slot}, {.route = {4, -1}}},
    };
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) check(&ls[i]);
    /* topk of an ascending row: every element enters the heap, seconds of work */
    float *p = gm_tensor_data(x);
    for (int64_t i = 0; i < N; i++) p[i] = (float)i;
    launch slow = {"topk (ascending row)", GM_K_TOPK, 1, 2, {x}, {vk, ik}, {.topk = {0, 1000, true, true}}};
    check_stops(&slow);

    gm_tensor *ts[] = {x, y, z, s, si, vk, ik, ids, slot, offs, idx1, oh};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) gm_tensor_release(ts[i]);
    gm_ctx_free(C);
    return tap_done();
}
