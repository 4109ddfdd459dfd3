-- t_mixers.lua: the sequence mixers and the LM (lua/gmoe/nn/mixers.lua) and their C ops (sdpa,
-- causal_conv1d, gla): values against naive compositions, causal masking by perturbing the
-- future, f32 vs f64, the gated-attention gate, chunkwise GLA == recurrent GLA, f64 gradchecks
-- of every mixer and of the LM, and a 2-layer LM learning a tiny copy task.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local nn = gm.nn
local doc = require 'gmoe.doc'

local f64 = {dtype = 'f64'}
local function maxdiff(a, b) return (a - b):abs():max():item() end

-- ---- sdpa vs the composition of matmul / masked_fill / softmax ---------------------------------
do
  gm.manual_seed(3)
  for _, case in ipairs {
    {B = 2, H = 3, T = 5, S = 5, Dh = 4, Dv = 4, causal = true},
    {B = 1, H = 2, T = 4, S = 6, Dh = 3, Dv = 5, causal = false},
    {B = 1, H = 1, T = 6, S = 3, Dh = 2, Dv = 2, causal = true},
    {B = 2, H = 1, T = 1, S = 1, Dh = 8, Dv = 8, causal = true},
    {B = 1, H = 2, T = 70, S = 70, Dh = 3, Dv = 2, causal = true},   -- two query blocks of 64
    {B = 1, H = 1, T = 130, S = 20, Dh = 2, Dv = 3, causal = false}, -- three blocks, cross
    {B = 1, H = 1, T = 129, S = 100, Dh = 2, Dv = 2, causal = true},
  } do
    local q = gm.randn({case.B, case.H, case.T, case.Dh}, f64)
    local k = gm.randn({case.B, case.H, case.S, case.Dh}, f64)
    local v = gm.randn({case.B, case.H, case.S, case.Dv}, f64)
    local out, lse = gm.sdpa(q, k, v, case.causal)
    local ref = nn.attention_naive(q, k, v, case.causal)
    local label = ('B%d H%d T%d S%d Dh%d Dv%d causal=%s'):format(case.B, case.H, case.T, case.S, case.Dh, case.Dv,
                                                                 tostring(case.causal))
    tap.ok(maxdiff(out, ref) < 1e-12, 'sdpa == naive attention (f64) ' .. label)
    local scores = q:matmul(k:transpose(-2, -1)) / math.sqrt(case.Dh)
    if case.causal then
      scores = scores:masked_fill(gm.gt(gm.arange(case.S):reshape {1, case.S}, gm.arange(case.T):reshape {case.T, 1}),
                                  -math.huge)
    end
    tap.ok(maxdiff(lse, scores:logsumexp(-1)) < 1e-12, 'sdpa lse == logsumexp of the masked scores ' .. label)
    local o32 = gm.sdpa(q:to('f32'), k:to('f32'), v:to('f32'), case.causal)
    tap.ok(o32.dtype == 'f32' and maxdiff(o32:to('f64'), ref) < 1e-5, 'sdpa f32 agrees with f64 ' .. label)
  end
  -- explicit scale, non-contiguous inputs (transposed views)
  local q = gm.randn({2, 70, 3, 2}, f64):transpose(1, 2)
  local k = gm.randn({2, 70, 3, 2}, f64):transpose(1, 2)
  local v = gm.randn({2, 70, 3, 2}, f64):transpose(1, 2)
  tap.ok(maxdiff(gm.sdpa(q, k, v, {causal = true, scale = 0.3}), nn.attention_naive(q, k, v, true, 0.3)) < 1e-12,
         'sdpa with scale and non-contiguous inputs')
  -- gradients agree with the composed path's
  local function grads(fn)
    local a = {q:detach():requires_grad_(), k:detach():requires_grad_(), v:detach():requires_grad_()}
    local o = fn(a[1], a[2], a[3]);
    ((o * o):sum()):backward()
    return a
  end
  local g1 = grads(function(a, b, c) return (gm.sdpa(a, b, c, true)) end)
  local g2 = grads(function(a, b, c) return (nn.attention_naive(a, b, c, true)) end)
  local worst = 0
  for i = 1, 3 do worst = math.max(worst, maxdiff(g1[i].grad, g2[i].grad)) end
  tap.ok(worst < 1e-12, ('sdpa backward == naive backward (max diff %.1e)'):format(worst))
  tap.errors(function() gm.sdpa(gm.randn {1, 2, 3, 4}, gm.randn {1, 2, 3, 5}, gm.randn {1, 2, 3, 4}) end,
             'sdpa: .*head dim', 'sdpa head-dim mismatch names the op')
  tap.errors(function() gm.sdpa(gm.randn {2, 3, 4}, gm.randn {2, 3, 4}, gm.randn {2, 3, 4}) end,
             'sdpa: .*4%-D', 'sdpa 3-D inputs rejected')
end

-- ---- sdpa on heads split off a fused projection: read in place (strided rows), f32 path --------
do
  gm.manual_seed(4)
  local B, T, H, Dh = 2, 70, 3, 8
  local function split(qkv)
    local function heads(i) return qkv:narrow(-1, i * H * Dh, H * Dh):reshape {B, T, H, Dh}:transpose(1, 2) end
    return heads(0), heads(1), heads(2)
  end
  local x64 = gm.randn({B, T, 3 * H * Dh}, f64)
  local gy64 = gm.randn({B, T, H * Dh}, f64)
  for _, causal in ipairs {true, false} do
    local function run(x, gy, fused)
      x = x:detach():requires_grad_()
      local q, k, v = split(x)
      local o = fused and gm.sdpa(q, k, v, causal) or nn.attention_naive(q, k, v, causal)
      local y = o:transpose(1, 2)
      local merged_free = y:is_contiguous()
      y = y:contiguous():reshape {B, T, H * Dh};
      (y * gy):sum():backward()
      return y, x.grad, merged_free
    end
    local yr, gr = run(x64, gy64, false)
    local y64, g64, free64 = run(x64, gy64, true)
    tap.ok(maxdiff(y64, yr) < 1e-12 and maxdiff(g64, gr) < 1e-12,
           'sdpa f64 on strided heads == naive, values and gradients, causal=' .. tostring(causal))
    tap.ok(free64, 'sdpa output is laid out [B, T, H, D]: transposing the heads back needs no copy')
    local y32, g32 = run(x64:to('f32'), gy64:to('f32'), true)
    local ey, eg = maxdiff(y32:to('f64'), yr), maxdiff(g32:to('f64'), gr)
    tap.ok(y32.dtype == 'f32' and ey < 5e-6 and eg < 1e-5,
           ('sdpa f32 on strided heads agrees with f64 (out %.1e, grad %.1e, scale 1) causal=%s')
             :format(ey, eg, tostring(causal)))
  end
  -- a layout the gemms cannot read in place (last dim strided) is copied first
  local q = gm.randn({1, 2, 5, 9}, f64):transpose(2, 3)
  local k = gm.randn({1, 2, 5, 9}, f64):transpose(2, 3)
  tap.ok(maxdiff(gm.sdpa(q, k, k, true), nn.attention_naive(q, k, k, true)) < 1e-12,
         'sdpa with a non-unit last-dim stride (copied)')
  -- single query and key rows with odd row strides, and a broadcast batch (stride 0)
  local x = gm.randn({3, 2, 7, 4}, f64)
  local q1, k1 = gm.randn({3, 2, 4, 1}, f64):transpose(2, 3), x:narrow(2, 5, 1) -- q1: row stride 1 < 4
  tap.ok(maxdiff(gm.sdpa(q1, k1, k1, true), nn.attention_naive(q1, k1, k1, true)) < 1e-12 and
         maxdiff(gm.sdpa(q1:to('f32'), k1:to('f32'), k1:to('f32'), true):to('f64'), k1) < 1e-6,
         'sdpa with T = S = 1 rows cut from a longer tensor')
  local qb = gm.randn({1, 2, 6, 4}, f64):expand {3, 2, 6, 4}
  tap.ok(maxdiff(gm.sdpa(qb, qb, qb, true), nn.attention_naive(qb, qb, qb, true)) < 1e-12,
         'sdpa with a broadcast (stride 0) batch dim')
  -- the same bits for any thread count (f32: outputs, lse and gradients)
  local nt = gm.get_num_threads()
  local x32, gy32 = gm.randn {4, 130, 3 * H * Dh}, gm.randn {4, 130, H * Dh}
  local function bits(n)
    gm.set_num_threads(n)
    local x = x32:detach():requires_grad_()
    local function heads(i) return x:narrow(-1, i * H * Dh, H * Dh):reshape {4, 130, H, Dh}:transpose(1, 2) end
    local o, lse = gm.sdpa(heads(0), heads(1), heads(2), true);
    ((o:transpose(1, 2):reshape {4, 130, H * Dh} * gy32):sum() + lse:sum()):backward()
    return o, lse, x.grad
  end
  local o1, l1, g1 = bits(1)
  local same = true
  for _, n in ipairs {2, 3} do
    local o, l, g = bits(n)
    same = same and maxdiff(o, o1) == 0 and maxdiff(l, l1) == 0 and maxdiff(g, g1) == 0
  end
  gm.set_num_threads(nt)
  tap.ok(same, 'sdpa f32 forward and backward: identical bits with 1, 2 and 3 threads')
end

-- ---- causal_conv1d ------------------------------------------------------------------------------
do
  gm.manual_seed(5)
  local x, w = gm.randn({2, 6, 3}, f64), gm.randn({4, 3}, f64)
  local y = gm.conv_ref and nil
  -- reference in Lua: y[b,t,d] = sum_j w[j,d] x[b,t-j,d]
  local xt, wt = x:totable(), w:totable()
  local ref = {}
  for b = 1, 2 do
    ref[b] = {}
    for t = 1, 6 do
      ref[b][t] = {}
      for d = 1, 3 do
        local s = 0
        for j = 0, 3 do if t - j >= 1 then s = s + wt[j + 1][d] * xt[b][t - j][d] end end
        ref[b][t][d] = s
      end
    end
  end
  y = gm.causal_conv1d(x, w)
  tap.all_close(y:totable(), ref, 1e-12, 'causal_conv1d == Lua reference')
  tap.all_close(gm.causal_conv1d(x:to('f32'), w:to('f32')):totable(), ref, 1e-5, 'causal_conv1d f32')
  local x2 = x:clone()
  x2:narrow(1, 4, 2):fill_(7)
  tap.ok(maxdiff(gm.causal_conv1d(x2, w):narrow(1, 0, 4), y:narrow(1, 0, 4)) == 0, 'causal_conv1d is causal')
  tap.errors(function() gm.causal_conv1d(gm.randn {2, 6, 3}, gm.randn {4, 2}) end, 'causal_conv1d: .*channels',
             'causal_conv1d channel mismatch')
end

-- ---- modules: shapes, causality, probabilities, gates -----------------------------------------
local function causal_check(label, m, D)
  local x = gm.randn({2, 7, D}, f64)
  local y = m(x)
  local x2 = x:clone()
  x2:narrow(1, 4, 3):copy_(gm.randn({2, 3, D}, f64) * 3)
  local y2 = m(x2)
  tap.ok(maxdiff(y:narrow(1, 0, 4), y2:narrow(1, 0, 4)) < 1e-12 and maxdiff(y:narrow(1, 4, 3), y2:narrow(1, 4, 3)) > 1e-6,
         label .. ': perturbing tokens 4.. leaves outputs 0..3 unchanged (and changes the rest)')
end

do
  gm.manual_seed(7)
  local D = 8
  local attn = nn.Attention {d_model = D, heads = 2, dtype = 'f64'}
  local x = gm.randn({2, 5, D}, f64)
  local y = attn(x)
  tap.is(table.concat(y.shape, ','), '2,5,8', 'Attention output shape')
  -- against a composition with the same weights
  local qkv = attn.qkv(x)
  local function h(i) return qkv:narrow(-1, i * D, D):reshape {2, 5, 2, 4}:transpose(1, 2) end
  local ref = attn.out_proj(nn.attention_naive(h(0), h(1), h(2), true):transpose(1, 2):contiguous():reshape {2, 5, D})
  tap.ok(maxdiff(y, ref) < 1e-12, 'Attention == projections + naive attention')
  attn.keep_probs = true
  attn(x)
  local p = attn.last_probs
  tap.is(table.concat(p.shape, ','), '2,2,5,5', 'Attention last_probs shape [B, H, T, T]')
  tap.ok(maxdiff(p:sum(-1), gm.ones({2, 2, 5}, f64)) < 1e-12 and p:select(-2, 0):select(-1, 1):abs():max():item() == 0
         and not p.requires_grad, 'last_probs: rows sum to 1, causal zeros, no grad')
  causal_check('Attention', nn.Attention {d_model = D, heads = 2, dtype = 'f64'}, D)
  causal_check('Attention rotary', nn.Attention {d_model = D, heads = 2, positions = 'rotary', dtype = 'f64'}, D)
  causal_check('Attention learned positions', nn.Attention {d_model = D, positions = 'learned', max_len = 16, dtype = 'f64'}, D)
  causal_check('GatedAttention', nn.GatedAttention {d_model = D, heads = 2, dtype = 'f64'}, D)
  causal_check('GatedConv', nn.GatedConv {d_model = D, dtype = 'f64'}, D)
  causal_check('GatedConv long only', nn.GatedConv {d_model = D, short_kernel = 0, dtype = 'f64'}, D)
  local noncausal = nn.Attention {d_model = D, causal = false, dtype = 'f64'}
  local xa = gm.randn({1, 4, D}, f64)
  local xb = xa:clone()
  xb:narrow(1, 3, 1):fill_(1)
  tap.ok(maxdiff(noncausal(xa):narrow(1, 0, 1), noncausal(xb):narrow(1, 0, 1)) > 1e-6, 'causal=false sees the future')
  -- dropout: the composed path in training, the fused one in eval
  local ad = nn.Attention {d_model = D, dropout = 0.5, dtype = 'f64'}
  ad:eval()
  local ye = ad(x)
  ad:train()
  tap.ok(maxdiff(ad(x), ye) > 1e-6, 'Attention dropout active in training, off in eval')
  -- rotary: relative positions only (a shift of all positions leaves q.k unchanged)
  local q = gm.randn({1, 1, 1, 4}, f64)
  local qq = q:expand {1, 1, 6, 4}
  local r = nn.rope(qq, 10000)
  local d1 = (r:select(2, 1) * r:select(2, 3)):sum():item()
  local d2 = (r:select(2, 2) * r:select(2, 4)):sum():item()
  tap.close(d1, d2, 1e-12, 'rotary: q_i . k_j depends on i - j only')
  tap.errors(function() nn.Attention {d_model = 6, heads = 4} end, 'multiple of heads', 'heads must divide d_model')
  tap.errors(function() nn.Attention {d_model = 8, positions = 'sinus'} end, 'positions', 'unknown positions')
  tap.errors(function() attn(gm.randn({2, 5, 4}, f64)) end, 'gm.nn.Attention: input', 'wrong input width')
end

do
  gm.manual_seed(9)
  local D, H = 8, 2
  local x = gm.randn({2, 5, D}, f64)
  for _, kind in ipairs {'elementwise', 'headwise'} do
    local ga = nn.GatedAttention {d_model = D, heads = H, gate = kind, dtype = 'f64'}
    local y = ga(x)
    local want = kind == 'elementwise' and '2,5,2,4' or '2,5,2,1'
    tap.is(table.concat(ga.last_gate.shape, ','), want, 'GatedAttention ' .. kind .. ' gate shape')
    tap.ok(ga.last_gate:min():item() > 0 and ga.last_gate:max():item() < 1, 'gate scores in (0, 1)')
    tap.is(table.concat(y.shape, ','), '2,5,8', 'GatedAttention ' .. kind .. ' output shape')
    -- gate weights zero: the gate is sigmoid(0) = 1/2 everywhere, so with the same q/k/v/out
    -- weights (no biases) the output is exactly half plain attention's.
    local plain = nn.Attention {d_model = D, heads = H, bias = false, dtype = 'f64'}
    gm.no_grad(function()
      ga.qkv.weight:narrow(0, 0, 3 * D):copy_(plain.qkv.weight)
      ga.qkv.weight:narrow(0, 3 * D, ga.qkv.weight.shape[1] - 3 * D):fill_(0)
      ga.out_proj.weight:copy_(plain.out_proj.weight)
    end)
    tap.ok(maxdiff(ga(x), plain(x) * 0.5) < 1e-12, 'GatedAttention ' .. kind .. ' with gate 1/2 == plain attention / 2')
    -- gate forced to 1: out_proj of (y * 1) == plain attention (doubling out_proj cancels the 1/2)
    gm.no_grad(function() ga.out_proj.weight:copy_(plain.out_proj.weight * 2) end)
    tap.ok(maxdiff(ga(x), plain(x)) < 1e-12, 'GatedAttention ' .. kind .. ' with the gate undone == plain attention')
  end
  tap.errors(function() nn.GatedAttention {d_model = 8, gate = 'tokenwise'} end, 'gate must be', 'unknown gate')
end

-- ---- GLA: recurrent op vs Lua reference, chunkwise == recurrent (outputs and gradients) ---------
do
  gm.manual_seed(23)
  local function gates(shape, dt) return (gm.rand(shape, {dtype = dt}) * 0.5 + 0.5):log() end -- alpha in [0.5, 1)
  -- the recurrence in plain Lua for one small case
  local q, k, v = gm.randn({1, 1, 3, 2}, f64), gm.randn({1, 1, 3, 2}, f64), gm.randn({1, 1, 3, 2}, f64)
  local g = gates({1, 1, 3, 2}, 'f64')
  local Q, K, Vt, G = q:totable()[1][1], k:totable()[1][1], v:totable()[1][1], g:totable()[1][1]
  local S, ref = {{0, 0}, {0, 0}}, {}
  for t = 1, 3 do
    for i = 1, 2 do for j = 1, 2 do S[i][j] = math.exp(G[t][i]) * S[i][j] + K[t][i] * Vt[t][j] end end
    ref[t] = {}
    for j = 1, 2 do ref[t][j] = (Q[t][1] * S[1][j] + Q[t][2] * S[2][j]) / math.sqrt(2) end
  end
  tap.all_close(gm.gla(q, k, v, g):totable(), {{ref}}, 1e-12, 'gla == the recurrence in Lua')
  -- gla_chunk (C op, fused backward) against gla: outputs and the four input gradients, f64 to 1e-10
  -- and f32 to 1e-5; T a multiple of chunk or not, T = 1, chunk = T, chunk > T, sub 1 .. chunk and
  -- sub > chunk, Dk and Dv off the kernels' vector widths, the default sub and an explicit scale.
  for _, c in ipairs {{T = 10, C = 4, c = 2}, {T = 1, C = 4}, {T = 1, C = 1}, {T = 8, C = 8, c = 3},
                      {T = 13, C = 16, c = 4}, {T = 40, C = 16, c = 4}, {T = 12, C = 12}, {T = 12, C = 12, c = 1},
                      {T = 9, C = 3, c = 5}, {T = 33, C = 32, c = 8, Dk = 9, Dv = 5},
                      {T = 70, C = 32, Dk = 16, Dv = 24, scale = 0.3}, {T = 7, C = 1, Dk = 1, Dv = 1}} do
    for _, dt in ipairs {'f64', 'f32'} do
      local tol = dt == 'f64' and 1e-10 or 1e-5
      local Dk, Dv = c.Dk or 3, c.Dv or 4
      local ins = {gm.randn({2, 2, c.T, Dk}, {dtype = dt}), gm.randn({2, 2, c.T, Dk}, {dtype = dt}),
                   gm.randn({2, 2, c.T, Dv}, {dtype = dt}), gates({2, 2, c.T, Dk}, dt)}
      local w = gm.randn({2, 2, c.T, Dv}, {dtype = dt})
      local function run(chunked)
        local a = {}
        for i = 1, 4 do a[i] = ins[i]:detach():requires_grad_() end
        local o = chunked and gm.gla_chunk(a[1], a[2], a[3], a[4], {chunk = c.C, sub = c.c, scale = c.scale})
                  or gm.gla(a[1], a[2], a[3], a[4], c.scale)
        ;(o * w):sum():backward()
        return o, a
      end
      local o1, a1 = run(false)
      local o2, a2 = run(true)
      local gw = 0
      for i = 1, 4 do gw = math.max(gw, maxdiff(a1[i].grad, a2[i].grad)) end
      local label = ('%s T=%d chunk=%d sub=%s Dk=%d Dv=%d'):format(dt, c.T, c.C, tostring(c.c), Dk, Dv)
      tap.ok(o2.dtype == dt and maxdiff(o1, o2) < tol, ('gla_chunk == gla outputs %s (max diff %.1e)'):format(label, maxdiff(o1, o2)))
      tap.ok(gw < tol, ('gla_chunk == gla gradients of q, k, v, log_gate %s (max diff %.1e)'):format(label, gw))
    end
  end
  -- the positional call and gm.nn.gla_chunk (default chunk 16) give the same as the options table
  local a = {gm.randn({1, 2, 20, 3}, f64), gm.randn({1, 2, 20, 3}, f64), gm.randn({1, 2, 20, 2}, f64), gates({1, 2, 20, 3}, 'f64')}
  local o = gm.gla_chunk(a[1], a[2], a[3], a[4], {chunk = 16})
  tap.ok(maxdiff(o, gm.gla_chunk(a[1], a[2], a[3], a[4], 16)) == 0 and maxdiff(o, nn.gla_chunk(a[1], a[2], a[3], a[4])) == 0,
         'gla_chunk positional and options calls, gm.nn.gla_chunk default chunk 16')
  -- non-contiguous inputs (heads split off [B, T, H, D] as the layer does)
  local function split(t) return t:transpose(1, 2):contiguous():transpose(1, 2) end
  tap.ok(maxdiff(gm.gla_chunk(split(a[1]), split(a[2]), split(a[3]), split(a[4]), {chunk = 8, sub = 2}), o) < 1e-12,
         'gla_chunk on transposed (non-contiguous) views')
  -- rows read in place: q, k, v, g (and dO) as heads narrowed off one wider [B, T, width]
  -- projection (row stride = width, heads inside a step) give the same bits as contiguous copies,
  -- outputs and gradients, both forms, f32 and f64
  for _, dt in ipairs {'f64', 'f32'} do
    local B, T, H, Dk, Dv = 2, 13, 2, 3, 4
    local W = 2 * H * Dk + H * Dv + H * Dk + 5
    local proj = gm.randn({B, T, W}, {dtype = dt})
    local function head(off, d) return proj:narrow(-1, off, H * d):reshape {B, T, H, d}:transpose(1, 2) end
    local gq, gk, gv = head(0, Dk), head(H * Dk, Dk), head(2 * H * Dk, Dv)
    local gg = head(2 * H * Dk + H * Dv, Dk):sigmoid():log()
    local gy = gm.randn({B, T, H, Dv}, {dtype = dt}):transpose(1, 2) -- a strided dO
    for _, form in ipairs {'gla', 'gla_chunk'} do
      local function run(x)
        local l = {}
        for i = 1, 4 do l[i] = x[i]:detach():requires_grad_() end
        local o = form == 'gla' and gm.gla(l[1], l[2], l[3], l[4]) or gm.gla_chunk(l[1], l[2], l[3], l[4], {chunk = 5, sub = 2})
        o:backward(gy)
        return o, l
      end
      local o1, l1 = run {gq, gk, gv, gg}
      local o2, l2 = run {gq:contiguous(), gk:contiguous(), gv:contiguous(), gg:contiguous()}
      local same = maxdiff(o1, o2) == 0
      for i = 1, 4 do same = same and maxdiff(l1[i].grad, l2[i].grad) == 0 end
      tap.ok(same, ('%s %s: heads read in place from a wider projection == contiguous copies, outputs and gradients'):format(form, dt))
    end
  end
  -- causal at the op level: perturbing steps 11.. leaves outputs 0..10 unchanged, both forms
  local b = {}
  for i = 1, 4 do b[i] = a[i]:clone() end
  b[1]:narrow(2, 11, 9):copy_(gm.randn({1, 2, 9, 3}, f64))
  b[2]:narrow(2, 11, 9):copy_(gm.randn({1, 2, 9, 3}, f64))
  b[3]:narrow(2, 11, 9):copy_(gm.randn({1, 2, 9, 2}, f64))
  b[4]:narrow(2, 11, 9):copy_(gates({1, 2, 9, 3}, 'f64'))
  for _, f in ipairs {{'gla', function(x) return gm.gla(x[1], x[2], x[3], x[4]) end},
                      {'gla_chunk', function(x) return gm.gla_chunk(x[1], x[2], x[3], x[4], {chunk = 4, sub = 3}) end}} do
    local y1, y2 = f[2](a), f[2](b)
    tap.ok(maxdiff(y1:narrow(2, 0, 11), y2:narrow(2, 0, 11)) < 1e-12 and maxdiff(y1:narrow(2, 11, 9), y2:narrow(2, 11, 9)) > 1e-6,
           f[1] .. ': perturbing steps 11.. leaves outputs 0..10 unchanged (and changes the rest)')
  end
  -- bad options
  tap.errors(function() gm.gla_chunk(a[1], a[2], a[3], a[4]) end, 'gla_chunk: chunk .*must be an integer >= 1, got 0',
             'gla_chunk without chunk')
  tap.errors(function() gm.gla_chunk(a[1], a[2], a[3], a[4], {chunk = 0}) end, 'chunk .*>= 1, got 0', 'gla_chunk chunk = 0')
  tap.errors(function() gm.gla_chunk(a[1], a[2], a[3], a[4], {chunk = -2}) end, 'chunk .*>= 1, got %-2', 'gla_chunk chunk < 0')
  tap.errors(function() gm.gla_chunk(a[1], a[2], a[3], a[4], {chunk = 2.5}) end, 'chunk', 'gla_chunk chunk not an integer')
  tap.errors(function() gm.gla_chunk(a[1], a[2], a[3], a[4], {chunk = 4, sub = 0}) end,
             'gla_chunk: sub must be an integer >= 1, got 0', 'gla_chunk sub = 0')
  tap.errors(function() gm.gla_chunk(a[1], a[2], a[3], a[4], {chunk = 4, sub = 1.5}) end,
             'sub must be an integer >= 1, got 1.5', 'gla_chunk sub not an integer')
  tap.errors(function() gm.gla_chunk(a[1], a[2], a[3], a[4], {chunk = 4, scale = 0 / 0}) end,
             'gla_chunk: scale must be finite', 'gla_chunk scale NaN')
  tap.errors(function() gm.gla_chunk(a[1], a[2], a[3], a[4], {chunk = 4, size = 2}) end, "unknown option 'size'",
             'gla_chunk unknown option')
  tap.errors(function() gm.gla_chunk(a[1], a[2], a[3]:narrow(2, 0, 5), a[4], 4) end, 'gla_chunk: q, k, log_gate must be',
             'gla_chunk shape mismatch')
  local D = 8
  causal_check('GLA recurrent', nn.GLA {d_model = D, heads = 2, mode = 'recurrent', dtype = 'f64'}, D)
  causal_check('GLA chunk with conv', nn.GLA {d_model = D, heads = 2, chunk = 4, sub_chunk = 2, conv = 3, dtype = 'f64'}, D)
  local m = nn.GLA {d_model = D, heads = 2, chunk = 3, dtype = 'f64'}
  local x = gm.randn({2, 7, D}, f64)
  local y1 = m(x)
  m.mode = 'recurrent'
  tap.ok(maxdiff(y1, m(x)) < 1e-10, 'GLA layer: chunk mode == recurrent mode')
  tap.errors(function() nn.GLA {d_model = 8, mode = 'parallel'} end, 'mode must be', 'GLA unknown mode')
end

-- ---- f64 gradchecks of every mixer and of the LM ----------------------------------------------
local function set_path(m, path, t)
  local parts = {}
  for p in path:gmatch('[^.]+') do parts[#parts + 1] = p end
  for i = 1, #parts - 1 do m = m[parts[i]] end
  m[parts[#parts]] = t
end

local function gradcheck_module(label, m, inputs)
  local named = m:named_parameters()
  local all, nx = {}, #inputs
  for i, x in ipairs(inputs) do all[i] = x end
  for i, e in ipairs(named) do all[nx + i] = e[2] end
  local function f(...)
    local a = table.pack(...)
    for i, e in ipairs(named) do set_path(m, e[1], a[nx + i]) end
    return m(table.unpack(a, 1, nx))
  end
  local ok, err, worst = pcall(gm.gradcheck, f, all)
  local detail = ok and worst and ('worst: input %d element %d analytic %.6g numeric %.6g'):format(
    worst.input, worst.index, worst.analytic, worst.numeric) or tostring(err)
  tap.ok(ok and err < 1e-6, ('gradcheck %s (%d parameters): %s'):format(label, #named,
         ok and ('%.1e'):format(err) or 'error'), detail)
end

do
  gm.manual_seed(13)
  local function X() return gm.randn({2, 3, 4}, f64) end
  gradcheck_module('Attention', nn.Attention {d_model = 4, heads = 2, dtype = 'f64'}, {X()})
  gradcheck_module('Attention rotary', nn.Attention {d_model = 4, heads = 1, positions = 'rotary', dtype = 'f64'}, {X()})
  gradcheck_module('Attention learned', nn.Attention {d_model = 4, positions = 'learned', max_len = 4, dtype = 'f64'}, {X()})
  gradcheck_module('GatedAttention elementwise', nn.GatedAttention {d_model = 4, heads = 2, dtype = 'f64'}, {X()})
  gradcheck_module('GatedAttention headwise', nn.GatedAttention {d_model = 4, heads = 2, gate = 'headwise', dtype = 'f64'}, {X()})
  gradcheck_module('GatedConv', nn.GatedConv {d_model = 4, short_kernel = 2, d_hidden = 3, dtype = 'f64'}, {X()})
  gradcheck_module('GLA recurrent', nn.GLA {d_model = 4, heads = 2, mode = 'recurrent', gate_low_rank = 2, dtype = 'f64'}, {X()})
  gradcheck_module('GLA chunk + conv', nn.GLA {d_model = 4, heads = 1, chunk = 2, conv = 2, gate_low_rank = 2, dtype = 'f64'}, {X()})
  local ids = gm.tensor({{1, 4, 2}, {0, 3, 3}}, {dtype = 'i32'})
  gradcheck_module('LM attention + mlp', nn.LM {vocab = 5, d_model = 4, layers = 1, state_mixer = 'mlp', d_ff = 4,
                                                dtype = 'f64'}, {ids})
  gradcheck_module('LM gated_conv, untied head', nn.LM {vocab = 5, d_model = 4, layers = 1, mixer = {'gated_conv', d_hidden = 2},
                                                        tie_head = false, dtype = 'f64'}, {ids})
end

-- ---- LM: shapes, selected positions, init, training --------------------------------------------
do
  gm.manual_seed(17)
  local lm = nn.LM {vocab = 11, d_model = 8, layers = 2, heads = 2, positions = 'learned', max_len = 16}
  local ids = gm.randint(0, 11, {3, 6})
  local logits = lm(ids)
  tap.is(table.concat(logits.shape, ','), '3,6,11', 'LM logits [B, T, V]')
  local sel = gm.tensor({0, 7, 17}, {dtype = 'i32'})
  local part = lm(ids, sel)
  tap.is(table.concat(part.shape, ','), '3,11', 'LM logits at selected positions [N, V]')
  tap.ok(maxdiff(part, logits:reshape {18, 11}:index_select(0, sel)) < 1e-6, 'selected logits == rows of the full logits')
  local std = lm.blocks[0].mixer.qkv.weight:to('f64'):var():sqrt():item()
  tap.ok(std > 0.015 and std < 0.025, ('zoology init: qkv weight std %.4f ~ 0.02'):format(std))
  local ostd = lm.blocks[0].mixer.out_proj.weight:to('f64'):var():sqrt():item()
  tap.ok(ostd < 0.015, ('zoology init: out_proj std %.4f ~ 0.02 / sqrt(2 layers)'):format(ostd))
  tap.ok(lm.blocks[0].mixer.qkv.bias:abs():max():item() == 0, 'zoology init: zero biases')
  for _, mix in ipairs {'gated_attention', 'gated_conv', 'gla', {'attention', heads = 1}} do
    local m = nn.LM {vocab = 7, d_model = 8, layers = 2, mixer = mix, state_mixer = 'moe', moe = {experts = 2}}
    local out = m(gm.randint(0, 7, {2, 5}))
    tap.ok(out.shape[3] == 7 and #m.aux == 2 and gm.is_tensor(m.aux_loss),
           'LM with ' .. (type(mix) == 'table' and mix[1] or mix) .. ' mixer and MoE state mixer')
  end
  tap.errors(function() nn.LM {vocab = 7, d_model = 8, mixer = 'rnn'} end, 'unknown mixer', 'unknown mixer')
  tap.errors(function() lm(gm.randn {2, 3}) end, 'ids must be an i32', 'LM wants i32 ids')
  tap.ok(doc.get('gm.nn.Attention').formula and doc.get('gm.nn.GatedAttention').paper and
         doc.get('gm.nn.GatedConv').formula and doc.get('gm.nn.LM').paper and doc.get('gm.nn.GLA').formula, 'doc entries with formula and paper')
end

-- A 2-layer attention LM learns to copy: the second half of each sequence repeats the first.
do
  gm.manual_seed(21)
  local V, half, B = 8, 6, 32
  local lm = nn.LM {vocab = V, d_model = 32, layers = 2, heads = 2, positions = 'learned', max_len = 2 * half}
  local opt = gm.optim.AdamW(lm:parameters(), {lr = 3e-3, weight_decay = 0})
  -- targets: positions half-1 .. 2*half-2 predict the token at +1 (the copied half)
  local sel, first, last = {}, nil, nil
  for b = 0, B - 1 do for t = half - 1, 2 * half - 2 do sel[#sel + 1] = b * 2 * half + t end end
  local seli = gm.tensor(sel, {dtype = 'i32'})
  for step = 1, 300 do
    local a = gm.randint(1, V, {B, half})
    local ids = gm.cat({a, a}, 1)
    local tgt = {}
    local at = a:totable()
    for b = 1, B do for t = 1, half do tgt[#tgt + 1] = at[b][t] end end
    local loss = gm.cross_entropy(lm(ids, seli), gm.tensor(tgt, {dtype = 'i32'}))
    if step == 1 then first = loss:item() end
    last = loss:item()
    opt:zero_grad()
    loss:backward()
    opt:step()
  end
  tap.ok(last < 0.3 * first, ('2-layer attention LM learns a copy task: loss %.3f -> %.3f'):format(first, last))
end

tap.done()
