/* loptim.c: the Lua binding of the optimiser steps (gm._C.sgd_step, adam_step, sumsq,
 * scale_), used by lua/gmoe/optim.lua. Hyper-parameters come in one table; every call runs
 * with grad mode off since it writes parameters in place. */
#include "lgmoe.h"

static double hp_number(lua_State *L, int t, const char *k, double def) {
    lua_getfield(L, t, k);
    double v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static bool hp_bool(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* hp table fields: lr momentum dampening weight_decay nesterov beta1 beta2 eps decoupled step */
static void check_hp(lua_State *L, int t, gm_optim_hp *hp) {
    luaL_checktype(L, t, LUA_TTABLE);
    hp->lr = hp_number(L, t, "lr", 0.0);
    hp->momentum = hp_number(L, t, "momentum", 0.0);
    hp->dampening = hp_number(L, t, "dampening", 0.0);
    hp->weight_decay = hp_number(L, t, "weight_decay", 0.0);
    hp->beta1 = hp_number(L, t, "beta1", 0.9);
    hp->beta2 = hp_number(L, t, "beta2", 0.999);
    hp->eps = hp_number(L, t, "eps", 1e-8);
    hp->nesterov = hp_bool(L, t, "nesterov");
    hp->decoupled_wd = hp_bool(L, t, "decoupled");
    hp->step = (int64_t)hp_number(L, t, "step", 1.0);
}

/* Argument i as n tensors: a tensor (n = 1) or an array of n tensors, into a Lua-owned
 * scratch array (so a raising check leaks nothing; the arguments keep the tensors alive).
 * n < 0: take the length from this argument. nil_ok: nil (or a nil entry) gives NULL. */
static gm_tensor **tensor_list(lua_State *L, int i, int *n, bool nil_ok) {
    bool one = !lua_istable(L, i);
    lua_Integer len = one ? 1 : luaL_len(L, i);
    if (*n < 0) {
        if (len < 1 || len > 1 << 20) luaL_error(L, "optimiser step: %d tensors (1 to 2^20)", (int)len);
        *n = (int)len;
    } else if (len != *n && !(one && lua_isnoneornil(L, i))) {
        luaL_error(L, "optimiser step: argument %d has %d tensors, argument 1 has %d", i, (int)len, *n);
    }
    gm_tensor **xs = lua_newuserdatauv(L, (size_t)*n * sizeof *xs, 0);
    for (int k = 0; k < *n; k++) {
        if (one) lua_pushvalue(L, i);
        else lua_geti(L, i, k + 1);
        xs[k] = nil_ok && lua_isnil(L, -1) ? NULL : gm_lua_check_tensor(L, -1);
        lua_pop(L, 1);
    }
    return xs;
}

/* sgd_step(p, grad, buf_or_nil, hp): p, grad, buf are tensors, or arrays of the tensors of one
 * parameter group (buf entries nil without momentum), updated in one kernel call */
static int l_sgd_step(lua_State *L) {
    int n = -1;
    gm_tensor **p = tensor_list(L, 1, &n, false), **g = tensor_list(L, 2, &n, false);
    gm_tensor **buf = tensor_list(L, 3, &n, true);
    gm_optim_hp hp;
    check_hp(L, 4, &hp);
    gm_ctx *c = gm_lua_ctx(L);
    gm_grad_push(c, false);
    gm_status st = gm_sgd_step_multi(c, n, p, g, buf, &hp);
    gm_grad_pop(c);
    if (st != GM_OK) return gm_lua_error(L, st);
    return 0;
}

/* adam_step(p, grad, m, v, hp): tensors, or arrays of the tensors of one parameter group */
static int l_adam_step(lua_State *L) {
    int n = -1;
    gm_tensor **p = tensor_list(L, 1, &n, false), **g = tensor_list(L, 2, &n, false);
    gm_tensor **m = tensor_list(L, 3, &n, false), **v = tensor_list(L, 4, &n, false);
    gm_optim_hp hp;
    check_hp(L, 5, &hp);
    gm_ctx *c = gm_lua_ctx(L);
    gm_grad_push(c, false);
    gm_status st = gm_adam_step_multi(c, n, p, g, m, v, &hp);
    gm_grad_pop(c);
    if (st != GM_OK) return gm_lua_error(L, st);
    return 0;
}

/* sumsq({t1, t2, ...}) -> sum of squares of every element, in double */
static int l_sumsq(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1);
    if (n > 1 << 20) return gm_lua_errorf(L, "sumsq: too many tensors (%d)", (int)n);
    /* Scratch owned by Lua, so a raising check below leaks nothing; the table keeps the
     * tensors alive, so the borrowed pointers stay valid. */
    gm_tensor **xs = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *xs, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        xs[i - 1] = gm_lua_check_tensor(L, -1);
        lua_pop(L, 1);
    }
    gm_ctx *c = gm_lua_ctx(L);
    double total;
    gm_status st = gm_sumsq(c, (int)n, xs, &total);
    if (st != GM_OK) return gm_lua_error(L, st);
    lua_pushnumber(L, total);
    return 1;
}

/* scale_(t, s): t *= s in place; returns t */
static int l_scale_(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    double s = luaL_checknumber(L, 2);
    gm_ctx *c = gm_lua_ctx(L);
    gm_grad_push(c, false);
    gm_status st = gm_scale_(c, x, s);
    gm_grad_pop(c);
    if (st != GM_OK) return gm_lua_error(L, st);
    lua_settop(L, 1);
    return 1;
}

void gm_lua_optim_register(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"sgd_step", l_sgd_step},
        {"adam_step", l_adam_step},
        {"sumsq", l_sumsq},
        {"scale_", l_scale_},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
