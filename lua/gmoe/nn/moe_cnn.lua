-- gmoe.nn.moe_cnn: MoE convolutional networks as released with AdvMoE (Zhang et al., ICCV 2023;
-- papers.md §6): gm.nn.hard_top1 (argmax one-hot with a straight-through backward),
-- gm.nn.route (a batch's routing: ids, the selected gate value, the order that groups the batch
-- by expert), gm.nn.MoEConv2d (channel-group experts, only the selected group's channels kept),
-- gm.nn.RouterCNN (the image-level router), the builders gm.nn.MoECNN and gm.nn.DenseCNN (the
-- §6.4 4-conv backbone and its dense baseline of the same active width) and the routing
-- diagnostics gm.nn.expert_usage and gm.nn.flip_rate.
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local layers = require 'gmoe.nn.layers'
local init = require 'gmoe.nn.initializers'
local F = require 'gmoe.nn.functional'

local H = layers._helpers
local options, need_int, param, NONE = H.options, H.need_int, H.param, H.NONE

local M = {}

local define = H.definer(M)

local shape_str = require('gmoe.nn.module').shape_str

-- ---- hard top-1 with a straight-through backward ------------------------------------------------
--- gm.nn.hard_top1(scores [N, E]) -> gate [N, E] (one-hot), ids [N] i32
function M.hard_top1(scores)
  if not gm.is_tensor(scores) or scores:dim() ~= 2 or (scores.dtype ~= 'f32' and scores.dtype ~= 'f64') then
    error('gm.nn.hard_top1: scores must be a float [N, E] tensor, got ' ..
          (gm.is_tensor(scores) and scores.dtype .. shape_str(scores) or type(scores)), 2)
  end
  local bad = gm.no_grad(function() return scores:ne(scores):sum():item() end)
  if bad > 0 then
    error(('gm.nn.hard_top1: %d router scores are NaN (a collapsed router, papers.md §6.5)'):format(bad), 2)
  end
  local ids = scores:argmax(-1)
  local onehot = gm.one_hot(ids, scores.shape[2], scores.dtype)
  if not scores.requires_grad then return onehot, ids end
  -- Forward: onehot + (s - s) is exactly the one-hot; backward: the identity onto the scores.
  return onehot + (scores - scores:detach()), ids
end

-- ---- routing of a batch -------------------------------------------------------------------------
local Route = {}
Route.__index = Route
Route.__name = 'gm.nn.Route'

-- Counting sort of ids (stable): perm lists the batch grouped by expert, inv undoes it.
local function group(ids_tbl, E)
  local counts, buckets = {}, {}
  for e = 1, E do counts[e], buckets[e] = 0, {} end
  for i, e in ipairs(ids_tbl) do
    local b = buckets[e + 1]
    b[#b + 1] = i - 1
    counts[e + 1] = counts[e + 1] + 1
  end
  local perm, inv, k, identity = {}, {}, 0, true
  for e = 1, E do
    for _, i in ipairs(buckets[e]) do
      perm[k + 1] = i
      inv[i + 1] = k
      identity = identity and i == k
      k = k + 1
    end
  end
  return counts, perm, inv, identity
end

--- gm.nn.route(scores [N, E] | ids [N] i32, {experts}) -> route
function M.route(v, opts)
  if opts ~= nil and type(opts) ~= 'table' then
    error('gm.nn.route: options must be a table {experts = E}, got ' .. type(opts), 2)
  end
  local E = opts and opts.experts
  local ids, gate
  if gm.is_tensor(v) and v.dtype == 'i32' then
    if v:dim() ~= 1 then error('gm.nn.route: ids must be 1-D [N] i32, got ' .. shape_str(v), 2) end
    if math.type(E) ~= 'integer' or E < 1 then error('gm.nn.route: fixed ids need {experts = E}', 2) end
    ids = v
  elseif gm.is_tensor(v) then
    if v:dim() ~= 2 then error('gm.nn.route: scores must be [N, E], got ' .. shape_str(v), 2) end
    if E and E ~= v.shape[2] then
      error(('gm.nn.route: scores have %d experts, expected %d'):format(v.shape[2], E), 2)
    end
    E = v.shape[2]
    local full
    full, ids = M.hard_top1(v)
    if full.requires_grad then gate = full:gather(1, ids:reshape {-1, 1}):reshape {-1} end
  else
    error('gm.nn.route: expects router scores [N, E] or ids [N] i32, got ' .. type(v), 2)
  end
  local t = ids:totable()
  for i, e in ipairs(t) do
    if math.type(e) ~= 'integer' or e < 0 or e >= E then
      error(('gm.nn.route: id %s at %d is outside [0, %d)'):format(tostring(e), i - 1, E), 2)
    end
  end
  local counts, perm, inv, identity = group(t, E)
  return setmetatable({ids = ids, gate = gate, experts = E, n = #t, counts = counts, sorted = false,
                       perm = gm.tensor(perm, {dtype = 'i32'}), inv = gm.tensor(inv, {dtype = 'i32'}),
                       identity = identity}, Route)
end

-- The same routing for the batch reordered by route.perm (experts in contiguous runs).
function Route:sorted_view()
  if self.sorted then return self end
  local r = setmetatable({}, Route)
  for k, v in pairs(self) do r[k] = v end
  r.sorted = true
  if not self.identity then
    r.ids = self.ids:index_select(0, self.perm)
    if self.gate then r.gate = self.gate:index_select(0, self.perm) end
  end
  return r
end

function Route:__tostring()
  return ('Route(%d inputs, %d experts, counts {%s}%s)'):format(self.n, self.experts, table.concat(self.counts, ', '),
    self.sorted and ', sorted' or '')
end

local function as_route(layer, v, E)
  if getmetatable(v) == Route then
    if v.experts ~= E then
      error(('gm.nn.%s: the route has %d experts, the layer %d'):format(layer, v.experts, E), 3)
    end
    return v
  end
  if v == nil then error(('gm.nn.%s: forward(x, route) needs a route, router scores or ids'):format(layer), 3) end
  return M.route(v, {experts = E})
end

-- ---- MoEConv2d ----------------------------------------------------------------------------------
local MoEConv2d = define('MoEConv2d',
  'gm.nn.MoEConv2d{in_channels, out_channels, kernel_size, stride=1, padding=0, bias=true, experts=2, ratio=0.5, compute="selected", dtype, generator}',
  'A convolution of `experts` channel groups, each of width w = floor(ratio * out_channels) (at least 1): weight ' ..
  '[experts*w, in_channels, kh, kw], bias [experts*w]; group e is channels e*w .. (e+1)*w-1. forward(x [N, in, H, W], ' ..
  'route) -> [N, w, OH, OW] keeps, for each example, only the channels of the group its route selects (the released ' ..
  'AdvMoE MoEConv). route: a gm.nn.route, router scores [N, E] (hard top-1 with straight-through) or fixed ids [N] ' ..
  'i32. compute="selected" runs each expert\'s conv on its own examples only (the batch grouped by expert; a route ' ..
  'made by route:sorted_view() says the batch is already grouped, so no copies are made); compute="all" runs all ' ..
  'groups on every example and keeps the selected ones, as the released code (E times the work; the same values). ' ..
  'When the route carries a differentiable gate, the output is multiplied by it (= 1 in value), which passes ' ..
  'sum <y, dL/dy> over the selected channels to the selected score: the released straight-through gradient. ' ..
  'Init as gm.nn.Conv2d (U(+-1/sqrt(in*kh*kw))).',
  {formula = 'y[n] = g[n] * (W_{e(n)} * x[n] + b_{e(n)}),  e(n) = argmax_e s[n, e],  g = 1 with dg/ds[n, e(n)] = 1',
   paper = 'Zhang et al., ICCV 2023 (AdvMoE), models/layers/moe_layer.py'})

local function pair(name, key, v)
  local ok, a, b = pcall(F._pair, name, key, v)
  if not ok then error(('gm.nn.%s: %s must be an integer or {h, w}, got %s'):format(name, key, tostring(v)), 5) end
  return {a, b}
end

local function width_of(name, ratio, out)
  if type(ratio) ~= 'number' or ratio <= 0 or ratio > 1 then
    error(('gm.nn.%s: ratio must be a number in (0, 1], got %s'):format(name, tostring(ratio)), 5)
  end
  return math.max(1, math.floor(ratio * out + 1e-9))
end

function MoEConv2d:init(...)
  local o = options('MoEConv2d', {'in_channels', 'out_channels', 'kernel_size'},
                    {stride = 1, padding = 0, bias = true, experts = 2, ratio = 0.5, compute = 'selected',
                     dtype = 'f32', generator = NONE}, ...)
  self.in_channels = need_int('MoEConv2d', 'in_channels', o.in_channels)
  self.out_channels = need_int('MoEConv2d', 'out_channels', o.out_channels)
  self.experts = need_int('MoEConv2d', 'experts', o.experts)
  self.ratio = o.ratio
  self.width = width_of('MoEConv2d', o.ratio, self.out_channels)
  self.kernel_size = pair('MoEConv2d', 'kernel_size', o.kernel_size)
  self.stride = pair('MoEConv2d', 'stride', o.stride)
  self.padding = pair('MoEConv2d', 'padding', o.padding)
  if o.compute ~= 'selected' and o.compute ~= 'all' then
    error('gm.nn.MoEConv2d: compute must be "selected" or "all", got ' .. tostring(o.compute), 3)
  end
  self.compute = o.compute
  local kh, kw = self.kernel_size[1], self.kernel_size[2]
  self.weight = param({self.experts * self.width, self.in_channels, kh, kw}, o.dtype)
  init.kaiming_uniform_(self.weight, {a = math.sqrt(5), generator = o.generator})
  if o.bias then
    local bound = 1 / math.sqrt(self.in_channels * kh * kw)
    self.bias = init.uniform_(param({self.experts * self.width}, o.dtype), -bound, bound, {generator = o.generator})
  end
end

function MoEConv2d:forward(x, route)
  if not gm.is_tensor(x) or x:dim() ~= 4 then
    error('gm.nn.MoEConv2d: x must be [N, C, H, W], got ' .. (gm.is_tensor(x) and shape_str(x) or type(x)), 2)
  end
  local E, w = self.experts, self.width
  local r = as_route('MoEConv2d', route, E)
  local N = x.shape[1]
  if r.n ~= N then error(('gm.nn.MoEConv2d: the route has %d inputs, x has %d'):format(r.n, N), 2) end
  local geo = {stride = self.stride, padding = self.padding}
  local y
  if self.compute == 'all' then
    local full = F.conv2d(x, self.weight, self.bias, geo)
    local s = full.shape
    local onehot = gm.one_hot(r.ids, E, x.dtype):reshape {N, E, 1, 1, 1}
    y = (full:reshape {N, E, w, s[3], s[4]} * onehot):sum(1)
  else
    local xs = (r.sorted or r.identity) and x or x:index_select(0, r.perm)
    local parts, off = {}, 0
    for e = 0, E - 1 do
      local n = r.counts[e + 1]
      if n > 0 then
        parts[#parts + 1] = F.conv2d(xs:narrow(0, off, n), self.weight:narrow(0, e * w, w),
                                     self.bias and self.bias:narrow(0, e * w, w), geo)
        off = off + n
      end
    end
    y = #parts == 1 and parts[1] or gm.cat(parts, 0)
    if not (r.sorted or r.identity) then y = y:index_select(0, r.inv) end
  end
  if r.gate then y = y * r.gate:reshape {N, 1, 1, 1} end
  return y
end

function MoEConv2d:macs(H, W)
  local oh = (H + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
  local ow = (W + 2 * self.padding[2] - self.kernel_size[2]) // self.stride[2] + 1
  return self.width * self.in_channels * self.kernel_size[1] * self.kernel_size[2] * oh * ow, oh, ow
end

function MoEConv2d:extra_repr()
  return ('%d, %d, kernel_size=%d, experts=%d, width=%d, stride=%d, padding=%d, compute=%s'):format(
    self.in_channels, self.out_channels, self.kernel_size[1], self.experts, self.width, self.stride[1],
    self.padding[1], self.compute)
end

-- ---- the image-level router ---------------------------------------------------------------------
local RouterCNN = define('RouterCNN', 'gm.nn.RouterCNN{in_channels=3, channels={8, 16}, experts=2, bn=true, dtype, generator}',
  'The image-level router of the §6.4 CPU-scale AdvMoE: conv 3x3 (in -> channels[1]) + BatchNorm2d + ReLU, conv 3x3 ' ..
  'stride 2 (-> channels[2]) + BatchNorm2d + ReLU, global average pool, Linear(channels[2], experts) (bn=false: ' ..
  'convs with biases, no batch norm). router(x [N, in, H, W]) -> scores [N, experts]. (The released router is a ' ..
  'ResNet-20-style CNN with batch norm; this is its small stand-in.)',
  {paper = 'Zhang et al., ICCV 2023 (AdvMoE), models/layers/router.py'})
function RouterCNN:init(...)
  local o = options('RouterCNN', {}, {in_channels = 3, channels = {8, 16}, experts = 2, bn = true, dtype = 'f32',
                                      generator = NONE}, ...)
  local c = o.channels
  if type(c) ~= 'table' or #c ~= 2 then error('gm.nn.RouterCNN: channels must be {c1, c2}', 3) end
  local lo = {dtype = o.dtype, generator = o.generator}
  self.experts = need_int('RouterCNN', 'experts', o.experts)
  self.conv1 = layers.Conv2d(o.in_channels, c[1], 3, {padding = 1, bias = not o.bn, dtype = o.dtype, generator = o.generator})
  if o.bn then self.bn1 = layers.BatchNorm2d(c[1], {dtype = o.dtype}) end
  self.conv2 = layers.Conv2d(c[1], c[2], 3, {stride = 2, padding = 1, bias = not o.bn, dtype = o.dtype,
                                             generator = o.generator})
  if o.bn then self.bn2 = layers.BatchNorm2d(c[2], {dtype = o.dtype}) end
  self.fc = layers.Linear(c[2], self.experts, lo)
end
function RouterCNN:forward(x)
  local h = self.conv1(x)
  if self.bn1 then h = self.bn1(h) end
  h = self.conv2(h:relu())
  if self.bn2 then h = self.bn2(h) end
  return self.fc(h:relu():mean {-2, -1})
end
local function conv_macs(conv, H, W)
  local k, s, p = conv.kernel_size, conv.stride, conv.padding
  local oh, ow = (H + 2 * p[1] - k[1]) // s[1] + 1, (W + 2 * p[2] - k[2]) // s[2] + 1
  return conv.out_channels * conv.in_channels * k[1] * k[2] * oh * ow, oh, ow
end
function RouterCNN:macs(H, W)
  local m1, h, w = conv_macs(self.conv1, H, W)
  local m2 = conv_macs(self.conv2, h, w)
  return m1 + m2 + self.fc.in_features * self.fc.out_features
end

-- ---- builders -----------------------------------------------------------------------------------
local BACKBONE = {in_channels = 3, classes = 10, widths = {16, 32, 64, 64}, strides = {1, 2, 1, 2}, ratio = 0.5,
                  bn = true, dtype = 'f32', generator = NONE}

local function backbone_opts(name, extra, ...)
  local defaults = {}
  for k, v in pairs(BACKBONE) do defaults[k] = v end
  for k, v in pairs(extra) do defaults[k] = v end
  local o = options(name, {}, defaults, ...)
  if type(o.widths) ~= 'table' or #o.widths < 1 or type(o.strides) ~= 'table' or #o.strides ~= #o.widths then
    error(('gm.nn.%s: widths and strides must be arrays of the same length'):format(name), 4)
  end
  for i, v in ipairs(o.widths) do need_int(name, 'widths[' .. i .. ']', v, 1, 5) end
  for i, v in ipairs(o.strides) do need_int(name, 'strides[' .. i .. ']', v, 1, 5) end
  need_int(name, 'classes', o.classes, 1, 5)
  need_int(name, 'in_channels', o.in_channels, 1, 5)
  return o
end

-- MACs of the dense network at full width (ratio 1, no router) on H x W inputs: the reference
-- for the inference cost of both builders.
local function full_width_macs(o, H, W)
  local total, cin = 0, o.in_channels
  for i, c in ipairs(o.widths) do
    local s = o.strides[i]
    H, W = (H + 2 - 3) // s + 1, (W + 2 - 3) // s + 1
    total = total + c * cin * 9 * H * W
    cin = c
  end
  return total + cin * o.classes
end

-- The released initialize_weights (utils/general_utils.py), applied to the backbone (the router
-- is built apart and keeps its defaults there): convs kaiming_normal_(mode="fan_out",
-- nonlinearity="relu") with zero bias; the head N(0, 0.01) with zero bias; batch norms 1 and 0.
local function released_init(convs, head, gen)
  for _, c in ipairs(convs) do
    init.kaiming_normal_(c.weight, {mode = 'fan_out', nonlinearity = 'relu', generator = gen})
    if c.bias then init.zeros_(c.bias) end
  end
  init.normal_(head.weight, 0, 0.01, {generator = gen})
  init.zeros_(head.bias)
end

local DenseCNN = define('DenseCNN',
  'gm.nn.DenseCNN{in_channels=3, classes=10, widths={16, 32, 64, 64}, strides={1, 2, 1, 2}, ratio=0.5, bn=true, dtype, generator}',
  'The dense baseline of gm.nn.MoECNN: convs 3x3 (padding 1) of floor(ratio*widths[i]) channels with the given ' ..
  'strides, each + BatchNorm2d + ReLU (bn=false: convs with biases, no batch norm; SGD then sits on a loss plateau ' ..
  'for hundreds of steps at this size), global average pool, Linear -> classes (the released "_ori" model at the same ratio, so ' ..
  'its width equals the MoE network\'s active width). Init as the released initialize_weights: convs ' ..
  'kaiming_normal_(fan_out, relu), zero bias; head N(0, 0.01), zero bias. net:macs(H, W) -> active MACs per image, the full-width ' ..
  '(ratio 1) dense MACs.', {paper = 'Zhang et al., ICCV 2023 (AdvMoE), §6.4 of papers.md'})
function DenseCNN:init(...)
  local o = backbone_opts('DenseCNN', {}, ...)
  self.opts = o
  local convs, bns, cin = {}, {}, o.in_channels
  for i, c in ipairs(o.widths) do
    local w = width_of('DenseCNN', o.ratio, c)
    convs[i] = layers.Conv2d(cin, w, 3, {stride = o.strides[i], padding = 1, bias = not o.bn, dtype = o.dtype,
                                         generator = o.generator})
    if o.bn then bns[i] = layers.BatchNorm2d(w, {dtype = o.dtype}) end
    cin = w
  end
  self.convs = layers.ModuleList(convs)
  if o.bn then self.bns = layers.ModuleList(bns) end
  self.head = layers.Linear(cin, o.classes, {dtype = o.dtype, generator = o.generator})
  released_init(convs, self.head, o.generator)
end
-- conv i's output through its batch norm (when the network has them) and the ReLU.
local function post(self, i, h)
  if self.bns then h = self.bns[i - 1](h) end
  return h:relu()
end

function DenseCNN:forward(x)
  local h = x
  for i, conv in ipairs(self.convs:children()) do h = post(self, i, conv(h)) end
  return self.head(h:mean {-2, -1})
end
function DenseCNN:macs(H, W)
  local total, h, w = 0, H, W
  for _, conv in ipairs(self.convs:children()) do
    local m
    m, h, w = conv_macs(conv, h, w)
    total = total + m
  end
  total = total + self.head.in_features * self.head.out_features
  return total, full_width_macs(self.opts, H, W)
end

local MoECNN = define('MoECNN',
  'gm.nn.MoECNN{in_channels=3, classes=10, widths={16, 32, 64, 64}, strides={1, 2, 1, 2}, ratio=0.5, experts=2, ' ..
  'router="shared", router_channels={8, 16}, compute="selected", bn=true, dtype, generator}',
  'The MoE-CNN of AdvMoE at CPU scale (papers.md §6.4): every conv of the DenseCNN backbone becomes a ' ..
  'gm.nn.MoEConv2d (experts groups of width floor(ratio*widths[i])) + BatchNorm2d (shared by the experts, as ' ..
  'released) + ReLU, then global average pool and Linear. ' ..
  'router="shared" (the default, as the released code): ONE gm.nn.RouterCNN reads the input image and its hard ' ..
  'top-1 choice is used by every MoE layer, so an image takes the same expert index everywhere; the batch is ' ..
  'grouped by expert once and ungrouped at the logits. router="per_layer" (the paper\'s appendix figure): each ' ..
  'MoE layer has its own gate, Linear(in_channels of the layer, experts) on the globally pooled layer input. ' ..
  'net(x, {ids=, route=, hard=}) -> logits, scores (the shared router\'s [N, E] scores, with their graph; nil ' ..
  'otherwise); ids [N] i32 fixes the routing (no router); route = a gm.nn.route of the batch (e.g. with a chosen ' ..
  'gate); hard=true routes by the router\'s choice without the straight-through gate, so no gradient flows ' ..
  'through the routing (the exact gradient between routing changes, for attacks). After a forward, net.last_ids holds ' ..
  'the chosen experts ([N] i32 shared, [N, layers] per layer) and net.last_scores the router scores (shared). ' ..
  'net:routing(x) -> ids without gradient. net:macs(H, W) -> active MACs per image (router + the selected ' ..
  'groups + head), the full-width (ratio 1) dense MACs. Straight-through: the selected score receives the sum ' ..
  'over layers of <y_sel, dL/dy_sel>. Init as gm.nn.DenseCNN (the router keeps the gm.nn defaults, as released).',
  {paper = 'Zhang et al., ICCV 2023 (AdvMoE); OPTML-Group/Robust-MoE-CNN'})
function MoECNN:init(...)
  local o = backbone_opts('MoECNN', {experts = 2, router = 'shared', router_channels = {8, 16}, compute = 'selected'}, ...)
  if o.router ~= 'shared' and o.router ~= 'per_layer' then
    error('gm.nn.MoECNN: router must be "shared" or "per_layer", got ' .. tostring(o.router), 3)
  end
  self.opts = o
  self.experts = need_int('MoECNN', 'experts', o.experts)
  self.router_kind = o.router
  local lo = {dtype = o.dtype, generator = o.generator}
  if o.router == 'shared' then
    self.router = M.RouterCNN {in_channels = o.in_channels, channels = o.router_channels, experts = o.experts,
                               bn = o.bn, dtype = o.dtype, generator = o.generator}
  end
  local convs, gates, bns, cin = {}, {}, {}, o.in_channels
  for i, c in ipairs(o.widths) do
    convs[i] = M.MoEConv2d(cin, c, 3, {stride = o.strides[i], padding = 1, bias = not o.bn, experts = o.experts,
                                       ratio = o.ratio, compute = o.compute, dtype = o.dtype, generator = o.generator})
    if o.router == 'per_layer' then gates[i] = layers.Linear(cin, o.experts, lo) end
    cin = convs[i].width
    if o.bn then bns[i] = layers.BatchNorm2d(cin, {dtype = o.dtype}) end
  end
  self.convs = layers.ModuleList(convs)
  if o.bn then self.bns = layers.ModuleList(bns) end
  if o.router == 'per_layer' then self.gates = layers.ModuleList(gates) end
  self.head = layers.Linear(cin, o.classes, lo)
  released_init(convs, self.head, o.generator)
end

function MoECNN:forward(x, opts)
  local fixed = opts and opts.ids
  -- hard=true: the routing is the router's choice, without the straight-through gate (no
  -- gradient reaches the router or, through it, the input: the exact gradient of the
  -- piecewise-smooth network between routing changes).
  local hard = opts and opts.hard
  local function scored(s) return hard and s:detach() or s end
  local convs = self.convs:children()
  if self.router_kind == 'per_layer' then
    local h, ids = x, {}
    for i, conv in ipairs(convs) do
      local r = fixed and M.route(fixed, {experts = self.experts})
                or M.route(scored(self.gates[i - 1](h:mean {-2, -1})), {experts = self.experts})
      ids[i] = r.ids
      h = post(self, i, conv(h, r))
    end
    rawset(self, 'last_ids', gm.stack(ids, 1))
    rawset(self, 'last_scores', nil)
    return self.head(h:mean {-2, -1})
  end
  local r, scores = opts and opts.route, nil
  if r then
    if getmetatable(r) ~= Route or r.experts ~= self.experts or r.sorted then
      error('gm.nn.MoECNN: opts.route must be an unsorted gm.nn.route of ' .. self.experts .. ' experts', 2)
    end
  elseif fixed then
    r = M.route(fixed, {experts = self.experts})
  else
    scores = self.router(x)
    r = M.route(scored(scores), {experts = self.experts})
  end
  rawset(self, 'last_scores', scores and scores:detach())
  rawset(self, 'last_ids', r.ids)
  -- Group the batch by expert once: every layer then runs each expert on a contiguous slice.
  local grouped = self.opts.compute == 'selected' and not r.identity
  local h = grouped and x:index_select(0, r.perm) or x
  local rs = r:sorted_view()
  for i, conv in ipairs(convs) do h = post(self, i, conv(h, rs)) end
  local logits = self.head(h:mean {-2, -1})
  return grouped and logits:index_select(0, r.inv) or logits, scores
end

function MoECNN:routing(x)
  return gm.no_grad(function()
    if self.router_kind == 'shared' then return self.router(x):argmax(-1) end
    local _ = self:forward(x)
    return self.last_ids
  end)
end

function MoECNN:macs(H, W)
  local total, h, w = 0, H, W
  if self.router then total = self.router:macs(H, W) end
  for i, conv in ipairs(self.convs:children()) do
    local m
    m, h, w = conv:macs(h, w)
    total = total + m
    if self.gates then total = total + conv.in_channels * self.experts end
  end
  total = total + self.head.in_features * self.head.out_features
  return total, full_width_macs(self.opts, H, W)
end

-- ---- routing diagnostics ------------------------------------------------------------------------
--- gm.nn.expert_usage(ids, experts) -> {fraction of expert 0, ...}
function M.expert_usage(ids, E)
  if not gm.is_tensor(ids) or ids.dtype ~= 'i32' then error('gm.nn.expert_usage: ids must be an i32 tensor', 2) end
  need_int('expert_usage', 'experts', E, 1, 3)
  local counts, n = {}, 0
  for e = 1, E do counts[e] = 0 end
  for _, e in ipairs(ids:reshape {-1}:totable()) do
    if e < 0 or e >= E then error(('gm.nn.expert_usage: id %d outside [0, %d)'):format(e, E), 2) end
    counts[e + 1] = counts[e + 1] + 1
    n = n + 1
  end
  for e = 1, E do counts[e] = n > 0 and counts[e] / n or 0 end
  return counts
end

--- gm.nn.flip_rate(ids_a, ids_b) -> fraction of inputs whose routing differs
function M.flip_rate(a, b)
  if not (gm.is_tensor(a) and gm.is_tensor(b)) or a.dtype ~= 'i32' or b.dtype ~= 'i32' then
    error('gm.nn.flip_rate: expects two i32 id tensors', 2)
  end
  if shape_str(a) ~= shape_str(b) then
    error(('gm.nn.flip_rate: routings %s and %s differ in shape'):format(shape_str(a), shape_str(b)), 2)
  end
  if a:numel() == 0 then return 0 end
  local diff = a:ne(b):to('f32')
  if diff:dim() == 2 then diff = diff:sum(1):gt(0) end
  return diff:mean():item()
end

doc.add('gm.nn.hard_top1', 'gm.nn.hard_top1(scores [N, E]) -> gate [N, E], ids [N] i32',
  'Hard top-1 selection with a straight-through backward (AdvMoE\'s GetMask): gate is exactly the one-hot of ' ..
  'argmax (ties to the lower index) and its gradient is passed unchanged to the scores. NaN scores are an error ' ..
  '(the router collapse reported in the AdvMoE repository, papers.md §6.5).',
  {formula = 'gate = onehot(argmax s) + (s - stop_gradient(s)),  d gate / d s = I',
   paper = 'Zhang et al., ICCV 2023 (AdvMoE); Bengio et al. 2013 (straight-through)'})
doc.add('gm.nn.route', 'gm.nn.route(scores [N, E] | ids [N] i32, {experts}) -> route',
  'The routing of a batch for gm.nn.MoEConv2d: route.ids [N] i32, route.gate [N] (the selected entry of ' ..
  'gm.nn.hard_top1\'s gate, 1 in value, nil when the scores need no gradient or ids are fixed), route.counts ' ..
  '(examples per expert, a Lua array), route.perm / route.inv (i32 [N]: the batch grouped by expert, stable, and ' ..
  'back), route:sorted_view() (the same routing for a batch already grouped by perm).')
doc.add('gm.nn.expert_usage', 'gm.nn.expert_usage(ids i32, experts) -> {f_0, ..., f_{E-1}}',
  'The fraction of routing decisions that chose each expert (all entries of ids, e.g. [N] or [N, layers]). A ' ..
  'router collapse shows as one fraction near 1.')
doc.add('gm.nn.flip_rate', 'gm.nn.flip_rate(ids_a, ids_b) -> fraction',
  'Routing flip rate: the fraction of inputs whose selected expert differs between two routings of the same ' ..
  'inputs (e.g. x and x_adv); for [N, layers] ids an input counts when any layer differs.',
  {formula = 'flip = (1/N) sum_n 1[e_a(n) != e_b(n)]', paper = 'AdvMoE router robustness (papers.md §6.2)'})

return M
