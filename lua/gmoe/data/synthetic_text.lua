-- gmoe.data.synthetic_text: generated character-level corpora for small language-model studies
-- that must not depend on a file the user has: an English-like probabilistic grammar (sentences
-- with capitals and punctuation, so no position of a window is special: the attention-sink
-- probe) and a mix of easy copy segments and hard addition segments labelled per character
-- (dynamic routing: do harder tokens get more experts?). Seeded; the same seed gives the same
-- text on any machine.
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local U = require 'gmoe.data.util'

local M = {}

-- Uniform draws in [0, 1) from a generator, a block at a time (one C call per 4096 draws).
local function uniforms(gen)
  local buf, i = {}, 1
  return function()
    if i > #buf then
      buf = gm.rand({4096}, {dtype = 'f64', generator = gen}):totable()
      i = 1
    end
    i = i + 1
    return buf[i - 1]
  end
end

local function pick(u, list) return list[math.floor(u() * #list) + 1] end

-- ---- the grammar ------------------------------------------------------------------------------
local W = {
  det = {'the', 'a', 'every', 'some', 'this', 'that', 'no', 'each'},
  adj = {'small', 'old', 'red', 'quiet', 'bright', 'heavy', 'strange', 'green', 'tired', 'happy', 'cold',
         'tall'},
  noun = {'dog', 'cat', 'bird', 'river', 'house', 'teacher', 'child', 'garden', 'stone', 'letter', 'horse',
          'window', 'farmer', 'song', 'road', 'tree', 'city', 'boat'},
  name = {'Anna', 'Ben', 'Clara', 'David', 'Eva', 'Frank', 'Grace', 'Henry'},
  tverb = {'sees', 'likes', 'finds', 'follows', 'builds', 'paints', 'carries', 'watches', 'remembers', 'hears'},
  base = {'see', 'like', 'find', 'follow', 'build', 'paint', 'carry', 'watch', 'remember', 'hear'},
  iverb = {'sleeps', 'runs', 'sings', 'waits', 'falls', 'shines', 'laughs', 'grows'},
  prep = {'near', 'under', 'behind', 'with', 'over', 'beside', 'across'},
  conj = {'and', 'but', 'so', 'while', 'because'},
  adv = {'slowly', 'today', 'again', 'quietly', 'often', 'never'},
}

local SHE = {Anna = true, Clara = true, Eva = true, Grace = true}

-- A noun phrase; returns the pronoun that refers back to it (she / he for a name, it otherwise).
local function np(u, out, name_p)
  local r = u()
  if r < (name_p or 0.2) then
    local n = pick(u, W.name)
    out[#out + 1] = n
    return SHE[n] and 'she' or 'he'
  end
  out[#out + 1] = pick(u, W.det)
  if u() < 0.45 then out[#out + 1] = pick(u, W.adj) end
  out[#out + 1] = pick(u, W.noun)
  if u() < 0.1 then out[#out + 1] = 'of'; out[#out + 1] = pick(u, W.det); out[#out + 1] = pick(u, W.noun) end
  return 'it'
end

local function vp(u, out)
  local r = u()
  if r < 0.45 then out[#out + 1] = pick(u, W.tverb); np(u, out)
  elseif r < 0.75 then out[#out + 1] = pick(u, W.iverb)
  else out[#out + 1] = pick(u, W.iverb); out[#out + 1] = pick(u, W.prep); np(u, out) end
  if u() < 0.15 then out[#out + 1] = pick(u, W.adv) end
end

local function sentence(u)
  local w = {}
  local stop = '.'
  if u() < 0.15 then
    w[1] = 'does'; np(u, w); w[#w + 1] = pick(u, W.base); np(u, w)
    stop = '?'
  else
    local pron = np(u, w, 0.4)
    vp(u, w)
    -- a second clause about the same subject refers back to it: she / he for a name, it otherwise
    -- (the only cue is the subject, 10 to 40 characters back: a lookup that most characters do not need)
    if u() < 0.4 then w[#w] = w[#w] .. ','; w[#w + 1] = pick(u, W.conj); w[#w + 1] = pron; vp(u, w) end
    if u() < 0.08 then stop = '!' end
  end
  local s = table.concat(w, ' ') .. stop
  return s:sub(1, 1):upper() .. s:sub(2)
end

--- gm.data.grammar_text{chars=1e6, seed=|generator=} -> string
function M.grammar_text(opts)
  local F = 'grammar_text'
  opts = opts or {}
  U.known(opts, {'chars', 'seed', 'generator'}, F)
  local n = U.int(opts, 'chars', 1000000, 1, F)
  local u = uniforms(U.generator(opts, F))
  local parts, len = {}, 0
  while len < n do
    local s = sentence(u)
    local sep = u() < 0.1 and '\n' or ' '
    parts[#parts + 1] = s
    parts[#parts + 1] = sep
    len = len + #s + 1
  end
  return table.concat(parts):sub(1, n)
end

-- ---- copy and addition ------------------------------------------------------------------------
local LETTERS = {}
for c = string.byte('a'), string.byte('z') do LETTERS[#LETTERS + 1] = string.char(c) end

--- gm.data.copy_arithmetic_text{chars=, hard_fraction=0.5, digits=3, copy_min=3, copy_max=8, seed=|generator=}
--- -> text, kinds [chars] i32 (0: copy segment, 1: addition segment), answer [chars] i32 (1: the part
--- after '=', the copied word or the sum, which the text before determines)
function M.copy_arithmetic_text(opts)
  local F = 'copy_arithmetic_text'
  opts = opts or {}
  U.known(opts, {'chars', 'hard_fraction', 'digits', 'copy_min', 'copy_max', 'seed', 'generator'}, F)
  local n = U.int(opts, 'chars', 1000000, 1, F)
  local hard = U.num(opts, 'hard_fraction', 0.5, F)
  if hard < 0 or hard > 1 then error(('%s: hard_fraction must be in [0, 1], got %g'):format(F, hard), 2) end
  local digits = U.int(opts, 'digits', 3, 1, F)
  if digits > 9 then error(('%s: digits must be <= 9, got %d'):format(F, digits), 2) end
  local cmin, cmax = U.int(opts, 'copy_min', 3, 1, F), U.int(opts, 'copy_max', 8, 1, F)
  if cmax < cmin then error(('%s: copy_max (%d) < copy_min (%d)'):format(F, cmax, cmin), 2) end
  local u = uniforms(U.generator(opts, F))
  local top = 10 ^ digits
  local parts, kinds, answer, len = {}, {}, {}, 0
  while len < n do
    local seg, kind
    if u() < hard then
      local a, b = math.floor(u() * top), math.floor(u() * top)
      seg, kind = ('a %d+%d=%d;\n'):format(a, b, a + b), 1
    else
      local k = cmin + math.floor(u() * (cmax - cmin + 1))
      local w = {}
      for i = 1, k do w[i] = pick(u, LETTERS) end
      w = table.concat(w)
      seg, kind = ('c %s=%s;\n'):format(w, w), 0
    end
    parts[#parts + 1] = seg
    local eq, semi = seg:find('=', 1, true), seg:find(';', 1, true)
    for i = 1, #seg do
      kinds[#kinds + 1] = kind
      answer[#answer + 1] = (i > eq and i < semi) and 1 or 0
    end
    len = len + #seg
  end
  local text = table.concat(parts):sub(1, n)
  for i = #kinds, n + 1, -1 do kinds[i], answer[i] = nil, nil end
  return text, gm.tensor(kinds, {dtype = 'i32'}), gm.tensor(answer, {dtype = 'i32'})
end

-- ---- bigram-backcopy -----------------------------------------------------------------------------
--- gm.data.bigram_backcopy{n=, seq_len=128, vocab=64, triggers=3, successors=4, seed=|generator=}
--- -> ids [n, seq_len] i32 (BOS = vocab at position 0), triggered [n, seq_len] i32
function M.bigram_backcopy(opts)
  local F = 'bigram_backcopy'
  opts = opts or {}
  U.known(opts, {'n', 'seq_len', 'vocab', 'triggers', 'successors', 'seed', 'generator'}, F)
  local n = U.int(opts, 'n', nil, 1, F)
  local T = U.int(opts, 'seq_len', 128, 3, F)
  local V = U.int(opts, 'vocab', 64, 4, F)
  local nt = U.int(opts, 'triggers', 3, 1, F)
  local K = U.int(opts, 'successors', 4, 1, F)
  if nt >= V then error(('%s: triggers (%d) must be fewer than vocab (%d)'):format(F, nt, V), 2) end
  if K > V then error(('%s: successors (%d) must be at most vocab (%d)'):format(F, K, V), 2) end
  local u = uniforms(U.generator(opts, F))
  -- the bigram table: each token has K successors with random weights (a fixed Markov chain)
  local succ, cum = {}, {}
  for v = 0, V - 1 do
    local s, w, tot = {}, {}, 0
    for j = 1, K do s[j] = math.floor(u() * V); w[j] = -math.log(1 - u()); tot = tot + w[j] end
    local c, acc = {}, 0
    for j = 1, K do acc = acc + w[j] / tot; c[j] = acc end
    succ[v], cum[v] = s, c
  end
  local function next_of(v)
    local r, c = u(), cum[v]
    for j = 1, K do if r <= c[j] then return succ[v][j] end end
    return succ[v][K]
  end
  local ids, trig = {}, {}
  for i = 1, n do
    local row, tr = {V}, {0}
    row[2] = math.floor(u() * V)
    tr[2] = 0
    for t = 3, T do
      local prev = row[t - 1]
      if prev < nt and row[t - 2] ~= V then
        row[t], tr[t] = row[t - 2], 1 -- after a trigger: copy the token before it
      else
        row[t], tr[t] = next_of(prev), 0
      end
    end
    ids[i], trig[i] = row, tr
  end
  return gm.tensor(ids, {dtype = 'i32'}), gm.tensor(trig, {dtype = 'i32'})
end

doc.add('gm.data.grammar_text', 'gm.data.grammar_text{chars=1e6, seed=|generator=} -> string',
  'English-like text from a small probabilistic grammar (noun phrases with determiners, adjectives and ' ..
  'names; transitive, intransitive and prepositional verb phrases; a second clause joined by a ' ..
  'conjunction whose subject is a pronoun agreeing with the first clause\'s subject (she / he for the ' ..
  'names Anna, Clara, Eva, Grace / Ben, David, Frank, Henry, it for a noun phrase: a long-range lookup ' ..
  'that only the pronoun needs); questions), capitalised, ending in . ? or !, separated by spaces and occasional newlines; exactly ' ..
  '`chars` characters. Windows drawn from it start anywhere, so position 0 of a window carries no ' ..
  'special content (the attention-sink probe). Feed it to gm.data.CharCorpus_from_string.')
doc.add('gm.data.copy_arithmetic_text',
  'gm.data.copy_arithmetic_text{chars=1e6, hard_fraction=0.5, digits=3, copy_min=3, copy_max=8, seed=|generator=} ' ..
  '-> text, kinds [chars] i32, answer [chars] i32',
  'A character corpus of easy and hard segments, one per line: copy segments "c abcd=abcd;" (a random ' ..
  'lower-case word of copy_min..copy_max letters, then the same word) and addition segments ' ..
  '"a 123+45=168;" (operands uniform in 0 .. 10^digits - 1), a segment being hard with probability ' ..
  'hard_fraction. kinds[i] is 0 for a character of a copy segment and 1 for one of an addition segment ' ..
  '(0-based character i), so losses and routing statistics can be split by difficulty (dynamic routing, ' ..
  'Huang et al. 2024); answer[i] is 1 for the characters after "=" and before ";" (the copied word or the ' ..
  'sum: determined by the text before them, trivially for a copy, by carrying digits for a sum).')
doc.add('gm.data.bigram_backcopy',
  'gm.data.bigram_backcopy{n=, seq_len=128, vocab=64, triggers=3, successors=4, seed=|generator=} ' ..
  '-> ids [n, seq_len] i32, triggered [n, seq_len] i32',
  'The bigram-backcopy task of Guo et al. 2024 ("Active-dormant attention heads"), the smallest known ' ..
  'setting where attention sinks form: every sequence starts with BOS (id = vocab); tokens follow a fixed ' ..
  'random Markov chain (each token has `successors` successors with random weights), except after one of ' ..
  'the `triggers` tokens 0 .. triggers-1, where the next token copies the token before the trigger ' ..
  '(triggered[i, t] = 1 marks those positions). A head that copies is needed only after triggers and is ' ..
  'dormant elsewhere: softmax attention parks it on BOS (the sink).')

return M
