/* lio.c: Lua bindings of the file formats (core/io.h) into gm._C: st_save, st_load,
 * npy_save, npy_load, and json_decode (the strict header parser, for checkpoint metadata).
 * lua/gmoe/checkpoint.lua builds the public gm.save/gm.load/gm.checkpoint on them. */
#include <string.h>

#include "io.h"
#include "json.h"
#include "lgmoe.h"

/* Scratch arrays owned by Lua (a userdata left on the stack): a raising check leaks nothing. */
static void *scratch(lua_State *L, size_t n, size_t size) {
    return lua_newuserdatauv(L, (n ? n : 1) * size, 0);
}

/* st_save(path, {name = tensor, ...}, {key = string, ...} or nil) */
static int l_st_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    size_t n = 0, nm = 0;
    for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) n++;
    if (lua_istable(L, 3))
        for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1)) nm++;
    const char **names = scratch(L, n, sizeof *names);
    gm_tensor **ts = scratch(L, n, sizeof *ts);
    const char **keys = scratch(L, nm, sizeof *keys), **vals = scratch(L, nm, sizeof *vals);
    size_t i = 0;
    /* The tables keep the strings and tensors alive: borrowed pointers are safe. */
    for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return gm_lua_errorf(L, "save: tensor names must be strings, got a %s key", luaL_typename(L, -2));
        names[i] = lua_tostring(L, -2);
        ts[i] = gm_lua_to_tensor(L, -1);
        if (!ts[i])
            return gm_lua_errorf(L, "save: '%s' is a %s, not a tensor", names[i], luaL_typename(L, -1));
        i++;
    }
    i = 0;
    if (lua_istable(L, 3))
        for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                return gm_lua_errorf(L, "save: metadata must map strings to strings, got %s -> %s",
                                  luaL_typename(L, -2), luaL_typename(L, -1));
            keys[i] = lua_tostring(L, -2);
            vals[i] = lua_tostring(L, -1);
            i++;
        }
    gm_ctx *c = gm_lua_ctx(L);
    gm_status st = gm_safetensors_save(c, path, n, names, ts, nm, keys, vals);
    if (st != GM_OK) return gm_lua_error(L, st);
    return 0;
}

/* A loaded file anchored in a userdata whose __gc frees what has not moved to Lua yet, so
 * that a memory error while building the tables leaks nothing. */
static int st_file_gc(lua_State *L) {
    gm_st_file_free(lua_touserdata(L, 1));
    return 0;
}

/* st_load(path) -> {name = tensor}, {key = string} */
static int l_st_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    gm_st_file *f = lua_newuserdatauv(L, sizeof *f, 0);
    memset(f, 0, sizeof *f);
    if (luaL_newmetatable(L, "gm.st_file")) {
        lua_pushcfunction(L, st_file_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    gm_status st = gm_safetensors_load(gm_lua_ctx(L), path, f);
    if (st != GM_OK) return gm_lua_error(L, st);
    lua_createtable(L, 0, (int)(f->n < 1u << 20 ? f->n : 1u << 20));
    for (size_t i = 0; i < f->n; i++) {
        gm_lua_push_tensor(L, f->tensors[i]);
        f->tensors[i] = NULL; /* owned by the userdata now */
        lua_setfield(L, -2, f->names[i]);
    }
    lua_createtable(L, 0, (int)(f->n_meta < 1u << 20 ? f->n_meta : 1u << 20));
    for (size_t i = 0; i < f->n_meta; i++) {
        lua_pushstring(L, f->meta_vals[i]);
        lua_setfield(L, -2, f->meta_keys[i]);
    }
    gm_st_file_free(f);
    return 2;
}

static int l_npy_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    gm_tensor *x = gm_lua_check_tensor(L, 2);
    gm_status st = gm_npy_save(gm_lua_ctx(L), path, x);
    if (st != GM_OK) return gm_lua_error(L, st);
    return 0;
}

static int l_npy_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    gm_tensor *x = NULL;
    gm_status st = gm_npy_load(gm_lua_ctx(L), path, &x);
    if (st != GM_OK) return gm_lua_error(L, st);
    gm_lua_push_tensor(L, x);
    return 1;
}

/* JSON -> Lua: objects and arrays become tables, integers Lua integers (floats when they do
 * not fit), null nil. */
void gm_lua_push_json(lua_State *L, const gm_json *v) {
    luaL_checkstack(L, 4, "json_decode: nesting");
    switch (v->type) {
    case GM_JSON_NULL: lua_pushnil(L); break;
    case GM_JSON_BOOL: lua_pushboolean(L, v->b); break;
    case GM_JSON_NUM:
        if (!lua_stringtonumber(L, v->str)) lua_pushnumber(L, 0); /* cannot happen: JSON numerals are Lua numerals */
        break;
    case GM_JSON_STR: lua_pushlstring(L, v->str, v->len); break;
    case GM_JSON_ARR:
        lua_createtable(L, (int)v->n, 0);
        for (size_t i = 0; i < v->n; i++) {
            gm_lua_push_json(L, &v->items[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case GM_JSON_OBJ:
        lua_createtable(L, 0, (int)v->n);
        for (size_t i = 0; i < v->n; i++) {
            gm_lua_push_json(L, &v->items[i]);
            lua_setfield(L, -2, v->keys[i]);
        }
        break;
    }
}

/* json_decode(text, what) -> value; what names the source in errors. The tree is anchored in
 * a userdata with a __gc so that a memory error while converting does not leak it. */
static int json_tree_gc(lua_State *L) {
    gm_json **p = lua_touserdata(L, 1);
    gm_json_free(*p);
    *p = NULL;
    return 0;
}

static int l_json_decode(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *what = luaL_optstring(L, 2, "json");
    gm_json **anchor = lua_newuserdatauv(L, sizeof *anchor, 0);
    *anchor = NULL;
    if (luaL_newmetatable(L, "gm.json_tree")) {
        lua_pushcfunction(L, json_tree_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    gm_status st = gm_json_parse(gm_lua_ctx(L), what, text, len, anchor);
    if (st != GM_OK) return gm_lua_error(L, st);
    gm_lua_push_json(L, *anchor);
    gm_json_free(*anchor);
    *anchor = NULL;
    return 1;
}

/* file_kind(path) -> "file" | "directory" | "FIFO (named pipe)" | ... | nil: what path is,
 * without opening it (readers refuse anything but a regular file instead of blocking). */
static int l_file_kind(lua_State *L) {
    const char *k = gm_file_kind(luaL_checkstring(L, 1));
    if (k) lua_pushstring(L, k);
    else lua_pushnil(L);
    return 1;
}

void gm_lua_io_register(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"st_save", l_st_save}, {"st_load", l_st_load}, {"npy_save", l_npy_save},
        {"npy_load", l_npy_load}, {"json_decode", l_json_decode},
        {"file_kind", l_file_kind}, {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
