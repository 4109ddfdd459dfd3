/* repl.h: running Lua chunks the way the gmoe executable does (message handler with traceback,
 * Ctrl-C turned into an "interrupted" error) and the interactive prompt. Used by lua/main.c;
 * implemented in lua/repl.c after lua.c's docall/msghandler/doREPL. */
#ifndef GM_REPL_H
#define GM_REPL_H

#include "lua.h"

/* Calls the function below narg arguments on the stack, like lua_pcall(L, narg, nres, h) with a
 * message handler that appends a traceback; SIGINT during the call raises "interrupted". */
int gm_repl_docall(lua_State *L, int narg, int nres);

/* When status is not LUA_OK, prints the message on top of the stack to stderr (after
 * "prefix: " when prefix is not NULL) and pops it. Returns status. */
int gm_repl_report(lua_State *L, int status, const char *prefix);

/* Reads, evaluates and prints cells until Ctrl-D (or two Ctrl-C in a row at the prompt). */
void gm_repl_run(lua_State *L);

#endif
