-- t_loss.lua: value checks of cross_entropy and mse_loss against -log(softmax) and squared
-- differences computed here in Lua: every reduction, ignore_index, the [B,T,C] layout,
-- stability on large logits, gradients, f32 vs f64, non-contiguous inputs, error messages.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local function i32(t) return gm.tensor(t):to('i32') end
local function f64(t) return gm.tensor(t, {dtype = 'f64'}) end

-- -log softmax(row)[t+1] in Lua, and the softmax itself
local function nll(row, t)
  local m = -math.huge
  for _, v in ipairs(row) do if v > m then m = v end end
  local s = 0
  for _, v in ipairs(row) do s = s + math.exp(v - m) end
  return m + math.log(s) - row[t + 1]
end
local function softmax(row)
  local m, s, out = -math.huge, 0, {}
  for _, v in ipairs(row) do if v > m then m = v end end
  for i, v in ipairs(row) do out[i] = math.exp(v - m); s = s + out[i] end
  for i = 1, #out do out[i] = out[i] / s end
  return out
end

-- ---- cross_entropy -----------------------------------------------------------------------
local L = tap.nest(tap.values(20), {4, 5})
local Tg = {2, -100, 0, 4}
local logits = f64(L)
local target = i32(Tg)
local rows, sum, cnt = {}, 0, 0
for r = 1, 4 do
  if Tg[r] == -100 then rows[r] = 0 else rows[r] = nll(L[r], Tg[r]); sum = sum + rows[r]; cnt = cnt + 1 end
end
local ce = gm.cross_entropy(logits, target)
tap.ok(tap.same_shape(ce.shape, {}), 'cross_entropy mean is 0-dim')
tap.close(ce:item(), sum / cnt, 1e-12, 'cross_entropy mean over non-ignored rows')
tap.close(gm.cross_entropy(logits, target, -100, 'sum'):item(), sum, 1e-12, 'cross_entropy sum')
local cn = gm.cross_entropy(logits, target, -100, 'none')
tap.ok(tap.same_shape(cn.shape, {4}), 'cross_entropy none has the target shape')
tap.all_close(cn:totable(), rows, 1e-12, 'cross_entropy none: per-row losses, 0 where ignored')
tap.close(gm.cross_entropy(logits, target, {reduction = 'sum'}):item(), sum, 1e-12,
          'cross_entropy reduction from an options table')
tap.close(gm.cross_entropy(logits:to('f32'), target):item(), sum / cnt, 1e-5, 'cross_entropy f32 agrees with f64')

-- custom ignore_index: class 0 ignored
do
  local s, n = 0, 0
  for r = 1, 4 do if Tg[r] ~= 0 and Tg[r] ~= -100 then s = s + nll(L[r], Tg[r]); n = n + 1 end end
  local T2 = i32({2, 0, 0, 4})
  tap.close(gm.cross_entropy(logits, T2, 0):item(), s / n, 1e-12, 'cross_entropy with ignore_index 0')
end

-- all targets ignored: sum 0, mean NaN (as torch)
do
  local none = i32({-100, -100, -100, -100})
  tap.is(gm.cross_entropy(logits, none, -100, 'sum'):item(), 0, 'all ignored: sum is 0')
  local m = gm.cross_entropy(logits, none):item()
  tap.ok(m ~= m, 'all ignored: mean is NaN')
end

-- [B, T, C] language-model layout flattens the leading dims
do
  local L3 = tap.nest(tap.values(24, 4), {2, 3, 4})
  local T3 = {{1, 3, 0}, {2, -100, 3}}
  local s, n, per = 0, 0, {}
  for b = 1, 2 do
    per[b] = {}
    for t = 1, 3 do
      local l = T3[b][t] == -100 and 0 or nll(L3[b][t], T3[b][t])
      per[b][t] = l
      if T3[b][t] ~= -100 then s = s + l; n = n + 1 end
    end
  end
  local l3 = f64(L3)
  tap.close(gm.cross_entropy(l3, i32(T3)):item(), s / n, 1e-12, 'cross_entropy over [B, T, C]')
  local c3 = gm.cross_entropy(l3, i32(T3), -100, 'none')
  tap.ok(tap.same_shape(c3.shape, {2, 3}), 'cross_entropy none over [B, T, C] has shape [B, T]')
  tap.all_close(c3:totable(), per, 1e-12, 'cross_entropy none over [B, T, C] values')
end

-- non-contiguous logits: a transposed [C, N] tensor viewed as [N, C]
do
  local Lt = {}
  for c = 1, 5 do Lt[c] = {} for r = 1, 4 do Lt[c][r] = L[r][c] end end
  local lt = f64(Lt):transpose(0, 1)
  tap.close(gm.cross_entropy(lt, target):item(), sum / cnt, 1e-12, 'cross_entropy of transposed logits')
end

-- stability: huge logits
tap.close(gm.cross_entropy(gm.tensor({{1000, 0}, {0, -1000}}), i32({1, 1})):item(), (1000 + 1000) / 2, 1e-6,
          'cross_entropy is stable for logits of 1000')

-- gradient: (softmax - onehot) / count
do
  local la = f64(L); la:requires_grad_()
  gm.cross_entropy(la, target):backward()
  local want = {}
  for r = 1, 4 do
    local p = softmax(L[r])
    want[r] = {}
    for c = 1, 5 do
      if Tg[r] == -100 then want[r][c] = 0
      else want[r][c] = (p[c] - (c - 1 == Tg[r] and 1 or 0)) / cnt end
    end
  end
  tap.all_close(la.grad:totable(), want, 1e-12, 'cross_entropy backward (mean)')
  local lb = f64(L); lb:requires_grad_()
  local w = f64({1, 2, 3, 4})
  ;(gm.cross_entropy(lb, target, -100, 'none') * w):sum():backward()
  for r = 1, 4 do for c = 1, 5 do want[r][c] = want[r][c] * cnt * r end end
  tap.all_close(lb.grad:totable(), want, 1e-12, 'cross_entropy backward (none, weighted rows)')
end

-- ---- mse_loss ----------------------------------------------------------------------------
local X = tap.nest(tap.values(12, 5), {3, 4})
local Y = tap.nest(tap.values(12, 6), {3, 4})
local x, y = f64(X), f64(Y)
local sq, ssum = {}, 0
for i = 1, 3 do
  sq[i] = {}
  for j = 1, 4 do local d = X[i][j] - Y[i][j]; sq[i][j] = d * d; ssum = ssum + d * d end
end
tap.close(gm.mse_loss(x, y):item(), ssum / 12, 1e-12, 'mse_loss mean')
tap.close(x:mse_loss(y, 'sum'):item(), ssum, 1e-12, 'mse_loss sum (method form)')
local mn = gm.mse_loss(x, y, 'none')
tap.ok(tap.same_shape(mn.shape, {3, 4}), 'mse_loss none keeps the shape')
tap.all_close(mn:totable(), sq, 1e-12, 'mse_loss none values')
tap.close(gm.mse_loss(x:to('f32'), y:to('f32')):item(), ssum / 12, 1e-5, 'mse_loss f32 agrees with f64')
tap.close(gm.mse_loss(x:transpose(0, 1), y:transpose(0, 1)):item(), ssum / 12, 1e-12, 'mse_loss of transposed views')
tap.close(gm.mse_loss(gm.tensor(2.0), gm.tensor(-1.0)):item(), 9, 0, 'mse_loss of 0-dim tensors')
do
  local m = gm.mse_loss(gm.zeros{0, 3}, gm.zeros{0, 3}):item()
  tap.ok(m ~= m, 'mse_loss mean of nothing is NaN')
end
do
  local xa, ya = f64(X), f64(Y)
  xa:requires_grad_(); ya:requires_grad_()
  gm.mse_loss(xa, ya):backward()
  local gx, gy = {}, {}
  for i = 1, 3 do
    gx[i], gy[i] = {}, {}
    for j = 1, 4 do gx[i][j] = 2 * (X[i][j] - Y[i][j]) / 12; gy[i][j] = -gx[i][j] end
  end
  tap.all_close(xa.grad:totable(), gx, 1e-12, 'mse_loss backward to x: 2 (x - y) / N')
  tap.all_close(ya.grad:totable(), gy, 1e-12, 'mse_loss backward to y: -2 (x - y) / N')
  local yb = f64(Y); yb:requires_grad_()
  gm.mse_loss(x, yb, 'sum'):backward()
  for i = 1, 3 do for j = 1, 4 do gy[i][j] = gy[i][j] * 12 end end
  tap.all_close(yb.grad:totable(), gy, 1e-12, 'mse_loss sum backward to y only')
end

-- ---- large inputs: the parallel row path agrees with Lua and with one thread -------------
do
  local lb = gm.randn({512, 100}, {dtype = 'f64'})
  local tb = gm.randint(100, {512})
  local LB, TB = lb:totable(), tb:totable()
  local s = 0
  for r = 1, 512 do s = s + nll(LB[r], TB[r]) end
  tap.close(gm.cross_entropy(lb, tb):item(), s / 512, 1e-12, 'cross_entropy over [512, 100] matches Lua')
  local nt = gm.get_num_threads()
  gm.set_num_threads(1)
  local a1 = gm.cross_entropy(lb, tb):item()
  gm.set_num_threads(4)
  local a4 = gm.cross_entropy(lb, tb):item()
  gm.set_num_threads(nt)
  tap.is(a1, a4, 'cross_entropy: bitwise the same for 1 and 4 threads')
end

-- ---- errors ------------------------------------------------------------------------------
tap.errors(function() return gm.cross_entropy(logits, i32({2, 5, 0, 1})) end,
           'cross_entropy: target 5 %(at row 1%) out of range for 5 classes', 'cross_entropy: target out of range')
tap.errors(function() return gm.cross_entropy(logits, i32({2, -1, 0, 1})) end,
           'cross_entropy: target %-1', 'cross_entropy: negative target that is not ignored')
tap.errors(function() return gm.cross_entropy(logits, i32({2, 1, 0})) end,
           'cross_entropy: target %[3%] must be logits %[4, 5%] without the last', 'cross_entropy: shape mismatch')
tap.errors(function() return gm.cross_entropy(logits, gm.tensor({2, 1, 0, 1})) end,
           'cross_entropy: target must be i32', 'cross_entropy: float target')
tap.errors(function() return gm.cross_entropy(i32({{1, 2}}), i32({0})) end,
           'cross_entropy: expected a float tensor', 'cross_entropy: i32 logits')
tap.errors(function() return gm.mse_loss(x, gm.zeros{4}:to('f64')) end,
           'mse_loss: x %[3, 4%] and y %[4%] must have the same shape', 'mse_loss: no broadcasting, names both shapes')
tap.errors(function() return gm.mse_loss(x, y:to('f32')) end, 'mse_loss: dtype mismatch', 'mse_loss: dtype mismatch')

tap.done()
