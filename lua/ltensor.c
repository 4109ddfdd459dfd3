/* ltensor.c: the tensor binding of gmoe.core: the userdata (a gm_tensor and a magic word),
 * its fields and methods (shape, dtype, item, totable, in-place fill and copy, indexing), the
 * constructors (zeros ... tensor, arange, eye, from_bytes) and the readers of shapes and
 * arguments the other binding files share (lbind.h). */
#include <math.h>
#include <string.h>

#include "lbind.h"

static char TENSOR_MT;

/* ---- tensor userdata ------------------------------------------------------------------------
 * A tensor userdata is {gm_tensor *, magic}: recognising one needs no metatable lookup, which
 * matters at several checks per op. Only C code could forge the magic; Lua code cannot. */
#define TENSOR_MAGIC 0x676d6f6554656e73ull /* "gmoeTens" */

tensor_ud *gm_lua_to_ud(lua_State *L, int i) {
    if (lua_type(L, i) != LUA_TUSERDATA || lua_rawlen(L, i) != sizeof(tensor_ud)) return NULL;
    tensor_ud *u = lua_touserdata(L, i);
    return u->magic == TENSOR_MAGIC ? u : NULL;
}

gm_tensor *gm_lua_to_tensor(lua_State *L, int i) {
    tensor_ud *u = gm_lua_to_ud(L, i);
    return u ? u->t : NULL;
}

gm_tensor *gm_lua_check_tensor(lua_State *L, int i) {
    tensor_ud *u = gm_lua_to_ud(L, i);
    if (u && u->t) return u->t;
    if (u) gm_lua_errorf(L, "tensor was closed (used after <close>)");
    luaL_typeerror(L, i, "tensor");
    return NULL;
}

/* Push t (owned); the tensor metatable is at stack index mt. */
void gm_lua_push_tensor_mt(lua_State *L, gm_tensor *t, int mt) {
    tensor_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->t = t;
    u->magic = TENSOR_MAGIC;
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
    /* A new storage: its data plus the allocator header and the tensor and storage structs
     * (counting data alone lets small tensors pile up between collections, draining the
     * engine's pools). */
    if (t->storage->refcount == 1) gm_lua_account(L, t->storage->nbytes + 64 + sizeof(gm_tensor) + sizeof(gm_storage));
}

void gm_lua_push_tensor(lua_State *L, gm_tensor *t) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &TENSOR_MT);
    gm_lua_push_tensor_mt(L, t, lua_gettop(L));
    lua_remove(L, -2);
}

static int t_gc(lua_State *L) {
    tensor_ud *u = gm_lua_to_ud(L, 1);
    if (u && u->t) {
        gm_tensor_release(u->t);
        u->t = NULL;
    }
    return 0;
}

void gm_lua_push_shape(lua_State *L, int ndim, const int64_t *shape) {
    lua_createtable(L, ndim, 0);
    for (int i = 0; i < ndim; i++) {
        lua_pushinteger(L, shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* Read a shape: an array table at i, or integers from i on. Returns the next argument index. */
int gm_lua_read_shape(lua_State *L, int i, int *ndim, int64_t *shape, const char *fn) {
    int nd = 0;
    if (lua_istable(L, i) && !gm_lua_to_tensor(L, i)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, i);
        if (n > GM_MAX_DIMS) gm_lua_errorf(L, "%s: %d dims (at most %d)", fn, (int)n, GM_MAX_DIMS);
        for (int k = 1; k <= n; k++) {
            lua_rawgeti(L, i, k);
            int ok;
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            if (!ok) gm_lua_errorf(L, "%s: shape entry %d is not an integer", fn, k);
            shape[nd++] = v;
            lua_pop(L, 1);
        }
        *ndim = nd;
        return i + 1;
    }
    if (lua_type(L, i) != LUA_TNUMBER) /* gm.zeros(nil) is a mistake, not a 0-dim tensor ({} is) */
        gm_lua_errorf(L, "%s: expected a shape (a table of sizes, or sizes as integers), got %s", fn, luaL_typename(L, i));
    while (lua_type(L, i) == LUA_TNUMBER) {
        int ok;
        lua_Integer v = lua_tointegerx(L, i, &ok);
        if (!ok) gm_lua_errorf(L, "%s: size %s is not an integer", fn, lua_tostring(L, i));
        if (nd == GM_MAX_DIMS) gm_lua_errorf(L, "%s: more than %d dims", fn, GM_MAX_DIMS);
        shape[nd++] = v;
        i++;
    }
    *ndim = nd;
    return i;
}

/* ---- argument readers ------------------------------------------------------------------------ */
int gm_lua_argerr(lua_State *L, const char *op, int arg, const char *name, const char *want) {
    return gm_lua_errorf(L, "%s: argument %d (%s): expected %s, got %s", op, arg, name, want,
                      luaL_typename(L, arg));
}

lua_Integer gm_lua_get_int(lua_State *L, int i, const char *op, const char *name) {
    int ok;
    lua_Integer v = lua_tointegerx(L, i, &ok);
    if (!ok) gm_lua_argerr(L, op, i, name, "an integer");
    return v;
}

bool gm_lua_get_bool(lua_State *L, int i, const char *op, const char *name) {
    if (!lua_isboolean(L, i)) gm_lua_argerr(L, op, i, name, "a boolean");
    return lua_toboolean(L, i);
}

/* A table at i that is an options table rather than an array argument. */
bool gm_lua_is_options(lua_State *L, int i) {
    if (lua_type(L, i) != LUA_TTABLE) return false;
    bool arr = lua_rawgeti(L, i, 1) != LUA_TNIL;
    lua_pop(L, 1);
    return !arr;
}

/* ---- tensor methods and fields ---------------------------------------------------------------- */
int gm_lua_push_result(lua_State *L, gm_status st, gm_tensor *t) {
    if (st != GM_OK) return gm_lua_error(L, st);
    gm_lua_push_tensor(L, t);
    return 1;
}

static int t_select0(lua_State *L, gm_tensor *x, lua_Integer i) {
    gm_params p;
    gm_params_init(&p);
    p.index = i;
    gm_tensor *y;
    gm_status st = gm_op(gm_lua_ctx(L), GM_OP_SELECT, 1, &x, &p, &y);
    return gm_lua_push_result(L, st, y);
}

static int t_index(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        int ok;
        lua_Integer i = lua_tointegerx(L, 2, &ok);
        if (!ok) return gm_lua_errorf(L, "tensor index must be an integer, got %s", lua_tostring(L, 2));
        return t_select0(L, x, i);
    }
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
    const char *k = lua_tostring(L, 2);
    if (!k) return 1;
    if (!strcmp(k, "shape")) gm_lua_push_shape(L, x->ndim, x->shape);
    else if (!strcmp(k, "dtype")) lua_pushstring(L, gm_dtype_name(x->dtype));
    else if (!strcmp(k, "device")) lua_pushstring(L, gm_device_name(gm_tensor_device(x)));
    else if (!strcmp(k, "requires_grad")) lua_pushboolean(L, x->requires_grad);
    else if (!strcmp(k, "is_leaf")) lua_pushboolean(L, x->grad_fn == NULL);
    else if (!strcmp(k, "ndim")) lua_pushinteger(L, x->ndim);
    else if (!strcmp(k, "grad_fn")) {
        if (x->grad_fn) lua_pushstring(L, gm_opdef_get(x->grad_fn->op)->name);
        else lua_pushnil(L);
    } else if (!strcmp(k, "grad")) {
        if (x->grad) gm_lua_push_tensor(L, gm_tensor_retain(x->grad));
        else lua_pushnil(L);
    } else lua_pushnil(L);
    return 1;
}

static int t_newindex(lua_State *L) {
    gm_ctx *c = gm_lua_ctx(L);
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    gm_status st = GM_OK;
    if (lua_type(L, 2) == LUA_TNUMBER) { /* x[i] = value or tensor */
        gm_params p;
        gm_params_init(&p);
        p.index = gm_lua_get_int(L, 2, "setindex", "index");
        gm_tensor *v, *src = gm_lua_to_tensor(L, 3);
        if (!src && lua_type(L, 3) != LUA_TNUMBER) return gm_lua_argerr(L, "setindex", 3, "value", "a number or a tensor");
        if ((st = gm_tensor_check_inplace(c, "setindex", x)) != GM_OK) return gm_lua_error(L, st);
        gm_grad_push(c, false); /* the view itself needs no graph */
        st = gm_op(c, GM_OP_SELECT, 1, &x, &p, &v);
        gm_grad_pop(c);
        if (st == GM_OK) {
            st = src ? gm_tensor_copy_(c, v, src) : gm_tensor_fill_(c, v, lua_tonumber(L, 3));
            gm_tensor_release(v);
        }
        if (st != GM_OK) return gm_lua_error(L, st);
        return 0;
    }
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "grad")) {
        gm_tensor *g = lua_isnil(L, 3) ? NULL : gm_lua_check_tensor(L, 3);
        if (g && (g->ndim != x->ndim || memcmp(g->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim) || g->dtype != x->dtype))
            return gm_lua_errorf(L, "grad: assigned gradient must have the tensor's shape and dtype");
        gm_tensor_release(x->grad);
        x->grad = gm_tensor_retain(g);
        return 0;
    }
    if (!strcmp(k, "requires_grad")) {
        st = gm_tensor_set_requires_grad(c, x, lua_toboolean(L, 3));
        if (st != GM_OK) return gm_lua_error(L, st);
        return 0;
    }
    return gm_lua_errorf(L, "tensor: cannot set field '%s'", k);
}

static int t_len(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    if (x->ndim == 0) return gm_lua_errorf(L, "len: a 0-dim tensor has no length");
    lua_pushinteger(L, x->shape[0]);
    return 1;
}

static int t_tostring(lua_State *L) {
    gm_lua_check_tensor(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "gmoe.show");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "tensor_str");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

static int t_dim(lua_State *L) {
    lua_pushinteger(L, gm_lua_check_tensor(L, 1)->ndim);
    return 1;
}

static int t_numel(lua_State *L) {
    lua_pushinteger(L, gm_tensor_numel(gm_lua_check_tensor(L, 1)));
    return 1;
}

static int t_size(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) {
        gm_lua_push_shape(L, x->ndim, x->shape);
        return 1;
    }
    int d;
    if (x->ndim == 0) return gm_lua_errorf(L, "size: a 0-dim tensor has no dims");
    if (gm_dim_norm(gm_lua_ctx(L), "size", (int)gm_lua_get_int(L, 2, "size", "dim"), x->ndim, &d) != GM_OK)
        return gm_lua_error(L, GM_EINDEX);
    lua_pushinteger(L, x->shape[d]);
    return 1;
}

static int t_stride(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    gm_lua_push_shape(L, x->ndim, x->stride);
    return 1;
}

static int t_is_contiguous(lua_State *L) {
    lua_pushboolean(L, gm_tensor_is_contiguous(gm_lua_check_tensor(L, 1)));
    return 1;
}

void gm_lua_push_number(lua_State *L, const gm_tensor *x, int64_t i) {
    double v = gm_tensor_get_flat(x, i);
    if (x->dtype == GM_I32) lua_pushinteger(L, (lua_Integer)v);
    else lua_pushnumber(L, v);
}

static int t_item(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    int64_t n = gm_tensor_numel(x);
    if (n != 1) return gm_lua_errorf(L, "item: tensor with %I elements (only one-element tensors have an item)", (lua_Integer)n);
    gm_lua_push_number(L, x, 0);
    return 1;
}

static void totable_rec(lua_State *L, const gm_tensor *x, int d, int64_t base) {
    if (d == x->ndim) {
        gm_lua_push_number(L, x, base);
        return;
    }
    int64_t n = x->shape[d], inner = 1;
    for (int k = d + 1; k < x->ndim; k++) inner *= x->shape[k];
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        totable_rec(L, x, d + 1, base + i * inner);
        lua_rawseti(L, -2, i + 1);
    }
}

static int t_totable(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    luaL_checkstack(L, x->ndim + 4, "totable");
    totable_rec(L, x, 0, 0);
    return 1;
}

static int t_fill_(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    gm_status st = gm_tensor_fill_(gm_lua_ctx(L), x, luaL_checknumber(L, 2));
    if (st != GM_OK) return gm_lua_error(L, st);
    lua_settop(L, 1);
    return 1;
}

static int t_zero_(lua_State *L) {
    lua_settop(L, 1);
    lua_pushinteger(L, 0);
    return t_fill_(L);
}

static int t_copy_(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1), *src = gm_lua_check_tensor(L, 2);
    gm_status st = gm_tensor_copy_(gm_lua_ctx(L), x, src);
    if (st != GM_OK) return gm_lua_error(L, st);
    lua_settop(L, 1);
    return 1;
}

static int t_data_ptr(lua_State *L) {
    lua_pushlightuserdata(L, gm_tensor_data(gm_lua_check_tensor(L, 1)));
    return 1;
}

static int t_unm(lua_State *L) {
    gm_ctx *c = gm_lua_ctx(L);
    gm_tensor *x = gm_lua_check_tensor(L, 1), *y;
    gm_status st = gm_neg(c, x, &y);
    if (st != GM_OK) return gm_lua_error(L, st);
    gm_lua_push_tensor(L, y);
    return 1;
}

const luaL_Reg gm_lua_tensor_methods[] = {
    {"dim", t_dim}, {"numel", t_numel}, {"size", t_size}, {"stride", t_stride},
    {"is_contiguous", t_is_contiguous}, {"item", t_item}, {"totable", t_totable},
    {"fill_", t_fill_}, {"zero_", t_zero_}, {"copy_", t_copy_}, {"data_ptr", t_data_ptr},
    {NULL, NULL}
};

void gm_lua_tensor_meta(lua_State *L, int mt, int methods) {
    lua_pushliteral(L, "gm.Tensor");
    lua_setfield(L, mt, "__name");
    lua_pushcfunction(L, t_unm); lua_setfield(L, mt, "__unm");
    lua_pushcfunction(L, t_gc); lua_setfield(L, mt, "__gc");
    lua_pushcfunction(L, t_gc); lua_setfield(L, mt, "__close");
    lua_pushcfunction(L, t_len); lua_setfield(L, mt, "__len");
    lua_pushcfunction(L, t_tostring); lua_setfield(L, mt, "__tostring");
    lua_pushcfunction(L, t_newindex); lua_setfield(L, mt, "__newindex");
    lua_pushvalue(L, methods);
    lua_pushcclosure(L, t_index, 1);
    lua_setfield(L, mt, "__index");
    lua_pushvalue(L, mt);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &TENSOR_MT);
}

/* ---- constructors ----------------------------------------------------------------------------- */
ctor_opts gm_lua_ctor_opts(lua_State *L, int i, gm_dtype def) {
    ctor_opts o = {def, false, false, NULL};
    if (lua_isnoneornil(L, i)) return o;
    luaL_checktype(L, i, LUA_TTABLE);
    if (lua_getfield(L, i, "dtype") != LUA_TNIL) {
        const char *s = lua_tostring(L, -1);
        if (!s || !gm_dtype_parse(s, &o.dtype))
            gm_lua_errorf(L, "unknown dtype \"%s\" (expected \"f32\", \"f64\" or \"i32\")", s ? s : luaL_typename(L, -1));
        o.dtype_set = true;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, i, "device") != LUA_TNIL) {
        const char *s = lua_tostring(L, -1);
        if (!s || strcmp(s, "cpu") != 0)
            gm_lua_errorf(L, "device \"%s\" is not available (this build has the cpu device only)", s ? s : "?");
    }
    lua_pop(L, 1);
    lua_getfield(L, i, "requires_grad");
    o.requires_grad = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, i, "generator") != LUA_TNIL) o.gen = luaL_checkudata(L, -1, "gm.Generator");
    lua_pop(L, 1);
    return o;
}

/* Push t (owned) after applying requires_grad from the options. */
int gm_lua_ctor_finish(lua_State *L, gm_status st, gm_tensor *t, const ctor_opts *o) {
    gm_ctx *c = gm_lua_ctx(L);
    if (st == GM_OK && o->requires_grad && (st = gm_tensor_set_requires_grad(c, t, true)) != GM_OK)
        gm_tensor_release(t);
    return gm_lua_push_result(L, st, t);
}

/* zeros/ones(shape, opts) and full(shape, value, opts) */
static int l_full_impl(lua_State *L, const char *fn, bool value_arg, double value) {
    int nd;
    int64_t shape[GM_MAX_DIMS];
    int next = gm_lua_read_shape(L, 1, &nd, shape, fn);
    if (value_arg) {
        if (lua_type(L, next) != LUA_TNUMBER)
            return gm_lua_errorf(L, "full: expected a number as the fill value, got %s", luaL_typename(L, next));
        value = lua_tonumber(L, next++);
    }
    ctor_opts o = gm_lua_ctor_opts(L, next, GM_F32);
    if (o.dtype == GM_I32 && gm_check_i32(gm_lua_ctx(L), "full", value) != GM_OK) return gm_lua_error(L, GM_EARG);
    gm_tensor *t;
    gm_status st = gm_tensor_full(gm_lua_ctx(L), o.dtype, GM_CPU, nd, shape, value, &t);
    return gm_lua_ctor_finish(L, st, t, &o);
}

static int l_zeros(lua_State *L) { return l_full_impl(L, "zeros", false, 0); }

static int l_ones(lua_State *L) { return l_full_impl(L, "ones", false, 1); }

static int l_full(lua_State *L) { return l_full_impl(L, "full", true, 0); }

static int l_empty(lua_State *L) {
    int nd;
    int64_t shape[GM_MAX_DIMS];
    int next = gm_lua_read_shape(L, 1, &nd, shape, "empty");
    ctor_opts o = gm_lua_ctor_opts(L, next, GM_F32);
    gm_tensor *t;
    gm_status st = gm_tensor_new(gm_lua_ctx(L), o.dtype, GM_CPU, nd, shape, &t);
    return gm_lua_ctor_finish(L, st, t, &o);
}

/* arange(end) | arange(start, end, step?): i32 when every bound is an integer, else f32. */
static int l_arange(lua_State *L) {
    int nnum = 0;
    while (nnum < 3 && lua_type(L, nnum + 1) == LUA_TNUMBER) nnum++;
    if (nnum == 0) return gm_lua_errorf(L, "arange: expected arange(end) or arange(start, end, step)");
    bool ints = true;
    for (int i = 1; i <= nnum; i++) ints &= lua_isinteger(L, i) != 0;
    double start = nnum >= 2 ? lua_tonumber(L, 1) : 0, end = nnum >= 2 ? lua_tonumber(L, 2) : lua_tonumber(L, 1);
    double step = nnum == 3 ? lua_tonumber(L, 3) : 1;
    ctor_opts o = gm_lua_ctor_opts(L, nnum + 1, ints ? GM_I32 : GM_F32);
    if (step == 0 || !isfinite(step) || !isfinite(start) || !isfinite(end))
        return gm_lua_errorf(L, "arange: bad range (start %f, end %f, step %f)", start, end, step);
    double cnt = ceil((end - start) / step);
    int64_t n = cnt > 0 ? (int64_t)cnt : 0;
    if (o.dtype == GM_I32 && n > 0 && (fmin(start, start + (double)(n - 1) * step) < INT32_MIN ||
                                        fmax(start, start + (double)(n - 1) * step) > INT32_MAX))
        return gm_lua_errorf(L, "arange: values outside the i32 range; pass {dtype=\"f64\"}");
    gm_tensor *t;
    gm_status st = gm_tensor_new(gm_lua_ctx(L), o.dtype, GM_CPU, 1, &n, &t);
    if (st == GM_OK) {
        void *p = gm_tensor_data(t);
        for (int64_t i = 0; i < n; i++) {
            double v = start + (double)i * step;
            gm_elem_store(p, o.dtype, i, v);
        }
    }
    return gm_lua_ctor_finish(L, st, t, &o);
}

static int l_linspace(lua_State *L) {
    double a = luaL_checknumber(L, 1), b = luaL_checknumber(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    ctor_opts o = gm_lua_ctor_opts(L, 4, GM_F32);
    if (n < 0) return gm_lua_errorf(L, "linspace: steps must be >= 0, got %d", (int)n);
    int64_t nn = n;
    gm_tensor *t;
    gm_status st = gm_tensor_new(gm_lua_ctx(L), o.dtype, GM_CPU, 1, &nn, &t);
    if (st == GM_OK) {
        void *p = gm_tensor_data(t);
        for (int64_t i = 0; i < nn; i++) {
            double v = nn == 1 ? a : a + (b - a) * (double)i / (double)(nn - 1);
            gm_elem_store(p, o.dtype, i, v);
        }
    }
    return gm_lua_ctor_finish(L, st, t, &o);
}

static int l_eye(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    int at = 2;
    lua_Integer m = n;
    if (lua_type(L, 2) == LUA_TNUMBER) m = luaL_checkinteger(L, at++);
    ctor_opts o = gm_lua_ctor_opts(L, at, GM_F32);
    if (n < 0 || m < 0) return gm_lua_errorf(L, "eye: sizes must be >= 0");
    int64_t shape[2] = {n, m};
    gm_tensor *t;
    gm_status st = gm_tensor_zeros(gm_lua_ctx(L), o.dtype, GM_CPU, 2, shape, &t);
    if (st == GM_OK) {
        void *p = gm_tensor_data(t);
        for (int64_t i = 0; i < (n < m ? n : m); i++) {
            gm_elem_store(p, o.dtype, i * m + i, 1);
        }
    }
    return gm_lua_ctor_finish(L, st, t, &o);
}

/* gm.tensor(nested tables | number | tensor, opts): f32 unless opts.dtype says otherwise. */
static void infer_shape(lua_State *L, int i, int depth, int *nd, int64_t *shape) {
    if (lua_type(L, i) != LUA_TTABLE) {
        *nd = depth;
        return;
    }
    if (depth == GM_MAX_DIMS) gm_lua_errorf(L, "tensor: nested deeper than %d", GM_MAX_DIMS);
    shape[depth] = (int64_t)lua_rawlen(L, i);
    if (shape[depth] == 0) {
        *nd = depth + 1;
        return;
    }
    lua_rawgeti(L, i, 1);
    infer_shape(L, lua_gettop(L), depth + 1, nd, shape);
    lua_pop(L, 1);
}

static void fill_from(lua_State *L, int i, int d, int nd, const int64_t *shape, gm_tensor *t, int64_t *pos) {
    if (d == nd) {
        double v;
        if (lua_type(L, i) == LUA_TNUMBER) v = lua_tonumber(L, i);
        else if (lua_isboolean(L, i)) v = lua_toboolean(L, i);
        else {
            gm_lua_errorf(L, "tensor: expected a number at element %d, got %s", (int)*pos + 1, luaL_typename(L, i));
            return;
        }
        if (t->dtype == GM_I32 && gm_check_i32(gm_lua_ctx(L), "tensor", v) != GM_OK) gm_lua_error(L, GM_EARG);
        void *p = gm_tensor_data(t);
        gm_elem_store(p, t->dtype, *pos, v);
        (*pos)++;
        return;
    }
    if (lua_type(L, i) != LUA_TTABLE || (int64_t)lua_rawlen(L, i) != shape[d])
        gm_lua_errorf(L, "tensor: ragged nested table (dim %d should have %d entries)", d, (int)shape[d]);
    for (int64_t k = 1; k <= shape[d]; k++) {
        lua_rawgeti(L, i, k);
        fill_from(L, lua_gettop(L), d + 1, nd, shape, t, pos);
        lua_pop(L, 1);
    }
}

static int l_tensor(lua_State *L) {
    gm_ctx *c = gm_lua_ctx(L);
    gm_tensor *src = gm_lua_to_tensor(L, 1);
    ctor_opts o = gm_lua_ctor_opts(L, 2, src ? src->dtype : GM_F32);
    gm_tensor *t;
    gm_status st;
    if (src) {
        st = gm_tensor_new(c, o.dtype, gm_tensor_device(src), src->ndim, src->shape, &t);
        gm_grad_push(c, false);
        if (st == GM_OK && (st = gm_tensor_copy_(c, t, src)) != GM_OK) gm_tensor_release(t);
        gm_grad_pop(c);
        return gm_lua_ctor_finish(L, st, t, &o);
    }
    if (lua_type(L, 1) != LUA_TTABLE && lua_type(L, 1) != LUA_TNUMBER && !lua_isboolean(L, 1))
        return luaL_typeerror(L, 1, "a number or a nested table of numbers");
    int nd = 0;
    int64_t shape[GM_MAX_DIMS];
    infer_shape(L, 1, 0, &nd, shape);
    /* Validate the whole table into a GC-owned scratch tensor first, so a Lua error from a
     * ragged table cannot leak the engine tensor. */
    st = gm_tensor_new(c, o.dtype, GM_CPU, nd, shape, &t);
    if (st != GM_OK) return gm_lua_error(L, st);
    gm_lua_push_tensor(L, t);
    int64_t pos = 0;
    fill_from(L, 1, 0, nd, shape, t, &pos);
    if (o.requires_grad && (st = gm_tensor_set_requires_grad(c, t, true)) != GM_OK) return gm_lua_error(L, st);
    return 1;
}

/* from_bytes(s, i, n, dtype): a 1-D tensor of the n unsigned bytes of string s starting at the
 * 1-based position i (the file readers' fast path; Lua's string.byte would cost ~50 ns a byte). */
static int l_from_bytes(lua_State *L) {
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    lua_Integer i = luaL_checkinteger(L, 2), n = luaL_checkinteger(L, 3);
    gm_dtype t = GM_F32;
    const char *dt = luaL_optstring(L, 4, "f32");
    if (!gm_dtype_parse(dt, &t)) return gm_lua_errorf(L, "from_bytes: unknown dtype \"%s\"", dt);
    if (i < 1 || n < 0 || (size_t)(i - 1) + (size_t)n > len)
        return gm_lua_errorf(L, "from_bytes: bytes %I..%I outside a string of %I", i, i + n - 1, (lua_Integer)len);
    int64_t shape = n;
    gm_tensor *x;
    gm_status st = gm_tensor_new(gm_lua_ctx(L), t, GM_CPU, 1, &shape, &x);
    if (st != GM_OK) return gm_lua_error(L, st);
    void *p = gm_tensor_data(x);
    s += i - 1;
    for (int64_t k = 0; k < shape; k++) {
        gm_elem_store(p, t, k, s[k]);
    }
    gm_lua_push_tensor(L, x);
    return 1;
}

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, gm_lua_to_tensor(L, 1) != NULL);
    return 1;
}

const luaL_Reg gm_lua_tensor_fns[] = {
    {"tensor", l_tensor}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full}, {"empty", l_empty},
    {"arange", l_arange}, {"linspace", l_linspace}, {"eye", l_eye}, {"is_tensor", l_is_tensor},
    {NULL, NULL}
};
const luaL_Reg gm_lua_tensor_internal[] = {{"from_bytes", l_from_bytes}, {NULL, NULL}};
