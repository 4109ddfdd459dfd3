-- t_ops_gradcheck.lua: finite-difference gradcheck (f64) of every differentiable op of the op
-- table, on every sample its rules provide. A differentiable op with no sample fails; a
-- non-differentiable one must have no backward rule and give outputs outside the graph.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local C = gm._C

for _, op in ipairs(gm.ops()) do
  if op.nodiff then
    -- a non-differentiable op has no backward rule, and its outputs have no grad_fn even when its
    -- float inputs require grad
    tap.ok(not op.has_backward, op.name .. ': not differentiable, so no backward rule')
    local inputs, params = C.op_sample(op.name, 0)
    if inputs then
      for i, t in ipairs(inputs) do
        if gm.is_tensor(t) and t.dtype ~= 'i32' then inputs[i] = t:detach():requires_grad_() end
      end
      local r = table.pack(C.op_call(op.name, inputs, params))
      local graphless = r[1]
      for k = 2, r.n do if gm.is_tensor(r[k]) and (r[k].grad_fn or r[k].requires_grad) then graphless = false end end
      tap.ok(graphless, op.name .. ': its outputs have no grad_fn', r[1] and '' or tostring(r[2]))
    else
      tap.skip(op.name .. ': its outputs have no grad_fn', 'no sample')
    end
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
