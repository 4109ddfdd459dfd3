/* lgmoe.h: the Lua side of gmoe's C engine: setting up a lua_State, and the helpers other
 * lua/l*.c binding files share. Only lua/ converts Lua values and raises Lua errors. */
#ifndef GM_LGMOE_H
#define GM_LGMOE_H

#include <lua.h>
#include <lauxlib.h>

#include "gm.h"

/* Preload the embedded Lua modules, require 'gmoe', set the global `gm`. 0 on success, else
 * an error message is on the stack. */
int gm_lua_setup(lua_State *L);
/* A new state with gmoe's small-block allocator (lua/lalloc.c); NULL when out of memory. */
lua_State *gm_lua_newstate(void);
/* Process settings before anything else runs (lua/process.c); may re-exec the program. */
void gm_process_setup(int argc, char **argv);
/* Back to a clean engine state after an error or interrupt at the prompt. */
void gm_lua_reset(lua_State *L);

gm_ctx *gm_lua_ctx(lua_State *L);
gm_tensor *gm_lua_check_tensor(lua_State *L, int i); /* raises on a non-tensor */
gm_tensor *gm_lua_to_tensor(lua_State *L, int i);    /* NULL on a non-tensor */
void gm_lua_push_tensor(lua_State *L, gm_tensor *t); /* takes ownership of one reference */
int gm_lua_error(lua_State *L, gm_status st);        /* raises the context's message */
/* luaL_error positioned at the user's line: the first caller outside gm's Lua modules. */
int gm_lua_errorf(lua_State *L, const char *fmt, ...);
void gm_lua_where(lua_State *L); /* pushes that position ("chunk:line: ", or "") */

int luaopen_gmoe_core(lua_State *L);
void gm_lua_optim_register(lua_State *L); /* lua/loptim.c: into the table on top */
void gm_lua_io_register(lua_State *L);    /* lua/lio.c: file formats, into the table on top */
void gm_lua_stats_register(lua_State *L); /* lua/lstats.c: estimator kernels, likewise */
struct gm_json;
/* lua/lio.c: a parsed JSON value as Lua (objects and arrays as tables, null as nil). */
void gm_lua_push_json(lua_State *L, const struct gm_json *v);

#endif
