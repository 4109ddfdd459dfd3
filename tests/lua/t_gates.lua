-- t_gates.lua: gm.gates and gm.schedule: schedules' values, every basic gate's result shape,
-- f64 gradchecks with respect to the router input and the gate's parameters (noise fixed by a
-- generator re-seeded in ctx), limiting behaviours (dense-to-sparse at low temperature is top-1,
-- top-p with p -> 1 keeps all and p -> 0 one, hash balance on a uniform stream, renormalised
-- top-k sums to 1), k = E, E not a power of two, T = 1, and the C ops' values.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

-- Deep equality of nested tables (ids, shapes), shown as text on failure.
local function ser(v)
  if type(v) ~= 'table' then return tostring(v) end
  local t = {}
  for i = 1, #v do t[i] = ser(v[i]) end
  return '{' .. table.concat(t, ', ') .. '}'
end
local function same(got, want, name)
  return tap.ok(ser(got) == ser(want), name, ('got: %s\nwant: %s'):format(ser(got), ser(want)))
end

local function close(a, b, tol) return math.abs(a - b) <= (tol or 1e-9) * math.max(1, math.abs(b)) end

-- ---- schedules ---------------------------------------------------------------------------------
do
  local S = gm.schedule
  tap.is(S.fixed(0.5):value(123), 0.5, 'fixed')
  local l = S.linear(2, 0, 10)
  tap.ok(close(l:value(0), 2) and close(l:value(5), 1) and close(l:value(10), 0) and close(l:value(99), 0)
         and close(l:value(-3), 2), 'linear: ends, middle, clamped past the end and before 0')
  local c = S.cosine(2, 0, 10)
  tap.ok(close(c:value(0), 2) and close(c:value(5), 1) and close(c:value(10), 0), 'cosine: ends and middle')
  tap.ok(c:value(2) > 1.5 and c:value(8) < 0.5, 'cosine: slow at the ends')
  local g = S.geometric(2, 0.02, 10)
  tap.ok(close(g:value(0), 2) and close(g:value(5), 0.2) and close(g:value(10), 0.02) and close(g(20), 0.02),
         'geometric: ends, middle (geometric mean), call syntax')
  tap.errors(function() S.geometric(0, 1, 10) end, 'geometric: v0 and v1 must be > 0', 'geometric: positive')
  tap.errors(function() S.linear(1, 0, 0) end, 'steps must be an integer >= 1', 'linear: steps >= 1')
  tap.ok(S.is(l) and not S.is(3), 'schedule.is')
end

-- ---- the C ops' values -------------------------------------------------------------------------
do
  local z = gm.tensor({{1, 3, 2, 0.5, -1}, {0, 0, 0, 0, 0}, {5, -1, 2, 2, 0}}, {dtype = 'f64'})
  local P = gm.softmax(z, -1):totable()
  local w, ids, probs = gm.topk_gate(z, 2)
  same(ids:totable(), {{1, 2}, {0, 1}, {0, 2}}, 'topk_gate: ids sorted, ties to the lower index')
  tap.all_close(w:totable(), {{P[1][2], P[1][3]}, {P[2][1], P[2][2]}, {P[3][1], P[3][3]}}, 1e-12, 'topk_gate: raw probs')
  tap.all_close(probs:totable(), P, 1e-12, 'topk_gate: probs = softmax')
  local wr = gm.topk_gate(z, 2, true)
  local s = wr:sum(-1):totable()
  tap.all_close(s, {1, 1, 1}, 1e-12, 'topk_gate renormalised: rows sum to 1')
  local w32 = gm.topk_gate(z:to('f32'), 3, true)
  tap.all_close(w32:totable(), gm.topk_gate(z, 3, true):totable(), 1e-6, 'topk_gate: f32 agrees with f64')
  -- k = E: every expert, sorted
  local wE, iE = gm.topk_gate(z, 5, true)
  tap.all_close(wE:sum(-1):totable(), {1, 1, 1}, 1e-12, 'topk_gate k=E sums to 1')
  same(iE:totable()[2], {0, 1, 2, 3, 4}, 'topk_gate k=E: uniform row in index order')
  -- top-p
  local _, ip = gm.topp_gate(z, 0.6)
  same(ip:totable(), {{1, -1, -1}, {0, 1, 2}, {0, -1, -1}}, 'topp_gate: crossing expert included, -1 padding')
  local _, i1 = gm.topp_gate(z, 1)
  same(i1.shape, {3, 5}, 'topp_gate p=1: all experts')
  tap.ok(i1:ge(0):sum():item() == 15, 'topp_gate p=1: no padding')
  local w0, i0 = gm.topp_gate(z, 0)
  same(i0.shape, {3, 1}, 'topp_gate p=0: one expert per token')
  same(i0:totable(), {{1}, {0}, {0}}, 'topp_gate p=0: the argmax')
  tap.all_close(w0:totable(), {{P[1][2]}, {P[2][1]}, {P[3][1]}}, 1e-12, 'topp_gate: weights are raw probs')
  -- threshold
  local wt, it = gm.threshold_gate(z, 0.2, true)
  same(it:totable(), {{1, 2}, {0, -1}, {0, -1}}, 'threshold_gate: p > threshold (strict), sorted, at least one')
  tap.ok(close(wt:totable()[3][1], 1), 'threshold_gate renormalised: lone expert weight 1')
  same(({gm.threshold_gate(z, 0.99)})[2].shape, {3, 1}, 'threshold_gate: at least the top-1')
  -- non-contiguous input
  local zt = z:transpose(0, 1):contiguous():transpose(0, 1)
  tap.all_close(gm.topk_gate(zt, 2):totable(), w:totable(), 0, 'topk_gate: strided input')
  -- T = 0 and T = 1
  local we, ie = gm.topp_gate(gm.zeros({0, 4}, {dtype = 'f64'}), 0.5)
  same(we.shape, {0, 1}, 'topp_gate T=0')
  same(ie.shape, {0, 1}, 'topp_gate T=0 ids')
  tap.errors(function() gm.topk_gate(z, 6) end, 'topk_gate: k=6 out of range', 'topk_gate: k > E')
  tap.errors(function() gm.topp_gate(z, 1.5) end, 'topp_gate: p must be in', 'topp_gate: p > 1')
  tap.errors(function() gm.topk_gate(gm.randn{5}, 2) end, 'topk_gate: logits must be %[T, E%]', 'topk_gate: 1-D')
  -- backward of a combined loss matches finite differences through both outputs
  local err = gm.gradcheck(function(a) local ww, _, pp = gm.topp_gate(a, 0.7, true) return ww, pp end,
    {gm.tensor({{0.3, 1.2, -0.4, 2.0, 0.1}}, {dtype = 'f64'})})
  tap.ok(err < 1e-6, 'topp_gate gradcheck T=1, E=5: ' .. err)
end

-- ---- gates: shapes, gradchecks ----------------------------------------------------------------
local D, E, T = 4, 6, 5
local function make(cls, o)
  o = o or {}
  o.d_model, o.experts, o.dtype, o.generator = o.d_model or D, o.experts or E, 'f64', gm.Generator(11)
  return gm.gates[cls](o)
end
local X = gm.randn({T, D}, {dtype = 'f64', generator = gm.Generator(3)}) * 2

-- Check the protocol fields of a result.
local function check_result(name, r, Tn, En, dense)
  tap.ok(r.ids.dtype == 'i32' and r.ids.shape[1] == Tn and r.ids.shape[2] == r.k, name .. ': ids [T, K] i32')
  same(r.weights.shape, r.ids.shape, name .. ': weights like ids')
  tap.ok(type(r.aux) == 'table', name .. ': aux table')
  if r.probs then same(r.probs.shape, {Tn, En}, name .. ': probs [T, E]') end
  local ids = r.ids:totable()
  local okr = true
  for t = 1, #ids do
    local seen = {}
    for _, e in ipairs(ids[t]) do
      if e >= En or e < -1 or (e >= 0 and seen[e]) then okr = false end
      seen[e] = true
    end
  end
  tap.ok(okr, name .. ': ids in range, distinct per token')
  if dense then tap.is(r.k, En, name .. ': dense, K = E') end
end

-- gradcheck of weights (and probs) w.r.t. x and each named parameter; noise fixed per call.
local function gradcheck_gate(name, g, params, ctxf)
  local inputs, names = {X}, {'x'}
  for _, p in ipairs(params) do
    local obj, key = g, p
    local dot = p:find('.', 1, true)
    if dot then obj, key = g[p:sub(1, dot - 1)], p:sub(dot + 1) end
    inputs[#inputs + 1] = obj[key]:detach():clone()
    names[#names + 1] = p
  end
  local f = function(x, ...)
    local ps = {...}
    for i, p in ipairs(params) do
      local obj, key = g, p
      local dot = p:find('.', 1, true)
      if dot then obj, key = g[p:sub(1, dot - 1)], p:sub(dot + 1) end
      obj[key] = ps[i]
    end
    local r = g:forward(x, ctxf and ctxf() or {})
    local aux
    for _, v in pairs(r.aux) do aux = aux and aux + v or v end
    if aux then return r.weights, r.probs, aux end
    if r.probs then return r.weights, r.probs end
    return r.weights
  end
  local err = gm.gradcheck(f, inputs)
  tap.ok(err < 1e-6, ('%s: gradcheck w.r.t. %s: %.2e'):format(name, table.concat(names, ', '), err))
end

local function fixed_noise() return {generator = gm.Generator(5), step = 0} end

do -- Softmax
  local g = make('Softmax', {temperature = 0.7})
  local r = g(X)
  check_result('Softmax', r, T, E, true)
  tap.all_close(r.weights:totable(), gm.softmax(g.router(X) / 0.7, -1):totable(), 1e-12, 'Softmax: softmax(z / tau)')
  gradcheck_gate('Softmax', g, {'router.weight'})
  local gl = make('Softmax', {temperature = 2, learn_temperature = true})
  tap.ok(close(gl.log_temperature:item(), math.log(2)), 'Softmax: log-parameterised learnable temperature')
  tap.ok(#gl:parameters() == 2, 'Softmax learnable: router and log_temperature parameters')
  gradcheck_gate('Softmax learn_temperature', gl, {'router.weight', 'log_temperature'})
  local gs = make('Softmax', {temperature = gm.schedule.linear(1, 0.1, 10)})
  local hi = gs(X, {step = 0}).weights:max(-1):mean():item()
  local lo = gs(X, {step = 10}).weights:max(-1):mean():item()
  tap.ok(lo > hi, 'Softmax: scheduled temperature sharpens the gate')
  tap.errors(function() make('Softmax', {temperature = gm.schedule.fixed(1), learn_temperature = true}) end,
    'needs a number temperature', 'Softmax: learnable needs a number')
  tap.errors(function() gm.gates.Softmax{tau = 1} end, 'unknown option tau', 'Softmax: unknown option')
end

do -- DenseToSparse
  local g = make('DenseToSparse', {schedule = 1.5})
  local r = g(X, fixed_noise())
  check_result('DenseToSparse', r, T, E)
  gradcheck_gate('DenseToSparse (Gumbel noise fixed)', g, {'router.weight'}, fixed_noise)
  -- same generator state -> same noise
  local r2 = g(X, fixed_noise())
  tap.all_close(r2.weights:totable(), r.weights:totable(), 0, 'DenseToSparse: noise from ctx.generator')
  local cold = make('DenseToSparse', {schedule = 1e-4})
  local big = gm.randn({64, D}, {dtype = 'f64', generator = gm.Generator(8)})
  local rc = cold(big, fixed_noise())
  tap.is(rc.k, 1, 'DenseToSparse: tau = 1e-4 keeps one expert per token (top-1)')
  tap.ok(rc.weights:min():item() > 0.99, 'DenseToSparse: low temperature weight ~ 1')
  local hot = make('DenseToSparse', {schedule = 100})
  tap.is(hot(big, fixed_noise()).k, E, 'DenseToSparse: high temperature is dense')
  -- the annealed schedule shrinks the active set
  local ga = make('DenseToSparse', {schedule = gm.schedule.geometric(5, 1e-4, 100)})
  local n0 = ga(big, {generator = gm.Generator(1), step = 0}).ids:ge(0):sum():item()
  local n1 = ga(big, {generator = gm.Generator(1), step = 100}).ids:ge(0):sum():item()
  tap.ok(n0 > 2 * 64 and n1 == 64, ('DenseToSparse: active experts %d -> %d as tau anneals'):format(n0, n1))
  tap.ok(close(ga:temperature(50), math.sqrt(5 * 1e-4)), 'DenseToSparse: temperature(step)')
  g:eval()
  local e1, e2 = g(X, {generator = gm.Generator(1)}), g(X, {generator = gm.Generator(2)})
  tap.all_close(e1.weights:totable(), e2.weights:totable(), 0, 'DenseToSparse: no noise in eval')
end

do -- ActivationDTS
  local g = make('ActivationDTS', {activation = 'tanh', temperature = 0.5})
  g.bias = gm.randn({E}, {dtype = 'f64', generator = gm.Generator(4), requires_grad = true})
  local r = g(X)
  check_result('ActivationDTS', r, T, E, true)
  local want = gm.softmax(g.router(X):tanh() / 0.5 + g.bias, -1)
  tap.all_close(r.weights:totable(), want:totable(), 1e-12, 'ActivationDTS: softmax(tanh(z)/tau + b)')
  gradcheck_gate('ActivationDTS', g, {'router.weight', 'bias'})
  local gs = make('ActivationDTS', {activation = 'sigmoid', learn_temperature = true, temperature = 0.8})
  gradcheck_gate('ActivationDTS sigmoid learned tau', gs, {'router.weight', 'log_temperature', 'bias'})
  tap.errors(function() make('ActivationDTS', {activation = 'cube'}) end, 'unknown activation "cube"', 'ActivationDTS: bad activation')
end

do -- TopK
  local g = make('TopK', {k = 2})
  local r = g(X)
  check_result('TopK', r, T, E)
  tap.is(r.k, 2, 'TopK: K = k')
  tap.all_close(r.weights:sum(-1):totable(), {1, 1, 1, 1, 1}, 1e-12, 'TopK renormalised: weights sum to 1')
  gradcheck_gate('TopK', g, {'router.weight'})
  local graw = make('TopK', {k = 1, renormalize = false})
  local rr = graw(X)
  tap.all_close(rr.weights:totable(), rr.probs:max(-1, true):totable(), 1e-12, 'TopK k=1 raw: Switch weight = max prob')
  local gn = make('TopK', {k = 2, noisy = true})
  tap.ok(gn.noise.weight:abs():max():item() == 0, 'TopK noisy: W_noise zeros at init (Shazeer)')
  gn.noise.weight = (gm.randn({E, D}, {dtype = 'f64', generator = gm.Generator(9)}) * 0.3):requires_grad_()
  check_result('TopK noisy', gn(X, fixed_noise()), T, E)
  gradcheck_gate('TopK noisy (noise fixed)', gn, {'router.weight', 'noise.weight'}, fixed_noise)
  local a, b = gn(X, {generator = gm.Generator(1)}), gn(X, {generator = gm.Generator(2)})
  tap.ok((a.probs - b.probs):abs():max():item() > 0, 'TopK noisy: different noise, different probs')
  gn:eval()
  tap.all_close(gn(X, {generator = gm.Generator(1)}).probs:totable(), gm.softmax(gn.router(X), -1):totable(), 1e-12,
    'TopK noisy: clean in eval')
  local gE = make('TopK', {k = E})
  local rE = gE(X)
  tap.is(rE.k, E, 'TopK k = E')
  tap.all_close(rE.weights:sum(-1):totable(), {1, 1, 1, 1, 1}, 1e-12, 'TopK k = E sums to 1')
  gradcheck_gate('TopK k=E', gE, {'router.weight'})
  tap.errors(function() make('TopK', {k = 7}) end, 'k=7 is larger than experts=6', 'TopK: k > E')
end

do -- TopP
  local g = make('TopP', {p = 0.5, dynamic_loss = 0.1})
  local r = g(X)
  check_result('TopP', r, T, E)
  tap.ok(r.aux.dynamic ~= nil and r.aux.dynamic:dim() == 0, 'TopP: aux.dynamic scalar')
  local P = r.probs
  local H = -(P * P:log()):sum(-1):mean():item()
  tap.ok(close(r.aux.dynamic:item(), 0.1 * H, 1e-10), 'TopP: dynamic loss = beta * mean entropy')
  gradcheck_gate('TopP (with dynamic loss)', g, {'router.weight'})
  tap.is(make('TopP', {p = 1})(X).k, E, 'TopP p = 1 selects all')
  tap.is(make('TopP', {p = 0})(X).k, 1, 'TopP p = 0 selects one')
  local r9 = make('TopP', {p = 0.9})(X)
  local w, ids = r9.weights:totable(), r9.ids:totable()
  local okc = true
  for t = 1, T do
    local cum, n = 0, 0
    for j = 1, r9.k do if ids[t][j] >= 0 then cum = cum + w[t][j]; n = n + 1 end end
    if cum < 0.9 - 1e-12 or (cum - w[t][n]) >= 0.9 then okc = false end
  end
  tap.ok(okc, 'TopP: kept mass reaches p, and only through the crossing expert')
  tap.ok(make('TopP', {dynamic_loss = 0})(X).aux.dynamic == nil, 'TopP: no dynamic loss at beta 0')
end

do -- Hash
  local g = gm.gates.Hash{hash = 'balanced', experts = E, d_model = D}
  local N, V = 6000, 60
  local toks = {}
  for i = 1, N do toks[i] = (i * 37) % V end -- a uniform stream over the vocabulary
  local x = gm.zeros({N, D})
  local r = g(x, {token_ids = gm.tensor(toks, {dtype = 'i32'})})
  check_result('Hash balanced', r, N, E)
  local cnt = {}
  for _, row in ipairs(r.ids:totable()) do cnt[row[1]] = (cnt[row[1]] or 0) + 1 end
  local okb = true
  for e = 0, E - 1 do if cnt[e] ~= N / E then okb = false end end
  tap.ok(okb, 'Hash balanced: exactly N/E tokens per expert on a uniform stream')
  local rr = gm.gates.Hash{experts = 5, d_model = D}(gm.zeros({N, D}), {token_ids = gm.randint(0, 1000, {N}, {generator = gm.Generator(2)})})
  local c2, mx, mn = {}, 0, math.huge
  for _, row in ipairs(rr.ids:totable()) do c2[row[1]] = (c2[row[1]] or 0) + 1 end
  for e = 0, 4 do mx = math.max(mx, c2[e] or 0); mn = math.min(mn, c2[e] or 0) end
  tap.ok(mx / mn < 1.2, ('Hash random: roughly balanced on random ids (max/min %.3f)'):format(mx / mn))
  local r1 = gm.gates.Hash{experts = 5, d_model = D}(gm.zeros({3, D}), {token_ids = gm.tensor({7, 7, 8}, {dtype = 'i32'})})
  local ids1 = r1.ids:totable()
  tap.ok(ids1[1][1] == ids1[2][1], 'Hash: same token, same expert')
  tap.all_close(r1.weights:totable(), {{1}, {1}, {1}}, 0, 'Hash: weight 1')
  -- frequency-balanced table: one heavy token gets an expert to itself
  local gf = gm.gates.Hash{hash = 'balanced', frequencies = {100, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10}, experts = 2, d_model = D}
  tap.ok(gf:route(0) ~= gf:route(1) and gf:route(1) == gf:route(10), 'Hash balanced: frequency table (LPT)')
  tap.errors(function() g(gm.zeros({2, D})) end, 'needs ctx.token_ids', 'Hash: token ids required')
end

do -- Random (THOR)
  local g = gm.gates.Random{experts = 3, d_model = D}
  local r = g(X, {generator = gm.Generator(1)})
  check_result('Random', r, T, 3)
  local ids = r.ids:totable()
  local same = true
  for t = 2, T do if ids[t][1] ~= ids[1][1] then same = false end end
  tap.ok(same, 'Random: one expert for the whole batch in training')
  local seen = {}
  for s = 1, 40 do seen[g(X, {generator = gm.Generator(s)}).ids:totable()[1][1]] = true end
  tap.ok(seen[0] and seen[1] and seen[2], 'Random: every expert drawn over forwards')
  g:eval()
  local ev = g(gm.zeros({300, D}), {generator = gm.Generator(1)}).ids:totable()
  local c = {}
  for _, row in ipairs(ev) do c[row[1]] = (c[row[1]] or 0) + 1 end
  tap.ok((c[0] or 0) > 60 and (c[1] or 0) > 60 and (c[2] or 0) > 60, 'Random: per-token draws in eval')
  local la = gm.randn({4, 7}, {dtype = 'f64'})
  local lb = gm.randn({4, 7}, {dtype = 'f64'})
  tap.ok(close(gm.gates.Random.consistency_loss(la, lb):item(), gm.symmetric_kl(la, lb):item()),
    'Random.consistency_loss = symmetric_kl')
  tap.ok(gm.gates.Random.consistency_loss(la, la):item() < 1e-12, 'consistency_loss of equal logits is 0')
end

do -- ExpertChoice
  local g = make('ExpertChoice', {capacity = 2})
  local r = g(X)
  check_result('ExpertChoice', r, T, E)
  local count = {}
  for _, row in ipairs(r.ids:totable()) do for _, e in ipairs(row) do if e >= 0 then count[e] = (count[e] or 0) + 1 end end end
  local okc = true
  for e = 0, E - 1 do if count[e] ~= 2 then okc = false end end
  tap.ok(okc, 'ExpertChoice: every expert takes exactly C tokens')
  -- the picks are each expert's top-C tokens by probability
  local P = r.probs:totable()
  local ids, okp = r.ids:totable(), true
  for e = 0, E - 1 do
    local col = {}
    for t = 1, T do col[t] = {P[t][e + 1], t} end
    table.sort(col, function(a, b) return a[1] > b[1] end)
    for j = 1, 2 do
      local t, found = col[j][2], false
      for _, id in ipairs(ids[t]) do if id == e then found = true end end
      if not found then okp = false end
    end
  end
  tap.ok(okp, 'ExpertChoice: experts pick their top-C tokens')
  local w, okw = r.weights:totable(), true
  for t = 1, T do for j = 1, r.k do
    local e = ids[t][j]
    if (e >= 0 and not close(w[t][j], P[t][e + 1])) or (e < 0 and w[t][j] ~= 0) then okw = false end
  end end
  tap.ok(okw, 'ExpertChoice: weights = probs at the picks, 0 at padding')
  gradcheck_gate('ExpertChoice', g, {'router.weight'})
  tap.is(make('ExpertChoice', {capacity_factor = 1})(X).ids:ge(0):sum():item(), math.max(E, T) == E and E or T,
    'ExpertChoice: capacity_factor 1 gives ceil(T/E) tokens per expert')
end

-- ---- edge sizes: T = 1, E not a power of two, E = 1 --------------------------------------------
do
  local x1 = gm.randn({1, D}, {dtype = 'f64', generator = gm.Generator(21)})
  for _, spec in ipairs {
    {'Softmax', {}}, {'DenseToSparse', {schedule = 1}}, {'ActivationDTS', {}}, {'TopK', {k = 2}},
    {'TopK', {k = 2, noisy = true}}, {'TopP', {p = 0.5}}, {'ExpertChoice', {}},
  } do
    for _, e in ipairs {1, 3, 7} do
      local o = {}
      for k, v in pairs(spec[2]) do o[k] = v end
      if o.k and o.k > e then o.k = e end
      o.experts = e
      local g = make(spec[1], o)
      local r = g(x1, fixed_noise())
      local okw = r.ids.shape[1] == 1 and r.weights:ge(0):sum():item() == r.k
      tap.ok(okw and (not r.probs or close(r.probs:sum():item(), 1)),
        ('%s: T = 1, E = %d (K = %d)'):format(spec[1], e, r.k))
    end
  end
  -- f32 router
  local g32 = gm.gates.TopK{k = 2, d_model = D, experts = 5}
  local r32 = g32(gm.randn{3, D})
  tap.is(r32.weights.dtype, 'f32', 'TopK: f32 router gives f32 weights')
  tap.errors(function() g32(gm.randn{3, D + 1}) end, 'x must be %[T, 4%]', 'gate: wrong d_model')
  tap.errors(function() gm.gates.TopK{k = 2}(gm.randn{3, D}) end, 'call setup', 'gate: setup needed')
  -- setup protocol as gm.nn.MoE uses it
  local gs = gm.gates.TopP{p = 0.3}
  gs:setup(D, 5)
  tap.ok(gs.experts == 5 and gs.k == 5 and gs.router ~= nil, 'setup(d_model, experts) allocates the router')
end

-- ---- docs --------------------------------------------------------------------------------------
do
  local d = require 'gmoe.doc'
  for _, n in ipairs {'Gate', 'Softmax', 'DenseToSparse', 'ActivationDTS', 'TopK', 'TopP', 'Hash', 'Random', 'ExpertChoice'} do
    local e = d.get('gm.gates.' .. n)
    tap.ok(e and (n == 'Gate' or (e.formula and e.paper)), 'doc entry with formula and paper: gm.gates.' .. n)
  end
end

tap.done()
