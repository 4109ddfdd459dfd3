/* ltesthooks.c: test hooks in gm._C for the generic op tests (tests/lua/t_ops_*.lua): an op's
 * sample inputs and bad calls from its rules, a raw op call that returns the status instead of
 * raising, and raw element access by flat index (gradcheck perturbs inputs in place). */
#include "lbind.h"

static char PARAMS_MT;

static int check_op(lua_State *L, int i) {
    int op = gm_op_find(luaL_checkstring(L, i));
    if (op < 0) gm_lua_errorf(L, "unknown op '%s'", lua_tostring(L, i));
    return op;
}

static int push_case(lua_State *L, int n_in, gm_tensor **in, const gm_params *p) {
    lua_createtable(L, n_in, 0);
    for (int k = 0; k < n_in; k++) {
        gm_lua_push_tensor(L, in[k]);
        lua_rawseti(L, -2, k + 1);
    }
    gm_params *ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = *p;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &PARAMS_MT);
    lua_setmetatable(L, -2);
    return 2;
}

static int l_op_sample(lua_State *L) {
    int op = check_op(L, 1);
    gm_tensor *in[16] = {0};
    int n = 0;
    gm_params p;
    gm_params_init(&p);
    gm_ctx *c = gm_lua_ctx(L);
    gm_status st = gm_opdef_get(op)->rules->sample(c, (int)luaL_checkinteger(L, 2), &n, in, &p);
    if (st == GM_ENOTSUP) return 0;
    if (st != GM_OK) {
        for (int k = 0; k < 16; k++) gm_tensor_release(in[k]);
        return gm_lua_error(L, st);
    }
    return push_case(L, n, in, &p);
}

static int l_op_bad(lua_State *L) {
    int op = check_op(L, 1);
    gm_tensor *in[16] = {0};
    int n = 0;
    gm_params p;
    gm_params_init(&p);
    gm_status expect = GM_OK;
    const gm_oprules *r = gm_opdef_get(op)->rules;
    if (!r->bad) return 0;
    gm_status st = r->bad(gm_lua_ctx(L), (int)luaL_checkinteger(L, 2), &n, in, &p, &expect);
    if (st == GM_ENOTSUP) return 0;
    if (st != GM_OK) {
        for (int k = 0; k < 16; k++) gm_tensor_release(in[k]);
        return gm_lua_error(L, st);
    }
    push_case(L, n, in, &p);
    lua_pushstring(L, gm_status_name(expect));
    return 3;
}

/* op_call(name, inputs, params) -> ok, outputs... | false, message, status name */
static int l_op_call(lua_State *L) {
    int op = check_op(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    gm_params *p = luaL_checkudata(L, 3, "gm.Params");
    int n = (int)lua_rawlen(L, 2);
    if (n > 16) return gm_lua_errorf(L, "op_call: too many inputs");
    gm_tensor *in[16];
    for (int k = 0; k < n; k++) {
        lua_rawgeti(L, 2, k + 1);
        in[k] = gm_lua_check_tensor(L, -1);
        lua_pop(L, 1);
    }
    gm_ctx *c = gm_lua_ctx(L);
    gm_tensor *out[GM_MAX_OUT] = {0};
    gm_status st = gm_op(c, op, n, in, p, out);
    if (st != GM_OK) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, gm_errmsg(c));
        lua_pushstring(L, gm_status_name(st));
        gm_err_clear(c);
        return 3;
    }
    lua_pushboolean(L, 1);
    int nout = gm_opdef_get(op)->n_out;
    for (int k = 0; k < nout; k++) gm_lua_push_tensor(L, out[k]);
    return 1 + nout;
}

static int l_flat_get(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    luaL_argcheck(L, i >= 0 && i < gm_tensor_numel(x), 2, "flat index out of range");
    gm_lua_push_number(L, x, i);
    return 1;
}

/* Raw element write that bypasses autograd checks (gradcheck perturbs inputs in place). */
static int l_flat_set(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    double v = luaL_checknumber(L, 3);
    luaL_argcheck(L, i >= 0 && i < gm_tensor_numel(x), 2, "flat index out of range");
    gm_tensor_set_flat(x, i, v);
    return 0;
}

const luaL_Reg gm_lua_test_internal[] = {
    {"op_sample", l_op_sample}, {"op_bad", l_op_bad}, {"op_call", l_op_call}, {"flat_get", l_flat_get},
    {"flat_set", l_flat_set}, {NULL, NULL}
};

void gm_lua_test_meta(lua_State *L) {
    luaL_newmetatable(L, "gm.Params");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &PARAMS_MT);
}
