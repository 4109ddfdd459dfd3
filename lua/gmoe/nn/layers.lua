-- gmoe.nn.layers: the standard layers of gm.nn (containers, Linear, Embedding, norms, Dropout,
-- MLPs and gated MLPs, Conv2d and pooling, activations). Constructors take their arguments
-- positionally or by name, in a call or a table: gm.nn.Linear(4, 2), gm.nn.Linear{4, 2,
-- bias=false}, gm.nn.Linear{in_features=4, out_features=2}; an unknown option is an error.
-- Layers with parameters accept dtype ("f32" default, "f64") and generator (for the init).
local error = require('gmoe.errors').raise -- errors point at the caller's line
local doc = require 'gmoe.doc'
local Module = require('gmoe.nn.module').Module
local is_module = require('gmoe.nn.module').is_module
local init = require 'gmoe.nn.initializers'
local F = require 'gmoe.nn.functional'

local gm = require 'gmoe' -- registered by init.lua before its submodules load

local L = {}

-- An option without a default (nil unless given).
local NONE = setmetatable({}, {__tostring = function() return 'no default' end})

-- Normalises constructor arguments into one options table. positional: the names of the
-- positional arguments in order; defaults: every option with its default (NONE where none).
local function options(name, positional, defaults, ...)
  local a = table.pack(...)
  local o = {}
  local src = a
  if a.n >= 1 and type(a[a.n]) == 'table' and not is_module(a[a.n]) and not gm.is_tensor(a[a.n]) then
    for k, v in pairs(a[a.n]) do o[k] = v end
    src = {n = a.n - 1, table.unpack(a, 1, a.n - 1)}
  end
  for i = 1, src.n do
    if src[i] ~= nil then o[i] = src[i] end
  end
  local allowed = {}
  for i, k in ipairs(positional) do
    allowed[k] = true
    if o[i] ~= nil then
      if o[k] ~= nil then error(('gm.nn.%s: %s given twice'):format(name, k), 4) end
      o[k] = o[i]
    end
    o[i] = nil
  end
  for k in pairs(defaults) do allowed[k] = true end
  for k, _ in pairs(o) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      error(('gm.nn.%s: unknown option %s (options: %s)'):format(name, tostring(k), table.concat(names, ', ')), 4)
    end
  end
  for k, v in pairs(defaults) do
    if o[k] == nil and v ~= NONE then o[k] = v end
  end
  for _, k in ipairs(positional) do
    if o[k] == nil and defaults[k] == nil then error(('gm.nn.%s: missing %s'):format(name, k), 4) end
  end
  return o
end

local function need_int(name, key, v, min, level)
  if math.type(v) ~= 'integer' or v < (min or 1) then
    error(('gm.nn.%s: %s must be an integer >= %d, got %s'):format(name, key, min or 1, tostring(v)), level or 4)
  end
  return v
end

local function param(shape, dtype)
  return gm.empty(shape, {dtype = dtype or 'f32', requires_grad = true})
end

-- definer(T) -> define(name, sig, text, extra): a Module class registered in T and documented
-- as gm.nn.<name> (layers, mixers and moe_cnn each register into their own table)
local function definer(T)
  return function(name, sig, text, extra)
    local cls = Module:extend(name)
    T[name] = cls
    doc.add('gm.nn.' .. name, sig, text, extra)
    return cls
  end
end
local define = definer(L)

local function bstr(b) return b and 'true' or 'false' end

-- ---- containers -----------------------------------------------------------------------------
-- Children of Sequential and ModuleList are named "0", "1", ... and indexed 0-based like
-- PyTorch (seq[0] is the first layer); #seq counts them.
local function module_args(name, ...)
  local a = table.pack(...)
  local list = a
  if a.n == 1 and type(a[1]) == 'table' and not is_module(a[1]) then list = {n = #a[1], table.unpack(a[1])} end
  for i = 1, list.n do
    if not is_module(list[i]) then
      error(('gm.nn.%s: argument %d is a %s, not a module'):format(name, i, type(list[i])), 4)
    end
  end
  return list
end

local Sequential = define('Sequential', 'gm.nn.Sequential(m1, m2, ...) or gm.nn.Sequential{m1, m2, ...}',
  'Calls its modules in order, each on the output of the previous one. Children are named 0, 1, ... ' ..
  '(parameter names "0.weight"), seq[i] is child i (0-based, as in PyTorch), #seq their count; seq:append(m).')
function Sequential:init(...)
  local list = module_args('Sequential', ...)
  for i = 1, list.n do self:add_module(tostring(i - 1), list[i]) end
end
function Sequential:append(m)
  self:add_module(tostring(#self), m)
  return self
end
function Sequential:forward(x, ...)
  local out = table.pack(x, ...)
  for _, m in ipairs(self:children()) do out = table.pack(m(table.unpack(out, 1, out.n))) end
  return table.unpack(out, 1, out.n)
end

local ModuleList = define('ModuleList', 'gm.nn.ModuleList{m1, m2, ...}',
  'Holds modules so their parameters are registered (names 0, 1, ...), without a forward. list[i] ' ..
  'is child i (0-based), #list the count, list:append(m), list:extend{...}; list:children() is a ' ..
  'Lua array for ipairs.')
function ModuleList:init(...)
  local list = module_args('ModuleList', ...)
  for i = 1, list.n do self:add_module(tostring(i - 1), list[i]) end
end
function ModuleList:append(m)
  self:add_module(tostring(#self), m)
  return self
end
function ModuleList:extend(ms)
  for _, m in ipairs(ms) do self:append(m) end
  return self
end
function ModuleList:forward()
  error('gm.nn.ModuleList has no forward: call its modules (list[i](x) or ipairs(list:children()))', 2)
end

-- ---- dense layers ---------------------------------------------------------------------------
local Linear = define('Linear', 'gm.nn.Linear{in_features, out_features, bias=true, dtype="f32", generator}',
  'Affine map of the last dim: x [..., in_features] -> [..., out_features]; weight [out, in], bias [out]. ' ..
  'Default init as PyTorch: weight kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), bias the same range.',
  {formula = 'y = x W^T + b'})
function Linear:init(...)
  local o = options('Linear', {'in_features', 'out_features'}, {bias = true, dtype = 'f32', generator = NONE}, ...)
  self.in_features = need_int('Linear', 'in_features', o.in_features, 0)
  self.out_features = need_int('Linear', 'out_features', o.out_features, 0)
  self.weight = param({self.out_features, self.in_features}, o.dtype)
  if self.in_features > 0 then init.kaiming_uniform_(self.weight, {a = math.sqrt(5), generator = o.generator})
  else init.zeros_(self.weight) end
  if o.bias then
    self.bias = param({self.out_features}, o.dtype)
    local bound = self.in_features > 0 and 1 / math.sqrt(self.in_features) or 0
    init.uniform_(self.bias, -bound, bound, {generator = o.generator})
  end
end
function Linear:forward(x) return F.linear(x, self.weight, self.bias) end
function Linear:extra_repr()
  return ('in_features=%d, out_features=%d, bias=%s'):format(self.in_features, self.out_features, bstr(self.bias))
end

local Embedding = define('Embedding', 'gm.nn.Embedding{num_embeddings, embedding_dim, dtype="f32", generator}',
  'A lookup table: i32 ids of any shape [...] -> [..., embedding_dim] rows of weight [num, dim] ' ..
  '(index_select, so the gradient accumulates into the rows used). Default init N(0, 1).')
function Embedding:init(...)
  local o = options('Embedding', {'num_embeddings', 'embedding_dim'}, {dtype = 'f32', generator = NONE}, ...)
  self.num_embeddings = need_int('Embedding', 'num_embeddings', o.num_embeddings)
  self.embedding_dim = need_int('Embedding', 'embedding_dim', o.embedding_dim)
  self.weight = param({self.num_embeddings, self.embedding_dim}, o.dtype)
  init.normal_(self.weight, 0, 1, {generator = o.generator})
end
function Embedding:forward(ids)
  if not gm.is_tensor(ids) or ids.dtype ~= 'i32' then
    error(('gm.nn.Embedding: ids must be an i32 tensor, got %s'):format(
      gm.is_tensor(ids) and ids.dtype or type(ids)), 2)
  end
  local shape = ids.shape
  shape[#shape + 1] = self.embedding_dim
  return gm.index_select(self.weight, 0, ids:reshape {-1}):reshape(shape)
end
function Embedding:extra_repr() return ('%d, %d'):format(self.num_embeddings, self.embedding_dim) end

-- ---- normalisation and dropout ------------------------------------------------------------
local function shape_of(name, s)
  local shape = type(s) == 'table' and s or {s}
  for i, v in ipairs(shape) do need_int(name, 'normalized_shape[' .. i .. ']', v, 1, 5) end
  return shape
end

local LayerNorm = define('LayerNorm', 'gm.nn.LayerNorm{normalized_shape, eps=1e-5, affine=true, bias=true, dtype="f32"}',
  'Normalises over the trailing dims normalized_shape (an int: the last dim, or an array of sizes) with the ' ..
  'biased variance, then scales by weight and shifts by bias (both of normalized_shape; init 1 and 0) when ' ..
  'affine (elementwise_affine is accepted as an alias).',
  {formula = 'y = (x - mean) / sqrt(var + eps) * weight + bias', paper = 'Ba et al. 2016'})
function LayerNorm:init(...)
  local o = options('LayerNorm', {'normalized_shape'},
                    {eps = 1e-5, affine = true, elementwise_affine = NONE, bias = true, dtype = 'f32'}, ...)
  local affine = o.affine
  if o.elementwise_affine ~= nil then affine = o.elementwise_affine end
  self.normalized_shape = shape_of('LayerNorm', o.normalized_shape)
  self.eps = o.eps
  if affine then
    self.weight = init.ones_(param(self.normalized_shape, o.dtype))
    if o.bias then self.bias = init.zeros_(param(self.normalized_shape, o.dtype)) end
  end
end
function LayerNorm:forward(x) return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps) end
function LayerNorm:extra_repr()
  return ('[%s], eps=%g, affine=%s'):format(table.concat(self.normalized_shape, ', '), self.eps, bstr(self.weight))
end

local RMSNorm = define('RMSNorm', 'gm.nn.RMSNorm{normalized_shape, eps=1e-6, affine=true, dtype="f32"}',
  'Divides by the root mean square over the trailing dims and scales by weight (init 1) when affine.',
  {formula = 'y = x / sqrt(mean(x^2) + eps) * weight', paper = 'Zhang & Sennrich 2019'})
function RMSNorm:init(...)
  local o = options('RMSNorm', {'normalized_shape'}, {eps = 1e-6, affine = true, dtype = 'f32'}, ...)
  self.normalized_shape = shape_of('RMSNorm', o.normalized_shape)
  self.eps = o.eps
  if o.affine then self.weight = init.ones_(param(self.normalized_shape, o.dtype)) end
end
function RMSNorm:forward(x) return F.rms_norm(x, self.normalized_shape, self.weight, self.eps) end
function RMSNorm:extra_repr()
  return ('[%s], eps=%g, affine=%s'):format(table.concat(self.normalized_shape, ', '), self.eps, bstr(self.weight))
end

local BatchNorm2d = define('BatchNorm2d', 'gm.nn.BatchNorm2d{num_features, eps=1e-5, momentum=0.1, affine=true, dtype="f32"}',
  'Batch normalisation over dim 1 of x [N, C, H, W] (any x [N, C, ...] works: BatchNorm1d is the same module). ' ..
  'Training mode: batch mean and biased variance per channel (the fused op gm.batch_norm), and the buffers ' ..
  'running_mean (init 0) and running_var (init 1) move by momentum towards the batch mean and unbiased variance; ' ..
  'eval mode: the running statistics. weight (init 1) and bias (init 0) when affine.',
  {formula = 'y = (x - mean) / sqrt(var + eps) * weight + bias', paper = 'Ioffe & Szegedy 2015'})
L.BatchNorm1d = BatchNorm2d
doc.add('gm.nn.BatchNorm1d', 'gm.nn.BatchNorm1d{num_features, ...}', 'The same module as gm.nn.BatchNorm2d (x [N, C] or [N, C, L]).')
function BatchNorm2d:init(...)
  local o = options('BatchNorm2d', {'num_features'}, {eps = 1e-5, momentum = 0.1, affine = true, dtype = 'f32'}, ...)
  self.num_features = need_int('BatchNorm2d', 'num_features', o.num_features)
  self.eps, self.momentum = o.eps, o.momentum
  if o.affine then
    self.weight = init.ones_(param({self.num_features}, o.dtype))
    self.bias = init.zeros_(param({self.num_features}, o.dtype))
  end
  self:add_buffer('running_mean', gm.zeros({self.num_features}, {dtype = o.dtype}))
  self:add_buffer('running_var', gm.ones({self.num_features}, {dtype = o.dtype}))
end
function BatchNorm2d:forward(x)
  if not gm.is_tensor(x) or x:dim() < 2 or x.shape[2] ~= self.num_features then
    error(('gm.nn.BatchNorm2d: x must be [N, %d, ...], got %s'):format(self.num_features,
      gm.is_tensor(x) and '[' .. table.concat(x.shape, ', ') .. ']' or type(x)), 2)
  end
  return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum,
                      self.eps)
end
function BatchNorm2d:extra_repr()
  return ('%d, eps=%g, momentum=%g, affine=%s'):format(self.num_features, self.eps, self.momentum, bstr(self.weight))
end

local Dropout = define('Dropout', 'gm.nn.Dropout{p=0.5, generator}',
  'Inverted dropout in training mode (each element zeroed with probability p, the rest scaled by ' ..
  '1/(1-p)), drawn from the engine generator (or opts.generator); the identity after m:eval().',
  {formula = 'y = x * (u >= p) / (1 - p), u ~ U(0, 1)', paper = 'Srivastava et al. 2014'})
function Dropout:init(...)
  local o = options('Dropout', {'p'}, {p = 0.5, generator = NONE}, ...)
  if type(o.p) ~= 'number' or o.p < 0 or o.p > 1 then
    error('gm.nn.Dropout: p must be a number in [0, 1], got ' .. tostring(o.p), 3)
  end
  self.p, self.generator = o.p, o.generator
end
function Dropout:forward(x) return F.dropout(x, self.p, self.training, {generator = self.generator}) end
function Dropout:extra_repr() return ('p=%g'):format(self.p) end

-- ---- activations ---------------------------------------------------------------------------
local function activation(name, fn, formula)
  local cls = define(name, 'gm.nn.' .. name .. '()', 'The ' .. fn .. ' activation as a module.', {formula = formula})
  function cls:init(...) options(name, {}, {}, ...) end
  function cls:forward(x) return x[fn](x) end
  return cls
end
activation('ReLU', 'relu', 'y = max(x, 0)')
activation('GELU', 'gelu', 'y = x * Phi(x) (exact erf form)')
activation('SiLU', 'silu', 'y = x * sigmoid(x)')
activation('Tanh', 'tanh', 'y = tanh(x)')
activation('Sigmoid', 'sigmoid', 'y = 1 / (1 + exp(-x))')

for _, name in ipairs {'Softmax', 'LogSoftmax'} do
  local fn = name == 'Softmax' and 'softmax' or 'log_softmax'
  local cls = define(name, 'gm.nn.' .. name .. '{dim=-1}', 'gm.' .. fn .. ' along dim (0-based; default the last).')
  function cls:init(...) self.dim = options(name, {'dim'}, {dim = -1}, ...).dim end
  function cls:forward(x) return x[fn](x, self.dim) end
  function cls:extra_repr() return 'dim=' .. self.dim end
end

local Identity = define('Identity', 'gm.nn.Identity()', 'Returns its arguments unchanged.')
function Identity:forward(...) return ... end

local Flatten = define('Flatten', 'gm.nn.Flatten{start_dim=1, end_dim=-1}',
  'Merges dims start_dim..end_dim (0-based), e.g. [N, C, H, W] -> [N, C*H*W].')
function Flatten:init(...)
  local o = options('Flatten', {'start_dim', 'end_dim'}, {start_dim = 1, end_dim = -1}, ...)
  self.start_dim, self.end_dim = o.start_dim, o.end_dim
end
function Flatten:forward(x) return x:flatten(self.start_dim, self.end_dim) end
function Flatten:extra_repr() return ('start_dim=%d, end_dim=%d'):format(self.start_dim, self.end_dim) end

local activations = {relu = 'ReLU', gelu = 'GELU', silu = 'SiLU', swish = 'SiLU', tanh = 'Tanh',
                     sigmoid = 'Sigmoid', identity = 'Identity'}
local function activation_module(name, act)
  if is_module(act) then return act end
  local cls = activations[act]
  if not cls then
    error(('gm.nn.%s: unknown activation %s (relu, gelu, silu, tanh, sigmoid, identity, or a module)'):format(
      name, tostring(act)), 4)
  end
  return L[cls]()
end

-- ---- MLPs ----------------------------------------------------------------------------------
local MLP = define('MLP', 'gm.nn.MLP{in_features, hidden_features, out_features=in_features, activation="relu", bias=true, dropout=0, dtype, generator}',
  'Two-layer perceptron: children fc1 (Linear in -> hidden), act (the activation module), optional ' ..
  'drop (Dropout after the activation), fc2 (Linear hidden -> out). activation: "relu", "gelu", ' ..
  '"silu", "tanh", "sigmoid", "identity" or a module. Linear default init.',
  {formula = 'y = fc2(act(fc1(x)))'})
function MLP:init(...)
  local o = options('MLP', {'in_features', 'hidden_features', 'out_features'},
                    {out_features = NONE, activation = 'relu', bias = true, dropout = 0, dtype = 'f32', generator = NONE}, ...)
  local lin = {bias = o.bias, dtype = o.dtype, generator = o.generator}
  self.fc1 = L.Linear(o.in_features, o.hidden_features, lin)
  self.act = activation_module('MLP', o.activation)
  if o.dropout > 0 then self.drop = L.Dropout(o.dropout) end
  self.fc2 = L.Linear(o.hidden_features, o.out_features or o.in_features, lin)
end
function MLP:forward(x)
  local h = self.act(self.fc1(x))
  if self.drop then h = self.drop(h) end
  return self.fc2(h)
end

local function gated(name, act_default, text, formula, paper)
  local cls = define(name, ('gm.nn.%s{in_features, hidden_features, out_features=in_features, activation="%s", bias=false, dtype, generator}')
    :format(name, act_default), text, {formula = formula, paper = paper})
  function cls:init(...)
    local o = options(name, {'in_features', 'hidden_features', 'out_features'},
                      {out_features = NONE, activation = act_default, bias = false, dtype = 'f32', generator = NONE}, ...)
    local lin = {bias = o.bias, dtype = o.dtype, generator = o.generator}
    self.w1 = L.Linear(o.in_features, o.hidden_features, lin)
    self.w2 = L.Linear(o.hidden_features, o.out_features or o.in_features, lin)
    self.w3 = L.Linear(o.in_features, o.hidden_features, lin)
    self.act = activation_module(name, o.activation)
  end
  function cls:forward(x) return self.w2(self.act(self.w1(x)) * self.w3(x)) end
  return cls
end
gated('GLU', 'sigmoid',
  'Gated linear unit feed-forward: children w1 and w3 (in -> hidden, the gate and the value), w2 ' ..
  '(hidden -> out), act. No biases by default (as in Shazeer 2020); activation selects the GLU variant ' ..
  '("sigmoid" GLU, "gelu" GEGLU, "silu" SwiGLU, "relu" ReGLU). Linear default init.',
  'y = w2(act(w1 x) * w3 x)', 'Dauphin et al. 2017; Shazeer 2020')
gated('SwiGLU', 'silu',
  'The SwiGLU feed-forward of LLaMA-style transformers: GLU with silu. Children w1, w3 (in -> hidden), ' ..
  'w2 (hidden -> out), act; no biases by default. Linear default init.',
  'y = w2(silu(w1 x) * w3 x)', 'Shazeer 2020')

-- ---- convolution and pooling ----------------------------------------------------------------
local function pair_opt(name, key, v)
  local ok, a, b = pcall(F._pair, name, key, v)
  if not ok then error(('gm.nn.%s: %s must be an integer or {h, w}, got %s'):format(name, key, tostring(v)), 4) end
  return {a, b}
end
local function pstr(p) return p[1] == p[2] and tostring(p[1]) or ('{%d, %d}'):format(p[1], p[2]) end

local Conv2d = define('Conv2d', 'gm.nn.Conv2d{in_channels, out_channels, kernel_size, stride=1, padding=0, bias=true, dtype, generator}',
  'Cross-correlation of NCHW images: x [N, in, H, W] (or [in, H, W]) -> [N, out, OH, OW], OH = floor((H + 2 padding - kh) / stride) + 1; ' ..
  'kernel_size, stride and padding are ints or {h, w}; weight [out, in, kh, kw], bias [out]. im2col + gemm ' ..
  '(op gm.conv2d). Default init as PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, fan_in = in*kh*kw.',
  {formula = 'y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] x[n,c,i*s-pad+p,j*s-pad+q]'})
function Conv2d:init(...)
  local o = options('Conv2d', {'in_channels', 'out_channels', 'kernel_size'},
                    {stride = 1, padding = 0, bias = true, dtype = 'f32', generator = NONE}, ...)
  self.in_channels = need_int('Conv2d', 'in_channels', o.in_channels)
  self.out_channels = need_int('Conv2d', 'out_channels', o.out_channels)
  self.kernel_size = pair_opt('Conv2d', 'kernel_size', o.kernel_size)
  self.stride = pair_opt('Conv2d', 'stride', o.stride)
  self.padding = pair_opt('Conv2d', 'padding', o.padding)
  self.weight = param({self.out_channels, self.in_channels, self.kernel_size[1], self.kernel_size[2]}, o.dtype)
  init.kaiming_uniform_(self.weight, {a = math.sqrt(5), generator = o.generator})
  if o.bias then
    local bound = 1 / math.sqrt(self.in_channels * self.kernel_size[1] * self.kernel_size[2])
    self.bias = init.uniform_(param({self.out_channels}, o.dtype), -bound, bound, {generator = o.generator})
  end
end
function Conv2d:forward(x)
  return F.conv2d(x, self.weight, self.bias, {stride = self.stride, padding = self.padding})
end
function Conv2d:extra_repr()
  return ('%d, %d, kernel_size=%s, stride=%s, padding=%s, bias=%s'):format(self.in_channels, self.out_channels,
    pstr(self.kernel_size), pstr(self.stride), pstr(self.padding), bstr(self.bias))
end

local MaxPool2d = define('MaxPool2d', 'gm.nn.MaxPool2d{kernel_size, stride=kernel_size, padding=0, return_indices=false}',
  'Window maxima of NCHW images (padding counts as -inf, at most half the kernel); with return_indices the ' ..
  'forward also returns the i32 argmax per output (flat h*W+w within each plane). Op gm.max_pool2d.')
local AvgPool2d = define('AvgPool2d', 'gm.nn.AvgPool2d{kernel_size, stride=kernel_size, padding=0}',
  'Window means of NCHW images; zero padding counts in the divisor kh*kw (torch count_include_pad=True). Op gm.avg_pool2d.')
for _, cls in ipairs {MaxPool2d, AvgPool2d} do
  local name = cls.__classname
  function cls:init(...)
    local o = options(name, {'kernel_size', 'stride', 'padding'},
                      {stride = NONE, padding = 0, return_indices = false}, ...)
    if o.return_indices and cls ~= MaxPool2d then error('gm.nn.AvgPool2d: unknown option return_indices', 3) end
    self.kernel_size = pair_opt(name, 'kernel_size', o.kernel_size)
    self.stride = o.stride and pair_opt(name, 'stride', o.stride) or self.kernel_size
    self.padding = pair_opt(name, 'padding', o.padding)
    self.return_indices = o.return_indices or nil
  end
  function cls:extra_repr()
    return ('kernel_size=%s, stride=%s, padding=%s'):format(pstr(self.kernel_size), pstr(self.stride), pstr(self.padding))
  end
end
function MaxPool2d:forward(x)
  return F.max_pool2d(x, self.kernel_size, {stride = self.stride, padding = self.padding,
                                            return_indices = self.return_indices})
end
function AvgPool2d:forward(x)
  return F.avg_pool2d(x, self.kernel_size, {stride = self.stride, padding = self.padding})
end

local AdaptiveAvgPool2d = define('AdaptiveAvgPool2d', 'gm.nn.AdaptiveAvgPool2d{output_size}',
  'Averages NCHW images onto an output_size grid (int or {h, w}) with torch\'s window bounds ' ..
  '(floor(i H / oh) to ceil((i+1) H / oh)); output_size 1 is global average pooling keeping [N, C, 1, 1].')
function AdaptiveAvgPool2d:init(...)
  local o = options('AdaptiveAvgPool2d', {'output_size'}, {}, ...)
  self.output_size = pair_opt('AdaptiveAvgPool2d', 'output_size', o.output_size)
end
function AdaptiveAvgPool2d:forward(x) return F.adaptive_avg_pool2d(x, self.output_size) end
function AdaptiveAvgPool2d:extra_repr() return 'output_size=' .. pstr(self.output_size) end

local GlobalAvgPool2d = define('GlobalAvgPool2d', 'gm.nn.GlobalAvgPool2d{keepdim=false}',
  'Mean over the spatial dims: [N, C, H, W] -> [N, C] ([N, C, 1, 1] with keepdim), as a CNN head before a Linear.')
function GlobalAvgPool2d:init(...)
  self.keepdim = options('GlobalAvgPool2d', {}, {keepdim = false}, ...).keepdim or false
end
function GlobalAvgPool2d:forward(x) return x:mean({-2, -1}, self.keepdim) end
function GlobalAvgPool2d:extra_repr() return self.keepdim and 'keepdim=true' or '' end

-- The option parser and checks, for the other layer files (gmoe.nn.mixers); not part of gm.nn
-- (gmoe.nn copies no underscore names).
L._helpers = {NONE = NONE, options = options, need_int = need_int, param = param, definer = definer}

return L
