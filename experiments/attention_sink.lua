-- attention_sink.lua: the attention sink under gated attention (Qiu et al. 2025; papers.md §9.3 b
-- and c). Arms: plain softmax attention ("baseline") and the query-dependent sigmoid output gate
-- after SDPA, one score per head ("headwise") or per channel ("elementwise"). Two studies:
-- * grammar: a small character-level LM (2 layers, 4 heads, d = 64, T = 128, rotary positions, an
--   MLP after each mixer) on text the user points to (corpus=path) or, by default, on
--   gm.data.grammar_text, each window starting with a content-free BOS symbol; a learning-rate
--   sweep with seeds (the stability claim: a run diverges when its loss turns non-finite or ends
--   above its start, and is unstable when its smoothed training loss rose more than 0.5 nats above
--   its running minimum);
-- * bigram_backcopy: the smallest setting known to grow a sink (Guo et al. 2024): one layer, one
--   head, on gm.data.bigram_backcopy, where the head is needed only after trigger tokens and is
--   dormant elsewhere (bb_steps = 0 leaves it out).
-- After training, on fixed validation windows, per layer and head: the mean attention mass on key 0
-- (gm.nn.attention_sink; `uniform` is the same for uniform causal attention) and the mean gate
-- score, a histogram of gate scores, the validation loss; the sink mass is also tracked during
-- training. Writes results.tsv (one row per study, arm, lr, seed, layer, head), curves.tsv,
-- gate_hist.tsv, and the plot blocks sink.tsv, bb.tsv, hist.tsv, lr.tsv for
-- plots/attention_sink.gp.
--   gmoe run experiments/attention_sink.lua [--quick] [corpus=path lrs=1e-3+3e-3 seeds=3 steps=N ...]
local gm = require 'gmoe'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local L = dofile(here .. 'lib/tiny_lm.lua')

local ARMS = {
  baseline = 'attention',
  headwise = {'gated_attention', gate = 'headwise'},
  elementwise = {'gated_attention', gate = 'elementwise'},
}
local ARM_ORDER = {'baseline', 'headwise', 'elementwise'}
local BINS = 20
local split = L.list

-- Train one model; returns what the unit keeps (heads, gate histogram, losses) and writes rows.
local function train_one(o)
  local lm = gm.nn.LM {vocab = o.vocab, d_model = o.d_model, layers = o.layers, heads = o.heads,
                       mixer = ARMS[o.arm], state_mixer = 'mlp', positions = o.positions, max_len = o.T,
                       generator = o.init}
  local function val_loss() return L.val_loss(lm, o.val) end
  -- attention mass on key 0 and gate scores over the probe windows, per layer and head
  local function probe(all)
    return gm.no_grad(function()
      local mixers = {}
      for l, b in ipairs(lm.blocks:children()) do mixers[l] = b.mixer; b.mixer.keep_probs = true end
      local mass, gate, counts, ngate = {}, {}, {}, 0
      for i = 1, BINS do counts[i] = 0 end
      for pi, x in ipairs(o.probe) do
        if all or pi == 1 then
          lm(x)
          for l, m in ipairs(mixers) do
            local mh = gm.nn.attention_sink(m.last_probs)
            mass[l] = mass[l] and mass[l] + mh or mh
            if m.last_gate then
              local gt = m.last_gate:to('f64')
              local gh = gt:mean {dims = {0, 1, 3}}
              gate[l] = gate[l] and gate[l] + gh or gh
              local idx = gm.clamp((gt * BINS):reshape {-1}, {min = 0, max = BINS - 1e-9}):to('i32')
              local c = gm.one_hot(idx, BINS, 'f64'):sum(0):totable()
              for i = 1, BINS do counts[i] = counts[i] + c[i] end
              ngate = ngate + gt:numel()
            end
            m.last_probs, m.last_gate = nil, nil
          end
        end
      end
      local n = all and #o.probe or 1
      local _, uniform = gm.nn.attention_sink(gm.zeros {1, 1, o.T, o.T})
      local heads = {}
      for l, m in ipairs(mixers) do
        m.keep_probs = false
        local ms = (mass[l] / n):totable()
        local gs = gate[l] and (gate[l] / n):totable() or {}
        for h = 1, #ms do heads[#heads + 1] = {layer = l - 1, head = h - 1, sink = ms[h], uniform = uniform, gate = gs[h]} end
      end
      return heads, ngate > 0 and counts or nil, ngate
    end)
  end
  local function mean_sink(heads)
    local s = 0
    for _, h in ipairs(heads) do s = s + h.sink end
    return s / #heads
  end
  local ema, ema_min, max_rise, last_train, v0, vl = nil, math.huge, 0, nil, nil, nil
  local out = L.train {
    model = lm, steps = o.steps, lr = o.lr, warmup = o.warmup, weight_decay = o.weight_decay,
    batch = function() return o.batch('train', o.bgen) end,
    loss = function(m, x, y) return gm.cross_entropy(m(x), y) end,
    on_step = function(_, l)
      ema = ema and 0.9 * ema + 0.1 * l or l
      if ema < ema_min then ema_min = ema end
      if ema - ema_min > max_rise then max_rise = ema - ema_min end
      last_train = ema
    end,
    eval_every = o.eval_every,
    eval = function(step)
      vl = val_loss()
      if step == 0 then v0 = vl end
      o.curves:row(o.study, o.arm, o.lr, o.seed, step, last_train or vl, vl, mean_sink((probe(false))))
    end,
  }
  o.curves:blank()
  local diverged = out.diverged or not L.finite(vl) or vl >= v0
  local heads, counts, ngate = probe(true)
  for _, h in ipairs(heads) do
    o.res:row(o.study, o.arm, o.lr, o.seed, h.layer, h.head, h.sink, h.uniform, h.gate or 'NaN', vl, v0,
      diverged and 1 or 0, max_rise, out.steps, out.seconds)
  end
  if ngate > 0 then
    for i = 1, BINS do o.hist:row(o.study, o.arm, o.lr, o.seed, (i - 1) / BINS, i / BINS, counts[i] / ngate) end
  end
  return {heads = heads, hist = counts, ngate = ngate, val = vl, diverged = diverged, rise = max_rise,
          seconds = out.seconds}
end

return gm.experiment {
  name = 'attention_sink',
  description = 'attention sink and stability: softmax attention vs headwise / elementwise gated attention',
  config = {seed = 1, corpus = '', corpus_chars = 1000000, arms = 'baseline+headwise+elementwise',
            lrs = '1e-3+3e-3+1e-2', base_lr = 1e-3, seeds = 3, steps = 1000, warmup = 100, batch = 16,
            seq_len = 128, d_model = 64, heads = 4, layers = 2, positions = 'rotary', bos = true,
            weight_decay = 0.1, eval_every = 100, eval_batches = 8, probe_batches = 4,
            bb_steps = 3000, bb_lr = 1e-2, bb_layers = 1, bb_heads = 1, bb_seq_len = 64, bb_sequences = 20000,
            bb_vocab = 64, bb_eval_every = 250},
  quick = {corpus_chars = 200000, lrs = '1e-3', seeds = 1, steps = 150, eval_every = 50, eval_batches = 2,
           probe_batches = 1, seq_len = 64, bb_steps = 150, bb_sequences = 2000, bb_eval_every = 50},
  choices = {positions = {'rotary', 'learned'}},
  select = {'arms', 'lrs', 'seeds'},
  doc = {corpus = 'grammar study: a text file to train on (UTF-8 or bytes); empty: gm.data.grammar_text',
         arms = "'+'-separated subset of baseline, headwise, elementwise",
         lrs = "grammar study: '+'-separated peak learning rates (AdamW, warm-up then cosine to 0)",
         base_lr = 'grammar study: the learning rate whose runs give the per-head and histogram panels',
         bos = 'grammar study: start every window with a beginning-of-sequence symbol (key 0 content-free)',
         positions = 'rotary (RoPE on q and k, as Qwen3) or learned (absolute, as GPT-2 and zoology)',
         bb_steps = 'bigram-backcopy study: training steps (0 leaves the study out)',
         bb_lr = 'bigram-backcopy study: peak learning rate', bb_layers = 'bigram-backcopy study: layers',
         bb_heads = 'bigram-backcopy study: heads', bb_seq_len = 'bigram-backcopy study: tokens per window',
         bb_sequences = 'bigram-backcopy study: sequences generated', bb_vocab = 'bigram-backcopy study: vocabulary'},
  check = function(cfg)
    for _, a in ipairs(split(cfg.arms)) do assert(ARMS[a], 'unknown arm ' .. a) end
    for _, lr in ipairs(split(cfg.lrs)) do assert(tonumber(lr) and tonumber(lr) > 0, 'bad learning rate ' .. lr) end
    assert(cfg.seeds >= 1 and cfg.steps >= 1 and cfg.bb_steps >= 0, 'seeds, steps >= 1, bb_steps >= 0')
    assert(cfg.d_model % cfg.heads == 0 and cfg.d_model % cfg.bb_heads == 0, 'heads must divide d_model')
  end,
  run = function(cfg, run)
    local B = cfg.batch
    local arms, lrs = split(cfg.arms), split(cfg.lrs)
    local res = run:tsv('results', {'study', 'arm', 'lr', 'seed', 'layer', 'head', 'sink_mass', 'uniform',
                                    'gate_mean', 'val_loss', 'val_loss0', 'diverged', 'max_rise', 'steps',
                                    'train_seconds'})
    local curves = run:tsv('curves', {'study', 'arm', 'lr', 'seed', 'step', 'train_loss', 'val_loss', 'sink_mass'})
    local hist = run:tsv('gate_hist', {'study', 'arm', 'lr', 'seed', 'bin_lo', 'bin_hi', 'fraction'})

    -- grammar study data: windows of T characters; with bos, BOS then T - 1 characters
    local T = cfg.seq_len
    local C
    if cfg.corpus ~= '' then
      C = gm.data.CharCorpus(cfg.corpus)
    else
      C = gm.data.CharCorpus_from_string(gm.data.grammar_text {chars = cfg.corpus_chars, seed = run:seed('corpus')})
    end
    run:log('grammar study: %s', tostring(C))
    local function gbatch(which, gen)
      if not cfg.bos then return C:batch(which, B, T, {generator = gen}) end
      local x, y = C:batch(which, B, T - 1, {generator = gen})
      local bos = gm.full({B, 1}, C.vocab_size, {dtype = 'i32'})
      return gm.cat({bos, x}, 1), gm.cat({x:narrow(1, 0, 1), y}, 1)
    end
    -- bigram-backcopy study data: sequences of bb_seq_len + 1 tokens, BOS first; the last tenth
    -- of the rows for validation
    local bT, bbatch = cfg.bb_seq_len, nil
    if cfg.bb_steps > 0 then
      local ids = gm.data.bigram_backcopy {n = cfg.bb_sequences, seq_len = bT + 1, vocab = cfg.bb_vocab,
                                           seed = run:seed('bb_corpus')}
      local nv = math.max(1, cfg.bb_sequences // 10)
      local parts = {train = ids:narrow(0, 0, cfg.bb_sequences - nv), val = ids:narrow(0, cfg.bb_sequences - nv, nv)}
      bbatch = function(which, gen)
        local src = parts[which]
        local rows = src:index_select(0, gm.randint(0, src.shape[1], {B}, {generator = gen}))
        return rows:narrow(1, 0, bT), rows:narrow(1, 1, bT)
      end
      run:log('bigram-backcopy study: %d sequences of %d tokens, vocab %d + BOS', cfg.bb_sequences, bT + 1, cfg.bb_vocab)
    end
    -- the same validation and probe windows for every arm, lr and seed of a study
    local function fixed(batch, gen)
      local val, probe = {}, {}
      for i = 1, cfg.eval_batches do val[i] = {batch('val', gen)} end
      for i = 1, cfg.probe_batches do probe[i] = batch('val', gen) end
      return val, probe
    end
    local gval, gprobe = fixed(gbatch, gm.Generator(run:seed('val')))
    local bval, bprobe
    if bbatch then bval, bprobe = fixed(bbatch, gm.Generator(run:seed('bb_val'))) end

    local total = #arms * #lrs * cfg.seeds + (bbatch and #arms * cfg.seeds or 0)
    local done = 0
    local summary = {}
    local function unit(study, arm, lrs_, seed)
      local key = ('%s/%s/lr=%s/seed=%d'):format(study, arm, lrs_, seed)
      summary[key] = run:unit(key, function()
        local bb = study == 'bigram_backcopy'
        local r = train_one {
          study = study, arm = arm, lr = tonumber(lrs_), seed = seed, res = res, curves = curves, hist = hist,
          vocab = bb and cfg.bb_vocab + 1 or C.vocab_size + (cfg.bos and 1 or 0), d_model = cfg.d_model,
          layers = bb and cfg.bb_layers or cfg.layers, heads = bb and cfg.bb_heads or cfg.heads,
          positions = cfg.positions, T = bb and bT or T, steps = bb and cfg.bb_steps or cfg.steps,
          warmup = cfg.warmup, weight_decay = cfg.weight_decay, eval_every = bb and cfg.bb_eval_every or cfg.eval_every,
          batch = bb and bbatch or gbatch, val = bb and bval or gval, probe = bb and bprobe or gprobe,
          init = gm.Generator(run:seed(('init/%s/%s/%d'):format(study, arm, seed))),
          bgen = gm.Generator(run:seed(('batches/%s/%d'):format(study, seed))),
        }
        run:log('%-15s %-11s lr=%-6s seed=%d  val %.4f  sink %.4f  rise %.3f%s  %.0f s', study, arm, lrs_, seed, r.val,
          r.heads[1].sink, r.rise, r.diverged and '  DIVERGED' or '', r.seconds)
        return r
      end)
      done = done + 1
      run:progress(done, total, key)
    end
    for _, arm in ipairs(arms) do
      for _, l in ipairs(lrs) do for seed = 1, cfg.seeds do unit('grammar', arm, l, seed) end end
    end
    if bbatch then
      local bl = ('%g'):format(cfg.bb_lr)
      for _, arm in ipairs(arms) do for seed = 1, cfg.seeds do unit('bigram_backcopy', arm, bl, seed) end end
    end

    -- plot blocks: one gnuplot data set per arm in ARM_ORDER; an arm that did not run gets a NaN
    -- row (gnuplot counts data sets by their rows)
    local base = lrs[1]
    for _, l in ipairs(lrs) do if math.abs(tonumber(l) - cfg.base_lr) < 1e-12 then base = l end end
    local function get(study, arm, l, seed) return summary[('%s/%s/lr=%s/seed=%d'):format(study, arm, l, seed)] end
    local sink = run:tsv('sink', {'x', 'sink_mass', 'uniform', 'seed', 'layer', 'head'})
    local bbk = run:tsv('bb', {'step', 'sink_mass', 'se', 'uniform'})
    local hblk = run:tsv('hist', {'bin_mid', 'fraction'})
    local lrb = run:tsv('lr', {'lr', 'val_loss', 'mean_val', 'se_val', 'diverged', 'seed'})
    local bb_uniform = 0
    if bbatch then _, bb_uniform = gm.nn.attention_sink(gm.zeros {1, 1, bT, bT}) end
    -- sink mass during training in the bigram-backcopy study, from curves.tsv's rows
    local bb_curve = {}
    for _, f in ipairs(curves:fields()) do
      if f[1] == 'bigram_backcopy' then
        bb_curve[f[2]] = bb_curve[f[2]] or {}
        local s = tonumber(f[5])
        bb_curve[f[2]][s] = bb_curve[f[2]][s] or {}
        table.insert(bb_curve[f[2]][s], tonumber(f[8]))
      end
    end
    for _, arm in ipairs(ARM_ORDER) do
      local n0 = {#sink.rows, #bbk.rows, #hblk.rows, #lrb.rows}
      for seed = 1, cfg.seeds do
        local r = get('grammar', arm, base, seed)
        for _, h in ipairs(r and r.heads or {}) do
          sink:row(h.layer * cfg.heads + h.head + (seed - (cfg.seeds + 1) / 2) * 0.12, h.sink, h.uniform, seed,
            h.layer, h.head)
        end
      end
      local steps = {}
      for s in pairs(bb_curve[arm] or {}) do steps[#steps + 1] = s end
      table.sort(steps)
      for _, s in ipairs(steps) do
        local v = bb_curve[arm][s]
        bbk:row(s, gm.stats.mean(v), #v > 1 and gm.stats.stderr(v) or 0, bb_uniform)
      end
      local pooled, n = {}, 0
      for i = 1, BINS do pooled[i] = 0 end
      for seed = 1, cfg.seeds do
        local r = get('grammar', arm, base, seed)
        if r and r.hist then
          for i = 1, BINS do pooled[i] = pooled[i] + r.hist[i] end
          n = n + r.ngate
        end
      end
      if n > 0 then for i = 1, BINS do hblk:row((i - 0.5) / BINS, pooled[i] / n) end end
      for _, l in ipairs(lrs) do
        local vals = {}
        for seed = 1, cfg.seeds do
          local r = get('grammar', arm, l, seed)
          if r and not r.diverged then vals[#vals + 1] = r.val end
        end
        local m = #vals > 0 and gm.stats.mean(vals) or 0 / 0
        local se = #vals > 1 and gm.stats.stderr(vals) or 0
        for seed = 1, cfg.seeds do
          local r = get('grammar', arm, l, seed)
          if r then lrb:row(tonumber(l), L.finite(r.val) and r.val or 'NaN', m, se, r.diverged and 1 or 0, seed) end
        end
      end
      if #sink.rows == n0[1] then sink:row(0 / 0, 0 / 0, 0 / 0, 0, 0, 0) end
      if #bbk.rows == n0[2] then bbk:row(0 / 0, 0 / 0, 0 / 0, 0 / 0) end
      if #hblk.rows == n0[3] then hblk:row(0 / 0, 0 / 0) end
      if #lrb.rows == n0[4] then lrb:row(0 / 0, 0 / 0, 0 / 0, 0 / 0, 0, 0) end
      sink:blank(2); bbk:blank(2); hblk:blank(2); lrb:blank(2)
    end
    -- metrics per arm: grammar sink mass (mean over layers, heads, seeds at the base lr) and gate
    -- score, divergences over the sweep; bigram-backcopy sink mass (mean over seeds)
    local divs = {}
    for _, arm in ipairs(ARM_ORDER) do
      local s, n, g, ng, div, bs, bn = 0, 0, 0, 0, 0, 0, 0
      for seed = 1, cfg.seeds do
        for _, l in ipairs(lrs) do
          local r = get('grammar', arm, l, seed)
          if r and r.diverged then div = div + 1 end
          if r and l == base then
            for _, h in ipairs(r.heads) do
              s, n = s + h.sink, n + 1
              if h.gate then g, ng = g + h.gate, ng + 1 end
            end
          end
        end
        local r = bbatch and get('bigram_backcopy', arm, ('%g'):format(cfg.bb_lr), seed)
        if r then
          for _, h in ipairs(r.heads) do bs, bn = bs + h.sink, bn + 1 end
        end
      end
      if n > 0 then
        run:metric(arm .. '_sink', s / n)
        if ng > 0 then run:metric(arm .. '_gate', g / ng) end
        run:metric(arm .. '_diverged', div)
      end
      if bn > 0 then run:metric(arm .. '_bb_sink', bs / bn) end
      divs[#divs + 1] = tostring(div)
    end
    local _, g_uniform = gm.nn.attention_sink(gm.zeros {1, 1, T, T})
    run:metric('uniform', g_uniform)
    if bbatch then run:metric('bb_uniform', bb_uniform) end
    gm.experiment.write_atomic(run.dir .. '/layout.gp',
      ('heads = %d\nlayers = %d\nbase_lr = "%s"\nbb_lr = "%g"\ndiverged = "%s"\n'):format(cfg.heads, cfg.layers, base,
        cfg.bb_lr, table.concat(divs, ' ')))
  end,
}
