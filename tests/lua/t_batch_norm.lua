-- t_batch_norm.lua: gm.batch_norm and gm.nn.BatchNorm2d against the formulas: batch statistics
-- in training mode (biased variance), running statistics moving by momentum towards the mean and
-- the unbiased variance, eval mode using them; f64 gradchecks of the module in both modes; the
-- op's mean and invstd outputs; [N, C] inputs (BatchNorm1d); errors.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local nn = gm.nn

local function maxdiff(a, b) return (a:to('f64') - b:to('f64')):abs():max():item() end

gm.manual_seed(21)
local x = gm.randn({4, 3, 5, 6}, {dtype = 'f64'}) * 2 + 1
local bn = nn.BatchNorm2d(3, {dtype = 'f64', momentum = 0.2})
gm.no_grad(function()
  bn.weight:copy_(gm.tensor({0.5, 1.0, 2.0}, {dtype = 'f64'}))
  bn.bias:copy_(gm.tensor({0.1, -0.2, 0.3}, {dtype = 'f64'}))
end)
local mean = x:mean({0, 2, 3}, true)
local var = ((x - mean) ^ 2):mean({0, 2, 3}, true)
local want = (x - mean) * (var + 1e-5):rsqrt() * bn.weight:reshape {1, 3, 1, 1} + bn.bias:reshape {1, 3, 1, 1}
tap.ok(maxdiff(bn(x), want) < 1e-12, 'training mode: batch mean and biased variance')
local M = 4 * 5 * 6
local rm = mean:reshape {3} * 0.2
local rv = gm.ones({3}, {dtype = 'f64'}) * 0.8 + var:reshape {3} * (M / (M - 1)) * 0.2
tap.ok(maxdiff(bn.running_mean, rm) < 1e-12 and maxdiff(bn.running_var, rv) < 1e-12,
       'running statistics: momentum towards the mean and the unbiased variance')
bn:eval()
local ye = bn(x)
local we = (x - rm:reshape {1, 3, 1, 1}) * (rv:reshape {1, 3, 1, 1} + 1e-5):rsqrt() * bn.weight:reshape {1, 3, 1, 1} +
           bn.bias:reshape {1, 3, 1, 1}
tap.ok(maxdiff(ye, we) < 1e-12, 'eval mode: the running statistics')
tap.ok(maxdiff(bn.running_mean, rm) < 1e-15, 'eval mode leaves the running statistics alone')

local function gradcheck_module(name, m, input)
  local err = gm.gradcheck(function(xx, w, b)
    m.weight, m.bias = w, b
    return m(xx)
  end, {input, m.weight, m.bias})
  tap.ok(err < 1e-6, name .. ' gradcheck (f64: x, weight, bias)', tostring(err))
end
bn:train()
gradcheck_module('BatchNorm2d training', bn, gm.randn({3, 3, 2, 2}, {dtype = 'f64'}))
bn:eval()
gradcheck_module('BatchNorm2d eval', bn, gm.randn({3, 3, 2, 2}, {dtype = 'f64'}))

do -- the op's statistics outputs
  local y, m, inv = gm.batch_norm(x, bn.weight, bn.bias)
  tap.ok(maxdiff(m, mean:reshape {3}) < 1e-12 and maxdiff(inv, (var + 1e-5):rsqrt():reshape {3}) < 1e-12,
         'batch_norm returns the batch mean and invstd per channel')
  tap.is(table.concat(y.shape, 'x'), '4x3x5x6', 'batch_norm keeps the shape of x')
end

do -- BatchNorm1d on [N, C]; f32
  local b1 = nn.BatchNorm1d(4)
  local z = gm.randn {16, 4} * 3 + 2
  local y = b1(z)
  tap.ok(y:mean(0):abs():max():item() < 1e-5 and (y:var {dims = {0}, unbiased = false} - 1):abs():max():item() < 1e-3,
         'BatchNorm1d on [N, C] (f32): zero mean, unit variance per feature')
end

tap.errors(function() nn.BatchNorm2d(3)(gm.randn {2, 4, 3, 3}) end, 'BatchNorm2d: x must be %[N, 3', 'channel mismatch')
tap.errors(function() gm.batch_norm(gm.randn {2, 3}, gm.ones {2}, gm.zeros {3}) end,
           'batch_norm: weight %[2%] must be %[C%] = %[3%]', 'op: weight shape')
tap.done()
