-- comet_gates.lua: the COMET reproduction (papers.md §3-§5): COMET tree gates against
-- DSelect-k, Top-k, Hash routing and a dense softmax gate, with and without COMET's permutation
-- local search, in a multi-gate MoE for multi-task learning (16 shared MLP experts, one gate per
-- task, k = 2, task heads; experiments/lib/mmoe.lua). Data: gm.data.mtl_regression with a hidden
-- tree gate (example-dependent true supports) and with fixed supports, or MovieLens (data=movielens
-- ml_dir=DIR: watch classification + rating regression, §4.3). Per arm, the hyperparameter grid
-- runs on the first tune_seeds seeds, the configuration with the best mean validation loss is kept,
-- and every seed is trained with it; early stopping on validation loss restores the best epoch.
-- Writes results.tsv (chosen configuration, one row per seed and task), grid.tsv (every training
-- run), curves.tsv (validation loss and gate sparsity per epoch of every run), and points.tsv,
-- arms.tsv, sparsity.tsv, layout.gp for plots/comet_gates.gp.
--   gmoe run experiments/comet_gates.lua [--quick] [seeds=10 data=tree+fixed gates=... ...]
--   gmoe run experiments/comet_gates.lua data=movielens ml_dir=~/data/ml-1m
local gm = require 'gmoe'
local stats = require 'gmoe.stats'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local L = dofile(here .. 'lib/mmoe.lua')
local ML = dofile(here .. 'lib/movielens_mtl.lua')

local GATES = {softmax = true, topk = true, dselect_k = true, comet = true, hash = true}
local ORDER = {'softmax', 'hash', 'topk', 'topk+perm', 'dselect_k', 'comet', 'comet+perm'}
local DATA = {tree = true, fixed = true, movielens = true}

local list = gm.experiment.list

local function fmt_num(v) return v and ('%g'):format(v) or '' end

-- The arms of a config in the figure's order: {name, gate, perm}.
local function arms(cfg)
  local want, perm = {}, {}
  for _, g in ipairs(list(cfg.gates)) do want[g] = true end
  for _, g in ipairs(list(cfg.perm_gates)) do perm[g] = true end
  local out = {}
  for _, name in ipairs(ORDER) do
    local g = name:match('^(.*)%+perm$')
    if g then
      if perm[g] then out[#out + 1] = {name = name, gate = g, perm = true} end
    elseif want[name] then
      out[#out + 1] = {name = name, gate = name, perm = false}
    end
  end
  return out
end

-- The grid of an arm: every lr; gamma and entropy for the smooth-step gates (gamma from
-- perm_gammas with local search: the same grid by default; COMET's +perm configuration fixes 10).
local function grid(cfg, arm)
  local out = {}
  local lrs = list(cfg.lrs, tonumber)
  local smooth = arm.gate == 'comet' or arm.gate == 'dselect_k'
  local gammas = smooth and list(arm.perm and cfg.perm_gammas or cfg.gammas, tonumber) or {false}
  local ents = smooth and list(cfg.entropies, tonumber) or {false}
  for _, g in ipairs(gammas) do
    for _, e in ipairs(ents) do
      for _, lr in ipairs(lrs) do out[#out + 1] = {gamma = g or nil, entropy = e or nil, lr = lr} end
    end
  end
  return out
end

local function make_gate(cfg, arm, h, gen)
  local g
  if arm.gate == 'softmax' then g = gm.gates.Softmax {generator = gen}
  elseif arm.gate == 'topk' then g = gm.gates.TopK {k = cfg.k, generator = gen}
  elseif arm.gate == 'hash' then g = gm.gates.Hash {hash = cfg.data == 'movielens' and 'random' or 'balanced'}
  elseif arm.gate == 'dselect_k' then
    -- DSelect-k's code sums its entropy term over the batch; per example here, like COMET's, so
    -- one entropy grid means the same for both gates
    g = gm.gates.DSelectK {k = cfg.k, gamma = h.gamma, entropy = h.entropy / cfg.batch, generator = gen}
  else
    g = gm.gates.COMET {k = cfg.k, gamma = h.gamma, entropy = h.entropy, generator = gen}
  end
  if arm.perm then g = gm.gates.Permuted(g, {steps = cfg.perm_steps, generator = gen}) end
  return g
end

-- ---- data -------------------------------------------------------------------------------------
-- A task set: splits {x, y = {per task}, tok (hash ids), n} plus task names, losses and truth.
local function synthetic(cfg, mode, gen)
  local d = gm.data.mtl_regression {n_train = cfg.n_train, n_val = cfg.n_val, n_test = cfg.n_test, experts = 16,
                                    k = cfg.k, gate = mode, generator = gen}
  local bits = gm.tensor({1, 2, 4, 8}, {dtype = 'f32'})
  local out = {tasks = {'task1', 'task2'}, kind = 'regression', truth = d.truth, d_in = 10}
  for _, s in ipairs {'train', 'val', 'test'} do
    local x = d[s].x
    -- hash routing needs a discrete feature: the sign pattern of x's first four coordinates
    -- (16 buckets, one per expert under the balanced hash)
    local tok = (x:narrow(1, 0, 4):gt(0):to('f32') * bits):sum(-1):to('i32')
    out[s] = {x = x, y = {d[s].y:select(1, 0):contiguous(), d[s].y:select(1, 1):contiguous()}, tok = tok,
              experts = d[s].experts, n = x.shape[1]}
  end
  return out
end

local function movielens(cfg, gen)
  if cfg.ml_dir == '' then
    error('comet_gates: data=movielens needs ml_dir=DIR, a folder holding u.data (ml-100k), ratings.dat ' ..
          '(ml-1m) or ratings.csv (ml-latest); MovieLens is published at https://grouplens.org/datasets/movielens/', 0)
  end
  local dir = cfg.ml_dir:gsub('^~', os.getenv('HOME') or '~')
  local d = ML.build(gm.data.movielens(dir), {n = cfg.ml_ratings, generator = gen})
  local out = {tasks = {'watch', 'rating'}, kind = 'movielens', n_users = d.n_users, n_movies = d.n_movies,
               d_in = 2 * cfg.ml_embed}
  for _, s in ipairs {'train', 'val', 'test'} do
    out[s] = {x = d[s].x, y = {d[s].watch, d[s].rating}, tok = d[s].user, n = d[s].n}
  end
  return out
end

-- Per-task losses (tensors) of outputs on a batch: MSE; for MovieLens BCE and the MSE on watched rows.
local function task_losses(ds, outs, y)
  if ds.kind == 'regression' then return {gm.mse_loss(outs[1], y[1]), gm.mse_loss(outs[2], y[2])} end
  local mask = y[1]
  local msq = ((outs[2] - y[2]):pow(2) * mask):sum() / math.max(1, mask:sum():item())
  return {gm.binary_cross_entropy_with_logits(outs[1], y[1]), msq}
end

local Bottom = gm.nn.Module:extend('MovieLensBottom')
function Bottom:init(nu, nm, dim, gen)
  self.users = gm.nn.Embedding {nu, dim, generator = gen}
  self.movies = gm.nn.Embedding {nm, dim, generator = gen}
end
function Bottom:forward(x)
  return gm.cat({self.users(x:select(1, 0)), self.movies(x:select(1, 1))}, 1)
end

local function make_model(cfg, ds, gates, gen)
  if ds.kind == 'regression' then
    return L.MMoE {d_in = ds.d_in, gates = gates, experts = 16, hidden = cfg.hidden, out = 1,
                   activation = cfg.activation, generator = gen}
  end
  local bottom = Bottom(ds.n_users, ds.n_movies, cfg.ml_embed, gen)
  return L.MMoE {d_in = ds.d_in, gates = gates, experts = 16, hidden = cfg.ml_expert, out = cfg.ml_expert,
                 head_hidden = cfg.ml_expert, dropout = 0.5, bottom = bottom, generator = gen}
end

-- ---- evaluation -------------------------------------------------------------------------------
local CHUNK = 4096

-- Forward a split in eval mode in chunks: per-task outputs, gate weights and expert outputs.
local function predict(model, split, need_f)
  model:eval()
  local outs, ws, fs = {{}, {}}, {{}, {}}, {}
  gm.no_grad(function()
    for s = 0, split.n - 1, CHUNK do
      local b = math.min(CHUNK, split.n - s)
      local o, w, _, f = model(split.x:narrow(0, s, b), {token_ids = split.tok:narrow(0, s, b)})
      for t = 1, 2 do outs[t][#outs[t] + 1] = o[t]; ws[t][#ws[t] + 1] = w[t] end
      if need_f then fs[#fs + 1] = f end
    end
  end)
  model:train()
  local function cat(l) return #l == 1 and l[1] or gm.cat(l, 0) end
  return {cat(outs[1]), cat(outs[2])}, {cat(ws[1]), cat(ws[2])}, need_f and cat(fs) or nil
end

local function weighted(cfg, ds, ls)
  if ds.kind == 'regression' then return ls[1] + ls[2] end
  return cfg.ml_w_watch * ls[1] + (1 - cfg.ml_w_watch) * ls[2]
end

-- ---- one training run ---------------------------------------------------------------------------
-- Returns {val, best_epoch, epochs, nonzero = {per epoch, mean over tasks}, tasks = {{test_loss,
-- test_auc, support_recovery, sparse_fraction, sparse_epoch} per task}}; writes its curves rows.
local function train(cfg, run, ds, arm, h, seed, curves)
  local streams = ('%s/%d'):format(ds.name, seed)
  local gates = {}
  for t = 1, 2 do gates[t] = make_gate(cfg, arm, h, run:generator(('gate/%s/%s/%d'):format(streams, arm.name, t))) end
  -- experts, heads and batch order come from the seed alone: paired across arms
  local model = make_model(cfg, ds, gates, run:generator('init/' .. streams))
  local bgen = run:generator('batches/' .. streams)
  local opt = gm.optim.Adam(model:parameters(), {lr = h.lr})
  local tr = ds.train
  local step, best, best_epoch, best_state = 0, math.huge, 0, nil
  local nonzero, first_sparse, since = {}, {}, 0
  local epoch = 0
  local function evaluate()
    local outs, ws = predict(model, ds.val)
    local ls = task_losses(ds, outs, ds.val.y)
    local total = weighted(cfg, ds, ls):item()
    local nzsum = 0
    for t = 1, 2 do
      local nz, exact, atmost = L.sparsity(ws[t], cfg.k)
      nzsum = nzsum + nz
      if atmost >= 0.99 and not first_sparse[t] then first_sparse[t] = epoch end
      curves:row(ds.name, arm.gate, arm.perm and 1 or 0, seed, fmt_num(h.gamma), fmt_num(h.entropy), h.lr, epoch,
                 ds.tasks[t], ls[t]:item(), nz, exact, atmost)
    end
    nonzero[#nonzero + 1] = nzsum / 2
    -- with local search the model in use is the one with the hard permutation: keep epochs after it
    if arm.perm and not gates[1].frozen then return end
    if total < best then
      best, best_epoch, since = total, epoch, 0
      best_state = {}
      for k, v in pairs(model:state_dict()) do best_state[k] = v:clone() end
    else
      since = since + 1
    end
  end
  evaluate()
  for e = 1, cfg.epochs do
    epoch = e
    local perm = gm.randperm(tr.n, {generator = bgen})
    local xs, toks = tr.x:index_select(0, perm), tr.tok:index_select(0, perm)
    local ys = {tr.y[1]:index_select(0, perm), tr.y[2]:index_select(0, perm)}
    for s = 0, tr.n - 1, cfg.batch do
      local b = math.min(cfg.batch, tr.n - s)
      opt:zero_grad()
      local outs, _, aux = model(xs:narrow(0, s, b), {step = step, token_ids = toks:narrow(0, s, b)})
      local loss = weighted(cfg, ds, task_losses(ds, outs, {ys[1]:narrow(0, s, b), ys[2]:narrow(0, s, b)}))
      if aux then loss = loss + aux end
      loss:backward()
      opt:step()
      step = step + 1
    end
    evaluate()
    if since >= cfg.patience then break end
  end
  if best_state then model:load_state_dict(best_state) end
  local outs, ws, f = predict(model, ds.test, ds.kind == 'regression')
  local ls = task_losses(ds, outs, ds.test.y)
  local res = {val = best, best_epoch = best_epoch, epochs = epoch, nonzero = nonzero, tasks = {}}
  local match = ds.truth and L.match_experts(f, L.true_experts(ds.test.x, ds.truth))
  for t = 1, 2 do
    local _, exact = L.sparsity(ws[t], cfg.k)
    local r = {test_loss = ls[t]:item(), sparse_fraction = exact, sparse_epoch = first_sparse[t]}
    if ds.kind == 'movielens' and t == 1 then r.test_auc = ML.auc(outs[1]:totable(), ds.test.y[1]:totable()) end
    if match then r.support_recovery = L.support_recovery(ws[t], ds.test.experts:select(1, t - 1), match) end
    res.tasks[t] = r
  end
  return res
end

return gm.experiment {
  name = 'comet_gates',
  description = 'COMET tree gates vs DSelect-k, Top-k, Hash, softmax (+ permutation local search) in a multi-gate MoE',
  config = {seed = 1, data = 'tree+fixed', gates = 'softmax+hash+topk+dselect_k+comet', perm_gates = 'topk+comet',
            seeds = 10, tune_seeds = 1, k = 2, hidden = 32, activation = 'relu', epochs = 50, patience = 8, batch = 256,
            n_train = 20000, n_val = 5000, n_test = 5000, gammas = '0.1+1+10', entropies = '0.1+1',
            lrs = '3e-4+1e-3+3e-3', perm_gammas = '0.1+1+10', perm_steps = 100,
            ml_dir = '', ml_ratings = 100000, ml_embed = 32, ml_expert = 64, ml_w_watch = 0.1},
  quick = {seeds = 3, tune_seeds = 1, epochs = 6, patience = 3, n_train = 2000, n_val = 500, n_test = 500,
           gammas = '1', perm_gammas = '1', entropies = '0.1', lrs = '3e-3', perm_steps = 16},
  choices = {activation = {'relu', 'tanh'}},
  doc = {data = "'+'-separated: tree (hidden tree gate), fixed (fixed supports), or movielens (needs ml_dir)",
         gates = "'+'-separated subset of softmax, hash, topk, dselect_k, comet",
         perm_gates = "'+'-separated gates that also run inside gm.gates.Permuted (topk, comet, ...)",
         activation = 'the synthetic experts\' hidden activation (the true experts use tanh)',
         perm_gammas = "gamma grid of the smooth-step gates inside Permuted (COMET's +perm configuration: 10)",
         tune_seeds = 'seeds on which the whole grid runs; the best mean validation loss picks the configuration',
         ml_dir = 'MovieLens folder (u.data, ratings.dat or ratings.csv)',
         ml_ratings = 'rated examples sampled (each gets one unwatched example)',
         ml_w_watch = 'weight of the watch task (the rating task gets 1 - it), as COMET\'s task weights'},
  check = function(cfg)
    for _, d in ipairs(list(cfg.data)) do assert(DATA[d], 'unknown data ' .. d) end
    for _, g in ipairs(list(cfg.gates)) do assert(GATES[g], 'unknown gate ' .. g) end
    for _, g in ipairs(list(cfg.perm_gates)) do assert(GATES[g], 'unknown gate ' .. g) end
    assert(cfg.seeds >= 1 and cfg.tune_seeds >= 1 and cfg.tune_seeds <= cfg.seeds, 'need 1 <= tune_seeds <= seeds')
    assert(cfg.epochs >= 1 and cfg.batch >= 1 and cfg.k == 2, 'epochs, batch >= 1; k = 2 (two true experts per task)')
  end,
  run = function(cfg, run)
    local results = run:tsv('results', {'data', 'gate', 'perm', 'seed', 'task', 'test_loss', 'test_auc',
                                        'support_recovery', 'sparse_fraction', 'sparse_epoch', 'gamma', 'entropy', 'lr'})
    local gridt = run:tsv('grid', {'data', 'gate', 'perm', 'seed', 'gamma', 'entropy', 'lr', 'val_loss', 'best_epoch',
                                   'epochs', 'chosen'})
    local curves = run:tsv('curves', {'data', 'gate', 'perm', 'seed', 'gamma', 'entropy', 'lr', 'epoch', 'task',
                                      'val_loss', 'nonzero', 'sparse_fraction', 'ksparse_fraction'})
    local points = run:tsv('points', {'x', 'seed', 'test_loss', 'support_recovery'})
    local armst = run:tsv('arms', {'x', 'arm', 'n', 'loss_mean', 'loss_se', 'recovery_mean', 'recovery_se',
                                   'sparse_mean', 'loss_sd'})
    local sparsity = run:tsv('sparsity', {'epoch', 'nonzero_mean', 'nonzero_se', 'runs'})
    local datas, A = list(cfg.data), arms(cfg)
    local total, done = 0, 0
    for _, _ in ipairs(datas) do
      for _, arm in ipairs(A) do total = total + #grid(cfg, arm) * cfg.tune_seeds + cfg.seeds - cfg.tune_seeds end
    end
    local sp_sets = {}
    for di, dname in ipairs(datas) do
      local ds = dname == 'movielens' and movielens(cfg, run:generator('data/movielens'))
        or synthetic(cfg, dname, run:generator('data/' .. dname))
      ds.name = dname
      if di > 1 then points:blank(2); armst:blank(2) end
      for ai, arm in ipairs(A) do
        local hs = grid(cfg, arm)
        local function fit(seed, hi)
          local h = hs[hi]
          local key = ('%s/%s/%d/%s/%s/%g'):format(dname, arm.name, seed, fmt_num(h.gamma), fmt_num(h.entropy), h.lr)
          local r = run:unit(key, function() return train(cfg, run, ds, arm, h, seed, curves) end)
          done = done + 1
          run:progress(done, total, key)
          return r
        end
        -- tuning: the grid on the first tune_seeds seeds, the best mean validation loss wins
        local tuned, best, best_val = {}, 1, math.huge
        for hi = 1, #hs do
          tuned[hi] = {}
          local v = 0
          for s = 1, cfg.tune_seeds do
            tuned[hi][s] = fit(s, hi)
            v = v + tuned[hi][s].val
          end
          if v < best_val then best, best_val = hi, v end
        end
        for hi = 1, #hs do
          for s = 1, cfg.tune_seeds do
            local r, h = tuned[hi][s], hs[hi]
            gridt:row(dname, arm.gate, arm.perm and 1 or 0, s, fmt_num(h.gamma), fmt_num(h.entropy), h.lr, r.val,
                      r.best_epoch, r.epochs, hi == best and 1 or 0)
          end
        end
        local h = hs[best]
        run:log('%s %s: chosen gamma=%s entropy=%s lr=%g (mean val loss %.4g over %d seeds)', dname, arm.name,
                fmt_num(h.gamma), fmt_num(h.entropy), h.lr, best_val / cfg.tune_seeds, cfg.tune_seeds)
        local losses, recs, sparse, curves_nz = {}, {}, {}, {}
        for s = 1, cfg.seeds do
          local r = s <= cfg.tune_seeds and tuned[best][s] or fit(s, best)
          if s > cfg.tune_seeds then
            gridt:row(dname, arm.gate, arm.perm and 1 or 0, s, fmt_num(h.gamma), fmt_num(h.entropy), h.lr, r.val,
                      r.best_epoch, r.epochs, 1)
          end
          local lsum, rsum, ssum = 0, 0, 0
          for t, rt in ipairs(r.tasks) do
            results:row(dname, arm.gate, arm.perm and 1 or 0, s, ds.tasks[t], rt.test_loss, rt.test_auc or '',
                        rt.support_recovery or '', rt.sparse_fraction, rt.sparse_epoch or '', fmt_num(h.gamma),
                        fmt_num(h.entropy), h.lr)
            lsum, rsum, ssum = lsum + rt.test_loss, rsum + (rt.support_recovery or 0), ssum + rt.sparse_fraction
          end
          losses[s], recs[s], sparse[s] = lsum / 2, rsum / 2, ssum / 2
          points:row(ai, s, losses[s], ds.truth and recs[s] or '')
          curves_nz[s] = r.nonzero
        end
        local lm, lse = stats.mean(losses), stats.stderr(losses)
        local rm, rse = stats.mean(recs), stats.stderr(recs)
        armst:row(ai, arm.name, cfg.seeds, lm, lse, ds.truth and rm or '', ds.truth and rse or '', stats.mean(sparse),
                  stats.std(losses))
        run:metric(('test_loss_%s_%s'):format(dname, arm.name:gsub('%+', '_')), lm)
        if arm.gate == 'comet' or arm.gate == 'dselect_k' then sp_sets[#sp_sets + 1] = {dname, arm.name, curves_nz} end
      end
    end
    -- sparsity curves: mean non-zero weights per example over the seeds still training at each epoch
    for i, set in ipairs(sp_sets) do
      if i > 1 then sparsity:blank(2) end
      local runs = set[3]
      local maxe = 0
      for _, c in ipairs(runs) do maxe = math.max(maxe, #c) end
      for e = 1, maxe do
        local v = {}
        for _, c in ipairs(runs) do if c[e] then v[#v + 1] = c[e] end end
        sparsity:row(e - 1, stats.mean(v), #v > 1 and stats.stderr(v) or 0, #v)
      end
    end
    local names, sets = {}, {}
    for _, a in ipairs(A) do names[#names + 1] = a.name end
    for _, s in ipairs(sp_sets) do sets[#sets + 1] = s[1] .. ':' .. s[2] end
    gm.experiment.write_atomic(run.dir .. '/layout.gp', ('data = "%s"\narms = "%s"\nsparsity_sets = "%s"\n'):format(
      table.concat(datas, ' '), table.concat(names, ' '), table.concat(sets, ' ')))
  end,
}
