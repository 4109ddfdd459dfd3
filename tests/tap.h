/* tap.h: a tiny TAP (version 13) emitter for gmoe's C tests, run by prove.
 * TAP_OK(cond, name...) prints "ok N - name"; tap_done() prints the plan and returns the
 * exit status. Header-only: each test binary is one translation unit. */
#ifndef GM_TAP_H
#define GM_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

static int tap_n, tap_failed;

__attribute__((format(printf, 2, 3))) static inline int tap_ok(int cond, const char *fmt, ...) {
    va_list ap;
    tap_n++;
    if (!cond) tap_failed++;
    printf("%sok %d - ", cond ? "" : "not ", tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return cond;
}

__attribute__((format(printf, 1, 2))) static inline void tap_diag(const char *fmt, ...) {
    va_list ap;
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static inline int tap_close(double got, double want, double tol) {
    return fabs(got - want) <= tol * (1 + fabs(want));
}

static inline int tap_done(void) {
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
