-- mmoe.lua: the multi-gate Mixture-of-Experts for multi-task learning of the COMET reproduction
-- (experiments/comet_gates.lua, papers.md §4.3-4.4; Ma et al. 2018's MMoE with the gates of
-- gm.gates): E shared MLP experts computed on every example (as in the COMET code), one gate per
-- task over the gate input, task t's representation sum_e g_te(x) f_e(x), then a task head.
-- Also the metrics of the protocol: gate sparsity and support recovery against a known truth.
local gm = require 'gmoe'
local init = require 'gmoe.nn.initializers'

local M = {}

local MMoE = gm.nn.Module:extend('MMoE')
M.MMoE = MMoE

--- MMoE{d_in, gates = {gate per task}, experts=16, hidden=32, out=1, head_hidden=0,
--- activation="relu", dropout=0, bottom=nil, generator}: experts f_e(x) = W2_e act(W1_e x + b1_e) + b2_e with
-- out outputs (dropout after the activation, as COMET's DenseExpertDropout); heads: Linear(out, 1)
-- when head_hidden = 0, else Linear(out, head_hidden) -> ReLU -> Linear(head_hidden, 1). bottom
-- (a module, e.g. embeddings) maps the model's input to the d_in features that experts and gates
-- read. Gates get setup(d_in, experts) here when not set up yet.
function MMoE:init(o)
  local gen = o.generator
  self.E, self.H, self.O = o.experts or 16, o.hidden or 32, o.out or 1
  self.act = o.activation or 'relu'
  self.p_drop = o.dropout or 0
  self.gen = gen
  local E, H, O = self.E, self.H, self.O
  if o.bottom then self.bottom = o.bottom end
  self.lin1 = gm.nn.Linear {o.d_in, E * H, generator = gen}
  local b = 1 / math.sqrt(H)
  self.w2 = gm.empty({E, H, O}, {requires_grad = true})
  init.uniform_(self.w2, -b, b, {generator = gen})
  self.b2 = gm.empty({E, O}, {requires_grad = true})
  init.uniform_(self.b2, -b, b, {generator = gen})
  for _, g in ipairs(o.gates) do
    if not g.experts then g:setup(o.d_in, E) end
  end
  self.gates = gm.nn.ModuleList(o.gates)
  local heads = {}
  for t = 1, #o.gates do
    if (o.head_hidden or 0) > 0 then
      heads[t] = gm.nn.Sequential(gm.nn.Linear {O, o.head_hidden, generator = gen}, gm.nn.ReLU(),
                                  gm.nn.Linear {o.head_hidden, 1, generator = gen})
    else
      heads[t] = gm.nn.Linear {O, 1, generator = gen}
    end
  end
  self.heads = gm.nn.ModuleList(heads)
  self.ntasks = #o.gates
end

--- Expert outputs on x [B, d_in]: [B, E] when out = 1, else [B, E, out].
function MMoE:experts_out(x)
  local B, E, H, O = x.shape[1], self.E, self.H, self.O
  local h = self.lin1(x)
  h = self.act == 'tanh' and h:tanh() or h:relu()
  if self.p_drop > 0 then h = gm.nn.functional.dropout(h, self.p_drop, self.training, {generator = self.gen}) end
  h = h:reshape {B, E, H}
  if O == 1 then return (h * self.w2:reshape {E, H}):sum(-1) + self.b2:reshape {E} end
  return gm.matmul(h:transpose(0, 1), self.w2):transpose(0, 1) + self.b2 -- [B, E, O]
end

--- Dense gate weights [B, E] of a gate result: dense gates give them in id order; sparse ones
-- (top-k, hash, a frozen permutation) are scattered.
function M.dense_weights(gate, r, E)
  if gate.dense then return r.weights end
  local B = r.ids.shape[1]
  return gm.zeros({B, E}, {dtype = r.weights.dtype}):scatter_add(1, r.ids, r.weights)
end

--- model(x, ctx) -> outputs {[B] per task}, weights {[B, E] per task}, aux (scalar or nil), f.
-- ctx = {step, token_ids} goes to every gate; f = the expert outputs (experts_out).
function MMoE:forward(x, ctx)
  if self.bottom then x = self.bottom(x) end
  local f = self:experts_out(x)
  local outs, weights, aux = {}, {}, nil
  for t, g in ipairs(self.gates:children()) do
    local r = g:forward(x, ctx)
    local w = M.dense_weights(g, r, self.E)
    weights[t] = w
    for _, v in pairs(r.aux) do aux = aux and aux + v or v end
    local z
    if self.O == 1 then z = (w * f):sum(-1, true) -- [B, 1]
    else z = gm.matmul(w:unsqueeze(1), f):squeeze(1) end -- [B, O]
    outs[t] = self.heads[t - 1](z):reshape {x.shape[1]}
  end
  return outs, weights, aux, f
end

-- ---- metrics --------------------------------------------------------------------------------
M.ZERO = 1e-5 -- a gate weight below this counts as zero (COMET's sparsity threshold)

--- Sparsity of dense weights w [B, E] for cardinality k: mean number of non-zero weights per
-- example, fraction with exactly k, fraction with at most k.
function M.sparsity(w, k)
  local nz = w:gt(M.ZERO):to('f32'):sum(-1)
  local n = w.shape[1]
  return nz:mean():item(), nz:eq(k):to('f32'):sum():item() / n, nz:le(k):to('f32'):sum():item() / n
end

--- Hungarian matching of learned experts to true experts on x: learned expert i (a column of
-- F [n, E]) goes to true expert m(i) (a column of Fstar [n, E*]) maximising the summed squared
-- correlation. Returns m as a 0-based Lua array indexed by i+1, and the squared correlations.
function M.match_experts(F, Fstar)
  local function std(A)
    A = A:to('f64')
    local c = A - A:mean(0, true)
    return c / ((c * c):mean(0, true):sqrt() + 1e-12)
  end
  local n = F.shape[1]
  local C = gm.matmul(std(F):t(), std(Fstar)) / n -- [E, E*]
  local r2 = (C * C):totable()
  local cost = {}
  for i, row in ipairs(r2) do
    cost[i] = {}
    for j, v in ipairs(row) do cost[i][j] = -v end
  end
  return gm.gates.hungarian(cost), r2
end

--- Support recovery: the fraction of examples whose selected experts (weight > ZERO), mapped
-- through the matching m, are exactly the true support. w [n, E]; truth [n, k] i32 (0-based).
function M.support_recovery(w, truth, m)
  local sel, tr = w:gt(M.ZERO):totable(), truth:totable()
  local hit = 0
  for i, row in ipairs(sel) do
    local want, nt = {}, 0
    for _, e in ipairs(tr[i]) do
      if not want[e] then want[e] = true; nt = nt + 1 end
    end
    local ok, ns = true, 0
    for e, s in ipairs(row) do
      if s == 1 then
        ns = ns + 1
        if not want[m[e]] then ok = false break end
      end
    end
    if ok and ns == nt then hit = hit + 1 end
  end
  return hit / #sel
end

--- The true experts' outputs f*_e(x) = tanh(U_e x) . v_e of gm.data.mtl_regression's truth: [n, E].
function M.true_experts(x, truth)
  local E, h, d = truth.U.shape[1], truth.U.shape[2], truth.U.shape[3]
  local n = x.shape[1]
  local z = gm.matmul(x:to('f64'), truth.U:to('f64'):reshape {E * h, d}:t()):tanh():reshape {n, E, h}
  return (z * truth.v:to('f64')):sum(-1)
end

return M
