-- advmoe.lua: one PGD-2 adversarial training step (uniform random start, two signed steps of
-- 5/255 at eps 8/255 on the input gradient only, in eval mode, then SGD on the cross-entropy of
-- the adversarial batch in train mode) of the router-robustness experiment's models at batch 128,
-- 3x32x32: gm.nn.DenseCNN (ratio 0.5: convs 8-16-32-32, batch norm) and gm.nn.MoECNN (2 experts, image-level router, the batch
-- grouped by expert), against the same models in PyTorch (tests/bench/torch_advmoe.py, run
-- interleaved through peer.lua at the same thread count). Target: >= 1.5x PyTorch. Both sides
-- shift the router's bias so that the batch splits evenly between the two experts (the step's
-- cost depends on the split). Info rows: where the dense step's time goes (gm.profile: the
-- convolution kernels and everything else), and its rate against gm.matmul's sgemm rate.
-- Usage: gmoe tests/bench/advmoe.lua [reps]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local B = require 'common'
local peer = require 'peer'

local reps = tonumber(arg and arg[1]) or 9
print(('# PGD-2 adversarial training steps (issue 14): %d threads, %d repeats, timer %s'):format(
  gm.get_num_threads(), reps, B.clock_name))

gm.manual_seed(0)
local N = 128
local x = gm.rand {N, 3, 32, 32}
local y = gm.randint(0, 10, {N})

-- Even split: shift the second expert's score by the median score difference on x.
local function balance(model)
  if not model.router then return end
  gm.no_grad(function()
    local s = model.router(x)
    local d = (s:narrow(1, 1, 1) - s:narrow(1, 0, 1)):reshape {-1}:totable()
    table.sort(d)
    local b = model.router.fc.bias
    b[1] = b[1]:item() - 0.5 * (d[(N + 1) // 2] + d[N // 2 + 1])
  end)
end

local function step_of(model)
  local opt = gm.optim.SGD(model:parameters(), {lr = 0.01, momentum = 0.9, weight_decay = 5e-4})
  return function()
    local xa = gm.attack.pgd(model, x, y, {eps = 8 / 255, step = 5 / 255, steps = 2, mode = 'eval'})
    opt:zero_grad()
    gm.cross_entropy(model(xa), y):backward()
    opt:step()
  end
end

local p, why = peer.open()
local dense = gm.nn.DenseCNN {}
local moe = gm.nn.MoECNN {}
balance(moe)
local steps = {}
for _, c in ipairs {{'dense', dense}, {'moe', moe}} do
  local step = step_of(c[2])
  steps[c[1]] = step
  local id = p and p:load('torch_advmoe.py', {model = c[1], batch = N})
  local r = peer.compare(step, p, id, 2, reps)
  local u = c[1] == 'moe' and gm.nn.expert_usage(moe:routing(x), 2)
  local split = u and (' (experts %d/%d)'):format(math.floor(u[1] * N + 0.5), math.floor(u[2] * N + 0.5)) or ''
  peer.row(('PGD-2 AT step, %s CNN%s'):format(c[1], split), r, 1.5, why)
end
if p then p:close() end

-- Where the dense step's time goes. Convolution flops of one step: 3 forwards; the two attack
-- backwards need the input gradient of every conv; the training backward needs every weight
-- gradient and the input gradient of convs 2-4.
local fwd, total = {}, 0
do
  local H, cin = 32, 3
  for i, c in ipairs {8, 16, 32, 32} do
    local s = ({1, 2, 1, 2})[i]
    H = (H - 1) // s + 1
    fwd[i] = 2.0 * N * c * cin * 9 * H * H
    cin = c
  end
  for i = 1, 4 do total = total + 3 * fwd[i] + 2 * fwd[i] + fwd[i] + (i > 1 and fwd[i] or 0) end
end
local a3, b3 = gm.randn {1024, 1024}, gm.randn {1024, 1024}
local rr = B.interleaved({function() local _ = gm.matmul(a3, b3) end, steps.dense}, 1, math.max(3, reps // 2))
local ref, rate = 2.0 * 1024 ^ 3 / rr[1][1] * 1e-9, total / rr[2][1] * 1e-9
B.info('dense step rate / sgemm 1024^3 rate', ('%.1f%% (%.1f / %.1f GFLOP/s, %.2f GFLOP/step)'):format(
  100 * rate / ref, rate, ref, total * 1e-9))
local prof = gm.profile(steps.dense)
local conv, other = 0, 0
for _, e in ipairs(prof) do
  if e.kernel:match('^CONV2D') then conv = conv + e.seconds else other = other + e.seconds end
end
for _, e in ipairs(prof) do
  if e.share >= 0.03 then
    B.info('  dense step: ' .. e.kernel, ('%.2f ms (%.0f%%, %d calls)'):format(e.seconds * 1e3, 100 * e.share, e.calls))
  end
end
B.info('  dense step: conv kernels / other kernels / rest', ('%.1f / %.1f / %.1f ms of %.1f ms'):format(
  conv * 1e3, other * 1e3, (prof.wall - conv - other) * 1e3, prof.wall * 1e3))
