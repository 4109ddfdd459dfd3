-- t_repl.lua: the gmoe REPL driven through a pipe (lua/repl.c): values printed by gm.show,
-- multi-line cells, errors that leave variables intact, `_`, the `local` warning, Ctrl-C.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local q, path, slurp = tap.q, tap.tmpfile, tap.slurp
local ENV = 'GMOE_HISTORY=/dev/null'

-- Feeds `input` to the REPL; returns exit code, stdout, stderr.
local function repl(input, args) return tap.run(args, {input = input, env = ENV}) end

-- Starts the REPL in the background on `input`, waits for it to write "ready" on stderr,
-- sends SIGINT and waits up to 2 s for the end of input. Returns exit code (or "hung"),
-- stdout, stderr.
local function repl_interrupted(input) return tap.run_interrupted('', {input = input, env = ENV}) end

local rc, out, err

-- expressions and their printed values
rc, out, err = repl('1 + 2\n"hi"\n1, "a\\nb", nil\n')
tap.is(rc, 0, 'exits 0 at end of input')
tap.like(out, 'gmoe> 3\n', 'expression value printed after the prompt')
tap.like(out, 'gmoe> "hi"\n', 'strings are shown quoted')
tap.like(out, 'gmoe> 1\t"a\\nb"\tnil\n', 'several values separated by tabs')
tap.is(err, '', 'nothing on stderr')

-- multi-line cells, continued exactly while the chunk is unfinished
rc, out, err = repl('function sq(x)\n  return x * x\nend\nsq(7)\nt = {\n1,\n2}\n#t\n')
tap.like(out, '%.%.%.> %.%.%.> gmoe> 49\n', 'function definition continued over lines')
tap.like(out, 'gmoe> 2\n', 'table constructor continued over lines')
rc, out, err = repl('x = = 1\n42\n')
tap.like(err, "unexpected symbol near '='", 'a real syntax error is reported at once')
tap.like(out, 'gmoe> gmoe> 42\n', 'no continuation prompt after a syntax error')
rc, out, err = repl('function f(\n')
tap.like(err, '<eof>', 'end of input inside a cell reports the unfinished chunk')

-- errors leave the session usable
rc, out, err = repl('x = 41\nerror("boom")\nnosuch.field = 1\nx + 1\n')
tap.like(err, 'stdin:1: boom', 'error message printed')
tap.like(err, 'stack traceback:', 'with a traceback')
tap.like(err, "attempt to index a nil value %(global 'nosuch'%)", 'runtime error printed')
tap.like(out, 'gmoe> 42\n', 'variables survive errors')
tap.is(rc, 0, 'errors at the prompt do not change the exit status')

-- `_` holds the last value
rc, out = repl('10 * 10\n_ + 1\ny = 5\n_\n')
tap.like(out, 'gmoe> 101\n', '_ is the last result')
tap.like(out, 'gmoe> gmoe> 101\n', 'statements leave _ alone')

-- `local` does not survive its cell, and the REPL says so
rc, out, err = repl('local z = 5\nz\n')
tap.like(err, 'warning: a local does not survive its cell', 'local warns on stderr')
tap.like(out, 'gmoe> gmoe> nil\n', 'the local is gone in the next cell')

-- gm is global, and gm.show is looked up at each print
rc, out = repl('type(gm)\ngm.show = function(...) print("SHOWN", ...) end\n7\n')
tap.like(out, 'gmoe> "table"\n', 'gm is a global')
tap.like(out, 'SHOWN\t7\n', 'a replaced gm.show is used')
rc, out = repl('gm = nil\n{1, 2}\n8\n')
tap.like(out, 'gmoe> table: 0x%x+\n', 'without gm.show values print with tostring')

-- show formatting of plain values
rc, out = repl('{1, 2, a = {b = {c = {d = 1}}}, ["k y"] = 3}\n')
tap.like(out, '{1, 2, a = {b = {c = {...}}}, %["k y"%] = 3}', 'nested tables with a depth cap')
rc, out = repl('local t = {} for i = 1, 30 do t[i] = i end return t\n')
tap.like(out, '{1, 2, 3, [%d, ]+20, ...}', 'long tables capped with ...')

-- tensors print like PyTorch: one number format, a summary past 1000 elements, then a header
rc, out, err = repl(table.concat({
  'gm.tensor{{0.1234, -1.2}, {3, 4.5}}',
  'gm.tensor(3.5)',
  'gm.zeros{2, 0}',
  'gm.tensor({1, 2, 30}, {dtype = "i32"})',
  'gm.tensor{0/0, 1/0, -1/0, 1.5}',
  'gm.tensor{1e-5, 2, 3}',
  'gm.zeros({2}, {requires_grad = true})',
  'gm.tensor{{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}}',
  'big = gm.zeros{1000, 1000}',
  'big',
  'tostring(gm.tensor{1.5, -2})',
  '{w = big, b = gm.tensor{1, 2}}',
}, '\n') .. '\n')
tap.is(err, '', 'tensor printing raises no error')
tap.like(out, 'gmoe> tensor%(%[%[ 0%.1234, %-1%.2000%],\n'
  .. '        %[ 3%.0000,  4%.5000%]%]%)  f32%[2, 2%] cpu\n',
  'a matrix: aligned columns, then dtype, shape, device')
tap.like(out, 'gmoe> tensor%(3%.5000%)  f32%[%] cpu\n', 'a 0-dim tensor')
tap.like(out, 'gmoe> tensor%(%[%]%)  f32%[2, 0%] cpu\n', 'an empty tensor with its shape')
tap.like(out, 'gmoe> tensor%(%[ 1,  2, 30%]%)  i32%[3%] cpu\n', 'i32 as integers')
tap.like(out, 'gmoe> tensor%(%[   nan,    inf,   %-inf, 1%.5000%]%)', 'nan and inf')
tap.like(out, 'gmoe> tensor%(%[1%.0000e%-05, 2%.0000e%+00, 3%.0000e%+00%]%)',
  'scientific when the range demands')
tap.like(out, 'gmoe> tensor%(%[0%., 0%.%]%)  f32%[2%] cpu requires_grad\n',
  'whole floats as "0." and requires_grad')
tap.like(out, '%[3%., 4%.%]%],\n\n        %[%[5%.', 'a blank line between matrices of a 3-d tensor')
tap.like(out, 'gmoe> tensor%(%[%[0%., 0%., 0%.,  %.%.%., 0%., 0%., 0%.%],\n', 'summarised rows')
tap.like(out, '%[0%., 0%., 0%.,  %.%.%., 0%., 0%., 0%.%],\n        %.%.%.,\n', 'summarised columns')
tap.like(out, '%]%]%)  f32%[1000, 1000%] cpu\n', 'the summary ends with the header')
tap.like(out, 'gmoe> "tensor%(%[ 1%.5000, %-2%.0000%]%)  f32%[2%] cpu"\n',
  'tostring gives the same text')
tap.like(out, '{b = tensor%(%[1%., 2%.%]%)  f32%[2%] cpu, w = <tensor f32%[1000, 1000%] cpu>}',
  'in tables, small tensors in full and large ones as a header')

-- Ctrl-C stops a running cell and returns to the prompt with the session intact
rc, out, err = repl_interrupted('x = 5\nio.stderr:write("ready\\n") while true do end\nx + 1\n')
tap.is(rc, 0, 'Ctrl-C in a cell does not end the REPL')
tap.like(err, 'interrupted', 'the cell fails with "interrupted"')
tap.like(out, 'gmoe> 6\n', 'the next cell runs')
rc, out, err = repl_interrupted('io.stderr:write("ready\\n") '
  .. 'while true do pcall(function() while true do end end) end\n"after"\n')
tap.like(err, 'interrupted', 'a pcall in the loop cannot swallow Ctrl-C')
tap.like(out, 'gmoe> "after"\n', 'and the prompt comes back')

-- Ctrl-C at the prompt (stdin is a FIFO the REPL waits on): a hint and a fresh prompt; a
-- second one in a row exits.
do
  local fifo = path('.fifo')
  local script = [[
mkfifo "$1" || exit 1
"$0" <"$1" >"$2" 2>"$3" &
pid=$!
exec 3>"$1"
printf '%s\n' 'io.stderr:write("ready\n")' >&3
i=0; while ! grep -q ready "$3" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
sleep 0.2; kill -INT $pid; sleep 0.3
printf '1 + 1\n' >&3
sleep 0.3; kill -INT $pid; sleep 0.3; kill -INT $pid
i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done
if kill -0 $pid 2>/dev/null; then kill -KILL $pid; wait $pid; echo hung >"$4"; exit; fi
wait $pid; echo $? >"$4"
]]
  local OUT, ERR, RC = path('.out'), path('.err'), path('.rc')
  os.execute(('%s timeout 30 sh -c %s %s %s %s %s %s'):format(
    ENV, q(script), q(tap.gmoe_path()), q(fifo), q(OUT), q(ERR), q(RC)))
  local code, o = slurp(RC):match('%S+'), slurp(OUT)
  local _, hints = o:gsub('%(press Ctrl%-C again or Ctrl%-D to exit%)', '')
  tap.is(code, '0', 'two Ctrl-C in a row at the prompt exit with status 0')
  tap.is(hints, 2, 'each first Ctrl-C at the prompt prints the hint')
  tap.like(o, 'gmoe> 2\n', 'a cell between two Ctrl-C resets the count')
end

tap.done()
