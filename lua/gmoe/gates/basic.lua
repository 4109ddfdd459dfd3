-- gmoe.gates.basic: the single-router gates of gm.gates: Softmax (temperature), DenseToSparse
-- (EvoMoE), ActivationDTS, TopK (+ noisy), TopP, Hash, Random (THOR) and ExpertChoice. Routing
-- math runs in the C ops topk_gate / topp_gate / threshold_gate (core/ops/gate.def) or in
-- existing differentiable ops; every gate follows the protocol of gm.gates.Gate.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local doc = require 'gmoe.doc'
local G = require 'gmoe.gates'
local Gate = G.Gate

local gm = require 'gmoe' -- registered by init.lua before its submodules load

local M = {}

local function define(name, sig, text, extra)
  local cls = Gate:extend(name)
  M[name] = cls
  doc.add('gm.gates.' .. name, sig, text, extra)
  return cls
end

local function num_or_schedule(gate, key, v, positive)
  local ok = type(v) == 'number' or (type(v) == 'table' and type(v.value) == 'function')
  if not ok then
    error(('gm.gates.%s: %s must be a number or a gm.schedule, got %s'):format(gate, key, type(v)), 4)
  end
  if positive and type(v) == 'number' and not (v > 0) then
    error(('gm.gates.%s: %s must be > 0, got %g'):format(gate, key, v), 4)
  end
  return v
end

local function positive_value(gate, key, v, step)
  local t = G.value(v, step)
  if not (t > 0) then error(('gm.gates.%s: %s must be > 0, got %g at step %d'):format(gate, key, t, step), 3) end
  return t
end

-- Gumbel(0, 1) noise of x's shape and dtype: -log(-log U), U uniform in [1e-10, 1 - 1e-10].
local function gumbel_like(x, gen)
  require('gmoe.errors').check('gumbel_like', 1, 'x', x, 'tensor')
  local u = gm.rand(x.shape, {dtype = x.dtype, generator = gen}) * (1 - 2e-10) + 1e-10
  return -(-(u:log())):log()
end
M.gumbel_like = gumbel_like
doc.add('gm.gates.gumbel_like', 'gm.gates.gumbel_like(x, generator=nil) -> tensor',
  'Standard Gumbel noise of x\'s shape and dtype, -log(-log U) with U uniform clamped to ' ..
  '[1e-10, 1 - 1e-10], drawn from generator (nil: the default generator).',
  {formula = 'g = -log(-log U),  U ~ U(0, 1)'})

-- The dense result: ids 0..E-1 on every row, weights = probs.
local function dense_result(probs, logits, aux)
  local T, E = probs.shape[1], probs.shape[2]
  return G.result {ids = G.dense_ids(T, E), weights = probs, probs = probs, logits = logits, aux = aux or {}, k = E}
end

local ACTIVATIONS = {
  tanh = function(h) return h:tanh() end,
  sigmoid = function(h) return h:sigmoid() end,
  gelu = function(h) return h:gelu() end,
  silu = function(h) return h:silu() end,
  softplus = function(h) return h:softplus() end,
  relu = function(h) return h:relu() end,
  identity = function(h) return h end,
}

-- Learnable temperature: a parameter log_temperature [1] (tau = exp(log_temperature) > 0).
local function temperature_setup(self)
  if self.learn_temperature then
    if type(self.temperature) ~= 'number' then
      error(('gm.gates.%s: learn_temperature needs a number temperature (its initial value), not a schedule'):format(self.__classname), 4)
    end
    self.log_temperature = gm.tensor({math.log(self.temperature)}, {dtype = self.dtype, requires_grad = true})
  end
end

-- logits / tau (learned, scheduled or fixed).
local function temper(self, z, ctx)
  if self.learn_temperature then return z * (-self.log_temperature):exp() end
  local tau = positive_value(self.__classname, 'temperature', self.temperature, self:step(ctx))
  if tau == 1 then return z end
  return z / tau
end

-- ---- Softmax ---------------------------------------------------------------------------------
local Softmax = define('Softmax', 'gm.gates.Softmax{temperature=1, learn_temperature=false, bias=false}',
  'Dense softmax gate with a temperature: every expert gets weight softmax(x W^T / tau) (K = E). ' ..
  'temperature is a number or a gm.schedule (evaluated at ctx.step); learn_temperature=true makes ' ..
  'tau a parameter, stored as log_temperature [1] (tau = exp(log_temperature), so it stays ' ..
  'positive) and initialised from temperature. bias=true adds the router bias beta_0 inside the ' ..
  'division. Returns probs = weights and logits = x W^T (before the temperature).',
  {formula = 'w_i(x) = softmax_i((beta_1i^T x + beta_0i) / tau)',
   paper = 'Nguyen, Akbarian, Ho 2024, "Is Temperature Sample Efficient for Softmax Gaussian MoE?" (ICML); annealed tau as in EvoMoE (Nie et al. 2021)'})
function Softmax:init(o)
  local m = self:options(o, {temperature = 1, learn_temperature = false, bias = false})
  self.temperature = num_or_schedule('Softmax', 'temperature', m.temperature, true)
  self.learn_temperature = m.learn_temperature and true or false
  self.router_bias = m.bias and true or false
  self.dense = true
  Gate.finish(self, m)
end
function Softmax:setup(d, e)
  Gate.setup(self, d, e)
  temperature_setup(self)
  return self
end
function Softmax:forward(x, ctx)
  self:check(x)
  local z = self:logits(x)
  return dense_result(gm.softmax(temper(self, z, ctx), -1), z)
end
function Softmax:extra_repr()
  return ('experts=%s, temperature=%s%s'):format(tostring(self.experts), tostring(self.temperature),
    self.learn_temperature and ' (learned)' or '')
end

-- ---- DenseToSparse (EvoMoE) --------------------------------------------------------------------
local DTS = define('DenseToSparse',
  'gm.gates.DenseToSparse{schedule=gm.schedule.geometric(2.0, 0.3, 10000), threshold=0.001, renormalize=false, noise=true}',
  'EvoMoE\'s dense-to-sparse gate: in training y = softmax((x W^T + g) / tau_t) with Gumbel noise ' ..
  'g = -log(-log U) (from ctx.generator or the gate\'s generator); tau_t = schedule:value(ctx.step) ' ..
  '(a number is a fixed temperature; `temperature` is an alias of schedule) anneals from dense to ' ..
  'sparse. Experts with y > threshold form the active set (at least the top-1); their weights are ' ..
  'the Gumbel gate values y (EvoMoE\'s first option; renormalize=true divides by their sum). In eval ' ..
  '(or noise=false) there is no noise. K = the most experts any token kept (ids -1, weight 0 pad); ' ..
  'gate.k = E (an upper bound). As tau -> 0 the gate becomes top-1. probs = y, logits = x W^T. ' ..
  'Runs threshold_gate.',
  {formula = 'y = softmax((x W^T + Gumbel) / tau_t); active = {e : y_e > threshold}; w_e = y_e on the active set',
   paper = 'Nie et al. 2021, "EvoMoE: An Evolutional MoE Training Framework via Dense-To-Sparse Gate" (code: fairseq/modules/moe/topkgate.py)'})
function DTS:init(o)
  local m = self:options(o, {schedule = false, temperature = false, threshold = 0.001, renormalize = false, noise = true})
  local s = m.schedule or m.temperature or gm.schedule.geometric(2.0, 0.3, 10000)
  self.schedule = num_or_schedule('DenseToSparse', 'schedule', s, true)
  if type(m.threshold) ~= 'number' or not (m.threshold >= 0 and m.threshold < 1) then
    error('gm.gates.DenseToSparse: threshold must be a number in [0, 1), got ' .. tostring(m.threshold), 3)
  end
  self.threshold = m.threshold
  self.renormalize = m.renormalize and true or false
  self.noise = m.noise and true or false
  self.dense = true -- k = E (upper bound; the active set varies per token)
  Gate.finish(self, m)
end
--- gate:temperature(step): the temperature the schedule gives at step.
function DTS:temperature(step) return positive_value('DenseToSparse', 'schedule', self.schedule, step or 0) end
function DTS:forward(x, ctx)
  self:check(x)
  local z = self:logits(x)
  local tau = self:temperature(self:step(ctx))
  local s = z
  if self.training and self.noise then s = s + gumbel_like(z, self:rng(ctx)) end
  s = s / tau
  local w, ids, probs = gm.threshold_gate(s, self.threshold, self.renormalize)
  return G.result {ids = ids, weights = w, probs = probs, logits = z, aux = {}}
end
function DTS:extra_repr()
  return ('experts=%s, schedule=%s, threshold=%g'):format(tostring(self.experts), tostring(self.schedule), self.threshold)
end

-- ---- ActivationDTS ---------------------------------------------------------------------------
local ADTS = define('ActivationDTS',
  'gm.gates.ActivationDTS{activation="tanh", temperature=1, learn_temperature=false, bias=true}',
  'The activation dense-to-sparse gate: the router score goes through a nonlinearity sigma before ' ..
  'the temperature softmax, and the bias beta_0 (a parameter [E] named bias, zeros at init) is added ' ..
  'after the division, which breaks the (beta_1, tau) scale invariance of the plain temperature ' ..
  'gate. activation: "tanh" (default), "sigmoid", "gelu", "silu", "softplus", "relu", "identity" ' ..
  '(relu and identity are positively homogeneous: they keep the slow rates; for comparison) or a ' ..
  'function of a tensor. temperature: number or gm.schedule, or learned (learn_temperature, ' ..
  'log-parameterised as in Softmax). Dense: K = E.',
  {formula = 'w_i(x) = softmax_i(sigma(beta_1i^T x) / tau + beta_0i)',
   paper = 'Nguyen, Akbarian, Ho 2024 (ICML), §activation dense-to-sparse gate (slot of beta_0 as read from the paper)'})
function ADTS:init(o)
  local m = self:options(o, {activation = 'tanh', temperature = 1, learn_temperature = false, bias = true})
  local a = m.activation
  if type(a) == 'string' then
    if not ACTIVATIONS[a] then
      local names = {}
      for k in pairs(ACTIVATIONS) do names[#names + 1] = k end
      table.sort(names)
      error(('gm.gates.ActivationDTS: unknown activation "%s" (%s, or a function)'):format(a, table.concat(names, ', ')), 3)
    end
    self.activation_name, self.act = a, ACTIVATIONS[a]
  elseif type(a) == 'function' then
    self.activation_name, self.act = 'function', a
  else
    error('gm.gates.ActivationDTS: activation must be a name or a function, got ' .. type(a), 3)
  end
  self.temperature = num_or_schedule('ActivationDTS', 'temperature', m.temperature, true)
  self.learn_temperature = m.learn_temperature and true or false
  self.use_bias = m.bias and true or false
  self.dense = true
  Gate.finish(self, m)
end
function ADTS:setup(d, e)
  Gate.setup(self, d, e)
  temperature_setup(self)
  if self.use_bias then self.bias = gm.zeros({e}, {dtype = self.dtype, requires_grad = true}) end
  return self
end
function ADTS:forward(x, ctx)
  self:check(x)
  local z = self:logits(x)
  local s = temper(self, self.act(z), ctx)
  if self.use_bias then s = s + self.bias end
  return dense_result(gm.softmax(s, -1), z)
end
function ADTS:extra_repr()
  return ('experts=%s, activation=%s, temperature=%s'):format(tostring(self.experts), self.activation_name, tostring(self.temperature))
end

-- ---- TopK (+ noisy) --------------------------------------------------------------------------
local TopK = define('TopK', 'gm.gates.TopK{k=2, noisy=false, renormalize=true}',
  'Top-k softmax gate: p = softmax(h) over all E experts, the k largest kept (ties to the lower ' ..
  'index), weights = p on them divided by their sum when renormalize (default; identical to a ' ..
  'softmax over the top-k logits, the TopK sparse softmax gate of §2 and Shazeer\'s gate); ' ..
  'renormalize=false keeps the raw probabilities (Switch / GShard). noisy=true adds Shazeer\'s ' ..
  'tunable noise in training: h = x W^T + eps * softplus(x W_noise^T), eps ~ N(0, 1) from ' ..
  'ctx.generator (or the gate\'s), W_noise a second Linear named noise, zeros at init as in the ' ..
  'paper; in eval h = x W^T. Returns logits = x W^T (clean), probs = softmax(h). Runs topk_gate; ' ..
  'k = E is allowed. No load loss of Shazeer\'s (the MoE layer adds the Switch balance loss).',
  {formula = 'h = xW^T [+ N(0,1) softplus(x W_noise^T)];  w_i = exp(h_i) 1[i in TopK(h)] / sum_{j in TopK(h)} exp(h_j)',
   paper = 'Shazeer et al. 2017 (noisy top-k); Nguyen, Akbarian, Yan, Ho 2024 (ICLR), top-K sparse softmax; Fedus et al. 2021 (Switch, renormalize=false, k=1)'})
function TopK:init(o)
  local m = self:options(o, {k = 2, noisy = false, renormalize = true})
  self.k = G.need_int('TopK', 'k', m.k, 1)
  self.noisy = m.noisy and true or false
  self.renormalize = m.renormalize and true or false
  Gate.finish(self, m)
end
function TopK:setup(d, e)
  if self.k > e then error(('gm.gates.TopK: k=%d is larger than experts=%d'):format(self.k, e), 3) end
  Gate.setup(self, d, e)
  if self.noisy then
    self.noise = gm.nn.Linear{d, e, bias = false, dtype = self.dtype, generator = self.generator}
    gm.nn.init.zeros_(self.noise.weight)
  end
  return self
end
function TopK:forward(x, ctx)
  self:check(x)
  local z = self:logits(x)
  local h = z
  if self.noisy and self.training then
    local eps = gm.randn(z.shape, {dtype = z.dtype, generator = self:rng(ctx)})
    h = z + eps * self.noise(x):softplus()
  end
  local w, ids, probs = gm.topk_gate(h, self.k, self.renormalize)
  return G.result {ids = ids, weights = w, probs = probs, logits = z, aux = {}, k = self.k}
end
function TopK:extra_repr()
  return ('experts=%s, k=%d%s%s'):format(tostring(self.experts), self.k, self.noisy and ', noisy' or '',
    self.renormalize and '' or ', renormalize=false')
end

-- ---- TopP (dynamic routing) --------------------------------------------------------------------
local TopP = define('TopP', 'gm.gates.TopP{p=0.4, dynamic_loss=1e-4, renormalize=false}',
  'Dynamic top-p routing: P = softmax(x W^T), experts sorted by P, the smallest prefix whose ' ..
  'cumulative probability reaches p kept, including the expert that crosses p (so at least one; ' ..
  'p >= 1 keeps all); weights are the raw probabilities P_e of the kept experts (not renormalised, ' ..
  'as the paper\'s released code; renormalize=true divides by their sum). K = the most experts any ' ..
  'token kept (ids -1, weight 0 pad); gate.k = E. r.aux.dynamic = beta * mean_tokens(-sum_e P_e ' ..
  'log P_e), the dynamic (entropy) loss that keeps the router confident (omitted when beta = 0). ' ..
  'Defaults p = 0.4 (the code\'s config) and beta = 1e-4 (from memory of the paper). Runs topp_gate.',
  {formula = 'S(x) = smallest prefix of argsort_desc(P) with sum_{e in S} P_e >= p;  w_e = P_e (e in S);  L_dyn = beta * mean_x H(P(x))',
   paper = 'Huang, An et al. 2024, "Harder Tasks Need More Experts: Dynamic Routing in MoE Models" (ACL); code ZhenweiAn/Dynamic_MoE'})
function TopP:init(o)
  local m = self:options(o, {p = 0.4, dynamic_loss = 1e-4, renormalize = false})
  if type(m.p) ~= 'number' or not (m.p >= 0 and m.p <= 1) then
    error('gm.gates.TopP: p must be a number in [0, 1], got ' .. tostring(m.p), 3)
  end
  if type(m.dynamic_loss) ~= 'number' or not (m.dynamic_loss >= 0) then
    error('gm.gates.TopP: dynamic_loss must be a number >= 0, got ' .. tostring(m.dynamic_loss), 3)
  end
  self.p, self.beta = m.p, m.dynamic_loss
  self.renormalize = m.renormalize and true or false
  self.dense = true
  Gate.finish(self, m)
end
function TopP:forward(x, ctx)
  self:check(x)
  local z = self:logits(x)
  local w, ids, probs = gm.topp_gate(z, self.p, self.renormalize)
  local aux = {}
  if self.beta > 0 then
    local ent = -(probs * gm.log_softmax(z, -1)):sum(-1):mean()
    aux.dynamic = ent * self.beta
  end
  return G.result {ids = ids, weights = w, probs = probs, logits = z, aux = aux}
end
function TopP:extra_repr() return ('experts=%s, p=%g, dynamic_loss=%g'):format(tostring(self.experts), self.p, self.beta) end

-- ---- Hash ------------------------------------------------------------------------------------
local Hash = define('Hash', 'gm.gates.Hash{hash="random", frequencies=nil}',
  'Fixed routing by token id (no router, no parameters): token v (ctx.token_ids, i32 [T]) goes to ' ..
  'one expert with weight 1 (K = 1). hash="random": a fixed multiplicative hash, ' ..
  'e(v) = ((v * 2654435761) mod 2^32) mod E. hash="balanced": with frequencies (a Lua array or a ' ..
  'tensor of counts per token id, index 0 = id 0) a precomputed table that balances that ' ..
  'frequency: ids sorted by count (descending), each given to the least-loaded expert so far ' ..
  '(greedy longest-processing-time; ids outside the table fall back to v mod E); without ' ..
  'frequencies uniform bucketing e(v) = v mod E, exactly balanced on a uniform stream over a ' ..
  'vocabulary that is a multiple of E. x only gives T and the weights\' dtype. probs and logits nil.',
  {formula = 'e(v) = h(v);  w = 1',
   paper = 'Roller, Sukhbaatar, Szlam, Weston 2021, "Hash Layers for Large Sparse Models" (NeurIPS)'})
function Hash:init(o)
  local m = self:options(o, {hash = 'random', frequencies = false})
  if m.hash ~= 'random' and m.hash ~= 'balanced' then
    error('gm.gates.Hash: hash must be "random" or "balanced", got ' .. tostring(m.hash), 3)
  end
  self.hash = m.hash
  if m.frequencies and m.hash ~= 'balanced' then
    error('gm.gates.Hash: frequencies are for hash="balanced"', 3)
  end
  local f = m.frequencies
  if f and gm.is_tensor(f) then f = f:to('f64'):totable() end
  if f and type(f) ~= 'table' then error('gm.gates.Hash: frequencies must be an array or a tensor', 3) end
  self.frequencies = f or nil
  self.uses_router = false
  self.k = 1
  Gate.finish(self, m)
end
function Hash:setup(d, e)
  Gate.setup(self, d, e)
  self.k = 1
  if self.frequencies then -- greedy LPT: heaviest ids first, each to the least-loaded expert
    local f, order = self.frequencies, {}
    for i = 1, #f do order[i] = i end
    table.sort(order, function(a, b) if f[a] ~= f[b] then return f[a] > f[b] end return a < b end)
    local load, tbl = {}, {}
    for j = 1, e do load[j] = 0 end
    for _, i in ipairs(order) do
      local best = 1
      for j = 2, e do if load[j] < load[best] then best = j end end
      load[best] = load[best] + f[i]
      tbl[i - 1] = best - 1
    end
    self.table = tbl
  end
  return self
end
--- gate:route(v): the expert of token id v (a Lua integer).
function Hash:route(v)
  local E = self.experts
  if self.hash == 'random' then return ((v * 2654435761) & 0xffffffff) % E end
  local t = self.table and self.table[v]
  if t then return t end
  return v % E
end
function Hash:forward(x, ctx)
  local T = x.shape[1]
  local tok = ctx and ctx.token_ids
  if not gm.is_tensor(tok) then error('gm.gates.Hash: needs ctx.token_ids (an i32 tensor [T])', 2) end
  if tok.dtype ~= 'i32' or tok:numel() ~= T then
    error(('gm.gates.Hash: ctx.token_ids must be i32 with %d elements, got %s [%s]'):format(T, tok.dtype,
      table.concat(tok.shape, ', ')), 2)
  end
  local v, ids = tok:reshape{T}:totable(), {}
  for t = 1, T do ids[t] = {self:route(v[t])} end
  local idt = T > 0 and gm.tensor(ids, {dtype = 'i32'}) or gm.zeros({0, 1}, {dtype = 'i32'})
  return G.result {ids = idt, weights = gm.ones({T, 1}, {dtype = x.dtype}), aux = {}, k = 1}
end
function Hash:extra_repr() return ('experts=%s, hash=%s'):format(tostring(self.experts), self.hash) end

-- ---- Random (THOR) ---------------------------------------------------------------------------
local Random = define('Random', 'gm.gates.Random{level="batch", eval_level="token"}',
  'THOR\'s stochastic experts: no router; each forward picks experts uniformly at random with ' ..
  'weight 1 (K = 1). In training level="batch" (THOR\'s rule: one expert for the whole batch per ' ..
  'forward) or "token" (one per token); in eval eval_level="token" (THOR\'s default inference) or ' ..
  '"batch". Draws come from ctx.generator, else the gate\'s generator, else the default one. ' ..
  'THOR trains with two forwards (independent draws) and loss = CE1 + CE2 + alpha * ' ..
  'gm.gates.Random.consistency_loss(logits1, logits2).',
  {formula = 'e ~ U{0..E-1} (per batch in training);  w = 1',
   paper = 'Zuo et al. 2022, "Taming Sparsely Activated Transformer with Stochastic Experts" (THOR, ICLR)'})
function Random:init(o)
  local m = self:options(o, {level = 'batch', eval_level = 'token'})
  for _, key in ipairs {'level', 'eval_level'} do
    if m[key] ~= 'batch' and m[key] ~= 'token' then
      error(('gm.gates.Random: %s must be "batch" or "token", got %s'):format(key, tostring(m[key])), 3)
    end
  end
  self.level, self.eval_level = m.level, m.eval_level
  self.uses_router = false
  self.k = 1
  Gate.finish(self, m)
end
function Random:setup(d, e)
  Gate.setup(self, d, e)
  self.k = 1
  return self
end
function Random:forward(x, ctx)
  local T, E = x.shape[1], self.experts
  if not E then error('gm.gates.Random: call setup(d_model, experts) first', 2) end
  local level = self.training and self.level or self.eval_level
  local gen = self:rng(ctx)
  local ids
  if level == 'batch' then
    local e = gm.randint(0, E, {1}, {generator = gen}):totable()[1]
    ids = gm.full({T, 1}, e, {dtype = 'i32'})
  else
    ids = gm.randint(0, E, {T, 1}, {generator = gen})
  end
  return G.result {ids = ids, weights = gm.ones({T, 1}, {dtype = x.dtype}), aux = {}, k = 1}
end
function Random:extra_repr() return ('experts=%s, level=%s'):format(tostring(self.experts), self.level) end

--- Random.consistency_loss(logits_a, logits_b): THOR's symmetric KL between the two passes.
function Random.consistency_loss(a, b, reduction)
  return gm.symmetric_kl(a, b, reduction or 'mean')
end
doc.add('gm.gates.Random.consistency_loss', 'gm.gates.Random.consistency_loss(logits_a, logits_b, reduction="mean")',
  'THOR\'s consistency regulariser between the output logits of two forward passes with ' ..
  'independent expert draws: gm.symmetric_kl (softmax over the last dim, gradients to both).',
  {formula = '1/2 (KL(p_a || p_b) + KL(p_b || p_a))', paper = 'Zuo et al. 2022 (THOR)'})

-- ---- ExpertChoice ----------------------------------------------------------------------------
local EC = define('ExpertChoice', 'gm.gates.ExpertChoice{capacity=nil, capacity_factor=2}',
  'Expert-choice routing: S = softmax(x W^T) over experts [T, E]; each expert picks the C tokens ' ..
  'with the highest S[:, e] (ties to the lower token index), C = capacity, or ceil(capacity_factor * ' ..
  'T / E) (EC-CF2 by default), clamped to [1, T]. Returned token-choice shaped: ids [T, K] with each ' ..
  'token\'s experts in increasing id order, K = the most experts any token got (at least 1), padding ' ..
  'id -1 with weight 0; weights = S[t, e] (differentiable, through gather); a token no expert picks ' ..
  'has only padding (the layer\'s residual carries it). gate.k = E (upper bound).',
  {formula = 'S = softmax(X W^T);  I = TopC over tokens of S^T (per expert);  w[t, e] = S[t, e] for (e, t) in I',
   paper = 'Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing" (NeurIPS)'})
function EC:init(o)
  local m = self:options(o, {capacity = false, capacity_factor = 2})
  if m.capacity then self.capacity = G.need_int('ExpertChoice', 'capacity', m.capacity, 1) end
  if type(m.capacity_factor) ~= 'number' or not (m.capacity_factor > 0) then
    error('gm.gates.ExpertChoice: capacity_factor must be a number > 0, got ' .. tostring(m.capacity_factor), 3)
  end
  self.capacity_factor = m.capacity_factor
  self.dense = true
  Gate.finish(self, m)
end
--- gate:tokens_per_expert(T): the capacity C for T tokens.
function EC:tokens_per_expert(T)
  local C = self.capacity or math.ceil(self.capacity_factor * T / self.experts)
  return math.max(1, math.min(T, C))
end
function EC:forward(x, ctx)
  self:check(x)
  local T, E = x.shape[1], self.experts
  local z = self:logits(x)
  local probs = gm.softmax(z, -1)
  if T == 0 then
    return G.result {ids = gm.zeros({0, 1}, {dtype = 'i32'}), weights = gm.zeros({0, 1}, {dtype = x.dtype}),
                     probs = probs, logits = z, aux = {}, k = 1}
  end
  local C = self:tokens_per_expert(T)
  local _, tok = gm.topk(probs:detach():transpose(0, 1), C, -1)
  local picks, per = tok:totable(), {}
  for t = 1, T do per[t] = {} end
  local K = 1
  for e = 1, E do
    for _, t in ipairs(picks[e]) do
      local l = per[t + 1]
      l[#l + 1] = e - 1
      if #l > K then K = #l end
    end
  end
  local ids, idc, mask = {}, {}, {}
  for t = 1, T do
    local l, a, b, c = per[t], {}, {}, {}
    for j = 1, K do
      local e = l[j]
      a[j], b[j], c[j] = e or -1, e or 0, e and 1 or 0
    end
    ids[t], idc[t], mask[t] = a, b, c
  end
  local w = gm.gather(probs, 1, gm.tensor(idc, {dtype = 'i32'})) * gm.tensor(mask, {dtype = x.dtype})
  return G.result {ids = gm.tensor(ids, {dtype = 'i32'}), weights = w, probs = probs, logits = z, aux = {}, k = K}
end
function EC:extra_repr()
  return ('experts=%s, %s'):format(tostring(self.experts), self.capacity and ('capacity=' .. self.capacity)
    or ('capacity_factor=' .. self.capacity_factor))
end

return M
