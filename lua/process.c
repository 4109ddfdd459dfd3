/* process.c: process-wide settings the gmoe executable needs before anything runs.
 * OpenMP's default wait policy spins idle worker threads for a while after each parallel
 * region, and OpenBLAS's pthread pool spins too: on a machine with few cores the two pools
 * steal each other's cores, and a conv training step ran 4x slower than with passive waiting.
 * libgomp reads OMP_WAIT_POLICY once, before main, so when the user has not set it we set it
 * to "passive" and re-exec ourselves (same pid, argv, stdio). Set OMP_WAIT_POLICY yourself to
 * choose otherwise. */
#include <stdlib.h>
#include <unistd.h>

#include "lgmoe.h"

void gm_process_setup(int argc, char **argv) {
    (void)argc;
    if (getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc?): carry on with the default policy */
}
