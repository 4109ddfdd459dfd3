-- gmoe.nn.mixers: sequence mixers and a small language model. Attention and GatedAttention run
-- the fused C op gm.sdpa (forward and backward on the CPU, never the T x T matrix); GatedConv
-- (zoology's BaseConv) runs the C op gm.causal_conv1d for its short and implicit long
-- convolutions (direct, O(T K D)); GLA runs the recurrent C op gm.gla or the chunkwise C op
-- gm.gla_chunk; LM stacks any of them into pre-norm residual blocks with an
-- optional MLP or MoE state mixer, and computes logits at selected positions only when asked.
-- Inputs are [B, T, d_model] (batch first); every mixer is causal by default.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local module = require 'gmoe.nn.module'
local init = require 'gmoe.nn.initializers'
local layers = require 'gmoe.nn.layers'

local Module, is_module = module.Module, module.is_module
local M = {}

-- ---- options --------------------------------------------------------------------------------
-- Option parsing and checks shared with gmoe.nn.layers (one parser, the same messages).
local NONE, options, need_int, param = layers._helpers.NONE, layers._helpers.options, layers._helpers.need_int,
                                       layers._helpers.param

local function need_btd(name, x, d)
  if not gm.is_tensor(x) or #x.shape ~= 3 or x.shape[3] ~= d then
    error(('gm.nn.%s: input must be a tensor [B, T, %d], got %s'):format(name, d,
      gm.is_tensor(x) and ('[' .. table.concat(x.shape, ', ') .. ']') or type(x)), 3)
  end
  return x.shape[1], x.shape[2]
end

local define = layers._helpers.definer(M)

-- ---- attention helpers ----------------------------------------------------------------------

-- The reference composition: softmax(scale q k^T + mask) v with matmul, masked_fill and softmax
-- (materialises [B, H, T, S]). Returns out and the probabilities. drop: nil or a function on
-- the probabilities (attention dropout).
local function attention_naive(q, k, v, causal, scale, drop)
  for i, t in ipairs {q, k, v} do require('gmoe.errors').check('attention_naive', i, ({'q', 'k', 'v'})[i], t, 'tensor') end
  local T, S = q.shape[#q.shape - 1], k.shape[#k.shape - 1]
  local scores = q:matmul(k:transpose(-2, -1)) * (scale or 1 / math.sqrt(q.shape[#q.shape]))
  if causal then
    local mask = gm.gt(gm.arange(S):reshape {1, S}, gm.arange(T):reshape {T, 1})
    scores = scores:masked_fill(mask, -math.huge)
  end
  local p = scores:softmax(-1)
  local pd = drop and drop(p) or p
  return pd:matmul(v), p
end
M.attention_naive = attention_naive
doc.add('gm.nn.attention_naive', 'gm.nn.attention_naive(q, k, v, causal, scale=1/sqrt(Dh), drop=nil) -> out, probs',
  'Reference scaled dot-product attention composed of matmul, masked_fill and softmax (materialises the ' ..
  '[..., T, S] probabilities, which it also returns); drop is an optional function applied to the probabilities ' ..
  '(attention dropout). gm.sdpa is the fused op; this is its test oracle and the dropout path.',
  {formula = 'softmax(scale q k^T + mask) v'})

--- gm.nn.attention_sink(probs [..., H, T, S]) -> mass [H] f64, uniform (number)
-- The attention sink probe (Qiu et al. 2025; Xiao et al. 2024): the mean attention mass that a
-- query puts on key 0, over queries t = 1 .. T-1 (query 0 can only see key 0) and every leading
-- index, per head; `uniform` is the same mean for causal attention spread evenly, 1/(t+1).
local function attention_sink(probs)
  if not gm.is_tensor(probs) or probs:dim() < 3 or probs.dtype == 'i32' then
    error('gm.nn.attention_sink: probs must be a float tensor [..., H, T, S], got ' ..
      (gm.is_tensor(probs) and (probs.dtype .. ' [' .. table.concat(probs.shape, ', ') .. ']') or type(probs)), 2)
  end
  local nd = probs:dim()
  local H, T = probs.shape[nd - 2], probs.shape[nd - 1]
  if T < 2 then error(('gm.nn.attention_sink: needs at least 2 query positions, got %d'):format(T), 2) end
  local first = probs:detach():to('f64'):narrow(-1, 0, 1):narrow(-2, 1, T - 1) -- [..., H, T-1, 1]
  local mass = first:reshape {-1, H, T - 1}:mean {dims = {0, 2}}
  local uniform = 0
  for t = 1, T - 1 do uniform = uniform + 1 / (t + 1) end
  return mass, uniform / (T - 1)
end
M.attention_sink = attention_sink
doc.add('gm.nn.attention_sink', 'gm.nn.attention_sink(probs [..., H, T, S]) -> mass [H] f64, uniform',
  'The attention-sink probe: mass[h] is the mean attention probability that head h puts on key 0, over ' ..
  'query positions t = 1 .. T-1 (query 0 sees only key 0) and all leading indices (batch, ...); uniform is ' ..
  'the same mean for causal attention spread evenly (1/(t+1)). Give it attn.last_probs (set ' ..
  'attn.keep_probs = true before the forward). A sink shows as mass well above uniform.',
  {formula = 'mass_h = mean_{b, t>=1} p[b, h, t, 0];  uniform = mean_{t>=1} 1/(t+1)',
   paper = 'Qiu et al. 2025 (Gated Attention), Xiao et al. 2024 (attention sinks)'})

-- Rotary tables cos/sin [T, Dh] (rotate-half layout: frequency i on columns i and i + Dh/2).
local rope_cache = setmetatable({}, {__mode = 'v'})
local function rope_tables(T, Dh, base, dtype)
  local key = table.concat({T, Dh, base, dtype}, ':')
  local c = rope_cache[key]
  if c then return c[1], c[2] end
  local half = Dh // 2
  local cs, sn = {}, {}
  for t = 0, T - 1 do
    local rc, rs = {}, {}
    for i = 0, half - 1 do
      local ang = t * base ^ (-2 * i / Dh)
      rc[i + 1], rc[i + 1 + half] = math.cos(ang), math.cos(ang)
      rs[i + 1], rs[i + 1 + half] = math.sin(ang), math.sin(ang)
    end
    cs[t + 1], sn[t + 1] = rc, rs
  end
  c = {gm.tensor(cs, {dtype = dtype}), gm.tensor(sn, {dtype = dtype})}
  rope_cache[key] = c
  return c[1], c[2]
end

-- x [B, H, T, Dh] rotated by position: x cos + rotate_half(x) sin, rotate_half(x) = [-x2, x1].
local function rope(x, base)
  require('gmoe.errors').check('rope', 1, 'x', x, 'tensor')
  base = base or 10000
  local T, Dh = x.shape[3], x.shape[4]
  local cs, sn = rope_tables(T, Dh, base, x.dtype)
  local half = Dh // 2
  local rot = gm.cat({-x:narrow(-1, half, half), x:narrow(-1, 0, half)}, -1)
  return x * cs + rot * sn
end
M.rope = rope
doc.add('gm.nn.rope', 'gm.nn.rope(x [B, H, T, Dh], base=10000) -> same shape',
  'Rotary position embedding as used by gm.nn.Attention{positions="rotary"}: channel pairs (i, i + Dh/2) of the ' ..
  'vector at position t are rotated by the angle t * base^(-2i/Dh) (the rotate-half layout of GPT-NeoX / LLaMA), ' ..
  'so q_t . k_s depends on t - s only. Dh must be even; the cos/sin tables are cached per (T, Dh, base, dtype).',
  {formula = 'rope(x)_t = x_t cos(t theta) + rotate_half(x_t) sin(t theta),  theta_i = base^(-2i/Dh)',
   paper = 'Su et al. 2021, RoFormer'})

-- ---- Attention and GatedAttention ------------------------------------------------------------
local ATT_DEFAULTS = {
  d_model = NONE, heads = 1, causal = true, dropout = 0, positions = NONE, max_len = 2048,
  rope_base = 10000, bias = true, dtype = 'f32', generator = NONE,
}

local function attention_init(self, name, o, gate_width)
  self.d_model = need_int(name, 'd_model', o.d_model, 1)
  self.heads = need_int(name, 'heads', o.heads, 1)
  if self.d_model % self.heads ~= 0 then
    error(('gm.nn.%s: d_model %d is not a multiple of heads %d'):format(name, self.d_model, self.heads), 4)
  end
  self.head_dim = self.d_model // self.heads
  self.causal = o.causal and true or false
  if type(o.dropout) ~= 'number' or o.dropout < 0 or o.dropout >= 1 then
    error(('gm.nn.%s: dropout must be in [0, 1), got %s'):format(name, tostring(o.dropout)), 4)
  end
  self.dropout = o.dropout
  if o.positions ~= nil and o.positions ~= 'learned' and o.positions ~= 'rotary' then
    error(('gm.nn.%s: positions must be nil, "learned" or "rotary", got %s'):format(name, tostring(o.positions)), 4)
  end
  if o.positions == 'rotary' and self.head_dim % 2 ~= 0 then
    error(('gm.nn.%s: rotary positions need an even head dim, got %d'):format(name, self.head_dim), 4)
  end
  self.positions = o.positions
  self.rope_base = o.rope_base
  self.max_len = need_int(name, 'max_len', o.max_len, 1)
  self.gate_width = gate_width
  local lin = {bias = o.bias, dtype = o.dtype, generator = o.generator}
  self.qkv = layers.Linear(self.d_model, 3 * self.d_model + gate_width, lin)
  self.out_proj = layers.Linear(self.d_model, self.d_model, lin)
  if o.positions == 'learned' then
    self.pos = layers.Embedding(self.max_len, self.d_model, {dtype = o.dtype, generator = o.generator})
    init.normal_(self.pos.weight, 0, 0.02, {generator = o.generator})
  end
  if self.dropout > 0 then self.drop = layers.Dropout(self.dropout, {generator = o.generator}) end
  self.keep_probs = false
end

-- Shared forward: returns the per-head outputs y [B, T, H, Dh] (before any gate), the gate
-- logits part of the projection (or nil), B and T.
local function attention_heads(self, name, x)
  local B, T = need_btd(name, x, self.d_model)
  local D, H, Dh = self.d_model, self.heads, self.head_dim
  if self.pos then
    if T > self.max_len then
      error(('gm.nn.%s: sequence length %d exceeds max_len %d of the learned positions'):format(name, T, self.max_len), 3)
    end
    x = x + self.pos.weight:narrow(0, 0, T)
  end
  local qkv = self.qkv(x)
  local function heads(i) return qkv:narrow(-1, i * D, D):reshape {B, T, H, Dh}:transpose(1, 2) end
  local q, k, v = heads(0), heads(1), heads(2)
  if self.positions == 'rotary' then q, k = rope(q, self.rope_base), rope(k, self.rope_base) end
  local out
  if self.drop and self.training then
    -- Dropout on the probabilities needs them: the composed path ([B, H, T, T] in memory).
    out = attention_naive(q, k, v, self.causal, nil, self.drop)
  else
    out = gm.sdpa(q, k, v, self.causal)
  end
  if self.keep_probs then
    local _, p = gm.no_grad(attention_naive, q:detach(), k:detach(), v:detach(), self.causal)
    self.last_probs = p
  end
  local gate = self.gate_width > 0 and qkv:narrow(-1, 3 * D, self.gate_width) or nil
  return out:transpose(1, 2), gate, B, T
end

local Attention = define('Attention',
  'gm.nn.Attention{d_model, heads=1, causal=true, dropout=0, positions=nil|"learned"|"rotary", max_len=2048, ' ..
  'rope_base=10000, bias=true, dtype="f32", generator}  ->  y = attn(x [B, T, d_model])',
  'Multi-head scaled dot-product self-attention. Children qkv (Linear d -> 3d, split into q, k, v of heads x ' ..
  'd/heads) and out_proj (Linear d -> d). The attention itself is the fused C op gm.sdpa (forward and backward on ' ..
  'the CPU in the input dtype, blocks of 64 query rows: extra memory per thread one or two [64, T] score blocks, ' ..
  'never the whole T x T matrix; q, k, v are read in place from the projection and the output is laid out ' ..
  '[B, T, H, Dh], so splitting and merging heads copies nothing); with ' ..
  'dropout > 0 in training mode it runs the composed gm.nn.attention_naive instead, dropping attention ' ..
  'probabilities as zoology does (that path holds [B, H, T, T]). positions: "learned" adds a table pos [max_len, d] ' ..
  '(init N(0, 0.02)) to the input, "rotary" rotates q and k (rotate-half RoPE, base rope_base). Set ' ..
  'attn.keep_probs = true to have each forward store attn.last_probs [B, H, T, T] (computed again by a separate ' ..
  'non-differentiable path, for probes such as the attention sink).',
  {formula = 'y = concat_h softmax(q_h k_h^T / sqrt(d_h) + causal mask) v_h W_o', paper = 'Vaswani et al. 2017'})
function Attention:init(...)
  local o = options('Attention', {'d_model', 'heads'}, ATT_DEFAULTS, ...)
  attention_init(self, 'Attention', o, 0)
end
function Attention:forward(x)
  local y, _, B, T = attention_heads(self, 'Attention', x)
  return self.out_proj(y:contiguous():reshape {B, T, self.d_model})
end
function Attention:extra_repr()
  return ('d_model=%d, heads=%d, causal=%s, dropout=%g, positions=%s'):format(self.d_model, self.heads,
    tostring(self.causal), self.dropout, tostring(self.positions))
end

local GA_DEFAULTS = {gate = 'elementwise'}
for k, v in pairs(ATT_DEFAULTS) do GA_DEFAULTS[k] = v end
GA_DEFAULTS.bias = false

local GatedAttention = define('GatedAttention',
  'gm.nn.GatedAttention{d_model, heads=1, gate="elementwise"|"headwise", causal=true, dropout=0, positions, ' ..
  'max_len, rope_base, bias=false, dtype, generator}  ->  y = attn(x [B, T, d_model])',
  'Attention with the query-dependent sigmoid output gate of Qiu et al. (position G1): the qkv projection is ' ..
  'widened by d_model gate logits ("elementwise": one per head channel) or heads ("headwise": one per head), ' ..
  'computed from the same hidden state x, and each head\'s SDPA output is multiplied by sigmoid(gate) before ' ..
  'out_proj. No biases by default (as the authors). After each forward, attn.last_gate holds the gate scores ' ..
  '(detached) [B, T, heads, head_dim] or [B, T, heads, 1]. Everything else as gm.nn.Attention (keep_probs, ' ..
  'positions, dropout).',
  {formula = 'Y_h = softmax(Q_h K_h^T / sqrt(d_h) + mask) V_h;  Y\'_h = Y_h * sigmoid(X W_g,h);  out = concat_h(Y\'_h) W_o',
   paper = 'Qiu et al. 2025, Gated Attention for Large Language Models'})
function GatedAttention:init(...)
  local o = options('GatedAttention', {'d_model', 'heads'}, GA_DEFAULTS, ...)
  if o.gate ~= 'elementwise' and o.gate ~= 'headwise' then
    error(('gm.nn.GatedAttention: gate must be "elementwise" or "headwise", got %s'):format(tostring(o.gate)), 3)
  end
  local heads = o.heads
  if math.type(heads) ~= 'integer' or heads < 1 then heads = 1 end
  attention_init(self, 'GatedAttention', o, o.gate == 'elementwise' and o.d_model or heads)
  self.gate = o.gate
end
function GatedAttention:forward(x)
  local y, g, B, T = attention_heads(self, 'GatedAttention', x)
  local H = self.heads
  g = g:sigmoid():reshape {B, T, H, self.gate == 'elementwise' and self.head_dim or 1}
  self.last_gate = g:detach()
  return self.out_proj((y * g):contiguous():reshape {B, T, self.d_model})
end
function GatedAttention:extra_repr()
  return Attention.extra_repr(self) .. ', gate=' .. self.gate
end

-- ---- GatedConv (BaseConv) -------------------------------------------------------------------

-- zoology's PositionalEmbedding(d_emb, L) features for t = 0..T-1: [t / (L-1), Re, Im of
-- exp(-i f 2 pi t / L)] with f = linspace(1e-4, bands - 1, bands), bands = (d_emb - 1) / 2.
local function filter_features(T, L, d_emb, dtype)
  local bands = (d_emb - 1) // 2
  local rows = {}
  for t = 0, T - 1 do
    local r = {L > 1 and t / (L - 1) or 0}
    for b = 0, bands - 1 do
      local f = bands > 1 and 1e-4 + b * (bands - 1 - 1e-4) / (bands - 1) or 1e-4
      r[#r + 1] = math.cos(f * 2 * math.pi * t / L)
    end
    for b = 0, bands - 1 do
      local f = bands > 1 and 1e-4 + b * (bands - 1 - 1e-4) / (bands - 1) or 1e-4
      r[#r + 1] = -math.sin(f * 2 * math.pi * t / L)
    end
    rows[t + 1] = r
  end
  return gm.tensor(rows, {dtype = dtype})
end

local GatedConv = define('GatedConv',
  'gm.nn.GatedConv{d_model, short_kernel=3, long=true, l_max=nil, residual=true, d_emb=3, d_hidden=16, ' ..
  'filter_activation="sin"|"relu", long_skip=false, bias=true, dtype="f32", generator}  ->  y = conv(x [B, T, d_model])',
  'Zoology\'s BaseConv gated convolution: a convolution branch (a short depthwise causal conv of short_kernel ' ..
  'taps, weight short_w [K, d] and bias short_b, then, when long, an implicit long causal conv whose [T, d] ' ..
  'filter is an MLP of zoology\'s positional features z(t): filter1 (Linear d_emb -> d_hidden), sin(w h) with a ' ..
  'learned frequency w [1, d_hidden] (filter_freq, init 1, as Hyena\'s Sin activation), filter2 ' ..
  '(Linear d_hidden -> d)) times a linear branch proj(x), plus x when ' ..
  'residual (BaseConv\'s own residual). filter_activation = "relu" puts a ReLU between filter1 and filter2 instead ' ..
  '(no frequency; zoology\'s ImplicitLongConvolution since Oct 2023, the version behind its Figure 2); long_skip ' ..
  'adds the long conv\'s input to its output (zoology\'s fft_conv returns k * u + u). ' ..
  'short_kernel = 0 leaves the short conv out (zoology\'s long layers), ' ..
  'long = false the long one (its short layers). Both convolutions are the C op gm.causal_conv1d, computed ' ..
  'directly on the CPU (O(B T K d), K = T for the long one; no FFT). l_max: the length that normalises the ' ..
  'filter positions (default: each call\'s T).',
  {formula = 'y = long_conv(short_conv(x)) * (x W_p + b_p) + x,  long filter k[t] = W_2 sin(w * (W_1 z(t))) ' ..
             '(or W_2 relu(W_1 z(t))),  long_conv(u) = k * u (+ u with long_skip)',
   paper = 'Arora et al. 2023, Zoology (BaseConv); Poli et al. 2023, Hyena (implicit filters)'})
function GatedConv:init(...)
  local o = options('GatedConv', {'d_model'}, {
    d_model = NONE, short_kernel = 3, long = true, l_max = NONE, residual = true, d_emb = 3, d_hidden = 16,
    filter_activation = 'sin', long_skip = false, bias = true, dtype = 'f32', generator = NONE}, ...)
  local D = need_int('GatedConv', 'd_model', o.d_model, 1)
  self.d_model = D
  self.short_kernel = need_int('GatedConv', 'short_kernel', o.short_kernel, 0)
  self.long = o.long and true or false
  if self.short_kernel == 0 and not self.long then
    error('gm.nn.GatedConv: short_kernel = 0 with long = false leaves no convolution', 3)
  end
  self.l_max = o.l_max
  self.residual = o.residual and true or false
  if o.filter_activation ~= 'sin' and o.filter_activation ~= 'relu' then
    error(('gm.nn.GatedConv: filter_activation must be "sin" or "relu", got %s'):format(tostring(o.filter_activation)), 3)
  end
  self.filter_activation, self.long_skip = o.filter_activation, o.long_skip and true or false
  self.d_emb = need_int('GatedConv', 'd_emb', o.d_emb, 1)
  local lin = {bias = o.bias, dtype = o.dtype, generator = o.generator}
  self.proj = layers.Linear(D, D, lin)
  if self.short_kernel > 0 then
    local bound = 1 / math.sqrt(self.short_kernel)
    self.short_w = init.uniform_(param({self.short_kernel, D}, o.dtype), -bound, bound, {generator = o.generator})
    self.short_b = init.uniform_(param({D}, o.dtype), -bound, bound, {generator = o.generator})
  end
  if self.long then
    local hdim = need_int('GatedConv', 'd_hidden', o.d_hidden, 1)
    self.filter1 = layers.Linear(self.d_emb, hdim, lin)
    if self.filter_activation == 'sin' then self.filter_freq = gm.ones({1, hdim}, {dtype = o.dtype, requires_grad = true}) end
    self.filter2 = layers.Linear(hdim, D, lin)
  end
end
-- The long filter [T, d] for length T.
function GatedConv:long_filter(T)
  local z = filter_features(T, self.l_max or T, self.d_emb, self.proj.weight.dtype)
  local h = self.filter1(z)
  return self.filter2(self.filter_freq and (h * self.filter_freq):sin() or h:relu())
end
function GatedConv:forward(x)
  local _, T = need_btd('GatedConv', x, self.d_model)
  local u = x
  if self.short_w then u = gm.causal_conv1d(u, self.short_w) + self.short_b end
  if self.long then
    local c = gm.causal_conv1d(u, self:long_filter(T))
    u = self.long_skip and c + u or c
  end
  local y = u * self.proj(x)
  if self.residual then y = y + x end
  return y
end
function GatedConv:extra_repr()
  return ('d_model=%d, short_kernel=%d, long=%s, residual=%s, filter_activation=%s, long_skip=%s'):format(self.d_model,
    self.short_kernel, tostring(self.long), tostring(self.residual), self.filter_activation, tostring(self.long_skip))
end

-- ---- GLA ----------------------------------------------------------------------------------

-- The chunkwise form is the C op gm.gla_chunk (fused backward); this keeps the positional call.
local function gla_chunk(q, k, v, g, chunk, sub, scale)
  return gm.gla_chunk(q, k, v, g, {chunk = chunk or 16, sub = sub, scale = scale})
end
M.gla_chunk = gla_chunk
doc.add('gm.nn.gla_chunk', 'gm.nn.gla_chunk(q, k, v, log_gate [B, H, T, D], chunk=16, sub=min(chunk, 8), scale=1/sqrt(Dk)) -> o [B, H, T, Dv]',
  'The chunkwise-parallel form of gated linear attention (same result as the recurrent op gm.gla): the C op ' ..
  'gm.gla_chunk with a default chunk. The state S [Dk, Dv] passes between chunks of `chunk` steps through matmuls; ' ..
  'inside a chunk, with b the cumsum of the log gates, secondary chunks of `sub` steps interact through matmuls with ' ..
  'decay factors exp(b_t - r) and exp(r - b_s) (both <= 1, r the b just before the later secondary chunk), and ' ..
  'within a secondary chunk the scores are computed in log space, sum_m q_tm k_sm exp(b_tm - b_sm), so no decay is ' ..
  'ever divided by. The backward is fused (C): it recomputes the scores and keeps the state at each chunk start ' ..
  '(ceil(T / chunk) Dk Dv values per thread, besides one chunk\'s operands and [chunk, chunk] scores).',
  {formula = 'O_[i] = (Q_[i] * B_[i]) S_[i-1] + ((Q_[i] * B_[i]) (K_[i] / B_[i])^T * M) V_[i];  S_[i] = diag(gamma_i) S_[i-1] + (K_[i] * gamma_i / B_[i])^T V_[i]',
   paper = 'Yang et al. 2024, Gated Linear Attention Transformers with Hardware-Efficient Training, sec. 4'})

local GLA = define('GLA',
  'gm.nn.GLA{d_model, heads=4, mode="chunk"|"recurrent", chunk=16, sub_chunk=min(chunk, 8), expand_k=0.5, expand_v=1, ' ..
  'gate_low_rank=16, gate_logit_normalizer=16, conv=0, norm_eps=1e-5, dtype="f32", generator}  ->  y = gla(x [B, T, d])',
  'Gated linear attention layer as fla\'s: q, k (Linear d -> d_k = expand_k d), v (d -> d_v = expand_v d), no ' ..
  'biases; the key-wise forget gate log alpha = logsigmoid(x W1 W2 + b) / gate_logit_normalizer with the low-rank ' ..
  'gk_proj (W1: d -> gate_low_rank, W2: -> d_k with bias); optional short causal convolutions of conv taps with ' ..
  'SiLU on q, k, v (conv = 0: none; fla uses 4); per head the recurrence S_t = diag(alpha_t) S_{t-1} + k_t^T v_t, ' ..
  'o_t = q_t S_t / sqrt(d_k / heads); then per-head RMSNorm (weight norm [d_v / heads]), times swish(g_proj x) ' ..
  '(d -> d_v), o_proj (d_v -> d). mode "recurrent" runs the C op gm.gla (step by step, fused backward); "chunk" runs ' ..
  'the C op gm.gla_chunk (chunks of `chunk` steps, secondary chunks of sub_chunk = min(chunk, 8); fused backward). ' ..
  'The five projections of x (q, k, v, g_proj and W1) run as one product of their stacked weights (same values).',
  {formula = 'S_t = diag(alpha_t) S_{t-1} + k_t^T v_t;  o_t = q_t S_t / sqrt(d_k);  alpha_t = sigmoid(x_t W1 W2 + b)^(1/16);  ' ..
             'y = W_o (RMSNorm(o) * swish(x W_g))',
   paper = 'Yang et al. 2024, Gated Linear Attention Transformers with Hardware-Efficient Training'})
function GLA:init(...)
  local o = options('GLA', {'d_model', 'heads'}, {
    d_model = NONE, heads = 4, mode = 'chunk', chunk = 16, sub_chunk = NONE, expand_k = 0.5, expand_v = 1,
    gate_low_rank = 16, gate_logit_normalizer = 16, conv = 0, norm_eps = 1e-5, dtype = 'f32', generator = NONE}, ...)
  local D = need_int('GLA', 'd_model', o.d_model, 1)
  self.d_model, self.heads = D, need_int('GLA', 'heads', o.heads, 1)
  if o.mode ~= 'chunk' and o.mode ~= 'recurrent' then
    error(('gm.nn.GLA: mode must be "chunk" or "recurrent", got %s'):format(tostring(o.mode)), 3)
  end
  self.mode = o.mode
  self.chunk = need_int('GLA', 'chunk', o.chunk, 1)
  self.sub_chunk = o.sub_chunk and need_int('GLA', 'sub_chunk', o.sub_chunk, 1) or nil
  local dk, dv = math.floor(D * o.expand_k + 0.5), math.floor(D * o.expand_v + 0.5)
  if dk % self.heads ~= 0 or dv % self.heads ~= 0 or dk < 1 then
    error(('gm.nn.GLA: key dim %d and value dim %d must be positive multiples of heads %d'):format(dk, dv, self.heads), 3)
  end
  self.d_k, self.d_v = dk, dv
  self.normalizer = o.gate_logit_normalizer
  self.eps = o.norm_eps
  local nb = {bias = false, dtype = o.dtype, generator = o.generator}
  self.q_proj = layers.Linear(D, dk, nb)
  self.k_proj = layers.Linear(D, dk, nb)
  self.v_proj = layers.Linear(D, dv, nb)
  self.gk_proj = layers.Sequential(layers.Linear(D, need_int('GLA', 'gate_low_rank', o.gate_low_rank, 1), nb),
                                   layers.Linear(o.gate_low_rank, dk, {dtype = o.dtype, generator = o.generator}))
  self.g_proj = layers.Linear(D, dv, nb)
  self.o_proj = layers.Linear(dv, D, nb)
  self.norm = layers.RMSNorm(dv // self.heads, {eps = o.norm_eps, dtype = o.dtype})
  self.conv = need_int('GLA', 'conv', o.conv, 0)
  if self.conv > 0 then
    local bound = 1 / math.sqrt(self.conv)
    for _, n in ipairs {{'q_conv', dk}, {'k_conv', dk}, {'v_conv', dv}} do
      self[n[1]] = init.uniform_(param({self.conv, n[2]}, o.dtype), -bound, bound, {generator = o.generator})
    end
  end
end
function GLA:forward(x)
  local B, T = need_btd('GLA', x, self.d_model)
  local H = self.heads
  -- The five projections of x (q, k, v, the output gate and the gate's low-rank first half) as
  -- one product with their weights stacked: the same values as calling each Linear, at the
  -- speed of one wide gemm instead of five narrow ones (d_k is d/2 at the defaults).
  local dk, dv, lr = self.d_k, self.d_v, self.gk_proj[0].weight.shape[1]
  local y = x:matmul(gm.cat({self.q_proj.weight, self.k_proj.weight, self.v_proj.weight, self.g_proj.weight,
                             self.gk_proj[0].weight}, 0):t())
  local q, k, v = y:narrow(-1, 0, dk), y:narrow(-1, dk, dk), y:narrow(-1, 2 * dk, dv)
  local gate, low = y:narrow(-1, 2 * dk + dv, dv), y:narrow(-1, 2 * dk + 2 * dv, lr)
  if self.conv > 0 then
    q, k, v = gm.causal_conv1d(q, self.q_conv):silu(), gm.causal_conv1d(k, self.k_conv):silu(),
              gm.causal_conv1d(v, self.v_conv):silu()
  end
  local g = self.gk_proj[1](low):logsigmoid() / self.normalizer
  local function heads(t, d) return t:reshape {B, T, H, d // H}:transpose(1, 2) end
  q, k, v, g = heads(q, self.d_k), heads(k, self.d_k), heads(v, self.d_v), heads(g, self.d_k)
  local o
  if self.mode == 'recurrent' then o = gm.gla(q, k, v, g)
  else o = gm.gla_chunk(q, k, v, g, {chunk = self.chunk, sub = self.sub_chunk}) end
  o = self.norm(o:transpose(1, 2)):reshape {B, T, self.d_v}
  return self.o_proj(o * gate:silu())
end
function GLA:extra_repr()
  return ('d_model=%d, heads=%d, mode=%s, chunk=%d, d_k=%d, d_v=%d, conv=%d'):format(self.d_model, self.heads,
    self.mode, self.chunk, self.d_k, self.d_v, self.conv)
end

-- ---- LM -------------------------------------------------------------------------------------
local MIXERS = {attention = 'Attention', gated_attention = 'GatedAttention', gated_conv = 'GatedConv',
                base_conv = 'GatedConv', gla = 'GLA'}

-- A mixer for block i (0-based) from the LM's mixer option.
local function make_mixer(spec, i, o)
  if type(spec) == 'function' then
    local m = spec(i, o)
    if not is_module(m) then error('gm.nn.LM: the mixer function must return a module', 4) end
    return m
  end
  local name, extra = spec, {}
  if type(spec) == 'table' then name, extra = spec[1], spec end
  local cls = MIXERS[name] or (M[name] and name)
  if not cls then
    error(('gm.nn.LM: unknown mixer %s (attention, gated_attention, gated_conv, a {name, options...} table ' ..
           'or a function(i, opts) -> module)'):format(tostring(name)), 4)
  end
  local opts = {d_model = o.d_model, dtype = o.dtype, generator = o.generator}
  if cls == 'GLA' then opts.heads = o.heads end
  if cls == 'Attention' or cls == 'GatedAttention' then
    opts.heads = o.heads
    if o.positions == 'rotary' then opts.positions = 'rotary' end
  end
  for k, v in pairs(extra) do if k ~= 1 then opts[k] = v end end
  if type(extra.layers) == 'table' then opts.layers = nil end
  return M[cls](opts)
end

local Block = Module:extend('LMBlock')
function Block:forward(h)
  h = h + self.mixer(self.norm1(h))
  local aux
  if self.state then
    local y, a = self.state(self.norm2(h))
    aux = a
    h = h + y
  end
  return h, aux
end

local LM = define('LM',
  'gm.nn.LM{vocab, d_model, layers=2, mixer="attention", heads=1, state_mixer=nil|"mlp"|"moe"|"identity", d_ff=4*d_model, ' ..
  'moe={...}, tie_head=true, positions=nil|"learned"|"rotary", max_len=2048, emb_dropout=0, dtype="f32", ' ..
  'generator}  ->  logits = lm(ids [B, T] i32, select=nil)',
  'A small language model as zoology\'s: embedding (+ learned positions [max_len, d] when positions = "learned"; ' ..
  '"rotary" is handed to the attention mixers), embedding dropout, `layers` pre-norm residual blocks ' ..
  '(h = h + mixer(LN(h)); then, with a state mixer, h = h + mlp(LN(h)) or h + moe(LN(h)), or h + LN(h) for "identity": ' ..
  'zoology\'s blocks with state_mixer = Identity, its "no MLP" models, add the normed residual back), a final LayerNorm and ' ..
  'a head tied to the embedding (tie_head) or its own Linear. mixer: "attention", "gated_attention", "gla", "gated_conv" ' ..
  '(or "base_conv"), a table {name, option = value, ...} passed to that mixer, or a function(i, opts) -> module ' ..
  '(i the 0-based block). moe: options of gm.nn.MoE (d_model is set; d_ff defaults to d_ff, experts to 4); the ' ..
  'blocks\' auxiliary loss tables are in lm.aux (one per block) after each forward and their balance losses ' ..
  'summed in lm.aux_loss (nil without MoE). Zoology\'s init: N(0, 0.02) for every ' ..
  'Linear and Embedding weight, zero biases, out_proj / fc2 weights N(0, 0.02 / sqrt(2 layers)). select: ' ..
  'optional i32 tensor [N] of flat positions b*T + t: the head then runs on those N rows only and the logits are ' ..
  '[N, vocab] instead of [B, T, vocab] (associative recall scores a few positions per sequence).',
  {formula = 'h_0 = E[ids] (+ P); h_l = h_{l-1} + mixer(LN(h_{l-1})) (+ state(LN(.))); logits = LN(h_L) E^T',
   paper = 'Arora et al. 2023, Zoology (model and init)'})
function LM:init(...)
  local o = options('LM', {'vocab', 'd_model', 'layers'}, {
    vocab = NONE, d_model = NONE, layers = 2, mixer = 'attention', heads = 1, state_mixer = NONE, d_ff = NONE,
    moe = NONE, tie_head = true, positions = NONE, max_len = 2048, emb_dropout = 0, dtype = 'f32',
    generator = NONE}, ...)
  self.vocab = need_int('LM', 'vocab', o.vocab, 1)
  self.d_model = need_int('LM', 'd_model', o.d_model, 1)
  self.n_layers = need_int('LM', 'layers', o.layers, 1)
  self.max_len = need_int('LM', 'max_len', o.max_len, 1)
  if o.positions ~= nil and o.positions ~= 'learned' and o.positions ~= 'rotary' then
    error(('gm.nn.LM: positions must be nil, "learned" or "rotary", got %s'):format(tostring(o.positions)), 3)
  end
  if o.state_mixer ~= nil and o.state_mixer ~= 'mlp' and o.state_mixer ~= 'moe' and o.state_mixer ~= 'identity' then
    error(('gm.nn.LM: state_mixer must be nil, "mlp", "moe" or "identity", got %s'):format(tostring(o.state_mixer)), 3)
  end
  self.positions, self.state_mixer, self.tie_head = o.positions, o.state_mixer, o.tie_head and true or false
  local D, g = self.d_model, o.generator
  local d_ff = o.d_ff or 4 * D
  self.embed = layers.Embedding(self.vocab, D, {dtype = o.dtype, generator = g})
  if o.positions == 'learned' then self.pos = layers.Embedding(self.max_len, D, {dtype = o.dtype, generator = g}) end
  if o.emb_dropout > 0 then self.emb_drop = layers.Dropout(o.emb_dropout, {generator = g}) end
  self.blocks = layers.ModuleList()
  for i = 0, self.n_layers - 1 do
    local b = Block()
    b.norm1 = layers.LayerNorm(D, {dtype = o.dtype})
    b.mixer = make_mixer(o.mixer, i, o)
    if o.state_mixer then
      b.norm2 = layers.LayerNorm(D, {dtype = o.dtype})
      if o.state_mixer == 'identity' then
        b.state = layers.Identity()
      elseif o.state_mixer == 'mlp' then
        b.state = layers.MLP(D, d_ff, {activation = 'gelu', dtype = o.dtype, generator = g})
      else
        local mo = {d_model = D, d_ff = d_ff, experts = 4, dtype = o.dtype, generator = g}
        for k, v in pairs(o.moe or {}) do mo[k] = v end
        b.state = require('gmoe.nn.moe').MoE(mo)
      end
    end
    self.blocks:append(b)
  end
  self.norm_f = layers.LayerNorm(D, {dtype = o.dtype})
  if not self.tie_head then self.head = layers.Linear(D, self.vocab, {bias = false, dtype = o.dtype, generator = g}) end
  -- zoology's _init_weights: Linear and Embedding weights N(0, 0.02), biases 0; residual output
  -- projections (out_proj, fc2) scaled by 1/sqrt(2 n_layers).
  local out_std = 0.02 / math.sqrt(2 * self.n_layers)
  for _, e in ipairs(self:named_modules()) do
    local name, m = e[1], e[2]
    if layers.Linear:is_instance(m) or layers.Embedding:is_instance(m) then
      local leaf = name:match('([^.]+)$') or name
      init.normal_(m.weight, 0, (leaf == 'out_proj' or leaf == 'fc2') and out_std or 0.02, {generator = g})
      if m.bias then init.zeros_(m.bias) end
    end
  end
end
function LM:forward(ids, select)
  if not gm.is_tensor(ids) or ids.dtype ~= 'i32' or #ids.shape ~= 2 then
    error(('gm.nn.LM: ids must be an i32 tensor [B, T], got %s'):format(
      gm.is_tensor(ids) and (ids.dtype .. '[' .. table.concat(ids.shape, ', ') .. ']') or type(ids)), 2)
  end
  local B, T = ids.shape[1], ids.shape[2]
  local h = self.embed(ids)
  if self.pos then
    if T > self.max_len then error(('gm.nn.LM: sequence length %d exceeds max_len %d'):format(T, self.max_len), 2) end
    h = h + self.pos.weight:narrow(0, 0, T)
  end
  if self.emb_drop then h = self.emb_drop(h) end
  local aux, auxes = nil, {}
  for i, b in ipairs(self.blocks:children()) do
    local a
    h, a = b(h)
    auxes[i] = a
    if type(a) == 'table' and gm.is_tensor(a.balance) then aux = aux and aux + a.balance or a.balance end
  end
  self.aux, self.aux_loss = auxes, aux
  h = self.norm_f(h)
  if select ~= nil then
    if not gm.is_tensor(select) or select.dtype ~= 'i32' then
      error('gm.nn.LM: select must be an i32 tensor of flat positions b*T + t', 2)
    end
    h = gm.index_select(h:reshape {B * T, self.d_model}, 0, select:reshape {-1})
  end
  if self.tie_head then return h:matmul(self.embed.weight:transpose(0, 1)) end
  return self.head(h)
end
function LM:extra_repr()
  return ('vocab=%d, d_model=%d, layers=%d, state_mixer=%s, tie_head=%s, positions=%s'):format(self.vocab,
    self.d_model, self.n_layers, tostring(self.state_mixer), tostring(self.tie_head), tostring(self.positions))
end

return M
