-- t_autograd.lua: autograd from Lua: .grad, accumulation and zeroing, no_grad scopes (also
-- when they raise), requires_grad_ rules, backward with a gradient, retain_graph, grad_fn and
-- is_leaf, and gm.gradcheck both passing on a composite function and catching a wrong one.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local function maxdiff(a, b) return (a - b):abs():max():item() end

-- ---- .grad, accumulation, zeroing -----------------------------------------------------------
do
  local x = gm.tensor({{1, -2, 3}, {0.5, 4, -1}}, {dtype = 'f64', requires_grad = true})
  tap.ok(x.grad == nil, 'a fresh leaf has no .grad')
  local y = (x * x * 3):sum()
  y:backward()
  tap.ok(x.grad ~= nil and maxdiff(x.grad, x:detach() * 6) == 0, 'd sum(3x^2)/dx = 6x')
  tap.is(x.grad.dtype, 'f64', '.grad has the leaf dtype')
  tap.ok(x.grad.shape[1] == 2 and x.grad.shape[2] == 3, '.grad has the leaf shape')
  local y2 = (x * 2):sum()
  y2:backward()
  tap.ok(maxdiff(x.grad, x:detach() * 6 + 2) < 1e-15, 'a second backward accumulates (6x + 2)')
  x.grad = nil
  tap.ok(x.grad == nil, 'x.grad = nil clears it')
  ;(x:sum()):backward()
  tap.ok(maxdiff(x.grad, gm.ones({2, 3}, {dtype = 'f64'})) == 0, 'after clearing, the next backward starts from zero')
  x.grad = gm.zeros({2, 3}, {dtype = 'f64'})
  ;(x * 5):sum():backward()
  tap.ok(maxdiff(x.grad, gm.full({2, 3}, 5, {dtype = 'f64'})) == 0, 'x.grad = zeros: backward adds into it')
  tap.errors(function() x.grad = gm.zeros{2, 3} end, 'shape and dtype', 'assigning a .grad of another dtype refused')
  tap.errors(function() x.grad = gm.zeros({3, 2}, {dtype = 'f64'}) end, 'shape and dtype', 'assigning a .grad of another shape refused')
  local g = x.grad
  tap.ok(not g.requires_grad and g.is_leaf, '.grad itself does not require grad')
end

-- ---- grad modes ---------------------------------------------------------------------------
do
  local x = gm.randn({3}, {requires_grad = true})
  tap.ok(gm.is_grad_enabled(), 'grad mode on by default')
  local y, inside = gm.no_grad(function(a) return a * 2, gm.is_grad_enabled() end, x)
  tap.ok(inside == false and not y.requires_grad and y.grad_fn == nil, 'gm.no_grad(fn, args): fn runs without recording')
  tap.ok(gm.is_grad_enabled(), 'grad mode restored after no_grad')
  local ok, err = pcall(gm.no_grad, function() error('boom', 0) end)
  tap.ok(not ok and err == 'boom', 'an error inside no_grad propagates unchanged')
  tap.ok(gm.is_grad_enabled(), 'grad mode restored after fn raised inside no_grad')
  local ok2 = pcall(gm.no_grad, function() return gm.no_grad(function() return x + nil end) end)
  tap.ok(not ok2 and gm.is_grad_enabled(), 'nested no_grad with an error restores grad mode')
  local z = gm.no_grad(function() return gm.enable_grad(function() return x * 2 end) end)
  tap.ok(z.requires_grad and z.grad_fn == 'mul', 'enable_grad inside no_grad records')
  local a, b, c = gm.no_grad(function() return 1, nil, 3 end)
  tap.ok(a == 1 and b == nil and c == 3, 'no_grad returns all results, nils included')
end

-- ---- requires_grad_ and leaves --------------------------------------------------------------
do
  tap.errors(function() return gm.tensor({1, 2}, {dtype = 'i32'}):requires_grad_() end, 'float',
             'requires_grad_ on an i32 tensor refused')
  tap.errors(function() return gm.zeros({2}, {dtype = 'i32', requires_grad = true}) end, 'float',
             'requires_grad=true on an i32 constructor refused')
  local x = gm.ones{2}
  tap.ok(x:requires_grad_() == x and x.requires_grad, 'requires_grad_() returns x, now requiring grad')
  x:requires_grad_(false)
  tap.ok(not x.requires_grad, 'requires_grad_(false) turns it off')
  x.requires_grad = true
  tap.ok(x.requires_grad, 'x.requires_grad = true')
  local y = x * 3
  tap.ok(not y.is_leaf and x.is_leaf, 'op results are not leaves; inputs are')
  tap.is(y.grad_fn, 'mul', 'grad_fn names the op')
  tap.is((x:exp():sum()).grad_fn, 'sum', 'grad_fn of a reduction')
  tap.is(x:narrow(0, 0, 1).grad_fn, 'narrow', 'grad_fn of a view')
  tap.ok(x.grad_fn == nil, 'a leaf has no grad_fn')
  tap.errors(function() y:requires_grad_(false) end, 'leaf', 'requires_grad_ on a non-leaf refused')
  local d = y:detach()
  tap.ok(d.is_leaf and not d.requires_grad and d.grad_fn == nil, 'detach gives a leaf without grad')
  tap.ok(gm.ones{2}:argmax().grad_fn == nil and not x:argmax().requires_grad, 'argmax (i32) never requires grad')
end

-- ---- backward variants --------------------------------------------------------------------
do
  local x = gm.tensor({1, 2, 3}, {dtype = 'f64', requires_grad = true})
  local y = x * x
  tap.errors(function() y:backward() end, 'not a scalar', 'backward of a non-scalar without a gradient refused')
  tap.errors(function() y:backward(gm.ones({2}, {dtype = 'f64'})) end, 'shape', 'gradient of the wrong shape refused')
  tap.errors(function() y:backward(gm.ones{3}) end, 'dtype', 'gradient of the wrong dtype refused')
  y:backward(gm.tensor({1, 10, 100}, {dtype = 'f64'}))
  tap.ok(maxdiff(x.grad, gm.tensor({2, 40, 600}, {dtype = 'f64'})) == 0, 'y:backward(g) gives 2x * g')
  tap.errors(function() y:backward(gm.ones({3}, {dtype = 'f64'})) end, 'second time', 'backward twice: second time refused')
  x.grad = nil
  local l = (x:exp() * x):sum()
  l:backward(nil, {retain_graph = true})
  local g1 = x.grad:clone()
  l:backward(nil, {retain_graph = true})
  tap.ok(maxdiff(x.grad, g1 * 2) < 1e-12, 'retain_graph: a second backward works and accumulates')
  l:backward()
  tap.ok(maxdiff(x.grad, g1 * 3) < 1e-12, 'a third, non-retaining backward still works')
  tap.errors(function() l:backward() end, 'retain_graph', 'after a non-retaining backward the graph is gone')
  local want = ((x:detach()):exp() * (x:detach() + 1))
  tap.ok(maxdiff(g1, want) < 1e-12, 'd sum(x e^x) = e^x (x + 1)')
  tap.errors(function() gm.ones{2}:sum():backward() end, 'does not require grad', 'backward of a constant refused')

  -- gradient with respect to an input, parameters fixed
  local w = gm.randn({4, 3}, {dtype = 'f64'})
  local inp = gm.randn({2, 4}, {dtype = 'f64'}):requires_grad_()
  ;(inp:matmul(w)):sum():backward()
  tap.ok(maxdiff(inp.grad, gm.ones({2, 3}, {dtype = 'f64'}):matmul(w:t())) < 1e-12, 'gradient w.r.t. an input of x @ w')
  tap.ok(w.grad == nil, 'the weight that does not require grad gets none')

  -- detach cuts a path
  local v = gm.tensor({0.5, -1.5}, {dtype = 'f64', requires_grad = true})
  ;(v:detach() * v):sum():backward()
  tap.ok(maxdiff(v.grad, v:detach()) == 0, 'x:detach() * x: only the attached factor contributes')
  -- a diamond
  local u = gm.tensor({0.3, 0.7}, {dtype = 'f64', requires_grad = true})
  local a, b = u:exp(), u:tanh()
  ;((a + b) * a):sum():backward()
  local ud = u:detach()
  local ea, tb = ud:exp(), ud:tanh()
  local expect = ea * (ea + tb) + ea * (ea + (1 - tb * tb))
  tap.ok(maxdiff(u.grad, expect) < 1e-12, 'diamond: both paths to u are summed')
end

-- ---- gm.gradcheck -------------------------------------------------------------------------
do
  gm.manual_seed(3)
  local x = gm.randn({4, 5}, {dtype = 'f64'})
  local w = gm.randn({5, 3}, {dtype = 'f64'})
  local mask = gm.tensor({{1, 0, 1}, {0, 1, 1}, {1, 1, 0}, {1, 0, 0}}, {dtype = 'f64'})
  local function f(a, b, m) return (gm.softmax(a:matmul(b), -1) * m):sum() end
  local err, worst = gm.gradcheck(f, {x, w, mask})
  tap.ok(err < 1e-6, ('gradcheck of sum(softmax(x @ w) * mask): max err %.2e'):format(err))
  tap.ok(worst ~= nil and worst.input >= 1 and worst.input <= 2, 'gradcheck reports the worst element of a float input')
  local err2 = gm.gradcheck(function(a) return a:tanh(), a:sigmoid():sum() end, {x})
  tap.ok(err2 < 1e-6, ('gradcheck of a function with two outputs: %.2e'):format(err2))
  local idx = gm.tensor({2, 0, 1, 1}, {dtype = 'i32'})
  local err3 = gm.gradcheck(function(a, t) return gm.cross_entropy(a, t) end, {gm.randn({4, 3}, {dtype = 'f64'}), idx})
  tap.ok(err3 < 1e-6, ('gradcheck with an i32 input passed through: %.2e'):format(err3))
  tap.ok(not x.requires_grad and x.grad == nil, 'gradcheck does not touch the caller\'s tensors')

  -- a function whose analytic gradient is deliberately wrong: autograd sees one factor of x*x
  local xs = gm.tensor({0.5, -1.25, 2.0, 0.75}, {dtype = 'f64'})
  local bad, bw = gm.gradcheck(function(a) return (a:detach() * a):sum() end, {xs})
  tap.ok(bad > 1e-2, ('gradcheck catches x:detach() * x (err %.3g > 1e-2)'):format(bad))
  tap.ok(bw and math.abs(bw.numeric - 2 * bw.analytic) < 1e-6,
         'the worst element shows numeric = 2 x analytic, as expected for the missing factor')
  -- a gradient dropped entirely: f computes in no_grad
  local bad2 = gm.gradcheck(function(a) return a:exp():sum() + gm.no_grad(function() return (a * a):sum() end) end, {xs})
  tap.ok(bad2 > 1e-2, ('gradcheck catches a term computed under no_grad (err %.3g)'):format(bad2))
  -- f32 inputs are checked in f64
  local err4 = gm.gradcheck(function(a) return a:exp() end, {gm.randn{3}})
  tap.ok(err4 < 1e-6, ('f32 inputs are promoted to f64 for gradcheck: %.2e'):format(err4))
  tap.errors(function() gm.gradcheck(function() return 1 end, {xs}) end, 'no float tensor',
             'gradcheck of a function returning no tensor refused')
end

-- Slices of one tensor (q, k, v narrowed off a projection): their gradients are added into the
-- input's gradient buffer in place once autograd holds one; overlapping slices, a select and a
-- gradient the user holds (not modified in place) all give the composed result.
do
  local x = gm.randn({4, 6}, {dtype = 'f64', requires_grad = true})
  local function f(xx)
    local y = xx * 2
    local a, b, c = y:narrow(1, 0, 2), y:narrow(1, 2, 2), y:narrow(1, 3, 3)
    return (a * a):sum() + (b * 3):sum() + c:sin():sum() + y:select(0, 1):exp():sum()
  end
  f(x):backward()
  local xd = x:detach()
  local yd = xd * 2
  local z = function(r, c) return gm.zeros({r, c}, {dtype = 'f64'}) end
  local want = gm.cat({yd:narrow(1, 0, 2) * 4, z(4, 4)}, 1)
    + gm.cat({z(4, 2), gm.full({4, 2}, 6, {dtype = 'f64'}), z(4, 2)}, 1)
    + gm.cat({z(4, 3), yd:narrow(1, 3, 3):cos() * 2}, 1)
    + gm.cat({z(1, 6), yd:select(0, 1):exp():reshape {1, 6} * 2, z(2, 6)}, 0)
  tap.ok((x.grad - want):abs():max():item() < 1e-12, 'gradients of overlapping narrows and a select add up')
  tap.ok(gm.gradcheck(f, {xd:clone()}) < 1e-6, 'gradcheck through the slices')
  -- y:narrow's gradient feeds y's buffer; a hook-free way to hold y's gradient: retain it
  local x2 = gm.randn({3, 5}, {dtype = 'f64', requires_grad = true})
  local y2 = x2 * 1
  local s1, s2 = y2:narrow(1, 0, 3), y2:narrow(1, 2, 3)
  local l = s1:sum() + (s2 * 2):sum()
  l:backward()
  local want2 = gm.tensor({1, 1, 3, 2, 2}, {dtype = 'f64'}):reshape {1, 5}:expand {3, 5}
  tap.ok((x2.grad - want2):abs():max():item() == 0, 'slice gradients of a plain product')
end

tap.done()
