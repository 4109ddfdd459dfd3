-- t_profile.lua: the kernel profiler (gm.profile): rows per kernel with calls and time, the
-- function's results passed through, errors re-raised with the profiler off again.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local a, b = gm.randn {64, 32}, gm.randn {32, 16}
local report, y, extra = gm.profile(function(p, q)
  local r = p:matmul(q)
  r = r + r
  return r:sum(), 'extra'
end, a, b)
tap.ok(gm.is_tensor(y) and extra == 'extra', "fn's results follow the report")
tap.close(y:item(), (a:matmul(b) * 2):sum():item(), 1e-3, 'and are the values fn computed')
local by = {}
for _, row in ipairs(report) do by[row.kernel] = row end
tap.ok(by.MATMUL and by.MATMUL.calls == 1, 'one MATMUL call recorded')
tap.ok(by.PW_BINARY and by.PW_BINARY.calls == 1 and by.SUM and by.SUM.calls == 1, 'the add and the sum recorded')
local total, share, sorted = 0, 0, true
for i, row in ipairs(report) do
  total, share = total + row.seconds, share + row.share
  if i > 1 and row.seconds > report[i - 1].seconds then sorted = false end
end
tap.ok(sorted, 'rows slowest first')
tap.close(total, report.total, 1e-12, 'report.total is the sum of the rows')
tap.close(share, 1, 1e-9, 'shares add up to 1')
tap.ok(report.wall >= report.total and report.total > 0, 'wall time covers the kernel time')
local text = tostring(report)
tap.like(text, 'MATMUL', 'print shows the kernels')
tap.like(text, 'kernels [%d.]+ ms of [%d.]+ ms wall', 'and the kernel share of the wall time')

-- nested work with autograd: backward kernels are counted too
local x = gm.randn({8, 4}, {requires_grad = true})
local r2 = gm.profile(function() (x:exp() * 3):sum():backward() end)
local names = {}
for _, row in ipairs(r2) do names[row.kernel] = true end
tap.ok(names.PW_UNARY and names.PW_BINARY, 'forward and backward kernels of a backward pass')

-- an error inside: re-raised, and the profiler is off afterwards (nothing recorded later)
tap.errors(function() gm.profile(function() error('boom') end) end, 'boom', 'an error in fn is re-raised')
local _ = a + a
local after = gm._kprof(false)
tap.ok(next(after) == nil, 'the profiler is off after the error')
tap.errors(function() gm.profile(42) end, 'gm.profile: expected a function to run, got number', 'a non-function is refused')
tap.done()
