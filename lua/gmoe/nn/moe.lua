-- gmoe.nn.moe: gm.nn.MoE, the sparse Mixture-of-Experts feed-forward layer, and
-- gm.moe.routing_change. A gate (gm.gates.*, a function, or a fixed routing) picks K experts
-- per token; the C ops moe_dispatch (counting sort by expert, capacity), expert_mm (one gemm
-- per expert with tokens) and moe_combine (weighted scatter-add back to token order) run the
-- experts, whose weights are stacked [E, ...] tensors. Expert ids past the FFN experts are the
-- MoE++ zero-computation experts (constant, copy, zero, in that order); shared experts
-- (DeepSeekMoE) see every token. forward returns the MoE output (to be ADDED to the residual
-- stream by the caller), the auxiliary losses, and routing statistics.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local module = require 'gmoe.nn.module'
local init = require 'gmoe.nn.initializers'
local layers = require 'gmoe.nn.layers'

local Module, is_module = module.Module, module.is_module

local M = {}

-- ---- options --------------------------------------------------------------------------------
local DEFAULTS = {
  d_model = false, d_ff = false, experts = false, gate = false, activation = 'gelu',
  capacity_factor = false, shared_experts = 0, shared_d_ff = false, zero_experts = 0,
  copy_experts = 0, constant_experts = 0, bias = false, balance = 'all', dtype = 'f32',
  generator = false,
}

local function options(...)
  local a = table.pack(...)
  local o = {}
  if a.n == 1 and type(a[1]) == 'table' and not is_module(a[1]) then
    for k, v in pairs(a[1]) do o[k] = v end
  else
    o.d_model, o.d_ff, o.experts = a[1], a[2], a[3]
    if type(a[4]) == 'table' then for k, v in pairs(a[4]) do o[k] = v end end
  end
  for i = 1, 3 do
    local k = ({'d_model', 'd_ff', 'experts'})[i]
    if o[i] ~= nil then o[k], o[i] = o[i], nil end
  end
  for k in pairs(o) do
    if DEFAULTS[k] == nil then
      local names = {}
      for n in pairs(DEFAULTS) do names[#names + 1] = n end
      table.sort(names)
      error(('gm.nn.MoE: unknown option %s (options: %s)'):format(tostring(k), table.concat(names, ', ')), 4)
    end
  end
  return o
end

local need_int = layers._helpers.need_int -- need_int(layer, key, v, min)

local ACTS = {
  gelu = function(h) return h:gelu() end,
  relu = function(h) return h:relu() end,
  silu = function(h) return h:silu() end,
  tanh = function(h) return h:tanh() end,
  identity = function(h) return h end,
}

-- ---- a minimal top-k gate (used when gm.gates is absent) --------------------------------
-- Router Linear(d_model, E, no bias) -> softmax -> top-k, weights renormalised over the k;
-- returns the gate result table of the gm.gates protocol (see ?gm.gates.Gate).
local TopKRouter = Module:extend('MoETopKRouter')
M.TopKRouter = TopKRouter
function TopKRouter:init(o)
  o = o or {}
  self.k = o.k or 2
  self.renormalize = o.renormalize ~= false
  self.gen = o.generator
  if o.d_model and o.experts then self:setup(o.d_model, o.experts, o.dtype) end
end
function TopKRouter:setup(d_model, experts, dtype)
  self.experts = experts
  self.router = layers.Linear(d_model, experts, {bias = false, dtype = dtype or 'f32', generator = self.gen})
end
function TopKRouter:forward(x)
  local logits = self.router(x)
  local probs = logits:softmax(-1)
  local k = math.min(self.k, self.experts)
  local vals, ids = gm.topk(probs, k)
  local w = self.renormalize and vals / vals:sum(-1, true) or vals
  return {ids = ids, weights = w, probs = probs, logits = logits, aux = {}, k = k}
end
function TopKRouter:extra_repr() return ('k=%d, experts=%s'):format(self.k, tostring(self.experts)) end
doc.add('gm.nn.MoE.TopKRouter', 'gm.nn.MoE.TopKRouter{k=2, renormalize=true, d_model, experts, dtype, generator}',
  'The MoE layer\'s built-in top-k softmax gate, used when gm.gates is not built: router Linear(d_model, E, no bias), ' ..
  'p = softmax(logits), the k largest p (ties to the lower id), weights renormalised to sum to 1 over the k. ' ..
  'Returns the gate result table {ids, weights, probs, logits, aux = {}, k}.',
  {formula = 'w_{t,i} = p_{t,i} / sum_{j in topk(p_t)} p_{t,j},  p_t = softmax(W_r x_t)', paper = 'Shazeer et al. 2017'})

local function default_gate(k)
  if package.preload['gmoe.gates'] or package.loaded['gmoe.gates'] then
    local ok, gates = pcall(require, 'gmoe.gates')
    if ok and type(gates) == 'table' and gates.TopK then return gates.TopK {k = k} end
  end
  return TopKRouter {k = k}
end

-- ---- the layer ------------------------------------------------------------------------------
local MoE = Module:extend('MoE')
M.MoE = MoE
MoE.TopKRouter = TopKRouter

local function uniform(t, bound, g) init.uniform_(t, -bound, bound, {generator = g}) end

function MoE:init(...)
  local o = options(...)
  local dtype = o.dtype or 'f32'
  local g = o.generator or nil
  self.d_model = need_int('MoE', 'd_model', o.d_model, 1)
  self.d_ff = need_int('MoE', 'd_ff', o.d_ff, 1)
  self.n_experts = need_int('MoE', 'experts', o.experts, 1)
  self.n_constant = need_int('MoE', 'constant_experts', o.constant_experts or 0, 0)
  self.n_copy = need_int('MoE', 'copy_experts', o.copy_experts or 0, 0)
  self.n_zero = need_int('MoE', 'zero_experts', o.zero_experts or 0, 0)
  self.n_shared = need_int('MoE', 'shared_experts', o.shared_experts or 0, 0)
  self.n_total = self.n_experts + self.n_constant + self.n_copy + self.n_zero
  local act = o.activation or 'gelu'
  if act ~= 'swiglu' and not ACTS[act] and type(act) ~= 'function' then
    error(('gm.nn.MoE: activation must be "gelu", "relu", "silu", "tanh", "identity", "swiglu" or a function, got %s')
      :format(tostring(act)), 3)
  end
  self.activation = act
  if o.capacity_factor and o.capacity_factor ~= nil then
    if type(o.capacity_factor) ~= 'number' or not (o.capacity_factor > 0) then -- 0 would drop every token
      error('gm.nn.MoE: capacity_factor must be a number > 0 (or nil for dropless), got ' .. tostring(o.capacity_factor), 3)
    end
    self.capacity_factor = o.capacity_factor
  end
  if o.balance and o.balance ~= 'all' and o.balance ~= 'top1' then
    error('gm.nn.MoE: balance must be "all" or "top1", got ' .. tostring(o.balance), 3)
  end
  self.balance_mode = o.balance or 'all'
  local bias
  if o.bias == nil then bias = act ~= 'swiglu' else bias = o.bias and true or false end
  self.has_bias = bias

  -- gate: module / object (router parameters live in it), function, or a fixed result table
  local gate = o.gate
  if not gate then gate = default_gate(2) end
  if type(gate) == 'function' then
    self.gate_fn = gate
  elseif type(gate) == 'table' and gate.ids and not gate.forward then
    self.gate_fixed = gate
  elseif type(gate) == 'table' and gate.forward then
    if gate.setup and gate.experts == nil then gate:setup(self.d_model, self.n_total) end
    if gate.experts ~= nil and gate.experts ~= self.n_total then
      error(('gm.nn.MoE: the gate has %d experts, the layer %d (experts + constant + copy + zero)')
        :format(gate.experts, self.n_total), 3)
    end
    if is_module(gate) then
      if dtype ~= 'f32' then gate:to(dtype) end
      self.gate = gate
    else
      self.gate_obj = gate
    end
  else
    error('gm.nn.MoE: gate must be a gate object, a function(x, ctx) -> result, or a result table, got ' .. type(gate), 3)
  end

  -- routed FFN experts, stacked; init as E Linear layers (U(+-1/sqrt(fan_in)), bias too)
  local E, D, F = self.n_experts, self.d_model, self.d_ff
  local function param(shape) return gm.empty(shape, {dtype = dtype, requires_grad = true}) end
  self.w1 = param {E, D, F}
  uniform(self.w1, 1 / math.sqrt(D), g)
  if act == 'swiglu' then
    self.w3 = param {E, D, F}
    uniform(self.w3, 1 / math.sqrt(D), g)
  end
  self.w2 = param {E, F, D}
  uniform(self.w2, 1 / math.sqrt(F), g)
  if bias then
    self.b1 = param {E, F}
    uniform(self.b1, 1 / math.sqrt(D), g)
    self.b2 = param {E, D}
    uniform(self.b2, 1 / math.sqrt(F), g)
  end
  -- MoE++ constant experts: wg [n, D, 2] (a Linear D -> 2 each), v [n, D] ~ N(0, 1)
  if self.n_constant > 0 then
    self.const_wg = param {self.n_constant, D, 2}
    uniform(self.const_wg, 1 / math.sqrt(D), g)
    self.const_v = param {self.n_constant, D}
    init.normal_(self.const_v, 0, 1, {generator = g})
  end
  -- DeepSeekMoE shared experts: n FFNs of width shared_d_ff summed = one FFN of width n * shared_d_ff
  if self.n_shared > 0 then
    local width = self.n_shared * need_int('MoE', 'shared_d_ff', o.shared_d_ff or F, 1)
    local lo = {dtype = dtype, generator = g}
    if act == 'swiglu' then
      self.shared = layers.SwiGLU(D, width, D, lo)
    elseif type(act) == 'string' then
      lo.bias, lo.activation = bias, act
      self.shared = layers.MLP(D, width, D, lo)
    else
      error('gm.nn.MoE: shared_experts need a named activation, not a function', 3)
    end
  end
end

function MoE:extra_repr()
  local s = ('d_model=%d, d_ff=%d, experts=%d, activation=%s'):format(self.d_model, self.d_ff, self.n_experts,
    tostring(self.activation))
  if self.capacity_factor then s = s .. ', capacity_factor=' .. self.capacity_factor end
  if self.n_shared > 0 then s = s .. ', shared=' .. self.n_shared end
  if self.n_constant > 0 then s = s .. ', constant=' .. self.n_constant end
  if self.n_copy > 0 then s = s .. ', copy=' .. self.n_copy end
  if self.n_zero > 0 then s = s .. ', zero=' .. self.n_zero end
  return s
end

--- the gate result for router input x [T, D]
function MoE:route(x, ctx)
  local r
  if self.gate_fn then r = self.gate_fn(x, ctx or {})
  elseif self.gate_fixed then r = self.gate_fixed
  elseif self.gate_obj then r = self.gate_obj:forward(x, ctx or {})
  else r = self.gate:forward(x, ctx or {}) end
  if type(r) ~= 'table' or not gm.is_tensor(r.ids) or not gm.is_tensor(r.weights) then
    error('gm.nn.MoE: the gate must return a table with ids [T, K] i32 and weights [T, K]', 3)
  end
  return r
end

-- Apply the expert activation (swiglu handled by the caller).
local function activate(act, h)
  if type(act) == 'function' then return act(h) end
  return ACTS[act](h)
end

-- Per-token entropy mean of a probability table [T, E], from logits when present (stable).
local function entropy(probs, logits)
  local logp = logits and logits:log_softmax(-1) or probs:clamp {min = 1e-30}:log()
  return -(probs * logp):sum(-1):mean()
end

--- y, aux, stats = moe:forward(x [..., d_model], ctx)
function MoE:forward(x, ctx)
  if not gm.is_tensor(x) or x.shape[#x.shape] ~= self.d_model then
    error(('gm.nn.MoE: input must be a tensor [..., %d], got %s'):format(self.d_model,
      gm.is_tensor(x) and ('[' .. table.concat(x.shape, ', ') .. ']') or type(x)), 2)
  end
  local shape = x.shape
  local D, E, Et = self.d_model, self.n_experts, self.n_total
  local xf = x:reshape {-1, D}
  local T = xf.shape[1]
  -- ctx.timer(phase), when given, is called at the end of each phase (benchmarks' split)
  local tick = ctx and ctx.timer or nil
  local r = self:route(xf, ctx)
  if tick then tick('gate') end
  local ids, w = r.ids, r.weights
  if ids.dtype ~= 'i32' or ids:dim() ~= 2 or ids.shape[1] ~= T then
    error(('gm.nn.MoE: gate ids must be i32 [%d, K], got %s [%s]'):format(T, ids.dtype, table.concat(ids.shape, ', ')), 2)
  end
  if w.dtype ~= x.dtype then w = w:to(x.dtype) end
  local K = ids.shape[2]
  local cap = -1
  if self.capacity_factor then cap = math.ceil(self.capacity_factor * T * K / Et - 1e-9) end

  local xs, offsets, slot, row_expert = gm.moe_dispatch(xf, ids, Et, {capacity = cap})
  local off = offsets:totable()
  local S, SF = off[Et + 1], off[E + 1]
  if tick then tick('dispatch') end
  local pieces = {}
  -- routed FFN experts on rows 0 .. SF-1
  if SF > 0 then
    local xe = SF == S and xs or xs:narrow(0, 0, SF)
    local oe = offsets:narrow(0, 0, E + 1)
    -- Biases as expert_mm(ones [SF, 1], b:reshape{E, 1, F}): each row gets its expert's bias,
    -- and the backward is one gemm per expert (column sums of the expert's rows), where
    -- index_select's backward (a scalar index_add over [SF, F]) took 10x longer.
    local ones = self.has_bias and gm.ones({SF, 1}, {dtype = x.dtype}) or nil
    local h = gm.expert_mm(xe, self.w1, oe)
    if ones then h = h + gm.expert_mm(ones, self.b1:reshape {E, 1, self.d_ff}, oe) end
    if self.activation == 'swiglu' then
      h = h:silu() * gm.expert_mm(xe, self.w3, oe)
    else
      h = activate(self.activation, h)
    end
    local ye = gm.expert_mm(h, self.w2, oe)
    if ones then ye = ye + gm.expert_mm(ones, self.b2:reshape {E, 1, D}, oe) end
    pieces[#pieces + 1] = ye
  end
  -- MoE++ experts: rows offsets[e] .. offsets[e+1]-1 of each extra expert e (constant, copy, zero)
  for e = E, Et - 1 do
    local n = off[e + 2] - off[e + 1]
    if n > 0 then
      local xe = xs:narrow(0, off[e + 1], n)
      local j = e - E
      if j < self.n_constant then -- w1 x + w2 v with (w1, w2) = softmax(x Wc)
        local a = gm.matmul(xe, self.const_wg[j]):softmax(-1)
        pieces[#pieces + 1] = a:narrow(1, 0, 1) * xe + a:narrow(1, 1, 1) * self.const_v[j]:reshape {1, D}
      elseif j < self.n_constant + self.n_copy then
        pieces[#pieces + 1] = xe
      else
        pieces[#pieces + 1] = gm.zeros({n, D}, {dtype = x.dtype})
      end
    end
  end
  local ys
  if #pieces == 0 then ys = gm.zeros({0, D}, {dtype = x.dtype})
  elseif #pieces == 1 then ys = pieces[1]
  else ys = gm.cat(pieces, 0) end
  if tick then tick('experts') end
  local y = gm.moe_combine(ys, w, slot)
  if self.shared then
    local s = self.shared(xf)
    y = y + s
  end
  if tick then tick('combine') end

  -- auxiliary losses
  local aux = {}
  local valid = ids:ge(0)
  local nvalid = valid:sum():item()
  local routed
  if T > 0 and K > 0 then
    local oh = gm.one_hot(gm.clamp(ids, {min = 0}), Et, x.dtype) * valid:to(x.dtype):unsqueeze(-1)
    routed = oh:sum {dims = {0, 1}}
    if r.probs then
      local f
      if self.balance_mode == 'top1' then
        f = oh:select(1, 0):sum(0) / math.max(1, valid:select(1, 0):sum():item())
      else
        f = routed / math.max(1, nvalid)
      end
      local P = r.probs:to(x.dtype):mean(0)
      aux.balance = (f:detach() * P):sum() * Et
    end
    if r.logits then aux.z_loss = r.logits:logsumexp(-1):pow(2):mean() end
    if r.probs then aux.entropy = entropy(r.probs, r.logits) end
  end
  -- The gate's own regularisers keep their names; one that would shadow the layer's gets gate_.
  for k, v in pairs(r.aux or {}) do aux[aux[k] == nil and k or 'gate_' .. k] = v end

  -- routing statistics
  local tpe = (offsets:narrow(0, 1, Et) - offsets:narrow(0, 0, Et))
  local tpe_t = tpe:totable()
  local maxl, meanl = 0, S / Et
  for _, v in ipairs(tpe_t) do if v > maxl then maxl = v end end
  local stats = {
    tokens_per_expert = tpe,
    routed_per_expert = routed and routed:to('i32') or gm.zeros({Et}, {dtype = 'i32'}),
    dropped_fraction = nvalid > 0 and (nvalid - S) / nvalid or 0,
    active_per_token = T > 0 and S / T or 0,
    ffn_per_token = T > 0 and SF / T or 0,
    load_max_over_mean = meanl > 0 and maxl / meanl or 0,
    capacity = cap,
    gate_entropy = aux.entropy and aux.entropy:item() or (r.probs and entropy(r.probs, r.logits):item()) or nil,
    ids = ids,
    tokens = T,
  }
  self.last_stats = stats
  self.last_aux = aux
  if tick then tick('aux') end
  return y:reshape(shape), aux, stats
end

-- ---- routing_change ---------------------------------------------------------------------------
local function id_sets(v)
  local ids = type(v) == 'table' and not gm.is_tensor(v) and v.ids or v
  if not gm.is_tensor(ids) or ids.dtype ~= 'i32' or ids:dim() ~= 2 then
    error('gm.moe.routing_change: expected routing statistics (with ids [T, K] i32) or an ids tensor', 3)
  end
  local rows, sets = ids:totable(), {}
  for t, row in ipairs(rows) do
    local s = {}
    for _, e in ipairs(row) do if e >= 0 then s[#s + 1] = e end end
    table.sort(s)
    -- drop repeats so {1, 1} equals {1}
    local u = {}
    for _, e in ipairs(s) do if u[#u] ~= e then u[#u + 1] = e end end
    sets[t] = table.concat(u, ',')
  end
  return sets
end

--- gm.moe.routing_change(stats_a, stats_b) -> fraction of tokens whose selected expert set differs
function M.routing_change(a, b)
  local sa, sb = id_sets(a), id_sets(b)
  if #sa ~= #sb then
    error(('gm.moe.routing_change: the routings have %d and %d tokens'):format(#sa, #sb), 2)
  end
  if #sa == 0 then return 0 end
  local n = 0
  for t = 1, #sa do if sa[t] ~= sb[t] then n = n + 1 end end
  return n / #sa
end
MoE.routing_change = M.routing_change
gm.moe = gm.moe or {}
gm.moe.routing_change = M.routing_change

doc.add('gm.nn.MoE',
  'gm.nn.MoE{d_model, d_ff, experts, gate=gm.gates.TopK{k=2}, activation="gelu", capacity_factor=nil, ' ..
  'shared_experts=0, shared_d_ff=d_ff, constant_experts=0, copy_experts=0, zero_experts=0, bias, balance="all", dtype="f32", generator}' ..
  '  ->  y, aux, stats = moe(x [..., d_model], ctx)',
  'Sparse Mixture-of-Experts feed-forward layer. y has x\'s shape and is the MoE OUTPUT, to be added to the residual ' ..
  'stream by the caller (x + moe(x)); dropped tokens get 0 from the routed experts (so only the residual carries them). ' ..
  'Routed experts are MLPs with stacked weights w1 [E, d_model, d_ff], w2 [E, d_ff, d_model] (+ biases b1 [E, d_ff], ' ..
  'b2 [E, d_model], default on except for swiglu; swiglu adds w3 [E, d_model, d_ff]: w2(silu(x w1) * x w3)); init ' ..
  'U(+-1/sqrt(fan_in)) as Linear. activation: "gelu", "relu", "silu", "tanh", "identity", "swiglu" or a function. ' ..
  'Pipeline: gate -> moe_dispatch (sort by expert) -> expert_mm -> activation -> expert_mm -> moe_combine. ' ..
  'gate: a gate module/object (set up with setup(d_model, E_total) when it has no experts yet; its parameters are ' ..
  'the layer\'s, as child "gate"), a function(x [T, D], ctx) -> result, or a fixed result table {ids [T,K] i32, ' ..
  'weights [T,K], probs [T,E]?, logits [T,E]?, aux?, k}. Default gm.gates.TopK{k=2} (the built-in ' ..
  'gm.nn.MoE.TopKRouter when gm.gates is absent). Router math runs in x\'s dtype. ' ..
  'Expert ids: 0..experts-1 FFN experts, then constant_experts, copy_experts, zero_experts (MoE++ order; the gate ' ..
  'routes over E_total = experts + constant + copy + zero). Zero expert: 0. Copy: x. Constant j: a1 x + a2 v_j with ' ..
  '(a1, a2) = softmax(x Wc_j), Wc_j [d_model, 2] (const_wg[j]) and a learned v_j (const_v[j], init N(0,1)), as ' ..
  'MoE++ ConstantExpert. The layer does not zero the zero expert\'s weight or pre-scale x (MoE++ quirks): the gate decides. ' ..
  'shared_experts = n: n DeepSeekMoE shared FFNs of width shared_d_ff that every token uses, added unweighted; ' ..
  'implemented as ONE MLP (SwiGLU for swiglu) of width n*shared_d_ff, which equals the sum of n FFNs. ' ..
  'Fine-grained experts: choose more, narrower experts (experts = m*N, d_ff = d/m, k = m*K). ' ..
  'capacity_factor c: every expert (extras included) keeps at most C = ceil(c*T*K/E_total) (t,k) pairs, priority ' ..
  'by token position (earlier tokens first, Switch); later ones are dropped (slot -1). nil = dropless. Same in train and eval. ' ..
  'aux (scalar tensors, not weighted; add alpha*aux.balance etc. to the loss): balance = E_total * sum_e f_e P_e with ' ..
  'P_e = mean_t probs[t,e] and f_e the fraction of all T*K (valid) top-k assignments that chose e, before capacity ' ..
  '(balance="all": = 1 at uniform routing for any k, = Switch for k = 1, = DeepSeekMoE\'s expert-level loss); ' ..
  'balance="top1": f_e = fraction of tokens whose first id is e (GShard); f is a constant, the gradient flows through P. ' ..
  'Needs r.probs. z_loss = mean_t logsumexp(logits_t)^2 (ST-MoE; needs r.logits). entropy = mean_t -sum_e p log p. ' ..
  'Plus every key of the gate\'s r.aux (as gate_<key> if it would shadow one of the above). ' ..
  'stats (also moe.last_stats): tokens_per_expert [E_total] i32 (rows kept after capacity), routed_per_expert [E_total] ' ..
  'i32 (before capacity), dropped_fraction (dropped / valid assignments), active_per_token (kept assignments per ' ..
  'token), ffn_per_token (kept assignments to FFN experts per token), load_max_over_mean, capacity (C or -1), ' ..
  'gate_entropy (number), ids [T, K] i32, tokens T. Works in f32 and f64.',
  {formula = 'y_t = sum_k w_{t,k} E_{id(t,k)}(x_t) [kept] + sum_s FFN^shared_s(x_t);  E_i(x) = W2_i act(W1_i x + b1_i) + b2_i;  ' ..
     'const_j(x) = a1 x + a2 v_j, (a1,a2) = softmax(Wc_j x);  balance = E sum_e f_e P_e;  z = mean (logsumexp logits)^2',
   paper = 'Shazeer et al. 2017 (sparse MoE); Lepikhin et al. 2020 (GShard); Fedus et al. 2021 (Switch: capacity, balance); ' ..
     'Zoph et al. 2022 (ST-MoE z-loss); Dai et al. 2024 (DeepSeekMoE shared/fine-grained); Jin et al. 2024 (MoE++)'})

doc.add('gm.moe.routing_change', 'gm.moe.routing_change(stats_a, stats_b) -> fraction',
  'The fraction of tokens whose SET of selected experts differs between two routings of the same tokens (order of ' ..
  'the k choices and -1 padding ignored). Takes the stats of two MoE forwards (or two ids [T, K] i32 tensors). Also ' ..
  'gm.nn.MoE.routing_change. Used by the robustness experiments (routing of clean vs perturbed inputs).',
  {formula = 'change = (1/T) sum_t 1[set(ids_a[t]) != set(ids_b[t])]', paper = 'AdvMoE (Zhang et al., ICCV 2023) routing robustness'})

return M
