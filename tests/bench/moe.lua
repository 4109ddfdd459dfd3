-- moe.lua: top-k MoE training steps (issue 4): gm.nn.MoE{d_model, d_ff, experts,
-- gate = gm.gates.TopK{k = 2}} (dropless, gelu experts with biases, the layer's defaults), f32,
-- y = moe(x), loss = mse(y, target) with a fixed random x and target, then backward and a
-- gm.optim.AdamW step over the layer's parameters (router, w1, b1, w2, b2). The step is
-- zero_grad + forward (gate, dispatch, experts, combine, aux losses and routing statistics) +
-- loss + backward + AdamW, timed as a whole; the median of repeats after warm-up is compared
-- with PyTorch 1.13 CPU (gather/scatter dispatch) on this machine kind, from the issue:
--   small  T=256,  d=64,  d_ff=128,  E=8,  k=2:   2.36 ms  (target >= 4x faster)
--   middle T=1024, d=256, d_ff=512,  E=16, k=2:  84 ms     (target >= 2x)
--   large  T=4096, d=512, d_ff=1024, E=8,  k=2:  662 ms    (target >= 1.5x)
-- and, on the large size, the step's rate against the sgemm rate measured in the same process
-- (>= 60%). Flops counted: forward = the two expert gemms, 2 * 2*(T*k)*d*d_ff, plus the router
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

local reps = tonumber(arg and arg[1]) or 15
local want = {}
for s in ((arg and arg[2]) or 'small,middle,large'):gmatch('[^,]+') do want[s] = true end
print(('# MoE training steps: timer %s, %d threads, %d repeats, OMP_WAIT_POLICY=%s'):format(
      B.clock_name, gm.get_num_threads(), reps, os.getenv('OMP_WAIT_POLICY') or 'unset'))

local function ms(med, lo, hi) return ('%.2f ms [%.2f..%.2f]'):format(med * 1e3, lo * 1e3, hi * 1e3) end
local function gf(flop, t) return flop / t * 1e-9 end
local median, interleaved = B.median, B.interleaved

local SIZES = {
  {name = 'small', T = 256, d = 64, f = 128, E = 8, k = 2, torch = 2.36e-3, speedup = 4},
  {name = 'middle', T = 1024, d = 256, f = 512, E = 16, k = 2, torch = 84e-3, speedup = 2},
  {name = 'large', T = 4096, d = 512, f = 1024, E = 8, k = 2, torch = 662e-3, speedup = 1.5},
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
    local r
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
            ('%.1f%% (%.1f / %.1f GFLOP/s)'):format(100 * rate / ref, rate, ref), rate / ref, '>=', 0.60, '60%')
    else
      r = interleaved({step}, 3, n)
    end
    local med = r[1][1]
    B.row(label, ms(table.unpack(r[1])), med, '<=', z.torch / z.speedup,
          ('%.3g ms'):format(z.torch / z.speedup * 1e3))
    B.info(('  vs PyTorch 1.13 (%.3g ms)'):format(z.torch * 1e3),
           ('%.2fx faster, %.1f GFLOP/s (%.3g GFLOP/step)'):format(z.torch / med, gf(flop, med), flop * 1e-9))

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
