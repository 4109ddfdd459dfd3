-- gmoe.gates: gm.gates, the gate zoo. M.Gate is the base class of every gate (the setup/forward
-- protocol documented at gm.gates.Gate); the basic gates (gmoe.gates.basic) and helper modules
-- (gmoe.gates.trees, gmoe.gates.permuted) are merged into this table.
-- Protocol: a gate is built from options only; gate:setup(d_model, experts) allocates the
-- router (gm.nn.Linear(d_model, experts, bias=false) named `router`, unless the gate needs
-- more); gate:forward(x [T, D], ctx) returns r = {ids [T, K] i32, weights [T, K], probs [T, E]
-- or nil, logits [T, E] or nil, aux = {name = scalar tensor}, k = K}. ctx = {token_ids,
-- step, generator}; every field optional. The router runs in x's dtype (f32 or f64).
local error = require('gmoe.errors').raise -- errors point at the caller's line
local doc = require 'gmoe.doc'
local Module = require('gmoe.nn.module').Module

local gm = require 'gmoe' -- registered by init.lua before its submodules load

local M = {}

-- Unknown options are errors naming the gate and the valid options.
local function check_opts(name, o, allowed)
  for k in pairs(o) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      error(('gm.gates.%s: unknown option %s (options: %s)'):format(name, tostring(k), table.concat(names, ', ')), 4)
    end
  end
end

-- Options every gate accepts, whatever its own.
local COMMON = {d_model = true, experts = true, dtype = true, generator = true}

local Gate = Module:extend('Gate')
M.Gate = Gate

--- Gate:options(o, defaults): validate the constructor's table o against defaults (plus
-- d_model, experts, dtype, generator), copy every option (default filled in) onto self and
-- return the merged table. Subclasses call it first in their init, then Gate.finish(self, o).
function Gate:options(o, defaults)
  local name = self.__classname
  if o ~= nil and type(o) ~= 'table' then
    error(('gm.gates.%s: expects an options table, got %s'):format(name, type(o)), 4)
  end
  o = o or {}
  local allowed = {}
  for k in pairs(COMMON) do allowed[k] = true end
  for k in pairs(defaults or {}) do allowed[k] = true end
  check_opts(name, o, allowed)
  local m = {}
  for k, v in pairs(defaults or {}) do m[k] = v end
  for k, v in pairs(o) do m[k] = v end
  self.dtype = m.dtype or 'f32'
  self.generator = m.generator
  return m
end

--- Gate:finish(o): standalone use: when o has d_model and experts, run setup now.
function Gate:finish(o)
  if o.d_model ~= nil or o.experts ~= nil then
    if o.d_model == nil or o.experts == nil then
      error(('gm.gates.%s: standalone use needs both d_model and experts'):format(self.__classname), 4)
    end
    self:setup(o.d_model, o.experts)
  end
end

function Gate:init(o)
  local m = self:options(o, {})
  self:finish(m)
end

local function need_int(gate, key, v, min)
  min = require('gmoe.errors').check('need_int', 4, 'min', min, 'number')
  if math.type(v) ~= 'integer' or v < min then
    error(('gm.gates.%s: %s must be an integer >= %d, got %s'):format(gate, key, min, tostring(v)), 4)
  end
  return v
end
M.need_int = need_int

--- Gate:setup(d_model, experts): record the sizes and allocate the router
-- gm.nn.Linear(d_model, experts, bias=false) (in the gate's dtype, from its generator).
-- Subclasses that need more parameters call Gate.setup(self, d, e) and then add theirs.
function Gate:setup(d_model, experts)
  local name = self.__classname
  self.d_model = need_int(name, 'd_model', d_model, 1)
  self.experts = need_int(name, 'experts', experts, 1)
  if self.k == nil or self.dense then self.k = self.experts end
  if self.uses_router ~= false then
    self.router = gm.nn.Linear{d_model, experts, bias = self.router_bias or false,
                                    dtype = self.dtype, generator = self.generator}
  end
  return self
end

--- Gate:check(x): x must be [T, d_model] and setup done (error names the gate).
function Gate:check(x)
  local name = self.__classname
  if not self.experts then
    error(('gm.gates.%s: call setup(d_model, experts) first (or give d_model and experts)'):format(name), 3)
  end
  if not gm.is_tensor(x) then error(('gm.gates.%s: x must be a tensor'):format(name), 3) end
  if x:dim() ~= 2 or (self.d_model and x.shape[2] ~= self.d_model) then
    error(('gm.gates.%s: x must be [T, %d], got [%s]'):format(name, self.d_model or -1,
      table.concat(x.shape, ', ')), 3)
  end
end

--- Gate:logits(x) -> router logits [T, E].
function Gate:logits(x) return self.router(x) end

--- Gate:step(ctx): the training step for schedules: ctx.step, else self.step_count, else 0.
function Gate:step(ctx) return (ctx and ctx.step) or self.step_count or 0 end

--- Gate:rng(ctx): the generator for noise: ctx.generator, else the gate's, else nil (default).
function Gate:rng(ctx) return (ctx and ctx.generator) or self.generator end

function Gate:forward()
  error(('gm.gates.%s: forward is not implemented'):format(self.__classname), 2)
end

function Gate:extra_repr()
  local s = {}
  if self.experts then s[#s + 1] = 'experts=' .. self.experts end
  if self.k then s[#s + 1] = 'k=' .. tostring(self.k) end
  return table.concat(s, ', ')
end

--- M.value(v, step): a number, or a schedule's value at step.
function M.value(v, step)
  if type(v) == 'number' then return v end
  if type(v) == 'table' and v.value then return v:value(step or 0) end
  error('gm.gates: expected a number or a gm.schedule, got ' .. type(v), 3)
end

--- M.dense_ids(T, E): i32 [T, E] with rows 0..E-1 (the ids of a dense gate).
function M.dense_ids(T, E)
  return gm.arange(0, E, {dtype = 'i32'}):reshape{1, E}:expand{T, E}:contiguous()
end

--- M.result(t): fill defaults of a gate result (aux = {}, k from ids).
function M.result(r)
  require('gmoe.errors').check('gm.gates.result', 1, 'r', r, 'table')
  require('gmoe.errors').check('gm.gates.result', 1, 'r.ids', r.ids, 'tensor')
  r.aux = r.aux or {}
  r.k = r.k or r.ids.shape[2]
  return r
end

doc.add('gm.gates.Gate', 'gm.gates.Gate (base class; Gate:extend("Name"))',
  'Base of every gate: a gm.nn.Module subclass. Construct with an options table; ' ..
  'gate:setup(d_model, experts) allocates the router gm.nn.Linear(d_model, experts, bias=false) ' ..
  '(named router) and is called by gm.nn.MoE (or by the constructor when d_model and experts are ' ..
  'given). gate:forward(x [T, D], ctx) returns {ids [T, K] i32, weights [T, K], probs [T, E] or nil, ' ..
  'logits [T, E] or nil, aux = {name -> scalar}, k = K}; ctx = {token_ids i32 [T], step, generator}. ' ..
  'gate.k is the number of experts per token (E for dense gates), gate.experts = E. The router ' ..
  'runs in x\'s dtype (f32 or f64), so f64 gradient checks work. Every gate accepts dtype and ' ..
  'generator (router init; noise when ctx.generator is absent). Helpers for subclasses: ' ..
  'Gate:options(o, defaults), Gate.finish(self, o), Gate:check(x), Gate:logits(x), Gate:step(ctx), ' ..
  'Gate:rng(ctx), gm.gates.value(v, step), gm.gates.dense_ids(T, E).')

doc.add('gm.gates.value', 'gm.gates.value(v, step) -> number',
  'A temperature-like option\'s value: v itself when a number, v:value(step) when a gm.schedule.')
doc.add('gm.gates.dense_ids', 'gm.gates.dense_ids(T, E) -> i32 [T, E]',
  'The ids of a dense gate: every row is 0, 1, ..., E-1.')
doc.add('gm.gates.result', 'gm.gates.result(r) -> r',
  'Completes a gate result table: aux defaults to {}, k to the width of r.ids.')
doc.add('gm.gates.need_int', 'gm.gates.need_int(gate, key, v, min) -> v',
  'Option check for gate constructors: v must be an integer >= min, else an error naming ' ..
  'gm.gates.<gate> and the option.')

-- The basic gates, then the helper modules (tree gates, permutations) when built in. They
-- require 'gmoe.gates' for M.Gate while this file loads, hence package.loaded first.
package.loaded['gmoe.gates'] = M
for _, sub in ipairs {'basic', 'trees', 'permuted'} do
  if package.preload['gmoe.gates.' .. sub] then
    for k, v in pairs(require('gmoe.gates.' .. sub)) do M[k] = v end
  end
end

return M
