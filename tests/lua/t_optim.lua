-- t_optim.lua: gm.optim against hand-computed updates (SGD plain/momentum/nesterov/weight
-- decay, Adam, AdamW in f64 and f32), clip_grad_norm, schedules, state_dict round trips and
-- errors. The reference updates below are torch.optim's formulas written out in Lua.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local P0 = {0.5, -1.25, 2.0}
local W = {1.0, 0.5, -2.0}

-- loss = sum(w * p^2), so grad = 2 w p: it changes every step, which exercises the buffers.
local function grad_of(p) local g = {} for i = 1, #p do g[i] = 2 * W[i] * p[i] end return g end

local function backward(p, dtype)
  local w = gm.tensor(W):to(dtype)
  local loss = (w * p * p):sum()
  loss:backward()
end

local function run(make_opt, dtype, steps)
  local p = gm.tensor(P0):to(dtype)
  p:requires_grad_()
  local opt = make_opt({p})
  for _ = 1, steps do
    opt:zero_grad()
    backward(p, dtype)
    opt:step()
  end
  return p:totable(), opt, p
end

local function ref_sgd(hp, steps)
  local p, buf = {table.unpack(P0)}, {}
  for t = 1, steps do
    local g = grad_of(p)
    for i = 1, #p do
      local d = g[i] + (hp.weight_decay or 0) * p[i]
      local m = hp.momentum or 0
      if m ~= 0 then
        buf[i] = t == 1 and d or m * buf[i] + (1 - (hp.dampening or 0)) * d
        d = hp.nesterov and d + m * buf[i] or buf[i]
      end
      p[i] = p[i] - hp.lr * d
    end
  end
  return p
end

local function ref_adam(hp, decoupled, steps)
  local p, m, v = {table.unpack(P0)}, {0, 0, 0}, {0, 0, 0}
  local b1, b2 = hp.betas and hp.betas[1] or 0.9, hp.betas and hp.betas[2] or 0.999
  local eps, lr = hp.eps or 1e-8, hp.lr or 1e-3
  local wd = hp.weight_decay or (decoupled and 1e-2 or 0)
  for t = 1, steps do
    local g = grad_of(p)
    for i = 1, #p do
      local gi = g[i]
      if decoupled then p[i] = p[i] * (1 - lr * wd) else gi = gi + wd * p[i] end
      m[i] = b1 * m[i] + (1 - b1) * gi
      v[i] = b2 * v[i] + (1 - b2) * gi * gi
      local mhat, vhat = m[i] / (1 - b1 ^ t), v[i] / (1 - b2 ^ t)
      p[i] = p[i] - lr * mhat / (math.sqrt(vhat) + eps)
    end
  end
  return p
end

local function same(got, want, tol, name)
  local worst, at = 0, 1
  for i = 1, #want do
    local e = math.abs(got[i] - want[i]) / (1 + math.abs(want[i]))
    if e > worst then worst, at = e, i end
  end
  tap.ok(#got == #want and worst <= tol, name,
         ('element %d: got %.12g want %.12g (rel err %.3g)'):format(at, got[at], want[at], worst))
end

local sgd_cases = {
  {'plain', {lr = 0.1}},
  {'weight decay', {lr = 0.1, weight_decay = 0.3}},
  {'momentum', {lr = 0.05, momentum = 0.9}},
  {'momentum + dampening', {lr = 0.05, momentum = 0.9, dampening = 0.2, weight_decay = 0.1}},
  {'nesterov', {lr = 0.05, momentum = 0.8, nesterov = true, weight_decay = 0.01}},
}
local adam_cases = {
  {'defaults', {}},
  {'lr betas eps', {lr = 0.05, betas = {0.8, 0.95}, eps = 1e-6}},
  {'weight decay', {lr = 0.02, weight_decay = 0.1}},
}

for _, dt in ipairs{{'f64', 1e-12}, {'f32', 2e-6}} do
  local dtype, tol = dt[1], dt[2]
  for _, c in ipairs(sgd_cases) do
    local got = run(function(ps) return gm.optim.SGD(ps, c[2]) end, dtype, 3)
    same(got, ref_sgd(c[2], 3), tol, ('SGD %s, 3 steps, %s'):format(c[1], dtype))
  end
  for _, c in ipairs(adam_cases) do
    local got = run(function(ps) return gm.optim.Adam(ps, c[2]) end, dtype, 3)
    same(got, ref_adam(c[2], false, 3), tol, ('Adam %s, 3 steps, %s'):format(c[1], dtype))
    got = run(function(ps) return gm.optim.AdamW(ps, c[2]) end, dtype, 3)
    same(got, ref_adam(c[2], true, 3), tol, ('AdamW %s, 3 steps, %s'):format(c[1], dtype))
  end
end

-- A first step worked by hand: SGD lr 0.1 on p = 0.5 with grad 2*1*0.5 = 1 gives 0.4.
do
  local got = run(function(ps) return gm.optim.SGD(ps, {lr = 0.1}) end, 'f64', 1)
  tap.close(got[1], 0.4, 1e-15, 'SGD first step by hand')
  -- Adam's first step moves each element by lr * sign(g) (m/sqrt(v) = g/|g| after correction).
  got = run(function(ps) return gm.optim.Adam(ps, {lr = 0.1, eps = 0}) end, 'f64', 1)
  tap.close(got[1], 0.4, 1e-12, 'Adam first step is lr * sign(grad)')
  tap.close(got[3], 2.1, 1e-12, 'Adam first step, negative weight')
end

-- ---- behaviour of the optimiser object ----------------------------------------------------
do
  local a = gm.tensor{1.0, 2.0}:to('f64'); a:requires_grad_()
  local b = gm.tensor{3.0}:to('f64'); b:requires_grad_()
  local opt = gm.optim.SGD({a, b}, {lr = 0.5})
  ;(a * a):sum():backward()
  opt:step()
  local at, bt = a:totable(), b:totable()
  tap.close(at[2], 0.0, 1e-15, 'step updates the param with a grad')
  tap.is(bt[1], 3.0, 'step skips a param whose grad is nil')
  opt:zero_grad()
  tap.ok(a.grad == nil and b.grad == nil, 'zero_grad sets grads to nil')
  opt.lr = 0.25
  tap.is(opt.lr, 0.25, 'opt.lr is writable')
  tap.lives(function() opt:step() end, 'step with no grads at all is a no-op')
  tap.like(tostring(opt), '^SGD%(2 params', 'tostring names the optimiser')
end

-- ---- clip_grad_norm -----------------------------------------------------------------------
do
  local function with_grads()
    local a = gm.tensor{1.5, 2.0}:to('f64'); a:requires_grad_()
    local b = gm.tensor{6.0}:to('f64'); b:requires_grad_()
    ;((a * a):sum() + (b * b):sum()):backward() -- grads {3, 4} and {12}: norm 13
    return a, b
  end
  local a, b = with_grads()
  local n = gm.optim.clip_grad_norm({a, b}, 100)
  tap.close(n, 13, 1e-12, 'clip_grad_norm returns the global L2 norm')
  tap.close(b.grad:totable()[1], 12, 1e-15, 'grads under max_norm are untouched')
  n = gm.optim.clip_grad_norm({a, b}, 6.5)
  tap.close(n, 13, 1e-12, 'norm before clipping is returned')
  local k = 6.5 / (13 + 1e-6)
  local ga = a.grad:totable()
  tap.close(ga[1], 3 * k, 1e-12, 'clipped grad a[0]')
  tap.close(ga[2], 4 * k, 1e-12, 'clipped grad a[1]')
  tap.close(b.grad:totable()[1], 12 * k, 1e-12, 'clipped grad b[0]')
  tap.close(math.sqrt(gm._C.sumsq{a.grad, b.grad}), 6.5, 1e-6, 'norm after clipping is max_norm')
  local c = gm.tensor{1.0}:to('f64'); c:requires_grad_()
  tap.is(gm.optim.clip_grad_norm({c}, 1), 0.0, 'no grads: norm 0')
  local x = gm.tensor{{1, 2}, {3, 4}}
  tap.close(gm._C.sumsq{x, x:to('f64')}, 60, 1e-12, 'sumsq over f32 and f64 tensors')
  local big = gm.zeros({1000, 1000}) + 0.5
  tap.close(gm._C.sumsq{big}, 250000, 1e-12, 'sumsq of a 10^6-element tensor (chunked)')
  local r = gm.randn{3, 400001}
  local threads = gm.get_num_threads()
  gm.set_num_threads(1)
  local s1 = gm._C.sumsq{r}
  gm.set_num_threads(4)
  local s4 = gm._C.sumsq{r}
  gm.set_num_threads(threads)
  tap.is(s1, s4, 'sumsq is the same for 1 and 4 threads')
  gm._C.scale_(big, 2)
  tap.close(gm._C.sumsq{big}, 1e6, 1e-12, 'scale_ in place')
end

-- ---- schedules ----------------------------------------------------------------------------
do
  local S = gm.optim.schedule
  tap.is(S.constant():factor(7), 1.0, 'constant')
  local w = S.linear_warmup(4)
  tap.is(w:factor(0), 0.25, 'linear_warmup(4) at 0')
  tap.is(w:factor(2), 0.75, 'linear_warmup(4) at 2')
  tap.is(w:factor(3), 1.0, 'linear_warmup(4) at 3')
  tap.is(w:factor(50), 1.0, 'linear_warmup(4) after warmup')
  local cos = S.cosine(10, {warmup = 2})
  tap.is(cos:factor(0), 0.5, 'cosine warmup at 0')
  tap.close(cos:factor(2), 1.0, 1e-15, 'cosine at the end of warmup')
  tap.close(cos:factor(6), 0.5, 1e-15, 'cosine half way')
  tap.close(cos:factor(10), 0.0, 1e-15, 'cosine at total_steps')
  tap.close(cos:factor(12), 0.0, 1e-15, 'cosine after total_steps')
  local floor = S.cosine(10, {min_lr = 0.1})
  tap.close(floor:factor(5, 1.0), 0.55, 1e-15, 'cosine with min_lr half way')
  tap.close(floor:factor(10, 2.0), 0.05, 1e-15, 'cosine with min_lr: factor = min_lr/base_lr')
  tap.errors(function() floor:factor(3) end, 'base_lr', 'cosine with min_lr needs base_lr')

  local p = gm.tensor{1.0}; p:requires_grad_()
  local opt = gm.optim.AdamW({p}, {lr = 0.1})
  local sched = gm.optim.LRScheduler(opt, S.linear_warmup(2))
  tap.close(opt.lr, 0.05, 1e-15, 'LRScheduler sets the rate of step 0')
  sched:step()
  tap.close(opt.lr, 0.1, 1e-15, 'LRScheduler:step advances')
  local s2 = gm.optim.LRScheduler(gm.optim.SGD({p}, {lr = 1}), S.cosine(4))
  local seen = {}
  for _ = 1, 4 do seen[#seen + 1] = s2:step() end
  tap.close(seen[2], 0.5, 1e-15, 'cosine scheduler at step 2 of 4')
  tap.close(seen[4], 0.0, 1e-15, 'cosine scheduler at the end')
end

-- ---- state_dict ---------------------------------------------------------------------------
do
  local function fresh(v) local t = gm.tensor(v, {dtype = 'f64'}); t:requires_grad_(); return t end
  for _, kind in ipairs{'SGD', 'Adam', 'AdamW'} do
    local hp = kind == 'SGD' and {lr = 0.05, momentum = 0.9} or {lr = 0.05}
    local p = fresh(P0)
    local opt = gm.optim[kind]({p}, hp)
    for _ = 1, 2 do opt:zero_grad(); backward(p, 'f64'); opt:step() end
    opt.lr = 0.03
    local sd = opt:state_dict()
    tap.is(sd.state[1].step, 2, kind .. ' state_dict holds the step count')
    tap.is(sd.hyper.lr, 0.03, kind .. ' state_dict holds lr')

    local q = fresh(p:totable())
    local opt2 = gm.optim[kind]({q}, hp)
    opt2:load_state_dict(sd)
    tap.is(opt2.lr, 0.03, kind .. ' load_state_dict restores lr')
    opt:zero_grad(); backward(p, 'f64'); opt:step()
    opt2:zero_grad(); backward(q, 'f64'); opt2:step()
    same(q:totable(), p:totable(), 0, kind .. ' continues identically after a round trip')
    tap.is(sd.state[1].step, 2, kind .. ' loaded state does not alias the dictionary')
  end
  local opt = gm.optim.Adam({fresh{1, 2}}, {})
  tap.errors(function() opt:load_state_dict(gm.optim.SGD({fresh{1}}, {lr = 1}):state_dict()) end,
             'for SGD', 'load_state_dict refuses another optimiser kind')
  local a = gm.optim.Adam({fresh{1, 2, 3}}, {})
  local p = fresh{1, 2}
  a.params[1]:sum():backward()
  a:step()
  tap.errors(function() gm.optim.Adam({p}, {}):load_state_dict(a:state_dict()) end,
             '%[3%].*%[2%]', 'load_state_dict names mismatched shapes')
end

-- ---- errors -------------------------------------------------------------------------------
do
  local p = gm.tensor{{1, 2, 3}, {4, 5, 6}}
  local g = gm.tensor{{1, 2}, {3, 4}, {5, 6}}
  tap.errors(function() gm._C.sgd_step(p, g, nil, {lr = 0.1}) end, 'sgd: param is %[2, 3%] but grad is %[3, 2%]',
             'sgd_step: grad shape mismatch names both shapes')
  tap.errors(function() gm._C.adam_step(p, p, g, p, {lr = 0.1, step = 1}) end, 'adam: .*%[2, 3%].*%[3, 2%]',
             'adam_step: buffer shape mismatch names both shapes')
  tap.errors(function() gm._C.sgd_step(p, p:to('f64'), nil, {lr = 0.1}) end, 'f32.*f64',
             'sgd_step: dtype mismatch')
  tap.errors(function() gm._C.sgd_step(p, p, nil, {lr = 0.1, momentum = 0.9}) end, 'momentum buffer',
             'sgd_step: momentum without a buffer')
  tap.errors(function() gm._C.adam_step(p, p, p, p, {lr = 0.1, step = 0}) end, 'step must be >= 1',
             'adam_step: step 0')
  local i = gm.tensor{1, 2}:to('i32')
  tap.errors(function() gm._C.sgd_step(i, i, nil, {lr = 0.1}) end, 'float',
             'sgd_step: integer params are refused')
  tap.errors(function() gm._C.scale_(p:transpose(0, 1), 2) end, 'contiguous',
             'scale_: non-contiguous tensor is refused')
  tap.errors(function() gm.optim.SGD({}, {lr = 1}) end, 'params is empty', 'SGD: empty params')
  tap.errors(function() gm.optim.SGD({p}, {}) end, 'lr is required', 'SGD: lr is required')
  tap.errors(function() gm.optim.SGD({p}, {lr = 1, momentun = 0.9}) end, 'unknown option momentun',
             'SGD: unknown option')
  tap.errors(function() gm.optim.SGD({p}, {lr = 1, nesterov = true}) end, 'nesterov',
             'SGD: nesterov needs momentum')
  tap.errors(function() gm.optim.Adam({p}, {betas = {0.9, 1.0}}) end, 'betas%[2%]',
             'Adam: beta2 must be < 1')
  tap.errors(function() gm.optim.AdamW({p}, {lr = -1}) end, 'lr must be', 'AdamW: negative lr')
  tap.errors(function() gm.optim.SGD({p, 3}, {lr = 1}) end, 'params%[2%]', 'SGD: non-tensor param')
  local q = gm.tensor{{1, 2, 3}, {4, 5, 6}}; q:requires_grad_()
  local opt = gm.optim.SGD({q}, {lr = 0.1})
  ;(q * q):sum():backward()
  -- a strided gradient is read through a contiguous copy
  local r = q:transpose(0, 1)
  tap.lives(function() gm._C.sgd_step(q, r:transpose(0, 1), nil, {lr = 0.1}) end,
            'sgd_step accepts a non-contiguous grad')
  opt:step()
  tap.ok(q.requires_grad, 'params still require grad after a step')
end

-- ---- multi-tensor steps: one kernel call per group, bitwise the per-tensor step ------------
-- The optimiser sends every parameter of a group (same step count, dtype, device) to one
-- kernel call; gm._C.*_step with single tensors is the per-tensor step. Sizes cross the
-- kernel's 8192-element pieces, include an empty tensor and run with 1 and 2 threads.
do
  local function bits(t) return t:flatten():totable() end
  local function same(a, b)
    local x, y = bits(a), bits(b)
    if #x ~= #y then return false end
    for i = 1, #x do if x[i] ~= y[i] then return false end end
    return true
  end
  local shapes = {{3}, {100, 130}, {0, 4}, {8193}, {7, 5}, {256, 400}}
  local kinds = {
    {'SGD', {lr = 0.1}}, {'SGD', {lr = 0.1, momentum = 0.9, weight_decay = 0.01}},
    {'SGD', {lr = 0.1, momentum = 0.9, nesterov = true}},
    {'Adam', {lr = 1e-2, weight_decay = 0.1}}, {'AdamW', {lr = 1e-2}},
  }
  local saved = gm.get_num_threads()
  for _, nt in ipairs{1, 2} do
    gm.set_num_threads(nt)
    for _, dt in ipairs{'f32', 'f64'} do
      for _, kind in ipairs(kinds) do
        local name, hp = kind[1], kind[2]
        gm.manual_seed(5)
        local ps, qs, gs = {}, {}, {}
        for i, sh in ipairs(shapes) do
          ps[i] = gm.randn(sh):to(dt)
          qs[i] = ps[i]:clone()
          gs[i] = {gm.randn(sh):to(dt), gm.randn(sh):to(dt), gm.randn(sh):to(dt)}
        end
        local opt = gm.optim[name](ps, hp)
        -- the per-tensor reference: the same kernels called one tensor at a time
        local state = {}
        local ok = true
        for step = 1, 3 do
          for i, p in ipairs(ps) do p.grad = gs[i][step] end
          opt:step()
          for i, q in ipairs(qs) do
            local st = state[i] or {}
            state[i] = st
            local h = {lr = hp.lr, weight_decay = hp.weight_decay or (name == 'AdamW' and 1e-2 or 0), step = step}
            if name == 'SGD' then
              h.momentum, h.nesterov, h.dampening = hp.momentum or 0, hp.nesterov, 0
              if h.momentum ~= 0 then st.buf = st.buf or gm.zeros_like(q) end
              gm._C.sgd_step(q, gs[i][step], st.buf, h)
            else
              st.m, st.v = st.m or gm.zeros_like(q), st.v or gm.zeros_like(q)
              h.beta1, h.beta2, h.eps, h.decoupled = 0.9, 0.999, 1e-8, name == 'AdamW'
              gm._C.adam_step(q, gs[i][step], st.m, st.v, h)
            end
          end
          for i = 1, #ps do ok = ok and same(ps[i], qs[i]) end
        end
        tap.ok(ok, ('%s %s %s, %d threads: the group step equals the per-tensor step bitwise'):format(
          name, hp.momentum and 'momentum' or '', dt, nt))
      end
    end
  end
  gm.set_num_threads(saved)

  -- one call per group: the profiler counts one ADAM_STEP for five parameters
  local ps = {}
  for i = 1, 5 do ps[i] = gm.randn{10, i}; ps[i].grad = gm.randn{10, i} end
  local opt = gm.optim.AdamW(ps, {lr = 1e-3})
  local rep = gm.profile(function() opt:step() end)
  local calls
  for _, r in ipairs(rep) do if r.kernel == 'ADAM_STEP' then calls = r.calls end end
  tap.is(calls, 1, 'AdamW over five parameters is one ADAM_STEP kernel call')
  -- parameters at different step counts go to separate calls, each with its own count
  ps[1].grad = nil
  opt:step()
  for i = 1, 5 do ps[i].grad = gm.randn{10, i} end
  rep = gm.profile(function() opt:step() end)
  for _, r in ipairs(rep) do if r.kernel == 'ADAM_STEP' then calls = r.calls end end
  tap.is(calls, 2, 'parameters at two step counts: two calls')
  tap.is(opt.state[1].step, 2, 'a parameter skipped once counts its own steps')
  tap.is(opt.state[2].step, 3, 'the others count theirs')
  -- a group of two dtypes is refused with the index and both dtypes named
  local a, b = gm.randn{2}, gm.randn{2}:to('f64')
  tap.errors(function() gm._C.sgd_step({a, b}, {a, b}, nil, {lr = 0.1}) end, 'param 2 is f64 on cpu but param 1 is f32',
             'a group mixing dtypes names the param and both dtypes')
  tap.errors(function() gm._C.adam_step({a}, {a, a}, {a}, {a}, {lr = 0.1, step = 1}) end, 'argument 2 has 2 tensors',
             'lists of different lengths are refused')
end

tap.done()
