-- topk_gating_rates.lua: Reproduction 2 (papers.md §2). Gaussian MoE with a top-K sparse softmax
-- gate; truth: k* = 2 experts under top-1 gating (the §1.3 truth: scores 0 and 6x - 2, a switch at
-- x = 1/3). Maximum-likelihood fits over a log grid of n, repeated; per-parameter errors (gate
-- masses, expert a, b, nu), the region-wise Voronoi loss and the Hellinger distance of the fitted
-- conditional density. Settings (k, K):
--   exact       (2, 1)  exact-specified;
--   over_small  (3, 1)  over-specified, K below the over-fitted cell's size (papers.md: no convergence);
--   over_enough (3, 2)  over-specified, K = the cell size (papers.md: slow but converging).
-- Estimators (experiments/lib/topk_fit.lua has the details): with K = 1 the gate is a hard
-- partition and the likelihood is flat in the gate parameters, so K = 1 fits profile the switch
-- points (closed-form expert per interval; every cut scanned for k = 2, a grid plus coordinate
-- descent at full resolution for k = 3) — the exact MLE over partitions with >= min_seg points per
-- interval. K = 2 fits keep a softmax over the two selected experts: Levenberg-Marquardt on the
-- fused likelihood kernel until the Newton decrement falls below `tol` or the log-likelihood (summed
-- over the data) rises by less than `flat` over `window` iterations (convergence criteria, not a
-- step count: the top-2 likelihood of a top-1 truth keeps rising, ever more slowly, as the switch
-- sharpens towards a supremum at infinity; experiments/lib/moe_mle.lua), from `restarts` starts at the truth with the
-- over-fitted atom a copy of expert 2 plus N(0, noise^2), with a learnt gate temperature tau
-- (scores / tau): the top-1 truth is a hard switch that a top-2 fit reaches only as tau -> 0.
-- Under top-1 gating exp(beta0) and beta1 are not identified (only the partition is), so the gate
-- enters through each atom's mass pi_i = E_x g_i(x). Diverged fits are counted and left out of the
-- means. Each (setting, n) is one resumable unit (run:unit). Writes fits.tsv (every fit),
-- summary.tsv (mean +- standard error per n, one gnuplot data set per parameter x setting; the
-- file committed as plots/figures/topk_gating_rates.tsv), slopes.tsv (log-log slope +- standard
-- error with the expected value) and layout.gp for plots/topk_gating_rates.gp.
--   gmoe run experiments/topk_gating_rates.lua [--quick] [reps=N n_max=N settings=exact+over_small ...]
local gm = require 'gmoe'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local H = dofile(here .. 'lib/gaussian_moe_fit.lua')
local TK = dofile(here .. 'lib/topk_fit.lua')

local SETTINGS = {exact = {k = 2, K = 1}, over_small = {k = 3, K = 1}, over_enough = {k = 3, K = 2}}
local KTRUE = 1
local TRUTH = H.TRUTH
local PARAMS = {'mass', 'a', 'b', 'nu', 'expert', 'voronoi', 'density'}
-- Expected log-log slopes (papers.md §2.1; nil: no claim): exact-specified parametric; with K large
-- enough the density stays parametric while the over-fitted cell's expert parameters slow down
-- (the softmax pattern with r(2) = 4: a and nu n^-1/4, b n^-1/8) and the Voronoi loss with the
-- exponents stays at n^-1/2; with K too small the paper expects no convergence (slope 0). The
-- exact top-1 gate masses have no paper value: under top-1 gating only the switch point is
-- identified, a change point (estimated at n^-1, not n^-1/2).
local EXPECTED = {
  exact = {a = -0.5, b = -0.5, nu = -0.5, expert = -0.5, voronoi = -0.5, density = -0.5},
  over_enough = {mass = -0.5, a = -0.25, b = -0.125, nu = -0.25, expert = -0.125, voronoi = -0.5, density = -0.5},
  over_small = {voronoi = 0, density = 0},
}

return gm.experiment {
  name = 'topk_gating_rates',
  description = 'MLE rates of a top-K sparse softmax gated Gaussian MoE: exact, over-specified with K too small ' ..
                'or large enough',
  config = {seed = 1, n_min = 100, n_max = 100000, points = 12, reps = 20, noise = 0.1, restarts = 3, min_seg = 10,
            max_iter = 2000, tol = 1e-10, window = 20, flat = 1e-3, settings = 'exact+over_small+over_enough'},
  quick = {n_min = 200, n_max = 3000, points = 4, reps = 3, max_iter = 300},
  doc = {settings = "'+'-separated subset of exact (k = 2, K = 1), over_small (k = 3, K = 1), " ..
                    "over_enough (k = 3, K = 2)",
         min_seg = 'fewest points in an interval of a top-1 fit',
         restarts = 'starts of a K >= 2 fit (the best NLL is kept)',
         max_iter = 'Levenberg-Marquardt iterations at most (K >= 2)',
         tol = 'Newton decrement of the mean NLL that ends a K >= 2 fit',
         window = 'a K >= 2 fit also ends when its log-likelihood (summed over the n points) rose by less ' ..
                  'than `flat` over this many iterations',
         flat = 'see window'},
  check = function(cfg)
    for _, s in ipairs(H.split(cfg.settings)) do assert(SETTINGS[s], 'unknown setting ' .. s) end
    assert(cfg.n_min >= 10 * cfg.min_seg and cfg.n_max >= cfg.n_min and cfg.points >= 2 and cfg.reps >= 1, 'bad grid')
  end,
  run = function(cfg, run)
    local settings = H.split(cfg.settings)
    local ns = H.n_grid(cfg.n_min, cfg.n_max, cfg.points)
    local fits = run:tsv('fits', {'setting', 'k', 'K', 'n', 'rep', 'nll', 'iters', 'status', 'tau', 'err_mass', 'err_a',
                                  'err_b', 'err_nu', 'err_expert', 'voronoi', 'density', 'cut1', 'cut2', 'diverged',
                                  'theta'})
    local truth_p = H.params(TRUTH, {gate = 'topk', K = KTRUE})
    local results, units, done = {}, #settings * #ns, 0
    for _, sname in ipairs(settings) do
      local set = SETTINGS[sname]
      local per_n = {}
      for i, n in ipairs(ns) do
        local key = ('%s/%d'):format(sname, n)
        -- the unit holds the fits; errors are computed from the kept parameters below
        local fitted = run:unit(key, function()
          local out = {}
          for rep = 1, cfg.reps do
            -- the same data for every setting
            local X, Y = H.sample(n, TRUTH, {gate = 'topk', K = KTRUE}, run:generator(('data/%d/%d'):format(n, rep)))
            local p, info
            if set.K == 1 then
              local nll, iters
              p, nll, iters = TK.fit_top1(X, Y, set.k, {min_seg = cfg.min_seg})
              info = {nll = nll, iters = iters, status = 'converged'}
            else
              p, info = H.fit(X, Y, {k = set.k, gate = 'topk', K = set.K, learn_tau = true, truth = TRUTH,
                                     noise = cfg.noise, protocol = 'near', restarts = cfg.restarts,
                                     max_iter = cfg.max_iter, tol = cfg.tol, window = cfg.window,
                                     window_tol = cfg.flat / n, generator = run:generator('init/' .. key .. '/' .. rep)})
            end
            out[rep] = {nll = info.nll, iters = info.iters, status = info.status, theta = p and H.MLE.pack(p) or false,
                        cut1 = p and p.cuts and p.cuts[1] or 0 / 0, cut2 = p and p.cuts and p.cuts[2] or 0 / 0,
                        density = p and H.hellinger(H.params(p, {gate = 'topk', K = set.K}), truth_p) or 0 / 0}
          end
          return out
        end)
        local rows = {}
        for rep, f in ipairs(fitted) do
          local row = {setting = sname, k = set.k, K = set.K, n = n, rep = rep, nll = f.nll, iters = f.iters,
                       status = f.status, diverged = f.theta and 0 or 1, density = f.density, cut1 = f.cut1,
                       cut2 = f.cut2}
          if f.theta then
            local p = H.MLE.unpack(f.theta)
            local e = TK.errors(p, set.K, TRUTH, KTRUE)
            for _, q in ipairs {'mass', 'a', 'b', 'nu', 'expert'} do row['err_' .. q] = e[q] end
            row.voronoi, row.tau = e.voronoi, p.tau
            local th = {}
            for q, v in ipairs(f.theta) do th[q] = ('%.10g'):format(v) end
            row.theta = table.concat(th, ',')
          end
          fits:row(row)
          rows[rep] = row
        end
        per_n[i] = rows
        done = done + 1
        run:progress(done, units, key)
      end
      results[sname] = per_n
    end

    local summary = run:tsv('summary', {'parameter', 'setting', 'n', 'mean', 'se', 'reps', 'diverged', 'not_converged',
                                        'median'})
    local slopes = run:tsv('slopes', {'parameter', 'setting', 'slope', 'slope_se', 'expected', 'slope_median',
                                    'slope_tail', 'slope_tail_se'})
    local first, sets, diverged_total, total = true, {}, 0, 0
    for _, par in ipairs(PARAMS) do
      for _, sname in ipairs(settings) do
        if not first then summary:blank(2) end
        first = false
        local means, medians = {}, {}
        for i, n in ipairs(ns) do
          local vals, div, nc = {}, 0, 0
          for _, row in ipairs(results[sname][i]) do
            if row.diverged == 1 then
              div = div + 1
            else
              vals[#vals + 1] = (par == 'density' or par == 'voronoi') and row[par] or row['err_' .. par]
              if row.status ~= 'converged' and row.status ~= 'flat' then nc = nc + 1 end
            end
          end
          local m, se, cnt = H.mean_se(vals)
          means[i], medians[i] = m, H.median(vals)
          summary:row(par, sname, n, m, se, cnt, div, nc, medians[i])
          if par == 'density' then diverged_total, total = diverged_total + div, total + div + cnt end
        end
        local s, se, ic = H.slope(ns, means)
        local exp = EXPECTED[sname][par]
        sets[#sets + 1] = {slope = s, se = se, intercept = ic, expected = exp or 0 / 0}
        if s == s then
          slopes:row(par, sname, s, se, exp or 0 / 0, (H.slope(ns, medians)), H.tail_slope(ns, means))
          run:metric(('slope_%s_%s'):format(par, sname), s)
        end
      end
    end
    run:metric('diverged', diverged_total)
    gm.experiment.write_atomic(run.dir .. '/layout.gp', ('settings = "%s"\nparams = "%s"\n'):format(
      table.concat(settings, ' '), table.concat(PARAMS, ' ')) .. H.slope_arrays(sets))
    run:log('diverged fits: %d of %d', diverged_total, total)
  end,
}
