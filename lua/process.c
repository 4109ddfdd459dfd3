/* process.c: process-wide settings the gmoe executable needs before anything runs. OpenBLAS
 * picks its core type (kernel set) once, when it loads, so when it fell back to a slower one
 * than the CPU runs, gmoe re-executes itself (same pid, argv, stdio) with OPENBLAS_CORETYPE
 * set to the candidate kernels/cpu/blas_core.c picks; the new process checks that core's
 * products and, if they are wrong, re-executes once more with the next candidate. A user's
 * OPENBLAS_CORETYPE stays. (Kernel threads are gmoe's own pool, kernels/cpu/parallel.c: no
 * OpenMP wait policy to set.) */
#include <stdlib.h>
#include <unistd.h>

#include "gm.h"
#include "lgmoe.h"

void gm_process_setup(int argc, char **argv) {
    (void)argc;
    if (!gm_blas_core_select()) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc?): carry on as loaded, and leave children the user's environment */
    unsetenv("GMOE_BLAS_CORE");
}
