/* lop.c: the op trampoline of gmoe.core. Every op of the op table becomes one Lua function
 * (and a tensor method unless GM_F_NOMETHOD), a closure over the op id that reads its
 * arguments by the op's signature string (compiled once), turns numbers in tensor positions
 * into 0-dim tensors, calls gm_op and pushes the outputs; and gm.ops() lists the table. */
#include <string.h>

#include "lbind.h"

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

/* Store the value at stack index i into params field of token t (non-tensor kinds). */
static void read_param(lua_State *L, int i, const sigtok *t, gm_params *p, const char *op) {
    switch (t->kind) {
    case A_DIM: p->dim = (int)gm_lua_get_int(L, i, op, t->name); p->has_dim = true; break;
    case A_DIM1: p->dim1 = (int)gm_lua_get_int(L, i, op, t->name); break;
    case A_DIMS:
        if (lua_type(L, i) == LUA_TNUMBER) {
            p->ndims = 1;
            p->dims[0] = (int)gm_lua_get_int(L, i, op, t->name);
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
            gm_lua_argerr(L, op, i, t->name, "an integer or an array of integers");
        }
        break;
    case A_KEEPDIM: p->keepdim = gm_lua_get_bool(L, i, op, t->name); break;
    case A_LARGEST: p->largest = gm_lua_get_bool(L, i, op, t->name); break;
    case A_SORTED: p->sorted = gm_lua_get_bool(L, i, op, t->name); break;
    case A_UNBIASED: p->unbiased = gm_lua_get_bool(L, i, op, t->name); break;
    case A_K: p->k = gm_lua_get_int(L, i, op, t->name); break;
    case A_N: p->n = gm_lua_get_int(L, i, op, t->name); break;
    case A_START: p->start = gm_lua_get_int(L, i, op, t->name); break;
    case A_LENGTH: p->length = gm_lua_get_int(L, i, op, t->name); break;
    case A_INDEX: p->index = gm_lua_get_int(L, i, op, t->name); break;
    case A_IGNORE: p->ignore_index = gm_lua_get_int(L, i, op, t->name); break;
    case A_A:
    case A_B: {
        if (lua_type(L, i) != LUA_TNUMBER) gm_lua_argerr(L, op, i, t->name, "a number");
        double v = lua_tonumber(L, i);
        if (t->kind == A_A) p->a = v, p->has_a = true;
        else p->b = v, p->has_b = true;
        break;
    }
    case A_REDUCTION: {
        const char *s = lua_tostring(L, i);
        if (lua_type(L, i) != LUA_TSTRING) gm_lua_argerr(L, op, i, t->name, "\"mean\", \"sum\" or \"none\"");
        if (!strcmp(s, "mean")) p->reduction = GM_RED_MEAN;
        else if (!strcmp(s, "sum")) p->reduction = GM_RED_SUM;
        else if (!strcmp(s, "none")) p->reduction = GM_RED_NONE;
        else gm_lua_errorf(L, "%s: reduction must be \"mean\", \"sum\" or \"none\", got \"%s\"", op, s);
        break;
    }
    case A_DTYPE: {
        const char *s = lua_tostring(L, i);
        if (lua_type(L, i) != LUA_TSTRING) gm_lua_argerr(L, op, i, t->name, "a dtype name");
        if (!gm_dtype_parse(s, &p->dtype))
            gm_lua_errorf(L, "%s: unknown dtype \"%s\" (expected \"f32\", \"f64\" or \"i32\")", op, s);
        break;
    }
    case A_SHAPE: {
        int nd;
        gm_lua_read_shape(L, i, &nd, p->shape, op);
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
            if (!ins[nin] && gm_lua_to_ud(L, arg)) gm_lua_errorf(L, "%s: argument %d (%s): tensor was closed (used after <close>)", d->name, arg, t->name);
            if (!ins[nin] && lua_type(L, arg) != LUA_TNUMBER)
                gm_lua_argerr(L, d->name, arg, t->name, "a tensor or a number");
            tpos[nin++] = arg++;
            continue;
        }
        if (t->kind == A_TENSORS) {
            if (!lua_istable(L, arg)) gm_lua_argerr(L, d->name, arg, t->name, "an array of tensors");
            list = arg++;
            continue;
        }
        if (t->opt && gm_lua_is_options(L, arg)) {
            opts = arg++;
            check_options(L, opts, toks, k, nsig[op], d->name);
            k--; /* read this token from the options table */
            continue;
        }
        read_param(L, arg, t, &p, d->name);
        if (t->kind == A_SHAPE && lua_type(L, arg) == LUA_TNUMBER) {
            int nd;
            arg = gm_lua_read_shape(L, arg, &nd, p.shape, d->name);
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
    for (int k = 0; k < d->n_out; k++) gm_lua_push_tensor_mt(L, out[k], lua_upvalueindex(2));
    return d->n_out;
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

/* Bind every op into M (and the tensor methods table), each a closure over its id and the
 * tensor metatable at stack index mt. */
void gm_lua_ops_bind(lua_State *L, int M, int methods, int mt) {
    compile_sigs();
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
    lua_pushcfunction(L, l_ops);
    lua_setfield(L, M, "ops");
}
