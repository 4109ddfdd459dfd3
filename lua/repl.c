/* repl.c: gmoe's interactive prompt, and the protected call that batch mode shares with it.
 * Reference: lua.c (Lua 5.4): msghandler/docall, `return <line>` first, continuation only while
 * the syntax error ends in "<eof>". Added here: results kept in `_` and printed by the
 * replaceable gm.show, a sticky Ctrl-C, a history file, and readline's callback interface so
 * that Ctrl-C at the prompt leaves the terminal in a clean state. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "lauxlib.h"
#include "lua.h"

#include "gm.h"
#include "lgmoe.h"
#include "repl.h"

#define CHUNKNAME "=stdin"
#define EOFMARK "<eof>"
#define HISTORY_MAX 1000
#define INTERRUPT_HINT "(press Ctrl-C again or Ctrl-D to exit)"

/* {====================================================================
** Running a chunk: traceback and Ctrl-C
** ===================================================================== */

static lua_State *volatile g_L; /* the state the SIGINT handler arms (lua.c's globalL) */

/* Raises "interrupted" for as long as the flag is up, so a pcall in user code cannot swallow a
 * Ctrl-C: the next firing after that pcall raises again. Only the prompt lowers the flag.
 * Call and return events of C functions are let through: the message handler of the pcall that
 * is catching the error is one, and an error raised inside it would become "error in error
 * handling" instead of "interrupted". */
static void hook_interrupt(lua_State *L, lua_Debug *ar) {
    if (!gm_interrupted()) {
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    if (ar->event != LUA_HOOKCOUNT) {
        lua_getinfo(L, "S", ar);
        if (ar->what[0] == 'C') return;
    }
    luaL_error(L, "interrupted");
}

/* A signal handler cannot touch the Lua state safely, so it raises the engine's flag (C ops
 * poll it) and arms a hook (pure Lua loops stop at the next hook firing). It also puts back the
 * default action, so a second Ctrl-C before the prompt kills a process stuck where nothing
 * polls (lua.c). sigaction is async-signal-safe; lua_sethook is meant for this (lua.c). */
static void on_sigint_run(int sig) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    gm_interrupt_set();
    lua_sethook(g_L, hook_interrupt, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1000);
}

/* Message handler: turns the error into "message\nstack traceback:..." (lua.c). */
static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int gm_repl_docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg; /* function index */
    struct sigaction sa, old;
    int status;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    g_L = L;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint_run; /* no SA_RESTART: a blocking read returns at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    status = lua_pcall(L, narg, nres, base);
    sigaction(SIGINT, &old, NULL);
    lua_remove(L, base);
    return status;
}

int gm_repl_report(lua_State *L, int status, const char *prefix) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg == NULL) msg = "(error object is not a string)";
        fflush(stdout); /* keep what was printed before the error in order */
        if (prefix) fprintf(stderr, "%s: ", prefix);
        fprintf(stderr, "%s\n", msg);
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

/* }==================================================================== */

/* {====================================================================
** Reading lines: readline on a terminal, getline otherwise
** ===================================================================== */

typedef struct repl {
    lua_State *L;
    bool tty;       /* stdin is a terminal: readline, history file, banner */
    char *histfile; /* NULL when there is none */
} repl;

enum { LINE_OK, LINE_EOF, LINE_INTR };

static volatile sig_atomic_t g_prompt_sigint, g_sigwinch;

static void on_signal_prompt(int sig) {
    if (sig == SIGINT) g_prompt_sigint = 1;
    else g_sigwinch = 1;
}

/* The prompt of the first line of a cell and of its continuation lines. Cells are not
 * numbered yet; this is the one place that would change. */
static const char *prompt(bool first) {
    return first ? "gmoe> " : "...> ";
}

static char *g_rl_line; /* what readline's callback delivered */
static bool g_rl_done;

static void on_rl_line(char *line) {
    g_rl_line = line;
    g_rl_done = true;
    rl_callback_handler_remove();
}

/* readline through its callback interface: we wait in select(), so a SIGINT (handled by us,
 * rl_catch_signals = 0) interrupts the wait and readline is never longjmp'ed out of. The
 * half-typed line is discarded and the terminal restored, as readline's own handler does. */
static int read_tty(const char *p, char **out) {
    int fd = fileno(rl_instream ? rl_instream : stdin);
    g_rl_done = false;
    g_rl_line = NULL;
    rl_callback_handler_install(p, on_rl_line);
    while (!g_rl_done) {
        fd_set fds;
        int n;
        FD_ZERO(&fds);
        FD_SET(fd, &fds);
        n = select(fd + 1, &fds, NULL, NULL, NULL);
        if (g_prompt_sigint) {
            rl_echo_signal_char(SIGINT);
            rl_free_line_state();
            rl_callback_sigcleanup();
            rl_callback_handler_remove();
            fputc('\n', rl_outstream ? rl_outstream : stdout);
            return LINE_INTR;
        }
        if (g_sigwinch) {
            g_sigwinch = 0;
            rl_resize_terminal();
        }
        if (n < 0 && errno != EINTR) {
            rl_callback_handler_remove();
            return LINE_EOF;
        }
        if (n > 0) rl_callback_read_char();
    }
    *out = g_rl_line;
    return g_rl_line ? LINE_OK : LINE_EOF;
}

/* Not a terminal: print the prompt anyway (lua.c) and read a line of any length. */
static int read_pipe(const char *p, char **out) {
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    fputs(p, stdout);
    fflush(stdout);
    for (;;) {
        errno = 0;
        n = getline(&buf, &cap, stdin);
        if (n >= 0) break;
        if (g_prompt_sigint) {
            free(buf);
            clearerr(stdin);
            fputc('\n', stdout);
            return LINE_INTR;
        }
        if (errno != EINTR) {
            free(buf);
            return LINE_EOF;
        }
        clearerr(stdin); /* another signal (none is caught here now): read on */
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
    *out = buf;
    return LINE_OK;
}

/* One line into *out (malloc'd, no newline). Our SIGINT handler is installed only while
 * waiting here; running code gets gm_repl_docall's. */
static int read_line(const repl *r, bool first, char **out) {
    struct sigaction sa, old_int, old_winch;
    int st;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal_prompt;
    sigemptyset(&sa.sa_mask);
    g_prompt_sigint = 0;
    sigaction(SIGINT, &sa, &old_int);
    if (r->tty) sigaction(SIGWINCH, &sa, &old_winch);
    st = r->tty ? read_tty(prompt(first), out) : read_pipe(prompt(first), out);
    if (r->tty) sigaction(SIGWINCH, &old_winch, NULL);
    sigaction(SIGINT, &old_int, NULL);
    g_prompt_sigint = 0;
    return st;
}

/* }==================================================================== */

/* {====================================================================
** History file: $GMOE_HISTORY, else $XDG_STATE_HOME/gmoe/history, else ~/.gmoe_history.
** Any failure to read or write it is ignored: history is a comfort, never a reason to fail.
** ===================================================================== */

static char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", a, b);
    return p;
}

/* mkdir -p of the folder holding file `path`. */
static void make_parents(char *path) {
    for (char *s = strchr(path + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        (void)mkdir(path, 0700);
        *s = '/';
    }
}

static char *history_path(void) {
    const char *p = getenv("GMOE_HISTORY");
    if (p && *p) return path_join(p, "");
    p = getenv("XDG_STATE_HOME");
    if (p && *p) {
        char *file = path_join(p, "/gmoe/history");
        if (file) make_parents(file);
        return file;
    }
    p = getenv("HOME");
    if (p && *p) return path_join(p, "/.gmoe_history");
    return NULL;
}

static void history_open(repl *r) {
    using_history();
    stifle_history(HISTORY_MAX);
    r->histfile = history_path();
    /* append_history needs an existing file: create it on first use */
    if (r->histfile && read_history(r->histfile) == ENOENT) (void)write_history(r->histfile);
}

/* Each cell is appended as soon as it is read, so a crash or a killed process keeps it. */
static void history_add(const repl *r, const char *cell) {
    HIST_ENTRY *last;
    if (!r->tty || cell[0] == '\0') return;
    last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && strcmp(last->line, cell) == 0) return;
    add_history(cell);
    if (r->histfile) (void)append_history(1, r->histfile);
}

static void history_close(repl *r) {
    if (r->histfile) (void)history_truncate_file(r->histfile, HISTORY_MAX);
    free(r->histfile);
    r->histfile = NULL;
}

/* }==================================================================== */

/* {====================================================================
** Cells: read, compile, run, print
** ===================================================================== */

enum { CELL_EOF = -1, CELL_INTR = -2 }; /* besides the LUA_* statuses of loading */

static bool incomplete(lua_State *L, int status) {
    if (status == LUA_ERRSYNTAX) {
        size_t len;
        const char *msg = lua_tolstring(L, -1, &len);
        size_t mark = sizeof(EOFMARK) - 1;
        return len >= mark && strcmp(msg + len - mark, EOFMARK) == 0;
    }
    return false;
}

/* A `local` at the start of a cell dies with the cell: each cell is its own chunk, as in
 * lua.c. We keep Lua's meaning rather than rewrite the line into a global (the same line
 * would then mean something else in a script) and warn, as Lua 5.5's lua.c does. */
static void warn_local(const char *cell) {
    cell += strspn(cell, " \t");
    if (strncmp(cell, "local", 5) == 0 && (cell[5] == ' ' || cell[5] == '\t'))
        fputs("warning: a local does not survive its cell; drop 'local' to keep the "
              "variable\n", stderr);
}

/* The line on top of the stack as an expression: replaces it with the compiled function and
 * returns LUA_OK, or leaves the stack alone. */
static int try_expression(const repl *r) {
    lua_State *L = r->L;
    const char *line = lua_tostring(L, -1);
    const char *ret = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, ret, strlen(ret), CHUNKNAME);
    if (status == LUA_OK) {
        history_add(r, line);
        lua_remove(L, -2); /* the "return" text */
        lua_remove(L, -2); /* the line */
    } else {
        lua_pop(L, 2);
    }
    return status;
}

/* The text on top of the stack as statements, reading continuation lines while the chunk is
 * merely unfinished. Replaces the text with the function or an error message; returns the
 * load status, or CELL_INTR (text popped) when Ctrl-C abandoned the cell. */
static int try_statements(const repl *r) {
    lua_State *L = r->L;
    for (;;) {
        size_t len;
        const char *text = lua_tolstring(L, -1, &len);
        int status = luaL_loadbuffer(L, text, len, CHUNKNAME);
        char *line;
        int st;
        if (!incomplete(L, status)) {
            history_add(r, text);
            if (status == LUA_OK) warn_local(text);
            lua_remove(L, -2);
            return status;
        }
        st = read_line(r, false, &line);
        if (st == LINE_EOF) { /* report the "<eof>" error */
            history_add(r, text);
            lua_remove(L, -2);
            return status;
        }
        lua_pop(L, 1); /* the "<eof>" message */
        if (st == LINE_INTR) {
            lua_pop(L, 1);
            return CELL_INTR;
        }
        lua_pushliteral(L, "\n");
        lua_pushstring(L, line);
        free(line);
        lua_concat(L, 3);
    }
}

/* Pushes the compiled cell (LUA_OK) or an error message (other LUA_* status); pushes nothing
 * and returns CELL_EOF or CELL_INTR at the end of input or on Ctrl-C. */
static int load_cell(const repl *r) {
    char *line;
    int st = read_line(r, true, &line);
    if (st != LINE_OK) return st == LINE_EOF ? CELL_EOF : CELL_INTR;
    lua_pushstring(r->L, line);
    free(line);
    if (try_expression(r) == LUA_OK) return LUA_OK;
    return try_statements(r);
}

/* Called with a cell's results: prints them through gm.show, looked up anew each time so a
 * user can replace it, or like print when gm.show is not a function. */
static int show_results(lua_State *L) {
    int n = lua_gettop(L);
    if (lua_getglobal(L, "gm") == LUA_TTABLE && lua_getfield(L, -1, "show") == LUA_TFUNCTION) {
        lua_insert(L, 1);
        lua_settop(L, n + 1);
        lua_call(L, n, 0);
        return 0;
    }
    lua_settop(L, n);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);
        if (i > 1) fputc('\t', stdout);
        fwrite(s, 1, len, stdout);
        lua_pop(L, 1);
    }
    fputc('\n', stdout);
    return 0;
}

static void fail(const repl *r, int status) {
    if (r->tty && gm_interrupted()) fputc('\n', stderr); /* past the terminal's "^C" */
    gm_repl_report(r->L, status, NULL);
    gm_lua_reset(r->L);
}

/* Runs the compiled cell on top of the stack; its first result goes to `_`, all are shown. */
static void run_cell(const repl *r) {
    lua_State *L = r->L;
    int base = lua_gettop(L) - 1;
    int status = gm_repl_docall(L, 0, LUA_MULTRET);
    int n = lua_gettop(L) - base;
    if (status == LUA_OK && n > 0) {
        lua_pushvalue(L, base + 1);
        lua_setglobal(L, "_");
        lua_pushcfunction(L, show_results);
        lua_insert(L, base + 1);
        status = gm_repl_docall(L, n, 0);
    }
    fflush(stdout);
    if (status != LUA_OK) fail(r, status);
    lua_settop(L, base);
}

void gm_repl_run(lua_State *L) {
    repl r = {.L = L, .tty = isatty(STDIN_FILENO), .histfile = NULL};
    int sigints = 0; /* consecutive Ctrl-C at the prompt */
    if (r.tty) {
        rl_readline_name = "gmoe";
        rl_catch_signals = 0; /* see read_tty */
        rl_catch_sigwinch = 0;
        history_open(&r);
        printf("gmoe %s  %s  (gm is loaded; Ctrl-D exits)\n", GM_VERSION, LUA_RELEASE);
    }
    for (;;) {
        int base = lua_gettop(L), status;
        /* Back at the prompt: the one place that lowers the interrupt flag. */
        gm_interrupt_clear();
        lua_sethook(L, NULL, 0, 0);
        status = load_cell(&r);
        if (status == CELL_EOF) break;
        if (status == CELL_INTR) {
            if (++sigints >= 2) break;
            fputs(INTERRUPT_HINT "\n", stdout);
            continue;
        }
        sigints = 0;
        if (status == LUA_OK) run_cell(&r);
        else fail(&r, status);
        lua_settop(L, base);
    }
    /* Leave the shell's prompt on a line of its own (readline already did on a terminal). */
    if (!r.tty && sigints < 2) fputc('\n', stdout);
    fflush(stdout);
    if (r.tty) history_close(&r);
}

/* }==================================================================== */
