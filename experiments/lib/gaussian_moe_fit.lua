-- gaussian_moe_fit.lua: the shared harness of the Gaussian-MoE rate reproductions
-- (experiments/temperature_gates.lua, experiments/topk_gating_rates.lua; papers.md §1.3, §2.3).
-- Maximum likelihood of a softmax-gated Gaussian MoE by full-batch Adam on the exact
-- log-likelihood (gm.data.gaussian_moe_loglik), initialised at the truth plus N(0, 0.1^2) noise;
-- the Voronoi loss of a fit to the truth; the Hellinger distance of the fitted conditional density;
-- and the rate table (geometric mean and band per n, least-squares slope in log-log space).
local gm = require 'gmoe'
local stats = require 'gmoe.stats'

local H = {}

-- The truth of papers.md §1.3: k* = 2, expert 1 is the gate's reference (its gating parameters
-- are 0 in the truth and fixed at 0 in every fit: the translation non-identifiability).
H.TRUTH = {beta0 = {0, -2}, beta1 = {0, 6}, a = {-3, 3}, b = {1, -1}, nu = {0.09, 0.16}, tau = 1}

-- Starting atoms for k fitted experts: the true atoms, and for k > k* copies of the last true
-- atom with its gate weight split evenly (an over-fitted Voronoi cell), before the noise.
local function start_atoms(k, T)
  local atoms = {}
  for i = 1, #T.beta0 do atoms[i] = {beta0 = T.beta0[i], beta1 = T.beta1[i], a = T.a[i], b = T.b[i], nu = T.nu[i]} end
  local last = #T.beta0
  local extra = k - last
  if extra > 0 then
    local w = math.log(extra + 1)
    atoms[last].beta0 = T.beta0[last] - w
    for j = 1, extra do
      atoms[last + j] = {beta0 = T.beta0[last] - w, beta1 = T.beta1[last], a = T.a[last], b = T.b[last], nu = T.nu[last]}
    end
  end
  return atoms
end

local function f64(t) return gm.tensor(t, {dtype = 'f64'}) end

-- One maximum-likelihood fit. spec: {k=, gate=, activation=, K=, learn_tau=, steps=, lr=,
-- noise=0.1, generator=, truth=H.TRUTH (the start)}. Returns the fitted parameters as Lua arrays {beta0, beta1, a, b, nu,
-- tau}, the final mean NLL and the number of steps taken.
function H.fit(X, Y, spec)
  local k = spec.k
  local T = spec.truth or H.TRUTH
  local atoms = start_atoms(k, T)
  local z = gm.randn({5, k}, {dtype = 'f64', generator = spec.generator}):totable()
  local zt = gm.randn({1}, {dtype = 'f64', generator = spec.generator}):totable()[1]
  local s = spec.noise or 0.1
  local b0, b1, a, b, lnu = {}, {}, {}, {}, {}
  for i = 1, k do
    local at = atoms[i]
    local ref = i == 1 and 0 or 1 -- the reference expert's gate stays at 0
    b0[i] = ref * (at.beta0 + s * z[1][i])
    b1[i] = {ref * (at.beta1 + s * z[2][i])}
    a[i] = {at.a + s * z[3][i]}
    b[i] = at.b + s * z[4][i]
    lnu[i] = math.log(at.nu) + s * z[5][i]
  end
  local mask = {}
  for i = 1, k do mask[i] = i == 1 and 0 or 1 end
  local P = {beta0 = f64(b0):requires_grad_(), beta1 = f64(b1):requires_grad_(), a = f64(a):requires_grad_(),
             b = f64(b):requires_grad_(), lognu = f64(lnu):requires_grad_()}
  local params = {P.beta0, P.beta1, P.a, P.b, P.lognu}
  if spec.learn_tau then
    P.logtau = f64({math.log(T.tau) + s * zt}):requires_grad_()
    params[#params + 1] = P.logtau
  end
  local m0, m1 = f64(mask), f64(mask):unsqueeze(1)
  local function model()
    return {gate = spec.gate, activation = spec.activation, K = spec.K, beta0 = P.beta0 * m0,
            beta1 = P.beta1 * m1, a = P.a, b = P.b, nu = P.lognu:exp(), tau = P.logtau and P.logtau:exp() or 1}
  end
  local lr, steps = spec.lr or 0.02, spec.steps or 500
  local opt = gm.optim.Adam(params, {lr = lr})
  local nll, prev, taken = math.huge, math.huge, 0
  for step = 1, steps do
    opt.lr = 1e-4 + 0.5 * (lr - 1e-4) * (1 + math.cos(math.pi * (step - 1) / steps)) -- cosine to 1e-4
    opt:zero_grad()
    local loss = -gm.data.gaussian_moe_loglik(X, Y, model()):mean()
    nll = loss:item()
    taken = step
    if nll ~= nll or nll == math.huge then break end
    loss:backward()
    opt:step()
    if step % 50 == 0 then
      if math.abs(prev - nll) < 1e-10 * math.max(1, math.abs(nll)) then break end
      prev = nll
    end
  end
  local out = {beta0 = (P.beta0 * m0):totable(), a = {}, b = P.b:totable(), nu = P.lognu:exp():totable(),
               tau = P.logtau and P.logtau:exp():item() or 1, beta1 = {}}
  local bb, aa = (P.beta1 * m1):totable(), P.a:totable()
  for i = 1, k do out.beta1[i], out.a[i] = bb[i][1], aa[i][1] end
  return out, nll, taken
end

-- A truth with some fields replaced.
function H.truth(over)
  local t = {}
  for k, v in pairs(H.TRUTH) do t[k] = v end
  for k, v in pairs(over or {}) do t[k] = v end
  return t
end

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

-- Voronoi loss of papers.md §1.1: fitted atoms go to the cell of the nearest true expert
-- (distance in the expert parameters (a, b): label switching is resolved by the assignment,
-- never by index). Loss = sum_j |sum_{i in A_j} exp(beta0_i) - exp(beta0*_j)| + for one-atom cells
-- exp(beta0_i) (|d beta1| + |d a| + |d b| + |d nu| + |d tau|) + for cells of m >= 2 atoms
-- exp(beta0_i) (|d beta1|^r + |d a|^(r/2) + |d b|^r + |d nu|^(r/2) + |d tau|^r), r = r(m) = 2m
-- (r(2) = 4, r(3) = 6). opts.ratio scores beta0 / tau and beta1 / tau instead of the raw gate
-- parameters and drops the tau term (the identifiable part of a temperature gate). opts.truth:
-- the true parameters (H.TRUTH by default).
function H.voronoi(p, opts)
  opts = opts or {}
  local T = opts.truth or H.TRUTH
  local ks, kf = #T.beta0, #p.beta0
  local cells = {}
  for j = 1, ks do cells[j] = {} end
  for i = 1, kf do
    local best, bd = 1, math.huge
    for j = 1, ks do
      local d = (p.a[i] - T.a[j]) ^ 2 + (p.b[i] - T.b[j]) ^ 2
      if d < bd then best, bd = j, d end
    end
    table.insert(cells[best], i)
  end
  local tau, tau_true = p.tau or 1, T.tau
  local g0 = function(i) return opts.ratio and p.beta0[i] / tau or p.beta0[i] end
  local g1 = function(i) return opts.ratio and p.beta1[i] / tau or p.beta1[i] end
  local loss = 0
  for j = 1, ks do
    local mass = 0
    local m = #cells[j]
    local r = m >= 2 and 2 * m or 1
    for _, i in ipairs(cells[j]) do
      local w = math.exp(g0(i))
      mass = mass + w
      local d1 = math.abs(g1(i) - T.beta1[j] / (opts.ratio and tau_true or 1))
      local da, db, dn = math.abs(p.a[i] - T.a[j]), math.abs(p.b[i] - T.b[j]), math.abs(p.nu[i] - T.nu[j])
      local dt = opts.ratio and 0 or math.abs(tau - tau_true)
      if m >= 2 then
        loss = loss + w * (d1 ^ r + da ^ (r / 2) + db ^ r + dn ^ (r / 2) + dt ^ r)
      else
        loss = loss + w * (d1 + da + db + dn + dt)
      end
    end
    loss = loss + math.abs(mass - math.exp(T.beta0[j] / (opts.ratio and tau_true or 1)))
  end
  return loss
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

-- Rate summary of positive values over reps: geometric mean and a band of +- one std of log10.
function H.band(vals)
  local logs = {}
  for _, v in ipairs(vals) do if v > 0 and v < math.huge then logs[#logs + 1] = math.log(v, 10) end end
  if #logs == 0 then return 0 / 0, 0 / 0, 0 / 0 end
  local m, s = stats.mean(logs), stats.std(logs)
  return 10 ^ m, 10 ^ (m - s), 10 ^ (m + s)
end

-- The slope of log10 (geometric mean) against log10 n, with its standard error.
function H.slope(ns, means)
  local xs, ys = {}, {}
  for i, v in ipairs(means) do
    if v == v and v > 0 then xs[#xs + 1], ys[#ys + 1] = ns[i], v end
  end
  if #xs < 2 then return 0 / 0, 0 / 0 end
  local f = stats.loglog_fit(xs, ys)
  return f.slope, f.slope_se
end

return H
