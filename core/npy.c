/* npy.c: numpy's .npy format for one array: magic "\x93NUMPY", version, a little-endian
 * header length (2 bytes in v1.0, 4 in v2.0/v3.0), a Python dict literal
 * {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with spaces and '\n' so
 * the data starts 64-byte aligned, then the raw data. Written as v1.0 in C order. */
#include "internal.h"
#include "io.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_HEADER_MAX ((uint32_t)1 << 20)

typedef struct npy_hdr {
    char descr[16];
    bool has_descr, has_fortran, has_shape;
    bool fortran;
    int ndim;
    int64_t shape[GM_MAX_DIMS];
} npy_hdr;

typedef struct lexer {
    gm_ctx *c;
    const char *what;
    const char *s;
    size_t n, pos;
} lexer;

static gm_status lerr(lexer *l, const char *msg, const char *arg) {
    return gm_errf(l->c, GM_EIO, "%s: header: %s%s at byte %zu of the header", l->what, msg,
                   arg ? arg : "", l->pos);
}

static void lws(lexer *l) {
    while (l->pos < l->n && (l->s[l->pos] == ' ' || l->s[l->pos] == '\t' || l->s[l->pos] == '\n' ||
                             l->s[l->pos] == '\r'))
        l->pos++;
}

static bool lpeek(lexer *l, char ch) { return l->pos < l->n && l->s[l->pos] == ch; }

/* A quoted Python string (either quote, no escapes: numpy never writes any) into buf. */
static gm_status lstring(lexer *l, char *buf, size_t cap) {
    if (!lpeek(l, '\'') && !lpeek(l, '"')) return lerr(l, "a quoted string expected", NULL);
    char q = l->s[l->pos++];
    size_t k = 0;
    while (l->pos < l->n && l->s[l->pos] != q) {
        char ch = l->s[l->pos];
        if (ch == '\\' || (unsigned char)ch < 0x20) return lerr(l, "unexpected character in a string", NULL);
        if (k + 1 >= cap) return lerr(l, "string too long", NULL);
        buf[k++] = ch;
        l->pos++;
    }
    if (l->pos >= l->n) return lerr(l, "unterminated string", NULL);
    l->pos++;
    buf[k] = '\0';
    return GM_OK;
}

/* (), (n,), (a, b), ... of non-negative integers (a trailing L from Python 2 is accepted). */
static gm_status lshape(lexer *l, npy_hdr *h) {
    if (!lpeek(l, '(')) return lerr(l, "'shape' must be a tuple", NULL);
    l->pos++;
    h->ndim = 0;
    for (;;) {
        lws(l);
        if (lpeek(l, ')')) { l->pos++; return GM_OK; }
        if (h->ndim > 0) {
            if (!lpeek(l, ',')) return lerr(l, "',' or ')' expected in 'shape'", NULL);
            l->pos++;
            lws(l);
            if (lpeek(l, ')')) { l->pos++; return GM_OK; }
        }
        if (!(l->pos < l->n && l->s[l->pos] >= '0' && l->s[l->pos] <= '9'))
            return lerr(l, "a non-negative integer expected in 'shape'", NULL);
        if (h->ndim == GM_MAX_DIMS)
            return gm_errf(l->c, GM_ESHAPE, "%s: more than %d dims (gmoe tensors have at most %d)",
                           l->what, GM_MAX_DIMS, GM_MAX_DIMS);
        int64_t v = 0;
        while (l->pos < l->n && l->s[l->pos] >= '0' && l->s[l->pos] <= '9') {
            int d = l->s[l->pos++] - '0';
            if (v > (INT64_MAX - d) / 10) return lerr(l, "a size in 'shape' overflows 64 bits", NULL);
            v = v * 10 + d;
        }
        if (lpeek(l, 'L')) l->pos++;
        h->shape[h->ndim++] = v;
    }
}

static bool lword(lexer *l, const char *w) {
    size_t k = strlen(w);
    if (l->n - l->pos < k || memcmp(l->s + l->pos, w, k)) return false;
    l->pos += k;
    return true;
}

static gm_status parse_header(gm_ctx *c, const char *what, const char *s, size_t n, npy_hdr *h) {
    lexer l = {c, what, s, n, 0};
    gm_status st;
    memset(h, 0, sizeof *h);
    lws(&l);
    if (!lpeek(&l, '{')) return lerr(&l, "a dict literal '{...}' expected", NULL);
    l.pos++;
    for (;;) {
        lws(&l);
        if (lpeek(&l, '}')) { l.pos++; break; }
        char key[32];
        if ((st = lstring(&l, key, sizeof key)) != GM_OK) return st;
        lws(&l);
        if (!lpeek(&l, ':')) return lerr(&l, "':' expected after key ", key);
        l.pos++;
        lws(&l);
        bool *seen;
        if (!strcmp(key, "descr")) {
            seen = &h->has_descr;
            if (!lpeek(&l, '\'') && !lpeek(&l, '"'))
                return gm_errf(c, GM_EDTYPE, "%s: structured dtypes are not supported ('descr' "
                               "is not a string)", what);
            if ((st = lstring(&l, h->descr, sizeof h->descr)) != GM_OK) return st;
        } else if (!strcmp(key, "fortran_order")) {
            seen = &h->has_fortran;
            if (lword(&l, "True")) h->fortran = true;
            else if (lword(&l, "False")) h->fortran = false;
            else return lerr(&l, "'fortran_order' must be True or False", NULL);
        } else if (!strcmp(key, "shape")) {
            seen = &h->has_shape;
            if ((st = lshape(&l, h)) != GM_OK) return st;
        } else {
            return lerr(&l, "unknown key ", key);
        }
        if (*seen) return lerr(&l, "duplicate key ", key);
        *seen = true;
        lws(&l);
        if (lpeek(&l, ',')) { l.pos++; continue; }
        if (lpeek(&l, '}')) { l.pos++; break; }
        return lerr(&l, "',' or '}' expected", NULL);
    }
    lws(&l);
    if (l.pos != l.n) return lerr(&l, "unexpected text after the dict", NULL);
    if (!h->has_descr || !h->has_fortran || !h->has_shape)
        return gm_errf(c, GM_EIO, "%s: header: missing key '%s'", what,
                       !h->has_descr ? "descr" : !h->has_fortran ? "fortran_order" : "shape");
    return GM_OK;
}

/* descr -> file type and byte order, or a clear refusal. */
static gm_status parse_descr(gm_ctx *c, const char *what, const char *d, gm_ftype *ft, bool *big) {
    static const struct { const char *code; gm_ftype ft; } codes[] = {
        {"f4", GM_FT_F32}, {"f8", GM_FT_F64}, {"i4", GM_FT_I32}, {"f2", GM_FT_F16}, {"i8", GM_FT_I64},
    };
    if (d[0] == '<' || d[0] == '>')
        for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
            if (!strcmp(d + 1, codes[i].code)) {
                *ft = codes[i].ft;
                *big = d[0] == '>';
                return GM_OK;
            }
    if (strchr(d, 'O'))
        return gm_errf(c, GM_EDTYPE, "%s: dtype '%s' holds pickled Python objects: refused", what, d);
    return gm_errf(c, GM_EDTYPE, "%s: dtype '%s' is not supported (gmoe reads <f4 <f8 <i4, "
                   "<f2 as f32 and <i8 as i32, either byte order)", what, d);
}

static gm_status npy_read(gm_ctx *c, gm_src *s, gm_tensor **out) {
    const char *what = s->what;
    unsigned char pre[12];
    gm_status st;
    if (s->size < 10)
        return gm_errf(c, GM_EIO, "%s: truncated: %llu bytes, too short for a .npy preamble",
                       what, (unsigned long long)s->size);
    if ((st = gm_src_read(c, s, 0, pre, 10)) != GM_OK) return st;
    if (memcmp(pre, "\x93NUMPY", 6))
        return gm_errf(c, GM_EIO, "%s: not a .npy file (no \\x93NUMPY magic)", what);
    unsigned major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0)
        return gm_errf(c, GM_ENOTSUP, "%s: .npy version %u.%u is not supported (1.0, 2.0, 3.0 are)",
                       what, major, minor);
    uint64_t hstart = major == 1 ? 10 : 12, hlen;
    if (major == 1) hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
    else {
        if ((st = gm_src_read(c, s, 0, pre, 12)) != GM_OK) return st;
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
    }
    if (hlen > NPY_HEADER_MAX)
        return gm_errf(c, GM_EIO, "%s: header length %llu is over the %u-byte limit", what,
                       (unsigned long long)hlen, NPY_HEADER_MAX);
    if (hlen > s->size - hstart)
        return gm_errf(c, GM_EIO, "%s: header length %llu runs past the end of the file (%llu "
                       "bytes): truncated or corrupt", what, (unsigned long long)hlen,
                       (unsigned long long)s->size);
    char *text = malloc(hlen + 1);
    if (!text) return gm_errf(c, GM_ENOMEM, "%s: out of memory", what);
    npy_hdr h;
    if ((st = gm_src_read(c, s, hstart, text, hlen)) == GM_OK)
        st = parse_header(c, what, text, hlen, &h);
    free(text);
    if (st != GM_OK) return st;
    gm_ftype ft = GM_FT_F32;
    bool big = false;
    if ((st = parse_descr(c, what, h.descr, &ft, &big)) != GM_OK) return st;
    uint64_t numel = 1, bytes;
    bool overflow = false;
    for (int d = 0; d < h.ndim; d++)
        if (__builtin_mul_overflow(numel, (uint64_t)h.shape[d], &numel)) overflow = true;
    char sb[160];
    gm_shape_str(h.ndim, h.shape, sb, sizeof sb);
    if (overflow || numel > (uint64_t)INT64_MAX || __builtin_mul_overflow(numel, gm_ftype_size(ft), &bytes))
        return gm_errf(c, GM_EIO, "%s: shape %s overflows 64-bit sizes", what, sb);
    uint64_t dstart = hstart + hlen, avail = s->size - dstart;
    if (bytes != avail)
        return gm_errf(c, GM_EIO, "%s: shape %s of '%s' needs %llu bytes of data but the file %s "
                       "%llu%s", what, sb, h.descr, (unsigned long long)bytes,
                       bytes > avail ? "has only" : "has", (unsigned long long)avail,
                       bytes > avail ? " (truncated)" : " (extra bytes after the array)");
    /* Fortran order over shape is C order over the reversed shape: read that, then copy
     * through the transposing view into C order. */
    int64_t rshape[GM_MAX_DIMS];
    bool flip = h.fortran && h.ndim > 1;
    for (int d = 0; d < h.ndim; d++) rshape[d] = flip ? h.shape[h.ndim - 1 - d] : h.shape[d];
    gm_tensor *t = NULL;
    if ((st = gm_tensor_new(c, gm_ftype_dtype(ft), GM_CPU, h.ndim, rshape, &t)) != GM_OK) return st;
    if ((st = gm_read_elems(c, s, dstart, ft, big, NULL, t)) != GM_OK) {
        gm_tensor_release(t);
        return st;
    }
    if (flip) {
        int64_t stride[GM_MAX_DIMS];
        for (int d = 0; d < h.ndim; d++) stride[d] = t->stride[h.ndim - 1 - d];
        gm_tensor *view = NULL, *cont = NULL;
        st = gm_tensor_view(c, t, h.ndim, h.shape, stride, 0, &view);
        if (st == GM_OK) st = gm_tensor_contiguous(c, view, &cont);
        gm_tensor_release(view);
        gm_tensor_release(t);
        if (st != GM_OK) return st;
        t = cont;
    }
    *out = t;
    return GM_OK;
}

gm_status gm_npy_load(gm_ctx *c, const char *path, gm_tensor **out) {
    char what[320];
    snprintf(what, sizeof what, "npy '%.280s'", path);
    gm_src s;
    gm_status st = gm_src_open(c, what, path, &s);
    if (st != GM_OK) return st;
    st = npy_read(c, &s, out);
    gm_src_close(&s);
    return st;
}

gm_status gm_npy_load_mem(gm_ctx *c, const char *what, const void *buf, size_t len, gm_tensor **out) {
    gm_src s;
    gm_src_mem(&s, what, buf, len);
    return npy_read(c, &s, out);
}

gm_status gm_npy_save(gm_ctx *c, const char *path, gm_tensor *x) {
    char what[320];
    snprintf(what, sizeof what, "npy '%.280s'", path);
    if (gm_tensor_device(x) != GM_CPU)
        return gm_errf(c, GM_EDEVICE, "%s: the tensor is on %s: move it to the cpu first", what,
                       gm_device_name(gm_tensor_device(x)));
    gm_buf h = {0};
    gm_buf_puts(&h, "\x93NUMPY\x01");
    gm_buf_put(&h, "\0\0\0", 3); /* minor version 0, header length filled in below */
    gm_buf_printf(&h, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                  x->dtype == GM_F64 ? "<f8" : x->dtype == GM_I32 ? "<i4" : "<f4");
    for (int d = 0; d < x->ndim; d++) gm_buf_printf(&h, d ? ", %lld" : "%lld", (long long)x->shape[d]);
    gm_buf_puts(&h, x->ndim == 1 ? ",), }" : "), }");
    while (!h.oom && (h.n + 1) % 64) gm_buf_put(&h, " ", 1);
    gm_buf_put(&h, "\n", 1);
    if (h.oom) {
        gm_buf_free(&h);
        return gm_errf(c, GM_ENOMEM, "%s: out of memory", what);
    }
    size_t hlen = h.n - 10;
    h.p[8] = (char)(hlen & 0xff);
    h.p[9] = (char)(hlen >> 8);
    gm_wfile w;
    gm_status st = gm_wfile_open(c, what, path, &w);
    if (st == GM_OK) st = gm_wfile_write(c, &w, h.p, h.n);
    if (st == GM_OK) st = gm_write_tensor(c, &w, x);
    if (st == GM_OK) st = gm_wfile_commit(c, &w);
    gm_buf_free(&h);
    return st;
}
