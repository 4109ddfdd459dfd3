-- t_attack.lua: gm.attack.fgsm / pgd against hand-computed steps on a linear model (sign of
-- the gradient, projection onto the eps-ball, clamping to the valid range), with the default
-- cross-entropy loss, a custom loss and an extra term; PGD never leaves the eps-ball or the range
-- on a CNN; an attack leaves parameter gradients, requires_grad and train/eval mode as they were
-- (also on error); option errors; gm.trades_loss against its formula and a f64 gradcheck.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local function maxdiff(a, b) return (a:to('f64') - b:to('f64')):abs():max():item() end
local function sign(v) return v > 0 and 1 or v < 0 and -1 or 0 end

-- A linear model f(x) = x W^T + b in f64 with weights chosen by hand.
local lin = gm.nn.Linear(3, 2, {dtype = 'f64'})
gm.no_grad(function()
  lin.weight:copy_(gm.tensor({{1.0, -2.0, 0.5}, {-1.0, 1.0, 0.0}}, {dtype = 'f64'}))
  lin.bias:copy_(gm.tensor({0.1, -0.2}, {dtype = 'f64'}))
end)
local x = gm.tensor({{0.5, 0.5, 0.5}, {0.02, 0.9, 0.99}}, {dtype = 'f64'})
local c = gm.tensor({{1.0, 0.0}, {0.0, 1.0}}, {dtype = 'f64'})
-- L = sum(f(x) * c): grad_x row n = c[n] @ W, i.e. row 0: W[0] = (1, -2, 0.5), row 1: W[1] = (-1, 1, 0).
local linear_loss = function(out, t) return (out * t):sum() end
local gW = {{1.0, -2.0, 0.5}, {-1.0, 1.0, 0.0}}

local function expected(step, eps, steps, lo, hi)
  local xt, out = x:totable(), {}
  for n = 1, 2 do
    out[n] = {}
    for j = 1, 3 do
      local v = xt[n][j]
      for _ = 1, steps do
        v = v + step * sign(gW[n][j])
        v = math.min(math.max(v, xt[n][j] - eps), xt[n][j] + eps)
        v = math.min(math.max(v, lo), hi)
      end
      out[n][j] = v
    end
  end
  return gm.tensor(out, {dtype = 'f64'})
end

do
  local xa = gm.attack.fgsm(lin, x, c, {eps = 0.05, loss = linear_loss})
  tap.ok(maxdiff(xa, expected(0.05, 0.05, 1, 0, 1)) < 1e-12,
         'fgsm: x + eps*sign(grad), clamped to [0, 1] (0.99 + 0 stays, 0.02 - 0.05 -> 0)', tostring(xa))
  tap.ok(xa:totable()[2][3] == 0.99, 'fgsm: a zero gradient leaves the coordinate alone (sign 0)')
  xa = gm.attack.pgd(lin, x, c, {eps = 0.1, step = 0.03, steps = 2, random_start = false, loss = linear_loss})
  tap.ok(maxdiff(xa, expected(0.03, 0.1, 2, 0, 1)) < 1e-12, 'pgd: two signed steps of 0.03 inside the ball')
  xa = gm.attack.pgd(lin, x, c, {eps = 0.1, step = 0.03, steps = 5, random_start = false, loss = linear_loss})
  tap.ok(maxdiff(xa, expected(0.03, 0.1, 5, 0, 1)) < 1e-12, 'pgd: five steps of 0.03 are projected back to eps = 0.1')
  tap.ok(math.abs(xa:totable()[1][1] - 0.6) < 1e-12, 'pgd: projection caps the move at eps (0.5 -> 0.6)')
  xa = gm.attack.pgd(lin, x, c, {eps = 0.1, step = 0.03, steps = 5, random_start = false, loss = linear_loss,
                                 clamp = {0.1, 0.95}})
  tap.ok(maxdiff(xa, expected(0.03, 0.1, 5, 0.1, 0.95)) < 1e-12, 'pgd: a custom valid range {0.1, 0.95}')
  -- extra term: + 3 * sum(x_adv[:, 2]) flips the sign of the gradient of coordinate 2 of row 1
  -- (0.5 + 3 > 0 stays; row 2: 0 + 3 > 0 becomes positive).
  xa = gm.attack.fgsm(lin, x, c, {eps = 0.05, loss = linear_loss,
                                  extra = function(z) return z:narrow(1, 2, 1):sum() * 3 end})
  tap.ok(math.abs(xa:totable()[2][3] - 1.0) < 1e-12 and math.abs(xa:totable()[1][3] - 0.55) < 1e-12,
         'fgsm: an extra loss term of x_adv enters the gradient')
end

-- Cross-entropy (the default loss) against the hand-computed gradient (softmax - onehot) W.
do
  local y = gm.tensor({0, 1}, {dtype = 'i32'})
  local out = gm.no_grad(function() return lin(x) end):totable()
  local W = lin.weight:totable()
  local want = {}
  local xt = x:totable()
  for n = 1, 2 do
    local m = math.max(out[n][1], out[n][2])
    local e1, e2 = math.exp(out[n][1] - m), math.exp(out[n][2] - m)
    local p = {e1 / (e1 + e2), e2 / (e1 + e2)}
    p[y:totable()[n] + 1] = p[y:totable()[n] + 1] - 1
    want[n] = {}
    for j = 1, 3 do
      local g = p[1] * W[1][j] + p[2] * W[2][j]
      want[n][j] = math.min(math.max(xt[n][j] + 0.04 * sign(g), 0), 1)
    end
  end
  local xa = gm.attack.fgsm(lin, x, y, {eps = 0.04})
  tap.ok(maxdiff(xa, gm.tensor(want, {dtype = 'f64'})) < 1e-12, 'fgsm with cross_entropy: sign((softmax - onehot) W)')
end

-- PGD from a random start on a CNN never leaves the eps-ball or [0, 1].
do
  gm.manual_seed(3)
  local net = gm.nn.DenseCNN {widths = {8, 8}, strides = {1, 2}, classes = 4, ratio = 1}
  local xs = gm.rand {6, 3, 8, 8}
  xs = gm.where(xs:lt(0.2), gm.zeros_like(xs), xs) -- some pixels at the border of the range
  local ys = gm.randint(0, 4, {6})
  local eps = 8 / 255
  for _, rs in ipairs {'uniform', 'normal'} do
    local xa = gm.attack.pgd(net, xs, ys, {eps = eps, step = 3 / 255, steps = 7, random_start = rs,
                                           generator = gm.Generator(5)})
    local d = (xa - xs):abs():max():item()
    tap.ok(d <= eps + 1e-6, 'pgd (' .. rs .. ' start): |x_adv - x|_inf <= eps', ('%.8f vs %.8f'):format(d, eps))
    tap.ok(xa:min():item() >= 0 and xa:max():item() <= 1, 'pgd (' .. rs .. ' start): x_adv stays in [0, 1]')
    tap.ok(not xa.requires_grad, 'pgd: x_adv is detached')
  end
  local l0 = gm.cross_entropy(net(xs), ys):item()
  local xa = gm.attack.pgd(net, xs, ys, {eps = eps, step = 2 / 255, steps = 10})
  tap.ok(gm.cross_entropy(net(xa), ys):item() > l0, 'pgd raises the loss')

  -- Attacks leave parameter gradients, requires_grad and train/eval flags as they were.
  gm.cross_entropy(net(xs), ys):backward()
  local before = {}
  for i, p in ipairs(net:parameters()) do before[i] = p.grad:clone() end
  net:train()
  net.convs[0]:eval() -- a mixed state is restored exactly
  gm.attack.pgd(net, xs, ys, {eps = eps, step = 2 / 255, steps = 3, mode = 'eval'})
  local same = true
  for i, p in ipairs(net:parameters()) do
    same = same and p.requires_grad and maxdiff(p.grad, before[i]) == 0
  end
  tap.ok(same, 'pgd: parameter .grad unchanged and requires_grad kept')
  tap.ok(net.training and not net.convs[0].training and net.head.training, 'pgd: train/eval flags restored')
  local seen_mode
  local probe = gm.nn.Module:extend('Probe')
  function probe:init() self.net = net end
  function probe:forward(z) seen_mode = self.training return self.net(z) end
  local pm = probe()
  pm:train()
  gm.attack.fgsm(pm, xs, ys, {eps = eps, mode = 'eval'})
  tap.ok(seen_mode == false and pm.training, 'mode="eval" runs the attack in eval mode, then restores train mode')
  -- a function model: the modules named in opts.modules are protected
  gm.attack.fgsm(function(z) return net(z) end, xs, ys, {eps = eps, modules = {net}})
  same = true
  for i, p in ipairs(net:parameters()) do same = same and maxdiff(p.grad, before[i]) == 0 end
  tap.ok(same, 'fgsm on a function model: the modules given are protected')
  -- an error inside the attack restores everything as well
  local ok = pcall(gm.attack.pgd, net, xs, ys, {eps = eps, steps = 2, loss = function() error('boom') end})
  local restored = not ok
  for _, p in ipairs(net:parameters()) do restored = restored and p.requires_grad end
  tap.ok(restored, 'an error in the loss restores requires_grad')
end

-- Option errors name the function and the value.
tap.errors(function() gm.attack.pgd(lin, x, c, {}) end, 'gm.attack.pgd: eps must be a number', 'eps is required')
tap.errors(function() gm.attack.pgd(lin, x, c, {eps = 0.1, stepz = 1}) end, 'unknown option stepz', 'unknown option')
tap.errors(function() gm.attack.fgsm(lin, x, c, {eps = 0.1, clamp = {1, 0}}) end, 'clamp must be', 'bad clamp')
tap.errors(function() gm.attack.fgsm(42, x, c, {eps = 0.1}) end, 'model must be', 'model type')
tap.errors(function() gm.attack.fgsm(lin, x, c, {eps = 0.1, loss = function() return gm.tensor(1.0) end}) end,
           'does not depend on the input', 'a loss without gradient is an error')

-- TRADES loss: CE + beta * (1/B) sum p_nat (log p_nat - log p_adv), gradient into both logits.
do
  gm.manual_seed(4)
  local a, b = gm.randn({5, 3}, {dtype = 'f64'}), gm.randn({5, 3}, {dtype = 'f64'})
  local y = gm.randint(0, 3, {5})
  local loss, ce, kl = gm.trades_loss(a, b, y, {beta = 2})
  local pa, la, lb = a:softmax(-1), a:log_softmax(-1), b:log_softmax(-1)
  local want_kl = (pa * (la - lb)):sum():item() / 5
  tap.ok(math.abs(kl:item() - want_kl) < 1e-12, 'trades: KL(p_nat || p_adv), batch mean')
  tap.ok(math.abs(loss:item() - (gm.cross_entropy(a, y):item() + 2 * want_kl)) < 1e-12, 'trades: CE + beta KL')
  tap.ok(math.abs(ce:item() - gm.cross_entropy(a, y):item()) < 1e-12, 'trades: the CE term')
  local err = gm.gradcheck(function(p, q) return (gm.trades_loss(p, q, y)) end, {a, b})
  tap.ok(err < 1e-6, 'trades_loss gradcheck (f64, both logits)', tostring(err))
  tap.ok(gm.trades_loss == gm.nn.functional.trades_loss, 'gm.trades_loss is gm.nn.functional.trades_loss')
end

tap.done()
