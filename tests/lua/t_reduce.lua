-- t_reduce.lua: value checks of the reductions (sum mean var max min argmax argmin logsumexp
-- softmax log_softmax cumsum) against sums computed here in Lua; dims (negative, lists,
-- keepdim), f32 vs f64, non-contiguous inputs, stability on large inputs, error messages.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

-- Reference reduction in Lua over a [2,3,4] array: f(list of values) per kept index.
local S = {2, 3, 4}
local X = tap.values(24)
local function at(i, j, k) return X[(i * 3 + j) * 4 + k + 1] end
local function ref(red, f)
  -- red: set of reduced dims (0-based) -> nested table over the kept dims (keepdim=false)
  local out = {}
  local kept = {}
  for d = 0, 2 do if not red[d] then kept[#kept + 1] = d end end
  local function rec(idx, d, acc)
    if d == 3 then acc[#acc + 1] = at(idx[0], idx[1], idx[2]); return end
    if red[d] then
      for v = 0, S[d + 1] - 1 do idx[d] = v; rec(idx, d + 1, acc) end
    else rec(idx, d + 1, acc) end
  end
  local function outer(idx, kd)
    if kd > #kept then
      local acc = {}
      rec(idx, 0, acc)
      return f(acc)
    end
    local t = {}
    local d = kept[kd]
    for v = 0, S[d + 1] - 1 do idx[d] = v; t[v + 1] = outer(idx, kd + 1) end
    return t
  end
  return outer({}, 1)
end

local function lsum(a) local s = 0; for _, v in ipairs(a) do s = s + v end; return s end
local function lmean(a) return lsum(a) / #a end
local function lvar(a, unbiased)
  local m, s = lmean(a), 0
  for _, v in ipairs(a) do s = s + (v - m) ^ 2 end
  return s / (#a - (unbiased and 1 or 0))
end
local function lmax(a) local m = -math.huge; for _, v in ipairs(a) do if v > m then m = v end end; return m end
local function lmin(a) local m = math.huge; for _, v in ipairs(a) do if v < m then m = v end end; return m end
local function largmax(a) local m, k = -math.huge, 0; for i, v in ipairs(a) do if v > m then m, k = v, i - 1 end end; return k end
local function llse(a) local m = lmax(a); local s = 0; for _, v in ipairs(a) do s = s + math.exp(v - m) end; return m + math.log(s) end

local x64 = gm.tensor(tap.nest(X, S), {dtype = 'f64'})
local x32 = x64:to('f32')

-- ---- sum / mean / var over dims ------------------------------------------------------------
tap.all_close(x64:sum():item(), lsum(X), 1e-12, 'sum of all elements')
tap.ok(tap.same_shape(x64:sum().shape, {}), 'sum of all is 0-dim')
tap.all_close(x64:sum(0):totable(), ref({[0] = true}, lsum), 1e-12, 'sum over dim 0')
tap.all_close(x64:sum(-1):totable(), ref({[2] = true}, lsum), 1e-12, 'sum over dim -1')
tap.all_close(x64:sum({0, 2}):totable(), ref({[0] = true, [2] = true}, lsum), 1e-12, 'sum over dims {0, 2}')
tap.all_close(x64:sum({-1, 0}):totable(), ref({[0] = true, [2] = true}, lsum), 1e-12, 'sum over dims {-1, 0}')
local k = x64:sum(1, true)
tap.ok(tap.same_shape(k.shape, {2, 1, 4}), 'sum keepdim keeps a size-1 dim')
tap.all_close(k:reshape{2, 4}:totable(), ref({[1] = true}, lsum), 1e-12, 'sum keepdim values')
tap.ok(tap.same_shape(x64:sum({0, 1, 2}, true).shape, {1, 1, 1}), 'sum over every dim with keepdim')
tap.all_close(x32:sum(1):totable(), ref({[1] = true}, lsum), 1e-5, 'f32 sum over dim 1')
tap.all_close(x64:mean(2):totable(), ref({[2] = true}, lmean), 1e-12, 'mean over dim 2')
tap.all_close(x64:mean({0, 1}):totable(), ref({[0] = true, [1] = true}, lmean), 1e-12, 'mean over dims {0, 1}')
tap.all_close(x64:mean():item(), lmean(X), 1e-12, 'mean of all elements')
tap.all_close(x64:var(1):totable(), ref({[1] = true}, function(a) return lvar(a, true) end), 1e-12,
          'var over dim 1 is unbiased by default')
tap.all_close(gm.var(x64, 1, false, false):totable(), ref({[1] = true}, function(a) return lvar(a, false) end),
          1e-12, 'var unbiased=false divides by n')
tap.all_close(x64:var():item(), lvar(X, true), 1e-12, 'var of all elements')
tap.all_close(x32:var(0):totable(), ref({[0] = true}, function(a) return lvar(a, true) end), 1e-5, 'f32 var over dim 0')

-- accuracy: f32 sums accumulate in double
local big = gm.full and gm.full({1000000}, 0.1) or gm.ones{1000000} * 0.1
tap.all_close(big:sum():item(), 1000000 * 0.1, 1e-6, 'f32 sum of 1e6 x 0.1 is accurate (double accumulation)')

-- non-contiguous input: the transpose of a [4, 6] matrix
local m64 = gm.tensor(tap.nest(tap.values(24), {4, 6}), {dtype = 'f64'})
local mt = m64:transpose(0, 1) -- [6, 4]
local mv = m64:totable()
local colsum = {}
for j = 1, 6 do colsum[j] = 0; for i = 1, 4 do colsum[j] = colsum[j] + mv[i][j] end end
tap.all_close(mt:sum(1):totable(), colsum, 1e-12, 'sum of a transposed view along dim 1')
tap.all_close(m64:sum(0):totable(), colsum, 1e-12, 'sum over dim 0 (column blocks)')
tap.all_close(mt:contiguous():sum(1):totable(), colsum, 1e-12, 'same on a contiguous copy')

-- i32: sum stays i32; mean needs floats
local xi = gm.tensor{{1, 2, 3}, {4, 5, 6}}:to('i32')
tap.is(xi:sum().dtype, 'i32', 'sum of i32 is i32')
tap.is(xi:sum():item(), 21, 'sum of i32 value')
tap.all_close(xi:sum(0):totable(), {5, 7, 9}, 0, 'i32 sum over dim 0')
tap.errors(function() return xi:mean() end, 'mean.*f32 or f64', 'mean of i32 is an error')

-- empty reductions
local e = gm.zeros{0, 3}
tap.is(e:sum():item(), 0, 'sum of no elements is 0')
tap.all_close(e:sum(0):totable(), {0, 0, 0}, 0, 'sum over an empty dim gives zeros')
tap.ok(e:mean():item() ~= e:mean():item(), 'mean of no elements is NaN')
tap.ok(tap.same_shape(e:sum(1).shape, {0}), 'sum over the non-empty dim of [0, 3] has shape [0]')

-- 0-dim input
local s = gm.tensor(2.5)
tap.is(s:sum():item(), 2.5, 'sum of a 0-dim tensor')

-- ---- max / min / argmax / argmin -------------------------------------------------------------
local v, i = x64:max(1)
tap.all_close(v:totable(), ref({[1] = true}, lmax), 0, 'max values along dim 1')
tap.all_close(i:totable(), ref({[1] = true}, largmax), 0, 'max indices along dim 1')
tap.is(i.dtype, 'i32', 'max indices are i32')
local v2, i2 = x64:min(-1, true)
tap.ok(tap.same_shape(v2.shape, {2, 3, 1}) and tap.same_shape(i2.shape, {2, 3, 1}), 'min keepdim shapes')
tap.all_close(v2:reshape{2, 3}:totable(), ref({[2] = true}, lmin), 0, 'min values along dim -1')
local vall, iall = x64:max()
tap.is(vall:item(), lmax(X), 'max of all elements')
tap.is(iall:item(), largmax(X), 'flat 0-based index of the max')
tap.ok(tap.same_shape(vall.shape, {}), 'max without dim is 0-dim')
local ties = gm.tensor{{1, 3, 3}, {2, 2, 0}}
tap.all_close(ties:argmax(1):totable(), {1, 0}, 0, 'argmax returns the first of tied maxima')
tap.all_close(ties:argmin(1):totable(), {0, 2}, 0, 'argmin along dim 1')
tap.is(ties:argmax():item(), 1, 'argmax without dim is a flat index')
tap.is(ties:argmax().dtype, 'i32', 'argmax is i32')
local vm = gm.tensor{{1, 9}, {7, 3}}:transpose(0, 1) -- {{1, 7}, {9, 3}}
local mv1, mi1 = vm:max(1)
tap.all_close(mv1:totable(), {7, 9}, 0, 'max of a transposed view')
tap.all_close(mi1:totable(), {1, 0}, 0, 'argmax positions of a transposed view')
tap.errors(function() return gm.zeros{0, 3}:max(0) end, 'max.*empty', 'max over an empty dim is an error')
tap.errors(function() return gm.zeros{0, 3}:max() end, 'max.*no elements', 'max of an empty tensor is an error')
local imax = gm.tensor{{1, 5}, {7, 2}}:to('i32'):max(1)
tap.all_close(imax:totable(), {5, 7}, 0, 'max of i32')

-- max backward routes the gradient to the selected element
local xg = gm.tensor{{1, 4, 2}, {6, 0, 5}}:to('f64')
xg:requires_grad_()
local mval = xg:max(1)
mval:sum():backward()
tap.all_close(xg.grad:totable(), {{0, 1, 0}, {1, 0, 0}}, 0, 'max backward: 1 at the argmax')

-- ---- logsumexp -------------------------------------------------------------------------------
tap.all_close(x64:logsumexp(2):totable(), ref({[2] = true}, llse), 1e-12, 'logsumexp over dim 2')
tap.all_close(x64:logsumexp({0, 1}):totable(), ref({[0] = true, [1] = true}, llse), 1e-12, 'logsumexp over {0, 1}')
tap.all_close(gm.tensor{1000, 1000}:logsumexp():item(), 1000 + math.log(2), 1e-6, 'logsumexp is stable for large inputs')

-- ---- softmax / log_softmax -------------------------------------------------------------------
local sm = x64:softmax()
local rows = sm:sum(-1):totable()
tap.all_close(rows, {{1, 1, 1}, {1, 1, 1}}, 1e-12, 'softmax rows sum to 1 (default dim -1)')
local want = ref({[2] = true}, function(a) return a end) -- rows along dim 2
local smt = sm:totable()
local ok = true
for a = 1, 2 do for b = 1, 3 do
  local l = llse(want[a][b])
  for c = 1, 4 do if math.abs(smt[a][b][c] - math.exp(want[a][b][c] - l)) > 1e-12 then ok = false end end
end end
tap.ok(ok, 'softmax values match exp(x - logsumexp(x))')
tap.all_close(x64:softmax(0):sum(0):totable(), {{1, 1, 1, 1}, {1, 1, 1, 1}, {1, 1, 1, 1}}, 1e-12, 'softmax along dim 0 sums to 1')
tap.all_close(x64:log_softmax(1):totable(), x64:softmax(1):log():totable(), 1e-12, 'log_softmax = log(softmax)')
tap.all_close(gm.tensor{1000, 1000}:softmax():totable(), {0.5, 0.5}, 0, 'softmax of [1000, 1000] is 0.5')
tap.all_close(gm.tensor{-1000, 1000}:log_softmax():totable(), {-2000, 0}, 1e-6, 'log_softmax stable for large gaps')
tap.all_close(x32:softmax(1):totable(), x64:softmax(1):totable(), 1e-6, 'f32 softmax agrees with f64')
tap.all_close(mt:softmax(0):totable(), mt:contiguous():softmax(0):totable(), 1e-12, 'softmax of a transposed view')
tap.errors(function() return xi:softmax() end, 'softmax.*f32 or f64', 'softmax of i32 is an error')

-- softmax backward: d/dx sum(softmax(x) * w) = y * (w - sum(w * y))
local xs = gm.tensor{0.5, -1, 2}:to('f64')
xs:requires_grad_()
local w = gm.tensor{1, 2, 3}:to('f64')
local ys = xs:softmax()
;(ys * w):sum():backward()
local yv, sdot = ys:totable(), 0
for j = 1, 3 do sdot = sdot + yv[j] * j end
local gw = {}
for j = 1, 3 do gw[j] = yv[j] * (j - sdot) end
tap.all_close(xs.grad:totable(), gw, 1e-12, 'softmax backward matches y * (g - sum(g y))')

-- ---- cumsum ----------------------------------------------------------------------------------
local cs = gm.tensor{{1, 2, 3}, {4, 5, 6}}
tap.all_close(cs:cumsum(1):totable(), {{1, 3, 6}, {4, 9, 15}}, 0, 'cumsum along dim 1')
tap.all_close(cs:cumsum(0):totable(), {{1, 2, 3}, {5, 7, 9}}, 0, 'cumsum along dim 0')
tap.all_close(cs:cumsum(-1):totable(), {{1, 3, 6}, {4, 9, 15}}, 0, 'cumsum along dim -1')
tap.all_close(cs:transpose(0, 1):cumsum(1):totable(), {{1, 5}, {2, 7}, {3, 9}}, 0, 'cumsum of a transposed view')
tap.is(cs:to('i32'):cumsum(1).dtype, 'i32', 'cumsum of i32 stays i32')
local xc = gm.tensor{1, 2, 3}:to('f64')
xc:requires_grad_()
;(xc:cumsum(0) * gm.tensor{1, 10, 100}:to('f64')):sum():backward()
tap.all_close(xc.grad:totable(), {111, 110, 100}, 0, 'cumsum backward is the reverse cumsum')

-- ---- errors ----------------------------------------------------------------------------------
tap.errors(function() return x64:sum(3) end, 'sum: dim 3 .*3', 'sum: dim out of range names the dim and rank')
tap.errors(function() return x64:sum({0, -3}) end, 'sum: dim .*twice', 'sum: a repeated dim is an error')
tap.errors(function() return x64:max(-4) end, 'max: dim %-4 .*3', 'max: dim out of range names the dim and rank')
tap.errors(function() return x64:softmax(5) end, 'softmax: dim 5', 'softmax: dim out of range')
tap.errors(function() return x64:cumsum(3) end, 'cumsum: dim 3', 'cumsum: dim out of range')

tap.done()
