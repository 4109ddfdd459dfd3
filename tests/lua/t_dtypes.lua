-- t_dtypes.lua: dtype agreement over the whole op table. Every sample of every op (f64 inputs
-- from the op's rules) runs in f64 and with its float inputs converted to f32: float outputs
-- agree within |f32 - f64| <= 1e-5 + 1e-4 |f64|, integer outputs are equal, and f32 inputs give
-- f32 outputs. Then the same samples with integer-valued i32 inputs: where an op accepts i32
-- it must agree exactly with f64 on the same values; where it refuses, it says so cleanly.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local C = gm._C

local RTOL, ATOL = 1e-4, 1e-5
-- Ops whose output dtype comes from a param, not from the inputs.
local DTYPE_PARAM = {to = true, one_hot = true}

local function flat(x)
  local t = x:totable()
  if type(t) ~= 'table' then return {t} end
  local out = {}
  local function walk(v)
    if type(v) == 'table' then for _, e in ipairs(v) do walk(e) end else out[#out + 1] = v end
  end
  walk(t)
  return out
end

local function same_shape(a, b)
  if #a.shape ~= #b.shape then return false end
  for i = 1, #a.shape do if a.shape[i] ~= b.shape[i] then return false end end
  return true
end

-- Worst violation of the tolerance (<= 0 is fine) and where; NaN must match NaN.
local function compare(got, want, exact)
  local g, w = flat(got), flat(want)
  if #g ~= #w then return math.huge, 'element counts differ' end
  local worst, where = -math.huge, nil
  for i = 1, #w do
    local a, b = g[i], w[i]
    local excess
    if a ~= a or b ~= b then excess = (a ~= a and b ~= b) and -1 or math.huge
    elseif a == b then excess = -1
    elseif exact then excess = math.huge
    else excess = math.abs(a - b) - (ATOL + RTOL * math.abs(b)) end
    if excess > worst then worst, where = excess, ('element %d: got %.9g want %.9g'):format(i - 1, a, b) end
  end
  return worst, where
end

local function call(name, ins, params)
  local r = table.pack(C.op_call(name, ins, params))
  if not r[1] then return false, r[2], r[3] end
  return true, table.pack(table.unpack(r, 2, r.n))
end

local function convert(ins, f)
  local out = {}
  for i, x in ipairs(ins) do out[i] = x.dtype == 'i32' and x or f(x) end
  return out
end

-- x (float) as i32 holding round(3 x), keeping x's shape (0-dim included).
local function to_int(x)
  local vals = flat(x)
  for i, v in ipairs(vals) do vals[i] = math.floor(3 * v + 0.5) end
  local t = gm.tensor(vals, {dtype = 'i32'})
  return t:reshape(x.shape)
end

local nsamples, nint, nint_refused = 0, 0, 0
for _, op in ipairs(gm.ops()) do
  local v = 0
  while true do
    local ins, params = C.op_sample(op.name, v)
    if not ins then break end
    nsamples = nsamples + 1
    local label = ('%s sample %d'):format(op.name, v)

    -- f64 vs f32
    local ok64, r64, st64 = call(op.name, ins, params)
    local ins32 = convert(ins, function(x) return x:to('f32') end)
    local ok32, r32, st32 = call(op.name, ins32, params)
    if not (ok64 and ok32) then
      tap.ok(false, label .. ': runs in f64 and f32', ('f64: %s; f32: %s'):format(
        ok64 and 'ok' or tostring(r64) .. ' ' .. tostring(st64), ok32 and 'ok' or tostring(r32) .. ' ' .. tostring(st32)))
    else
      local fine, why = r64.n == r32.n, 'output counts differ'
      local worst, where = -math.huge, nil
      for k = 1, r64.n do
        local a, b = r32[k], r64[k]
        if not fine then break end
        if not same_shape(a, b) then
          fine, why = false, ('output %d: shapes differ'):format(k)
        elseif b.dtype == 'i32' then
          if a.dtype ~= 'i32' then fine, why = false, ('output %d: i32 in f64 but %s in f32'):format(k, a.dtype) end
          local e, w = compare(a, b, true)
          if e > worst then worst, where = e, ('output %d %s'):format(k, w) end
        else
          local want_dtype = DTYPE_PARAM[op.name] and b.dtype or 'f32'
          if a.dtype ~= want_dtype then
            fine, why = false, ('output %d: dtype %s from f32 inputs, expected %s'):format(k, a.dtype, want_dtype)
          end
          local e, w = compare(a:to('f64'), b, false)
          if e > worst then worst, where = e, ('output %d %s'):format(k, w) end
        end
      end
      if fine and worst > 0 then fine, why = false, 'outside tolerance: ' .. tostring(where) end
      tap.ok(fine, label .. ': f32 agrees with f64', why)
    end

    -- i32 inputs (integer values) vs f64 on the same values
    local has_float = false
    for _, x in ipairs(ins) do has_float = has_float or x.dtype ~= 'i32' end
    if has_float and ok64 then
      local insi = convert(ins, to_int)
      local insd = convert(insi, function(x) return x end)
      for i, x in ipairs(ins) do if x.dtype ~= 'i32' then insd[i] = insi[i]:to('f64') end end
      local oki, ri, sti = call(op.name, insi, params)
      if not oki then
        nint_refused = nint_refused + 1
        tap.ok(sti == 'dtype error' or sti == 'bad argument' or sti == 'index out of range',
               label .. ': i32 refused cleanly (' .. tostring(ri) .. ')', 'status: ' .. tostring(sti))
      else
        nint = nint + 1
        local okd, rd = call(op.name, insd, params)
        local fine, why = okd and rd.n == ri.n, okd and 'output counts differ' or 'f64 on the same values failed'
        for k = 1, (fine and ri.n or 0) do
          local a, b = ri[k], rd[k]
          if not same_shape(a, b) then
            fine, why = false, ('output %d: shapes differ'):format(k)
          elseif not DTYPE_PARAM[op.name] and a.dtype ~= 'i32' then
            fine, why = false, ('output %d: dtype %s from i32 inputs'):format(k, a.dtype)
          else
            -- integer semantics: i32 division truncates toward zero; an i32 clamp keeps the
            -- integers inside [lo, hi] (bound ceil'd / floor'd): where the f64 result r is a
            -- bound above x it was the min (ceil it), below x the max (floor it)
            local want = b
            if op.name == 'div' or op.name == 'clamp' then
              local w, xs = flat(b), flat(insd[1])
              for i, e in ipairs(w) do
                if op.name == 'div' then w[i] = e < 0 and math.ceil(e) or math.floor(e)
                elseif e > xs[i] then w[i] = math.ceil(e)
                elseif e < xs[i] then w[i] = math.floor(e) end
              end
              want = gm.tensor(w, {dtype = 'f64'}):reshape(b.shape)
            end
            local e, w = compare(a:to('f64'), want:to('f64'), true)
            if e > 0 then fine, why = false, ('output %d %s'):format(k, w) end
          end
        end
        tap.ok(fine, label .. ': i32 agrees with f64 on the same integers', why)
      end
    end
    v = v + 1
  end
end
tap.ok(nsamples > 100, ('the op table gave %d samples'):format(nsamples))
tap.ok(nint > 20, ('%d samples ran in i32 (%d refused)'):format(nint, nint_refused))

-- a few direct dtype facts
do
  local a = gm.tensor({1.5, -2.25}, {dtype = 'f64'})
  tap.is((a + 1).dtype, 'f64', 'f64 + number stays f64')
  tap.is((a:to('f32') * 2).dtype, 'f32', 'f32 * number stays f32')
  tap.is((gm.arange(4) * 2).dtype, 'i32', 'i32 * integer stays i32')
  tap.errors(function() return a + gm.ones{2} end, 'dtype', 'f64 + f32 refused (no implicit promotion)')
  tap.ok(a:to('i32'):totable()[1] == 1 and a:to('i32'):totable()[2] == -2, 'f64 -> i32 truncates toward zero')
  tap.is(gm.tensor({16777217}, {dtype = 'f64'}):to('f32'):to('f64'):item(), 16777216, 'f64 -> f32 rounds to nearest')
  tap.is(gm.tensor({2147483647}, {dtype = 'i32'}):to('f64'):item(), 2147483647, 'i32 max converts to f64 exactly')
  tap.errors(function() return a:to('f16') end, 'unknown dtype', 'unknown dtype name refused')
  tap.ok(a:float().dtype == 'f32' and a:double().dtype == 'f64' and a:int().dtype == 'i32', 'float/double/int')
  tap.errors(function() return gm.arange(3):exp() end, 'float', 'exp of i32 refused with a dtype message')
  local s = gm.arange(5):sum()
  tap.ok(s.dtype == 'i32' and s:item() == 10, 'sum of i32 stays i32')
  local big = gm.full({3}, 2147483647, {dtype = 'i32'})
  tap.errors(function() return big + big end, 'add: i32 overflow', 'i32 overflow is an error, not a wrap')
  tap.errors(function() return gm.tensor({1}, {dtype = 'i32'}) / gm.tensor({0}, {dtype = 'i32'}) end, 'division by zero',
             'i32 division by zero is an error, not a crash')
end

-- ---- numbers and results that do not fit i32 are errors naming the value --------------------
do
  local i32 = {dtype = 'i32'}
  tap.errors(function() return gm.tensor({2 ^ 40}, i32) end, 'tensor: 1099511627776 does not fit i32',
             'tensor{2^40} as i32 names the value')
  tap.errors(function() return gm.tensor({1.5}, i32) end, 'tensor: 1%.5 is not an integer',
             'a fraction is not an i32 value')
  tap.errors(function() return gm.tensor({0 / 0}, i32) end, 'NaN has no i32 value', 'NaN is not an i32 value')
  tap.errors(function() return gm.full({1}, 2 ^ 40, i32) end, 'full: 1099511627776 does not fit i32',
             'full with 2^40 as i32')
  tap.errors(function() return gm.full({2}, 2 ^ 31, i32) end, 'full: 2147483648 does not fit', 'full with 2^31')
  tap.errors(function() return gm.tensor({1}, i32) + 2 ^ 40 end, 'add: 1099511627776 does not fit i32',
             'i32 + 2^40 names the number')
  tap.errors(function() return gm.tensor({1}, i32) * 0.5 end, 'mul: 0%.5 is not an integer', 'i32 * 0.5 refused')
  local x = gm.tensor({1}, i32)
  tap.errors(function() x[0] = 2 ^ 35 end, 'does not fit i32', 'x[i] = 2^35 into i32 refused')
  tap.is(gm.tensor({2147483647, -2147483648}, i32):totable()[2], -2147483648, 'the i32 range itself is fine')
  local h = gm.full({2}, 2 ^ 30, i32)
  tap.errors(function() return h * 2 end, 'mul: i32 overflow', 'i32 * number overflowing is an error')
  tap.errors(function() return h * h end, 'mul: i32 overflow', 'i32 * i32 overflowing is an error')
  tap.errors(function() return h + h end, 'add: i32 overflow', 'i32 + i32 overflowing is an error')
  tap.errors(function() return -h - h - h end, 'sub: i32 overflow', 'i32 - i32 overflowing is an error')
  local min = gm.full({1}, -2 ^ 31, i32)
  tap.errors(function() return -min end, 'neg: i32 overflow', '-(-2^31) is an error')
  tap.errors(function() return min:abs() end, 'abs: i32 overflow', 'abs(-2^31) is an error')
  tap.errors(function() return min / -1 end, 'div: i32 overflow', '-2^31 / -1 is an error')
  tap.is((h + 5):totable()[1], 2 ^ 30 + 5, 'results in range are exact')
  local m = gm.full({3}, 2147483647, i32)
  tap.errors(function() return m:sum() end, 'sum: the i32 result 6442450941 does not fit i32',
             'an i32 sum that does not fit is an error naming it')
  tap.errors(function() return m:cumsum(0) end, 'cumsum: the i32 result 4294967294', 'cumsum likewise')
  tap.is(gm.tensor({2147483647, 2147483647, -2147483647}, i32):sum():item(), 2147483647,
         'sums accumulate in 64 bits: partial sums past 2^31 come back into range exactly')
  tap.is(gm.full({3, 3}, 2 ^ 29, i32):sum(0):totable()[1], 3 * 2 ^ 29, 'sum over dim 0 of i32')
  tap.errors(function() return gm.full({4, 3}, 2 ^ 30, i32):sum(0) end, 'does not fit i32', 'and its overflow')
  tap.errors(function() return m:scatter_add(0, gm.tensor({0, 0, 0}, i32), m) end, 'scatter_add: i32 overflow',
             'scatter_add into i32 checks its sums')
  tap.errors(function() return gm.tensor({1e10}, {dtype = 'f64'}):to('i32') end,
             'conversion to i32: 10000000000 does not fit i32', 'f64 -> i32 out of range names the value')
  tap.errors(function() return gm.tensor({0 / 0}):to('i32') end, 'conversion to i32: NaN', 'NaN -> i32 refused')
  tap.errors(function() return gm.tensor({1 / 0}):to('i32') end, 'conversion to i32: inf', 'inf -> i32 refused')
  tap.errors(function() return gm.tensor({-3e9}, {dtype = 'f64'}):t():to('i32') end, 'does not fit i32',
             'strided conversions check too')
  tap.is(gm.tensor({-2147483648.9}, {dtype = 'f64'}):to('i32'):item(), -2147483648, 'truncation toward zero at the edge')
end

tap.done()
