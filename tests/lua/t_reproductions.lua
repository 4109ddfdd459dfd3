-- t_reproductions.lua: the reproduction experiments at a toy size (seconds): Reproduction 1
-- (experiments/temperature_gates.lua) runs through the runner into a temporary folder; its TSV
-- files have their columns, every fit finished, and the fitted log-log slopes of the activation
-- gates' Voronoi loss and of the density error are negative. Renders its figure when gnuplot is
-- installed. Reproduction 2 (experiments/topk_gating_rates.lua) likewise: columns, no divergence,
-- the exact-specified arm's Voronoi loss falls with n, and its figure renders.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local q = tap.q

local dir = os.tmpname()
os.remove(dir)

local function read_tsv(path)
  local text = tap.slurp(path)
  local header = text:match('^# ([^\n]*)') or ''
  local rows = {}
  for line in text:gmatch('[^\n]+') do
    if not line:match('^#') then
      local r = {}
      for c in (line .. '\t'):gmatch('([^\t]*)\t') do r[#r + 1] = c end
      rows[#rows + 1] = r
    end
  end
  return header, rows
end

local code, out, err = tap.run('run experiments/temperature_gates.lua --quick arms=tanh+sigmoid+temperature ' ..
  'settings=exact points=3 reps=2 --dir ' .. q(dir))
tap.is(code, 0, 'temperature_gates runs at a toy size', err)
tap.is(out, '', 'stdout stays clean')
tap.ok(io.open(dir .. '/DONE') ~= nil, 'the run finished (DONE)')

local header, fits = read_tsv(dir .. '/fits.tsv')
tap.is(header, 'setting\tarm\tn\trep\tnll\tsteps\tvoronoi\tvoronoi_ratio\ttau\tdensity\tdiverged', 'fits.tsv columns')
tap.is(#fits, 3 * 3 * 2, 'one row per fit (3 arms x 3 n x 2 reps)')
local diverged = 0
for _, r in ipairs(fits) do diverged = diverged + (tonumber(r[11]) or 1) end
tap.is(diverged, 0, 'no fit diverged')
header = read_tsv(dir .. '/curves.tsv')
tap.is(header, 'n\tvoronoi\tv_lo\tv_hi\tratio\tr_lo\tr_hi\tdensity\td_lo\td_hi\tfits\tdiverged', 'curves.tsv columns')
local sh, slopes = read_tsv(dir .. '/slopes.tsv')
tap.is(sh, 'setting\tarm\tmetric\tslope\tslope_se', 'slopes.tsv columns')
local slope = {}
for _, r in ipairs(slopes) do slope[r[2] .. '/' .. r[3]] = tonumber(r[4]) end
for _, arm in ipairs {'tanh', 'sigmoid'} do
  tap.ok(slope[arm .. '/voronoi'] and slope[arm .. '/voronoi'] < 0,
    arm .. ' activation gate: the Voronoi loss falls with n', tostring(slope[arm .. '/voronoi']))
end
for _, arm in ipairs {'tanh', 'sigmoid', 'temperature'} do
  tap.ok(slope[arm .. '/density'] and slope[arm .. '/density'] < -0.2,
    arm .. ': the density error falls with n', tostring(slope[arm .. '/density']))
end
tap.like(tap.slurp(dir .. '/metrics.tsv'), 'slope_voronoi_exact_tanh\t%-', 'slopes are reported as metrics')
tap.like(tap.slurp(dir .. '/layout.gp'), 'arms = "tanh sigmoid temperature"', 'layout.gp names the data sets')

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
code, out, err = tap.run('run experiments/topk_gating_rates.lua --quick points=3 reps=3 steps=200 --dir ' .. q(dir))
tap.is(code, 0, 'topk_gating_rates runs at a toy size', err)
tap.is(out, '', 'topk_gating_rates: stdout stays clean')
tap.ok(io.open(dir .. '/DONE') ~= nil, 'topk_gating_rates finished (DONE)')
header, fits = read_tsv(dir .. '/fits.tsv')
tap.is(header, 'setting\tk\tK\tn\trep\tnll\tvoronoi\tparam\tdensity\tcut1\tcut2\tdiverged', 'topk fits.tsv columns')
tap.is(#fits, 3 * 3 * 3, 'one row per fit (3 settings x 3 n x 3 reps)')
diverged = 0
for _, r in ipairs(fits) do diverged = diverged + (tonumber(r[12]) or 1) end
tap.is(diverged, 0, 'no top-K fit diverged')
header = read_tsv(dir .. '/curves.tsv')
tap.is(header, 'n\tvoronoi\tv_lo\tv_hi\tparam\tp_lo\tp_hi\tdensity\td_lo\td_hi\tfits\tdiverged', 'topk curves.tsv columns')
sh, slopes = read_tsv(dir .. '/slopes.tsv')
tap.is(sh, 'setting\tmetric\tslope\tslope_se', 'topk slopes.tsv columns')
slope = {}
for _, r in ipairs(slopes) do slope[r[1] .. '/' .. r[2]] = tonumber(r[3]) end
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
