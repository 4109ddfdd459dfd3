/* repl.h: running Lua chunks the way the gmoe executable does (message handler with traceback,
 * Ctrl-C turned into an "interrupted" error) and the interactive prompt. Used by lua/main.c;
 * implemented in lua/repl.c after lua.c's docall/msghandler/doREPL. */
#ifndef GM_REPL_H
#define GM_REPL_H

#include "lua.h"

/* Calls the function below narg arguments on the stack, like lua_pcall(L, narg, nres, h) with a
 * message handler that appends a traceback; SIGINT or SIGTERM during the call raises
 * "interrupted". */
int gm_repl_docall(lua_State *L, int narg, int nres);

/* The signal (SIGINT, SIGTERM) whose interrupt is pending, or 0: a batch run it stopped exits
 * with 128 + that number, as a shell reports a process ended by it. */
int gm_repl_signal(void);

/* When status is not LUA_OK, prints the message on top of the stack to stderr (after
 * "prefix: " when prefix is not NULL) and pops it. Returns status. */
int gm_repl_report(lua_State *L, int status, const char *prefix);

/* Reads, evaluates and prints numbered cells until Ctrl-D (end of input). Ctrl-C at the prompt
 * discards the line; during a cell it interrupts the cell. Cells are handled by the Lua module
 * gmoe.repl (lua/gmoe/repl.lua). */
void gm_repl_run(lua_State *L);

/* The module gmoe.term (for package.preload): isatty(fd), size() -> cols, rows,
 * chdir(dir) -> true | nil, message, getcwd(), xpcall_held(f, ...) and reraise(signal) (a
 * protected call that reports an interrupt and holds it while the caller records it); and for
 * the Jupyter kernel the REPL's rules: word_start(text, pos) -> start, in_string (the word Tab
 * completes), paths(prefix) (file names, as Tab inside a string), chunk_status(text) ->
 * "complete"|"incomplete"|"invalid". */
int gm_repl_open_term(lua_State *L);

#endif
