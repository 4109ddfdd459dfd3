-- t_matmul.lua: matmul values against a naive Lua triple loop: 2-D, batched with broadcast
-- batch dims, 1-D promotion, transposed (non-contiguous) operands, f32 vs f64, gradients,
-- and the shape error message.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local function rand(shape, seed)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return gm.tensor(tap.nest(tap.values(n, seed * 13, 2), shape), {dtype = 'f64'})
end

-- Naive product of two Lua matrices.
local function mm(a, b)
  local c = {}
  for i = 1, #a do
    c[i] = {}
    for j = 1, #b[1] do
      local s = 0
      for k = 1, #b do s = s + a[i][k] * b[k][j] end
      c[i][j] = s
    end
  end
  return c
end

local function transpose(a)
  local t = {}
  for j = 1, #a[1] do t[j] = {}; for i = 1, #a do t[j][i] = a[i][j] end end
  return t
end

-- ---- 2-D ---------------------------------------------------------------------------------
local a, b = rand({5, 7}, 1), rand({7, 3}, 2)
local c = gm.matmul(a, b)
tap.ok(tap.same_shape(c.shape, {5, 3}), '[5,7] @ [7,3] has shape [5,3]')
tap.all_close(c:totable(), mm(a:totable(), b:totable()), 1e-12, '2-D matmul matches the triple loop')
tap.all_close(a:matmul(b):totable(), c:totable(), 0, 'method form x:matmul(y)')

-- transposed (non-contiguous) operands go to BLAS as transposes
local at, bt = rand({7, 5}, 3):transpose(0, 1), rand({3, 7}, 4):transpose(0, 1)
tap.all_close(gm.matmul(at, bt):totable(), mm(at:totable(), bt:totable()), 1e-12, 'transposed @ transposed')
tap.all_close(gm.matmul(at, b):totable(), mm(at:totable(), b:totable()), 1e-12, 'transposed @ contiguous')
-- a narrowed inner dim is not BLAS-readable: copied first
local an = rand({5, 9}, 5):narrow(1, 1, 7)
tap.all_close(gm.matmul(an, b):totable(), mm(an:totable(), b:totable()), 1e-12, 'narrowed view @ matrix')
-- a row slice of a bigger matrix (leading dim > cols) needs no copy
local ar = rand({5, 7}, 6):narrow(0, 1, 3)
tap.all_close(gm.matmul(ar, b):totable(), mm(ar:totable(), b:totable()), 1e-12, 'row slice @ matrix')

-- ---- f32 vs f64 ----------------------------------------------------------------------------
local a32, b32 = a:to('f32'), b:to('f32')
tap.is(gm.matmul(a32, b32).dtype, 'f32', 'f32 @ f32 is f32')
tap.all_close(gm.matmul(a32, b32):totable(), c:totable(), 1e-5, 'f32 agrees with f64')
local big1, big2 = gm.randn{64, 128}, gm.randn{128, 32}
tap.all_close(gm.matmul(big1, big2):totable(), gm.matmul(big1:to('f64'), big2:to('f64')):totable(), 1e-4,
          'f32 agrees with f64 on [64,128] @ [128,32]')

-- ---- batched with broadcast batch dims -------------------------------------------------------
local xa, xb = rand({2, 1, 3, 4}, 7), rand({5, 4, 2}, 8)
local xc = gm.matmul(xa, xb)
tap.ok(tap.same_shape(xc.shape, {2, 5, 3, 2}), '[2,1,3,4] @ [5,4,2] has shape [2,5,3,2]')
local ta, tb, tc = xa:totable(), xb:totable(), xc:totable()
local ok = true
for i = 1, 2 do for j = 1, 5 do
  local want = mm(ta[i][1], tb[j])
  for r = 1, 3 do for q = 1, 2 do
    if math.abs(tc[i][j][r][q] - want[r][q]) > 1e-12 then ok = false end
  end end
end end
tap.ok(ok, 'broadcast batched matmul matches per-batch triple loops')
local bb = gm.matmul(rand({4, 2, 3}, 9), rand({4, 3, 5}, 10))
tap.ok(tap.same_shape(bb.shape, {4, 2, 5}), '[4,2,3] @ [4,3,5] has shape [4,2,5]')
local ba = gm.matmul(rand({4, 3, 2}, 11):transpose(1, 2), rand({3, 5}, 12))
tap.ok(tap.same_shape(ba.shape, {4, 2, 5}), 'batched transposed @ matrix shape')
local bat, bm = rand({4, 3, 2}, 11):transpose(1, 2):totable(), rand({3, 5}, 12):totable()
tap.all_close(ba:totable()[3], mm(bat[3], bm), 1e-12, 'batched transposed @ matrix values')

-- ---- 1-D promotion -----------------------------------------------------------------------------
local v, w = rand({7}, 13), rand({7}, 14)
local dot = gm.matmul(v, w)
tap.ok(tap.same_shape(dot.shape, {}), '1-D @ 1-D is a 0-dim dot product')
local vt, wt, s = v:totable(), w:totable(), 0
for i = 1, 7 do s = s + vt[i] * wt[i] end
tap.all_close(dot:item(), s, 1e-12, 'dot product value')
local mv = gm.matmul(a, v)
tap.ok(tap.same_shape(mv.shape, {5}), '[5,7] @ [7] has shape [5]')
tap.all_close(mv:totable(), tap.flatten(mm(a:totable(), transpose({vt}))), 1e-12, 'matrix @ vector')
local vm = gm.matmul(rand({5}, 15), a)
tap.ok(tap.same_shape(vm.shape, {7}), '[5] @ [5,7] has shape [7]')
tap.all_close(vm:totable(), mm({rand({5}, 15):totable()}, a:totable())[1], 1e-12, 'vector @ matrix')
local bv = gm.matmul(rand({2, 3, 4}, 16), rand({4}, 17))
tap.ok(tap.same_shape(bv.shape, {2, 3}), '[2,3,4] @ [4] has shape [2,3]')
local vb = gm.matmul(rand({3}, 18), rand({2, 3, 4}, 19))
tap.ok(tap.same_shape(vb.shape, {2, 4}), '[3] @ [2,3,4] has shape [2,4]')
tap.all_close(vb:totable()[2], mm({rand({3}, 18):totable()}, rand({2, 3, 4}, 19):totable()[2])[1], 1e-12,
          'vector @ batched values')
-- a strided vector (a column of a matrix)
local col = rand({7, 2}, 20):select(1, 1)
tap.all_close(gm.matmul(a, col):totable(), tap.flatten(mm(a:totable(), transpose({col:totable()}))), 1e-12,
          'matrix @ strided column vector')

-- ---- zero sizes ----------------------------------------------------------------------------------
local z = gm.matmul(gm.zeros{3, 0}, gm.zeros{0, 4})
tap.ok(tap.same_shape(z.shape, {3, 4}), '[3,0] @ [0,4] has shape [3,4]')
tap.all_close(z:totable(), {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}}, 0, 'an empty inner dim gives zeros')
tap.ok(tap.same_shape(gm.matmul(gm.zeros{0, 3}, gm.zeros{3, 2}).shape, {0, 2}), '[0,3] @ [3,2] has shape [0,2]')

-- ---- gradients -------------------------------------------------------------------------------------
local ga, gb = rand({2, 1, 3, 4}, 21), rand({5, 4, 2}, 22)
ga:requires_grad_(); gb:requires_grad_()
gm.matmul(ga, gb):sum():backward()
tap.ok(tap.same_shape(ga.grad.shape, {2, 1, 3, 4}) and tap.same_shape(gb.grad.shape, {5, 4, 2}),
       'gradients have the operand shapes (broadcast batch dims reduced)')
-- d sum(A @ B) / dA[i][k] = sum over broadcast batch and columns of B[k][:]
local gbt = gb:totable()
local want = {}
for k = 1, 4 do
  local s2 = 0
  for j = 1, 5 do for q = 1, 2 do s2 = s2 + gbt[j][k][q] end end
  want[k] = s2
end
tap.all_close(ga.grad:totable()[1][1][2], want, 1e-12, 'dA of a broadcast batched matmul')
local gv, gw2 = rand({4}, 23), rand({4}, 24)
gv:requires_grad_()
gm.matmul(gv, gw2):backward()
tap.all_close(gv.grad:totable(), gw2:totable(), 0, 'gradient of a dot product')

-- ---- errors -----------------------------------------------------------------------------------------
tap.errors(function() return gm.matmul(gm.zeros{4, 8}, gm.zeros{7, 3}) end,
           'matmul: %[4, 8%] @ %[7, 3%]: inner dims 8 and 7 differ', 'inner-dim mismatch names both shapes')
tap.errors(function() return gm.matmul(gm.zeros{2, 3, 4}, gm.zeros{3, 4, 2}) end,
           'matmul: .*batch dims', 'batch dims that do not broadcast')
tap.errors(function() return gm.matmul(gm.zeros{3}, gm.zeros{4}) end, 'inner dims 3 and 4', 'dot of different lengths')
tap.errors(function() return gm.matmul(gm.zeros{2, 2}:to('i32'), gm.zeros{2, 2}:to('i32')) end,
           'matmul.*f32 or f64', 'i32 matmul is an error')
tap.errors(function() return gm.matmul(gm.zeros{2, 2}, gm.zeros{2, 2}:to('f64')) end,
           'matmul.*dtype', 'mixed dtypes are an error')

-- The weight gradient of x @ w^T (a Linear layer) takes the transposed-operand path of the
-- backward rule (one gemm over all rows, formed so w.grad needs no transposing copy).
for _, xs in ipairs {{5, 4}, {2, 3, 4}, {4}} do
  local err = gm.gradcheck(function(x, w) return gm.matmul(x, w:t()) end,
                           {gm.randn(xs, {dtype = 'f64'}), gm.randn({3, 4}, {dtype = 'f64'})})
  tap.ok(err < 1e-6, ('gradcheck x[%s] @ w:t(): err %.2e'):format(table.concat(xs, ','), err))
end
do
  local x, w = gm.randn{6, 4}, gm.randn({3, 4}, {requires_grad = true})
  gm.matmul(x, w:t()):sum():backward()
  tap.ok(w.grad:is_contiguous(), 'w.grad of x @ w:t() is contiguous')
  tap.all_close(w.grad:totable(), x:sum(0):unsqueeze(0):expand{3, 4}:totable(), 1e-5,
                'w.grad of sum(x @ w:t()) is the column sums of x for every row')
end
-- gm.linear (fused bias) against matmul + add: rows, leading dims, a transposed (non-row-major)
-- input, a non-contiguous weight, f32 and f64.
for _, dt in ipairs{'f32', 'f64'} do
  local tol = dt == 'f32' and 1e-4 or 1e-12
  local w, b = gm.randn{7, 33}:to(dt), gm.randn{7}:to(dt)
  local cases = {{'rows', gm.randn{50, 33}:to(dt)}, {'3-D', gm.randn{2, 5, 33}:to(dt)},
                 {'transposed input', gm.randn{33, 50}:to(dt):t()}, {'vector', gm.randn{33}:to(dt)}}
  for _, cs in ipairs(cases) do
    local x = cs[2]
    local got, want = gm.linear(x, w, b), x:matmul(w:t()) + b
    tap.ok((got - want):abs():max():item() < tol, ('%s linear %s equals matmul + bias'):format(dt, cs[1]))
  end
  -- no input features: the bias for every row; no rows: an empty result, zero weight gradient
  local e = gm.linear(gm.zeros({5, 0}, {dtype = dt}), gm.zeros({7, 0}, {dtype = dt}), b)
  tap.ok(e.shape[1] == 5 and (e - b):abs():max():item() == 0, dt .. ' linear with 0 input features is the bias')
  local x0, w0 = gm.zeros({0, 33}, {dtype = dt, requires_grad = true}), w:clone():requires_grad_()
  gm.linear(x0, w0, b):sum():backward()
  tap.ok(w0.grad:abs():max():item() == 0, dt .. ' linear of 0 rows: zero weight gradient')
  local wt = gm.randn{33, 7}:to(dt):t() -- a transposed weight
  local x = gm.randn{9, 33}:to(dt)
  tap.ok((gm.linear(x, wt, b) - (x:matmul(wt:t()) + b)):abs():max():item() < tol, dt .. ' linear with a transposed weight')
end
tap.done()
