-- t_figures.lua: the walking skeleton end to end. Runs the quick regression demo through the
-- gmoe binary into a temporary folder, checks its TSV output and that training lowered the
-- loss, then (when gnuplot is installed) renders the figure and checks the PNG.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local gmoe = arg[-1] or os.getenv('GMOE') or 'build/gmoe'
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local dir = os.tmpname()
os.remove(dir) -- tmpname creates a file; the demo makes a folder of that name
local function cleanup() os.execute('rm -rf ' .. q(dir)) end

local function read_lines(path)
  local f = io.open(path, 'r')
  if not f then return nil end
  local lines = {}
  for l in f:lines() do lines[#lines + 1] = l end
  f:close()
  return lines
end

local cmd = ('%s experiments/regression_demo.lua --quick seed=3 out=%s 2>/dev/null'):format(q(gmoe), q(dir))
local p = io.popen(cmd)
local stdout = p:read('a')
local ok = p:close()
tap.ok(ok, 'quick regression demo runs', stdout)
tap.like(stdout, 'final_loss=', 'the demo prints a summary line with the final loss')

local loss = read_lines(dir .. '/loss.tsv')
tap.ok(loss ~= nil, 'loss.tsv written')
loss = loss or {}
tap.is(loss[1], '# step\tloss', 'loss.tsv has a # header')
local first = tonumber((loss[2] or ''):match('\t(%S+)'))
local last = tonumber((loss[#loss] or ''):match('\t(%S+)'))
tap.ok(first and last and last < first, 'final loss is below the first loss',
       ('first %s, last %s'):format(tostring(first), tostring(last)))
tap.ok(last and last < 0.05 * first, 'quick training reduces the loss at least 20x',
       ('first %s, last %s'):format(tostring(first), tostring(last)))
local pred = read_lines(dir .. '/pred.tsv') or {}
tap.is(pred[1], '# x\ttarget\tprediction', 'pred.tsv has a # header')
tap.ok(#pred > 100, 'pred.tsv has the prediction grid')
tap.ok(io.open(dir .. '/loss.tsv.tmp') == nil, 'no temporary file left behind')

if os.execute('command -v gnuplot >/dev/null 2>&1') then
  local rendered = os.execute(('gnuplot -e %s plots/regression_demo.gp'):format(q("dir='" .. dir .. "'")))
  tap.ok(rendered, 'gnuplot renders plots/regression_demo.gp')
  for _, ext in ipairs{'png', 'pdf'} do
    local f = io.open(dir .. '/regression_demo.' .. ext, 'rb')
    local size = f and f:seek('end') or 0
    if f then f:close() end
    tap.ok(size > 1000, ('regression_demo.%s is produced and non-empty'):format(ext), 'size ' .. size)
  end
else
  tap.skip('gnuplot renders plots/regression_demo.gp', 'gnuplot not installed')
end

cleanup()
tap.done()
