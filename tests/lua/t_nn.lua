-- t_nn.lua: gm.nn: module bookkeeping (registration, names, state dicts, train/eval, counts,
-- summaries), layer values against Lua references, f64 gradchecks of every layer with respect
-- to its inputs and parameters, initialisers, and a small training run.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local nn = gm.nn

local function max_abs_diff(a, b)
  local d = (a:to('f64') - b:to('f64')):abs()
  return d:numel() == 0 and 0 or d:max():item()
end

local function has(list, v)
  for _, x in ipairs(list) do if x == v then return true end end
  return false
end

local function names_of(m)
  local out = {}
  for i, e in ipairs(m:named_parameters()) do out[i] = e[1] end
  return table.concat(out, ' ')
end

-- ---- registration and names ------------------------------------------------------------------
do
  local seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 2), nn.Tanh()))
  tap.is(names_of(seq), '0.weight 0.bias 2.0.weight 2.0.bias', 'Sequential children named 0, 1, ... (nested)')
  tap.is(#seq, 3, '#seq counts children')
  tap.ok(nn.Linear:is_instance(seq[0]) and nn.ReLU:is_instance(seq[1]), 'seq[0] is the first child (0-based)')
  tap.is(#seq:parameters(), 4, 'parameters() lists every tensor')
  tap.ok(seq:parameters()[1] == seq[0].weight, 'parameters() in registration order')
  local n = 0
  for name, p in seq:named_parameters() do
    n = n + 1
    tap.ok(type(name) == 'string' and gm.is_tensor(p), 'named_parameters iterates: ' .. name)
  end
  tap.is(n, 4, 'named_parameters iterates over all parameters')
  tap.is(seq:num_parameters(), 4 * 3 + 3 + 3 * 2 + 2, 'num_parameters')
  tap.is(#seq:children(), 3, 'children()')
  tap.is(#seq:modules(), 6, 'modules() includes self and descendants')

  local Net = nn.Module:extend('Net')
  function Net:init(d)
    self.d = d                                -- a plain field
    self.fc = nn.Linear(d, d)
    self.scale = gm.ones({d}, {requires_grad = true})
    self.blocks = nn.ModuleList {nn.MLP {d, 2 * d}, nn.SwiGLU {d, 3}}
    self:add_buffer('steps', gm.zeros({1}, {dtype = 'i32'}))
  end
  function Net:forward(x)
    self.last = x * 2                         -- a non-leaf tensor: not a parameter
    x = self.fc(x) * self.scale
    for _, b in ipairs(self.blocks:children()) do x = b(x) end
    return x
  end
  local net = Net(4)
  tap.is(names_of(net), 'scale fc.weight fc.bias blocks.0.fc1.weight blocks.0.fc1.bias blocks.0.fc2.weight ' ..
         'blocks.0.fc2.bias blocks.1.w1.weight blocks.1.w2.weight blocks.1.w3.weight',
         'own parameters first, then children by field name (ModuleList children 0, 1)')
  tap.is(net.d, 4, 'plain fields stay plain')
  local y = net(gm.randn({2, 4}, {requires_grad = true}))
  tap.is(#net:parameters(), 10, 'a non-leaf tensor assigned in forward is not registered')
  tap.ok(gm.is_tensor(net.last) and y.shape[2] == 4, 'calling a module calls forward')
  tap.ok(net:state_dict().steps ~= nil, 'buffers are in state_dict')
  tap.ok(net:state_dict()['blocks.1.w2.weight'] ~= nil, 'state_dict keys are dotted names')
  net.scale = nil
  tap.is(#net:parameters(), 9, 'assigning nil unregisters a parameter')
  net:add_parameter('alpha', gm.zeros {2})
  tap.ok(net.alpha.requires_grad and net:named_parameters()[1][1] == 'alpha', 'add_parameter sets requires_grad and registers')
  tap.errors(function() net:add_parameter('bad', net.fc.weight * 2) end, 'not a leaf', 'add_parameter refuses non-leaves')
  tap.errors(function() net:add_module('x.y', nn.ReLU()) end, 'without dots', 'names may not contain dots')
  tap.errors(function() nn.Module()(gm.zeros {1}) end, 'forward is not implemented', 'Module without forward')
  tap.errors(function() nn.Linear {4, 3, bais = false} end, 'unknown option bais', 'unknown option is an error')
  tap.errors(function() nn.Linear {4} end, 'missing out_features', 'missing argument is an error')

  -- a parameter shared by two modules is listed once
  local shared = nn.Linear(2, 2)
  local two = nn.Sequential(shared, shared)
  tap.is(#two:parameters(), 2, 'shared parameters are listed once')
  tap.is(two:num_parameters(), 6, 'shared parameters are counted once')
end

-- ---- summary -----------------------------------------------------------------------------------
do
  local m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1, {bias = false}))
  local s = tostring(m)
  tap.like(s, 'Sequential%(  # 18 params', 'summary: total in the root line')
  tap.like(s, '%(0%): Linear%(in_features=4, out_features=3, bias=true%)  # 15 params', 'summary: per-layer count')
  tap.like(s, '%(2%): Linear%(in_features=3, out_features=1, bias=false%)  # 3 params', 'summary: bias=false layer')
  tap.like(s, 'Total: 18 params %(18 trainable%)', 'summary: total line')
  m[0].weight:requires_grad_(false)
  tap.like(tostring(m), 'Total: 18 params %(6 trainable%)', 'summary: frozen parameters are not trainable')
end

-- ---- state dicts -------------------------------------------------------------------------------
do
  gm.manual_seed(1)
  local a = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.LayerNorm(4), nn.Linear(4, 2))
  gm.manual_seed(2)
  local b = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.LayerNorm(4), nn.Linear(4, 2))
  local x = gm.randn {5, 3}
  tap.ok(max_abs_diff(a(x), b(x)) > 1e-3, 'differently seeded models differ')
  local r = b:load_state_dict(a:state_dict())
  tap.ok(max_abs_diff(a(x), b(x)) == 0, 'load_state_dict(state_dict()) reproduces the model')
  tap.ok(#r.missing_keys == 0 and #r.unexpected_keys == 0, 'nothing missing or unexpected')
  tap.ok(b[0].weight.requires_grad, 'parameters keep requires_grad after loading')
  tap.ok(a:state_dict()['0.weight'] ~= a[0].weight or true, 'state_dict values are tensors')

  local sd = a:state_dict()
  sd['3.bias'] = nil
  tap.errors(function() b:load_state_dict(sd) end, 'missing keys: 3%.bias', 'strict: missing key named')
  sd = a:state_dict()
  sd['extra.weight'] = gm.zeros {1}
  tap.errors(function() b:load_state_dict(sd) end, 'unexpected keys: extra%.weight', 'strict: unexpected key named')
  r = b:load_state_dict(sd, {strict = false})
  tap.ok(#r.unexpected_keys == 1 and r.unexpected_keys[1] == 'extra.weight', 'non-strict: unexpected keys reported')
  sd = a:state_dict()
  sd['0.weight'] = gm.zeros {3, 4}
  tap.errors(function() b:load_state_dict(sd) end, '0%.weight: shape %[3, 4%] in the state dict vs %[4, 3%] in the model',
             'shape mismatch names the key and both shapes')
  tap.errors(function() b:load_state_dict(sd, {strict = false}) end, 'shape', 'shape mismatch is an error even when not strict')
  sd = a:state_dict()
  sd['0.bias'] = sd['0.bias']:to('f64')
  tap.errors(function() b:load_state_dict(sd) end, '0%.bias: dtype f64 in the state dict vs f32', 'dtype mismatch named')
  local before = b[0].weight:clone()
  sd['0.weight'] = gm.zeros {4, 3}
  pcall(b.load_state_dict, b, sd)
  tap.ok(max_abs_diff(before, b[0].weight) == 0, 'nothing is copied when loading fails')

  local d = nn.Sequential(nn.Linear(3, 4)):to('f64')
  tap.ok(d[0].weight.dtype == 'f64' and d[0].weight.requires_grad and d[0].weight.grad_fn == nil,
         'to("f64") converts parameters to f64 leaves')
end

-- ---- train / eval, zero_grad ------------------------------------------------------------------
do
  local m = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))
  tap.ok(m.training and m[1].training, 'modules start in training mode')
  m:eval()
  tap.ok(not m.training and not m[1].training, 'eval() reaches every submodule')
  local x = gm.ones {1000}
  tap.ok(max_abs_diff(m[1](x), x) == 0, 'Dropout is the identity in eval mode')
  m:train()
  local y = m[1](x):totable()
  local zeros, kept_ok = 0, true
  for _, v in ipairs(y) do
    if v == 0 then zeros = zeros + 1 elseif math.abs(v - 2) > 1e-6 then kept_ok = false end
  end
  tap.ok(zeros > 400 and zeros < 600, 'Dropout(0.5) zeroes about half in training mode (' .. zeros .. ')')
  tap.ok(kept_ok, 'kept elements are scaled by 1 / (1 - p)')
  local d1 = nn.Dropout {p = 0.3, generator = gm.Generator(9)}
  local d2 = nn.Dropout {p = 0.3, generator = gm.Generator(9)}
  tap.ok(max_abs_diff(d1(x), d2(x)) == 0, 'Dropout draws from its generator')
  tap.ok(max_abs_diff(nn.Dropout(0)(x), x) == 0 and max_abs_diff(nn.Dropout(1)(x), x * 0) == 0, 'p = 0 and p = 1')
  tap.errors(function() nn.Dropout(1.5) end, 'p must be', 'Dropout p out of range')

  local lin = nn.Linear(3, 2)
  lin(gm.randn {4, 3}):sum():backward()
  tap.ok(lin.weight.grad ~= nil, 'backward fills .grad')
  lin:zero_grad()
  tap.ok(lin.weight.grad == nil and lin.bias.grad == nil, 'zero_grad clears .grad')
end

-- ---- layer values against Lua references -------------------------------------------------------
do -- Linear: y = x W^T + b
  local m = nn.Linear(3, 2)
  local x = gm.randn {4, 3}
  local X, W, B = x:totable(), m.weight:totable(), m.bias:totable()
  local want = {}
  for i = 1, 4 do
    want[i] = {}
    for o = 1, 2 do
      local s = B[o]
      for k = 1, 3 do s = s + X[i][k] * W[o][k] end
      want[i][o] = s
    end
  end
  tap.ok(max_abs_diff(m(x), gm.tensor(want)) < 1e-5, 'Linear matches x W^T + b')
  tap.ok(m(gm.randn {2, 5, 3}).shape[3] == 2, 'Linear maps the last dim of batched input')
  tap.ok(m.weight.shape[1] == 2 and m.weight.shape[2] == 3, 'Linear weight is [out, in]')
  local big = nn.Linear(100, 50)
  tap.ok(big.weight:abs():max():item() <= 0.1 and big.bias:abs():max():item() <= 0.1, 'Linear init within 1/sqrt(in)')
  tap.ok(big.weight:abs():max():item() > 0.09, 'Linear init fills the range')
  local g1, g2 = nn.Linear {5, 5, generator = gm.Generator(3)}, nn.Linear {5, 5, generator = gm.Generator(3)}
  tap.ok(max_abs_diff(g1.weight, g2.weight) == 0 and max_abs_diff(g1.bias, g2.bias) == 0, 'Linear init from a generator')
  tap.ok(nn.Linear {in_features = 2, out_features = 3, bias = false}.bias == nil, 'Linear bias=false, named options')
  tap.ok(nn.Linear(2, 3, {dtype = 'f64'}).weight.dtype == 'f64', 'dtype option')
end

do -- LayerNorm and RMSNorm
  local x = gm.randn {3, 5}
  local ln = nn.LayerNorm(5)
  gm.no_grad(function()
    ln.weight:copy_(gm.randn {5})
    ln.bias:copy_(gm.randn {5})
  end)
  local X, Wt, Bt = x:totable(), ln.weight:totable(), ln.bias:totable()
  local want, want_rms = {}, {}
  for i = 1, 3 do
    local mean, var, ms = 0, 0, 0
    for k = 1, 5 do mean = mean + X[i][k] / 5 end
    for k = 1, 5 do var = var + (X[i][k] - mean) ^ 2 / 5; ms = ms + X[i][k] ^ 2 / 5 end
    want[i], want_rms[i] = {}, {}
    for k = 1, 5 do
      want[i][k] = (X[i][k] - mean) / math.sqrt(var + 1e-5) * Wt[k] + Bt[k]
      want_rms[i][k] = X[i][k] / math.sqrt(ms + 1e-6)
    end
  end
  tap.ok(max_abs_diff(ln(x), gm.tensor(want)) < 1e-5, 'LayerNorm matches (x - mean) / sqrt(var + eps) * w + b')
  tap.ok(max_abs_diff(nn.RMSNorm(5)(x), gm.tensor(want_rms)) < 1e-5, 'RMSNorm matches x / sqrt(mean(x^2) + eps)')
  tap.ok(nn.LayerNorm {5, affine = false}:num_parameters() == 0, 'LayerNorm affine=false has no parameters')
  tap.ok(nn.LayerNorm {{2, 5}}(gm.randn {3, 2, 5}).shape[3] == 5, 'LayerNorm over several trailing dims')
  tap.errors(function() ln(gm.randn {3, 4}) end, 'does not end with the normalized shape', 'LayerNorm shape error')
end

do -- Embedding
  local e = nn.Embedding(10, 3)
  local ids = gm.tensor({{1, 9}, {0, 1}}, {dtype = 'i32'})
  local y = e(ids)
  tap.ok(y.shape[1] == 2 and y.shape[2] == 2 and y.shape[3] == 3, 'Embedding output [..., dim]')
  tap.ok(max_abs_diff(y[0][1], e.weight[9]) == 0 and max_abs_diff(y[1][0], e.weight[0]) == 0, 'Embedding rows')
  tap.errors(function() e(gm.zeros {2}) end, 'ids must be an i32 tensor', 'Embedding refuses float ids')
  local w = nn.Embedding(200, 50).weight
  tap.close(w:mean():item(), 0, 0.05, 'Embedding init mean 0')
  tap.close(w:var():item(), 1, 0.05, 'Embedding init N(0, 1)')
end

-- Naive convolution in Lua: x [N][C][H][W], w [O][C][kh][kw].
local function naive_conv(x, w, b, sh, sw, ph, pw)
  local X, Wt = x:totable(), w:totable()
  local N, C, H, W = table.unpack(x.shape)
  local O, _, kh, kw = table.unpack(w.shape)
  local OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
  local out = {}
  for n = 1, N do
    out[n] = {}
    for o = 1, O do
      out[n][o] = {}
      for i = 1, OH do
        out[n][o][i] = {}
        for j = 1, OW do
          local s = b and b[o] or 0
          for c = 1, C do
            for p = 1, kh do
              for q = 1, kw do
                local ih, iw = (i - 1) * sh - ph + p, (j - 1) * sw - pw + q
                if ih >= 1 and ih <= H and iw >= 1 and iw <= W then s = s + Wt[o][c][p][q] * X[n][c][ih][iw] end
              end
            end
          end
          out[n][o][i][j] = s
        end
      end
    end
  end
  return gm.tensor(out, {dtype = x.dtype})
end

do -- Conv2d
  local x = gm.randn({2, 2, 5, 5}, {dtype = 'f64'})
  local m = nn.Conv2d {2, 3, 3, stride = 2, padding = 1, dtype = 'f64'}
  tap.ok(max_abs_diff(m(x), naive_conv(x, m.weight, m.bias:totable(), 2, 2, 1, 1)) < 1e-12,
         'Conv2d (stride 2, padding 1) matches a naive convolution')
  local m2 = nn.Conv2d {3, 2, {2, 3}, stride = {1, 2}, padding = {0, 1}, bias = false}
  local x2 = gm.randn {1, 3, 4, 6}
  tap.ok(max_abs_diff(m2(x2), naive_conv(x2, m2.weight, nil, 1, 2, 0, 1)) < 1e-5, 'Conv2d non-square, f32')
  local m3 = nn.Conv2d(3, 4, 1)
  tap.ok(max_abs_diff(m3(x2), naive_conv(x2, m3.weight, m3.bias:totable(), 1, 1, 0, 0)) < 1e-5, 'Conv2d 1x1 kernel')
  tap.ok(max_abs_diff(m3(x2[0]), m3(x2)[0]) < 1e-6, 'Conv2d accepts an unbatched [C, H, W] image')
  local xt = gm.randn {1, 6, 4, 3}:transpose(1, 3) -- non-contiguous [1, 3, 4, 6]
  tap.ok(max_abs_diff(m2(xt), naive_conv(xt, m2.weight, nil, 1, 2, 0, 1)) < 1e-5, 'Conv2d on a non-contiguous input')
  -- a bigger case, f32 against f64
  local xb, wb = gm.randn {4, 8, 17, 15}, gm.randn {6, 8, 3, 3}
  tap.ok(max_abs_diff(gm.conv2d(xb, wb, {1, 1, 1, 1}), gm.conv2d(xb:to('f64'), wb:to('f64'), {1, 1, 1, 1})) < 1e-4,
         'conv2d f32 agrees with f64')
  local bound = 1 / math.sqrt(8 * 9)
  local c = nn.Conv2d(8, 16, 3)
  tap.ok(c.weight:abs():max():item() <= bound and c.bias:abs():max():item() <= bound, 'Conv2d init within 1/sqrt(in*kh*kw)')
  tap.errors(function() m(gm.randn({2, 3, 5, 5}, {dtype = 'f64'})) end, 'conv2d: input %[2, 3, 5, 5%] has 3 channels',
             'channel mismatch names the shapes')
  tap.errors(function() nn.Conv2d(2, 2, 7)(gm.randn {1, 2, 3, 3}) end, 'larger than the padded input', 'kernel too large')
end

-- Naive pooling in Lua over planes: returns values, argmax (flat h*W+w), averages.
local function naive_pool(x, kh, kw, sh, sw, ph, pw)
  local X = x:totable()
  local N, C, H, W = table.unpack(x.shape)
  local OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
  local mx, ix, av = {}, {}, {}
  for n = 1, N do
    mx[n], ix[n], av[n] = {}, {}, {}
    for c = 1, C do
      mx[n][c], ix[n][c], av[n][c] = {}, {}, {}
      for i = 1, OH do
        mx[n][c][i], ix[n][c][i], av[n][c][i] = {}, {}, {}
        for j = 1, OW do
          local best, bi, s = -math.huge, -1, 0
          for p = 1, kh do
            for q = 1, kw do
              local ih, iw = (i - 1) * sh - ph + p, (j - 1) * sw - pw + q
              if ih >= 1 and ih <= H and iw >= 1 and iw <= W then
                local v = X[n][c][ih][iw]
                s = s + v
                if v > best then best, bi = v, (ih - 1) * W + (iw - 1) end
              end
            end
          end
          mx[n][c][i][j], ix[n][c][i][j], av[n][c][i][j] = best, bi, s / (kh * kw)
        end
      end
    end
  end
  return gm.tensor(mx), gm.tensor(ix, {dtype = 'i32'}), gm.tensor(av)
end

do -- pooling
  local x = gm.randn {2, 3, 7, 6}
  for _, g in ipairs {{2, 2, 2, 2, 0, 0}, {3, 3, 2, 2, 1, 1}, {3, 2, 1, 2, 1, 0}} do
    local mx, ix, av = naive_pool(x, table.unpack(g))
    local label = table.concat(g, ',')
    local y, idx = nn.MaxPool2d {{g[1], g[2]}, stride = {g[3], g[4]}, padding = {g[5], g[6]}, return_indices = true}(x)
    tap.ok(max_abs_diff(y, mx) == 0, 'MaxPool2d values match the naive pool ' .. label)
    tap.ok(max_abs_diff(idx, ix) == 0 and idx.dtype == 'i32', 'max_pool2d indices (flat h*W+w) ' .. label)
    local a = nn.AvgPool2d {{g[1], g[2]}, stride = {g[3], g[4]}, padding = {g[5], g[6]}}(x)
    tap.ok(max_abs_diff(a, av) < 1e-6, 'AvgPool2d matches (padding counted in the divisor) ' .. label)
  end
  tap.ok(max_abs_diff(nn.MaxPool2d(2)(x), naive_pool(x, 2, 2, 2, 2, 0, 0)) == 0, 'MaxPool2d stride defaults to kernel_size')
  local ga = nn.GlobalAvgPool2d()(x)
  tap.ok(ga.shape[1] == 2 and ga.shape[2] == 3 and #ga.shape == 2, 'GlobalAvgPool2d -> [N, C]')
  tap.ok(max_abs_diff(ga, x:mean {2, 3}) < 1e-6, 'GlobalAvgPool2d is the spatial mean')
  tap.ok(max_abs_diff(nn.AdaptiveAvgPool2d(1)(x):flatten(1), ga) < 1e-6, 'AdaptiveAvgPool2d(1) is global pooling')
  -- uneven windows: rows of 7 into 3 -> [0,3) [2,5) [4,7); cols of 6 into 4 -> [0,2) [1,3) [3,5) [4,6)
  local ad = nn.AdaptiveAvgPool2d {{3, 4}}(x)
  local want = x:narrow(2, 2, 3):narrow(3, 1, 2):mean {2, 3}
  tap.ok(ad.shape[3] == 3 and ad.shape[4] == 4 and max_abs_diff(ad:select(2, 1):select(2, 1), want) < 1e-6,
         'AdaptiveAvgPool2d with uneven windows')
  tap.errors(function() nn.MaxPool2d {2, padding = 2}(x) end, 'more than half the kernel', 'pool padding limit')
  tap.ok(nn.Flatten()(x).shape[2] == 3 * 7 * 6, 'Flatten from dim 1')
end

do -- activations, MLPs, gated MLPs
  local x = gm.randn {4, 6}
  tap.ok(max_abs_diff(nn.ReLU()(x), x:relu()) == 0 and max_abs_diff(nn.GELU()(x), x:gelu()) == 0 and
         max_abs_diff(nn.SiLU()(x), x:silu()) == 0 and max_abs_diff(nn.Tanh()(x), x:tanh()) == 0 and
         max_abs_diff(nn.Sigmoid()(x), x:sigmoid()) == 0, 'activation modules')
  tap.ok(max_abs_diff(nn.Softmax {dim = 0}(x), x:softmax(0)) == 0 and max_abs_diff(nn.Softmax()(x), x:softmax(-1)) == 0,
         'Softmax{dim}')
  tap.ok(nn.Identity()(x) == x, 'Identity')
  local mlp = nn.MLP {6, 8, 2, activation = 'gelu'}
  tap.ok(max_abs_diff(mlp(x), mlp.fc2(mlp.fc1(x):gelu())) == 0, 'MLP = fc2(act(fc1 x))')
  local sw = nn.SwiGLU {6, 5}
  tap.ok(max_abs_diff(sw(x), sw.w2(sw.w1(x):silu() * sw.w3(x))) == 0, 'SwiGLU = w2(silu(w1 x) * w3 x)')
  tap.ok(sw(x).shape[2] == 6 and sw.w1.bias == nil, 'SwiGLU: out defaults to in, no biases by default')
  local glu = nn.GLU {6, 5, 3, bias = true}
  tap.ok(max_abs_diff(glu(x), glu.w2(glu.w1(x):sigmoid() * glu.w3(x))) == 0 and glu.w1.bias ~= nil, 'GLU (sigmoid)')
  tap.errors(function() nn.MLP {6, 8, activation = 'nope'} end, 'unknown activation', 'unknown activation')
end

-- ---- f64 gradchecks of every layer w.r.t. inputs and parameters -----------------------------
-- gm.gradcheck passes f64 copies of all inputs to f; the module's parameters are swapped for
-- the copies on every call.
local function set_path(m, path, t)
  local parts = {}
  for p in path:gmatch('[^.]+') do parts[#parts + 1] = p end
  for i = 1, #parts - 1 do m = m[parts[i]] end
  m[parts[#parts]] = t
end

local function gradcheck_module(label, m, inputs, before)
  local named = m:named_parameters()
  local all, nx = {}, #inputs
  for i, x in ipairs(inputs) do all[i] = x end
  for i, e in ipairs(named) do all[nx + i] = e[2] end
  local function f(...)
    local a = table.pack(...)
    for i, e in ipairs(named) do set_path(m, e[1], a[nx + i]) end
    if before then before(m) end
    return m(table.unpack(a, 1, nx))
  end
  local ok, err, worst = pcall(gm.gradcheck, f, all)
  local detail = ok and worst and ('worst: input %d element %d analytic %.6g numeric %.6g'):format(
    worst.input, worst.index, worst.analytic, worst.numeric) or tostring(err)
  tap.ok(ok and err < 1e-6, ('gradcheck %s (%d inputs, %d parameters): %s'):format(label, nx, #named,
         ok and ('%.1e'):format(err) or 'error'), detail)
end

do
  local f64 = {dtype = 'f64'}
  local function X(shape) return gm.randn(shape, f64) end
  gm.manual_seed(11)
  gradcheck_module('Linear', nn.Linear(3, 2, f64), {X {4, 3}})
  gradcheck_module('Linear no bias, 3-D input', nn.Linear {3, 2, bias = false, dtype = 'f64'}, {X {2, 2, 3}})
  gradcheck_module('Embedding', nn.Embedding(5, 3, f64), {gm.tensor({{0, 4, 4}, {2, 1, 0}}, {dtype = 'i32'})})
  gradcheck_module('LayerNorm', nn.LayerNorm(4, f64), {X {3, 4}})
  gradcheck_module('LayerNorm 2 dims', nn.LayerNorm({2, 3}, f64), {X {2, 2, 3}})
  gradcheck_module('RMSNorm', nn.RMSNorm(4, f64), {X {3, 4}})
  gradcheck_module('Dropout', nn.Dropout(0.4), {X {3, 5}}, function(m) m.generator = gm.Generator(4) end)
  gradcheck_module('MLP relu', nn.MLP {3, 5, 2, dtype = 'f64'}, {X {4, 3}})
  gradcheck_module('MLP gelu', nn.MLP {3, 4, activation = 'gelu', dtype = 'f64'}, {X {2, 3}})
  gradcheck_module('GLU', nn.GLU {3, 4, 2, bias = true, dtype = 'f64'}, {X {2, 3}})
  gradcheck_module('SwiGLU', nn.SwiGLU {3, 4, dtype = 'f64'}, {X {2, 3}})
  gradcheck_module('Conv2d stride 2 padding 1', nn.Conv2d {2, 3, 3, stride = 2, padding = 1, dtype = 'f64'}, {X {2, 2, 5, 5}})
  gradcheck_module('Conv2d non-square', nn.Conv2d {2, 2, {2, 3}, stride = {2, 1}, padding = {1, 0}, dtype = 'f64'},
                   {X {1, 2, 4, 5}})
  -- pools: inputs with distinct values far apart, so the max never switches under differences
  local function distinct(shape)
    local n = 1
    for _, s in ipairs(shape) do n = n * s end
    return (gm.randperm(n):to('f64') * 0.1):reshape(shape)
  end
  gradcheck_module('MaxPool2d', nn.MaxPool2d {3, stride = 2, padding = 1}, {distinct {1, 2, 5, 5}})
  gradcheck_module('AvgPool2d', nn.AvgPool2d {3, stride = 2, padding = 1}, {X {1, 2, 5, 5}})
  gradcheck_module('AdaptiveAvgPool2d uneven', nn.AdaptiveAvgPool2d {{2, 3}}, {X {1, 2, 5, 4}})
  gradcheck_module('GlobalAvgPool2d', nn.GlobalAvgPool2d(), {X {2, 2, 3, 3}})
  gradcheck_module('Flatten', nn.Flatten(), {X {2, 2, 3}})
  for _, a in ipairs {'ReLU', 'GELU', 'SiLU', 'Tanh', 'Sigmoid', 'Softmax'} do
    gradcheck_module(a, nn[a](), {X {3, 4} + 0.05})
  end
  gradcheck_module('Sequential CNN', nn.Sequential(
    nn.Conv2d {1, 2, 3, padding = 1, dtype = 'f64'}, nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
    nn.Linear(2 * 2 * 2, 3, f64)), {X {2, 1, 4, 4}})
end

-- ---- initialisers ------------------------------------------------------------------------------
do
  local I = nn.init
  local t = gm.empty {200, 100}
  I.kaiming_normal_(t, {nonlinearity = 'relu'})
  tap.close(t:var():item() ^ 0.5, math.sqrt(2 / 100), 0.02, 'kaiming_normal_ std = gain / sqrt(fan_in)')
  I.kaiming_normal_(t, 0, 'fan_out', 'relu')
  tap.close(t:var():item() ^ 0.5, math.sqrt(2 / 200), 0.02, 'kaiming_normal_ positional mode fan_out')
  I.kaiming_uniform_(t, math.sqrt(5))
  tap.ok(t:abs():max():item() <= 0.1 and t:abs():max():item() > 0.099, 'kaiming_uniform_(a=sqrt(5)) bound 1/sqrt(fan_in)')
  I.xavier_uniform_(t, 2)
  local b = 2 * math.sqrt(6 / 300)
  tap.ok(t:abs():max():item() <= b and t:abs():max():item() > 0.99 * b, 'xavier_uniform_ bound gain*sqrt(6/(in+out))')
  I.xavier_normal_(t)
  tap.close(t:var():item() ^ 0.5, math.sqrt(2 / 300), 0.02, 'xavier_normal_ std')
  I.normal_(t, 1, 0.5)
  tap.close(t:mean():item(), 1, 0.01, 'normal_ mean')
  tap.close(t:var():item() ^ 0.5, 0.5, 0.02, 'normal_ std')
  I.uniform_(t, -3, -1)
  tap.ok(t:min():item() >= -3 and t:max():item() < -1, 'uniform_ range')
  I.scaled_output_(t, 6)
  tap.close(t:var():item() ^ 0.5, 0.02 / math.sqrt(12), 0.02, 'scaled_output_ std / sqrt(2 n_layers)')
  tap.ok(I.zeros_(t):abs():max():item() == 0 and I.ones_(t):min():item() == 1, 'zeros_ and ones_')
  local c = gm.empty {8, 3, 3, 3}
  local fi, fo = I.calculate_fans(c)
  tap.ok(fi == 27 and fo == 72, 'fans of a conv weight')
  tap.close(I.calculate_gain('leaky_relu', math.sqrt(5)), math.sqrt(1 / 3), 1e-12, 'calculate_gain leaky_relu')
  local p1, p2 = gm.empty {5}, gm.empty {5}
  I.normal_(p1, {generator = gm.Generator(1)})
  I.normal_(p2, {generator = gm.Generator(1)})
  tap.ok(max_abs_diff(p1, p2) == 0, 'initialisers take a generator')
  local w = gm.zeros({3, 3}, {requires_grad = true})
  I.uniform_(w)
  tap.ok(w.requires_grad and w.grad_fn == nil, 'initialising a parameter keeps it a leaf')
  tap.errors(function() I.xavier_uniform_(gm.empty {5}) end, '>= 2 dims', 'fans need 2 dims')
  tap.errors(function() I.kaiming_uniform_(t, {mode = 'fan_sideways'}) end, 'mode must be', 'bad mode')
end

-- ---- docs --------------------------------------------------------------------------------------
do
  local doc = require 'gmoe.doc'
  local missing = {}
  for name, v in pairs(nn) do
    if type(v) == 'table' and name ~= 'init' and name ~= 'functional' and name ~= 'F' and not doc.get('gm.nn.' .. name) then
      missing[#missing + 1] = name
    end
  end
  for name, v in pairs(nn.init) do
    if type(v) == 'function' and not doc.get('gm.nn.init.' .. name) then missing[#missing + 1] = 'init.' .. name end
  end
  for name, v in pairs(nn.functional) do
    if type(v) == 'function' and name:sub(1, 1) ~= '_' and not doc.get('gm.nn.functional.' .. name) then
      missing[#missing + 1] = 'functional.' .. name
    end
  end
  tap.ok(#missing == 0, 'every gm.nn class and function has a doc entry', 'missing: ' .. table.concat(missing, ', '))
  tap.like(doc.get('gm.nn.Linear').formula, 'x W%^T %+ b', 'Linear doc has its formula')
end

-- ---- training ----------------------------------------------------------------------------------
do
  gm.manual_seed(0)
  local model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
  local x = gm.rand({64, 2}) * 2 - 1
  local y = (x:select(1, 0) * x:select(1, 1)):unsqueeze(1) + (x:select(1, 0) * 2):tanh():unsqueeze(1)
  local opt = gm.optim.AdamW(model:parameters(), {lr = 1e-2})
  local first, last
  for step = 1, 300 do
    local loss = (model(x) - y):pow(2):mean()
    if step == 1 then first = loss:item() end
    last = loss:item()
    opt:zero_grad()
    loss:backward()
    opt:step()
  end
  tap.ok(last < 0.2 * first, ('a tiny MLP trains with AdamW: loss %.4f -> %.4f'):format(first, last))
end

tap.done()
