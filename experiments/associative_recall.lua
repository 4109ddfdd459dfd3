-- associative_recall.lua: multi-query associative recall (MQAR) across sequence mixers, zoology's
-- Figure 2 (papers.md §7; GLA §8.4, gated attention §9.3). For every setting (T, D), d_model,
-- mixer and learning rate one 2-block LM (no MLP, tied head, zoology's init) trains on MQAR with
-- AdamW (weight decay 0.1, cosine to 0 over the epochs, stepped per epoch), stopping early once
-- validation accuracy passes 0.99; the figure takes the max over learning rates, as the paper.
-- Arms: attention (1 head, learned positions), gated_attention (elementwise sigmoid gate after
-- SDPA), base_conv (short conv k = 3, then implicit long conv), gla (2 heads, chunkwise),
-- gla_hybrid (zoology's add_gla: BaseConv k = 3 then GLA), moe (attention + a top-2-of-8 MoE
-- state mixer). Accuracy: per example over its D answers, then over examples (zoology's metric).
-- Each training run is one run:unit (an interrupted run resumes where it stopped).
-- Presets: --quick (pipeline check, < 2 min), the default CPU preset (the committed figure) and
-- preset=paper (zoology's grid; a `gmoe sweep ... --emit slurm` job, see README). Grid keys left
-- empty (or 0) take the preset's value.
--   gmoe run experiments/associative_recall.lua [--quick] [preset=cpu|paper] [mixers=a+b] [settings=64x4+128x8]
--       [d_models=32+64] [lrs=1e-3+1e-2] [n_train=N] [epochs=N] ...
local gm = require 'gmoe'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local Q = dofile(here .. 'lib/mqar.lua')

-- The CPU preset is cut to fit its budget (README: the issue's cut order, fewer learning rates,
-- no d = 256, gla_hybrid and moe in the paper preset only; then smaller d and fewer examples).
local PRESETS = {
  cpu = {mixers = 'attention+gated_attention+base_conv+gla', settings = '64x4+128x8+256x16', d_models = '16+32+64',
         lrs = '3e-3', vocab = 512, n_train = 20000, n_val = 1000, n_test = 1000, epochs = 10, batch_size = 64,
         dropout = 0},
  -- zoology's Figure 2 (iclr24_zoology_figure2/configs.py): batch 512, 256 at T = 256, 128 at T = 512.
  paper = {mixers = 'attention+gated_attention+base_conv+gla+gla_hybrid+moe', settings = '64x4+128x8+256x16+512x64',
           d_models = '64+128+256+512', lrs = '1e-4+4.6416e-4+2.1544e-3+1e-2', vocab = 8192, n_train = 100000,
           n_val = 3000, n_test = 3000, epochs = 64, batch_size = 0, dropout = 0.1},
}

local words = gm.experiment.list

-- The grid of a config: preset values for the keys left '' or 0.
local function grid(cfg)
  local p = PRESETS[cfg.preset]
  local g = {}
  for _, k in ipairs {'mixers', 'settings', 'd_models', 'lrs'} do g[k] = cfg[k] ~= '' and cfg[k] or p[k] end
  for _, k in ipairs {'vocab', 'n_train', 'n_val', 'n_test', 'epochs', 'batch_size'} do
    g[k] = cfg[k] ~= 0 and cfg[k] or p[k]
  end
  g.dropout = cfg.dropout >= 0 and cfg.dropout or p.dropout
  g.mixer_list = words(g.mixers)
  g.setting_list = {}
  for _, s in ipairs(words(g.settings)) do
    local T, D = s:match('^(%d+)x(%d+)$')
    assert(T, 'settings: expected TxD, got ' .. s)
    g.setting_list[#g.setting_list + 1] = {T = math.tointeger(tonumber(T)), D = math.tointeger(tonumber(D))}
  end
  g.d_list, g.lr_list = {}, {}
  for _, d in ipairs(words(g.d_models)) do g.d_list[#g.d_list + 1] = math.tointeger(tonumber(d)) end
  for _, lr in ipairs(words(g.lrs)) do g.lr_list[#g.lr_list + 1] = tonumber(lr) end
  return g
end

-- zoology's batch size per sequence length (paper preset, batch_size = 0).
local function batch_for(g, T)
  if g.batch_size > 0 then return g.batch_size end
  return T >= 1024 and 64 or T >= 512 and 128 or T >= 256 and 256 or 512
end

local RESULT_COLS = {'mixer', 'seq_len', 'num_kv_pairs', 'd_model', 'lr', 'epochs_run', 'best_val_acc', 'test_acc',
                     'params', 'train_seconds'}

local CURVE_COLS = {'mixer', 'seq_len', 'num_kv_pairs', 'd_model', 'lr', 'epoch', 'val_acc', 'train_loss', 'seconds'}

-- Train every (setting, d_model, mixer, lr) of the grid, each one run:unit; returns the result rows.
local function train_grid(cfg, run, results, curves)
  local g = grid(cfg)
  run:log('grid: mixers=%s settings=%s d_models=%s lrs=%s vocab=%d n_train=%d n_val=%d n_test=%d epochs=%d batch=%s ' ..
    'dropout=%g', g.mixers, g.settings, g.d_models, g.lrs, g.vocab, g.n_train, g.n_val, g.n_test, g.epochs,
    g.batch_size > 0 and tostring(g.batch_size) or '512/256/128 by T', g.dropout)
  -- Data per setting, made on first use (a resumed run whose units all replay makes none); one
  -- setting at a time: the previous one is dropped.
  local data = {}
  local function splits(s)
    local key = s.T .. 'x' .. s.D
    if not data[key] then
      local o = {vocab = g.vocab, seq_len = s.T, num_kv_pairs = s.D}
      data = {[key] = {Q.split(g.n_train, o, run:generator('data/train/' .. key)),
                       Q.split(g.n_val, o, run:generator('data/val/' .. key)),
                       Q.split(g.n_test, o, run:generator('data/test/' .. key))}}
    end
    return table.unpack(data[key])
  end
  local total = #g.setting_list * #g.d_list * #g.mixer_list * #g.lr_list
  local rows = {}
  for _, s in ipairs(g.setting_list) do
    for _, d in ipairs(g.d_list) do
      for _, mixer in ipairs(g.mixer_list) do
        for _, lr in ipairs(g.lr_list) do
          local key = ('%s/%dx%d/d%d/lr%g'):format(mixer, s.T, s.D, d, lr)
          rows[#rows + 1] = run:unit(key, function()
            local train, val, test = splits(s)
            local o = {arm = mixer, lr = lr, epochs = g.epochs, batch_size = batch_for(g, s.T),
                       weight_decay = cfg.weight_decay, threshold = cfg.threshold, eval_batch = cfg.eval_batch,
                       vocab = g.vocab, d_model = d, seq_len = s.T, dropout = g.dropout, emb_dropout = cfg.emb_dropout,
                       experts = cfg.experts, top_k = cfg.top_k, aux_weight = cfg.aux_weight,
                       generator = run:generator('init/' .. key), shuffle = run:generator('shuffle/' .. key)}
            local out = Q.train(o, train, val, test, function(epoch, acc, loss, secs)
              curves:row(mixer, s.T, s.D, d, lr, epoch, acc, loss, secs)
            end)
            local r = {mixer = mixer, seq_len = s.T, num_kv_pairs = s.D, d_model = d, lr = lr}
            for k, v in pairs(out) do r[k] = v end
            results:row(r)
            run:log('%-15s T=%-3d D=%-2d d=%-3d lr=%-7g epochs %2d  val %.3f  test %.3f  %.0f s', mixer, s.T, s.D, d, lr,
                    out.epochs_run, out.best_val_acc, out.test_acc, out.train_seconds)
            return r
          end)
          run:progress(#rows, total, key)
        end
      end
    end
  end
  return rows
end

-- The rows of a TSV file with a '# col ...' header, as tables keyed by column (numbers converted).
local function read_tsv(path)
  local f = io.open(path, 'r')
  if not f then return nil end
  local cols, rows = nil, {}
  for line in f:lines() do
    if line:match('^# ') and not cols then
      cols = {}
      for c in line:sub(3):gmatch('[^\t]+') do cols[#cols + 1] = c end
    elseif line ~= '' and cols then
      local r, i = {}, 0
      for c in (line .. '\t'):gmatch('([^\t]*)\t') do
        i = i + 1
        r[cols[i] or i] = tonumber(c) or c
      end
      rows[#rows + 1] = r
    end
  end
  f:close()
  return rows, cols
end

-- collect=GLOB: merge the results and curves of the run folders matching GLOB (the jobs of a
-- sweep) into this run instead of training; returns the result rows. Folders still running
-- contribute the runs they finished (their TSVs are replaced atomically) and are counted.
local function collect(glob, results, curves, run)
  local p = io.popen('ls -d ' .. glob .. ' 2>/dev/null')
  local dirs = {}
  for d in p:lines() do dirs[#dirs + 1] = d end
  p:close()
  local rows, used, unfinished = {}, 0, 0
  for _, d in ipairs(dirs) do
    local rs = read_tsv(d .. '/results.tsv')
    if rs then
      used = used + 1
      local f = io.open(d .. '/DONE', 'r')
      if f then f:close() else unfinished = unfinished + 1 end
      for _, r in ipairs(rs) do results:row(r) rows[#rows + 1] = r end
      for _, c in ipairs(read_tsv(d .. '/curves.tsv') or {}) do curves:row(c) end
    end
  end
  assert(#rows > 0, 'collect: no run folder with results under ' .. glob)
  run:log('collected %d results from %d run folders (%d unfinished; %d matched %s)', #rows, used, unfinished, #dirs, glob)
  run:metric('collected_unfinished', unfinished)
  return rows
end

-- best.tsv: per (setting, mixer) one gnuplot data set (two blank lines apart, in layout.gp's
-- order: settings by T then D, mixers in arm order), a row per d_model (ascending) with the lr
-- that reached the highest validation accuracy (NaN where the combination has no runs).
local function summarise(rows, cfg, run)
  local settings, mixers, ds, best = {}, {}, {}, {}
  local seen = {}
  for _, r in ipairs(rows) do
    local sk = r.seq_len .. 'x' .. r.num_kv_pairs
    if not seen[sk] then seen[sk] = true settings[#settings + 1] = {T = r.seq_len, D = r.num_kv_pairs, key = sk} end
    if not seen['m' .. r.mixer] then seen['m' .. r.mixer] = true mixers[#mixers + 1] = r.mixer end
    if not seen['d' .. r.d_model] then seen['d' .. r.d_model] = true ds[#ds + 1] = r.d_model end
    local k = ('%s/%s/%d'):format(r.mixer, sk, r.d_model)
    if not best[k] or r.best_val_acc > best[k].best_val_acc then best[k] = r end
  end
  table.sort(settings, function(a, b) return a.T < b.T or (a.T == b.T and a.D < b.D) end)
  local order = {}
  for i, a in ipairs(Q.ARMS) do order[a] = i end
  table.sort(mixers, function(a, b) return order[a] < order[b] end)
  table.sort(ds)
  local out = run:tsv('best', {'d_model', 'best_val_acc', 'test_acc', 'lr', 'train_seconds', 'epochs_run', 'params'})
  for si, s in ipairs(settings) do
    for mi, mixer in ipairs(mixers) do
      if si + mi > 2 then out:blank(2) end
      local any = false
      for _, d in ipairs(ds) do
        local r = best[('%s/%s/%d'):format(mixer, s.key, d)]
        if r then
          any = true
          out:row(d, r.best_val_acc, r.test_acc, r.lr, r.train_seconds, r.epochs_run, r.params)
          run:metric(('acc_%s_%s_d%d'):format(mixer, s.key, d), r.best_val_acc)
        end
      end
      if not any then out:row(ds[1], 0 / 0, 0 / 0, 0 / 0, 0 / 0, 0 / 0, 0 / 0) end
    end
  end
  local names, tidx = {}, #settings
  for i, s in ipairs(settings) do
    names[i] = s.key
    if s.key == cfg.time_setting then tidx = i end
  end
  assert(cfg.time_setting == '' or names[tidx] == cfg.time_setting,
         'time_setting ' .. cfg.time_setting .. ' is not one of the settings')
  gm.experiment.write_atomic(run.dir .. '/layout.gp', ('mixers = "%s"\nsettings = "%s"\ntime_setting = %d\n')
    :format(table.concat(mixers, ' '), table.concat(names, ' '), tidx))
end

return gm.experiment {
  name = 'associative_recall',
  description = 'MQAR accuracy vs d_model across sequence mixers (zoology Figure 2), max over learning rates',
  config = {seed = 1, preset = 'cpu', mixers = '', settings = '', d_models = '', lrs = '', vocab = 0, n_train = 0,
            n_val = 0, n_test = 0, epochs = 0, batch_size = 0, weight_decay = 0.1, threshold = 0.99, dropout = -1.0,
            emb_dropout = 0.1, experts = 8, top_k = 2, aux_weight = 0.01, eval_batch = 250, time_setting = '',
            collect = ''},
  quick = {mixers = 'attention+base_conv', settings = '64x4', d_models = '32+64', lrs = '3e-3', n_train = 2000,
           n_val = 300, n_test = 300, epochs = 3},
  choices = {preset = {'cpu', 'paper'}},
  doc = {preset = 'cpu: the committed CPU figure; paper: zoology\'s grid (V = 8192, 100k examples, d up to 512, ' ..
                  'T up to 512, 4 learning rates, 64 epochs, batch 512/256/128)',
         mixers = "'+'-separated arms: attention, gated_attention, base_conv, gla, gla_hybrid, moe ('' = preset)",
         settings = "'+'-separated TxD (sequence length x key-value pairs), e.g. 64x4+128x8 ('' = preset)",
         d_models = "'+'-separated model widths ('' = preset)",
         lrs = "'+'-separated peak learning rates; the figure takes the max over them ('' = preset)",
         vocab = 'vocabulary size V (keys 1 .. V/2-1, values V/2 .. V-1; 0 = preset)',
         n_train = 'training examples per setting (0 = preset)', n_val = 'validation examples (early stopping; 0 = preset)',
         n_test = 'held-out test examples, scored at the best validation epoch (0 = preset)',
         epochs = 'maximum epochs (cosine schedule length; 0 = preset)',
         batch_size = 'training batch (0 = preset; the paper preset uses zoology\'s 512/256/128 by T)',
         threshold = 'early stop once validation accuracy exceeds this',
         dropout = 'attention-probability dropout (zoology 0.1; < 0 = preset: cpu 0, so attention runs the fused ' ..
                   'sdpa, paper 0.1)', emb_dropout = 'embedding dropout (zoology 0.1)',
         experts = 'moe arm: experts', top_k = 'moe arm: experts per token',
         aux_weight = 'moe arm: weight of the load-balance loss',
         time_setting = "TxD of the accuracy-vs-training-time panel ('' = the last setting)",
         collect = 'a shell glob of run folders (a sweep\'s jobs) whose results are merged into this run\'s TSVs ' ..
                   'and figure instead of training (unfinished folders give the runs they finished)'},
  check = function(cfg)
    local g = grid(cfg)
    for _, m in ipairs(g.mixer_list) do assert(Q.KNOWN[m], 'unknown mixer ' .. m) end
    assert(#g.mixer_list > 0 and #g.setting_list > 0 and #g.d_list > 0 and #g.lr_list > 0, 'empty grid')
    for _, s in ipairs(g.setting_list) do
      assert(s.T % 2 == 0 and 4 * s.D <= s.T and g.vocab > s.T, ('setting %dx%d: needs T even, 4D <= T < V'):format(s.T, s.D))
    end
    for _, d in ipairs(g.d_list) do assert(d and d >= 4 and d % 4 == 0, 'd_models must be multiples of 4') end
    for _, lr in ipairs(g.lr_list) do assert(lr and lr > 0, 'lrs must be positive numbers') end
    assert(g.n_train >= 1 and g.n_val >= 1 and g.n_test >= 1 and g.epochs >= 1, 'bad data sizes or epochs')
  end,
  run = function(cfg, run)
    local results = run:tsv('results', RESULT_COLS)
    local curves = run:tsv('curves', CURVE_COLS)
    local rows = cfg.collect ~= '' and collect(cfg.collect, results, curves, run) or train_grid(cfg, run, results, curves)
    summarise(rows, cfg, run)
  end,
}
