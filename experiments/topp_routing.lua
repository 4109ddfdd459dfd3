-- topp_routing.lua: dynamic top-p routing (Huang, An et al. 2024; papers.md §11). A tiny MoE
-- language model (2 blocks of attention + an MoE of E = 8 experts, d = 64) is trained on a
-- generated character corpus that mixes easy copy segments and hard addition segments
-- (gm.data.copy_arithmetic_text). Arms: top-p (p = 0.4) with the dynamic (router entropy) loss,
-- top-p without it, and fixed top-2 and top-1, each with the Switch balance loss (alpha) and seeds.
-- Measured during training, on each training batch: active experts per token per layer and per
-- segment kind; at evaluation points, the validation loss per kind. Writes results.tsv (one row
-- per arm, seed, layer, kind: final active experts and validation loss), curves.tsv (per step),
-- and the plot blocks steps.tsv and bars.tsv for plots/topp_routing.gp.
--   gmoe run experiments/topp_routing.lua [--quick] [beta=1e-4 p=0.4 seeds=3 steps=N ...]
local gm = require 'gmoe'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local L = dofile(here .. 'lib/tiny_lm.lua')

local ARM_ORDER = {'topp', 'topp_nodyn', 'top2', 'top1'}
local KINDS = {'copy', 'add'}

local function gate_for(arm, cfg)
  if arm == 'topp' then return gm.gates.TopP {p = cfg.p, dynamic_loss = cfg.beta} end
  if arm == 'topp_nodyn' then return gm.gates.TopP {p = cfg.p, dynamic_loss = 0} end
  if arm == 'top2' then return gm.gates.TopK {k = 2} end
  if arm == 'top1' then return gm.gates.TopK {k = 1} end
  error('unknown arm ' .. tostring(arm))
end

return gm.experiment {
  name = 'topp_routing',
  description = 'top-p dynamic routing vs top-2 / top-1 on easy (copy) and hard (addition) text',
  config = {seed = 1, arms = 'topp+topp_nodyn+top2+top1', p = 0.4, beta = 1e-4, alpha = 1e-2, experts = 8,
            d_model = 64, d_ff = 128, heads = 4, layers = 2, corpus_chars = 1000000, hard_fraction = 0.5,
            digits = 3, seeds = 3, steps = 2000, warmup = 100, lr = 3e-3, batch = 16, seq_len = 128,
            weight_decay = 0.1, log_every = 20, eval_every = 200, eval_batches = 8},
  quick = {corpus_chars = 200000, seeds = 1, steps = 120, log_every = 10, eval_every = 60, eval_batches = 2,
           seq_len = 64},
  doc = {arms = "'+'-separated subset of topp, topp_nodyn, top2, top1",
         p = 'top-p threshold (the released config: 0.4)', beta = 'weight of the dynamic (entropy) loss',
         alpha = 'weight of the Switch balance loss (summed over layers)'},
  check = function(cfg)
    for _, a in ipairs(L.list(cfg.arms)) do gate_for(a, cfg) end
    assert(cfg.p > 0 and cfg.p <= 1, 'p must be in (0, 1]')
    assert(cfg.seeds >= 1 and cfg.steps >= 1 and cfg.log_every >= 1, 'seeds, steps, log_every >= 1')
  end,
  run = function(cfg, run)
    local text, kinds = gm.data.copy_arithmetic_text {chars = cfg.corpus_chars, hard_fraction = cfg.hard_fraction,
                                                      digits = cfg.digits, seed = run:seed('corpus')}
    local C = L.kinds_corpus(text, kinds)
    run:log('corpus: %s', tostring(C))
    local B, T = cfg.batch, cfg.seq_len
    local vgen = gm.Generator(run:seed('val'))
    local val = {}
    for i = 1, cfg.eval_batches do val[i] = {C:batch_kinds('val', B, T, vgen)} end

    local res = run:tsv('results', {'arm', 'seed', 'layer', 'kind', 'active_final', 'active_start', 'val_loss',
                                    'steps', 'train_seconds'})
    local curves = run:tsv('curves', {'arm', 'seed', 'step', 'layer', 'active', 'active_copy', 'active_add',
                                      'train_loss'})
    local vcurves = run:tsv('val_curves', {'arm', 'seed', 'step', 'val_loss', 'val_copy', 'val_add'})
    local arms = L.list(cfg.arms)
    local total, done = #arms * cfg.seeds, 0
    local summary = {}
    for _, arm in ipairs(arms) do
      for seed = 1, cfg.seeds do
        local key = ('%s/seed=%d'):format(arm, seed)
        summary[key] = run:unit(key, function()
          local g = gm.Generator(run:seed('init/' .. seed))
          local lm = gm.nn.LM {vocab = C.vocab_size, d_model = cfg.d_model, layers = cfg.layers, heads = cfg.heads,
                               mixer = 'attention', positions = 'rotary', max_len = T, state_mixer = 'moe',
                               d_ff = cfg.d_ff, moe = {experts = cfg.experts, gate = gate_for(arm, cfg)}, generator = g}
          local moes = L.moe_layers(lm)
          local bgen = gm.Generator(run:seed('batches/' .. seed))
          local kind_b
          local function loss_of(m, x, y, k)
            kind_b = k
            local ce = gm.cross_entropy(m(x), y)
            local loss = ce
            if m.aux_loss then loss = loss + m.aux_loss * cfg.alpha end
            for _, a in ipairs(m.aux) do if a.dynamic then loss = loss + a.dynamic end end
            return loss, ce
          end
          -- active experts per token, per layer: overall and per kind (over the logging window)
          local acc = {}
          local function reset() for l = 1, #moes do acc[l] = {n = 0, all = 0, {0, 0}, {0, 0}} end end
          reset()
          local first = nil
          local last_loss = 0
          local function record(step, lv)
            local kf = kind_b:reshape {-1}:to('f64')
            for l, moe in ipairs(moes) do
              local a = L.active(moe)
              local s = a:sum():item()
              local s_add = (a * kf):sum():item()
              local n_add = kf:sum():item()
              local n = a.shape[1]
              local r = acc[l]
              r.n, r.all = r.n + n, r.all + s
              r[1][1], r[1][2] = r[1][1] + (s - s_add), r[1][2] + (n - n_add)
              r[2][1], r[2][2] = r[2][1] + s_add, r[2][2] + n_add
            end
            last_loss = lv
            if step % cfg.log_every == 0 then
              local row = {}
              for l, r in ipairs(acc) do
                row[l] = {r.all / r.n, r[1][1] / math.max(1, r[1][2]), r[2][1] / math.max(1, r[2][2])}
                curves:row(arm, seed, step, l - 1, row[l][1], row[l][2], row[l][3], last_loss)
              end
              first = first or row
              reset()
              return row
            end
          end
          local last_row
          local function val_loss()
            return gm.no_grad(function()
              local tot, per = {0, 0}, {{0, 0}, {0, 0}}
              for _, v in ipairs(val) do
                local ce = gm.cross_entropy(lm(v[1]), v[2], {reduction = 'none'}):reshape {-1}:to('f64')
                local kf = v[3]:reshape {-1}:to('f64')
                local s, sa, na = ce:sum():item(), (ce * kf):sum():item(), kf:sum():item()
                tot[1], tot[2] = tot[1] + s, tot[2] + ce.shape[1]
                per[1][1], per[1][2] = per[1][1] + s - sa, per[1][2] + ce.shape[1] - na
                per[2][1], per[2][2] = per[2][1] + sa, per[2][2] + na
              end
              return tot[1] / tot[2], per[1][1] / per[1][2], per[2][1] / per[2][2]
            end)
          end
          local vl
          local out = L.train {
            model = lm, steps = cfg.steps, lr = cfg.lr, warmup = cfg.warmup, weight_decay = cfg.weight_decay,
            batch = function() return C:batch_kinds('train', B, T, bgen) end,
            loss = function(m, x, y, k) return (loss_of(m, x, y, k)) end,
            on_step = function(step, lv) last_row = record(step, lv) or last_row end,
            eval_every = cfg.eval_every,
            eval = function(step)
              local all, c, a = val_loss()
              vl = {all, c, a}
              vcurves:row(arm, seed, step, all, c, a)
            end,
          }
          curves:blank(); vcurves:blank()
          local rows = {}
          for l = 1, #moes do
            for kidx, kname in ipairs(KINDS) do
              local fin = last_row and last_row[l][kidx + 1] or 0 / 0
              local st = first and first[l][kidx + 1] or 0 / 0
              res:row(arm, seed, l - 1, kname, fin, st, vl[kidx + 1], out.steps, out.seconds)
              rows[#rows + 1] = {layer = l - 1, kind = kname, active = fin, start = st, val = vl[kidx + 1]}
            end
          end
          run:log('%-10s seed=%d  val %.4f (copy %.4f, add %.4f)  active L0 %.2f/%.2f  L1 %.2f/%.2f  %.0f s%s', arm,
            seed, vl[1], vl[2], vl[3], rows[1].active, rows[2].active, rows[3] and rows[3].active or 0,
            rows[4] and rows[4].active or 0, out.seconds, out.diverged and '  DIVERGED' or '')
          return {rows = rows, val = vl[1], diverged = out.diverged}
        end)
        done = done + 1
        run:progress(done, total, key)
      end
    end
    -- plot blocks. steps.tsv: per arm, mean over seeds and layers of active experts per step (copy,
    -- add, all) with the standard error over seeds; bars.tsv: final active experts per layer and kind.
    local steps = run:tsv('steps', {'step', 'active', 'se', 'active_copy', 'active_add', 'active_l0', 'active_l1'})
    local bars = run:tsv('bars', {'x', 'active', 'se', 'layer', 'kind'})
    local vbars = run:tsv('val_bars', {'x', 'val_loss', 'se', 'kind'})
    local per = {}
    for _, line in ipairs(curves.rows) do
      local f = {}
      for w in (line .. '\t'):gmatch('([^\t]*)\t') do f[#f + 1] = w end
      if #f == 8 then
        local arm, seed, step, layer = f[1], tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
        per[arm] = per[arm] or {}
        per[arm][step] = per[arm][step] or {seeds = {}, copy = {}, add = {}, layers = {}}
        local e = per[arm][step]
        e.seeds[seed] = (e.seeds[seed] or 0) + tonumber(f[5]) / cfg.layers
        e.copy[#e.copy + 1], e.add[#e.add + 1] = tonumber(f[6]), tonumber(f[7])
        e.layers[layer] = e.layers[layer] or {}
        table.insert(e.layers[layer], tonumber(f[5]))
      end
    end
    for ai, arm in ipairs(ARM_ORDER) do
      local ks = {}
      for s in pairs(per[arm] or {}) do ks[#ks + 1] = s end
      table.sort(ks)
      for _, s in ipairs(ks) do
        local e = per[arm][s]
        local vals = {}
        for _, v in pairs(e.seeds) do vals[#vals + 1] = v end
        steps:row(s, gm.stats.mean(vals), #vals > 1 and gm.stats.stderr(vals) or 0, gm.stats.mean(e.copy),
          gm.stats.mean(e.add), gm.stats.mean(e.layers[0] or {0 / 0}), gm.stats.mean(e.layers[1] or {0 / 0}))
      end
      if #ks == 0 then steps:row(0 / 0, 0 / 0, 0 / 0, 0 / 0, 0 / 0, 0 / 0, 0 / 0) end
      steps:blank(2)
      local any = false
      for l = 0, cfg.layers - 1 do
        for kidx, kname in ipairs(KINDS) do
          local vals = {}
          for seed = 1, cfg.seeds do
            local r = summary[('%s/seed=%d'):format(arm, seed)]
            for _, row in ipairs(r and r.rows or {}) do
              if row.layer == l and row.kind == kname then vals[#vals + 1] = row.active end
            end
          end
          if #vals > 0 then
            any = true
            bars:row(l * (#KINDS + 1) + kidx - 1 + (ai - 2.5) * 0.2, gm.stats.mean(vals),
              #vals > 1 and gm.stats.stderr(vals) or 0, l, kname)
          end
        end
      end
      if not any then bars:row(0 / 0, 0 / 0, 0 / 0, 0, 'none') end
      bars:blank(2)
      any = false
      for kidx, kname in ipairs(KINDS) do
        local vals = {}
        for seed = 1, cfg.seeds do
          local r = summary[('%s/seed=%d'):format(arm, seed)]
          for _, row in ipairs(r and r.rows or {}) do
            if row.layer == 0 and row.kind == kname then vals[#vals + 1] = row.val end
          end
        end
        if #vals > 0 then
          any = true
          vbars:row(kidx - 1 + (ai - 2.5) * 0.2, gm.stats.mean(vals), #vals > 1 and gm.stats.stderr(vals) or 0, kname)
        end
      end
      if not any then vbars:row(0 / 0, 0 / 0, 0 / 0, 'none') end
      vbars:blank(2)
    end
    for _, arm in ipairs(arms) do
      local act, copy, add, val = {}, {}, {}, {}
      for seed = 1, cfg.seeds do
        local r = summary[('%s/seed=%d'):format(arm, seed)]
        local a, c, d = 0, 0, 0
        for _, row in ipairs(r.rows) do
          a = a + row.active / (#r.rows)
          if row.kind == 'copy' then c = c + row.active / cfg.layers else d = d + row.active / cfg.layers end
        end
        act[#act + 1], copy[#copy + 1], add[#add + 1], val[#val + 1] = a, c, d, r.val
      end
      run:metric(arm .. '_active', gm.stats.mean(act))
      run:metric(arm .. '_active_copy', gm.stats.mean(copy))
      run:metric(arm .. '_active_add', gm.stats.mean(add))
      run:metric(arm .. '_val_loss', gm.stats.mean(val))
    end
    gm.experiment.write_atomic(run.dir .. '/layout.gp', ('layers = %d\np = %g\nbeta = %g\n'):format(cfg.layers,
      cfg.p, cfg.beta))
  end,
}
