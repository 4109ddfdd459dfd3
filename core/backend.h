/* backend.h: how the core calls a backend (core/ files only). What a backend implements, and
 * all a kernel sees, is kernel.h; this adds the dispatch from tensors to kernel views. */
#ifndef GM_BACKEND_H
#define GM_BACKEND_H

#include "gm.h"

gm_backend *gm_backend_for(gm_device d); /* NULL when not built */

/* Run kernel kid on device d; a missing kernel is a clean GM_ENOTSUP error. */
gm_status gm_kernel_run(gm_ctx *c, gm_device d, int kid, gm_kargs *a);
void gm_kview_of(const gm_tensor *x, gm_kview *v);
/* kargs with inputs and outputs filled from tensors (outputs first in out[]). */
void gm_kargs_init(gm_kargs *a, int n_in, gm_tensor *const *in, int n_out,
                   gm_tensor *const *out);

#endif
