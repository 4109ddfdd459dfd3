-- gmoe.nn (gm.nn): layers as Lua objects holding parameters and configuration, whose compute is
-- ops of the op table. gm.nn.Module is the base class (module.lua: registration by field
-- assignment, named parameters, state dicts, train/eval, summaries); layers.lua holds the
-- standard layers; gm.nn.init the initialisers; gm.nn.functional (alias gm.nn.F) the
-- stateless forms.
--   local Net = gm.nn.Module:extend('Net')
--   function Net:init(d) self.fc = gm.nn.Linear(d, d); self.norm = gm.nn.LayerNorm(d) end
--   function Net:forward(x) return self.norm(x + self.fc(x)) end
--   local net = Net(16); print(net)          -- the tree with parameter counts
local doc = require 'gmoe.doc'
local module = require 'gmoe.nn.module'

local nn = {
  Module = module.Module,
  is_module = module.is_module,
  init = require 'gmoe.nn.initializers',
  functional = require 'gmoe.nn.functional',
}
nn.F = nn.functional
for name, cls in pairs(require 'gmoe.nn.layers') do
  if not name:match('^_') then nn[name] = cls end
end

doc.add('gm.nn', 'gm.nn.<Layer>{...}',
  'Neural-network layers with torch.nn semantics. Base class gm.nn.Module (define layers with ' ..
  'gm.nn.Module:extend(name)); containers Sequential, ModuleList; Linear, Embedding, LayerNorm, RMSNorm, ' ..
  'Dropout, BatchNorm2d (BatchNorm1d), MLP, GLU, SwiGLU, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, GlobalAvgPool2d, Flatten, ' ..
  'Identity; activations ReLU, GELU, SiLU, Tanh, Sigmoid, Softmax, LogSoftmax; initialisers gm.nn.init; ' ..
  'MoE CNNs (AdvMoE): MoEConv2d, RouterCNN, MoECNN, DenseCNN, hard_top1, route, expert_usage, flip_rate; ' ..
  'stateless forms gm.nn.functional (gm.nn.F). Constructors take positional or named options ' ..
  '(gm.nn.Linear(4, 2) or gm.nn.Linear{in_features=4, out_features=2, bias=false}) and, with parameters, ' ..
  'dtype="f64" and generator=g for the init.')
doc.add('gm.nn.is_module', 'gm.nn.is_module(v) -> boolean', 'Whether v is an instance of a gm.nn.Module class.')

-- The MoE layer (lua/gmoe/nn/moe.lua) builds on the layers above and on gm.gates.
if package.preload['gmoe.nn.moe'] then nn.MoE = require('gmoe.nn.moe').MoE end
if package.preload['gmoe.nn.mixers'] then for k, v in pairs(require('gmoe.nn.mixers')) do nn[k] = v end end
if package.preload['gmoe.nn.moe_cnn'] then for k, v in pairs(require('gmoe.nn.moe_cnn')) do nn[k] = v end end

return nn
