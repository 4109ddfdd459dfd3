/* jupyter.h: gmoe as a Jupyter kernel (messaging protocol 5.3 over ZeroMQ). Three files:
 * jupyter_wire.c (connection file, HMAC-SHA256 signing and checking, message frames, JSON
 * text), jupyter_io.c (the I/O thread: heartbeat, iopub, control, and the stdout/stderr pipes
 * turned into stream messages) and jupyter.c (the main thread: shell and stdin, the Lua module
 * gmoe.jupyter that lua/gmoe/kernel.lua answers requests with). */
#ifndef GM_JUPYTER_H
#define GM_JUPYTER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "json.h"
#include "lua.h"

#define GM_JUPYTER_PROTOCOL "5.3"

enum { GM_J_SHELL, GM_J_IOPUB, GM_J_STDIN, GM_J_CONTROL, GM_J_HB, GM_J_NCHAN };

/* What the connection file says. */
typedef struct gm_jconn {
    char transport[8]; /* "tcp" or "ipc" */
    char ip[256];
    int port[GM_J_NCHAN];
    unsigned char *key; /* HMAC key (NULL when empty: messages are then neither signed nor checked) */
    size_t keylen;
    char session[33]; /* this kernel's session id (random hex) */
    char username[64];
} gm_jconn;

/* Reads and checks a connection file; false with a message in err. */
bool gm_jconn_read(gm_jconn *c, const char *path, char *err, size_t errlen);
void gm_jconn_free(gm_jconn *c);
/* "tcp://127.0.0.1:5555" (or ipc://ip-port) for channel ch. */
void gm_jconn_endpoint(const gm_jconn *c, int ch, char *buf, size_t n);

/* Logging to the kernel's own stderr (saved before fd 2 becomes a pipe to the client). */
void gm_jlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void gm_jlog_fd(int fd);

/* s[0..n) as a quoted JSON string; invalid UTF-8 becomes U+FFFD, so any bytes a cell prints
 * give valid JSON. */
void gm_jbuf_str(gm_buf *b, const char *s, size_t n);

/* A received message whose signature checked: identities, the four JSON parts as text, the
 * header parsed. */
typedef struct gm_jmsg {
    size_t nids;
    char **ids;
    size_t *idlen;
    char *part[4]; /* header, parent_header, metadata, content (NUL-terminated) */
    size_t partlen[4];
    gm_json *header;
    const char *msg_type; /* in header */
} gm_jmsg;

/* Receives one message from sock (ZMQ_DONTWAIT when !block). Returns 1 with *m filled,
 * 0 when the message was dropped (bad or missing signature, a replay, malformed frames: logged),
 * -1 when nothing was there or the wait was interrupted (errno EAGAIN / EINTR). */
int gm_jmsg_recv(void *sock, const gm_jconn *c, gm_jmsg *m, bool block);
void gm_jmsg_free(gm_jmsg *m);
/* content.restart of a shutdown_request. */
bool gm_jmsg_restart(const gm_jmsg *m);

/* Sends a signed message: optional leading frame `lead` (the I/O thread's command "P"), the
 * identities (for iopub: the topic), "<IDS|MSG>", the signature, a new header of msg_type,
 * parent (JSON text, "{}" when none), metadata and content (JSON text). 0 or -1 (errno). */
int gm_jmsg_send(void *sock, const gm_jconn *c, const char *lead, size_t nids, char *const *ids,
                 const size_t *idlen, const char *msg_type, const char *parent,
                 const char *metadata, const char *content);

/* The I/O thread (jupyter_io.c). */
typedef struct gm_jio {
    const gm_jconn *conn;
    void *zctx;
    pthread_t main_thread; /* interrupt_request and shutdown_request signal it (SIGINT) */
    char *kernel_info;     /* content of kernel_info_reply (JSON), answered on control */
    int out_fd, err_fd;    /* read ends of the pipes that fd 1 and 2 write to */
    pthread_t thread;
    void *hb, *iopub, *control, *pair;
    char errmsg[512];
} gm_jio;

/* The inproc endpoint between the main thread and the I/O thread. Commands to the I/O thread,
 * one multipart message each, each answered "A" once done (the main thread waits, so nothing
 * it prints later can overtake a message): "P" + a signed iopub message (published after the
 * pipes are drained, so output and results stay in order); "S" + a parent header (JSON; ""
 * mutes the streams); "F" (drain); "Q" (drain and stop). From the I/O thread, unasked:
 * "X" + "0"|"1" (a shutdown_request came on control; "1": restart). */
#define GM_JIO_ENDPOINT "inproc://gmoe-kernel-io"

/* Binds hb, iopub and control and starts the thread. false with io->errmsg set. */
bool gm_jio_start(gm_jio *io);
void gm_jio_join(gm_jio *io);

/* `gmoe kernel -f FILE`: runs the kernel on L (gmoe already set up) until shutdown. Returns
 * 0, or 1 after printing why it could not start. */
int gm_jupyter_run(lua_State *L, const char *connection_file);
/* The module gmoe.jupyter (for package.preload). */
int gm_jupyter_open(lua_State *L);

#endif
