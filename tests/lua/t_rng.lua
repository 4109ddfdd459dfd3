-- t_rng.lua: the counter-based generator from Lua: seeding reproduces draws, Generator
-- objects are independent of the default, state round trips, results do not depend on the
-- thread count, different seeds differ, uniform ranges per dtype, randint covers its range.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local function identical(a, b)
  return a.dtype == b.dtype and a:numel() == b:numel() and (a - b):abs():max():item() == 0
end

-- ---- manual_seed ------------------------------------------------------------------------------
do
  gm.manual_seed(1234)
  local a = gm.randn{1000}
  local a2 = gm.randn{1000}
  gm.manual_seed(1234)
  local b = gm.randn{1000}
  local b2 = gm.randn{1000}
  tap.ok(identical(a, b) and identical(a2, b2), 'manual_seed reproduces a sequence of randn draws exactly')
  tap.ok(not identical(a, a2), 'consecutive draws differ')
  gm.manual_seed(1234)
  local c = gm.randn{500}
  local c2 = gm.randn{500}
  tap.ok(identical(c, a:narrow(0, 0, 500)), 'a shorter draw is a prefix of the longer one')
  tap.ok(identical(c2, a:narrow(0, 500, 500)), 'two draws of 500 continue the stream like one draw of 1000')
  gm.manual_seed(1235)
  tap.ok(not identical(gm.randn{1000}, a), 'a different seed gives different numbers')
  gm.manual_seed(1234)
  local d64 = gm.randn({1000}, {dtype = 'f64'})
  gm.manual_seed(1234)
  local d64b = gm.randn({1000}, {dtype = 'f64'})
  tap.ok(identical(d64, d64b), 'f64 randn is reproducible too')
  gm.manual_seed(7)
  local u, n, i = gm.rand{33}, gm.randn{17}, gm.randint(100, {9})
  gm.manual_seed(7)
  tap.ok(identical(gm.rand{33}, u) and identical(gm.randn{17}, n) and identical(gm.randint(100, {9}), i),
         'a mixed sequence (odd sizes) of rand, randn, randint replays exactly')
  gm.manual_seed(7)
  local p1 = gm.randperm(100)
  gm.manual_seed(7)
  tap.ok(identical(gm.randperm(100), p1), 'randperm replays from the seed')
end

-- ---- Generator objects ----------------------------------------------------------------------
do
  local g = gm.Generator(99)
  gm.manual_seed(5)
  local x1 = gm.randn({100}, {generator = g})
  local d1 = gm.randn{100}
  gm.manual_seed(5)
  local d2 = gm.randn{100}
  tap.ok(identical(d1, d2), 'drawing from a Generator does not advance the default generator')
  local g2 = gm.Generator(99)
  tap.ok(identical(gm.randn({100}, {generator = g2}), x1), 'two Generators with the same seed agree')
  local g3 = gm.Generator(99)
  gm.randn{1000}
  tap.ok(identical(gm.randn({100}, {generator = g3}), x1), 'drawing from the default does not advance a Generator')
  gm.manual_seed(99)
  tap.ok(identical(gm.randn{100}, x1), 'Generator(s) and manual_seed(s) give the same stream')
  tap.ok(g:manual_seed(99) == g and identical(gm.randn({100}, {generator = g}), x1), 'g:manual_seed(s) resets it')
  tap.like(tostring(g), 'Generator%(seed=99', 'tostring of a Generator')
  local gr = gm.Generator(4)
  local r1 = gm.rand({50}, {generator = gr})
  local ri = gm.randint(10, {50}, {generator = gr})
  local rp = gm.randperm(20, {generator = gr})
  gr:manual_seed(4)
  tap.ok(identical(gm.rand({50}, {generator = gr}), r1) and identical(gm.randint(10, {50}, {generator = gr}), ri) and
         identical(gm.randperm(20, {generator = gr}), rp), 'rand, randint and randperm accept a generator')
  tap.errors(function() return gm.randn({2}, {generator = 5}) end, 'Generator', 'a non-generator option refused')
end

-- ---- state round trips ----------------------------------------------------------------------
do
  gm.manual_seed(42)
  gm.randn{37}
  local s = gm.get_rng_state()
  tap.ok(type(s) == 'table' and s.seed == 42 and s.offset > 0, 'get_rng_state: {seed, offset}')
  local a = gm.randn{64}
  gm.randn{1000}
  gm.set_rng_state(s)
  tap.ok(identical(gm.randn{64}, a), 'set_rng_state replays the next draw')
  local g = gm.Generator(8)
  gm.rand({13}, {generator = g})
  local gs = g:get_state()
  local b = gm.rand({13}, {generator = g})
  g:set_state(gs)
  tap.ok(identical(gm.rand({13}, {generator = g}), b), 'Generator get_state/set_state replays the next draw')
  local h = gm.Generator(0)
  h:set_state(gs)
  tap.ok(identical(gm.rand({13}, {generator = h}), b), 'a state moves to another Generator')
  tap.errors(function() gm.set_rng_state(5) end, 'table', 'set_rng_state of a number refused')
  gm.manual_seed(42)
  local s0 = gm.get_rng_state()
  tap.is(s0.offset, 0, 'manual_seed resets the offset')
  gm.randn{5}
  tap.is(gm.get_rng_state().offset, 2, 'randn of 5 f32 values uses 2 Philox blocks (4 values each)')
  gm.rand({5}, {dtype = 'f64'})
  tap.is(gm.get_rng_state().offset, 5, 'rand of 5 f64 values uses 3 blocks (2 values each)')
end

-- ---- thread count independence ------------------------------------------------------------
do
  local n0 = gm.get_num_threads()
  local function draw(threads, f)
    gm.set_num_threads(threads)
    gm.manual_seed(2024)
    return f()
  end
  local kinds = {
    {'randn f32', function() return gm.randn{1000000} end},
    {'randn f64', function() return gm.randn({1000000}, {dtype = 'f64'}) end},
    {'rand f32', function() return gm.rand{1000003} end},
    {'randint', function() return gm.randint(-50, 50, {1000001}) end},
  }
  for _, k in ipairs(kinds) do
    local a, b = draw(1, k[2]), draw(2, k[2])
    local c = draw(n0 > 2 and n0 or 4, k[2])
    tap.ok((a - b):abs():max():item() == 0 and (a - c):abs():max():item() == 0,
           k[1] .. ': 1e6 draws bitwise identical with 1, 2 and more threads')
    tap.ok(a:sum():item() == b:sum():item() and a:sum():item() == c:sum():item(), k[1] .. ': sums identical too')
  end
  gm.set_num_threads(2)
  tap.is(gm.get_num_threads(), 2, 'set_num_threads(2) is reported back')
  for _, bad in ipairs {0, -5, 1e9, 2.5} do
    tap.errors(function() gm.set_num_threads(bad) end, 'set_num_threads: expected an integer in 1 %.%. 1024',
               'set_num_threads(' .. bad .. ') is refused')
  end
  tap.is(gm.get_num_threads(), 2, 'and leaves the count as it was')
end

-- ---- ranges -----------------------------------------------------------------------------
do
  gm.manual_seed(77)
  for _, dt in ipairs {'f32', 'f64'} do
    local u = gm.rand({200000}, {dtype = dt})
    local lo, hi = u:min():item(), u:max():item()
    tap.ok(lo >= 0 and hi < 1, ('rand %s in [0, 1): min %.3g max %.9g'):format(dt, lo, hi))
    tap.ok(lo < 1e-4 and hi > 1 - 1e-4, ('rand %s fills the interval'):format(dt))
    tap.close(u:mean():item(), 0.5, 0.005, 'rand ' .. dt .. ' mean 0.5')
    local below = (u:lt(0.25)):to('f64'):mean():item()
    tap.close(below, 0.25, 0.01, 'rand ' .. dt .. ': a quarter of the values below 0.25')
  end
  local ri = gm.randint(-3, 4, {70000})
  local counts, ok = {}, true
  for _, v in ipairs(ri:totable()) do
    if v < -3 or v > 3 then ok = false end
    counts[v] = (counts[v] or 0) + 1
  end
  tap.ok(ok, 'randint(-3, 4) stays in [-3, 4)')
  local all = true
  for v = -3, 3 do
    if not counts[v] or math.abs(counts[v] - 10000) > 600 then all = false end
  end
  tap.ok(all, 'randint(-3, 4) covers every value, each about 1/7 of the time')
  local big = gm.randint(0, 2, {1000})
  tap.ok(big:min():item() == 0 and big:max():item() == 1, 'randint(0, 2) gives both 0 and 1')
  local one = gm.randint(5, 6, {10})
  tap.ok(one:min():item() == 5 and one:max():item() == 5, 'randint(5, 6) is always 5')
  local df = gm.randint(10, {1000}, {dtype = 'f64'})
  tap.ok(df.dtype == 'f64' and df:max():item() <= 9 and df:min():item() >= 0 and
         (df - df:to('i32'):to('f64')):abs():max():item() == 0, 'randint with a float dtype gives whole numbers')
end

tap.done()
