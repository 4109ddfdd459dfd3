-- gmoe.optim: optimisers with torch.optim semantics (SGD, Adam, AdamW), global-norm gradient
-- clipping, and learning-rate schedules. The update of a group of parameters is one C kernel
-- call (gm._C.sgd_step / adam_step); this file keeps per-parameter state and hyper-parameters.
--   local opt = gm.optim.AdamW(params, {lr=1e-3})
--   opt:zero_grad(); loss:backward(); opt:step()
local error = require('gmoe.errors').raise -- errors point at the caller's line
local M = {}

-- 'gmoe' requires this module while it loads, so fetch it when first needed.
local gm = require 'gmoe' -- registered by init.lua before its submodules load

local function check_params(name, params)
  if type(params) ~= 'table' then
    error(('%s: params must be an array of tensors, got %s'):format(name, type(params)), 3)
  end
  local list = {}
  for i, p in ipairs(params) do
    if not gm.is_tensor(p) then
      error(('%s: params[%d] is a %s, not a tensor'):format(name, i, type(p)), 3)
    end
    if p.grad_fn then -- its .grad is never filled: the step would silently do nothing
      error(('%s: params[%d] is not a leaf (it has grad_fn %s): optimise the tensors it was computed from, '
        .. 'or detach it and set requires_grad'):format(name, i, tostring(p.grad_fn)), 3)
    end
    list[i] = p
  end
  if #list == 0 then error(name .. ': params is empty', 3) end
  return list
end

local function check_range(name, key, v, lo, hi, hi_open)
  if type(v) ~= 'number' or v ~= v or v < lo or (hi and (v > hi or (hi_open and v == hi))) then
    local range = hi and ('in [%g, %g%s'):format(lo, hi, hi_open and ')' or ']') or ('>= %g'):format(lo)
    error(('%s: %s must be a number %s, got %s'):format(name, key, range, tostring(v)), 3)
  end
end

local function shape_str(t) return '[' .. table.concat(t.shape, ', ') .. ']' end

-- ---- the common optimiser object ----------------------------------------------------------

local Optimizer = {}
Optimizer.__index = Optimizer

local function new_optimizer(kind, params, hp)
  local self = setmetatable({kind = kind, params = check_params(kind, params), state = {}}, Optimizer)
  for k, v in pairs(hp) do self[k] = v end
  self.hyper_keys = {}
  for k in pairs(hp) do self.hyper_keys[#self.hyper_keys + 1] = k end
  table.sort(self.hyper_keys)
  return self
end

function Optimizer:zero_grad()
  for _, p in ipairs(self.params) do p.grad = nil end
end

local function zeros_like(p) return gm.zeros_like(p) end

-- One update of every parameter that has a gradient, as few kernel calls as possible: the
-- parameters that share a step count and dtype go to one multi-tensor call (as torch's foreach
-- optimisers; each tensor's update is bitwise the one it gets alone). closure (optional)
-- re-evaluates the loss first and its result is returned, as in torch.
function Optimizer:step(closure)
  local loss = closure and closure() or nil
  local groups, order = {}, {}
  -- each param's dtype and device, read once (each read is a tensor __index call)
  local keys = self.group_keys
  if not keys then keys = {}; self.group_keys = keys end
  for i, p in ipairs(self.params) do
    local g = p.grad
    if g ~= nil then
      local st = self.state[i]
      if not st then st = {step = 0}; self.state[i] = st end
      if self.kind == 'SGD' then
        if self.momentum ~= 0 and not st.momentum_buffer then st.momentum_buffer = zeros_like(p) end
      elseif not st.exp_avg then
        st.exp_avg, st.exp_avg_sq = zeros_like(p), zeros_like(p)
      end
      st.step = st.step + 1
      local by_key = groups[st.step]
      if not by_key then by_key = {}; groups[st.step] = by_key end
      local key = keys[i]
      if not key then key = p.dtype .. ' ' .. p.device; keys[i] = key end
      local grp = by_key[key]
      if not grp then
        grp = {step = st.step, p = {}, g = {}, a = {}, b = {}}
        by_key[key] = grp
        order[#order + 1] = grp
      end
      local k = #grp.p + 1
      grp.p[k], grp.g[k] = p, g
      grp.a[k] = st.momentum_buffer or st.exp_avg
      grp.b[k] = st.exp_avg_sq
    end
  end
  local C = gm._C
  for _, grp in ipairs(order) do
    if self.kind == 'SGD' then
      C.sgd_step(grp.p, grp.g, self.momentum ~= 0 and grp.a or nil, {
        lr = self.lr, momentum = self.momentum, dampening = self.dampening,
        weight_decay = self.weight_decay, nesterov = self.nesterov, step = grp.step})
    else
      C.adam_step(grp.p, grp.g, grp.a, grp.b, {
        lr = self.lr, beta1 = self.betas[1], beta2 = self.betas[2], eps = self.eps,
        weight_decay = self.weight_decay, decoupled = self.kind == 'AdamW', step = grp.step})
    end
  end
  return loss
end

local function copy_hyper(v)
  if type(v) ~= 'table' then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = x end
  return t
end

-- Plain Lua tables: {kind=, hyper={lr=, ...}, state={[i]={step=, <buffer>=tensor}}} where i
-- indexes params. Tensors are the live state buffers (save or copy them, as in torch).
function Optimizer:state_dict()
  local hyper, state = {}, {}
  for _, k in ipairs(self.hyper_keys) do hyper[k] = copy_hyper(self[k]) end
  for i, st in pairs(self.state) do
    local s = {}
    for k, v in pairs(st) do s[k] = v end
    state[i] = s
  end
  return {kind = self.kind, hyper = hyper, state = state}
end

-- Restores hyper-parameters and state. Buffers are copied into fresh tensors of each param's
-- dtype, so the dictionary can be reused and the optimiser never aliases it.
function Optimizer:load_state_dict(sd)
  if type(sd) ~= 'table' or type(sd.state) ~= 'table' or type(sd.hyper) ~= 'table' then
    error(self.kind .. ':load_state_dict: expected a table from state_dict()', 2)
  end
  if sd.kind ~= self.kind then
    error(('%s:load_state_dict: the state is for %s'):format(self.kind, tostring(sd.kind)), 2)
  end
  local state = {}
  for i, s in pairs(sd.state) do
    local p = self.params[i]
    if not p then
      error(('%s:load_state_dict: state for param %s but the optimiser has %d params')
        :format(self.kind, tostring(i), #self.params), 2)
    end
    local ns = {}
    for k, v in pairs(s) do
      if gm.is_tensor(v) then
        if shape_str(v) ~= shape_str(p) then
          error(('%s:load_state_dict: %s of param %d is %s but the param is %s')
            :format(self.kind, k, i, shape_str(v), shape_str(p)), 2)
        end
        ns[k] = v:detach():to(p.dtype):clone()
      else
        ns[k] = v
      end
    end
    state[i] = ns
  end
  for _, k in ipairs(self.hyper_keys) do
    if sd.hyper[k] ~= nil then self[k] = copy_hyper(sd.hyper[k]) end
  end
  self.state = state
end

function Optimizer:__tostring()
  local parts = {}
  for _, k in ipairs(self.hyper_keys) do
    local v = self[k]
    if type(v) == 'table' then v = '{' .. table.concat(v, ', ') .. '}' end
    parts[#parts + 1] = k .. '=' .. tostring(v)
  end
  return ('%s(%d params, %s)'):format(self.kind, #self.params, table.concat(parts, ', '))
end

-- ---- constructors -------------------------------------------------------------------------

local function opt_get(o, k, def)
  local v = o[k]
  if v == nil then return def end
  return v
end

local function check_keys(name, o, allowed)
  require('gmoe.errors').check(name, 2, 'opts', o, 'table')
  for k in pairs(o) do
    if not allowed[k] then error(('%s: unknown option %s'):format(name, tostring(k)), 3) end
  end
end

-- torch.optim.SGD: g += wd*p; buf = g (first step) or momentum*buf + (1-dampening)*g;
-- g = nesterov and g + momentum*buf or buf; p -= lr*g.
function M.SGD(params, o)
  o = o or {}
  check_keys('SGD', o, {lr = 1, momentum = 1, dampening = 1, nesterov = 1, weight_decay = 1})
  if o.lr == nil then error('SGD: lr is required', 2) end
  local hp = {lr = o.lr, momentum = opt_get(o, 'momentum', 0), dampening = opt_get(o, 'dampening', 0),
              nesterov = opt_get(o, 'nesterov', false), weight_decay = opt_get(o, 'weight_decay', 0)}
  check_range('SGD', 'lr', hp.lr, 0)
  check_range('SGD', 'momentum', hp.momentum, 0)
  check_range('SGD', 'dampening', hp.dampening, 0, 1)
  check_range('SGD', 'weight_decay', hp.weight_decay, 0)
  if hp.nesterov and (hp.momentum <= 0 or hp.dampening ~= 0) then
    error('SGD: nesterov needs momentum > 0 and dampening = 0', 2)
  end
  return new_optimizer('SGD', params, hp)
end

local function adam(kind, params, o, default_wd)
  o = o or {}
  check_keys(kind, o, {lr = 1, betas = 1, eps = 1, weight_decay = 1})
  local betas = opt_get(o, 'betas', {0.9, 0.999})
  if type(betas) ~= 'table' then error(kind .. ': betas must be a table {beta1, beta2}', 3) end
  local hp = {lr = opt_get(o, 'lr', 1e-3), betas = {betas[1], betas[2]}, eps = opt_get(o, 'eps', 1e-8),
              weight_decay = opt_get(o, 'weight_decay', default_wd)}
  check_range(kind, 'lr', hp.lr, 0)
  check_range(kind, 'betas[1]', hp.betas[1], 0, 1, true)
  check_range(kind, 'betas[2]', hp.betas[2], 0, 1, true)
  check_range(kind, 'eps', hp.eps, 0)
  check_range(kind, 'weight_decay', hp.weight_decay, 0)
  return new_optimizer(kind, params, hp)
end

-- torch.optim.Adam: L2 weight decay folded into the gradient (g += wd*p).
function M.Adam(params, o) return adam('Adam', params, o, 0) end
-- torch.optim.AdamW: decoupled weight decay (p *= 1 - lr*wd before the Adam update).
function M.AdamW(params, o) return adam('AdamW', params, o, 1e-2) end

-- ---- gradient clipping --------------------------------------------------------------------

-- torch.nn.utils.clip_grad_norm_: the global L2 norm over all gradients; when it exceeds
-- max_norm every gradient is scaled by max_norm / (norm + 1e-6). Returns the norm before
-- clipping. params: an array of tensors (or one tensor); params without grad are ignored.
function M.clip_grad_norm(params, max_norm)
  if gm.is_tensor(params) then params = {params} end
  require('gmoe.errors').check('clip_grad_norm', 1, 'params', params, 'table')
  check_range('clip_grad_norm', 'max_norm', max_norm, 0)
  local grads = {}
  for _, p in ipairs(params) do
    local g = p.grad
    if g ~= nil then grads[#grads + 1] = g end
  end
  if #grads == 0 then return 0.0 end
  local C = gm._C
  local norm = math.sqrt(C.sumsq(grads))
  local coef = max_norm / (norm + 1e-6)
  if coef < 1 then
    for _, g in ipairs(grads) do C.scale_(g, coef) end
  end
  return norm
end

-- ---- learning-rate schedules --------------------------------------------------------------
-- A schedule maps the index of the upcoming optimiser step (0, 1, 2, ...) to a factor of the
-- base learning rate: lr = base_lr * schedule:factor(step, base_lr).

local schedule = {}
M.schedule = schedule

local Schedule = {}
Schedule.__index = Schedule
function Schedule:__tostring() return self.desc end

local function check_count(name, key, v)
  if math.type(v) ~= 'integer' or v < 0 then
    error(('%s: %s must be an integer >= 0, got %s'):format(name, key, tostring(v)), 3)
  end
end

function schedule.constant()
  return setmetatable({desc = 'constant()', factor = function() return 1.0 end}, Schedule)
end

-- Linear ramp over the first `warmup` steps: factor(s) = min(1, (s + 1) / warmup), so the
-- first step already moves (lr/warmup) and step warmup-1 reaches the full rate.
local function warmup_factor(warmup, s)
  if s >= warmup then return 1.0 end
  return (s + 1) / warmup
end

function schedule.linear_warmup(warmup_steps)
  check_count('linear_warmup', 'warmup_steps', warmup_steps)
  return setmetatable({desc = ('linear_warmup(%d)'):format(warmup_steps),
                       factor = function(_, s) return warmup_factor(warmup_steps, s) end}, Schedule)
end

-- Linear warmup, then half a cosine from the base rate at step `warmup` down to min_lr (an
-- absolute rate) at step total_steps, constant after. With min_lr > 0 the factor needs the
-- base rate: factor(step, base_lr).
function schedule.cosine(total_steps, o)
  o = o or {}
  check_keys('cosine', o, {warmup = 1, min_lr = 1})
  local warmup, min_lr = opt_get(o, 'warmup', 0), opt_get(o, 'min_lr', 0)
  check_count('cosine', 'total_steps', total_steps)
  check_count('cosine', 'warmup', warmup)
  check_range('cosine', 'min_lr', min_lr, 0)
  local function factor(_, s, base_lr)
    if s < warmup then return warmup_factor(warmup, s) end
    local floor = 0.0
    if min_lr > 0 then
      if type(base_lr) ~= 'number' or base_lr <= 0 then
        error('cosine: factor(step, base_lr) needs base_lr > 0 when min_lr is set', 2)
      end
      floor = min_lr / base_lr
    end
    local t = math.min(1.0, (s - warmup) / math.max(1, total_steps - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
  end
  return setmetatable({desc = ('cosine(%d, {warmup=%d, min_lr=%g})'):format(total_steps, warmup, min_lr),
                       factor = factor}, Schedule)
end

-- Drives opt.lr from a schedule, like torch's LambdaLR: construction sets the rate of step 0;
-- call :step() after each opt:step().
local LRScheduler = {}
LRScheduler.__index = LRScheduler

function M.LRScheduler(opt, sched)
  if getmetatable(opt) ~= Optimizer then error('LRScheduler: first argument must be an optimiser', 2) end
  if getmetatable(sched) ~= Schedule then error('LRScheduler: second argument must be a gm.optim.schedule', 2) end
  local self = setmetatable({opt = opt, schedule = sched, base_lr = opt.lr, last_step = 0}, LRScheduler)
  self:apply()
  return self
end

function LRScheduler:apply()
  self.opt.lr = self.base_lr * self.schedule:factor(self.last_step, self.base_lr)
  return self.opt.lr
end

function LRScheduler:step()
  self.last_step = self.last_step + 1
  return self:apply()
end

function LRScheduler:get_lr() return self.opt.lr end
function LRScheduler:state_dict() return {base_lr = self.base_lr, last_step = self.last_step} end
function LRScheduler:load_state_dict(sd)
  self.base_lr, self.last_step = sd.base_lr, sd.last_step
  self:apply()
end

return M
