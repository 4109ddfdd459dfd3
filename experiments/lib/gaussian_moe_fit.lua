-- gaussian_moe_fit.lua: the shared harness of the Gaussian-MoE rate reproductions
-- (experiments/temperature_gates.lua, experiments/topk_gating_rates.lua; papers.md §1.2-1.3, §2.3):
-- start protocols (near the truth as the CRPE-SGaME template, spread along the gate's (beta, tau)
-- ray, random), the maximum-likelihood fit with restarts (Levenberg-Marquardt, moe_mle.lua), the
-- per-parameter errors and the Voronoi loss with cell-size exponents (§1.1) of a fit, the
-- Hellinger distance of its conditional density, and the rate summaries (mean +- standard error
-- per n, least-squares slope in log-log space with its standard error).
local gm = require 'gmoe'
local stats = require 'gmoe.stats'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local MLE = dofile(here .. 'moe_mle.lua')

local H = {MLE = MLE}

-- The truth of papers.md §1.3: k* = 2, expert 1 is the gate's reference (its gating parameters
-- are 0 in the truth and fixed at 0 in every fit: the translation non-identifiability).
H.TRUTH = {beta0 = {0, -2}, beta1 = {0, 6}, a = {-3, 3}, b = {1, -1}, nu = {0.09, 0.16}, tau = 1}

-- A truth with some fields replaced.
function H.truth(over)
  local t = {}
  for k, v in pairs(H.TRUTH) do t[k] = v end
  for k, v in pairs(over or {}) do t[k] = v end
  return t
end

local function f64(t) return gm.tensor(t, {dtype = 'f64'}) end

-- Does beta0 sit inside the division by tau (temperature, top-K) or outside (softmax, activation)?
local function b0_inside(gate) return gate == 'temperature' or gate == 'topk' end

-- The mixing weight exp(beta0 / tau) or exp(beta0) of atom i (relative to the reference atom).
local function weight(p, i, gate) return math.exp(b0_inside(gate) and p.beta0[i] / p.tau or p.beta0[i]) end

-- Samples (X [n, 1], Y [n]) from a truth under a gate spec.
function H.sample(n, T, spec, generator)
  return gm.data.gaussian_moe {n = n, gate = spec.gate, activation = spec.activation, K = spec.K, tau = T.tau,
                               beta0 = T.beta0, beta1 = T.beta1, a = T.a, b = T.b, nu = T.nu, generator = generator}
end

-- The parameter table gaussian_moe_loglik takes, from Lua arrays.
function H.params(p, spec)
  local b1, a = {}, {}
  for i = 1, #p.beta0 do b1[i], a[i] = {p.beta1[i]}, {p.a[i]} end
  return {gate = spec.gate, activation = spec.activation, K = spec.K, beta0 = f64(p.beta0), beta1 = f64(b1),
          a = f64(a), b = f64(p.b), nu = f64(p.nu), tau = p.tau}
end

-- The template's start atoms for k fitted experts: the true atoms, and for k > k* copies of the
-- last true atom sharing its mixing weight (an over-fitted Voronoi cell).
local function template_atoms(k, T, gate)
  local p = {beta0 = {}, beta1 = {}, a = {}, b = {}, nu = {}, tau = T.tau}
  local ks = #T.beta0
  for i = 1, k do
    local j = math.min(i, ks)
    p.beta0[i], p.beta1[i], p.a[i], p.b[i], p.nu[i] = T.beta0[j], T.beta1[j], T.a[j], T.b[j], T.nu[j]
  end
  if k > ks then
    local split = math.log(k - ks + 1) * (b0_inside(gate) and T.tau or 1)
    for i = ks, k do p.beta0[i] = T.beta0[ks] - split end
  end
  return p
end

-- `count` starts (theta arrays, moe_mle.lua's layout) under a protocol:
--   near   the truth (template_atoms) plus N(0, noise^2) on every free coordinate (beta0, beta1,
--          a, b, log nu, log tau): the CRPE-SGaME template;
--   ridge  a near start whose gate is then moved along the (beta, tau) ray by a factor c,
--          log c ~ U(-log ridge, log ridge): temperature / top-K gates scale beta0, beta1 and tau
--          (their density does not change at all), activation gates beta1 and tau (the density
--          changes only through the curvature of the activation), softmax beta0 and beta1 (tau is
--          fixed at 1: a start off the truth by the same factor, no invariance);
--   random every free coordinate uniform in a box set by the truth's scale: beta0 in [-3, 3],
--          beta1 in [-2B, 2B] (B = the largest |beta1*|), a in [-5, 5], b in [-3, 3], nu in
--          [0.02, 1] and tau in [tau*/4, 4 tau*] (log-uniform).
-- spec: k, gate, learn_tau, truth, noise, ridge. Also returns each start's log c (ridge) or 0.
function H.starts(protocol, spec, gen, count)
  local T, k = spec.truth, spec.k
  local free = MLE.free(k, spec.learn_tau)
  local P = 5 * k + 1
  local out, logc = {}, {}
  for r = 1, count do
    local th
    if protocol == 'random' then
      local B = 0
      for _, v in ipairs(T.beta1) do B = math.max(B, math.abs(v)) end
      local u = gm.rand({P}, {dtype = 'f64', generator = gen}):totable()
      th = MLE.pack(template_atoms(k, T, spec.gate))
      local lo = {[0] = -3, -2 * B, -5, -3, math.log(0.02)}
      local hi = {[0] = 3, 2 * B, 5, 3, 0}
      for _, i in ipairs(free) do
        local block = (i - 1) // k
        if block == 5 then
          th[i] = math.log(T.tau) + math.log(4) * (2 * u[i] - 1)
        else
          th[i] = lo[block] + (hi[block] - lo[block]) * u[i]
        end
      end
      logc[r] = 0
    else
      th = MLE.pack(template_atoms(k, T, spec.gate))
      local z = gm.randn({P}, {dtype = 'f64', generator = gen}):totable()
      for _, i in ipairs(free) do th[i] = th[i] + spec.noise * z[i] end
      logc[r] = 0
      if protocol == 'ridge' then
        local u = gm.rand({1}, {dtype = 'f64', generator = gen}):item()
        local lc = math.log(spec.ridge) * (2 * u - 1)
        local c = math.exp(lc)
        logc[r] = lc
        for i = 1, k do
          if spec.gate ~= 'activation' then th[i] = th[i] * c end
          th[k + i] = th[k + i] * c
        end
        if spec.learn_tau then th[5 * k + 1] = th[5 * k + 1] + lc end
      elseif protocol ~= 'near' then
        error('unknown start protocol ' .. tostring(protocol))
      end
    end
    out[r] = th
  end
  return out, logc
end

-- A fit counts as diverged when its NLL is not finite, or an atom that carries gate mass (more than
-- MASS_MIN of the x range) has a variance below NU_MIN (an expert collapsed onto a few points: the
-- likelihood is unbounded there) or a coordinate on the box of moe_mle.lua (the likelihood still
-- rose towards a gate of infinite slope, a temperature of 0 or infinity: no maximum inside the
-- parameter space). An atom without mass (an over-specified fit may switch one off) has no say in
-- the density, and its parameters are free. The top-K gate's coordinates are exempt: a top-2 fit
-- of the top-1 truth approaches its hard switch only as the scores grow.
H.NU_MIN, H.MASS_MIN = 1e-6, 1e-6

local xgrid
-- The gate mass of each atom, the mean of g_i(x) over 1000 points of [0, 1].
function H.masses(p, spec)
  if not xgrid then
    local xs = {}
    for i = 1, 1000 do xs[i] = {(i - 0.5) / 1000} end
    xgrid = f64(xs)
  end
  return gm.no_grad(function() return gm.data.gaussian_moe_gate(xgrid, H.params(p, spec)):mean(0):totable() end)
end

local function is_diverged(th, spec)
  local k = (#th - 1) // 5
  local lo, hi = MLE.box(k)
  local p = MLE.unpack(th)
  if not spec.learn_tau then p.tau = 1 end
  local mass = H.masses(p, spec)
  for i, v in ipairs(th) do
    local atom = i <= 5 * k and (i - 1) % k + 1 or nil
    local gate_coord = i <= 2 * k or i == 5 * k + 1
    local live = not atom or mass[atom] > H.MASS_MIN
    if live and not (spec.gate == 'topk' and gate_coord) and (v <= lo[i] + 1e-9 or v >= hi[i] - 1e-9) then
      return true
    end
    if atom and live and i > 4 * k and math.exp(v) < H.NU_MIN then return true end
  end
  return false
end

-- One maximum-likelihood fit from `restarts` starts of a protocol; keeps the start with the best
-- NLL among those that did not diverge. spec: k, gate, activation, K, learn_tau, truth, noise,
-- ridge, max_iter, tol, protocol, restarts, generator. Returns the fitted parameters (Lua arrays
-- {beta0, beta1, a, b, nu, tau}) or nil when every start diverged, and a record {nll, iters,
-- status, converged, logc (the kept start's ray offset), diverged (starts that diverged)}.
function H.fit(X, Y, spec)
  local starts, logc = H.starts(spec.protocol or 'near', spec, spec.generator, spec.restarts or 1)
  local res = MLE.fit(X:reshape {-1}, Y, starts, spec)
  local best, info, diverged = nil, nil, 0
  for r, o in ipairs(res) do
    local ok = o.status ~= 'nonfinite' and o.nll == o.nll and not is_diverged(o.theta, spec)
    if not ok then
      diverged = diverged + 1
    elseif not info or o.nll < info.nll then
      best = MLE.unpack(o.theta)
      info = {nll = o.nll, iters = o.iters, status = o.status, converged = o.converged, logc = logc[r]}
    end
  end
  info = info or {nll = 0 / 0, iters = 0, status = 'diverged', converged = false, logc = 0 / 0}
  info.diverged = diverged
  if best and not spec.learn_tau then best.tau = 1 end
  return best, info
end

-- Fitted atoms -> the Voronoi cell (index of the nearest true atom in the expert parameters (a, b))
-- of each, and the cells' member lists. Label switching is resolved here, never by index.
function H.cells(p, T)
  local of, cells = {}, {}
  for j = 1, #T.beta0 do cells[j] = {} end
  for i = 1, #p.beta0 do
    local best, bd = 1, math.huge
    for j = 1, #T.beta0 do
      local d = (p.a[i] - T.a[j]) ^ 2 + (p.b[i] - T.b[j]) ^ 2
      if d < bd then best, bd = j, d end
    end
    of[i] = best
    table.insert(cells[best], i)
  end
  return of, cells
end

-- The fit re-expressed with the gate's reference on the heaviest atom q of true cell 1 (the truth's
-- reference cell). Fits hold atom 1's gate at 0, but atom 1 may land in another cell (label
-- switching, from random starts) or carry no mass. beta0_q is subtracted from every beta0 (exact
-- for every gate: a common shift of the logits); beta1_q from every beta1 where that is exact too
-- (softmax, temperature and top-K gates) and, for the tanh and sigmoid gates with k = 2, when atom
-- 1 is in the other cell (tanh is odd and sigmoid(-s) = 1 - sigmoid(s), so the switched fit has the
-- same density). Returns the canonical parameters and whether a label switch stayed (a k > 2
-- activation fit with atom 1 outside cell 1: no exact re-expression, its beta1 errors are those of
-- the labels).
function H.canonical(p, T, gate)
  local of, cells = H.cells(p, T)
  if #cells[1] == 0 then return p, of[1] ~= 1 end
  local q, wq = nil, -math.huge
  for _, i in ipairs(cells[1]) do
    local w = weight(p, i, gate)
    if w > wq then q, wq = i, w end
  end
  local shift1 = gate ~= 'activation' or (of[1] ~= 1 and #p.beta0 == 2)
  local c = {beta0 = {}, beta1 = {}, a = p.a, b = p.b, nu = p.nu, tau = p.tau}
  for i = 1, #p.beta0 do
    c.beta0[i] = p.beta0[i] - p.beta0[q]
    c.beta1[i] = shift1 and p.beta1[i] - p.beta1[q] or p.beta1[i]
  end
  return c, gate == 'activation' and of[1] ~= 1 and #p.beta0 > 2
end

-- Per-parameter errors of a fit against the truth T, one term per true atom j: the fitted atoms of
-- its Voronoi cell A_j compared with it, averaged with their weights w_i (so an over-fitted cell
-- counts once and an atom without mass does not count), or, when A_j is empty (the fit has no atom
-- near expert j), the fitted atom nearest to it in (a, b). fields: name -> function(p, i, T, j)
-- giving |theta_i - theta*_j|; w: the weight of each fitted atom. Returns name -> sum over j.
function H.param_errors(p, T, w, fields)
  local _, cells = H.cells(p, T)
  local out = {}
  for name in pairs(fields) do out[name] = 0 end
  for j = 1, #T.beta0 do
    local members = cells[j]
    if #members == 0 then
      local best, bd = 1, math.huge
      for i = 1, #p.beta0 do
        local d = (p.a[i] - T.a[j]) ^ 2 + (p.b[i] - T.b[j]) ^ 2
        if d < bd then best, bd = i, d end
      end
      members = {best}
    end
    local wsum = 0
    for _, i in ipairs(members) do wsum = wsum + w[i] end
    for name, f in pairs(fields) do
      local acc = 0
      for _, i in ipairs(members) do
        local share = wsum > 0 and w[i] / wsum or 1 / #members
        acc = acc + share * f(p, i, T, j)
      end
      out[name] = out[name] + acc
    end
  end
  return out
end

local PARAM_FIELDS = {
  beta1 = function(p, i, T, j) return math.abs(p.beta1[i] - T.beta1[j]) end,
  ratio = function(p, i, T, j) return math.abs(p.beta1[i] / p.tau - T.beta1[j] / T.tau) end,
  a = function(p, i, T, j) return math.abs(p.a[i] - T.a[j]) end,
  b = function(p, i, T, j) return math.abs(p.b[i] - T.b[j]) end,
  nu = function(p, i, T, j) return math.abs(p.nu[i] - T.nu[j]) end,
}

-- The share of an over-fitted Voronoi cell's gate mass (H.masses) held by its lightest atom: near 0
-- when the fit loads the cell onto one atom, so that mass-weighted errors follow the heavier one
-- (the slow rates of over-specified fits bound cells whose atoms share the mass). With several
-- over-fitted cells, the smallest share; NaN when no cell holds two atoms.
function H.minor_share(p, T, spec)
  local m = H.masses(p, spec)
  local _, cells = H.cells(p, T)
  local share = 0 / 0
  for j = 1, #cells do
    if #cells[j] >= 2 then
      local tot, low = 0, math.huge
      for _, i in ipairs(cells[j]) do tot, low = tot + m[i], math.min(low, m[i]) end
      local sh = tot > 0 and low / tot or 0
      if share ~= share or sh < share then share = sh end
    end
  end
  return share
end

-- The error of a fit p (canonical) against the truth T, per parameter (H.param_errors with the
-- mixing weights w_i = exp(beta0_i / tau) when beta0 sits inside the temperature division,
-- exp(beta0_i) otherwise) and as the Voronoi loss of papers.md §1.1:
--   tau    |tau - tau*| (NaN for a gate without a temperature);
--   beta1, ratio (beta1 / tau), a, b, nu: H.param_errors; expert = a + b + nu;
--   voronoi = sum_j |sum_{i in A_j} w_i - w*_j|
--           + sum over one-atom cells of w_i (|d beta1| + |d a| + |d b| + |d nu| + |d tau|)
--           + sum over cells of m >= 2 atoms of w_i (|d beta1|^r + |d a|^(r/2) + |d b|^r
--             + |d nu|^(r/2) + |d tau|^r), r = r(m) = 2m (r(2) = 4, r(3) = 6: the solvability
--             orders of the Demystifying-softmax paper that papers.md §1.1 cites);
--   voronoi_ratio: the same with beta1 / tau in place of beta1 and no tau term (the identified
--             part of a temperature gate; equal to voronoi when tau is not learnt).
-- opts.learn_tau: whether tau is a parameter (false: the tau terms are 0 and tau is NaN).
function H.errors(p, T, gate, opts)
  opts = opts or {}
  local learn_tau = opts.learn_tau ~= false
  local of, cells = H.cells(p, T)
  local w = {}
  for i = 1, #p.beta0 do w[i] = weight(p, i, gate) end
  local e = H.param_errors(p, T, w, PARAM_FIELDS)
  e.voronoi, e.voronoi_ratio = 0, 0
  local dt = learn_tau and math.abs(p.tau - T.tau) or 0
  e.tau = learn_tau and dt or 0 / 0
  for j = 1, #T.beta0 do
    local m, mass = #cells[j], 0
    local r = m >= 2 and 2 * m or 1
    local h = m >= 2 and r / 2 or 1
    for _, i in ipairs(cells[j]) do
      mass = mass + w[i]
      local d1 = math.abs(p.beta1[i] - T.beta1[j])
      local dr = math.abs(p.beta1[i] / p.tau - T.beta1[j] / T.tau)
      local expert = math.abs(p.a[i] - T.a[j]) ^ h + math.abs(p.b[i] - T.b[j]) ^ r + math.abs(p.nu[i] - T.nu[j]) ^ h
      e.voronoi = e.voronoi + w[i] * (d1 ^ r + expert + dt ^ r)
      e.voronoi_ratio = e.voronoi_ratio + w[i] * (dr ^ r + expert)
    end
    local dm = math.abs(mass - weight(T, j, gate))
    e.voronoi, e.voronoi_ratio = e.voronoi + dm, e.voronoi_ratio + dm
  end
  e.expert = e.a + e.b + e.nu
  e.cells = of
  return e
end

-- Hellinger distance between the fitted and true conditional densities, averaged over x:
-- sqrt(mean_x (1 - integral sqrt(p(y|x) q(y|x)) dy)) on a 64 x 400 grid of [0, 1] x [-4.5, 4.5].
local grid
function H.hellinger(fitted, truth)
  if not grid then
    local xs, ys = {}, {}
    local nx, ny = 64, 400
    for i = 1, nx do
      for j = 1, ny do
        xs[#xs + 1] = {(i - 0.5) / nx}
        ys[#ys + 1] = -4.5 + 9 * (j - 0.5) / ny
      end
    end
    grid = {X = f64(xs), Y = f64(ys), nx = nx, ny = ny, dy = 9 / ny}
  end
  return gm.no_grad(function()
    local lp = gm.data.gaussian_moe_loglik(grid.X, grid.Y, fitted)
    local lq = gm.data.gaussian_moe_loglik(grid.X, grid.Y, truth)
    local bc = ((lp + lq) * 0.5):exp():reshape {grid.nx, grid.ny}:sum(1) * grid.dy -- [nx]
    local h2 = (1 - bc):clamp(0, 1):mean():item()
    return math.sqrt(h2)
  end)
end

-- The n grid: `points` values log-spaced from n_min to n_max, rounded to integers.
function H.n_grid(n_min, n_max, points)
  local out = {}
  for i = 0, points - 1 do
    local t = points == 1 and 0 or i / (points - 1)
    out[#out + 1] = math.floor(n_min * (n_max / n_min) ^ t + 0.5)
  end
  return out
end

-- Mean and standard error of the finite values of an array (NaN, NaN when there are none).
function H.mean_se(vals)
  local v = {}
  for _, x in ipairs(vals) do if x == x and x < math.huge then v[#v + 1] = x end end
  if #v == 0 then return 0 / 0, 0 / 0, 0 end
  if #v == 1 then return v[1], 0 / 0, 1 end
  return stats.mean(v), stats.std(v) / math.sqrt(#v), #v
end

-- Median of the finite values (NaN when there are none).
function H.median(vals)
  local v = {}
  for _, x in ipairs(vals) do if x == x and x < math.huge then v[#v + 1] = x end end
  if #v == 0 then return 0 / 0 end
  return stats.quantile(v, 0.5)
end

-- The least-squares slope of log10(mean) against log10 n, with its standard error and the
-- intercept (NaN when fewer than 3 positive means).
function H.slope(ns, means)
  local xs, ys = {}, {}
  for i, v in ipairs(means) do
    if v == v and v > 0 and v < math.huge then xs[#xs + 1], ys[#ys + 1] = ns[i], v end
  end
  if #xs < 3 then return 0 / 0, 0 / 0, 0 / 0 end
  local f = stats.loglog_fit(xs, ys)
  return f.slope, f.slope_se, f.intercept
end

-- The slope over the last decade of the grid (n >= n_max / 10), with its standard error: where a
-- curve flattens, or the pre-asymptotic small-n points steepen it, this differs from H.slope.
function H.tail_slope(ns, means)
  local xs, ys = {}, {}
  for i, n in ipairs(ns) do
    if n >= ns[#ns] / 10 then xs[#xs + 1], ys[#ys + 1] = n, means[i] end
  end
  local s, se = H.slope(xs, ys)
  return s, se
end

-- gnuplot source defining arrays SL, SE, IC, EX (slope, its standard error, intercept, expected
-- slope; NaN where there is none) over the data sets of a summary, in data-set order.
function H.slope_arrays(list)
  local function arr(name, key)
    local v = {}
    for i, s in ipairs(list) do v[i] = (s[key] == s[key] and s[key]) and ('%.6g'):format(s[key]) or 'NaN' end
    return ('array %s[%d] = [%s]\n'):format(name, #list, table.concat(v, ', '))
  end
  return arr('SL', 'slope') .. arr('SE', 'se') .. arr('IC', 'intercept') .. arr('EX', 'expected')
end

H.split = gm.experiment.list -- '+'-separated words of a config string

return H
