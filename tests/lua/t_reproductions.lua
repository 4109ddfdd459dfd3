-- t_reproductions.lua: the reproduction experiments at a toy size (seconds): Reproduction 1
-- (experiments/temperature_gates.lua) runs through the runner into a temporary folder; its TSV
-- files have their columns, every fit finished, the temperature gate's tau follows its start
-- along the (beta, tau) ray, and the fitted log-log slopes of the expert-parameter and density
-- errors are negative. Renders its figure when gnuplot is installed. Reproduction 2
-- (experiments/topk_gating_rates.lua) likewise: columns, no divergence, the exact-specified arm's
-- Voronoi loss falls with n, and its figure renders.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local q = tap.q

local dir = os.tmpname()
os.remove(dir)

local read_tsv = tap.read_tsv

local code, out, err = tap.run('run experiments/temperature_gates.lua --quick arms=tanh+temperature+softmax ' ..
  'settings=exact protocols=near+ridge points=3 n_min=300 n_max=3000 reps=3 --dir ' .. q(dir))
tap.is(code, 0, 'temperature_gates runs at a toy size', err)
tap.is(out, '', 'stdout stays clean')
tap.ok(io.open(dir .. '/DONE') ~= nil, 'the run finished (DONE)')

local header, fits = read_tsv(dir .. '/fits.tsv')
tap.is(header, 'setting\tarm\tprotocol\tn\trep\tnll\titers\tstatus\tdiverged\ttau\tlogc\tswitched\terr_tau\t' ..
  'err_beta1\terr_ratio\terr_a\terr_b\terr_nu\terr_expert\tvoronoi\tvoronoi_ratio\tdensity\tminor\ttheta',
  'fits.tsv columns')
tap.is(#fits, 3 * 2 * 3 * 3, 'one row per fit (3 arms x 2 protocols x 3 n x 3 reps)')
local diverged = 0
for _, r in ipairs(fits) do diverged = diverged + (tonumber(r[9]) or 1) end
tap.is(diverged, 0, 'no fit diverged')
-- the temperature gate along the ray: tau ends where the start put it (log tau - log c small)
local worst = 0
for _, r in ipairs(fits) do
  if r[2] == 'temperature' and r[3] == 'ridge' then worst = math.max(worst, math.abs(math.log(tonumber(r[10])) - tonumber(r[11]))) end
end
tap.ok(worst < 0.5, 'temperature gate, ridge starts: the fitted tau follows the start along the ray', tostring(worst))
header = read_tsv(dir .. '/summary.tsv')
tap.is(header, 'setting\tprotocol\tparameter\tarm\tn\tmean\tse\treps\tdiverged\tnot_converged\tmedian',
  'summary.tsv columns')
local sh, slopes = read_tsv(dir .. '/slopes.tsv')
tap.is(sh, 'setting\tprotocol\tparameter\tarm\tslope\tslope_se\texpected\tslope_median\t' ..
  'slope_tail\tslope_tail_se', 'slopes.tsv columns')
local slope = {}
for _, r in ipairs(slopes) do slope[r[2] .. '/' .. r[3] .. '/' .. r[4]] = tonumber(r[5]) end
for _, arm in ipairs {'tanh', 'softmax'} do
  tap.ok(slope['near/expert/' .. arm] and slope['near/expert/' .. arm] < 0,
    arm .. ': the expert-parameter error falls with n', tostring(slope['near/expert/' .. arm]))
end
for _, arm in ipairs {'tanh', 'temperature', 'softmax'} do
  tap.ok(slope['near/density/' .. arm] and slope['near/density/' .. arm] < -0.2,
    arm .. ': the density error falls with n', tostring(slope['near/density/' .. arm]))
end
tap.like(tap.slurp(dir .. '/metrics.tsv'), 'slope_density_exact_near_tanh\t%-', 'slopes are reported as metrics')
tap.like(tap.slurp(dir .. '/layout.gp'), 'arms = "tanh temperature softmax"', 'layout.gp names the data sets')
tap.like(tap.slurp(dir .. '/layout.gp'), 'array SL%[', 'layout.gp carries the slopes')

if os.execute('command -v gnuplot >/dev/null 2>&1') then
  code, out, err = tap.run('plot temperature_gates ' .. q(dir))
  tap.is(code, 0, 'gmoe plot temperature_gates renders the toy run', err)
  for _, ext in ipairs {'pdf', 'png', 'svg'} do
    local f = io.open(dir .. '/temperature_gates.' .. ext, 'rb')
    local size = f and f:seek('end') or 0
    if f then f:close() end
    tap.ok(size > 1000, 'temperature_gates.' .. ext .. ' is non-empty', 'size ' .. size)
  end
else
  tap.skip('gmoe plot temperature_gates', 'gnuplot not installed')
end

os.execute('rm -rf ' .. q(dir))

-- Reproduction 2: top-K sparse softmax gates
dir = os.tmpname()
os.remove(dir)
code, out, err = tap.run('run experiments/topk_gating_rates.lua --quick points=3 reps=3 --dir ' .. q(dir))
tap.is(code, 0, 'topk_gating_rates runs at a toy size', err)
tap.is(out, '', 'topk_gating_rates: stdout stays clean')
tap.ok(io.open(dir .. '/DONE') ~= nil, 'topk_gating_rates finished (DONE)')
header, fits = read_tsv(dir .. '/fits.tsv')
tap.is(header, 'setting\tk\tK\tn\trep\tnll\titers\tstatus\ttau\terr_mass\terr_a\terr_b\terr_nu\terr_expert\t' ..
  'voronoi\tdensity\tcut1\tcut2\tdiverged\ttheta', 'topk fits.tsv columns')
tap.is(#fits, 3 * 3 * 3, 'one row per fit (3 settings x 3 n x 3 reps)')
diverged = 0
for _, r in ipairs(fits) do diverged = diverged + (tonumber(r[19]) or 1) end
tap.is(diverged, 0, 'no top-K fit diverged')
header = read_tsv(dir .. '/summary.tsv')
tap.is(header, 'parameter\tsetting\tn\tmean\tse\treps\tdiverged\tnot_converged\tmedian', 'topk summary.tsv columns')
sh, slopes = read_tsv(dir .. '/slopes.tsv')
tap.is(sh, 'parameter\tsetting\tslope\tslope_se\texpected\tslope_median\tslope_tail\t' ..
  'slope_tail_se', 'topk slopes.tsv columns')
slope = {}
for _, r in ipairs(slopes) do slope[r[2] .. '/' .. r[1]] = tonumber(r[3]) end
tap.ok(slope['exact/voronoi'] and slope['exact/voronoi'] < 0, 'top-1 exact-specified: the Voronoi loss falls with n',
  tostring(slope['exact/voronoi']))
tap.ok(slope['exact/density'] and slope['exact/density'] < -0.2, 'top-1 exact-specified: the density error falls with n',
  tostring(slope['exact/density']))
tap.like(tap.slurp(dir .. '/layout.gp'), 'settings = "exact over_small over_enough"', 'topk layout.gp names the data sets')
if os.execute('command -v gnuplot >/dev/null 2>&1') then
  code, out, err = tap.run('plot topk_gating_rates ' .. q(dir))
  tap.is(code, 0, 'gmoe plot topk_gating_rates renders the toy run', err)
  for _, ext in ipairs {'pdf', 'png', 'svg'} do
    local f = io.open(dir .. '/topk_gating_rates.' .. ext, 'rb')
    local size = f and f:seek('end') or 0
    if f then f:close() end
    tap.ok(size > 1000, 'topk_gating_rates.' .. ext .. ' is non-empty', 'size ' .. size)
  end
else
  tap.skip('gmoe plot topk_gating_rates', 'gnuplot not installed')
end
os.execute('rm -rf ' .. q(dir))
tap.done()
