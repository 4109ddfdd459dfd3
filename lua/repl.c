/* repl.c: gmoe's interactive prompt, and the protected call that batch mode shares with it.
 * Reference: lua.c (Lua 5.4): msghandler/docall, `return <line>` first, continuation only while
 * the syntax error ends in "<eof>". Added here: a sticky Ctrl-C, a history file, Tab completion
 * and readline's callback interface so that Ctrl-C at the prompt leaves the terminal clean.
 * What happens to a cell once read (In/Out, printing, magics, help, completion candidates,
 * timing) is Lua: lua/gmoe/repl.lua. Also the small C module `gmoe.term` (tty, cwd, and the
 * completion word, file names and continuation rule that the Jupyter kernel shares). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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
#define HISTORY_MAX 10000
/* Word boundaries of completion: inside a string the word is the path after the quote;
 * elsewhere a Lua expression such as gm.nn.Lin or x:ma ('.' and ':' do not break words). */
#define STR_BREAKS "\"'"
#define LUA_BREAKS " \t\n\"'`@$><=;|&{}()[],+-*/%^~#!"

/* {====================================================================
** Running a chunk: traceback and Ctrl-C
** ===================================================================== */

static lua_State *volatile g_L; /* the state the SIGINT handler arms (lua.c's globalL) */
static volatile sig_atomic_t g_signal; /* the signal that raised the interrupt flag (0: none) */

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

static void arm_interrupt(lua_State *L) {
    gm_interrupt_set();
    lua_sethook(L, hook_interrupt, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1000);
}

/* A signal handler cannot touch the Lua state safely, so it raises the engine's flag (C ops
 * poll it) and arms a hook (pure Lua loops stop at the next hook firing). SIGTERM does what
 * Ctrl-C does, so a run stopped by a scheduler or `kill` still records how it ended. It also
 * puts back the default action, so a second signal before the prompt kills a process stuck
 * where nothing polls (lua.c). sigaction is async-signal-safe; lua_sethook is meant for this
 * (lua.c). */
static void on_signal_run(int sig) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    g_signal = sig;
    arm_interrupt(g_L);
}

int gm_repl_signal(void) { return gm_interrupted() ? g_signal : 0; }

static const char *signal_name(int sig) { return sig == SIGTERM ? "SIGTERM" : "SIGINT"; }

/* Message handler: turns the error into "message\nstack traceback:..." (lua.c); an interrupt
 * needs no traceback (where a Ctrl-C happened to land says nothing). */
static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg && gm_interrupted()) return 1;
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int gm_repl_docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg; /* function index */
    struct sigaction sa, old_int, old_term;
    int status;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    g_L = L;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal_run; /* no SA_RESTART: a blocking read returns at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    status = lua_pcall(L, narg, nres, base);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
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
** gmoe.term: what Lua cannot ask by itself (a terminal's size, the working folder)
** ===================================================================== */

/* xpcall_held(f, ...) -> true, results... | false, message, signal: xpcall with a traceback
 * that, when an interrupt (Ctrl-C, SIGTERM) ended f, lowers the flag before any Lua code runs
 * again and names the signal ("SIGINT" | "SIGTERM"), so the caller can record how its work
 * ended; it must then call reraise(signal), or the interrupt is lost. */
static int term_xpcall_held(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushcfunction(L, msghandler);
    lua_insert(L, 1);
    int status = lua_pcall(L, n - 1, LUA_MULTRET, 1);
    int sig = gm_repl_signal();
    if (sig && status == LUA_OK) { /* f finished as the interrupt came: it still counts */
        lua_settop(L, 1);
        lua_pushliteral(L, "interrupted");
    }
    if (sig || status != LUA_OK) {
        if (sig) gm_interrupt_clear(); /* the hook disarms itself at its next firing */
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        if (sig) lua_pushstring(L, signal_name(sig));
        else lua_pushnil(L);
        return 3;
    }
    lua_pushboolean(L, 1);
    lua_replace(L, 1); /* the message handler's slot */
    return lua_gettop(L);
}

/* reraise(signal): raises the interrupt flag again as that signal did; the interrupt then
 * unwinds as before (the next Lua step raises "interrupted"). */
static int term_reraise(lua_State *L) {
    const char *s = luaL_checkstring(L, 1);
    g_signal = strcmp(s, "SIGTERM") == 0 ? SIGTERM : SIGINT;
    arm_interrupt(L);
    return 0;
}

/* pending() -> "SIGINT" | "SIGTERM" while an interrupt is unwinding, else nil. */
static int term_pending(lua_State *L) {
    int sig = gm_repl_signal();
    if (sig) lua_pushstring(L, signal_name(sig));
    else lua_pushnil(L);
    return 1;
}

static int term_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* cols, rows of the terminal on stdout (else stderr, stdin); nothing when there is none. */
static int term_size(lua_State *L) {
    struct winsize ws;
    int fds[] = {STDOUT_FILENO, STDERR_FILENO, STDIN_FILENO};
    for (int i = 0; i < 3; i++) {
        if (ioctl(fds[i], TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
            lua_pushinteger(L, ws.ws_col);
            lua_pushinteger(L, ws.ws_row);
            return 2;
        }
    }
    return 0;
}

static int term_chdir(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    if (chdir(dir) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", dir, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int term_getcwd(lua_State *L) {
    char buf[4096];
    if (getcwd(buf, sizeof buf) == NULL) return luaL_error(L, "getcwd: %s", strerror(errno));
    lua_pushstring(L, buf);
    return 1;
}

static bool in_string_at(const char *line, size_t point);
static bool incomplete(lua_State *L, int status);
static int try_expression(lua_State *L);

/* word_start(text, pos) -> start, in_string: the word that Tab completes at byte pos begins
 * after byte `start` (0-based), by the REPL's word boundaries, within pos's line. */
static int term_word_start(lua_State *L) {
    size_t n, line = 0;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_Integer p = luaL_optinteger(L, 2, (lua_Integer)n);
    size_t pos = p < 0 ? 0 : (size_t)p > n ? n : (size_t)p, start = pos;
    for (size_t i = 0; i < pos; i++)
        if (s[i] == '\n') line = i + 1;
    bool str = in_string_at(s + line, pos - line);
    const char *breaks = str ? STR_BREAKS : LUA_BREAKS;
    while (start > line && s[start - 1] && !strchr(breaks, s[start - 1])) start--;
    lua_pushinteger(L, (lua_Integer)start);
    lua_pushboolean(L, str);
    return 2;
}

/* paths(prefix) -> names: readline's file name completion of prefix (what Tab gives inside a
 * string), folders with a trailing '/'. */
static int term_paths(lua_State *L) {
    const char *prefix = luaL_checkstring(L, 1);
    char *m;
    lua_newtable(L);
    for (int i = 0; i < 1000 && (m = rl_filename_completion_function(prefix, i)) != NULL; i++) {
        char *full = tilde_expand(m);
        struct stat st;
        bool dir = full && stat(full, &st) == 0 && S_ISDIR(st.st_mode);
        lua_pushstring(L, m);
        if (dir) {
            lua_pushliteral(L, "/");
            lua_concat(L, 2);
        }
        lua_rawseti(L, -2, i + 1);
        free(full);
        free(m);
    }
    return 1;
}

/* chunk_status(text) -> "complete" | "incomplete" | "invalid": the REPL's continuation rule
 * (lua.c's): text is unfinished exactly when it is not an expression and its syntax error as
 * statements ends in "<eof>". */
static int term_chunk_status(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    if (try_expression(L) == LUA_OK) {
        lua_pushliteral(L, "complete");
        return 1;
    }
    int status = luaL_loadbuffer(L, text, len, CHUNKNAME);
    lua_pushstring(L, status == LUA_OK ? "complete" : incomplete(L, status) ? "incomplete" : "invalid");
    return 1;
}

int gm_repl_open_term(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"xpcall_held", term_xpcall_held}, {"reraise", term_reraise}, {"pending", term_pending},
        {"isatty", term_isatty}, {"size", term_size}, {"chdir", term_chdir},
        {"getcwd", term_getcwd}, {"word_start", term_word_start}, {"paths", term_paths},
        {"chunk_status", term_chunk_status}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}

/* }==================================================================== */

/* {====================================================================
** The Lua half (lua/gmoe/repl.lua), kept in the registry
** ===================================================================== */

static const char REPL_KEY = 'r';

/* Pushes gmoe.repl's field `name` (a function). */
static void push_repl_fn(lua_State *L, const char *name) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &REPL_KEY);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
}

/* gmoe.repl.strip on the string on top of the stack (pasted prompts removed), in place. */
static void strip_prompts(lua_State *L) {
    push_repl_fn(L, "strip");
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "");
    }
}

static bool is_special(lua_State *L, int idx) {
    bool yes;
    idx = lua_absindex(L, idx);
    push_repl_fn(L, "is_special");
    lua_pushvalue(L, idx);
    yes = lua_pcall(L, 1, 1, 0) == LUA_OK && lua_toboolean(L, -1);
    lua_pop(L, 1);
    return yes;
}

/* }==================================================================== */

/* {====================================================================
** Reading lines: readline on a terminal, getline otherwise
** ===================================================================== */

typedef struct repl {
    lua_State *L;
    bool tty;       /* stdin is a terminal: readline, history file, banner, completion */
    char *histfile; /* NULL when there is none */
    int n;          /* number of the next cell */
} repl;

enum { LINE_OK, LINE_EOF, LINE_INTR };

static volatile sig_atomic_t g_prompt_sigint, g_sigwinch;

static void on_signal_prompt(int sig) {
    if (sig == SIGINT) g_prompt_sigint = 1;
    else g_sigwinch = 1;
}

/* "gmoe [n]> " for the first line of a cell, "...> " for its continuation lines. */
static const char *prompt(const repl *r, bool first) {
    static char buf[32];
    if (!first) return "...> ";
    snprintf(buf, sizeof buf, "gmoe [%d]> ", r->n);
    return buf;
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
    st = r->tty ? read_tty(prompt(r, first), out) : read_pipe(prompt(r, first), out);
    if (r->tty) sigaction(SIGWINCH, &old_winch, NULL);
    sigaction(SIGINT, &old_int, NULL);
    g_prompt_sigint = 0;
    return st;
}

/* }==================================================================== */

/* {====================================================================
** Tab completion: names from gmoe.repl.complete, file paths inside strings from readline
** ===================================================================== */

static lua_State *g_complete_L;
static char **g_cands; /* NULL-terminated, malloc'd */

static void free_cands(void) {
    if (!g_cands) return;
    for (char **c = g_cands; *c; c++) free(*c);
    free(g_cands);
    g_cands = NULL;
}

/* True when byte `point` of line lies inside a string literal. */
static bool in_string_at(const char *line, size_t point) {
    char quote = 0;
    for (size_t i = 0; i < point && line[i]; i++) {
        char c = line[i];
        if (quote) {
            if (c == '\\' && i + 1 < point) i++;
            else if (c == quote) quote = 0;
        } else if (c == '"' || c == '\'') {
            quote = c;
        }
    }
    return quote != 0;
}

/* True when the cursor is inside a string literal of the current line. */
static bool in_string(void) { return in_string_at(rl_line_buffer, (size_t)rl_point); }

static char *word_breaks(void) {
    static char str_breaks[] = STR_BREAKS, lua_breaks[] = LUA_BREAKS;
    return in_string() ? str_breaks : lua_breaks;
}

static char *next_cand(const char *text, int state) {
    static int i;
    (void)text;
    if (state == 0) i = 0;
    if (!g_cands || !g_cands[i]) return NULL;
    return strdup(g_cands[i++]);
}

/* Candidates from Lua into g_cands. Any error means no candidates. */
static void lua_cands(const char *text) {
    lua_State *L = g_complete_L;
    int top = lua_gettop(L);
    free_cands();
    push_repl_fn(L, "complete");
    lua_pushstring(L, text);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
        lua_Integer n = luaL_len(L, -1);
        g_cands = calloc((size_t)n + 1, sizeof *g_cands);
        for (lua_Integer i = 0; g_cands && i < n; i++) {
            lua_rawgeti(L, -1, i + 1);
            const char *s = lua_tostring(L, -1);
            g_cands[i] = strdup(s ? s : "");
            lua_pop(L, 1);
        }
    }
    lua_settop(L, top);
}

static char **complete(const char *text, int start, int end) {
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* never readline's default file names outside strings */
    rl_completion_append_character = '\0';
    if (in_string()) {
        rl_filename_completion_desired = 1;
        return rl_completion_matches(text, rl_filename_completion_function);
    }
    lua_cands(text);
    return rl_completion_matches(text, next_cand);
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
** Cells: read, compile, run (the rest is gmoe.repl's: begin, special, finish, fail)
** ===================================================================== */

enum { CELL_LUA, CELL_SPECIAL, CELL_BAD, CELL_EMPTY, CELL_EOF, CELL_INTR };

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

/* The text on top of the stack as an expression: pushes the compiled function above it and
 * returns LUA_OK, or leaves the stack alone. */
static int try_expression(lua_State *L) {
    const char *line = lua_tostring(L, -1);
    const char *ret = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, ret, strlen(ret), CHUNKNAME);
    if (status == LUA_OK) {
        lua_remove(L, -2); /* the "return" text */
    } else {
        lua_pop(L, 2);
    }
    return status;
}

/* The text on top of the stack as statements, reading continuation lines while the chunk is
 * merely unfinished. Leaves the (completed) text and, above it, the function or an error
 * message; returns the load status, or CELL_INTR (text popped) when Ctrl-C abandoned it. */
static int try_statements(const repl *r) {
    lua_State *L = r->L;
    for (;;) {
        size_t len;
        const char *text = lua_tolstring(L, -1, &len);
        int status = luaL_loadbuffer(L, text, len, CHUNKNAME);
        char *line;
        int st;
        if (!incomplete(L, status)) {
            if (status == LUA_OK) warn_local(text);
            return status;
        }
        st = read_line(r, false, &line);
        if (st == LINE_EOF) return status; /* report the "<eof>" error */
        lua_pop(L, 1);                     /* the "<eof>" message */
        if (st == LINE_INTR) {
            lua_pop(L, 1);
            return CELL_INTR;
        }
        lua_pushstring(L, line);
        free(line);
        strip_prompts(L);
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

/* Reads a cell. CELL_LUA: pushes its text and compiled function; CELL_SPECIAL (help, magic,
 * shell): pushes the line; CELL_BAD: pushes the text and the syntax error; otherwise pushes
 * nothing. */
static int load_cell(const repl *r) {
    lua_State *L = r->L;
    char *line;
    int st = read_line(r, true, &line);
    if (st != LINE_OK) return st == LINE_EOF ? CELL_EOF : CELL_INTR;
    lua_pushstring(L, line);
    free(line);
    strip_prompts(L);
    if (lua_tostring(L, -1)[strspn(lua_tostring(L, -1), " \t\r\n")] == '\0') {
        lua_pop(L, 1);
        return CELL_EMPTY;
    }
    if (is_special(L, -1)) return CELL_SPECIAL;
    if (try_expression(L) == LUA_OK) return CELL_LUA;
    st = try_statements(r);
    if (st == CELL_INTR) return CELL_INTR;
    return st == LUA_OK ? CELL_LUA : CELL_BAD;
}

/* gmoe.repl.fail(n, message) for the error on top of the stack (popped). */
static void fail(const repl *r, int n) {
    lua_State *L = r->L;
    if (r->tty && gm_interrupted()) fputc('\n', stderr); /* past the terminal's "^C" */
    fflush(stdout);
    lua_sethook(L, NULL, 0, 0); /* the cell is over: let gmoe.repl.fail record it (the flag stays up) */
    push_repl_fn(L, "fail");
    lua_pushinteger(L, n);
    lua_rotate(L, -3, -1); /* message, fail, n -> fail, n, message */
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) gm_repl_report(L, LUA_ERRRUN, NULL);
    gm_lua_reset(L);
}

/* Runs cell n: text at `base`, above it the compiled function (CELL_LUA) or nothing
 * (CELL_SPECIAL, run by gmoe.repl.special). Results go to gmoe.repl.finish. */
static void run_cell(repl *r, int kind, int base) {
    lua_State *L = r->L;
    int n = r->n++, status, nres;
    history_add(r, lua_tostring(L, base));
    push_repl_fn(L, "begin");
    lua_pushinteger(L, n);
    lua_pushvalue(L, base);
    lua_pushboolean(L, kind == CELL_SPECIAL);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) lua_pop(L, 1); /* cannot fail but for memory */
    if (kind == CELL_BAD) {
        fail(r, n);
        return;
    }
    if (kind == CELL_SPECIAL) {
        push_repl_fn(L, "special");
        lua_pushvalue(L, base);
        status = gm_repl_docall(L, 1, LUA_MULTRET);
    } else {
        status = gm_repl_docall(L, 0, LUA_MULTRET);
    }
    if (status == LUA_OK) {
        nres = lua_gettop(L) - base;
        push_repl_fn(L, "finish");
        lua_pushinteger(L, n);
        lua_rotate(L, base + 1, 2); /* finish, n, results... */
        status = gm_repl_docall(L, nres + 1, 0);
    }
    fflush(stdout);
    if (status != LUA_OK) fail(r, n);
}

/* Starts gmoe.repl (kept in the registry for the completion and the cells). */
static bool start_lua_half(repl *r) {
    lua_State *L = r->L;
    const char *nc = getenv("NO_COLOR");
    lua_getglobal(L, "require");
    lua_pushliteral(L, "gmoe.repl");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
        gm_repl_report(L, LUA_ERRRUN, "gmoe: the REPL's Lua half failed to load");
        return false;
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &REPL_KEY);
    push_repl_fn(L, "start");
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, isatty(STDOUT_FILENO) && !(nc && *nc));
    lua_setfield(L, -2, "color");
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        gm_repl_report(L, LUA_ERRRUN, "gmoe");
        return false;
    }
    return true;
}

void gm_repl_run(lua_State *L) {
    repl r = {.L = L, .tty = isatty(STDIN_FILENO), .histfile = NULL, .n = 1};
    if (!start_lua_half(&r)) return;
    if (r.tty) {
        rl_readline_name = "gmoe";
        rl_catch_signals = 0; /* see read_tty */
        rl_catch_sigwinch = 0;
        rl_attempted_completion_function = complete;
        rl_completion_word_break_hook = word_breaks;
        g_complete_L = L;
        history_open(&r);
        printf("gmoe %s  %s  (?name: help, %%help: magics, Tab completes, Ctrl-D exits)\n",
               GM_VERSION, LUA_RELEASE);
    }
    for (;;) {
        int base = lua_gettop(L), kind;
        /* Back at the prompt: the one place that lowers the interrupt flag. */
        gm_interrupt_clear();
        g_signal = 0;
        lua_sethook(L, NULL, 0, 0);
        kind = load_cell(&r);
        if (kind == CELL_EOF) break;
        /* Ctrl-C at the prompt discards the line (and a second one an empty line): only
         * Ctrl-D ends the session. */
        if (kind != CELL_INTR && kind != CELL_EMPTY) run_cell(&r, kind, base + 1);
        lua_settop(L, base);
        if (gm_repl_signal() == SIGTERM) break; /* stopped from outside: end the session */
    }
    /* Leave the shell's prompt on a line of its own (readline already did on a terminal). */
    if (!r.tty) fputc('\n', stdout);
    fflush(stdout);
    if (r.tty) history_close(&r);
    free_cands();
}

/* }==================================================================== */
