/* cpu.h: what every CPU kernel file includes: the kernel boundary (core/kernel.h, the only
 * header of the engine a kernel sees), the thread splitting (parallel.h), and the prototypes of
 * this backend's kernels gm_cpu_<ID>, one per GM_KERNEL row (backend_cpu.c builds its table
 * from the same rows). */
#ifndef GM_CPU_H
#define GM_CPU_H

#include "kernel.h"
#include "parallel.h"

#define GM_KERNEL(id) gm_status gm_cpu_##id(gm_ctx *c, const gm_kargs *a);
#include "ops.def"
#undef GM_KERNEL

#endif
