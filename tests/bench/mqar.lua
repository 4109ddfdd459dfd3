-- mqar.lua: the MQAR training step of experiments/associative_recall.lua (issue 12): its model
-- (experiments/lib/mqar.lua's M.model, as the CPU preset builds it: attention-probability dropout
-- 0, embedding dropout 0.1) for attention and base_conv at T = 256, d = 64, batch 64, V = 8192,
-- D = 16 answer positions per row, logits at those positions only, cross-entropy, backward,
-- AdamW; timed interleaved with the same step in PyTorch (tests/bench/torch_mqar.py) at the same
-- thread count. Target: >= 2x faster than PyTorch.
-- Usage: gmoe tests/bench/mqar.lua [reps]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local B = require 'common'
local peer = require 'peer'
local Q = dofile(dir .. '/../../experiments/lib/mqar.lua')

local reps = tonumber(arg and arg[1]) or 7
local case = {B = 64, T = 256, d = 64, V = 8192, D = 16}
print(('# MQAR training step: B=%d T=%d d=%d V=%d, %d answers per row, 2 blocks, AdamW; %d threads, %d repeats, %s')
      :format(case.B, case.T, case.d, case.V, case.D, gm.get_num_threads(), reps, B.clock_name))
local p, why = peer.open()
local g = gm.Generator(1)
local ids = gm.randint(0, case.V, {case.B, case.T}, {generator = g})
local sel = {}
for b = 0, case.B - 1 do
  for j = 0, case.D - 1 do sel[#sel + 1] = b * case.T + 2 * case.D + 2 * j end
end
sel = gm.tensor(sel, {dtype = 'i32'})
local tgt = gm.randint(case.V // 2, case.V, {case.B * case.D}, {generator = g})
for _, mixer in ipairs {'attention', 'base_conv'} do
  local lm = Q.model(mixer, {vocab = case.V, d_model = case.d, seq_len = case.T, dropout = 0, emb_dropout = 0.1,
                             generator = gm.Generator(2)})
  local opt = gm.optim.AdamW(lm:parameters(), {lr = 1e-3, weight_decay = 0.1})
  local function step()
    opt:zero_grad()
    gm.cross_entropy(lm(ids, sel), tgt):backward()
    opt:step()
  end
  local c = {mixer = mixer}
  for k, v in pairs(case) do c[k] = v end
  local id = p and p:load('torch_mqar.py', c)
  peer.row(('MQAR %s T=%d d=%d step'):format(mixer, case.T, case.d), peer.compare(step, p, id, 2, reps), 2, why)
end
if p then p:close() end
