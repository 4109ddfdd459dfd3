-- memory.lua: resident memory stays flat over a long training loop (target 4). A small MLP
-- (x [64,32] -> 64 hidden, relu -> 1, MSE) trained for 10,000 steps with gm.optim.AdamW
-- (plain SGD by hand when the optimiser module is missing); no collectgarbage() anywhere, so
-- only Lua's own collector and the engine's caching allocator decide what is freed. Passes
-- when the resident size at the last step is within 10% of the one at step 1,000.
-- Usage: gmoe tests/bench/memory.lua [steps] [page_size]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local B = require 'common'

local steps = tonumber(arg and arg[1]) or 10000
local page = tonumber(arg and arg[2]) or 4096
local check_at = math.min(1000, steps)

gm.manual_seed(0)
local x, y = gm.randn{64, 32}, gm.randn{64, 1}
local w1 = (gm.randn{32, 64} * (1 / math.sqrt(32))):requires_grad_()
local b1 = gm.zeros({64}, {requires_grad = true})
local w2 = (gm.randn{64, 1} * (1 / math.sqrt(64))):requires_grad_()
local b2 = gm.zeros({1}, {requires_grad = true})
local params = {w1, b1, w2, b2}

local opt, step_fn
if gm.optim and gm.optim.AdamW then
  opt = gm.optim.AdamW(params, {lr = 1e-3})
  step_fn = function() opt:step() end
else
  step_fn = function()
    gm.no_grad(function()
      for _, p in ipairs(params) do p:copy_(p - p.grad * 1e-2); p.grad = nil end
    end)
  end
end
print(('# memory: %d steps of a [64,32]->64->1 MLP with %s, rss from /proc/self/statm (page %d)')
      :format(steps, opt and 'gm.optim.AdamW' or 'SGD by hand', page))

local rss_check, rss_first, peak = nil, nil, 0
local loss0, loss
local t0 = B.clock()
for step = 1, steps do
  if opt then opt:zero_grad() end
  local h = (x:matmul(w1) + b1):relu()
  local out = h:matmul(w2) + b2
  loss = gm.mse_loss(out, y)
  loss:backward()
  step_fn()
  if step == 1 then loss0 = loss:item() end
  if step % 100 == 0 or step == 1 or step == check_at then
    local r = B.rss(page)
    if r then
      if step == 1 then rss_first = r end
      if step == check_at then rss_check = r end
      if r > peak then peak = r end
    end
  end
end
local elapsed = B.clock() - t0
local rss_end = B.rss(page)

local mib = function(b) return ('%.1f MiB'):format(b / 2 ^ 20) end
B.info('mlp steps/s', ('%.0f (%.1f us/step)'):format(steps / elapsed, elapsed / steps * 1e6))
B.info('mlp loss first -> last', ('%.4f -> %.4f'):format(loss0, loss:item()))
if not rss_end or not rss_check then
  B.info('mlp rss', 'unavailable (/proc/self/statm)')
  return
end
B.info('mlp rss step 1 / ' .. check_at .. ' / peak', ('%s / %s / %s'):format(mib(rss_first),
       mib(rss_check), mib(peak)))
B.info('mlp engine live bytes at end', ('%.1f KiB'):format(gm.live_bytes() / 1024))
local growth = rss_end / rss_check
B.row(('mlp rss step %d / step %d'):format(steps, check_at),
      ('%s (x%.3f)'):format(mib(rss_end), growth), growth, '<=', 1.10, '1.10')
