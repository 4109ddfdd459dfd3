-- overhead.lua: per-op overhead of the Lua binding (target 1): `c = a + b` on 8-element f32
-- tensors in a plain Lua loop, without and with autograd recording (a requires grad). Also, for
-- information, the Lua-path timings of the large ops the C benchmark measures (gm.matmul at
-- 1024^3, a + b at 2^24), so binding costs there show up next to the engine's numbers.
-- Usage: gmoe tests/bench/overhead.lua [reps]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local B = require 'common'

local reps = tonumber(arg and arg[1]) or 9
if not gm.clock then gm.set_num_threads(1) end -- os.clock counts every thread's CPU time
print(('# Lua binding: timer %s, %d threads, %d repeats'):format(B.clock_name,
      gm.get_num_threads(), reps))

local N = 200000 -- ops per timed repeat
local function per_op(a, b)
  local function loop()
    local c
    for _ = 1, N do c = a + b end
    return c
  end
  local med, lo, hi = B.repeat_time(loop, 2, reps)
  -- CPU time of the same loop: unlike wall time it does not count time the process spent
  -- descheduled, so on a loaded machine it is the steadier number (info only).
  local cpu = {}
  for r = 1, reps do
    local t0 = os.clock()
    loop()
    cpu[r] = os.clock() - t0
  end
  table.sort(cpu)
  return med / N * 1e6, lo / N * 1e6, hi / N * 1e6, cpu[(reps + 1) // 2] / N * 1e6
end

local function us(med, lo, hi) return ('%.3f us [%.3f..%.3f]'):format(med, lo, hi) end

local a, b = gm.randn{8}, gm.randn{8}
local m, lo, hi, cpu = per_op(a, b)
B.row('add 8 f32, no grad (per op)', us(m, lo, hi), m, '<=', 0.25, '0.25 us')
B.info('add 8 f32, no grad (CPU time/op)', ('%.3f us (os.clock median)'):format(cpu))

local ag = gm.randn({8}, {requires_grad = true})
m, lo, hi, cpu = per_op(ag, b)
B.row('add 8 f32, autograd (per op)', us(m, lo, hi), m, '<=', 0.4, '0.4 us')
B.info('add 8 f32, autograd (CPU time/op)', ('%.3f us (os.clock median)'):format(cpu))

-- Large ops through the binding (information; the targets are checked in C, in one process).
local x, y = gm.randn{1024, 1024}, gm.randn{1024, 1024}
local med
med, lo, hi = B.repeat_time(function() local z = gm.matmul(x, y) end, 2, reps)
B.info('gm.matmul 1024^3 f32 (Lua)', ('%.2f ms [%.2f..%.2f]'):format(med * 1e3, lo * 1e3, hi * 1e3))
B.info('gm.matmul 1024^3 f32 rate (Lua)', ('%.1f GFLOP/s'):format(2 * 1024 ^ 3 / med * 1e-9))

local n = 1 << 24
local u, v = gm.randn{n}, gm.randn{n}
local c
med, lo, hi = B.repeat_time(function() c = u + v end, 3, reps)
B.info('a + b 2^24 f32 (Lua, no GC calls)', ('%.2f ms [%.2f..%.2f]'):format(med * 1e3, lo * 1e3, hi * 1e3))
B.info('a + b 2^24 f32 bandwidth (Lua)', ('%.1f GB/s (3 arrays)'):format(3 * 4 * n / med * 1e-9))
