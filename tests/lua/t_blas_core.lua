-- t_blas_core.lua: the OpenBLAS core selection at start-up (kernels/cpu/blas_core.c, lua/process.c).
-- A user's OPENBLAS_CORETYPE is kept; when OpenBLAS chose a core below what the CPU runs, gmoe
-- re-executes itself with the fastest candidate whose products pass the check, and a core whose
-- products are wrong (injected with the GMOE_BLAS_TEST hook) is refused. "detected=Prescott"
-- pretends OpenBLAS fell back to SSE3, so the selection runs on any CPU with AVX.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'

local CLEAN = 'env -u OPENBLAS_CORETYPE -u GMOE_BLAS_CORE -u GMOE_BLAS_TEST'
local function info(env)
  local code, out, err = tap.run([[-e 'print(require("gmoe").blas_info())']], {env = CLEAN .. ' ' .. (env or '')})
  return code == 0 and out or ('exit ' .. tostring(code) .. ': ' .. err)
end
local function core(s) return s:match('core (%w+):') end

-- the user's choice is kept, in --version and gm.blas_info(), even where gmoe would pick another
local s = info('OPENBLAS_CORETYPE=Prescott')
tap.like(s, 'core Prescott: set by OPENBLAS_CORETYPE=Prescott', 'a forced generic core is respected')
tap.like(info('OPENBLAS_CORETYPE=Prescott GMOE_BLAS_TEST=detected=Prescott'), 'core Prescott: set by OPENBLAS_CORETYPE',
         'the user wins over a selection that would run')
local _, ver = tap.run('--version', {env = CLEAN .. ' OPENBLAS_CORETYPE=Prescott'})
tap.like(ver, 'BLAS: OpenBLAS [^\n]*core Prescott: set by OPENBLAS_CORETYPE', '--version says the core and why')

-- as the environment leaves it: OpenBLAS's choice or one gmoe checked
local default = info()
tap.ok(default:match("core %w+: OpenBLAS's choice") or default:match('core %w+: chosen by gmoe'),
       'default environment: the core and why: ' .. default:gsub('\n', ''))

local chosen = info('GMOE_BLAS_TEST=detected=Prescott')
if not chosen:match('chosen by gmoe') then
  tap.like(chosen, "OpenBLAS's choice", 'no faster core for this CPU: OpenBLAS keeps its own')
  tap.done()
  return
end
local best = core(chosen)
tap.ok(best and best ~= 'Prescott', 'a fallback core is replaced by a checked faster one: ' .. tostring(best))
tap.like(chosen, 'OpenBLAS chose Prescott on a CPU that runs ' .. tostring(best) .. ', whose products passed the check',
         'the reason names the fallback and the check')

-- a core whose products are wrong is refused; the next candidate runs (or OpenBLAS's own)
local refused = info('GMOE_BLAS_TEST="detected=Prescott fault=' .. best .. '"')
tap.ok(core(refused) ~= best, 'the check refuses a core with wrong products', refused)
tap.like(refused, 'refused [^;]*' .. best .. ':wrong%-products', 'the refusal is reported')

-- every candidate refused: OpenBLAS's own choice stays and says so
local all = {}
for _, c in ipairs{'Cooperlake', 'SkylakeX', 'Haswell', 'Zen', 'Sandybridge'} do all[#all + 1] = 'fault=' .. c end
tap.like(info('GMOE_BLAS_TEST="detected=Prescott ' .. table.concat(all, ' ') .. '"'),
         "OpenBLAS's choice, kept: the faster cores were refused", 'all candidates refused: the fallback is kept')

-- a gmoe started by a gmoe that chose a core inherits OPENBLAS_CORETYPE: not the user's choice
local script = tap.tmpfile('.lua')
tap.spit(script, [[local p = io.popen(arg[-1] .. [==[ -e 'print(require("gmoe").blas_info())']==]); io.write(p:read("a"))]])
local code, nested = tap.run(tap.q(script), {env = CLEAN .. ' GMOE_BLAS_TEST=detected=Prescott'})
tap.ok(code == 0 and nested:match('chosen by gmoe') and core(nested) == best,
       'a child process keeps the checked core, as gmoe\'s choice', nested)
tap.done()
