-- gmoe.data.mqar: multi-query associative recall, the generator of zoology's
-- `zoology/data/multiquery_ar.py` (papers.md §7.1) re-implemented on gmoe's Philox generator:
-- the same algorithm and distributions, not numpy's bit stream.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local U = require 'gmoe.data.util'

local M = {}
local CHUNK = 2048 -- examples generated per block (bounds the [m, space] random scores)

-- In place: the first D entries of arr become a uniform random ordered sample without
-- replacement (partial Fisher-Yates with uniforms u[1..D]); returns the swaps to undo.
local function sample_prefix(arr, D, u)
  local L, swaps = #arr, {}
  for j = 1, D do
    local r = j + math.floor(u[j] * (L - j + 1))
    if r > L then r = L end
    arr[j], arr[r] = arr[r], arr[j]
    swaps[j] = r
  end
  return swaps
end

local function undo(arr, swaps)
  for j = #swaps, 1, -1 do
    local r = swaps[j]
    arr[j], arr[r] = arr[r], arr[j]
  end
end

--- gm.data.mqar{n=, vocab_size=8192, seq_len=64, num_kv_pairs=8, ...} -> inputs [n, T] i32, labels [n, T] i32
function M.mqar(opts)
  local F = 'mqar'
  opts = opts or {}
  U.known(opts, {'n', 'vocab_size', 'seq_len', 'num_kv_pairs', 'power_a', 'num_passes',
                 'random_non_queries', 'generator', 'seed'}, F)
  local gen = U.generator(opts, F)
  local N = U.int(opts, 'n', nil, 0, F)
  local V = U.int(opts, 'vocab_size', 8192, 2, F)
  local T = U.int(opts, 'seq_len', 64, 2, F)
  local D = U.int(opts, 'num_kv_pairs', 8, 1, F)
  local passes = U.int(opts, 'num_passes', 1, 1, F)
  local a = U.num(opts, 'power_a', 0.01, F)
  if T % 2 ~= 0 then error(F .. ': seq_len must be even, got ' .. T, 2) end
  if V <= T then error(('%s: vocab_size (%d) must exceed seq_len (%d)'):format(F, V, T), 2) end
  if D * 2 * passes + D * 2 > T then
    error(('%s: num_kv_pairs * 2 * num_passes + num_kv_pairs * 2 = %d exceeds seq_len = %d'):format(
      F, D * 2 * passes + D * 2, T), 2)
  end
  local half = V // 2
  if half - 1 < D then error(('%s: only %d keys (1 .. %d) for %d distinct keys'):format(F, half - 1, half - 1, D), 2) end
  if a <= 0 then error(F .. ': power_a must be > 0', 2) end

  local ctx = D * 2 * passes
  local space = (T - ctx) // 2
  -- Query slot weights w_s = a (s+1)^(a-1), s = 0 .. space-1 (normalisation is irrelevant below).
  local w = {}
  for s = 1, space do w[s] = a * s ^ (a - 1) end
  local inv_w = 1 / gm.tensor(w, {dtype = 'f64'}) -- [space]
  local keys, vals = {}, {}
  for t = 1, half - 1 do keys[t] = t end
  for t = half, V - 1 do vals[#vals + 1] = t end

  local inputs = gm.zeros({N, T}, {dtype = 'i32'})
  local labels = gm.full({N, T}, -100, {dtype = 'i32'})
  local f64 = {dtype = 'f64', generator = gen}
  for start = 0, N - 1, CHUNK do
    local m = math.min(CHUNK, N - start)
    local uk = gm.rand({m, D}, f64):totable()
    local uv = gm.rand({m, D}, f64):totable()
    -- Gaps: D distinct slots drawn one after another with probability proportional to w among the
    -- slots left (numpy's choice(replace=False, p=p)). Exponential race / Efraimidis-Spirakis: the
    -- slots ordered by log(u_s) / w_s descending have exactly that distribution, in draw order.
    local _, gaps = (gm.rand({m, space}, f64):log() * inv_w):topk(D, -1)
    gaps = gaps:totable()
    local in_rows, lab_rows = {}, {}
    for i = 1, m do
      local ks = sample_prefix(keys, D, uk[i])
      local vs = sample_prefix(vals, D, uv[i])
      local row, lab = {}, {}
      for p = 1, T do row[p], lab[p] = 0, -100 end
      for pass = 0, passes - 1 do
        for j = 1, D do
          row[pass * 2 * D + 2 * j - 1] = keys[j]
          row[pass * 2 * D + 2 * j] = vals[j]
        end
      end
      for j = 1, D do
        local pos = ctx + 2 * gaps[i][j] + 1 -- 1-based position of the query of key j
        row[pos], lab[pos] = keys[j], vals[j]
      end
      undo(keys, ks)
      undo(vals, vs)
      in_rows[i], lab_rows[i] = row, lab
    end
    if m > 0 then
      inputs:narrow(0, start, m):copy_(gm.tensor(in_rows, {dtype = 'i32'}))
      labels:narrow(0, start, m):copy_(gm.tensor(lab_rows, {dtype = 'i32'}))
    end
  end
  if opts.random_non_queries then
    local r = gm.randint(0, V, {N, T}, {generator = gen})
    inputs = gm.where(inputs:eq(0), r, inputs)
  end
  return inputs, labels
end

doc.add('gm.data.mqar',
  'gm.data.mqar{n=, vocab_size=8192, seq_len=64, num_kv_pairs=8, power_a=0.01, num_passes=1, ' ..
  'random_non_queries=false, generator=g | seed=s} -> inputs [n, T] i32, labels [n, T] i32',
  'Multi-query associative recall as zoology generates it (zoology/data/multiquery_ar.py). Keys ' ..
  'come from 1 .. V/2-1, values from V/2 .. V-1 (token 0 is the filler); each example draws D ' ..
  'distinct keys and D distinct values. Context = k1 v1 ... kD vD (repeated num_passes times), ' ..
  'ctx = 2 D num_passes positions. The rest holds space = (T - ctx)/2 even slots; D distinct ' ..
  'slots s_j are drawn one after another with probability proportional to a (s+1)^(a-1) among ' ..
  'the slots left (a = power_a; a = 1 is uniform, a = 0.01 favours queries right after the ' ..
  'context). Key k_j is written at position ctx + 2 s_j (0-based) and labels[ctx + 2 s_j] = v_j: ' ..
  'the model must output v_j where k_j reappears; every other label is -100 (cross_entropy\'s ' ..
  'ignore_index). With random_non_queries, the 0 filler tokens become uniform tokens from [0, V) ' ..
  '(which may equal keys, as in zoology); zoology\'s function defaults it to True but its Figure-2 ' ..
  'configs set False, the default here. Requires T even, V > T and 4D <= T (2D num_passes + 2D ' ..
  '<= T). Same distributions as zoology, not the same numbers (numpy\'s stream is not reproduced); ' ..
  'the slot draw uses the exponential race, which is the sequential weighted draw without replacement.',
  {formula = 'P(s_j = s | s_1..s_{j-1}) = w_s / sum_{r not in {s_1..s_{j-1}}} w_r,  w_s = a (s+1)^(a-1)',
   paper = 'Arora, Eyuboglu, et al., "Zoology: Measuring and Improving Recall in Efficient Language ' ..
           'Models", 2023 (papers.md §7.1)'})

return M
