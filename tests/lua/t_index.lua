-- t_index.lua: value checks of gather, scatter_add, index_select, index_add, topk, one_hot,
-- cat and stack against references computed here in Lua from totable(); gradients routed
-- back through indices; non-contiguous inputs, 0-size pieces, i32 data; every error message.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local function i32(t) return gm.tensor(t):to('i32') end
local function f64(t) return gm.tensor(t, {dtype = 'f64'}) end

-- ---- gather ------------------------------------------------------------------------------
local X = tap.nest(tap.values(12), {3, 4})
local x = f64(X)
local I1 = {{0, 3}, {1, 1}, {2, 0}}
local g1 = gm.gather(x, 1, i32(I1))
tap.ok(tap.same_shape(g1.shape, {3, 2}), 'gather: out has the index shape')
local want = {}
for i = 1, 3 do want[i] = {} for j = 1, 2 do want[i][j] = X[i][I1[i][j] + 1] end end
tap.all_close(g1:totable(), want, 0, 'gather along dim 1')

local I0 = {{2, 0, 1, 2}, {0, 0, 2, 1}}
local g0 = x:gather(0, i32(I0))
want = {}
for i = 1, 2 do want[i] = {} for j = 1, 4 do want[i][j] = X[I0[i][j] + 1][j] end end
tap.all_close(g0:totable(), want, 0, 'gather along dim 0 (method form)')
tap.all_close(x:gather(-2, i32(I0)):totable(), want, 0, 'gather with a negative dim')

-- index smaller than x outside dim
local Is = {{1}, {0}}
want = {{X[1][2]}, {X[2][1]}}
tap.all_close(gm.gather(x, 1, i32(Is)):totable(), want, 0, 'gather with an index narrower than x')

-- non-contiguous x (transposed view) and f32 agreement
local xt = x:transpose(0, 1) -- [4, 3]
local It = {{2, 0, 1}, {1, 1, 0}}
want = {}
for i = 1, 2 do want[i] = {} for j = 1, 3 do want[i][j] = X[It[i][j] + 1][i] end end
tap.all_close(gm.gather(xt, 1, i32(It)):totable(), want, 0, 'gather from a transposed view')
tap.all_close(gm.gather(x:to('f32'), 1, i32(I1)):totable(), g1:totable(), 1e-6, 'gather f32 agrees with f64')
tap.all_close(gm.gather(i32({{5, 6, 7}}), 1, i32({{2, 2, 0}})):totable(), {{7, 7, 5}}, 0, 'gather of i32 data')

-- ---- scatter_add -------------------------------------------------------------------------
local Z = gm.zeros{3, 4}:to('f64')
local src = f64(tap.nest(tap.values(8, 2), {2, 4}))
local S = src:totable()
local sc = gm.scatter_add(Z, 0, i32(I0), src)
want = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}}
for i = 1, 2 do for j = 1, 4 do local r = I0[i][j] + 1; want[r][j] = want[r][j] + S[i][j] end end
tap.all_close(sc:totable(), want, 1e-15, 'scatter_add into zeros accumulates collisions')
local sx = x:scatter_add(0, i32(I0), src)
for i = 1, 3 do for j = 1, 4 do want[i][j] = want[i][j] + X[i][j] end end
tap.all_close(sx:totable(), want, 1e-15, 'scatter_add adds onto a copy of x')
tap.all_close(x:totable(), X, 0, 'scatter_add leaves x unchanged')
-- round trip: scattering a permutation then gathering it back gives src
local perm = {{2, 0, 1, 3}, {1, 3, 0, 2}}
local sp = gm.scatter_add(gm.zeros{2, 4}:to('f64'), 1, i32(perm), src)
tap.all_close(gm.gather(sp, 1, i32(perm)):totable(), S, 0, 'gather(scatter_add(0, perm, src), perm) = src')

-- gradients: gx = g, gsrc = gather(g)
do
  local xa = f64(X); xa:requires_grad_()
  local sa = src:clone(); sa:requires_grad_()
  local w = f64(tap.nest(tap.values(12, 5), {3, 4}))
  local W = w:totable()
  local y = gm.scatter_add(xa, 0, i32(I0), sa)
  ;(y * w):sum():backward()
  tap.all_close(xa.grad:totable(), W, 0, 'scatter_add backward: grad of x is g')
  want = {}
  for i = 1, 2 do want[i] = {} for j = 1, 4 do want[i][j] = W[I0[i][j] + 1][j] end end
  tap.all_close(sa.grad:totable(), want, 0, 'scatter_add backward: grad of src is gather(g)')
end
do
  local xa = f64(X); xa:requires_grad_()
  gm.gather(xa, 1, i32({{0, 0}, {3, 1}, {2, 2}})):sum():backward()
  tap.all_close(xa.grad:totable(), {{2, 0, 0, 0}, {0, 1, 0, 1}, {0, 0, 2, 0}}, 0,
            'gather backward counts repeated indices')
end

-- ---- index_select / index_add ------------------------------------------------------------
local sel = gm.index_select(x, 0, i32({2, 0, 2}))
tap.all_close(sel:totable(), {X[3], X[1], X[3]}, 0, 'index_select rows with repeats')
want = {}
for i = 1, 3 do want[i] = {X[i][4], X[i][2]} end
tap.all_close(x:index_select(-1, i32({3, 1})):totable(), want, 0, 'index_select along dim -1')
tap.all_close(xt:index_select(0, i32({1})):totable(), {{X[1][2], X[2][2], X[3][2]}}, 0,
          'index_select from a transposed view')
tap.ok(tap.same_shape(x:index_select(0, gm.zeros{0}:to('i32')).shape, {0, 4}), 'index_select with an empty index')

local ia = gm.index_add(gm.zeros{3, 4}:to('f64'), 0, i32({1, 1, 0}), gm.ones{3, 4}:to('f64'))
tap.all_close(ia:totable(), {{1, 1, 1, 1}, {2, 2, 2, 2}, {0, 0, 0, 0}}, 0, 'index_add accumulates repeats')
local iax = x:index_add(1, i32({3}), gm.ones{3, 1}:to('f64'))
want = {}
for i = 1, 3 do want[i] = {X[i][1], X[i][2], X[i][3], X[i][4] + 1} end
tap.all_close(iax:totable(), want, 0, 'index_add along dim 1 onto a copy of x')
do
  local xa = f64(X); xa:requires_grad_()
  gm.index_select(xa, 0, i32({2, 2, 1})):sum():backward()
  tap.all_close(xa.grad:totable(), {{0, 0, 0, 0}, {1, 1, 1, 1}, {2, 2, 2, 2}}, 0,
            'index_select backward sums repeated rows')
  local sa = gm.ones{2, 4}:to('f64'); sa:requires_grad_()
  local w = f64({{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}})
  ;(gm.index_add(x, 0, i32({2, 0}), sa) * w):sum():backward()
  tap.all_close(sa.grad:totable(), {{9, 10, 11, 12}, {1, 2, 3, 4}}, 0, 'index_add backward: grad of src is index_select(g)')
end

-- ---- topk --------------------------------------------------------------------------------
local T = {{1, 5, 3, 5, 2}, {0, -1, 7, 7, 4}}
local tv, ti = gm.topk(gm.tensor(T), 3)
tap.all_close(tv:totable(), {{5, 5, 3}, {7, 7, 4}}, 0, 'topk values, largest first')
tap.all_close(ti:totable(), {{1, 3, 2}, {2, 3, 4}}, 0, 'topk indices: ties go to the lower index')
tap.is(ti.dtype, 'i32', 'topk indices are i32')
local sv, si = gm.topk(gm.tensor(T), 2, -1, false)
tap.all_close(sv:totable(), {{1, 2}, {-1, 0}}, 0, 'topk smallest values')
tap.all_close(si:totable(), {{0, 4}, {1, 0}}, 0, 'topk smallest indices')
local uv, ui = gm.topk(gm.tensor(T), 3, -1, true, false)
tap.all_close(ui:totable(), {{1, 2, 3}, {2, 3, 4}}, 0, 'topk sorted=false keeps index order')
tap.all_close(uv:totable(), {{5, 3, 5}, {7, 7, 4}}, 0, 'topk sorted=false values follow the indices')
local cv, ci = gm.topk(gm.tensor(T), 1, 0)
tap.all_close(cv:totable(), {{1, 5, 7, 7, 4}}, 0, 'topk along dim 0 values')
tap.all_close(ci:totable(), {{0, 0, 1, 1, 1}}, 0, 'topk along dim 0 indices')
local kv = gm.topk(gm.tensor(T), 0)
tap.ok(tap.same_shape(kv.shape, {2, 0}), 'topk with k = 0 gives an empty dim')

-- a long row takes the sort path (k > 16): compare with a Lua sort
do
  local V = tap.values(40, 3)
  local row = f64({V})
  local v, i = row:topk(20)
  local order = {}
  for j = 1, 40 do order[j] = j end
  table.sort(order, function(a, b) if V[a] ~= V[b] then return V[a] > V[b] end return a < b end)
  local wv, wi = {}, {}
  for j = 1, 20 do wv[j] = V[order[j]]; wi[j] = order[j] - 1 end
  tap.all_close(v:totable(), {wv}, 0, 'topk k=20 of 40 values')
  tap.all_close(i:totable(), {wi}, 0, 'topk k=20 of 40 indices')
end
do
  local xa = f64(T); xa:requires_grad_()
  local v = gm.topk(xa, 2)
  ;(v * f64({{1, 2}, {3, 4}})):sum():backward()
  tap.all_close(xa.grad:totable(), {{0, 1, 0, 2, 0}, {0, 0, 3, 4, 0}}, 0, 'topk backward scatters into zeros')
end
tap.all_close(gm.topk(gm.tensor(T):transpose(0, 1), 1, 0):totable(), {{5, 7}}, 0, 'topk of a transposed view')

-- ---- one_hot -----------------------------------------------------------------------------
local oh = gm.one_hot(i32({2, 0, 3}), 4)
tap.ok(tap.same_shape(oh.shape, {3, 4}), 'one_hot shape')
tap.all_close(oh:totable(), {{0, 0, 1, 0}, {1, 0, 0, 0}, {0, 0, 0, 1}}, 0, 'one_hot values')
tap.is(oh.dtype, 'f32', 'one_hot defaults to f32')
local oh2 = gm.one_hot(i32({{1}, {0}}), 2, 'f64')
tap.ok(tap.same_shape(oh2.shape, {2, 1, 2}), 'one_hot of a 2-D index adds a last dim')
tap.all_close(oh2:totable(), {{{0, 1}}, {{1, 0}}}, 0, 'one_hot of a 2-D index values')
tap.ok(tap.same_shape(gm.one_hot(gm.zeros{0}:to('i32'), 3).shape, {0, 3}), 'one_hot of an empty index')

-- ---- cat / stack -------------------------------------------------------------------------
local A = gm.tensor({{1, 2, 3}, {4, 5, 6}})
local B = gm.tensor({{7, 8, 9}})
local Cc = gm.tensor({{10, 11, 12}, {13, 14, 15}})
tap.all_close(gm.cat({A, B, Cc}):totable(), {{1, 2, 3}, {4, 5, 6}, {7, 8, 9}, {10, 11, 12}, {13, 14, 15}}, 0,
          'cat of 3 along dim 0')
local P, Q, R = gm.tensor({{1}, {2}}), gm.tensor({{3, 4}, {5, 6}}), gm.tensor({{7, 8, 9}, {10, 11, 12}})
tap.all_close(gm.cat({P, Q, R}, -1):totable(), {{1, 3, 4, 7, 8, 9}, {2, 5, 6, 10, 11, 12}}, 0,
          'cat of 3 along dim -1')
local E = gm.zeros{0, 3}
local ce = gm.cat({E, A, E, B})
tap.all_close(ce:totable(), {{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}, 0, 'cat skips 0-size pieces')
tap.ok(tap.same_shape(gm.cat({E, E}).shape, {0, 3}), 'cat of only 0-size pieces')
tap.all_close(gm.cat({A:transpose(0, 1), A:transpose(0, 1)}, 1):totable(),
          {{1, 4, 1, 4}, {2, 5, 2, 5}, {3, 6, 3, 6}}, 0, 'cat of transposed views')
tap.all_close(gm.cat({i32({1, 2}), i32({3})}):totable(), {1, 2, 3}, 0, 'cat of i32 tensors')

local st = gm.stack({A, Cc, A})
tap.ok(tap.same_shape(st.shape, {3, 2, 3}), 'stack along dim 0 shape')
tap.all_close(st:totable(), {A:totable(), Cc:totable(), A:totable()}, 0, 'stack along dim 0 values')
local sl = gm.stack({A, Cc, A}, -1)
tap.ok(tap.same_shape(sl.shape, {2, 3, 3}), 'stack along dim -1 shape')
want = {}
local At, Ct = A:totable(), Cc:totable()
for i = 1, 2 do want[i] = {} for j = 1, 3 do want[i][j] = {At[i][j], Ct[i][j], At[i][j]} end end
tap.all_close(sl:totable(), want, 0, 'stack along dim -1 values')
tap.ok(tap.same_shape(gm.stack({gm.tensor(1), gm.tensor(2)}).shape, {2}), 'stack of 0-dim tensors')

do
  local a = f64({{1, 2, 3}, {4, 5, 6}}); a:requires_grad_()
  local b = f64({{7, 8, 9}}); b:requires_grad_()
  local w = f64({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}})
  ;(gm.cat({a, b}) * w):sum():backward()
  tap.all_close(a.grad:totable(), {{1, 2, 3}, {4, 5, 6}}, 0, 'cat backward: first piece')
  tap.all_close(b.grad:totable(), {{7, 8, 9}}, 0, 'cat backward: second piece')
  local p = f64({1, 2}); p:requires_grad_()
  local q = f64({3, 4}); q:requires_grad_()
  ;(gm.stack({p, q}, 1) * f64({{1, 2}, {3, 4}})):sum():backward()
  tap.all_close(p.grad:totable(), {1, 3}, 0, 'stack backward along dim 1: first')
  tap.all_close(q.grad:totable(), {2, 4}, 0, 'stack backward along dim 1: second')
end

-- ---- large inputs: parallel chunks agree with Lua and with one thread ------------------------
do
  local xb = gm.randn({300, 200}, {dtype = 'f64'})
  local ib = gm.randint(200, {300, 200})
  local XB, IB = xb:totable(), ib:totable()
  local gb = gm.gather(xb, 1, ib)
  local ok = true
  local GB = gb:totable()
  for i = 1, 300 do for j = 1, 200 do
    if GB[i][j] ~= XB[i][IB[i][j] + 1] then ok = false end
  end end
  tap.ok(ok, 'gather of 60000 elements (parallel) matches Lua')
  local nt = gm.get_num_threads()
  gm.set_num_threads(1)
  local g1t = gm.gather(xb, 1, ib)
  local v1, i1 = gm.topk(xb, 7)
  local s1 = gm.scatter_add(gm.zeros({300, 200}, {dtype = 'f64'}), 1, ib, xb)
  gm.set_num_threads(4)
  local v4, i4 = gm.topk(xb, 7)
  local s4 = gm.scatter_add(gm.zeros({300, 200}, {dtype = 'f64'}), 1, ib, xb)
  gm.set_num_threads(nt)
  tap.all_close(g1t:totable(), GB, 0, 'gather: 1 thread = many threads')
  tap.all_close(v1:totable(), v4:totable(), 0, 'topk values: 1 thread = 4 threads')
  tap.all_close(i1:totable(), i4:totable(), 0, 'topk indices: 1 thread = 4 threads')
  tap.all_close(s1:totable(), s4:totable(), 0, 'scatter_add: bitwise the same for 1 and 4 threads')
end

-- ---- errors ------------------------------------------------------------------------------
tap.errors(function() return gm.gather(x, 1, i32({{0, 7}, {1, 1}, {2, 0}})) end,
           'gather: index 7 out of range for dim 1 of size 4', 'gather: index out of range')
tap.errors(function() return gm.gather(x, 1, i32({{0, -1}})) end,
           'gather: index %-1 out of range', 'gather: negative index')
tap.errors(function() return gm.gather(x, 1, i32({0, 1})) end,
           'gather: index %[2%] must have as many dims as x %[3, 4%]', 'gather: index ndim')
tap.errors(function() return gm.gather(x, 1, gm.tensor({{0, 1}})) end,
           'gather: index must be i32', 'gather: float index')
tap.errors(function() return gm.scatter_add(x, 0, i32(I0), src:to('f32')) end,
           'scatter_add: src is f32 but x is f64', 'scatter_add: dtype mismatch')
tap.errors(function() return gm.scatter_add(x, 0, i32({{3, 0, 0, 0}}), src) end,
           'scatter_add: index 3 out of range for dim 0 of size 3', 'scatter_add: index out of range')
tap.errors(function() return gm.scatter_add(x, 0, i32(I0), gm.zeros{2, 3}:to('f64')) end,
           'scatter_add: index %[2, 4%] is larger than src %[2, 3%]', 'scatter_add: src too small')
tap.errors(function() return gm.index_select(x, 1, i32({0, 4})) end,
           'index_select: index 4 out of range for dim 1 of size 4', 'index_select: out of range')
tap.errors(function() return gm.index_select(x, 0, i32({{0}})) end,
           'index_select: index must be 1%-D', 'index_select: 2-D index')
tap.errors(function() return gm.index_add(x, 0, i32({0, 5}), gm.zeros{2, 4}:to('f64')) end,
           'index_add: index 5 out of range for dim 0 of size 3', 'index_add: out of range')
tap.errors(function() return gm.index_add(x, 0, i32({0, 1}), gm.zeros{3, 4}:to('f64')) end,
           'index_add: src %[3, 4%] must be x %[3, 4%]', 'index_add: src shape')
tap.errors(function() return gm.topk(gm.tensor(T), 6) end,
           'topk: k=6 out of range for dim 1 of size 5', 'topk: k larger than the dim')
tap.errors(function() return gm.one_hot(i32({0, 3}), 3) end,
           'one_hot: index 3 out of range for num_classes 3', 'one_hot: index out of range')
tap.errors(function() return gm.one_hot(i32({0}), 0) end,
           'one_hot: num_classes must be > 0', 'one_hot: zero classes')
tap.errors(function() return gm.one_hot(gm.tensor({0, 1}), 3) end,
           'one_hot: index must be i32', 'one_hot: float index')
tap.errors(function() return gm.cat({A, gm.zeros{2, 4}}) end,
           'cat: tensor 2 has shape %[2, 4%] but tensor 1 has %[2, 3%]', 'cat: shape mismatch names both')
tap.errors(function() return gm.cat({A, B, A:to('f64')}) end,
           'cat: tensor 3 is f64 but tensor 1 is f32', 'cat: dtype mismatch names the tensor')
tap.errors(function() return gm.cat({gm.tensor(1), gm.tensor(2)}) end,
           'cat: tensor 1 is 0%-dim', 'cat: 0-dim tensors')
tap.errors(function() return gm.cat({A, B}, 2) end, 'cat', 'cat: dim out of range')
tap.errors(function() return gm.stack({A, B}) end,
           'stack: tensor 2 has shape %[1, 3%] but tensor 1 has %[2, 3%]', 'stack: shape mismatch')

tap.done()
