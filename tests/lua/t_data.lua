-- t_data.lua: gm.data: DataLoader and loop, the synthetic generators (Gaussian MoE statistics,
-- multi-task MoE regression, MQAR invariants, procedural shapes), the character corpus, and the
-- IDX / CIFAR readers on files written here (well-formed and malformed).
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'
local D = gm.data

local function sorted(t) table.sort(t); return t end
local function range(n) local t = {} for i = 1, n do t[i] = i - 1 end return t end
local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end
local function flat(x) return x:flatten():totable() end

-- ---- DataLoader --------------------------------------------------------------------------------
do
  local n = 10
  local x = gm.arange(0, n):to('f32'):reshape {n, 1} * 2
  local y = gm.arange(0, n)
  local L = D.DataLoader({x, y}, {batch_size = 4, shuffle = true, generator = gm.Generator(5)})
  tap.is(#L, 3, '#loader = ceil(10 / 4)')
  tap.is(#D.DataLoader({x, y}, {batch_size = 4, drop_last = true}), 2, 'drop_last: floor(10 / 4)')
  tap.is(#D.DataLoader(x, {batch_size = 5, drop_last = true}), 2, 'drop_last with an exact split')
  local epochs = {}
  for e = 1, 3 do
    local seen, sizes, pairs_ok = {}, {}, true
    for i, xb, yb in L:iter() do
      sizes[i] = yb.shape[1]
      for j, v in ipairs(yb:totable()) do
        seen[#seen + 1] = v
        if xb[j - 1][0]:item() ~= 2 * v then pairs_ok = false end
      end
    end
    tap.ok(same(sorted({table.unpack(seen)}), range(n)), ('epoch %d is a permutation of 0..9'):format(e))
    tap.ok(same(sizes, {4, 4, 2}), ('epoch %d batch sizes 4, 4, 2'):format(e))
    tap.ok(pairs_ok, ('epoch %d keeps x and y rows together'):format(e))
    epochs[e] = seen
  end
  tap.ok(not same(epochs[1], epochs[2]) or not same(epochs[2], epochs[3]), 'epochs reshuffle')
  local L2 = D.DataLoader({x, y}, {batch_size = 4, shuffle = true, seed = 5})
  local again = {}
  for _, _, yb in L2:iter() do for _, v in ipairs(yb:totable()) do again[#again + 1] = v end end
  tap.ok(same(again, epochs[1]), 'same seed, same first epoch (seed= and generator= agree)')
  tap.is(L.epoch, 3, 'loader.epoch counts epochs')

  local Ld = D.DataLoader({x, y}, {batch_size = 4, shuffle = true, drop_last = true, seed = 1})
  local cnt, sz = 0, {}
  for batch, i in Ld:batches() do cnt = cnt + 1; sz[i] = batch[2].shape[1] end
  tap.ok(cnt == 2 and sz[1] == 4 and sz[2] == 4, 'drop_last drops the short batch')

  local order = {}
  for _, yb in D.DataLoader(y, {batch_size = 3}):iter() do for _, v in ipairs(yb:totable()) do order[#order + 1] = v end end
  tap.ok(same(order, range(n)), 'no shuffle: data order')

  local named = D.DataLoader({inp = x, tgt = y}, {batch_size = 5})
  local ok = true
  for i, b in named:iter() do ok = ok and b.inp.shape[1] == 5 and b.tgt[0]:item() == (i - 1) * 5 end
  tap.ok(ok, 'named data gives named batches')

  local calls = {}
  local steps = D.loop(L, 2, function(epoch, step, xb, yb) calls[#calls + 1] = epoch * 10 + step end)
  tap.ok(steps == 6 and same(calls, {11, 12, 13, 21, 22, 23}), 'loop calls fn(epoch, step, ...) for every batch')
  tap.is(D.loop(L, 5, function(e, s) if e == 2 and s == 2 then return false end end), 5, 'fn returning false stops')
  tap.errors(function() D.DataLoader({x, gm.zeros {3}}) end, 'dim 0', 'dim 0 mismatch is an error')
  tap.errors(function() D.DataLoader({x}, {batch_sz = 3}) end, 'unknown option batch_sz', 'unknown option')
  tap.errors(function() D.loop({}, 1, print) end, 'DataLoader', 'loop needs a loader')
end

-- ---- Gaussian MoE ------------------------------------------------------------------------------
do
  local n = 200000
  local X, Y, p, lat = D.gaussian_moe {n = n, seed = 11}
  tap.ok(X.shape[1] == n and X.shape[2] == 1 and Y.shape[1] == n and X.dtype == 'f64', 'gaussian_moe shapes')
  tap.ok(X:min():item() >= 0 and X:max():item() < 1, 'x ~ U[0, 1]')
  local z = lat.z
  tap.is(z.dtype, 'i32', 'latent z is i32')
  -- mixing proportions match the softmax gate: mean one-hot(z) vs mean gate probability
  local freq = gm.one_hot(z, 2):to('f64'):mean(0):totable()
  local pm = lat.probs:mean(0):totable()
  local se = math.sqrt(pm[2] * (1 - pm[2]) / n)
  tap.ok(math.abs(freq[2] - pm[2]) < 4 * se, ('P(z = 1) %.4f vs mean gate %.4f'):format(freq[2], pm[2]))
  -- conditional on x in a bin, the mixing proportion follows the gate there
  local xs, zs, probs = flat(X), z:totable(), lat.probs:totable()
  local bins = {}
  for i = 1, n do
    local b = math.min(math.floor(xs[i] * 5), 4) + 1
    bins[b] = bins[b] or {n = 0, z = 0, p = 0}
    bins[b].n, bins[b].z, bins[b].p = bins[b].n + 1, bins[b].z + zs[i], bins[b].p + probs[i][2]
  end
  local worst = 0
  for _, b in ipairs(bins) do
    local pz, pp = b.z / b.n, b.p / b.n
    worst = math.max(worst, math.abs(pz - pp) / math.sqrt(pp * (1 - pp) / b.n + 1e-12))
  end
  tap.ok(worst < 4.5, ('per-bin mixing proportions match the gate (worst %.2f se)'):format(worst))
  -- given the expert, y - (a_z x + b_z) has mean 0 and variance nu_z
  local a, b, nu = flat(p.a), p.b:totable(), p.nu:totable()
  local ys = Y:totable()
  local s1, s2, cnt = {0, 0}, {0, 0}, {0, 0}
  for i = 1, n do
    local e = zs[i] + 1
    local r = ys[i] - (a[e] * xs[i] + b[e])
    s1[e], s2[e], cnt[e] = s1[e] + r, s2[e] + r * r, cnt[e] + 1
  end
  for e = 1, 2 do
    local mean = s1[e] / cnt[e]
    local var = s2[e] / cnt[e] - mean * mean
    tap.ok(math.abs(mean) < 4 * math.sqrt(nu[e] / cnt[e]), ('expert %d: E[y | z, x] = a x + b (residual mean %.5f)'):format(e, mean))
    tap.ok(math.abs(var / nu[e] - 1) < 4 * math.sqrt(2 / cnt[e]), ('expert %d: Var[y | z, x] = nu (%.5f vs %.5f)'):format(e, var, nu[e]))
  end
  local X2, Y2 = D.gaussian_moe {n = 1000, seed = 11}
  local X3, Y3 = D.gaussian_moe {n = 1000, generator = gm.Generator(11)}
  tap.ok(same(flat(Y2), flat(Y3)) and same(flat(X2), flat(X3)), 'seeded reproducibility')

  -- gate variants against hand-computed formulas
  local Xs = gm.tensor({{0.2}, {0.7}}, {dtype = 'f64'})
  local params = {beta0 = gm.tensor({0, -2}, {dtype = 'f64'}), beta1 = gm.tensor({{0}, {6}}, {dtype = 'f64'}),
                  a = gm.tensor({{-3}, {3}}, {dtype = 'f64'}), b = gm.tensor({1, -1}, {dtype = 'f64'}),
                  nu = gm.tensor({0.09, 0.16}, {dtype = 'f64'}), tau = 0.5}
  local function sm2(l1, l2) local m = math.max(l1, l2); local e1, e2 = math.exp(l1 - m), math.exp(l2 - m); return e2 / (e1 + e2) end
  params.gate = 'temperature'
  local g = D.gaussian_moe_gate(Xs, params):totable()
  tap.close(g[2][2], sm2(0, (6 * 0.7 - 2) / 0.5), 1e-12, 'temperature gate: softmax((beta1 x + beta0) / tau)')
  params.gate = 'activation'
  g = D.gaussian_moe_gate(Xs, params):totable()
  tap.close(g[1][2], sm2(0, math.tanh(6 * 0.2) / 0.5 - 2), 1e-12, 'activation gate: softmax(tanh(beta1 x) / tau + beta0)')
  params.gate = 'softmax'
  g = D.gaussian_moe_gate(Xs, params):totable()
  tap.close(g[2][2], sm2(0, 6 * 0.7 - 2), 1e-12, 'softmax gate ignores tau')
  -- log-likelihood by hand at one point
  local ll = D.gaussian_moe_loglik(Xs, gm.tensor({0.5, 1.0}, {dtype = 'f64'}), params):totable()
  local function npdf(y, m, v) return math.exp(-(y - m) ^ 2 / (2 * v)) / math.sqrt(2 * math.pi * v) end
  local g2 = sm2(0, 6 * 0.7 - 2)
  tap.close(ll[2], math.log((1 - g2) * npdf(1.0, -3 * 0.7 + 1, 0.09) + g2 * npdf(1.0, 3 * 0.7 - 1, 0.16)), 1e-10,
            'gaussian_moe_loglik matches the mixture density')
tap.errors(function() return D.gaussian_moe_loglik(Xs, 7, params) end, 'gaussian_moe_loglik: argument 2 %(Y%)',
           'gaussian_moe_loglik names a bad Y as argument 2')
tap.errors(function() return D.gaussian_moe_loglik(Xs, Xs, 5) end, 'argument 3 %(params%)',
           'and bad params as argument 3')
  -- top-K: K = 1 is a hard argmax gate; z is the argmax expert
  local Xk, _, pk, lk = D.gaussian_moe {n = 5000, seed = 3, gate = 'topk', K = 1}
  local maxp = lk.probs:max(-1):min():item()
  tap.is(maxp, 1.0, 'top-1 gate probabilities are one-hot')
  local s = Xk:matmul(pk.beta1:t()) + pk.beta0
  tap.ok(same(lk.z:totable(), s:argmax(-1):totable()), 'top-1: the sampled expert is the argmax score')
  local _, _, _, l3 = D.gaussian_moe {n = 100, seed = 3, gate = 'topk', K = 2, beta0 = {0, 1, -1},
    beta1 = {0, 2, 4}, a = {1, 2, 3}, b = {0, 0, 0}, nu = {1, 1, 1}}
  local zero_per_row = l3.probs:eq(0):sum(-1):totable()
  local okz = true
  for _, v in ipairs(zero_per_row) do okz = okz and v == 1 end
  tap.ok(okz, 'top-2 of 3: exactly one expert gets probability 0 per row')
  -- the loglik is differentiable in the parameters
  local pg = {gate = 'temperature', tau = gm.tensor(1.5, {dtype = 'f64'}), beta0 = params.beta0, beta1 = params.beta1,
              a = params.a, b = params.b, nu = params.nu}
  local err = gm.gradcheck(function(b1, a1, t)
    local q = {gate = 'temperature', tau = t, beta0 = pg.beta0, beta1 = b1, a = a1, b = pg.b, nu = pg.nu}
    return D.gaussian_moe_loglik(Xs, gm.tensor({0.5, 1.0}, {dtype = 'f64'}), q)
  end, {pg.beta1, pg.a, pg.tau})
  tap.ok(err < 1e-6, ('gaussian_moe_loglik gradcheck (%.2e)'):format(err))
  tap.errors(function() D.gaussian_moe {n = 10, d = 3} end, 'd = 3', 'd > 1 needs parameters')
  tap.errors(function() D.gaussian_moe {n = 10, beta0 = {0, 1}} end, 'missing beta1', 'partial parameters')
  tap.errors(function() D.gaussian_moe {n = 10, gate = 'bogus'} end, 'gate must be one of', 'bad gate name')
end

-- ---- multi-task MoE regression -----------------------------------------------------------------
do
  local d = D.mtl_regression {n_train = 4000, n_val = 500, n_test = 500, seed = 4, dtype = 'f64'}
  tap.ok(d.train.x.shape[1] == 4000 and d.train.x.shape[2] == 10 and d.val.y.shape[1] == 500 and
         d.test.y.shape[2] == 2, 'mtl_regression split shapes')
  local sup = d.truth.supports
  local all = {sup[1][1][1], sup[1][1][2], sup[2][1][1], sup[2][1][2]}
  tap.ok(#sorted(all) == 4 and all[1] ~= all[2] and all[2] ~= all[3] and all[3] ~= all[4],
         'fixed supports: 2 distinct experts per task, disjoint across tasks')
  -- recompute the mixture from the truth: the residual is the N(0, 0.1^2) noise
  local U, v = d.truth.U, d.truth.v
  local x = d.train.x
  local Fx = (x:matmul(U:reshape {16 * 8, 10}:t())):tanh():reshape {4000, 16, 8}
  Fx = (Fx * v):sum(-1)
  local mix = (Fx:gather(1, d.train.experts:reshape {4000, 4}):reshape {4000, 2, 2} * d.train.weights):sum(-1)
  local r = d.train.y - mix
  local sd = r:var():sqrt():item()
  tap.ok(math.abs(sd - 0.1) < 0.005 and math.abs(r:mean():item()) < 0.01, ('residual sd %.4f = noise 0.1'):format(sd))
  local w = d.train.weights:sum(-1):totable()
  tap.ok(math.abs(w[1][1] - 1) < 1e-12 and math.abs(w[1][2] - 1) < 1e-12, 'weights sum to 1')
  local t = D.mtl_regression {n_train = 2000, n_val = 0, n_test = 0, seed = 4, gate = 'tree', depth = 2}
  local ex = t.train.experts:totable()
  local distinct, pairs_seen, count = true, {}, 0
  for i = 1, #ex do
    for task = 1, 2 do
      local e = ex[i][task]
      distinct = distinct and e[1] ~= e[2]
      local key = task .. ':' .. e[1] .. ',' .. e[2]
      if not pairs_seen[key] then pairs_seen[key] = true; count = count + 1 end
    end
  end
  tap.ok(distinct, 'tree gate: 2 distinct experts per example and task')
  tap.ok(count > 2 and count <= 8, ('tree gate: supports vary across examples (%d of <= 8 leaves seen)'):format(count))
end

-- ---- MQAR --------------------------------------------------------------------------------------
do
  local N, V, T, Dk = 3000, 128, 64, 8
  local inp, lab = D.mqar {n = N, vocab_size = V, seq_len = T, num_kv_pairs = Dk, seed = 7}
  tap.ok(inp.dtype == 'i32' and lab.dtype == 'i32' and inp.shape[1] == N and inp.shape[2] == T and
         lab.shape[2] == T, 'mqar: inputs and labels [N, T] i32')
  local I, L = inp:totable(), lab:totable()
  local ctx, space = 2 * Dk, (T - 2 * Dk) // 2
  local ok = {keys = true, vals = true, query = true, other = true, count = true, slots = true}
  local first_slot = {}
  local gap_sum = 0
  for i = 1, N do
    local row, lrow = I[i], L[i]
    local kv, seen_k, seen_v = {}, {}, {}
    for j = 1, Dk do
      local k, v = row[2 * j - 1], row[2 * j]
      if k < 1 or k >= V // 2 or seen_k[k] then ok.keys = false end
      if v < V // 2 or v >= V or seen_v[v] then ok.vals = false end
      seen_k[k], seen_v[v], kv[k] = true, true, v
    end
    local labelled = 0
    for pos = ctx + 1, T do
      if lrow[pos] ~= -100 then
        labelled = labelled + 1
        if (pos - 1 - ctx) % 2 ~= 0 or kv[row[pos]] ~= lrow[pos] then ok.query = false end
      elseif row[pos] ~= 0 then ok.other = false end
    end
    for pos = 1, ctx do if lrow[pos] ~= -100 then ok.other = false end end
    if labelled ~= Dk then ok.count = false end
    -- the query of the first context pair: its slot
    for pos = ctx + 1, T do
      if row[pos] == row[1] and lrow[pos] ~= -100 then
        local s = (pos - 1 - ctx) // 2
        first_slot[s] = (first_slot[s] or 0) + 1
        gap_sum = gap_sum + s
      end
    end
  end
  tap.ok(ok.keys, 'keys distinct within a sequence, from 1 .. V/2-1')
  tap.ok(ok.vals, 'values distinct, from V/2 .. V-1')
  tap.ok(ok.query, 'every labelled position holds a context key at an even offset; label = its value')
  tap.ok(ok.count, 'exactly num_kv_pairs labels per sequence')
  tap.ok(ok.other, 'labels -100 elsewhere; filler is token 0')
  -- the first drawn slot follows p_s = a (s+1)^(a-1) / sum
  local a, tot = 0.01, 0
  for s = 0, space - 1 do tot = tot + a * (s + 1) ^ (a - 1) end
  local worst = 0
  for s = 0, 3 do
    local p = a * (s + 1) ^ (a - 1) / tot
    local f = (first_slot[s] or 0) / N
    worst = math.max(worst, math.abs(f - p) / math.sqrt(p * (1 - p) / N))
  end
  tap.ok(worst < 4.5, ('first query slot ~ power law a (s+1)^(a-1) (worst %.2f se)'):format(worst))
  local _, labu = D.mqar {n = 2000, vocab_size = V, seq_len = T, num_kv_pairs = 1, power_a = 1, seed = 8}
  local su = 0
  for _, row in ipairs(labu:totable()) do
    for pos = 1, T do if row[pos] ~= -100 then su = su + (pos - 1 - 2) // 2 end end
  end
  local space1 = (T - 2) // 2
  local mean_u, sd_u = su / 2000, math.sqrt((space1 ^ 2 - 1) / 12 / 2000)
  tap.ok(math.abs(mean_u - (space1 - 1) / 2) < 4 * sd_u, ('power_a = 1: uniform slots (mean %.2f)'):format(mean_u))
  tap.ok(gap_sum / N < (space - 1) / 2, 'power_a = 0.01 places queries earlier than uniform')
  local i2, l2 = D.mqar {n = N, vocab_size = V, seq_len = T, num_kv_pairs = Dk, generator = gm.Generator(7)}
  tap.ok(same(flat(i2), flat(inp)) and same(flat(l2), flat(lab)), 'seeded reproducibility')
  local i3 = D.mqar {n = N, vocab_size = V, seq_len = T, num_kv_pairs = Dk, seed = 70}
  tap.ok(not same(flat(i3), flat(inp)), 'another seed, other examples')
  local ir, lr = D.mqar {n = 200, vocab_size = V, seq_len = T, num_kv_pairs = 4, seed = 9, random_non_queries = true}
  local zeros = ir:eq(0):sum():item()
  tap.ok(zeros < 200 * T * 0.05, 'random_non_queries replaces the filler')
  local qok = true
  local IR, LR = ir:totable(), lr:totable()
  for i = 1, 200 do
    local kv = {}
    for j = 1, 4 do kv[IR[i][2 * j - 1]] = IR[i][2 * j] end
    for pos = 1, T do if LR[i][pos] ~= -100 and kv[IR[i][pos]] ~= LR[i][pos] then qok = false end end
  end
  tap.ok(qok, 'random_non_queries keeps the queries and labels')
  local ip = D.mqar {n = 5, vocab_size = V, seq_len = T, num_kv_pairs = 4, num_passes = 2, seed = 1}:totable()
  tap.ok(same({table.unpack(ip[1], 1, 8)}, {table.unpack(ip[1], 9, 16)}), 'num_passes = 2 repeats the context')
  tap.errors(function() D.mqar {n = 1, vocab_size = 128, seq_len = 63, num_kv_pairs = 2} end, 'even', 'odd seq_len')
  tap.errors(function() D.mqar {n = 1, vocab_size = 128, seq_len = 64, num_kv_pairs = 17} end, 'exceeds seq_len', '4D > T')
  tap.errors(function() D.mqar {n = 1, vocab_size = 64, seq_len = 64, num_kv_pairs = 2} end, 'must exceed', 'V <= T')
end

-- ---- shapes ------------------------------------------------------------------------------------
do
  local X, y, info = D.shapes {n = 1003, size = 16, channels = 3, seed = 2}
  tap.ok(X.shape[1] == 1003 and X.shape[2] == 3 and X.shape[3] == 16 and X.shape[4] == 16 and X.dtype == 'f32',
         'shapes: X [n, 3, 16, 16] f32')
  tap.ok(y.dtype == 'i32' and y.shape[1] == 1003, 'labels [n] i32')
  tap.ok(X:min():item() >= 0 and X:max():item() <= 1, 'pixels in [0, 1]')
  local counts = gm.one_hot(y, 10):sum(0):totable()
  local bal = true
  for c = 1, 10 do bal = bal and counts[c] == (c <= 3 and 101 or 100) end
  tap.ok(bal, 'classes exactly balanced (n mod K extras to the first classes)')
  tap.is(#info.classes, 10, 'ten class names')
  local X2, y2 = D.shapes {n = 1003, size = 16, channels = 3, seed = 2}
  tap.ok(same(flat(y), flat(y2)) and (X - X2):abs():max():item() == 0, 'seeded reproducibility')
  local Xg, yg = D.shapes {n = 200, size = 32, classes = 4, seed = 3, normalize = true}
  tap.ok(Xg.shape[2] == 1 and Xg.shape[3] == 32 and yg:max():item() == 3, '1 channel, 32x32, 4 classes')
  tap.ok(math.abs(Xg:mean():item()) < 1e-4 and math.abs(Xg:var():sqrt():item() - 1) < 1e-2, 'normalize: mean 0, std 1')
  -- without noise and clutter, the class decides the foreground fraction pattern: a circle covers
  -- more of the image than a ring of the same radius on average
  local Xc, yc = D.shapes {n = 400, size = 32, classes = {'circle', 'ring'}, noise = 0, clutter = 0, seed = 1}
  local frac = Xc:gt(0.5):to('f32'):mean({1, 2, 3}):totable()
  local s = {0, 0}
  for i, l in ipairs(yc:totable()) do s[l + 1] = s[l + 1] + frac[i] end
  tap.ok(s[1] > s[2] * 1.5, 'named classes: circles fill more than rings')
  tap.errors(function() D.shapes {n = 4, classes = {'blob'}} end, 'unknown class blob', 'unknown class name')
end

-- ---- character corpus --------------------------------------------------------------------------
do
  local text = 'To be, or not to be: that is the question. Ça va? ünïcode ✓\n'
  local c = D.CharCorpus_from_string(text:rep(20), {val_fraction = 0.25})
  tap.is(c.level, 'char', 'valid UTF-8 is read as characters')
  tap.is(c:decode(c:encode(text)), text, 'decode(encode(text)) == text')
  tap.is(c:decode(c.data), text:rep(20), 'decode(data) is the corpus')
  local sortedv = true
  for i = 2, #c.vocab do sortedv = sortedv and c.vocab[i - 1] < c.vocab[i] end
  tap.ok(sortedv and c.vocab_size == #c.vocab, 'vocabulary sorted and unique')
  tap.is(c.train.shape[1] + c.val.shape[1], c.data.shape[1], 'train + val = all')
  tap.is(c.val.shape[1], math.floor(c.data.shape[1] * 0.25), 'val_fraction')
  local xb, yb = c:batch('train', 8, 16, {seed = 3})
  tap.ok(xb.shape[1] == 8 and xb.shape[2] == 16 and xb.dtype == 'i32', 'batch x [B, T] i32')
  tap.ok(same(flat(xb:narrow(1, 1, 15)), flat(yb:narrow(1, 0, 15))), 'y is x shifted by one')
  -- each window is a contiguous piece of the train split
  local train_s = c:decode(c.train)
  local contiguous = true
  for b = 0, 7 do
    local w = c:decode(xb[b]) .. c:decode(yb[b]:narrow(0, 15, 1))
    contiguous = contiguous and train_s:find(w, 1, true) ~= nil
  end
  tap.ok(contiguous, 'windows are contiguous in the train split')
  local xb2 = c:batch('train', 8, 16, {seed = 3})
  tap.ok(same(flat(xb), flat(xb2)), 'batch reproducible by seed')
  local cb = D.CharCorpus_from_string('ab\255\254ab')
  tap.ok(cb.level == 'byte' and cb.vocab_size == 4 and cb:decode(cb.data) == 'ab\255\254ab', 'invalid UTF-8 falls back to bytes')
  local path = os.tmpname()
  local f = assert(io.open(path, 'wb')); f:write(text:rep(5)); f:close()
  local cf = D.CharCorpus(path)
  tap.is(cf:decode(cf.data), text:rep(5), 'CharCorpus(path) reads the file')
  os.remove(path)
  tap.errors(function() D.CharCorpus('/nonexistent/corpus.txt') end, '/nonexistent/corpus.txt', 'missing file names the path')
  tap.errors(function() c:encode('Z#') end, 'not in the vocabulary', 'unknown symbol')
  tap.errors(function() c:batch('train', 2, 1000000) end, 'fewer than', 'T too long')
end

-- ---- IDX and CIFAR readers ---------------------------------------------------------------------
local function write(path, s) local f = assert(io.open(path, 'wb')); f:write(s); f:close() end
do
  local dir = os.tmpname()
  os.remove(dir)
  os.execute('mkdir -p ' .. dir)
  -- 3 images of 2x4 ubyte, and their labels
  local px = {}
  for i = 1, 24 do px[i] = (i * 37) % 256 end
  local img = string.pack('>I4I4I4I4', 0x00000803, 3, 2, 4) .. string.char(table.unpack(px))
  local lab = string.pack('>I4I4', 0x00000801, 3) .. string.char(7, 0, 9)
  write(dir .. '/train-images-idx3-ubyte', img)
  write(dir .. '/train-labels-idx1-ubyte', lab)
  local t, magic = D.read_idx(dir .. '/train-images-idx3-ubyte')
  tap.ok(magic == 0x803 and t.dtype == 'i32' and t.shape[1] == 3 and t.shape[2] == 2 and t.shape[3] == 4,
         'read_idx: images [3, 2, 4] i32, magic 0x00000803')
  tap.ok(same(flat(t), px), 'read_idx: values row-major')
  local X, y = D.load_mnist(dir)
  tap.ok(X.shape[1] == 3 and X.shape[2] == 1 and X.dtype == 'f32' and same(y:totable(), {7, 0, 9}), 'load_mnist: X [N, 1, H, W], labels')
  tap.close(X[0][0][0][1]:item(), px[2] / 255, 1e-7, 'load_mnist scales to [0, 1]')
  -- other element types: int32 and float
  write(dir .. '/i4', string.pack('>I4I4i4i4i4', 0x00000C01, 3, -5, 70000, 3))
  tap.ok(same(D.read_idx(dir .. '/i4'):totable(), {-5, 70000, 3}), 'read_idx: big-endian int32')
  write(dir .. '/f4', string.pack('>I4I4I4ffff', 0x00000D02, 2, 2, 0.5, -1.25, 3, 8))
  tap.ok(same(flat(D.read_idx(dir .. '/f4')), {0.5, -1.25, 3, 8}), 'read_idx: big-endian float [2, 2]')
  -- malformed
  write(dir .. '/bad', string.pack('>I4I4', 0x12340801, 3) .. '\1\2\3')
  tap.errors(function() D.read_idx(dir .. '/bad') end, 'bad/?.*bad magic 0x12340801', 'bad magic names path and magic')
  write(dir .. '/trunc', img:sub(1, #img - 5))
  tap.errors(function() D.read_idx(dir .. '/trunc') end, 'trunc is truncated: 35 bytes, shape %[3, 2, 4%]', 'truncated data')
  write(dir .. '/trunch', img:sub(1, 9))
  tap.errors(function() D.read_idx(dir .. '/trunch') end, 'truncated.*header', 'truncated header')
  write(dir .. '/extra', lab .. 'xx')
  tap.errors(function() D.read_idx(dir .. '/extra') end, '2 bytes after the data', 'trailing bytes')
  write(dir .. '/x.gz', '\31\139\8\0')
  tap.errors(function() D.read_idx(dir .. '/x.gz') end, 'gunzip %-k .*x%.gz', '.gz refused with the gunzip command')
  tap.errors(function() D.read_idx(dir .. '/missing') end, 'missing: No such file', 'missing file names the path')
  write(dir .. '/t10k-images-idx3-ubyte', lab)
  write(dir .. '/t10k-labels-idx1-ubyte', lab)
  tap.errors(function() D.load_mnist(dir, {split = 'test'}) end, 'expected 0x00000803', 'load_mnist checks the magic')

  -- CIFAR-10: 3 records
  local recs, want_px = {}, {}
  for r = 1, 3 do
    local bytes = {}
    for i = 1, 3072 do bytes[i] = (i * 7 + r * 13) % 256 end
    want_px[r] = bytes
    recs[r] = string.char(r * 3) .. string.char(table.unpack(bytes, 1, 3072))
  end
  write(dir .. '/data_batch_1.bin', table.concat(recs))
  local Xc, yc = D.read_cifar10(dir .. '/data_batch_1.bin', {scale = false})
  tap.ok(Xc.shape[1] == 3 and Xc.shape[2] == 3 and Xc.shape[3] == 32 and Xc.shape[4] == 32, 'read_cifar10: [3, 3, 32, 32]')
  tap.ok(same(yc:totable(), {3, 6, 9}) and yc.dtype == 'i32', 'read_cifar10: labels')
  -- CHW: channel 1 (green), row 2, column 5 is pixel byte 1024 + 2*32 + 5 (0-based) of record 2
  tap.is(Xc[1][1][2][5]:item(), want_px[2][1024 + 2 * 32 + 5 + 1], 'read_cifar10: CHW pixel order')
  local Xs = D.read_cifar10({dir .. '/data_batch_1.bin', dir .. '/data_batch_1.bin'})
  tap.ok(Xs.shape[1] == 6 and Xs:max():item() <= 1, 'several files concatenate; scaled to [0, 1]')
  write(dir .. '/short.bin', table.concat(recs):sub(1, 3073 * 2 + 100))
  tap.errors(function() D.read_cifar10(dir .. '/short.bin') end, 'short.bin is truncated.*2 whole records and 100 bytes over',
             'truncated CIFAR file')
  write(dir .. '/badlab.bin', recs[1] .. string.char(12) .. recs[2]:sub(2))
  tap.errors(function() D.read_cifar10(dir .. '/badlab.bin') end, 'record 1 has label 12', 'CIFAR label out of range')
  local rec100 = string.char(4, 77) .. recs[1]:sub(2)
  write(dir .. '/c100.bin', rec100 .. rec100)
  local X100, fine, coarse = D.read_cifar100(dir .. '/c100.bin')
  tap.ok(X100.shape[1] == 2 and same(fine:totable(), {77, 77}) and same(coarse:totable(), {4, 4}), 'read_cifar100: fine and coarse labels')
  tap.errors(function() D.load_cifar10(dir) end, 'data_batch_2.bin', 'load_cifar10 names the missing batch file')
  os.execute('rm -rf ' .. dir)
end

-- ---- documentation -----------------------------------------------------------------------------
do
  local doc = require 'gmoe.doc'
  local missing = {}
  for k, v in pairs(D) do
    if type(v) == 'function' and not doc.get('gm.data.' .. k) then missing[#missing + 1] = k end
  end
  tap.ok(#missing == 0, 'every gm.data function has a doc entry', 'missing: ' .. table.concat(missing, ', '))
  local e = doc.get('gm.data.gaussian_moe')
  tap.ok(e and e.formula and e.paper, 'generators carry formula and paper')
end

tap.done()
