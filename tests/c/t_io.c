/* t_io.c: the file formats in C: the strict JSON parser, safetensors and .npy round trips and
 * conversions (F16, BF16, I64, big-endian, Fortran order), one refusal per documented error,
 * atomic replacement (a write that fails midway leaves the old file), and a corpus of
 * mutated files (truncations at every length, byte flips, forged header lengths, edited
 * headers) that must each load or fail with a message, never crash or read out of bounds. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "io.h"
#include "json.h"
#include "tap.h"

static gm_ctx *C;
static char dir[64];

static bool has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

static void *find(const void *hay, size_t n, const void *needle, size_t k) {
    for (size_t i = 0; k <= n && i <= n - k; i++)
        if (!memcmp((const char *)hay + i, needle, k)) return (char *)hay + i;
    return NULL;
}

static char *path_in(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static gm_tensor *tensor_of(gm_dtype t, int ndim, const int64_t *shape, double start) {
    gm_tensor *x = NULL;
    gm_tensor_new(C, t, GM_CPU, ndim, shape, &x);
    int64_t n = gm_tensor_numel(x);
    for (int64_t i = 0; i < n; i++) {
        double v = start + (double)i * 0.25;
        if (t == GM_F32) ((float *)gm_tensor_data(x))[i] = (float)v;
        else if (t == GM_F64) ((double *)gm_tensor_data(x))[i] = v;
        else ((int32_t *)gm_tensor_data(x))[i] = (int32_t)(start + (double)i);
    }
    return x;
}

static bool same(const gm_tensor *a, const gm_tensor *b) {
    if (!a || !b || a->dtype != b->dtype || a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    for (int64_t i = 0; i < gm_tensor_numel(a); i++)
        if (gm_tensor_get_flat(a, i) != gm_tensor_get_flat(b, i)) return false;
    return true;
}

/* ---- JSON ---------------------------------------------------------------------------------- */
static bool json_ok(const char *s) {
    gm_json *v = NULL;
    gm_status st = gm_json_parse(C, "t", s, strlen(s), &v);
    gm_json_free(v);
    return st == GM_OK;
}

static void test_json(void) {
    gm_json *v = NULL;
    const char *s = "{\"a\\u00e9\\ud83d\\ude00\\n\":[1,-2.5e3,true,null,\"x\"], \"b\":{}} ";
    tap_ok(gm_json_parse(C, "t", s, strlen(s), &v) == GM_OK, "json: a valid document parses");
    const gm_json *a = gm_json_get(v, "a\xc3\xa9\xf0\x9f\x98\x80\n");
    tap_ok(a && a->type == GM_JSON_ARR && a->n == 5, "json: escapes and surrogate pairs decode to UTF-8");
    uint64_t u = 0;
    tap_ok(a && gm_json_u64(&a->items[0], &u) && u == 1 && !gm_json_u64(&a->items[1], &u),
           "json: integers read exactly, non-integers refused as sizes");
    gm_json_free(v);
    const char *bad[] = {
        "{\"a\":1,}", "[1,]", "{\"a\" 1}", "01", "1.", "-", "1e", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\u0000\"", "\"a\tb\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
        "{\"a\":1,\"a\":2}", "[1] x", "", "tru", "\"abc", "\"\\x\"", "{1:2}", "\"\\u12\"",
    };
    int refused = 0;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) refused += !json_ok(bad[i]);
    tap_ok(refused == (int)(sizeof bad / sizeof *bad), "json: %d malformed documents refused (%d of %zu)",
           refused, refused, sizeof bad / sizeof *bad);
    char deep[400];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    gm_json_parse(C, "deep.json", deep, sizeof deep, &v);
    tap_ok(has(gm_errmsg(C), "deep.json") && has(gm_errmsg(C), "nesting"), "json: nesting is capped: %s", gm_errmsg(C));
    /* many keys: duplicate detection by sorting */
    char big[20000];
    size_t n = 0;
    big[n++] = '{';
    for (int i = 0; i < 500; i++) n += (size_t)sprintf(big + n, "%s\"k%d\":%d", i ? "," : "", i, i);
    n += (size_t)sprintf(big + n, ",\"k77\":0}");
    tap_ok(gm_json_parse(C, "t", big, n, &v) != GM_OK && has(gm_errmsg(C), "duplicate key \"k77\""),
           "json: a duplicate among 500 keys is found: %s", gm_errmsg(C));
}

/* ---- safetensors --------------------------------------------------------------------------- */
static unsigned char *valid_st(size_t *len) {
    int64_t s23[] = {2, 3}, s4[] = {4}, s05[] = {0, 5};
    gm_tensor *ts[] = {tensor_of(GM_F32, 2, s23, -1), tensor_of(GM_F64, 1, s4, 0.5),
                       tensor_of(GM_I32, 0, NULL, 7), tensor_of(GM_F32, 2, s05, 0),
                       tensor_of(GM_I32, 1, s4, -2)};
    const char *names[] = {"layer.weight", "bias", "step", "empty", "ids"};
    const char *mk[] = {"format", "note"}, *mv[] = {"pt", "h\xc3\xa9llo \"q\""};
    gm_status st = gm_safetensors_save(C, path_in("v.safetensors"), 5, names, ts, 2, mk, mv);
    if (st != GM_OK) tap_diag("%s", gm_errmsg(C));
    gm_st_file f;
    st = gm_safetensors_load(C, path_in("v.safetensors"), &f);
    bool ok = st == GM_OK && f.n == 5 && f.n_meta == 2;
    for (size_t i = 0; ok && i < f.n; i++) {
        size_t j = 0;
        while (j < 5 && strcmp(names[j], f.names[i])) j++;
        ok = j < 5 && same(ts[j], f.tensors[i]);
    }
    for (size_t i = 0; ok && i < f.n_meta; i++)
        ok = !strcmp(f.meta_vals[i], !strcmp(f.meta_keys[i], "format") ? mv[0] : mv[1]);
    tap_ok(ok, "safetensors: F32 F64 I32, 0-dim, zero-size and metadata round-trip exactly");
    gm_st_file_free(&f);
    for (int i = 0; i < 5; i++) gm_tensor_release(ts[i]);
    unsigned char *b = slurp(path_in("v.safetensors"), len);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    tap_ok((8 + h) % 8 == 0 && b[8] == '{',
           "safetensors: the data section starts 8-byte aligned (header %llu bytes)", (unsigned long long)h);
    tap_ok(find(b + 8, h, "\"bias\":{\"dtype\":\"F64\",\"shape\":[4],\"data_offsets\":[0,32]}", 54) != NULL,
           "safetensors: sorted names, offsets from the start of the data");
    return b;
}

/* A file from a header string and raw data bytes. */
static size_t mkst(unsigned char *out, const char *hdr, const void *data, size_t dlen) {
    uint64_t h = strlen(hdr);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(h >> (8 * i));
    memcpy(out + 8, hdr, h);
    if (dlen) memcpy(out + 8 + h, data, dlen);
    return 8 + h + dlen;
}

static gm_status load_st_bytes(const unsigned char *b, size_t n, gm_st_file *f) {
    /* an exact-size heap copy so that ASan sees any read past the end */
    unsigned char *copy = malloc(n ? n : 1);
    memcpy(copy, b, n);
    gm_status st = gm_safetensors_load_mem(C, "mem.st", copy, n, f);
    free(copy);
    return st;
}

static void expect_st_error(const char *hdr, size_t dlen, const char *want, const char *name) {
    unsigned char buf[4096], data[256] = {0};
    size_t n = mkst(buf, hdr, data, dlen);
    gm_st_file f;
    gm_status st = load_st_bytes(buf, n, &f);
    const char *msg = gm_errmsg(C);
    tap_ok(st != GM_OK && has(msg, "mem.st") && has(msg, want), "safetensors refuses %s: %s", name, msg ? msg : "(no message)");
    if (st == GM_OK) gm_st_file_free(&f);
}

static void test_st_errors(void) {
    const char *f8 = "\"dtype\":\"F32\",\"shape\":[2]";
    char h[512];
    unsigned char buf[64];
    gm_st_file f;
    tap_ok(gm_safetensors_load(C, path_in("missing.st"), &f) != GM_OK && has(gm_errmsg(C), "missing.st") &&
           has(gm_errmsg(C), "No such file"), "a missing file names the path: %s", gm_errmsg(C));
    tap_ok(load_st_bytes((const unsigned char *)"abc", 3, &f) != GM_OK && has(gm_errmsg(C), "truncated"),
           "safetensors refuses a file shorter than 8 bytes: %s", gm_errmsg(C));
    memset(buf, 0, sizeof buf);
    buf[0] = 100;
    memcpy(buf + 8, "{}", 2);
    tap_ok(load_st_bytes(buf, 10, &f) != GM_OK && has(gm_errmsg(C), "runs past the end"),
           "safetensors refuses a header length beyond the file: %s", gm_errmsg(C));
    memset(buf, 0xff, 8);
    tap_ok(load_st_bytes(buf, 10, &f) != GM_OK && has(gm_errmsg(C), "limit"),
           "safetensors refuses a huge header length: %s", gm_errmsg(C));
    expect_st_error("[1, 2]", 0, "does not start with '{'", "a header that is not an object");
    expect_st_error("{\"a\":{", 0, "header JSON", "malformed JSON");
    snprintf(h, sizeof h, "{\"a\":{%s,\"data_offsets\":[0,8]},\"a\":{%s,\"data_offsets\":[8,16]}}", f8, f8);
    expect_st_error(h, 16, "duplicate key \"a\"", "duplicate names");
    snprintf(h, sizeof h, "{\"a\":{%s,\"data_offsets\":[0,8]},\"b\":{%s,\"data_offsets\":[4,12]}}", f8, f8);
    expect_st_error(h, 12, "overlap", "overlapping ranges");
    snprintf(h, sizeof h, "{\"a\":{%s,\"data_offsets\":[0,8]},\"b\":{%s,\"data_offsets\":[12,20]}}", f8, f8);
    expect_st_error(h, 20, "hole", "a hole between ranges");
    snprintf(h, sizeof h, "{\"a\":{%s,\"data_offsets\":[0,8]}}", f8);
    expect_st_error(h, 12, "belong to no tensor", "trailing bytes no tensor covers");
    expect_st_error(h, 4, "ends at byte 8", "a range past the end of the data");
    snprintf(h, sizeof h, "{\"a\":{%s,\"data_offsets\":[0,12]}}", f8);
    expect_st_error(h, 12, "needs 8 bytes", "a shape whose size disagrees with its range");
    expect_st_error("{\"a\":{\"dtype\":\"F33\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "unknown dtype",
                    "an unknown dtype");
    expect_st_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}", 1, "not supported",
                    "an unsupported dtype");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}",
                    0, "overflows", "a shape product that overflows");
    expect_st_error("{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}",
                    0, "overflows", "a byte size that overflows");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,18446744073709551616]}}",
                    4, "data_offsets", "an offset beyond 2^64");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,4]}}", 8, "end before",
                    "reversed offsets");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]",
                    "a negative size");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                    "9 dims", "more than 8 dims");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}", 4,
                    "unknown field", "an unknown field");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "\"shape\"", "a missing shape");
    expect_st_error("{\"__metadata__\":{\"k\":1}}", 0, "must map to a string", "non-string metadata");
    expect_st_error("{\"a\":[1]}", 0, "expected an object", "an entry that is not an object");
    expect_st_error("{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "UTF-8",
                    "a name that is not UTF-8");
    tap_ok(load_st_bytes((const unsigned char *)"\x02\0\0\0\0\0\0\0{}", 10, &f) == GM_OK && f.n == 0,
           "safetensors: an empty file '{}' loads");
    gm_st_file_free(&f);
}

static void test_st_conversions(void) {
    unsigned char buf[512];
    /* BF16 1.5 = 0x3fc0, -2 = 0xc000; F16 1.5 = 0x3e00, 2^-24 = 0x0001, -inf = 0xfc00;
     * I64 -5 and 2^31-1 */
    unsigned char data[] = {0xc0, 0x3f, 0x00, 0xc0, 0x00, 0x3e, 0x01, 0x00, 0x00, 0xfc,
                            0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                            0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0};
    const char *h = "{\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                    "\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[4,10]},"
                    "\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[10,26]}}";
    size_t n = mkst(buf, h, data, sizeof data);
    gm_st_file f;
    gm_status st = load_st_bytes(buf, n, &f);
    bool ok = st == GM_OK && f.n == 3;
    if (ok) {
        const gm_tensor *b = f.tensors[0], *hh = f.tensors[1], *i = f.tensors[2];
        ok = b->dtype == GM_F32 && gm_tensor_get_flat(b, 0) == 1.5 && gm_tensor_get_flat(b, 1) == -2 &&
             hh->dtype == GM_F32 && tap_close(gm_tensor_get_flat(hh, 0), 1.5, 0) &&
             gm_tensor_get_flat(hh, 1) == 0x1p-24 && gm_tensor_get_flat(hh, 2) == -INFINITY &&
             i->dtype == GM_I32 && gm_tensor_get_flat(i, 0) == -5 && gm_tensor_get_flat(i, 1) == 2147483647;
    }
    tap_ok(ok, "safetensors: BF16 and F16 read as f32 (subnormal, inf), I64 as i32%s%s", ok ? "" : ": ",
           ok ? "" : gm_errmsg(C));
    if (st == GM_OK) gm_st_file_free(&f);
    data[21] = 0x80; /* 2^63 + ... : outside i32 */
    n = mkst(buf, h, data, sizeof data);
    tap_ok(load_st_bytes(buf, n, &f) != GM_OK && has(gm_errmsg(C), "tensor 'i'") && has(gm_errmsg(C), "i32 range"),
           "safetensors: an I64 value outside i32 is refused: %s", gm_errmsg(C));
}

static void test_st_save_errors(void) {
    int64_t s2[] = {2};
    gm_tensor *x = tensor_of(GM_F32, 1, s2, 1);
    gm_tensor *ts[] = {x, x};
    const char *dup[] = {"a", "a"}, *meta[] = {"__metadata__"}, *bad[] = {"\xff"};
    tap_ok(gm_safetensors_save(C, path_in("e.st"), 2, dup, ts, 0, NULL, NULL) != GM_OK &&
           has(gm_errmsg(C), "'a' appears twice"), "save refuses duplicate names: %s", gm_errmsg(C));
    tap_ok(gm_safetensors_save(C, path_in("e.st"), 1, meta, ts, 0, NULL, NULL) != GM_OK &&
           has(gm_errmsg(C), "reserved"), "save refuses the name __metadata__: %s", gm_errmsg(C));
    tap_ok(gm_safetensors_save(C, path_in("e.st"), 1, bad, ts, 0, NULL, NULL) != GM_OK &&
           has(gm_errmsg(C), "UTF-8"), "save refuses a name that is not UTF-8: %s", gm_errmsg(C));
    tap_ok(gm_safetensors_save(C, "/nonexistent-dir/x.st", 1, dup, ts, 0, NULL, NULL) != GM_OK &&
           has(gm_errmsg(C), "/nonexistent-dir/x.st"), "save into a missing directory names the path: %s",
           gm_errmsg(C));
    /* a transposed (non-contiguous) view is written in its logical order */
    int64_t s23[] = {2, 3};
    gm_tensor *m = tensor_of(GM_F64, 2, s23, 0), *t = NULL, *back = NULL, *mt[1];
    gm_transpose(C, m, 0, 1, &t);
    mt[0] = t;
    const char *nm[] = {"t"};
    gm_st_file f;
    bool ok = gm_safetensors_save(C, path_in("t.st"), 1, nm, mt, 0, NULL, NULL) == GM_OK &&
              gm_safetensors_load(C, path_in("t.st"), &f) == GM_OK;
    if (ok) back = f.tensors[0];
    tap_ok(ok && same(back, t),
           "save writes a transposed view in its logical order");
    if (ok) gm_st_file_free(&f);
    gm_tensor_release(t);
    gm_tensor_release(m);
    gm_tensor_release(x);
}

/* A save that fails midway (file size limit) leaves the previous file intact and no
 * temporary file behind. */
static void test_atomic(void) {
    int64_t small[] = {4}, large[] = {4096};
    gm_tensor *a = tensor_of(GM_F32, 1, small, 1), *b = tensor_of(GM_F32, 1, large, 2);
    const char *nm[] = {"w"};
    const char *p = path_in("atomic.st");
    gm_safetensors_save(C, p, 1, nm, &a, 0, NULL, NULL);
    size_t n0, n1;
    unsigned char *before = slurp(p, &n0);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    gm_status st = gm_safetensors_save(C, p, 1, nm, &b, 0, NULL, NULL);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", gm_errmsg(C));
    gm_status st2 = gm_npy_save(C, p, b);
    setrlimit(RLIMIT_FSIZE, &old);
    unsigned char *after = slurp(p, &n1);
    tap_ok(st != GM_OK && has(msg, "write failed") && has(msg, "atomic.st"), "a save that fails midway says so: %s", msg);
    tap_ok(st2 != GM_OK, "an npy save that fails midway fails too");
    tap_ok(before && after && n0 == n1 && !memcmp(before, after, n0), "the existing file is left untouched");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "ls -a %s | grep -q tmp-", dir);
    tap_ok(system(cmd) != 0, "no temporary file is left behind");
    free(before);
    free(after);
    gm_tensor_release(a);
    gm_tensor_release(b);
}

/* ---- npy ----------------------------------------------------------------------------------- */
static size_t mknpy(unsigned char *out, int major, const char *dict, const void *data, size_t dlen) {
    size_t pre = major == 1 ? 10 : 12, h = strlen(dict);
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)major, out[7] = 0;
    for (size_t i = 0; i < pre - 8; i++) out[8 + i] = (unsigned char)(h >> (8 * i));
    memcpy(out + pre, dict, h);
    memcpy(out + pre + h, data, dlen);
    return pre + h + dlen;
}

static gm_status load_npy_bytes(const unsigned char *b, size_t n, gm_tensor **x) {
    unsigned char *copy = malloc(n ? n : 1);
    memcpy(copy, b, n);
    gm_status st = gm_npy_load_mem(C, "mem.npy", copy, n, x);
    free(copy);
    return st;
}

static void test_npy(void) {
    int64_t s23[] = {2, 3}, s5[] = {5};
    gm_tensor *xs[] = {tensor_of(GM_F32, 2, s23, -1), tensor_of(GM_F64, 1, s5, 3), tensor_of(GM_I32, 0, NULL, 9)};
    bool ok = true;
    for (int i = 0; i < 3; i++) {
        gm_tensor *y = NULL;
        ok = ok && gm_npy_save(C, path_in("x.npy"), xs[i]) == GM_OK &&
             gm_npy_load(C, path_in("x.npy"), &y) == GM_OK && same(xs[i], y);
        gm_tensor_release(y);
    }
    size_t n;
    unsigned char *b = slurp(path_in("x.npy"), &n);
    tap_ok(ok, "npy: f32 [2,3], f64 (5,), i32 () round-trip exactly");
    tap_ok(b && !memcmp(b, "\x93NUMPY\x01\x00", 8) && (10 + (b[8] | b[9] << 8)) % 64 == 0 &&
           find(b, n, "'shape': (), }", 14) && b[10 + (b[8] | b[9] << 8) - 1] == '\n',
           "npy: v1.0 header, 64-byte aligned, ends in a newline, shape ()");
    free(b);
    for (int i = 0; i < 3; i++) gm_tensor_release(xs[i]);

    unsigned char buf[512];
    float f6[6] = {0, 1, 2, 3, 4, 5};
    gm_tensor *y = NULL;
    /* Fortran order: memory 0..5 over shape (2, 3) means a[i][j] = f6[i + 2j] */
    n = mknpy(buf, 2, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n", f6, 24);
    ok = load_npy_bytes(buf, n, &y) == GM_OK && y->shape[0] == 2 && y->shape[1] == 3 &&
         gm_tensor_get_flat(y, 1) == 2 && gm_tensor_get_flat(y, 3) == 1 && gm_tensor_is_contiguous(y);
    tap_ok(ok, "npy: v2.0 with fortran_order True loads into C order");
    gm_tensor_release(y);
    unsigned char be[8] = {0x3f, 0xf8, 0, 0, 0, 0, 0, 0}; /* 1.5 as >f8 */
    n = mknpy(buf, 3, "{\"descr\":\">f8\",\"shape\":(1,),\"fortran_order\":False}", be, 8);
    ok = load_npy_bytes(buf, n, &y) == GM_OK && y->dtype == GM_F64 && gm_tensor_get_flat(y, 0) == 1.5;
    tap_ok(ok, "npy: v3.0, double quotes, any key order, big-endian >f8");
    gm_tensor_release(y);
    int64_t i8[2] = {-3, 1000};
    n = mknpy(buf, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", i8, 16);
    ok = load_npy_bytes(buf, n, &y) == GM_OK && y->dtype == GM_I32 && gm_tensor_get_flat(y, 1) == 1000;
    tap_ok(ok, "npy: <i8 loads as i32");
    gm_tensor_release(y);

    struct { const char *dict; size_t dlen; const char *want; } bad[] = {
        {"{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", 2, "not supported"},
        {"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", 8, "pickled"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", 4, "structured"},
        {"{'descr': '<f4', 'shape': (2,), }", 8, "missing key 'fortran_order'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8, "duplicate key"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8, "unknown key"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 8, "truncated"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 8, "extra bytes"},
        {"{'descr': '<f4', 'fortran_order': maybe, 'shape': (1,), }", 4, "True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 4, "non-negative"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 4, "overflows"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 0, "overflows"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4, "more than 8 dims"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x", 4, "after the dict"},
    };
    int good = 0;
    char zeros[64] = {0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        n = mknpy(buf, 1, bad[i].dict, zeros, bad[i].dlen);
        y = NULL;
        gm_status st = load_npy_bytes(buf, n, &y);
        bool g = st != GM_OK && has(gm_errmsg(C), "mem.npy") && has(gm_errmsg(C), bad[i].want);
        if (!g) tap_diag("npy case %zu: %s", i, st == GM_OK ? "loaded" : gm_errmsg(C));
        good += g;
        gm_tensor_release(y);
    }
    tap_ok(good == (int)(sizeof bad / sizeof *bad), "npy: %zu malformed headers refused with their reason",
           sizeof bad / sizeof *bad);
    n = mknpy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", zeros, 4);
    buf[6] = 4;
    tap_ok(load_npy_bytes(buf, n, &y) != GM_OK && has(gm_errmsg(C), "version 4.0"),
           "npy: an unknown version is refused: %s", gm_errmsg(C));
    buf[6] = 2;
    buf[8] = buf[9] = buf[10] = buf[11] = 0xff;
    tap_ok(load_npy_bytes(buf, n, &y) != GM_OK && has(gm_errmsg(C), "limit"),
           "npy: a huge header length is refused: %s", gm_errmsg(C));
    gm_tensor *missing = NULL;
    tap_ok(gm_npy_load(C, path_in("nope.npy"), &missing) != GM_OK && has(gm_errmsg(C), "nope.npy"),
           "npy: a missing file names the path");
}

/* ---- the mutated-file corpus --------------------------------------------------------------- */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

typedef struct tally { int total, loaded, refused, bad_msg; } tally;

static void try_st(const unsigned char *b, size_t n, tally *t) {
    gm_st_file f;
    gm_status st = load_st_bytes(b, n, &f);
    t->total++;
    if (st == GM_OK) {
        t->loaded++;
        gm_st_file_free(&f);
    } else {
        t->refused++;
        if (!has(gm_errmsg(C), "mem.st")) {
            if (t->bad_msg++ < 3) tap_diag("message without the file name: %s", gm_errmsg(C));
        }
    }
}

static void try_npy(const unsigned char *b, size_t n, tally *t) {
    gm_tensor *x = NULL;
    gm_status st = load_npy_bytes(b, n, &x);
    t->total++;
    if (st == GM_OK) t->loaded++;
    else {
        t->refused++;
        if (!has(gm_errmsg(C), "mem.npy") && t->bad_msg++ < 3) tap_diag("message without the file name: %s", gm_errmsg(C));
    }
    gm_tensor_release(x);
}

/* Replace the first occurrence of `from` in the header region by `to` (same length). */
static bool edit(unsigned char *b, size_t n, const char *from, const char *to) {
    unsigned char *p = find(b, n, from, strlen(from));
    if (!p) return false;
    memcpy(p, to, strlen(to));
    return true;
}

static void corpus_st(const unsigned char *valid, size_t len, tally *t) {
    unsigned char *b = malloc(len + 64);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | valid[i];
    for (size_t k = 0; k <= len; k++) try_st(valid, k, t); /* every truncation */
    for (int r = 0; r < 3000; r++) { /* byte flips: mostly in the length field and the header */
        memcpy(b, valid, len);
        int flips = 1 + (int)(rnd() % 4);
        for (int i = 0; i < flips; i++) {
            size_t at = rnd() % 4 == 0 ? rnd() % 8 : rnd() % 5 ? 8 + rnd() % hlen : rnd() % len;
            b[at] = rnd() % 2 ? (unsigned char)rnd() : b[at] ^ (unsigned char)(1u << (rnd() % 8));
        }
        try_st(b, len, t);
    }
    const uint64_t forged[] = {0, 1, 2, 7, hlen - 1, hlen + 1, len - 8, len - 7, len, 1ull << 32,
                               GM_ST_HEADER_MAX, GM_ST_HEADER_MAX + 1, 1ull << 63, UINT64_MAX,
                               UINT64_MAX - 7, (uint64_t)-(int64_t)hlen, (uint64_t)-8};
    for (size_t i = 0; i < sizeof forged / sizeof *forged; i++) {
        memcpy(b, valid, len);
        for (int j = 0; j < 8; j++) b[j] = (unsigned char)(forged[i] >> (8 * j));
        try_st(b, len, t);
    }
    /* header edits: same-length substitutions that keep the JSON well-formed */
    const char *edits[][2] = {
        {"\"bias\"", "\"ids\" "}, {"\"empty\"", "\"bias\" "}, {"\"ids\"", "\"ids\""},
        {"[0,32]", "[0,24]"}, {"[0,32]", "[8,40]"}, {"\"F64\"", "\"F32\""}, {"\"F64\"", "\"I64\""},
        {"\"F64\"", "\"BF16"}, {"\"I32\"", "\"F16\""}, {"[2,3]", "[3,2]"}, {"[2,3]", "[2,9]"},
        {"[4]", "[0]"}, {"[4]", "[8]"}, {"\"shape\":[]", "\"shape\":{}"}, {"\"data_offsets\"", "\"data_offsetz\""},
        {"__metadata__", "__metadata_x"}, {"{\"format\":\"pt\"", "{\"format\":1234"}, {"\"note\"", "\"format"},
        {"\"dtype\"", "\"shape\""}, {"\"step\"", "\"\\u0000\""}, {"\"empty\"", "\"\\ud800\""},
    };
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        memcpy(b, valid, len);
        if (edit(b + 8, hlen, edits[i][0], edits[i][1])) try_st(b, len, t);
    }
    /* swapped data_offsets between two entries, and random digit rewrites */
    for (int r = 0; r < 500; r++) {
        memcpy(b, valid, len);
        for (int i = 0; i < 3; i++) {
            size_t at = 8 + rnd() % hlen;
            if (b[at] >= '0' && b[at] <= '9') b[at] = (unsigned char)('0' + rnd() % 10);
            else if (b[at] == ',' && rnd() % 4 == 0) b[at] = ']';
        }
        try_st(b, len, t);
    }
    /* a header grown by one byte (extra digit) with the length fixed up */
    for (int r = 0; r < 200; r++) {
        size_t at = 8 + rnd() % hlen;
        memcpy(b, valid, at);
        b[at] = (unsigned char)"0123456789,[]{}\" "[rnd() % 17];
        memcpy(b + at + 1, valid + at, len - at);
        uint64_t h = hlen + 1;
        for (int j = 0; j < 8; j++) b[j] = (unsigned char)(h >> (8 * j));
        try_st(b, len + 1, t);
    }
    free(b);
}

static void corpus_npy(tally *t) {
    int64_t s[] = {3, 4};
    gm_tensor *x = tensor_of(GM_F64, 2, s, 1);
    gm_npy_save(C, path_in("c.npy"), x);
    gm_tensor_release(x);
    size_t len;
    unsigned char *valid = slurp(path_in("c.npy"), &len), *b = malloc(len + 8);
    for (size_t k = 0; k <= len; k++) try_npy(valid, k, t);
    for (int r = 0; r < 2000; r++) {
        memcpy(b, valid, len);
        int flips = 1 + (int)(rnd() % 3);
        for (int i = 0; i < flips; i++) {
            size_t at = rnd() % 3 == 0 ? rnd() % 10 : rnd() % 128;
            b[at] = rnd() % 2 ? (unsigned char)rnd() : b[at] ^ (unsigned char)(1u << (rnd() % 8));
        }
        try_npy(b, len, t);
    }
    for (int v = 1; v <= 3; v++)
        for (int r = 0; r < 16; r++) { /* forged versions and header lengths */
            memcpy(b, valid, len);
            b[6] = (unsigned char)v;
            uint32_t h = r < 8 ? (uint32_t)rnd() : (uint32_t)(118 + r - 12);
            for (int j = 0; j < (v == 1 ? 2 : 4); j++) b[8 + j] = (unsigned char)(h >> (8 * j));
            try_npy(b, len, t);
        }
    const char *edits[][2] = {
        {"'<f8'", "'<f4'"}, {"'<f8'", "'>f8'"}, {"'<f8'", "'|u1'"}, {"'<f8'", "'<c8'"}, {"False", "True "},
        {"(3, 4)", "(4, 3)"}, {"(3, 4)", "(3,)  "}, {"(3, 4)", "()    "}, {"(3, 4)", "(0, 4)"},
        {"(3, 4)", "(3, 4,"}, {"'shape'", "'shapf'"}, {"{'descr'", "['descr'"}, {"(3, 4)", "(3L,4)"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        memcpy(b, valid, len);
        if (edit(b, 128, edits[i][0], edits[i][1])) try_npy(b, len, t);
    }
    free(b);
    free(valid);
}

static void test_corpus(const unsigned char *valid, size_t len) {
    tally st = {0}, np = {0};
    corpus_st(valid, len, &st);
    tap_ok(st.total > 3000 && st.bad_msg == 0,
           "safetensors corpus: %d mutated files, %d loaded, %d refused with a message naming the file",
           st.total, st.loaded, st.refused);
    corpus_npy(&np);
    tap_ok(np.total > 2000 && np.bad_msg == 0,
           "npy corpus: %d mutated files, %d loaded, %d refused with a message naming the file",
           np.total, np.loaded, np.refused);
}

int main(void) {
    C = gm_ctx_new();
    snprintf(dir, sizeof dir, "%s", "/tmp/gmoe-t_io-XXXXXX");
    if (!mkdtemp(dir)) {
        printf("1..0 # SKIP cannot create a temporary directory\n");
        return 0;
    }
    test_json();
    size_t len = 0;
    unsigned char *valid = valid_st(&len);
    test_st_errors();
    test_st_conversions();
    test_st_save_errors();
    test_atomic();
    test_npy();
    if (valid) test_corpus(valid, len);
    free(valid);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) tap_diag("could not remove %s", dir);
    gm_ctx_free(C);
    return tap_done();
}
