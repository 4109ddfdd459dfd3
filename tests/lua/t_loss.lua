-- t_loss.lua: value checks of the fused losses (cross_entropy with label smoothing, mse_loss,
-- binary_cross_entropy_with_logits, gaussian_nll, kl_div, symmetric_kl) against references
-- computed here in Lua: every reduction, ignore_index, the [B,T,C] layout, broadcasting where
-- allowed, stability on large logits, gradients, f32 vs f64, non-contiguous inputs, thread
-- counts, error messages.
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

-- ---- cross_entropy with label smoothing (torch's label_smoothing, param a) ---------------
-- (1 - eps) * nll(target) + eps * mean over classes of nll(c)
local function ls_nll(row, t, eps)
  local m = 0
  for c = 1, #row do m = m + nll(row, c - 1) end
  return (1 - eps) * nll(row, t) + eps * m / #row
end
do
  local eps = 0.1
  local rs, s, n = {}, 0, 0
  for r = 1, 4 do
    if Tg[r] == -100 then rs[r] = 0 else rs[r] = ls_nll(L[r], Tg[r], eps); s = s + rs[r]; n = n + 1 end
  end
  tap.close(gm.cross_entropy(logits, target, {label_smoothing = eps}):item(), s / n, 1e-12,
            'label smoothing {label_smoothing=0.1}: mean over non-ignored rows')
  tap.close(gm.cross_entropy(logits, target, -100, 'mean', eps):item(), s / n, 1e-12,
            'label smoothing as the fifth positional argument')
  tap.close(gm.cross_entropy(logits, target, {reduction = 'sum', label_smoothing = eps}):item(), s, 1e-12,
            'label smoothing, sum')
  tap.all_close(gm.cross_entropy(logits, target, {reduction = 'none', label_smoothing = eps}):totable(), rs, 1e-12,
                'label smoothing, none: per row, 0 where ignored')
  tap.close(gm.cross_entropy(logits:to('f32'), target, {label_smoothing = eps}):item(), s / n, 1e-5,
            'label smoothing f32 agrees with f64')
  tap.close(gm.cross_entropy(logits, target, {label_smoothing = 0}):item(), sum / cnt, 0, 'a = 0 is plain cross_entropy')
  -- a = 1: the target is ignored, the loss is the mean over classes of -log p
  local s1 = 0
  for r = 1, 4 do if Tg[r] ~= -100 then s1 = s1 + ls_nll(L[r], 0, 1) end end
  tap.close(gm.cross_entropy(logits, target, {label_smoothing = 1}):item(), s1 / cnt, 1e-12, 'label smoothing a = 1')
  -- stability: lse 1000, x_k 1000, mean 500 -> 1000 - 0.9 * 1000 - 0.1 * 500
  tap.close(gm.cross_entropy(gm.tensor({{1000, 0}}), i32({0}), {label_smoothing = 0.1}):item(), 50, 1e-6,
            'label smoothing is stable for logits of 1000')
  -- [B, T, C] layout with smoothing
  local L3 = tap.nest(tap.values(24, 9), {2, 3, 4})
  local T3 = {{1, 3, 0}, {2, -100, 3}}
  local s3, n3 = 0, 0
  for b = 1, 2 do for t = 1, 3 do
    if T3[b][t] ~= -100 then s3 = s3 + ls_nll(L3[b][t], T3[b][t], 0.2); n3 = n3 + 1 end
  end end
  tap.close(gm.cross_entropy(f64(L3), i32(T3), {label_smoothing = 0.2}):item(), s3 / n3, 1e-12, 'label smoothing over [B, T, C]')
  -- gradient: (softmax - (1 - eps) onehot - eps / C) / count
  local la = f64(L); la:requires_grad_()
  gm.cross_entropy(la, target, {label_smoothing = eps}):backward()
  local want = {}
  for r = 1, 4 do
    local p = softmax(L[r])
    want[r] = {}
    for c = 1, 5 do
      if Tg[r] == -100 then want[r][c] = 0
      else want[r][c] = (p[c] - (1 - eps) * (c - 1 == Tg[r] and 1 or 0) - eps / 5) / cnt end
    end
  end
  tap.all_close(la.grad:totable(), want, 1e-12, 'label smoothing backward (mean)')
  local lf = gm.tensor(L); lf:requires_grad_()
  gm.cross_entropy(lf, target, {label_smoothing = eps}):backward()
  tap.all_close(lf.grad:totable(), want, 1e-6, 'label smoothing backward in f32')
end

-- ---- binary_cross_entropy_with_logits ---------------------------------------------------
local function sigmoid(x) return 1 / (1 + math.exp(-x)) end
local BX = tap.nest(tap.values(12, 2), {3, 4})
local BY = tap.nest(tap.values(12, 4, 0.5), {3, 4})
for i = 1, 3 do for j = 1, 4 do BY[i][j] = BY[i][j] + 0.5 end end -- soft labels in [0, 1]
do
  local per, s = {}, 0
  for i = 1, 3 do
    per[i] = {}
    for j = 1, 4 do
      local p, y = sigmoid(BX[i][j]), BY[i][j]
      per[i][j] = -(y * math.log(p) + (1 - y) * math.log(1 - p))
      s = s + per[i][j]
    end
  end
  local bx, by = f64(BX), f64(BY)
  tap.close(gm.binary_cross_entropy_with_logits(bx, by):item(), s / 12, 1e-12, 'bce with logits: mean')
  tap.close(bx:binary_cross_entropy_with_logits(by, 'sum'):item(), s, 1e-12, 'bce with logits: sum (method form)')
  local bn = gm.binary_cross_entropy_with_logits(bx, by, 'none')
  tap.ok(tap.same_shape(bn.shape, {3, 4}), 'bce with logits none keeps the shape')
  tap.all_close(bn:totable(), per, 1e-12, 'bce with logits none values')
  tap.close(gm.binary_cross_entropy_with_logits(bx:to('f32'), by:to('f32')):item(), s / 12, 1e-5,
            'bce with logits f32 agrees with f64')
  tap.close(gm.binary_cross_entropy_with_logits(bx:transpose(0, 1), by:transpose(0, 1)):item(), s / 12, 1e-12,
            'bce with logits of transposed views')
  -- stable: log(1 + exp(100)) would overflow in the naive form
  local big = gm.binary_cross_entropy_with_logits(gm.tensor({100, -100, 100, -100, 1e4}), gm.tensor({0, 1, 1, 0, 0}), 'none')
  tap.all_close(big:totable(), {100, 100, 0, 0, 1e4}, 1e-6, 'bce with logits is stable for |x| = 100 and 1e4 in f32')
  tap.close(gm.binary_cross_entropy_with_logits(gm.tensor(0.0), gm.tensor(1.0)):item(), math.log(2), 1e-6,
            'bce with logits of 0-dim tensors')
  local m = gm.binary_cross_entropy_with_logits(gm.zeros{0, 3}, gm.zeros{0, 3}):item()
  tap.ok(m ~= m, 'bce with logits: mean of nothing is NaN')
  -- gradients: (sigmoid(x) - y) / N to the logits, -x / N to the target
  local xa, ya = f64(BX), f64(BY)
  xa:requires_grad_(); ya:requires_grad_()
  gm.binary_cross_entropy_with_logits(xa, ya):backward()
  local gx, gy = {}, {}
  for i = 1, 3 do
    gx[i], gy[i] = {}, {}
    for j = 1, 4 do gx[i][j] = (sigmoid(BX[i][j]) - BY[i][j]) / 12; gy[i][j] = -BX[i][j] / 12 end
  end
  tap.all_close(xa.grad:totable(), gx, 1e-12, 'bce with logits backward to logits: (sigmoid(x) - y) / N')
  tap.all_close(ya.grad:totable(), gy, 1e-12, 'bce with logits backward to target: -x / N')
  local xb = gm.tensor({100, -100}); xb:requires_grad_()
  gm.binary_cross_entropy_with_logits(xb, gm.tensor({0, 1}), 'sum'):backward()
  tap.all_close(xb.grad:totable(), {1, -1}, 1e-6, 'bce with logits gradient is finite for |x| = 100')
  local xc = f64(BX); xc:requires_grad_()
  local w = f64(tap.nest(tap.values(12, 3), {3, 4}))
  ;(gm.binary_cross_entropy_with_logits(xc, by, 'none') * w):sum():backward()
  local W = w:totable()
  for i = 1, 3 do for j = 1, 4 do gx[i][j] = gx[i][j] * 12 * W[i][j] end end
  tap.all_close(xc.grad:totable(), gx, 1e-12, 'bce with logits backward (none, weighted elements)')
end

-- ---- gaussian_nll (log-variance input, no 0.5 log 2 pi) ----------------------------------
local function gnll(m, v, t) return 0.5 * (v + (t - m) ^ 2 * math.exp(-v)) end
local GM_ = tap.nest(tap.values(12, 11), {3, 4})
local GV = tap.nest(tap.values(12, 12, 1), {3, 4})
local GT = tap.nest(tap.values(12, 13), {3, 4})
do
  local per, s = {}, 0
  for i = 1, 3 do
    per[i] = {}
    for j = 1, 4 do per[i][j] = gnll(GM_[i][j], GV[i][j], GT[i][j]); s = s + per[i][j] end
  end
  local m, v, t = f64(GM_), f64(GV), f64(GT)
  tap.close(gm.gaussian_nll(m, v, t):item(), s / 12, 1e-12, 'gaussian_nll mean')
  tap.close(m:gaussian_nll(v, t, 'sum'):item(), s, 1e-12, 'gaussian_nll sum (method form)')
  tap.all_close(gm.gaussian_nll(m, v, t, 'none'):totable(), per, 1e-12, 'gaussian_nll none values')
  tap.close(gm.gaussian_nll(m:to('f32'), v:to('f32'), t:to('f32')):item(), s / 12, 1e-5,
            'gaussian_nll f32 agrees with f64')
  tap.close(gm.gaussian_nll(m:transpose(0, 1), v:transpose(0, 1), t:transpose(0, 1)):item(), s / 12, 1e-12,
            'gaussian_nll of transposed views')
  tap.close(gm.gaussian_nll(1.0 + gm.zeros{}, 0.0, 3.0):item(), 2, 1e-6, 'gaussian_nll of 0-dim tensors and numbers')
  -- at the optimum log_var = log((t - m)^2) the loss is 0.5 (log_var + 1)
  local lv = math.log(4)
  tap.close(gm.gaussian_nll(gm.tensor({1.0}), gm.tensor({lv}), gm.tensor({3.0})):item(), 0.5 * (lv + 1), 1e-6,
            'gaussian_nll at the optimal variance')
  -- a shared log-variance: [4] (per column) and [3, 1] (per row) broadcast to [3, 4]
  local VC, VR = tap.values(4, 20, 1), tap.nest(tap.values(3, 21, 1), {3, 1})
  local sc, sr = 0, 0
  for i = 1, 3 do for j = 1, 4 do
    sc = sc + gnll(GM_[i][j], VC[j], GT[i][j]); sr = sr + gnll(GM_[i][j], VR[i][1], GT[i][j])
  end end
  tap.close(gm.gaussian_nll(m, f64(VC), t):item(), sc / 12, 1e-12, 'gaussian_nll with log_var [4] over [3, 4]')
  tap.close(gm.gaussian_nll(m, f64(VR), t, 'sum'):item(), sr, 1e-12, 'gaussian_nll with log_var [3, 1] over [3, 4]')
  tap.close(gm.gaussian_nll(m, 0.5, t):item(), (function()
    local a = 0
    for i = 1, 3 do for j = 1, 4 do a = a + gnll(GM_[i][j], 0.5, GT[i][j]) end end
    return a / 12 end)(), 1e-12, 'gaussian_nll with a number as log_var')
  -- gradients: dmean = (m - t) e^-v / N, dlog_var = 0.5 (1 - (t - m)^2 e^-v) / N (summed where shared), dtarget = -dmean
  local ma, va, ta, vc = f64(GM_), f64(GV), f64(GT), f64(VC)
  ma:requires_grad_(); va:requires_grad_(); ta:requires_grad_(); vc:requires_grad_()
  gm.gaussian_nll(ma, va, ta):backward()
  local dm, dv, dt, dvc = {}, {}, {}, {0, 0, 0, 0}
  for i = 1, 3 do
    dm[i], dv[i], dt[i] = {}, {}, {}
    for j = 1, 4 do
      local e = math.exp(-GV[i][j])
      dm[i][j] = (GM_[i][j] - GT[i][j]) * e / 12
      dv[i][j] = 0.5 * (1 - (GT[i][j] - GM_[i][j]) ^ 2 * e) / 12
      dt[i][j] = -dm[i][j]
      dvc[j] = dvc[j] + 0.5 * (1 - (GT[i][j] - GM_[i][j]) ^ 2 * math.exp(-VC[j])) / 12
    end
  end
  tap.all_close(ma.grad:totable(), dm, 1e-12, 'gaussian_nll backward to mean')
  tap.all_close(va.grad:totable(), dv, 1e-12, 'gaussian_nll backward to log_var')
  tap.all_close(ta.grad:totable(), dt, 1e-12, 'gaussian_nll backward to target')
  gm.gaussian_nll(m, vc, t):backward()
  tap.ok(tap.same_shape(vc.grad.shape, {4}), 'gaussian_nll: a shared log_var gets a gradient of its shape')
  tap.all_close(vc.grad:totable(), dvc, 1e-12, 'gaussian_nll backward to a shared log_var sums over rows')
end

-- ---- kl_div (both log-probabilities; mean over rows) -------------------------------------
local function log_softmax(row)
  local p, out = softmax(row), {}
  for i, v in ipairs(p) do out[i] = math.log(v) end
  return out
end
local KX, KT = {}, {}
do
  local a, b = tap.nest(tap.values(15, 30), {3, 5}), tap.nest(tap.values(15, 31), {3, 5})
  for r = 1, 3 do KX[r] = log_softmax(a[r]); KT[r] = log_softmax(b[r]) end
end
local function kl_row(x, t)
  local s = 0
  for j = 1, #x do if t[j] ~= -math.huge then s = s + math.exp(t[j]) * (t[j] - x[j]) end end
  return s
end
do
  local per, s = {}, 0
  for r = 1, 3 do per[r] = kl_row(KX[r], KT[r]); s = s + per[r] end
  local kx, kt = f64(KX), f64(KT)
  tap.close(gm.kl_div(kx, kt):item(), s / 3, 1e-12, 'kl_div mean is over rows (batchmean)')
  tap.close(kx:kl_div(kt, 'sum'):item(), s, 1e-12, 'kl_div sum (method form)')
  local kn = gm.kl_div(kx, kt, 'none')
  tap.ok(tap.same_shape(kn.shape, {3}), 'kl_div none: one value per row')
  tap.all_close(kn:totable(), per, 1e-12, 'kl_div none values')
  tap.ok(per[1] > 0 and per[2] > 0, 'kl_div of different distributions is positive')
  tap.close(gm.kl_div(kx, kx):item(), 0, 1e-15, 'kl_div of a distribution with itself is 0')
  tap.close(gm.kl_div(kx:to('f32'), kt:to('f32')):item(), s / 3, 1e-5, 'kl_div f32 agrees with f64')
  tap.close(gm.kl_div(f64(KX[1]), f64(KT[1])):item(), per[1], 1e-12, 'kl_div of one row [C]')
  -- TRADES' form: kl_div(log_softmax(adv), log_softmax(nat)) = KL(nat || adv)
  local za, zb = gm.randn({4, 6}, {dtype = 'f64'}), gm.randn({4, 6}, {dtype = 'f64'})
  local ZA, ZB, st = za:totable(), zb:totable(), 0
  for r = 1, 4 do st = st + kl_row(log_softmax(ZA[r]), log_softmax(ZB[r])) end
  tap.close(gm.kl_div(za:log_softmax(-1), zb:log_softmax(-1)):item(), st / 4, 1e-12, 'kl_div of log_softmax outputs')
  -- target probabilities with zeros: those terms count 0 (p log p -> 0), not NaN
  local z = gm.kl_div(gm.tensor({{0.5, 0.5}}):log(), gm.tensor({{0, 1}}):log()):item()
  tap.close(z, math.log(2), 1e-6, 'kl_div: a target probability of 0 adds 0')
  -- [B, T, C] flattens the leading dims; none has shape [B, T]
  local k3 = gm.kl_div(kx:reshape{1, 3, 5}, kt:reshape{1, 3, 5}, 'none')
  tap.ok(tap.same_shape(k3.shape, {1, 3}), 'kl_div none over [B, T, C] has shape [B, T]')
  tap.all_close(k3:totable(), {per}, 1e-12, 'kl_div over [B, T, C]')
  tap.close(gm.kl_div(kx:transpose(0, 1):contiguous():transpose(0, 1), kt):item(), s / 3, 1e-12, 'kl_div of a non-contiguous input')
  -- gradients: dinput = -exp(t) / N, dtarget = exp(t) (t - x + 1) / N
  local xa, ta = f64(KX), f64(KT)
  xa:requires_grad_(); ta:requires_grad_()
  gm.kl_div(xa, ta):backward()
  local gx, gt = {}, {}
  for r = 1, 3 do
    gx[r], gt[r] = {}, {}
    for j = 1, 5 do
      local p = math.exp(KT[r][j])
      gx[r][j] = -p / 3; gt[r][j] = p * (KT[r][j] - KX[r][j] + 1) / 3
    end
  end
  tap.all_close(xa.grad:totable(), gx, 1e-12, 'kl_div backward to input: -exp(target) / N')
  tap.all_close(ta.grad:totable(), gt, 1e-12, 'kl_div backward to target: exp(t) (t - x + 1) / N')
  local err = gm.gradcheck(function(a, b) return gm.kl_div(a:log_softmax(-1), b:log_softmax(-1)) end,
                           {gm.randn({3, 4}, {dtype = 'f64'}), gm.randn({3, 4}, {dtype = 'f64'})})
  tap.ok(err < 1e-6, 'kl_div composed with log_softmax passes gradcheck', ('max err %g'):format(err))
end

-- ---- symmetric_kl (THOR: 0.5 (KL(p||q) + KL(q||p)) of softmax(logits)) -------------------
local function skl_row(a, b)
  local p, q, s = softmax(a), softmax(b), 0
  for j = 1, #p do s = s + (p[j] - q[j]) * (math.log(p[j]) - math.log(q[j])) end
  return 0.5 * s
end
do
  local SA, SB = tap.nest(tap.values(15, 40), {3, 5}), tap.nest(tap.values(15, 41), {3, 5})
  local per, s = {}, 0
  for r = 1, 3 do per[r] = skl_row(SA[r], SB[r]); s = s + per[r] end
  local sa, sb = f64(SA), f64(SB)
  tap.close(gm.symmetric_kl(sa, sb):item(), s / 3, 1e-12, 'symmetric_kl mean over rows')
  tap.close(sa:symmetric_kl(sb, 'sum'):item(), s, 1e-12, 'symmetric_kl sum (method form)')
  tap.all_close(gm.symmetric_kl(sa, sb, 'none'):totable(), per, 1e-12, 'symmetric_kl none values')
  tap.close(gm.symmetric_kl(sb, sa):item(), s / 3, 1e-14, 'symmetric_kl is symmetric')
  tap.close(gm.symmetric_kl(sa, sa + 3):item(), 0, 1e-15, 'symmetric_kl is 0 for logits that differ by a constant')
  local half = 0.5 * (gm.kl_div(sb:log_softmax(-1), sa:log_softmax(-1)) + gm.kl_div(sa:log_softmax(-1), sb:log_softmax(-1)))
  tap.close(gm.symmetric_kl(sa, sb):item(), half:item(), 1e-12, 'symmetric_kl = 0.5 (kl_div both ways)')
  tap.close(gm.symmetric_kl(sa:to('f32'), sb:to('f32')):item(), s / 3, 1e-5, 'symmetric_kl f32 agrees with f64')
  local s3 = gm.symmetric_kl(sa:reshape{3, 1, 5}, sb:reshape{3, 1, 5}, 'none')
  tap.ok(tap.same_shape(s3.shape, {3, 1}), 'symmetric_kl none over [B, T, C] has shape [B, T]')
  tap.all_close(s3:totable(), {{per[1]}, {per[2]}, {per[3]}}, 1e-12, 'symmetric_kl over [B, T, C]')
  -- stability: logits of +-1000 (p = [1, e^-1000], q reversed): 0.5 (1000 + 1000)
  local big_p, big_q = gm.tensor({{1000, 0}}), gm.tensor({{0, 1000}})
  tap.close(gm.symmetric_kl(big_p, big_q):item(), 1000, 1e-6, 'symmetric_kl is stable for logits of 1000 (f32)')
  big_p:requires_grad_(); big_q:requires_grad_()
  gm.symmetric_kl(big_p, big_q):backward()
  local g = big_p.grad:totable()[1]
  tap.ok(g[1] == g[1] and g[2] == g[2] and math.abs(g[1] - 0.5) < 1e-5 and math.abs(g[2] + 0.5) < 1e-5,
         'symmetric_kl gradient is finite for logits of 1000', ('got %s %s'):format(g[1], g[2]))
  -- a class masked (-inf) in both: it adds nothing, and its gradient is 0
  local mp = gm.tensor({{0, 1, -math.huge}}, {dtype = 'f64'}); mp:requires_grad_()
  local mq = gm.tensor({{1, 0, -math.huge}}, {dtype = 'f64'})
  local lm = gm.symmetric_kl(mp, mq)
  tap.close(lm:item(), skl_row({0, 1}, {1, 0}), 1e-12, 'symmetric_kl ignores a class masked in both')
  lm:backward()
  tap.ok(mp.grad:totable()[1][3] == 0, 'symmetric_kl: no gradient to a class masked in both')
  -- gradients: 0.5 (p (d - KL(p||q)) + p - q) / N and the mirror image for q
  local xa, ya = f64(SA), f64(SB)
  xa:requires_grad_(); ya:requires_grad_()
  gm.symmetric_kl(xa, ya):backward()
  local gx, gy = {}, {}
  for r = 1, 3 do
    local p, q = softmax(SA[r]), softmax(SB[r])
    local kpq, kqp = 0, 0
    for j = 1, 5 do
      kpq = kpq + p[j] * math.log(p[j] / q[j]); kqp = kqp + q[j] * math.log(q[j] / p[j])
    end
    gx[r], gy[r] = {}, {}
    for j = 1, 5 do
      local d = math.log(p[j] / q[j])
      gx[r][j] = 0.5 * (p[j] * (d - kpq) + p[j] - q[j]) / 3
      gy[r][j] = 0.5 * (q[j] * (-d - kqp) + q[j] - p[j]) / 3
    end
  end
  tap.all_close(xa.grad:totable(), gx, 1e-12, 'symmetric_kl backward to p_logits')
  tap.all_close(ya.grad:totable(), gy, 1e-12, 'symmetric_kl backward to q_logits')
end

-- ---- large inputs: chunked/parallel paths agree with Lua and across thread counts ---------
do
  local nt = gm.get_num_threads()
  local function both(f)
    gm.set_num_threads(1); local a1 = f()
    gm.set_num_threads(4); local a4 = f()
    gm.set_num_threads(nt)
    return a1, a4
  end
  local x, y = gm.randn({512, 300}, {dtype = 'f64'}), gm.rand({512, 300}, {dtype = 'f64'})
  local X_, Y_ = x:totable(), y:totable()
  local s = 0
  for i = 1, 512 do for j = 1, 300 do
    local v = X_[i][j]
    s = s + math.max(v, 0) - v * Y_[i][j] + math.log(1 + math.exp(-math.abs(v)))
  end end
  local a1, a4 = both(function() return gm.binary_cross_entropy_with_logits(x, y):item() end)
  tap.close(a1, s / (512 * 300), 1e-12, 'bce with logits over 153600 elements (3 chunks) matches Lua')
  tap.is(a1, a4, 'bce with logits: bitwise the same for 1 and 4 threads')
  local g1, g4 = both(function() return gm.gaussian_nll(x, y, x:transpose(0, 1):contiguous():transpose(0, 1) * 0.5):item() end)
  tap.is(g1, g4, 'gaussian_nll: bitwise the same for 1 and 4 threads')
  local k1, k4 = both(function() return gm.symmetric_kl(x, y):item() end)
  tap.is(k1, k4, 'symmetric_kl: bitwise the same for 1 and 4 threads')
  local ks = 0
  for i = 1, 512 do ks = ks + skl_row(X_[i], Y_[i]) end
  tap.close(k1, ks / 512, 1e-12, 'symmetric_kl over [512, 300] matches Lua')
  local xl, yl = x:log_softmax(-1), y:log_softmax(-1)
  local d1, d4 = both(function() return gm.kl_div(xl, yl):item() end)
  tap.is(d1, d4, 'kl_div: bitwise the same for 1 and 4 threads')
  local e1, e4 = both(function()
    local xa = x:clone(); xa:requires_grad_()
    gm.symmetric_kl(xa, y):backward()
    return xa.grad:sum():item() + (xa.grad * xa.grad):sum():item()
  end)
  tap.is(e1, e4, 'symmetric_kl backward: the same for 1 and 4 threads')
  local tgt = gm.randint(300, {512})
  local c1, c4 = both(function() return gm.cross_entropy(x, tgt, {label_smoothing = 0.1}):item() end)
  tap.is(c1, c4, 'label-smoothed cross_entropy: bitwise the same for 1 and 4 threads')
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
tap.errors(function() return gm.cross_entropy(logits, target, {label_smoothing = 1.5}) end,
           'cross_entropy: label smoothing a must be in %[0, 1%], got 1.5', 'cross_entropy: label smoothing out of range')
tap.errors(function() return gm.binary_cross_entropy_with_logits(gm.randn{3, 4}, gm.rand{4}) end,
           'binary_cross_entropy_with_logits: logits %[3, 4%] and target %[4%] must have the same shape',
           'bce with logits: no broadcasting, names both shapes')
tap.errors(function() return gm.binary_cross_entropy_with_logits(gm.randn{3}, i32({1, 0, 1})) end,
           'binary_cross_entropy_with_logits: dtype mismatch', 'bce with logits: i32 target refused')
tap.errors(function() return gm.gaussian_nll(gm.randn{3, 4}, gm.randn{3, 4}, gm.randn{4}) end,
           'gaussian_nll: mean %[3, 4%] and target %[4%] must have the same shape', 'gaussian_nll: target shape')
tap.errors(function() return gm.gaussian_nll(gm.randn{3, 4}, gm.randn{3}, gm.randn{3, 4}) end,
           "gaussian_nll: log_var %[3%] must have mean's shape %[3, 4%] or broadcast to it", 'gaussian_nll: log_var shape')
tap.errors(function() return gm.gaussian_nll(gm.randn{4}, gm.randn{3, 4}, gm.randn{4}) end,
           "gaussian_nll: log_var %[3, 4%] must have mean's shape %[4%]", 'gaussian_nll: log_var may not grow the loss')
tap.errors(function() return gm.kl_div(gm.randn{3, 4}, gm.randn{3, 5}) end,
           'kl_div: input %[3, 4%] and target %[3, 5%] must have one shape', 'kl_div: shape mismatch names both shapes')
tap.errors(function() return gm.kl_div(gm.randn{3, 4}, gm.randn{3, 4}, 'batchmean') end,
           'reduction must be "mean", "sum" or "none"', 'kl_div: "batchmean" is spelled "mean"')
tap.errors(function() return gm.symmetric_kl(gm.randn{2, 3}, gm.randn{3, 2}) end,
           'symmetric_kl: p_logits %[2, 3%] and q_logits %[3, 2%] must have one shape', 'symmetric_kl: shape mismatch')
tap.errors(function() return gm.symmetric_kl(gm.tensor(1.0), gm.tensor(2.0)) end,
           'symmetric_kl: .* must have one shape %[..., C%]', 'symmetric_kl: 0-dim refused')
tap.errors(function() return gm.symmetric_kl(gm.randn{2, 3}, gm.randn{2, 3}:to('f64')) end,
           'symmetric_kl: dtype mismatch', 'symmetric_kl: dtype mismatch')

tap.done()
