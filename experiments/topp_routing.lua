-- topp_routing.lua: dynamic top-p routing (Huang, An et al. 2024; papers.md §11). A tiny MoE
-- language model (2 blocks of attention + an MoE of E = 8 experts, d = 64) is trained on a
-- generated character corpus that mixes easy copy segments and hard addition segments
-- (gm.data.copy_arithmetic_text). Arms: top-p (p = 0.4) with the dynamic (router entropy) loss,
-- top-p without it, and fixed top-2 and top-1, each with the Switch balance loss (alpha) and seeds.
-- Measured during training, on each training batch: active experts per token per layer and per
-- token group (copy or addition line; and, within them, the answer tokens: those whose next
-- character is the copied word or the sum); at evaluation points, the validation loss per group.
-- Writes results.tsv (one row per arm, seed, layer, group: final active experts and validation
-- loss), curves.tsv (per step), and the plot blocks steps.tsv, bars.tsv and val_bars.tsv for
-- plots/topp_routing.gp.
--   gmoe run experiments/topp_routing.lua [--quick] [beta=1e-4 p=0.4 seeds=3 steps=N ...]
local gm = require 'gmoe'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local L = dofile(here .. 'lib/tiny_lm.lua')

local ARM_ORDER = {'topp', 'topp_nodyn', 'top2', 'top1'}
local KINDS = {'copy', 'add', 'copy_answer', 'add_answer'}

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
  select = {'arms', 'seeds'},
  doc = {arms = "'+'-separated subset of topp, topp_nodyn, top2, top1",
         p = 'top-p threshold (the released config: 0.4)', beta = 'weight of the dynamic (entropy) loss',
         alpha = 'weight of the Switch balance loss (summed over layers)'},
  check = function(cfg)
    for _, a in ipairs(L.list(cfg.arms)) do gate_for(a, cfg) end
    assert(cfg.p > 0 and cfg.p <= 1, 'p must be in (0, 1]')
    assert(cfg.seeds >= 1 and cfg.steps >= 1 and cfg.log_every >= 1, 'seeds, steps, log_every >= 1')
  end,
  run = function(cfg, run)
    local C, val = L.copy_arithmetic_data(cfg, run)
    local B, T = cfg.batch, cfg.seq_len
    -- token groups as f64 masks [B*T] from a batch's kind (of the input) and answer (of the target)
    local function masks(kind, ans)
      local k, a = kind:reshape {-1}:to('f64'), ans:reshape {-1}:to('f64')
      return {1 - k, k, (1 - k) * a, k * a}
    end

    local res = run:tsv('results', {'arm', 'seed', 'layer', 'kind', 'active_final', 'active_start', 'val_loss',
                                    'steps', 'train_seconds'})
    local curves = run:tsv('curves', {'arm', 'seed', 'step', 'layer', 'active', 'active_copy', 'active_add',
                                      'active_copy_answer', 'active_add_answer', 'train_loss'})
    local vcurves = run:tsv('val_curves', {'arm', 'seed', 'step', 'val_loss', 'val_copy', 'val_add',
                                           'val_copy_answer', 'val_add_answer'})
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
          local batch_masks
          local function loss_of(m, x, y, k, a)
            batch_masks = masks(k, a)
            local loss = gm.cross_entropy(m(x), y)
            if m.aux_loss then loss = loss + m.aux_loss * cfg.alpha end
            for _, aux in ipairs(m.aux) do if aux.dynamic then loss = loss + aux.dynamic end end
            return loss
          end
          -- active experts per token, per layer: all tokens and each group (over the logging window)
          local acc = {}
          local function reset()
            for l = 1, #moes do
              acc[l] = {all = {0, 0}}
              for gi = 1, #KINDS do acc[l][gi] = {0, 0} end
            end
          end
          reset()
          local first, last_row, last_loss = nil, nil, 0
          local function record(step, lv)
            for l, moe in ipairs(moes) do
              local a = L.active(moe)
              local r = acc[l]
              r.all[1], r.all[2] = r.all[1] + a:sum():item(), r.all[2] + a.shape[1]
              for gi, m in ipairs(batch_masks) do
                r[gi][1], r[gi][2] = r[gi][1] + (a * m):sum():item(), r[gi][2] + m:sum():item()
              end
            end
            last_loss = lv
            if step % cfg.log_every == 0 then
              local row = {}
              for l, r in ipairs(acc) do
                row[l] = {r.all[1] / r.all[2]}
                for gi = 1, #KINDS do row[l][gi + 1] = r[gi][2] > 0 and r[gi][1] / r[gi][2] or 0 / 0 end
                local cells = {arm, seed, step, l - 1, table.unpack(row[l], 1, #KINDS + 1)}
                cells[#cells + 1] = last_loss
                curves:row(table.unpack(cells))
              end
              first = first or row
              reset()
              return row
            end
          end
          local function val_loss()
            return gm.no_grad(function()
              local tot = {0, 0}
              local per = {}
              for gi = 1, #KINDS do per[gi] = {0, 0} end
              for _, v in ipairs(val) do
                local ce = gm.cross_entropy(lm(v[1]), v[2], {reduction = 'none'}):reshape {-1}:to('f64')
                tot[1], tot[2] = tot[1] + ce:sum():item(), tot[2] + ce.shape[1]
                for gi, m in ipairs(masks(v[3], v[4])) do
                  per[gi][1], per[gi][2] = per[gi][1] + (ce * m):sum():item(), per[gi][2] + m:sum():item()
                end
              end
              local out = {tot[1] / tot[2]}
              for gi = 1, #KINDS do out[gi + 1] = per[gi][1] / math.max(1, per[gi][2]) end
              return out
            end)
          end
          local vl
          local out = L.train {
            model = lm, steps = cfg.steps, lr = cfg.lr, warmup = cfg.warmup, weight_decay = cfg.weight_decay,
            batch = function() return C:batch_kinds('train', B, T, bgen) end,
            loss = loss_of,
            on_step = function(step, lv) last_row = record(step, lv) or last_row end,
            eval_every = cfg.eval_every,
            eval = function(step)
              vl = val_loss()
              vcurves:row(arm, seed, step, table.unpack(vl, 1, #KINDS + 1))
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
          local function act(l, k)
            for _, r in ipairs(rows) do if r.layer == l and r.kind == k then return r.active end end
            return 0 / 0
          end
          run:log('%-10s seed=%d  val %.4f (copy %.4f, add %.4f)  active copy/add/copy ans/add ans: L0 %.2f/%.2f/%.2f/%.2f' ..
            '  L1 %.2f/%.2f/%.2f/%.2f  %.0f s%s', arm, seed, vl[1], vl[2], vl[3], act(0, 'copy'), act(0, 'add'),
            act(0, 'copy_answer'), act(0, 'add_answer'), act(1, 'copy'), act(1, 'add'), act(1, 'copy_answer'),
            act(1, 'add_answer'), out.seconds, out.diverged and '  DIVERGED' or '')
          local all = {}
          for l = 1, #moes do all[l] = last_row and last_row[l][1] or 0 / 0 end
          return {rows = rows, all = all, val = vl[1], diverged = out.diverged}
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
    for _, f in ipairs(curves:fields()) do
      if #f == 10 then
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
    -- metrics: final active experts (mean over layers, then seeds), overall and per group
    for _, arm in ipairs(arms) do
      local act, val, per = {}, {}, {}
      for seed = 1, cfg.seeds do
        local r = summary[('%s/seed=%d'):format(arm, seed)]
        act[#act + 1], val[#val + 1] = gm.stats.mean(r.all), r.val
        for _, row in ipairs(r.rows) do
          per[row.kind] = per[row.kind] or {}
          per[row.kind][seed] = (per[row.kind][seed] or 0) + row.active / cfg.layers
        end
      end
      run:metric(arm .. '_active', gm.stats.mean(act))
      for _, k in ipairs(KINDS) do run:metric(arm .. '_active_' .. k, gm.stats.mean(per[k])) end
      run:metric(arm .. '_val_loss', gm.stats.mean(val))
    end
    gm.experiment.write_atomic(run.dir .. '/layout.gp', ('layers = %d\np = %g\nbeta = %g\n'):format(cfg.layers,
      cfg.p, cfg.beta))
  end,
}
