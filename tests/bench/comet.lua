-- comet.lua: one training epoch of the COMET reproduction's model (issue 13) against the same
-- model in PyTorch (tests/bench/torch_comet.py through peer.lua, interleaved, same thread count):
-- the multi-gate MoE of experiments/lib/mmoe.lua with 16 experts (10 -> 32 -> 1), 2 tasks, one
-- gate per task (gm.gates.TopK{k=2}, or gm.gates.COMET{k=2, gamma=1, entropy=0.1}), heads
-- Linear(1, 1), MSE per task, Adam; an epoch is a permutation of n = 20000 examples and n / 256
-- minibatch steps (zero_grad, forward, loss, backward, step), as experiments/comet_gates.lua
-- trains. Target: >= 3x PyTorch 1.13. An info row per gate lists where the gmoe epoch goes
-- (gm.profile: the slowest kernels, and the share outside kernels: Lua, dispatch, autograd).
-- Usage: gmoe tests/bench/comet.lua [reps]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local B = require 'common'
local peer = require 'peer'
local L = dofile(dir .. '/../../experiments/lib/mmoe.lua')

local reps = tonumber(arg and arg[1]) or 15
local N, BATCH = 20000, 256
print(('# COMET multi-gate MoE epochs: n=%d, batch %d, %d steps, timer %s, %d threads, %d repeats'):format(
  N, BATCH, (N + BATCH - 1) // BATCH, B.clock_name, gm.get_num_threads(), reps))

local function make(gate)
  gm.manual_seed(0)
  local function g()
    if gate == 'topk' then return gm.gates.TopK {k = 2} end
    return gm.gates.COMET {k = 2, gamma = 1, entropy = 0.1}
  end
  local model = L.MMoE {d_in = 10, gates = {g(), g()}, experts = 16, hidden = 32}
  local opt = gm.optim.Adam(model:parameters(), {lr = 1e-3})
  local x, y = gm.randn {N, 10}, gm.randn {N, 2}
  return function()
    local perm = gm.randperm(N)
    local xs, ys = x:index_select(0, perm), y:index_select(0, perm)
    local y1, y2 = ys:select(1, 0), ys:select(1, 1)
    for s = 0, N - 1, BATCH do
      local b = math.min(BATCH, N - s)
      opt:zero_grad()
      local outs, _, aux = model(xs:narrow(0, s, b), {})
      local loss = gm.mse_loss(outs[1], y1:narrow(0, s, b)) + gm.mse_loss(outs[2], y2:narrow(0, s, b))
      if aux then loss = loss + aux end
      loss:backward()
      opt:step()
    end
  end
end

local p, why = peer.open()
for _, gate in ipairs {'topk', 'comet'} do
  local epoch = make(gate)
  local id = p and p:load('torch_comet.py', {gate = gate, n = N, batch = BATCH})
  peer.row(('COMET-MMoE epoch, %s gate'):format(gate), peer.compare(epoch, p, id, 2, reps), 3, why)
  local rep = gm.profile(epoch)
  local top = {}
  for i = 1, math.min(3, #rep) do top[i] = ('%s %.0f%%'):format(rep[i].kernel, rep[i].share * 100) end
  B.info('  where the epoch goes', ('%s; outside kernels %.0f%%'):format(table.concat(top, ', '),
    (1 - rep.total / rep.wall) * 100))
end
if p then p:close() end
