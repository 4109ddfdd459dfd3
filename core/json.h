/* json.h: a small strict JSON parser (RFC 8259) for file headers (safetensors): a DOM of
 * nodes in one allocation tree, duplicate object keys refused, UTF-8 validated, nesting
 * capped. Numbers keep their text so integers are read exactly. Plus a growable buffer with
 * a JSON string writer for the headers gmoe writes. */
#ifndef GM_JSON_H
#define GM_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gm.h"

typedef enum { GM_JSON_NULL, GM_JSON_BOOL, GM_JSON_NUM, GM_JSON_STR, GM_JSON_ARR, GM_JSON_OBJ } gm_json_type;

typedef struct gm_json {
    gm_json_type type;
    bool b;                 /* BOOL */
    bool is_int;            /* NUM: no fraction, no exponent */
    char *str;              /* STR: NUL-terminated UTF-8 (no NUL inside); NUM: the number's text */
    size_t len;             /* STR/NUM: bytes in str */
    size_t n;               /* ARR/OBJ: number of items */
    struct gm_json *items;  /* ARR/OBJ: the values, in file order */
    char **keys;            /* OBJ: keys[i] names items[i] */
} gm_json;

#define GM_JSON_MAX_DEPTH 64

/* Parse text[0..len) as one JSON value with only whitespace around it. `what` (a file name)
 * starts every error message. On success *out is owned: free it with gm_json_free. */
gm_status gm_json_parse(gm_ctx *c, const char *what, const char *text, size_t len, gm_json **out);
void gm_json_free(gm_json *v);

/* Member `key` of an object, or NULL. */
const gm_json *gm_json_get(const gm_json *obj, const char *key);
/* An integer number in [0, 2^64): true and *out set; false for anything else. */
bool gm_json_u64(const gm_json *v, uint64_t *out);
const char *gm_json_type_name(gm_json_type t);
/* s[0..n) is valid UTF-8 with no NUL byte (what a header string may hold). */
bool gm_utf8_valid(const char *s, size_t n);

/* A growable byte buffer; `oom` is sticky so writers can check once at the end. */
typedef struct gm_buf {
    char *p;
    size_t n, cap;
    bool oom;
} gm_buf;
void gm_buf_put(gm_buf *b, const void *s, size_t n);
void gm_buf_puts(gm_buf *b, const char *s);
void gm_buf_printf(gm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a quoted JSON string (control characters and " \ escaped; other bytes as they are). */
void gm_buf_json_str(gm_buf *b, const char *s);
void gm_buf_free(gm_buf *b);

#endif
