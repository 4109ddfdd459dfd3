-- tap.lua: a tiny TAP (version 13) emitter for gmoe's Lua tests, run by prove through gmoe.
-- Usage: local tap = require 'tap'; tap.ok(cond, name); ...; tap.done()
-- Besides the TAP calls: helpers shared by the tests (value references and comparisons,
-- running the gmoe executable), below.
local M = {}
local n, failed, planned = 0, 0, nil

local function line(s) io.write(s, '\n') io.flush() end

function M.plan(k) planned = k; line('1..' .. k) end
function M.skip_all(why) line('1..0 # SKIP ' .. why) os.exit(0) end
function M.diag(msg) for l in tostring(msg):gmatch('[^\n]+') do line('# ' .. l) end end

function M.ok(cond, name, diag)
  n = n + 1
  name = (name or ''):gsub('#', '\\#')
  if cond then line(('ok %d - %s'):format(n, name))
  else
    failed = failed + 1
    line(('not ok %d - %s'):format(n, name))
    if diag then M.diag(diag) end
  end
  return cond
end

-- A known failure: reported as "not ok ... # TODO why", which does not fail the run.
function M.todo(cond, name, why)
  n = n + 1
  line(('%s %d - %s # TODO %s'):format(cond and 'ok' or 'not ok', n, (name or ''):gsub('#', '\\#'), why or ''))
  return cond
end

function M.skip(name, why) n = n + 1; line(('ok %d - %s # SKIP %s'):format(n, name, why or '')) end

function M.is(got, want, name)
  return M.ok(got == want, name, ('got: %s\nwant: %s'):format(tostring(got), tostring(want)))
end

-- |got - want| <= atol + rtol * |want|
function M.close(got, want, tol, name)
  tol = tol or 1e-6
  local ok = got == want or math.abs(got - want) <= tol * (1 + math.abs(want))
  return M.ok(ok, name, ('got: %.10g\nwant: %.10g\ntol: %g'):format(got, want, tol))
end

function M.like(s, pattern, name)
  return M.ok(type(s) == 'string' and s:find(pattern) ~= nil, name,
              ('got: %s\npattern: %s'):format(tostring(s), pattern))
end

-- fn must raise an error whose message matches pattern.
function M.errors(fn, pattern, name)
  local ok, err = pcall(fn)
  if ok then return M.ok(false, name, 'no error raised') end
  return M.like(tostring(err), pattern, name)
end

function M.lives(fn, name)
  local ok, err = pcall(fn)
  return M.ok(ok, name, not ok and tostring(err) or nil)
end

-- ---- values: reference data and comparisons for the op tests ---------------------------

-- A nested table (as from x:totable()) as a flat row-major list; a number gives {number}.
function M.flatten(t, out)
  out = out or {}
  if type(t) ~= 'table' then out[#out + 1] = t; return out end
  for i = 1, #t do M.flatten(t[i], out) end
  return out
end

-- A nested table of the given shape from a flat row-major list.
function M.nest(flat, shape)
  local pos = 0
  local function build(d)
    local t = {}
    for i = 1, shape[d] do
      if d == #shape then pos = pos + 1; t[i] = flat[pos] else t[i] = build(d + 1) end
    end
    return t
  end
  return build(1)
end

-- Are two shape lists ({2, 3}, x.shape) equal?
function M.same_shape(s, want)
  if #s ~= #want then return false end
  for i = 1, #want do if s[i] ~= want[i] then return false end end
  return true
end

-- n deterministic values without the engine's RNG, no ties: v[i] = sin(7 i + offset) * amp
-- (offset 1 and amp 3 by default).
function M.values(n, offset, amp)
  local t = {}
  for i = 1, n do t[i] = math.sin(7 * i + (offset or 1)) * (amp or 3) end
  return t
end

-- One test: got and want (nested tables or flat lists, compared flat) have the same number of
-- values and each is within tol of the other (|got - want| <= tol * (1 + |want|)).
function M.all_close(got, want, tol, name)
  got, want = M.flatten(got), M.flatten(want)
  if #got ~= #want then return M.ok(false, name, ('%d values, want %d'):format(#got, #want)) end
  for i = 1, #want do
    local g, w = got[i], want[i]
    if not (g == w or math.abs(g - w) <= tol * (1 + math.abs(w))) then
      return M.ok(false, name, ('at %d: got %.10g want %.10g'):format(i, g, w))
    end
  end
  return M.ok(true, name)
end

-- ---- the gmoe executable: tests of batch mode and the REPL ------------------------------

-- The interpreter running this test is the gmoe under test: arg's lowest index (lua.c).
function M.gmoe_path()
  local lo = 0
  while arg[lo - 1] do lo = lo - 1 end
  return lo < 0 and arg[lo] or os.getenv('GMOE') or 'build/gmoe'
end

-- s quoted for sh.
function M.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- A temporary file name ending in ext (same ext, same name); tap.done() removes them all.
local tmp_base, tmp_files = nil, {}
function M.tmpfile(ext)
  if not tmp_base then tmp_base = os.tmpname(); tmp_files[tmp_base] = true end
  local p = tmp_base .. (ext or '')
  tmp_files[p] = true
  return p
end

function M.slurp(p)
  local f = io.open(p, 'rb')
  if not f then return '' end
  local s = f:read('a')
  f:close()
  return s
end

-- header, rows = tap.read_tsv(path): a results TSV as the runner writes it (a '# col1<TAB>col2...'
-- header, then rows); each row holds its cells both by position (r[1]) and by column name (r.arm).
function M.read_tsv(path)
  local text = M.slurp(path)
  local header = text:match('^# ([^\n]*)') or ''
  local cols, rows = {}, {}
  for c in (header .. '\t'):gmatch('([^\t]*)\t') do cols[#cols + 1] = c end
  for line in text:gmatch('[^\n]+') do
    if not line:match('^#') then
      local r, i = {}, 0
      for c in (line .. '\t'):gmatch('([^\t]*)\t') do
        i = i + 1
        r[i] = c
        if cols[i] then r[cols[i]] = c end
      end
      rows[#rows + 1] = r
    end
  end
  return header, rows
end

function M.spit(p, s) local f = assert(io.open(p, 'wb')); f:write(s); f:close() end

-- Runs gmoe with args (a shell-ready string) under a timeout that catches hangs (opts.timeout,
-- else $GMOE_TEST_TIMEOUT, else 120 s: generous, because a machine shared with other work can
-- make a toy experiment take minutes); returns its exit code, stdout and stderr. opts.input:
-- text for stdin; opts.stdin: a file for stdin (default /dev/null); opts.env: assignments put
-- before the command ('GMOE_HISTORY=/dev/null').
function M.run(args, opts)
  opts = opts or {}
  local stdin, out, err = opts.stdin, M.tmpfile('.out'), M.tmpfile('.err')
  if opts.input then stdin = M.tmpfile('.in'); M.spit(stdin, opts.input) end
  local limit = opts.timeout or tonumber(os.getenv('GMOE_TEST_TIMEOUT') or '') or 120
  local cmd = ('%stimeout %d %s %s < %s > %s 2> %s'):format(opts.env and opts.env .. ' ' or '', limit,
    M.q(M.gmoe_path()), args or '', stdin and M.q(stdin) or '/dev/null', M.q(out), M.q(err))
  local _, _, code = os.execute(cmd)
  return code, M.slurp(out), M.slurp(err)
end

-- Runs gmoe as tap.run does, in the background; once it writes "ready" on stderr (waiting up
-- to opts.ready_s, default 10 s), waits opts.settle seconds (default 0.2), sends opts.signal
-- (default "INT") and gives it opts.grace_s (default 2 s) to end. Returns its exit code (or
-- "hung" when it had to be killed), stdout and stderr.
function M.run_interrupted(args, opts)
  opts = opts or {}
  local ready_s, settle, grace_s = opts.ready_s or 10, opts.settle or 0.2, opts.grace_s or 2
  local stdin, out, err, rc = opts.stdin, M.tmpfile('.out'), M.tmpfile('.err'), M.tmpfile('.rc')
  if opts.input then stdin = M.tmpfile('.in'); M.spit(stdin, opts.input) end
  -- stderr is emptied before the launch: the file may hold an earlier run's "ready", and the
  -- backgrounded shell truncates it only when it gets round to the redirection
  local script = ': >"$3"\n"$0" ' .. (args or '') .. [[ <"$1" >"$2" 2>"$3" &
pid=$!
i=0; while ! grep -q ready "$3" && [ $i -lt ]] .. math.ceil(ready_s * 20) .. [[ ]; do sleep 0.05; i=$((i+1)); done
sleep ]] .. settle .. [[

kill -]] .. (opts.signal or 'INT') .. [[ $pid
i=0; while kill -0 $pid 2>/dev/null && [ $i -lt ]] .. math.ceil(grace_s * 20) .. [[ ]; do sleep 0.05; i=$((i+1)); done
if kill -0 $pid 2>/dev/null; then kill -KILL $pid; wait $pid; echo hung >"$4"; exit; fi
wait $pid; echo $? >"$4"
]]
  os.remove(rc)
  os.execute(('%stimeout %d sh -c %s %s %s %s %s %s'):format(opts.env and opts.env .. ' ' or '',
    math.max(30, math.ceil(ready_s + settle + grace_s + 20)), M.q(script), M.q(M.gmoe_path()), stdin and M.q(stdin) or '/dev/null', M.q(out), M.q(err),
    M.q(rc)))
  local code = M.slurp(rc):match('%S+')
  return tonumber(code) or code, M.slurp(out), M.slurp(err)
end

-- Close out the stream: the plan (when not given first) and the exit status; removes the
-- files of tap.tmpfile.
function M.done()
  for p in pairs(tmp_files) do os.remove(p) end
  if not planned then line('1..' .. n) end
  os.exit(failed == 0 and (not planned or planned == n) and 0 or 1)
end

return M
