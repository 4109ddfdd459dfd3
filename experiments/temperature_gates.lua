-- temperature_gates.lua: Reproduction 1 (papers.md §1). Softmax-gated Gaussian MoE with a 1-D
-- covariate; maximum likelihood of all parameters (Levenberg-Marquardt to a Newton-decrement
-- tolerance, restarts keep the best NLL; experiments/lib/moe_mle.lua) over a log grid of n, repeated.
-- Arms: the dense-to-sparse gate softmax((beta0 + beta1 x) / tau) with a learnt temperature, the
-- activation gates softmax(act(beta1 x) / tau + beta0) with tanh and sigmoid, and plain softmax
-- (tau = 1) as control; exact- (k = 2) and over-specified (k = 3) fits; three start protocols:
-- near the truth (the CRPE-SGaME template), spread along the gate's (beta, tau) ray, random
-- (experiments/lib/gaussian_moe_fit.lua, H.starts). Per fit: |tau - tau*|, beta1, beta1 / tau and
-- expert-parameter errors, the Voronoi loss with the cell-size exponents of §1.1, the Hellinger
-- distance of the fitted conditional density, and (minor) the share of an over-fitted cell's gate
-- mass on its lighter atom. Each (setting, arm, protocol, n) is one
-- resumable unit (run:unit). Writes fits.tsv (every fit), summary.tsv (mean +- standard error per
-- n, one gnuplot data set per setting x protocol x parameter x arm; the file committed as
-- plots/figures/temperature_gates.tsv), slopes.tsv (log-log slope +- standard error, with the
-- paper's expected value), ray.tsv (how far the fitted tau follows a ridge start along the ray)
-- and layout.gp for plots/temperature_gates.gp.
--   gmoe run experiments/temperature_gates.lua [--quick] [reps=N n_max=N arms=tanh+softmax ...]
local gm = require 'gmoe'
local stats = require 'gmoe.stats'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local H = dofile(here .. 'lib/gaussian_moe_fit.lua')

-- The activation arms' truth: tanh(6x) would saturate over most of [0, 1] (and cap the gate logit
-- range at 2 / tau), so they use beta1* = (0, 1.5), tau* = 0.25: gate logits from -2 to about 1.6,
-- a switch near x = 0.4 like the softmax truth's (6x - 2); the sigmoid arm: beta1* = (0, 3), tau* = 0.5.
local ARMS = {
  temperature = {gate = 'temperature', learn_tau = true, truth = H.TRUTH},
  tanh = {gate = 'activation', activation = 'tanh', learn_tau = true, truth = H.truth {beta1 = {0, 1.5}, tau = 0.25}},
  sigmoid = {gate = 'activation', activation = 'sigmoid', learn_tau = true, truth = H.truth {beta1 = {0, 3}, tau = 0.5}},
  softmax = {gate = 'softmax', learn_tau = false, truth = H.TRUTH},
}
local SETTINGS = {exact = 2, over = 3}
local PROTOCOLS = {near = true, ridge = true, random = true}
-- The parameters summarised (summary.tsv order) and the paper's expected log-log slope of each,
-- per gate family and setting (papers.md §1.1-1.2; nil: no claim). Temperature gate: the density
-- depends on (beta, tau) only through beta / tau, so tau and beta1 have no polynomial rate
-- (slope 0 over any finite range) while beta1 / tau and the density are parametric.
-- Over-specified softmax (Demystifying softmax, r(2) = 4): beta1 and b of the over-fitted cell at
-- n^-1/8, a and nu at n^-1/4 (the sums here are dominated by the slowest term). Activation gates:
-- n^-1/2 exact; over-specified gating n^-1/2 and over-fitted expert parameters about n^-1/4.
local PARAMS = {'tau', 'beta1', 'ratio', 'a', 'b', 'nu', 'expert', 'voronoi', 'voronoi_ratio', 'density', 'minor'}
local EXPECTED = {
  exact = {
    temperature = {tau = 0, beta1 = 0, ratio = -0.5, a = -0.5, b = -0.5, nu = -0.5, expert = -0.5, voronoi = 0,
                   voronoi_ratio = -0.5, density = -0.5},
    activation = {tau = -0.5, beta1 = -0.5, ratio = -0.5, a = -0.5, b = -0.5, nu = -0.5, expert = -0.5,
                  voronoi = -0.5, voronoi_ratio = -0.5, density = -0.5},
    softmax = {beta1 = -0.5, ratio = -0.5, a = -0.5, b = -0.5, nu = -0.5, expert = -0.5, voronoi = -0.5,
               voronoi_ratio = -0.5, density = -0.5},
  },
  over = {
    temperature = {tau = 0, beta1 = 0, voronoi = 0, density = -0.5},
    activation = {tau = -0.5, beta1 = -0.5, ratio = -0.5, a = -0.25, b = -0.25, nu = -0.25, expert = -0.25,
                  density = -0.5},
    softmax = {beta1 = -0.125, ratio = -0.125, a = -0.25, b = -0.125, nu = -0.25, expert = -0.125, voronoi = -0.5,
               voronoi_ratio = -0.5, density = -0.5},
  },
}

return gm.experiment {
  name = 'temperature_gates',
  description = 'MLE rates of temperature vs activation (tanh, sigmoid) vs softmax gates in a Gaussian MoE, ' ..
                'per parameter, under three start protocols',
  config = {seed = 1, n_min = 100, n_max = 100000, points = 12, reps = 20, reps_over = 10, restarts = 3,
            random_restarts = 6, noise = 0.1, ridge = 3, max_iter = 1000, tol = 1e-10,
            arms = 'temperature+tanh+sigmoid+softmax', settings = 'exact+over', protocols = 'near+ridge+random'},
  quick = {n_min = 200, n_max = 3000, points = 4, reps = 3, reps_over = 2, max_iter = 100, random_restarts = 4},
  doc = {arms = "'+'-separated subset of temperature, tanh, sigmoid, softmax",
         settings = "'+'-separated subset of exact (k = 2), over (k = 3)",
         protocols = "'+'-separated subset of near (truth + N(0, noise^2)), ridge (near, then the gate moved " ..
                     "along the (beta, tau) ray by a factor in [1/ridge, ridge]), random (a box around the truth's scale)",
         reps = 'repetitions per n, exact-specified', reps_over = 'repetitions per n, over-specified',
         restarts = 'starts per fit (near, ridge); the best NLL is kept', random_restarts = 'starts per fit (random)',
         max_iter = 'Levenberg-Marquardt iterations at most', tol = 'Newton decrement of the mean NLL that ends a fit'},
  check = function(cfg)
    for _, a in ipairs(H.split(cfg.arms)) do assert(ARMS[a], 'unknown arm ' .. a) end
    for _, s in ipairs(H.split(cfg.settings)) do assert(SETTINGS[s], 'unknown setting ' .. s) end
    for _, p in ipairs(H.split(cfg.protocols)) do assert(PROTOCOLS[p], 'unknown protocol ' .. p) end
    assert(cfg.n_min >= 10 and cfg.n_max >= cfg.n_min and cfg.points >= 2 and cfg.reps >= 1 and cfg.reps_over >= 1,
           'bad grid')
    assert(cfg.restarts >= 1 and cfg.random_restarts >= 1 and cfg.ridge >= 1, 'bad start protocol')
  end,
  run = function(cfg, run)
    local arms, settings, protocols = H.split(cfg.arms), H.split(cfg.settings), H.split(cfg.protocols)
    local ns = H.n_grid(cfg.n_min, cfg.n_max, cfg.points)
    local fits = run:tsv('fits', {'setting', 'arm', 'protocol', 'n', 'rep', 'nll', 'iters', 'status', 'diverged',
                                  'tau', 'logc', 'switched', 'err_tau', 'err_beta1', 'err_ratio', 'err_a', 'err_b',
                                  'err_nu', 'err_expert', 'voronoi', 'voronoi_ratio', 'density', 'minor', 'theta'})
    local units, done = #settings * #arms * #protocols * #ns, 0
    local results = {} -- results[setting][arm][protocol][i] = {rows...}
    for _, sname in ipairs(settings) do
      results[sname] = {}
      local reps = sname == 'exact' and cfg.reps or cfg.reps_over
      for _, aname in ipairs(arms) do
        results[sname][aname] = {}
        local arm = ARMS[aname]
        local truth_p = H.params(arm.truth, {gate = arm.gate, activation = arm.activation})
        for _, proto in ipairs(protocols) do
          local per_n = {}
          for i, n in ipairs(ns) do
            local key = ('%s/%s/%s/%d'):format(sname, aname, proto, n)
            -- the unit holds the fits (the expensive part); errors are computed from the kept
            -- parameters below, so a change of a metric does not need the fits again
            local fitted = run:unit(key, function()
              local out = {}
              for rep = 1, reps do
                -- the same data for every setting and protocol of an arm
                local X, Y = H.sample(n, arm.truth, arm, run:generator(('data/%s/%d/%d'):format(aname, n, rep)))
                local spec = {k = SETTINGS[sname], gate = arm.gate, activation = arm.activation,
                              learn_tau = arm.learn_tau, truth = arm.truth, noise = cfg.noise, ridge = cfg.ridge,
                              protocol = proto, restarts = proto == 'random' and cfg.random_restarts or cfg.restarts,
                              max_iter = cfg.max_iter, tol = cfg.tol,
                              generator = run:generator('init/' .. key .. '/' .. rep)}
                local p, info = H.fit(X, Y, spec)
                out[rep] = {nll = info.nll, iters = info.iters, status = info.status, logc = info.logc,
                            theta = p and H.MLE.pack(p) or false,
                            density = p and H.hellinger(H.params(p, spec), truth_p) or 0 / 0}
              end
              return out
            end)
            local rows = {}
            for rep, f in ipairs(fitted) do
              local row = {setting = sname, arm = aname, protocol = proto, n = n, rep = rep, nll = f.nll,
                           iters = f.iters, status = f.status, diverged = f.theta and 0 or 1, logc = f.logc,
                           density = f.density}
              if f.theta then
                local c, switched = H.canonical(H.MLE.unpack(f.theta), arm.truth, arm.gate)
                local e = H.errors(c, arm.truth, arm.gate, {learn_tau = arm.learn_tau})
                row.tau, row.switched = c.tau, switched and 1 or 0
                for _, q in ipairs {'tau', 'beta1', 'ratio', 'a', 'b', 'nu', 'expert'} do row['err_' .. q] = e[q] end
                row.voronoi, row.voronoi_ratio = e.voronoi, e.voronoi_ratio
                row.minor = H.minor_share(c, arm.truth, {gate = arm.gate, activation = arm.activation})
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
          results[sname][aname][proto] = per_n
        end
      end
    end

    -- summary: one gnuplot data set per setting x protocol x parameter x arm (in that nesting)
    local summary = run:tsv('summary', {'setting', 'protocol', 'parameter', 'arm', 'n', 'mean', 'se', 'reps',
                                        'diverged', 'not_converged', 'median'})
    local slopes = run:tsv('slopes', {'setting', 'protocol', 'parameter', 'arm', 'slope', 'slope_se', 'expected', 'slope_median',
                                    'slope_tail', 'slope_tail_se'})
    local first, diverged_total, total, sets = true, 0, 0, {}
    for _, sname in ipairs(settings) do
      for _, proto in ipairs(protocols) do
        for _, par in ipairs(PARAMS) do
          for _, aname in ipairs(arms) do
            if not first then summary:blank(2) end
            first = false
            local means, medians = {}, {}
            for i, n in ipairs(ns) do
              local vals, div, nc = {}, 0, 0
              for _, row in ipairs(results[sname][aname][proto][i]) do
                if row.diverged == 1 then
                  div = div + 1
                else
                  vals[#vals + 1] = (par == 'density' or par == 'minor' or par:match('^voronoi')) and row[par]
                                    or row['err_' .. par]
                  if row.status ~= 'converged' then nc = nc + 1 end
                end
              end
              local m, se, cnt = H.mean_se(vals)
              means[i], medians[i] = m, H.median(vals)
              summary:row(sname, proto, par, aname, n, m, se, cnt, div, nc, medians[i])
              if par == 'density' then
                diverged_total, total = diverged_total + div, total + div + cnt
              end
            end
            local s, se, ic = H.slope(ns, means)
            local fam = ARMS[aname].gate == 'activation' and 'activation' or aname
            local exp = EXPECTED[sname][fam] and EXPECTED[sname][fam][par]
            sets[#sets + 1] = {slope = s, se = se, intercept = ic, expected = exp or 0 / 0}
            if s == s then
              slopes:row(sname, proto, par, aname, s, se, exp or 0 / 0, (H.slope(ns, medians)), H.tail_slope(ns, means))
              run:metric(('slope_%s_%s_%s_%s'):format(par, sname, proto, aname), s)
            end
          end
        end
      end
    end
    run:metric('diverged', diverged_total)

    -- Does the fitted temperature follow the start along the (beta, tau) ray? For the ridge
    -- protocol (log c: the kept start's offset along the ray), the least-squares slope of
    -- log(tau / tau*) on log c over all n and repetitions: 1 when the estimator ends where it
    -- starts on the ray, 0 when it finds tau* from any start.
    if results[settings[1]][arms[1]].ridge then
      local ray = run:tsv('ray', {'setting', 'arm', 'n_from', 'fits', 'slope', 'slope_se', 'r2'})
      for _, sname in ipairs(settings) do
        for _, aname in ipairs(arms) do
          if ARMS[aname].learn_tau then
            for _, n_from in ipairs {ns[1], ns[#ns] // 10} do
              local xs, ys = {}, {}
              for i, n in ipairs(ns) do
                for _, row in ipairs(n >= n_from and results[sname][aname].ridge[i] or {}) do
                  if row.diverged == 0 then
                    xs[#xs + 1], ys[#ys + 1] = row.logc, math.log(row.tau / ARMS[aname].truth.tau)
                  end
                end
              end
              if #xs >= 3 then
                local f = stats.linfit(xs, ys)
                ray:row(sname, aname, n_from, #xs, f.slope, f.slope_se, f.r2)
                if n_from == ns[1] then run:metric(('ray_slope_%s_%s'):format(sname, aname), f.slope) end
              end
            end
          end
        end
      end
    end
    gm.experiment.write_atomic(run.dir .. '/layout.gp', ('settings = "%s"\nprotocols = "%s"\narms = "%s"\nparams = "%s"\n')
      :format(table.concat(settings, ' '), table.concat(protocols, ' '), table.concat(arms, ' '),
               table.concat(PARAMS, ' ')) .. H.slope_arrays(sets))
    run:log('diverged fits: %d of %d', diverged_total, total)
  end,
}
