/* lrng.c: randomness in gmoe.core: gm.Generator objects (a seed and a Philox offset each),
 * the default generator's seed and state, and the random constructors (rand, randn, randint,
 * randperm), which take {generator = g} to draw from another stream. */
#include "lbind.h"

static int rand_impl(lua_State *L, int shape_at, gm_rand_kind kind, double a, double b, gm_dtype def) {
    int nd;
    int64_t shape[GM_MAX_DIMS];
    int next = gm_lua_read_shape(L, shape_at, &nd, shape, "rand");
    ctor_opts o = gm_lua_ctor_opts(L, next, def);
    gm_ctx *c = gm_lua_ctx(L);
    gm_tensor *t;
    gm_status st = gm_tensor_new(c, o.dtype, GM_CPU, nd, shape, &t);
    if (st == GM_OK && (st = gm_rand_fill(c, t, kind, a, b, o.gen)) != GM_OK) gm_tensor_release(t);
    return gm_lua_ctor_finish(L, st, t, &o);
}

static int l_rand(lua_State *L) { return rand_impl(L, 1, GM_RAND_UNIFORM, 0, 1, GM_F32); }

static int l_randn(lua_State *L) { return rand_impl(L, 1, GM_RAND_NORMAL, 0, 1, GM_F32); }

/* randint(high, shape) or randint(low, high, shape): integers in [low, high), i32 by default. */
static int l_randint(lua_State *L) {
    lua_Integer lo = 0, hi;
    int at;
    if (lua_type(L, 2) == LUA_TNUMBER && lua_type(L, 3) != LUA_TNONE && !gm_lua_is_options(L, 3)) {
        lo = luaL_checkinteger(L, 1);
        hi = luaL_checkinteger(L, 2);
        at = 3;
    } else {
        hi = luaL_checkinteger(L, 1);
        at = 2;
    }
    if (hi <= lo) return gm_lua_errorf(L, "randint: empty range [%I, %I)", lo, hi);
    return rand_impl(L, at, GM_RAND_INT, (double)lo, (double)hi, GM_I32);
}

static int l_randperm(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    ctor_opts o = gm_lua_ctor_opts(L, 2, GM_I32);
    if (n < 0) return gm_lua_errorf(L, "randperm: n must be >= 0, got %d", (int)n);
    gm_tensor *t;
    gm_status st = gm_randperm(gm_lua_ctx(L), n, o.dtype, o.gen, &t);
    return gm_lua_ctor_finish(L, st, t, &o);
}

typedef struct lgen {
    gm_generator g;
} lgen;

static int g_new(lua_State *L) {
    lua_Integer seed = luaL_optinteger(L, 1, 0);
    lgen *g = lua_newuserdatauv(L, sizeof *g, 0);
    gm_generator_init(&g->g, (uint64_t)seed);
    luaL_setmetatable(L, "gm.Generator");
    return 1;
}

static int g_manual_seed(lua_State *L) {
    lgen *g = luaL_checkudata(L, 1, "gm.Generator");
    gm_generator_init(&g->g, (uint64_t)luaL_checkinteger(L, 2));
    lua_settop(L, 1);
    return 1;
}

/* State as {seed, offset}; offset counts Philox blocks consumed. */
static int push_gen_state(lua_State *L, const gm_generator *g) {
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)g->seed);
    lua_setfield(L, -2, "seed");
    lua_pushinteger(L, (lua_Integer)g->offset);
    lua_setfield(L, -2, "offset");
    return 1;
}

static void read_gen_state(lua_State *L, int i, gm_generator *g) {
    luaL_checktype(L, i, LUA_TTABLE);
    lua_getfield(L, i, "seed");
    lua_getfield(L, i, "offset");
    g->seed = (uint64_t)luaL_checkinteger(L, -2);
    g->offset = (uint64_t)luaL_checkinteger(L, -1);
    lua_pop(L, 2);
}

static int g_get_state(lua_State *L) { return push_gen_state(L, &((lgen *)luaL_checkudata(L, 1, "gm.Generator"))->g); }

static int g_set_state(lua_State *L) {
    read_gen_state(L, 2, &((lgen *)luaL_checkudata(L, 1, "gm.Generator"))->g);
    return 0;
}

static int g_tostring(lua_State *L) {
    lgen *g = luaL_checkudata(L, 1, "gm.Generator");
    lua_pushfstring(L, "Generator(seed=%I, offset=%I)", (lua_Integer)g->g.seed, (lua_Integer)g->g.offset);
    return 1;
}

static int l_manual_seed(lua_State *L) {
    gm_generator_init(gm_ctx_generator(gm_lua_ctx(L)), (uint64_t)luaL_checkinteger(L, 1));
    return 0;
}

static int l_get_rng_state(lua_State *L) { return push_gen_state(L, gm_ctx_generator(gm_lua_ctx(L))); }

static int l_set_rng_state(lua_State *L) {
    read_gen_state(L, 1, gm_ctx_generator(gm_lua_ctx(L)));
    return 0;
}

static const luaL_Reg gen_methods[] = {
    {"manual_seed", g_manual_seed}, {"get_state", g_get_state}, {"set_state", g_set_state}, {NULL, NULL}
};

const luaL_Reg gm_lua_rng_fns[] = {
    {"rand", l_rand}, {"randn", l_randn}, {"randint", l_randint}, {"randperm", l_randperm},
    {"Generator", g_new}, {"manual_seed", l_manual_seed}, {"get_rng_state", l_get_rng_state},
    {"set_rng_state", l_set_rng_state}, {NULL, NULL}
};

void gm_lua_rng_meta(lua_State *L) {
    if (luaL_newmetatable(L, "gm.Generator")) {
        luaL_newlib(L, gen_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, g_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
}
