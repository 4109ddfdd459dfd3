/* lalloc.c: the lua_State gmoe runs in, with a Lua allocator that recycles small blocks.
 * Every tensor op makes a userdata (and Lua strings, tables and closures come and go); free
 * lists per 16-byte size class keep glibc's malloc/free/consolidate off that path. Blocks
 * above SMALL bytes use realloc. Lua tells the allocator each block's size on free (osize),
 * so no header is needed. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lgmoe.h"

#define SMALL 256
#define NCLS (SMALL / 16)
#define KEEP_MAX 65536 /* free blocks kept per class; more go back to malloc */

typedef struct fblock { struct fblock *next; } fblock;
typedef struct pools {
    fblock *head[NCLS];
    int count[NCLS];
} pools;

static int cls_of(size_t n) { return (int)((n + 15) / 16) - 1; }

static void *small_get(pools *P, size_t n) {
    int k = cls_of(n);
    fblock *b = P->head[k];
    if (!b) return malloc((size_t)(k + 1) * 16);
    P->head[k] = b->next;
    P->count[k]--;
    return b;
}

static void small_put(pools *P, void *ptr, size_t n) {
    int k = cls_of(n);
    if (P->count[k] >= KEEP_MAX) {
        free(ptr);
        return;
    }
    fblock *b = ptr;
    b->next = P->head[k];
    P->head[k] = b;
    P->count[k]++;
}

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    pools *P = ud;
    if (!ptr) osize = 0; /* for new blocks osize is a type tag, not a size */
    if (nsize == 0) {
        if (ptr) {
            if (osize <= SMALL) small_put(P, ptr, osize);
            else free(ptr);
        }
        return NULL;
    }
    if (osize <= SMALL && nsize <= SMALL) {
        if (ptr && cls_of(osize) == cls_of(nsize)) return ptr;
        void *q = small_get(P, nsize);
        if (q && ptr) {
            memcpy(q, ptr, osize < nsize ? osize : nsize);
            small_put(P, ptr, osize);
        }
        return q;
    }
    if (osize > SMALL && nsize > SMALL) return realloc(ptr, nsize);
    void *q = nsize <= SMALL ? small_get(P, nsize) : malloc(nsize);
    if (q && ptr) {
        memcpy(q, ptr, osize < nsize ? osize : nsize);
        if (osize <= SMALL) small_put(P, ptr, osize);
        else free(ptr);
    }
    return q;
}

static int l_panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "gmoe: unprotected error in call to Lua API (%s)\n", msg ? msg : "?");
    return 0;
}

static pools the_pools; /* one state per process */

lua_State *gm_lua_newstate(void) {
    /* Keep freed heap memory mapped: tensors of the same sizes come back every step. */
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    lua_State *L = lua_newstate(l_alloc, &the_pools);
    if (!L) return NULL;
    lua_atpanic(L, l_panic);
    if (!getenv("GMOE_GC_INCREMENTAL")) lua_gc(L, LUA_GCGEN, 0, 0); /* minor collections: lgmoe.c */
    return L;
}
