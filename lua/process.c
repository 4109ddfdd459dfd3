/* process.c: process-wide settings the gmoe executable needs before anything runs, applied by
 * re-executing itself (same pid, argv, stdio) because the libraries read them once, at load:
 * - the OpenBLAS core type, when OpenBLAS fell back to a slower one than the CPU runs
 *   (kernels/cpu/blas_core.c picks it and checks its products in the new process; a refused
 *   core means one more re-exec with the next candidate). A user's OPENBLAS_CORETYPE stays.
 * - libgomp's wait policy: OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=30000, a short spin before an
 *   idle OpenMP thread sleeps, unless the user set either variable (the kernels' own pool,
 *   kernels/cpu/parallel.c, does not use OpenMP threads; this covers any OpenMP region left). */
#include <stdlib.h>
#include <unistd.h>

#include "gm.h"
#include "lgmoe.h"

void gm_process_setup(int argc, char **argv) {
    (void)argc;
    bool again = gm_blas_core_select();
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT"))
        again |= setenv("OMP_WAIT_POLICY", "passive", 1) == 0 && setenv("GOMP_SPINCOUNT", "30000", 1) == 0;
    if (!again) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc?): carry on as loaded, and leave children the user's environment */
    unsetenv("GMOE_BLAS_CORE");
}
