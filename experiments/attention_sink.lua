-- attention_sink.lua: the attention sink under gated attention (Qiu et al. 2025; papers.md §9.3 b
-- and c). A small character-level LM (2 layers, 4 heads, d = 64, T = 128, rotary positions, MLP
-- after each mixer) is trained with plain softmax attention ("baseline") and with the
-- query-dependent sigmoid output gate after SDPA, one score per head ("headwise") or per channel
-- ("elementwise"), over a learning-rate sweep and seeds. After training, on fixed validation
-- windows, it measures per layer and head the mean attention mass on key 0 (gm.nn.attention_sink;
-- uniform causal attention would give `uniform`) and the mean gate score, a histogram of gate
-- scores, and the validation loss; a run diverges when its loss turns non-finite or ends above
-- its initial value, and is unstable when its smoothed training loss rose more than 0.5 nats
-- above its running minimum. Data: text the user points to (corpus=path) or, by default,
-- gm.data.grammar_text, whose windows start anywhere, so key 0 carries no special content.
-- Writes results.tsv (one row per arm, lr, seed, layer, head), curves.tsv, gate_hist.tsv, and the
-- plot blocks sink.tsv, hist.tsv, lr.tsv for plots/attention_sink.gp.
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

return gm.experiment {
  name = 'attention_sink',
  description = 'attention sink and stability: softmax attention vs headwise / elementwise gated attention',
  config = {seed = 1, data = 'grammar', corpus = '', corpus_chars = 1000000, sequences = 20000, bb_vocab = 64, arms = 'baseline+headwise+elementwise',
            lrs = '1e-3+3e-3+1e-2', base_lr = 1e-3, seeds = 3, steps = 1500, warmup = 100, batch = 16,
            seq_len = 128, d_model = 64, heads = 4, layers = 2, positions = 'rotary', bos = true, weight_decay = 0.1, eval_every = 100,
            eval_batches = 8, probe_batches = 4},
  quick = {corpus_chars = 200000, lrs = '1e-3', seeds = 1, steps = 150, eval_every = 50, eval_batches = 2,
           probe_batches = 1, seq_len = 64},
  doc = {data = 'grammar: character text (corpus= file, else gm.data.grammar_text); bigram_backcopy: ' ..
           'gm.data.bigram_backcopy token sequences (Guo et al. 2024), BOS first',
         corpus = 'with data=grammar: a text file to train on (UTF-8 or bytes); empty: the generated grammar text',
         sequences = 'bigram_backcopy: number of sequences generated', bb_vocab = 'bigram_backcopy: vocabulary',
         arms = "'+'-separated subset of baseline, headwise, elementwise",
         lrs = "'+'-separated peak learning rates (AdamW, warm-up then cosine to 0)",
         base_lr = 'the learning rate whose runs give the sink and gate panels',
         bos = 'start every window with a beginning-of-sequence symbol (key 0 is then content-free)',
         positions = 'rotary (RoPE on q and k, as Qwen3) or learned (absolute, as GPT-2 and zoology)'},
  choices = {positions = {'rotary', 'learned'}, data = {'grammar', 'bigram_backcopy'}},
  check = function(cfg)
    for _, a in ipairs(split(cfg.arms)) do assert(ARMS[a], 'unknown arm ' .. a) end
    for _, lr in ipairs(split(cfg.lrs)) do assert(tonumber(lr) and tonumber(lr) > 0, 'bad learning rate ' .. lr) end
    assert(cfg.seeds >= 1 and cfg.steps >= 1 and cfg.heads >= 1 and cfg.d_model % cfg.heads == 0,
      'seeds, steps >= 1 and heads dividing d_model')
  end,
  run = function(cfg, run)
    local B, T = cfg.batch, cfg.seq_len
    local vocab, batch
    if cfg.data == 'bigram_backcopy' then
      -- sequences of T + 1 tokens that start with BOS; rows drawn at random, the last tenth for validation
      local ids = gm.data.bigram_backcopy {n = cfg.sequences, seq_len = T + 1, vocab = cfg.bb_vocab,
                                           seed = run:seed('corpus')}
      local nv = math.max(1, cfg.sequences // 10)
      local split = {train = ids:narrow(0, 0, cfg.sequences - nv), val = ids:narrow(0, cfg.sequences - nv, nv)}
      vocab = cfg.bb_vocab + 1
      batch = function(which, gen)
        local src = split[which]
        local rows = src:index_select(0, gm.randint(0, src.shape[1], {B}, {generator = gen}))
        return rows:narrow(1, 0, T), rows:narrow(1, 1, T)
      end
      run:log('data: bigram-backcopy, %d sequences of %d tokens, vocab %d + BOS', cfg.sequences, T + 1, cfg.bb_vocab)
    else
      local C
      if cfg.corpus ~= '' then
        C = gm.data.CharCorpus(cfg.corpus)
      else
        C = gm.data.CharCorpus_from_string(gm.data.grammar_text {chars = cfg.corpus_chars, seed = run:seed('corpus')})
      end
      run:log('corpus: %s', tostring(C))
      -- With bos, every window starts with a beginning-of-sequence symbol (id vocab_size, outside
      -- the text) followed by T - 1 characters: key 0 is then the same content-free token in every
      -- window, as the BOS of an LLM's context.
      vocab = C.vocab_size + (cfg.bos and 1 or 0)
      batch = function(which, gen)
        if not cfg.bos then return C:batch(which, B, T, {generator = gen}) end
        local x, y = C:batch(which, B, T - 1, {generator = gen})
        local bos = gm.full({B, 1}, C.vocab_size, {dtype = 'i32'})
        return gm.cat({bos, x}, 1), gm.cat({x:narrow(1, 0, 1), y}, 1)
      end
    end
    -- The same validation and probe windows for every arm, lr and seed.
    local vgen = gm.Generator(run:seed('val'))
    local val = {}
    for i = 1, cfg.eval_batches do val[i] = {batch('val', vgen)} end
    local probe = {}
    for i = 1, cfg.probe_batches do probe[i] = batch('val', vgen) end

    local res = run:tsv('results', {'arm', 'lr', 'seed', 'layer', 'head', 'sink_mass', 'uniform', 'gate_mean',
                                    'val_loss', 'val_loss0', 'diverged', 'max_rise', 'steps', 'train_seconds'})
    local curves = run:tsv('curves', {'arm', 'lr', 'seed', 'step', 'train_loss', 'val_loss', 'sink_mass'})
    local hist = run:tsv('gate_hist', {'arm', 'lr', 'seed', 'bin_lo', 'bin_hi', 'fraction'})

    local arms, lrs = split(cfg.arms), split(cfg.lrs)
    local total, done = #arms * #lrs * cfg.seeds, 0
    local summary = {}
    for _, arm in ipairs(arms) do
      for _, lrs_ in ipairs(lrs) do
        local lr = tonumber(lrs_)
        for seed = 1, cfg.seeds do
          local key = ('%s/lr=%s/seed=%d'):format(arm, lrs_, seed)
          local r = run:unit(key, function()
            local g = gm.Generator(run:seed('init/' .. arm .. '/' .. seed))
            local lm = gm.nn.LM {vocab = vocab, d_model = cfg.d_model, layers = cfg.layers, heads = cfg.heads,
                                 mixer = ARMS[arm], state_mixer = 'mlp', positions = cfg.positions, max_len = T,
                                 generator = g}
            local bgen = gm.Generator(run:seed('batches/' .. seed))
            local function val_loss()
              return gm.no_grad(function()
                local s = 0
                for _, v in ipairs(val) do s = s + gm.cross_entropy(lm(v[1]), v[2]):item() end
                return s / #val
              end)
            end
            local ema, ema_min, max_rise, last_train = nil, math.huge, 0, nil
            local v0, vl
            local out = L.train {
              model = lm, steps = cfg.steps, lr = lr, warmup = cfg.warmup, weight_decay = cfg.weight_decay,
              batch = function() return batch('train', bgen) end,
              loss = function(m, x, y) return gm.cross_entropy(m(x), y) end,
              on_step = function(_, l)
                ema = ema and 0.9 * ema + 0.1 * l or l
                if ema < ema_min then ema_min = ema end
                if ema - ema_min > max_rise then max_rise = ema - ema_min end
                last_train = ema
              end,
              eval_every = cfg.eval_every,
              eval = function(step)
                vl = val_loss()
                if step == 0 then v0 = vl end
                -- the sink on the first probe batch, mean over layers and heads, as training goes
                local sm = gm.no_grad(function()
                  local blocks = lm.blocks:children()
                  for _, b in ipairs(blocks) do b.mixer.keep_probs = true end
                  lm(probe[1])
                  local m = 0
                  for _, b in ipairs(blocks) do
                    m = m + gm.nn.attention_sink(b.mixer.last_probs):mean():item() / #blocks
                    b.mixer.keep_probs, b.mixer.last_probs = false, nil
                  end
                  return m
                end)
                curves:row(arm, lr, seed, step, last_train or vl, vl, sm)
              end,
            }
            curves:blank()
            local diverged = out.diverged or not L.finite(vl) or vl >= v0
            -- probes: attention mass on key 0 and gate scores, per layer and head
            local heads = {}
            local counts = {}
            for i = 1, BINS do counts[i] = 0 end
            local ngate = 0
            gm.no_grad(function()
              local mixers = {}
              for l, b in ipairs(lm.blocks:children()) do mixers[l] = b.mixer; b.mixer.keep_probs = true end
              local mass, gate = {}, {}
              for _, x in ipairs(probe) do
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
              local _, uniform = gm.nn.attention_sink(gm.zeros {1, 1, T, T})
              for l, m in ipairs(mixers) do
                m.keep_probs = false
                local ms = (mass[l] / #probe):totable()
                local gs = gate[l] and (gate[l] / #probe):totable() or {}
                for h = 1, #ms do
                  heads[#heads + 1] = {layer = l - 1, head = h - 1, sink = ms[h], uniform = uniform, gate = gs[h]}
                end
              end
            end)
            for _, h in ipairs(heads) do
              res:row(arm, lr, seed, h.layer, h.head, h.sink, h.uniform, h.gate or 'NaN', vl, v0,
                diverged and 1 or 0, max_rise, out.steps, out.seconds)
            end
            if ngate > 0 then
              for i = 1, BINS do hist:row(arm, lr, seed, (i - 1) / BINS, i / BINS, counts[i] / ngate) end
            end
            run:log('%-11s lr=%-6s seed=%d  val %.4f (start %.4f)  rise %.3f%s  %.0f s', arm, lrs_, seed, vl, v0,
              max_rise, diverged and '  DIVERGED' or '', out.seconds)
            return {heads = heads, hist = ngate > 0 and counts or nil, ngate = ngate, val = vl, diverged = diverged,
                    rise = max_rise}
          end)
          summary[key] = r
          done = done + 1
          run:progress(done, total, key)
        end
      end
    end

    -- plot blocks: one gnuplot data set per arm (in ARM_ORDER, arms not run left empty)
    local sink = run:tsv('sink', {'x', 'sink_mass', 'uniform', 'seed', 'layer', 'head'})
    local hblk = run:tsv('hist', {'bin_mid', 'fraction'})
    local lrb = run:tsv('lr', {'lr', 'val_loss', 'mean_val', 'se_val', 'diverged', 'seed'})
    local base = nil
    for _, l in ipairs(lrs) do if math.abs(tonumber(l) - cfg.base_lr) < 1e-12 then base = l end end
    base = base or lrs[1]
    for _, arm in ipairs(ARM_ORDER) do
      -- gnuplot counts data sets by their rows: an arm that did not run gets one NaN row
      local nsink, nhist, nlr = #sink.rows, #hblk.rows, #lrb.rows
      for seed = 1, cfg.seeds do
        local r = summary[('%s/lr=%s/seed=%d'):format(arm, base, seed)]
        for _, h in ipairs(r and r.heads or {}) do
          sink:row(h.layer * cfg.heads + h.head + (seed - (cfg.seeds + 1) / 2) * 0.12, h.sink, h.uniform, seed,
            h.layer, h.head)
        end
      end
      local pooled, n = {}, 0
      for i = 1, BINS do pooled[i] = 0 end
      for seed = 1, cfg.seeds do
        local r = summary[('%s/lr=%s/seed=%d'):format(arm, base, seed)]
        if r and r.hist then
          for i = 1, BINS do pooled[i] = pooled[i] + r.hist[i] end
          n = n + r.ngate
        end
      end
      if n > 0 then for i = 1, BINS do hblk:row((i - 0.5) / BINS, pooled[i] / n) end end
      for _, l in ipairs(lrs) do
        local vals, ndiv = {}, 0
        for seed = 1, cfg.seeds do
          local r = summary[('%s/lr=%s/seed=%d'):format(arm, l, seed)]
          if r then
            if r.diverged then ndiv = ndiv + 1 else vals[#vals + 1] = r.val end
          end
        end
        local m, se = gm.stats.mean(vals), #vals > 1 and gm.stats.stderr(vals) or 0
        for seed = 1, cfg.seeds do
          local r = summary[('%s/lr=%s/seed=%d'):format(arm, l, seed)]
          if r then lrb:row(tonumber(l), L.finite(r.val) and r.val or 'NaN', m, se, r.diverged and 1 or 0, seed) end
        end
        if #vals == 0 and summary[('%s/lr=%s/seed=1'):format(arm, l)] then
          lrb:row(tonumber(l), 'NaN', 'NaN', 'NaN', ndiv, 0)
        end
      end
      if #sink.rows == nsink then sink:row(0 / 0, 0 / 0, 0 / 0, 0, 0, 0) end
      if #hblk.rows == nhist then hblk:row(0 / 0, 0 / 0) end
      if #lrb.rows == nlr then lrb:row(0 / 0, 0 / 0, 0 / 0, 0 / 0, 0, 0) end
      sink:blank(2); hblk:blank(2); lrb:blank(2)
    end
    -- final metrics: sink mass (mean over layers, heads and seeds) and divergences per arm
    local divs = {}
    for _, arm in ipairs(ARM_ORDER) do
      local s, n, g, ng, div = 0, 0, 0, 0, 0
      for _, l in ipairs(lrs) do
        for seed = 1, cfg.seeds do
          local r = summary[('%s/lr=%s/seed=%d'):format(arm, l, seed)]
          if r and r.diverged then div = div + 1 end
          if r and l == base then
            for _, h in ipairs(r.heads) do
              s, n = s + h.sink, n + 1
              if h.gate then g, ng = g + h.gate, ng + 1 end
            end
          end
        end
      end
      if n > 0 then
        run:metric(arm .. '_sink', s / n)
        if ng > 0 then run:metric(arm .. '_gate', g / ng) end
        run:metric(arm .. '_diverged', div)
      end
      divs[#divs + 1] = tostring(div)
    end
    gm.experiment.write_atomic(run.dir .. '/layout.gp',
      ('heads = %d\nlayers = %d\nbase_lr = "%s"\nruns_per_lr = %d\ndiverged = "%s"\n'):format(cfg.heads,
        cfg.layers, base, cfg.seeds, table.concat(divs, ' ')))
  end,
}
