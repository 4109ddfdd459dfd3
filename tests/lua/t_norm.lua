-- t_norm.lua: the fused norms gm.layer_norm and gm.rms_norm (and gm.nn.functional's forms that
-- call them) against the composition of pointwise and reduce ops they replace: values and
-- gradients in f64 (1e-12) and f32 (1e-6), finite-difference gradchecks of x, weight and bias,
-- several trailing dims, one-element rows, numbers as weight/bias, non-contiguous x, eps, empty
-- tensors, the same bits for 1 and 4 threads, and the error messages.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'
local F = gm.nn.functional

local f64 = {dtype = 'f64'}

-- The compositions F.layer_norm and F.rms_norm used before the fused ops (dims: the normalised dims).
local function ln_ref(x, dims, w, b, eps)
  local xc = x - x:mean(dims, true)
  local y = xc * ((xc * xc):mean(dims, true) + (eps or 1e-5)):rsqrt()
  if w then y = y * w end
  if b then y = y + b end
  return y
end
local function rms_ref(x, dims, w, eps)
  local y = x * ((x * x):mean(dims, true) + (eps or 1e-6)):rsqrt()
  if w then y = y * w end
  return y
end

-- max |a - b| / (1 + |b|) over all elements
local function rel_err(a, b)
  return ((a - b):abs() / (b:abs() + 1)):max():item()
end

local function trailing(x, n)
  local dims, shape = {}, {}
  for i = 1, n do
    dims[i] = x:dim() - n + i - 1
    shape[i] = x.shape[x:dim() - n + i]
  end
  return dims, shape
end

local function leaf(t) return t:detach():requires_grad_(true) end

-- ---- values and gradients against the composition, f64 ---------------------------------------
-- {shape of x, trailing dims normalised, eps (nil: default)}
local cases = {
  {{3, 5}, 1}, {{2, 3, 4}, 2}, {{4, 1}, 1}, {{7}, 1}, {{2, 3, 4}, 3, 0.1}, {{5, 16}, 1, 1e-3},
  {{3, 37}, 1}, -- a row length that is not a multiple of the 4 partial sums
}
for ci, c in ipairs(cases) do
  local shape, n, eps = c[1], c[2], c[3]
  local label = ('[%s] n=%d%s'):format(table.concat(shape, ', '), n, eps and (' eps=' .. eps) or '')
  gm.manual_seed(100 + ci)
  local x = gm.randn(shape, f64)
  local dims, ts = trailing(x, n)
  local w, b = gm.randn(ts, f64) * 0.5 + 1, gm.randn(ts, f64)
  local g = gm.randn(shape, f64)
  local opts = {dim = -n, eps = eps}
  for _, affine in ipairs {true, false} do
    local tag = label .. (affine and ' affine' or ' no affine')
    -- layer_norm
    local xa, wa, ba = leaf(x), leaf(w), leaf(b)
    local xr, wr, br = leaf(x), leaf(w), leaf(b)
    local y = affine and gm.layer_norm(xa, wa, ba, opts) or gm.layer_norm(xa, 1, 0, opts)
    local yr = affine and ln_ref(xr, dims, wr, br, eps) or ln_ref(xr, dims, nil, nil, eps)
    tap.ok(tap.same_shape(y.shape, shape), 'layer_norm ' .. tag .. ': shape of x')
    tap.ok(rel_err(y, yr) < 1e-12, 'layer_norm ' .. tag .. ': values match the composition')
    y:backward(g)
    yr:backward(g)
    tap.ok(rel_err(xa.grad, xr.grad) < 1e-12, 'layer_norm ' .. tag .. ': dx matches the composition')
    if affine then
      tap.ok(rel_err(wa.grad, wr.grad) < 1e-12 and rel_err(ba.grad, br.grad) < 1e-12,
             'layer_norm ' .. tag .. ': dweight and dbias match the composition')
    end
    -- rms_norm
    xa, wa, xr, wr = leaf(x), leaf(w), leaf(x), leaf(w)
    y = affine and gm.rms_norm(xa, wa, opts) or gm.rms_norm(xa, 1, opts)
    yr = affine and rms_ref(xr, dims, wr, eps) or rms_ref(xr, dims, nil, eps)
    tap.ok(rel_err(y, yr) < 1e-12, 'rms_norm ' .. tag .. ': values match the composition')
    y:backward(g)
    yr:backward(g)
    tap.ok(rel_err(xa.grad, xr.grad) < 1e-12 and (not affine or rel_err(wa.grad, wr.grad) < 1e-12),
           'rms_norm ' .. tag .. ': gradients match the composition')
  end
end

-- one-element rows: y = bias, dx = 0 (x - mean is exactly 0)
do
  local x = leaf(gm.randn({4, 1}, f64))
  local y = gm.layer_norm(x, gm.tensor({2}, f64), gm.tensor({0.5}, f64))
  tap.all_close(y:totable(), {{0.5}, {0.5}, {0.5}, {0.5}}, 0, 'layer_norm of one-element rows is the bias')
  y:sum():backward()
  tap.all_close(x.grad:totable(), {{0}, {0}, {0}, {0}}, 0, 'layer_norm of one-element rows: dx = 0')
end

-- ---- finite-difference gradchecks (f64) of x, weight and bias ------------------------------------
local function gradcheck(label, f, inputs)
  local ok, err, worst = pcall(gm.gradcheck, f, inputs)
  local detail = ok and worst and ('worst: input %d element %d analytic %.6g numeric %.6g'):format(
    worst.input, worst.index, worst.analytic, worst.numeric) or tostring(err)
  tap.ok(ok and err < 1e-6, ('gradcheck %s: %s'):format(label, ok and ('%.1e'):format(err) or 'error'), detail)
end
for ci, c in ipairs {{{3, 6}, 1}, {{2, 3, 4}, 2}, {{5, 1}, 1}, {{9}, 1}} do
  local shape, n = c[1], c[2]
  gm.manual_seed(200 + ci)
  local x = gm.randn(shape, f64)
  local _, ts = trailing(x, n)
  local w, b = gm.randn(ts, f64) * 0.5 + 1, gm.randn(ts, f64)
  local label = ('[%s] n=%d'):format(table.concat(shape, ', '), n)
  gradcheck('layer_norm ' .. label, function(xx, ww, bb) return gm.layer_norm(xx, ww, bb, {dim = -n}) end, {x, w, b})
  gradcheck('layer_norm ' .. label .. ' eps=0.5', function(xx, ww, bb)
    return gm.layer_norm(xx, ww, bb, {dim = -n, eps = 0.5}) end, {x, w, b})
  gradcheck('rms_norm ' .. label, function(xx, ww) return gm.rms_norm(xx, ww, {dim = -n}) end, {x, w})
  gradcheck('F.layer_norm ' .. label, function(xx, ww, bb) return F.layer_norm(xx, ts, ww, bb) end, {x, w, b})
  gradcheck('F.layer_norm ' .. label .. ' without affine', function(xx) return F.layer_norm(xx, ts) end, {x})
  gradcheck('F.rms_norm ' .. label, function(xx, ww) return F.rms_norm(xx, ts, ww, 1e-4) end, {x, w})
end
-- numbers (0-dim tensors) as weight and bias: their gradients are the sums over the row
do
  local x = gm.randn({3, 4}, f64)
  gradcheck('layer_norm with 0-dim weight and bias', function(xx, ww, bb) return gm.layer_norm(xx, ww, bb) end,
            {x, gm.tensor(1.5, f64), gm.tensor(-0.25, f64)})
  gradcheck('rms_norm with a 0-dim weight', function(xx, ww) return gm.rms_norm(xx, ww) end, {x, gm.tensor(0.7, f64)})
end

-- only some inputs need a gradient: the others get none, the needed ones are right
do
  local x, w, b = gm.randn({6, 5}, f64), leaf(gm.randn({5}, f64)), gm.randn({5}, f64)
  local g = gm.randn({6, 5}, f64)
  gm.layer_norm(x, w, b):backward(g)
  local wr = leaf(w)
  ln_ref(x, {1}, wr, b):backward(g)
  tap.ok(rel_err(w.grad, wr.grad) < 1e-12 and x.grad == nil, 'layer_norm: dweight alone when only weight needs it')
  local xa = leaf(x)
  gm.rms_norm(xa, w:detach()):backward(g)
  local xr = leaf(x)
  rms_ref(xr, {1}, w:detach()):backward(g)
  tap.ok(rel_err(xa.grad, xr.grad) < 1e-12, 'rms_norm: dx alone when only x needs it')
  local bb = leaf(b)
  gm.layer_norm(x, w:detach(), bb):backward(g)
  tap.ok(rel_err(bb.grad, g:sum(0)) < 1e-12, 'layer_norm: dbias alone (the column sums of g) when only bias needs it')
end

-- ---- gm.nn.functional against the old composition, f32 (~1e-6) and f64 (1e-12) ------------------
for _, dt in ipairs {'f32', 'f64'} do
  local tol = dt == 'f32' and 2e-6 or 1e-12
  gm.manual_seed(7)
  local x = gm.randn({64, 3, 37}, {dtype = dt}) * 3 + 1 -- rows of 37: blocks of 16, of 4 and a tail
  local w, b = gm.randn({3, 37}, {dtype = dt}), gm.randn({3, 37}, {dtype = dt})
  local g = gm.randn({64, 3, 37}, {dtype = dt})
  for _, n in ipairs {1, 2} do
    local ns = n == 1 and 37 or {3, 37}
    local wn, bn = n == 1 and w[0] or w, n == 1 and b[0] or b
    local dims = n == 1 and {2} or {1, 2}
    local xa, wa, ba, xr, wr, br = leaf(x), leaf(wn), leaf(bn), leaf(x), leaf(wn), leaf(bn)
    local y, yr = F.layer_norm(xa, ns, wa, ba), ln_ref(xr, dims, wr, br)
    y:backward(g)
    yr:backward(g)
    local e = math.max(rel_err(y, yr), rel_err(xa.grad, xr.grad), rel_err(wa.grad, wr.grad) / 64,
                       rel_err(ba.grad, br.grad) / 64)
    tap.ok(e < tol, ('F.layer_norm %s n=%d: values and gradients match the composition (%.1e)'):format(dt, n, e))
    xa, wa, xr, wr = leaf(x), leaf(wn), leaf(x), leaf(wn)
    y, yr = F.rms_norm(xa, ns, wa), rms_ref(xr, dims, wr)
    y:backward(g)
    yr:backward(g)
    e = math.max(rel_err(y, yr), rel_err(xa.grad, xr.grad), rel_err(wa.grad, wr.grad) / 64)
    tap.ok(e < tol, ('F.rms_norm %s n=%d: values and gradients match the composition (%.1e)'):format(dt, n, e))
  end
end

-- ---- layouts, sizes, threads -----------------------------------------------------------------
-- a non-contiguous x (a transpose) gives what its contiguous copy gives
do
  local base = gm.randn({6, 4}, f64)
  local xt, xc = leaf(base):transpose(0, 1), leaf(base:transpose(0, 1):contiguous())
  local w, b = gm.randn({6}, f64), gm.randn({6}, f64)
  local g = gm.randn({4, 6}, f64)
  local y1, y2 = gm.layer_norm(xt, w, b), gm.layer_norm(xc, w, b)
  tap.ok(rel_err(y1, y2) == 0, 'layer_norm of a transposed x equals that of its contiguous copy')
  y1:backward(g)
  local src = leaf(base)
  gm.layer_norm(src:transpose(0, 1), w, b):backward(g)
  local ref = leaf(base:transpose(0, 1):contiguous())
  ln_ref(ref, {1}, w, b):backward(g)
  tap.ok(rel_err(src.grad, ref.grad:transpose(0, 1)) < 1e-12, 'layer_norm of a transposed x: dx through the view')
  local r1, r2 = gm.rms_norm(base:narrow(1, 1, 2), 1), rms_ref(base:narrow(1, 1, 2):contiguous(), {1})
  tap.ok(rel_err(r1, r2) < 1e-12, 'rms_norm of a narrowed x')
end

-- empty tensors: no rows gives an empty y and zero dweight / dbias
do
  local x, w, b = leaf(gm.randn({0, 4}, f64)), leaf(gm.randn({4}, f64)), leaf(gm.randn({4}, f64))
  local y = gm.layer_norm(x, w, b)
  tap.ok(tap.same_shape(y.shape, {0, 4}), 'layer_norm of [0, 4] is [0, 4]')
  y:sum():backward()
  tap.all_close(w.grad:totable(), {0, 0, 0, 0}, 0, 'layer_norm of no rows: dweight = 0')
  tap.all_close(b.grad:totable(), {0, 0, 0, 0}, 0, 'layer_norm of no rows: dbias = 0')
end

-- rows split over threads and dweight summed in chunks: the same bits for 1 and 4 threads
do
  gm.manual_seed(11)
  local x, w, b = gm.randn {2048, 96}, gm.randn {96}, gm.randn {96}
  local g = gm.randn {2048, 96}
  local function run()
    local xa, wa, ba = leaf(x), leaf(w), leaf(b)
    local y = gm.layer_norm(xa, wa, ba)
    y:backward(g)
    local xr, wr = leaf(x), leaf(w)
    local yr = gm.rms_norm(xr, wr)
    yr:backward(g)
    return {y:sum():item(), xa.grad:abs():sum():item(), wa.grad:totable(), ba.grad:totable(),
            yr:sum():item(), xr.grad:abs():sum():item(), wr.grad:totable()}
  end
  local nt = gm.get_num_threads()
  gm.set_num_threads(1)
  local a1 = run()
  gm.set_num_threads(4)
  local a4 = run()
  gm.set_num_threads(nt)
  local same = true
  for i = 1, #a1 do
    local u, v = tap.flatten(a1[i]), tap.flatten(a4[i])
    for k = 1, #u do same = same and u[k] == v[k] end
  end
  tap.ok(same, 'layer_norm and rms_norm, forward and backward: bitwise the same for 1 and 4 threads')
  local xr, wr, br = leaf(x), leaf(w), leaf(b)
  ln_ref(xr, {1}, wr, br):backward(g)
  local xa, wa, ba = leaf(x), leaf(w), leaf(b)
  gm.layer_norm(xa, wa, ba):backward(g)
  tap.ok(rel_err(xa.grad, xr.grad) < 2e-6 and rel_err(wa.grad, wr.grad) < 2e-6 * 2048 / 100 and
         rel_err(ba.grad, br.grad) < 2e-6 * 2048 / 100, 'layer_norm [2048, 96] f32 (many chunks): gradients match the composition')
end

-- long rows: one row per chunk at first, then 2 (at most 256 chunks of partial sums)
do
  gm.manual_seed(12)
  local x, w, b = gm.randn {257, 20000}, gm.randn {20000}, gm.randn {20000}
  local g = gm.randn {257, 20000}
  local xa, wa, ba, xr, wr, br = leaf(x), leaf(w), leaf(b), leaf(x), leaf(w), leaf(b)
  gm.layer_norm(xa, wa, ba):backward(g)
  ln_ref(xr, {1}, wr, br):backward(g)
  tap.ok(rel_err(xa.grad, xr.grad) < 2e-6 and rel_err(wa.grad, wr.grad) < 1e-5 and rel_err(ba.grad, br.grad) < 1e-5,
         'layer_norm [257, 20000] f32 (129 chunks of 2 rows): gradients match the composition')
end

-- ---- errors ----------------------------------------------------------------------------------
local x = gm.randn {2, 4}
tap.errors(function() return gm.layer_norm(x, gm.ones {3}, gm.zeros {4}) end,
           'layer_norm: weight %[3%] must have the normalised shape %[4%] of x %[2, 4%]', 'weight shape error names both shapes')
tap.errors(function() return gm.layer_norm(x, gm.ones {4}, gm.zeros {2, 4}) end,
           'layer_norm: bias %[2, 4%] must have the normalised shape %[4%] of x %[2, 4%]', 'bias shape error names both shapes')
tap.errors(function() return gm.rms_norm(x, gm.ones {2, 4}, {dim = -1}) end,
           'rms_norm: weight %[2, 4%] must have the normalised shape %[4%]', 'rms_norm weight shape error')
tap.errors(function() return gm.layer_norm(x, gm.ones({4}, f64), 0) end, 'layer_norm: dtype mismatch', 'dtype mismatch')
tap.errors(function() return gm.rms_norm(gm.ones({2, 4}):to('i32'), 1) end, 'rms_norm: expected a float tensor',
           'integer x')
tap.errors(function() return gm.layer_norm(x, 1, 0, {dim = 2}) end, 'layer_norm: dim 2 out of range', 'dim out of range')
tap.errors(function() return gm.layer_norm(x, 1, 0, {eps = -1}) end, 'layer_norm: eps must be finite and >= 0',
           'negative eps')
tap.errors(function() return gm.rms_norm(gm.tensor(3), 1) end, 'rms_norm: x must have at least 1 dim', '0-dim x')
tap.errors(function() return gm.layer_norm(x, 1, 0, {epsilon = 1}) end, "unknown option 'epsilon'", 'unknown option')
tap.errors(function() return F.layer_norm(x, 3) end, 'does not end with the normalized shape', 'F.layer_norm shape error')
tap.errors(function() return F.rms_norm(x, {3, 4}) end, 'does not end with the normalized shape', 'F.rms_norm shape error')
tap.errors(function() return F.layer_norm(x, {}) end, 'normalized_shape must not be empty', 'F.layer_norm empty shape')
tap.errors(function() return F.layer_norm(x, 4, gm.ones {2}) end, 'layer_norm: weight %[2%]', 'F.layer_norm bad weight')
tap.ok((gm.layer_norm(x, 1, 0) - ln_ref(x, {1})):abs():max():item() < 1e-5, 'the session goes on after errors')

tap.done()
