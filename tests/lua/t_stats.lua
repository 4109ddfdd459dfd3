-- t_stats.lua: gm.stats against hand-computed values: mean/std/stderr, quantiles, least squares
-- (slope, intercept, standard errors, r2), log-log fits and percentile-bootstrap intervals.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'
local S = gm.stats

tap.close(S.mean {1, 2, 3, 4}, 2.5, 1e-15, 'mean')
tap.close(S.std {1, 2, 3, 4}, math.sqrt(5 / 3), 1e-15, 'std uses n - 1')
tap.close(S.std({1, 2, 3, 4}, 0), math.sqrt(5 / 4), 1e-15, 'std with ddof = 0')
tap.is(S.std {7}, 0, 'std of one value is 0')
tap.close(S.stderr {1, 2, 3, 4}, math.sqrt(5 / 3) / 2, 1e-15, 'stderr = std / sqrt(n)')
local sm = S.summary {3, 1, 2}
tap.ok(sm.n == 3 and sm.min == 1 and sm.max == 3 and sm.mean == 2 and sm.std == 1, 'summary')
tap.close(S.quantile({4, 1, 3, 2}, 0.5), 2.5, 1e-15, 'median interpolates')
tap.close(S.quantile({1, 2, 3, 4, 5}, 0.25), 2, 1e-15, 'quantile 0.25')
tap.is(S.quantile({1, 2, 3}, 1), 3, 'quantile 1 is the max')

local f = S.linfit({0, 1, 2, 3}, {1, 3, 5, 7})
tap.close(f.slope, 2, 1e-12, 'exact line: slope')
tap.close(f.intercept, 1, 1e-12, 'exact line: intercept')
tap.close(f.slope_se, 0, 1e-12, 'exact line: zero slope error')
tap.close(f.r2, 1, 1e-12, 'exact line: r2 = 1')
-- x = 1, 2, 3; y = 1, 2, 2: slope 1/2, intercept 2/3, residuals -1/6, 1/3, -1/6, rss 1/6,
-- s^2 = rss / (n - 2) = 1/6, se(slope) = sqrt(s^2 / sxx) = sqrt(1/12),
-- se(intercept) = sqrt(s^2 (1/n + mx^2 / sxx)) = sqrt(1/6 * (1/3 + 2)) = sqrt(7/18)
f = S.linfit({1, 2, 3}, {1, 2, 2})
tap.close(f.slope, 0.5, 1e-12, 'noisy line: slope')
tap.close(f.intercept, 2 / 3, 1e-12, 'noisy line: intercept')
tap.close(f.slope_se, math.sqrt(1 / 12), 1e-12, 'noisy line: slope standard error')
tap.close(f.intercept_se, math.sqrt(7 / 18), 1e-12, 'noisy line: intercept standard error')
tap.close(f.r2, 0.75, 1e-12, 'noisy line: r2 = 1 - (1/6) / (2/3)')

local xs, ys = {}, {}
for i, n in ipairs {100, 1000, 10000, 100000} do xs[i], ys[i] = n, 2 * n ^ -0.5 end
f = S.loglog_fit(xs, ys)
tap.close(f.slope, -0.5, 1e-12, 'loglog_fit recovers the exponent')
tap.close(f.intercept, math.log(2, 10), 1e-12, 'loglog_fit intercept is log10 of the constant')
xs[5], ys[5] = 10, 0
f = S.loglog_fit(xs, ys)
tap.ok(f.dropped == 1 and math.abs(f.slope + 0.5) < 1e-12, 'loglog_fit drops non-positive values')

local lo, hi, est = S.bootstrap_ci({5, 5, 5, 5}, {seed = 1, reps = 200})
tap.ok(lo == 5 and hi == 5 and est == 5, 'bootstrap of a constant is a point')
local vals = {}
for i = 1, 20 do vals[i] = i end
lo, hi, est = S.bootstrap_ci(vals, {seed = 3, reps = 1000})
tap.ok(lo < 10.5 and hi > 10.5 and est == 10.5, 'bootstrap CI of the mean brackets it', ('%g %g'):format(lo, hi))
-- the CI half-width is about 1.96 * se = 1.96 * 1.32 = 2.6
tap.ok(hi - lo > 3.5 and hi - lo < 6.5, 'bootstrap CI width near 2 * 1.96 * se', ('%g'):format(hi - lo))
local lo2, hi2 = S.bootstrap_ci(vals, {seed = 3, reps = 1000})
tap.ok(lo2 == lo and hi2 == hi, 'same seed, same interval')
local mlo, mhi = S.bootstrap_ci(vals, {seed = 3, reps = 500, stat = function(x) return S.quantile(x, 0.5) end, level = 0.9})
tap.ok(mlo <= 10.5 and mhi >= 10.5, 'bootstrap with a custom statistic and level')

tap.errors(function() S.mean {} end, 'at least 1', 'mean of nothing is an error')
tap.errors(function() S.linfit({1, 2, 3}, {1, 2}) end, '3 x values but 2 y values', 'linfit length mismatch')
tap.errors(function() S.linfit({1, 1}, {1, 2}) end, 'all x values are equal', 'linfit degenerate x')
tap.errors(function() S.mean {1, 'a'} end, 'element 2', 'non-numbers are named')
tap.done()
