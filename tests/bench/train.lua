-- train.lua: full training steps (forward + backward + gm.optim.AdamW step) as achieved
-- GFLOP/s against the sgemm rate of this machine, measured in the same process right before.
--   MLP: x [256, 512] -> Linear 512->1024 -> ReLU -> Linear 1024->512, MSE to a random target.
--   CNN: x [128, 3, 32, 32] -> 4 x (Conv 3x3 pad 1 + ReLU), channels 3->16->32->32->64, max-pool 2
--        after convs 2 and 4, global average pool, Linear 64->10, cross_entropy.
-- Flops count the matmuls and convolutions the step runs: 2*M*N*K per product forward, and in
-- backward 2*M*N*K for the weight gradient plus 2*M*N*K for the input gradient where one is
-- needed (the first layer's input does not require grad, so it gets no input gradient).
-- Target: the MLP step reaches >= 60% of the sgemm reference (the faster of gm.matmul
-- 256x512x1024, the MLP's shape, and 1024^3). The CNN row is information. Info rows break the
-- MLP step down (forward / backward / optimiser, and the same five products as bare
-- gm.matmul calls), so a miss shows where the time goes. Both steps are also timed against
-- the same model in PyTorch (tests/bench/torch_train.py through peer.lua, interleaved, same
-- thread count; information: the speedup, no target).
-- Usage: gmoe tests/bench/train.lua [reps] [label]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local B = require 'common'
local peer = require 'peer'
local nn = gm.nn

local reps = tonumber(arg and arg[1]) or 15
local label = arg and arg[2] or ''
local tag = label ~= '' and (' [' .. label .. ']') or ''
local P, why = peer.open()
print(('# training steps%s: timer %s, %d threads, %d repeats, PyTorch %s'):format(
      tag, B.clock_name, gm.get_num_threads(), reps, peer.describe(P, why)))

local function ms(med, lo, hi) return ('%.2f ms [%.2f..%.2f]'):format(med * 1e3, lo * 1e3, hi * 1e3) end

-- The step against PyTorch's, interleaved (information).
local function vs_torch(name, step, net, n)
  local r = peer.compare(step, P, P and P:load('torch_train.py', {net = net}), 1, n)
  B.info(name, ('gmoe %s'):format(ms(table.unpack(r.gm))))
  B.info('  PyTorch', r.torch and ('%s, gmoe %.2fx faster'):format(ms(table.unpack(r.torch)), r.torch[1] / r.gm[1])
         or ('skipped: ' .. tostring(why)))
end

local function gf(flop, t) return flop / t * 1e-9 end

local interleaved = B.interleaved

gm.manual_seed(0)

-- ---- MLP ------------------------------------------------------------------------------------
local Bm, D, H = 256, 512, 1024
local mlp = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, D))
local xm, tm = gm.randn{Bm, D}, gm.randn{Bm, D}
local opt_m = gm.optim.AdamW(mlp:parameters(), {lr = 1e-3})
local function mlp_step()
  opt_m:zero_grad()
  local loss = gm.mse_loss(mlp(xm), tm)
  loss:backward()
  opt_m:step()
end
local p = 2.0 * Bm * D * H -- one product of the MLP's shape
local mlp_flop = 2 * p + (2 * p + p) -- forward 2 products; backward dW1, dW2, dh

-- sgemm reference: gm.matmul (OpenBLAS sgemm through the binding, output allocated by the
-- caching allocator) at the MLP's shape and at 1024^3.
local a1, b1 = gm.randn{Bm, D}, gm.randn{D, H}
local n3 = 1024
local a3, b3 = gm.randn{n3, n3}, gm.randn{n3, n3}
local r = interleaved({
  function() local _ = gm.matmul(a1, b1) end,
  function() local _ = gm.matmul(a3, b3) end,
  mlp_step,
}, 3, reps)
local ref_small, ref_big = gf(p, r[1][1]), gf(2.0 * n3 ^ 3, r[2][1])
local ref = math.max(ref_small, ref_big)
B.info('sgemm ref 256x512x1024 (gm.matmul)', ('%.1f GFLOP/s, %s'):format(ref_small, ms(table.unpack(r[1]))))
B.info('sgemm ref 1024^3 (gm.matmul)', ('%.1f GFLOP/s, %s'):format(ref_big, ms(table.unpack(r[2]))))
B.info('MLP step 256x512-1024-512 time', ms(table.unpack(r[3])))
local mlp_rate = gf(mlp_flop, r[3][1])
B.row('MLP step rate / sgemm ref', ('%.1f%% (%.1f / %.1f GFLOP/s)'):format(100 * mlp_rate / ref, mlp_rate, ref),
      mlp_rate / ref, '>=', 0.60, '60%')

-- Where the MLP step's time goes: the step's phases timed inside each step (zero_grad +
-- forward, backward, optimiser), a forward without recording, and the step's five products
-- as bare gm.matmul calls on the same transposed views the autograd rules use.
local W1, W2 = mlp[0].weight, mlp[2].weight
local ph = {{}, {}, {}}
local g2, hk = gm.randn{Bm, D}, gm.randn{Bm, H}
local nph = 0
local r2 = interleaved({
  function()
    local t0 = B.clock()
    opt_m:zero_grad()
    local loss = gm.mse_loss(mlp(xm), tm)
    local t1 = B.clock()
    loss:backward()
    local t2 = B.clock()
    opt_m:step()
    local t3 = B.clock()
    nph = nph + 1
    ph[1][nph], ph[2][nph], ph[3][nph] = t1 - t0, t2 - t1, t3 - t2
  end,
  function() gm.no_grad(function() local _ = gm.mse_loss(mlp(xm), tm) end) end,
  function() -- y1 = x W1^T, y2 = h W2^T, dh = g2 W2, dW2 = g2^T h, dW1 = g1^T x
    gm.no_grad(function()
      local _ = gm.matmul(xm, W1:t()); _ = gm.matmul(hk, W2:t())
      _ = gm.matmul(g2, W2); _ = gm.matmul(g2:t(), hk); _ = gm.matmul(hk:t(), xm)
    end)
  end,
}, 2, reps)
local function stat(t) return B.median {table.unpack(t, #t - reps + 1, #t)} end -- the timed entries
B.info('MLP step: zero_grad + forward', ms(stat(ph[1])))
B.info('MLP step: backward', ms(stat(ph[2])))
B.info('MLP step: AdamW step (1.05M params)', ms(stat(ph[3])))
B.info('MLP forward, no_grad', ms(table.unpack(r2[2])))
B.info('MLP 5 bare matmuls (step flops)', ('%s = %.1f GFLOP/s'):format(ms(table.unpack(r2[3])), gf(mlp_flop, r2[3][1])))
B.info('MLP step - 5 bare matmuls', ('%.2f ms (%.0f%% of the step)'):format((r[3][1] - r2[3][1]) * 1e3,
       100 * (r[3][1] - r2[3][1]) / r[3][1]))
vs_torch('MLP step vs PyTorch', mlp_step, 'mlp', reps)

-- ---- CNN ------------------------------------------------------------------------------------
local Bc, S = 128, 32
local chans = {3, 16, 32, 32, 64}
local cnn = nn.Sequential(
  nn.Conv2d(3, 16, 3, {padding = 1}), nn.ReLU(),
  nn.Conv2d(16, 32, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
  nn.Conv2d(32, 32, 3, {padding = 1}), nn.ReLU(),
  nn.Conv2d(32, 64, 3, {padding = 1}), nn.ReLU(), nn.MaxPool2d(2),
  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
local xc = gm.randn{Bc, 3, S, S}
local yc = gm.randint(0, 10, {Bc})
local opt_c = gm.optim.AdamW(cnn:parameters(), {lr = 1e-3})
local function cnn_step()
  opt_c:zero_grad()
  local loss = gm.cross_entropy(cnn(xc), yc)
  loss:backward()
  opt_c:step()
end
-- conv flops: 2 * N * Cout * OH * OW * Cin * 9 forward; backward dW the same, dx the same
-- except for the first conv (its input needs no gradient).
local cnn_fwd, cnn_flop = 0, 0
local sizes = {S, S, S / 2, S / 2}
for l = 1, 4 do
  local f = 2.0 * Bc * chans[l + 1] * sizes[l] * sizes[l] * chans[l] * 9
  cnn_fwd = cnn_fwd + f
  cnn_flop = cnn_flop + f + f + (l > 1 and f or 0)
end
local fl = 2.0 * Bc * 64 * 10
cnn_fwd, cnn_flop = cnn_fwd + fl, cnn_flop + 3 * fl
local creps = math.max(3, reps // 3)
local rc = interleaved({
  function() local _ = gm.matmul(a1, b1) end,
  function() local _ = gm.matmul(a3, b3) end,
  cnn_step,
}, 1, creps)
local cref = math.max(gf(p, rc[1][1]), gf(2.0 * n3 ^ 3, rc[2][1]))
B.info('CNN step time (batch 128, 3x32x32)', ms(table.unpack(rc[3])))
local cnn_rate = gf(cnn_flop, rc[3][1])
B.info('CNN step rate / sgemm ref', ('%.1f%% (%.1f / %.1f GFLOP/s, %.2f GFLOP/step)'):format(
       100 * cnn_rate / cref, cnn_rate, cref, cnn_flop * 1e-9))
local rc2 = interleaved({
  function() gm.no_grad(function() local _ = cnn(xc) end) end,
  function()
    opt_c:zero_grad()
    gm.cross_entropy(cnn(xc), yc):backward()
  end,
}, 1, creps)
B.info('CNN forward, no_grad', ('%s = %.1f GFLOP/s'):format(ms(table.unpack(rc2[1])), gf(cnn_fwd, rc2[1][1])))
B.info('CNN forward + backward', ms(table.unpack(rc2[2])))
vs_torch('CNN step vs PyTorch', cnn_step, 'cnn', creps)
if P then P:close() end
