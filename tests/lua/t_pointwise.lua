-- t_pointwise.lua: value checks of the elementwise ops (core/ops/pointwise.def) against Lua
-- math on x:totable(): binary ops and broadcasting, unary activations (stable at large |x|),
-- comparisons, where/masked_fill, i32 arithmetic, operators, views and error messages.
-- Gradients are checked generically by the t_ops_* tests; here only the documented choices.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local function shape_str(s) return '{' .. table.concat(s, ',') .. '}' end

-- Every element of got (a tensor) within tol of want (a flat array); NaN must match NaN.
local function all_close(got, want, tol, name)
  local g = tap.flatten(got:totable())
  if #g ~= #want then return tap.ok(false, name, ('%d elements, want %d'):format(#g, #want)) end
  for i = 1, #g do
    local a, b = g[i], want[i]
    local ok = (a ~= a and b ~= b) or a == b or math.abs(a - b) <= tol * (1 + math.abs(b))
    if not ok then return tap.ok(false, name, ('element %d: got %.10g want %.10g'):format(i, a, b)) end
  end
  return tap.ok(true, name)
end

local function map(t, f) local r = {} for i, v in ipairs(t) do r[i] = f(v, i) end return r end

local function sigmoid(x)
  if x >= 0 then return 1 / (1 + math.exp(-x)) end
  local e = math.exp(x)
  return e / (1 + e)
end

local function softplus(x) return math.max(x, 0) + math.log(1 + math.exp(-math.abs(x))) end

local function trunc(a) return a >= 0 and math.floor(a) or math.ceil(a) end

-- ---- binary ops on equal shapes, f32 and f64 ---------------------------------------------
local xv = {{1.5, -2, 0.25}, {3, -0.5, 4}}
local yv = {{0.5, 2, -1}, {3, 1.5, -0.25}}
local fx, fy = tap.flatten(xv), tap.flatten(yv)
local binary = {
  add = function(a, b) return a + b end, sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end, div = function(a, b) return a / b end,
  maximum = math.max, minimum = math.min,
}
for _, dt in ipairs{'f32', 'f64'} do
  local x, y = gm.tensor(xv, {dtype = dt}), gm.tensor(yv, {dtype = dt})
  local tol = dt == 'f32' and 1e-6 or 1e-12
  for name, f in pairs(binary) do
    local want = map(fx, function(a, i) return f(a, fy[i]) end)
    all_close(gm[name](x, y), want, tol, ('%s %s'):format(name, dt))
    tap.is(gm[name](x, y).dtype, dt, ('%s keeps %s'):format(name, dt))
  end
  local px = x:abs() + 0.1
  local fpx = map(fx, function(a) return math.abs(a) + 0.1 end)
  all_close(gm.pow(px, y), map(fpx, function(a, i) return a ^ fy[i] end), tol * 10, 'pow ' .. dt)
  all_close(px:pow(2), map(fpx, function(a) return a * a end), tol, 'pow by a number ' .. dt)
end

-- ---- broadcasting -------------------------------------------------------------------------
do
  local a = gm.tensor{{1}, {2}, {3}}          -- [3,1]
  local b = gm.tensor{{10, 20, 30, 40}}       -- [1,4]
  local s = a + b
  tap.is(shape_str(s.shape), '{3,4}', '[3,1] + [1,4] has shape [3,4]')
  local want = {}
  for i = 1, 3 do for j = 1, 4 do want[#want + 1] = i + 10 * j end end
  all_close(s, want, 0, '[3,1] + [1,4] values')
  all_close(b - a, map(want, function(v, k) local i = (k - 1) // 4 + 1; return v - 2 * i end), 0,
            '[1,4] - [3,1] values')

  local m = gm.tensor{{1, 2, 3}, {4, 5, 6}}
  all_close(m + 1, {2, 3, 4, 5, 6, 7}, 0, '[2,3] + number')
  all_close(m * gm.tensor(2), {2, 4, 6, 8, 10, 12}, 0, '[2,3] * 0-dim tensor')
  all_close(gm.tensor(2) - m, {1, 0, -1, -2, -3, -4}, 0, '0-dim - [2,3]')
  all_close(m + gm.tensor{{100}}, {101, 102, 103, 104, 105, 106}, 0, '[2,3] + [1,1]')
  all_close(m + gm.tensor{100, 200, 300}, {101, 202, 303, 104, 205, 306}, 0, '[2,3] + [3] (rank grows)')
  tap.is(shape_str((gm.tensor(1) + gm.tensor(2)).shape), '{}', '0-dim + 0-dim is 0-dim')
  tap.is((gm.tensor(1) + gm.tensor(2)):item(), 3, '0-dim + 0-dim value')
  local r = gm.zeros{2, 1, 3} + gm.ones{4, 1}
  tap.is(shape_str(r.shape), '{2,4,3}', '[2,1,3] + [4,1] has shape [2,4,3]')

  -- 0-size tensors
  local z = gm.zeros{0, 3} + gm.ones{1, 3}
  tap.is(shape_str(z.shape), '{0,3}', '[0,3] + [1,3] has shape [0,3]')
  tap.is(z:numel(), 0, '0-size result is empty')
  tap.is(shape_str(gm.exp(gm.zeros{0}).shape), '{0}', 'exp of a 0-size tensor')
  tap.is(shape_str((gm.zeros{3, 0} * 2).shape), '{3,0}', '[3,0] * number')
  tap.is(shape_str(gm.where(gm.zeros{0, 2}, gm.ones{2}, 0).shape), '{0,2}', 'where with a 0-size cond')
end

-- ---- operators with numbers on either side -----------------------------------------------
do
  local x = gm.tensor{1, 2, 4}
  local v = {1, 2, 4}
  all_close(x + 1, map(v, function(a) return a + 1 end), 0, 'x + 1')
  all_close(1 + x, map(v, function(a) return 1 + a end), 0, '1 + x')
  all_close(x - 1, map(v, function(a) return a - 1 end), 0, 'x - 1')
  all_close(2 - x, map(v, function(a) return 2 - a end), 0, '2 - x')
  all_close(x * 3, map(v, function(a) return a * 3 end), 0, 'x * 3')
  all_close(3 * x, map(v, function(a) return 3 * a end), 0, '3 * x')
  all_close(x / 2, map(v, function(a) return a / 2 end), 0, 'x / 2')
  all_close(2 / x, map(v, function(a) return 2 / a end), 1e-7, '2 / x')
  all_close(x ^ 2, map(v, function(a) return a ^ 2 end), 1e-7, 'x ^ 2')
  all_close(2 ^ x, map(v, function(a) return 2 ^ a end), 1e-7, '2 ^ x')
  all_close(-x, map(v, function(a) return -a end), 0, '-x')
  all_close(x - x, {0, 0, 0}, 0, 'x - x')
  all_close(x * x, {1, 4, 16}, 0, 'x * x (aliased inputs)')
end

-- ---- unary ops vs Lua math ---------------------------------------------------------------
local uv = {-3, -0.5, 0.25, 2, 7}
local pv = {0.01, 0.5, 1, 4, 100}
local unary = {
  neg = {uv, function(a) return -a end},
  exp = {uv, math.exp},
  log = {pv, math.log},
  sqrt = {pv, math.sqrt},
  rsqrt = {pv, function(a) return 1 / math.sqrt(a) end},
  abs = {uv, math.abs},
  sigmoid = {uv, sigmoid},
  tanh = {uv, function(a) local e = math.exp(2 * a); return (e - 1) / (e + 1) end},
  relu = {uv, function(a) return math.max(a, 0) end},
  silu = {uv, function(a) return a * sigmoid(a) end},
  softplus = {uv, softplus},
  logsigmoid = {uv, function(a) return -softplus(-a) end},
}
for name, case in pairs(unary) do
  local vals, f = case[1], case[2]
  all_close(gm[name](gm.tensor(vals, {dtype = 'f64'})), map(vals, function(a) return f(a) end), 1e-12, name .. ' f64')
  all_close(gm.tensor(vals)[name](gm.tensor(vals)), map(vals, function(a) return f(a) end), 2e-6, name .. ' f32 (method)')
end
-- gelu is the exact erf form: reference values of x * Phi(x)
all_close(gm.gelu(gm.tensor({-3, -0.5, 0, 1, 2}, {dtype = 'f64'})),
          {-0.0040496940948903, -0.15426876936299347, 0, 0.8413447460685429, 1.9544997361036416},
          1e-12, 'gelu exact erf form f64')
all_close(gm.gelu(gm.tensor{-3, -0.5, 0, 1, 2}),
          {-0.0040496940948903, -0.15426876936299347, 0, 0.8413447460685429, 1.9544997361036416},
          2e-6, 'gelu f32')
-- clamp with one or both bounds
do
  local x = gm.tensor{-2, -0.5, 0, 0.5, 2}
  all_close(x:clamp(-1, 1), {-1, -0.5, 0, 0.5, 1}, 0, 'clamp(-1, 1)')
  all_close(x:clamp(0), {0, 0, 0, 0.5, 2}, 0, 'clamp(min only)')
  all_close(x:clamp(nil, 0), {-2, -0.5, 0, 0, 0}, 0, 'clamp(nil, max)')
  all_close(gm.clamp(x, {max = 0.25}), {-2, -0.5, 0, 0.25, 0.25}, 0, 'clamp{b = max}')
  tap.errors(function() return x:clamp() end, 'clamp', 'clamp without bounds is an error')
end

-- Stable at large |x|: no inf/NaN in f32 (exp(100) overflows f32) or f64.
for _, case in ipairs{{'f32', 100}, {'f64', 1000}} do
  local dt, big = case[1], case[2]
  local x = gm.tensor({-big, big}, {dtype = dt})
  all_close(x:sigmoid(), {0, 1}, 1e-7, 'sigmoid at +-' .. big .. ' ' .. dt)
  all_close(x:softplus(), {0, big}, 1e-7, 'softplus at +-' .. big .. ' ' .. dt)
  all_close(x:logsigmoid(), {-big, 0}, 1e-7, 'logsigmoid at +-' .. big .. ' ' .. dt)
  all_close(x:silu(), {0, big}, 1e-7, 'silu at +-' .. big .. ' ' .. dt)
  all_close(x:tanh(), {-1, 1}, 1e-7, 'tanh at +-' .. big .. ' ' .. dt)
end

-- f32 and f64 agree on random data
do
  local x64 = gm.randn({4, 5}, {dtype = 'f64'})
  local x32 = x64:to('f32')
  for _, name in ipairs{'neg', 'exp', 'abs', 'sigmoid', 'tanh', 'relu', 'gelu', 'silu', 'softplus', 'logsigmoid'} do
    all_close(x32[name](x32), tap.flatten(x64[name](x64):totable()), 2e-6, name .. ': f32 agrees with f64')
  end
  local p64 = x64:abs() + 0.1
  for _, name in ipairs{'log', 'sqrt', 'rsqrt'} do
    all_close(p64:to('f32')[name](p64:to('f32')), tap.flatten(p64[name](p64):totable()), 2e-6, name .. ': f32 agrees with f64')
  end
end

-- ---- comparisons: 1/0 in x's dtype --------------------------------------------------------
do
  local a, b = {1, 2, 3, 4}, {2, 2, 2, 2}
  local cmp = {
    eq = function(p, q) return p == q end, ne = function(p, q) return p ~= q end,
    lt = function(p, q) return p < q end, le = function(p, q) return p <= q end,
    gt = function(p, q) return p > q end, ge = function(p, q) return p >= q end,
  }
  for _, dt in ipairs{'f32', 'f64', 'i32'} do
    local x, y = gm.tensor(a, {dtype = dt}), gm.tensor(b, {dtype = dt})
    for name, f in pairs(cmp) do
      local r = gm[name](x, y)
      all_close(r, map(a, function(p, i) return f(p, b[i]) and 1 or 0 end), 0, name .. ' ' .. dt)
      tap.is(r.dtype, dt, name .. ' result is ' .. dt)
    end
  end
  all_close(gm.tensor{{1}, {3}}:lt(gm.tensor{0, 2, 4}), {0, 1, 1, 0, 0, 1}, 0, 'lt broadcasts')
  all_close(gm.tensor{1, 2, 3}:eq(2), {0, 1, 0}, 0, 'eq with a number')
  tap.ok(not gm.tensor({1, 2}, {requires_grad = true}):gt(0).requires_grad, 'comparisons are not differentiable')
end

-- ---- i32 arithmetic -----------------------------------------------------------------------
do
  local a, b = {7, -7, 5, -9, 0}, {2, 2, -3, -4, 3}
  local x, y = gm.tensor(a, {dtype = 'i32'}), gm.tensor(b, {dtype = 'i32'})
  all_close(x + y, map(a, function(p, i) return p + b[i] end), 0, 'i32 add')
  all_close(x - y, map(a, function(p, i) return p - b[i] end), 0, 'i32 sub')
  all_close(x * y, map(a, function(p, i) return p * b[i] end), 0, 'i32 mul')
  all_close(x / y, map(a, function(p, i) return trunc(p / b[i]) end), 0, 'i32 div truncates toward zero')
  all_close(gm.maximum(x, y), map(a, function(p, i) return math.max(p, b[i]) end), 0, 'i32 maximum')
  all_close(gm.minimum(x, y), map(a, function(p, i) return math.min(p, b[i]) end), 0, 'i32 minimum')
  all_close(-x, map(a, function(p) return -p end), 0, 'i32 neg')
  all_close(x:abs(), map(a, math.abs), 0, 'i32 abs')
  all_close(x:relu(), map(a, function(p) return math.max(p, 0) end), 0, 'i32 relu')
  all_close(x:clamp(-5, 5), {5, -5, 5, -5, 0}, 0, 'i32 clamp')
  all_close(x:clamp(-4.5, 4.5), {4, -4, 4, -4, 0}, 0, 'i32 clamp keeps fractional bounds inside')
  all_close(x + 1, {8, -6, 6, -8, 1}, 0, 'i32 + number')
  for _, op in ipairs{'add', 'sub', 'mul', 'div', 'neg', 'abs'} do
    tap.is(gm[op](x, op ~= 'neg' and op ~= 'abs' and y or nil).dtype, 'i32', op .. ' keeps i32')
  end
  tap.errors(function() return x / gm.tensor({1, 0, 1, 1, 1}, {dtype = 'i32'}) end,
             'div: integer division by zero', 'i32 division by zero is an error')
  tap.errors(function() return x / 0 end, 'integer division by zero', 'i32 / 0 is an error')
  local big = gm.tensor({2147483647, -2147483648}, {dtype = 'i32'})
  tap.errors(function() return big + 1 end, 'add: i32 overflow', 'i32 add past the range is an error')
  tap.errors(function() return big / -1 end, 'div: i32 overflow', 'INT32_MIN / -1 is an error, not a trap')
  all_close(big - 0, {2147483647, -2147483648}, 0, 'the range edges themselves are fine')
end

-- ---- where and masked_fill ----------------------------------------------------------------
do
  local cond = gm.tensor({{1}, {0}, {5}}, {dtype = 'i32'})            -- [3,1], nonzero = true
  local x = gm.tensor{{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}}  -- [3,4]
  local y = gm.tensor{-1, -2, -3, -4}                                -- [4]
  all_close(gm.where(cond, x, y), {1, 2, 3, 4, -1, -2, -3, -4, 9, 10, 11, 12}, 0,
            'where broadcasts cond [3,1], x [3,4], y [4]')
  all_close(gm.where(gm.tensor{0, 1, -0.5}, gm.tensor{1, 2, 3}, gm.tensor(0)), {0, 2, 3}, 0,
            'where with an f32 cond and a 0-dim y')
  all_close(gm.where(gm.tensor({1, 0}, {dtype = 'i32'}), gm.tensor({1, 2}, {dtype = 'f64'}),
                     gm.tensor({3, 4}, {dtype = 'f64'})), {1, 4}, 0, 'where f64 values, i32 cond')
  tap.errors(function() return gm.where(cond, x, y:to('f64')) end, 'where: dtype mismatch', 'where x/y dtype mismatch')
  tap.errors(function() return gm.where(gm.ones{2}, x, y) end, 'where: .*do not broadcast', 'where shape mismatch')

  local m = gm.tensor({{1, 0, 0, 1}}, {dtype = 'i32'})               -- [1,4]
  all_close(x:masked_fill(m, -1), {-1, 2, 3, -1, -1, 6, 7, -1, -1, 10, 11, -1}, 0,
            'masked_fill broadcasts the mask')
  all_close(x:to('i32'):masked_fill(m, 0), {0, 2, 3, 0, 0, 6, 7, 0, 0, 10, 11, 0}, 0, 'masked_fill on i32')
  tap.errors(function() return gm.tensor{1, 2}:masked_fill(gm.ones{3, 2}, 0) end,
             'masked_fill: mask %[3, 2%] does not broadcast to x %[2%]', 'mask may not enlarge x')

  -- gradients: x and y get g where chosen; the filled positions get none
  local xg = gm.tensor({1, 2, 3}, {requires_grad = true})
  local yg = gm.tensor({4, 5, 6}, {requires_grad = true})
  local c = gm.tensor({1, 0, 1}, {dtype = 'i32'})
  gm.where(c, xg, yg):sum():backward()
  all_close(xg.grad, {1, 0, 1}, 0, 'where: d/dx is cond')
  all_close(yg.grad, {0, 1, 0}, 0, 'where: d/dy is not cond')
  local xm = gm.tensor({1, 2, 3}, {requires_grad = true})
  ;(xm:masked_fill(c, 7) * 2):sum():backward()
  all_close(xm.grad, {0, 2, 0}, 0, 'masked_fill: gradient zeroed where masked')
end

-- ---- documented gradient choices ----------------------------------------------------------
do
  local x = gm.tensor({1, 2, 3}, {requires_grad = true})
  local y = gm.tensor({1, 5, 0}, {requires_grad = true})
  gm.maximum(x, y):sum():backward()
  all_close(x.grad, {0.5, 0, 1}, 0, 'maximum: a tie splits the gradient (x)')
  all_close(y.grad, {0.5, 1, 0}, 0, 'maximum: a tie splits the gradient (y)')
  local a = gm.tensor({-1, 0, 1}, {requires_grad = true})
  a:abs():sum():backward()
  all_close(a.grad, {-1, 0, 1}, 0, 'abs: gradient sign(x), 0 at 0')
  local b = gm.tensor({-1, -0.5, 0, 0.5, 1}, {requires_grad = true})
  b:clamp(-0.5, 0.5):sum():backward()
  all_close(b.grad, {0, 0, 1, 0, 0}, 0, 'clamp: gradient 1 strictly inside')
  -- broadcasting is undone: [3,1] + [1,4] gives grads summed to the input shapes
  local p = gm.tensor({{1}, {2}, {3}}, {requires_grad = true})
  local q = gm.tensor({{1, 2, 3, 4}}, {requires_grad = true})
  ;(p * q):sum():backward()
  all_close(p.grad, {10, 10, 10}, 0, 'mul [3,1] * [1,4]: d/dp sums over the broadcast dim')
  all_close(q.grad, {6, 6, 6, 6}, 0, 'mul [3,1] * [1,4]: d/dq sums over the broadcast dim')
  local s = gm.tensor({2, 3}, {requires_grad = true})
  ;(s - 1):sum():backward()
  all_close(s.grad, {1, 1}, 0, 'x - number: gradient 1')
  local t = gm.tensor({2, 3}, {requires_grad = true})
  ;(1 - t):sum():backward()
  all_close(t.grad, {-1, -1}, 0, 'number - x: gradient -1')
end

-- ---- non-contiguous inputs ----------------------------------------------------------------
do
  local x = gm.tensor{{1, 2, 3}, {4, 5, 6}}   -- x:transpose(0,1) is [3,2]
  local y = gm.tensor{{10, 20}, {30, 40}, {50, 60}}
  local xt = x:transpose(0, 1)
  tap.ok(not xt:is_contiguous(), 'transpose is a non-contiguous view')
  all_close(xt + y, {11, 24, 32, 45, 53, 66}, 0, 'x:transpose(0,1) + y')
  all_close(y * xt, {10, 80, 60, 200, 150, 360}, 0, 'y * x:transpose(0,1)')
  all_close(xt:neg(), {-1, -4, -2, -5, -3, -6}, 0, 'neg of a transposed view')
  all_close(xt + xt, {2, 8, 4, 10, 6, 12}, 0, 'transposed + transposed')
  local n = x:narrow(1, 1, 2)                 -- [[2,3],[5,6]]
  all_close(n * 10, {20, 30, 50, 60}, 0, 'narrow view * number')
  all_close(gm.exp(n), map({2, 3, 5, 6}, math.exp), 2e-6, 'exp of a narrow view')
  all_close(gm.where(n:gt(2.5), n, 0), {0, 3, 5, 6}, 0, 'where on narrow views')
end

-- ---- larger tensors: threaded chunks, long rows, many short rows -------------------------
do
  local n = 200003
  local x = gm.arange(n):to('f64')
  local r = (x * 2 + 1):totable()
  local ok = #r == n
  for i = 1, n, 997 do ok = ok and r[i] == 2 * (i - 1) + 1 end
  ok = ok and r[n] == 2 * (n - 1) + 1
  tap.ok(ok, 'x * 2 + 1 over 200003 elements')
  local a = gm.arange(2 * 70001):to('f64'):reshape{2, 70001}
  local b = gm.arange(70001):to('f64'):reshape{1, 70001}
  local s = (a - b):totable()
  tap.ok(s[1][1] == 0 and s[1][70001] == 0 and s[2][1] == 70001 and s[2][70001] == 70001,
         '[2,70001] - [1,70001] (rows longer than a chunk)')
  local m = gm.arange(300 * 500):to('f64'):reshape{300, 500}
  local t = (m:transpose(0, 1) + 0.5):totable()
  tap.ok(t[1][1] == 0.5 and t[500][300] == 299 * 500 + 499 + 0.5 and t[7][3] == 2 * 500 + 6 + 0.5,
         'transposed [500,300] + number (strided rows)')
end

-- ---- f32 exp/sigmoid/gelu/silu/softplus/logsigmoid/tanh (8-lane blocks, libmvec where available)
-- Accuracy against f64 on the same inputs (relative error, floor 1e-3 for cancelling tails),
-- and the same bits for any layout (contiguous, odd tails, transposed) and thread count.
do
  local n = 4099
  local x32 = gm.arange(n):to('f32') * (20 / n) - 10
  local x64 = x32:to('f64')
  local tol = {exp = 4e-7, sigmoid = 6e-7, silu = 6e-7, gelu = 2e-4, -- gelu: 1 + erf cancels below -3
               softplus = 6e-7, logsigmoid = 6e-7, tanh = 6e-7}
  for _, op in ipairs{'exp', 'sigmoid', 'gelu', 'silu', 'softplus', 'logsigmoid', 'tanh'} do
    local a, b = x32[op](x32):to('f64'):totable(), x64[op](x64):totable()
    local worst = 0
    for i = 1, n do worst = math.max(worst, math.abs(a[i] - b[i]) / math.max(math.abs(b[i]), 1e-3)) end
    tap.ok(worst <= tol[op], ('f32 %s within %g of f64 (relative)'):format(op, tol[op]), ('worst %g'):format(worst))
  end
  for _, op in ipairs{'gelu', 'silu', 'softplus', 'logsigmoid'} do
    local a = x32:detach():requires_grad_(); a[op](a):sum():backward()
    local b = x64:detach():requires_grad_(); b[op](b):sum():backward()
    local ga, gb, worst = a.grad:to('f64'):totable(), b.grad:totable(), 0
    for i = 1, n do worst = math.max(worst, math.abs(ga[i] - gb[i]) / math.max(math.abs(gb[i]), 1e-3)) end
    tap.ok(worst <= 6e-5, ('f32 %s backward within 6e-5 of f64 (relative)'):format(op), ('worst %g'):format(worst))
  end
  local m = gm.randn{37, 45}
  local nthreads = gm.get_num_threads()
  for _, op in ipairs{'exp', 'sigmoid', 'gelu', 'silu', 'softplus', 'logsigmoid', 'tanh'} do
    local full = m[op](m):totable()
    local tr = m:t():contiguous()[op](m:t():contiguous()):t():totable() -- other tails
    local st = m:t()[op](m:t()):t():totable()                           -- strided rows
    local same = true
    for i = 1, 37 do for j = 1, 45 do
      same = same and full[i][j] == tr[i][j] and full[i][j] == st[i][j]
    end end
    tap.ok(same, op .. ' f32: the same bits for contiguous, transposed and strided layouts')
  end
  local big = gm.randn{300001}
  local r2 = big:gelu():sum():item()
  gm.set_num_threads(1)
  local r1 = big:gelu():sum():item()
  gm.set_num_threads(nthreads)
  tap.ok(r1 == r2, 'gelu f32 over 300001 elements: the same bits with 1 thread and with ' .. nthreads)
end

-- ---- errors from Lua ----------------------------------------------------------------------
tap.errors(function() return gm.ones{2, 3} + gm.ones{4} end, 'add: shapes %[2, 3%] and %[4%] do not broadcast',
           'shape mismatch names the op and both shapes')
tap.errors(function() return gm.ones{2, 3} * gm.ones({2, 3}, {dtype = 'f64'}) end, 'mul: dtype mismatch: f32 and f64',
           'dtype mismatch names both dtypes')
tap.errors(function() return gm.exp(gm.ones({2}, {dtype = 'i32'})) end, 'exp: .*got i32', 'i32 into exp is an error')
tap.errors(function() return gm.ones({2}, {dtype = 'i32'}):pow(2) end, 'pow: .*got i32', 'i32 into pow is an error')
tap.errors(function() return gm.ones({2}, {dtype = 'i32'}):sigmoid() end, 'sigmoid: .*got i32', 'i32 into sigmoid is an error')

-- sin and cos against Lua's math, f64 and f32
do
  local xs = {-3.5, -1, 0, 0.25, 1, 2.5, 10}
  local x = gm.tensor(xs, {dtype = 'f64'})
  local s, c = x:sin():totable(), gm.cos(x):totable()
  local ok = true
  for i, v in ipairs(xs) do ok = ok and math.abs(s[i] - math.sin(v)) < 1e-15 and math.abs(c[i] - math.cos(v)) < 1e-15 end
  tap.ok(ok, 'sin and cos match math.sin and math.cos in f64')
  local sf = x:to('f32'):sin():totable()
  ok = true
  for i, v in ipairs(xs) do ok = ok and math.abs(sf[i] - math.sin(v)) < 1e-6 end
  tap.ok(ok, 'sin in f32 within 1e-6')
  tap.errors(function() return gm.sin(gm.tensor({1}, {dtype = 'i32'})) end, 'sin: expected a float tensor', 'sin of i32 refused')
end
tap.done()
