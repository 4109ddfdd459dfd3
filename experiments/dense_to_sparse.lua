-- dense_to_sparse.lua: EvoMoE's dense-to-sparse gate (Nie et al. 2021; papers.md §10) against fixed
-- top-1 and top-2 routing, in the tiny MoE language model of topp_routing (2 blocks of attention +
-- an MoE of E = 8 experts, d = 64) on the generated copy / addition corpus. The DTS gate is a
-- Gumbel softmax whose temperature follows EvoMoE's geometric heat schedule from tau0 = 2.0 to
-- tau1 = 0.3 over the run; experts whose gate value exceeds 0.001 are active, so it starts dense
-- and ends near top-1. Arm dts_evo adds EvoMoE's expert-diversify stage: one expert trained alone
-- for `diversify_steps`, then copied into the E experts with a random mask of a `mask` fraction
-- of each copy's weights (zeroed), then DTS for the rest of the run (same total steps).
-- Measured: active experts per token (training batches) and validation loss against the step and
-- the training CPU time (run with one thread). Writes results.tsv (one row per arm and seed), curves.tsv (per logging
-- step) and steps.tsv (plot blocks: mean over seeds per arm) for plots/dense_to_sparse.gp.
--   gmoe run experiments/dense_to_sparse.lua [--quick] [tau0=2 tau1=0.3 seeds=3 steps=N ...]
local gm = require 'gmoe'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local L = dofile(here .. 'lib/tiny_lm.lua')

local ARM_ORDER = {'dts', 'dts_evo', 'top1', 'top2'}

local function gate_for(arm, cfg, steps)
  if arm == 'dts' or arm == 'dts_evo' then
    return gm.gates.DenseToSparse {schedule = gm.schedule.geometric(cfg.tau0, cfg.tau1, steps), threshold = cfg.threshold}
  end
  if arm == 'top1' then return gm.gates.TopK {k = 1} end
  if arm == 'top2' then return gm.gates.TopK {k = 2} end
  error('unknown arm ' .. tostring(arm))
end

return gm.experiment {
  name = 'dense_to_sparse',
  description = "EvoMoE's dense-to-sparse gate (annealed Gumbel softmax) vs fixed top-1 / top-2 routing",
  config = {seed = 1, arms = 'dts+dts_evo+top1+top2', tau0 = 2.0, tau1 = 0.3, threshold = 0.001, alpha = 1e-2,
            experts = 8, d_model = 64, d_ff = 128, heads = 4, layers = 2, corpus_chars = 1000000, digits = 3,
            seeds = 3, steps = 2000, diversify_steps = 300, mask = 0.5, warmup = 100, lr = 3e-3, batch = 16,
            seq_len = 128, weight_decay = 0.1, log_every = 20, eval_every = 100, eval_batches = 8},
  quick = {corpus_chars = 200000, seeds = 1, steps = 120, diversify_steps = 30, log_every = 10, eval_every = 30,
           eval_batches = 2, seq_len = 64},
  select = {'arms', 'seeds'},
  doc = {arms = "'+'-separated subset of dts, dts_evo, top1, top2",
         tau0 = 'initial Gumbel-softmax temperature', tau1 = 'final temperature (geometric schedule over the run)',
         threshold = 'gate value above which an expert is active', alpha = 'Switch balance loss weight',
         diversify_steps = 'dts_evo: steps of the single-expert stage (counted in `steps`)',
         mask = 'dts_evo: fraction of each expert copy\'s weights zeroed'},
  check = function(cfg)
    for _, a in ipairs(L.list(cfg.arms)) do gate_for(a, cfg, 10) end
    assert(cfg.tau0 > 0 and cfg.tau1 > 0, 'temperatures must be positive')
    assert(cfg.diversify_steps < cfg.steps, 'diversify_steps must be below steps')
    assert(cfg.mask >= 0 and cfg.mask < 1, 'mask must be in [0, 1)')
  end,
  run = function(cfg, run)
    local C, val = L.copy_arithmetic_data(cfg, run)
    local B, T = cfg.batch, cfg.seq_len

    local res = run:tsv('results', {'arm', 'seed', 'val_loss', 'active_start', 'active_final', 'steps_to_target',
                                    'cpu_seconds_to_target', 'target', 'train_seconds', 'cpu_seconds'})
    local curves = run:tsv('curves', {'arm', 'seed', 'step', 'seconds', 'cpu_seconds', 'active', 'temperature',
                                      'train_loss', 'val_loss'})
    local function build(arm, experts, steps, g)
      local gate = experts == 1 and gm.gates.TopK {k = 1} or gate_for(arm, cfg, steps)
      return gm.nn.LM {vocab = C.vocab_size, d_model = cfg.d_model, layers = cfg.layers, heads = cfg.heads,
                       mixer = 'attention', positions = 'rotary', max_len = T, state_mixer = 'moe', d_ff = cfg.d_ff,
                       moe = {experts = experts, gate = gate}, generator = g}
    end
    local function val_loss(lm) return L.val_loss(lm, val) end
    local function loss_fn(m, x, y)
      local loss = gm.cross_entropy(m(x), y)
      if m.aux_loss then loss = loss + m.aux_loss * cfg.alpha end
      return loss
    end

    local arms = L.list(cfg.arms)
    local total, done = #arms * cfg.seeds, 0
    local out = {}
    for _, arm in ipairs(arms) do
      for seed = 1, cfg.seeds do
        local key = ('%s/seed=%d'):format(arm, seed)
        out[key] = run:unit(key, function()
          local g = gm.Generator(run:seed('init/' .. seed))
          local bgen = gm.Generator(run:seed('batches/' .. seed))
          local offset, secs0, cpu0 = 0, 0.0, 0.0
          local lm
          local acc_n, acc_s, last_loss = 0, 0, 0
          local first_active
          local log = {}
          local function on_step(moes, lv)
            for _, moe in ipairs(moes) do
              local a = L.active(moe)
              acc_s, acc_n = acc_s + a:sum():item(), acc_n + a.shape[1]
            end
            last_loss = lv
          end
          local function train(nsteps)
            local moes = L.moe_layers(lm)
            local vl
            local r = L.train {
              model = lm, steps = nsteps, lr = cfg.lr, warmup = offset == 0 and cfg.warmup or 0,
              weight_decay = cfg.weight_decay,
              batch = function(step)
                for _, moe in ipairs(moes) do moe.gate.step_count = step - 1 end
                local x, y = C:batch_kinds('train', B, T, bgen)
                return x, y
              end,
              loss = loss_fn,
              on_step = function(step, lv, secs, cpu)
                on_step(moes, lv)
                local s = step + offset
                if s % cfg.log_every == 0 then
                  local a = acc_s / acc_n
                  first_active = first_active or a
                  local gate = moes[1].gate
                  local tau = type(gate.temperature) == 'function' and gate:temperature(step - 1)
                    or 0 / 0
                  log[#log + 1] = {step = s, seconds = secs0 + secs, cpu = cpu0 + cpu, active = a, tau = tau,
                                   loss = last_loss}
                  acc_s, acc_n = 0, 0
                end
              end,
              eval_every = cfg.eval_every,
              eval = function(step, secs, cpu)
                vl = val_loss(lm)
                log[#log + 1] = {step = step + offset, seconds = secs0 + secs, cpu = cpu0 + cpu, val = vl}
              end,
            }
            return r, vl
          end
          local r, vl
          if arm == 'dts_evo' then
            -- stage 1: one expert; stage 2: E masked copies of it under the DTS gate
            lm = build(arm, 1, cfg.diversify_steps, g)
            r, vl = train(cfg.diversify_steps)
            local one = lm
            lm = build(arm, cfg.experts, cfg.steps - cfg.diversify_steps, g)
            local src = {}
            for _, e in ipairs(one:named_parameters()) do src[e[1]] = e[2] end
            gm.no_grad(function()
              for _, e in ipairs(lm:named_parameters()) do
                local name, p = e[1], e[2]
                local s = src[name]
                if s and not name:match('gate%.router') then
                  if table.concat(s.shape, 'x') == table.concat(p.shape, 'x') then
                    p:copy_(s)
                  else -- an expert tensor [1, ...] -> [E, ...], each copy masked
                    local full = s:expand(p.shape)
                    local keep = gm.rand(p.shape, {generator = g}):ge(cfg.mask):to(p.dtype)
                    p:copy_(full * keep / (1 - cfg.mask))
                  end
                end
              end
            end)
            offset, secs0, cpu0 = cfg.diversify_steps, r.seconds, r.cpu
            r, vl = train(cfg.steps - cfg.diversify_steps)
          else
            lm = build(arm, cfg.experts, cfg.steps, g)
            r, vl = train(cfg.steps)
          end
          -- curves: log rows, val rows merged in step order
          local rows = {}
          local vmap = {}
          for _, e in ipairs(log) do if e.val then vmap[e.step] = e end end
          for _, e in ipairs(log) do
            if e.active then rows[#rows + 1] = e end
          end
          for _, e in ipairs(log) do if e.val and e.step == 0 then rows[#rows + 1] = e end end
          table.sort(rows, function(a, b) return a.step < b.step end)
          for _, e in ipairs(rows) do
            local v = vmap[e.step]
            curves:row(arm, seed, e.step, e.seconds, e.cpu, e.active or 0 / 0, e.tau or 0 / 0, e.loss or 0 / 0,
              v and v.val or 0 / 0)
          end
          curves:blank()
          local vals = {}
          for _, e in ipairs(log) do if e.val then vals[#vals + 1] = {e.step, e.cpu, e.val} end end
          local final_active = 0 / 0
          for i = #log, 1, -1 do if log[i].active then final_active = log[i].active break end end
          run:log('%-8s seed=%d  val %.4f  active %.2f -> %.2f  %.0f s', arm, seed, vl, first_active or 0,
            final_active, secs0 + r.seconds)
          return {val = vl, vals = vals, first = first_active, final = final_active, seconds = secs0 + r.seconds,
                  cpu = cpu0 + r.cpu}
        end)
        done = done + 1
        run:progress(done, total, key)
      end
    end
    -- time and steps to a target: the top-1 arm's final validation loss (mean over seeds); no
    -- target when top-1 did not run
    local target
    local t1 = {}
    for seed = 1, cfg.seeds do
      local o = out[('top1/seed=%d'):format(seed)]
      if o then t1[#t1 + 1] = o.val end
    end
    target = #t1 > 0 and gm.stats.mean(t1) or nil
    local steps = run:tsv('steps', {'step', 'cpu_seconds', 'active', 'val_loss', 'val_se'})
    for _, arm in ipairs(ARM_ORDER) do
      local any = false
      for seed = 1, cfg.seeds do
        local o = out[('%s/seed=%d'):format(arm, seed)]
        if o then
          any = true
          local st, ss = 0 / 0, 0 / 0
          for _, v in ipairs(o.vals) do
            if target and v[3] <= target then st, ss = v[1], v[2] break end
          end
          res:row(arm, seed, o.val, o.first, o.final, st, ss, target or 0 / 0, o.seconds, o.cpu)
        end
      end
      if any then
        -- per logged step: mean over seeds (curves rows of this arm)
        local by = {}
        for _, f in ipairs(curves:fields()) do
          if f[1] == arm then
            local s = tonumber(f[3])
            by[s] = by[s] or {sec = {}, act = {}, val = {}}
            local e = by[s]
            e.sec[#e.sec + 1] = tonumber(f[5])
            if tonumber(f[6]) == tonumber(f[6]) then e.act[#e.act + 1] = tonumber(f[6]) end
            if tonumber(f[9]) == tonumber(f[9]) then e.val[#e.val + 1] = tonumber(f[9]) end
          end
        end
        local ks = {}
        for s in pairs(by) do ks[#ks + 1] = s end
        table.sort(ks)
        for _, s in ipairs(ks) do
          local e = by[s]
          steps:row(s, gm.stats.mean(e.sec), #e.act > 0 and gm.stats.mean(e.act) or 0 / 0,
            #e.val > 0 and gm.stats.mean(e.val) or 0 / 0, #e.val > 1 and gm.stats.stderr(e.val) or 0 / 0)
        end
      else
        steps:row(0 / 0, 0 / 0, 0 / 0, 0 / 0, 0 / 0)
      end
      steps:blank(2)
    end
    for _, arm in ipairs(arms) do
      local v, a = {}, {}
      for seed = 1, cfg.seeds do
        local o = out[('%s/seed=%d'):format(arm, seed)]
        v[#v + 1], a[#a + 1] = o.val, o.final
      end
      run:metric(arm .. '_val_loss', gm.stats.mean(v))
      run:metric(arm .. '_active_final', gm.stats.mean(a))
    end
    gm.experiment.write_atomic(run.dir .. '/layout.gp', ('tau0 = %g\ntau1 = %g\ntarget = %s\n'):format(cfg.tau0,
      cfg.tau1, target and ('%.6g'):format(target) or 'NaN'))
  end,
}
