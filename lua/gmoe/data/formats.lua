-- gmoe.data.formats: readers for the dataset files users already have on disk: IDX (MNIST,
-- Fashion-MNIST) and the CIFAR-10 / CIFAR-100 binary versions. Nothing downloads and nothing
-- decompresses: a gzip file is refused with the command that unpacks it. Every error names the
-- file and what is wrong with it.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local U = require 'gmoe.data.util'

local M = {}

local function slurp(path, fname)
  local s = U.read_file(path, fname)
  if path:sub(-3) == '.gz' or s:sub(1, 2) == '\31\139' then
    error(('%s: %s is gzip-compressed; gmoe does not decompress: run `gunzip -k %s` and read ' ..
           'the decompressed file'):format(fname, path, path), 3)
  end
  return s
end

-- IDX element types: code -> {name, bytes, string.unpack format, natural dtype}
local IDX_TYPES = {
  [0x08] = {'ubyte', 1, nil, 'i32'}, [0x09] = {'sbyte', 1, 'i1', 'i32'},
  [0x0B] = {'short', 2, 'i2', 'i32'}, [0x0C] = {'int', 4, 'i4', 'i32'},
  [0x0D] = {'float', 4, 'f', 'f32'}, [0x0E] = {'double', 8, 'd', 'f64'},
}

-- n big-endian values of format code from s starting at byte pos, into a 1-D tensor.
local function unpack_to_tensor(s, pos, n, code, dtype)
  local out = gm.empty({n}, {dtype = dtype})
  local CH = 4096
  local done = 0
  while done < n do
    local m = math.min(CH, n - done)
    local vals = table.pack(string.unpack('>' .. string.rep(code, m), s, pos))
    pos = vals[vals.n]
    vals[vals.n] = nil
    out:narrow(0, done, m):copy_(gm.tensor(vals, {dtype = dtype}))
    done = done + m
  end
  return out
end

--- gm.data.read_idx(path, {dtype=}) -> tensor, magic
function M.read_idx(path, opts)
  local F = 'read_idx'
  opts = opts or {}
  U.known(opts, {'dtype'}, F)
  local s = slurp(path, F)
  if #s < 4 then error(('%s: %s is truncated: %d bytes, an IDX header needs at least 4'):format(F, path, #s), 2) end
  local b1, b2, code, nd = s:byte(1, 4)
  local magic = string.unpack('>I4', s)
  local ty = IDX_TYPES[code]
  if b1 ~= 0 or b2 ~= 0 or not ty or nd < 1 or nd > 8 then
    error(('%s: %s is not an IDX file: bad magic 0x%08x (expected 0x0000TTDD: two zero bytes, a type ' ..
           'code 08/09/0B/0C/0D/0E and 1..8 dims, e.g. 0x00000803 for MNIST images, 0x00000801 for ' ..
           'labels)'):format(F, path, magic), 2)
  end
  local header = 4 + 4 * nd
  if #s < header then
    error(('%s: %s is truncated: %d bytes, its header for %d dims needs %d'):format(F, path, #s, nd, header), 2)
  end
  local shape, count = {}, 1
  for i = 1, nd do
    shape[i] = string.unpack('>I4', s, 4 * i + 1)
    count = count * shape[i]
  end
  local need = header + count * ty[2]
  if #s < need then
    error(('%s: %s is truncated: %d bytes, shape [%s] of %s needs %d'):format(
      F, path, #s, table.concat(shape, ', '), ty[1], need), 2)
  end
  if #s > need then
    error(('%s: %s has %d bytes after the data of shape [%s] of %s (expected %d bytes in all)'):format(
      F, path, #s - need, table.concat(shape, ', '), ty[1], need), 2)
  end
  local dtype = opts.dtype or ty[4]
  U.choice({dtype = dtype}, 'dtype', nil, {'f32', 'f64', 'i32'}, F)
  local flat
  if ty[3] then flat = unpack_to_tensor(s, header + 1, count, ty[3], dtype)
  else flat = U.bytes_to_tensor(s, header + 1, count, dtype) end
  return flat:reshape(shape), magic
end

local function expect_magic(path, magic, want, what)
  if magic ~= want then
    error(('load_mnist: %s has magic 0x%08x, expected 0x%08x (%s)'):format(path, magic, want, what), 3)
  end
end

-- The first of the candidate file names that exists in dir.
local function find_file(dir, names)
  for _, nm in ipairs(names) do
    local p = dir .. '/' .. nm
    if gm._C.file_kind(p) then return p end
  end
  return dir .. '/' .. names[1]
end

--- gm.data.load_mnist(dir, {split="train"}) -> X [N, 1, H, W] f32 in [0, 1], y [N] i32
function M.load_mnist(dir, opts)
  local F = 'load_mnist'
  opts = opts or {}
  U.known(opts, {'split'}, F)
  local split = U.choice(opts, 'split', 'train', {'train', 'test'}, F)
  if type(dir) ~= 'string' then error(F .. ': dir must be a string', 2) end
  local pre = split == 'train' and 'train' or 't10k'
  local ipath = find_file(dir, {pre .. '-images-idx3-ubyte', pre .. '-images.idx3-ubyte'})
  local lpath = find_file(dir, {pre .. '-labels-idx1-ubyte', pre .. '-labels.idx1-ubyte'})
  local X, im = M.read_idx(ipath, {dtype = 'f32'})
  expect_magic(ipath, im, 0x00000803, 'ubyte images, 3 dims')
  local y, lm = M.read_idx(lpath, {dtype = 'i32'})
  expect_magic(lpath, lm, 0x00000801, 'ubyte labels, 1 dim')
  if X.shape[1] ~= y.shape[1] then
    error(('%s: %s holds %d images but %s holds %d labels'):format(F, ipath, X.shape[1], lpath, y.shape[1]), 2)
  end
  return (X / 255):unsqueeze(1), y
end

-- One CIFAR binary file: records of nlab label bytes + 3072 pixel bytes (CHW, 3x32x32).
local function read_cifar_file(path, nlab, maxlab, fname, scale)
  local s = slurp(path, fname)
  local rec = nlab + 3072
  if #s == 0 then error(('%s: %s is empty'):format(fname, path), 3) end
  if #s % rec ~= 0 then
    error(('%s: %s is truncated or not in the CIFAR binary format: %d bytes is not a multiple of the ' ..
           '%d-byte record (%d label byte%s + 3072 pixel bytes): %d whole records and %d bytes over'):format(
      fname, path, #s, rec, nlab, nlab > 1 and 's' or '', #s // rec, #s % rec), 3)
  end
  local N = #s // rec
  local u = U.bytes_to_tensor(s, 1, #s, 'f32'):reshape {N, rec}
  local labels = {}
  for j = 1, nlab do
    local l = u:narrow(1, j - 1, 1):reshape {N}:to('i32')
    if l:max():item() >= maxlab[j] then
      for r, v in ipairs(l:totable()) do
        if v >= maxlab[j] then
          error(('%s: %s: record %d has label %d, outside 0..%d%s'):format(fname, path, r - 1, v, maxlab[j] - 1,
            nlab == 1 and ' (a CIFAR-100 file? use read_cifar100)' or ''), 3)
        end
      end
    end
    labels[j] = l
  end
  local X = u:narrow(1, nlab, 3072):contiguous():reshape {N, 3, 32, 32}
  if scale then X = X / 255 end
  return X, labels
end

local function read_cifar(paths, opts, nlab, maxlab, fname)
  opts = opts or {}
  U.known(opts, {'scale'}, fname)
  local scale = opts.scale ~= false
  if type(paths) == 'string' then paths = {paths} end
  if type(paths) ~= 'table' or #paths == 0 then error(fname .. ': expects a path or a list of paths', 3) end
  local xs, ls = {}, {}
  for i, p in ipairs(paths) do
    local X, labels = read_cifar_file(p, nlab, maxlab, fname, scale)
    xs[i] = X
    for j = 1, nlab do ls[j] = ls[j] or {}; ls[j][i] = labels[j] end
  end
  local X = #xs == 1 and xs[1] or gm.cat(xs, 0)
  for j = 1, nlab do ls[j] = #ls[j] == 1 and ls[j][1] or gm.cat(ls[j], 0) end
  return X, ls
end

--- gm.data.read_cifar10(path | {paths}, {scale=true}) -> X [N, 3, 32, 32] f32, y [N] i32
function M.read_cifar10(paths, opts)
  local X, ls = read_cifar(paths, opts, 1, {10}, 'read_cifar10')
  return X, ls[1]
end

--- gm.data.read_cifar100(path | {paths}, {scale=true}) -> X, fine [N] i32, coarse [N] i32
function M.read_cifar100(paths, opts)
  local X, ls = read_cifar(paths, opts, 2, {20, 100}, 'read_cifar100')
  return X, ls[2], ls[1]
end

--- gm.data.load_cifar10(dir, {split="train", scale=true}) -> X, y
function M.load_cifar10(dir, opts)
  opts = opts or {}
  U.known(opts, {'split', 'scale'}, 'load_cifar10')
  local split = U.choice(opts, 'split', 'train', {'train', 'test'}, 'load_cifar10')
  if type(dir) ~= 'string' then error('load_cifar10: dir must be a string', 2) end
  local paths = {}
  if split == 'train' then
    for i = 1, 5 do paths[i] = dir .. '/data_batch_' .. i .. '.bin' end
  else
    paths[1] = dir .. '/test_batch.bin'
  end
  local X, ls = read_cifar(paths, {scale = opts.scale}, 1, {10}, 'load_cifar10')
  return X, ls[1]
end

doc.add('gm.data.read_idx', 'gm.data.read_idx(path, {dtype=}) -> tensor, magic',
  'Reads an IDX file (the MNIST / Fashion-MNIST format): a big-endian magic 0x0000TTDD (TT the ' ..
  'element type: 08 ubyte, 09 sbyte, 0B short, 0C int, 0D float, 0E double; DD the number of ' ..
  'dims), DD big-endian u32 sizes, then the values row-major. Returns the values with that shape ' ..
  '(0x00000803: images [N, rows, cols]; 0x00000801: labels [N]) as dtype (default i32 for integer ' ..
  'types, f32/f64 for float/double) and the magic. Files ending in .gz (or starting with the gzip ' ..
  'magic) are refused with the gunzip command to run; a bad magic, a truncated file or bytes after ' ..
  'the data are errors naming the path.')
doc.add('gm.data.load_mnist', 'gm.data.load_mnist(dir, {split="train"|"test"}) -> X [N, 1, 28, 28] f32, y [N] i32',
  'Reads MNIST or Fashion-MNIST from dir: {train,t10k}-images-idx3-ubyte (magic 0x00000803) and ' ..
  '{train,t10k}-labels-idx1-ubyte (0x00000801), also the *.idx3-ubyte spelling; pixels are scaled ' ..
  'to [0, 1]. Decompress the .gz files first (gunzip -k).')
doc.add('gm.data.read_cifar10', 'gm.data.read_cifar10(path | {paths}, {scale=true}) -> X [N, 3, 32, 32] f32, y [N] i32',
  'Reads CIFAR-10 binary files (data_batch_*.bin, test_batch.bin): records of 1 label byte (0..9) ' ..
  'and 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32: CHW). Pixels are scaled to ' ..
  '[0, 1] (scale=false keeps 0..255). Several paths are concatenated in order. A size that is not ' ..
  'a multiple of 3073 (truncated) or a label above 9 is an error naming the path and the record.')
doc.add('gm.data.read_cifar100', 'gm.data.read_cifar100(path | {paths}, {scale=true}) -> X, fine [N] i32, coarse [N] i32',
  'Reads CIFAR-100 binary files (train.bin, test.bin): records of a coarse label byte (0..19), a ' ..
  'fine label byte (0..99) and 3072 pixel bytes (CHW), as read_cifar10.')
doc.add('gm.data.load_cifar10', 'gm.data.load_cifar10(dir, {split="train"|"test", scale=true}) -> X, y',
  'Reads the CIFAR-10 binary distribution from dir (the cifar-10-batches-bin folder): ' ..
  'data_batch_1..5.bin for "train" (50000 images), test_batch.bin for "test" (10000).')

return M
