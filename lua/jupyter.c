/* jupyter.c: `gmoe kernel -f CONNECTION_FILE`, the main thread of the Jupyter kernel. It binds
 * shell and stdin, starts the I/O thread (jupyter_io.c), sends fd 1 and 2 into pipes that the
 * I/O thread publishes, and answers shell requests through lua/gmoe/kernel.lua with the module
 * gmoe.jupyter: reply, publish, input (input_request on stdin), docall (the REPL's protected
 * call: Ctrl-C semantics for SIGINT), flush, encode (Lua -> JSON). Between cells SIGINT is
 * ignored, so an interrupt that comes late never kills the kernel. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "lauxlib.h"
#include "lua.h"

#include "jupyter.h"
#include "lgmoe.h"
#include "repl.h"

typedef struct kernel {
    lua_State *L;
    gm_jconn conn;
    gm_jio io;
    void *zctx, *shell, *stdin_sock, *pair;
    const gm_jmsg *req; /* the shell request being answered, or NULL */
    char *kernel_info;  /* kernel_info_reply content (JSON) */
    bool shutdown;
} kernel;

static kernel *g_kernel; /* the one kernel of this process, for gmoe.jupyter */

/* {====================================================================
** Lua values as JSON
** ===================================================================== */

static const char ARRAY_MT = 'a'; /* registry key of the metatable that marks JSON arrays */

/* A gm_buf owned by a userdata (on top of the stack), so a raised error frees it. */
static int buf_gc(lua_State *L) {
    gm_buf_free(lua_touserdata(L, 1));
    return 0;
}

static gm_buf *push_buf(lua_State *L) {
    gm_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    if (luaL_newmetatable(L, "gmoe.jupyter.buf")) {
        lua_pushcfunction(L, buf_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return b;
}

static bool marked_array(lua_State *L, int idx) {
    bool yes = false;
    if (lua_getmetatable(L, idx)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &ARRAY_MT);
        yes = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return yes;
}

static void encode(lua_State *L, int idx, gm_buf *b, int depth) {
    idx = lua_absindex(L, idx);
    if (depth > GM_JSON_MAX_DEPTH) luaL_error(L, "jupyter: JSON nesting deeper than %d", GM_JSON_MAX_DEPTH);
    luaL_checkstack(L, 3, "jupyter: JSON nesting");
    switch (lua_type(L, idx)) {
    case LUA_TNIL: gm_buf_puts(b, "null"); break;
    case LUA_TBOOLEAN: gm_buf_puts(b, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            gm_buf_printf(b, LUA_INTEGER_FMT, lua_tointeger(L, idx));
        } else {
            double d = lua_tonumber(L, idx);
            if (isfinite(d)) gm_buf_printf(b, "%.17g", d);
            else gm_buf_puts(b, "null");
        }
        break;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        gm_jbuf_str(b, s, n);
        break;
    }
    case LUA_TTABLE: {
        lua_Unsigned n = lua_rawlen(L, idx);
        if (n > 0 || marked_array(L, idx)) {
            gm_buf_puts(b, "[");
            for (lua_Unsigned i = 1; i <= n; i++) {
                if (i > 1) gm_buf_puts(b, ", ");
                lua_rawgeti(L, idx, (lua_Integer)i);
                encode(L, -1, b, depth + 1);
                lua_pop(L, 1);
            }
            gm_buf_puts(b, "]");
            break;
        }
        bool first = true;
        gm_buf_puts(b, "{");
        for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "jupyter: a JSON object key must be a string, got a %s",
                           luaL_typename(L, -2));
            size_t kn;
            const char *k = lua_tolstring(L, -2, &kn);
            if (!first) gm_buf_puts(b, ", ");
            first = false;
            gm_jbuf_str(b, k, kn);
            gm_buf_puts(b, ": ");
            encode(L, -1, b, depth + 1);
        }
        gm_buf_puts(b, "}");
        break;
    }
    default:
        luaL_error(L, "jupyter: cannot encode a %s as JSON", luaL_typename(L, idx));
    }
    if (b->oom) luaL_error(L, "jupyter: out of memory encoding JSON");
}

/* The value at idx as JSON text, pushed as a Lua string; returns it (valid while it is on the
 * stack). */
static const char *push_json_text(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    gm_buf *b = push_buf(L);
    encode(L, idx, b, 0);
    lua_pushlstring(L, b->p ? b->p : "", b->n);
    lua_remove(L, -2);
    return lua_tostring(L, -1);
}

/* encode(v) -> JSON text */
static int j_encode(lua_State *L) {
    luaL_checkany(L, 1);
    push_json_text(L, 1);
    return 1;
}

/* array(t) -> t, marked to encode as a JSON array even when empty */
static int j_array(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ARRAY_MT);
    lua_setmetatable(L, 1);
    return 1;
}

/* }==================================================================== */

/* {====================================================================
** Replies, iopub, stdin
** ===================================================================== */

static kernel *need_request(lua_State *L, const char *what) {
    if (!g_kernel || !g_kernel->req) luaL_error(L, "jupyter.%s: no request is being answered", what);
    return g_kernel;
}

static void flush_std(void) {
    fflush(stdout);
    fflush(stderr);
}

/* Waits for the I/O thread's "A"; an "X" (shutdown) on the way is noted. With want 'X', takes
 * what is there (an "X") and returns. */
static void await_io(kernel *k, char want) {
    for (;;) {
        char buf[8];
        int n = zmq_recv(k->pair, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        int more = 0;
        size_t ms = sizeof more;
        zmq_getsockopt(k->pair, ZMQ_RCVMORE, &more, &ms);
        if (more) zmq_recv(k->pair, buf + 1, sizeof buf - 1, 0);
        if (buf[0] == 'X') k->shutdown = true;
        if (buf[0] == want) return;
    }
}

/* Command cmd (with frame a when not NULL) to the I/O thread, and its answer. */
static void io_call(kernel *k, const char *cmd, const char *a, size_t alen) {
    flush_std();
    zmq_send(k->pair, cmd, strlen(cmd), a ? ZMQ_SNDMORE : 0);
    if (a) zmq_send(k->pair, a, alen, 0);
    await_io(k, 'A');
}

/* Publishes an iopub message (parent: the request being answered) through the I/O thread. */
static void publish(kernel *k, const char *type, const char *metadata, const char *content) {
    char *topic = (char *)type;
    size_t tlen = strlen(type);
    flush_std();
    if (gm_jmsg_send(k->pair, &k->conn, "P", 1, &topic, &tlen, type, k->req->part[0], metadata,
                     content) < 0) {
        gm_jlog("could not publish %s: %s", type, zmq_strerror(errno));
        return;
    }
    await_io(k, 'A');
}

/* flush(): everything written to stdout and stderr so far is published */
static int j_flush(lua_State *L) {
    (void)L;
    if (!g_kernel) return 0;
    io_call(g_kernel, "F", NULL, 0);
    return 0;
}

/* reply(msg_type, content): the reply to the request being answered */
static int j_reply(lua_State *L) {
    kernel *k = need_request(L, "reply");
    const char *type = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *content = push_json_text(L, 2);
    if (gm_jmsg_send(k->shell, &k->conn, NULL, k->req->nids, k->req->ids, k->req->idlen, type,
                     k->req->part[0], "{}", content) < 0)
        gm_jlog("could not send %s: %s", type, zmq_strerror(errno));
    return 0;
}

/* publish(msg_type, content [, metadata]): an iopub message, after the output so far */
static int j_publish(lua_State *L) {
    kernel *k = need_request(L, "publish");
    const char *type = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *content = push_json_text(L, 2);
    const char *meta = lua_istable(L, 3) ? push_json_text(L, 3) : "{}";
    publish(k, type, meta, content);
    return 0;
}

/* streams(on): stream messages for this request's output on or off (silent execution) */
static int j_streams(lua_State *L) {
    kernel *k = need_request(L, "streams");
    if (lua_toboolean(L, 1)) io_call(k, "S", k->req->part[0], k->req->partlen[0]);
    else io_call(k, "S", "", 0);
    return 0;
}

/* input(prompt, password) -> the line the user typed: an input_request on stdin to the client
 * of the request being answered. Ctrl-C (SIGINT) while waiting raises "interrupted". */
static int j_input(lua_State *L) {
    kernel *k = need_request(L, "input");
    lua_settop(L, 2);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "prompt");
    lua_pushboolean(L, lua_toboolean(L, 2));
    lua_setfield(L, -2, "password");
    const char *content = push_json_text(L, -1);
    j_flush(L);
    if (gm_jmsg_send(k->stdin_sock, &k->conn, NULL, k->req->nids, k->req->ids, k->req->idlen,
                     "input_request", k->req->part[0], "{}", content) < 0)
        return luaL_error(L, "io.read: cannot send input_request: %s", zmq_strerror(errno));
    for (;;) {
        zmq_pollitem_t it[] = {{k->stdin_sock, 0, ZMQ_POLLIN, 0}, {k->pair, 0, ZMQ_POLLIN, 0}};
        int n = zmq_poll(it, 2, 100);
        if (gm_interrupted()) return luaL_error(L, "interrupted");
        if (n < 0 && errno != EINTR) return luaL_error(L, "io.read: %s", zmq_strerror(errno));
        if (n <= 0) continue;
        if (it[1].revents) await_io(k, 'X');
        if (k->shutdown) return luaL_error(L, "interrupted");
        if (!it[0].revents) continue;
        gm_jmsg m;
        if (gm_jmsg_recv(k->stdin_sock, &k->conn, &m, false) != 1) continue;
        if (strcmp(m.msg_type, "input_reply") != 0) {
            gm_jlog("ignored %s on the stdin channel", m.msg_type);
            gm_jmsg_free(&m);
            continue;
        }
        gm_ctx *ctx = gm_ctx_new();
        gm_json *j = NULL;
        const gm_json *v = NULL;
        if (ctx && gm_json_parse(ctx, "input_reply", m.part[3], m.partlen[3], &j) == GM_OK &&
            j->type == GM_JSON_OBJ)
            v = gm_json_get(j, "value");
        if (v && v->type == GM_JSON_STR) lua_pushlstring(L, v->str, v->len);
        else lua_pushnil(L);
        gm_json_free(j);
        gm_ctx_free(ctx);
        gm_jmsg_free(&m);
        if (lua_isnil(L, -1)) return luaL_error(L, "io.read: the client's input_reply has no value");
        return 1;
    }
}

/* docall(fn, ...) -> true, results... | false, message, interrupted: fn run as the REPL runs a
 * cell (gm_repl_docall: traceback, SIGINT raises "interrupted"); afterwards the interrupt is
 * cleared, as at the REPL's prompt. */
static int j_docall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    gm_interrupt_clear();
    int st = gm_repl_docall(L, n - 1, LUA_MULTRET);
    if (gm_repl_signal() == SIGTERM) exit(128 + SIGTERM); /* a SIGTERM stopped the cell: end, as it asked */
    bool intr = gm_interrupted();
    gm_interrupt_clear();
    lua_sethook(L, NULL, 0, 0);
    if (st == LUA_OK) {
        lua_pushboolean(L, 1);
        lua_insert(L, 1);
        return lua_gettop(L);
    }
    gm_lua_reset(L);
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    lua_pushboolean(L, intr);
    return 3;
}

/* log(message): a line on the kernel's own stderr (the server's log, not the notebook) */
static int j_log(lua_State *L) {
    gm_jlog("%s", luaL_checkstring(L, 1));
    return 0;
}

/* exe() -> the absolute path of this executable (for kernel.json) */
static int j_exe(lua_State *L) {
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return luaL_error(L, "cannot find the gmoe executable: %s", strerror(errno));
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

int gm_jupyter_open(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"encode", j_encode}, {"array", j_array}, {"reply", j_reply}, {"publish", j_publish},
        {"streams", j_streams}, {"input", j_input}, {"flush", j_flush}, {"docall", j_docall},
        {"exe", j_exe}, {"log", j_log}, {NULL, NULL}};
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ARRAY_MT);
    luaL_newlib(L, fns);
    return 1;
}

/* }==================================================================== */

/* {====================================================================
** The main loop
** ===================================================================== */

static void on_sigint_idle(int sig) { (void)sig; }

static const char KERNEL_KEY = 'k'; /* registry: the gmoe.kernel module */

/* gmoe.kernel.<fn>(...) with nargs arguments on the stack, nres results; false (logged) on error. */
static bool call_kernel_lua(lua_State *L, const char *fn, int nargs, int nres) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KERNEL_KEY);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, -nargs - 1);
    if (lua_pcall(L, nargs, nres, 0) != LUA_OK) {
        gm_jlog("%s: %s", fn, lua_tostring(L, -1));
        lua_pop(L, 1);
        return false;
    }
    return true;
}

static void publish_status(kernel *k, const char *state) {
    char content[64];
    snprintf(content, sizeof content, "{\"execution_state\": \"%s\"}", state);
    publish(k, "status", "{}", content);
}

static void send_reply(kernel *k, const char *type, const char *content) {
    gm_jmsg_send(k->shell, &k->conn, NULL, k->req->nids, k->req->ids, k->req->idlen, type,
                 k->req->part[0], "{}", content);
}

/* Answers request m (status busy, then gmoe.kernel.handle, or an "aborted" reply when abort);
 * the caller publishes status idle. Returns true when a cell failed and stop_on_error asks to
 * abort the execute requests queued behind it. */
static bool answer(kernel *k, const gm_jmsg *m, bool abort) {
    lua_State *L = k->L;
    bool failed = false;
    k->req = m;
    io_call(k, "S", m->part[0], m->partlen[0]);
    publish_status(k, "busy");
    if (strcmp(m->msg_type, "kernel_info_request") == 0) {
        send_reply(k, "kernel_info_reply", k->kernel_info);
    } else if (strcmp(m->msg_type, "shutdown_request") == 0) {
        send_reply(k, "shutdown_reply", gm_jmsg_restart(m) ? "{\"status\": \"ok\", \"restart\": true}"
                                                           : "{\"status\": \"ok\", \"restart\": false}");
        k->shutdown = true;
    } else if (abort && strcmp(m->msg_type, "execute_request") == 0) {
        send_reply(k, "execute_reply", "{\"status\": \"aborted\"}");
    } else {
        gm_ctx *ctx = gm_ctx_new();
        gm_json *content = NULL, *header = NULL;
        if (ctx && gm_json_parse(ctx, "content", m->part[3], m->partlen[3], &content) == GM_OK &&
            gm_json_parse(ctx, "header", m->part[0], m->partlen[0], &header) == GM_OK) {
            lua_pushstring(L, m->msg_type);
            gm_lua_push_json(L, content);
            gm_lua_push_json(L, header);
            if (call_kernel_lua(L, "handle", 3, 1)) {
                failed = lua_toboolean(L, -1);
                lua_pop(L, 1);
            }
        } else {
            gm_jlog("dropped %s: %s", m->msg_type, ctx ? gm_errmsg(ctx) : "out of memory");
        }
        gm_json_free(content);
        gm_json_free(header);
        gm_ctx_free(ctx);
    }
    return failed;
}

static void answered(kernel *k, gm_jmsg *m) {
    publish_status(k, "idle");
    k->req = NULL;
    gm_jmsg_free(m);
}

/* The next shell request. When its cell fails (stop_on_error), the requests already waiting
 * are taken before status idle goes out and their execute requests answered "aborted" (as
 * ipykernel does), so "run all" stops at the failed cell. */
static void on_shell(kernel *k) {
    gm_jmsg m, *queue = NULL;
    size_t n = 0, cap = 0;
    if (gm_jmsg_recv(k->shell, &k->conn, &m, false) != 1) return;
    if (answer(k, &m, false)) {
        gm_jmsg q;
        while (gm_jmsg_recv(k->shell, &k->conn, &q, false) >= 0) {
            if (!q.msg_type) continue;
            if (n == cap) {
                gm_jmsg *grown = realloc(queue, (cap = cap ? 2 * cap : 16) * sizeof *queue);
                if (!grown) {
                    gm_jlog("out of memory: a queued %s is dropped", q.msg_type);
                    gm_jmsg_free(&q);
                    break;
                }
                queue = grown;
            }
            queue[n++] = q;
        }
    }
    answered(k, &m);
    for (size_t i = 0; i < n; i++) {
        if (k->shutdown) {
            gm_jmsg_free(&queue[i]);
            continue;
        }
        answer(k, &queue[i], true);
        answered(k, &queue[i]);
    }
    free(queue);
}

static void *bind_router(kernel *k, int ch, char *err, size_t errlen) {
    char ep[300];
    int linger = 1000;
    void *sock = zmq_socket(k->zctx, ZMQ_ROUTER);
    gm_jconn_endpoint(&k->conn, ch, ep, sizeof ep);
    if (!sock || zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(sock, ep) != 0) {
        snprintf(err, errlen, "cannot bind %s: %s", ep, zmq_strerror(errno));
        if (sock) zmq_close(sock);
        return NULL;
    }
    return sock;
}

/* fd 1 and 2 into pipes read by the I/O thread; fd 0 from /dev/null (input goes through
 * input_request); the kernel's own log keeps the original stderr. */
static bool redirect_std(kernel *k, char *err, size_t errlen) {
    int po[2], pe[2];
    int logfd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (logfd < 0 || pipe(po) != 0 || pipe(pe) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return false;
    }
    gm_jlog_fd(logfd);
    flush_std();
    int rd[2] = {po[0], pe[0]};
    for (int i = 0; i < 2; i++) {
        fcntl(rd[i], F_SETFL, fcntl(rd[i], F_GETFL) | O_NONBLOCK);
        fcntl(rd[i], F_SETFD, FD_CLOEXEC);
    }
    if (dup2(po[1], 1) < 0 || dup2(pe[1], 2) < 0) {
        snprintf(err, errlen, "dup2: %s", strerror(errno));
        return false;
    }
    close(po[1]);
    close(pe[1]);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) {
        dup2(null, 0);
        close(null);
    }
    setvbuf(stdout, NULL, _IONBF, 0); /* print reaches the client as it is called */
    k->io.out_fd = po[0];
    k->io.err_fd = pe[0];
    return true;
}

/* The Lua half: gmoe.kernel started, kernel_info_reply content encoded. */
static bool start_lua(kernel *k, char *err, size_t errlen) {
    lua_State *L = k->L;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "gmoe.kernel");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "gmoe.kernel: %s", lua_tostring(L, -1));
        return false;
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KERNEL_KEY);
    if (!call_kernel_lua(L, "start", 0, 1)) {
        snprintf(err, errlen, "gmoe.kernel.start failed (see above)");
        return false;
    }
    k->kernel_info = strdup(push_json_text(L, -1));
    lua_pop(L, 2);
    return k->kernel_info != NULL;
}

int gm_jupyter_run(lua_State *L, const char *connection_file) {
    kernel k = {.L = L};
    char err[512] = "";
    struct sigaction sa;
    bool ok = gm_jconn_read(&k.conn, connection_file, err, sizeof err);
    g_kernel = &k;
    ok = ok && start_lua(&k, err, sizeof err);
    if (ok) {
        k.zctx = zmq_ctx_new();
        k.pair = k.zctx ? zmq_socket(k.zctx, ZMQ_PAIR) : NULL;
        if (!k.pair || zmq_bind(k.pair, GM_JIO_ENDPOINT) != 0) {
            snprintf(err, sizeof err, "zmq: %s", zmq_strerror(errno));
            ok = false;
        }
    }
    ok = ok && (k.shell = bind_router(&k, GM_J_SHELL, err, sizeof err)) != NULL;
    ok = ok && (k.stdin_sock = bind_router(&k, GM_J_STDIN, err, sizeof err)) != NULL;
    k.io = (gm_jio){.conn = &k.conn, .zctx = k.zctx, .main_thread = pthread_self(),
                    .kernel_info = k.kernel_info, .out_fd = -1, .err_fd = -1};
    ok = ok && redirect_std(&k, err, sizeof err);
    if (ok && !gm_jio_start(&k.io)) {
        snprintf(err, sizeof err, "%s", k.io.errmsg);
        ok = false;
    }
    if (!ok) {
        gm_jlog("%s", err);
        return 1; /* exiting tears down what was made */
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint_idle;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    while (!k.shutdown) {
        zmq_pollitem_t it[] = {{k.shell, 0, ZMQ_POLLIN, 0}, {k.pair, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, -1) < 0) {
            if (errno == EINTR) continue;
            gm_jlog("poll: %s", zmq_strerror(errno));
            break;
        }
        if (it[1].revents) await_io(&k, 'X');
        if (it[0].revents && !k.shutdown) on_shell(&k);
    }
    io_call(&k, "Q", NULL, 0);
    gm_jio_join(&k.io);
    zmq_close(k.shell);
    zmq_close(k.stdin_sock);
    zmq_close(k.pair);
    zmq_ctx_term(k.zctx);
    gm_jconn_free(&k.conn);
    free(k.kernel_info);
    g_kernel = NULL;
    return 0;
}

/* }==================================================================== */
