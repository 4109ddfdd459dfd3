-- t_threads.lua: thread-count determinism. Every CPU kernel splits work with gm_parallel_for
-- into a fixed partition of independent units (a reduction is cut only where the shape says),
-- so large inputs give bitwise the same results with 1 and 2 threads; BLAS products are the
-- exception (see below). Inputs are big enough (~200000 elements) to
-- take the threaded path; the same tensors feed both runs.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local saved = gm.get_num_threads()

-- Bitwise comparison element by element (NaN-free inputs; i32 compared exactly too).
local function same(a, b, name)
  local fa, fb = a:flatten():totable(), b:flatten():totable()
  local bad
  if #fa ~= #fb then bad = ('sizes %d vs %d'):format(#fa, #fb)
  else
    for i = 1, #fa do
      if fa[i] ~= fb[i] then
        bad = ('element %d: %.17g vs %.17g'):format(i - 1, fa[i], fb[i])
        break
      end
    end
  end
  return tap.ok(bad == nil, name, bad)
end

-- Run f (returning a list of tensors) with 1 and with 2 threads; compare each output.
local function check(name, f)
  gm.set_num_threads(1)
  local r1 = {f()}
  gm.set_num_threads(2)
  local r2 = {f()}
  for k = 1, #r1 do same(r1[k], r2[k], ('%s [%d] 1 vs 2 threads'):format(name, k)) end
end

for _, dt in ipairs{'f32', 'f64'} do
  local a = gm.randn{200000}:to(dt)
  local b = gm.randn{200000}:to(dt)
  local m = gm.randn{400, 500}:to(dt) -- rows of 500 for softmax and row reductions
  local t = gm.randn{500, 400}:to(dt):transpose(0, 1) -- non-contiguous [400, 500]
  check(dt .. ' add', function() return a + b end)
  check(dt .. ' add broadcast', function() return m + a:narrow(0, 0, 500) end)
  check(dt .. ' exp', function() return a:exp() end)
  check(dt .. ' exp non-contiguous', function() return t:exp() end)
  check(dt .. ' sum all', function() return a:sum() end)
  check(dt .. ' sum dim 1', function() return m:sum(1) end)
  check(dt .. ' sum dim 0 (column blocks)', function() return m:sum(0) end)
  check(dt .. ' var / logsumexp dim 1', function() return m:var(1), m:logsumexp(1) end)
  check(dt .. ' max dim 1', function() return m:max(1) end)
  check(dt .. ' softmax', function() return m:softmax(1), m:log_softmax(1), t:softmax(1) end)
  check(dt .. ' cumsum', function() return m:cumsum(1) end)

  local idx = gm.randint(500, {400, 500})
  check(dt .. ' gather', function() return gm.gather(m, 1, idx) end)
  local rows = gm.randint(400, {300})
  check(dt .. ' index_select', function() return m:index_select(0, rows), t:index_select(0, rows) end)
  check(dt .. ' topk', function() return m:topk(5, 1) end)

  local logits = gm.randn{2000, 100}:to(dt)
  local target = gm.randint(100, {2000})
  check(dt .. ' cross_entropy', function()
    return gm.cross_entropy(logits, target), gm.cross_entropy(logits, target, -100, 'none')
  end)
  check(dt .. ' cross_entropy backward', function()
    local x = logits:clone()
    x:requires_grad_()
    gm.cross_entropy(x, target):backward()
    return x.grad
  end)
  check(dt .. ' mse_loss backward', function()
    local x = a:clone()
    x:requires_grad_()
    gm.mse_loss(x, b):backward()
    return x.grad
  end)
end

-- conv2d: the batch is cut into one range of images per thread and every image is one
-- single-threaded product, so the output and the input gradient are bitwise the same for any
-- thread count; the weight gradient adds per-range sums (rounding only); a batch smaller than
-- the thread count splits each product instead. All against f64.
do
  local x, w = gm.randn{7, 5, 9, 9}, gm.randn{6, 5, 3, 3}
  local gy = gm.randn{7, 6, 5, 5}
  local function run(xx, ww, gg)
    local xr, wr = xx:clone():requires_grad_(), ww:clone():requires_grad_()
    local y = gm.conv2d(xr, wr, {2, 2, 1, 1})
    y:backward(gg)
    return y, xr.grad, wr.grad
  end
  check('f32 conv2d forward and input gradient', function() local y, dx = run(x, w, gy) return y, dx end)
  local ry, rdx, rdw = run(x:double(), w:double(), gy:double())
  for _, nt in ipairs{1, 2} do
    gm.set_num_threads(nt)
    local y, dx, dw = run(x, w, gy)
    local err = math.max((y:double() - ry):abs():max():item(), (dx:double() - rdx):abs():max():item(),
                         (dw:double() - rdw):abs():max():item() / rdw:abs():max():item())
    tap.ok(err < 1e-4, ('f32 conv2d batch 7, %d threads: output and gradients match f64 (err %.2g)'):format(nt, err))
    local y1, dx1, dw1 = run(x:narrow(0, 2, 1), w, gy:narrow(0, 2, 1))
    local ry1, rdx1, rdw1 = run(x:narrow(0, 2, 1):double(), w:double(), gy:narrow(0, 2, 1):double())
    err = math.max((y1:double() - ry1):abs():max():item(), (dx1:double() - rdx1):abs():max():item(),
                   (dw1:double() - rdw1):abs():max():item() / rdw1:abs():max():item())
    tap.ok(err < 1e-4, ('f32 conv2d batch 1, %d threads: output and gradients match f64 (err %.2g)'):format(nt, err))
  end
  gm.set_num_threads(saved)
end

-- Products: gm_cpu_gemm cuts one product into row (or, when N > M, column) pieces, one per
-- thread, or runs whole batch entries per thread. OpenBLAS does not give bitwise the same
-- element for every cut (its small-matrix and edge paths sum differently), so products are
-- deterministic for a thread count and agree across thread counts to rounding only: checked
-- here as repeat == repeat bitwise, 1 thread ~ 2 threads, and both against f64 products.
for _, dt in ipairs{'f32', 'f64'} do
  local cases = {
    {'tall [517, 300] @ [300, 45]', gm.randn{517, 300}, gm.randn{300, 45}},
    {'wide [7, 300] @ [300, 1999] (column pieces)', gm.randn{7, 300}, gm.randn{300, 1999}},
    {'batch of 3 [3, 131, 200] @ [3, 200, 77]', gm.randn{3, 131, 200}, gm.randn{3, 200, 77}},
    {'transposed [300, 517]^T @ [45, 300]^T', gm.randn{300, 517}:transpose(0, 1), gm.randn{45, 300}:transpose(0, 1)},
  }
  for _, cs in ipairs(cases) do
    local x, y = cs[2]:to(dt), cs[3]:to(dt)
    local want = x:double():matmul(y:double())
    local tol = dt == 'f32' and 1e-5 or 1e-13
    for _, nt in ipairs{1, 2} do
      gm.set_num_threads(nt)
      local got = x:matmul(y)
      same(got, x:matmul(y), ('%s matmul %s, %d threads: repeat is bitwise equal'):format(dt, cs[1], nt))
      local err = (got:double() - want):abs():max():item() / want:abs():max():item()
      tap.ok(err < tol, ('%s matmul %s, %d threads, matches f64 (rel err %.2g)'):format(dt, cs[1], nt, err))
    end
  end
  -- a bias gradient: one column block, the rows cut into fixed pieces whatever the threads
  local g = gm.randn{8193, 64}:to(dt)
  check(dt .. ' sum dim 0 of [8193, 64] (row pieces)', function() return g:sum(0), g:mean(0) end)
  local err = (g:sum(0):double() - g:double():sum(0)):abs():max():item()
  tap.ok(err < (dt == 'f32' and 1e-3 or 1e-9), ('%s sum dim 0 of [8193, 64] matches f64 (err %.2g)'):format(dt, err))
  local logits = gm.randn{3000, 259}:to(dt) -- contiguous rows through the 8-lane exp, a ragged tail
  local target = gm.randint(259, {3000})
  check(dt .. ' cross_entropy of 259 classes', function()
    local x = logits:clone()
    x:requires_grad_()
    local l = gm.cross_entropy(x, target)
    l:backward()
    return l, x.grad
  end)
end

-- Kernels that moved from OpenMP regions to the pool (tree gates, optimiser steps): rows and
-- pieces are independent units, so any thread count and any chunking give the same bits.
for _, dt in ipairs{'f32', 'f64'} do
  local z, w = gm.randn{3000, 4, 3}:to(dt), gm.randn{3000, 4}:to(dt)
  check(dt .. ' dselect_k forward and backward', function()
    local zz, ww = z:clone():requires_grad_(), w:clone():requires_grad_()
    local a, r = gm.dselect_k(zz, ww, 8, 1.0)
    ;((a * a):sum() + (r * r):sum()):backward()
    return a, r, zz.grad, ww.grad
  end)
  local nodes, leaves = gm.randn{2000, 4, 7}:to(dt), gm.randn{2000, 4, 8}:to(dt)
  check(dt .. ' comet_gate forward and backward', function()
    local nn, ll = nodes:clone():requires_grad_(), leaves:clone():requires_grad_()
    local g, mu = gm.comet_gate(nn, ll, 1.0)
    ;((g * g):sum() + (mu * mu):sum()):backward()
    return g, mu, nn.grad, ll.grad
  end)
  local p0 = gm.randn{300, 700}:to(dt)
  local grads = {gm.randn{300, 700}:to(dt), gm.randn{300, 700}:to(dt)}
  check(dt .. ' AdamW steps on [300, 700]', function()
    local p = p0:clone()
    local opt = gm.optim.AdamW({p}, {lr = 1e-2})
    for _, g in ipairs(grads) do p.grad = g; opt:step() end
    return p, opt.state[1].exp_avg, opt.state[1].exp_avg_sq
  end)
end

gm.set_num_threads(saved)
tap.done()
