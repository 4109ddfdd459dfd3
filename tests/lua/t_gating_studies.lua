-- t_gating_studies.lua: the three gating studies (experiments/attention_sink.lua, topp_routing.lua,
-- dense_to_sparse.lua) and what they stand on: the attention-sink probe gm.nn.attention_sink on
-- attention maps built by hand, the generated corpora gm.data.grammar_text and
-- gm.data.copy_arithmetic_text (lengths, seeds, labels, the sums are right), and each experiment
-- at a toy size through the runner (columns present, values in range, figure rendered).
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'
local q = tap.q

-- ---- the sink probe ----------------------------------------------------------------------------
do
  -- one batch, two heads, T = 3: head 0 dumps everything on key 0, head 1 attends to itself
  local p = gm.tensor {{{{1, 0, 0}, {1, 0, 0}, {1, 0, 0}}, {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}}}
  local mass, uniform = gm.nn.attention_sink(p)
  tap.is(mass.dtype, 'f64', 'attention_sink returns f64 masses')
  tap.all_close(mass:totable(), {1, 0}, 0, 'a head that attends only to key 0 has mass 1, one that attends to itself 0')
  tap.close(uniform, (1 / 2 + 1 / 3) / 2, 1e-15, 'uniform = mean over t >= 1 of 1/(t+1)')
  local u = gm.tensor {{{1, 0, 0}, {0.5, 0.5, 0}, {1 / 3, 1 / 3, 1 / 3}}}:reshape {1, 1, 3, 3}
  local m2, u2 = gm.nn.attention_sink(u)
  tap.close(m2:item(), u2, 1e-7, 'uniform causal attention has exactly the uniform mass')
  -- leading dims are averaged: two batches with masses 0.2 and 0.6 at t = 1, 0.4 and 0.0 at t = 2
  local b = gm.tensor {{{{1, 0, 0}, {0.2, 0.8, 0}, {0.4, 0.3, 0.3}}}, {{{1, 0, 0}, {0.6, 0.4, 0}, {0, 0.5, 0.5}}}}
  tap.close(gm.nn.attention_sink(b):item(), (0.2 + 0.4 + 0.6 + 0) / 4, 1e-7, 'mean over batch and query positions')
  tap.errors(function() gm.nn.attention_sink(gm.ones {3, 3}) end, 'probs must be a float tensor %[..., H, T, S%]',
    'a 2-D map is refused')
  tap.errors(function() gm.nn.attention_sink(gm.ones {1, 1, 1, 1}) end, 'at least 2 query positions',
    'a single query position is refused')
  -- on a real model: keep_probs gives [B, H, T, T] maps the probe reads
  local attn = gm.nn.Attention {d_model = 8, heads = 2, generator = gm.Generator(1)}
  attn.keep_probs = true
  attn(gm.randn {2, 5, 8})
  local mm = gm.nn.attention_sink(attn.last_probs)
  tap.ok(mm.shape[1] == 2 and mm:min():item() >= 0 and mm:max():item() <= 1, 'per-head masses of a model in [0, 1]')
end

-- ---- generated corpora -------------------------------------------------------------------------
do
  local a = gm.data.grammar_text {chars = 5000, seed = 3}
  tap.is(#a, 5000, 'grammar_text has exactly `chars` characters')
  tap.is(gm.data.grammar_text {chars = 5000, seed = 3}, a, 'the same seed gives the same text')
  tap.ok(gm.data.grammar_text {chars = 5000, seed = 4} ~= a, 'another seed, another text')
  tap.like(a, '^%u', 'the text starts with a capital')
  tap.like(a, '[%.%?!] %u', 'sentences end in punctuation and the next one is capitalised')
  tap.errors(function() gm.data.grammar_text {chars = 0} end, 'chars must be >= 1', 'chars is checked')
  tap.errors(function() gm.data.grammar_text {char = 10} end, 'unknown option char', 'unknown options are refused')

  local t, k, ans = gm.data.copy_arithmetic_text {chars = 4000, seed = 5, digits = 2}
  tap.is(#t, 4000, 'copy_arithmetic_text has exactly `chars` characters')
  tap.is(k.shape[1], 4000, 'one kind per character')
  tap.is(ans.shape[1], 4000, 'one answer flag per character')
  local ks, as = k:totable(), ans:totable()
  local answers = {}
  for i = 1, #t do if as[i] == 1 then answers[#answers + 1] = t:sub(i, i) else answers[#answers + 1] = '|' end end
  answers = table.concat(answers)
  local ans_ok = true
  for line in t:gmatch('[^\n]*\n') do
    local a = line:match('=([%w]+);')
    if a and not answers:find('|' .. a .. '|', 1, true) then ans_ok = false end
  end
  tap.ok(ans_ok, 'answer flags mark exactly the characters between = and ;')
  local sums, copies, bad, labelled = 0, 0, 0, true
  local pos = 1
  for line in t:gmatch('[^\n]*\n') do
    local x, y, z = line:match('^a (%d+)%+(%d+)=(%d+);\n$')
    local w1, w2 = line:match('^c (%l+)=(%l+);\n$')
    if x then
      sums = sums + 1
      if tonumber(x) + tonumber(y) ~= tonumber(z) or tonumber(x) >= 100 then bad = bad + 1 end
    elseif w1 then
      copies = copies + 1
      if w1 ~= w2 or #w1 < 3 or #w1 > 8 then bad = bad + 1 end
    else
      bad = bad + 1
    end
    local kind = x and 1 or 0
    for i = pos, pos + #line - 1 do if ks[i] ~= kind then labelled = false end end
    pos = pos + #line
  end
  tap.is(bad, 0, 'every addition is right (operands below 10^digits) and every copy repeats its word')
  tap.ok(sums > 20 and copies > 20, 'both kinds occur', sums .. ' sums, ' .. copies .. ' copies')
  tap.ok(labelled, 'kinds label each character of a sum 1 and of a copy 0')
  local _, k0 = gm.data.copy_arithmetic_text {chars = 2000, seed = 1, hard_fraction = 0}
  tap.is(k0:sum():item(), 0, 'hard_fraction = 0 gives only copy segments')
  tap.errors(function() gm.data.copy_arithmetic_text {hard_fraction = 2} end, 'hard_fraction must be in %[0, 1%]',
    'hard_fraction is checked')
  tap.errors(function() gm.data.copy_arithmetic_text {copy_min = 5, copy_max = 2} end, 'copy_max %(2%) < copy_min %(5%)',
    'copy lengths are checked')
end

-- ---- the experiments at a toy size -------------------------------------------------------------
local read_tsv = tap.read_tsv
local has_gnuplot = os.execute('command -v gnuplot >/dev/null 2>&1')
local root = os.tmpname()
os.remove(root)

local function toy(name, words)
  local dir = root .. '/' .. name
  local code, out, err = tap.run(('run experiments/%s.lua --quick %s --dir %s'):format(name, words, q(dir)))
  tap.is(code, 0, name .. ' runs at a toy size', err)
  tap.is(out, '', name .. ': stdout stays clean')
  if has_gnuplot then
    code, out, err = tap.run('plot ' .. name .. ' ' .. q(dir))
    tap.is(code, 0, name .. ': its figure renders', err)
  else
    tap.skip(name .. ': its figure renders', 'gnuplot not installed')
  end
  return dir
end

do
  local dir = toy('attention_sink', 'steps=12 corpus_chars=20000 seq_len=24 batch=4 eval_every=6 lrs=1e-3+1e-2 ' ..
    'bb_steps=12 bb_sequences=200 bb_seq_len=16 bb_eval_every=6')
  local h, rows = read_tsv(dir .. '/results.tsv')
  tap.is(h, 'study\tarm\tlr\tseed\tlayer\thead\tsink_mass\tuniform\tgate_mean\tval_loss\tval_loss0\tdiverged\t' ..
    'max_rise\tsteps\ttrain_seconds', 'attention_sink: results.tsv columns')
  local n = {grammar = 0, bigram_backcopy = 0}
  local ok_range = true
  for _, r in ipairs(rows) do
    n[r[1]] = (n[r[1]] or 0) + 1
    local sink, gate = tonumber(r[7]), tonumber(r[9])
    if not (sink >= 0 and sink <= 1) then ok_range = false end
    if r[2] == 'baseline' then
      if r[9] ~= 'NaN' then ok_range = false end
    elseif not (gate > 0 and gate < 1) then ok_range = false end
  end
  tap.is(n.grammar, 3 * 2 * 2 * 4, 'grammar study: one row per arm, lr, layer and head')
  tap.is(n.bigram_backcopy, 3, 'bigram-backcopy study: one row per arm (one layer, one head)')
  tap.ok(ok_range, 'sink masses in [0, 1], gate scores in (0, 1) for the gated arms only')
  local _, hist = read_tsv(dir .. '/gate_hist.tsv')
  local total = {}
  for _, r in ipairs(hist) do
    local k = r[1] .. r[2] .. r[3] .. r[4]
    total[k] = (total[k] or 0) + tonumber(r[7])
  end
  local sums_one = true
  for _, v in pairs(total) do if math.abs(v - 1) > 1e-6 then sums_one = false end end
  tap.ok(sums_one and next(total) ~= nil, 'each gate histogram sums to 1')
  local metrics = tap.slurp(dir .. '/metrics.tsv')
  tap.like(metrics, 'baseline_sink\t', 'grammar sink metrics reported')
  tap.like(metrics, 'elementwise_bb_sink\t', 'bigram-backcopy sink metrics reported')
end

do
  local dir = toy('topp_routing', 'steps=16 corpus_chars=20000 seq_len=24 batch=4 log_every=4 eval_every=8')
  local h, rows = read_tsv(dir .. '/results.tsv')
  tap.is(h, 'arm\tseed\tlayer\tkind\tactive_final\tactive_start\tval_loss\tsteps\ttrain_seconds',
    'topp_routing: results.tsv columns')
  tap.is(#rows, 4 * 2 * 4, 'one row per arm, layer and token group (copy, add, copy_answer, add_answer)')
  local in_range, fixed = true, true
  for _, r in ipairs(rows) do
    local a = tonumber(r[5])
    if not (a >= 1 and a <= 8) then in_range = false end
    if (r[1] == 'top2' and a ~= 2) or (r[1] == 'top1' and a ~= 1) then fixed = false end
  end
  tap.ok(in_range, 'active experts per token between 1 and E')
  tap.ok(fixed, 'top-2 and top-1 route exactly 2 and 1 experts per token')
  local ch = read_tsv(dir .. '/curves.tsv')
  tap.is(ch, 'arm\tseed\tstep\tlayer\tactive\tactive_copy\tactive_add\tactive_copy_answer\tactive_add_answer\t' ..
    'train_loss', 'topp_routing: curves.tsv columns')
end

do
  local dir = toy('dense_to_sparse', 'steps=16 diversify_steps=4 corpus_chars=20000 seq_len=24 batch=4 log_every=4 ' ..
    'eval_every=4')
  local h, rows = read_tsv(dir .. '/results.tsv')
  tap.is(h, 'arm\tseed\tval_loss\tactive_start\tactive_final\tsteps_to_target\tcpu_seconds_to_target\ttarget\t' ..
    'train_seconds\tcpu_seconds', 'dense_to_sparse: results.tsv columns')
  tap.is(#rows, 4, 'one row per arm')
  local by = {}
  for _, r in ipairs(rows) do by[r[1]] = r end
  tap.ok(by.dts and tonumber(by.dts[4]) > 7.5, 'the DTS gate starts dense (all 8 experts active)', by.dts and by.dts[4])
  tap.ok(by.top1 and tonumber(by.top1[5]) == 1 and by.top2 and tonumber(by.top2[5]) == 2, 'top-1 / top-2 stay at 1 / 2')
  tap.ok(by.dts_evo and tonumber(by.dts_evo[4]) == 1, 'dts_evo starts with one expert')
end

os.execute('rm -rf ' .. q(root))
tap.done()
