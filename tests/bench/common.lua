-- common.lua: helpers shared by the Lua benchmarks (tests/bench/*.lua): a wall clock, repeat
-- statistics and the table rows run.sh prints. Rows: name, measured, target, ratio, verdict;
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

-- Run fn() warm times, then reps times; returns median, min, max of the durations.
function M.repeat_time(fn, warm, reps)
  for _ = 1, warm do fn() end
  local t = {}
  for r = 1, reps do
    local t0 = M.clock()
    fn()
    t[r] = M.clock() - t0
  end
  table.sort(t)
  local med = reps % 2 == 1 and t[(reps + 1) // 2] or 0.5 * (t[reps // 2] + t[reps // 2 + 1])
  return med, t[1], t[reps]
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
