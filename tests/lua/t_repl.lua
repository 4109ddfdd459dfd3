-- t_repl.lua: the gmoe REPL driven through a pipe (lua/repl.c, lua/gmoe/repl.lua): numbered
-- cells, Out[n]/In[n]/_/__, values printed by gm.show, multi-line and pasted cells, errors
-- that leave variables intact, %tb, the `local` warning, help, magics, `!cmd`, Ctrl-C.
-- The same through a pseudo-terminal (completion, real Ctrl-C keys): t_repl_pty.lua.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local q, path, slurp, spit = tap.q, tap.tmpfile, tap.slurp, tap.spit
local ENV = 'GMOE_HISTORY=/dev/null'

-- Feeds `input` to the REPL; returns exit code, stdout, stderr.
local function repl(input, args) return tap.run(args, {input = input, env = ENV}) end

-- Starts the REPL in the background on `input`, waits for it to write "ready" on stderr,
-- sends SIGINT and waits up to 2 s for the end of input. Returns exit code (or "hung"),
-- stdout, stderr.
local function repl_interrupted(input) return tap.run_interrupted('', {input = input, env = ENV}) end

local rc, out, err

-- expressions and their printed values, numbered
rc, out, err = repl('1 + 2\n"hi"\n1, "a\\nb", nil\n')
tap.is(rc, 0, 'exits 0 at end of input')
tap.like(out, '^gmoe %[1%]> Out%[1%]: 3\n', 'numbered prompt, value as Out[1]')
tap.like(out, 'gmoe %[2%]> Out%[2%]: "hi"\n', 'strings are shown quoted')
tap.like(out, 'gmoe %[3%]> Out%[3%]: 1\t"a\\nb"\tnil\n', 'several values separated by tabs')
tap.is(err, '', 'nothing on stderr')

-- multi-line cells, continued exactly while the chunk is unfinished
rc, out, err = repl('function sq(x)\n  return x * x\nend\nsq(7)\nt = {\n1,\n2}\n#t\n')
tap.like(out, '%.%.%.> %.%.%.> gmoe %[2%]> Out%[2%]: 49\n', 'function definition continued over lines')
tap.like(out, 'gmoe %[4%]> Out%[4%]: 2\n', 'table constructor continued over lines')
rc, out, err = repl('x = = 1\n42\n')
tap.like(err, "unexpected symbol near '='", 'a real syntax error is reported at once')
tap.like(out, 'gmoe %[1%]> gmoe %[2%]> Out%[2%]: 42\n', 'no continuation prompt after a syntax error')
rc, out, err = repl('function f(\n')
tap.like(err, '<eof>', 'end of input inside a cell reports the unfinished chunk')

-- pasted transcripts: prompts are stripped
rc, out, err = repl('gmoe [7]> function g(a)\n...>   return a + 1\n...> end\ngmoe> g(1)\n  gmoe [9]> g(2)\n')
tap.is(err, '', 'pasted prompts are not Lua errors')
tap.like(out, 'Out%[2%]: 2\n', 'a pasted multi-line cell runs')
tap.like(out, 'Out%[3%]: 3\n', 'a pasted cell with a numbered prompt runs')

-- errors leave the session usable; the message is shown, %tb has the traceback
rc, out, err = repl('x = 41\nerror("boom")\nnosuch.field = 1\nx + 1\n%tb\n')
tap.like(err, 'stdin:1: boom', 'error message printed')
tap.ok(not err:find('stack traceback:'), 'without the traceback')
tap.like(err, "attempt to index a nil value %(global 'nosuch'%)", 'runtime error printed')
tap.like(out, 'Out%[4%]: 42\n', 'variables survive errors')
tap.like(out, 'stack traceback:', '%tb prints the last traceback')
tap.is(rc, 0, 'errors at the prompt do not change the exit status')

-- _ and __, Out[n] and In[n]
rc, out = repl('10 * 10\n_ + 1\ny = 5\n_\n__\nOut[1] + Out[2]\nIn[3]\n')
tap.like(out, 'gmoe %[2%]> Out%[2%]: 101\n', '_ is the last result')
tap.like(out, 'gmoe %[4%]> Out%[4%]: 101\n', 'statements leave _ alone')
tap.like(out, 'gmoe %[5%]> Out%[5%]: 101\n', '__ is the result before _')
tap.like(out, 'Out%[6%]: 201\n', 'Out[n] keeps every result')
tap.like(out, 'Out%[7%]: "y = 5"\n', 'In[n] keeps every cell')

-- `local` does not survive its cell, and the REPL says so (the documented choice)
rc, out, err = repl('local z = 5\nz\n')
tap.like(err, 'warning: a local does not survive its cell', 'local warns on stderr')
tap.like(out, 'Out%[2%]: nil\n', 'the local is gone in the next cell')

-- gm is global, and gm.show is looked up at each print
rc, out = repl('type(gm)\ngm.show = function(...) print("SHOWN", ...) end\n7\n')
tap.like(out, 'Out%[1%]: "table"\n', 'gm is a global')
tap.like(out, 'SHOWN\t7\n', 'a replaced gm.show is used')
rc, out = repl('gm = nil\n{1, 2}\n8\n')
tap.like(out, 'Out%[2%]: {1, 2}\n', 'without gm, the default printer is used')

-- show formatting of plain values and objects
rc, out = repl('{1, 2, a = {b = {c = {d = 1}}}, ["k y"] = 3}\n')
tap.like(out, '{1, 2, a = {b = {c = {...}}}, %["k y"%] = 3}', 'nested tables with a depth cap')
rc, out = repl('local t = {} for i = 1, 30 do t[i] = i end return t\n')
tap.like(out, '{1, 2, 3, [%d, ]+20, ...}', 'long tables capped with ...')
rc, out = repl('setmetatable({}, {__tostring = function() return "Linear(4 -> 2)\\n  2 params" end})\n'
  .. 'setmetatable({}, {__name = "gm.Gate"})\n{m = setmetatable({}, {__tostring = function() return "M" end})}\n')
tap.like(out, 'Out%[1%]: \nLinear%(4 %-> 2%)\n  2 params\n', 'objects print through __tostring (multi-line after Out)')
tap.like(out, 'Out%[2%]: gm%.Gate: 0x', 'objects with __name print through tostring')
tap.like(out, 'Out%[3%]: {m = M}\n', 'nested objects too')

-- tensors: a header (dtype, shape, device, requires_grad, stats, NaN/Inf counts), then values
rc, out, err = repl(table.concat({
  'gm.tensor{{0.5, -1.5}, {3, 4.5}}',
  'gm.tensor(3.5)',
  'gm.zeros{2, 0}',
  'gm.tensor({1, 2, 30}, {dtype = "i32"})',
  'gm.tensor{0/0, 1/0, -1/0, 1.5}',
  'gm.zeros({2}, {requires_grad = true})',
  'big = gm.zeros{1000, 1000}',
  'big',
  'tostring(gm.tensor{1.5, -2})',
  '{w = big, b = gm.tensor{1, 2}}',
  'gm.tensor{{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}}',
}, '\n') .. '\n')
tap.is(err, '', 'tensor printing raises no error')
tap.like(out, 'Out%[1%]: \ntensor f32%[2, 2%] cpu  min %-1%.5  max 4%.5  mean 1%.625  std 2%.301\n'
  .. '%[%[ 0%.5000, %-1%.5000%],\n %[ 3%.0000,  4%.5000%]%]\n',
  'a matrix: header with statistics, then aligned values')
tap.like(out, 'Out%[2%]: \ntensor f32%[%] cpu  min 3%.5  max 3%.5  mean 3%.5  std 0\n3%.5000\n', 'a 0-dim tensor')
tap.like(out, 'Out%[3%]: \ntensor f32%[2, 0%] cpu\n%[%]\n', 'an empty tensor with its shape')
tap.like(out, 'Out%[4%]: \ntensor i32%[3%] cpu\n%[ 1,  2, 30%]\n', 'i32: no statistics, integers')
tap.like(out, 'tensor f32%[4%] cpu  min 1%.5  max 1%.5  mean 1%.5  std 0  nan 1  inf 2\n'
  .. '%[   nan,    inf,   %-inf, 1%.5000%]', 'NaN and Inf counted; statistics over finite values')
tap.like(out, 'tensor f32%[2%] cpu requires_grad  min 0', 'requires_grad in the header')
tap.like(out, 'Out%[8%]: \ntensor f32%[1000, 1000%] cpu  min 0  max 0  mean 0  std 0\n'
  .. '%[%[0%., 0%., 0%.,  %.%.%., 0%., 0%., 0%.%],\n', 'summarised rows')
tap.like(out, '%[0%., 0%., 0%.,  %.%.%., 0%., 0%., 0%.%],\n %.%.%.,\n', 'summarised columns')
tap.like(out, 'Out%[9%]: "tensor%(%[ 1%.5000, %-2%.0000%]%)  f32%[2%] cpu"\n',
  'tostring keeps the PyTorch-style one-liner')
tap.like(out, '{b = tensor%(%[1%., 2%.%]%)  f32%[2%] cpu, w = <tensor f32%[1000, 1000%] cpu>}',
  'in tables, small tensors in full and large ones as a header')
tap.like(out, '%[3%., 4%.%]%],\n\n %[%[5%.', 'a blank line between matrices of a 3-d tensor')
rc, out = repl('gm.tensor{1, 2}\n')
tap.ok(not out:find('\27[', 1, true), 'no colour when stdout is not a terminal')

-- slow cells print their wall time
rc, out, err = repl('t0 = gm.clock() while gm.clock() - t0 < 0.6 do end\n1\n')
tap.like(err, '^%(0%.[6-9]%d s%)\n$', 'a cell over 0.5 s prints its wall time')

-- help
rc, out, err = repl('?gm.zeros\n??gm.no_grad\n?matmul\n??matmul\nx = gm.zeros{2}\n?x:sum\n?gm.nosuch\n?\n')
tap.like(out, 'gm%.zeros%(shape | d0, d1, %.%.%., opts%) %-> tensor\n  A tensor of zeros', '?name: signature and text')
tap.like(out, 'gm%.no_grad%(fn, %.%.%.%).-defined at: lua/gmoe/init%.lua:%d+', '??name: where it is defined')
tap.like(out, 'gm%.matmul%(x, y%)\n  matmul%(x, y%)', '?op from the op table')
tap.like(out, 'defined at: core/ops/linalg%.def:%d+', '??op: its row in the op table')
tap.like(out, 'gm%.sum%(x, dims%?, keepdim%?%)', '?x:method finds the op')
tap.like(err, "no documentation for 'gm%.nosuch'", 'unknown names say so')
tap.like(out, '%%timeit stmt', '? alone lists the magics')

-- magics and the shell
rc, out, err = repl(table.concat({
  '%timeit local s = 0 for i = 1, 100 do s = s + i end',
  '%time 6 * 7',
  'v = gm.zeros{4, 2}',
  'n = 3',
  '%who',
  '%seed 5',
  'a = gm.randn{2}:sum():item()',
  '%seed 5',
  'gm.randn{2}:sum():item() == a',
  '!echo shell-ok',
  '%history -n 2',
  '%nosuch',
  '%reset',
  '%who',
  'v',
}, '\n') .. '\n')
tap.like(out, '[%d.]+ [nu]?s %+%- [%d.]+ [nmu]?s per loop %(median %+%- IQR of %d runs, %d+ loops each%)',
  '%timeit: median and spread per loop')
tap.like(err, 'Wall time: ', '%time prints the wall time')
tap.like(out, 'Out%[2%]: 42\n', '%time returns the value')
tap.like(out, 'n  integer = 3\nv  tensor f32%[4, 2%] cpu\n', '%who: variables with types and shapes')
tap.like(out, 'Out%[9%]: true\n', '%seed seeds the generator')
tap.like(out, 'shell%-ok\n', '!cmd runs a shell command')
tap.like(out, '  10  !echo shell%-ok\n  11  %%history %-n 2\n', '%history')
tap.like(err, 'unknown magic %%nosuch %(%%help lists the magics%)', 'unknown magics say so')
tap.like(out, '%(no variables%)', '%reset deletes the variables')
tap.like(out, 'Out%[15%]: nil\n', '... and they are gone')

-- %run into the session, with arguments; %save
do
  local script = path('_run.lua')
  spit(script, 'ran = {...}\nhelper = arg[0]\nreturn #ran\n')
  local saved = path('_saved.lua')
  rc, out, err = repl(('%%run %s k=v "two words"\nran[2]\nhelper == %q\nq = 1\n%%save %s\n'):format(
    script, script, saved))
  tap.like(out, 'Out%[1%]: 2\n', '%run returns the script\'s results')
  tap.like(out, 'Out%[2%]: "two words"\n', 'arguments as ... (quotes group words)')
  tap.like(out, 'Out%[3%]: true\n', 'arg[0] is the script')
  tap.is(slurp(saved), 'ran[2]\nhelper == ' .. ('%q'):format(script) .. '\nq = 1\n',
    '%save writes the Lua cells')
end

-- Ctrl-C stops a running cell and returns to the prompt with the session intact
rc, out, err = repl_interrupted('x = 5\nio.stderr:write("ready\\n") while true do end\nx + 1\n')
tap.is(rc, 0, 'Ctrl-C in a cell does not end the REPL')
tap.like(err, 'interrupted', 'the cell fails with "interrupted"')
tap.like(out, 'Out%[3%]: 6\n', 'the next cell runs')
rc, out, err = repl_interrupted('io.stderr:write("ready\\n") '
  .. 'while true do pcall(function() while true do end end) end\n"after"\n')
tap.like(err, 'interrupted', 'a pcall in the loop cannot swallow Ctrl-C')
tap.like(out, 'Out%[2%]: "after"\n', 'and the prompt comes back')

-- Ctrl-C at the prompt (stdin is a FIFO the REPL waits on) discards the line and never
-- ends the session; the end of input (Ctrl-D on a terminal) does.
do
  local fifo = path('.fifo')
  local script = [[
mkfifo "$1" || exit 1
: >"$3"
"$0" <"$1" >"$2" 2>"$3" &
pid=$!
exec 3>"$1"
printf '%s\n' 'io.stderr:write("ready\n")' >&3
i=0; while ! grep -q ready "$3" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
sleep 0.2; kill -INT $pid; sleep 0.3; kill -INT $pid; sleep 0.3
printf '1 + 1\n' >&3
sleep 0.3; exec 3>&-
i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done
if kill -0 $pid 2>/dev/null; then kill -KILL $pid; wait $pid; echo hung >"$4"; exit; fi
wait $pid; echo $? >"$4"
]]
  local OUT, ERR, RC = path('.out'), path('.err'), path('.rc')
  os.execute(('%s timeout 30 sh -c %s %s %s %s %s %s'):format(
    ENV, q(script), q(tap.gmoe_path()), q(fifo), q(OUT), q(ERR), q(RC)))
  local code, o = slurp(RC):match('%S+'), slurp(OUT)
  tap.is(code, '0', 'the end of input exits with status 0')
  tap.like(o, 'Out%[2%]: 2\n', 'two Ctrl-C at the prompt do not end the session')
end

tap.done()
