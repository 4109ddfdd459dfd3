-- gmoe.nn.initializers: gm.nn.init, in-place parameter initialisers with torch.nn.init's
-- formulas (fans, gains, kaiming/xavier bounds). Each fills its tensor under gm.no_grad from
-- the engine's generator (the default one, or opts.generator) and returns it. Arguments are
-- positional as in PyTorch, or named in a trailing options table:
--   gm.nn.init.kaiming_uniform_(w, math.sqrt(5));  gm.nn.init.normal_(w, {std = 0.02, generator = g})
local error = require('gmoe.errors').raise -- errors point at the caller's line
local doc = require 'gmoe.doc'

local gm = require 'gmoe' -- registered by init.lua before its submodules load

local M = {}

-- Splits (t, positional..., opts?) into the tensor, the positional values and the options.
local function args(name, t, ...)
  if not gm.is_tensor(t) then error(('gm.nn.init.%s: first argument must be a tensor'):format(name), 3) end
  if t.dtype == 'i32' then error(('gm.nn.init.%s: expects a float tensor, got i32'):format(name), 3) end
  local pos = table.pack(...)
  local opts = {}
  if pos.n > 0 and type(pos[pos.n]) == 'table' and not gm.is_tensor(pos[pos.n]) then
    opts = pos[pos.n]
    pos.n = pos.n - 1
  end
  return opts, pos
end

-- The value of option `key`: opts.key, else positional argument i, else the default.
local function opt(opts, pos, i, key, default)
  if opts[key] ~= nil then return opts[key] end
  if i <= pos.n and pos[i] ~= nil then return pos[i] end
  return default
end

local function fill(t, src)
  gm.no_grad(function() t:copy_(src) end)
  return t
end

local function uniform(t, a, b, g)
  return fill(t, gm.rand(t.shape, {dtype = t.dtype, generator = g}) * (b - a) + a)
end

local function normal(t, mean, std, g)
  return fill(t, gm.randn(t.shape, {dtype = t.dtype, generator = g}) * std + mean)
end

--- fan_in, fan_out of a weight: [out, in, k...] -> in * prod(k), out * prod(k).
function M.calculate_fans(t)
  local s = require('gmoe.errors').check('calculate_fans', 1, 't', t, 'tensor').shape
  if #s < 2 then
    error(('gm.nn.init: fan in and fan out need a tensor with >= 2 dims, got shape [%s]'):format(
      table.concat(s, ', ')), 3)
  end
  local receptive = 1
  for i = 3, #s do receptive = receptive * s[i] end
  return s[2] * receptive, s[1] * receptive
end

function M.calculate_gain(nonlinearity, param)
  nonlinearity = require('gmoe.errors').check('calculate_gain', 1, 'nonlinearity', nonlinearity, 'string?') or 'leaky_relu'
  if nonlinearity == 'linear' or nonlinearity == 'identity' or nonlinearity == 'sigmoid' or
     nonlinearity:match('^conv') then
    return 1
  elseif nonlinearity == 'tanh' then
    return 5 / 3
  elseif nonlinearity == 'relu' then
    return math.sqrt(2)
  elseif nonlinearity == 'leaky_relu' then
    local a = param == nil and 0.01 or param
    return math.sqrt(2 / (1 + a * a))
  elseif nonlinearity == 'selu' then
    return 3 / 4
  end
  error(('gm.nn.init.calculate_gain: unknown nonlinearity "%s" (linear, conv2d, sigmoid, tanh, relu, leaky_relu, selu)')
    :format(tostring(nonlinearity)), 2)
end

local function fan_of(t, mode)
  local fan_in, fan_out = M.calculate_fans(t)
  if mode == 'fan_in' then return fan_in end
  if mode == 'fan_out' then return fan_out end
  error(('gm.nn.init: mode must be "fan_in" or "fan_out", got %s'):format(tostring(mode)), 3)
end

function M.uniform_(t, ...)
  local o, p = args('uniform_', t, ...)
  return uniform(t, opt(o, p, 1, 'a', 0), opt(o, p, 2, 'b', 1), o.generator)
end

function M.normal_(t, ...)
  local o, p = args('normal_', t, ...)
  return normal(t, opt(o, p, 1, 'mean', 0), opt(o, p, 2, 'std', 1), o.generator)
end

function M.constant_(t, v)
  args('constant_', t)
  gm.no_grad(function() t:fill_(v) end)
  return t
end
function M.zeros_(t) return M.constant_(t, 0) end
function M.ones_(t) return M.constant_(t, 1) end

function M.xavier_uniform_(t, ...)
  local o, p = args('xavier_uniform_', t, ...)
  local fan_in, fan_out = M.calculate_fans(t)
  local bound = opt(o, p, 1, 'gain', 1) * math.sqrt(6 / (fan_in + fan_out))
  return uniform(t, -bound, bound, o.generator)
end

function M.xavier_normal_(t, ...)
  local o, p = args('xavier_normal_', t, ...)
  local fan_in, fan_out = M.calculate_fans(t)
  return normal(t, 0, opt(o, p, 1, 'gain', 1) * math.sqrt(2 / (fan_in + fan_out)), o.generator)
end

local function kaiming_std(t, o, p)
  local a = opt(o, p, 1, 'a', 0)
  local fan = fan_of(t, opt(o, p, 2, 'mode', 'fan_in'))
  return M.calculate_gain(opt(o, p, 3, 'nonlinearity', 'leaky_relu'), a) / math.sqrt(fan)
end

function M.kaiming_uniform_(t, ...)
  local o, p = args('kaiming_uniform_', t, ...)
  local bound = math.sqrt(3) * kaiming_std(t, o, p)
  return uniform(t, -bound, bound, o.generator)
end

function M.kaiming_normal_(t, ...)
  local o, p = args('kaiming_normal_', t, ...)
  return normal(t, 0, kaiming_std(t, o, p), o.generator)
end

function M.scaled_output_(t, ...)
  local o, p = args('scaled_output_', t, ...)
  local n_layers = opt(o, p, 1, 'n_layers', nil)
  if math.type(n_layers) ~= 'integer' or n_layers < 1 then
    error('gm.nn.init.scaled_output_: n_layers must be a positive integer, got ' .. tostring(n_layers), 2)
  end
  return normal(t, 0, opt(o, p, 2, 'std', 0.02) / math.sqrt(2 * n_layers), o.generator)
end

local g = ' Fills t in place under gm.no_grad and returns it; opts.generator picks the generator.'
doc.add('gm.nn.init', 'gm.nn.init.<name>_(t, ..., {generator=g})',
  'In-place initialisers with torch.nn.init formulas: uniform_, normal_, constant_, zeros_, ones_, ' ..
  'xavier_uniform_, xavier_normal_, kaiming_uniform_, kaiming_normal_, scaled_output_, and ' ..
  'calculate_gain, calculate_fans. Arguments are positional as in PyTorch or named in a trailing table.')
doc.add('gm.nn.init.uniform_', 'gm.nn.init.uniform_(t, a=0, b=1, {generator})', 'U(a, b).' .. g)
doc.add('gm.nn.init.normal_', 'gm.nn.init.normal_(t, mean=0, std=1, {generator})', 'N(mean, std^2).' .. g)
doc.add('gm.nn.init.constant_', 'gm.nn.init.constant_(t, v)', 'Every element v (zeros_(t), ones_(t) likewise).')
doc.add('gm.nn.init.zeros_', 'gm.nn.init.zeros_(t)', 'Every element 0.')
doc.add('gm.nn.init.ones_', 'gm.nn.init.ones_(t)', 'Every element 1.')
doc.add('gm.nn.init.xavier_uniform_', 'gm.nn.init.xavier_uniform_(t, gain=1, {generator})',
  'Glorot uniform: U(-b, b).' .. g, {formula = 'b = gain * sqrt(6 / (fan_in + fan_out))',
  paper = 'Glorot & Bengio 2010'})
doc.add('gm.nn.init.xavier_normal_', 'gm.nn.init.xavier_normal_(t, gain=1, {generator})',
  'Glorot normal: N(0, std^2).' .. g, {formula = 'std = gain * sqrt(2 / (fan_in + fan_out))',
  paper = 'Glorot & Bengio 2010'})
doc.add('gm.nn.init.kaiming_uniform_',
  'gm.nn.init.kaiming_uniform_(t, a=0, mode="fan_in", nonlinearity="leaky_relu", {generator})',
  'He uniform: U(-b, b). fan_in = t.shape[2] * prod(kernel dims), fan_out = t.shape[1] * prod(kernel dims).' .. g,
  {formula = 'b = sqrt(3) * calculate_gain(nonlinearity, a) / sqrt(fan)', paper = 'He et al. 2015'})
doc.add('gm.nn.init.kaiming_normal_',
  'gm.nn.init.kaiming_normal_(t, a=0, mode="fan_in", nonlinearity="leaky_relu", {generator})',
  'He normal: N(0, std^2).' .. g, {formula = 'std = calculate_gain(nonlinearity, a) / sqrt(fan)',
  paper = 'He et al. 2015'})
doc.add('gm.nn.init.scaled_output_', 'gm.nn.init.scaled_output_(t, n_layers, std=0.02, {generator})',
  'GPT-2 style init of residual output projections: N(0, (std / sqrt(2 * n_layers))^2), so the ' ..
  'residual stream variance does not grow with depth.' .. g,
  {formula = 'std_out = std / sqrt(2 * n_layers)', paper = 'Radford et al. 2019 (GPT-2)'})
doc.add('gm.nn.init.calculate_gain', 'gm.nn.init.calculate_gain(nonlinearity, param)',
  'torch.nn.init.calculate_gain: linear/conv/sigmoid 1, tanh 5/3, relu sqrt(2), ' ..
  'leaky_relu sqrt(2 / (1 + a^2)) (a defaults to 0.01), selu 3/4.')
doc.add('gm.nn.init.calculate_fans', 'gm.nn.init.calculate_fans(t) -> fan_in, fan_out',
  'For a weight [out, in, k...]: in * prod(k) and out * prod(k).')

return M
