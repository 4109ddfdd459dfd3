-- gmoe.nn.module: gm.nn.Module, the base of every layer, with torch.nn.Module's bookkeeping.
-- A module registers what is assigned to its fields: a leaf tensor with requires_grad becomes
-- a parameter, a module becomes a child, in assignment order (self:add_parameter,
-- self:add_module and self:add_buffer do the same explicitly). Parameters, children and
-- buffers live in registries, not in the instance table, so every later assignment to their
-- names goes through __newindex. Names are dotted paths as in PyTorch ('blocks.1.fc.weight').
local error = require('gmoe.errors').raise -- errors point at the caller's line
local doc = require 'gmoe.doc'

local gm = require 'gmoe' -- registered by init.lua before its submodules load

local Module = {}
local is_class = {} -- class table -> true

--- A module instance (any class)?
local function is_module(v)
  if type(v) ~= 'table' then return false end
  local mt = getmetatable(v)
  return type(mt) == 'table' and rawget(mt, '__module_class') ~= nil
end

local function is_tensor(v) return gm.is_tensor(v) end
local function shape_str(t) return '[' .. table.concat(t.shape, ', ') .. ']' end

local function classname(m) return rawget(getmetatable(m), '__module_class').__classname end

-- ---- registries ------------------------------------------------------------------------------
-- Each instance holds three registries (params, modules, buffers): `names` in registration
-- order and `map` from name to value.
local function registry() return {names = {}, map = {}} end

local function reg_set(r, name, v)
  if r.map[name] == nil then r.names[#r.names + 1] = name end
  r.map[name] = v
end

local function reg_del(r, name)
  if r.map[name] == nil then return end
  r.map[name] = nil
  for i, n in ipairs(r.names) do
    if n == name then table.remove(r.names, i) break end
  end
end

local function regs(self) return rawget(self, '_params'), rawget(self, '_modules'), rawget(self, '_buffers') end

local function check_name(self, name, what)
  if type(name) ~= 'string' or name == '' or name:find('.', 1, true) then
    error(('%s:%s: name must be a non-empty string without dots, got %s'):format(
      classname(self), what, tostring(name)), 3)
  end
end

local function register(self, kind, name, v)
  local P, M, B = regs(self)
  for _, r in ipairs {P, M, B} do reg_del(r, name) end
  rawset(self, name, nil)
  reg_set(kind == 'param' and P or kind == 'module' and M or B, name, v)
end

-- ---- instances --------------------------------------------------------------------------------
local function instance_mt(cls)
  local mt = {__module_class = cls, __name = 'gm.nn.' .. cls.__classname}
  mt.__index = function(self, k)
    if math.type(k) == 'integer' then k = tostring(k) end
    local P, M, B = regs(self)
    local v = P.map[k]
    if v ~= nil then return v end
    v = M.map[k]
    if v ~= nil then return v end
    v = B.map[k]
    if v ~= nil then return v end
    return cls[k]
  end
  mt.__newindex = function(self, k, v)
    if math.type(k) == 'integer' then k = tostring(k) end
    local P, M, B = regs(self)
    if is_module(v) then
      register(self, 'module', k, v)
    elseif is_tensor(v) and P.map[k] ~= nil then
      P.map[k] = v
    elseif is_tensor(v) and B.map[k] ~= nil then
      B.map[k] = v
    elseif is_tensor(v) and v.requires_grad and v.grad_fn == nil then
      register(self, 'param', k, v)
    else -- a plain value (or nil) replaces whatever was registered under k
      reg_del(P, k); reg_del(M, k); reg_del(B, k)
      rawset(self, k, v)
    end
  end
  mt.__call = function(self, ...) return self:forward(...) end
  mt.__tostring = function(self) return self:summary() end
  mt.__len = function(self) return #rawget(self, '_modules').names end
  return mt
end

local function construct(cls, ...)
  local self = {_params = registry(), _modules = registry(), _buffers = registry(), training = true}
  setmetatable(self, cls.__instance_mt)
  if cls.init then cls.init(self, ...) end
  return self
end

local function make_class(parent, name)
  local cls = {__classname = name, __parent = parent}
  cls.__instance_mt = instance_mt(cls)
  is_class[cls] = true
  return setmetatable(cls, {
    __index = parent,
    __call = construct,
    __tostring = function() return 'gm.nn.' .. name .. ' (module class)' end,
    __name = 'gm.nn.' .. name .. ' class',
  })
end

Module.__classname = 'Module'
Module.__instance_mt = instance_mt(Module)
is_class[Module] = true
setmetatable(Module, {__call = construct, __tostring = function() return 'gm.nn.Module (module class)' end})

--- Module:extend(name): a new module class inheriting from this one.
function Module:extend(name)
  if not is_class[self] then error('extend: call it on a class (gm.nn.Module:extend("Name"))', 2) end
  if type(name) ~= 'string' or name == '' then error('extend: expects a class name string', 2) end
  return make_class(self, name)
end

--- Module:is_instance(v): v is an instance of this class or of a subclass.
function Module:is_instance(v)
  if not is_module(v) then return false end
  local c = rawget(getmetatable(v), '__module_class')
  while c do
    if c == self then return true end
    c = rawget(c, '__parent')
  end
  return false
end

function Module:forward()
  error(classname(self) .. ': forward is not implemented (define function ' .. classname(self) ..
        ':forward(x) ... end)', 2)
end

function Module:add_parameter(name, t)
  check_name(self, name, 'add_parameter')
  if not is_tensor(t) then error(classname(self) .. ':add_parameter: ' .. name .. ' is not a tensor', 2) end
  if t.grad_fn ~= nil then
    error(classname(self) .. ':add_parameter: ' .. name .. ' is not a leaf tensor (use :detach())', 2)
  end
  if not t.requires_grad then t:requires_grad_() end
  register(self, 'param', name, t)
  return t
end

function Module:add_module(name, m)
  check_name(self, name, 'add_module')
  if not is_module(m) then error(classname(self) .. ':add_module: ' .. name .. ' is not a module', 2) end
  register(self, 'module', name, m)
  return m
end

function Module:add_buffer(name, t)
  check_name(self, name, 'add_buffer')
  if not is_tensor(t) then error(classname(self) .. ':add_buffer: ' .. name .. ' is not a tensor', 2) end
  register(self, 'buffer', name, t)
  return t
end

-- Lists of {name, value} pairs that are also generic-for iterators:
--   for name, p in m:named_parameters() do ... end;  m:named_parameters()[1][1] == 'fc.weight'
local Pairs = {}
Pairs.__index = Pairs
Pairs.__call = function(self, _, prev)
  local i = prev == nil and 1 or rawget(self, '_pos') + 1
  rawset(self, '_pos', i)
  local e = self[i]
  if e then return e[1], e[2] end
end
local function pairs_list(t) return setmetatable(t, Pairs) end

-- Walks modules depth-first (self, then children in order) with their dotted prefixes.
local function walk(self, prefix, fn, seen)
  if seen[self] then return end
  seen[self] = true
  fn(self, prefix)
  local _, M = regs(self)
  for _, n in ipairs(M.names) do walk(M.map[n], prefix == '' and n or prefix .. '.' .. n, fn, seen) end
end

local function named_from(self, which)
  local out, seen = {}, {}
  walk(self, '', function(m, prefix)
    local P, _, B = regs(m)
    local r = which == 'param' and P or B
    for _, n in ipairs(r.names) do
      local t = r.map[n]
      if not seen[t] then
        seen[t] = true
        out[#out + 1] = {prefix == '' and n or prefix .. '.' .. n, t}
      end
    end
  end, {})
  return pairs_list(out)
end

function Module:named_parameters() return named_from(self, 'param') end
function Module:named_buffers() return named_from(self, 'buffer') end

function Module:parameters()
  local out = {}
  for i, e in ipairs(named_from(self, 'param')) do out[i] = e[2] end
  return out
end

function Module:buffers()
  local out = {}
  for i, e in ipairs(named_from(self, 'buffer')) do out[i] = e[2] end
  return out
end

function Module:named_children()
  local _, M = regs(self)
  local out = {}
  for i, n in ipairs(M.names) do out[i] = {n, M.map[n]} end
  return pairs_list(out)
end

function Module:children()
  local _, M = regs(self)
  local out = {}
  for i, n in ipairs(M.names) do out[i] = M.map[n] end
  return out
end

function Module:named_modules()
  local out = {}
  walk(self, '', function(m, prefix) out[#out + 1] = {prefix, m} end, {})
  return pairs_list(out)
end

function Module:modules()
  local out = {}
  walk(self, '', function(m) out[#out + 1] = m end, {})
  return out
end

--- m:apply(fn): fn(module) for every submodule (children first) and then m; returns m.
function Module:apply(fn)
  require('gmoe.errors').check('Module:apply', 1, 'fn', fn, 'function')
  for _, ch in ipairs(self:children()) do ch:apply(fn) end
  fn(self)
  return self
end

function Module:train(mode)
  if mode == nil then mode = true end
  for _, m in ipairs(self:modules()) do rawset(m, 'training', mode and true or false) end
  return self
end

function Module:eval() return self:train(false) end

function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p.grad = nil end
end

function Module:num_parameters(opts)
  local n = 0
  for _, p in ipairs(self:parameters()) do
    if not (opts and opts.trainable_only) or p.requires_grad then n = n + p:numel() end
  end
  return n
end

function Module:state_dict()
  local sd = {}
  for _, e in ipairs(named_from(self, 'param')) do sd[e[1]] = e[2]:detach() end
  for _, e in ipairs(named_from(self, 'buffer')) do sd[e[1]] = e[2]:detach() end
  return sd
end

function Module:load_state_dict(sd, opts)
  if type(sd) ~= 'table' then error(classname(self) .. ':load_state_dict: expects a table name -> tensor', 2) end
  local strict = not (opts and opts.strict == false)
  local own, order = {}, {}
  for _, which in ipairs {'param', 'buffer'} do
    for _, e in ipairs(named_from(self, which)) do
      own[e[1]] = e[2]
      order[#order + 1] = e[1]
    end
  end
  local missing, unexpected, bad = {}, {}, {}
  for _, name in ipairs(order) do
    local src, dst = sd[name], own[name]
    if src == nil then
      missing[#missing + 1] = name
    elseif not is_tensor(src) then
      bad[#bad + 1] = ('%s: expected a tensor, got %s'):format(name, type(src))
    elseif shape_str(src) ~= shape_str(dst) then
      bad[#bad + 1] = ('%s: shape %s in the state dict vs %s in the model'):format(name, shape_str(src), shape_str(dst))
    elseif src.dtype ~= dst.dtype then
      bad[#bad + 1] = ('%s: dtype %s in the state dict vs %s in the model (convert with model:to("%s") or t:to("%s"))')
        :format(name, src.dtype, dst.dtype, src.dtype, dst.dtype)
    end
  end
  for k in pairs(sd) do
    if own[k] == nil then unexpected[#unexpected + 1] = tostring(k) end
  end
  table.sort(unexpected)
  local msgs = {}
  if strict and #missing > 0 then msgs[#msgs + 1] = 'missing keys: ' .. table.concat(missing, ', ') end
  if strict and #unexpected > 0 then msgs[#msgs + 1] = 'unexpected keys: ' .. table.concat(unexpected, ', ') end
  for _, m in ipairs(bad) do msgs[#msgs + 1] = m end
  if #msgs > 0 then error(classname(self) .. ':load_state_dict: ' .. table.concat(msgs, '; '), 2) end
  gm.no_grad(function()
    for _, name in ipairs(order) do
      if sd[name] ~= nil then own[name]:copy_(sd[name]) end
    end
  end)
  return {missing_keys = missing, unexpected_keys = unexpected}
end

--- m:to(dtype): parameters and float buffers converted to dtype ("f32" or "f64"), in place
-- (new leaf tensors keep requires_grad); returns m. Build optimisers after converting.
function Module:to(dtype)
  if dtype == 'cpu' then return self end
  if dtype ~= 'f32' and dtype ~= 'f64' then
    error(classname(self) .. ':to: dtype must be "f32" or "f64", got ' .. tostring(dtype), 2)
  end
  for _, m in ipairs(self:modules()) do
    local P, _, B = regs(m)
    for _, n in ipairs(P.names) do
      local p = P.map[n]
      if p.dtype ~= dtype then
        local q = p:detach():to(dtype)
        if p.requires_grad then q:requires_grad_() end
        P.map[n] = q
      end
    end
    for _, n in ipairs(B.names) do
      local b = B.map[n]
      if b.dtype ~= dtype and b.dtype ~= 'i32' then B.map[n] = b:to(dtype) end
    end
  end
  return self
end
function Module:double() return self:to('f64') end
function Module:float() return self:to('f32') end

--- m:extra_repr(): the configuration shown in the summary, e.g. "in_features=4, out_features=2".
function Module:extra_repr() return '' end

local function count_str(n) return tostring(n) .. (n == 1 and ' param' or ' params') end

-- One module and its children as lines, PyTorch-style, with each module's parameter count.
local function repr_lines(m, indent, label, lines)
  local head = indent .. (label and '(' .. label .. '): ' or '') .. classname(m) .. '(' .. m:extra_repr()
  local n = m:num_parameters()
  local kids = m:named_children()
  if #kids == 0 then
    lines[#lines + 1] = head .. ')' .. (n > 0 and '  # ' .. count_str(n) or '')
    return
  end
  lines[#lines + 1] = head .. (m:extra_repr() ~= '' and ', ' or '') .. '  # ' .. count_str(n)
  for _, e in ipairs(kids) do repr_lines(e[2], indent .. '  ', e[1], lines) end
  lines[#lines + 1] = indent .. ')'
end

--- m:summary(): the tree printed by tostring(m), with per-module and total parameter counts.
function Module:summary()
  local lines = {}
  repr_lines(self, '', nil, lines)
  local total, trainable = self:num_parameters(), self:num_parameters {trainable_only = true}
  lines[#lines + 1] = ('Total: %s (%d trainable)'):format(count_str(total), trainable)
  return table.concat(lines, '\n')
end

doc.add('gm.nn.Module', 'gm.nn.Module:extend(name) -> class; class{...} -> instance',
  'Base of every layer, with torch.nn.Module semantics. Define a layer with ' ..
  '`local Net = gm.nn.Module:extend("Net")`, `function Net:init(opts) self.fc = gm.nn.Linear{4, 2} end` and ' ..
  '`function Net:forward(x) return self.fc(x) end`; `Net{...}` calls init and `m(x)` calls forward. ' ..
  'Assigning a leaf tensor with requires_grad to a field registers a parameter, assigning a module ' ..
  'registers a child (registration order is the order of parameters()); other values are plain ' ..
  'fields. Explicit forms: m:add_parameter(name, t) (sets requires_grad), m:add_module(name, m2), ' ..
  'm:add_buffer(name, t) (saved in state_dict, not trained). Assigning nil unregisters. A name ' ..
  'first used for a plain value stays a plain field. Methods: parameters(), named_parameters() ' ..
  '(an array of {name, tensor} that also iterates: `for name, p in m:named_parameters()`), ' ..
  'buffers(), named_buffers(), children(), named_children(), modules(), named_modules(), ' ..
  'apply(fn), train(mode=true), eval(), m.training, zero_grad(), num_parameters{trainable_only}, ' ..
  'state_dict(), load_state_dict(sd, {strict=true}), to(dtype), double(), float(), summary(), ' ..
  'extra_repr(). Names are dotted paths; children of Sequential/ModuleList are named 0, 1, ...')
doc.add('gm.nn.Module:named_parameters', 'm:named_parameters() -> {{name, tensor}, ...}',
  'Parameters with dotted names (own parameters first, then each child in registration order; a ' ..
  'tensor shared by two modules is listed once). The result is an array and also a generic-for ' ..
  'iterator: `for name, p in m:named_parameters() do ... end`.')
doc.add('gm.nn.Module:parameters', 'm:parameters() -> {tensor, ...}',
  'The parameters in the order of named_parameters(), e.g. for gm.optim.AdamW(m:parameters(), {lr=1e-3}).')
doc.add('gm.nn.Module:state_dict', 'm:state_dict() -> {name = tensor}',
  'A flat table from dotted names to the (detached, storage-sharing) parameters and buffers; gm.save writes it.')
doc.add('gm.nn.Module:load_state_dict', 'm:load_state_dict(sd, {strict=true}) -> {missing_keys, unexpected_keys}',
  'Copies the tensors of sd into the parameters and buffers under gm.no_grad. strict: missing or ' ..
  'unexpected keys are an error listing them; a shape or dtype mismatch is always an error naming ' ..
  'the key and both shapes (dtypes). Nothing is copied when there is an error.')
doc.add('gm.nn.Module:train', 'm:train(mode=true) -> m; m:eval() -> m',
  'Sets m.training on m and every submodule (Dropout is active only in training mode).')
doc.add('gm.nn.Module:zero_grad', 'm:zero_grad()', 'Clears .grad of every parameter.')
doc.add('gm.nn.Module:num_parameters', 'm:num_parameters{trainable_only=false} -> integer',
  'Number of parameter elements (shared tensors counted once).')
doc.add('gm.nn.Module:to', 'm:to(dtype) -> m',
  'Converts parameters and float buffers to "f32" or "f64" in place (new leaf tensors; create optimisers afterwards).')
doc.add('gm.nn.Module:summary', 'm:summary() -> string (also tostring(m))',
  'A PyTorch-style tree of the module with the parameter count of every module that has parameters, and the total.')

return {Module = Module, is_module = is_module, shape_str = shape_str}
