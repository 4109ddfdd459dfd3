-- t_moe_cnn.lua: the AdvMoE building blocks of gm.nn: hard_top1 (exact one-hot forward, identity
-- backward), MoEConv2d equals a dense conv restricted to each example's selected channels (both
-- compute modes, grouped and ungrouped batches) with equal gradients, f64 gradchecks of the layer,
-- the straight-through router gradient of a whole MoECNN against finite differences on the gate
-- values, MoECNN's grouped forward against compute="all", per-layer routers, routing diagnostics,
-- MAC counts and errors.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local nn = gm.nn

local function maxdiff(a, b) return (a:to('f64') - b:to('f64')):abs():max():item() end
local function i32(t) return gm.tensor(t, {dtype = 'i32'}) end

-- ---- hard_top1 ---------------------------------------------------------------------------------
do
  local s = gm.tensor({{0.3, -1.0, 2.0}, {1.5, 1.5, 0.0}, {-3.0, -2.0, -2.5}}, {dtype = 'f64', requires_grad = true})
  local gate, ids = nn.hard_top1(s)
  tap.all_close(ids:totable(), {2, 0, 1}, 0, 'hard_top1: argmax ids (ties to the lower index)')
  tap.all_close(gate:totable(), {{0, 0, 1}, {1, 0, 0}, {0, 1, 0}}, 0, 'hard_top1: an exact one-hot forward')
  local w = gm.randn({3, 3}, {dtype = 'f64'})
  ;(gate * w):sum():backward()
  tap.ok(maxdiff(s.grad, w) == 0, 'hard_top1: the backward passes the gradient unchanged (straight-through)')
  tap.errors(function() nn.hard_top1(gm.tensor {{0 / 0, 1}}) end, 'hard_top1: 1 router scores are NaN', 'NaN scores are an error')
end

-- ---- MoEConv2d vs a dense conv restricted to the selected channels ----------------------------
local function reference(conv, x, ids)
  local full = gm.nn.functional.conv2d(x, conv.weight, conv.bias, {stride = conv.stride, padding = conv.padding})
  local rows = {}
  for n, e in ipairs(ids:totable()) do rows[n] = full[n - 1]:narrow(0, e * conv.width, conv.width) end
  return gm.stack(rows, 0)
end

do
  gm.manual_seed(11)
  local ids = i32 {2, 0, 2, 1, 0, 2, 2}
  for _, cfg in ipairs {{stride = 1, padding = 1, k = 3}, {stride = 2, padding = 0, k = 2}} do
    for _, compute in ipairs {'selected', 'all'} do
      local conv = nn.MoEConv2d(4, 10, cfg.k, {stride = cfg.stride, padding = cfg.padding, experts = 3, ratio = 0.5,
                                               compute = compute, dtype = 'f64', generator = gm.Generator(1)})
      local x = gm.randn({7, 4, 6, 6}, {dtype = 'f64'})
      local y = conv(x, ids)
      tap.is(conv.width, 5, 'MoEConv2d: width floor(ratio * out_channels)')
      tap.ok(maxdiff(y, reference(conv, x, ids)) < 1e-12,
             ('MoEConv2d (%s, stride %d): equals the dense conv restricted to the selected channels'):format(compute, cfg.stride))
    end
  end
  -- a batch already grouped by expert (route:sorted_view) gives the same rows in grouped order
  local conv = nn.MoEConv2d(4, 8, 3, {padding = 1, experts = 3, dtype = 'f64'})
  local x = gm.randn({7, 4, 5, 5}, {dtype = 'f64'})
  local r = nn.route(ids, {experts = 3})
  tap.all_close(r.counts, {2, 1, 4}, 0, 'route: counts per expert')
  tap.all_close(r.perm:totable(), {1, 4, 3, 0, 2, 5, 6}, 0, 'route: a stable grouping by expert')
  local ys = conv(x:index_select(0, r.perm), r:sorted_view())
  tap.ok(maxdiff(ys, conv(x, r):index_select(0, r.perm)) < 1e-12, 'MoEConv2d on a grouped batch (sorted route)')
end

-- gradients of the two compute modes agree (x, weight, bias, router scores)
do
  gm.manual_seed(12)
  local x0 = gm.randn({6, 3, 5, 5}, {dtype = 'f64'})
  local s0 = gm.randn({6, 2}, {dtype = 'f64'})
  local gy = gm.randn({6, 4, 5, 5}, {dtype = 'f64'})
  local grads = {}
  for i, compute in ipairs {'selected', 'all'} do
    local conv = nn.MoEConv2d(3, 8, 3, {padding = 1, experts = 2, compute = compute, dtype = 'f64',
                                        generator = gm.Generator(2)})
    local x, s = x0:clone():requires_grad_(), s0:clone():requires_grad_()
    ;(conv(x, s) * gy):sum():backward()
    grads[i] = {x.grad, conv.weight.grad, conv.bias.grad, s.grad}
  end
  local worst = 0
  for k = 1, 4 do worst = math.max(worst, maxdiff(grads[1][k], grads[2][k])) end
  tap.ok(worst < 1e-12, 'MoEConv2d: selected and all give the same gradients (x, weight, bias, scores)', tostring(worst))
  local ids = s0:argmax(-1):totable()
  local zero_other = true
  for n, e in ipairs(ids) do zero_other = zero_other and grads[1][4]:totable()[n][2 - e] == 0 end
  tap.ok(zero_other, 'MoEConv2d: only the selected score gets a gradient (as the released GetMask + gather)')
end

-- f64 gradchecks of the layer (x, weight, bias) for fixed routings, both compute modes
for _, compute in ipairs {'selected', 'all'} do
  gm.manual_seed(13)
  local conv = nn.MoEConv2d(2, 6, 3, {stride = 2, padding = 1, experts = 3, compute = compute, dtype = 'f64'})
  local ids = i32 {1, 1, 0, 2}
  local err = gm.gradcheck(function(x, w, b)
    conv.weight, conv.bias = w, b
    return conv(x, ids)
  end, {gm.randn({4, 2, 5, 5}, {dtype = 'f64'}), conv.weight, conv.bias})
  tap.ok(err < 1e-6, 'MoEConv2d gradcheck (f64, ' .. compute .. ')', tostring(err))
end

-- ---- the straight-through gradient of a whole MoECNN by finite differences on the gates --------
do
  gm.manual_seed(14)
  local net = nn.MoECNN {widths = {6, 8, 8}, strides = {1, 2, 2}, classes = 3, experts = 2, dtype = 'f64',
                         generator = gm.Generator(3)}
  local x = gm.rand({5, 3, 8, 8}, {dtype = 'f64'})
  local w = gm.randn({5, 3}, {dtype = 'f64'})
  local s = gm.tensor({{0.2, -0.1}, {-1, 1}, {0.5, 0.7}, {2, 0}, {0, 0.3}}, {dtype = 'f64', requires_grad = true})
  local Fixed = nn.Module:extend('FixedScores')
  function Fixed:forward() return s end
  local router = net.router
  net.router = Fixed()
  local logits = net(x)
  local ids = s:argmax(-1):totable()
  tap.all_close(net.last_ids:totable(), ids, 0, 'MoECNN records the chosen experts')
  ;(logits * w):sum():backward()
  local function L(gate)
    local r = nn.route(i32(ids), {experts = 2})
    r.gate = gate
    return (net(x, {route = r}) * w):sum():item()
  end
  local h, worst, zero_other = 1e-6, 0, true
  local g = s.grad:totable()
  for n = 1, 5 do
    local up, dn = gm.ones({5}, {dtype = 'f64'}), gm.ones({5}, {dtype = 'f64'})
    up[n - 1] = 1 + h
    dn[n - 1] = 1 - h
    local num = (L(up) - L(dn)) / (2 * h)
    worst = math.max(worst, math.abs(num - g[n][ids[n] + 1]) / math.max(1, math.abs(num)))
    zero_other = zero_other and g[n][2 - ids[n]] == 0
  end
  tap.ok(worst < 1e-7, 'straight-through: d L / d s[n, e(n)] equals the finite difference in the gate value', tostring(worst))
  tap.ok(zero_other, 'straight-through: the unselected score gets no gradient')
  net.router = router
  -- grouped (selected) forward == compute all, outputs and parameter gradients
  local a = nn.MoECNN {widths = {6, 8}, strides = {1, 2}, classes = 3, dtype = 'f64', generator = gm.Generator(9)}
  local b = nn.MoECNN {widths = {6, 8}, strides = {1, 2}, classes = 3, dtype = 'f64', generator = gm.Generator(9),
                       compute = 'all'}
  local xs = gm.rand({9, 3, 8, 8}, {dtype = 'f64'})
  local ya, yb = a(xs), b(xs)
  tap.ok(maxdiff(ya, yb) < 1e-12, 'MoECNN: the grouped forward equals compute="all"')
  ;(ya * gm.ones_like(ya)):sum():backward()
  ;(yb * gm.ones_like(yb)):sum():backward()
  local pw = 0
  local pb = b:parameters()
  for i, p in ipairs(a:parameters()) do pw = math.max(pw, maxdiff(p.grad, pb[i].grad)) end
  tap.ok(pw < 1e-10, 'MoECNN: the same parameter gradients (router included)', tostring(pw))
  tap.ok(a.router.fc.weight.grad:abs():sum():item() > 0, 'the router is trained through the straight-through path')
  local fixed = a(xs, {ids = a.last_ids})
  tap.ok(maxdiff(fixed, ya) < 1e-12, 'MoECNN: a fixed routing reproduces the routed forward')
  local _, scores = a(xs)
  tap.ok(scores and scores.shape[2] == 2 and scores.requires_grad, 'MoECNN returns the router scores with their graph')
  local hard = a(xs, {hard = true})
  tap.ok(maxdiff(hard, ya) < 1e-12, 'MoECNN hard=true: the same forward')
  a.router.fc.weight.grad = nil
  local xr = xs:clone():requires_grad_()
  ;(a(xr, {hard = true}) * 1):sum():backward()
  tap.ok(a.router.fc.weight.grad == nil and xr.grad ~= nil, 'MoECNN hard=true: no gradient through the routing')
  tap.all_close(a:routing(xs):totable(), a.last_ids:totable(), 0, 'MoECNN:routing gives the chosen experts')
end

-- ---- per-layer routers ---------------------------------------------------------------------------
do
  gm.manual_seed(15)
  local net = nn.MoECNN {widths = {6, 8, 8}, strides = {1, 2, 1}, classes = 3, router = 'per_layer', dtype = 'f64'}
  local x = gm.rand({4, 3, 8, 8}, {dtype = 'f64'})
  local y = net(x)
  tap.is(table.concat(net.last_ids.shape, 'x'), '4x3', 'per-layer routers: ids [N, layers]')
  ;(y * y):sum():backward()
  tap.ok(net.gates[1].weight.grad ~= nil, 'per-layer routers: the gates get a straight-through gradient')
  tap.ok(net.router == nil, 'per-layer routers: no shared router')
end

-- ---- diagnostics, MACs, errors -------------------------------------------------------------------
tap.all_close(nn.expert_usage(i32 {0, 1, 1, 1}, 2), {0.25, 0.75}, 1e-12, 'expert_usage: fractions per expert')
tap.all_close(nn.expert_usage(i32 {1, 1, 1}, 3), {0, 1, 0}, 1e-12, 'expert_usage: a collapsed router shows as one expert')
tap.ok(math.abs(nn.flip_rate(i32 {0, 1, 1, 0}, i32 {0, 0, 1, 1}) - 0.5) < 1e-7, 'flip_rate: the fraction that changed')
tap.ok(math.abs(nn.flip_rate(i32 {{0, 1}, {1, 1}}, i32 {{0, 1}, {1, 0}}) - 0.5) < 1e-7,
       'flip_rate: per-layer routings count an input once')
do
  local moe, dense = nn.MoECNN {}, nn.DenseCNN {}
  local am, full = moe:macs(32, 32)
  local ad, full2 = dense:macs(32, 32)
  local want_full = 16 * 3 * 9 * 1024 + 32 * 16 * 9 * 256 + 64 * 32 * 9 * 256 + 64 * 64 * 9 * 64 + 64 * 10
  local want_dense = 8 * 3 * 9 * 1024 + 16 * 8 * 9 * 256 + 32 * 16 * 9 * 256 + 32 * 32 * 9 * 64 + 32 * 10
  local want_router = 8 * 3 * 9 * 1024 + 16 * 8 * 9 * 256 + 16 * 2
  tap.is(full, want_full, 'macs: the full-width dense network')
  tap.is(full2, want_full, 'macs: the same reference for the dense baseline')
  tap.is(ad, want_dense, 'macs: the dense baseline at ratio 0.5')
  tap.is(am, want_dense + want_router, 'macs: MoE active = the same width + the router')
end
tap.errors(function() nn.MoEConv2d(3, 4, 3, {ratio = 1.5}) end, 'ratio must be a number in', 'ratio range')
tap.errors(function() nn.MoEConv2d(3, 4, 3, {compute = 'some'}) end, 'compute must be', 'compute option')
tap.errors(function() nn.MoEConv2d(3, 4, 3)(gm.rand {2, 3, 5, 5}, i32 {0, 1, 0}) end,
           'the route has 3 inputs, x has 2', 'route and batch sizes must agree')
tap.errors(function() nn.route(i32 {0, 2}, {experts = 2}) end, 'id 2 at 1 is outside', 'ids out of range')
tap.errors(function() nn.MoECNN {router = 'global'} end, 'router must be', 'router option')

tap.done()
