/* lstats.c: the Lua binding of the statistics estimators' kernels (gm._C.gaussian_moe_eval),
 * wrapped for users by gm.data.gaussian_moe_eval (lua/gmoe/data/synthetic.lua). */
#include <string.h>

#include "lgmoe.h"

static const char *const GATES[] = {"softmax", "temperature", "tanh", "sigmoid", "topk", NULL};

/* gaussian_moe_eval(x, y, theta, gate, K, what) -> nll [R] (, grad [R, P] (, opg [R, P, P])) */
static int l_gaussian_moe_eval(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1), *y = gm_lua_check_tensor(L, 2);
    gm_tensor *th = gm_lua_check_tensor(L, 3);
    int gate = luaL_checkoption(L, 4, NULL, GATES);
    int K = (int)luaL_optinteger(L, 5, 1), what = (int)luaL_optinteger(L, 6, 1);
    gm_ctx *c = gm_lua_ctx(L);
    gm_tensor *nll = NULL, *grad = NULL, *opg = NULL;
    gm_status st = gm_gaussian_moe_eval(c, x, y, th, (gm_moe_gate)gate, K, what, &nll, &grad, &opg);
    if (st != GM_OK) return gm_lua_error(L, st);
    gm_lua_push_tensor(L, nll);
    if (grad) gm_lua_push_tensor(L, grad);
    if (opg) gm_lua_push_tensor(L, opg);
    return 1 + (grad != NULL) + (opg != NULL);
}

void gm_lua_stats_register(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"gaussian_moe_eval", l_gaussian_moe_eval},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
