/* json.c: the strict JSON parser behind file headers (see json.h). Recursive descent over a
 * length-bounded buffer: every read checks the bound, nesting stops at GM_JSON_MAX_DEPTH, and
 * a failed parse frees what it built. Errors say what was expected and at which byte. */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    gm_ctx *c;
    const char *what;
    const unsigned char *s;
    size_t len, pos;
    int depth;
} parser;

static gm_status perr(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static gm_status perr(parser *p, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gm_errf(p->c, GM_EIO, "%s: header JSON: %s at byte %zu", p->what, msg, p->pos);
}

static gm_status oom(parser *p) {
    return gm_errf(p->c, GM_ENOMEM, "%s: header JSON: out of memory", p->what);
}

const char *gm_json_type_name(gm_json_type t) {
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "?";
}

static void node_clear(gm_json *v) {
    if (!v) return;
    for (size_t i = 0; i < v->n; i++) {
        node_clear(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof *v);
}

void gm_json_free(gm_json *v) {
    node_clear(v);
    free(v);
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        unsigned char ch = p->s[p->pos];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') break;
        p->pos++;
    }
}

static const char *byte_desc(parser *p, char *buf, size_t n) {
    if (p->pos >= p->len) return "the end of the header";
    unsigned char ch = p->s[p->pos];
    if (ch >= 0x20 && ch < 0x7f) snprintf(buf, n, "'%c'", ch);
    else snprintf(buf, n, "byte 0x%02x", ch);
    return buf;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when invalid (overlong forms,
 * surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char b = s[0];
    size_t k;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) k = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        k = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        k = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < k) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < k; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return k;
}

bool gm_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (!u[i]) return false;
        size_t k = utf8_len(u + i, n - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

static int hex4(const unsigned char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char ch = s[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9') v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F') v |= (unsigned)(ch - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(unsigned cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string starting at the opening quote; *out (owned) holds the decoded UTF-8. Decoded text
 * is never longer than its source, so one allocation of the source span suffices. */
static gm_status parse_string(parser *p, char **out, size_t *out_len) {
    size_t start = ++p->pos, end = start;
    while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len) { p->pos = start - 1; return perr(p, "unterminated string"); }
    char *buf = malloc(end - start + 1), *o = buf;
    if (!buf) return oom(p);
    while (p->pos < end) {
        unsigned char ch = p->s[p->pos];
        if (ch < 0x20) { free(buf); return perr(p, "control character 0x%02x in a string", ch); }
        if (ch >= 0x80) {
            size_t k = utf8_len(p->s + p->pos, end - p->pos);
            if (!k) { free(buf); return perr(p, "invalid UTF-8 in a string"); }
            memcpy(o, p->s + p->pos, k);
            o += k, p->pos += k;
            continue;
        }
        if (ch != '\\') { *o++ = (char)ch; p->pos++; continue; }
        unsigned char e = p->s[p->pos + 1]; /* end is past it: the scan above skipped pairs */
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *hit = e ? strchr(from, e) : NULL;
        if (hit) { *o++ = to[hit - from]; p->pos += 2; continue; }
        if (e != 'u') { free(buf); return perr(p, "invalid escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?'); }
        unsigned cp, lo;
        if (p->pos + 6 > end || !hex4(p->s + p->pos + 2, &cp)) {
            free(buf);
            return perr(p, "\\u needs 4 hex digits");
        }
        p->pos += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) { free(buf); return perr(p, "lone low surrogate \\u%04x", cp); }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (p->pos + 6 > end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u' ||
                !hex4(p->s + p->pos + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                free(buf);
                return perr(p, "high surrogate \\u%04x without its low half", cp);
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p->pos += 6;
        }
        if (cp == 0) { free(buf); return perr(p, "\\u0000 in a string is not supported"); }
        o += put_utf8(cp, o);
    }
    p->pos = end + 1;
    *o = '\0';
    *out = buf;
    *out_len = (size_t)(o - buf);
    return GM_OK;
}

static gm_status parse_number(parser *p, gm_json *v) {
    size_t start = p->pos;
    const unsigned char *s = p->s;
    bool is_int = true;
#define DIGIT(i) ((i) < p->len && s[i] >= '0' && s[i] <= '9')
    if (p->pos < p->len && s[p->pos] == '-') p->pos++;
    if (!DIGIT(p->pos)) return perr(p, "a digit expected in a number");
    if (s[p->pos] == '0') p->pos++;
    else while (DIGIT(p->pos)) p->pos++;
    if (p->pos < p->len && s[p->pos] == '.') {
        is_int = false;
        p->pos++;
        if (!DIGIT(p->pos)) return perr(p, "a digit expected after '.'");
        while (DIGIT(p->pos)) p->pos++;
    }
    if (p->pos < p->len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
        is_int = false;
        p->pos++;
        if (p->pos < p->len && (s[p->pos] == '+' || s[p->pos] == '-')) p->pos++;
        if (!DIGIT(p->pos)) return perr(p, "a digit expected in an exponent");
        while (DIGIT(p->pos)) p->pos++;
    }
#undef DIGIT
    size_t n = p->pos - start;
    v->str = malloc(n + 1);
    if (!v->str) return oom(p);
    memcpy(v->str, s + start, n);
    v->str[n] = '\0';
    v->len = n;
    v->type = GM_JSON_NUM;
    v->is_int = is_int;
    return GM_OK;
}

static int cmp_key(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Duplicate keys make the meaning of a header ambiguous: refuse them. Sorting a copy keeps
 * this O(n log n) for headers with many tensors. */
static gm_status check_dups(parser *p, const gm_json *v) {
    if (v->n < 2) return GM_OK;
    const char *dup = NULL;
    if (v->n <= 8) {
        for (size_t i = 0; i < v->n && !dup; i++)
            for (size_t j = i + 1; j < v->n; j++)
                if (!strcmp(v->keys[i], v->keys[j])) { dup = v->keys[i]; break; }
    } else {
        char **ks = malloc(v->n * sizeof *ks);
        if (!ks) return oom(p);
        memcpy(ks, v->keys, v->n * sizeof *ks);
        qsort(ks, v->n, sizeof *ks, cmp_key);
        for (size_t i = 1; i < v->n; i++)
            if (!strcmp(ks[i - 1], ks[i])) { dup = ks[i]; break; }
        free(ks);
    }
    if (dup) return perr(p, "duplicate key \"%.80s\"", dup);
    return GM_OK;
}

static gm_status parse_value(parser *p, gm_json *v);

/* Grow items (and keys for objects) to hold one more member. */
static gm_status grow(parser *p, gm_json *v, size_t *cap, bool obj) {
    if (v->n < *cap) return GM_OK;
    size_t nc = *cap ? *cap * 2 : 4;
    gm_json *items = realloc(v->items, nc * sizeof *items);
    if (!items) return oom(p);
    v->items = items;
    if (obj) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys) return oom(p);
        v->keys = keys;
    }
    *cap = nc;
    return GM_OK;
}

static gm_status parse_container(parser *p, gm_json *v, bool obj) {
    char close = obj ? '}' : ']', bd[32];
    size_t cap = 0;
    gm_status st;
    v->type = obj ? GM_JSON_OBJ : GM_JSON_ARR;
    if (++p->depth > GM_JSON_MAX_DEPTH) return perr(p, "nesting deeper than %d", GM_JSON_MAX_DEPTH);
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == (unsigned char)close) {
        p->pos++;
        p->depth--;
        return GM_OK;
    }
    for (;;) {
        if ((st = grow(p, v, &cap, obj)) != GM_OK) return st;
        gm_json *item = &v->items[v->n];
        memset(item, 0, sizeof *item);
        if (obj) {
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return perr(p, "a string key expected, got %s", byte_desc(p, bd, sizeof bd));
            size_t klen;
            char *key;
            if ((st = parse_string(p, &key, &klen)) != GM_OK) return st;
            v->keys[v->n] = key;
            v->n++; /* counted now so a failure below frees the key */
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':')
                return perr(p, "':' expected after key \"%.80s\", got %s", key, byte_desc(p, bd, sizeof bd));
            p->pos++;
        } else {
            v->n++;
        }
        if ((st = parse_value(p, item)) != GM_OK) return st;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->s[p->pos] == (unsigned char)close) { p->pos++; break; }
        return perr(p, "',' or '%c' expected, got %s", close, byte_desc(p, bd, sizeof bd));
    }
    p->depth--;
    return obj ? check_dups(p, v) : GM_OK;
}

static bool lit(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n)) return false;
    p->pos += n;
    return true;
}

static gm_status parse_value(parser *p, gm_json *v) {
    char bd[32];
    skip_ws(p);
    if (p->pos >= p->len) return perr(p, "a value expected, got the end of the header");
    unsigned char ch = p->s[p->pos];
    switch (ch) {
    case '{': return parse_container(p, v, true);
    case '[': return parse_container(p, v, false);
    case '"': v->type = GM_JSON_STR; return parse_string(p, &v->str, &v->len);
    case 't': if (lit(p, "true")) { v->type = GM_JSON_BOOL; v->b = true; return GM_OK; } break;
    case 'f': if (lit(p, "false")) { v->type = GM_JSON_BOOL; return GM_OK; } break;
    case 'n': if (lit(p, "null")) { v->type = GM_JSON_NULL; return GM_OK; } break;
    default:
        if (ch == '-' || (ch >= '0' && ch <= '9')) return parse_number(p, v);
    }
    return perr(p, "a value expected, got %s", byte_desc(p, bd, sizeof bd));
}

gm_status gm_json_parse(gm_ctx *c, const char *what, const char *text, size_t len, gm_json **out) {
    parser p = {c, what, (const unsigned char *)text, len, 0, 0};
    gm_json *v = calloc(1, sizeof *v);
    if (!v) return oom(&p);
    gm_status st = parse_value(&p, v);
    if (st == GM_OK) {
        char bd[32];
        skip_ws(&p);
        if (p.pos < p.len) st = perr(&p, "trailing %s after the value", byte_desc(&p, bd, sizeof bd));
    }
    if (st != GM_OK) {
        gm_json_free(v);
        return st;
    }
    *out = v;
    return GM_OK;
}

const gm_json *gm_json_get(const gm_json *obj, const char *key) {
    if (!obj || obj->type != GM_JSON_OBJ) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (!strcmp(obj->keys[i], key)) return &obj->items[i];
    return NULL;
}

bool gm_json_u64(const gm_json *v, uint64_t *out) {
    if (!v || v->type != GM_JSON_NUM || !v->is_int || v->str[0] == '-') return false;
    uint64_t x = 0;
    for (size_t i = 0; i < v->len; i++) {
        unsigned d = (unsigned)(v->str[i] - '0');
        if (x > (UINT64_MAX - d) / 10) return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* ---- writing ------------------------------------------------------------------------------- */
void gm_buf_put(gm_buf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = true; return; }
        b->p = np, b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void gm_buf_puts(gm_buf *b, const char *s) { gm_buf_put(b, s, strlen(s)); }

void gm_buf_printf(gm_buf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) { b->oom = true; return; } /* only short items here */
    gm_buf_put(b, tmp, (size_t)n);
}

void gm_buf_json_str(gm_buf *b, const char *s) {
    gm_buf_put(b, "\"", 1);
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if (*q == '"' || *q == '\\') {
            char e[2] = {'\\', (char)*q};
            gm_buf_put(b, e, 2);
        } else if (*q < 0x20) {
            gm_buf_printf(b, "\\u%04x", *q);
        } else {
            gm_buf_put(b, q, 1);
        }
    }
    gm_buf_put(b, "\"", 1);
}

void gm_buf_free(gm_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
