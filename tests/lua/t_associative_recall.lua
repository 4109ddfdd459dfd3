-- t_associative_recall.lua: the MQAR experiment (experiments/associative_recall.lua) and its pieces:
-- zoology's accuracy metric (ignores -100, averages per example first), the answer positions
-- gathered from gm.data.mqar, gm.nn.LM's "identity" state mixer (h + LN(h)), GatedConv's zoology
-- long-conv variant (ReLU filter, k * u + u) gradchecked in f64, and the quick preset at a toy
-- size through the runner (columns, accuracies in [0, 1], attention learns T = 16, D = 2 above
-- chance), with its figure when gnuplot is installed.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'
local q = tap.q
local Q = dofile('experiments/lib/mqar.lua')

-- accuracy: -100 ignored, each row's mean first, rows without answers skipped.
do
  local target = {{5, -100, 7, -100}, {3, -100, -100, -100}, {-100, -100, -100, -100}, {1, 2, 3, 4}}
  local pred = {{5, 9, 0, 9}, {3, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}}
  -- rows: 1/2, 1/1, (none), 1/4 -> mean (0.5 + 1 + 0.25) / 3; the flat mean would be 3/7.
  tap.close(Q.accuracy(pred, target), (0.5 + 1 + 0.25) / 3, 1e-12, 'accuracy: per example first, -100 ignored')
  tap.close(Q.accuracy(gm.tensor(pred, {dtype = 'i32'}), gm.tensor(target, {dtype = 'i32'})), (0.5 + 1 + 0.25) / 3,
            1e-12, 'accuracy takes i32 tensors')
  tap.ok(Q.accuracy({{1}}, {{-100}}) ~= Q.accuracy({{1}}, {{-100}}), 'no scored position at all: NaN')
end

-- split: pos / vals are the labelled positions of each row, in order, and their labels.
do
  local s = Q.split(50, {vocab = 64, seq_len = 32, num_kv_pairs = 4}, gm.Generator(3))
  local labels, pos, vals, ids = s.labels:totable(), s.pos:totable(), s.vals:totable(), s.ids:totable()
  local ok, why = true, ''
  for i = 1, 50 do
    local want = {}
    for t, l in ipairs(labels[i]) do if l ~= -100 then want[#want + 1] = t - 1 end end
    for j = 1, 4 do
      local p = pos[i][j]
      if p ~= want[j] or vals[i][j] ~= labels[i][p + 1] or vals[i][j] < 32 or ids[i][p + 1] >= 32 then
        ok, why = false, ('row %d answer %d: pos %d want %s'):format(i, j, p, tostring(want[j]))
      end
    end
  end
  tap.ok(ok, 'split: answer positions and values match the labels (a key at each)', why)
  local ids_b, sel, tgt = Q.batch(s, gm.tensor({2, 0}, {dtype = 'i32'}))
  tap.is(table.concat(ids_b.shape, 'x') .. ' ' .. sel.shape[1] .. ' ' .. tgt.shape[1], '2x32 8 8', 'batch shapes')
  tap.is(sel:totable()[5], 32 + pos[1][1], 'batch: second row offset by T')
end

-- LM state_mixer = 'identity': each block adds LN(h) after the mixer (zoology's Identity).
do
  gm.manual_seed(5)
  local lm = gm.nn.LM {vocab = 7, d_model = 8, layers = 1, state_mixer = 'identity', dtype = 'f64'}
  local ids = gm.tensor({{1, 2, 3, 4}}, {dtype = 'i32'})
  local b = lm.blocks[0]
  local h = lm.embed(ids)
  h = h + b.mixer(b.norm1(h))
  h = h + b.norm2(h)
  local want = lm.norm_f(h):matmul(lm.embed.weight:t())
  tap.all_close(lm(ids):totable(), want:totable(), 1e-12, 'LM identity state mixer: h + mixer(LN h) then + LN h')
  tap.errors(function() gm.nn.LM {vocab = 7, d_model = 8, state_mixer = 'id'} end, 'state_mixer must be',
             'an unknown state mixer is an error naming the choices')
end

-- GatedConv as zoology's long layer: ReLU filter MLP and k * u + u, gradchecked in f64.
do
  gm.manual_seed(7)
  local m = gm.nn.GatedConv {d_model = 4, short_kernel = 0, d_hidden = 3, filter_activation = 'relu', long_skip = true,
                             dtype = 'f64'}
  tap.ok(m.filter_freq == nil, 'relu filter: no frequency parameter')
  local x = gm.randn({2, 5, 4}, {dtype = 'f64'})
  -- the filter at zero makes the long conv the identity: y = x * proj(x) + x
  local y0 = gm.no_grad(function()
    for _, p in ipairs {m.filter2.weight, m.filter2.bias} do p:zero_() end
    return m(x)
  end)
  tap.all_close(y0:totable(), (x * m.proj(x) + x):detach():totable(), 1e-12, 'long_skip: a zero filter passes u through')
  gm.manual_seed(8)
  m = gm.nn.GatedConv {d_model = 4, short_kernel = 2, d_hidden = 3, filter_activation = 'relu', long_skip = true,
                       dtype = 'f64'}
  local named = m:named_parameters()
  local all = {x}
  for i, e in ipairs(named) do all[1 + i] = e[2] end
  local function f(xx, ...)
    local a = {...}
    for i, e in ipairs(named) do
      local obj, parts = m, {}
      for p in e[1]:gmatch('[^.]+') do parts[#parts + 1] = p end
      for k = 1, #parts - 1 do obj = obj[parts[k]] end
      obj[parts[#parts]] = a[i]
    end
    return m(xx)
  end
  local ok, err = pcall(gm.gradcheck, f, all)
  tap.ok(ok and err < 1e-6, 'gradcheck GatedConv relu + long_skip', tostring(err))
  tap.errors(function() gm.nn.GatedConv {d_model = 4, filter_activation = 'gelu'} end, 'filter_activation must be',
             'an unknown filter activation is an error')
end

-- The quick preset at a toy size through the runner.
local dir = os.tmpname()
os.remove(dir)
local code, out, err = tap.run('run experiments/associative_recall.lua --quick settings=16x2 vocab=64 d_models=32 ' ..
  'lrs=1e-2 n_train=800 n_val=100 n_test=100 epochs=3 --dir ' .. q(dir))
tap.is(code, 0, 'associative_recall runs at a toy size', err)
tap.is(out, '', 'stdout stays clean')
tap.ok(io.open(dir .. '/DONE') ~= nil, 'the run finished (DONE)')

local read_tsv = tap.read_tsv

local header, rows = read_tsv(dir .. '/results.tsv')
tap.is(header, 'mixer\tseq_len\tnum_kv_pairs\td_model\tlr\tepochs_run\tbest_val_acc\ttest_acc\tparams\ttrain_seconds',
       'results.tsv columns')
tap.is(#rows, 2, 'one row per run (2 mixers x 1 d x 1 lr)')
local in_range, acc = true, {}
for _, r in ipairs(rows) do
  local v, t = tonumber(r[7]), tonumber(r[8])
  in_range = in_range and v and t and v >= 0 and v <= 1 and t >= 0 and t <= 1
  acc[r[1]] = v
end
tap.ok(in_range, 'accuracies in [0, 1]')
-- chance: one of the V/2 = 32 value tokens, 1/32
tap.ok(acc.attention and acc.attention > 0.2, 'attention learns T = 16, D = 2 well above chance (1/32)',
       tostring(acc.attention))
header = read_tsv(dir .. '/curves.tsv')
tap.is(header, 'mixer\tseq_len\tnum_kv_pairs\td_model\tlr\tepoch\tval_acc\ttrain_loss\tseconds', 'curves.tsv columns')
tap.like(tap.slurp(dir .. '/layout.gp') or '', 'mixers = "attention base_conv"', 'layout.gp names the data sets')
tap.like(tap.slurp(dir .. '/config.lua') or '', 'seed', 'the run folder records its config')

if os.execute('command -v gnuplot >/dev/null 2>&1') then
  code, out, err = tap.run('plot associative_recall ' .. q(dir))
  tap.is(code, 0, 'gmoe plot associative_recall renders the toy run', err)
  tap.ok(io.open(dir .. '/associative_recall.png') ~= nil, 'PNG written')
else
  tap.skip('figure', 'gnuplot not installed')
end
os.execute('rm -rf ' .. q(dir))

-- The paper preset's other arms (gla_hybrid, moe) and gla build and train at a toy size.
code, out, err = tap.run('run experiments/associative_recall.lua mixers=gla+gla_hybrid+moe settings=16x2 vocab=64 ' ..
  'd_models=16 n_train=128 n_val=32 n_test=32 epochs=1 --dir ' .. q(dir))
tap.is(code, 0, 'gla, gla_hybrid and moe train at a toy size', err)
header, rows = read_tsv(dir .. '/results.tsv')
tap.is(#rows, 3, 'one row per arm')
os.execute('rm -rf ' .. q(dir))
tap.done()
