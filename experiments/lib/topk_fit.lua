-- topk_fit.lua: estimators and losses for the top-K sparse softmax gating reproduction
-- (experiments/topk_gating_rates.lua; papers.md §2). 1-D covariate x in [0, 1].
--
-- Top-1 fits (K = 1): the gate is a hard partition of [0, 1] into k intervals (the argmax of k
-- lines), so the likelihood is flat in the gate parameters almost everywhere and gradients never
-- move the switch points. The estimator profiles them instead: for given switch points each
-- interval's expert is the closed-form Gaussian linear regression MLE (OLS, nu = SSE / m), so the
-- profile log-likelihood of a partition is -sum_seg m/2 (log(2 pi nu_seg) + 1), evaluated in O(1)
-- per interval from prefix sums over the sorted x. k = 2: an exhaustive scan of every cut (exact
-- MLE). k = 3: a coarse grid over cut pairs, then coordinate descent over cuts at full resolution
-- (each cut scanned over every admissible data position, the other held) until no cut moves.
-- Every interval keeps at least `min_seg` points (a 3-point interval would fit the noise exactly,
-- nu -> 0, likelihood -> infinity). Gate parameters are then written so that the argmax of the
-- lines reproduces the cuts: s_1 = 0, s_2 = S (x - c1), s_3 = S (x - c1) + S (x - c2), S = 6.
--
-- Top-K fits with K >= 2 keep a softmax among the selected experts, so the likelihood does
-- depend smoothly on the gate within a selection pattern: they use the shared Levenberg-Marquardt
-- harness (gaussian_moe_fit.lua, moe_mle.lua; gate = "topk", selection recomputed at every point
-- of every evaluation).
--
-- Loss (region-wise, papers.md §2.1): under top-1 gating exp(beta0) and beta1 are not identified
-- (any positive rescaling and shift of all scores gives the same partition), so the gate enters
-- the Voronoi loss through each atom's gate mass pi_i = E_x g_i(x) (x ~ U[0, 1]; T.masses)
-- in place of exp(beta0_i): loss = sum_j |sum_{i in A_j} pi_i - pi*_j| + one-atom cells
-- pi_i (|d a| + |d b| + |d nu|) + cells of m >= 2 atoms pi_i (|d a|^(r/2) + |d b|^r + |d nu|^(r/2)),
-- r = 2m, with atoms assigned to the true expert nearest in (a, b) as in gaussian_moe_fit.lua.
-- The per-parameter errors (T.errors) drop the exponents: per true expert, |d a| (likewise b, nu)
-- of the atoms of its cell averaged by mass, which falls at n^-1/2 when the fit is regular and
-- more slowly in an over-fitted cell.
local gm = require 'gmoe'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local H = dofile(here .. 'gaussian_moe_fit.lua')

local T = {}
local S = 6

-- sorted covariates and responses as Lua arrays, and prefix sums of 1, x, x^2, y, xy, y^2
local function prefix(X, Y)
  local xs, ys = X:reshape {-1}:totable(), Y:totable()
  local n = #xs
  local order = {}
  for i = 1, n do order[i] = i end
  table.sort(order, function(p, q) return xs[p] < xs[q] end)
  local P = {x = {}, sx = {[0] = 0}, sxx = {[0] = 0}, sy = {[0] = 0}, sxy = {[0] = 0}, syy = {[0] = 0}, n = n}
  for r = 1, n do
    local x, y = xs[order[r]], ys[order[r]]
    P.x[r] = x
    P.sx[r] = P.sx[r - 1] + x
    P.sxx[r] = P.sxx[r - 1] + x * x
    P.sy[r] = P.sy[r - 1] + y
    P.sxy[r] = P.sxy[r - 1] + x * y
    P.syy[r] = P.syy[r - 1] + y * y
  end
  return P
end

-- OLS on sorted points l+1..r: slope a, intercept b, variance nu (MLE), log-likelihood
local function segment(P, l, r)
  local m = r - l
  local sx, sxx = P.sx[r] - P.sx[l], P.sxx[r] - P.sxx[l]
  local sy, sxy, syy = P.sy[r] - P.sy[l], P.sxy[r] - P.sxy[l], P.syy[r] - P.syy[l]
  local mx, my = sx / m, sy / m
  local cxx, cxy, cyy = sxx - m * mx * mx, sxy - m * mx * my, syy - m * my * my
  local a = cxx > 0 and cxy / cxx or 0
  local sse = math.max(cyy - a * cxy, 1e-300)
  local nu = math.max(sse / m, 1e-12)
  return a, my - a * mx, nu, -0.5 * m * (math.log(2 * math.pi * nu) + 1)
end

local function cut_x(P, c) return c <= 0 and 0 or c >= P.n and 1 or 0.5 * (P.x[c] + P.x[c + 1]) end

-- Profile MLE of a top-1 k-expert fit (k = 2 or 3). Returns parameters {beta0, beta1, a, b, nu,
-- tau = 1, cuts = {x positions}}, the mean NLL and the number of profile evaluations.
function T.fit_top1(X, Y, k, opts)
  opts = opts or {}
  local P = prefix(X, Y)
  local n = P.n
  local ms = math.max(opts.min_seg or 10, 4)
  local evals = 0
  local function ll(cuts) -- cuts: sorted interior positions (counts of points left of each cut)
    local tot, l = 0, 0
    for s = 1, #cuts + 1 do
      local r = cuts[s] or n
      local _, _, _, v = segment(P, l, r)
      tot, l = tot + v, r
    end
    evals = evals + 1
    return tot
  end
  local cuts
  if k == 2 then
    local best, bv = nil, -math.huge
    for c = ms, n - ms do
      local v = ll {c}
      if v > bv then best, bv = c, v end
    end
    cuts = {best}
  elseif k == 3 then
    local G = opts.grid or 60
    local best, bv = nil, -math.huge
    for i = 1, G - 1 do
      for j = i + 1, G - 1 do
        local c1, c2 = math.floor(n * i / G), math.floor(n * j / G)
        if c1 >= ms and c2 - c1 >= ms and n - c2 >= ms then
          local v = ll {c1, c2}
          if v > bv then best, bv = {c1, c2}, v end
        end
      end
    end
    cuts = best
    for _ = 1, 20 do -- coordinate descent over the cuts at full resolution
      local moved = false
      for s = 1, 2 do
        local lo = s == 1 and ms or cuts[1] + ms
        local hi = s == 1 and cuts[2] - ms or n - ms
        local bc, bvs = cuts[s], ll(cuts)
        local trial = {cuts[1], cuts[2]}
        for c = lo, hi do
          trial[s] = c
          local v = ll(trial)
          if v > bvs + 1e-12 then bc, bvs = c, v end
        end
        if bc ~= cuts[s] then cuts[s], moved = bc, true end
      end
      if not moved then break end
    end
  else
    error('fit_top1: k must be 2 or 3')
  end
  local p = {beta0 = {}, beta1 = {}, a = {}, b = {}, nu = {}, tau = 1, cuts = {}}
  local l, tot = 0, 0
  for s = 1, k do
    local r = cuts[s] or n
    local a, b, nu, v = segment(P, l, r)
    p.a[s], p.b[s], p.nu[s] = a, b, nu
    tot, l = tot + v, r
  end
  local cx = {}
  for s = 1, k - 1 do cx[s] = cut_x(P, cuts[s]); p.cuts[s] = cx[s] end
  p.beta0[1], p.beta1[1] = 0, 0
  p.beta0[2], p.beta1[2] = -S * cx[1], S
  if k == 3 then p.beta0[3], p.beta1[3] = -S * (cx[1] + cx[2]), 2 * S end
  return p, -tot / n, evals
end

-- Gate masses pi_i = E_x g_i(x), x ~ U[0, 1]. Top-1 (K = 1): exact, the lengths of the intervals
-- where each atom's score (beta0 + beta1 x) / tau is the largest (ties to the lower index), found
-- between the crossings of the score lines (a change point is estimated at about 1/n, finer than
-- any fixed grid). K >= 2: the mean of g_i over a 100000-point midpoint grid.
local xgrid
function T.masses(p, K)
  local k = #p.beta0
  if K == 1 then
    local xs = {0, 1}
    for i = 1, k do
      for j = i + 1, k do
        local db = p.beta1[i] - p.beta1[j]
        if db ~= 0 then
          local x = (p.beta0[j] - p.beta0[i]) / db
          if x > 0 and x < 1 then xs[#xs + 1] = x end
        end
      end
    end
    table.sort(xs)
    local pi = {}
    for i = 1, k do pi[i] = 0 end
    for q = 1, #xs - 1 do
      local x = 0.5 * (xs[q] + xs[q + 1])
      local best = 1
      for i = 2, k do
        if p.beta0[i] + p.beta1[i] * x > p.beta0[best] + p.beta1[best] * x then best = i end
      end
      pi[best] = pi[best] + xs[q + 1] - xs[q]
    end
    return pi
  end
  if not xgrid then
    local xs = {}
    for i = 1, 100000 do xs[i] = {(i - 0.5) / 100000} end
    xgrid = gm.tensor(xs, {dtype = 'f64'})
  end
  local b1 = {}
  for i = 1, k do b1[i] = {p.beta1[i]} end
  return gm.no_grad(function()
    return gm.data.gaussian_moe_gate(xgrid, {gate = 'topk', K = K, beta0 = gm.tensor(p.beta0, {dtype = 'f64'}),
      beta1 = gm.tensor(b1, {dtype = 'f64'}), tau = p.tau or 1}):mean(0):totable()
  end)
end

-- The region-wise Voronoi loss of the header and the per-parameter errors: {voronoi, mass =
-- sum_j |sum_{i in A_j} pi_i - pi*_j|, a, b, nu (gaussian_moe_fit.lua's H.param_errors with the
-- gate masses as weights: one term per true expert, the atoms of its cell averaged by mass),
-- expert = a + b + nu}. p, truth: Lua-array parameters; K, Ktrue: their top-K.
local EXPERT_FIELDS = {
  a = function(p, i, T, j) return math.abs(p.a[i] - T.a[j]) end,
  b = function(p, i, T, j) return math.abs(p.b[i] - T.b[j]) end,
  nu = function(p, i, T, j) return math.abs(p.nu[i] - T.nu[j]) end,
}
function T.errors(p, K, truth, Ktrue)
  local pi, pis = T.masses(p, K), T.masses(truth, Ktrue)
  local _, cells = H.cells(p, truth)
  local e = H.param_errors(p, truth, pi, EXPERT_FIELDS)
  e.voronoi, e.mass = 0, 0
  for j = 1, #truth.beta0 do
    local m, mass = #cells[j], 0
    local r = m >= 2 and 2 * m or 1
    local h = m >= 2 and r / 2 or 1
    for _, i in ipairs(cells[j]) do
      mass = mass + pi[i]
      local da, db, dn = math.abs(p.a[i] - truth.a[j]), math.abs(p.b[i] - truth.b[j]), math.abs(p.nu[i] - truth.nu[j])
      e.voronoi = e.voronoi + pi[i] * (da ^ h + db ^ r + dn ^ h)
    end
    e.mass = e.mass + math.abs(mass - pis[j])
  end
  e.voronoi = e.voronoi + e.mass
  e.expert = e.a + e.b + e.nu
  return e
end

return T
