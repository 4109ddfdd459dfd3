-- moe.lua: top-k MoE training steps (issue 4) against PyTorch in the same run (issue 16):
-- gm.nn.MoE{d_model, d_ff, experts, gate = gm.gates.TopK{k = 2}} (dropless, gelu experts with
-- biases, the layer's defaults), f32, y = moe(x), loss = mse(y, target) with a fixed random x
-- and target, then backward and a gm.optim.AdamW step over the layer's parameters. The step is
-- zero_grad + forward (gate, dispatch, experts, combine, aux losses and routing statistics) +
-- loss + backward + AdamW, timed as a whole, interleaved with the same step in PyTorch
-- (tests/bench/torch_moe.py through peer.lua, same thread count); targets are speedups:
--   small  T=256,  d=64,  d_ff=128,  E=8,  k=2:  >= 4x PyTorch
--   middle T=1024, d=256, d_ff=512,  E=16, k=2:  >= 2x
--   large  T=4096, d=512, d_ff=1024, E=8,  k=2:  >= 1.5x
-- On the small size, the step at the default thread count against the same step on one thread,
-- interleaved (target <= 1.1x: with a competing process, BENCH_LOAD=1, threads must not cost).
-- On the large size, the step's rate against the sgemm rate measured in the same process
-- (>= 95%). Flops counted: forward = the two expert gemms, 2 * 2*(T*k)*d*d_ff, plus the router
-- 2*T*d*E; backward twice the forward (input and weight gradients of each product).
-- The sgemm reference is the faster of gm.matmul at 1024^3 and at one expert's gemm of the
-- large size ((T*k/E) x d x d_ff), interleaved with the step so load hits both alike.
-- Info rows split the step into phases, timed inside separate steps with gm.clock() through
-- the layer's ctx.timer hook: gate (router + topk_gate), dispatch, experts (2 expert_mm +
-- bias + gelu), combine, aux (losses + statistics), loss, backward, optimizer (AdamW).
-- Usage: gmoe tests/bench/moe.lua [reps] [sizes: comma list of small,middle,large]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local B = require 'common'
local peer = require 'peer'

local reps = tonumber(arg and arg[1]) or 15
local want = {}
for s in ((arg and arg[2]) or 'small,middle,large'):gmatch('[^,]+') do want[s] = true end
local P, why = peer.open()
print(('# MoE training steps: timer %s, %d threads, %d repeats, PyTorch %s'):format(
      B.clock_name, gm.get_num_threads(), reps, peer.describe(P, why)))

local function ms(med, lo, hi) return ('%.2f ms [%.2f..%.2f]'):format(med * 1e3, lo * 1e3, hi * 1e3) end
local function gf(flop, t) return flop / t * 1e-9 end
local median, interleaved = B.median, B.interleaved

local SIZES = {
  {name = 'small', T = 256, d = 64, f = 128, E = 8, k = 2, speedup = 4},
  {name = 'middle', T = 1024, d = 256, f = 512, E = 16, k = 2, speedup = 2},
  {name = 'large', T = 4096, d = 512, f = 1024, E = 8, k = 2, speedup = 1.5},
}
local PHASES = {'gate', 'dispatch', 'experts', 'combine', 'aux', 'loss', 'backward', 'optimizer'}

for _, z in ipairs(SIZES) do
  if want[z.name] then
    gm.manual_seed(0)
    local gen = gm.Generator(1)
    local moe = gm.nn.MoE {d_model = z.d, d_ff = z.f, experts = z.E, gate = gm.gates.TopK {k = z.k}, generator = gen}
    local x, target = gm.randn {z.T, z.d}, gm.randn {z.T, z.d}
    local opt = gm.optim.AdamW(moe:parameters(), {lr = 1e-4})
    local function step()
      opt:zero_grad()
      local y = moe(x)
      local loss = gm.mse_loss(y, target)
      loss:backward()
      opt:step()
    end
    local fwd = 2 * (2.0 * z.T * z.k * z.d * z.f) + 2.0 * z.T * z.d * z.E
    local flop = 3 * fwd
    local label = ('MoE %s T=%d d=%d dff=%d E=%d k=%d'):format(z.name, z.T, z.d, z.f, z.E, z.k)
    local n = z.name == 'large' and math.max(5, reps // 3) or reps
    local id = P and P:load('torch_moe.py', {T = z.T, d = z.d, f = z.f, E = z.E, k = z.k})
    local r = peer.compare(step, P, id, z.name == 'large' and 1 or 3, n)
    peer.row(label, r, z.speedup, why)
    B.info('  rate', ('%.1f GFLOP/s (%.3g GFLOP/step)'):format(gf(flop, r.gm[1]), flop * 1e-9))

    if z.name == 'small' then
      -- default threading against one thread, interleaved, 5 steps per call
      local nt = gm.get_num_threads()
      local function steps(k) return function() gm.set_num_threads(k); for _ = 1, 5 do step() end end end
      local t = interleaved({steps(nt), steps(1)}, 2, n)
      gm.set_num_threads(nt)
      B.row(('  %d threads / 1 thread'):format(nt), ('%.2fx (%s vs %s per step)'):format(t[1][1] / t[2][1],
            ms(t[1][1] / 5, t[1][2] / 5, t[1][3] / 5), ('%.2f ms'):format(t[2][1] / 5 * 1e3)),
            t[1][1] / t[2][1], '<=', 1.1, '1.1x')
    end
    if z.name == 'large' then
      -- sgemm reference interleaved with the step
      local m = z.T * z.k // z.E
      local a1, b1 = gm.randn {m, z.d}, gm.randn {z.d, z.f}
      local a3, b3 = gm.randn {1024, 1024}, gm.randn {1024, 1024}
      r = interleaved({step,
        function() local _ = gm.matmul(a1, b1) end,
        function() local _ = gm.matmul(a3, b3) end}, 2, n)
      local ref_e, ref_3 = gf(2.0 * m * z.d * z.f, r[2][1]), gf(2.0 * 1024 ^ 3, r[3][1])
      B.info(('sgemm ref %dx%dx%d (gm.matmul)'):format(m, z.d, z.f), ('%.1f GFLOP/s, %s'):format(ref_e, ms(table.unpack(r[2]))))
      B.info('sgemm ref 1024^3 (gm.matmul)', ('%.1f GFLOP/s, %s'):format(ref_3, ms(table.unpack(r[3]))))
      local ref = math.max(ref_e, ref_3)
      local rate = gf(flop, r[1][1])
      B.row(('MoE %s step rate / sgemm ref'):format(z.name),
            ('%.1f%% (%.1f / %.1f GFLOP/s)'):format(100 * rate / ref, rate, ref), rate / ref, '>=', 0.95, '95%')
    end

    -- phases, timed inside separate steps
    local ph = {}
    for _, p in ipairs(PHASES) do ph[p] = {} end
    local t_last
    local ctx = {timer = function(p)
      local t = B.clock()
      local s = ph[p]
      s[#s + 1] = t - t_last
      t_last = t
    end}
    local function tick(p) ctx.timer(p) end
    local function phased()
      t_last = B.clock()
      opt:zero_grad()
      local y = moe(x, ctx)
      local loss = gm.mse_loss(y, target)
      tick('loss')
      loss:backward()
      tick('backward')
      opt:step()
      tick('optimizer')
    end
    for _ = 1, 2 do phased() end
    for _, p in ipairs(PHASES) do ph[p] = {} end
    for _ = 1, n do phased() end
    local parts = {}
    for _, p in ipairs(PHASES) do
      local m = median(ph[p])
      parts[#parts + 1] = ('%s %.2f'):format(p, m * 1e3)
    end
    local half = #parts // 2
    B.info('  phases (ms)', table.concat(parts, ', ', 1, half))
    B.info('', table.concat(parts, ', ', half + 1))
  end
end
if P then P:close() end
