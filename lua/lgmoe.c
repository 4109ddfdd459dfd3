/* lgmoe.c: the gmoe Lua module's C half ("gmoe.core"): the per-state engine context, Lua
 * errors from engine statuses, the collector's pacing by tensor bytes, the module's small
 * functions (threads, clock, profiler), and its assembly from the binding files: ltensor.c
 * (tensors), lop.c (the op trampoline), lautograd.c, lrng.c, ltesthooks.c, loptim.c, lio.c.
 * lua/ is the only place that converts Lua values and raises Lua errors; errors are raised
 * after the core has released everything. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lualib.h>

#include "lbind.h"

/* Per-state data, reached through lua_getextraspace. */
typedef struct lstate {
    gm_ctx *ctx;
    size_t pending;     /* tensor bytes created since the last GC step we asked for */
    size_t since_major; /* ... and since the last full collection we asked for */
} lstate;

static char CTX_MT;
/* The collector is stepped once the tensor bytes created since the last step exceed both 1 MiB
 * and a quarter of the bytes alive: young garbage stays within about a quarter of what is live,
 * and a training step that turns over hundreds of MB asks for a handful of collections, not one
 * per MiB (under the incremental collector each was about a full cycle of the Lua heap: a 2-layer
 * LM step spent 10 ms there). */
#define GC_STEP_BYTES ((size_t)1 << 20)
#define GC_LIVE_SHARE 4
/* Lua runs its generational collector (gm_lua_newstate): a step above is a minor collection,
 * which visits young objects only, where an incremental cycle re-marked the whole heap (every
 * module and doc table) each time. A tensor that outlives two minors is old and is freed only
 * by a major collection, and Lua's own major trigger sees the 40-byte userdata, not the
 * storage: so a full collection is asked for once the tensor bytes created since the last one
 * exceed both 16 MiB and a quarter of the bytes alive, bounding garbage that got old to about a
 * quarter of what is live (16 MiB for small models). Measured on the 2-core dev VM: an 8-element
 * add 0.29 -> 0.26 us, the small MoE step -20%, MQAR --quick 6.4 -> 4.8 s with peak RSS
 * 182 -> 224 MB (majors at 64 MiB and a half: 4.5 s, 272 MB; no majors asked for: 318 MB). */
#define GC_MAJOR_BYTES ((size_t)16 << 20)
#define GC_MAJOR_SHARE 4

static lstate *lstate_of(lua_State *L) { return *(lstate **)lua_getextraspace(L); }
gm_ctx *gm_lua_ctx(lua_State *L) { return lstate_of(L)->ctx; }

/* Pushes "chunk:line: " of the first Lua function up the stack that is not one of gm's own
 * modules ("@lua/gmoe/..."), so an error raised for a library wrapper (x:to() in init.lua)
 * points at the user's line; "" when there is none (lua/gmoe/errors.lua does the same for
 * errors the modules raise). */
void gm_lua_where(lua_State *L) {
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar)) break;
        if (ar.what[0] == 'C' || strncmp(ar.source, "@lua/gmoe/", 10) == 0) continue;
        if (ar.currentline > 0) {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
        break;
    }
    lua_pushliteral(L, "");
}

int gm_lua_errorf(lua_State *L, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    gm_lua_where(L);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

int gm_lua_error(lua_State *L, gm_status st) {
    gm_ctx *c = gm_lua_ctx(L);
    if (st == GM_EINTR || gm_err_code(c) == GM_EINTR) { /* Ctrl-C reads the same wherever it stopped the work */
        gm_err_clear(c);
        lua_pushliteral(L, "interrupted");
        return lua_error(L);
    }
    gm_lua_where(L);
    lua_pushstring(L, gm_errmsg(c));
    lua_concat(L, 2);
    gm_err_clear(c);
    return lua_error(L);
}

/* Tell the collector about tensor bytes so loops stay bounded without collectgarbage(). */
void gm_lua_account(lua_State *L, size_t bytes) {
    lstate *s = lstate_of(L);
    s->pending += bytes;
    s->since_major += bytes;
    size_t live;
    if (s->pending > GC_STEP_BYTES && s->pending > (live = gm_ctx_live_bytes(s->ctx)) / GC_LIVE_SHARE) {
        int kb = (int)(s->pending >> 10);
        s->pending = 0;
        if (s->since_major > GC_MAJOR_BYTES && s->since_major > live / GC_MAJOR_SHARE) {
            s->since_major = 0;
            lua_gc(L, LUA_GCCOLLECT);
        } else {
            lua_gc(L, LUA_GCSTEP, kb);
        }
    }
}

/* ---- module functions ------------------------------------------------------------------------ */
/* Threads per kernel: 1 .. GM_MAX_THREADS (more would only oversubscribe any machine gmoe runs
 * on, and a typo such as 1e9 must not be taken at its word). */
#define GM_MAX_THREADS 1024
static int l_set_num_threads(lua_State *L) {
    int ok;
    lua_Integer n = lua_tointegerx(L, 1, &ok);
    if (!ok || n < 1 || n > GM_MAX_THREADS)
        return gm_lua_errorf(L, "set_num_threads: expected an integer in 1 .. %d, got %s", GM_MAX_THREADS,
                          lua_type(L, 1) == LUA_TNUMBER ? lua_tostring(L, 1) : luaL_typename(L, 1));
    gm_ctx_set_num_threads(gm_lua_ctx(L), (int)n);
    return 0;
}

static int l_get_num_threads(lua_State *L) {
    int n = gm_ctx_num_threads(gm_lua_ctx(L));
    if (n <= 0) n = gm_default_threads(GM_CPU);
    lua_pushinteger(L, n);
    return 1;
}

static int l_live_bytes(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)gm_ctx_live_bytes(gm_lua_ctx(L)));
    return 1;
}

static int l_blas_info(lua_State *L) {
    lua_pushstring(L, gm_blas_info());
    return 1;
}

/* gm.clock(): monotonic wall time in seconds, for timing cells and benchmarks. */
static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
    return 1;
}

/* gm._kprof(true): start the kernel profiler (zeroed); gm._kprof(false): stop it and return
 * {name = {calls, seconds}} for every kernel that ran (gm.profile in init.lua wraps this). */
static int l_kprof(lua_State *L) {
    gm_ctx *c = gm_lua_ctx(L);
    if (lua_toboolean(L, 1)) {
        if (gm_profile_start(c) != GM_OK) return gm_lua_errorf(L, "%s", gm_errmsg(c));
        return 0;
    }
    const gm_kprof *rows = gm_profile_rows(c);
    lua_newtable(L);
    for (int k = 0; rows && k < gm_kernel_count(); k++) {
        if (!rows[k].calls) continue;
        lua_createtable(L, 2, 0);
        lua_pushinteger(L, (lua_Integer)rows[k].calls);
        lua_rawseti(L, -2, 1);
        lua_pushnumber(L, (double)rows[k].ns * 1e-9);
        lua_rawseti(L, -2, 2);
        lua_setfield(L, -2, gm_kernel_name(k));
    }
    gm_profile_stop(c);
    return 1;
}

static int l_interrupted(lua_State *L) {
    lua_pushboolean(L, gm_interrupted());
    return 1;
}

static const luaL_Reg module_fns[] = {
    {"set_num_threads", l_set_num_threads}, {"get_num_threads", l_get_num_threads},
    {"live_bytes", l_live_bytes}, {"blas_info", l_blas_info}, {"clock", l_clock}, {"_kprof", l_kprof},
    {NULL, NULL}
};

static const luaL_Reg internal_fns[] = {{"interrupted", l_interrupted}, {NULL, NULL}};

static int ctx_gc(lua_State *L) {
    lstate **ud = lua_touserdata(L, 1);
    if (*ud) {
        gm_ctx_free((*ud)->ctx);
        free(*ud);
        *ud = NULL;
    }
    return 0;
}

int luaopen_gmoe_core(lua_State *L) {
    if (!*(lstate **)lua_getextraspace(L)) {
        /* The context lives as long as the state: a sentinel userdata finalised last. */
        lstate **ud = lua_newuserdatauv(L, sizeof *ud, 0);
        *ud = calloc(1, sizeof **ud);
        if (!*ud || !((*ud)->ctx = gm_ctx_new())) return gm_lua_errorf(L, "gmoe: out of memory");
        lua_newtable(L);
        lua_pushcfunction(L, ctx_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &CTX_MT);
        *(lstate **)lua_getextraspace(L) = *ud;
    }
    luaL_newlib(L, module_fns);            /* M */
    int M = lua_gettop(L);
    luaL_setfuncs(L, gm_lua_tensor_fns, 0);
    luaL_setfuncs(L, gm_lua_rng_fns, 0);
    luaL_setfuncs(L, gm_lua_autograd_fns, 0);

    /* tensor metatable with its method table as __index upvalue */
    lua_newtable(L);                       /* mt */
    int mt = lua_gettop(L);
    lua_newtable(L);                       /* methods */
    luaL_setfuncs(L, gm_lua_tensor_methods, 0);
    int methods = lua_gettop(L);
    luaL_setfuncs(L, gm_lua_autograd_methods, 0);
    gm_lua_ops_bind(L, M, methods, mt);
    static const struct { const char *meta, *op; } arith[] = {
        {"__add", "add"}, {"__sub", "sub"}, {"__mul", "mul"}, {"__div", "div"}, {"__pow", "pow"},
    };
    for (size_t i = 0; i < sizeof arith / sizeof arith[0]; i++) {
        lua_getfield(L, M, arith[i].op);
        lua_setfield(L, mt, arith[i].meta);
    }
    gm_lua_tensor_meta(L, mt, methods);
    lua_setfield(L, M, "Tensor");          /* gm.Tensor = methods (add methods from Lua) */
    lua_pop(L, 1);                         /* mt */
    gm_lua_rng_meta(L);
    gm_lua_test_meta(L);

    luaL_newlib(L, internal_fns);
    luaL_setfuncs(L, gm_lua_tensor_internal, 0);
    luaL_setfuncs(L, gm_lua_autograd_internal, 0);
    luaL_setfuncs(L, gm_lua_test_internal, 0);
    gm_lua_optim_register(L);
    gm_lua_io_register(L);
    gm_lua_stats_register(L);
    lua_setfield(L, M, "_C");
    lua_pushstring(L, GM_VERSION);
    lua_setfield(L, M, "version");
    return 1;
}

void gm_lua_reset(lua_State *L) { gm_ctx_reset(gm_lua_ctx(L)); }

/* ---- embedded Lua modules --------------------------------------------------------------------- */
/* The lua/gmoe Lua files, embedded by the Makefile (build/lua_embed.S): module name, source, and
 * the chunk name ("@lua/gmoe/x.lua") tracebacks show. */
typedef struct { const char *name, *src, *path; } embedded_mod;
extern const embedded_mod gm_embedded_lua[];

static int load_embedded(lua_State *L) {
    const embedded_mod *m = lua_touserdata(L, lua_upvalueindex(1));
    if (luaL_loadbuffer(L, m->src, strlen(m->src), m->path) != LUA_OK) return lua_error(L);
    lua_pushstring(L, m->name);
    lua_call(L, 1, 1);
    return 1;
}

int gm_lua_setup(lua_State *L) {
    *(lstate **)lua_getextraspace(L) = NULL; /* Lua does not zero the main thread's extra space */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_gmoe_core);
    lua_setfield(L, -2, "gmoe.core");
    for (const embedded_mod *m = gm_embedded_lua; m->name; m++) {
        lua_pushlightuserdata(L, (void *)m);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "gmoe");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) return 1;
    lua_setglobal(L, "gm");
    return 0;
}
