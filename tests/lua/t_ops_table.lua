-- t_ops_table.lua: the op table is consistent: every op reachable from Lua, differentiable
-- ops have a backward rule and NODIFF ops none, names unique, docs present.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local seen = {}
for _, op in ipairs(gm.ops()) do
  tap.ok(type(gm[op.name]) == 'function', op.name .. ': bound as gm.' .. op.name)
  tap.ok(op.nodiff ~= op.has_backward, op.name .. ': backward rule present exactly when differentiable')
  tap.ok(#op.doc >= 6, op.name .. ': has a doc string')
  tap.ok(not seen[op.name], op.name .. ': unique name')
  seen[op.name] = true
end
-- The ops the foundation issue names are all registered.
for name in ([[add sub mul div neg pow exp log sqrt rsqrt abs clamp maximum minimum sigmoid tanh
  relu gelu silu softplus logsigmoid sum mean var max min argmax logsumexp matmul softmax
  log_softmax cumsum gather scatter_add index_select index_add where masked_fill cat stack
  topk eq lt gt one_hot cross_entropy mse_loss reshape view transpose permute narrow select
  expand squeeze unsqueeze contiguous clone]]):gmatch('%S+') do
  tap.ok(seen[name], 'registered: ' .. name)
end
tap.ok(type(gm.split) == 'function' and type(gm.chunk) == 'function', 'split and chunk (views via narrow)')
tap.done()
