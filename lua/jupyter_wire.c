/* jupyter_wire.c: the Jupyter wire format (messaging protocol 5.3). A message on a socket is
 * [identities..., "<IDS|MSG>", signature, header, parent_header, metadata, content, buffers...];
 * the signature is hex HMAC-SHA256 (OpenSSL's EVP_MAC) of the four JSON parts under the
 * connection file's key. A message whose signature is missing, wrong or already seen (a
 * replay) is dropped and logged, never handed on. Also the connection file and JSON text. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <zmq.h>

#include "jupyter.h"

#define DELIM "<IDS|MSG>"
#define MAX_FRAMES 256
#define MAX_CONN_FILE (1 << 20)

/* {====================================================================
** Logging
** ===================================================================== */

static int g_log_fd = 2;

void gm_jlog_fd(int fd) { g_log_fd = fd; }

void gm_jlog(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    int n = snprintf(buf, sizeof buf, "gmoe kernel: ");
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    n = (int)strlen(buf);
    buf[n++] = '\n';
    (void)!write(g_log_fd, buf, (size_t)n);
}

/* }==================================================================== */

/* {====================================================================
** JSON text
** ===================================================================== */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    unsigned cp = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

void gm_jbuf_str(gm_buf *b, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t run = 0; /* start of the bytes not yet copied */
    gm_buf_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        size_t len = c >= 0x80 ? utf8_len(s + i, n - i) : 0;
        if (len > 0) {
            i += len;
            continue;
        }
        gm_buf_put(b, s + run, i - run);
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            gm_buf_put(b, e, 2);
        } else if (c == '\n') {
            gm_buf_puts(b, "\\n");
        } else if (c == '\t') {
            gm_buf_puts(b, "\\t");
        } else if (c == '\r') {
            gm_buf_puts(b, "\\r");
        } else if (c < 0x20) {
            gm_buf_printf(b, "\\u%04x", c);
        } else {
            gm_buf_puts(b, "\xEF\xBF\xBD"); /* U+FFFD for a byte that is not UTF-8 */
        }
        run = ++i;
    }
    gm_buf_put(b, s + run, n - run);
    gm_buf_put(b, "\"", 1);
}

/* }==================================================================== */

/* {====================================================================
** Connection file
** ===================================================================== */

static const char *PORT_KEYS[GM_J_NCHAN] = {"shell_port", "iopub_port", "stdin_port",
                                            "control_port", "hb_port"};

static char *slurp(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    char *s;
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    s = malloc(MAX_CONN_FILE + 1);
    *len = s ? fread(s, 1, MAX_CONN_FILE + 1, f) : 0;
    fclose(f);
    if (!s || *len > MAX_CONN_FILE) {
        free(s);
        snprintf(err, errlen, "%s: %s", path, s ? "larger than 1 MiB" : "out of memory");
        return NULL;
    }
    return s;
}

/* The string member `key` of obj into out; false (err set) when it is there but not a string
 * that fits, or missing and required. */
static bool str_member(const gm_json *obj, const char *key, char *out, size_t n, bool required,
                       const char *path, char *err, size_t errlen) {
    const gm_json *v = gm_json_get(obj, key);
    if (!v) {
        if (required) snprintf(err, errlen, "%s: no \"%s\"", path, key);
        return !required;
    }
    if (v->type != GM_JSON_STR || v->len >= n) {
        snprintf(err, errlen, "%s: \"%s\" must be a string of at most %zu bytes", path, key, n - 1);
        return false;
    }
    memcpy(out, v->str, v->len + 1);
    return true;
}

bool gm_jconn_read(gm_jconn *c, const char *path, char *err, size_t errlen) {
    size_t len;
    char *text = slurp(path, &len, err, errlen);
    gm_ctx *ctx = gm_ctx_new();
    gm_json *j = NULL;
    bool ok = false;
    char scheme[32] = "hmac-sha256";
    memset(c, 0, sizeof *c);
    strcpy(c->transport, "tcp");
    if (!text || !ctx) goto done;
    if (gm_json_parse(ctx, path, text, len, &j) != GM_OK) {
        snprintf(err, errlen, "%s", gm_errmsg(ctx));
        goto done;
    }
    if (j->type != GM_JSON_OBJ) {
        snprintf(err, errlen, "%s: not a JSON object", path);
        goto done;
    }
    if (!str_member(j, "transport", c->transport, sizeof c->transport, false, path, err, errlen) ||
        !str_member(j, "ip", c->ip, sizeof c->ip, true, path, err, errlen) ||
        !str_member(j, "signature_scheme", scheme, sizeof scheme, false, path, err, errlen))
        goto done;
    if (strcmp(c->transport, "tcp") != 0 && strcmp(c->transport, "ipc") != 0) {
        snprintf(err, errlen, "%s: transport \"%s\" (expected tcp or ipc)", path, c->transport);
        goto done;
    }
    for (int ch = 0; ch < GM_J_NCHAN; ch++) {
        uint64_t port;
        const gm_json *v = gm_json_get(j, PORT_KEYS[ch]);
        if (!v || !gm_json_u64(v, &port) || port == 0 || port > 65535) {
            snprintf(err, errlen, "%s: \"%s\" must be a port number in 1..65535", path,
                     PORT_KEYS[ch]);
            goto done;
        }
        c->port[ch] = (int)port;
    }
    const gm_json *key = gm_json_get(j, "key");
    if (key && key->type != GM_JSON_STR) {
        snprintf(err, errlen, "%s: \"key\" must be a string", path);
        goto done;
    }
    if (key && key->len > 0) {
        if (strcmp(scheme, "hmac-sha256") != 0) {
            snprintf(err, errlen, "%s: signature_scheme \"%s\" (only hmac-sha256)", path, scheme);
            goto done;
        }
        c->key = malloc(key->len);
        if (!c->key) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        memcpy(c->key, key->str, key->len);
        c->keylen = key->len;
    }
    unsigned char rnd[16];
    if (getentropy(rnd, sizeof rnd) != 0) {
        snprintf(err, errlen, "getentropy: %s", strerror(errno));
        goto done;
    }
    for (int i = 0; i < 16; i++) snprintf(c->session + 2 * i, 3, "%02x", rnd[i]);
    const char *user = getenv("USER");
    snprintf(c->username, sizeof c->username, "%s", user && *user ? user : "gmoe");
    ok = true;
done:
    if (!ok) gm_jconn_free(c);
    gm_json_free(j);
    gm_ctx_free(ctx);
    free(text);
    return ok;
}

void gm_jconn_free(gm_jconn *c) {
    if (c->key) OPENSSL_cleanse(c->key, c->keylen);
    free(c->key);
    c->key = NULL;
    c->keylen = 0;
}

void gm_jconn_endpoint(const gm_jconn *c, int ch, char *buf, size_t n) {
    if (strcmp(c->transport, "ipc") == 0) snprintf(buf, n, "ipc://%s-%d", c->ip, c->port[ch]);
    else snprintf(buf, n, "tcp://%s:%d", c->ip, c->port[ch]);
}

/* }==================================================================== */

/* {====================================================================
** Signatures
** ===================================================================== */

/* hex HMAC-SHA256 of the four parts into hex[65]; false when OpenSSL fails. */
static bool sign(const gm_jconn *c, char *const part[4], const size_t len[4], char hex[65]) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    unsigned char md[32];
    size_t mdlen = 0;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    bool ok = ctx && EVP_MAC_init(ctx, c->key, c->keylen, params);
    for (int i = 0; ok && i < 4; i++) ok = EVP_MAC_update(ctx, (unsigned char *)part[i], len[i]);
    ok = ok && EVP_MAC_final(ctx, md, &mdlen, sizeof md) && mdlen == sizeof md;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    if (!ok) return false;
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return true;
}

/* Signatures of accepted messages, to refuse a message sent again (jupyter_client's
 * digest_history). Shared by the threads that receive (shell and stdin, control). */
#define SEEN_MAX 4096
static char g_seen[SEEN_MAX][64];
static size_t g_nseen, g_seen_next;
static pthread_mutex_t g_seen_lock = PTHREAD_MUTEX_INITIALIZER;

static bool seen_before(const char *sig) {
    bool dup = false;
    pthread_mutex_lock(&g_seen_lock);
    for (size_t i = 0; i < g_nseen && !dup; i++) dup = memcmp(g_seen[i], sig, 64) == 0;
    if (!dup) {
        memcpy(g_seen[g_seen_next], sig, 64);
        g_seen_next = (g_seen_next + 1) % SEEN_MAX;
        if (g_nseen < SEEN_MAX) g_nseen++;
    }
    pthread_mutex_unlock(&g_seen_lock);
    return dup;
}

/* }==================================================================== */

/* {====================================================================
** Receiving and sending
** ===================================================================== */

void gm_jmsg_free(gm_jmsg *m) {
    for (size_t i = 0; i < m->nids; i++) free(m->ids[i]);
    free(m->ids);
    free(m->idlen);
    for (int i = 0; i < 4; i++) free(m->part[i]);
    gm_json_free(m->header);
    memset(m, 0, sizeof *m);
}

/* All frames of one message: copies (NUL-terminated) in fr/frlen, count in *n. -1 when nothing
 * came (errno set); frames beyond MAX_FRAMES are read and dropped (*n = MAX_FRAMES + 1). */
static int recv_frames(void *sock, bool block, char **fr, size_t *frlen, size_t *n) {
    int more = 1;
    size_t k = 0;
    while (more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, sock, k == 0 && !block ? ZMQ_DONTWAIT : 0) < 0) {
            int e = errno;
            zmq_msg_close(&f);
            if (k == 0) {
                errno = e;
                return -1;
            }
            if (e == EINTR) continue; /* the rest of a message is there already */
            break;
        }
        more = zmq_msg_more(&f);
        if (k < MAX_FRAMES) {
            size_t len = zmq_msg_size(&f);
            fr[k] = malloc(len + 1);
            if (fr[k]) {
                memcpy(fr[k], zmq_msg_data(&f), len);
                fr[k][len] = '\0';
            }
            frlen[k] = len;
        }
        k++;
        zmq_msg_close(&f);
    }
    *n = k;
    return 0;
}

int gm_jmsg_recv(void *sock, const gm_jconn *c, gm_jmsg *m, bool block) {
    char *fr[MAX_FRAMES];
    size_t frlen[MAX_FRAMES], n = 0, d;
    int result = 0;
    memset(m, 0, sizeof *m);
    if (recv_frames(sock, block, fr, frlen, &n) < 0) return -1;
    size_t kept = n < MAX_FRAMES ? n : MAX_FRAMES;
    for (size_t i = 0; i < kept; i++)
        if (!fr[i]) {
            gm_jlog("dropped a message: out of memory");
            goto done;
        }
    if (n > MAX_FRAMES) {
        gm_jlog("dropped a message of more than %d frames", MAX_FRAMES);
        goto done;
    }
    for (d = 0; d < n && strcmp(fr[d], DELIM) != 0; d++) {}
    if (d + 6 > n) {
        gm_jlog("dropped a malformed message (%zu frames, %s)", n,
                d == n ? "no <IDS|MSG> delimiter" : "fewer than 5 parts after the delimiter");
        goto done;
    }
    if (c->key) {
        char hex[65];
        if (!sign(c, fr + d + 2, frlen + d + 2, hex)) {
            gm_jlog("dropped a message: HMAC computation failed");
            goto done;
        }
        if (frlen[d + 1] == 0) {
            gm_jlog("dropped a message without a signature");
            goto done;
        }
        if (frlen[d + 1] != 64 || CRYPTO_memcmp(hex, fr[d + 1], 64) != 0) {
            gm_jlog("dropped a message with a bad signature");
            goto done;
        }
        if (seen_before(hex)) {
            gm_jlog("dropped a replayed message (its signature was seen before)");
            goto done;
        }
    }
    gm_ctx *ctx = gm_ctx_new();
    if (!ctx || gm_json_parse(ctx, "header", fr[d + 2], frlen[d + 2], &m->header) != GM_OK) {
        gm_jlog("dropped a message: %s", ctx ? gm_errmsg(ctx) : "out of memory");
        gm_ctx_free(ctx);
        goto done;
    }
    gm_ctx_free(ctx);
    const gm_json *t = gm_json_get(m->header, "msg_type");
    if (m->header->type != GM_JSON_OBJ || !t || t->type != GM_JSON_STR) {
        gm_jlog("dropped a message whose header has no msg_type");
        goto done;
    }
    m->msg_type = t->str;
    m->nids = d;
    m->ids = calloc(d ? d : 1, sizeof *m->ids);
    m->idlen = calloc(d ? d : 1, sizeof *m->idlen);
    if (!m->ids || !m->idlen) goto done;
    for (size_t i = 0; i < d; i++) {
        m->ids[i] = fr[i], m->idlen[i] = frlen[i];
        fr[i] = NULL;
    }
    for (int i = 0; i < 4; i++) {
        m->part[i] = fr[d + 2 + i], m->partlen[i] = frlen[d + 2 + i];
        fr[d + 2 + i] = NULL;
    }
    result = 1;
done:
    for (size_t i = 0; i < kept; i++) free(fr[i]);
    if (result != 1) gm_jmsg_free(m);
    return result;
}

bool gm_jmsg_restart(const gm_jmsg *m) {
    gm_ctx *ctx = gm_ctx_new();
    gm_json *j = NULL;
    bool yes = false;
    if (ctx && gm_json_parse(ctx, "shutdown_request", m->part[3], m->partlen[3], &j) == GM_OK) {
        const gm_json *r = j->type == GM_JSON_OBJ ? gm_json_get(j, "restart") : NULL;
        yes = r && r->type == GM_JSON_BOOL && r->b;
    }
    gm_json_free(j);
    gm_ctx_free(ctx);
    return yes;
}

static atomic_ulong g_msg_count;

static void header_json(gm_buf *b, const gm_jconn *c, const char *msg_type) {
    struct timespec ts;
    struct tm tm;
    char date[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    gm_buf_printf(b, "{\"msg_id\": \"%s_%d_%lu\", \"session\": \"%s\", \"username\": ", c->session,
                  (int)getpid(), atomic_fetch_add(&g_msg_count, 1) + 1, c->session);
    gm_jbuf_str(b, c->username, strlen(c->username));
    gm_buf_printf(b, ", \"date\": \"%s.%06ldZ\", \"msg_type\": ", date, ts.tv_nsec / 1000);
    gm_jbuf_str(b, msg_type, strlen(msg_type));
    gm_buf_puts(b, ", \"version\": \"" GM_JUPYTER_PROTOCOL "\"}");
}

static int send_frame(void *sock, const void *p, size_t n, bool more) {
    for (;;) {
        if (zmq_send(sock, p, n, more ? ZMQ_SNDMORE : 0) >= 0) return 0;
        if (errno != EINTR) return -1;
    }
}

int gm_jmsg_send(void *sock, const gm_jconn *c, const char *lead, size_t nids, char *const *ids,
                 const size_t *idlen, const char *msg_type, const char *parent,
                 const char *metadata, const char *content) {
    gm_buf h = {0};
    char hex[65] = "";
    int rc = -1;
    header_json(&h, c, msg_type);
    if (h.oom) goto done;
    char *part[4] = {h.p, (char *)parent, (char *)metadata, (char *)content};
    size_t len[4] = {h.n, strlen(parent), strlen(metadata), strlen(content)};
    if (c->key && !sign(c, part, len, hex)) {
        gm_jlog("could not sign a %s message (OpenSSL)", msg_type);
        goto done;
    }
    if (lead && send_frame(sock, lead, strlen(lead), true) < 0) goto done;
    for (size_t i = 0; i < nids; i++)
        if (send_frame(sock, ids[i], idlen[i], true) < 0) goto done;
    if (send_frame(sock, DELIM, strlen(DELIM), true) < 0 ||
        send_frame(sock, hex, strlen(hex), true) < 0)
        goto done;
    for (int i = 0; i < 4; i++)
        if (send_frame(sock, part[i], len[i], i < 3) < 0) goto done;
    rc = 0;
done:
    gm_buf_free(&h);
    return rc;
}

/* }==================================================================== */
