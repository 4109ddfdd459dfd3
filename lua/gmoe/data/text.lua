-- gmoe.data.text: a character-level corpus for small language-model experiments: any text file
-- (or string) becomes a sorted vocabulary, i32 token ids, a train/val split and random
-- contiguous windows drawn from a generator.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local U = require 'gmoe.data.util'

local M = {}

local Corpus = {}
Corpus.__index = Corpus
Corpus.__name = 'gm.data.CharCorpus'

-- The symbols of text: UTF-8 characters (level "char") or single bytes (level "byte").
local function symbols(text, level)
  local out = {}
  if level == 'byte' then
    for i = 1, #text do out[i] = text:sub(i, i) end
  else
    for _, code in utf8.codes(text) do out[#out + 1] = utf8.char(code) end
  end
  return out
end

local function build(text, opts, source)
  local F = 'CharCorpus'
  U.known(opts, {'level', 'val_fraction'}, F)
  local level = opts.level
  if level == nil then level = utf8.len(text) and 'char' or 'byte' end
  level = U.choice({level = level}, 'level', 'char', {'char', 'byte'}, F)
  if level == 'char' and not utf8.len(text) then
    local _, bad = utf8.len(text)
    error(('%s: %s is not valid UTF-8 (byte %d); use level="byte"'):format(F, source, bad), 3)
  end
  local frac = U.num(opts, 'val_fraction', 0.1, F)
  if frac < 0 or frac >= 1 then error(F .. ': val_fraction must be in [0, 1), got ' .. frac, 3) end
  local syms = symbols(text, level)
  local seen, vocab = {}, {}
  for _, s in ipairs(syms) do
    if not seen[s] then seen[s] = true; vocab[#vocab + 1] = s end
  end
  table.sort(vocab) -- byte order: for UTF-8 this is code point order
  local stoi = {}
  for i, s in ipairs(vocab) do stoi[s] = i - 1 end
  local self = setmetatable({vocab = vocab, stoi = stoi, level = level, source = source}, Corpus)
  local ids = {}
  for i, s in ipairs(syms) do ids[i] = stoi[s] end
  self.data = gm.tensor(ids, {dtype = 'i32'})
  local n = #ids
  local n_val = math.floor(n * frac)
  self.train = self.data:narrow(0, 0, n - n_val)
  self.val = self.data:narrow(0, n - n_val, n_val)
  self.vocab_size = #vocab
  return self
end

--- gm.data.CharCorpus(path, opts) -> corpus
function M.CharCorpus(path, opts)
  local text = U.read_file(path, 'CharCorpus') -- raises when it cannot read
  return build(text, opts or {}, "'" .. path .. "'")
end

--- gm.data.CharCorpus_from_string(text, opts) -> corpus
function M.CharCorpus_from_string(text, opts)
  if type(text) ~= 'string' then error('CharCorpus_from_string: text must be a string', 2) end
  return build(text, opts or {}, 'the text')
end

--- corpus:encode(str) -> [n] i32
function Corpus:encode(str)
  local ids = {}
  for i, s in ipairs(symbols(str, self.level)) do
    local id = self.stoi[s]
    if not id then error(('encode: symbol %q (position %d) is not in the vocabulary'):format(s, i), 2) end
    ids[i] = id
  end
  return gm.tensor(ids, {dtype = 'i32'})
end

--- corpus:decode(ids) -> string (ids: an i32 tensor or a Lua array of 0-based ids)
function Corpus:decode(ids)
  if gm.is_tensor(ids) then
    if ids:dim() ~= 1 then error('decode: expects a 1-D tensor of ids, got ' .. ids:dim() .. ' dims', 2) end
    ids = ids:totable()
  end
  local out = {}
  for i, id in ipairs(ids) do
    local s = self.vocab[math.tointeger(id) and id + 1 or -1]
    if not s then error(('decode: id %s at %d is outside 0..%d'):format(tostring(id), i, #self.vocab - 1), 2) end
    out[i] = s
  end
  return table.concat(out)
end

--- corpus:batch(split, B, T, {generator=g}) -> x [B, T] i32, y [B, T] i32
function Corpus:batch(split, B, T, opts)
  opts = opts or {}
  local src = self[split]
  if (split ~= 'train' and split ~= 'val') or not src then
    error('batch: split must be "train" or "val", got ' .. tostring(split), 2)
  end
  if math.type(B) ~= 'integer' or B < 1 or math.type(T) ~= 'integer' or T < 1 then
    error('batch: B and T must be positive integers', 2)
  end
  local n = src.shape[1]
  if n < T + 1 then
    error(('batch: the %s split has %d tokens, fewer than T + 1 = %d'):format(split, n, T + 1), 2)
  end
  local starts = gm.randint(0, n - T, {B, 1}, {generator = U.generator(opts, 'batch')})
  local idx = starts + gm.arange(0, T + 1):reshape {1, T + 1} -- [B, T+1]
  local w = src:index_select(0, idx:reshape {B * (T + 1)}):reshape {B, T + 1}
  return w:narrow(1, 0, T), w:narrow(1, 1, T)
end

function Corpus:__tostring()
  return ('CharCorpus(%s: %d symbols, vocab %d (%s), train %d, val %d)'):format(
    self.source, self.data.shape[1], #self.vocab, self.level, self.train.shape[1], self.val.shape[1])
end

doc.add('gm.data.CharCorpus', 'gm.data.CharCorpus(path, {level="char"|"byte", val_fraction=0.1}) -> corpus',
  'Reads a text file into a character-level corpus: corpus.vocab (the sorted unique symbols, ' ..
  'id i is vocab[i + 1]), corpus.stoi, corpus.vocab_size, corpus.data (all ids, [n] i32), ' ..
  'corpus.train and corpus.val (the first 1 - val_fraction and the last val_fraction of the ' ..
  'text, views of data). level "char" takes UTF-8 characters (the default when the file is valid ' ..
  'UTF-8), "byte" single bytes (the default otherwise). Methods: corpus:encode(str) -> [n] i32, ' ..
  'corpus:decode(ids) -> string (decode(encode(s)) == s), corpus:batch(split, B, T, ' ..
  '{generator=g}) -> x [B, T], y [B, T] i32: B windows [B, T+1] starting uniformly in ' ..
  '0 .. n-T-1 of the split, x = window[:, :T], y = window[:, 1:] (next-symbol targets). A missing ' ..
  'file is an error naming the path.')
doc.add('gm.data.CharCorpus_from_string', 'gm.data.CharCorpus_from_string(text, opts) -> corpus',
  'gm.data.CharCorpus on a Lua string instead of a file (same options and methods).')

return M
