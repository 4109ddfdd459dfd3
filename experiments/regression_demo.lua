-- regression_demo.lua: the walking skeleton. A 2-layer tanh MLP (raw tensors W1 [1,H], b1 [H],
-- W2 [H,1], b2 [1]) fits y = sin(3x) + 0.3x + noise on x in [-2, 2] with full-batch AdamW.
-- Writes loss.tsv, data.tsv and pred.tsv into its run folder (plots/regression_demo.gp draws them).
--   gmoe run experiments/regression_demo.lua [--quick] [seed=N steps=N hidden=N lr=x] [--dir DIR]
local gm = require 'gmoe'

local function target(x) return math.sin(3 * x) + 0.3 * x end

local function column(xs) -- Lua array -> [n, 1] tensor
  local t = {}
  for i, v in ipairs(xs) do t[i] = {v} end
  return gm.tensor(t)
end

return gm.experiment {
  name = 'regression_demo',
  description = 'a 2-layer tanh MLP fits sin(3x) + 0.3x + noise with full-batch AdamW',
  config = {seed = 1, steps = 2000, hidden = 32, lr = 1e-2, n = 256, noise = 0.05, weight_decay = 1e-4},
  quick = {steps = 500},
  run = function(cfg, run)
    local t0 = os.clock()
    gm.manual_seed(cfg.seed)
    local n, H = cfg.n, cfg.hidden

    -- data: x ~ U[-2, 2), y = target(x) + noise * N(0, 1)
    local x = gm.rand{n, 1} * 4 - 2
    local xs, noise = {}, (gm.randn{n} * cfg.noise):totable()
    for i, row in ipairs(x:totable()) do xs[i] = row[1] end
    local ys = {}
    for i, v in ipairs(xs) do ys[i] = target(v) + noise[i] end
    local y = column(ys)

    -- parameters; W1 at unit scale so tanh units cover the input range with varied slopes
    local W1 = gm.randn{1, H}:requires_grad_()
    local b1 = gm.randn{H}:requires_grad_()
    local W2 = (gm.randn{H, 1} / math.sqrt(H)):requires_grad_()
    local b2 = gm.zeros{1}:requires_grad_()
    local function model(inp) return (inp:matmul(W1) + b1):tanh():matmul(W2) + b2 end

    local opt = gm.optim.AdamW({W1, b1, W2, b2}, {lr = cfg.lr, weight_decay = cfg.weight_decay})
    local loss_tsv = run:tsv('loss', {'step', 'loss'})
    local first, last
    for step = 1, cfg.steps do
      opt:zero_grad()
      local loss = ((model(x) - y) ^ 2):mean()
      loss:backward()
      opt:step()
      last = loss:item()
      first = first or last
      loss_tsv:row(step, last)
      if step % 50 == 0 or step == cfg.steps then run:progress(step, cfg.steps, ('loss %.4g'):format(last)) end
    end

    -- prediction on a grid (the plot draws it as a line over the noisy data)
    local grid = {}
    for i = 0, 200 do grid[#grid + 1] = -2 + 4 * i / 200 end
    local pred = gm.no_grad(function() return model(column(grid)):totable() end)
    local pred_tsv = run:tsv('pred', {'x', 'target', 'prediction'})
    for i, v in ipairs(grid) do pred_tsv:row(v, target(v), pred[i][1]) end
    local data_tsv = run:tsv('data', {'x', 'y'})
    for i, v in ipairs(xs) do data_tsv:row(v, ys[i]) end
    run:metric('first_loss', first)
    run:metric('final_loss', last)
    print(('regression_demo: seed=%d steps=%d hidden=%d first_loss=%.5g final_loss=%.5g cpu=%.2fs out=%s')
      :format(cfg.seed, cfg.steps, H, first, last, os.clock() - t0, run.dir))
  end,
}
