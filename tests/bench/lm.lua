-- lm.lua: one training step of the 2-layer LM with an MLP after each mixer (issue 5): batch 64,
-- sequence 128, vocabulary 256, f32, cross_entropy over every position, backward and AdamW,
-- for d_model 64 and 128 and the mixers attention, GLA recurrent and GLA chunkwise (chunk 32),
-- against the same model in PyTorch measured in the same run (tests/bench/torch_lm.py through
-- peer.lua, interleaved, same thread count; target >= 2x faster), and chunkwise GLA against
-- recurrent GLA at this length (target >= 2x faster).
-- Usage: gmoe tests/bench/lm.lua [reps]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local C = require 'common'
local peer = require 'peer'

local reps = tonumber(arg and arg[1]) or 5
local B, T, V = 64, 128, 256
local arms = {
  {name = 'attention', mixer = 'attention'},
  {name = 'recurrent', mixer = {'gla', mode = 'recurrent'}},
  {name = 'chunk', mixer = {'gla', mode = 'chunk', chunk = 32}},
}

local P, why = peer.open()
print(('# LM step: B=%d T=%d V=%d, 2 layers + MLP, f32, AdamW; %d repeats after 1 warm-up, %s, PyTorch %s')
      :format(B, T, V, reps, C.clock_name, peer.describe(P, why)))
gm.manual_seed(1)
local ids = gm.randint(0, V, {B, T})
local tgt = gm.randint(0, V, {B * T})
for _, d in ipairs {64, 128} do
  local times = {}
  for _, a in ipairs(arms) do
    local ok, lm = pcall(gm.nn.LM, {vocab = V, d_model = d, layers = 2, state_mixer = 'mlp', mixer = a.mixer})
    if not ok then
      print(('%-36s skipped: %s'):format(a.name .. ' d=' .. d, tostring(lm):sub(1, 60)))
    else
      local opt = gm.optim.AdamW(lm:parameters(), {lr = 1e-3})
      local function step()
        opt:zero_grad()
        local logits = lm(ids)
        gm.cross_entropy(logits:reshape{B * T, V}, tgt):backward()
        opt:step()
      end
      local id = P and P:load('torch_lm.py', {B = B, T = T, V = V, d = d, mixer = a.name, chunk = 32})
      local r = peer.compare(step, P, id, 1, reps)
      times[a.name] = r.gm[1]
      peer.row(('LM %s d=%d step'):format(a.name, d), r, 2, why)
    end
  end
  if times.chunk and times.recurrent then
    C.row(('GLA chunk vs recurrent d=%d'):format(d), ('%.2fx faster'):format(times.recurrent / times.chunk),
          times.recurrent / times.chunk, '>=', 2, '2x')
  end
end
if P then P:close() end
