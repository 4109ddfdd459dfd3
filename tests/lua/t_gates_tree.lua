-- t_gates_tree.lua: the smooth-step gates (DSelect-k, COMET), log-space Sinkhorn, the Hungarian
-- algorithm and the permutation local search: values of the fused ops against Lua references,
-- gradchecks (f64) of the gates w.r.t. their parameters and input, the limiting behaviour once
-- the smooth-steps saturate (at most k experts, weights sum to 1), E not a power of two, k = 1,
-- T = 1, doubly stochastic Sinkhorn, Hungarian = brute force, Permuted freezes to a permutation.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local function f64(t) return gm.tensor(t, {dtype = 'f64'}) end
local gen = gm.Generator(42)
local function randn(shape, scale) return gm.randn(shape, {dtype = 'f64', generator = gen}) * (scale or 1) end

local function ss(x, g)
  if x <= -g / 2 then return 0 elseif x >= g / 2 then return 1 end
  return -2 * x ^ 3 / g ^ 3 + 3 * x / (2 * g) + 0.5
end

-- ---- smooth_step --------------------------------------------------------------------------
do
  local xs = {-1.5, -1, -0.3, 0, 0.5, 1, 2}
  local y = gm.smooth_step(f64(xs), 2):totable()
  local want = {0, 0, ss(-0.3, 2), 0.5, 0.84375, 1, 1}
  for i = 1, #xs do tap.close(y[i], want[i], 1e-12, ('smooth_step(%g, 2)'):format(xs[i])) end
  local y32 = gm.smooth_step(f64(xs):to('f32'), 2):totable()
  tap.close(y32[3], want[3], 1e-6, 'smooth_step f32 agrees with f64')
  local x = randn({3, 4}, 1)
  local err = gm.gradcheck(function(t) return gm.smooth_step(t, 3) end, {x})
  tap.ok(err < 1e-6, 'smooth_step gradcheck', 'err ' .. err)
  local xt = randn({4, 3}):transpose(0, 1)
  tap.all_close(gm.smooth_step(xt, 2):totable(), gm.smooth_step(xt:contiguous(), 2):totable(), 1e-15,
    'smooth_step on a transposed view')
  tap.errors(function() gm.smooth_step(f64{1}, 0) end, 'smooth_step: gamma', 'smooth_step gamma 0 refused')
end

-- ---- dselect_k op vs a Lua reference ------------------------------------------------------
local function dselect_ref(z, w, E, g) -- z [k][m], w [k] tables -> a [E], r [k][E]
  local k, m = #z, #z[1]
  local mx, s, al = -math.huge, 0, {}
  for i = 1, k do mx = math.max(mx, w[i]) end
  for i = 1, k do al[i] = math.exp(w[i] - mx); s = s + al[i] end
  local a, r = {}, {}
  for e = 1, E do a[e] = 0 end
  for i = 1, k do
    r[i] = {}
    for e = 0, E - 1 do
      local p = 1
      for j = 0, m - 1 do
        local S = ss(z[i][j + 1], g)
        p = p * (((e >> j) & 1) == 1 and S or 1 - S)
      end
      r[i][e + 1] = p
      a[e + 1] = a[e + 1] + al[i] / s * p
    end
  end
  return a, r
end

for _, E in ipairs {5, 6, 8} do
  local m = E == 8 and 3 or 3
  local z, w = randn({2, 2, m}, 1.5), randn({2, 2})
  local a, r = gm.dselect_k(z, w, E, 4)
  local zt, wt, at, rt = z:totable(), w:totable(), a:totable(), r:totable()
  local ok = true
  for t = 1, 2 do
    local ar, rr = dselect_ref(zt[t], wt[t], E, 4)
    for e = 1, E do ok = ok and math.abs(ar[e] - at[t][e]) < 1e-12 end
    for i = 1, 2 do for e = 1, E do ok = ok and math.abs(rr[i][e] - rt[t][i][e]) < 1e-12 end end
  end
  tap.ok(ok, ('dselect_k matches the Lua reference, E = %d'):format(E))
end
tap.errors(function() gm.dselect_k(randn{2, 2, 3}, randn{2, 2}, 9, 1) end, 'ceil%(log2', 'dselect_k: wrong m is an error')

-- ---- comet_gate op vs a Lua reference -----------------------------------------------------
local function comet_ref(nodes, leaves, g) -- nodes [k][E-1], leaves [k][E] -> g [E], mu [k][E]
  local k, E = #leaves, #leaves[1]
  local mu, q, Z = {}, {}, 0
  for t = 1, k do
    mu[t], q[t] = {}, {}
    for l = 0, E - 1 do
      local p, v = 1, E - 1 + l
      while v > 0 do
        local par = (v - 1) // 2
        local S = ss(nodes[t][par + 1], g)
        p = p * (v == 2 * par + 1 and S or 1 - S)
        v = par
      end
      mu[t][l + 1] = p
      q[t][l + 1] = p * math.exp(leaves[t][l + 1])
      Z = Z + q[t][l + 1]
    end
  end
  local out = {}
  for l = 1, E do
    out[l] = 0
    for t = 1, k do out[l] = out[l] + q[t][l] / Z end
  end
  return out, mu
end

for _, E in ipairs {2, 5, 6, 8} do
  local nodes, leaves = randn({3, 2, E - 1}, 2), randn({3, 2, E})
  local g, mu = gm.comet_gate(nodes, leaves, 3)
  local nt, lt, gt, mt = nodes:totable(), leaves:totable(), g:totable(), mu:totable()
  local ok, sums = true, true
  for t = 1, 3 do
    local gr, mr = comet_ref(nt[t], lt[t], 3)
    local s = 0
    for e = 1, E do ok = ok and math.abs(gr[e] - gt[t][e]) < 1e-12; s = s + gt[t][e] end
    for i = 1, 2 do
      local ms = 0
      for e = 1, E do ok = ok and math.abs(mr[i][e] - mt[t][i][e]) < 1e-12; ms = ms + mt[t][i][e] end
      sums = sums and math.abs(ms - 1) < 1e-12
    end
    sums = sums and math.abs(s - 1) < 1e-12
  end
  tap.ok(ok, ('comet_gate matches the Lua reference, E = %d'):format(E))
  tap.ok(sums, ('comet_gate: weights and each tree\'s reach probabilities sum to 1, E = %d'):format(E))
end
do -- huge leaf scores stay finite, f32 agrees with f64
  local nodes, leaves = randn({2, 2, 4}, 2), randn({2, 2, 5}, 300)
  local g = gm.comet_gate(nodes, leaves, 3)
  local fin = true
  for _, row in ipairs(g:totable()) do for _, v in ipairs(row) do fin = fin and v == v and v >= 0 and v <= 1 end end
  tap.ok(fin, 'comet_gate: scores of size 1e3 give finite weights')
  local n2, l2 = randn({2, 2, 4}, 2), randn({2, 2, 5})
  tap.all_close(gm.comet_gate(n2:to('f32'), l2:to('f32'), 3):totable(), gm.comet_gate(n2, l2, 3):totable(), 1e-5,
    'comet_gate f32 agrees with f64')
end

-- ---- gates: gradcheck w.r.t. parameters and input -----------------------------------------
-- f(x, params...) sets the gate's parameters to the gradcheck's copies, returns weights + aux.
local function gate_check(name, gate, T, scale)
  local names = {}
  for _, e in ipairs(gate:named_parameters()) do names[#names + 1] = e[1] end
  local inputs, holders = {randn({T, gate.d_model})}, {}
  for _, n in ipairs(names) do
    local mod, key = gate, n
    local path = {}
    for part in n:gmatch('[^.]+') do path[#path + 1] = part end
    for i = 1, #path - 1 do mod = mod[path[i]] end
    key = path[#path]
    holders[#holders + 1] = {mod, key}
    inputs[#inputs + 1] = randn(mod[key].shape, scale)
  end
  local err = gm.gradcheck(function(x, ...)
    local ps = table.pack(...)
    for i, h in ipairs(holders) do h[1][h[2]] = ps[i] end
    local r = gate(x, {step = 0})
    local outs = {r.weights}
    for _, k in ipairs {'entropy_reg', 'reach', 'perm_entropy'} do if r.aux[k] then outs[#outs + 1] = r.aux[k] end end
    return table.unpack(outs)
  end, inputs)
  tap.ok(err < 1e-5, name .. ': gradcheck w.r.t. input and parameters', 'max err ' .. err)
end

gate_check('DSelectK E=5 k=2', gm.gates.DSelectK{k = 2, gamma = 4, entropy = 0.1, d_model = 3, experts = 5, dtype = 'f64'}, 3, 0.5)
gate_check('DSelectK E=8 k=1 T=1', gm.gates.DSelectK{k = 1, gamma = 4, entropy = 0.1, d_model = 3, experts = 8, dtype = 'f64'}, 1, 0.5)
gate_check('DSelectK static E=6', gm.gates.DSelectK{k = 2, gamma = 4, entropy = 0.1, static = true, d_model = 3, experts = 6, dtype = 'f64'}, 2, 0.5)
gate_check('COMET E=6 k=2', gm.gates.COMET{k = 2, gamma = 4, entropy = 0.1, d_model = 3, experts = 6, dtype = 'f64'}, 3, 0.5)
gate_check('COMET E=5 k=1 T=1', gm.gates.COMET{k = 1, gamma = 4, entropy = 0.1, d_model = 3, experts = 5, dtype = 'f64'}, 1, 0.5)
gate_check('COMET static E=7', gm.gates.COMET{k = 2, gamma = 4, entropy = 0.1, static = true, d_model = 3, experts = 7, dtype = 'f64'}, 2, 0.5)

-- ---- limiting behaviour: saturated smooth-steps --------------------------------------------
local function check_sparse(name, r, k, T, E)
  local w, ok_n, ok_s = r.weights:to('f64'):totable(), true, true
  local maxn = 0
  for t = 1, T do
    local n, s = 0, 0
    for e = 1, #w[t] do if w[t][e] > 0 then n = n + 1 end; s = s + w[t][e] end
    maxn = math.max(maxn, n)
    ok_n = ok_n and n <= k and n >= 1
    ok_s = ok_s and math.abs(s - 1) < 1e-6
  end
  tap.ok(ok_n, name .. ': at most k experts selected', ('max nonzero %d, k %d'):format(maxn, k))
  tap.ok(ok_s, name .. ': weights sum to 1')
end

for _, cfg in ipairs {{5, 2}, {6, 2}, {8, 3}, {5, 1}, {7, 2}} do
  local E, k = cfg[1], cfg[2]
  for _, T in ipairs {1, 6} do
    -- COMET: random inputs, node weights scaled so every |node logit| >> gamma/2
    local c = gm.gates.COMET{k = k, gamma = 1, d_model = 4, experts = E, dtype = 'f64'}
    gm.no_grad(function()
      c.node_router.weight:copy_(randn(c.node_router.weight.shape, 100))
      c.node_router.bias:fill_(0)
      c.leaf_router.weight:copy_(randn(c.leaf_router.weight.shape))
    end)
    check_sparse(('COMET E=%d k=%d T=%d saturated'):format(E, k, T), c(randn({T, 4})), k, T, E)
    -- DSelect-k: biases encode reachable codes (selector s -> expert (3s+1) mod E), x-part tiny
    local d = gm.gates.DSelectK{k = k, gamma = 1, d_model = 4, experts = E, dtype = 'f64'}
    local m = d.bits
    local bias = {}
    for s = 0, k - 1 do
      local e = (3 * s + 1) % E
      for j = 0, m - 1 do bias[s * m + j + 1] = ((e >> j) & 1) == 1 and 10 or -10 end
    end
    gm.no_grad(function()
      d.z_router.weight:copy_(randn(d.z_router.weight.shape, 0.01))
      d.z_router.bias:copy_(f64(bias))
      d.w_router.weight:copy_(randn(d.w_router.weight.shape))
    end)
    local r = d(randn({T, 4}))
    check_sparse(('DSelectK E=%d k=%d T=%d saturated'):format(E, k, T), r, k, T, E)
    if r.aux.reach then tap.close(r.aux.reach:item(), T * k, 1e-9, 'DSelectK: reach regulariser = T*k once reachable') end
  end
end
do -- sparse=true returns k ids; static gates give every token the same weights
  local d = gm.gates.DSelectK{k = 2, gamma = 1, d_model = 4, experts = 8, static = true, sparse = true, dtype = 'f64'}
  gm.no_grad(function() d.z:copy_(f64{{10, -10, 10}, {-10, 10, -10}}) end)
  local r = d(randn{3, 4})
  tap.is(r.k, 2, 'DSelectK sparse: K = k')
  local ids = r.ids:totable()
  local set = {[ids[1][1]] = true, [ids[1][2]] = true}
  tap.ok(set[5] and set[2] and ids[3][1] == ids[1][1], 'DSelectK static sparse: codes 101 and 010 are experts 5 and 2')
  check_sparse('DSelectK static saturated', r, 2, 3, 8)
  -- an unreachable code loses its mass (E = 5, code 7), as in the paper
  local u = gm.gates.DSelectK{k = 1, gamma = 1, d_model = 2, experts = 5, static = true, dtype = 'f64'}
  gm.no_grad(function() u.z:copy_(f64{{10, 10, 10}}) end)
  local ru = u(randn{1, 2})
  tap.close(ru.weights:sum():item(), 0, 1e-12, 'DSelectK: a selector on an unreachable code gives weight 0')
end

-- ---- Sinkhorn -----------------------------------------------------------------------------
do
  local function ds_err(P, n)
    local t, err = P:totable(), 0
    for i = 1, n do
      local rs, cs = 0, 0
      for j = 1, n do rs = rs + t[i][j]; cs = cs + t[j][i] end
      err = math.max(err, math.abs(rs - 1), math.abs(cs - 1))
    end
    return err
  end
  for _, n in ipairs {1, 3, 6, 9} do
    local P = gm.sinkhorn(randn({n, n}, 2), 200):exp()
    local e = ds_err(P, n)
    tap.ok(e < 1e-8, ('sinkhorn %dx%d is doubly stochastic'):format(n, n), 'err ' .. e)
  end
  local x = randn({5, 5})
  -- tau = 1e-7: stays finite in log space; columns exact (the last half-step), rows converge
  -- slowly at so low a temperature (Sinkhorn's known O(1/iters) rate), so only near-hard here
  local P = gm.sinkhorn(x * 1e7, 30):exp()
  local t, ok = P:totable(), true
  for j = 1, 5 do
    local cs, rmax = 0, 0
    for i = 1, 5 do
      local v = t[i][j]
      ok = ok and v == v and v >= 0 and v <= 1
      cs = cs + v
      rmax = math.max(rmax, t[j][i])
    end
    ok = ok and math.abs(cs - 1) < 1e-9 and rmax > 0.9
  end
  tap.ok(ok, 'sinkhorn at tau 1e-7: finite, columns stochastic, rows near one-hot')
  local b = gm.sinkhorn(randn({2, 4, 4}), 100):exp()
  tap.ok(ds_err(b:select(0, 1), 4) < 1e-8, 'sinkhorn on a batch [2, 4, 4]')
  local xt = randn({4, 4})
  tap.all_close(gm.sinkhorn(xt:transpose(0, 1), 5):totable(), gm.sinkhorn(xt:transpose(0, 1):contiguous(), 5):totable(), 1e-14,
    'sinkhorn on a transposed view')
  local err = gm.gradcheck(function(y) return gm.sinkhorn(y, 7) end, {randn({4, 4})})
  tap.ok(err < 1e-6, 'sinkhorn gradcheck (7 iterations)', 'err ' .. err)
  tap.errors(function() gm.sinkhorn(randn{2, 3}, 3) end, 'sinkhorn: x .*%(square%)', 'sinkhorn: non-square refused')
end

-- ---- Hungarian ----------------------------------------------------------------------------
do
  local function brute(c, n)
    local best, used, cur = math.huge, {}, 0
    local function rec(i)
      if i > n then best = math.min(best, cur) return end
      for j = 1, n do
        if not used[j] then
          used[j] = true; cur = cur + c[i][j]; rec(i + 1); cur = cur - c[i][j]; used[j] = false
        end
      end
    end
    rec(1)
    return best
  end
  local ok, perm_ok = true, true
  for n = 1, 6 do
    for trial = 1, 6 do
      local c = randn({n, n}):totable()
      if n == 1 then c = {c[1]} end
      if trial == 6 then for i = 1, n do for j = 1, n do c[i][j] = math.floor(c[i][j] * 2) end end end -- ties
      local a, total = gm.gates.hungarian(c)
      local seen, s = {}, 0
      for i = 1, n do
        local j = a[i]
        perm_ok = perm_ok and math.type(j) == 'integer' and j >= 0 and j < n and not seen[j]
        seen[j] = true
        s = s + c[i][j + 1]
      end
      local want = brute(c, n)
      ok = ok and math.abs(s - want) < 1e-9 and math.abs(total - want) < 1e-9
    end
  end
  tap.ok(perm_ok, 'hungarian returns a permutation (0-based columns, each once)')
  tap.ok(ok, 'hungarian finds the brute-force optimum, n = 1..6')
  local a = gm.gates.hungarian(f64{{4, 1, 3}, {2, 0, 5}, {3, 2, 2}})
  tap.is(table.concat(a, ','), '1,0,2', 'hungarian on a tensor')
  local r = gm.gates.hungarian{{1, 2, 0, 5}, {0, 3, 4, 1}}
  tap.is(table.concat(r, ','), '2,0', 'hungarian on a 2x4 rectangle')
  tap.is(#gm.gates.hungarian{}, 0, 'hungarian of an empty matrix')
  tap.errors(function() gm.gates.hungarian{{1, 0 / 0}, {1, 2}} end, 'finite', 'hungarian: NaN refused')
  tap.errors(function() gm.gates.hungarian{{1}, {2}} end, 'rows <= columns', 'hungarian: more rows than columns refused')
end

-- ---- Permuted -----------------------------------------------------------------------------
for _, E in ipairs {4, 5, 6, 8} do
  local inner = gm.gates.COMET{k = 2, gamma = 1, d_model = 3, experts = E, dtype = 'f64'}
  local p = gm.gates.Permuted(inner, {steps = 5, dtype = 'f64'})
  local x = randn({4, 3})
  local r = p(x, {step = 0})
  check_sparse(('Permuted(COMET) E=%d soft phase'):format(E), r, E, 4, E)
  tap.ok(r.aux.perm_entropy ~= nil, 'Permuted: perm_entropy in aux')
  gm.no_grad(function() p.log_weights:copy_(randn({E, E})) end)
  local r2 = p(x, {step = 5}) -- auto freeze
  tap.ok(p.frozen, 'Permuted: frozen at the end of the window')
  local seen, ok = {}, #p.perm == E
  for i = 1, E do
    local j = p.perm[i]
    ok = ok and j >= 0 and j < E and not seen[j]
    seen[j] = true
  end
  tap.ok(ok, ('Permuted E=%d: freeze gives a true permutation'):format(E))
  -- frozen: expert perm[i] gets what inner expert i got
  local w0, w1, i1 = inner(x).weights:totable(), r2.weights:totable(), r2.ids:totable()
  local same = true
  for t = 1, 4 do
    for kk = 1, #i1[t] do same = same and i1[t][kk] == p.perm[kk] and w1[t][kk] == w0[t][kk] end
  end
  tap.ok(same, 'Permuted frozen: ids mapped through the permutation, weights kept')
  -- the hard permutation maximises the log-permutation matrix
  local lp = p:log_perm(p.steps, 0):totable()
  local s = 0
  for i = 1, E do s = s + lp[i][p.perm[i] + 1] end
  local _, tot = gm.gates.hungarian((-(p:log_perm(p.steps, 0))):totable())
  tap.close(-tot, s, 1e-9, 'Permuted: freeze uses the optimal assignment of log P')
end
do -- gradcheck through the soft permutation (tau fixed at 1, few iterations)
  local inner = gm.gates.COMET{k = 1, gamma = 4, d_model = 3, experts = 4, dtype = 'f64'}
  local p = gm.gates.Permuted(inner, {steps = 10, tau = gm.schedule.fixed(1), iters0 = 3, iters1 = 3, entropy = 0.1, dtype = 'f64'})
  gate_check('Permuted(COMET) soft phase', p, 2, 0.5)
  if gm.gates.TopK then
    local pk = gm.gates.Permuted(gm.gates.TopK{k = 2, d_model = 3, experts = 5, dtype = 'f64'}, {steps = 3, dtype = 'f64'})
    local r = pk(randn({3, 3}), {step = 0})
    check_sparse('Permuted(TopK) soft phase', r, 5, 3, 5)
    pk:freeze()
    local r2 = pk(randn({3, 3}), {step = 4})
    tap.is(r2.k, 2, 'Permuted(TopK) frozen keeps K = 2')
  end
end
tap.errors(function() gm.gates.Permuted({}, {}) end, 'must be a gm.gates gate', 'Permuted: needs a gate')
tap.errors(function() gm.gates.DSelectK{k = 2, d_model = 2, experts = 1} end, 'experts >= 2', 'DSelectK: E = 1 refused')
tap.errors(function() gm.gates.COMET{k = 2, gamma = -1} end, 'gamma', 'COMET: gamma <= 0 refused')
tap.errors(function() gm.gates.COMET{kk = 2} end, 'unknown option', 'COMET: unknown option refused')
tap.ok(require('gmoe.doc').get('gm.gates.COMET').formula ~= nil, 'COMET is documented with its formula')

tap.done()
