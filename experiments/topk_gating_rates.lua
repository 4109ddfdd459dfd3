-- topk_gating_rates.lua: Reproduction 2 (papers.md §2.3). Gaussian MoE with a top-K sparse softmax
-- gate; truth: k* = 2 experts under top-1 gating (the §1.3 truth: scores 0 and 6x - 2, a switch at
-- x = 1/3). Maximum-likelihood fits over a log grid of n, repeated; region-wise Voronoi loss to the
-- truth and Hellinger distance of the fitted conditional density. Settings (k, K):
--   exact       (2, 1)  exact-specified;
--   over_small  (3, 1)  over-specified, K too small for the over-fitted cell (papers.md: plateau);
--   over_enough (3, 2)  over-specified, K = the cell size (papers.md: slow but converging).
-- Estimators (experiments/lib/topk_fit.lua has the details): with K = 1 the gate is a hard
-- partition, the likelihood is flat in the gate parameters and gradient steps never move the switch
-- point (the failure of the first attempt), so K = 1 fits profile the switch points: each interval's
-- expert is the closed-form OLS / variance MLE, the cut(s) are found by an exhaustive scan (k = 2) or
-- a coarse grid plus coordinate descent at full resolution (k = 3), every interval >= min_seg points.
-- K = 2 fits keep a softmax over the two selected experts, so they use the shared full-batch Adam
-- harness (gaussian_moe_fit.lua, top-K mask recomputed every step, start at the truth with the
-- over-fitted atom a copy of expert 2 plus N(0, 0.1^2) noise; `restarts` keeps the best NLL) with
-- a learnable gate temperature tau (scores / tau): the top-1 truth is a hard switch that a top-2
-- fit only approaches as its scores grow, and Adam on log tau gets there in a few hundred steps
-- where Adam on beta1 alone stalls (a density plateau at 0.1 in the first try).
-- Under top-1 gating exp(beta0) and beta1 are not identified (only the partition is), so the Voronoi
-- loss scores the gate through each atom's mass E_x g_i(x) (topk_fit.lua). Diverged fits (non-finite
-- NLL) are counted and left out of the means. The parameter error param = sum_i pi_i (|d a| +
-- |d b| + |d nu|) drops the Voronoi exponents, so it shows the per-parameter rate. Writes fits.tsv
-- (cut1, cut2: the fitted switch points of a K = 1 fit), curves.tsv (geometric mean and +-1
-- std-of-log10 band per n, one gnuplot data set per setting), slopes.tsv and layout.gp for
-- plots/topk_gating_rates.gp.
--   gmoe run experiments/topk_gating_rates.lua [--quick] [reps=N n_max=N settings=exact+over_small ...]
local gm = require 'gmoe'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local H = dofile(here .. 'lib/gaussian_moe_fit.lua')
local TK = dofile(here .. 'lib/topk_fit.lua')

local SETTINGS = {exact = {k = 2, K = 1}, over_small = {k = 3, K = 1}, over_enough = {k = 3, K = 2}}
local KTRUE = 1
local TRUTH = H.TRUTH

local function split(s)
  local out = {}
  for w in s:gmatch('[^+]+') do out[#out + 1] = w end
  return out
end

return gm.experiment {
  name = 'topk_gating_rates',
  description = 'MLE rates of a top-K sparse softmax gated Gaussian MoE: exact, over-specified with K too small ' ..
                'or large enough',
  config = {seed = 1, n_min = 1000, n_max = 100000, points = 6, reps = 8, steps = 600, lr = 0.05, noise = 0.1,
            restarts = 1, min_seg = 10, settings = 'exact+over_small+over_enough'},
  quick = {n_min = 300, n_max = 3000, points = 4, reps = 3},
  doc = {settings = "'+'-separated subset of exact (k = 2, K = 1), over_small (k = 3, K = 1), " ..
                    "over_enough (k = 3, K = 2)",
         min_seg = 'fewest points in an interval of a top-1 fit',
         steps = 'Adam steps of a K >= 2 fit'},
  check = function(cfg)
    for _, s in ipairs(split(cfg.settings)) do assert(SETTINGS[s], 'unknown setting ' .. s) end
    assert(cfg.n_min >= 10 * cfg.min_seg and cfg.n_max >= cfg.n_min and cfg.points >= 2 and cfg.reps >= 1, 'bad grid')
  end,
  run = function(cfg, run)
    local settings = split(cfg.settings)
    local ns = H.n_grid(cfg.n_min, cfg.n_max, cfg.points)
    local fits = run:tsv('fits', {'setting', 'k', 'K', 'n', 'rep', 'nll', 'voronoi', 'param', 'density', 'cut1', 'cut2',
                                  'diverged'})
    local total, done = #settings * #ns * cfg.reps, 0
    local truth_p = H.params(TRUTH, {gate = 'topk', K = KTRUE})
    local results, diverged_total = {}, 0
    for _, sname in ipairs(settings) do
      local set = SETTINGS[sname]
      local spec = {k = set.k, gate = 'topk', K = set.K, learn_tau = true, steps = cfg.steps, lr = cfg.lr,
                    noise = cfg.noise, truth = TRUTH}
      local per_n = {}
      for i, n in ipairs(ns) do
        local r = {voronoi = {}, param = {}, density = {}, diverged = 0}
        for rep = 1, cfg.reps do
          local stream = ('%s/%d/%d'):format(sname, n, rep)
          local X, Y = H.sample(n, TRUTH, {gate = 'topk', K = KTRUE}, run:generator('data/' .. stream))
          local best, best_nll
          if set.K == 1 then
            best, best_nll = TK.fit_top1(X, Y, set.k, {min_seg = cfg.min_seg})
          else
            spec.generator = run:generator('init/' .. stream)
            for _ = 1, cfg.restarts do
              local p, nll = H.fit(X, Y, spec)
              if nll == nll and nll < math.huge and nll < (best_nll or math.huge) then best, best_nll = p, nll end
            end
          end
          local row = {setting = sname, k = set.k, K = set.K, n = n, rep = rep, diverged = best and 0 or 1}
          if best then
            row.nll = best_nll
            row.voronoi, row.param = TK.voronoi(best, set.K, TRUTH, KTRUE)
            row.density = H.hellinger(H.params(best, {gate = 'topk', K = set.K}), truth_p)
            row.cut1 = best.cuts and best.cuts[1] or 0 / 0
            row.cut2 = best.cuts and best.cuts[2] or 0 / 0
            table.insert(r.voronoi, row.voronoi)
            table.insert(r.param, row.param)
            table.insert(r.density, row.density)
          else
            r.diverged = r.diverged + 1
            diverged_total = diverged_total + 1
          end
          fits:row(row)
          done = done + 1
          run:progress(done, total, ('%s n=%d'):format(sname, n))
        end
        per_n[i] = r
      end
      results[sname] = per_n
    end

    local curves = run:tsv('curves', {'n', 'voronoi', 'v_lo', 'v_hi', 'param', 'p_lo', 'p_hi', 'density', 'd_lo', 'd_hi',
                                      'fits', 'diverged'})
    local slopes = run:tsv('slopes', {'setting', 'metric', 'slope', 'slope_se'})
    for si, sname in ipairs(settings) do
      if si > 1 then curves:blank(2) end
      local means = {voronoi = {}, param = {}, density = {}}
      for i, n in ipairs(ns) do
        local r = results[sname][i]
        local v, vl, vh = H.band(r.voronoi)
        local q, ql, qh = H.band(r.param)
        local d, dl, dh = H.band(r.density)
        means.voronoi[i], means.param[i], means.density[i] = v, q, d
        curves:row(n, v, vl, vh, q, ql, qh, d, dl, dh, #r.voronoi, r.diverged)
      end
      for _, metric in ipairs {'voronoi', 'param', 'density'} do
        local s, se = H.slope(ns, means[metric])
        slopes:row(sname, metric, s, se)
        run:metric(('slope_%s_%s'):format(metric, sname), s)
      end
    end
    run:metric('diverged', diverged_total)
    gm.experiment.write_atomic(run.dir .. '/layout.gp', ('settings = "%s"\n'):format(table.concat(settings, ' ')))
    run:log('diverged fits: %d of %d', diverged_total, total)
  end,
}
