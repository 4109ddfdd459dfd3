/* safetensors.c: the safetensors format (8-byte little-endian header length N, N bytes of
 * JSON header padded with spaces, then the data section). Loading validates the whole header
 * first (dtypes, shapes, sizes, ranges that tile the data section exactly) and only then
 * allocates and reads; saving writes sorted names and 8-byte aligned data, atomically. */
#include "io.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct { const char *name; gm_ftype ft; } READABLE[] = {
    {"F32", GM_FT_F32}, {"F64", GM_FT_F64}, {"I32", GM_FT_I32},
    {"F16", GM_FT_F16}, {"BF16", GM_FT_BF16}, {"I64", GM_FT_I64},
};
/* Valid safetensors dtypes gmoe has no tensor type for: refused with a "not supported" message
 * rather than "unknown". */
static const char *const UNSUPPORTED[] = {
    "BOOL", "U8", "I8", "U16", "I16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3",
    "F6_E3M2", "F4", "C64",
};

#define NELEMS(a) (sizeof(a) / sizeof *(a))

typedef struct st_ent {
    const char *name; /* borrowed from the JSON tree */
    gm_ftype ft;
    int ndim;
    int64_t shape[GM_MAX_DIMS];
    uint64_t begin, end;
} st_ent;

void gm_st_file_free(gm_st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->names[i]);
        gm_tensor_release(f->tensors[i]);
    }
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->names);
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_vals);
    memset(f, 0, sizeof *f);
}

static void shape_text(const st_ent *e, char *buf, size_t n) { gm_shape_str(e->ndim, e->shape, buf, n); }

static gm_status parse_dtype(gm_ctx *c, const char *what, const char *name, const gm_json *v,
                             gm_ftype *ft) {
    if (!v || v->type != GM_JSON_STR)
        return gm_errf(c, GM_EIO, "%s: tensor '%s': \"dtype\" must be a string", what, name);
    for (size_t i = 0; i < NELEMS(READABLE); i++)
        if (!strcmp(v->str, READABLE[i].name)) { *ft = READABLE[i].ft; return GM_OK; }
    for (size_t i = 0; i < NELEMS(UNSUPPORTED); i++)
        if (!strcmp(v->str, UNSUPPORTED[i]))
            return gm_errf(c, GM_EDTYPE, "%s: tensor '%s': dtype %s is not supported (gmoe reads "
                           "F32 F64 I32 I64 F16 BF16)", what, name, v->str);
    return gm_errf(c, GM_EIO, "%s: tensor '%s': unknown dtype \"%.40s\"", what, name, v->str);
}

/* One header entry {"dtype", "shape", "data_offsets"}: every field present, no others, the
 * byte size implied by dtype and shape (overflow-checked) equal to end - begin. */
static gm_status parse_entry(gm_ctx *c, const char *what, const char *name, const gm_json *v,
                             st_ent *e) {
    if (v->type != GM_JSON_OBJ)
        return gm_errf(c, GM_EIO, "%s: tensor '%s': expected an object, got %s", what, name,
                       gm_json_type_name(v->type));
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], "dtype") && strcmp(v->keys[i], "shape") && strcmp(v->keys[i], "data_offsets"))
            return gm_errf(c, GM_EIO, "%s: tensor '%s': unknown field \"%.40s\"", what, name, v->keys[i]);
    e->name = name;
    gm_status st = parse_dtype(c, what, name, gm_json_get(v, "dtype"), &e->ft);
    if (st != GM_OK) return st;
    const gm_json *sh = gm_json_get(v, "shape"), *of = gm_json_get(v, "data_offsets");
    if (!sh || sh->type != GM_JSON_ARR)
        return gm_errf(c, GM_EIO, "%s: tensor '%s': \"shape\" must be an array of sizes", what, name);
    if (sh->n > GM_MAX_DIMS)
        return gm_errf(c, GM_ESHAPE, "%s: tensor '%s': %zu dims (gmoe tensors have at most %d)",
                       what, name, sh->n, GM_MAX_DIMS);
    uint64_t numel = 1;
    bool overflow = false;
    e->ndim = (int)sh->n;
    for (size_t d = 0; d < sh->n; d++) {
        uint64_t k;
        if (!gm_json_u64(&sh->items[d], &k) || k > (uint64_t)INT64_MAX)
            return gm_errf(c, GM_EIO, "%s: tensor '%s': shape[%zu] is not a size (a non-negative "
                           "integer below 2^63)", what, name, d);
        e->shape[d] = (int64_t)k;
        if (__builtin_mul_overflow(numel, k, &numel)) overflow = true;
    }
    uint64_t bytes;
    char sb[160];
    if (overflow || numel > (uint64_t)INT64_MAX || __builtin_mul_overflow(numel, gm_ftype_size(e->ft), &bytes)) {
        shape_text(e, sb, sizeof sb);
        return gm_errf(c, GM_EIO, "%s: tensor '%s': shape %s overflows 64-bit sizes", what, name, sb);
    }
    if (!of || of->type != GM_JSON_ARR || of->n != 2 || !gm_json_u64(&of->items[0], &e->begin) ||
        !gm_json_u64(&of->items[1], &e->end))
        return gm_errf(c, GM_EIO, "%s: tensor '%s': \"data_offsets\" must be [begin, end] with "
                       "integers in [0, 2^64)", what, name);
    if (e->end < e->begin)
        return gm_errf(c, GM_EIO, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                       what, name, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end - e->begin != bytes) {
        shape_text(e, sb, sizeof sb);
        return gm_errf(c, GM_EIO, "%s: tensor '%s': shape %s of %s needs %llu bytes but "
                       "data_offsets [%llu, %llu] hold %llu", what, name, sb,
                       gm_json_get(v, "dtype")->str, (unsigned long long)bytes,
                       (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)(e->end - e->begin));
    }
    return GM_OK;
}

static int cmp_range(const void *a, const void *b) {
    const st_ent *x = *(st_ent *const *)a, *y = *(st_ent *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* The ranges must tile [0, data_len) exactly: no overlap, no hole, nothing past the end. */
static gm_status check_tiling(gm_ctx *c, const char *what, st_ent *ents, size_t n, uint64_t data_len) {
    st_ent **order = malloc((n ? n : 1) * sizeof *order);
    if (!order) return gm_errf(c, GM_ENOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < n; i++) order[i] = &ents[i];
    qsort(order, n, sizeof *order, cmp_range);
    gm_status st = GM_OK;
    uint64_t at = 0;
    const st_ent *prev = NULL;
    for (size_t i = 0; i < n && st == GM_OK; i++) {
        const st_ent *e = order[i];
        if (e->begin < at)
            st = gm_errf(c, GM_EIO, "%s: tensors '%s' and '%s' overlap (data_offsets [%llu, %llu] "
                         "and [%llu, %llu])", what, prev->name, e->name,
                         (unsigned long long)prev->begin, (unsigned long long)prev->end,
                         (unsigned long long)e->begin, (unsigned long long)e->end);
        else if (e->begin > at)
            st = gm_errf(c, GM_EIO, "%s: a hole in the data section: bytes [%llu, %llu) belong to "
                         "no tensor", what, (unsigned long long)at, (unsigned long long)e->begin);
        else if (e->end > data_len)
            st = gm_errf(c, GM_EIO, "%s: tensor '%s' ends at byte %llu of the data section, which "
                         "has %llu bytes (truncated file?)", what, e->name,
                         (unsigned long long)e->end, (unsigned long long)data_len);
        at = e->end;
        prev = e;
    }
    if (st == GM_OK && at != data_len)
        st = gm_errf(c, GM_EIO, "%s: bytes [%llu, %llu) of the data section belong to no tensor",
                     what, (unsigned long long)at, (unsigned long long)data_len);
    free(order);
    return st;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Header checked and turned into entries; then tensors allocated and read. */
static gm_status st_read(gm_ctx *c, gm_src *s, gm_st_file *out) {
    const char *what = s->what;
    unsigned char len8[8];
    memset(out, 0, sizeof *out);
    if (s->size < 8)
        return gm_errf(c, GM_EIO, "%s: truncated: %llu bytes, too short for the 8-byte header "
                       "length", what, (unsigned long long)s->size);
    gm_status st = gm_src_read(c, s, 0, len8, 8);
    if (st != GM_OK) return st;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len8[i];
    if (hlen > GM_ST_HEADER_MAX)
        return gm_errf(c, GM_EIO, "%s: header length %llu is over the %llu-byte limit (not a "
                       "safetensors file, or corrupt)", what, (unsigned long long)hlen,
                       (unsigned long long)GM_ST_HEADER_MAX);
    if (hlen > s->size - 8)
        return gm_errf(c, GM_EIO, "%s: header length %llu runs past the end of the file (%llu "
                       "bytes): truncated or corrupt", what, (unsigned long long)hlen,
                       (unsigned long long)s->size);
    if (hlen == 0) return gm_errf(c, GM_EIO, "%s: the header is empty", what);
    char *hdr = malloc(hlen);
    if (!hdr) return gm_errf(c, GM_ENOMEM, "%s: out of memory for a %llu-byte header", what,
                             (unsigned long long)hlen);
    gm_json *root = NULL;
    st_ent *ents = NULL;
    if ((st = gm_src_read(c, s, 8, hdr, hlen)) != GM_OK) goto done;
    if (hdr[0] != '{') {
        st = gm_errf(c, GM_EIO, "%s: the header does not start with '{' (not a safetensors file?)", what);
        goto done;
    }
    if ((st = gm_json_parse(c, what, hdr, hlen, &root)) != GM_OK) goto done;
    const gm_json *meta = gm_json_get(root, "__metadata__");
    size_t nt = root->n - (meta != NULL);
    ents = calloc(nt ? nt : 1, sizeof *ents);
    if (!ents) { st = gm_errf(c, GM_ENOMEM, "%s: out of memory", what); goto done; }
    if (meta && meta->type != GM_JSON_OBJ) {
        st = gm_errf(c, GM_EIO, "%s: \"__metadata__\" must be an object, got %s", what,
                     gm_json_type_name(meta->type));
        goto done;
    }
    for (size_t i = 0; meta && i < meta->n; i++)
        if (meta->items[i].type != GM_JSON_STR) {
            st = gm_errf(c, GM_EIO, "%s: __metadata__ \"%.80s\" must map to a string, got %s", what,
                         meta->keys[i], gm_json_type_name(meta->items[i].type));
            goto done;
        }
    for (size_t i = 0, k = 0; i < root->n; i++) {
        if (&root->items[i] == meta) continue;
        if ((st = parse_entry(c, what, root->keys[i], &root->items[i], &ents[k++])) != GM_OK) goto done;
    }
    uint64_t data_off = 8 + hlen;
    if ((st = check_tiling(c, what, ents, nt, s->size - data_off)) != GM_OK) goto done;

    out->names = calloc(nt ? nt : 1, sizeof *out->names);
    out->tensors = calloc(nt ? nt : 1, sizeof *out->tensors);
    size_t nm = meta ? meta->n : 0;
    out->meta_keys = calloc(nm ? nm : 1, sizeof *out->meta_keys);
    out->meta_vals = calloc(nm ? nm : 1, sizeof *out->meta_vals);
    if (!out->names || !out->tensors || !out->meta_keys || !out->meta_vals) {
        st = gm_errf(c, GM_ENOMEM, "%s: out of memory", what);
        goto done;
    }
    for (size_t i = 0; i < nm; i++) {
        out->meta_keys[i] = dup_str(meta->keys[i]);
        out->meta_vals[i] = dup_str(meta->items[i].str);
        out->n_meta++;
        if (!out->meta_keys[i] || !out->meta_vals[i]) {
            st = gm_errf(c, GM_ENOMEM, "%s: out of memory", what);
            goto done;
        }
    }
    for (size_t i = 0; i < nt; i++) {
        const st_ent *e = &ents[i];
        gm_tensor *t = NULL;
        st = gm_tensor_new(c, gm_ftype_dtype(e->ft), GM_CPU, e->ndim, e->shape, &t);
        if (st != GM_OK) goto done;
        out->names[i] = dup_str(e->name);
        out->tensors[i] = t;
        out->n++;
        if (!out->names[i]) { st = gm_errf(c, GM_ENOMEM, "%s: out of memory", what); goto done; }
        st = gm_read_elems(c, s, data_off + e->begin, e->ft, false, e->name, t);
        if (st != GM_OK) goto done;
    }
done:
    if (st != GM_OK) gm_st_file_free(out);
    free(ents);
    gm_json_free(root);
    free(hdr);
    return st;
}

gm_status gm_safetensors_load(gm_ctx *c, const char *path, gm_st_file *out) {
    char what[320];
    snprintf(what, sizeof what, "safetensors '%.280s'", path);
    gm_src s;
    memset(out, 0, sizeof *out);
    gm_status st = gm_src_open(c, what, path, &s);
    if (st != GM_OK) return st;
    st = st_read(c, &s, out);
    gm_src_close(&s);
    return st;
}

gm_status gm_safetensors_load_mem(gm_ctx *c, const char *what, const void *buf, size_t len,
                                  gm_st_file *out) {
    gm_src s;
    gm_src_mem(&s, what, buf, len);
    return st_read(c, &s, out);
}

/* ---- saving -------------------------------------------------------------------------------- */
typedef struct named {
    const char *name;
    size_t index;
} named;

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* order[] = indices sorted by name; a duplicate (or a name that is not UTF-8) is an error. */
static gm_status sorted_unique(gm_ctx *c, const char *what, const char *kind, size_t n,
                               const char *const *names, size_t *order) {
    named *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!tmp) return gm_errf(c, GM_ENOMEM, "%s: out of memory", what);
    gm_status st = GM_OK;
    for (size_t i = 0; i < n && st == GM_OK; i++) {
        if (!names[i] || !gm_utf8_valid(names[i], strlen(names[i])))
            st = gm_errf(c, GM_EARG, "%s: %s %zu is not valid UTF-8 text", what, kind, i + 1);
        tmp[i] = (named){names[i], i};
    }
    if (st == GM_OK) qsort(tmp, n, sizeof *tmp, cmp_named);
    for (size_t i = 0; i < n && st == GM_OK; i++) {
        if (i && !strcmp(tmp[i - 1].name, tmp[i].name))
            st = gm_errf(c, GM_EARG, "%s: %s '%.80s' appears twice", what, kind, tmp[i].name);
        order[i] = tmp[i].index;
    }
    free(tmp);
    return st;
}

static const char *st_dtype_name(gm_dtype t) {
    return t == GM_F64 ? "F64" : t == GM_I32 ? "I32" : "F32";
}

gm_status gm_safetensors_save(gm_ctx *c, const char *path, size_t n, const char *const *names,
                              gm_tensor *const *tensors, size_t n_meta,
                              const char *const *meta_keys, const char *const *meta_vals) {
    char what[320];
    snprintf(what, sizeof what, "safetensors '%.280s'", path);
    size_t *order = malloc((n + n_meta + 1) * sizeof *order), *morder = order + n;
    gm_buf h = {0};
    gm_status st;
    if (!order) return gm_errf(c, GM_ENOMEM, "%s: out of memory", what);
    if ((st = sorted_unique(c, what, "tensor name", n, names, order)) != GM_OK) goto fail;
    if ((st = sorted_unique(c, what, "metadata key", n_meta, meta_keys, morder)) != GM_OK) goto fail;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(names[i], "__metadata__")) {
            st = gm_errf(c, GM_EARG, "%s: '__metadata__' is reserved and cannot name a tensor", what);
            goto fail;
        }
        if (gm_tensor_device(tensors[i]) != GM_CPU) {
            st = gm_errf(c, GM_EDEVICE, "%s: tensor '%s' is on %s: move it to the cpu first", what,
                         names[i], gm_device_name(gm_tensor_device(tensors[i])));
            goto fail;
        }
    }
    for (size_t i = 0; i < n_meta; i++)
        if (!meta_vals[i] || !gm_utf8_valid(meta_vals[i], strlen(meta_vals[i]))) {
            st = gm_errf(c, GM_EARG, "%s: metadata '%s' is not valid UTF-8 text", what, meta_keys[i]);
            goto fail;
        }
    gm_buf_put(&h, "{", 1);
    if (n_meta) {
        gm_buf_puts(&h, "\"__metadata__\":{");
        for (size_t j = 0; j < n_meta; j++) {
            size_t i = morder[j];
            if (j) gm_buf_put(&h, ",", 1);
            gm_buf_json_str(&h, meta_keys[i]);
            gm_buf_put(&h, ":", 1);
            gm_buf_json_str(&h, meta_vals[i]);
        }
        gm_buf_put(&h, "}", 1);
    }
    uint64_t at = 0;
    for (size_t j = 0; j < n; j++) {
        const gm_tensor *t = tensors[order[j]];
        uint64_t bytes = (uint64_t)gm_tensor_numel(t) * gm_dtype_size(t->dtype);
        if (j || n_meta) gm_buf_put(&h, ",", 1);
        gm_buf_json_str(&h, names[order[j]]);
        gm_buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) gm_buf_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        gm_buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
                      (unsigned long long)(at + bytes));
        at += bytes;
    }
    gm_buf_put(&h, "}", 1);
    while (!h.oom && (8 + h.n) % 8) gm_buf_put(&h, " ", 1); /* data 8-byte aligned */
    if (h.oom) { st = gm_errf(c, GM_ENOMEM, "%s: out of memory for the header", what); goto fail; }
    if (h.n > GM_ST_HEADER_MAX) {
        st = gm_errf(c, GM_EARG, "%s: the header would be %zu bytes, over the %llu-byte limit",
                     what, h.n, (unsigned long long)GM_ST_HEADER_MAX);
        goto fail;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    gm_wfile w;
    if ((st = gm_wfile_open(c, what, path, &w)) != GM_OK) goto fail;
    if ((st = gm_wfile_write(c, &w, len8, 8)) != GM_OK) goto fail;
    if ((st = gm_wfile_write(c, &w, h.p, h.n)) != GM_OK) goto fail;
    for (size_t j = 0; j < n; j++)
        if ((st = gm_write_tensor(c, &w, tensors[order[j]])) != GM_OK) goto fail;
    st = gm_wfile_commit(c, &w);
fail:
    gm_buf_free(&h);
    free(order);
    return st;
}
