-- t_comet_gates.lua: the COMET reproduction (experiments/comet_gates.lua) at a toy size: the quick
-- preset through the runner (columns, one row per data x arm x seed x task, the top-k gate exactly
-- 2-sparse, the figure renders); support recovery is 1 for a model whose experts and gates are set
-- to the truth of gm.data.mtl_regression and 0 when the gate picks the wrong experts; the
-- gm.data.movielens reader on files written here in all three layouts, with malformed lines named
-- by line number; and the MovieLens protocol (data=movielens) end to end on a written u.data.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local q = tap.q
local gm = require 'gmoe'
local L = dofile('experiments/lib/mmoe.lua')

local read_tsv = tap.read_tsv

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute('mkdir -p ' .. q(d)))
  return d
end

-- ---- the quick preset at a toy size ------------------------------------------------------------
local dir = tmpdir() .. '/run'
local code, out, err = tap.run('run experiments/comet_gates.lua --quick seeds=1 epochs=2 n_train=300 n_val=200 ' ..
  'n_test=200 perm_steps=2 --dir ' .. q(dir))
tap.is(code, 0, 'comet_gates runs at a toy size', err)
tap.is(out, '', 'stdout stays clean')
tap.ok(io.open(dir .. '/DONE') ~= nil, 'the run finished (DONE)')
local header, rows = read_tsv(dir .. '/results.tsv')
tap.is(header, 'data\tgate\tperm\tseed\ttask\ttest_loss\ttest_auc\tsupport_recovery\tsparse_fraction\tsparse_epoch\t' ..
  'gamma\tentropy\tlr', 'results.tsv columns')
tap.is(#rows, 2 * 7 * 2, 'one row per data x arm x seed x task (2 x 7 x 1 x 2)')
local ok_rows, topk_sparse, softmax_dense, gammas = true, true, true, true
for _, r in ipairs(rows) do
  local loss, rec = tonumber(r.test_loss), tonumber(r.support_recovery)
  if not (loss and loss > 0 and loss < 100 and rec and rec >= 0 and rec <= 1 and r.test_auc == '') then ok_rows = false end
  if r.gate == 'topk' and tonumber(r.sparse_fraction) ~= 1 then topk_sparse = false end -- +perm: frozen
  if r.gate == 'softmax' and tonumber(r.sparse_fraction) ~= 0 then softmax_dense = false end
  local smooth = r.gate == 'comet' or r.gate == 'dselect_k'
  if smooth ~= (r.gamma ~= '') then gammas = false end
end
tap.ok(ok_rows, 'every row has a finite test loss, a recovery in [0, 1] and no AUC')
tap.ok(topk_sparse, 'the top-k gate has exactly k = 2 non-zero weights on every test example')
tap.ok(softmax_dense, 'the softmax gate is never 2-sparse')
tap.ok(gammas, 'gamma is set exactly for the smooth-step gates')
header = read_tsv(dir .. '/curves.tsv')
tap.is(header, 'data\tgate\tperm\tseed\tgamma\tentropy\tlr\tepoch\ttask\tval_loss\tnonzero\tsparse_fraction\t' ..
  'ksparse_fraction', 'curves.tsv columns')
tap.like(tap.slurp(dir .. '/layout.gp'), 'arms = "softmax hash topk topk%+perm dselect_k comet comet%+perm"',
  'layout.gp names the arms')
if os.execute('command -v gnuplot >/dev/null 2>&1') then
  code, out, err = tap.run('plot comet_gates ' .. q(dir))
  tap.is(code, 0, 'gmoe plot comet_gates renders the toy run', err)
  local f = io.open(dir .. '/comet_gates.png', 'rb')
  local size = f and f:seek('end') or 0
  if f then f:close() end
  tap.ok(size > 1000, 'comet_gates.png is non-empty', 'size ' .. size)
else
  tap.skip('gmoe plot comet_gates', 'gnuplot not installed')
end

-- ---- support recovery with the gate set to the truth --------------------------------------------
local d = gm.data.mtl_regression {n_train = 10, n_val = 10, n_test = 2000, gate = 'tree', seed = 7}
local truth = d.truth

-- The hidden tree of task t routes x to its leaf's experts and weights (shift: a wrong expert set).
local TruthGate = gm.gates.Gate:extend('TruthGate')
function TruthGate:init(t, shift) self.task, self.shift, self.k = t, shift, 2 end
function TruthGate:forward(x)
  local H = truth.tree[self.task - 1]
  local right = x:matmul(H:t()):gt(0):totable()
  local ids, ws = {}, {}
  for i, row in ipairs(right) do
    local node = 0
    for _ = 1, truth.depth do node = 2 * node + 1 + math.floor(row[node + 1]) end
    local leaf = node - (2 ^ truth.depth - 1) + 1
    local s = truth.supports[self.task][leaf]
    ids[i] = {(s[1] + self.shift) % 16, (s[2] + self.shift) % 16}
    ws[i] = truth.weights[self.task][leaf]
  end
  return {ids = gm.tensor(ids, {dtype = 'i32'}), weights = gm.tensor(ws), aux = {}, k = 2}
end

local function truth_model(shift)
  local m = L.MMoE {d_in = 10, gates = {TruthGate(1, shift), TruthGate(2, shift)}, experts = 16, hidden = 8,
                    activation = 'tanh'}
  gm.no_grad(function()
    m.lin1.weight:copy_(truth.U:reshape {16 * 8, 10})
    m.lin1.bias:fill_(0)
    m.w2:copy_(truth.v:reshape {16, 8, 1})
    m.b2:fill_(0)
    for t = 0, 1 do m.heads[t].weight:fill_(1); m.heads[t].bias:fill_(0) end
  end)
  return m
end

local x = d.test.x
local m = truth_model(0)
local outs, ws, _, f = gm.no_grad(function() return m(x, {}) end)
local match = L.match_experts(f, L.true_experts(x, truth))
local ident = true
for i = 1, 16 do if match[i] ~= i - 1 then ident = false end end
tap.ok(ident, 'experts set to the truth match the true experts one to one')
for t = 1, 2 do
  tap.close(L.support_recovery(ws[t], d.test.experts:select(1, t - 1), match), 1, 0,
    ('task %d: support recovery is 1 with the gate set to the truth'):format(t))
  local mse = gm.mse_loss(outs[t], d.test.y:select(1, t - 1)):item()
  tap.ok(mse > 0.005 and mse < 0.02, ('task %d: test MSE at the noise level (0.1^2)'):format(t), 'mse ' .. mse)
end
local wrong = truth_model(1)
local _, ww = gm.no_grad(function() return wrong(x, {}) end)
tap.ok(L.support_recovery(ww[1], d.test.experts:select(1, 0), match) < 0.2,
  'a gate that picks the neighbouring experts does not recover the support')
local nz, exact, atmost = L.sparsity(ws[1], 2)
tap.ok(nz == 2 and exact == 1 and atmost == 1, 'the truth gate is exactly 2-sparse', ('%g %g %g'):format(nz, exact, atmost))

-- ---- gm.data.movielens on written files -----------------------------------------------------------
local write = tap.spit

local ml = tmpdir()
for _, c in ipairs {
  {'ml-100k', 'u.data', '196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n', '\t'},
  {'ml-1m', 'ratings.dat', '1::1193::5::978300760\n2::661::3::978302109\n1::914::4::978301968\n', '::'},
  {'ml-latest', 'ratings.csv', 'userId,movieId,rating,timestamp\r\n1,31,2.5,1260759144\r\n7,1029,3.5,1260759179\r\n1,1061,3,1260759182\r\n', ','},
} do
  local fmt, file, body, sep = c[1], c[2], c[3], c[4]
  local sub = ml .. '/' .. fmt
  os.execute('mkdir -p ' .. q(sub))
  write(sub .. '/' .. file, body)
  local r = gm.data.movielens(sub)
  tap.is(r.format, fmt, fmt .. ': detected from ' .. file)
  tap.ok(r.n == 3 and r.n_users == 2 and r.n_movies == 3, fmt .. ': 3 ratings of 2 users and 3 movies',
    ('%d %d %d'):format(r.n, r.n_users, r.n_movies))
  tap.all_close(r.user:totable(), {0, 1, 0}, 0, fmt .. ': users renumbered densely in order of appearance')
  tap.is(r.user.dtype .. r.movie.dtype .. r.rating.dtype, 'i32i32f32', fmt .. ': dtypes')
  local first = r.rating:totable()[1]
  tap.ok(first == (fmt == 'ml-latest' and 2.5 or fmt == 'ml-1m' and 5 or 3), fmt .. ': ratings read (half stars too)')
  tap.is(r.movie_ids:totable()[3], ({['ml-100k'] = 377, ['ml-1m'] = 914, ['ml-latest'] = 1061})[fmt],
    fmt .. ': movie_ids hold the file ids')
  -- a malformed third data line
  local lines = {}
  for l in body:gmatch('[^\n]+') do lines[#lines + 1] = l end
  local at = fmt == 'ml-latest' and 3 or 2
  lines[at] = table.concat({'5', 'x', '4', '1'}, sep)
  write(sub .. '/' .. file, table.concat(lines, '\n') .. '\n')
  tap.errors(function() gm.data.movielens(sub) end, file:gsub('%.', '%%.') .. ' line ' .. at .. ': user and movie ids must be integers',
    fmt .. ': a malformed line is named with its line number')
  lines[at] = table.concat({'5', '6', '4'}, sep)
  write(sub .. '/' .. file, table.concat(lines, '\n') .. '\n')
  tap.errors(function() gm.data.movielens(sub) end, 'line ' .. at .. ': expected 4 fields, found 3',
    fmt .. ': a missing field is named')
  lines[at] = table.concat({'5', '6', '9', '1'}, sep)
  write(sub .. '/' .. file, table.concat(lines, '\n') .. '\n')
  tap.errors(function() gm.data.movielens(sub) end, 'line ' .. at .. ': the rating must be a number in %(0, 5%]',
    fmt .. ': a rating out of range is named')
end
write(ml .. '/ml-latest/ratings.csv', 'user,movie,rating,time\n1,2,3,4\n')
tap.errors(function() gm.data.movielens(ml .. '/ml-latest') end, 'line 1: expected the header',
  'ml-latest: a wrong header is named')
tap.errors(function() gm.data.movielens(ml .. '/none') end,
  'no MovieLens ratings file in .*u%.data.*ratings%.dat.*ratings%.csv.*grouplens%.org/datasets/movielens',
  'a folder without ratings names the files and where MovieLens is published')
tap.errors(function() gm.data.movielens(ml .. '/ml-1m', {max_ratings = 0}) end, 'max_ratings must be',
  'max_ratings is checked')
os.execute('mkdir -p ' .. q(ml .. '/fifo') .. ' && mkfifo ' .. q(ml .. '/fifo/u.data'))
tap.errors(function() gm.data.movielens(ml .. '/fifo') end, 'u%.data: it is a FIFO',
  'a FIFO named u.data is refused, not opened (opening it would block)')

-- ---- the MovieLens protocol end to end -------------------------------------------------------------
local mdir = ml .. '/toy'
os.execute('mkdir -p ' .. q(mdir))
local lines = {}
for u = 1, 30 do
  for j = 1, 12 do
    local mid = (u * 7 + j * 5) % 60 + 1
    lines[#lines + 1] = ('%d\t%d\t%d\t%d'):format(u, mid, (u + mid) % 5 + 1, 880000000 + #lines)
  end
end
write(mdir .. '/u.data', table.concat(lines, '\n') .. '\n')
local rdir = ml .. '/mlrun'
code, out, err = tap.run(('run experiments/comet_gates.lua --quick data=movielens ml_dir=%s seeds=1 epochs=2 ' ..
  'gates=hash+comet perm_gates=comet ml_embed=8 ml_expert=8 --dir %s'):format(q(mdir), q(rdir)))
tap.is(code, 0, 'data=movielens runs on a written u.data', err)
header, rows = read_tsv(rdir .. '/results.tsv')
tap.is(#rows, 3 * 2, 'one row per arm x task (hash, comet, comet+perm)')
local auc_ok, rating_ok = true, true
for _, r in ipairs(rows) do
  local auc = tonumber(r.test_auc)
  if r.task == 'watch' and not (auc and auc >= 0 and auc <= 1) then auc_ok = false end
  if r.task == 'rating' and (r.test_auc ~= '' or not tonumber(r.test_loss)) then rating_ok = false end
  if r.support_recovery ~= '' then rating_ok = false end
end
tap.ok(auc_ok, 'the watch task reports a ROC AUC in [0, 1]')
tap.ok(rating_ok, 'the rating task reports its masked MSE without AUC; no support recovery without a truth')
code, out, err = tap.run('run experiments/comet_gates.lua --quick data=movielens --dir ' .. q(ml .. '/nodir'))
tap.ok(code ~= 0 and err:match('needs ml_dir') ~= nil, 'data=movielens without ml_dir says what it needs', err)

os.execute('rm -rf ' .. q(dir:gsub('/run$', '')) .. ' ' .. q(ml))
tap.done()
