-- gmoe.data (gm.data): batching over tensors (DataLoader, loop), the synthetic generators of the
-- reproduced papers (gaussian_moe, mtl_regression, mqar, shapes), a character-level corpus, and
-- readers for IDX (MNIST), CIFAR binary files and MovieLens ratings. Generators are seeded ({generator=g} or
-- {seed=s}); nothing here downloads. The submodules gmoe.data.<x> hold each part.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local U = require 'gmoe.data.util'

local M = {}
local unpack = table.unpack

-- ---- DataLoader -----------------------------------------------------------------------------------
local DataLoader = {}
DataLoader.__index = DataLoader
DataLoader.__name = 'gm.data.DataLoader'

-- data: a tensor, an array of tensors, or a table of named tensors; all share dim 0.
local function read_data(data)
  if gm.is_tensor(data) then return 'single', {data}, nil end
  if type(data) ~= 'table' then
    error('DataLoader: data must be a tensor or a table of tensors, got ' .. type(data), 3)
  end
  local tensors, names = {}, nil
  if #data > 0 then
    for i, t in ipairs(data) do
      if not gm.is_tensor(t) then error(('DataLoader: data[%d] is not a tensor (%s)'):format(i, type(t)), 3) end
      tensors[i] = t
    end
    return 'list', tensors, nil
  end
  names = {}
  for k in pairs(data) do names[#names + 1] = k end
  if #names == 0 then error('DataLoader: data is an empty table', 3) end
  table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
  for i, k in ipairs(names) do
    if not gm.is_tensor(data[k]) then
      error(('DataLoader: data.%s is not a tensor (%s)'):format(tostring(k), type(data[k])), 3)
    end
    tensors[i] = data[k]
  end
  return 'named', tensors, names
end

function M.DataLoader(data, opts)
  opts = opts or {}
  U.known(opts, {'batch_size', 'shuffle', 'drop_last', 'generator', 'seed'}, 'DataLoader')
  local kind, tensors, names = read_data(data)
  local n
  for i, t in ipairs(tensors) do
    if t:dim() == 0 then error('DataLoader: tensors need a dim 0 to batch over, got a 0-dim tensor', 2) end
    if not n then n = t.shape[1]
    elseif t.shape[1] ~= n then
      error(('DataLoader: tensors differ in dim 0: [%s] has %d, [%s] has %d'):format(
        table.concat(tensors[1].shape, ', '), n, table.concat(t.shape, ', '), t.shape[1]), 2)
    end
  end
  local self = setmetatable({
    kind = kind, tensors = tensors, names = names, n = n,
    batch_size = U.int(opts, 'batch_size', 1, 1, 'DataLoader'),
    shuffle = opts.shuffle and true or false, drop_last = opts.drop_last and true or false,
    generator = U.generator(opts, 'DataLoader'), epoch = 0,
  }, DataLoader)
  return self
end

function DataLoader:__len()
  if self.drop_last then return self.n // self.batch_size end
  return (self.n + self.batch_size - 1) // self.batch_size
end

function DataLoader:__tostring()
  local shapes = {}
  for i, t in ipairs(self.tensors) do
    shapes[i] = (self.names and (tostring(self.names[i]) .. '=') or '') .. t.dtype .. '[' .. table.concat(t.shape, ', ') .. ']'
  end
  return ('DataLoader(%s; batch_size=%d, shuffle=%s, drop_last=%s, %d batches)'):format(
    table.concat(shapes, ', '), self.batch_size, tostring(self.shuffle), tostring(self.drop_last), #self)
end

-- The batch iterator of one epoch: returns a function giving (i, tensors-table) until done.
local function epoch_batches(self)
  self.epoch = self.epoch + 1
  local perm = self.shuffle and gm.randperm(self.n, {generator = self.generator}) or nil
  local nb, bs, n, i = #self, self.batch_size, self.n, 0
  return function()
    i = i + 1
    if i > nb then return nil end
    local start = (i - 1) * bs
    local len = math.min(bs, n - start)
    local idx = perm and perm:narrow(0, start, len)
    local out = {}
    for k, t in ipairs(self.tensors) do
      out[k] = idx and t:index_select(0, idx) or t:narrow(0, start, len)
    end
    return i, out
  end
end

local function as_batch(self, out)
  if self.kind ~= 'named' then return out end
  local b = {}
  for k, name in ipairs(self.names) do b[name] = out[k] end
  return b
end

--- loader:iter(): for i, xb, yb in loader:iter() do ... end (one epoch; i counts from 1).
function DataLoader:iter()
  local next_batch = epoch_batches(self)
  return function()
    local i, out = next_batch()
    if not i then return nil end
    if self.kind == 'named' then return i, as_batch(self, out) end
    return i, unpack(out)
  end
end

--- loader:batches(): for batch, i in loader:batches() do ... end; batch = {xb, yb} (or named).
function DataLoader:batches()
  local next_batch = epoch_batches(self)
  return function()
    local i, out = next_batch()
    if not i then return nil end
    return as_batch(self, out), i
  end
end

doc.add('gm.data.DataLoader',
  'gm.data.DataLoader(data, {batch_size=1, shuffle=false, drop_last=false, generator=g | seed=s})',
  'Batches over tensors that share dim 0. data is a tensor, an array of tensors {x, y}, or a ' ..
  'table of named tensors {x=..., y=...}. `for i, xb, yb in loader:iter() do` runs one epoch ' ..
  '(i counts batches from 1, like ipairs; named data gives i, batch-table); ' ..
  '`for batch, i in loader:batches() do` gives the batch as a table. `#loader` is the number of ' ..
  'batches: ceil(N / batch_size), or floor(N / batch_size) with drop_last. With shuffle, every ' ..
  'call to iter()/batches() starts an epoch with a fresh permutation gm.randperm(N) drawn from ' ..
  'the generator (0-based i32 indices) and gathers each batch with index_select along dim 0 (a ' ..
  'copy); the same seed gives the same sequence of epochs. Without shuffle, batches are narrow ' ..
  'views of the data in order. loader.epoch counts the epochs started.')

-- ---- loop --------------------------------------------------------------------------------------
--- gm.data.loop(loader, epochs, fn, opts) -> steps: fn(epoch, step, ...) for every batch.
function M.loop(loader, epochs, fn, opts)
  if getmetatable(loader) ~= DataLoader then error('loop: expects a gm.data.DataLoader as argument 1', 2) end
  if math.type(epochs) ~= 'integer' or epochs < 0 then
    error('loop: epochs must be a non-negative integer, got ' .. tostring(epochs), 2)
  end
  if type(fn) ~= 'function' then error('loop: fn must be a function', 2) end
  opts = opts or {}
  local steps = 0
  for epoch = 1, epochs do
    for batch, i in loader:batches() do
      steps = steps + 1
      local r
      if loader.kind == 'named' then r = fn(epoch, i, batch) else r = fn(epoch, i, unpack(batch)) end
      if r == false then return steps end
    end
    if opts.on_epoch and opts.on_epoch(epoch, steps) == false then return steps end
  end
  return steps
end

doc.add('gm.data.loop', 'gm.data.loop(loader, epochs, fn, {on_epoch=function(epoch, steps)}) -> steps',
  'Runs `epochs` epochs of a DataLoader, calling fn(epoch, step, xb, yb, ...) for every batch ' ..
  '(epoch and step count from 1; step restarts each epoch; named data gives fn(epoch, step, ' ..
  'batch)). fn returning false stops the loop, as does on_epoch returning false after an ' ..
  'epoch. Returns the number of batches run. Nothing is caught: errors and Ctrl-C propagate ' ..
  '(in the REPL, Ctrl-C stops the loop and returns to the prompt with the session intact).')

-- ---- submodules --------------------------------------------------------------------------------
for _, sub in ipairs {'synthetic', 'mqar', 'shapes', 'text', 'synthetic_text', 'formats', 'movielens'} do
  for k, v in pairs(require('gmoe.data.' .. sub)) do M[k] = v end
end

return M
