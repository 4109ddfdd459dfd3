-- gmoe.data.shapes: a procedural image classification set (filled shapes, outlines, stripes and
-- checkers on random backgrounds, with clutter and pixel noise) for the router-robustness
-- experiment when no CIFAR/MNIST files are at hand. Masks are tensor expressions over a pixel
-- grid, computed one class block at a time and shuffled at the end.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local U = require 'gmoe.data.util'

local M = {}

M.shape_classes = {'circle', 'square', 'triangle', 'cross', 'x', 'ring', 'hstripes', 'vstripes',
                   'checker', 'bar'}

-- Stripe profile [m, S] of 0/1: floor((t + phase) / (period / 2)) mod 2 at pixel centres t, with
-- period = 0.16 + 0.09 u (column 5 of P) and the phase from column col_phase.
local function profile(S, P, col_phase)
  local rows = {}
  for i, p in ipairs(P) do
    local half, row = (0.16 + 0.09 * p[5]) / 2, {}
    for j = 1, S do row[j] = math.floor(((j - 0.5) / S + p[col_phase]) / half) % 2 end
    rows[i] = row
  end
  return gm.tensor(rows)
end

local function col(P, c, f)
  local t = {}
  for i, p in ipairs(P) do t[i] = f and f(p[c]) or p[c] end
  return gm.tensor(t):reshape {#P, 1, 1}
end

-- Mask [m, S, S] (f32 0/1) of class `name` for per-image parameters P (rows of uniforms).
-- Columns of P: 1 cx, 2 cy, 3 r, 4 angle, 5 period, 6 phase x, 7 phase y.
local function mask(name, S, P, xs, ys)
  local m = #P
  local cx = col(P, 1, function(u) return 0.35 + 0.3 * u end)
  local cy = col(P, 2, function(u) return 0.35 + 0.3 * u end)
  local r = col(P, 3, function(u) return 0.18 + 0.14 * u end)
  local jitter = (name == 'cross' or name == 'x')
  local base = name == 'x' and math.pi / 4 or 0
  local function angle(u) return jitter and base + (u - 0.5) * math.pi / 6 or 2 * math.pi * u end
  local c = col(P, 4, function(u) return math.cos(angle(u)) end)
  local s = col(P, 4, function(u) return math.sin(angle(u)) end)
  local dx, dy = xs - cx, ys - cy -- [m, S, S]
  local u, v = c * dx + s * dy, c * dy - s * dx
  if name == 'circle' then return (dx * dx + dy * dy):lt(r * r) end
  if name == 'ring' then return ((dx * dx + dy * dy):sqrt() - r * 0.8):abs():lt(r * 0.2) end
  if name == 'square' then return gm.maximum(u:abs(), v:abs()):lt(r * 0.8) end
  if name == 'triangle' then -- equilateral, circumradius r: three half-planes at distance r/2
    local inside
    for kk = 0, 2 do
      local phi = -math.pi / 2 + 2 * math.pi * kk / 3
      local h = (u * math.cos(phi) + v * math.sin(phi)):lt(r * 0.5)
      inside = inside and inside * h or h
    end
    return inside
  end
  if name == 'cross' or name == 'x' then
    local au, av, w = u:abs(), v:abs(), r * 0.3
    return gm.maximum(au:lt(w) * av:lt(r), av:lt(w) * au:lt(r))
  end
  if name == 'bar' then return u:abs():lt(r * 0.22) * v:abs():lt(r) end
  local patch = gm.maximum(dx:abs(), dy:abs()):lt(r)
  if name == 'hstripes' then return patch * profile(S, P, 7):reshape {m, S, 1} end
  if name == 'vstripes' then return patch * profile(S, P, 6):reshape {m, 1, S} end
  -- checker: the xor of the two profiles
  local py, px = profile(S, P, 7):reshape {m, S, 1}, profile(S, P, 6):reshape {m, 1, S}
  return patch * (py + px - py * px * 2)
end

--- gm.data.shapes{n=, size=32, channels=1, classes=10, noise=0.05, clutter=2, normalize=false, ...} -> X, y, info
function M.shapes(opts)
  local F = 'shapes'
  opts = opts or {}
  U.known(opts, {'n', 'size', 'channels', 'classes', 'noise', 'clutter', 'normalize', 'generator', 'seed'}, F)
  local gen = U.generator(opts, F)
  local n = U.int(opts, 'n', nil, 0, F)
  local S = U.int(opts, 'size', 32, 8, F)
  local C = U.int(opts, 'channels', 1, 1, F)
  if C ~= 1 and C ~= 3 then error(F .. ': channels must be 1 or 3, got ' .. C, 2) end
  local names
  if type(opts.classes) == 'table' then
    names = {}
    for i, nm in ipairs(opts.classes) do
      local found = false
      for _, known in ipairs(M.shape_classes) do found = found or known == nm end
      if not found then
        error(('%s: unknown class %s (known: %s)'):format(F, tostring(nm), table.concat(M.shape_classes, ', ')), 2)
      end
      names[i] = nm
    end
  else
    local nc = U.int(opts, 'classes', #M.shape_classes, 1, F)
    if nc > #M.shape_classes then error(('%s: at most %d classes, got %d'):format(F, #M.shape_classes, nc), 2) end
    names = table.move(M.shape_classes, 1, nc, 1, {})
  end
  local K = #names
  if K == 0 then error(F .. ': classes is empty', 2) end
  local noise = U.num(opts, 'noise', 0.05, F)
  local clutter = U.int(opts, 'clutter', 2, 0, F)

  local grid = gm.arange(0, S):to('f32') / S + 0.5 / S
  local xs, ys = grid:reshape {1, 1, S}, grid:reshape {1, S, 1}
  local blocks, labels = {}, {}
  local f32 = {generator = gen}
  for c = 1, K do
    -- Exactly balanced: class c gets floor(n/K) images, the first n mod K classes one more.
    local m = n // K + ((c <= n % K) and 1 or 0)
    if m > 0 then
      local P = gm.rand({m, 7}, {dtype = 'f64', generator = gen}):totable()
      local mk = mask(names[c], S, P, xs, ys):unsqueeze(1) -- [m, 1, S, S]
      local bg = (gm.rand({m, C, 1, 1}, f32) * 0.45)
      local fg = gm.rand({m, C, 1, 1}, f32) * 0.45 + 0.55
      local img = bg + (fg - bg) * mk -- [m, C, S, S]
      for _ = 1, clutter do
        local Q = gm.rand({m, 3}, {dtype = 'f64', generator = gen}):totable()
        local qx, qy = col(Q, 1), col(Q, 2)
        local hs = col(Q, 3, function(u) return 0.03 + 0.03 * u end)
        local cm = gm.maximum((xs - qx):abs(), (ys - qy):abs()):lt(hs):unsqueeze(1)
        local colour = gm.rand({m, C, 1, 1}, f32)
        img = img + (colour - img) * cm
      end
      blocks[#blocks + 1] = img
      for _ = 1, m do labels[#labels + 1] = c - 1 end
    end
  end
  local X = #blocks > 0 and gm.cat(blocks, 0) or gm.zeros {0, C, S, S}
  if noise > 0 then X = X + gm.randn(X.shape, f32) * noise end
  X = X:clamp(0, 1)
  local y = gm.tensor(labels, {dtype = 'i32'})
  if n > 0 then
    local perm = gm.randperm(n, {generator = gen})
    X, y = X:index_select(0, perm), y:index_select(0, perm)
  end
  local info = {classes = names}
  if opts.normalize and n > 0 then
    local mean = X:mean({0, 2, 3}, true)
    local std = X:var({0, 2, 3}, true):sqrt()
    X = (X - mean) / std
    info.mean, info.std = mean:flatten():totable(), std:flatten():totable()
  end
  return X, y, info
end

doc.add('gm.data.shapes',
  'gm.data.shapes{n=, size=32, channels=1, classes=10 | {names}, noise=0.05, clutter=2, ' ..
  'normalize=false, generator=g | seed=s} -> X [n, C, size, size] f32, y [n] i32, info',
  'A procedural image classification set. Classes (in label order): circle, square, triangle, ' ..
  'cross, x, ring, hstripes, vstripes, checker, bar (classes=K takes the first K, or give names). ' ..
  'Each image: background colour U[0, 0.45] per channel, the shape in a foreground colour ' ..
  'U[0.55, 1] per channel, centred at U[0.35, 0.65]^2 with size r ~ U[0.18, 0.32] of the side ' ..
  '(square, triangle, ring, bar at any rotation; cross at 0 and x at 45 degrees, both +-15; ' ..
  'stripes and checker axis-aligned in a square patch, period U[0.16, 0.25] of the side, random ' ..
  'phase); then `clutter` small squares (half-side 0.03-0.06) of random colour at uniform ' ..
  'positions, Gaussian pixel noise of sd `noise`, and a clamp to [0, 1]. Classes are exactly ' ..
  'balanced (n mod K extra images go to the first classes) and shuffled. normalize=true ' ..
  'standardises each channel with the set\'s own mean and std (given in info.mean, info.std). ' ..
  'info.classes names the labels (label i is info.classes[i + 1]).')

return M
