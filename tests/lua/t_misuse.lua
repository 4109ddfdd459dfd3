-- t_misuse.lua: calls that used to give a quiet wrong result are errors now: an optimiser of a
-- non-leaf, a zero capacity factor, in-place writes through overlapping views, a missing shape,
-- reading a FIFO or a device as a tensor file (it blocked forever), thread counts out of range.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local p = gm.randn({3}, {requires_grad = true})
tap.errors(function() return gm.optim.SGD({p * 2}, {lr = 0.1}) end, 'SGD: params%[1%] is not a leaf',
           'an optimiser refuses a non-leaf tensor (its step would do nothing)')
tap.errors(function() return gm.optim.AdamW({p, p:exp()}) end, 'AdamW: params%[2%] is not a leaf', 'for every optimiser')
tap.lives(function() return gm.optim.Adam({p}) end, 'a leaf is fine')

tap.errors(function() return gm.nn.MoE {d_model = 4, d_ff = 4, experts = 2, capacity_factor = 0} end,
           'capacity_factor must be a number > 0', 'capacity_factor = 0 (every token dropped) is refused')
tap.errors(function() return gm.nn.MoE {d_model = 4, d_ff = 4, experts = 2, capacity_factor = -1} end,
           'capacity_factor must be a number > 0', 'and a negative one')
tap.lives(function() return gm.nn.MoE {d_model = 4, d_ff = 4, experts = 2, capacity_factor = 0.5} end,
          'a positive one is fine')

local e = gm.randn {1, 3}:expand {4, 3}
tap.errors(function() e[0] = gm.ones {3} end, 'setindex: more than one element of the written%-to tensor',
           'x[i] = v into an expand()ed tensor is refused (it would write every row)')
tap.errors(function() e:fill_(1) end, 'fill_: more than one element', 'fill_ of an expanded view is refused')
tap.errors(function() e:copy_(gm.ones {4, 3}) end, 'copy_: more than one element', 'and copy_')
local x = gm.arange(6):float()
tap.errors(function() x:narrow(0, 0, 5):copy_(x:narrow(0, 1, 5)) end, 'copy_: the source and the destination overlap',
           'a copy between overlapping views of one tensor is refused (the order of writes would decide)')
tap.lives(function() x:copy_(x) end, 'a copy of a view onto itself is fine')
local m = gm.zeros {4, 3}
m:t()[1] = gm.ones {4}
tap.is(m:sum():item(), 4, 'writes through transposed and selected views still work')
local y = gm.zeros {2, 2}
y:narrow(0, 0, 1):copy_(y:narrow(0, 1, 1))
tap.is(y:sum():item(), 0, 'a copy between disjoint views of one tensor is fine')

tap.errors(function() return gm.zeros(nil) end, 'zeros: expected a shape', 'gm.zeros(nil) is refused, not a 0-dim tensor')
tap.errors(function() return gm.ones() end, 'ones: expected a shape', 'gm.ones() likewise')
tap.errors(function() return gm.randn(nil) end, 'rand: expected a shape', 'and gm.randn(nil)')
tap.is(gm.zeros {}:dim(), 0, 'gm.zeros{} is the 0-dim tensor')

local fifo = tap.tmpfile('.fifo')
if os.execute('mkfifo ' .. tap.q(fifo)) then
  tap.errors(function() return gm.load(fifo) end, 'it is a FIFO %(named pipe%), not a regular file',
             'gm.load of a FIFO is refused at once (it blocked forever)')
  tap.errors(function() return gm.load_npy(fifo) end, 'FIFO', 'gm.load_npy too')
  tap.errors(function() return gm.data.CharCorpus(fifo) end, 'FIFO', 'and the data readers')
  os.remove(fifo)
else
  tap.skip('gm.load of a FIFO', 'mkfifo failed')
end
tap.errors(function() return gm.load('/dev/zero') end, 'it is a character device', 'gm.load of a device is refused')
tap.errors(function() return gm.data.read_idx('/dev/zero') end, 'character device', 'read_idx of a device too')
tap.errors(function() return gm.load('/tmp') end, 'it is a directory', 'and of a directory')

tap.done()
