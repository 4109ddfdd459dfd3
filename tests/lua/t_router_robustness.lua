-- t_router_robustness.lua: Reproduction 3 (experiments/router_robustness.lua) through the runner
-- at a toy size (seconds): every arm runs one seed; results.tsv, curves.tsv and summary.tsv have
-- the issue's columns; accuracies, flip rates and usage shares are in range; the active-MAC
-- fractions are the models' (0.263 dense, 0.322 MoE); the figure renders when gnuplot is
-- installed; a bad data folder is an error that names the missing files.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local q = tap.q

local dir = os.tmpname()
os.remove(dir)

local read_tsv = tap.read_tsv

local code, out, err = tap.run('run experiments/router_robustness.lua --quick seeds=1 batch=64 n_train=128 n_test=40 ' ..
  'n_curve=20 epochs=1 pretrain_epochs=1 train_steps=1 test_steps=1 --dir ' .. q(dir), {env = 'OMP_NUM_THREADS=1'})
tap.is(code, 0, 'router_robustness runs at a toy size', err)
tap.is(out, '', 'stdout stays clean')
tap.ok(io.open(dir .. '/DONE') ~= nil, 'the run finished (DONE)')

local header, res = read_tsv(dir .. '/results.tsv')
tap.is(header, 'arm\tseed\tdata\tSA\tRA\trouter_attack_acc\trouter_acc\tflip_rate\tactive_macs_frac', 'results.tsv columns')
tap.is(#res, 4, 'one row per arm and seed')
local arms, ok_range = {}, true
for _, r in ipairs(res) do
  arms[#arms + 1] = r[1]
  for k = 4, 5 do ok_range = ok_range and tonumber(r[k]) >= 0 and tonumber(r[k]) <= 1 end
  if r[1] ~= 'dense_at' then
    for k = 6, 8 do ok_range = ok_range and tonumber(r[k]) >= 0 and tonumber(r[k]) <= 1 end
  else
    ok_range = ok_range and r[6] == 'NaN' and r[8] == 'NaN'
  end
end
tap.is(table.concat(arms, ' '), 'dense_at moe_joint_at advmoe moe_router_frozen', 'the four arms in order')
tap.ok(ok_range, 'accuracies and flip rates in [0, 1]; router metrics NaN for the dense arm')
tap.ok(math.abs(tonumber(res[1][9]) - 0.2627) < 1e-3 and math.abs(tonumber(res[2][9]) - 0.3221) < 1e-3,
       'active MACs: 0.263 (dense, ratio 0.5) and 0.322 (MoE: + router) of the full-width network', res[1][9] .. ' ' .. res[2][9])

local ch, curves = read_tsv(dir .. '/curves.tsv')
tap.is(ch, 'arm\tseed\tepoch\tloss\tSA\tRA\tusage_0\tusage_1', 'curves.tsv columns')
tap.is(#curves, 5, 'one row per epoch (the frozen arm adds its clean epoch 0)')
local usage_ok = true
for _, r in ipairs(curves) do
  if r[1] ~= 'dense_at' then usage_ok = usage_ok and math.abs(tonumber(r[7]) + tonumber(r[8]) - 1) < 1e-9 end
end
tap.ok(usage_ok, 'expert usage shares sum to 1')
tap.like(tap.slurp(dir .. '/summary.tsv') or '', '^# arm\tindex\tn\tSA\tSA_se\tRA\tRA_se', 'summary.tsv has per-arm means')
tap.like(tap.slurp(dir .. '/metrics.tsv') or '', 'RA_advmoe\t', 'RA per arm is a metric')

if os.execute('command -v gnuplot >/dev/null 2>&1') then
  code, out, err = tap.run('plot router_robustness ' .. q(dir))
  tap.is(code, 0, 'gmoe plot router_robustness renders the toy run', err)
  local f = io.open(dir .. '/router_robustness.png', 'rb')
  local size = f and f:seek('end') or 0
  if f then f:close() end
  tap.ok(size > 1000, 'router_robustness.png is non-empty', 'size ' .. size)
else
  tap.skip('gmoe plot router_robustness', 'gnuplot not installed')
end
os.execute('rm -rf ' .. q(dir))

code, out, err = tap.run('run experiments/router_robustness.lua --quick data=cifar10 data_dir=/nonexistent --dir ' .. q(dir))
tap.ok(code ~= 0, 'data=cifar10 with a bad folder fails')
tap.like(err, 'missing files: /nonexistent/data_batch_1.bin, .*test_batch.bin', 'the error names the missing files')
os.execute('rm -rf ' .. q(dir))

tap.done()
