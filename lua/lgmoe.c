/* lgmoe.c: the gmoe Lua module's C half ("gmoe.core"): tensor userdata, one trampoline that
 * binds every op of the op table from its signature string, constructors, autograd and RNG
 * entry points. The only place (with the small lua/l*.c files) that converts Lua values and
 * raises Lua errors; errors are raised after the core has released everything. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lualib.h>

#include "backend.h"
#include "lgmoe.h"

/* Per-state data, reached through lua_getextraspace. */
typedef struct lstate {
    gm_ctx *ctx;
    size_t pending; /* tensor bytes created since the last GC step we asked for */
} lstate;

static char TENSOR_MT, PARAMS_MT, CTX_MT;
/* The collector is stepped once the tensor bytes created since the last step exceed both 1 MiB
 * and a quarter of the bytes alive: garbage stays within about a quarter of what is live, and a
 * training step that turns over hundreds of MB asks for a handful of collections, not one per
 * MiB (each is about a full cycle of the Lua heap: a 2-layer LM step spent 10 ms there). */
#define GC_STEP_BYTES ((size_t)1 << 20)
#define GC_LIVE_SHARE 4

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

/* ---- tensor userdata ------------------------------------------------------------------------
 * A tensor userdata is {gm_tensor *, magic}: recognising one needs no metatable lookup, which
 * matters at several checks per op. Only C code could forge the magic; Lua code cannot. */
#define TENSOR_MAGIC 0x676d6f6554656e73ull /* "gmoeTens" */
typedef struct tensor_ud {
    gm_tensor *t;
    uint64_t magic;
} tensor_ud;

static tensor_ud *to_ud(lua_State *L, int i) {
    if (lua_type(L, i) != LUA_TUSERDATA || lua_rawlen(L, i) != sizeof(tensor_ud)) return NULL;
    tensor_ud *u = lua_touserdata(L, i);
    return u->magic == TENSOR_MAGIC ? u : NULL;
}

gm_tensor *gm_lua_to_tensor(lua_State *L, int i) {
    tensor_ud *u = to_ud(L, i);
    return u ? u->t : NULL;
}

gm_tensor *gm_lua_check_tensor(lua_State *L, int i) {
    tensor_ud *u = to_ud(L, i);
    if (u && u->t) return u->t;
    if (u) gm_lua_errorf(L, "tensor was closed (used after <close>)");
    luaL_typeerror(L, i, "tensor");
    return NULL;
}

/* Push t (owned); the tensor metatable is at stack index mt. */
static void push_tensor_mt(lua_State *L, gm_tensor *t, int mt) {
    tensor_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->t = t;
    u->magic = TENSOR_MAGIC;
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
    /* Tell the collector about tensor bytes so loops stay bounded without collectgarbage(). */
    if (t->storage->refcount == 1) {
        lstate *s = lstate_of(L);
        /* data plus the allocator header and the tensor and storage structs: counting data
         * alone lets small tensors pile up between collections, draining the engine's pools */
        s->pending += t->storage->nbytes + 64 + sizeof(gm_tensor) + sizeof(gm_storage);
        if (s->pending > GC_STEP_BYTES && s->pending > gm_ctx_live_bytes(s->ctx) / GC_LIVE_SHARE) {
            int kb = (int)(s->pending >> 10);
            s->pending = 0;
            lua_gc(L, LUA_GCSTEP, kb);
        }
    }
}

void gm_lua_push_tensor(lua_State *L, gm_tensor *t) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &TENSOR_MT);
    push_tensor_mt(L, t, lua_gettop(L));
    lua_remove(L, -2);
}

static int t_gc(lua_State *L) {
    tensor_ud *u = to_ud(L, 1);
    if (u && u->t) {
        gm_tensor_release(u->t);
        u->t = NULL;
    }
    return 0;
}

static void push_shape(lua_State *L, int ndim, const int64_t *shape) {
    lua_createtable(L, ndim, 0);
    for (int i = 0; i < ndim; i++) {
        lua_pushinteger(L, shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* Read a shape: an array table at i, or integers from i on. Returns the next argument index. */
static int read_shape(lua_State *L, int i, int *ndim, int64_t *shape, const char *fn) {
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

/* ---- signatures: the Lua argument list of each op, compiled once ----------------------------- */
enum {
    A_TENSOR, A_TENSORS, A_DIM, A_DIM1, A_DIMS, A_KEEPDIM, A_K, A_N, A_START, A_LENGTH, A_INDEX,
    A_A, A_B, A_LARGEST, A_SORTED, A_UNBIASED, A_IGNORE, A_REDUCTION, A_SHAPE, A_DTYPE
};
static const char *const param_names[] = {
    "", "tensors", "dim", "dim1", "dims", "keepdim", "k", "n", "start", "length", "index",
    "a", "b", "largest", "sorted", "unbiased", "ignore_index", "reduction", "shape", "dtype", NULL
};

#define MAX_TOK 10
typedef struct sigtok {
    unsigned char kind;
    bool opt;
    char name[16];
} sigtok;
static sigtok sigs[GM_OP_COUNT][MAX_TOK];
static int nsig[GM_OP_COUNT];

/* A token is "name", "name?" or "name:param?" (a Lua-facing name for one of param_names,
 * e.g. "label_smoothing:a?"): the name is what errors and options tables use. */
static void compile_sigs(void) {
    for (int op = 0; op < GM_OP_COUNT; op++) {
        const char *s = gm_opdef_get(op)->sig;
        int n = 0;
        while (*s && n < MAX_TOK) {
            while (*s == ' ') s++;
            size_t len = strcspn(s, " ");
            if (!len) break;
            sigtok *t = &sigs[op][n++];
            t->opt = s[len - 1] == '?';
            size_t body = len - t->opt, colon = strcspn(s, ":");
            size_t nl = colon < body ? colon : body;
            if (nl > sizeof t->name - 1) nl = sizeof t->name - 1;
            memcpy(t->name, s, nl);
            t->name[nl] = 0;
            char kind[16];
            size_t kl = colon < body ? body - colon - 1 : nl;
            if (kl > sizeof kind - 1) kl = sizeof kind - 1;
            memcpy(kind, colon < body ? s + colon + 1 : s, kl);
            kind[kl] = 0;
            t->kind = A_TENSOR;
            for (int k = 1; param_names[k]; k++)
                if (strcmp(kind, param_names[k]) == 0) t->kind = (unsigned char)k;
            s += len;
        }
        nsig[op] = n;
    }
}

/* Every key of the options table at index opts must name a token from `first` on. */
static void check_options(lua_State *L, int opts, const sigtok *toks, int first, int ntok, const char *op) {
    lua_pushnil(L);
    while (lua_next(L, opts)) {
        bool known = false;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (int k = first; k < ntok && !known; k++) known = strcmp(lua_tostring(L, -2), toks[k].name) == 0;
        if (!known) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int k = first; k < ntok; k++) {
                if (toks[k].kind == A_TENSOR || toks[k].kind == A_TENSORS) continue;
                luaL_addstring(&b, k > first ? ", " : "");
                luaL_addstring(&b, toks[k].name);
            }
            luaL_pushresult(&b);
            gm_lua_errorf(L, "%s: unknown option '%s' (options here: %s)", op,
                       lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : luaL_typename(L, -3), lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
}

static int argerr(lua_State *L, const char *op, int arg, const char *name, const char *want) {
    return gm_lua_errorf(L, "%s: argument %d (%s): expected %s, got %s", op, arg, name, want,
                      luaL_typename(L, arg));
}

static lua_Integer get_int(lua_State *L, int i, const char *op, const char *name) {
    int ok;
    lua_Integer v = lua_tointegerx(L, i, &ok);
    if (!ok) argerr(L, op, i, name, "an integer");
    return v;
}

static bool get_bool(lua_State *L, int i, const char *op, const char *name) {
    if (!lua_isboolean(L, i)) argerr(L, op, i, name, "a boolean");
    return lua_toboolean(L, i);
}

/* A table at i that is an options table rather than an array argument. */
static bool is_options(lua_State *L, int i) {
    if (lua_type(L, i) != LUA_TTABLE) return false;
    bool arr = lua_rawgeti(L, i, 1) != LUA_TNIL;
    lua_pop(L, 1);
    return !arr;
}

/* Store the value at stack index i into params field of token t (non-tensor kinds). */
static void read_param(lua_State *L, int i, const sigtok *t, gm_params *p, const char *op) {
    switch (t->kind) {
    case A_DIM: p->dim = (int)get_int(L, i, op, t->name); p->has_dim = true; break;
    case A_DIM1: p->dim1 = (int)get_int(L, i, op, t->name); break;
    case A_DIMS:
        if (lua_type(L, i) == LUA_TNUMBER) {
            p->ndims = 1;
            p->dims[0] = (int)get_int(L, i, op, t->name);
        } else if (lua_istable(L, i)) {
            int n = (int)lua_rawlen(L, i);
            if (n > GM_MAX_DIMS) gm_lua_errorf(L, "%s: too many dims (%d)", op, n);
            p->ndims = n;
            for (int k = 0; k < n; k++) {
                lua_rawgeti(L, i, k + 1);
                int ok;
                p->dims[k] = (int)lua_tointegerx(L, -1, &ok);
                if (!ok) gm_lua_errorf(L, "%s: dims entry %d is not an integer", op, k + 1);
                lua_pop(L, 1);
            }
        } else {
            argerr(L, op, i, t->name, "an integer or an array of integers");
        }
        break;
    case A_KEEPDIM: p->keepdim = get_bool(L, i, op, t->name); break;
    case A_LARGEST: p->largest = get_bool(L, i, op, t->name); break;
    case A_SORTED: p->sorted = get_bool(L, i, op, t->name); break;
    case A_UNBIASED: p->unbiased = get_bool(L, i, op, t->name); break;
    case A_K: p->k = get_int(L, i, op, t->name); break;
    case A_N: p->n = get_int(L, i, op, t->name); break;
    case A_START: p->start = get_int(L, i, op, t->name); break;
    case A_LENGTH: p->length = get_int(L, i, op, t->name); break;
    case A_INDEX: p->index = get_int(L, i, op, t->name); break;
    case A_IGNORE: p->ignore_index = get_int(L, i, op, t->name); break;
    case A_A:
    case A_B: {
        if (lua_type(L, i) != LUA_TNUMBER) argerr(L, op, i, t->name, "a number");
        double v = lua_tonumber(L, i);
        if (t->kind == A_A) p->a = v, p->has_a = true;
        else p->b = v, p->has_b = true;
        break;
    }
    case A_REDUCTION: {
        const char *s = lua_tostring(L, i);
        if (lua_type(L, i) != LUA_TSTRING) argerr(L, op, i, t->name, "\"mean\", \"sum\" or \"none\"");
        if (!strcmp(s, "mean")) p->reduction = GM_RED_MEAN;
        else if (!strcmp(s, "sum")) p->reduction = GM_RED_SUM;
        else if (!strcmp(s, "none")) p->reduction = GM_RED_NONE;
        else gm_lua_errorf(L, "%s: reduction must be \"mean\", \"sum\" or \"none\", got \"%s\"", op, s);
        break;
    }
    case A_DTYPE: {
        const char *s = lua_tostring(L, i);
        if (lua_type(L, i) != LUA_TSTRING) argerr(L, op, i, t->name, "a dtype name");
        if (!gm_dtype_parse(s, &p->dtype))
            gm_lua_errorf(L, "%s: unknown dtype \"%s\" (expected \"f32\", \"f64\" or \"i32\")", op, s);
        break;
    }
    case A_SHAPE: {
        int nd;
        read_shape(L, i, &nd, p->shape, op);
        p->nshape = nd;
        break;
    }
    default: break;
    }
}

/* The trampoline behind every op: upvalue 1 is the op id. Parses the arguments with the op's
 * signature, turns numbers in tensor positions into 0-dim tensors of the first tensor's dtype,
 * calls gm_op and pushes the outputs. */
static int op_call(lua_State *L) {
    int op = (int)lua_tointeger(L, lua_upvalueindex(1));
    const gm_opdef *d = gm_opdef_get(op);
    const sigtok *toks = sigs[op];
    int top = lua_gettop(L), arg = 1, opts = 0, nin = 0, list = 0;
    int tpos[GM_MAX_IN];
    gm_tensor *ins[GM_MAX_IN], **inp = ins, *tmp[GM_MAX_IN] = {0};
    gm_params p;
    gm_params_init(&p);
    for (int k = 0; k < nsig[op]; k++) {
        const sigtok *t = &toks[k];
        if (opts) {
            if (t->kind == A_TENSOR || t->kind == A_TENSORS) gm_lua_errorf(L, "%s: missing tensor argument '%s'", d->name, t->name);
            if (lua_getfield(L, opts, t->name) != LUA_TNIL) read_param(L, lua_gettop(L), t, &p, d->name);
            else if (!t->opt) gm_lua_errorf(L, "%s: missing argument '%s'", d->name, t->name);
            lua_pop(L, 1);
            continue;
        }
        if (arg > top || lua_isnil(L, arg)) {
            if (!t->opt) gm_lua_errorf(L, "%s: missing argument %d (%s)", d->name, arg, t->name);
            arg++;
            continue;
        }
        if (t->kind == A_TENSOR) {
            ins[nin] = gm_lua_to_tensor(L, arg);
            if (!ins[nin] && to_ud(L, arg)) gm_lua_errorf(L, "%s: argument %d (%s): tensor was closed (used after <close>)", d->name, arg, t->name);
            if (!ins[nin] && lua_type(L, arg) != LUA_TNUMBER)
                argerr(L, d->name, arg, t->name, "a tensor or a number");
            tpos[nin++] = arg++;
            continue;
        }
        if (t->kind == A_TENSORS) {
            if (!lua_istable(L, arg)) argerr(L, d->name, arg, t->name, "an array of tensors");
            list = arg++;
            continue;
        }
        if (t->opt && is_options(L, arg)) {
            opts = arg++;
            check_options(L, opts, toks, k, nsig[op], d->name);
            k--; /* read this token from the options table */
            continue;
        }
        read_param(L, arg, t, &p, d->name);
        if (t->kind == A_SHAPE && lua_type(L, arg) == LUA_TNUMBER) {
            int nd;
            arg = read_shape(L, arg, &nd, p.shape, d->name);
        } else {
            arg++;
        }
    }
    for (; arg <= top; arg++)
        if (!lua_isnil(L, arg)) gm_lua_errorf(L, "%s: unexpected argument %d (%s)", d->name, arg, luaL_typename(L, arg));

    /* Gather tensors: nothing below raises until every temporary is released. */
    gm_ctx *c = gm_lua_ctx(L);
    int n = nin;
    if (list) {
        n = (int)lua_rawlen(L, list);
        if (n < 1) gm_lua_errorf(L, "%s: expected a non-empty array of tensors", d->name);
        inp = lua_newuserdatauv(L, sizeof(gm_tensor *) * (size_t)n, 0); /* GC-owned scratch */
        for (int k = 0; k < n; k++) {
            lua_rawgeti(L, list, k + 1);
            inp[k] = gm_lua_to_tensor(L, -1);
            if (!inp[k]) gm_lua_errorf(L, "%s: element %d of the array is not a tensor", d->name, k + 1);
            lua_pop(L, 1);
        }
    } else {
        /* Numbers take the dtype of the first float tensor (so where(mask_i32, x, 0) works),
         * else of the first tensor. */
        gm_dtype ref = GM_F32;
        bool have_ref = false;
        for (int k = 0; k < nin; k++) {
            if (ins[k] && (!have_ref || (!gm_dtype_is_float(ref) && gm_dtype_is_float(ins[k]->dtype)))) {
                ref = ins[k]->dtype;
                have_ref = true;
            }
        }
        for (int k = 0; k < nin; k++) {
            if (ins[k]) continue;
            gm_status st = ref == GM_I32 ? gm_check_i32(c, d->name, lua_tonumber(L, tpos[k])) : GM_OK;
            if (st == GM_OK) st = gm_tensor_scalar(c, ref, lua_tonumber(L, tpos[k]), &tmp[k]);
            if (st != GM_OK) {
                for (int j = 0; j < k; j++) gm_tensor_release(tmp[j]);
                return gm_lua_error(L, st);
            }
            ins[k] = tmp[k];
        }
    }
    gm_tensor *out[GM_MAX_OUT] = {0};
    gm_status st = gm_op(c, op, n, inp, &p, out);
    for (int k = 0; k < nin; k++) gm_tensor_release(tmp[k]);
    if (st != GM_OK) return gm_lua_error(L, st);
    for (int k = 0; k < d->n_out; k++) push_tensor_mt(L, out[k], lua_upvalueindex(2));
    return d->n_out;
}

static int t_unm(lua_State *L) {
    gm_ctx *c = gm_lua_ctx(L);
    gm_tensor *x = gm_lua_check_tensor(L, 1), *y;
    gm_status st = gm_neg(c, x, &y);
    if (st != GM_OK) return gm_lua_error(L, st);
    gm_lua_push_tensor(L, y);
    return 1;
}

/* ---- tensor methods and fields ---------------------------------------------------------------- */
static int push_status(lua_State *L, gm_status st, gm_tensor *t) {
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
    return push_status(L, st, y);
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
    if (!strcmp(k, "shape")) push_shape(L, x->ndim, x->shape);
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
        p.index = get_int(L, 2, "setindex", "index");
        gm_tensor *v, *src = gm_lua_to_tensor(L, 3);
        if (!src && lua_type(L, 3) != LUA_TNUMBER) return argerr(L, "setindex", 3, "value", "a number or a tensor");
        if (x->requires_grad && gm_grad_enabled(c))
            return gm_lua_errorf(L, "setindex: in-place write into a tensor that requires grad (wrap it in gm.no_grad or detach it first)");
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
        push_shape(L, x->ndim, x->shape);
        return 1;
    }
    int d;
    if (x->ndim == 0) return gm_lua_errorf(L, "size: a 0-dim tensor has no dims");
    if (gm_dim_norm(gm_lua_ctx(L), "size", (int)get_int(L, 2, "size", "dim"), x->ndim, &d) != GM_OK)
        return gm_lua_error(L, GM_EINDEX);
    lua_pushinteger(L, x->shape[d]);
    return 1;
}

static int t_stride(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    push_shape(L, x->ndim, x->stride);
    return 1;
}

static int t_is_contiguous(lua_State *L) {
    lua_pushboolean(L, gm_tensor_is_contiguous(gm_lua_check_tensor(L, 1)));
    return 1;
}

static void push_number(lua_State *L, const gm_tensor *x, int64_t i) {
    double v = gm_tensor_get_flat(x, i);
    if (x->dtype == GM_I32) lua_pushinteger(L, (lua_Integer)v);
    else lua_pushnumber(L, v);
}

static int t_item(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    int64_t n = gm_tensor_numel(x);
    if (n != 1) return gm_lua_errorf(L, "item: tensor with %I elements (only one-element tensors have an item)", (lua_Integer)n);
    push_number(L, x, 0);
    return 1;
}

static void totable_rec(lua_State *L, const gm_tensor *x, int d, int64_t base) {
    if (d == x->ndim) {
        push_number(L, x, base);
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

static int t_backward(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    gm_tensor *g = lua_isnoneornil(L, 2) ? NULL : gm_lua_check_tensor(L, 2);
    bool retain = false;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "retain_graph");
        retain = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    gm_status st = gm_backward(gm_lua_ctx(L), x, g, retain);
    if (st != GM_OK) return gm_lua_error(L, st);
    return 0;
}

static int t_requires_grad_(lua_State *L) {
    gm_tensor *x = gm_lua_check_tensor(L, 1);
    bool on = lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2);
    gm_status st = gm_tensor_set_requires_grad(gm_lua_ctx(L), x, on);
    if (st != GM_OK) return gm_lua_error(L, st);
    lua_settop(L, 1);
    return 1;
}

static int t_detach(lua_State *L) {
    gm_tensor *y;
    gm_status st = gm_tensor_detach(gm_lua_ctx(L), gm_lua_check_tensor(L, 1), &y);
    return push_status(L, st, y);
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

static const luaL_Reg tensor_methods[] = {
    {"dim", t_dim}, {"numel", t_numel}, {"size", t_size}, {"stride", t_stride},
    {"is_contiguous", t_is_contiguous}, {"item", t_item}, {"totable", t_totable},
    {"backward", t_backward}, {"requires_grad_", t_requires_grad_}, {"detach", t_detach},
    {"fill_", t_fill_}, {"zero_", t_zero_}, {"copy_", t_copy_}, {"data_ptr", t_data_ptr},
    {NULL, NULL}
};

/* ---- constructors ----------------------------------------------------------------------------- */
typedef struct ctor_opts {
    gm_dtype dtype;
    bool dtype_set, requires_grad;
    gm_generator *gen;
} ctor_opts;

static ctor_opts read_opts(lua_State *L, int i, gm_dtype def) {
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
static int finish(lua_State *L, gm_status st, gm_tensor *t, const ctor_opts *o) {
    gm_ctx *c = gm_lua_ctx(L);
    if (st == GM_OK && o->requires_grad && (st = gm_tensor_set_requires_grad(c, t, true)) != GM_OK)
        gm_tensor_release(t);
    return push_status(L, st, t);
}

/* zeros/ones(shape, opts) and full(shape, value, opts) */
static int l_full_impl(lua_State *L, const char *fn, bool value_arg, double value) {
    int nd;
    int64_t shape[GM_MAX_DIMS];
    int next = read_shape(L, 1, &nd, shape, fn);
    if (value_arg) {
        if (lua_type(L, next) != LUA_TNUMBER)
            return gm_lua_errorf(L, "full: expected a number as the fill value, got %s", luaL_typename(L, next));
        value = lua_tonumber(L, next++);
    }
    ctor_opts o = read_opts(L, next, GM_F32);
    if (o.dtype == GM_I32 && gm_check_i32(gm_lua_ctx(L), "full", value) != GM_OK) return gm_lua_error(L, GM_EARG);
    gm_tensor *t;
    gm_status st = gm_tensor_full(gm_lua_ctx(L), o.dtype, GM_CPU, nd, shape, value, &t);
    return finish(L, st, t, &o);
}

static int l_zeros(lua_State *L) { return l_full_impl(L, "zeros", false, 0); }
static int l_ones(lua_State *L) { return l_full_impl(L, "ones", false, 1); }
static int l_full(lua_State *L) { return l_full_impl(L, "full", true, 0); }

static int l_empty(lua_State *L) {
    int nd;
    int64_t shape[GM_MAX_DIMS];
    int next = read_shape(L, 1, &nd, shape, "empty");
    ctor_opts o = read_opts(L, next, GM_F32);
    gm_tensor *t;
    gm_status st = gm_tensor_new(gm_lua_ctx(L), o.dtype, GM_CPU, nd, shape, &t);
    return finish(L, st, t, &o);
}

static int rand_impl(lua_State *L, int shape_at, gm_rand_kind kind, double a, double b, gm_dtype def) {
    int nd;
    int64_t shape[GM_MAX_DIMS];
    int next = read_shape(L, shape_at, &nd, shape, "rand");
    ctor_opts o = read_opts(L, next, def);
    gm_ctx *c = gm_lua_ctx(L);
    gm_tensor *t;
    gm_status st = gm_tensor_new(c, o.dtype, GM_CPU, nd, shape, &t);
    if (st == GM_OK && (st = gm_rand_fill(c, t, kind, a, b, o.gen)) != GM_OK) gm_tensor_release(t);
    return finish(L, st, t, &o);
}

static int l_rand(lua_State *L) { return rand_impl(L, 1, GM_RAND_UNIFORM, 0, 1, GM_F32); }
static int l_randn(lua_State *L) { return rand_impl(L, 1, GM_RAND_NORMAL, 0, 1, GM_F32); }

/* randint(high, shape) or randint(low, high, shape): integers in [low, high), i32 by default. */
static int l_randint(lua_State *L) {
    lua_Integer lo = 0, hi;
    int at;
    if (lua_type(L, 2) == LUA_TNUMBER && lua_type(L, 3) != LUA_TNONE && !is_options(L, 3)) {
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
    ctor_opts o = read_opts(L, 2, GM_I32);
    if (n < 0) return gm_lua_errorf(L, "randperm: n must be >= 0, got %d", (int)n);
    gm_tensor *t;
    gm_status st = gm_randperm(gm_lua_ctx(L), n, o.dtype, o.gen, &t);
    return finish(L, st, t, &o);
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
    ctor_opts o = read_opts(L, nnum + 1, ints ? GM_I32 : GM_F32);
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
    return finish(L, st, t, &o);
}

static int l_linspace(lua_State *L) {
    double a = luaL_checknumber(L, 1), b = luaL_checknumber(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    ctor_opts o = read_opts(L, 4, GM_F32);
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
    return finish(L, st, t, &o);
}

static int l_eye(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    int at = 2;
    lua_Integer m = n;
    if (lua_type(L, 2) == LUA_TNUMBER) m = luaL_checkinteger(L, at++);
    ctor_opts o = read_opts(L, at, GM_F32);
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
    return finish(L, st, t, &o);
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
    ctor_opts o = read_opts(L, 2, src ? src->dtype : GM_F32);
    gm_tensor *t;
    gm_status st;
    if (src) {
        st = gm_tensor_new(c, o.dtype, gm_tensor_device(src), src->ndim, src->shape, &t);
        gm_grad_push(c, false);
        if (st == GM_OK && (st = gm_tensor_copy_(c, t, src)) != GM_OK) gm_tensor_release(t);
        gm_grad_pop(c);
        return finish(L, st, t, &o);
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

/* ---- generators --------------------------------------------------------------------------- */
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

/* ---- module functions ------------------------------------------------------------------------ */
static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, gm_lua_to_tensor(L, 1) != NULL);
    return 1;
}

static int l_grad_push(lua_State *L) {
    gm_grad_push(gm_lua_ctx(L), lua_toboolean(L, 1));
    return 0;
}
static int l_grad_pop(lua_State *L) {
    gm_grad_pop(gm_lua_ctx(L));
    return 0;
}
static int l_is_grad_enabled(lua_State *L) {
    lua_pushboolean(L, gm_grad_enabled(gm_lua_ctx(L)));
    return 1;
}

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
    if (n <= 0 && gm_backend_cpu.max_threads) n = gm_backend_cpu.max_threads();
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

/* gm.ops(): the op table as Lua records. */
static int l_ops(lua_State *L) {
    lua_createtable(L, GM_OP_COUNT, 0);
    for (int i = 0; i < GM_OP_COUNT; i++) {
        const gm_opdef *d = gm_opdef_get(i);
        lua_createtable(L, 0, 8);
        lua_pushstring(L, d->name); lua_setfield(L, -2, "name");
        lua_pushstring(L, d->sig); lua_setfield(L, -2, "sig");
        lua_pushstring(L, d->doc); lua_setfield(L, -2, "doc");
        lua_pushinteger(L, d->n_in); lua_setfield(L, -2, "n_in");
        lua_pushinteger(L, d->n_out); lua_setfield(L, -2, "n_out");
        lua_pushboolean(L, d->flags & GM_F_NODIFF); lua_setfield(L, -2, "nodiff");
        lua_pushboolean(L, d->flags & GM_F_VIEW); lua_setfield(L, -2, "view");
        lua_pushboolean(L, d->flags & GM_F_VARIADIC); lua_setfield(L, -2, "variadic");
        lua_pushboolean(L, d->rules->backward != NULL); lua_setfield(L, -2, "has_backward");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* ---- test hooks: op samples and bad calls from the op table, raw element access ------------- */
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
    push_number(L, x, i);
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

static const luaL_Reg module_fns[] = {
    {"tensor", l_tensor}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full}, {"empty", l_empty},
    {"rand", l_rand}, {"randn", l_randn}, {"randint", l_randint}, {"randperm", l_randperm},
    {"arange", l_arange}, {"linspace", l_linspace}, {"eye", l_eye},
    {"Generator", g_new}, {"manual_seed", l_manual_seed}, {"get_rng_state", l_get_rng_state},
    {"set_rng_state", l_set_rng_state}, {"is_tensor", l_is_tensor},
    {"is_grad_enabled", l_is_grad_enabled}, {"set_num_threads", l_set_num_threads},
    {"get_num_threads", l_get_num_threads}, {"live_bytes", l_live_bytes}, {"blas_info", l_blas_info},
    {"ops", l_ops}, {"clock", l_clock}, {"_kprof", l_kprof}, {NULL, NULL}
};

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

static const luaL_Reg internal_fns[] = {
    {"grad_push", l_grad_push}, {"grad_pop", l_grad_pop}, {"op_sample", l_op_sample},
    {"op_bad", l_op_bad}, {"op_call", l_op_call}, {"flat_get", l_flat_get}, {"flat_set", l_flat_set},
    {"interrupted", l_interrupted}, {"from_bytes", l_from_bytes}, {NULL, NULL}
};

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
        compile_sigs();
    }
    luaL_newlib(L, module_fns);            /* M */
    int M = lua_gettop(L);

    /* tensor metatable with its method table as __index upvalue */
    lua_newtable(L);                       /* mt */
    int mt = lua_gettop(L);
    lua_pushliteral(L, "gm.Tensor");
    lua_setfield(L, mt, "__name");
    luaL_newlib(L, tensor_methods);        /* methods */
    int methods = lua_gettop(L);
    for (int op = 0; op < GM_OP_COUNT; op++) {
        const gm_opdef *d = gm_opdef_get(op);
        lua_pushinteger(L, op);
        lua_pushvalue(L, mt);
        lua_pushcclosure(L, op_call, 2);
        if (!(d->flags & GM_F_NOMETHOD)) {
            lua_pushvalue(L, -1);
            lua_setfield(L, methods, d->name);
        }
        lua_setfield(L, M, d->name);
    }
    static const struct { const char *meta, *op; } arith[] = {
        {"__add", "add"}, {"__sub", "sub"}, {"__mul", "mul"}, {"__div", "div"}, {"__pow", "pow"},
    };
    for (size_t i = 0; i < sizeof arith / sizeof arith[0]; i++) {
        lua_getfield(L, M, arith[i].op);
        lua_setfield(L, mt, arith[i].meta);
    }
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
    lua_setfield(L, M, "Tensor");          /* gm.Tensor = methods (add methods from Lua) */
    lua_pop(L, 1);                         /* mt */

    if (luaL_newmetatable(L, "gm.Generator")) {
        static const luaL_Reg gen_methods[] = {
            {"manual_seed", g_manual_seed}, {"get_state", g_get_state}, {"set_state", g_set_state}, {NULL, NULL}
        };
        luaL_newlib(L, gen_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, g_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newmetatable(L, "gm.Params");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &PARAMS_MT);

    luaL_newlib(L, internal_fns);
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
