/* lio.c: Lua bindings of the file formats (safetensors, .npy): work in progress. */
#include "lgmoe.h"

void gm_lua_io_register(lua_State *L) { (void)L; }
