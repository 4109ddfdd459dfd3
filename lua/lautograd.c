/* lautograd.c: autograd in gmoe.core: x:backward(grad?, {retain_graph}), requires_grad_,
 * detach, and the grad-mode stack behind gm.no_grad / gm.enable_grad (init.lua). A tensor's
 * grad, grad_fn, requires_grad and is_leaf fields are read in ltensor.c's __index. */
#include "lbind.h"

static int t_backward(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    gm_tensor *g = lua_isnoneornil(L, 2) ? NULL : gm_lua_check_tensor(L, 2);
    bool retain = false;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "retain_graph");
        retain = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    gm_status st = gm_backward(gm_lua_ctx(L), x, g, retain);
    if (st != GM_OK) return gm_lua_error(L, st);
    return 0;
}

static int t_requires_grad_(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    bool on = lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2);
    gm_status st = gm_tensor_set_requires_grad(gm_lua_ctx(L), x, on);
    if (st != GM_OK) return gm_lua_error(L, st);
    lua_settop(L, 1);
    return 1;
}

static int t_detach(lua_State *L) {
    gm_tensor *y;
    gm_status st = gm_tensor_detach(gm_lua_ctx(L), gm_lua_check_tensor(L, 1), &y);
    return gm_lua_push_result(L, st, y);
}

static int l_grad_push(lua_State *L) {
    gm_grad_push(gm_lua_ctx(L), lua_toboolean(L, 1));
    return 0;
}

static int l_grad_pop(lua_State *L) {
    gm_grad_pop(gm_lua_ctx(L));
    return 0;
}

static int l_is_grad_enabled(lua_State *L) {
    lua_pushboolean(L, gm_grad_enabled(gm_lua_ctx(L)));
    return 1;
}

const luaL_Reg gm_lua_autograd_methods[] = {
    {"backward", t_backward}, {"requires_grad_", t_requires_grad_}, {"detach", t_detach}, {NULL, NULL}
};
const luaL_Reg gm_lua_autograd_fns[] = {{"is_grad_enabled", l_is_grad_enabled}, {NULL, NULL}};
const luaL_Reg gm_lua_autograd_internal[] = {{"grad_push", l_grad_push}, {"grad_pop", l_grad_pop}, {NULL, NULL}};
