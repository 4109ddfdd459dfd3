/* jupyter_io.c: the kernel's I/O thread. It answers what must be answered while a cell runs:
 * the heartbeat (echo), the control channel (kernel_info, interrupt_request and
 * shutdown_request, which reach the running cell as SIGINT), and it owns iopub: the main
 * thread's messages come over an inproc pair and the bytes written to fd 1 and 2 (print, C
 * code, child processes) come through pipes and leave as stream messages as they are produced.
 * The pipes are drained before each message from the main thread is published, so a cell's
 * output, figures and result reach the client in the order they were made. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "jupyter.h"

#define READ_CHUNK 65536

typedef struct stream {
    int fd;
    const char *name; /* "stdout" / "stderr" */
    char carry[4];    /* an incomplete UTF-8 sequence at the end of the last read */
    size_t ncarry;
} stream;

typedef struct iostate {
    gm_jio *io;
    stream out, err;
    char *parent; /* parent header of stream messages; NULL: streams are muted */
    bool stop;
} iostate;

static void publish(iostate *s, const char *msg_type, const char *parent, const char *content) {
    char *topic = (char *)msg_type;
    size_t tlen = strlen(msg_type);
    if (gm_jmsg_send(s->io->iopub, s->io->conn, NULL, 1, &topic, &tlen, msg_type, parent, "{}",
                     content) < 0)
        gm_jlog("could not publish %s: %s", msg_type, zmq_strerror(errno));
}

/* How many bytes of b[0..n) end before an incomplete UTF-8 sequence that a later read may
 * complete (a sequence cut by the pipe); invalid bytes are left to gm_jbuf_str. */
static size_t complete_prefix(const unsigned char *b, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned c = b[n - back];
        if ((c & 0xC0) == 0x80) continue; /* a continuation byte: look further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? n - back : n;
    }
    return n;
}

/* Publishes what the pipe holds now (all of it when drain, else one read). */
static void pump(iostate *s, stream *st, bool drain) {
    char buf[READ_CHUNK + 4];
    for (;;) {
        memcpy(buf, st->carry, st->ncarry);
        ssize_t r = read(st->fd, buf + st->ncarry, READ_CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return;
        size_t n = st->ncarry + (size_t)r, keep = complete_prefix((unsigned char *)buf, n);
        st->ncarry = n - keep;
        memcpy(st->carry, buf + keep, st->ncarry);
        if (s->parent && keep > 0) {
            gm_buf b = {0};
            gm_buf_printf(&b, "{\"name\": \"%s\", \"text\": ", st->name);
            gm_jbuf_str(&b, buf, keep);
            gm_buf_puts(&b, "}");
            if (!b.oom) publish(s, "stream", s->parent, b.p);
            gm_buf_free(&b);
        }
        if (!drain) return;
    }
}

static void drain(iostate *s) {
    pump(s, &s->out, true);
    pump(s, &s->err, true);
}

/* Frames of one multipart message from the pair (at most 16; the rest dropped). */
static size_t recv_all(void *sock, zmq_msg_t *fr, size_t max) {
    size_t n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, sock, 0) < 0) {
            zmq_msg_close(&f);
            if (errno == EINTR) continue;
            break;
        }
        more = zmq_msg_more(&f);
        if (n < max) fr[n++] = f;
        else zmq_msg_close(&f);
    }
    return n;
}

static void send_str(void *sock, const char *a, const char *b) {
    zmq_send(sock, a, strlen(a), b ? ZMQ_SNDMORE : 0);
    if (b) zmq_send(sock, b, strlen(b), 0);
}

/* A command from the main thread (see GM_JIO_ENDPOINT), answered "A" once done. */
static void from_main(iostate *s) {
    zmq_msg_t fr[16];
    size_t n = recv_all(s->io->pair, fr, 16);
    const char *cmd = n ? zmq_msg_data(&fr[0]) : "";
    char c = n && zmq_msg_size(&fr[0]) == 1 ? cmd[0] : '?';
    drain(s);
    if (c == 'P') {
        for (size_t i = 1; i < n; i++)
            zmq_msg_send(&fr[i], s->io->iopub, i + 1 < n ? ZMQ_SNDMORE : 0);
    } else if (c == 'S' && n == 2) {
        free(s->parent);
        size_t len = zmq_msg_size(&fr[1]);
        s->parent = len ? strndup(zmq_msg_data(&fr[1]), len) : NULL;
    } else if (c == 'Q') {
        s->stop = true;
    } else if (c != 'F') {
        gm_jlog("internal: unknown command from the main thread");
    }
    send_str(s->io->pair, "A", NULL);
    for (size_t i = 0; i < n; i++) zmq_msg_close(&fr[i]);
}

static void reply(iostate *s, const gm_jmsg *m, const char *msg_type, const char *content) {
    if (gm_jmsg_send(s->io->control, s->io->conn, NULL, m->nids, m->ids, m->idlen, msg_type,
                     m->part[0], "{}", content) < 0)
        gm_jlog("could not send %s: %s", msg_type, zmq_strerror(errno));
}

/* A request on the control channel. */
static void control(iostate *s) {
    gm_jmsg m;
    if (gm_jmsg_recv(s->io->control, s->io->conn, &m, false) != 1) return;
    publish(s, "status", m.part[0], "{\"execution_state\": \"busy\"}");
    if (strcmp(m.msg_type, "kernel_info_request") == 0) {
        reply(s, &m, "kernel_info_reply", s->io->kernel_info);
    } else if (strcmp(m.msg_type, "interrupt_request") == 0) {
        pthread_kill(s->io->main_thread, SIGINT); /* the REPL's Ctrl-C */
        reply(s, &m, "interrupt_reply", "{\"status\": \"ok\"}");
    } else if (strcmp(m.msg_type, "shutdown_request") == 0) {
        bool again = gm_jmsg_restart(&m);
        const char *content = again ? "{\"status\": \"ok\", \"restart\": true}"
                                    : "{\"status\": \"ok\", \"restart\": false}";
        reply(s, &m, "shutdown_reply", content);
        publish(s, "shutdown_reply", m.part[0], content);
        send_str(s->io->pair, "X", again ? "1" : "0");
        pthread_kill(s->io->main_thread, SIGINT); /* stop a running cell */
    } else {
        gm_jlog("no handler for %s on the control channel", m.msg_type);
    }
    publish(s, "status", m.part[0], "{\"execution_state\": \"idle\"}");
    gm_jmsg_free(&m);
}

static void heartbeat(void *hb) {
    zmq_msg_t fr[16];
    size_t n = recv_all(hb, fr, 16);
    for (size_t i = 0; i < n; i++) zmq_msg_send(&fr[i], hb, i + 1 < n ? ZMQ_SNDMORE : 0);
    for (size_t i = 0; i < n; i++) zmq_msg_close(&fr[i]);
}

static void *io_main(void *arg) {
    iostate s = {.io = arg, .out = {.name = "stdout"}, .err = {.name = "stderr"}};
    s.out.fd = s.io->out_fd;
    s.err.fd = s.io->err_fd;
    publish(&s, "status", "{}", "{\"execution_state\": \"starting\"}");
    while (!s.stop) {
        zmq_pollitem_t it[] = {{s.io->pair, 0, ZMQ_POLLIN, 0}, {s.io->control, 0, ZMQ_POLLIN, 0},
                               {s.io->hb, 0, ZMQ_POLLIN, 0}, {NULL, s.out.fd, ZMQ_POLLIN, 0},
                               {NULL, s.err.fd, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 5, -1) < 0) {
            if (errno == EINTR) continue;
            gm_jlog("I/O thread: poll: %s", zmq_strerror(errno));
            break;
        }
        if (it[2].revents) heartbeat(s.io->hb);
        if (it[3].revents) pump(&s, &s.out, false);
        if (it[4].revents) pump(&s, &s.err, false);
        if (it[1].revents) control(&s);
        if (it[0].revents) from_main(&s);
    }
    free(s.parent);
    return NULL;
}

static void *bound(gm_jio *io, int type, int ch) {
    char ep[300];
    int linger = 1000;
    void *sock = zmq_socket(io->zctx, type);
    gm_jconn_endpoint(io->conn, ch, ep, sizeof ep);
    if (!sock || zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(sock, ep) != 0) {
        snprintf(io->errmsg, sizeof io->errmsg, "cannot bind %s: %s", ep, zmq_strerror(errno));
        if (sock) zmq_close(sock);
        return NULL;
    }
    return sock;
}

bool gm_jio_start(gm_jio *io) {
    sigset_t all, old;
    io->hb = bound(io, ZMQ_REP, GM_J_HB);
    io->iopub = io->hb ? bound(io, ZMQ_PUB, GM_J_IOPUB) : NULL;
    io->control = io->iopub ? bound(io, ZMQ_ROUTER, GM_J_CONTROL) : NULL;
    io->pair = io->control ? zmq_socket(io->zctx, ZMQ_PAIR) : NULL;
    if (!io->pair || zmq_connect(io->pair, GM_JIO_ENDPOINT) != 0) {
        if (!io->errmsg[0])
            snprintf(io->errmsg, sizeof io->errmsg, "inproc socket: %s", zmq_strerror(errno));
        return false;
    }
    /* Signals are for the main thread (SIGINT interrupts the cell that runs there). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&io->thread, NULL, io_main, io);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(io->errmsg, sizeof io->errmsg, "cannot start the I/O thread: %s", strerror(rc));
        return false;
    }
    return true;
}

void gm_jio_join(gm_jio *io) {
    pthread_join(io->thread, NULL);
    void *socks[] = {io->hb, io->iopub, io->control, io->pair};
    for (int i = 0; i < 4; i++)
        if (socks[i]) zmq_close(socks[i]);
}
