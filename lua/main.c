/* main.c: the gmoe executable. No arguments: the REPL (lua/repl.c). A script (`gmoe FILE`,
 * `gmoe run FILE`, `gmoe -` for stdin), a Markdown notebook (FILE.md, lua/gmoe/notebook.lua)
 * or -e code: batch, exit status 1 on any error. `gmoe sweep ...` and `gmoe plot ...` go to the
 * experiment runner (lua/gmoe/experiment.lua), `gmoe kernel ...` to the Jupyter kernel
 * (lua/jupyter.c, lua/gmoe/kernel.lua). Options
 * and the global `arg` follow lua.c; like lua.c, everything runs inside one lua_pcall so even
 * start-up failures are reported rather than crashed on. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

#include "gm.h"
#include "jupyter.h"
#include "lgmoe.h"
#include "repl.h"

#define PROGNAME "gmoe"
#define EXIT_USAGE 2

#if defined(__clang__)
#define GM_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define GM_COMPILER "gcc " __VERSION__
#else
#define GM_COMPILER "unknown C compiler"
#endif

typedef struct args {
    int argc;
    char **argv;
    int script; /* argv index of the script, 0 when there is none */
    int cli;    /* 1 for `gmoe sweep|plot|kernel ...` (argv[1] is the command), else 0 */
    bool has_e, interactive, version, help;
} args;

static void usage(FILE *f) {
    fputs("usage: " PROGNAME " [options] [script [args]]\n"
          "       " PROGNAME " run script [args]\n"
          "       " PROGNAME " sweep experiments/NAME.lua [-j N | --emit parallel|slurm | --status] key=a,b,c ...\n"
          "       " PROGNAME " plot NAME [run-dir]\n"
          "       " PROGNAME " kernel install [--user | --prefix DIR] | uninstall | -f CONNECTION_FILE\n"
          "With no script and no -e, " PROGNAME " starts the REPL (Ctrl-D exits).\n"
          "Options:\n"
          "  -e code        run code (may be repeated; runs before the script)\n"
          "  -i             enter the REPL after the script and -e code\n"
          "  -              read the script from stdin\n"
          "  --             stop handling options\n"
          "  -v, --version  print the versions of gmoe, Lua, BLAS, the compiler, CUDA\n"
          "  -h, --help     print this help\n"
          "A script gets its arguments as '...' and in the global 'arg' (arg[0] is the\n"
          "script, arg[1] its first argument). A Markdown notebook (FILE.md) runs its\n"
          "```lua cells in order; 'gmoe run FILE.md --update' rewrites their outputs.\n",
          f);
}

static void print_version(void) {
    printf(PROGNAME " %s\n", GM_VERSION);
    printf("%s\n", LUA_RELEASE);
    printf("BLAS: %s\n", gm_blas_info());
    printf("compiler: %s\n", GM_COMPILER);
    printf("CUDA backend: %s\n", gm_cuda_built() ? "built" : "not built");
}

static bool bad_usage(const char *what, const char *opt) {
    fprintf(stderr, PROGNAME ": %s '%s'\n", what, opt);
    usage(stderr);
    return false;
}

/* Options up to the script name (lua.c's collectargs); `run` as the first argument only
 * names the script explicitly. Returns false, after printing usage, on a bad command line. */
static bool parse_args(args *a) {
    if (a->argc > 1 && (strcmp(a->argv[1], "sweep") == 0 || strcmp(a->argv[1], "plot") == 0 ||
                        strcmp(a->argv[1], "kernel") == 0)) {
        a->cli = 1;
        return true;
    }
    bool run = a->argc > 1 && strcmp(a->argv[1], "run") == 0;
    for (int i = run ? 2 : 1; i < a->argc; i++) {
        const char *s = a->argv[i];
        if (s[0] != '-' || s[1] == '\0') { /* a script name, or "-" for stdin */
            a->script = i;
            break;
        }
        if (strcmp(s, "--") == 0) {
            if (i + 1 < a->argc) a->script = i + 1;
            break;
        }
        if (strncmp(s, "-e", 2) == 0) {
            if (s[2] == '\0' && ++i >= a->argc) return bad_usage("missing code after", s);
            a->has_e = true;
        } else if (strcmp(s, "-i") == 0) {
            a->interactive = true;
        } else if (strcmp(s, "-v") == 0 || strcmp(s, "--version") == 0) {
            a->version = true;
        } else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            a->help = true;
        } else {
            return bad_usage("unrecognized option", s);
        }
    }
    if (run && a->script == 0 && !a->version && !a->help)
        return bad_usage("missing script after", "run");
    return true;
}

/* arg[0] is the script, arg[1..] its arguments, arg[-1..] the interpreter and options
 * (lua.c's createargtable). Without a script, only negative indices are used. */
static void create_arg_table(lua_State *L, const args *a) {
    int script = a->cli ? a->cli : a->script ? a->script : a->argc;
    lua_createtable(L, a->argc - script, script + 1);
    for (int i = 0; i < a->argc; i++) {
        lua_pushstring(L, a->argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int run_string(lua_State *L, const char *code) {
    int status = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
    if (status == LUA_OK) status = gm_repl_docall(L, 0, 0);
    return gm_repl_report(L, status, PROGNAME);
}

/* Every -e, in order. */
static int run_options(lua_State *L, const args *a) {
    int end = a->script ? a->script : a->argc;
    for (int i = 1; i < end; i++) {
        const char *s = a->argv[i];
        if (strncmp(s, "-e", 2) != 0) continue;
        int status = run_string(L, s[2] != '\0' ? s + 2 : a->argv[++i]);
        if (status != LUA_OK) return status;
    }
    return LUA_OK;
}

static bool ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

/* A Markdown notebook: gmoe.notebook.run(file, {update = "--update" among its arguments}). */
static int run_notebook(lua_State *L, const args *a) {
    bool update = false;
    for (int i = a->script + 1; i < a->argc; i++) {
        if (strcmp(a->argv[i], "--update") == 0) {
            update = true;
        } else {
            lua_pushfstring(L, "notebook: unknown argument '%s' (only --update)", a->argv[i]);
            return gm_repl_report(L, LUA_ERRRUN, PROGNAME);
        }
    }
    lua_getglobal(L, "require");
    lua_pushliteral(L, "gmoe.notebook");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "run");
    lua_remove(L, -2);
    lua_pushstring(L, a->argv[a->script]);
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, update);
    lua_setfield(L, -2, "update");
    return gm_repl_report(L, gm_repl_docall(L, 2, 0), PROGNAME);
}

static int run_script(lua_State *L, const args *a) {
    const char *fname = a->argv[a->script];
    bool from_stdin = strcmp(fname, "-") == 0 && strcmp(a->argv[a->script - 1], "--") != 0;
    int status;
    if (ends_with(fname, ".md")) return run_notebook(L, a);
    status = luaL_loadfile(L, from_stdin ? NULL : fname);
    if (status == LUA_OK) {
        int n = a->argc - a->script - 1;
        luaL_checkstack(L, n + 3, "too many arguments to script");
        for (int i = a->script + 1; i < a->argc; i++) lua_pushstring(L, a->argv[i]);
        status = gm_repl_docall(L, n, 0);
    }
    return gm_repl_report(L, status, PROGNAME);
}

/* `gmoe sweep|plot args...`: require('gmoe.experiment').cli(cmd, {args...}), which reports its
 * own errors and returns false on failure. */
static int run_cli(lua_State *L, const args *a) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "gmoe.experiment");
    int status = gm_repl_docall(L, 1, 1);
    if (status != LUA_OK) return gm_repl_report(L, status, PROGNAME);
    lua_getfield(L, -1, "cli");
    lua_remove(L, -2);
    lua_pushstring(L, a->argv[a->cli]);
    lua_createtable(L, a->argc - a->cli - 1, 0);
    for (int i = a->cli + 1; i < a->argc; i++) {
        lua_pushstring(L, a->argv[i]);
        lua_rawseti(L, -2, i - a->cli);
    }
    status = gm_repl_docall(L, 2, 1);
    if (status != LUA_OK) return gm_repl_report(L, status, PROGNAME);
    status = lua_toboolean(L, -1) ? LUA_OK : LUA_ERRRUN;
    lua_pop(L, 1);
    return status;
}

/* `gmoe kernel -f FILE` runs the Jupyter kernel; `gmoe kernel install|uninstall ...` goes to
 * gmoe.kernel.cli. */
static int run_kernel(lua_State *L, const args *a) {
    if (a->argc == 4 && strcmp(a->argv[2], "-f") == 0)
        return gm_jupyter_run(L, a->argv[3]) == 0 ? LUA_OK : LUA_ERRRUN;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "gmoe.kernel");
    int status = gm_repl_docall(L, 1, 1);
    if (status != LUA_OK) return gm_repl_report(L, status, PROGNAME);
    lua_getfield(L, -1, "cli");
    lua_remove(L, -2);
    lua_createtable(L, a->argc - 2, 0);
    for (int i = 2; i < a->argc; i++) {
        lua_pushstring(L, a->argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    return gm_repl_report(L, lua_pcall(L, 1, 0, 0), NULL); /* its messages say "gmoe kernel: " */
}

/* The whole program, run protected. Pushes true on success. With -i, a failing script or -e
 * still enters the REPL (to inspect what it left behind) and the exit status stays 1. */
static int pmain(lua_State *L) {
    const args *a = lua_touserdata(L, 1);
    bool ok = true;
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, gm_repl_open_term);
    lua_setfield(L, -2, "gmoe.term");
    lua_pushcfunction(L, gm_jupyter_open);
    lua_setfield(L, -2, "gmoe.jupyter");
    lua_pop(L, 1);
    create_arg_table(L, a);
    if (gm_lua_setup(L) != 0) {
        gm_repl_report(L, LUA_ERRRUN, PROGNAME);
        lua_pushboolean(L, 0);
        return 1;
    }
    if (a->cli) {
        bool kernel = strcmp(a->argv[a->cli], "kernel") == 0;
        lua_pushboolean(L, (kernel ? run_kernel(L, a) : run_cli(L, a)) == LUA_OK);
        return 1;
    }
    if (a->has_e && run_options(L, a) != LUA_OK) ok = false;
    if (ok && a->script && run_script(L, a) != LUA_OK) ok = false;
    if (!ok && a->interactive) gm_lua_reset(L);
    if (a->interactive || (!a->script && !a->has_e)) gm_repl_run(L);
    lua_pushboolean(L, ok);
    return 1;
}

int main(int argc, char **argv) {
    args a = {.argc = argc, .argv = argv};
    lua_State *L;
    int status;
    bool ok;
    gm_process_setup(argc, argv);
    if (!parse_args(&a)) return EXIT_USAGE;
    if (a.help) {
        usage(stdout);
        return EXIT_SUCCESS;
    }
    if (a.version) {
        print_version();
        return EXIT_SUCCESS;
    }
    L = gm_lua_newstate();
    if (L == NULL) {
        fputs(PROGNAME ": cannot create the Lua state: not enough memory\n", stderr);
        return EXIT_FAILURE;
    }
    lua_pushcfunction(L, pmain);
    lua_pushlightuserdata(L, &a);
    status = lua_pcall(L, 1, 1, 0);
    ok = status == LUA_OK && lua_toboolean(L, -1);
    gm_repl_report(L, status, PROGNAME);
    lua_close(L);
    if (!ok && gm_repl_signal()) return 128 + gm_repl_signal(); /* 130 after Ctrl-C, 143 after SIGTERM */
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
