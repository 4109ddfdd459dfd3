-- lm.lua: one training step of the 2-layer LM with an MLP after each mixer (issue 5): batch 64,
-- sequence 128, vocabulary 256, f32, cross_entropy over every position, backward and AdamW,
-- for d_model 64 and 128 and the mixers attention, GLA recurrent and GLA chunkwise (chunk 32).
-- Compared with PyTorch 1.13 CPU on this machine kind (from the issue; target >= 2x faster):
--   attention 234 / 443 ms, GLA recurrent 531 / 1034 ms, GLA chunkwise 237 / 558 ms
-- and chunkwise GLA against recurrent GLA at this length (target >= 2x faster).
-- Usage: gmoe tests/bench/lm.lua [reps]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local C = require 'common'

local reps = tonumber(arg and arg[1]) or 5
local B, T, V = 64, 128, 256
local torch = {attention = {234, 443}, recurrent = {531, 1034}, chunk = {237, 558}}
local arms = {
  {name = 'attention', mixer = 'attention'},
  {name = 'recurrent', mixer = {'gla', mode = 'recurrent'}},
  {name = 'chunk', mixer = {'gla', mode = 'chunk', chunk = 32}},
}

print(('# LM step: B=%d T=%d V=%d, 2 layers + MLP, f32, AdamW; %d repeats after 1 warm-up, %s')
      :format(B, T, V, reps, C.clock_name))
gm.manual_seed(1)
local ids = gm.randint(0, V, {B, T})
local tgt = gm.randint(0, V, {B * T})
for di, d in ipairs {64, 128} do
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
      local med, lo, hi = C.repeat_time(step, 1, reps)
      times[a.name] = med
      C.row(('LM %s d=%d step'):format(a.name, d), ('%.1f ms [%.1f..%.1f]'):format(med * 1e3, lo * 1e3, hi * 1e3),
            med * 1e3, '<=', torch[a.name][di] / 2, ('%.1f ms'):format(torch[a.name][di] / 2))
    end
  end
  if times.chunk and times.recurrent then
    C.row(('GLA chunk vs recurrent d=%d'):format(d), ('%.2fx faster'):format(times.recurrent / times.chunk),
          times.recurrent / times.chunk, '>=', 2, '2x')
  end
end
