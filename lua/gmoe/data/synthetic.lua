-- gmoe.data.synthetic: regression data drawn from known mixtures of experts: the softmax-gated
-- Gaussian MoE of the temperature / top-K statistics papers (papers.md §1, §2) with its gate and
-- log-likelihood as differentiable tensor expressions (the estimators fit the same formulas), and
-- the multi-task MoE regression of the COMET CPU-scale protocol (papers.md §4.4).
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local U = require 'gmoe.data.util'

local M = {}
local LOG_2PI = math.log(2 * math.pi)

-- ---- Gaussian mixture of experts ---------------------------------------------------------------
local ACT = {
  tanh = function(s) return s:tanh() end,
  sigmoid = function(s) return s:sigmoid() end,
  relu = function(s) return s:relu() end,
  identity = function(s) return s end,
}

local GATES = {'softmax', 'temperature', 'activation', 'topk'}

-- Gate logits [n, k] for covariates X [n, d]; -inf outside the top K for the topk gate. The
-- callers check X and p (their argument numbers differ).
local function gate_logits(X, p, fname)
  local s = X:matmul(p.beta1:t()) -- [n, k]
  local g, tau = p.gate or 'softmax', p.tau or 1
  if g == 'softmax' then return s + p.beta0 end
  if g == 'temperature' then return (s + p.beta0) / tau end
  if g == 'activation' then
    local act = ACT[p.activation or 'tanh']
    if not act then error(fname .. ': unknown activation ' .. tostring(p.activation), 3) end
    return act(s) / tau + p.beta0
  end
  if g == 'topk' then
    local k = p.beta0.shape[1]
    local K = p.K or 1
    if math.type(K) ~= 'integer' or K < 1 or K > k then
      error(('%s: K must be an integer in 1..%d, got %s'):format(fname, k, tostring(K)), 3)
    end
    local l = (s + p.beta0) / tau
    local _, idx = l:topk(K, -1) -- ties: lowest index first, as in the estimator
    local keep = gm.one_hot(idx, k):sum(1) -- [n, k]: 1 on the K selected experts
    return l:masked_fill(keep:eq(0), -math.huge)
  end
  error(('%s: gate must be one of "%s", got %s'):format(fname, table.concat(GATES, '", "'), tostring(g)), 3)
end

--- gm.data.gaussian_moe_gate(X, params) -> [n, k] gate probabilities.
function M.gaussian_moe_gate(X, p)
  local check = require('gmoe.errors').check
  check('gaussian_moe_gate', 1, 'X', X, 'tensor')
  check('gaussian_moe_gate', 2, 'params', p, 'table')
  return gate_logits(X, p, 'gaussian_moe_gate'):softmax(-1)
end

--- gm.data.gaussian_moe_loglik(X, Y, params) -> [n] log p(y | x).
function M.gaussian_moe_loglik(X, Y, p)
  local check = require('gmoe.errors').check
  check('gaussian_moe_loglik', 1, 'X', X, 'tensor')
  check('gaussian_moe_loglik', 2, 'Y', Y, 'tensor')
  check('gaussian_moe_loglik', 3, 'params', p, 'table')
  local logg = gate_logits(X, p, 'gaussian_moe_loglik'):log_softmax(-1) -- [n, k]
  local mu = X:matmul(p.a:t()) + p.b -- [n, k]
  local r = Y:unsqueeze(1) - mu
  local logn = (r * r / p.nu + p.nu:log() + LOG_2PI) * -0.5
  return (logg + logn):logsumexp(-1)
end

--- gm.data.gaussian_moe_eval(X, Y, theta, opts) -> nll [R] (, grad [R, P] (, opg [R, P, P]))
-- The fused C kernel behind the maximum-likelihood fits (one pass over the data per call).
local EVAL_GATE = {softmax = 'softmax', temperature = 'temperature', topk = 'topk'}
local EVAL_WHAT = {value = 1, grad = 2, opg = 3}
function M.gaussian_moe_eval(X, Y, theta, opts)
  local F = 'gaussian_moe_eval'
  local E = require('gmoe.errors')
  E.check(F, 1, 'X', X, 'tensor'); E.check(F, 2, 'Y', Y, 'tensor'); E.check(F, 3, 'theta', theta, 'tensor')
  opts = E.check(F, 4, 'opts', opts, 'table?') or {}
  U.known(opts, {'gate', 'activation', 'K', 'what'}, F)
  local gate = U.choice(opts, 'gate', 'softmax', GATES, F)
  local cgate = EVAL_GATE[gate]
  if gate == 'activation' then cgate = U.choice(opts, 'activation', 'tanh', {'tanh', 'sigmoid'}, F) end
  local what = EVAL_WHAT[U.choice(opts, 'what', 'value', {'value', 'grad', 'opg'}, F)]
  local K = gate == 'topk' and U.int(opts, 'K', 1, 1, F) or 1
  return gm._C.gaussian_moe_eval(X, Y, theta, cgate, K, what)
end

-- Defaults of papers.md §1.3 (d = 1, k = 2; expert 1 is the gate's reference with (0, 0)).
local DEFAULT = {beta0 = {0, -2}, beta1 = {{0}, {6}}, a = {{-3}, {3}}, b = {1, -1}, nu = {0.09, 0.16}}

local function read_params(opts, d, fname)
  local custom = opts.beta0 or opts.beta1 or opts.a or opts.b or opts.nu
  if custom then
    for _, key in ipairs {'beta0', 'beta1', 'a', 'b', 'nu'} do
      if opts[key] == nil then error(fname .. ': give all of beta0, beta1, a, b, nu (missing ' .. key .. ')', 3) end
    end
  elseif d ~= 1 then
    error(fname .. ': the default parameters are for d = 1; give beta0, beta1, a, b, nu for d = ' .. d, 3)
  end
  local src = custom and opts or DEFAULT
  local p = {}
  for _, key in ipairs {'beta0', 'b', 'nu'} do
    p[key] = U.as_tensor(src[key], 'f64', key, fname)
    if p[key]:dim() ~= 1 then error(fname .. ': ' .. key .. ' must be 1-D [k]', 3) end
  end
  local k = p.beta0.shape[1]
  for _, key in ipairs {'beta1', 'a'} do
    local t = U.as_tensor(src[key], 'f64', key, fname)
    if t:dim() == 1 and d == 1 then t = t:reshape {t.shape[1], 1} end
    if t:dim() ~= 2 or t.shape[1] ~= k or t.shape[2] ~= d then
      error(('%s: %s must be [k, d] = [%d, %d], got [%s]'):format(fname, key, k, d, table.concat(t.shape, ', ')), 3)
    end
    p[key] = t
  end
  for _, key in ipairs {'b', 'nu'} do
    if p[key].shape[1] ~= k then
      error(('%s: %s has %d entries, beta0 has %d'):format(fname, key, p[key].shape[1], k), 3)
    end
  end
  if p.nu:min():item() <= 0 then error(fname .. ': the variances nu must be > 0', 3) end
  return p
end

--- gm.data.gaussian_moe{n=, ...} -> X [n, d], Y [n], params, latent
function M.gaussian_moe(opts)
  local F = 'gaussian_moe'
  opts = opts or {}
  U.known(opts, {'n', 'd', 'x', 'gate', 'tau', 'activation', 'K', 'beta0', 'beta1', 'a', 'b', 'nu',
                 'dtype', 'generator', 'seed'}, F)
  local gen = U.generator(opts, F)
  local dtype = U.choice(opts, 'dtype', 'f64', {'f64', 'f32'}, F)
  local gate = U.choice(opts, 'gate', 'softmax', GATES, F)
  local X
  if gm.is_tensor(opts.x) then
    X = opts.x:to('f64')
    if X:dim() ~= 2 then error(F .. ': x must be [n, d]', 2) end
  end
  local n = X and X.shape[1] or U.int(opts, 'n', nil, 1, F)
  local d = X and X.shape[2] or U.int(opts, 'd', 1, 1, F)
  local p = read_params(opts, d, F)
  local k = p.beta0.shape[1]
  p.gate, p.tau = gate, U.num(opts, 'tau', 1, F)
  if p.tau <= 0 then error(F .. ': tau must be > 0', 2) end
  if gate == 'activation' then p.activation = U.choice(opts, 'activation', 'tanh', {'tanh', 'sigmoid', 'relu', 'identity'}, F) end
  if gate == 'topk' then p.K = U.int(opts, 'K', 1, 1, F) end
  if not X then
    local xd = U.choice(opts, 'x', 'uniform', {'uniform', 'normal'}, F)
    X = (xd == 'uniform' and gm.rand or gm.randn)({n, d}, {dtype = 'f64', generator = gen})
  end
  local probs, Y, z
  gm.no_grad(function()
    probs = M.gaussian_moe_gate(X, p) -- [n, k]
    -- z ~ Categorical(probs) by inversion: the number of cumulative sums below u.
    local u = gm.rand({n, 1}, {dtype = 'f64', generator = gen})
    z = probs:cumsum(-1):lt(u):sum(-1):clamp(0, k - 1):to('i32') -- [n]
    local mu = X:matmul(p.a:t()) + p.b -- [n, k]
    local eps = gm.randn({n}, {dtype = 'f64', generator = gen})
    Y = mu:gather(1, z:unsqueeze(1)):squeeze(1) + p.nu:sqrt():index_select(0, z) * eps
  end)
  if dtype ~= 'f64' then
    X, Y, probs = X:to(dtype), Y:to(dtype), probs:to(dtype)
    for _, key in ipairs {'beta0', 'beta1', 'a', 'b', 'nu'} do p[key] = p[key]:to(dtype) end
  end
  return X, Y, p, {z = z, probs = probs}
end

local GM_FORMULA = [[
p(y | x) = sum_{i=1..k} g_i(x) N(y; a_i^T x + b_i, nu_i)   (nu_i is a variance)
softmax:     g(x) = softmax(beta1 x + beta0)
temperature: g(x) = softmax((beta1 x + beta0) / tau)
activation:  g(x) = softmax(sigma(beta1 x) / tau + beta0),  sigma = tanh | sigmoid | relu | identity
topk:        g_i(x) = exp(s_i) 1[i in TopK(s)] / sum_{j in TopK(s)} exp(s_j),  s = (beta1 x + beta0) / tau
             (ties: lowest index)]]
local GM_PAPER = 'Nguyen, Akbarian, Ho, "Is Temperature Sample Efficient for Softmax Gaussian Mixture of ' ..
  'Experts?", ICML 2024 (papers.md §1); Nguyen, Akbarian, Yan, Ho, "Statistical Perspective of Top-K ' ..
  'Sparse Softmax Gating Mixture of Experts", ICLR 2024 (papers.md §2)'

doc.add('gm.data.gaussian_moe',
  'gm.data.gaussian_moe{n=, d=1, x="uniform"|"normal"|X, gate="softmax"|"temperature"|"activation"|"topk", ' ..
  'tau=1, activation="tanh", K=1, beta0=, beta1=, a=, b=, nu=, dtype="f64", generator=g | seed=s} ' ..
  '-> X [n, d], Y [n], params, latent',
  'Samples n pairs from a softmax-gated Gaussian mixture of experts: x ~ U[0,1]^d (x="normal": ' ..
  'N(0, I); or pass X [n, d]), an expert z ~ Categorical(g(x)), then y ~ N(a_z^T x + b_z, nu_z). ' ..
  'Parameters are Lua arrays or tensors: beta0, b, nu [k]; beta1, a [k, d] ([k] when d = 1). ' ..
  'Defaults are the CPU-scale truth of papers.md §1.3: d = 1, k = 2, (beta0, beta1) = (0, 0) and ' ..
  '(-2, 6), (a, b, nu) = (-3, 1, 0.3^2) and (3, -1, 0.4^2), tau = 1. Returns the covariates, the ' ..
  'responses, the true parameters {gate, beta0, beta1, a, b, nu, tau, activation, K} (the table ' ..
  'gaussian_moe_gate and gaussian_moe_loglik take) and the latent draws {z = [n] i32 expert ids, ' ..
  'probs = [n, k] gate probabilities}. Randomness, in order: X, u for z, eps for y. Placement of ' ..
  'beta0 in the temperature gate (inside the division) and in the activation gate (outside) ' ..
  'follows papers.md §1.1, which marks both slots [mem] (unverified against the paper).',
  {formula = GM_FORMULA, paper = GM_PAPER})
doc.add('gm.data.gaussian_moe_gate', 'gm.data.gaussian_moe_gate(X, params) -> [n, k]',
  'The gate probabilities g(x) of a Gaussian MoE for X [n, d]; params as returned by ' ..
  'gm.data.gaussian_moe (tensors may require grad, tau may be a number or a tensor; the gate ' ..
  'field picks the formula). Differentiable (the top-K selection itself is not).',
  {formula = GM_FORMULA, paper = GM_PAPER})
doc.add('gm.data.gaussian_moe_loglik', 'gm.data.gaussian_moe_loglik(X, Y, params) -> [n]',
  'log p(y | x) of each pair under a Gaussian MoE, computed as logsumexp_i(log g_i(x) + log ' ..
  'N(y; a_i^T x + b_i, nu_i)) with the top-K gate masked by -inf: the negative mean is the NLL ' ..
  'an estimator minimises. Differentiable in every parameter tensor.',
  {formula = 'log p(y|x) = logsumexp_i( log g_i(x) - (y - a_i^T x - b_i)^2 / (2 nu_i) - log(2 pi nu_i) / 2 )',
   paper = GM_PAPER})

doc.add('gm.data.gaussian_moe_eval',
  'gm.data.gaussian_moe_eval(X, Y, theta, {gate="softmax"|"temperature"|"activation"|"topk", ' ..
  'activation="tanh"|"sigmoid", K=1, what="value"|"grad"|"opg"}) -> nll [R] (, grad [R, P] (, opg [R, P, P]))',
  'The mean negative log-likelihood of a Gaussian MoE with a 1-D covariate (X [n] or [n, 1], Y [n], ' ..
  'f64) for each row of theta [R, P], P = 5k + 1, laid out as beta0[k], beta1[k], a[k], b[k], ' ..
  'log nu[k], log tau (the softmax gate ignores tau) — several starts of a fit share one pass over ' ..
  'the data. what="grad" adds the gradient in theta, what="opg" also the mean outer product of the ' ..
  'per-point scores (the BHHH curvature that Levenberg-Marquardt fits use). One fused C kernel with ' ..
  'the formulas of gaussian_moe_loglik (which it matches to rounding); not recorded by autograd.',
  {formula = GM_FORMULA, paper = GM_PAPER})

-- ---- multi-task MoE regression (COMET, papers.md §4.4) -----------------------------------------
--- gm.data.mtl_regression{...} -> {train=, val=, test=, truth=}
function M.mtl_regression(opts)
  local F = 'mtl_regression'
  opts = opts or {}
  U.known(opts, {'n_train', 'n_val', 'n_test', 'd', 'experts', 'hidden', 'tasks', 'k', 'noise',
                 'gate', 'depth', 'dtype', 'generator', 'seed'}, F)
  local gen = U.generator(opts, F)
  local dtype = U.choice(opts, 'dtype', 'f32', {'f32', 'f64'}, F)
  local sizes = {U.int(opts, 'n_train', 20000, 0, F), U.int(opts, 'n_val', 5000, 0, F), U.int(opts, 'n_test', 5000, 0, F)}
  local d = U.int(opts, 'd', 10, 1, F)
  local E = U.int(opts, 'experts', 16, 1, F)
  local h = U.int(opts, 'hidden', 8, 1, F)
  local T = U.int(opts, 'tasks', 2, 1, F)
  local k = U.int(opts, 'k', 2, 1, F)
  local noise = U.num(opts, 'noise', 0.1, F)
  local gate = U.choice(opts, 'gate', 'fixed', {'fixed', 'tree'}, F)
  local depth = gate == 'tree' and U.int(opts, 'depth', 2, 1, F) or 0
  if k > E then error(('%s: k = %d exceeds experts = %d'):format(F, k, E), 2) end
  local n = sizes[1] + sizes[2] + sizes[3]
  local f64 = {dtype = 'f64', generator = gen}

  -- Truth: experts f_e(x) = tanh(U_e x) . v_e with U_e ~ N(0, 1/d) (unit-variance pre-activations)
  -- and v_e ~ N(0, 1).
  local Ue = gm.randn({E, h, d}, f64) / math.sqrt(d)
  local ve = gm.randn({E, h}, f64)
  -- Supports: `groups` 2-sparse (k-sparse) mixtures per task, one per leaf of its hidden tree
  -- (one group when gate = "fixed"). A group's experts come from one randperm (distinct); with
  -- gate = "fixed" and T*k <= E the tasks' supports are disjoint.
  local groups = 1 << depth
  local supports, weights = {}, {}
  local shared_perm = (gate == 'fixed' and T * k <= E) and gm.randperm(E, {generator = gen}):totable() or nil
  local wdraw = gm.rand({T, groups, k}, f64):totable()
  for t = 1, T do
    supports[t], weights[t] = {}, {}
    for l = 1, groups do
      local perm = shared_perm or gm.randperm(E, {generator = gen}):totable() -- 0-based ids
      local off = shared_perm and (t - 1) * k or 0
      local s, w, tot = {}, {}, 0
      for j = 1, k do
        s[j] = perm[off + j]
        w[j] = 0.5 + wdraw[t][l][j] -- U[0.5, 1.5], then normalised
        tot = tot + w[j]
      end
      for j = 1, k do w[j] = w[j] / tot end
      supports[t][l], weights[t][l] = s, w
    end
  end
  -- Hidden trees: node j (heap order, root 0) sends x right when H_{t,j}^T x > 0.
  local H = depth > 0 and gm.randn({T, groups - 1, d}, f64) / math.sqrt(d) or nil

  local X = gm.randn({n, d}, f64)
  local leaf = {}
  if H then
    local scores = X:matmul(H:reshape {T * (groups - 1), d}:t()):gt(0):totable() -- [n, T*(groups-1)]
    for i = 1, n do
      local row, li = scores[i], {}
      for t = 1, T do
        local node = 0
        for _ = 1, depth do node = 2 * node + 1 + math.floor(row[(t - 1) * (groups - 1) + node + 1]) end
        li[t] = node - (groups - 1) + 1
      end
      leaf[i] = li
    end
  end
  local ex, wt = {}, {}
  for i = 1, n do
    local ei, wi = {}, {}
    for t = 1, T do
      local l = H and leaf[i][t] or 1
      ei[t], wi[t] = supports[t][l], weights[t][l]
    end
    ex[i], wt[i] = ei, wi
  end
  local experts = gm.tensor(ex, {dtype = 'i32'}):reshape {n, T, k}
  local W = gm.tensor(wt, {dtype = 'f64'}):reshape {n, T, k}
  local Fx = ((X:matmul(Ue:reshape {E * h, d}:t())):tanh():reshape {n, E, h} * ve):sum(-1) -- [n, E]
  local mix = (Fx:gather(1, experts:reshape {n, T * k}):reshape {n, T, k} * W):sum(-1) -- [n, T]
  local Y = mix + gm.randn({n, T}, f64) * noise
  local Xo, Yo, Wo = X:to(dtype), Y:to(dtype), W:to(dtype)
  local out, start = {}, 0
  for s, name in ipairs {'train', 'val', 'test'} do
    local m = sizes[s]
    out[name] = {x = Xo:narrow(0, start, m), y = Yo:narrow(0, start, m),
                 experts = experts:narrow(0, start, m), weights = Wo:narrow(0, start, m)}
    start = start + m
  end
  out.truth = {U = Ue:to(dtype), v = ve:to(dtype), supports = supports, weights = weights,
               tree = H and H:to(dtype) or nil, depth = depth, noise = noise}
  return out
end

doc.add('gm.data.mtl_regression',
  'gm.data.mtl_regression{n_train=20000, n_val=5000, n_test=5000, d=10, experts=16, hidden=8, tasks=2, ' ..
  'k=2, noise=0.1, gate="fixed"|"tree", depth=2, dtype="f32", generator=g | seed=s} -> ' ..
  '{train=, val=, test=, truth=}',
  'The synthetic multi-task regression of the COMET CPU-scale protocol: x ~ N(0, I_d); E true ' ..
  'experts f_e(x) = tanh(U_e x)^T v_e (hidden 8); each task t is a k-sparse (2-sparse) mixture of ' ..
  'true experts, y_t = sum_j w_tj f_{e_tj}(x) + N(0, noise^2). gate="fixed": one support and ' ..
  'weight vector per task, supports disjoint across tasks when tasks*k <= experts. gate="tree": ' ..
  'the support is example-dependent through a hidden hard tree per task (depth levels, heap order, ' ..
  'node j goes right when H_tj^T x > 0), each leaf holding its own k distinct experts and weights. ' ..
  'Splits are tables {x [n, d], y [n, tasks], experts [n, tasks, k] i32 (0-based true support), ' ..
  'weights [n, tasks, k]}; truth = {U [E, h, d], v [E, h], supports[t][leaf] (0-based ids), ' ..
  'weights[t][leaf], tree [tasks, 2^depth - 1, d] or nil, depth, noise}. Choices papers.md §4.4 ' ..
  'leaves open, made here: U_e ~ N(0, 1/d), v_e ~ N(0, 1), tree hyperplanes ~ N(0, I/d) through ' ..
  'the origin, weights U[0.5, 1.5] normalised to sum 1.',
  {formula = 'y_t(x) = sum_{j=1..k} w_tj tanh(U_{e_tj} x)^T v_{e_tj} + eps,  eps ~ N(0, 0.1^2),  x ~ N(0, I_10)',
   paper = 'Ibrahim et al., "COMET: Learning Cardinality Constrained Mixture of Experts with Trees and ' ..
           'Local Search", KDD 2023 (papers.md §4.4, CPU-scale synthetic version)'})

return M
