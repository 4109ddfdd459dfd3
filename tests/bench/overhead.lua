-- overhead.lua: per-op overhead of the Lua binding against PyTorch's from Python (issue 16:
-- >= 4x without autograd, >= 5x with): `c = a + b` on 8-element f32 tensors in a plain loop
-- (200,000 ops per timed repeat), without and with autograd recording (a requires grad); and
-- the large ops the C benchmark measures (gm.matmul at 1024^3, a + b at 2^24) through the
-- binding, against torch (information). PyTorch runs in tests/bench/torch_ops.py through
-- peer.lua, interleaved, at the same thread count.
-- Usage: gmoe tests/bench/overhead.lua [reps]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local B = require 'common'
local peer = require 'peer'

local reps = tonumber(arg and arg[1]) or 9
if not gm.clock then gm.set_num_threads(1) end -- os.clock counts every thread's CPU time
local P, why = peer.open()
print(('# Lua binding: timer %s, %d threads, %d repeats, PyTorch %s'):format(B.clock_name,
      gm.get_num_threads(), reps, peer.describe(P, why)))

local N = 200000 -- ops per timed repeat
local function per_op(name, a, b, op, target)
  local function loop()
    local c
    for _ = 1, N do c = a + b end
    return c
  end
  local r = peer.compare(loop, P, P and P:load('torch_ops.py', {op = op, n = N}), 2, reps)
  peer.row(name, r, target, why, function(t)
    return ('%.3f us/op [%.3f..%.3f]'):format(t[1] / N * 1e6, t[2] / N * 1e6, t[3] / N * 1e6)
  end)
end

per_op('add 8 f32, no grad (per op)', gm.randn{8}, gm.randn{8}, 'add8', 4)
per_op('add 8 f32, autograd (per op)', gm.randn({8}, {requires_grad = true}), gm.randn{8}, 'add8_grad', 5)

-- Large ops through the binding, against torch (information; the engine targets are in C).
local x, y = gm.randn{1024, 1024}, gm.randn{1024, 1024}
local r = peer.compare(function() local _ = gm.matmul(x, y) end, P, P and P:load('torch_ops.py', {op = 'matmul'}), 2, reps)
B.info('gm.matmul 1024^3 f32 (Lua)', ('%.2f ms, %.1f GFLOP/s'):format(r.gm[1] * 1e3, 2 * 1024 ^ 3 / r.gm[1] * 1e-9))
if r.torch then
  B.info('  torch.mm 1024^3 f32', ('%.2f ms, %.1f GFLOP/s (%.2fx)'):format(r.torch[1] * 1e3, 2 * 1024 ^ 3 / r.torch[1] * 1e-9,
         r.torch[1] / r.gm[1]))
end
local n = 1 << 24
local u, v = gm.randn{n}, gm.randn{n}
r = peer.compare(function() local _ = u + v end, P, P and P:load('torch_ops.py', {op = 'add_big'}), 3, reps)
B.info('a + b 2^24 f32 (Lua)', ('%.2f ms, %.1f GB/s (3 arrays)'):format(r.gm[1] * 1e3, 3 * 4 * n / r.gm[1] * 1e-9))
if r.torch then
  B.info('  torch a + b 2^24 f32', ('%.2f ms, %.1f GB/s (%.2fx)'):format(r.torch[1] * 1e3, 3 * 4 * n / r.torch[1] * 1e-9,
         r.torch[1] / r.gm[1]))
end
if P then P:close() end
