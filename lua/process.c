/* process.c: process-wide settings the gmoe executable needs before anything runs.
 * libgomp reads its wait settings once, before main. Its default lets an idle worker spin for
 * about 300000 iterations after each parallel region; fully passive waiting puts it to sleep at
 * once, and waking it costs a futex round trip per region (a third of the 2-core LM step went
 * there). gmoe asks for a short spin, GOMP_SPINCOUNT=30000 (some 10-30 us: long enough to
 * catch the next kernel of a training step, short enough not to steal a core from whatever
 * else runs), then sleep. OpenBLAS runs single-threaded (kernels/cpu/blas.h), so no second
 * pool spins against OpenMP's. When the user has set neither OMP_WAIT_POLICY nor
 * GOMP_SPINCOUNT we set them and re-exec ourselves (same pid, argv, stdio); set either yourself
 * to choose otherwise. */
#include <stdlib.h>
#include <unistd.h>

#include "lgmoe.h"

void gm_process_setup(int argc, char **argv) {
    (void)argc;
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0 || setenv("GOMP_SPINCOUNT", "30000", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc?): carry on with the default policy */
}
