-- t_batch.lua: gmoe as a batch interpreter (lua/main.c): scripts, `run`, `-`, -e, arg and
-- `...`, exit statuses, tracebacks, --version/--help, bad options, Ctrl-C.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

-- The interpreter running this test is the gmoe under test: arg's lowest index (lua.c).
local function gmoe_path()
  local lo = 0
  while arg[lo - 1] do lo = lo - 1 end
  return lo < 0 and arg[lo] or os.getenv('GMOE') or 'build/gmoe'
end
local GMOE = gmoe_path()

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local tmp = os.tmpname()
local files = {tmp}
local function path(ext) local p = tmp .. ext; files[#files + 1] = p; return p end
local OUT, ERR, RC = path('.out'), path('.err'), path('.rc')

local function slurp(p)
  local f = io.open(p, 'rb')
  if not f then return '' end
  local s = f:read('a')
  f:close()
  return s
end
local function spit(p, s) local f = assert(io.open(p, 'wb')); f:write(s); f:close() end

-- Runs gmoe with a shell-ready argument string; returns exit code, stdout, stderr.
local function gmoe(args, stdin)
  local cmd = ('timeout 20 %s %s < %s > %s 2> %s'):format(
    q(GMOE), args, stdin and q(stdin) or '/dev/null', q(OUT), q(ERR))
  local _, _, code = os.execute(cmd)
  return code, slurp(OUT), slurp(ERR)
end

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
rc, out, err = gmoe(q(tmp .. '_missing.lua'))
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
local script = [[
"$0" -e 'io.stderr:write("ready\n") while true do end' </dev/null >"$1" 2>"$2" &
pid=$!
i=0; while ! grep -q ready "$2" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
sleep 0.3
kill -INT $pid
i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done
if kill -0 $pid 2>/dev/null; then kill -KILL $pid; wait $pid; echo hung >"$3"; exit; fi
wait $pid; echo $? >"$3"
]]
os.execute(('timeout 30 sh -c %s %s %s %s %s'):format(q(script), q(GMOE), q(OUT), q(ERR), q(RC)))
local code = slurp(RC):match('%S+')
tap.is(code, '1', 'Ctrl-C ends a batch run within 2 s with status 1')
tap.like(slurp(ERR), 'interrupted', 'with "interrupted" on stderr')

for _, p in ipairs(files) do os.remove(p) end
tap.done()
