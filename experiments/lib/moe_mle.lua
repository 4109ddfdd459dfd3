-- moe_mle.lua: maximum likelihood of a Gaussian MoE with a 1-D covariate (papers.md §1.2-1.3,
-- §2.3) by Levenberg-Marquardt on the BHHH curvature: each iteration solves
-- (J + lambda (diag J + mu)) d = -g on the free parameters, J the mean outer product of the
-- per-point scores and g the gradient of the mean NLL (both from one pass of the fused kernel
-- gm.data.gaussian_moe_eval), takes the step when the NLL falls (lambda / 5) and refuses it
-- otherwise (lambda * 5). Near a regular maximum J is the Fisher information, so steps are
-- Newton steps (tens of iterations where Adam needs thousands); along flat directions (the
-- (beta, tau) ray of the temperature gate, the copies of an over-fitted cell) the damping keeps
-- steps bounded. Convergence: the Newton decrement g^T J^-1 g / 2 below `tol` (the NLL cannot fall
-- by more than about that), not a fixed step count. All starts (restarts) of one data set are
-- iterated together, one kernel call per iteration.
local gm = require 'gmoe'

local M = {}

-- theta layout (P = 5k + 1): beta0[k] beta1[k] a[k] b[k] log nu[k] log tau.
function M.pack(p)
  local k, th = #p.beta0, {}
  for i = 1, k do
    th[i], th[k + i], th[2 * k + i], th[3 * k + i] = p.beta0[i], p.beta1[i], p.a[i], p.b[i]
    th[4 * k + i] = math.log(p.nu[i])
  end
  th[5 * k + 1] = math.log(p.tau or 1)
  return th
end

function M.unpack(th)
  local k = (#th - 1) // 5
  local p = {beta0 = {}, beta1 = {}, a = {}, b = {}, nu = {}, tau = math.exp(th[5 * k + 1])}
  for i = 1, k do
    p.beta0[i], p.beta1[i], p.a[i], p.b[i] = th[i], th[k + i], th[2 * k + i], th[3 * k + i]
    p.nu[i] = math.exp(th[4 * k + i])
  end
  return p
end

-- The free coordinates: all but expert 1's gate (the softmax's translation reference, fixed at
-- 0) and log tau when the gate has no learnable temperature.
function M.free(k, learn_tau)
  local f = {}
  for i = 2, k do f[#f + 1] = i end
  for i = k + 2, 2 * k do f[#f + 1] = i end
  for i = 2 * k + 1, 5 * k do f[#f + 1] = i end
  if learn_tau then f[#f + 1] = 5 * k + 1 end
  return f
end

-- Cholesky solve of A x = b (A symmetric m x m as nested arrays); nil when A is not positive definite.
local function chol_solve(A, b)
  local m, L = #b, {}
  for i = 1, m do
    L[i] = {}
    for j = 1, i do
      local s = A[i][j]
      for q = 1, j - 1 do s = s - L[i][q] * L[j][q] end
      if i == j then
        if not (s > 0) then return nil end
        L[i][i] = math.sqrt(s)
      else
        L[i][j] = s / L[j][j]
      end
    end
  end
  local z, x = {}, {}
  for i = 1, m do
    local s = b[i]
    for q = 1, i - 1 do s = s - L[i][q] * z[q] end
    z[i] = s / L[i][i]
  end
  for i = m, 1, -1 do
    local s = z[i]
    for q = i + 1, m do s = s - L[q][i] * x[q] end
    x[i] = s / L[i][i]
  end
  return x
end

-- (J_FF + lambda (diag J_FF + mu)) d = -g_F; returns the step on the free coordinates and the
-- model's predicted NLL decrease -g.d - d.J.d / 2, raising lambda until the system is definite.
local function lm_step(J, g, F, lambda)
  local m, dmax = #F, 0
  for a = 1, m do dmax = math.max(dmax, J[F[a]][F[a]]) end
  local mu = 1e-12 * dmax + 1e-300
  while true do
    local A, rhs = {}, {}
    for a = 1, m do
      A[a], rhs[a] = {}, -g[F[a]]
      for b = 1, m do A[a][b] = J[F[a]][F[b]] end
      A[a][a] = A[a][a] + lambda * (A[a][a] + mu)
    end
    local d = chol_solve(A, rhs)
    if d then
      local pred = 0
      for a = 1, m do
        local Jd = 0
        for b = 1, m do Jd = Jd + J[F[a]][F[b]] * d[b] end
        pred = pred - g[F[a]] * d[a] - 0.5 * d[a] * Jd
      end
      return d, pred, lambda
    end
    lambda = math.max(lambda * 10, 1e-8)
  end
end

local function eval(x, y, thetas, spec)
  local out = {gm.data.gaussian_moe_eval(x, y, gm.tensor(thetas, {dtype = 'f64'}),
                                         {gate = spec.gate, activation = spec.activation, K = spec.K,
                                          what = 'opg'})}
  for i, t in ipairs(out) do out[i] = t:totable() end
  return table.unpack(out)
end

-- Box of each coordinate: |beta|, |a|, |b| <= 50, nu in [1e-8, 100], tau in [e^-10, e^10]. A step
-- is projected onto the box; a coordinate on its bound whose gradient points out of the box is
-- held for that step (projected Levenberg-Marquardt), so a gate running off to a hard switch or a
-- collapsing variance ends on the bound instead of stalling the fit.
function M.box(k)
  local lo, hi = {}, {}
  for i = 1, 4 * k do lo[i], hi[i] = -50, 50 end
  for i = 4 * k + 1, 5 * k do lo[i], hi[i] = math.log(1e-8), math.log(100) end
  lo[5 * k + 1], hi[5 * k + 1] = -10, 10
  return lo, hi
end

local function movable(F, th, g, lo, hi)
  local out = {}
  for _, i in ipairs(F) do
    local held = (th[i] <= lo[i] and g[i] > 0) or (th[i] >= hi[i] and g[i] < 0)
    if not held then out[#out + 1] = i end
  end
  return out
end

-- Fits from each start (arrays in the layout above) on x [n], y [n] (f64 tensors).
-- spec: gate, activation, K, learn_tau, max_iter (1000), tol (1e-10, on the Newton decrement of
-- the mean NLL over the coordinates not held on the box), window (off: with a count w, a fit also
-- ends once the mean NLL fell by less than window_tol over its last w iterations — for likelihoods whose
-- supremum lies at infinity, like a top-2 fit of a top-1 truth, where the decrement falls only
-- as fast as the remaining gain). Returns one table per start: {theta, nll, iters, converged
-- (decrement below tol, or flat over the window), status = "converged" | "flat" | "max_iter" |
-- "stalled" (lambda past 1e12: no step lowers the NLL) | "nonfinite"}.
function M.fit(x, y, starts, spec)
  local P = #starts[1]
  local k = (P - 1) // 5
  local F = M.free(k, spec.learn_tau)
  local lo, hi = M.box(k)
  local max_iter, tol = spec.max_iter or 1000, spec.tol or 1e-10
  local st = {}
  local inside = {}
  for r, th in ipairs(starts) do
    inside[r] = {table.unpack(th)}
    for i = 1, P do inside[r][i] = math.min(math.max(th[i], lo[i]), hi[i]) end
  end
  local nll, g, J = eval(x, y, inside, spec)
  for r, th in ipairs(inside) do
    local ok = nll[r] == nll[r] and nll[r] < math.huge
    st[r] = {theta = th, nll = nll[r], g = g[r], J = J[r], lambda = 1e-3, iters = 0, last = math.huge,
             done = not ok, status = ok and 'max_iter' or 'nonfinite', converged = false, hist = {[0] = nll[r]}}
  end
  while true do
    local act, trials = {}, {}
    for r, s in ipairs(st) do
      if not s.done then
        local Fm = movable(F, s.theta, s.g, lo, hi)
        -- converged: the undamped Newton decrement (checked once the NLL has nearly stopped falling)
        if s.last < 1e-6 and (#Fm == 0 or select(2, lm_step(s.J, s.g, Fm, 1e-9)) < tol) then
          s.done, s.converged, s.status = true, true, 'converged'
        elseif spec.window and s.iters >= spec.window and s.hist[s.iters - spec.window] - s.nll < spec.window_tol then
          s.done, s.converged, s.status = true, true, 'flat'
        elseif s.iters >= max_iter then
          s.done = true
        elseif s.lambda > 1e12 then
          s.done, s.status = true, 'stalled'
        else
          local d, _, lam = lm_step(s.J, s.g, Fm, s.lambda)
          s.lambda = lam
          local th = {table.unpack(s.theta)}
          for a, i in ipairs(Fm) do th[i] = math.min(math.max(th[i] + d[a], lo[i]), hi[i]) end
          act[#act + 1], trials[#trials + 1] = r, th
        end
      end
    end
    if #trials == 0 then break end
    local tn, tg, tJ = eval(x, y, trials, spec)
    for q, r in ipairs(act) do
      local s = st[r]
      s.iters = s.iters + 1
      if tn[q] == tn[q] and tn[q] < s.nll then
        s.last = s.nll - tn[q]
        s.theta, s.nll, s.g, s.J = trials[q], tn[q], tg[q], tJ[q]
        s.lambda = math.max(s.lambda / 5, 1e-10)
      else
        s.lambda = s.lambda * 5
        s.last = 0 -- a refused step: check the decrement before the next one
      end
      if spec.window then s.hist[s.iters] = s.nll end
    end
  end
  local out = {}
  for r, s in ipairs(st) do
    out[r] = {theta = s.theta, nll = s.nll, iters = s.iters, converged = s.converged, status = s.status}
  end
  return out
end

return M
