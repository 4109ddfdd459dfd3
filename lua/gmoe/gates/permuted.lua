-- gmoe.gates.permuted: COMET's permutation-based local search (Ibrahim et al., KDD 2023 §4.2)
-- for any gate: gm.gates.Permuted(gate, opts) learns a soft permutation P of the experts with
-- Gumbel-Sinkhorn in log space (C op gm.sinkhorn) under an annealed temperature, applies it to
-- the inner gate's expert weights (g' = normalise(g P)), and :freeze() replaces P by the hard
-- permutation from the Hungarian algorithm (gm.gates.hungarian, Kuhn-Munkres, O(n^3)).
local error = require('gmoe.errors').raise -- errors point at the caller's line
local doc = require 'gmoe.doc'
local G = require 'gmoe.gates'
local Gate = G.Gate
local init = require 'gmoe.nn.initializers'

local gm = require 'gmoe' -- registered by init.lua before its submodules load

local M = {}

-- ---- Hungarian algorithm --------------------------------------------------------------------

--- hungarian(cost) -> assignment, total: cost an n x m table of rows (n <= m) or a 2-D tensor;
-- assignment[i+1] = the 0-based column of row i; minimises the sum of the chosen costs.
-- Kuhn-Munkres with potentials (shortest augmenting paths), O(n^2 m).
function M.hungarian(cost)
  if gm.is_tensor(cost) then
    if cost:dim() ~= 2 then error('gm.gates.hungarian: cost must be 2-D, got ' .. cost:dim() .. '-D', 2) end
    cost = cost:to('f64'):totable()
  end
  if type(cost) ~= 'table' then error('gm.gates.hungarian: cost must be a table of rows or a tensor', 2) end
  local n = #cost
  if n == 0 then return {}, 0 end
  local m = #cost[1]
  if m < n then error(('gm.gates.hungarian: needs rows <= columns, got %d x %d'):format(n, m), 2) end
  for i = 1, n do
    if type(cost[i]) ~= 'table' or #cost[i] ~= m then error('gm.gates.hungarian: rows must all have ' .. m .. ' numbers', 2) end
    for j = 1, m do
      local v = cost[i][j]
      if type(v) ~= 'number' or v ~= v or v == math.huge or v == -math.huge then
        error(('gm.gates.hungarian: cost[%d][%d] must be a finite number, got %s'):format(i - 1, j - 1, tostring(v)), 2)
      end
    end
  end
  local INF = math.huge
  local u, v, p, way = {}, {}, {}, {}
  for i = 0, n do u[i] = 0 end
  for j = 0, m do v[j], p[j], way[j] = 0, 0, 0 end
  for i = 1, n do
    p[0] = i
    local j0 = 0
    local minv, used = {}, {}
    for j = 0, m do minv[j], used[j] = INF, false end
    repeat
      used[j0] = true
      local i0, delta, j1 = p[j0], INF, 0
      for j = 1, m do
        if not used[j] then
          local cur = cost[i0][j] - u[i0] - v[j]
          if cur < minv[j] then minv[j], way[j] = cur, j0 end
          if minv[j] < delta then delta, j1 = minv[j], j end
        end
      end
      for j = 0, m do
        if used[j] then u[p[j]] = u[p[j]] + delta; v[j] = v[j] - delta
        else minv[j] = minv[j] - delta end
      end
      j0 = j1
    until p[j0] == 0
    repeat
      local j1 = way[j0]
      p[j0] = p[j1]
      j0 = j1
    until j0 == 0
  end
  local a, total = {}, 0
  for j = 1, m do
    if p[j] ~= 0 then a[p[j]] = j - 1; total = total + cost[p[j]][j] end
  end
  return a, total
end

doc.add('gm.gates.hungarian', 'gm.gates.hungarian(cost) -> assignment, total',
  'Minimum-cost assignment (Kuhn-Munkres / Hungarian algorithm with potentials, O(n^2 m)) of an n x m ' ..
  'cost matrix, n <= m, given as a Lua table of rows or a 2-D tensor. assignment is a Lua array with ' ..
  'assignment[i+1] = the 0-based column given to row i (distinct columns); total is the summed cost. ' ..
  'For a maximum, pass the negated matrix (Permuted:freeze uses -log P).',
  {formula = 'min over injections s of sum_i cost[i][s(i)]', paper = 'Kuhn 1955; Munkres 1957'})

-- ---- Permuted -------------------------------------------------------------------------------

local Permuted = Gate:extend('Permuted')
M.Permuted = Permuted

local DEFAULTS = {steps = 1000, tau = false, tau0 = 1e-3, tau1 = 1e-7, iters0 = 20, iters1 = 150,
                  noise = 0, entropy = 1e-4, auto_freeze = true}

function Permuted:init(gate, o)
  if not (type(gate) == 'table' and Gate:is_instance(gate)) then
    error('gm.gates.Permuted(gate, opts): gate must be a gm.gates gate', 3)
  end
  local m = self:options(o, DEFAULTS)
  self.inner = gate
  self.steps = G.need_int('Permuted', 'steps', m.steps, 1)
  self.iters0 = G.need_int('Permuted', 'iters0', m.iters0, 1)
  self.iters1 = G.need_int('Permuted', 'iters1', m.iters1, 1)
  for _, key in ipairs {'tau0', 'tau1'} do
    if type(m[key]) ~= 'number' or not (m[key] > 0) then
      error(('gm.gates.Permuted: %s must be a number > 0, got %s'):format(key, tostring(m[key])), 3)
    end
  end
  -- tau: a schedule (or number); default log-linear tau0 -> tau1 over the window (paper §4.2)
  local sched = gm.schedule
  self.tau = m.tau or sched.geometric(m.tau0, m.tau1, self.steps)
  self.iters = sched.linear(self.iters0, self.iters1, self.steps)
  self.noise, self.entropy, self.auto_freeze = m.noise, m.entropy, m.auto_freeze
  self.frozen = false
  self.uses_router = false
  self.dense = true
  if gate.experts then self:setup(gate.d_model, gate.experts) else self:finish(m) end
end

function Permuted:setup(d_model, experts)
  if self.inner.experts ~= experts or self.inner.d_model ~= d_model then self.inner:setup(d_model, experts) end
  Gate.setup(self, d_model, experts)
  local E = self.experts
  self.log_weights = gm.empty({E, E}, {dtype = self.dtype, requires_grad = true})
  init.uniform_(self.log_weights, -0.05, 0.05, {generator = self.generator})
  return self
end

-- log P = sinkhorn((L + noise * Gumbel) / tau, iters) at step.
function Permuted:log_perm(step, noise)
  local L = self.log_weights
  if noise and noise ~= 0 then
    local u = gm.rand(L.shape, {dtype = L.dtype, generator = self.generator}):clamp(1e-20, 1)
    L = L + (-(-(u:log())):log()) * noise
  end
  local tau = G.value(self.tau, step)
  local it = math.max(1, math.floor(self.iters:value(step) + 0.5))
  return gm.sinkhorn(L * (1 / tau), it)
end

--- Permuted:freeze(): fix the hard permutation (Hungarian on -log P at the window's end, no noise).
-- Afterwards forward maps the inner gate's ids through it (sparse again). Returns the permutation
-- (assignment[i+1] = new id of inner expert i).
function Permuted:freeze()
  if self.frozen then return self.perm end
  local lp = gm.no_grad(function() return self:log_perm(self.steps, 0) end)
  local perm = M.hungarian((-lp):to('f64'):totable())
  self.perm, self.frozen = perm, true
  local inv, shifted = {}, {-1}
  for i, j in ipairs(perm) do inv[j + 1] = i - 1; shifted[i + 1] = j end
  self.inv_perm = gm.tensor(inv, {dtype = 'i32'})
  self.perm_shifted = gm.tensor(shifted, {dtype = 'i32'}) -- [E + 1]: id + 1 -> new id (padding -1 stays)
  self.k = self.inner.k
  self.dense = false
  return perm
end

local function dense_weights(r, E)
  local T, K = r.ids.shape[1], r.ids.shape[2]
  local oh = gm.one_hot(r.ids, E, r.weights.dtype)  -- [T, K, E], no gradient (a constant mask)
  return (oh * r.weights:reshape{T, K, 1}):sum(1)
end

function Permuted:forward(x, ctx)
  local step = self:step(ctx)
  if not self.frozen and self.auto_freeze and ctx and ctx.step and ctx.step >= self.steps then self:freeze() end
  local r = self.inner:forward(x, ctx)
  local E = self.experts
  local aux = {}
  for k, v in pairs(r.aux or {}) do aux[k] = v end
  if self.frozen then
    local ids = self.perm_shifted:index_select(0, (r.ids + 1):reshape {-1}):reshape(r.ids.shape)
    local out = {ids = ids, weights = r.weights, aux = aux, k = r.k}
    if r.probs then out.probs = r.probs:index_select(1, self.inv_perm) end
    if r.logits then out.logits = r.logits:index_select(1, self.inv_perm) end
    return G.result(out)
  end
  local lp = self:log_perm(step, self.noise)
  local P = lp:exp()
  local g = dense_weights(r, E):matmul(P)
  g = g / g:sum(1, true)
  local lam = G.value(self.entropy, step)
  if lam ~= 0 then
    local rowlp = lp - lp:logsumexp(1, true)
    aux.perm_entropy = (-(P * lp):sum() - (rowlp:exp() * rowlp):sum()) * lam
  end
  local out = {ids = G.dense_ids(x.shape[1], E), weights = g, aux = aux, k = E}
  if r.probs then out.probs = r.probs:matmul(P) end
  return G.result(out)
end

function Permuted:extra_repr()
  return ('experts=%s, steps=%d%s'):format(tostring(self.experts), self.steps, self.frozen and ', frozen' or '')
end

doc.add('gm.gates.Permuted', 'gm.gates.Permuted(gate, {steps=1000, tau=nil, tau0=1e-3, tau1=1e-7, iters0=20, iters1=150, noise=0, entropy=1e-4, auto_freeze=true})',
  'Permutation local search around any gate (COMET §4.2): trainable log-weights L [E, E] (uniform +-0.05) ' ..
  'give a soft permutation P = exp(sinkhorn((L + noise * Gumbel) / tau, iters)) computed in log space; the ' ..
  'inner gate\'s expert weights g [T, E] (scattered from its ids/weights) become g P / sum(g P) with ids ' ..
  '0..E-1 (dense while learning). tau follows a gm.schedule (default geometric = log-linear tau0 -> tau1 ' ..
  'over steps), iters linear iters0 -> iters1. aux.perm_entropy = entropy * (H(P) + H(row-normalised P)) ' ..
  'plus the inner gate\'s aux. :freeze() (automatic at ctx.step >= steps when auto_freeze) takes the hard ' ..
  'permutation by gm.gates.hungarian on -log P (tau1, iters1, no noise) and afterwards maps the inner ids ' ..
  'through it (inner expert i -> perm[i+1]), keeping the inner gate\'s sparsity; probs/logits are permuted.',
  {formula = "g'(x) = normalise(g(x) P), P = Sinkhorn((L + eps*Gumbel)/tau); hard P = argmax assignment of log P",
   paper = 'Ibrahim et al., COMET, KDD 2023 §4.2; Mena et al., Gumbel-Sinkhorn networks, ICLR 2018'})

return M
