-- gmoe.stats: the small statistics experiments report over repeats (mean, standard deviation,
-- standard error), least-squares line fits (plain and in log-log space, with the slope's
-- standard error) and percentile-bootstrap confidence intervals. Plain Lua numbers in, numbers
-- out: these run on a handful of values per point, never on tensors.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local doc = require 'gmoe.doc'

local M = {}

local function check(xs, fname, min)
  if type(xs) ~= 'table' then error(fname .. ': expected an array of numbers, got ' .. type(xs), 3) end
  for i, v in ipairs(xs) do
    if type(v) ~= 'number' then error(('%s: element %d is a %s, not a number'):format(fname, i, type(v)), 3) end
  end
  if #xs < (min or 1) then error(('%s: needs at least %d values, got %d'):format(fname, min or 1, #xs), 3) end
end

--- gm.stats.mean(xs) -> number
function M.mean(xs)
  check(xs, 'mean')
  local s = 0
  for _, v in ipairs(xs) do s = s + v end
  return s / #xs
end

--- gm.stats.std(xs, ddof=1) -> number (sample standard deviation; 0 for one value)
function M.std(xs, ddof)
  check(xs, 'std')
  ddof = ddof or 1
  local n = #xs
  if n - ddof <= 0 then return 0 end
  local m, s = M.mean(xs), 0
  for _, v in ipairs(xs) do s = s + (v - m) ^ 2 end
  return math.sqrt(s / (n - ddof))
end

--- gm.stats.stderr(xs) -> number: std(xs) / sqrt(n)
function M.stderr(xs)
  check(xs, 'stderr')
  return M.std(xs) / math.sqrt(#xs)
end

--- gm.stats.summary(xs) -> {n=, mean=, std=, se=, min=, max=}
function M.summary(xs)
  check(xs, 'summary')
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(xs) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return {n = #xs, mean = M.mean(xs), std = M.std(xs), se = M.stderr(xs), min = lo, max = hi}
end

--- gm.stats.quantile(xs, p) -> number (linear interpolation between order statistics)
function M.quantile(xs, p)
  check(xs, 'quantile')
  if type(p) ~= 'number' or p < 0 or p > 1 then error('quantile: p must be in [0, 1]', 2) end
  local s = {table.unpack(xs)}
  table.sort(s)
  local h = (#s - 1) * p + 1
  local lo = math.floor(h)
  if lo >= #s then return s[#s] end
  return s[lo] + (h - lo) * (s[lo + 1] - s[lo])
end

--- gm.stats.linfit(xs, ys) -> {slope=, intercept=, slope_se=, intercept_se=, r2=, n=}
-- Ordinary least squares y = intercept + slope * x; standard errors from the residual variance
-- with n - 2 degrees of freedom (0 when n = 2).
function M.linfit(xs, ys)
  check(xs, 'linfit', 2)
  check(ys, 'linfit', 2)
  if #xs ~= #ys then error(('linfit: %d x values but %d y values'):format(#xs, #ys), 2) end
  local n = #xs
  local mx, my = M.mean(xs), M.mean(ys)
  local sxx, sxy, syy = 0, 0, 0
  for i = 1, n do
    local dx, dy = xs[i] - mx, ys[i] - my
    sxx, sxy, syy = sxx + dx * dx, sxy + dx * dy, syy + dy * dy
  end
  if sxx == 0 then error('linfit: all x values are equal', 2) end
  local slope = sxy / sxx
  local intercept = my - slope * mx
  local rss = 0
  for i = 1, n do rss = rss + (ys[i] - intercept - slope * xs[i]) ^ 2 end
  local s2 = n > 2 and rss / (n - 2) or 0
  local slope_se = math.sqrt(s2 / sxx)
  return {slope = slope, intercept = intercept, slope_se = slope_se,
          intercept_se = math.sqrt(s2 * (1 / n + mx * mx / sxx)),
          r2 = syy > 0 and 1 - rss / syy or 1, n = n}
end

--- gm.stats.loglog_fit(xs, ys, base=10) -> linfit of log(y) on log(x)
-- The fitted power law is y = base^intercept * x^slope. Pairs with x <= 0 or y <= 0 (or a
-- non-finite value) are dropped; the result's `dropped` counts them.
function M.loglog_fit(xs, ys, base)
  check(xs, 'loglog_fit')
  check(ys, 'loglog_fit')
  if #xs ~= #ys then error(('loglog_fit: %d x values but %d y values'):format(#xs, #ys), 2) end
  base = base or 10
  local lx, ly, dropped = {}, {}, 0
  for i = 1, #xs do
    local x, y = xs[i], ys[i]
    if x > 0 and y > 0 and x < math.huge and y < math.huge then
      lx[#lx + 1], ly[#ly + 1] = math.log(x, base), math.log(y, base)
    else
      dropped = dropped + 1
    end
  end
  if #lx < 2 then error('loglog_fit: fewer than 2 positive finite pairs', 2) end
  local f = M.linfit(lx, ly)
  f.dropped, f.base = dropped, base
  return f
end

--- gm.stats.bootstrap_ci(xs, opts) -> lo, hi, estimate
-- Percentile bootstrap: opts.stat (a function of an array, default the mean), opts.level
-- (0.95), opts.reps (2000), opts.seed (resamples come from gm.Generator(seed) when gmoe is
-- loaded, so a seed reproduces the interval).
function M.bootstrap_ci(xs, opts)
  check(xs, 'bootstrap_ci')
  opts = opts or {}
  local stat, level, reps = opts.stat or M.mean, opts.level or 0.95, opts.reps or 2000
  if level <= 0 or level >= 1 then error('bootstrap_ci: level must be in (0, 1)', 2) end
  if math.type(reps) ~= 'integer' or reps < 1 then error('bootstrap_ci: reps must be a positive integer', 2) end
  local n = #xs
  local gm = require 'gmoe'
  local idx = gm.randint(0, n, {reps, n}, {generator = gm.Generator(opts.seed or 0)}):totable()
  local vals, sample = {}, {}
  for r = 1, reps do
    local row = idx[r]
    for i = 1, n do sample[i] = xs[row[i] + 1] end
    vals[r] = stat(sample)
  end
  local a = (1 - level) / 2
  return M.quantile(vals, a), M.quantile(vals, 1 - a), stat(xs)
end

doc.add('gm.stats.mean', 'gm.stats.mean(xs) -> number', 'The mean of an array of numbers.')
doc.add('gm.stats.std', 'gm.stats.std(xs, ddof=1) -> number',
  'Standard deviation with n - ddof in the denominator (the sample std by default; 0 for one value).')
doc.add('gm.stats.stderr', 'gm.stats.stderr(xs) -> number', 'Standard error of the mean: std(xs) / sqrt(n).')
doc.add('gm.stats.summary', 'gm.stats.summary(xs) -> {n, mean, std, se, min, max}',
  'Count, mean, sample std, standard error, min and max of an array of numbers in one table.')
doc.add('gm.stats.quantile', 'gm.stats.quantile(xs, p) -> number',
  'The p-quantile (0 <= p <= 1) with linear interpolation between order statistics (numpy\'s default).')
doc.add('gm.stats.linfit', 'gm.stats.linfit(xs, ys) -> {slope, intercept, slope_se, intercept_se, r2, n}',
  'Ordinary least squares y = intercept + slope x. Standard errors use the residual variance with ' ..
  'n - 2 degrees of freedom (0 when n = 2); r2 is the coefficient of determination.')
doc.add('gm.stats.loglog_fit', 'gm.stats.loglog_fit(xs, ys, base=10) -> linfit result + {dropped, base}',
  'Least squares of log(y) on log(x): the fitted power law is y = base^intercept x^slope, and ' ..
  'slope_se is the slope\'s standard error (the "slope -0.49 +- 0.03" of a rate plot). Pairs with a ' ..
  'non-positive or non-finite value are dropped and counted.')
doc.add('gm.stats.bootstrap_ci', 'gm.stats.bootstrap_ci(xs, {stat=mean, level=0.95, reps=2000, seed=0}) -> lo, hi, estimate',
  'Percentile bootstrap confidence interval of stat(xs): reps resamples with replacement drawn from ' ..
  'gm.Generator(seed), so a seed reproduces the interval.')

return M
