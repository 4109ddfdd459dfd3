-- tiny_lm.lua: the training loop shared by the small language-model studies (attention_sink,
-- topp_routing, dense_to_sparse): AdamW with linear warm-up and cosine decay, optional gradient
-- clipping, periodic evaluation, a stop on a non-finite loss (the run diverged), wall time.
local gm = require 'gmoe'

local M = {}

--- M.train{model, params=, batch=function(step) -> x, y, ..., loss=function(model, x, y, ...) -> loss,
---   steps, lr, warmup=0, weight_decay=0.1, clip=nil, eval_every=0, eval=function(step, seconds),
---   on_step=function(step, loss_value, seconds), interrupt=function()}
--- -> {diverged = bool, steps = steps run, seconds = training wall time, cpu = training CPU time of the
--- process (os.clock; evaluation excluded from both). On a shared machine run with one thread and
--- compare cpu: wall time then measures the other processes as much as the model.
function M.train(o)
  local params = o.params or o.model:parameters()
  local opt = gm.optim.AdamW(params, {lr = o.lr, weight_decay = o.weight_decay or 0.1})
  local sched = gm.optim.LRScheduler(opt, gm.optim.schedule.cosine(o.steps, {warmup = o.warmup or 0}))
  local seconds, cpu, diverged = 0.0, 0.0, false
  o.model:train()
  if o.eval and (o.eval_every or 0) > 0 then
    o.model:eval(); o.eval(0, 0.0, 0.0); o.model:train()
  end
  local step = 0
  while step < o.steps do
    step = step + 1
    local t0, c0 = gm.clock(), os.clock()
    local batch = table.pack(o.batch(step))
    local loss = o.loss(o.model, table.unpack(batch, 1, batch.n))
    local lv = loss:item()
    if lv ~= lv or lv == math.huge or lv == -math.huge then
      diverged = true
      break
    end
    opt:zero_grad()
    loss:backward()
    if o.clip then gm.optim.clip_grad_norm(params, o.clip) end
    opt:step()
    sched:step()
    seconds, cpu = seconds + (gm.clock() - t0), cpu + (os.clock() - c0)
    if o.on_step then o.on_step(step, lv, seconds, cpu) end
    if o.eval and (o.eval_every or 0) > 0 and (step % o.eval_every == 0 or step == o.steps) then
      o.model:eval(); o.eval(step, seconds, cpu); o.model:train()
    end
  end
  return {diverged = diverged, steps = step, seconds = seconds, cpu = cpu}
end

--- M.kinds_corpus(text, kinds [n] i32, answer [n] i32, val_fraction) -> corpus with
--- :batch_kinds(split, B, T, gen) -> x [B, T], y [B, T], kind [B, T], answer [B, T] (i32; kind of each
--- input character; answer: 1 where the target y is an answer character)
function M.kinds_corpus(text, kinds, answer, val_fraction)
  local C = gm.data.CharCorpus_from_string(text, {level = 'byte', val_fraction = val_fraction or 0.1})
  local n_train = C.train.shape[1]
  local n = C.data.shape[1]
  local function split(t) return {train = t:narrow(0, 0, n_train), val = t:narrow(0, n_train, n - n_train)} end
  C.kinds, C.answer = split(kinds), split(answer)
  function C.batch_kinds(self, which, B, T, gen)
    local src = self[which]
    local starts = gm.randint(0, src.shape[1] - T, {B, 1}, {generator = gen})
    local idx = (starts + gm.arange(0, T + 1):reshape {1, T + 1}):reshape {B * (T + 1)}
    local w = src:index_select(0, idx):reshape {B, T + 1}
    local k = self.kinds[which]:index_select(0, idx):reshape {B, T + 1}
    local a = self.answer[which]:index_select(0, idx):reshape {B, T + 1}
    return w:narrow(1, 0, T), w:narrow(1, 1, T), k:narrow(1, 0, T):contiguous(), a:narrow(1, 1, T):contiguous()
  end
  return C
end

--- M.copy_arithmetic_data(cfg, run) -> C, val: the copy / addition corpus of the routing studies
--- (gm.data.copy_arithmetic_text from cfg.corpus_chars, cfg.digits, cfg.hard_fraction and the run's
--- 'corpus' seed, as M.kinds_corpus) and its cfg.eval_batches fixed validation batches
--- {x, y, kind, answer} of cfg.batch x cfg.seq_len, drawn with the run's 'val' seed.
function M.copy_arithmetic_data(cfg, run)
  local text, kinds, answer = gm.data.copy_arithmetic_text {chars = cfg.corpus_chars,
    hard_fraction = cfg.hard_fraction, digits = cfg.digits, seed = run:seed('corpus')}
  local C = M.kinds_corpus(text, kinds, answer)
  run:log('corpus: %s', tostring(C))
  local vgen = gm.Generator(run:seed('val'))
  local val = {}
  for i = 1, cfg.eval_batches do val[i] = {C:batch_kinds('val', cfg.batch, cfg.seq_len, vgen)} end
  return C, val
end

--- M.val_loss(lm, val) -> the mean cross-entropy of lm over the batches val = {{x, y, ...}, ...},
--- without recording a graph.
function M.val_loss(lm, val)
  return gm.no_grad(function()
    local s = 0
    for _, v in ipairs(val) do s = s + gm.cross_entropy(lm(v[1]), v[2]):item() end
    return s / #val
  end)
end

--- M.moe_layers(lm) -> the gm.nn.MoE state mixers of an LM's blocks, in order.
function M.moe_layers(lm)
  local out = {}
  for _, b in ipairs(lm.blocks:children()) do out[#out + 1] = b.state end
  return out
end

--- M.active(moe) -> [T] f64: experts each token of the layer's last forward was routed to
--- (ids >= 0 of moe.last_stats.ids).
function M.active(moe) return moe.last_stats.ids:ge(0):to('f64'):sum(-1) end

--- M.finite(x): x is a finite number.
function M.finite(x) return x == x and x ~= math.huge and x ~= -math.huge end

M.list = gm.experiment.list -- '+'-separated config values

return M
