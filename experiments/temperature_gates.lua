-- temperature_gates.lua: Reproduction 1 (papers.md §1.3). Softmax-gated Gaussian MoE, maximum
-- likelihood of all parameters over a log grid of sample sizes, repeated; Voronoi loss to the
-- truth and Hellinger distance of the fitted density. Arms: the dense-to-sparse gate with a
-- learnable temperature, the activation gate (tanh, sigmoid), plain softmax as control; exact-
-- (k = 2) and over-specified (k = 3) fits. The temperature gate depends on (beta, tau) only through
-- beta / tau, so its raw Voronoi loss (beta and tau scored separately) keeps the error of that flat
-- direction; voronoi_ratio scores beta / tau instead (equal to the raw loss for the other arms).
-- Diverged fits (non-finite NLL) are counted and left out of the means. Writes fits.tsv (every fit), curves.tsv (geometric mean
-- and +-1 std-of-log10 band per n, one gnuplot data set per setting x arm), slopes.tsv and
-- layout.gp for plots/temperature_gates.gp.
--   gmoe run experiments/temperature_gates.lua [--quick] [reps=N n_max=N arms=tanh+softmax ...]
local gm = require 'gmoe'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local H = dofile(here .. 'lib/gaussian_moe_fit.lua')

-- The activation arms' truth: tanh(6x) would saturate over most of [0, 1] (and cap the gate logit
-- range at 2 / tau), so they use beta1* = (0, 1.5), tau* = 0.25: gate logits from -2 to about 1.6,
-- a switch near x = 0.4 like the softmax truth's (6x - 2); the sigmoid arm: beta1* = (0, 3), tau* = 0.5.
local ACT_TRUTH = H.truth {beta1 = {0, 1.5}, tau = 0.25}
local ARMS = {
  temperature = {gate = 'temperature', learn_tau = true, truth = H.TRUTH},
  tanh = {gate = 'activation', activation = 'tanh', learn_tau = true, truth = ACT_TRUTH},
  sigmoid = {gate = 'activation', activation = 'sigmoid', learn_tau = true, truth = H.truth {beta1 = {0, 3}, tau = 0.5}},
  softmax = {gate = 'softmax', learn_tau = false, truth = H.TRUTH},
}
local SETTINGS = {exact = 2, over = 3}

local function split(s)
  local out = {}
  for w in s:gmatch('[^+]+') do out[#out + 1] = w end
  return out
end

return gm.experiment {
  name = 'temperature_gates',
  description = 'MLE rates of temperature vs activation (tanh, sigmoid) vs softmax gates in a Gaussian MoE',
  config = {seed = 1, n_min = 1000, n_max = 30000, points = 6, reps = 6, steps = 600, lr = 0.02, noise = 0.1,
            restarts = 1, arms = 'temperature+tanh+sigmoid+softmax', settings = 'exact+over'},
  quick = {n_min = 300, n_max = 3000, points = 4, reps = 2, steps = 200},
  doc = {arms = "'+'-separated subset of temperature, tanh, sigmoid, softmax",
         settings = "'+'-separated subset of exact (k = 2), over (k = 3)"},
  check = function(cfg)
    for _, a in ipairs(split(cfg.arms)) do assert(ARMS[a], 'unknown arm ' .. a) end
    for _, s in ipairs(split(cfg.settings)) do assert(SETTINGS[s], 'unknown setting ' .. s) end
    assert(cfg.n_min >= 10 and cfg.n_max >= cfg.n_min and cfg.points >= 2 and cfg.reps >= 1, 'bad grid')
  end,
  run = function(cfg, run)
    local arms, settings = split(cfg.arms), split(cfg.settings)
    local ns = H.n_grid(cfg.n_min, cfg.n_max, cfg.points)
    local fits = run:tsv('fits', {'setting', 'arm', 'n', 'rep', 'nll', 'steps', 'voronoi', 'voronoi_ratio', 'tau',
                                  'density', 'diverged'})
    local total, done = #arms * #settings * #ns * cfg.reps, 0
    local results = {} -- results[setting][arm][i] = {voronoi = {...}, ratio = {...}, density = {...}, diverged = n}
    local diverged_total = 0
    for _, sname in ipairs(settings) do
      results[sname] = {}
      for _, aname in ipairs(arms) do
        local arm = ARMS[aname]
        local spec = {k = SETTINGS[sname], gate = arm.gate, activation = arm.activation, learn_tau = arm.learn_tau,
                      steps = cfg.steps, lr = cfg.lr, noise = cfg.noise, truth = arm.truth}
        local truth = H.params(arm.truth, {gate = arm.gate, activation = arm.activation})
        local per_n = {}
        for i, n in ipairs(ns) do
          local r = {voronoi = {}, ratio = {}, density = {}, diverged = 0}
          for rep = 1, cfg.reps do
            local stream = ('%s/%s/%d/%d'):format(sname, aname, n, rep)
            local X, Y = H.sample(n, arm.truth, spec, run:generator('data/' .. stream))
            spec.generator = run:generator('init/' .. stream)
            local best, best_nll, best_steps
            for _ = 1, cfg.restarts do
              local p, nll, steps = H.fit(X, Y, spec)
              if nll == nll and nll < (best_nll or math.huge) then best, best_nll, best_steps = p, nll, steps end
            end
            local row = {setting = sname, arm = aname, n = n, rep = rep, diverged = best and 0 or 1}
            if best then
              row.nll, row.steps, row.tau = best_nll, best_steps, best.tau
              row.voronoi = H.voronoi(best, {truth = arm.truth})
              row.voronoi_ratio = H.voronoi(best, {truth = arm.truth, ratio = arm.gate == 'temperature'})
              row.density = H.hellinger(H.params(best, spec), truth)
              table.insert(r.voronoi, row.voronoi)
              table.insert(r.ratio, row.voronoi_ratio)
              table.insert(r.density, row.density)
            else
              r.diverged = r.diverged + 1
              diverged_total = diverged_total + 1
            end
            fits:row(row)
            done = done + 1
            run:progress(done, total, ('%s %s n=%d'):format(sname, aname, n))
          end
          per_n[i] = r
        end
        results[sname][aname] = per_n
      end
    end

    -- curves: one data set per setting x arm (gnuplot index = setting-major order)
    local curves = run:tsv('curves', {'n', 'voronoi', 'v_lo', 'v_hi', 'ratio', 'r_lo', 'r_hi', 'density', 'd_lo',
                                      'd_hi', 'fits', 'diverged'})
    local slopes = run:tsv('slopes', {'setting', 'arm', 'metric', 'slope', 'slope_se'})
    local first = true
    for _, sname in ipairs(settings) do
      for _, aname in ipairs(arms) do
        if not first then curves:blank(2) end
        first = false
        local means = {voronoi = {}, ratio = {}, density = {}}
        for i, n in ipairs(ns) do
          local r = results[sname][aname][i]
          local v, vl, vh = H.band(r.voronoi)
          local q, ql, qh = H.band(r.ratio)
          local d, dl, dh = H.band(r.density)
          means.voronoi[i], means.ratio[i], means.density[i] = v, q, d
          curves:row(n, v, vl, vh, q, ql, qh, d, dl, dh, #r.voronoi, r.diverged)
        end
        for _, metric in ipairs {'voronoi', 'ratio', 'density'} do
          local s, se = H.slope(ns, means[metric])
          slopes:row(sname, aname, metric, s, se)
          run:metric(('slope_%s_%s_%s'):format(metric, sname, aname), s)
        end
      end
    end
    run:metric('diverged', diverged_total)
    gm.experiment.write_atomic(run.dir .. '/layout.gp', ('settings = "%s"\narms = "%s"\n'):format(
      table.concat(settings, ' '), table.concat(arms, ' ')))
    run:log('diverged fits: %d of %d', diverged_total, total)
  end,
}
