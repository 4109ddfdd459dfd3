-- tap.lua: a tiny TAP (version 13) emitter for gmoe's Lua tests, run by prove through gmoe.
-- Usage: local tap = require 'tap'; tap.ok(cond, name); ...; tap.done()
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

-- Close out the stream: the plan (when not given first) and the exit status.
function M.done()
  if not planned then line('1..' .. n) end
  os.exit(failed == 0 and (not planned or planned == n) and 0 or 1)
end

return M
