-- t_batch.lua: gmoe as a batch interpreter (lua/main.c): scripts, `run`, `-`, -e, arg and
-- `...`, exit statuses, tracebacks, --version/--help, bad options, Ctrl-C.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local q, path, spit = tap.q, tap.tmpfile, tap.spit

-- Runs gmoe with a shell-ready argument string and stdin from a file; returns exit code,
-- stdout, stderr.
local function gmoe(args, stdin) return tap.run(args, {stdin = stdin}) end

local rc, out, err

local good = path('_good.lua')
spit(good, 'print("hello", select("#", ...), ...)\n'
  .. 'print(#arg, arg[1], arg[2], type(gm))\n')
rc, out, err = gmoe(q(good) .. ' a "b c"')
tap.is(rc, 0, 'a good script exits 0')
tap.like(out, '^hello\t2\ta\tb c\n', 'script arguments arrive as ...')
tap.like(out, '\n2\ta\tb c\ttable\n', 'arg[1..] holds the arguments and gm is a global')
tap.is(err, '', 'nothing on stderr')
rc, out = gmoe(q(good) .. ' x')
tap.like(out, '\n1\tx\t', 'one argument')

rc, out = gmoe('-e ' .. q('print(arg[0])') .. ' ' .. q(good))
tap.like(out, '^' .. good:gsub('%p', '%%%0') .. '\n', 'arg[0] is the script')
rc, out = gmoe('run ' .. q(good) .. ' r')
tap.is(rc, 0, 'gmoe run FILE exits 0')
tap.like(out, '\n1\tr\t', 'gmoe run FILE passes arguments')
rc, out = gmoe('- s t', good)
tap.is(rc, 0, 'gmoe - reads the script from stdin')
tap.like(out, '^hello\t2\ts\tt\n', 'with its arguments')

local bad = path('_bad.lua')
spit(bad, 'local function inner() error("kaboom") end\nlocal function outer() inner() end\n'
  .. 'print("before")\nouter()\nprint("after")\n')
rc, out, err = gmoe(q(bad))
tap.is(rc, 1, 'a failing script exits 1')
tap.is(out, 'before\n', 'the script stops at the error')
tap.like(err, '^gmoe: .-:1: kaboom\n', 'the error message on stderr')
tap.like(err, 'stack traceback:.*inner.*outer', 'with a traceback through the callers')

local syntax = path('_syntax.lua')
spit(syntax, 'x = = 1\n')
rc, out, err = gmoe(q(syntax))
tap.is(rc, 1, 'a script with a syntax error exits 1')
tap.like(err, "unexpected symbol near '='", 'and says why')
rc, out, err = gmoe(q(path('_missing.lua')))
tap.is(rc, 1, 'a missing script exits 1')
tap.like(err, 'cannot open', 'and says so')

rc, out = gmoe('-e ' .. q('print(1 + 1)'))
tap.is(rc, 0, '-e exits 0')
tap.is(out, '2\n', '-e runs its code')
rc, out = gmoe('-e ' .. q('x = 3') .. ' -e ' .. q('print(x * 2)'))
tap.is(out, '6\n', 'several -e run in order in one state')
rc, out = gmoe('-e ' .. q('x = 7') .. ' ' .. q(good) .. ' z')
tap.like(out, '^hello', '-e before a script')
rc, out, err = gmoe('-e ' .. q('error("nope")'))
tap.is(rc, 1, 'a failing -e exits 1')
tap.like(err, 'nope', 'with its message')
rc, out = gmoe('-e ' .. q('io.write(type(gm))'))
tap.is(out, 'table', 'gm is a global in -e code')

rc, out = gmoe('--version')
tap.is(rc, 0, '--version exits 0')
tap.like(out, 'gmoe %d+%.%d+', '--version names gmoe')
tap.like(out, 'Lua 5%.4', '--version names Lua')
tap.like(out, 'OpenBLAS', '--version names the BLAS')
tap.like(out, 'CUDA backend: ', '--version says whether CUDA is built')
rc, out = gmoe('--help')
tap.is(rc, 0, '--help exits 0')
tap.like(out, '^usage: gmoe', '--help prints usage on stdout')
rc, out, err = gmoe('--bogus')
tap.is(rc, 2, 'an unknown option exits 2')
tap.like(err, "unrecognized option '%-%-bogus'.*usage: gmoe", 'with usage on stderr')
tap.is(out, '', 'and nothing on stdout')
rc = gmoe('run')
tap.is(rc, 2, 'run without a script exits 2')

-- Ctrl-C in batch: SIGINT once the loop runs; it must end within 2 s, non-zero, "interrupted".
rc, out, err = tap.run_interrupted('-e ' .. q('io.stderr:write("ready\\n") while true do end'),
                                   {settle = 0.3})
tap.is(rc, 130, 'Ctrl-C ends a batch run within 2 s with status 130 (128 + SIGINT, as a shell reports it)')
tap.is(err, 'ready\ngmoe: interrupted\n', 'saying "interrupted" once, without a traceback')

tap.done()
