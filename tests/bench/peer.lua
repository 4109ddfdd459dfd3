-- peer.lua: PyTorch measured side by side with gmoe in `make bench`. peer.open() starts one
-- Python process (tests/bench/peer.py under $BENCH_PYTHON, default /usr/bin/python3: Debian's
-- python3-torch) that stays up for the whole benchmark; peer:load(module, case) builds the same
-- model there (tests/bench/<module> defines setup(case, threads) -> step); peer.compare times the
-- gmoe step and the PyTorch step interleaved, one call of each per repeat (order alternating), at
-- the same thread count, and peer.row prints the ratio against a target. Without PyTorch the
-- rows print gmoe's time and say that the peer is absent; benchmarks never fail on it.
--   local p, why = peer.open()                        -- once per benchmark script
--   local id = p and p:load('torch_moe.py', {T = 256, d = 64})
--   peer.row('MoE small', peer.compare(step, p, id, 5, 15), 4, why)   -- target: >= 4x PyTorch
local gm = require 'gmoe'
local B = require 'common'
local M = {}
M.__index = M

local here = (debug.getinfo(1, 'S').source:match('^@(.*)/[^/]*$')) or '.'

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- peer.open() -> peer | nil, reason: the Python process, or why there is none.
function M.open()
  local python = os.getenv('BENCH_PYTHON') or '/usr/bin/python3'
  local f = io.open(python, 'r')
  if not f then return nil, python .. ' not found' end
  f:close()
  if os.getenv('BENCH_NO_PEER') == '1' then return nil, 'BENCH_NO_PEER=1' end
  local fifo = os.tmpname()
  os.remove(fifo)
  if not os.execute('mkfifo ' .. q(fifo)) then return nil, 'mkfifo failed' end
  local proc = io.popen(('exec %s %s %s'):format(q(python), q(here .. '/peer.py'), q(fifo)), 'w')
  local res = io.open(fifo, 'r') -- blocks until peer.py opens it (its first statement)
  os.remove(fifo)
  local first = res and res:read('l')
  if not first or not first:match('^ready') then
    if res then res:close() end
    proc:close()
    return nil, first and first:gsub('^absent ', 'PyTorch absent: ') or 'peer.py did not start'
  end
  return setmetatable({proc = proc, res = res, version = first:match('^ready (%S+)')}, M)
end

function M:ask(line)
  self.proc:write(line, '\n')
  self.proc:flush()
  local ans = self.res:read('l')
  if not ans then error('peer: the PyTorch process ended (after: ' .. line .. ')', 2) end
  if ans:match('^error') then error('peer: ' .. ans:gsub('^error ', '') .. ' (after: ' .. line .. ')', 2) end
  return ans
end

--- peer:load(module, case) -> step id: setup(case, threads) of tests/bench/<module> in PyTorch,
--- at gmoe's thread count. case: a flat table of numbers, strings and booleans.
function M:load(module, case)
  local words = {'load', module, tostring(gm.get_num_threads())}
  local keys = {}
  for k in pairs(case or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do words[#words + 1] = k .. '=' .. tostring(case[k]) end
  return tonumber(self:ask(table.concat(words, ' ')):match('^loaded (%d+)'))
end

--- peer:time(id, n) -> durations of n calls of a loaded step (seconds, timed inside Python).
function M:time(id, n)
  local ans = self:ask(('run %d %d'):format(id, n))
  local t = {}
  for x in ans:gmatch('%S+') do t[#t + 1] = tonumber(x) end
  return t
end

function M:close()
  if self.proc then self.proc:write('quit\n') self.proc:close() self.res:close() self.proc = nil end
end

-- After a PyTorch call its OpenMP/OpenBLAS threads keep spinning for a while and would take the
-- cores from gmoe's next timed repeat: compare waits BENCH_PEER_PAUSE seconds (untimed) after each.
local PAUSE = tonumber(os.getenv('BENCH_PEER_PAUSE') or '') or 0.2
local function let_peer_idle() if PAUSE > 0 then os.execute(('sleep %g'):format(PAUSE)) end end

--- peer.compare(gm_step, peer|nil, id|nil, warm, reps) -> {gm = {med, min, max}, torch = {...}|nil}
--- Times gm_step() and the PyTorch step interleaved: each repeat runs one call of each, the
--- order alternating, so load from other processes hits both alike.
function M.compare(step, p, id, warm, reps)
  for _ = 1, warm do step() end
  if p then p:time(id, warm); let_peer_idle() end
  local tg, tt = {}, {}
  for r = 1, reps do
    local function g()
      local t0 = B.clock()
      step()
      tg[#tg + 1] = B.clock() - t0
    end
    local function t()
      if not p then return end
      tt[#tt + 1] = p:time(id, 1)[1]
      let_peer_idle()
    end
    if r % 2 == 1 then g() t() else t() g() end
  end
  return {gm = {B.median(tg)}, torch = p and {B.median(tt)} or nil}
end

--- peer.describe(P, why): the PyTorch part of a benchmark's header line.
function M.describe(P, why) return P and P.version or ('absent (' .. tostring(why) .. ')') end

local function ms(r) return ('%.3g ms [%.3g..%.3g]'):format(r[1] * 1e3, r[2] * 1e3, r[3] * 1e3) end

--- peer.row(name, result, target, why, show=ms): prints the gmoe time as an info row and the
--- speedup over PyTorch (torch median / gmoe median) as a row against `target` (>= target
--- passes); when PyTorch is absent, one row with gmoe's time and the reason. show formats a
--- {median, min, max} triple (default: milliseconds).
function M.row(name, r, target, why, show)
  show = show or ms
  B.info(name, 'gmoe ' .. show(r.gm))
  if r.torch then
    B.info('  PyTorch', show(r.torch))
    B.row('  speedup vs PyTorch', ('%.2fx'):format(r.torch[1] / r.gm[1]), r.torch[1] / r.gm[1], '>=', target,
      ('%gx'):format(target))
  else
    B.info('  vs PyTorch', 'skipped: ' .. tostring(why or 'peer absent'))
  end
end

return M
