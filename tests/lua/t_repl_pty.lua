-- t_repl_pty.lua: the gmoe REPL in a pseudo-terminal, as a person types at it: readline,
-- Tab completion, the Ctrl-C key during a Lua loop and during a long matmul, Ctrl-D, colour
-- on a terminal, Ctrl-C in each family of long kernels, and a session exported with %export
-- and replayed with `gmoe run`.
-- The pty comes from script(1) (util-linux); keys are sent with pauses between them.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local q, path, slurp = tap.q, tap.tmpfile, tap.slurp

if not os.execute('command -v script >/dev/null 2>&1') then
  tap.skip_all('script(1) from util-linux is not installed')
end

-- Bytes as a printf format of octal escapes (any byte survives the shell).
local function octal(s) return (s:gsub('.', function(c) return ('\\%03o'):format(c:byte()) end)) end

-- Types `steps` into a gmoe REPL on a 100x30 pty: each step {s, keys} types keys, then waits s;
-- with wait = text it then waits (up to 20 s) until the terminal shows text (the prompt of the
-- cell just typed: the REPL has reached it) before the pause, for a Ctrl-C that must not come
-- early: its byte becomes SIGINT the moment it is written, so on a slow or busy machine a fixed
-- pause could deliver it before the loop it should stop has started (and the session then hung).
-- With timed = text, the milliseconds from sending the keys until the terminal shows text are
-- recorded (a Ctrl-C until the next prompt). Ends with Ctrl-D. Returns the exit code, the
-- terminal's text (CR removed), the wall time and the list of timed milliseconds.
local function session(steps, env)
  local out, times = path('.pty'), path('.ms')
  local feed = {'sleep 0.5'}
  for _, s in ipairs(steps) do
    if s.timed then feed[#feed + 1] = 't0=$(date +%s%N)' end
    feed[#feed + 1] = ('printf %s'):format(q(octal(s[2])))
    if s.timed then
      feed[#feed + 1] = ('i=0; while ! grep -qF %s %s && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done; ' ..
        'echo $(( ($(date +%%s%%N) - t0) / 1000000 )) >> %s'):format(q(s.timed), q(out), q(times))
    end
    if s.wait then
      feed[#feed + 1] = ('i=0; while ! grep -qF %s %s && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done')
        :format(q(s.wait), q(out))
    end
    feed[#feed + 1] = ('sleep %s'):format(s[1])
  end
  -- Ctrl-D only once the REPL is back at its prompt: an EOF byte that arrives while a cell runs
  -- (the terminal in cooked mode between cells) can be lost when readline switches the terminal
  -- back, and the session would then wait for input until its timeout. A last cell prints a
  -- marker (built from two halves, so its echo does not match) and the feed waits for it.
  feed[#feed + 1] = "printf 'print(\"END\" .. \"MARK\")\\n'"
  feed[#feed + 1] = ('i=0; while ! grep -qF ENDMARK %s && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; sleep 0.3')
    :format(q(out))
  feed[#feed + 1] = "printf '\\004'; sleep 0.5"
  local cmd = ('(%s) | %s TERM=dumb GMOE_HISTORY=/dev/null timeout 180 script -qfec %s /dev/null > %s 2>&1')
    :format(table.concat(feed, '; '), env or 'NO_COLOR=1',
            q('stty cols 100 rows 30; exec ' .. q(tap.gmoe_path())), q(out))
  local t0 = os.time()
  local _, _, code = os.execute(cmd)
  local ms = {}
  for v in (slurp(times) or ''):gmatch('%d+') do ms[#ms + 1] = tonumber(v) end
  return code, (slurp(out):gsub('\r', '')), os.time() - t0, ms
end

local code, out

-- cells, multi-line input, errors, Out[n] and _, help, %timeit, completion
code, out = session({
  {0.3, 'x = 40\n'},
  {0.3, 'function f(a)\n'},
  {0.2, '  return a + 2\n'},
  {0.2, 'end\n'},
  {0.3, 'f(x)\n'},
  {0.3, 'error("boom")\n'},
  {0.3, '_ + 1\n'},
  {0.3, 'gm.zeros_l\t'},
  {0.3, 'gm.ones{2})\n'},
  {0.3, 'gm.optim.Adam\t'},
  {0.3, '\t'},
  {0.3, '\21'},               -- Ctrl-U: clear the line
  {0.3, 't = gm.ones{1, 1}\n'},
  {0.3, 't:matm\t'},
  {0.3, 't)\n'},
  {0.3, '?gm.no_grad\n'},
  {2.5, '%timeit gm.zeros{64, 64}\n'},
  {0.3, 'Out[3]\n'},
})
tap.is(code, 0, 'the session ends with Ctrl-D, status 0')
tap.like(out, 'gmoe %[1%]> x = 40\n', 'the numbered prompt and the echoed cell')
tap.like(out, 'gmoe %[2%]> function f%(a%)\n%.%.%.>   return a %+ 2\n%.%.%.> end\n',
  'a multi-line cell with continuation prompts')
tap.like(out, 'gmoe %[3%]> f%(x%)\nOut%[3%]: 42\n', 'its result as Out[3]')
tap.like(out, 'stdin:1: boom\ngmoe %[5%]> ', 'an error, then the next prompt')
tap.like(out, 'gmoe %[5%]> _ %+ 1\nOut%[5%]: 43\n', '_ survives the error')
tap.like(out, 'gm%.zeros_like%(gm%.ones{2}%)\n', 'Tab completes a unique gm. name (with its parenthesis)')
tap.like(out, 'Out%[6%]: \ntensor f32%[2%] cpu', 'the completed cell runs')
tap.like(out, 'gm%.optim%.Adam%(%s+gm%.optim%.AdamW%(', 'a second Tab lists the candidates')
tap.like(out, 't:matmul%(t%)\nOut%[8%]: ', 'methods complete through the metatable')
tap.like(out, 'gm%.no_grad%(fn, %.%.%.%) %-> fn%(%.%.%.%)\n  Calls fn', '?name prints the help')
tap.like(out, 'per loop %(median %+%- IQR of %d runs', '%timeit reports')
tap.like(out, 'Out%[%d+%]: 42\n', 'Out[n] keeps old results')

-- Ctrl-C during a busy Lua loop and during a long matmul: back to the prompt quickly,
-- variables intact; Ctrl-C at the prompt clears the line and does not exit.
local t_code, t_out, wall = session({
  {0.3, 'keep = 7\n'},
  {0.8, 'while true do end\n', wait = 'gmoe [2]> '},
  {0.5, '\3'},
  {0.3, 'keep + 1\n'},
  {0.3, 'a = gm.randn{4000, 4000}\n'},
  {0.8, 'b = a:matmul(a)\n', wait = 'gmoe [5]> '},
  {1.0, '\3'},
  {0.3, 'keep + 2, b == nil\n'},
  {0.3, 'half typed'},
  {0.3, '\3'},
  {0.3, '\3'},
  {0.3, 'keep + 3\n'},
})
tap.is(t_code, 0, 'Ctrl-C never ended the session')
tap.like(t_out, 'while true do end\n^C\ninterrupted\ngmoe %[3%]> ', 'Ctrl-C stops a Lua loop')
tap.like(t_out, 'Out%[3%]: 8\n', 'the variable defined before survives')
tap.like(t_out, 'b = a:matmul%(a%)\n^C\ninterrupted\ngmoe %[6%]> ', 'Ctrl-C stops a long matmul')
tap.like(t_out, 'Out%[6%]: 9\ttrue\n', 'the session is intact after it')
tap.like(t_out, 'half typed^C\ngmoe %[7%]> ^C\ngmoe %[7%]> keep %+ 3\nOut%[7%]: 10\n',
  'Ctrl-C at the prompt discards the line, twice, without exiting')
tap.ok(wall < 20, 'the interrupts took effect at once (session in ' .. wall .. ' s)')

-- Ctrl-C during each family of long kernels (random fill, selection, shuffle, reductions,
-- softmax, scan, conversion, pointwise): every kernel polls per chunk of work, never per row
-- (these rows are 2^24 .. 2^28 elements long), so the prompt is back within 1 s with the
-- variables defined before intact, and the interrupted assignment never happens. The loops
-- keep the Ctrl-C from landing between two short ops on a fast machine; on a loaded one it
-- may still land between two ops, where the Lua hook stops the loop and the message carries the
-- chunk's position ("stdin:1: interrupted"): accepted. So only the cells whose single op runs
-- longer than the 1 s limit (randn of 2^28, topk of the ascending row, randperm) show here that a
-- kernel polls; the others check the REPL's side, and their kernels' polling per chunk is checked
-- directly in tests/c/t_interrupt.c.
do
  local cells = {
    {'r = gm.randn{2^28}', 'the random fill of 2^28 values'},
    {'for i = 1, 20 do local v = a:topk(1000) end', 'topk of an ascending row of 2^24 (every element enters the heap)'},
    {'for i = 1, 20 do local p = gm.randperm(2^24) end', 'randperm of 2^24'},
    {'for i = 1, 50 do local s = x:logsumexp(0) end', 'logsumexp of one row of 2^25'},
    {'for i = 1, 50 do local s = x:softmax(0) end', 'softmax of one row of 2^25'},
    {'for i = 1, 50 do local s = x:cumsum(0) end', 'cumsum of one row of 2^25'},
    {'for i = 1, 50 do local s = x:to("f64") end', 'a conversion of 2^25 values'},
    {'for i = 1, 50 do local s = x:exp() end', 'exp of 2^25 values'},
  }
  local steps = {
    {0.3, 'keep = 11\n'},
    {0.3, 'a = gm.arange(2^24):float()\n'},
    {0.3, 'x = gm.ones{2^25}\n'},
  }
  local n = 4
  for _, c in ipairs(cells) do
    steps[#steps + 1] = {0.4, c[1] .. '\n', wait = ('gmoe [%d]> '):format(n)}
    steps[#steps + 1] = {0.2, '\3', timed = ('gmoe [%d]> '):format(n + 1)}
    n = n + 1
  end
  steps[#steps + 1] = {0.3, 'keep, r == nil, a:numel(), x:numel()\n'}
  local k_code, k_out, _, ms = session(steps)
  tap.is(k_code, 0, 'Ctrl-C in long kernels never ended the session')
  n = 4
  for i, c in ipairs(cells) do
    local pat = c[1]:gsub('%p', '%%%0') .. '\n^C\n[%w:]-%s?interrupted\ngmoe %[' .. (n + 1) .. '%]> '
    tap.like(k_out, pat, 'Ctrl-C stops ' .. c[2])
    tap.ok(ms[i] and ms[i] < 1000, ('and the prompt is back within 1 s (%s ms)'):format(tostring(ms[i])))
    n = n + 1
  end
  tap.like(k_out, 'Out%[' .. n .. '%]: 11\ttrue\t16777216\t33554432\n',
    'the variables from before are intact and the interrupted assignment did not happen')
end

-- colour on a terminal, none with NO_COLOR
local _, c_out = session({{0.3, '"s"\n'}}, 'NO_COLOR=')
tap.like(c_out, '\27%[31mOut%[1%]: \27%[0m\27%[32m"s"\27%[0m', 'values are coloured on a terminal')
tap.ok(not out:find('\27[3', 1, true), 'and not with NO_COLOR')

-- %export to Markdown, then `gmoe run` of the notebook reproduces the same outputs: a cell that
-- failed half-way is kept with its error (what it did before failing is state the later cells
-- saw), magics that change state are kept, and an interrupted cell stops the replay loudly.
do
  local nb = path('_pty.md')
  local _, e_out = session({
    {0.3, 'gm.manual_seed(3)\n'},
    {0.3, 'v = gm.randn{3}\n'},
    {0.3, 'v\n'},
    {0.3, 'print("sum", v:sum():item() > -100)\n'},
    {0.3, 'nosuch()\n'},
    {0.3, 'n = 1; function bump() n = n + 1; error("half-way") end\n'},
    {0.3, 'bump()\n'},
    {0.3, 'n, {a = 1, b = {2, 3}}\n'},
    {0.3, '%seed 5\n'},
    {0.3, 'gm.randn{2}\n'},
    {0.5, '%export ' .. nb .. '\n'},
  })
  tap.like(e_out, 'wrote .-_pty%.md %(10 cells, 0 figures; 2 failed, kept with their errors%)',
    '%export writes every cell that ran, failed ones included')
  local before = slurp(nb)
  tap.like(before, '```lua\nv\n```\n\n```text\ntensor f32%[3%] cpu  min', 'a value under its cell')
  tap.like(before, '```text\nsum\ttrue\n```', 'printed text under its cell')
  tap.like(before, '```lua\nnosuch%(%)\n```\n\n```error\nstdin:1: attempt to call a nil value',
    'a failing cell is kept, marked with its error')
  tap.like(before, '```lua\nbump%(%)\n```\n\n```error\nstdin:1: half%-way\n```\n\n```lua\nn, ',
    'a cell that failed half-way too')
  tap.like(before, '```text\n2\t{', 'the state after it (n = 2) is recorded')
  tap.like(before, '```lua\n%%seed 5\n```', 'a magic that changes state is kept')
  local rc, rout, rerr = tap.run('run ' .. q(nb) .. ' --update')
  tap.is(rc, 0, 'gmoe run nb.md --update exits 0')
  tap.like(rerr, 'half%-way', 'the recorded errors happen again (on stderr)')
  tap.is(slurp(nb), before, 'the replay reproduces every output and error exactly')
  tap.like(rout, 'sum\ttrue\n', 'gmoe run prints the outputs as it goes')
  -- a cell whose outcome differs from the recorded one stops the replay with an error
  tap.spit(nb, (before:gsub('function bump%(%) n = n %+ 1; error%("half%-way"%) end',
    'function bump() n = n + 1 end')))
  rc, rout, rerr = tap.run('run ' .. q(nb))
  tap.ok(rc ~= 0 and rerr:find('failed in the session (stdin:1: half-way) but runs without error now', 1, true),
    'a recorded failure that no longer happens fails the replay loudly', rerr)
end

-- an interrupted cell is exported, marked; replaying the notebook stops there with an error
do
  local nb = path('_int.md')
  local _, i_out = session({
    {0.3, 'k = 0\n'},
    {0.8, 'while true do k = k + 1 end\n', wait = 'gmoe [2]> '},
    {0.5, '\3'},
    {0.3, 'k > 0\n'},
    {0.5, '%export ' .. nb .. '\n'},
  })
  tap.like(i_out, 'wrote .-_int%.md %(3 cells, 0 figures; 1 failed', '%export keeps the interrupted cell')
  tap.like(slurp(nb), '```lua\nwhile true do k = k %+ 1 end\n```\n\n```error\ninterrupted\n```',
    'marked as interrupted')
  local rc, _, rerr = tap.run('run ' .. q(nb))
  tap.ok(rc ~= 0 and rerr:find('_int.md:%d+: this cell was interrupted in the session'),
    'gmoe run refuses to replay it, naming the line, and exits non-zero', rerr)
end

tap.done()
