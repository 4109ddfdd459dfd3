-- regression_demo.lua: the walking skeleton. A 2-layer tanh MLP (raw tensors W1 [1,H], b1 [H],
-- W2 [H,1], b2 [1]) fits y = sin(3x) + 0.3x + noise on x in [-2, 2] with full-batch AdamW.
-- Writes loss.tsv, data.tsv and pred.tsv into out= (plots/regression_demo.gp draws them).
--   gmoe experiments/regression_demo.lua [--quick] [seed=N steps=N hidden=N lr=x out=DIR]
local gm = require 'gmoe'

local cfg = {seed = 1, steps = 2000, hidden = 32, lr = 1e-2, n = 256, noise = 0.05,
             weight_decay = 1e-4, out = 'runs/regression_demo/latest'}
local quick = {steps = 500}

local function parse_args(args)
  local over, is_quick = {}, false
  for _, a in ipairs(args or {}) do
    local k, v = a:match('^([%w_]+)=(.*)$')
    if a == '--quick' then
      is_quick = true
    elseif not k then
      error('regression_demo: expected --quick or key=value, got ' .. a, 0)
    elseif cfg[k] == nil then
      error('regression_demo: unknown option ' .. k, 0)
    elseif type(cfg[k]) == 'number' then
      local num = math.tointeger(tonumber(v)) or tonumber(v)
      if not num then error(('regression_demo: %s must be a number, got %s'):format(k, v), 0) end
      over[k] = num
    else
      over[k] = v
    end
  end
  if is_quick then for k, v in pairs(quick) do cfg[k] = v end end
  for k, v in pairs(over) do cfg[k] = v end
end

-- Write rows (arrays of numbers) under a '#'-header atomically: readers never see a
-- half-written file.
local function write_tsv(path, columns, rows)
  local tmp = path .. '.tmp'
  local f = assert(io.open(tmp, 'w'))
  f:write('# ', table.concat(columns, '\t'), '\n')
  for _, r in ipairs(rows) do
    local cells = {}
    for i, v in ipairs(r) do cells[i] = math.type(v) == 'integer' and tostring(v) or ('%.9g'):format(v) end
    f:write(table.concat(cells, '\t'), '\n')
  end
  assert(f:close())
  assert(os.rename(tmp, path))
end

local function target(x) return math.sin(3 * x) + 0.3 * x end

local function column(xs) -- Lua array -> [n, 1] tensor
  local t = {}
  for i, v in ipairs(xs) do t[i] = {v} end
  return gm.tensor(t)
end

local function main()
  parse_args(arg)
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
  local losses = {}
  for step = 1, cfg.steps do
    opt:zero_grad()
    local loss = ((model(x) - y) ^ 2):mean()
    loss:backward()
    opt:step()
    losses[#losses + 1] = {step, loss:item()}
    if step % 500 == 0 then io.stderr:write(('step %d loss %.5g\n'):format(step, losses[step][2])) end
  end

  -- prediction on a grid (the plot draws it as a line over the noisy data)
  local grid = {}
  for i = 0, 200 do grid[#grid + 1] = -2 + 4 * i / 200 end
  local pred = gm.no_grad(function() return model(column(grid)):totable() end)
  local rows = {}
  for i, v in ipairs(grid) do rows[i] = {v, target(v), pred[i][1]} end
  local data = {}
  for i, v in ipairs(xs) do data[i] = {v, ys[i]} end

  assert(os.execute(("mkdir -p '%s'"):format(cfg.out:gsub("'", "'\\''"))))
  write_tsv(cfg.out .. '/loss.tsv', {'step', 'loss'}, losses)
  write_tsv(cfg.out .. '/data.tsv', {'x', 'y'}, data)
  write_tsv(cfg.out .. '/pred.tsv', {'x', 'target', 'prediction'}, rows)
  print(('regression_demo: seed=%d steps=%d hidden=%d first_loss=%.5g final_loss=%.5g cpu=%.2fs out=%s')
    :format(cfg.seed, cfg.steps, H, losses[1][2], losses[#losses][2], os.clock() - t0, cfg.out))
end

main()
