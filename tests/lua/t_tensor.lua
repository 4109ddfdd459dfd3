-- t_tensor.lua: tensors from Lua: constructors, accessors, indexing, views and aliasing,
-- split/chunk, printing, 0-size and 0-dim edge cases, #x and <close>.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= 'table' then return a == b end
  if #a ~= #b then return false end
  for i = 1, #a do if not same(a[i], b[i]) then return false end end
  return true
end

local function shape_str(s) return '{' .. table.concat(s, ',') .. '}' end

-- ---- constructors -------------------------------------------------------------------------
do
  local x = gm.tensor{{1, 2, 3}, {4, 5, 6}}
  tap.is(shape_str(x.shape), '{2,3}', 'tensor{{...}}: nested tables give the shape')
  tap.is(x.dtype, 'f32', 'tensor: f32 by default')
  tap.ok(same(x:totable(), {{1, 2, 3}, {4, 5, 6}}), 'tensor: values round-trip through totable')
  local d = gm.tensor({1.5, 2.5}, {dtype = 'f64'})
  tap.is(d.dtype, 'f64', 'tensor{..., dtype="f64"}')
  tap.is(d:totable()[2], 2.5, 'f64 value kept')
  local i = gm.tensor({1, -2, 3}, {dtype = 'i32'})
  tap.ok(i.dtype == 'i32' and math.type(i:totable()[2]) == 'integer' and i:totable()[2] == -2,
         'i32 tensor gives Lua integers')
  local r = gm.tensor({1, 2}, {requires_grad = true})
  tap.ok(r.requires_grad and r.is_leaf, 'tensor{..., requires_grad=true} is a leaf that requires grad')
  tap.ok(not gm.tensor{1, 2}.requires_grad, 'requires_grad is off by default')
  local s = gm.tensor(2.5)
  tap.ok(s:dim() == 0 and s:item() == 2.5, 'tensor(number) is 0-dim')
  local c = gm.tensor(x)
  c:fill_(0)
  tap.is(x:totable()[1][1], 1, 'tensor(tensor) copies (no aliasing)')
  tap.errors(function() return gm.tensor{{1, 2}, {3}} end, 'ragged', 'ragged nested table refused')
  tap.errors(function() return gm.tensor{1, 'a'} end, 'expected a number', 'non-number element refused')
  tap.errors(function() return gm.tensor({1}, {dtype = 'f16'}) end, 'unknown dtype', 'unknown dtype refused')
  tap.errors(function() return gm.tensor({1}, {device = 'cuda:7'}) end, 'not available', 'unavailable device refused')
  tap.errors(function() return gm.tensor('abc') end, 'number', 'a string is not a tensor')

  local z = gm.zeros{2, 3}
  tap.ok(same(tap.flatten(z:totable()), {0, 0, 0, 0, 0, 0}) and z.dtype == 'f32', 'zeros{2,3}')
  tap.ok(same(tap.flatten(gm.ones(2, 2):totable()), {1, 1, 1, 1}), 'ones(2, 2): sizes as arguments')
  local f = gm.full({3}, 7, {dtype = 'i32'})
  tap.ok(same(f:totable(), {7, 7, 7}) and f.dtype == 'i32', 'full({3}, 7, {dtype="i32"})')
  local e = gm.empty{4, 5}
  tap.ok(shape_str(e.shape) == '{4,5}' and e.dtype == 'f32', 'empty{4,5}: shape and dtype')
  tap.ok(gm.zeros({2}, {dtype = 'f64'}).dtype == 'f64', 'zeros with dtype option')
  tap.errors(function() return gm.zeros{2, -1} end, 'negative', 'negative size refused')
  tap.errors(function() return gm.zeros{1, 1, 1, 1, 1, 1, 1, 1, 1} end, '9 dims', '9 dims refused')
  tap.ok(gm.zeros{1, 2, 1, 2, 1, 2, 1, 2}:dim() == 8, '8 dims fine')

  local a = gm.arange(5)
  tap.ok(a.dtype == 'i32' and same(a:totable(), {0, 1, 2, 3, 4}), 'arange(5): i32 0..4')
  local a2 = gm.arange(2, 11, 3)
  tap.ok(a2.dtype == 'i32' and same(a2:totable(), {2, 5, 8}), 'arange(2, 11, 3)')
  local af = gm.arange(0, 1, 0.25)
  tap.ok(af.dtype == 'f32' and same(af:totable(), {0, 0.25, 0.5, 0.75}), 'arange(0, 1, 0.25): f32, end excluded')
  local ad = gm.arange(3, {dtype = 'f64'})
  tap.ok(ad.dtype == 'f64' and same(ad:totable(), {0, 1, 2}), 'arange(3, {dtype="f64"})')
  tap.ok(gm.arange(5, 0, -2).numel and same(gm.arange(5, 0, -2):totable(), {5, 3, 1}), 'arange with a negative step')
  tap.is(gm.arange(3, 3):numel(), 0, 'arange(3, 3) is empty')
  tap.errors(function() return gm.arange(3000000000, 3000000003) end, 'i32',
              'arange past the i32 range refused (not silently wrapped)',
              'lgmoe.c l_arange casts out-of-range doubles to int32_t (UB; gives INT_MIN)')
  tap.errors(function() return gm.arange(0, 1, 0) end, 'arange: bad range', 'arange with step 0 gives a readable error',
              'lgmoe.c l_arange formats with %g, which lua_pushfstring refuses')

  local l = gm.linspace(-1, 1, 5)
  local lt = l:totable()
  tap.ok(#lt == 5 and lt[1] == -1 and lt[5] == 1 and lt[3] == 0 and lt[2] == -0.5, 'linspace(-1, 1, 5): endpoints exact')
  tap.ok(same(gm.linspace(3, 9, 1):totable(), {3}), 'linspace with one step is the start')
  tap.is(gm.linspace(0, 1, 0):numel(), 0, 'linspace with 0 steps is empty')

  tap.ok(same(gm.eye(3):totable(), {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}), 'eye(3)')
  tap.ok(same(gm.eye(2, 3):totable(), {{1, 0, 0}, {0, 1, 0}}), 'eye(2, 3)')
  tap.ok(same(gm.eye(3, 2):totable(), {{1, 0}, {0, 1}, {0, 0}}), 'eye(3, 2)')
  tap.is(gm.eye(2, {dtype = 'i32'}).dtype, 'i32', 'eye with dtype')
end

-- ---- random constructors ----------------------------------------------------------------
do
  gm.manual_seed(11)
  local r = gm.rand{10000}
  local lo, hi = r:min():item(), r:max():item()
  tap.ok(lo >= 0 and hi < 1, ('rand in [0, 1): min %g max %g'):format(lo, hi))
  tap.close(r:mean():item(), 0.5, 0.02, 'rand mean ~ 0.5')
  local n = gm.randn({100000}, {dtype = 'f64'})
  local mean = n:mean():item()
  local var = ((n - mean) ^ 2):mean():item()
  local skew = ((n - mean) ^ 3):mean():item()
  local kurt = ((n - mean) ^ 4):mean():item() / (var * var)
  tap.ok(math.abs(mean) < 0.015, ('randn mean %g (|.| < 0.015 on 1e5 samples)'):format(mean))
  tap.ok(math.abs(var - 1) < 0.02, ('randn variance %g'):format(var))
  tap.ok(math.abs(skew) < 0.05, ('randn third moment %g'):format(skew))
  tap.ok(math.abs(kurt - 3) < 0.1, ('randn kurtosis %g (3 for a normal)'):format(kurt))
  local n32 = gm.randn{100000}
  tap.ok(n32.dtype == 'f32' and math.abs(n32:mean():item()) < 0.015 and math.abs(n32:var():item() - 1) < 0.02,
         'randn f32: mean 0, variance 1')
  local ri = gm.randint(3, 10, {20000})
  tap.is(ri.dtype, 'i32', 'randint gives i32')
  tap.ok(ri:min():item() == 3 and ri:max():item() == 9, 'randint(3, 10): values in [3, 10) and both ends hit')
  local r0 = gm.randint(4, {1000})
  tap.ok(r0:min():item() == 0 and r0:max():item() == 3, 'randint(4, shape): [0, 4)')
  tap.errors(function() return gm.randint(5, 5, {3}) end, 'empty range', 'randint with an empty range refused')
  tap.errors(function() return gm.randint(0, 1 << 40, {10}, {dtype = 'f64'}) end, 'wider than 2%^32',
             'randint over a range wider than 2^32 refused (one 32-bit draw per value)')
  tap.errors(function() return gm.randint(1 << 31, (1 << 31) + 5, {4}) end, 'does not fit i32', 'randint bounds outside i32 refused for an i32 result',
              'lgmoe.c l_randint does not check the bounds against the dtype (values wrap)')
  local p = gm.randperm(50)
  tap.is(p.dtype, 'i32', 'randperm gives i32')
  local seen, ok = {}, true
  for _, v in ipairs(p:totable()) do
    if seen[v] or v < 0 or v >= 50 then ok = false end
    seen[v] = true
  end
  tap.ok(ok and p:numel() == 50, 'randperm(50) is a permutation of 0..49')
  tap.ok(not same(p:totable(), gm.arange(50):totable()), 'randperm(50) is not the identity')
  tap.is(gm.randperm(0):numel(), 0, 'randperm(0) is empty')
end

-- ---- accessors and indexing ---------------------------------------------------------------
do
  local x = gm.arange(12):reshape{3, 4}:to('f32')
  tap.ok(same(x.shape, {3, 4}) and x:dim() == 2 and x:numel() == 12 and x.device == 'cpu',
         'shape, dim, numel, device')
  tap.ok(same(x:size(), {3, 4}) and x:size(1) == 4 and x:size(-2) == 3, 'size() and size(dim) with negative dim')
  tap.errors(function() return x:size(2) end, 'dim 2 out of range', 'size(2) of a 2-dim tensor refused')
  tap.is(#x, 3, '#x is the size of dim 0')
  tap.ok(not pcall(x.item, x), 'item of a 12-element tensor refused')
  tap.errors(function() return x:item() end, '12 elements', 'item error says how many elements',
              'lgmoe.c t_item formats with %lld, which lua_pushfstring refuses')
  tap.is(gm.tensor{{5}}:item(), 5, 'item of a one-element 2-dim tensor')
  local row = x[1]
  tap.ok(same(row.shape, {4}) and same(row:totable(), {4, 5, 6, 7}), 'x[1] selects row 1 (0-based)')
  tap.ok(same(x[-1]:totable(), {8, 9, 10, 11}), 'x[-1] is the last row')
  tap.is(x[2][3]:item(), 11, 'x[2][3] chains selects')
  tap.is(x[2][3]:dim(), 0, 'selecting down to one element gives a 0-dim tensor')
  tap.errors(function() return x[3] end, 'out of range', 'x[3] out of range')
  tap.errors(function() return x[1.5] end, 'integer', 'x[1.5] refused')
  x[0] = 100
  tap.ok(same(x:totable()[1], {100, 100, 100, 100}), 'x[0] = number fills row 0')
  x[2] = gm.tensor{1, 2, 3, 4}
  tap.ok(same(x:totable()[3], {1, 2, 3, 4}), 'x[2] = tensor copies into row 2')
  x[-2] = gm.tensor{7}
  tap.ok(same(x:totable()[2], {7, 7, 7, 7}), 'x[-2] = broadcastable tensor')
  x[1][3] = -1
  tap.is(x:totable()[2][4], -1, 'x[1][3] = v writes through the row view into x')
  tap.errors(function() x[0] = gm.tensor{1, 2} end, 'broadcast', 'assigning a non-broadcastable tensor refused')
  tap.errors(function() x[0] = 'a' end, 'number or a tensor', 'assigning a string refused')
  tap.errors(function() x.foo = 1 end, 'cannot set field', 'assigning an unknown field refused')
  local w = gm.zeros({2}, {requires_grad = true})
  tap.errors(function() w:fill_(1) end, 'requires grad', 'fill_ on a leaf that requires grad refused')
  tap.errors(function() w:narrow(0, 0, 1):fill_(1) end, 'requires grad', 'fill_ on a view of such a leaf refused')
  tap.errors(function() w[0] = 1 end, 'requires grad', 'x[i] = v on a leaf that requires grad refused (as fill_ is)',
              'lgmoe.c t_newindex takes the select view under no_grad, so the in-place check never sees requires_grad')
  gm.no_grad(function() w[0] = 3 end)
  tap.is(w:totable()[1], 3, '... allowed inside gm.no_grad')
end

-- ---- views and aliasing ---------------------------------------------------------------------
do
  local function base() return gm.arange(24):to('f32'):reshape{2, 3, 4} end
  local function check_alias(name, make, expect_numel)
    local x = base()
    local v = make(x)
    tap.ok(v:numel() == (expect_numel or v:numel()), name .. ': numel')
    v:fill_(-1)
    local n = 0
    for _, e in ipairs(tap.flatten(x:totable())) do if e == -1 then n = n + 1 end end
    tap.ok(n > 0 and n == (expect_numel or v:numel()), ('%s: fill_ on the view changed %d elements of the base'):format(name, n))
  end
  check_alias('narrow(2, 1, 2)', function(x) return x:narrow(2, 1, 2) end, 12)
  check_alias('narrow(-1, -2, 1)', function(x) return x:narrow(-1, -2, 1) end, 6)
  check_alias('select(1, 2)', function(x) return x:select(1, 2) end, 8)
  check_alias('transpose(0, 2)', function(x) return x:transpose(0, 2) end, 24)
  check_alias('permute{2, 0, 1}', function(x) return x:permute{2, 0, 1} end, 24)
  check_alias('squeeze', function(x) return x:narrow(1, 0, 1):squeeze() end, 8)
  check_alias('unsqueeze(0)', function(x) return x:unsqueeze(0) end, 24)
  check_alias('flatten', function(x) return x:flatten() end, 24)
  check_alias('view{6, 4}', function(x) return x:view{6, 4} end, 24)
  check_alias('reshape{4, -1}', function(x) return x:reshape{4, -1} end, 24)
  check_alias('contiguous of a contiguous tensor', function(x) return x:contiguous() end, 24)
  check_alias('x[1]', function(x) return x[1] end, 12)
  check_alias('split(2, 2)[2]', function(x) return x:split(2, 2)[2] end, 12)
  check_alias('chunk(3, 1)[1]', function(x) return x:chunk(3, 1)[1] end, 8)

  local x = base()
  local t = x:transpose(0, 2)
  tap.ok(same(t.shape, {4, 3, 2}) and not t:is_contiguous(), 'transpose: shape and not contiguous')
  tap.is(t[3][1][1]:item(), x[1][1][3]:item(), 'transpose element t[3][1][1] = x[1][1][3]')
  local p = x:permute{2, 0, 1}
  tap.ok(same(p.shape, {4, 2, 3}) and p[1][1][2]:item() == x[1][2][1]:item(), 'permute{2,0,1}: shape and element')
  tap.errors(function() return x:permute{0, 0, 1} end, 'repeated', 'permute with a repeated dim refused')
  tap.errors(function() return x:transpose(0, 3) end, 'out of range', 'transpose(0, 3) of 3 dims refused')
  local ex = gm.tensor{{1}, {2}}:expand{2, 3}
  tap.ok(same(ex:totable(), {{1, 1, 1}, {2, 2, 2}}) and same(ex:stride(), {1, 0}), 'expand{2, 3}: stride 0')
  local ex2 = gm.tensor{1, 2, 3}:expand(2, -1)
  tap.ok(same(ex2.shape, {2, 3}), 'expand(2, -1) keeps the dim')
  tap.errors(function() return gm.tensor{1, 2}:expand{3} end, 'expand', 'expand of size 2 to 3 refused')
  local sq = gm.zeros{2, 1, 3, 1}
  tap.ok(same(sq:squeeze().shape, {2, 3}) and same(sq:squeeze(1).shape, {2, 3, 1}) and same(sq:squeeze(0).shape, {2, 1, 3, 1}),
         'squeeze(), squeeze(dim) and squeeze of a non-1 dim')
  tap.ok(same(gm.zeros{2, 3}:unsqueeze(-1).shape, {2, 3, 1}) and same(gm.zeros{2, 3}:unsqueeze(1).shape, {2, 1, 3}),
         'unsqueeze(-1) and unsqueeze(1)')
  tap.ok(same(gm.zeros{2, 3, 4, 5}:flatten(1, 2).shape, {2, 12, 5}), 'flatten(1, 2)')
  tap.errors(function() return t:view{24} end, 'view', 'view of a transposed tensor refused')
  local r = t:reshape{24}
  tap.ok(r:is_contiguous() and r[1]:item() == 12, 'reshape of a transposed tensor copies in the transposed order')
  r:fill_(0)
  tap.is(x[1][0][0]:item(), 12, 'the reshaped copy does not alias the base')
  local tc = t:contiguous()
  tap.ok(tc:is_contiguous() and same(tc:totable(), t:totable()), 'contiguous() of a transposed tensor: same values')
  tc:fill_(0)
  tap.is(x[1][0][0]:item(), 12, 'contiguous() of a non-contiguous tensor is a copy')
  local cl = x:clone()
  cl:fill_(5)
  tap.ok(x[0][0][0]:item() == 0 and cl[0][0][0]:item() == 5, 'clone does not alias')
  tap.ok(x:narrow(0, 0, 1):is_contiguous() and not x:narrow(2, 0, 2):is_contiguous(), 'is_contiguous of narrow views')
  local st = x:select(1, 1)
  tap.ok(same(st:stride(), {12, 1}), 'select drops the dim from the strides')
  tap.errors(function() return x:narrow(1, 2, 2) end, 'out of range', 'narrow past the end refused')
  tap.errors(function() return x:select(0, 2) end, 'out of range', 'select past the end refused')

  local y = gm.arange(10)
  local parts = y:split(4)
  tap.ok(#parts == 3 and same(parts[1]:totable(), {0, 1, 2, 3}) and same(parts[3]:totable(), {8, 9}), 'split(4) of 10: 4, 4, 2')
  local ch = y:chunk(3)
  tap.ok(#ch == 3 and ch[1]:numel() == 4 and ch[3]:numel() == 2, 'chunk(3) of 10: 4, 4, 2')
  local ch2 = gm.zeros{2, 6}:chunk(4, 1)
  tap.ok(#ch2 == 3 and same(ch2[1].shape, {2, 2}), 'chunk(4, 1) of 6 columns: 3 chunks of 2 (PyTorch)')
  tap.ok(#gm.split(y, 20) == 1, 'split larger than the dim gives one part')
  tap.errors(function() return y:split(0) end, 'positive', 'split(0) refused')
  tap.errors(function() return y:chunk(-1) end, 'positive', 'chunk(-1) refused')
end

-- ---- printing ---------------------------------------------------------------------------------
do
  local s = tostring(gm.tensor{{1, 2}, {3, 4}})
  tap.like(s, 'f32%[2, 2%]', 'tostring has dtype and shape')
  tap.like(s, '3%.', 'tostring has the values')
  tap.like(tostring(gm.zeros({3}, {dtype = 'i32'})), 'i32%[3%]', 'tostring of an i32 tensor')
  local big = tostring(gm.arange(5000))
  tap.like(big, '%.%.%.', 'a 5000-element tensor prints summarised with ...')
  tap.ok(#big < 400 and big:find('4999') and not big:find('2500'), 'the summary keeps the edges only')
  local big2 = tostring(gm.zeros{100, 100})
  tap.ok(big2:find('...', 1, true) and #big2 < 2000, '100x100 printing is summarised')
  tap.like(tostring(gm.tensor(3)), 'f32%[%]', '0-dim prints with an empty shape')
  tap.like(tostring(gm.zeros{0, 3}), 'f32%[0, 3%]', '0-size prints with its shape')
  local r = gm.ones({2}, {requires_grad = true})
  tap.like(tostring(r * 2), 'grad_fn=mul', 'tostring shows grad_fn')
end

-- ---- 0-size and 0-dim ---------------------------------------------------------------------
do
  local z = gm.zeros{0, 3}
  tap.ok(z:numel() == 0 and #z == 0 and same(z.shape, {0, 3}), '0-size: numel 0, #z 0')
  tap.ok(same(z:totable(), {}), '0-size totable is {}')
  tap.is(z:sum():item(), 0, 'sum of a 0-size tensor is 0')
  tap.ok(same((z + gm.ones{3}).shape, {0, 3}), '[0, 3] + [3] -> [0, 3]')
  tap.ok(same(z:transpose(0, 1).shape, {3, 0}) and same(z:reshape{3, 0, 7}.shape, {3, 0, 7}), '0-size transpose and reshape')
  tap.errors(function() return z:reshape{-1, 0} end, 'reshape', 'reshape 0 elements to {-1, 0} is ambiguous')
  tap.errors(function() return z[0] end, 'out of range', 'indexing a size-0 dim refused')
  tap.ok(same(gm.tensor{}.shape, {0}), 'tensor{} is a [0] tensor')
  tap.ok(gm.arange(0):numel() == 0 and gm.empty{0}:numel() == 0, 'arange(0) and empty{0}')
  local s = gm.tensor(4)
  tap.ok(s:dim() == 0 and s:numel() == 1 and same(s.shape, {}) and s:item() == 4, '0-dim: dim 0, numel 1, shape {}')
  tap.is(s:totable(), 4, '0-dim totable is a number')
  tap.errors(function() return #s end, '0%-dim', '#x of a 0-dim tensor refused')
  tap.errors(function() return s:size(0) end, 'dim', 's:size(0) of a 0-dim tensor refused with a message',
              'lgmoe.c t_size raises for ndim 0 without setting a message: the error text is "ok"')
  tap.errors(function() return s[0] end, '0%-dim', 'indexing a 0-dim tensor refused')
  tap.ok(same((s + gm.ones{2, 2}):totable(), {{5, 5}, {5, 5}}), '0-dim broadcasts')
  tap.ok(same(s:reshape{1, 1}.shape, {1, 1}) and same(s:unsqueeze(0).shape, {1}) and same(s:flatten().shape, {1}),
         '0-dim reshape/unsqueeze/flatten')
  tap.ok(same(gm.tensor{7}:reshape{}.shape, {}), 'reshape{} makes a 0-dim tensor')
  tap.is(gm.zeros{}:dim(), 0, 'zeros{} is 0-dim')
  tap.ok(s:transpose(0, -1):item() == 4, 'transpose(0, -1) of a 0-dim tensor is itself')
end

-- ---- memory without collectgarbage() -----------------------------------------------------------
-- Lua's generational collector (lalloc.c) frees young garbage in minor collections; a tensor that
-- outlived a few of them is old and only a major collection frees it (lgmoe.c asks for one per
-- max(16 MiB, live/4) of tensor turnover; without that MQAR --quick peaked at 318 MB, not 224).
-- With a Lua heap of 4M numbers, Lua's own trigger does not fire within this loop: the peak is
-- about 85 MiB without the collections lgmoe.c asks for, under 30 MiB with them.
do
  tap.is(collectgarbage('generational'), 'generational', 'Lua runs its generational collector')
  local code, out = tap.run('-e ' .. tap.q('io.write(collectgarbage("generational"))'), {env = 'GMOE_GC_INCREMENTAL=1'})
  tap.ok(code == 0 and out == 'incremental', 'GMOE_GC_INCREMENTAL=1 keeps the incremental one', out)
  local heap = {} -- a Lua heap of a real program's size (data, modules): Lua's own major
  for i = 1, 1 << 22 do heap[i] = i + 0.5 end -- trigger waits for it to double
  local live0, peak, ring = gm.live_bytes(), 0, {}
  for i = 1, 400 do -- 400 MiB of 1 MiB tensors, each alive for 8 iterations (so most get old)
    ring[i % 8] = gm.zeros{262144}
    peak = math.max(peak, gm.live_bytes() - live0)
  end
  tap.ok(peak < 48 * 2 ^ 20, ('a loop whose tensors die old runs in bounded memory (peak %.1f MiB for 8 MiB alive)'):format(peak / 2 ^ 20))
  ring, heap = nil, nil
  collectgarbage()
end

-- ---- <close> ------------------------------------------------------------------------------
do
  local live0 = gm.live_bytes()
  local escaped
  do
    local t <close> = gm.zeros{1000}
    escaped = t
    tap.ok(gm.live_bytes() >= live0 + 4000, '<close> tensor is live inside its scope')
  end
  tap.ok(gm.live_bytes() < live0 + 4000, 'leaving the scope released its storage at once')
  tap.errors(function() return escaped.shape end, 'closed', 'field access after <close> says closed')
  tap.errors(function() return escaped:sum() end, 'closed', 'a method after <close> says closed')
  tap.errors(function() return tostring(escaped) end, 'closed', 'tostring after <close> says closed')
  tap.errors(function() return escaped + 1 end, 'closed', 'an operator after <close> says closed',
              'lgmoe.c op_call says "expected a tensor or a number, got userdata" for a closed tensor')
  tap.errors(function() return gm.add(1, escaped) end, 'closed', 'gm.add(1, closed) says closed',
              'lgmoe.c op_call uses gm_lua_to_tensor, which hides the closed state')
  collectgarbage()
  tap.ok(true, 'collecting a closed tensor is harmless')
end

tap.done()
