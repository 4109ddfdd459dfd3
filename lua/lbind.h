/* lbind.h: what the binding files of the gmoe.core module share (lua/lgmoe.c, ltensor.c, lop.c,
 * lautograd.c, lrng.c, ltesthooks.c): the tensor userdata, readers of Lua arguments, and the
 * function tables each file contributes to the module. The REPL and the executable use
 * lgmoe.h only. */
#ifndef GM_LBIND_H
#define GM_LBIND_H

#include "lgmoe.h"

/* A tensor userdata: the tensor (NULL once closed) and a magic word (ltensor.c). */
typedef struct tensor_ud {
    gm_tensor *t;
    uint64_t magic;
} tensor_ud;
tensor_ud *gm_lua_to_ud(lua_State *L, int i); /* NULL when i is not a tensor userdata */
/* Push t (owned) with the tensor metatable at stack index mt (the op trampoline's fast path). */
void gm_lua_push_tensor_mt(lua_State *L, gm_tensor *t, int mt);
/* GM_OK: push t (owned); else raise the context's error. */
int gm_lua_push_result(lua_State *L, gm_status st, gm_tensor *t);
/* Push element i (flat, row-major) of x: an integer for i32, else a number. */
void gm_lua_push_number(lua_State *L, const gm_tensor *x, int64_t i);
/* Count bytes of new tensor storage toward the next garbage-collection step (lgmoe.c). */
void gm_lua_account(lua_State *L, size_t bytes);

/* ---- reading arguments (errors name fn or op and the argument) ---------------------------- */
void gm_lua_push_shape(lua_State *L, int ndim, const int64_t *shape);
/* A shape: an array table at i, or integers from i on. Returns the next argument index. */
int gm_lua_read_shape(lua_State *L, int i, int *ndim, int64_t *shape, const char *fn);
int gm_lua_argerr(lua_State *L, const char *op, int arg, const char *name, const char *want);
lua_Integer gm_lua_get_int(lua_State *L, int i, const char *op, const char *name);
bool gm_lua_get_bool(lua_State *L, int i, const char *op, const char *name);
/* A table at i that is an options table rather than an array argument. */
bool gm_lua_is_options(lua_State *L, int i);

/* Constructor options {dtype=, device=, requires_grad=, generator=} at i. */
typedef struct ctor_opts {
    gm_dtype dtype;
    bool dtype_set, requires_grad;
    gm_generator *gen;
} ctor_opts;
ctor_opts gm_lua_ctor_opts(lua_State *L, int i, gm_dtype def);
/* Push t (owned) after applying requires_grad from the options; raise on st. */
int gm_lua_ctor_finish(lua_State *L, gm_status st, gm_tensor *t, const ctor_opts *o);

/* ---- what each binding file contributes ------------------------------------------------------ */
extern const luaL_Reg gm_lua_tensor_methods[], gm_lua_tensor_fns[], gm_lua_tensor_internal[];
/* The tensor metatable mt: metamethods, __index over methods; registered for gm_lua_push_tensor. */
void gm_lua_tensor_meta(lua_State *L, int mt, int methods);
/* lop.c: one function per op into M (and methods), and gm.ops. */
void gm_lua_ops_bind(lua_State *L, int M, int methods, int mt);
extern const luaL_Reg gm_lua_autograd_methods[], gm_lua_autograd_fns[], gm_lua_autograd_internal[];
extern const luaL_Reg gm_lua_rng_fns[];
void gm_lua_rng_meta(lua_State *L); /* the gm.Generator metatable */
extern const luaL_Reg gm_lua_test_internal[];
void gm_lua_test_meta(lua_State *L); /* the gm.Params metatable of op samples */

#endif
