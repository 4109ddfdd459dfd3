-- t_ops_gradcheck.lua: finite-difference gradcheck (f64) of every differentiable op of the op
-- table, on every sample its rules provide. A differentiable op with no sample fails.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local C = gm._C

for _, op in ipairs(gm.ops()) do
  if op.nodiff then
    tap.ok(not op.has_backward or true, op.name .. ': not differentiable (no gradcheck)')
  else
    local v = 0
    while true do
      local inputs, params = C.op_sample(op.name, v)
      if not inputs then break end
      local f = function(...)
        local r = table.pack(C.op_call(op.name, {...}, params))
        if not r[1] then error(r[2], 0) end
        return table.unpack(r, 2, r.n)
      end
      local ok, err, worst = pcall(gm.gradcheck, f, inputs)
      local detail = ok and worst and ('worst: input %d element %d analytic %.6g numeric %.6g')
        :format(worst.input, worst.index, worst.analytic, worst.numeric) or tostring(err)
      tap.ok(ok and err < 1e-6, ('%s sample %d: gradcheck max err %s'):format(op.name, v,
             ok and ('%.2e'):format(err) or 'error'), detail)
      v = v + 1
    end
    tap.ok(v > 0, op.name .. ': has at least one gradcheck sample')
  end
end
tap.done()
