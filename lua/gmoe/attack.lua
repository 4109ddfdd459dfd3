-- gmoe.attack (gm.attack): L-inf adversarial attacks, fgsm and pgd, on any model that maps a
-- batch of inputs to outputs (a gm.nn module or a function). The attack differentiates a loss of
-- (model output, target), plus optional extra terms of the adversarial input (a router's loss),
-- with respect to the input only: the parameters of the model (and of any module named in
-- opts.modules) have requires_grad switched off for the attack, so their .grad is untouched and
-- no weight gradient is computed, and every module's train/eval flag is restored afterwards.
local gm = require 'gmoe'
local doc = require 'gmoe.doc'

local M = {}

-- The TRADES objective lives in gm.nn.functional; gm.trades_loss is the short name.
gm.trades_loss = gm.nn.functional.trades_loss
doc.add('gm.trades_loss', 'gm.trades_loss(logits_nat, logits_adv, target, {beta=6}) -> loss, ce, kl',
  'The TRADES objective; the same function as gm.nn.functional.trades_loss (see there).',
  {paper = 'Zhang et al., ICML 2019 (TRADES)'})

local KNOWN = {eps = 1, step = 1, steps = 1, random_start = 1, init_std = 1, clamp = 1, loss = 1, extra = 1,
               modules = 1, mode = 1, generator = 1}

local function fail(fn, fmt, ...) error(('gm.attack.%s: ' .. fmt):format(fn, ...), 4) end

local function number(fn, o, key, default, lo)
  local v = o[key]
  if v == nil then v = default end
  if type(v) ~= 'number' or v ~= v or v < lo then fail(fn, '%s must be a number >= %g, got %s', key, lo, tostring(v)) end
  return v
end

-- Validated options with defaults; eps and the model/input checks are shared by fgsm and pgd.
local function options(fn, model, x, o)
  o = o or {}
  if type(o) ~= 'table' then fail(fn, 'options must be a table, got %s', type(o)) end
  for k in pairs(o) do
    if not KNOWN[k] then
      local names = {}
      for n in pairs(KNOWN) do names[#names + 1] = n end
      table.sort(names)
      fail(fn, 'unknown option %s (options: %s)', tostring(k), table.concat(names, ', '))
    end
  end
  if not (gm.nn.is_module(model) or type(model) == 'function') then
    fail(fn, 'model must be a gm.nn module or a function, got %s', type(model))
  end
  if not gm.is_tensor(x) or (x.dtype ~= 'f32' and x.dtype ~= 'f64') then
    fail(fn, 'x must be a float tensor, got %s', gm.is_tensor(x) and x.dtype or type(x))
  end
  local r = {eps = number(fn, o, 'eps', nil, 0)}
  r.steps = o.steps or (fn == 'fgsm' and 1 or 10)
  if math.type(r.steps) ~= 'integer' or r.steps < 0 then fail(fn, 'steps must be an integer >= 0, got %s', tostring(o.steps)) end
  r.step = number(fn, o, 'step', fn == 'fgsm' and r.eps or 2.5 * r.eps / math.max(1, r.steps), 0)
  local rs = o.random_start
  if rs == nil then rs = fn == 'pgd' end
  if rs == true then rs = 'uniform' end
  if rs ~= false and rs ~= 'uniform' and rs ~= 'normal' then
    fail(fn, 'random_start must be true, false, "uniform" or "normal", got %s', tostring(o.random_start))
  end
  r.random_start = rs
  r.init_std = number(fn, o, 'init_std', 0.001, 0)
  local c = o.clamp
  if c == nil then c = {0, 1} end
  if c ~= false and (type(c) ~= 'table' or type(c[1]) ~= 'number' or type(c[2]) ~= 'number' or c[1] > c[2]) then
    fail(fn, 'clamp must be {lo, hi} with lo <= hi, or false, got %s', tostring(o.clamp))
  end
  r.clamp = c
  r.loss = o.loss or function(out, y) return gm.cross_entropy(out, y) end
  if type(r.loss) ~= 'function' then fail(fn, 'loss must be a function(output, target), got %s', type(r.loss)) end
  local extra = o.extra
  if type(extra) == 'function' then extra = {extra} end
  extra = extra or {}
  for i, f in ipairs(extra) do
    if type(f) ~= 'function' then fail(fn, 'extra[%d] must be a function(x_adv), got %s', i, type(f)) end
  end
  r.extra = extra
  r.modules = {}
  if gm.nn.is_module(model) then r.modules[1] = model end
  for i, m in ipairs(o.modules or {}) do
    if not gm.nn.is_module(m) then fail(fn, 'modules[%d] must be a gm.nn module, got %s', i, type(m)) end
    r.modules[#r.modules + 1] = m
  end
  if o.mode ~= nil and o.mode ~= 'eval' and o.mode ~= 'train' then
    fail(fn, 'mode must be "eval", "train" or nil (as it is), got %s', tostring(o.mode))
  end
  r.mode = o.mode
  r.generator = o.generator
  return r
end

-- Runs body() with the modules' parameters out of autograd (and in opts.mode when given), then
-- restores every parameter's requires_grad and every module's training flag, also on error.
local function isolated(r, body)
  local params, flags, seen = {}, {}, {}
  for _, m in ipairs(r.modules) do
    for _, p in ipairs(m:parameters()) do
      if not seen[p] then
        seen[p] = true
        params[#params + 1] = {p, p.requires_grad}
      end
    end
    for _, sub in ipairs(m:modules()) do
      if flags[sub] == nil then flags[sub] = sub.training end
    end
  end
  for _, e in ipairs(params) do e[1]:requires_grad_(false) end
  if r.mode then for _, m in ipairs(r.modules) do m:train(r.mode == 'train') end end
  local ok, res = pcall(body)
  for _, e in ipairs(params) do e[1]:requires_grad_(e[2]) end
  for sub, t in pairs(flags) do rawset(sub, 'training', t) end
  if not ok then error(res, 0) end
  return res
end

local function sign(g) return g:gt(0) - g:lt(0) end

-- Gradient of loss(model(xa), y) + sum extra(xa) with respect to xa, and the loss value.
local function input_grad(fn, model, xa, y, r)
  xa = xa:detach():requires_grad_()
  local out = table.pack(model(xa))
  local loss = r.loss(out[1], y, table.unpack(out, 2, out.n))
  for _, f in ipairs(r.extra) do loss = loss + f(xa) end
  if not gm.is_tensor(loss) or loss:numel() ~= 1 then fail(fn, 'the loss must be a scalar tensor') end
  if not loss.requires_grad then fail(fn, 'the loss does not depend on the input (no gradient to follow)') end
  loss:backward()
  return xa.grad, loss:item()
end

local function project(xa, x, r)
  xa = gm.minimum(gm.maximum(xa, x - r.eps), x + r.eps)
  if r.clamp then xa = xa:clamp(r.clamp[1], r.clamp[2]) end
  return xa
end

local function start(x, r)
  if r.random_start == 'uniform' then
    return project(x + (gm.rand(x.shape, {dtype = x.dtype, generator = r.generator}) * 2 - 1) * r.eps, x, r)
  elseif r.random_start == 'normal' then
    return project(x + gm.randn(x.shape, {dtype = x.dtype, generator = r.generator}) * r.init_std, x, r)
  end
  return x
end

local function run(fn, model, x, y, o)
  local r = options(fn, model, x, o)
  x = x:detach()
  return isolated(r, function()
    local xa, loss = gm.no_grad(start, x, r), nil
    for _ = 1, r.steps do
      local g
      g, loss = input_grad(fn, model, xa, y, r)
      xa = gm.no_grad(function() return project(xa + sign(g) * r.step, x, r) end)
    end
    return xa, loss
  end)
end

--- gm.attack.fgsm(model, x, y, {eps, step=eps, random_start=false, clamp={0,1}, loss, extra, modules, mode, generator})
function M.fgsm(model, x, y, o) return run('fgsm', model, x, y, o) end

--- gm.attack.pgd(model, x, y, {eps, step, steps=10, random_start=true, ...})
function M.pgd(model, x, y, o) return run('pgd', model, x, y, o) end

local OPTS = 'Options: eps (required, the L-inf radius); step (ascent step size); random_start (true or ' ..
  '"uniform": x + U(-eps, eps); "normal": x + init_std * N(0, 1), init_std = 0.001 as the TRADES/AdvMoE ' ..
  'code; false: start at x); clamp = {lo, hi} valid input range (default {0, 1}; false: none); loss = ' ..
  'function(output, target, ...) -> scalar, given any further outputs of the model after the target (e.g. ' ..
  'gm.nn.MoECNN\'s router scores; default gm.cross_entropy(output, target)); extra = a function(x_adv) -> scalar or a ' ..
  'list of them, added to the loss (e.g. a router term); modules = further modules whose parameters and ' ..
  'mode are protected (the model itself is when it is a module); mode = "eval" or "train" to run the ' ..
  'attack in that mode (default: as it is); generator = g for the random start. The parameters of the ' ..
  'model and of `modules` get no gradient (requires_grad is off during the attack, so no weight gradient ' ..
  'is computed and .grad is untouched) and every module\'s train/eval flag is restored. Returns x_adv ' ..
  '(detached) and the loss at the last step\'s start.'
doc.add('gm.attack', 'gm.attack.fgsm(model, x, y, opts), gm.attack.pgd(model, x, y, opts)',
  'L-inf adversarial attacks on a model (a gm.nn module or a function of a batch). ' .. OPTS,
  {paper = 'Goodfellow et al. 2015 (FGSM); Madry et al. 2018 (PGD)'})
doc.add('gm.attack.fgsm', 'gm.attack.fgsm(model, x, y, {eps, step=eps, random_start=false, clamp={0, 1}, loss, extra, modules, mode, generator}) -> x_adv, loss',
  'One signed-gradient step: x_adv = clamp(proj(x0 + step * sign(grad_x L)), lo, hi), x0 = x (or the random ' ..
  'start), proj onto the eps-ball around x. ' .. OPTS,
  {formula = 'x_adv = clip_[lo,hi](x + eps * sign(grad_x L(f(x), y)))', paper = 'Goodfellow et al. 2015'})
doc.add('gm.attack.pgd', 'gm.attack.pgd(model, x, y, {eps, step=2.5*eps/steps, steps=10, random_start=true, clamp={0, 1}, loss, extra, modules, mode, generator}) -> x_adv, loss',
  'Projected gradient ascent under an L-inf budget: from the random start, `steps` times x_adv = ' ..
  'clamp(proj_eps(x_adv + step * sign(grad L)), lo, hi). The AdvMoE evaluation is steps=10, step=2/255, ' ..
  'eps=8/255 with a uniform random start. ' .. OPTS,
  {formula = 'x_{t+1} = clip_[lo,hi](Pi_{|z - x|_inf <= eps}(x_t + step * sign(grad_x L(f(x_t), y))))',
   paper = 'Madry et al. 2018'})

return M
