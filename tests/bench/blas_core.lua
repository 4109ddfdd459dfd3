-- blas_core.lua: gm.matmul 1024^3 f32 under each OpenBLAS core type this CPU runs, against the
-- default environment (OPENBLAS_CORETYPE unset: gmoe's start-up choice, kernels/cpu/blas_core.c)
-- and the environment as it is (issue 16: default >= 90% of the fastest correct core). Each
-- core runs in its own gmoe process (OpenBLAS reads the variable once, at load), the processes
-- interleaved over rounds so load hits them alike; per process the median of a few products,
-- then the median over rounds. A core counts as correct when its product matches an f64
-- product to 1e-5 (relative, max norm); cores this CPU cannot run (or this OpenBLAS does not
-- have) are listed as such.
-- Usage: gmoe tests/bench/blas_core.lua [rounds]
local dir = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'
package.path = dir .. '/?.lua;' .. package.path
local gm = require 'gmoe'
local B = require 'common'

local rounds = tonumber(arg and arg[1]) or 5
local exe = arg[-1]
local CORES = {'Prescott', 'Sandybridge', 'Haswell', 'Zen', 'SkylakeX', 'Cooperlake'}
local CODE = [[
local gm = require 'gmoe'
gm.manual_seed(0)
local a, b = gm.randn{1024, 1024}, gm.randn{1024, 1024}
local want = a:double():matmul(b:double())
local err = (gm.matmul(a, b):double() - want):abs():max():item() / want:abs():max():item()
local t = {}
for r = 1, 5 do local t0 = gm.clock(); local _ = gm.matmul(a, b); t[r] = gm.clock() - t0 end
table.sort(t)
print(('%s %.9g %.3g'):format(gm.blas_info():match('core (%w+)'), t[3], err))
]]
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- env: the OPENBLAS_CORETYPE value, false for unset, nil for the environment as it is
local runs = {{label = 'default (OPENBLAS_CORETYPE unset)', env = false}}
if os.getenv('OPENBLAS_CORETYPE') then
  runs[#runs + 1] = {label = 'as-is (OPENBLAS_CORETYPE=' .. os.getenv('OPENBLAS_CORETYPE') .. ')'}
end
for _, c in ipairs(CORES) do runs[#runs + 1] = {label = 'OPENBLAS_CORETYPE=' .. c, env = c, want = c} end
for _, r in ipairs(runs) do r.t = {} end

print(('# gm.matmul 1024^3 f32 by OpenBLAS core: %d threads, %d rounds of one process per core'):format(
      gm.get_num_threads(), rounds))
for _ = 1, rounds do
  for _, r in ipairs(runs) do
    local env = r.env == false and 'env -u OPENBLAS_CORETYPE -u GMOE_BLAS_CORE ' or
                r.env and ('env -u GMOE_BLAS_CORE OPENBLAS_CORETYPE=' .. r.env .. ' ') or ''
    local p = io.popen(env .. q(exe) .. ' -e ' .. q(CODE) .. ' 2>/dev/null')
    local out = p:read('a')
    p:close()
    local core, t, err = out:match('^(%w+) (%S+) (%S+)')
    if core then
      r.core, r.err = core, tonumber(err)
      r.t[#r.t + 1] = tonumber(t)
    end
  end
end

local best
for _, r in ipairs(runs) do
  if #r.t > 0 then
    r.med = B.median(r.t)
    r.gf = 2 * 1024 ^ 3 / r.med * 1e-9
    r.ok = r.err < 1e-5 and (not r.want or r.want:lower() == r.core:lower())
    if r.want and r.ok and (not best or r.gf > best.gf) then best = r end
  end
end
for _, r in ipairs(runs) do
  if not r.med then
    B.info(r.label, 'did not run')
  elseif r.want and r.want:lower() ~= r.core:lower() then
    B.info(r.label, ('not run here (OpenBLAS loaded %s)'):format(r.core))
  else
    local s = ('%.1f GFLOP/s, core %s, err %.1g%s'):format(r.gf, r.core, r.err, r.err < 1e-5 and '' or ' WRONG')
    if best and r.env == false then
      B.row(r.label, s, r.gf / best.gf, '>=', 0.9, '90% of ' .. best.core)
    elseif best and not r.want then -- a user's choice: kept, shown against the best
      B.info(r.label, s .. (', %.0f%% of %s (the user\'s choice, kept)'):format(100 * r.gf / best.gf, best.core))
    else
      B.info(r.label, s)
    end
  end
end
