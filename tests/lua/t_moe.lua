-- t_moe.lua: the MoE ops (moe_dispatch, expert_mm, moe_combine) on hand-built routings, and
-- gm.nn.MoE: gradcheck of the whole layer (f64) with overflowing capacity, empty experts,
-- k = E, E = 5, T = 1, swiglu/shared/MoE++ experts; equality with a dense reference that runs
-- every expert on every token; statistics and aux losses on hand-built routings;
-- routing_change; a tiny training run.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local function i32(t) return gm.tensor(t, {dtype = 'i32'}) end
local function maxdiff(a, b) return (a:to('f64') - b:to('f64')):abs():max():item() end

-- ---- moe_dispatch --------------------------------------------------------------------------
do
  local x = gm.tensor({{0}, {1}, {2}, {3}}, {dtype = 'f64'})
  local ids = i32 {{0, 2}, {2, 1}, {0, 2}, {1, 0}}
  local xs, off, slot, re = gm.moe_dispatch(x, ids, 3)
  tap.all_close(off:totable(), {0, 3, 5, 8}, 0, 'dispatch: offsets of a dropless routing')
  -- expert 0: (t0,k0) (t2,k0) (t3,k1); expert 1: (t1,k1) (t3,k0); expert 2: (t0,k1) (t1,k0) (t2,k1)
  tap.all_close(slot:totable(), {{0, 5}, {6, 3}, {1, 7}, {4, 2}}, 0, 'dispatch: slots stable by token order')
  tap.all_close(xs:reshape {-1}:totable(), {0, 2, 3, 1, 3, 0, 1, 2}, 0, 'dispatch: rows sorted by expert')
  tap.all_close(re:totable(), {0, 0, 0, 1, 1, 2, 2, 2}, 0, 'dispatch: row_expert')
  local xs2, off2, slot2 = gm.moe_dispatch(x, ids, 3, {capacity = 2})
  tap.all_close(off2:totable(), {0, 2, 4, 6}, 0, 'dispatch: capacity 2 keeps 2 rows per expert')
  tap.all_close(slot2:totable(), {{0, 4}, {5, 2}, {1, -1}, {3, -1}}, 0,
                'dispatch: capacity drops the later tokens (t3 from expert 0, t2 from expert 2)')
  tap.all_close(xs2:reshape {-1}:totable(), {0, 2, 1, 3, 0, 1}, 0, 'dispatch: kept rows')
  local _, off3, slot3 = gm.moe_dispatch(x, i32 {{1, -1}, {-1, -1}, {1, 0}, {2, 1}}, 4, {capacity = 0})
  tap.all_close(off3:totable(), {0, 0, 0, 0, 0}, 0, 'dispatch: capacity 0 drops everything')
  tap.ok(slot3:eq(-1):sum():item() == 8, 'dispatch: every slot -1 at capacity 0')
  local _, off4, slot4 = gm.moe_dispatch(x, i32 {{1, -1}, {-1, -1}, {1, 0}, {2, 1}}, 4)
  tap.all_close(off4:totable(), {0, 1, 4, 5, 5}, 0, 'dispatch: -1 ids are padding, expert 3 empty')
  tap.all_close(slot4:totable(), {{1, -1}, {-1, -1}, {2, 0}, {4, 3}}, 0, 'dispatch: padding slots')
  local xs5 = gm.moe_dispatch(x:to('f32'), ids, 3)
  tap.ok(xs5.dtype == 'f32' and maxdiff(xs5, xs) == 0, 'dispatch: f32 agrees with f64')
  -- a non-contiguous x
  local big = gm.randn {3, 8}
  local xt = big:transpose(0, 1) -- [8, 3]
  local xs6 = gm.moe_dispatch(xt, i32 {{0}, {1}, {0}, {1}, {0}, {1}, {0}, {1}}, 2)
  tap.ok(maxdiff(xs6[0], xt[0]) == 0 and maxdiff(xs6[4], xt[1]) == 0, 'dispatch: a transposed x')
  tap.errors(function() return gm.moe_dispatch(x, i32 {{0, 3}, {0, 0}, {0, 0}, {0, 0}}, 3) end,
             'moe_dispatch: expert id 3', 'dispatch: id out of range names the op and id')
  tap.errors(function() return gm.moe_dispatch(x, ids, 3, {capacity = 1.5}) end, 'capacity', 'dispatch: bad capacity')
end

-- ---- expert_mm -----------------------------------------------------------------------------
do
  gm.manual_seed(3)
  local xs = gm.randn({6, 3}, {dtype = 'f64'})
  local w = gm.randn({4, 3, 2}, {dtype = 'f64'})
  local off = i32 {0, 2, 2, 5, 6}
  local y = gm.expert_mm(xs, w, off)
  local want = gm.cat({gm.matmul(xs:narrow(0, 0, 2), w[0]), gm.matmul(xs:narrow(0, 2, 3), w[2]),
                       gm.matmul(xs:narrow(0, 5, 1), w[3])}, 0)
  tap.ok(maxdiff(y, want) < 1e-14, 'expert_mm: one product per expert, empty expert skipped')
  local y32 = gm.expert_mm(xs:to('f32'), w:to('f32'), off)
  tap.ok(maxdiff(y32, y) < 1e-5, 'expert_mm: f32 agrees with f64')
  local wt = w:transpose(1, 2):contiguous():transpose(1, 2) -- same values, strided
  tap.ok(maxdiff(gm.expert_mm(xs, wt, off), y) < 1e-14, 'expert_mm: a strided w')
  tap.errors(function() return gm.expert_mm(xs, w, i32 {0, 2, 1, 5, 6}) end, 'expert_mm: offsets decrease',
             'expert_mm: decreasing offsets')
end

-- ---- moe_combine ---------------------------------------------------------------------------
do
  local ys = gm.tensor({{1, 2}, {3, 4}, {5, 6}}, {dtype = 'f64'})
  local w = gm.tensor({{0.5, 2}, {1, 0}}, {dtype = 'f64'})
  local y = gm.moe_combine(ys, w, i32 {{2, 0}, {-1, 1}})
  tap.all_close(y:totable(), {{0.5 * 5 + 2 * 1, 0.5 * 6 + 2 * 2}, {0, 0}}, 1e-15, 'combine: weighted sum, -1 skipped')
  tap.errors(function() return gm.moe_combine(ys, w, i32 {{2, 0}, {2, 1}}) end, 'moe_combine: row 2 of ys is used twice',
             'combine: a row used twice is an error')
end

-- ---- the MoE layer: helpers ----------------------------------------------------------------
local Router = gm.nn.MoE.TopKRouter

-- Set a module's parameters to the tensors of gradcheck (in named_parameters order).
local function param_fn(m, x_first)
  local names = {}
  for _, p in ipairs(m:named_parameters()) do names[#names + 1] = p[1] end
  local function set(path, v)
    local obj, key = m, nil
    for part in path:gmatch('[^.]+') do
      if key then obj = obj[key] end
      key = part
    end
    obj[key] = v
  end
  local inputs = {x_first}
  for _, p in ipairs(m:named_parameters()) do inputs[#inputs + 1] = p[2] end
  local f = function(x, ...)
    local ps = {...}
    for i, n in ipairs(names) do set(n, ps[i]) end
    local y, aux = m(x)
    local outs = {y}
    for _, k in ipairs {'balance', 'z_loss', 'entropy'} do if aux[k] then outs[#outs + 1] = aux[k] end end
    return table.unpack(outs)
  end
  return f, inputs
end

local function gradcheck_layer(opts, T, name, tol)
  gm.manual_seed(11)
  opts.dtype = 'f64'
  local m = gm.nn.MoE(opts)
  local x = gm.randn({T, opts.d_model}, {dtype = 'f64'})
  local f, inputs = param_fn(m, x)
  local err, worst = gm.gradcheck(f, inputs)
  tap.ok(err < (tol or 1e-6), ('gradcheck %s: max err %.2e'):format(name, err),
         worst and ('input %d element %d analytic %.6g numeric %.6g'):format(worst.input, worst.index, worst.analytic, worst.numeric))
  return m
end

gradcheck_layer({d_model = 3, d_ff = 4, experts = 5, gate = Router {k = 2}}, 6, 'E=5 k=2 dropless gelu')
do
  local m = gradcheck_layer({d_model = 3, d_ff = 3, experts = 3, gate = Router {k = 2}, capacity_factor = 0.5,
                             activation = 'relu'}, 6, 'capacity overflow (C=2, 12 assignments)')
  tap.ok(m.last_stats.dropped_fraction > 0, 'the overflow case drops tokens',
         'dropped ' .. m.last_stats.dropped_fraction)
end
do -- experts 1 and 3 receive nothing: ids fixed, weights from a learned router
  gm.manual_seed(12)
  local rw = gm.randn({3, 4}, {dtype = 'f64'})
  local ids = i32 {{0, 2}, {2, 0}, {0, 2}, {2, 0}}
  local gate = function(x)
    local probs = gm.matmul(x, rw):softmax(-1)
    return {ids = ids, weights = gm.gather(probs, 1, ids), probs = probs, logits = gm.matmul(x, rw), k = 2}
  end
  local m = gm.nn.MoE {d_model = 3, d_ff = 2, experts = 4, gate = gate, activation = 'silu', dtype = 'f64'}
  local x = gm.randn({4, 3}, {dtype = 'f64'})
  local f0, inputs = param_fn(m, x)
  inputs[#inputs + 1] = rw
  local f = function(...)
    local a = table.pack(...)
    rw = a[a.n]
    return f0(table.unpack(a, 1, a.n - 1))
  end
  local err = gm.gradcheck(f, inputs)
  tap.ok(err < 1e-6, ('gradcheck experts without tokens: max err %.2e'):format(err))
  tap.all_close(m.last_stats.tokens_per_expert:totable(), {4, 0, 4, 0}, 0, 'experts 1 and 3 got no tokens')
  local g = m.w1.grad
  tap.ok(g == nil or (g[1]:abs():sum():item() == 0 and g[3]:abs():sum():item() == 0), 'no gradient into unused experts')
end
gradcheck_layer({d_model = 2, d_ff = 3, experts = 3, gate = Router {k = 3}}, 4, 'k = E = 3')
gradcheck_layer({d_model = 3, d_ff = 2, experts = 5, gate = Router {k = 2}}, 1, 'T = 1')
gradcheck_layer({d_model = 3, d_ff = 2, experts = 3, gate = Router {k = 2}, activation = 'swiglu', shared_experts = 1,
                 shared_d_ff = 2, constant_experts = 1, copy_experts = 1, zero_experts = 1}, 8,
                'swiglu + shared + constant/copy/zero experts')
gradcheck_layer({d_model = 3, d_ff = 2, experts = 4, gate = Router {k = 2}, capacity_factor = 0.75, constant_experts = 2,
                 zero_experts = 1}, 7, 'capacity with MoE++ experts, gelu with bias')
if gm.gates and gm.gates.TopK then
  gradcheck_layer({d_model = 3, d_ff = 2, experts = 5, gate = gm.gates.TopK {k = 2}, capacity_factor = 0.6}, 6,
                  'with gm.gates.TopK{k=2} and capacity')
  local m = gm.nn.MoE {d_model = 3, d_ff = 2, experts = 3}
  tap.ok(gm.gates.TopK:is_instance(m.gate) and m.gate.k == 2, 'the default gate is gm.gates.TopK{k=2}')
else
  tap.skip('gradcheck with gm.gates.TopK{k=2}', 'gm.gates not built')
  tap.skip('the default gate is gm.gates.TopK{k=2}', 'gm.gates not built')
end

-- ---- sparse layer == dense reference -------------------------------------------------------
-- The dense reference runs every expert on every token and weights it by the gate's weight for
-- that expert (0 when not selected).
local function dense_reference(m, x, r)
  local T, E = x.shape[1], m.n_experts
  local ids, w = r.ids:totable(), r.weights:to('f64'):totable()
  local dense = {}
  for t = 1, T do
    dense[t] = {}
    for e = 1, E do dense[t][e] = 0 end
    for k = 1, #ids[t] do if ids[t][k] >= 0 then dense[t][ids[t][k] + 1] = dense[t][ids[t][k] + 1] + w[t][k] end end
  end
  local dw = gm.tensor(dense, {dtype = x.dtype})
  local y = gm.zeros(x.shape, {dtype = x.dtype})
  for e = 0, E - 1 do
    local h = gm.matmul(x, m.w1[e])
    if m.b1 then h = h + m.b1[e] end
    if m.activation == 'swiglu' then h = h:silu() * gm.matmul(x, m.w3[e]) else h = h[m.activation](h) end
    local o = gm.matmul(h, m.w2[e])
    if m.b2 then o = o + m.b2[e] end
    y = y + dw:narrow(1, e, 1) * o
  end
  return y
end

for _, case in ipairs {
  {dtype = 'f64', act = 'gelu', tol = 1e-12}, {dtype = 'f32', act = 'gelu', tol = 1e-5},
  {dtype = 'f64', act = 'swiglu', tol = 1e-12}, {dtype = 'f64', act = 'relu', tol = 1e-12, gates = true},
} do
  gm.manual_seed(21)
  local gate = case.gates and gm.gates and gm.gates.TopK and gm.gates.TopK {k = 2} or Router {k = 2}
  local m = gm.nn.MoE {d_model = 6, d_ff = 5, experts = 5, gate = gate, activation = case.act, dtype = case.dtype}
  local x = gm.randn({9, 6}, {dtype = case.dtype})
  local y = m(x)
  local r = m.gate:forward(x, {})
  local err = maxdiff(y, dense_reference(m, x, r))
  if y:abs():max():item() == 0 then err = math.huge end -- a zero output would pass trivially
  tap.ok(err < case.tol, ('sparse top-2 == dense reference (%s, %s, %s gate): %.2e'):format(case.dtype, case.act,
         gm.nn.MoE.TopKRouter:is_instance(gate) and 'local' or 'gm.gates.TopK', err))
end
do -- [B, T, D] input keeps its shape
  local m = gm.nn.MoE {d_model = 4, d_ff = 3, experts = 3, gate = Router {k = 1}}
  local x = gm.randn {2, 3, 4}
  local y = m(x)
  tap.ok(#y.shape == 3 and y.shape[1] == 2 and y.shape[2] == 3 and y.shape[3] == 4, 'a [B, T, D] input gives [B, T, D]')
  tap.ok(maxdiff(y:reshape {6, 4}, m(x:reshape {6, 4})) < 1e-6, '[B, T, D] equals the flattened [B*T, D]')
end

-- ---- statistics and aux losses on a hand-built routing -------------------------------------
do
  local probs = {{0.5, 0.3, 0.2}, {0.6, 0.1, 0.3}, {0.4, 0.4, 0.2}, {0.7, 0.2, 0.1}}
  local logits = {}
  for t = 1, 4 do logits[t] = {} for e = 1, 3 do logits[t][e] = math.log(probs[t][e]) + t end end
  local fixed = {ids = i32 {{0, 1}, {0, 2}, {0, 1}, {0, -1}}, weights = gm.tensor {{0.6, 0.4}, {0.5, 0.5}, {0.7, 0.3}, {1, 0}},
                 probs = gm.tensor(probs), logits = gm.tensor(logits), aux = {extra = gm.tensor(0.25)}, k = 2}
  -- C = ceil(0.75 * 4 * 2 / 3) = 2: expert 0 has 4 tokens (keeps t0, t1), expert 1 has 2, expert 2 has 1
  local m = gm.nn.MoE {d_model = 2, d_ff = 2, experts = 3, gate = fixed, capacity_factor = 0.75}
  local y, aux, st = m(gm.randn {4, 2})
  local lazy = {'routed_per_expert', 'dropped_fraction', 'load_max_over_mean', 'gate_entropy'}
  local unread = true
  for _, k in ipairs(lazy) do unread = unread and rawget(st, k) == nil end
  tap.ok(unread, 'stats: the counts read back from the device wait until they are read')
  local _, _, st2 = gm.nn.MoE {d_model = 2, d_ff = 2, experts = 3, gate = fixed, capacity_factor = 0.75}(gm.randn {4, 2})
  local seen = {}
  for k in pairs(st2) do seen[k] = true end
  local all = true
  for _, k in ipairs {'tokens_per_expert', 'routed_per_expert', 'dropped_fraction', 'active_per_token', 'ffn_per_token',
                      'load_max_over_mean', 'capacity', 'gate_entropy', 'ids', 'tokens'} do all = all and seen[k] end
  tap.ok(all, 'stats: pairs() lists every documented statistic')
  tap.close(st2.dropped_fraction, 2 / 7, 1e-12, 'stats: a statistic computed by pairs() is the one read directly')
  tap.is(st.capacity, 2, 'stats: capacity C = ceil(cf T K / E)')
  tap.all_close(st.tokens_per_expert:totable(), {2, 2, 1}, 0, 'stats: tokens per expert after capacity')
  tap.all_close(st.routed_per_expert:totable(), {4, 2, 1}, 0, 'stats: routed per expert before capacity')
  tap.close(st.dropped_fraction, 2 / 7, 1e-12, 'stats: dropped fraction = 2 of 7 valid assignments')
  tap.close(st.active_per_token, 5 / 4, 1e-12, 'stats: active experts per token (kept)')
  tap.close(st.load_max_over_mean, 2 / (5 / 3), 1e-12, 'stats: max/mean load')
  tap.ok(st.ids == fixed.ids or maxdiff(st.ids, fixed.ids) == 0, 'stats: ids')
  tap.ok(m.last_stats == st, 'moe.last_stats is the last stats')
  -- balance = E sum_e f_e P_e, f = (4, 2, 1)/7, P = mean probs
  local P = {0, 0, 0}
  for t = 1, 4 do for e = 1, 3 do P[e] = P[e] + probs[t][e] / 4 end end
  local want = 3 * (4 / 7 * P[1] + 2 / 7 * P[2] + 1 / 7 * P[3])
  tap.close(aux.balance:item(), want, 1e-6, 'aux: load-balance loss E sum f_e P_e on a hand-built routing')
  local z, H = 0, 0
  for t = 1, 4 do
    local s = 0
    for e = 1, 3 do s = s + math.exp(logits[t][e]) end
    z = z + math.log(s) ^ 2 / 4
    for e = 1, 3 do H = H - probs[t][e] * math.log(probs[t][e]) / 4 end
  end
  tap.close(aux.z_loss:item(), z, 1e-5, 'aux: router z-loss = mean logsumexp^2')
  tap.close(aux.entropy:item(), H, 1e-5, 'aux: gate entropy')
  tap.close(st.gate_entropy, H, 1e-5, 'stats: gate entropy')
  tap.close(aux.extra:item(), 0.25, 0, 'aux: the gate\'s own aux terms are passed on')
  local m1 = gm.nn.MoE {d_model = 2, d_ff = 2, experts = 3, gate = fixed, balance = 'top1'}
  local _, aux1 = m1(gm.randn {4, 2})
  tap.close(aux1.balance:item(), 3 * P[1], 1e-6, 'aux: balance="top1" counts first choices only (GShard)')
  -- uniform routing gives balance 1
  local uni = {ids = i32 {{0, 1}, {2, 0}, {1, 2}}, weights = gm.full({3, 2}, 0.5), probs = gm.full({3, 3}, 1 / 3), k = 2}
  local _, auxu, stu = gm.nn.MoE {d_model = 2, d_ff = 2, experts = 3, gate = uni}(gm.randn {3, 2})
  tap.close(auxu.balance:item(), 1, 1e-6, 'aux: balance = 1 at uniform routing')
  tap.is(stu.dropped_fraction, 0, 'stats: dropless drops nothing')
  tap.ok(auxu.z_loss == nil, 'aux: no z-loss without logits')
end

-- ---- routing_change ------------------------------------------------------------------------
do
  local a = {ids = i32 {{0, 1}, {2, 3}, {1, 0}, {4, -1}}}
  local b = {ids = i32 {{1, 0}, {2, 1}, {1, 0}, {4, -1}}}
  tap.close(gm.moe.routing_change(a, b), 0.25, 0, 'routing_change: one token of four changed (order ignored)')
  tap.close(gm.moe.routing_change(a, a), 0, 0, 'routing_change: identical routings')
  tap.ok(gm.nn.MoE.routing_change == gm.moe.routing_change, 'gm.nn.MoE.routing_change is gm.moe.routing_change')
  tap.errors(function() return gm.moe.routing_change(a, {ids = i32 {{0}}}) end, 'routing_change', 'routing_change: token counts differ')
end

-- ---- shared / zero / copy / constant experts -----------------------------------------------
do
  gm.manual_seed(5)
  local x = gm.randn({5, 3}, {dtype = 'f64'})
  local function to(e, n) -- every token to expert e with weight 1
    local ids, w = {}, {}
    for t = 1, n do ids[t] = {e}; w[t] = {1} end
    return {ids = i32(ids), weights = gm.tensor(w, {dtype = 'f64'}), k = 1}
  end
  local base = {d_model = 3, d_ff = 2, experts = 2, constant_experts = 1, copy_experts = 1, zero_experts = 1, dtype = 'f64'}
  local function with(gate, extra)
    local o = {}
    for k, v in pairs(base) do o[k] = v end
    for k, v in pairs(extra or {}) do o[k] = v end
    o.gate = gate
    return gm.nn.MoE(o)
  end
  -- ids: 0, 1 FFN; 2 constant; 3 copy; 4 zero
  local mz = with(to(4, 5))
  local yz, _, sz = mz(x)
  tap.ok(yz:abs():max():item() == 0, 'zero expert: output 0')
  tap.close(sz.ffn_per_token, 0, 0, 'zero expert: no FFN calls')
  tap.ok(maxdiff(with(to(3, 5))(x), x) == 0, 'copy expert: output x')
  local mc = with(to(2, 5))
  local yc = mc(x)
  local a = gm.matmul(x, mc.const_wg[0]):softmax(-1):totable()
  local v, xt, want = mc.const_v[0]:totable(), x:totable(), {}
  for t = 1, 5 do
    want[t] = {}
    for d = 1, 3 do want[t][d] = a[t][1] * xt[t][d] + a[t][2] * v[d] end
  end
  tap.all_close(yc:totable(), want, 1e-12, 'constant expert: a1 x + a2 v, (a1, a2) = softmax(x Wc)')
  local ms = with(to(4, 5), {shared_experts = 2, shared_d_ff = 3})
  tap.ok(maxdiff(ms(x), ms.shared(x)) == 0, 'shared experts: every token gets the shared FFN (added)')
  tap.is(ms.shared.fc1.out_features, 6, 'shared experts: 2 shared FFNs of width 3 = one of width 6')
  -- mixed: half the tokens to the copy expert with weight 0.5, the rest to FFN 1
  local gate = {ids = i32 {{3}, {1}, {3}, {1}, {3}}, weights = gm.full({5, 1}, 0.5, {dtype = 'f64'}), k = 1}
  local mm = with(gate)
  local ym, _, sm = mm(x)
  tap.ok(maxdiff(ym[0], x[0] * 0.5) < 1e-15 and maxdiff(ym[4], x[4] * 0.5) < 1e-15, 'copy expert mixed with FFN experts')
  local h = (gm.matmul(x[1], mm.w1[1]) + mm.b1[1]):gelu()
  tap.ok(maxdiff(ym[1], (gm.matmul(h, mm.w2[1]) + mm.b2[1]) * 0.5) < 1e-12, 'FFN expert rows next to MoE++ rows')
  tap.close(sm.ffn_per_token, 2 / 5, 1e-12, 'stats: FFN calls per token')
end

-- ---- options and errors --------------------------------------------------------------------
tap.errors(function() return gm.nn.MoE {d_model = 4, d_ff = 4, experts = 2, capacity = 1} end, 'unknown option capacity',
           'unknown option is an error listing the options')
tap.errors(function() return gm.nn.MoE {d_model = 4, d_ff = 4, experts = 2, gate = Router {k = 1}}(gm.randn {3, 5}) end,
           'MoE: input must be a tensor %[%.%.%., 4%]', 'wrong d_model')
tap.errors(function() return gm.nn.MoE {d_model = 4, d_ff = 4, experts = 0} end, 'experts must be an integer', 'experts = 0')
tap.errors(function() return gm.nn.MoE {d_model = 4, d_ff = 4, experts = 2, activation = 'nope'} end, 'activation', 'bad activation')
do
  local m = gm.nn.MoE {d_model = 4, d_ff = 3, experts = 3, gate = Router {k = 2}, dtype = 'f64'}
  tap.ok(m.w1.dtype == 'f64' and m.gate.router.weight.dtype == 'f64', 'dtype f64 reaches the experts and the gate')
  local sd = m:state_dict()
  tap.ok(sd['w1'] and sd['w2'] and sd['b1'] and sd['gate.router.weight'], 'state_dict names w1, w2, b1, gate.router.weight')
end

-- ---- a tiny training run reduces the loss --------------------------------------------------
do
  gm.manual_seed(7)
  local T, D = 64, 8
  local x = gm.randn {T, D}
  local target = (x * x:narrow(1, 0, 1)):tanh() -- a product a mixture of experts can split
  local m = gm.nn.MoE {d_model = D, d_ff = 16, experts = 4, gate = Router {k = 2}, capacity_factor = 1.5}
  local opt = gm.optim.AdamW(m:parameters(), {lr = 1e-2})
  local first, last
  for step = 1, 60 do
    opt:zero_grad()
    local y, aux = m(x)
    local loss = gm.mse_loss(y, target)
    local total = loss + 1e-2 * aux.balance + 1e-3 * aux.z_loss
    total:backward()
    opt:step()
    if step == 1 then first = loss:item() end
    last = loss:item()
  end
  tap.ok(last < 0.5 * first, ('training reduces the loss (%.4f -> %.4f)'):format(first, last))
end

-- The tree gates' entropy regularisers come back from the layer under their own name.
for _, G in ipairs {'DSelectK', 'COMET'} do
  local moe = gm.nn.MoE{d_model = 4, d_ff = 8, experts = 5, gate = gm.gates[G]{k = 2, gamma = 4, entropy = 0.1}}
  local _, aux = moe(gm.randn{6, 4})
  tap.ok(aux.entropy_reg ~= nil and aux.entropy_reg:item() > 0 and aux.entropy ~= nil,
         G .. ': aux.entropy_reg (the gate regulariser) beside aux.entropy (the gate entropy)')
end
tap.done()
