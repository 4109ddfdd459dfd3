-- mqar.lua: the pieces of the associative-recall experiment (experiments/associative_recall.lua):
-- the arms as gm.nn.LM models built as zoology builds them (papers.md §7.2), MQAR data with the
-- answer positions gathered once, the accuracy metric (per example over its labelled positions,
-- then over examples, as zoology's compute_metrics) and one training run (AdamW, cosine per epoch,
-- early stop on validation accuracy).
local gm = require 'gmoe'

local M = {}

M.ARMS = {'attention', 'gated_attention', 'base_conv', 'gla', 'gla_hybrid', 'moe'}
local KNOWN = {}
for _, a in ipairs(M.ARMS) do KNOWN[a] = true end
M.KNOWN = KNOWN

-- zoology's BaseConv of a 2-layer stack with kernel_size = [3, -1, ...]: even layers a short
-- causal conv (k = 3), odd layers the implicit long conv; each gated by a linear branch, plus
-- the residual. The long conv as zoology's code at the time of its Figure 2: a ReLU filter MLP
-- and fft_conv's skip (k * u + u).
local function base_conv(i, o, T)
  if i % 2 == 0 then
    return gm.nn.GatedConv {d_model = o.d_model, short_kernel = 3, long = false, generator = o.generator}
  end
  return gm.nn.GatedConv {d_model = o.d_model, short_kernel = 0, long = true, l_max = T, filter_activation = 'relu',
                          long_skip = true, generator = o.generator}
end

--- lm, aux_weight = M.model(arm, {vocab, d_model, seq_len, dropout, emb_dropout, experts, top_k, generator})
-- Every arm: 2 pre-norm blocks, tied head, zoology's init (gm.nn.LM), state mixer Identity
-- (zoology's "no MLP": the block adds LN(h) back) except moe, whose state mixer is the MoE.
function M.model(arm, o)
  local T, g = o.seq_len, o.generator
  local lm = {vocab = o.vocab, d_model = o.d_model, layers = 2, emb_dropout = o.emb_dropout, generator = g,
              state_mixer = 'identity'}
  if arm == 'attention' or arm == 'gated_attention' or arm == 'moe' then
    -- zoology's MHA: 1 head, dropout on the attention probabilities, learned absolute positions.
    lm.mixer = {arm == 'gated_attention' and 'gated_attention' or 'attention', dropout = o.dropout}
    lm.positions, lm.max_len = 'learned', T
    if arm == 'moe' then
      lm.state_mixer = 'moe'
      lm.moe = {experts = o.experts, d_ff = o.d_model, gate = gm.gates.TopK {k = o.top_k}}
    end
  elseif arm == 'base_conv' then
    lm.mixer = function(i, opts) return base_conv(i, opts, T) end
  elseif arm == 'gla' then
    lm.mixer = {'gla', heads = 2}
  elseif arm == 'gla_hybrid' then
    -- zoology's add_gla: Hybrid([BaseConv(kernel_size = 3), GLA(2 heads)]) picks configs[layer % 2].
    lm.mixer = function(i, opts)
      if i % 2 == 0 then return base_conv(0, opts, T) end
      return gm.nn.GLA {d_model = opts.d_model, heads = 2, generator = opts.generator}
    end
  else
    error('mqar: unknown arm ' .. tostring(arm), 2)
  end
  return gm.nn.LM(lm), arm == 'moe' and o.aux_weight or 0
end

--- A data split: inputs [N, T] i32, pos [N, D] i32 (the labelled positions of each row, in order),
-- vals [N, D] i32 (the answers), from gm.data.mqar (one pass: exactly D labels per row).
function M.split(n, o, gen)
  local ids, labels = gm.data.mqar {n = n, vocab_size = o.vocab, seq_len = o.seq_len, num_kv_pairs = o.num_kv_pairs,
                                    generator = gen}
  local T, D = o.seq_len, o.num_kv_pairs
  -- The labelled positions are the D largest of (label >= 0) * T - t: the smallest t first.
  local score = labels:ge(0):to('i32') * T - gm.arange(T, {dtype = 'i32'}):reshape {1, T}
  local _, pos = score:topk(D, -1)
  pos = pos:to('i32')
  local vals = gm.gather(labels, 1, pos)
  return {ids = ids, labels = labels, pos = pos, vals = vals, n = n, T = T, D = D}
end

-- Rows idx (i32 [B]) of a split: ids [B, T], flat selected positions b*T + t [B*D], answers [B*D].
local function batch(s, idx)
  local B = idx.shape[1]
  local ids = gm.index_select(s.ids, 0, idx)
  local off = gm.arange(B, {dtype = 'i32'}):reshape {B, 1} * s.T
  local sel = (gm.index_select(s.pos, 0, idx) + off):reshape {-1}
  return ids, sel, gm.index_select(s.vals, 0, idx):reshape {-1}
end
M.batch = batch

--- acc = M.accuracy(pred, target): zoology's metric. pred, target [N, K] integer tensors (or
-- tables of rows); positions whose target is -100 are ignored; each row's accuracy is the mean
-- correctness over its scored positions, and acc the mean over the rows that have any.
function M.accuracy(pred, target)
  if gm.is_tensor(pred) then pred = pred:totable() end
  if gm.is_tensor(target) then target = target:totable() end
  local sum, rows = 0, 0
  for i, trow in ipairs(target) do
    local hit, cnt = 0, 0
    for j, t in ipairs(trow) do
      if t ~= -100 then
        cnt = cnt + 1
        if pred[i][j] == t then hit = hit + 1 end
      end
    end
    if cnt > 0 then sum, rows = sum + hit / cnt, rows + 1 end
  end
  return rows > 0 and sum / rows or 0 / 0
end

--- M.evaluate(lm, split, batch_size) -> accuracy (model in eval mode, no gradients).
function M.evaluate(lm, s, bs)
  lm:eval()
  local preds = {}
  gm.no_grad(function()
    for start = 0, s.n - 1, bs do
      local B = math.min(bs, s.n - start)
      local ids, sel = batch(s, gm.arange(start, start + B, {dtype = 'i32'}))
      preds[#preds + 1] = lm(ids, sel):argmax(-1):to('i32'):reshape {B, s.D}
    end
  end)
  lm:train()
  return M.accuracy(gm.cat(preds, 0), s.vals)
end

--- One training run. o: arm, lr, epochs, batch_size, weight_decay, threshold, eval_batch, the model
-- options of M.model, generator (init), shuffle (generator). on_epoch(epoch, val_acc, loss, seconds)
-- is called after each epoch. Returns {epochs_run, best_val_acc, test_acc (at the best epoch),
-- params, train_seconds}.
function M.train(o, train, val, test, on_epoch)
  local lm, aux_w = M.model(o.arm, o)
  local opt = gm.optim.AdamW(lm:parameters(), {lr = o.lr, weight_decay = o.weight_decay})
  -- zoology: CosineAnnealingLR(T_max = max_epochs, eta_min = 0), stepped once per epoch.
  local sched = gm.optim.LRScheduler(opt, gm.optim.schedule.cosine(o.epochs))
  local best, test_acc, epochs_run, seconds = -1, 0 / 0, 0, 0
  local bs = o.batch_size
  for epoch = 1, o.epochs do
    local t0 = gm.clock()
    local perm = gm.randperm(train.n, {generator = o.shuffle}):to('i32')
    local loss_sum, steps = 0, 0
    for start = 0, train.n - 1, bs do
      local ids, sel, tgt = batch(train, perm:narrow(0, start, math.min(bs, train.n - start)))
      opt:zero_grad()
      local loss = gm.cross_entropy(lm(ids, sel), tgt)
      local total = aux_w > 0 and lm.aux_loss and loss + aux_w * lm.aux_loss or loss
      total:backward()
      opt:step()
      loss_sum, steps = loss_sum + loss:item(), steps + 1
    end
    sched:step()
    seconds = seconds + (gm.clock() - t0)
    local acc = M.evaluate(lm, val, o.eval_batch)
    epochs_run = epoch
    if acc > best then
      best = acc
      if test then test_acc = M.evaluate(lm, test, o.eval_batch) end
    end
    if on_epoch then on_epoch(epoch, acc, loss_sum / steps, seconds) end
    if acc > o.threshold then break end
  end
  return {epochs_run = epochs_run, best_val_acc = best, test_acc = test_acc, params = lm:num_parameters(),
          train_seconds = seconds}
end

return M
