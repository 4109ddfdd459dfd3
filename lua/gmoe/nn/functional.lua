-- gmoe.nn.functional: the stateless forms of the layers (gm.nn.functional, also gm.nn.F), as
-- torch.nn.functional: linear, conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d, dropout,
-- layer_norm, rms_norm. Everything is composed from ops of the op table, so autograd covers it.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local doc = require 'gmoe.doc'

local gm = require 'gmoe' -- registered by init.lua before its submodules load

local F = {}

local function check_tensor(fn, what, x)
  if not gm.is_tensor(x) then
    error(('gm.nn.functional.%s: %s must be a tensor, got %s'):format(fn, what, type(x)), 3)
  end
end

-- An int or {h, w} -> h, w.
local function pair(fn, what, v)
  if math.type(v) == 'integer' then return v, v end
  if type(v) == 'table' and math.type(v[1]) == 'integer' and math.type(v[2]) == 'integer' and #v == 2 then
    return v[1], v[2]
  end
  error(('gm.nn.functional.%s: %s must be an integer or {h, w}, got %s'):format(fn, what, tostring(v)), 3)
end
F._pair = pair

-- Runs f on a [N,C,H,W] view of x when x is an unbatched [C,H,W] image.
local function batched(fn, x, f)
  if x:dim() == 3 then
    local r = table.pack(f(x:unsqueeze(0)))
    for i = 1, r.n do r[i] = r[i]:squeeze(0) end
    return table.unpack(r, 1, r.n)
  end
  if x:dim() ~= 4 then
    error(('gm.nn.functional.%s: expects a [N, C, H, W] or [C, H, W] input, got [%s]'):format(
      fn, table.concat(x.shape, ', ')), 3)
  end
  return f(x)
end

function F.linear(x, w, b)
  check_tensor('linear', 'input', x)
  if b then return gm.linear(x, w, b) end
  return x:matmul(w:t())
end

function F.conv2d(x, w, b, opts)
  check_tensor('conv2d', 'input', x)
  opts = opts or {}
  local sh, sw = pair('conv2d', 'stride', opts.stride or 1)
  local ph, pw = pair('conv2d', 'padding', opts.padding or 0)
  return batched('conv2d', x, function(x4)
    local y = gm.conv2d(x4, w, {sh, sw, ph, pw})
    if b then y = y + b:reshape {1, b:numel(), 1, 1} end
    return y
  end)
end

local function pool_geo(fn, kernel_size, opts)
  local kh, kw = pair(fn, 'kernel_size', kernel_size)
  local sh, sw = pair(fn, 'stride', opts.stride or {kh, kw})
  local ph, pw = pair(fn, 'padding', opts.padding or 0)
  return {kh, kw, sh, sw, ph, pw}
end

function F.max_pool2d(x, kernel_size, opts)
  check_tensor('max_pool2d', 'input', x)
  opts = opts or {}
  local geo = pool_geo('max_pool2d', kernel_size, opts)
  local y, idx = batched('max_pool2d', x, function(x4) return gm.max_pool2d(x4, geo) end)
  if opts.return_indices then return y, idx end
  return y
end

function F.avg_pool2d(x, kernel_size, opts)
  check_tensor('avg_pool2d', 'input', x)
  local geo = pool_geo('avg_pool2d', kernel_size, opts or {})
  return batched('avg_pool2d', x, function(x4) return gm.avg_pool2d(x4, geo) end)
end

function F.adaptive_avg_pool2d(x, output_size)
  check_tensor('adaptive_avg_pool2d', 'input', x)
  local oh, ow = pair('adaptive_avg_pool2d', 'output_size', output_size)
  if oh < 1 or ow < 1 then error('gm.nn.functional.adaptive_avg_pool2d: output_size must be >= 1', 2) end
  return batched('adaptive_avg_pool2d', x, function(x4)
    local H, W = x4.shape[3], x4.shape[4]
    if H % oh == 0 and W % ow == 0 then
      return gm.avg_pool2d(x4, {H // oh, W // ow, H // oh, W // ow, 0, 0})
    end
    -- Uneven windows (as torch): rows floor(i*H/oh) .. ceil((i+1)*H/oh), likewise columns.
    local rows = {}
    for i = 0, oh - 1 do
      local h0, h1 = i * H // oh, -((-(i + 1) * H) // oh)
      local cols = {}
      for j = 0, ow - 1 do
        local w0, w1 = j * W // ow, -((-(j + 1) * W) // ow)
        cols[j + 1] = x4:narrow(2, h0, h1 - h0):narrow(3, w0, w1 - w0):mean {2, 3}
      end
      rows[i + 1] = gm.stack(cols, -1)
    end
    return gm.stack(rows, -2)
  end)
end

function F.dropout(x, p, training, opts)
  check_tensor('dropout', 'input', x)
  p = p or 0.5
  if type(p) ~= 'number' or p < 0 or p > 1 then
    error('gm.nn.functional.dropout: p must be in [0, 1], got ' .. tostring(p), 2)
  end
  if training == false or p == 0 then return x end
  if p == 1 then return x * 0 end
  local keep = gm.rand(x.shape, {dtype = x.dtype, generator = opts and opts.generator}):ge(p)
  return x * (keep * (1 / (1 - p)))
end

-- The trailing dims normalised by a norm layer: an int (the last dim) or an array of sizes.
local function norm_dims(fn, x, normalized_shape)
  local shape = type(normalized_shape) == 'table' and normalized_shape or {normalized_shape}
  local nd, dims = x:dim(), {}
  for i = 1, #shape do
    local d = nd - #shape + i - 1
    if d < 0 or x.shape[d + 1] ~= shape[i] then
      error(('gm.nn.functional.%s: input [%s] does not end with the normalized shape [%s]'):format(
        fn, table.concat(x.shape, ', '), table.concat(shape, ', ')), 3)
    end
    dims[i] = d
  end
  return dims
end
F._norm_dims = norm_dims

-- The first normalised dim of x for the fused ops (gm.layer_norm, gm.rms_norm): the dims of
-- normalized_shape are the trailing ones, at least one of them (as torch).
local function first_norm_dim(fn, x, normalized_shape)
  local dims = norm_dims(fn, x, normalized_shape)
  if #dims == 0 then error(('gm.nn.functional.%s: normalized_shape must not be empty'):format(fn), 3) end
  return dims[1]
end

function F.layer_norm(x, normalized_shape, w, b, eps)
  check_tensor('layer_norm', 'input', x)
  local dim = first_norm_dim('layer_norm', x, normalized_shape)
  return gm.layer_norm(x, w or 1, b or 0, {dim = dim, eps = eps or 1e-5})
end

function F.rms_norm(x, normalized_shape, w, eps)
  check_tensor('rms_norm', 'input', x)
  local dim = first_norm_dim('rms_norm', x, normalized_shape)
  return gm.rms_norm(x, w or 1, {dim = dim, eps = eps or 1e-6})
end

-- Batch normalisation as torch.nn.functional.batch_norm: the fused op gm.batch_norm with batch
-- statistics in training mode (running_mean/var updated in place when given), the running
-- statistics as one scale and shift per channel otherwise.
function F.batch_norm(x, running_mean, running_var, w, b, training, momentum, eps)
  check_tensor('batch_norm', 'input', x)
  eps, momentum = eps or 1e-5, momentum or 0.1
  if x:dim() < 2 then error('gm.nn.functional.batch_norm: x must be [N, C, ...], got ' .. x:dim() .. '-D', 2) end
  local C = x.shape[2]
  w = w or gm.ones({C}, {dtype = x.dtype})
  b = b or gm.zeros({C}, {dtype = x.dtype})
  local shape = {1, C}
  for _ = 3, x:dim() do shape[#shape + 1] = 1 end
  if training or not running_mean then
    local y, mean, invstd = gm.batch_norm(x, w, b, {eps = eps})
    if running_mean then
      local M = x:numel() // C
      gm.no_grad(function()
        local var = (invstd ^ -2 - eps) * (M / math.max(1, M - 1))
        running_mean:copy_(running_mean * (1 - momentum) + mean * momentum)
        running_var:copy_(running_var * (1 - momentum) + var * momentum)
      end)
    end
    return y
  end
  local scale = w * (running_var + eps):rsqrt()
  return x * scale:reshape(shape) + (b - running_mean * scale):reshape(shape)
end

-- TRADES (Zhang et al. 2019) as the AdvMoE code writes it: CE on the clean logits plus beta times
-- the batch-mean KL(softmax(clean) || softmax(adv)), gradients flowing into both logits.
function F.trades_loss(logits_nat, logits_adv, target, opts)
  check_tensor('trades_loss', 'logits_nat', logits_nat)
  check_tensor('trades_loss', 'logits_adv', logits_adv)
  local beta = (opts and opts.beta) or 6
  if type(beta) ~= 'number' or beta ~= beta or beta < 0 then
    error('gm.nn.functional.trades_loss: beta must be a number >= 0, got ' .. tostring(beta), 2)
  end
  local ce = gm.cross_entropy(logits_nat, target)
  local kl = gm.kl_div(logits_adv:log_softmax(-1), logits_nat:log_softmax(-1))
  return ce + kl * beta, ce, kl
end

local P = 'gm.nn.functional.'
doc.add(P .. 'linear', P .. 'linear(x, w, b?)', 'x [..., in] @ w[out, in]^T + b[out] -> [..., out]: the fused op ' ..
  'gm.linear with a bias (bias added inside the product), matmul(x, w:t()) without.',
  {formula = 'y = x W^T + b'})
doc.add(P .. 'conv2d', P .. 'conv2d(x, w, b?, {stride=1, padding=0})',
  'x [N, C, H, W] (or [C, H, W]) with w [O, C, kh, kw] -> [N, O, OH, OW], OH = floor((H + 2 padding - kh) / stride) + 1; ' ..
  'stride and padding are ints or {h, w}; the op gm.conv2d does the work (im2col + gemm).',
  {formula = 'y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] x[n,c,i*s-pad+p,j*s-pad+q]'})
doc.add(P .. 'max_pool2d', P .. 'max_pool2d(x, kernel_size, {stride=kernel_size, padding=0, return_indices=false})',
  'Window maxima of x [N, C, H, W] (or [C, H, W]); with return_indices also the i32 argmax (flat h*W+w in each plane).')
doc.add(P .. 'avg_pool2d', P .. 'avg_pool2d(x, kernel_size, {stride=kernel_size, padding=0})',
  'Window means of x [N, C, H, W]; zero padding counts in the divisor kh*kw (torch count_include_pad=True).')
doc.add(P .. 'adaptive_avg_pool2d', P .. 'adaptive_avg_pool2d(x, output_size)',
  'Means over an output_size (int or {h, w}) grid of windows, rows floor(i H / oh) to ceil((i+1) H / oh) as in torch; ' ..
  'one avg_pool2d when the sizes divide, else composed from narrow and mean.')
doc.add(P .. 'dropout', P .. 'dropout(x, p=0.5, training=true, {generator})',
  'Inverted dropout: zeroes each element with probability p and scales the rest by 1 / (1 - p); identity when training is false.',
  {formula = 'y = x * (u >= p) / (1 - p), u ~ U(0, 1)', paper = 'Srivastava et al. 2014'})
doc.add(P .. 'layer_norm', P .. 'layer_norm(x, normalized_shape, w?, b?, eps=1e-5)',
  'Normalises over the trailing dims given by normalized_shape (an int or an array of sizes, not empty) with the ' ..
  'biased variance, then scales by w and shifts by b (of normalized_shape, or numbers; absent: no affine), as ' ..
  'torch.nn.functional.layer_norm. One fused op, gm.layer_norm, forward and backward (nothing saved but the inputs).',
  {formula = 'y = (x - mean) / sqrt(var + eps) * w + b', paper = 'Ba et al. 2016'})
doc.add(P .. 'rms_norm', P .. 'rms_norm(x, normalized_shape, w?, eps=1e-6)',
  'Scales by the root mean square over the trailing dims given by normalized_shape (not empty), then by w ' ..
  '(of normalized_shape, or a number; absent: none), as torch.nn.functional.rms_norm. One fused op, gm.rms_norm.',
  {formula = 'y = x / sqrt(mean(x^2) + eps) * w', paper = 'Zhang & Sennrich 2019'})
doc.add(P .. 'batch_norm', P .. 'batch_norm(x, running_mean?, running_var?, w?, b?, training=false, momentum=0.1, eps=1e-5)',
  'Batch normalisation over dim 1 of x [N, C, ...], as torch.nn.functional.batch_norm. Training (or no running ' ..
  'statistics): the fused op gm.batch_norm normalises with the batch mean and biased variance per channel and ' ..
  'running_mean / running_var (when given) are updated in place with momentum, the variance unbiased; otherwise ' ..
  'the running statistics as y = x * scale + shift per channel. w, b default to 1, 0.',
  {formula = 'y = (x - mean) / sqrt(var + eps) * w + b', paper = 'Ioffe & Szegedy 2015'})
doc.add(P .. 'trades_loss', P .. 'trades_loss(logits_nat, logits_adv, target, {beta=6}) -> loss, ce, kl (also gm.trades_loss)',
  'The TRADES objective as the AdvMoE/TRADES code computes it: cross_entropy(logits_nat, target) + beta * KL, ' ..
  'KL = (1/B) sum_b sum_c p_nat (log p_nat - log p_adv) with p = softmax over the last dim (batch mean, as ' ..
  'the code\'s KLDivLoss(sum) / B; the paper writes it KL(f(x_adv) || f(x))). Gradients flow into both logits. ' ..
  'Also returns the two terms.',
  {formula = 'L = CE(f(x), y) + beta/B sum_b KL(softmax f(x_b) || softmax f(x_adv,b))', paper = 'Zhang et al., ICML 2019 (TRADES)'})

return F
