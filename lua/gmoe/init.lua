-- gmoe: the Lua API. The C half ("gmoe.core", lua/lgmoe.c) brings tensors, every op of the
-- op table (as gm.<op> and tensor methods), constructors, RNG and autograd entry points; this
-- file adds what is naturally Lua: grad-mode scopes, gradcheck, a few tensor conveniences,
-- and the Lua submodules (optim, show).
local error = require('gmoe.errors').raise -- errors point at the caller's line
local check = require('gmoe.errors').check
local gm = require 'gmoe.core'
package.loaded['gmoe'] = gm -- submodules may require 'gmoe' while it loads

local C = gm._C
local Tensor = gm.Tensor
local unpack = table.unpack

-- ---- grad mode ---------------------------------------------------------------------------------
-- Run fn(...) with grad mode set, restoring it even when fn raises (or is interrupted).
local function with_grad(enabled, fn, ...)
  C.grad_push(enabled)
  local r = table.pack(pcall(fn, ...))
  C.grad_pop()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

--- gm.no_grad(fn, ...): call fn with autograd recording off; returns fn's results.
function gm.no_grad(fn, ...) return with_grad(false, check('gm.no_grad', 1, 'fn', fn, 'function'), ...) end
--- gm.enable_grad(fn, ...): call fn with autograd recording on (inside a no_grad region).
function gm.enable_grad(fn, ...) return with_grad(true, check('gm.enable_grad', 1, 'fn', fn, 'function'), ...) end

-- ---- kernel profiler ---------------------------------------------------------------------------
local Profile = {}
Profile.__index = Profile
Profile.__name = 'gm.Profile'
function Profile.__tostring(r)
  local out = {('%-24s %8s %12s %7s %10s'):format('kernel', 'calls', 'total ms', 'share', 'us/call')}
  for _, row in ipairs(r) do
    out[#out + 1] = ('%-24s %8d %12.3f %6.1f%% %10.2f'):format(row.kernel, row.calls, row.seconds * 1e3,
      100 * row.share, row.seconds * 1e6 / row.calls)
  end
  out[#out + 1] = ('kernels %.3f ms of %.3f ms wall (%.1f%%); the rest is Lua, dispatch and autograd'):format(
    r.total * 1e3, r.wall * 1e3, r.wall > 0 and 100 * r.total / r.wall or 0)
  return table.concat(out, '\n')
end

--- gm.profile(fn, ...): run fn(...) with the kernel profiler on; returns a report (rows of
--- {kernel, calls, seconds, share}, slowest first, with .total and .wall seconds; print it for a
--- table) followed by fn's results.
function gm.profile(fn, ...)
  if type(fn) ~= 'function' and not (getmetatable(fn) or {}).__call then
    error(('gm.profile: expected a function to run, got %s'):format(type(fn)), 2)
  end
  gm._kprof(true)
  local t0 = gm.clock()
  local r = table.pack(pcall(fn, ...))
  local wall = gm.clock() - t0
  local rows = gm._kprof(false)
  if not r[1] then error(r[2], 0) end
  local report, total = setmetatable({wall = wall}, Profile), 0
  for k, v in pairs(rows) do
    report[#report + 1] = {kernel = k, calls = v[1], seconds = v[2]}
    total = total + v[2]
  end
  table.sort(report, function(a, b) return a.seconds > b.seconds end)
  for _, row in ipairs(report) do row.share = total > 0 and row.seconds / total or 0 end
  report.total = total
  return report, unpack(r, 2, r.n)
end

-- ---- tensor conveniences --------------------------------------------------------------------
local core_to = Tensor.to
--- x:to(dtype | "cpu"): dtype conversion ("f32", "f64", "i32"); "cpu" returns x.
function Tensor.to(x, what)
  if what == 'cpu' then return x end
  return core_to(x, what)
end
function Tensor.float(x) return core_to(x, 'f32') end
function Tensor.double(x) return core_to(x, 'f64') end
function Tensor.int(x) return core_to(x, 'i32') end
function Tensor.cpu(x) return x end
function Tensor.type(x) return check('type', 1, 'x', x, 'tensor').dtype end

--- x:t(): transpose of a 1-D or 2-D tensor.
function Tensor.t(x)
  check('t', 1, 'x', x, 'tensor')
  if x:dim() > 2 then error('t: expects a tensor with <= 2 dims, got ' .. x:dim(), 2) end
  if x:dim() < 2 then return x end
  return x:transpose(0, 1)
end

--- x:split(size, dim=0): views of `size` along dim (the last may be smaller).
function Tensor.split(x, size, dim)
  check('split', 1, 'x', x, 'tensor')
  dim = dim or 0
  if math.type(size) ~= 'integer' or size <= 0 then error('split: size must be a positive integer', 2) end
  local n, parts, start = x:size(dim), {}, 0
  repeat
    local len = math.min(size, n - start)
    parts[#parts + 1] = x:narrow(dim, start, len)
    start = start + len
  until start >= n
  return parts
end

--- x:chunk(n, dim=0): at most n views of equal size along dim (the last may be smaller).
function Tensor.chunk(x, n, dim)
  check('chunk', 1, 'x', x, 'tensor')
  dim = dim or 0
  if math.type(n) ~= 'integer' or n <= 0 then error('chunk: n must be a positive integer', 2) end
  local size = (x:size(dim) + n - 1) // n
  return Tensor.split(x, math.max(size, 1), dim)
end
gm.split, gm.chunk = Tensor.split, Tensor.chunk

local function like(ctor, name)
  return function(x, opts)
    check(name, 1, 'x', x, 'tensor')
    opts = check(name, 2, 'opts', opts, 'table?') or {}
    return ctor(x.shape, {dtype = opts.dtype or x.dtype, requires_grad = opts.requires_grad,
                          generator = opts.generator})
  end
end
gm.zeros_like, gm.ones_like = like(gm.zeros, 'gm.zeros_like'), like(gm.ones, 'gm.ones_like')
gm.rand_like, gm.randn_like = like(gm.rand, 'gm.rand_like'), like(gm.randn, 'gm.randn_like')
function gm.full_like(x, v, opts)
  check('gm.full_like', 1, 'x', x, 'tensor')
  opts = check('gm.full_like', 3, 'opts', opts, 'table?') or {}
  return gm.full(x.shape, v, {dtype = opts.dtype or x.dtype})
end

-- ---- gradcheck ------------------------------------------------------------------------------
--- gm.gradcheck(f, inputs, opts) -> max_err, worst
-- Compares the gradients autograd gives for the float inputs of f with central finite
-- differences, in f64. f receives f64 copies of the inputs (i32 inputs unchanged) and returns
-- one or more tensors; their float outputs are projected on fixed random weights to a scalar.
-- Error per element: |analytic - numeric| / max(1, |numeric|). opts: eps (1e-6), seed.
function gm.gradcheck(f, inputs, opts)
  check('gm.gradcheck', 1, 'f', f, 'function')
  check('gm.gradcheck', 2, 'inputs', inputs, 'table')
  opts = check('gm.gradcheck', 3, 'opts', opts, 'table?') or {}
  local eps = opts.eps or 1e-6
  local n = inputs.n or #inputs
  local xs = {}
  for i = 1, n do
    local x = inputs[i]
    if gm.is_tensor(x) and x.dtype ~= 'i32' then
      x = x:detach():to('f64'):clone():requires_grad_()
    end
    xs[i] = x
  end
  local gen = gm.Generator(opts.seed or 7)
  local weights
  local function project(...)
    local outs = table.pack(...)
    if not weights then
      weights = {}
      for k = 1, outs.n do
        local o = outs[k]
        if gm.is_tensor(o) and o.dtype ~= 'i32' then
          weights[k] = gm.randn(o.shape, {dtype = 'f64', generator = gen})
        end
      end
    end
    local total
    for k, w in pairs(weights) do
      local term = (outs[k]:to('f64') * w):sum()
      total = total and total + term or term
    end
    if not total then error('gradcheck: f returned no float tensor', 3) end
    return total
  end
  local loss = project(f(unpack(xs, 1, n)))
  if loss.requires_grad then loss:backward() end
  local max_err, worst = 0, nil
  gm.no_grad(function()
    for i = 1, n do
      local x = xs[i]
      if gm.is_tensor(x) and x.requires_grad then
        local g = x.grad
        for j = 0, x:numel() - 1 do
          local orig = C.flat_get(x, j)
          C.flat_set(x, j, orig + eps)
          local lp = project(f(unpack(xs, 1, n))):item()
          C.flat_set(x, j, orig - eps)
          local lm = project(f(unpack(xs, 1, n))):item()
          C.flat_set(x, j, orig)
          local num = (lp - lm) / (2 * eps)
          local ana = g and C.flat_get(g, j) or 0
          local err = math.abs(ana - num) / math.max(1, math.abs(num))
          if err ~= err then err = math.huge end -- NaN never passes
          if err >= max_err then
            max_err = err
            worst = {input = i, index = j, analytic = ana, numeric = num}
          end
        end
      end
    end
  end)
  return max_err, worst
end

-- ---- printing and submodules ------------------------------------------------------------------
--- gm.show(...): print values the way the REPL does (replaceable).
function gm.show(...) return require('gmoe.show').show(...) end

-- Submodules become gm.<name>; some also add functions to gm itself when they load
-- (gmoe.checkpoint adds gm.save, gm.load, gm.save_npy, gm.load_npy).
for _, name in ipairs {'doc', 'optim', 'nn', 'attack', 'data', 'checkpoint', 'plot', 'notebook', 'schedule', 'gates', 'stats', 'experiment'} do
  if package.preload['gmoe.' .. name] then gm[name] = require('gmoe.' .. name) end
end

return gm
