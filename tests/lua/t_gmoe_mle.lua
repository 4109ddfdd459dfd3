-- t_gmoe_mle.lua: the maximum-likelihood machinery of the gating-rate reproductions
-- (experiments/lib/*.lua): the fused kernel gm.data.gaussian_moe_eval against the composed
-- gaussian_moe_loglik for every gate (value, finite-difference gradient, outer products of the
-- per-point scores) and its errors; the Voronoi loss with cell-size exponents against values
-- computed by hand (one cell with two atoms, one with one); re-expressing a label-switched fit
-- keeps its density; Levenberg-Marquardt fits converge to the truth and, for the temperature gate,
-- end along the (beta, tau) ray where they start with the same likelihood.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'
local H = dofile('experiments/lib/gaussian_moe_fit.lua')
local MLE = H.MLE

local function f64(t) return gm.tensor(t, {dtype = 'f64'}) end

-- ---- the fused kernel --------------------------------------------------------------------
local X, Y = gm.data.gaussian_moe {n = 300, seed = 5}
local x = X:reshape {-1}
local P3 = {beta0 = {0, -1.5, -2.2}, beta1 = {0, 5, 7}, a = {-3, 2.5, 3.1}, b = {1, -1, -0.8},
            nu = {0.1, 0.2, 0.15}, tau = 0.8}
local th = MLE.pack(P3)
local GATES = {{'softmax'}, {'temperature'}, {'activation', 'tanh'}, {'activation', 'sigmoid'}, {'topk', nil, 1},
               {'topk', nil, 2}}
for _, g in ipairs(GATES) do
  local spec = {gate = g[1], activation = g[2], K = g[3]}
  local name = g[1] .. (g[2] and '/' .. g[2] or '') .. (g[3] and '/K=' .. g[3] or '')
  local nll, grad, opg = gm.data.gaussian_moe_eval(x, Y, f64 {th}, {gate = spec.gate, activation = spec.activation,
                                                                     K = spec.K, what = 'opg'})
  local p = H.params(P3, spec)
  if spec.gate == 'softmax' then p.tau = 1 end
  local ref = -gm.data.gaussian_moe_loglik(X, Y, p):mean():item()
  tap.close(nll:item(), ref, 1e-12, name .. ': NLL equals the composed gaussian_moe_loglik')
  local gv, worst = grad:totable()[1], 0
  for j = 1, #th do
    local tp, tm = {table.unpack(th)}, {table.unpack(th)}
    tp[j], tm[j] = tp[j] + 1e-6, tm[j] - 1e-6
    local fp = gm.data.gaussian_moe_eval(x, Y, f64 {tp}, spec):item()
    local fm = gm.data.gaussian_moe_eval(x, Y, f64 {tm}, spec):item()
    worst = math.max(worst, math.abs((fp - fm) / 2e-6 - gv[j]))
  end
  tap.ok(worst < 1e-7, name .. ': gradient matches central differences', ('max error %.2e'):format(worst))
  -- the outer products of 10 points = the mean of the outer products of each point's gradient
  local xs, ys = x:narrow(0, 0, 10), Y:narrow(0, 0, 10)
  local _, _, o10 = gm.data.gaussian_moe_eval(xs, ys, f64 {th}, {gate = spec.gate, activation = spec.activation,
                                                                  K = spec.K, what = 'opg'})
  local O, err = o10:totable()[1], 0
  local acc = {}
  for q = 0, 9 do
    local _, g1 = gm.data.gaussian_moe_eval(xs:narrow(0, q, 1), ys:narrow(0, q, 1), f64 {th},
                                            {gate = spec.gate, activation = spec.activation, K = spec.K, what = 'grad'})
    local s = g1:totable()[1]
    for i = 1, #th do
      acc[i] = acc[i] or {}
      for j = 1, #th do acc[i][j] = (acc[i][j] or 0) + s[i] * s[j] / 10 end
    end
  end
  for i = 1, #th do for j = 1, #th do err = math.max(err, math.abs(acc[i][j] - O[i][j])) end end
  tap.ok(err < 1e-12, name .. ': outer products are the mean of score x score', ('max error %.2e'):format(err))
end
-- rows are independent starts: two rows give each row's own value
local other = MLE.pack {beta0 = {0, -2, -2}, beta1 = {0, 6, 6}, a = {-3, 3, 3}, b = {1, -1, -1}, nu = {0.09, 0.16, 0.16},
                        tau = 1}
local two = gm.data.gaussian_moe_eval(x, Y, f64 {th, other}, {gate = 'temperature'}):totable()
tap.close(two[1], gm.data.gaussian_moe_eval(x, Y, f64 {th}, {gate = 'temperature'}):item(), 0,
          'several rows: each row as alone')

local function fails(f, pat, name)
  local ok, err = pcall(f)
  tap.ok(not ok and tostring(err):find(pat, 1, true), name, tostring(err))
end
fails(function() gm.data.gaussian_moe_eval(x:to('f32'), Y, f64 {th}) end, 'x must be f64', 'f32 data is refused')
fails(function() gm.data.gaussian_moe_eval(x, Y, f64 {{1, 2, 3}}) end, 'theta must be [R, 5k + 1]',
      'a theta of the wrong width is refused')
fails(function() gm.data.gaussian_moe_eval(x, Y:narrow(0, 0, 10), f64 {th}) end, 'x must be [n] or [n, 1]',
      'x and y of different lengths are refused')
fails(function() gm.data.gaussian_moe_eval(x, Y, f64 {th}, {gate = 'topk', K = 4}) end, 'K must be in 1..3',
      'K beyond the experts is refused')
fails(function() gm.data.gaussian_moe_eval(f64 {0.5, 0 / 0}, f64 {1, 2}, f64 {th}) end, 'data point 1',
      'a non-finite data point is named')
fails(function() gm.data.gaussian_moe_eval(x, Y, f64 {th}, {gate = 'hash'}) end, 'gate must be one of',
      'an unknown gate is refused')

-- ---- the Voronoi loss with cell-size exponents (papers.md §1.1) ---------------------------
-- truth: k* = 2 (H.TRUTH); fit: atom 1 alone in cell 1, atoms 2 and 3 share cell 2 (r(2) = 4).
local fit = {beta0 = {0, -2.5, -3}, beta1 = {0, 6.5, 5.8}, a = {-3.1, 3.2, 2.9}, b = {1.05, -0.9, -1.2},
             nu = {0.1, 0.2, 0.15}, tau = 1}
-- softmax gate, w_i = exp(beta0_i):
--   cell 1: |1 - 1| + 1 * (|0| + 0.1 + 0.05 + 0.01)                                  = 0.16
--   cell 2: |e^-2.5 + e^-3 - e^-2|                                                   = 0.003463216244849965
--         + e^-2.5 (0.5^4 + 0.2^(4/2) + 0.1^4 + 0.04^(4/2)) = e^-2.5 * 0.1042       = 0.008553256856610255
--         + e^-3 (0.2^4 + 0.1^2 + 0.2^4 + 0.01^2)           = e^-3 * 0.0133         = 0.0006621680092925905
local e = H.errors(fit, H.TRUTH, 'softmax', {learn_tau = false})
tap.close(e.voronoi, 0.17267864111075285, 1e-14, 'Voronoi loss, softmax: two-atom and one-atom cells by hand')
tap.is(table.concat(e.cells, ','), '1,2,2', 'atoms go to the cell of the nearest true expert')
tap.close(e.beta1, (math.exp(-2.5) * 0.5 + math.exp(-3) * 0.2) / (math.exp(-2.5) + math.exp(-3)), 1e-14,
          'beta1 error: per true atom, its cell averaged by weight, no exponents')
tap.close(e.a, 0.1 + (math.exp(-2.5) * 0.2 + math.exp(-3) * 0.1) / (math.exp(-2.5) + math.exp(-3)), 1e-14,
          'a error: the one-atom cell counts in full')
-- no fitted atom near true expert 1: its error comes from the nearest fitted atom
local far = {beta0 = {0, -2}, beta1 = {0, 6}, a = {2.5, 3.1}, b = {-0.5, -1.1}, nu = {0.1, 0.2}, tau = 1}
tap.close(H.errors(far, H.TRUTH, 'softmax', {learn_tau = false}).a, 5.5 + (0.5 + math.exp(-2) * 0.1) / (1 + math.exp(-2)),
          1e-12, 'an empty cell takes the nearest fitted atom')
tap.ok(e.tau ~= e.tau, 'no tau error for a gate without a learnt temperature')
-- temperature gate with tau = 2 (tau* = 1): w_i = exp(beta0_i / 2), |d tau| = 1 joins every atom
-- (to the power 1 alone, 4 in the two-atom cell): 1.16 + |e^-1.25 + e^-1.5 - e^-2|
-- + e^-1.25 (0.1042 + 1) + e^-1.5 (0.0133 + 1)
fit.tau = 2
e = H.errors(fit, H.TRUTH, 'temperature')
tap.close(e.voronoi, 2.076756061743433, 1e-14, 'Voronoi loss, temperature gate: the tau terms by hand')
tap.close(e.tau, 1, 0, '|tau - tau*|')
-- the lighter atom's share of an over-fitted cell's gate mass: atoms 2 and 3 with the same slope
-- split cell 2 in the ratio e^beta0_2 : e^beta0_3 = 1 : 3 at every x, so the share is 1/4
local split = {beta0 = {0, -2 + math.log(0.25), -2 + math.log(0.75)}, beta1 = {0, 6, 6}, a = {-3, 3, 3.1},
               b = {1, -1, -1}, nu = {0.09, 0.16, 0.16}, tau = 1}
tap.close(H.minor_share(split, H.TRUTH, {gate = 'softmax'}), 0.25, 1e-12, 'minor share of an over-fitted cell')
tap.ok(H.minor_share(H.TRUTH, H.TRUTH, {gate = 'softmax'}) ~= H.minor_share(H.TRUTH, H.TRUTH, {gate = 'softmax'}),
       'no over-fitted cell: the share is NaN')

-- top-1 gate masses are interval lengths: the truth switches at 6x - 2 = 0
local TK = dofile('experiments/lib/topk_fit.lua')
local pm = TK.masses(H.TRUTH, 1)
tap.ok(math.abs(pm[1] - 1 / 3) < 1e-15 and math.abs(pm[2] - 2 / 3) < 1e-15, 'top-1 masses: exact interval lengths',
       pm[1] .. ' ' .. pm[2])
local p3 = {beta0 = {0, -1, -3}, beta1 = {0, 4, 6}, tau = 1}
pm = TK.masses(p3, 1)
tap.ok(math.abs(pm[1] - 0.25) < 1e-15 and math.abs(pm[2] - 0.75) < 1e-15 and pm[3] == 0,
       'top-1 masses: three lines, one never on top', table.concat(pm, ' '))

-- ---- label switching ---------------------------------------------------------------------
-- atom 1 (the fixed reference) fitted to true expert 2: re-expressed, the density is unchanged
for _, g in ipairs {{'temperature'}, {'activation', 'tanh'}, {'activation', 'sigmoid'}} do
  local sw = {beta0 = {0, 2}, beta1 = {0, -6}, a = {3, -3}, b = {-1, 1}, nu = {0.16, 0.09}, tau = 1}
  local c, stuck = H.canonical(sw, H.TRUTH, g[1])
  local spec = {gate = g[1], activation = g[2]}
  local l0 = gm.data.gaussian_moe_loglik(X, Y, H.params(sw, spec)):sum():item()
  local l1 = gm.data.gaussian_moe_loglik(X, Y, H.params(c, spec)):sum():item()
  tap.ok(not stuck and c.beta1[2] == 0 and math.abs(l0 - l1) < 1e-9, (g[2] or g[1]) ..
         ': a label-switched fit is re-expressed with the same likelihood', ('%.12g vs %.12g'):format(l0, l1))
end

-- ---- the estimator -----------------------------------------------------------------------
local Xb, Yb = H.sample(20000, H.TRUTH, {gate = 'temperature'}, gm.Generator(3))
local spec = {k = 2, gate = 'softmax', learn_tau = false, truth = H.TRUTH, noise = 0.1, protocol = 'near', restarts = 2,
              generator = gm.Generator(4)}
local p, info = H.fit(Xb, Yb, spec)
tap.ok(info.status == 'converged' and info.iters < 50, 'softmax, exact: converged in a few iterations',
       info.status .. ' after ' .. info.iters)
local err = H.errors(H.canonical(p, H.TRUTH, 'softmax'), H.TRUTH, 'softmax', {learn_tau = false})
tap.ok(err.voronoi < 0.1 and err.expert < 0.05, 'softmax, exact, n = 20000: the fit is near the truth',
       ('Voronoi %.3g, experts %.3g'):format(err.voronoi, err.expert))
-- temperature gate from three starts on the ray: one likelihood, one beta / tau, three taus
local starts, logc = H.starts('ridge', {k = 2, gate = 'temperature', learn_tau = true, truth = H.TRUTH, noise = 0,
                                        ridge = 3}, gm.Generator(9), 3)
local res = MLE.fit(Xb:reshape {-1}, Yb, starts, {gate = 'temperature', learn_tau = true})
local nlls, ratios, taus = {}, {}, {}
for r, o in ipairs(res) do
  local q = MLE.unpack(o.theta)
  nlls[r], ratios[r], taus[r] = o.nll, q.beta1[2] / q.tau, q.tau
end
tap.ok(math.abs(nlls[1] - nlls[2]) < 1e-9 and math.abs(nlls[1] - nlls[3]) < 1e-9,
       'temperature gate: the starts on the ray reach one likelihood', table.concat(nlls, ' '))
tap.ok(math.abs(ratios[1] - ratios[2]) < 1e-4 and math.abs(ratios[1] - ratios[3]) < 1e-4,
       'temperature gate: ... and one beta1 / tau', table.concat(ratios, ' '))
local moved = 0
for r = 1, 3 do moved = math.max(moved, math.abs(math.log(taus[r]) - logc[r])) end
tap.ok(moved < 0.1, 'temperature gate: ... but tau stays where the start put it on the ray',
       ('max |log tau - log c| = %.3g'):format(moved))

tap.done()
