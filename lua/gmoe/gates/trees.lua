-- gmoe.gates.trees: the smooth-step gates, DSelect-k (Hazimeh et al., NeurIPS 2021) and COMET
-- (Ibrahim et al., KDD 2023), on the fused C ops gm.dselect_k and gm.comet_gate (which apply
-- gm.smooth_step inside and have explicit backward kernels). Both are dense-shaped by default:
-- ids = 0..E-1 for every token, weights [T, E] with exact zeros for unselected experts (the
-- selected set is where weight > 0; once the smooth-steps saturate at most k are nonzero).
-- With sparse=true they return the k largest weights (exact once saturated; a truncation
-- before). The router runs in the gate's dtype (f32 default, f64 for gradient checks).
local error = require('gmoe.errors').raise -- errors point at the caller's line
local doc = require 'gmoe.doc'
local G = require 'gmoe.gates'
local Gate = G.Gate
local init = require 'gmoe.nn.initializers'

local gm = require 'gmoe' -- registered by init.lua before its submodules load

local M = {}

local function nbits(E)
  local m = 0
  while (1 << m) < E do m = m + 1 end
  return m
end

local function check_num(gate, key, v, positive)
  if type(v) == 'number' then
    if v ~= v or (positive and v <= 0) or (not positive and v < 0) then
      error(('gm.gates.%s: %s must be a number %s 0, got %s'):format(gate, key, positive and '>' or '>=', tostring(v)), 4)
    end
  elseif not (type(v) == 'table' and v.value) then
    error(('gm.gates.%s: %s must be a number or a gm.schedule, got %s'):format(gate, key, type(v)), 4)
  end
  return v
end

-- A free parameter of shape `shape`, uniform in [-b, b].
local function uparam(shape, dtype, b, gen)
  local t = gm.empty(shape, {dtype = dtype, requires_grad = true})
  init.uniform_(t, -b, b, {generator = gen})
  return t
end

-- A Linear(d, out) with weight and bias uniform in [-bw, bw] and [-bb, bb].
local function ulinear(self, d, out, bw, bb)
  local lin = gm.nn.Linear{d, out, bias = true, dtype = self.dtype, generator = self.generator}
  init.uniform_(lin.weight, -bw, bw, {generator = self.generator})
  if bb > 0 then init.uniform_(lin.bias, -bb, bb, {generator = self.generator})
  else init.zeros_(lin.bias) end
  return lin
end

-- The gate result from dense weights a [T, E] (or [E] for static gates, expanded to T).
local function result(self, a, T, aux)
  local E = self.experts
  if a:dim() == 1 then a = a:reshape{1, E}:expand{T, E} end
  if self.sparse then
    local w, ids = a:topk(self.nsel, 1)
    return G.result {ids = ids, weights = w, probs = a, aux = aux, k = self.nsel}
  end
  return G.result {ids = G.dense_ids(T, E), weights = a, probs = a, aux = aux, k = E}
end

-- -sum p log(p + 1e-6) over all elements (the papers' entropy, eps 1e-6).
local function ent(p) return -(p * (p + 1e-6):log()):sum() end

-- ---- DSelect-k ------------------------------------------------------------------------------

local DSelectK = Gate:extend('DSelectK')
M.DSelectK = DSelectK

function DSelectK:init(o)
  local m = self:options(o, {k = 2, gamma = 1, entropy = 0, static = false, sparse = false})
  self.nsel = G.need_int('DSelectK', 'k', m.k, 1)
  self.gamma = check_num('DSelectK', 'gamma', m.gamma, true)
  if type(self.gamma) ~= 'number' then error('gm.gates.DSelectK: gamma must be a number', 3) end
  self.entropy = check_num('DSelectK', 'entropy', m.entropy, false)
  self.static, self.sparse = m.static and true or false, m.sparse and true or false
  self.dense = not self.sparse
  self.k = self.sparse and self.nsel or nil
  self.uses_router = false
  self:finish(m)
end

function DSelectK:setup(d_model, experts)
  Gate.setup(self, d_model, experts)
  local E, k, g = self.experts, self.nsel, self.gamma
  if E < 2 then error('gm.gates.DSelectK: needs experts >= 2, got ' .. E, 3) end
  if self.sparse and k > E then error(('gm.gates.DSelectK: k = %d > experts = %d'):format(k, E), 3) end
  self.bits = nbits(E)
  if self.static then
    self.z = uparam({k, self.bits}, self.dtype, g / 100, self.generator)
    self.w = uparam({k}, self.dtype, 0.05, self.generator)
  else
    self.z_router = ulinear(self, d_model, k * self.bits, g / 100, g / 100)
    self.w_router = ulinear(self, d_model, k, 0.05, 0.05)
  end
  return self
end

--- Selector weights: a [T, E] (or [E] static), r [T, k, E] (or [k, E]).
function DSelectK:selectors(x)
  local T = x.shape[1]
  if self.static then return gm.dselect_k(self.z, self.w, self.experts, self.gamma) end
  local z = self.z_router(x):reshape{T, self.nsel, self.bits}
  return gm.dselect_k(z, self.w_router(x), self.experts, self.gamma)
end

function DSelectK:forward(x, ctx)
  self:check(x)
  local a, r = self:selectors(x)
  local aux = {}
  local lam = G.value(self.entropy, self:step(ctx))
  if lam ~= 0 then aux.entropy_reg = ent(r) * lam end
  if self.experts & (self.experts - 1) ~= 0 then
    aux.reach = (r:sum(-1) + 1e-12):pow(-1):sum()   -- sum over tokens, selectors of 1/sum_e r
  end
  return result(self, a, x.shape[1], aux)
end

function DSelectK:extra_repr()
  return ('experts=%s, k=%d, gamma=%g%s%s'):format(tostring(self.experts), self.nsel, self.gamma,
    self.static and ', static' or '', self.sparse and ', sparse' or '')
end

doc.add('gm.gates.DSelectK', 'gm.gates.DSelectK{k=2, gamma=1, entropy=0, static=false, sparse=false}',
  'DSelect-k: k single-expert selectors with binary codes over m = ceil(log2 E) smooth-stepped ' ..
  'logits, mixed by a softmax over the selectors (fused C op gm.dselect_k). Per-example: z = Linear(x) ' ..
  '[T, k*m] (weights and bias uniform +-gamma/100, dense start), w = Linear(x) [T, k]; static=true: z [k, m] ' ..
  'and w [k] are free parameters (same weights for every token). Returns ids 0..E-1 with weights [T, E] ' ..
  '(zero for unselected experts; at most k nonzero once saturated), or with sparse=true the k largest. ' ..
  'aux.entropy_reg = lambda * sum over tokens and selectors of -sum_e r_s(e) log(r_s(e) + 1e-6) (summed, ' ..
  'not averaged, over the batch as in the paper\'s code; entropy may be a gm.schedule). For E not a ' ..
  'power of two the unreachable codes lose mass (weights sum to < 1 until the selectors settle on ' ..
  'reachable codes) and aux.reach = sum over tokens and selectors of 1 / sum_e r_s(e) (unweighted, as in ' ..
  'the paper\'s code) pushes them back. Needs E >= 2. Bit j of expert e is (e >> j) & 1.',
  {formula = 'S(t) = 0 (t <= -g/2), 1 (t >= g/2), -2t^3/g^3 + 3t/(2g) + 1/2; r_s(e) = prod_j (bit_j(e) ? S(z_sj) : 1 - S(z_sj)); a_e = sum_s softmax(w)_s r_s(e)',
   paper = 'Hazimeh et al., DSelect-k: Differentiable Selection in the Mixture of Experts, NeurIPS 2021'})

-- ---- COMET ----------------------------------------------------------------------------------

local COMET = Gate:extend('COMET')
M.COMET = COMET

function COMET:init(o)
  local m = self:options(o, {k = 2, gamma = 1, entropy = 0, static = false, sparse = false})
  self.nsel = G.need_int('COMET', 'k', m.k, 1)
  self.gamma = check_num('COMET', 'gamma', m.gamma, true)
  if type(self.gamma) ~= 'number' then error('gm.gates.COMET: gamma must be a number', 3) end
  self.entropy = check_num('COMET', 'entropy', m.entropy, false)
  self.static, self.sparse = m.static and true or false, m.sparse and true or false
  self.dense = not self.sparse
  self.k = self.sparse and self.nsel or nil
  self.uses_router = false
  self:finish(m)
end

function COMET:setup(d_model, experts)
  Gate.setup(self, d_model, experts)
  local E, k, g = self.experts, self.nsel, self.gamma
  if E < 2 then error('gm.gates.COMET: needs experts >= 2, got ' .. E, 3) end
  if self.sparse and k > E then error(('gm.gates.COMET: k = %d > experts = %d'):format(k, E), 3) end
  if self.static then
    self.nodes = uparam({k, E - 1}, self.dtype, g / 100, self.generator)
    self.leaves = uparam({k, E}, self.dtype, 0.05, self.generator)
  else
    self.node_router = ulinear(self, d_model, k * (E - 1), g / 100, g / 100)
    self.leaf_router = ulinear(self, d_model, k * E, 0.05, 0)
  end
  return self
end

--- Tree outputs: g [T, E] (or [E] static), mu [T, k, E] (or [k, E]) reach probabilities.
function COMET:trees(x)
  if self.static then return gm.comet_gate(self.nodes, self.leaves, self.gamma) end
  local T, k, E = x.shape[1], self.nsel, self.experts
  local nodes = self.node_router(x):reshape{T, k, E - 1}
  local leaves = self.leaf_router(x):reshape{T, k, E}
  return gm.comet_gate(nodes, leaves, self.gamma)
end

function COMET:forward(x, ctx)
  self:check(x)
  local g, mu = self:trees(x)
  local aux = {}
  local lam = G.value(self.entropy, self:step(ctx))
  if lam ~= 0 then
    local n = mu:dim() == 3 and mu.shape[1] or 1
    aux.entropy_reg = ent(mu) * (lam / n)
  end
  return result(self, g, x.shape[1], aux)
end

COMET.extra_repr = DSelectK.extra_repr

doc.add('gm.gates.COMET', 'gm.gates.COMET{k=2, gamma=1, entropy=0, static=false, sparse=false}',
  'COMET tree gate: k soft binary trees with E leaves (internal nodes 0..E-2 in heap order, children ' ..
  '2v+1 (left) / 2v+2, leaf l = heap node E-1+l, so E need not be a power of two), node v of tree t goes ' ..
  'left with p = smooth_step(z_tv . x + c_tv, gamma); one softmax over all (tree, leaf) pairs of the leaf ' ..
  'score plus the log reach probability (fused C op gm.comet_gate). Per-example: node logits = Linear(x) ' ..
  '[T, k*(E-1)] (uniform +-gamma/100), leaf scores = Linear(x) [T, k*E] (weights uniform +-0.05, bias 0); ' ..
  'static=true: free parameters [k, E-1] and [k, E]. Returns ids 0..E-1 with weights [T, E] (sum 1; at ' ..
  'most k nonzero once the smooth-steps saturate) or, sparse=true, the k largest. aux.entropy_reg = lambda * ' ..
  'mean over tokens of sum_{t,l} -mu_tl log(mu_tl + 1e-6) (entropy may be a gm.schedule). Needs E >= 2.',
  {formula = 'g_e(x) = sum_t mu_te(x) exp(a_te(x)) / sum_{t,l} mu_tl(x) exp(a_tl(x)), mu_tl = prod over the path of p or 1-p',
   paper = 'Ibrahim et al., COMET: Learning Cardinality Constrained Mixture of Experts with Trees and Local Search, KDD 2023'})

return M
