-- common.lua: helpers shared by the Lua benchmarks (tests/bench/*.lua): a wall clock, repeat
-- statistics (median, repeat_time, interleaved) and the table rows run.sh prints. Rows: name, measured, target, ratio, verdict;
-- ratio is "how far past the target" (>= 1 passes) for both <= and >= targets.
local gm = require 'gmoe'
local M = {}

-- gm.clock() is monotonic wall time; without it, os.clock() (CPU time of the whole process,
-- all threads) is the only timer plain Lua has, which is only meaningful single-threaded.
if gm.clock then
  M.clock, M.clock_name = gm.clock, 'wall (gm.clock)'
else
  M.clock, M.clock_name = os.clock, 'CPU (os.clock; gm.clock missing)'
end

-- Median, min and max of the durations in t (sorted in place; 0, 0, 0 when empty).
function M.median(t)
  table.sort(t)
  local n = #t
  if n == 0 then return 0, 0, 0 end
  return n % 2 == 1 and t[(n + 1) // 2] or 0.5 * (t[n // 2] + t[n // 2 + 1]), t[1], t[n]
end

-- Run fn() warm times, then reps times; returns median, min, max of the durations.
function M.repeat_time(fn, warm, reps)
  for _ = 1, warm do fn() end
  local t = {}
  for r = 1, reps do
    local t0 = M.clock()
    fn()
    t[r] = M.clock() - t0
  end
  return M.median(t)
end

-- Time several functions interleaved (one call of each per repeat, rotating which goes first)
-- so load from other processes hits them alike; returns {med, min, max} per function.
function M.interleaved(fns, warm, n)
  for _ = 1, warm do for _, f in ipairs(fns) do f() end end
  local t = {}
  for i = 1, #fns do t[i] = {} end
  for r = 1, n do
    for k = 0, #fns - 1 do
      local i = (r + k) % #fns + 1
      local t0 = M.clock()
      fns[i]()
      t[i][r] = M.clock() - t0
    end
  end
  local out = {}
  for i = 1, #fns do out[i] = {M.median(t[i])} end
  return out
end

function M.info(name, measured)
  print(('%-36s %-30s %-14s %7s  %s'):format(name, measured, '-', '-', 'info'))
end

-- kind '<=': pass when value <= target; '>=': pass when value >= target.
function M.row(name, measured, value, kind, target, target_str)
  local ratio = kind == '<=' and target / value or value / target
  print(('%-36s %-30s %-14s %7.3f  %s'):format(name, measured, kind .. ' ' .. target_str, ratio,
        ratio >= 1 and 'PASS' or 'FAIL'))
end

-- Resident set size in bytes, from /proc/self/statm (second field, in pages).
function M.rss(page)
  local f = io.open('/proc/self/statm', 'r')
  if not f then return nil end
  local line = f:read('l')
  f:close()
  local resident = line and line:match('^%d+%s+(%d+)')
  return resident and tonumber(resident) * (page or 4096) or nil
end

return M
