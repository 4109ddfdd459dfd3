-- t_experiment.lua: the experiment runner (gmoe.experiment). A tiny experiment script in a
-- temporary folder is resolved in-process (schema, overrides and their errors, sweeps), then run
-- through the gmoe binary: run folders (config.lua, meta.json, TSV, log, DONE), a clean stdout,
-- resume-skip and --force, failures, `gmoe run` sweeps, `gmoe sweep -j` (pool, summary, resume,
-- --emit), atomic files and `gmoe plot` on a tiny run producing PDF, PNG and SVG.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'
local E = gm.experiment

-- gm.experiment.list: '+'-separated config values (a comma makes a sweep of jobs instead)
tap.is(table.concat(E.list('attention+gla+moe'), '|'), 'attention|gla|moe', "list splits a '+'-separated value")
tap.is(E.list('1e-3+3e-3', tonumber)[2], 3e-3, 'list converts each word')
tap.is(#E.list(64), 1, 'a number is one word')
local q = tap.q

local tmp = os.tmpname()
os.remove(tmp)
os.execute('mkdir -p ' .. q(tmp))
local runs = tmp .. '/runs'
local script = tmp .. '/tiny.lua'
tap.spit(script, [[
local gm = require 'gmoe'
return gm.experiment {
  name = 'tiny', description = 'a toy experiment for the runner tests',
  config = {n = 3, lr = 0.5, mode = 'a', flag = false, seed = 7, fail = false},
  quick = {n = 2},
  choices = {mode = {'a', 'b'}},
  run = function(cfg, run)
    local w = run:tsv('values', {'i', 'v'})
    for i = 1, cfg.n do w:row(i, i * cfg.lr) ; run:progress(i, cfg.n) end
    run:metric('total', cfg.n * cfg.lr)
    run:log('mode %s', cfg.mode)
    run:seed('data')
    if cfg.fail then error('boom') end
    print('stdout-line')
  end,
}
]])

local function ls(dir)
  local p = io.popen('ls -1A ' .. q(dir) .. ' 2>/dev/null')
  local out = {}
  for l in p:read('a'):gmatch('[^\n]+') do out[#out + 1] = l end
  p:close()
  return out
end
local function run_dirs()
  local out = {}
  for _, d in ipairs(ls(runs .. '/tiny')) do if d:match('^%d+%-%d+%-%x+$') then out[#out + 1] = d end end
  return out
end
local env = 'GMOE_RUNS=' .. q(runs)

-- ---- schema and overrides, in-process --------------------------------------------------------
local e = E.load(script)
tap.is(e.name, 'tiny', 'loading a script gives its experiment without running it')
tap.is(#run_dirs(), 0, 'loading runs nothing')
tap.errors(function() E{name = 'x', config = {}} end, 'run must be a function', 'run is required')
tap.errors(function() E{name = 'x', config = {a = {}}, run = print} end, 'config.a must be a number', 'config values are typed scalars')
tap.errors(function() E{name = 'x', config = {steps = 1}, quick = {stesp = 2}, run = print} end,
  'did you mean "steps"', 'a quick preset with an unknown key suggests the nearest')
tap.errors(function() E{name = 'x', config = {out = 'a'}, run = print} end, 'reserved', 'runner keys are reserved')
tap.errors(function() E{name = 'x', config = {steps = 1}, quick = {steps = 'a'}, run = print} end,
  'quick.steps is a string', 'quick preset types are checked')

local function resolve(words)
  local opts, over = e:parse_args(words)
  return e:jobs(opts, over)
end
local jobs = resolve {}
tap.ok(#jobs == 1 and jobs[1].cfg.n == 3 and jobs[1].cfg.mode == 'a', 'defaults')
jobs = resolve {'--quick'}
tap.is(jobs[1].cfg.n, 2, '--quick applies the preset')
jobs = resolve {'--quick', 'n=9', 'lr=2', 'mode=b', 'flag=true'}
local c = jobs[1].cfg
tap.ok(c.n == 9 and math.type(c.n) == 'integer' and c.lr == 2.0 and math.type(c.lr) == 'float' and c.mode == 'b'
  and c.flag == true, 'overrides are typed by their defaults and beat the preset')
tap.errors(function() resolve {'nn=3'} end, 'unknown config key "nn", did you mean "n"', 'unknown key suggests the nearest')
tap.errors(function() resolve {'mdoe=a'} end, 'did you mean "mode"', 'transposed letters suggest the key')
tap.errors(function() resolve {'n=1.5'} end, 'n must be an integer, got "1.5"', 'integer keys reject fractions')
tap.errors(function() resolve {'lr=fast'} end, 'lr must be a number', 'number keys reject words')
tap.errors(function() resolve {'flag=maybe'} end, 'flag must be true or false', 'booleans')
tap.errors(function() resolve {'mode=c'} end, 'mode must be one of a, b', 'choices are checked')
tap.errors(function() resolve {'--fast'} end, 'expected %-%-quick', 'unknown options are errors')
tap.errors(function() resolve {'n=1', 'n=2'} end, 'n given twice', 'a key given twice')
jobs = resolve {'n=1,2', 'mode=a,b'}
tap.is(#jobs, 4, 'comma lists expand into a cartesian sweep')
tap.ok(jobs[1].cfg.n == 1 and jobs[1].cfg.mode == 'a' and jobs[4].cfg.n == 2 and jobs[4].cfg.mode == 'b', 'sweep order')
jobs = resolve {'seed=1..5'}
tap.ok(#jobs == 5 and jobs[5].cfg.seed == 5, 'a..b ranges expand integer keys')
tap.isnt = tap.isnt or function(a, b, name) tap.ok(a ~= b, name) end
tap.is(E.config_id(resolve{'n=4'}[1].cfg), E.config_id(resolve{'n=4'}[1].cfg), 'the config id is stable')
tap.ok(E.config_id(resolve{'n=4'}[1].cfg) ~= E.config_id(resolve{'n=5'}[1].cfg), 'configs differ, ids differ')

-- ---- atomic files ------------------------------------------------------------------------
local af = tmp .. '/atomic.txt'
E.write_atomic(af, 'one\n')
E.write_atomic(af, 'two\n')
tap.is(tap.slurp(af), 'two\n', 'write_atomic replaces the file')
local leftovers = 0
for _, f in ipairs(ls(tmp)) do if f:match('%.tmp') then leftovers = leftovers + 1 end end
tap.is(leftovers, 0, 'write_atomic leaves no temporary file')

-- ---- a run through the binary ----------------------------------------------------------------
local code, out, err = tap.run(q(script) .. ' --quick mode=b', {env = env})
tap.is(code, 0, 'gmoe run tiny.lua succeeds', err)
tap.is(out, 'stdout-line\n', 'stdout carries only what the experiment prints')
tap.like(err, 'tiny: 2/2', 'progress goes to stderr as plain lines without a terminal')
local dirs = run_dirs()
tap.is(#dirs, 1, 'one run folder')
local dir = runs .. '/tiny/' .. (dirs[1] or '?')
tap.like(dirs[1] or '', '^%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d%-%x%x%x%x%x%x%x%x$', 'folder named <timestamp>-<id>')
local files = table.concat(ls(dir), ' ')
for _, f in ipairs {'config.lua', 'meta.json', 'values.tsv', 'log.txt', 'metrics.tsv', 'DONE'} do
  tap.like(' ' .. files .. ' ', ' ' .. f:gsub('%.', '%%.') .. ' ', 'run folder holds ' .. f)
end
tap.unlike = tap.unlike or function(s, p, name) tap.ok(not tostring(s):find(p), name, s) end
tap.unlike(files, '%.tmp', 'no temporary files left in the run folder')
local cfg = dofile(dir .. '/config.lua')
tap.ok(cfg.n == 2 and cfg.mode == 'b' and cfg.lr == 0.5 and cfg.flag == false and cfg.seed == 7,
  'config.lua loads back as the resolved config')
tap.is(tap.slurp(dir .. '/values.tsv'), '# i\tv\n1\t0.5\n2\t1\n', 'TSV results with a # header')
tap.like(tap.slurp(dir .. '/log.txt'), 'mode b', 'run:log lines land in log.txt')
tap.like(tap.slurp(dir .. '/metrics.tsv'), 'total\t1', 'run:metric lands in metrics.tsv')
local meta = tap.slurp(dir .. '/meta.json')
for _, pat in ipairs {'"status": "done"', '"version": "0%.%d', '"git": {', '"host": "', '"command": "[^"]*tiny%.lua',
                      '"blas": "', '"threads": %d', '"cuda": "none"', '"master": 7', '"data": %d+', '"start": "%d%d%d%d%-',
                      '"end": "', '"wall_s": [%d.]', '"quick": true', '"mode": "b"'} do
  tap.like(meta, pat, 'meta.json has ' .. pat:gsub('%%', ''))
end
if os.execute('git rev-parse HEAD >/dev/null 2>&1') then
  tap.like(meta, '"commit": "%x+"', 'meta.json has the git commit')
  tap.like(meta, '"dirty": [tf]', 'meta.json has the dirty flag')
else
  tap.skip('meta.json has the git commit', 'not in a git checkout')
  tap.skip('meta.json has the dirty flag', 'not in a git checkout')
end
tap.is(tap.slurp(dir .. '/DONE') ~= '', true, 'DONE written')

code, out, err = tap.run(q(script) .. ' --quick mode=b', {env = env})
tap.ok(code == 0 and #run_dirs() == 1, 'the same config again is skipped', err)
tap.like(err, 'already done', 'the skip is reported')
code, out, err = tap.run(q(script) .. ' --quick mode=b --force', {env = env})
tap.ok(code == 0 and not err:find('already done') and err:find('done in'), '--force runs it again', err)

code, out, err = tap.run(q(script) .. ' n=1 fail=true', {env = env})
tap.ok(code ~= 0, 'a failing run exits non-zero')
tap.like(err, 'boom', 'and reports the error')
local failed
for _, d in ipairs(run_dirs()) do
  if tap.slurp(runs .. '/tiny/' .. d .. '/meta.json'):find('"status": "failed"') then failed = d end
end
tap.ok(failed ~= nil, 'meta.json of the failed run says failed')
tap.ok(failed and not io.open(runs .. '/tiny/' .. failed .. '/DONE'), 'no DONE for a failed run')

code, out, err = tap.run(q(script) .. ' --quick lr=1,2 --out ' .. q(tmp .. '/other'), {env = env})
tap.is(code, 0, 'gmoe run with a comma list runs a sweep', err)
local sweeps = {}
for _, d in ipairs(ls(tmp .. '/other/tiny')) do if d:match('^sweep%-') then sweeps[#sweeps + 1] = d end end
tap.is(#sweeps, 1, '--out sets the runs root; the sweep has a folder')
local summary = tap.slurp(tmp .. '/other/tiny/' .. (sweeps[1] or '?') .. '/summary.tsv')
tap.like(summary, '^# lr\tstatus\ttotal\trun\n1\tdone\t2\t', 'summary.tsv: swept keys, status, metrics')

-- ---- gmoe sweep ------------------------------------------------------------------------------
code, out, err = tap.run('sweep ' .. q(script) .. ' --quick n=1..4 mode=b -j 2', {env = env})
tap.is(code, 0, 'gmoe sweep -j 2 runs the jobs', err)
local spath = out:match('(%S+summary%.tsv)')
local srows = {}
for l in tap.slurp(spath or '?'):gmatch('[^\n]+') do srows[#srows + 1] = l end
tap.is(#srows, 5, 'summary.tsv: header and one row per job')
tap.is(srows[1], '# n\tstatus\ttotal\trun', 'summary.tsv header')
tap.like(srows[5] or '', '^4\tdone\t2\t', 'summary row: swept key, status, final metric')
tap.like(srows[3] or '', '^2\tskipped\t', 'a job finished earlier (same config) is skipped')
code, out, err = tap.run('sweep ' .. q(script) .. ' --quick n=1..4 mode=b -j 2', {env = env})
tap.ok(code == 0 and err:find('4 already done'), 'a re-run sweep resumes: every job already done', err)
code, out = tap.run('sweep ' .. q(script) .. ' n=5,6 --emit parallel', {env = env})
local jobs_txt = tap.slurp(out:match('(%S+parallel%.txt)') or '?')
tap.like(jobs_txt, "run '[^']*tiny%.lua' %-%-out '[^']*' 'n=5' > ", '--emit parallel writes one command per job')
code, out = tap.run('sweep ' .. q(script) .. ' n=5,6 --emit slurm --max-running 3', {env = env})
local sb = tap.slurp(out:match('(%S+%.sbatch)') or '?')
tap.like(sb, '#SBATCH %-%-array=0%-1%%3', '--emit slurm writes an array script')
tap.like(sb, 'SLURM_ARRAY_TASK_ID', 'the array task picks its line')
code, out, err = tap.run('sweep ' .. q(script) .. ' nn=5,6', {env = env})
tap.ok(code ~= 0 and err:find('did you mean "n"'), 'gmoe sweep checks keys too', err)

-- ---- run:unit: an interrupted run resumes, replaying finished units --------------------------
local uscript = tmp .. '/units.lua'
tap.spit(uscript, [[
local gm = require 'gmoe'
return gm.experiment {
  name = 'units', config = {n = 4, seed = 3},
  run = function(cfg, run)
    gm.manual_seed(cfg.seed)
    local w = run:tsv('values', {'i', 'v'})
    local total = 0
    for i = 1, cfg.n do
      local r = run:unit('i=' .. i, function()
        local f = io.open(os.getenv('UNITS_CALLS'), 'a') f:write(i, '\n') f:close()
        if tonumber(os.getenv('UNITS_FAIL_AT') or '') == i then error('stopped at ' .. i) end
        local v = gm.randn{1}:item()
        w:row(i, v)
        run:log('unit %d', i)
        return {v = v, tag = 'u' .. i}
      end)
      assert(r.tag == 'u' .. i)
      total = total + r.v
    end
    run:metric('total', total)
    local from_rows, nrows = 0, 0 -- w:fields(): the rows as written, replayed units' rows included
    for _, f in ipairs(w:fields()) do from_rows, nrows = from_rows + tonumber(f[2]), nrows + 1 end
    run:metric('rows', nrows)
    run:metric('total_from_rows', from_rows)
    w:row(0, gm.randn{1}:item())
  end,
}
]])
local calls = tmp .. '/calls.txt'
local uenv = env .. ' UNITS_CALLS=' .. q(calls)
local function udirs()
  local out = {}
  for _, d in ipairs(ls(runs .. '/units')) do if d:match('^%d+%-%d+%-%x+$') then out[#out + 1] = d end end
  return out
end
code, out, err = tap.run(q(uscript), {env = uenv .. ' UNITS_FAIL_AT=3'})
tap.ok(code ~= 0 and err:find('stopped at 3'), 'a run that fails in its third unit fails', err)
tap.is(#udirs(), 1, 'one (unfinished) run folder')
local udir = runs .. '/units/' .. (udirs()[1] or '?')
tap.is(#ls(udir .. '/units'), 2, 'the two finished units are saved')
os.remove(calls)
code, out, err = tap.run(q(uscript), {env = uenv})
tap.is(code, 0, 'the same config again succeeds', err)
tap.like(err, 'resuming an unfinished run: 2 unit', 'and says it resumes')
tap.is(#udirs(), 1, 'in the same run folder')
tap.is(tap.slurp(calls), '3\n4\n', 'only the unfinished units run again')
local resumed_tsv = tap.slurp(udir .. '/values.tsv')
local resumed_metrics = tap.slurp(udir .. '/metrics.tsv')
tap.like(tap.slurp(udir .. '/log.txt'), 'unit 1\nunit 2\nunit 3\nunit 4', 'log lines of replayed units are kept, in order')
tap.like(tap.slurp(udir .. '/meta.json'), '"replayed": 2', 'meta.json counts the replayed units')
code, out, err = tap.run(q(uscript) .. ' --out ' .. q(tmp .. '/fresh'), {env = uenv})
local fresh = tmp .. '/fresh/units/latest'
tap.is(tap.slurp(fresh .. '/values.tsv'), resumed_tsv, 'the resumed run\'s TSV equals an uninterrupted run\'s, bit for bit')
tap.is(tap.slurp(fresh .. '/metrics.tsv'), resumed_metrics, 'and so do its metrics (unit values replayed)')
tap.like(resumed_metrics, 'rows\t4\n', "run's TSV fields() hold the replayed units' rows too")
do
  local total, from_rows = resumed_metrics:match('total\t(%S+)'), resumed_metrics:match('total_from_rows\t(%S+)')
  tap.ok(total and math.abs(tonumber(total) - tonumber(from_rows)) < 1e-6, 'and their cells as written', resumed_metrics)
end
code, out, err = tap.run(q(uscript) .. ' --force', {env = uenv})
tap.ok(code == 0 and #udirs() == 2 and not err:find('resuming'), '--force starts a new folder, resuming nothing', err)
do -- a second run of one config in the same second gets its own folder, never the earlier one's
  local id = (udirs()[1] or ''):match('%-(%x+)$') or '?'
  local taken, before, t = {}, {}, os.time()
  for _, d in ipairs(udirs()) do before[d] = true end
  for k = 0, 5 do
    local d = os.date('!%Y%m%d-%H%M%S', t + k) .. '-' .. id
    if not before[d] then
      os.execute('mkdir -p ' .. q(runs .. '/units/' .. d))
      tap.spit(runs .. '/units/' .. d .. '/marker', 'earlier run\n')
      taken[d] = true
    end
  end
  code, out, err = tap.run(q(uscript) .. ' --force', {env = uenv})
  local new = {}
  for _, d in ipairs(udirs()) do if not taken[d] and not before[d] then new[#new + 1] = d end end
  tap.ok(code == 0 and #new == 1, '--force whose second-stamped name is taken claims the next free one', err)
  local clobbered = 0
  for d in pairs(taken) do
    if tap.slurp(runs .. '/units/' .. d .. '/marker') ~= 'earlier run\n' or io.open(runs .. '/units/' .. d .. '/DONE') then
      clobbered = clobbered + 1
    end
  end
  tap.is(clobbered, 0, 'and leaves the folders it found untouched')
  for d in pairs(taken) do os.execute('rm -rf ' .. q(runs .. '/units/' .. d)) end
end
os.execute('mkdir -p ' .. q(tmp .. '/badexp'))
local bscript = tmp .. '/badexp/units.lua'
tap.spit(bscript, [[
return require('gmoe').experiment{name = 'units', config = {}, run = function(cfg, run)
  local mode = os.getenv('UNITS_BAD')
  if mode == 'twice' then run:unit('a', function() end) run:unit('a', function() end)
  elseif mode == 'nest' then run:unit('a', function() run:unit('b', function() end) end)
  else run:unit('a', function() return {t = require('gmoe').zeros{1}} end) end
end}
]])
for _, c in ipairs {{'twice', 'key "a" used twice'}, {'nest', 'units do not nest'}, {'tensor', 'is a tensor'}} do
  code, out, err = tap.run('run ' .. q(bscript) .. ' --force --out ' .. q(tmp .. '/bad'),
    {env = env .. ' UNITS_BAD=' .. c[1]})
  tap.ok(code ~= 0 and err:find(c[2], 1, true), 'run:unit refuses: ' .. c[2], err)
end

-- ---- --join: a run split by a selecting key joins into one run ---------------------------------
os.execute('mkdir -p ' .. q(tmp .. '/join'))
local jscript = tmp .. '/join/joined.lua'
tap.spit(jscript, [[
local gm = require 'gmoe'
return gm.experiment {
  name = 'joined', config = {arms = 'a+b', scale = 1, seed = 5}, select = {'arms'},
  run = function(cfg, run)
    local w = run:tsv('values', {'arm', 'v'})
    for arm in cfg.arms:gmatch('[^+]+') do
      run:unit(arm, function()
        local f = io.open(os.getenv('JOIN_CALLS'), 'a') f:write(arm, '\n') f:close()
        local g = run:generator(arm)
        w:row(arm, cfg.scale * gm.randn({1}, {generator = g}):item())
      end)
    end
  end,
}
]])
local jcalls = tmp .. '/join/calls.txt'
local jenv = 'JOIN_CALLS=' .. q(jcalls)
local jroot = tmp .. '/join/runs'
code, out, err = tap.run('run ' .. q(jscript) .. ' --dir ' .. q(jroot .. '/A') .. ' arms=a', {env = jenv})
tap.is(code, 0, '--join: part a runs on its own', err)
code, out, err = tap.run('run ' .. q(jscript) .. ' --dir ' .. q(jroot .. '/B') .. ' arms=b', {env = jenv})
tap.is(code, 0, '--join: part b runs on its own', err)
code, out, err = tap.run('run ' .. q(jscript) .. ' --dir ' .. q(jroot .. '/whole'), {env = jenv})
local whole = tap.slurp(jroot .. '/whole/values.tsv')
os.remove(jcalls)
code, out, err = tap.run('run ' .. q(jscript) .. ' --dir ' .. q(jroot .. '/AB') .. ' --join ' .. q(jroot .. '/A') ..
  ' --join ' .. q(jroot .. '/B'), {env = jenv})
tap.is(code, 0, '--join A --join B runs', err)
tap.like(err, 'joined 1 unit%(s%) from .*/A\n.*joined 1 unit%(s%) from .*/B', 'and says what it joined')
tap.is(tap.slurp(jcalls), '', 'no unit is computed again')
tap.is(tap.slurp(jroot .. '/AB/values.tsv'), whole, 'the joined run equals the run done in one piece')
tap.like(tap.slurp(jroot .. '/AB/meta.json'), '"joined": ', 'meta.json records the joined folders')
code, out, err = tap.run('run ' .. q(jscript) .. ' --dir ' .. q(jroot .. '/S2') .. ' scale=2 --join ' .. q(jroot .. '/A'),
  {env = jenv})
tap.ok(code ~= 0 and err:find('scale = 1 where this run has 2', 1, true) and err:find('(arms)', 1, true),
  '--join refuses a run whose config differs in a key that is not a selecting key', err)
code, out, err = tap.run('run ' .. q(jscript) .. ' --dir ' .. q(jroot .. '/N') .. ' --join ' .. q(tmp .. '/nowhere'),
  {env = jenv})
tap.ok(code ~= 0 and err:find('not a run folder', 1, true), '--join refuses a folder that is not a run', err)
code, out, err = tap.run('run ' .. q(uscript) .. ' --dir ' .. q(jroot .. '/U') .. ' --join ' .. q(jroot .. '/A'), {env = uenv})
tap.ok(code ~= 0 and err:find('is a run of joined', 1, true), '--join refuses a run of another experiment', err)

-- ---- a run stopped by a signal is marked, a killed one is found stale, and both resume ---------
local sscript = tmp .. '/sig/sig.lua'
os.execute('mkdir -p ' .. q(tmp .. '/sig'))
tap.spit(sscript, [[
local gm = require 'gmoe'
return gm.experiment {
  name = 'sig', config = {n = 4},
  run = function(cfg, run)
    local w = run:tsv('values', {'i'})
    for i = 1, cfg.n do
      run:unit('i=' .. i, function()
        if tonumber(os.getenv('SIG_HANG_AT') or '') == i then
          io.stderr:write('ready\n') io.stderr:flush()
          local x = gm.randn{1000}
          while true do x = (x * 0.5):tanh() end
        end
        w:row(i)
        return i
      end)
    end
  end,
}
]])
local sruns = tmp .. '/sigruns'
local senv = 'GMOE_RUNS=' .. q(sruns)
-- Runs gmoe in the background; once it says "ready" sends sig; returns the exit code ("hung"
-- when it did not end within 10 s of the signal), stdout and stderr.
local function run_signalled(args, envs, sig)
  return tap.run_interrupted(args, {env = envs, signal = sig, ready_s = 60, grace_s = 10})
end
local function sdir() return sruns .. '/sig/' .. (ls(sruns .. '/sig')[1] or '?') end
local function count(s, pat) return select(2, s:gsub(pat, '')) end

code, out, err = run_signalled(q(sscript), senv .. ' SIG_HANG_AT=3', 'INT')
tap.is(code, 130, 'Ctrl-C ends a run with status 130 (128 + SIGINT)', err)
tap.is(count(err, 'interrupted'), 1, '"interrupted" is said once', err)
tap.ok(not err:find('stack traceback', 1, true), 'without a traceback', err)
local meta = tap.slurp(sdir() .. '/meta.json')
tap.like(meta, '"status": "interrupted"', 'meta.json: status "interrupted", not "running"')
tap.like(meta, '"reason": "SIGINT %(Ctrl%-C%)"', 'with the reason')
tap.like(meta, '"end": "%d+%-', 'and the end time')
tap.like(tap.slurp(sdir() .. '/log.txt'), 'interrupted by SIGINT %(Ctrl%-C%) at .- after 2 unit%(s%)',
         'log.txt says when and after how many units')
tap.is(#ls(sdir() .. '/units'), 2, 'the units done before the interrupt are kept')
code, out, err = tap.run(q(sscript), {env = senv})
tap.is(code, 0, 'the same command then resumes and finishes', err)
tap.like(err, 'resuming an unfinished run: 2 unit', 'from the third unit')
meta = tap.slurp(sdir() .. '/meta.json')
tap.ok(meta:find('"status": "done"') and meta:find('"attempts"') and meta:find('"status": "interrupted"'),
       'meta.json: done, and the interrupted attempt is listed', meta)
tap.is(tap.slurp(sdir() .. '/values.tsv'):gsub('[^\n]*#[^\n]*\n', ''), '1\n2\n3\n4\n', 'every row once')

os.execute('rm -rf ' .. q(sruns))
code, out, err = run_signalled(q(sscript), senv .. ' SIG_HANG_AT=2', 'TERM')
tap.is(code, 143, 'SIGTERM ends a run with status 143', err)
meta = tap.slurp(sdir() .. '/meta.json')
tap.ok(meta:find('"status": "interrupted"') and meta:find('"reason": "SIGTERM', 1, true),
       'meta.json: interrupted by SIGTERM', meta)

os.execute('rm -rf ' .. q(sruns))
code, out, err = run_signalled(q(sscript), senv .. ' SIG_HANG_AT=2', 'KILL')
tap.is(code, 137, 'kill -9 leaves no chance to record anything')
tap.like(tap.slurp(sdir() .. '/meta.json'), '"status": "running"', 'so meta.json still says "running"')
code, out, err = tap.run(q(sscript), {env = senv})
tap.is(code, 0, 'the next run of the config resumes', err)
meta = tap.slurp(sdir() .. '/meta.json')
tap.ok(meta:find('"status": "stale"') and meta:find('killed outright', 1, true),
       'and records the killed attempt as stale (its process is gone)', meta)
tap.like(tap.slurp(sdir() .. '/log.txt'), 'resumed after an earlier attempt: stale', 'its log says so')

-- a run still in progress is not taken over by a second process
os.execute('rm -rf ' .. q(sruns))
local held = tap.tmpfile('.held')
os.remove(held) -- else the wait below may find an earlier run's "ready" before the launch empties it
os.execute(('%s SIG_HANG_AT=1 %s %s </dev/null >/dev/null 2>%s & echo $! > %s'):format(senv, q(tap.gmoe_path()),
  q(sscript), q(held), q(held .. '.pid')))
os.execute(('i=0; while ! grep -qs ready %s && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done'):format(q(held)))
code, out, err = tap.run(q(sscript), {env = senv})
tap.ok(code ~= 0 and err:find('in progress', 1, true), 'a second process refuses the folder of a running run', err)
os.execute('kill -9 $(cat ' .. q(held .. '.pid') .. ') 2>/dev/null; rm -f ' .. q(held .. '.pid'))

-- ---- gmoe plot -------------------------------------------------------------------------------
if os.execute('command -v gnuplot >/dev/null 2>&1') then
  local plots = tmp .. '/plots'
  os.execute('mkdir -p ' .. q(plots))
  tap.spit(plots .. '/tiny.gp', [[
load 'plots/style.gp'
eval term_cmd(fmt, COL, 1.5)
set output out
plot dir . '/values.tsv' using 1:2 with linespoints lt 1 title 'v'
]])
  code, out, err = tap.run('plot tiny', {env = env .. ' GMOE_PLOTS=' .. q(plots)})
  tap.is(code, 0, 'gmoe plot renders the latest run', err)
  for _, ext in ipairs {'pdf', 'png', 'svg'} do
    local p = runs .. '/tiny/latest/tiny.' .. ext
    local f = io.open(p, 'rb')
    local size = f and f:seek('end') or 0
    if f then f:close() end
    tap.ok(size > 500, 'gmoe plot writes a non-empty ' .. ext, 'size ' .. size)
  end
  tap.like(out, 'tiny%.svg', 'gmoe plot prints the files it wrote')
  code, out, err = tap.run('plot nosuch', {env = env .. ' GMOE_PLOTS=' .. q(plots)})
  tap.ok(code ~= 0 and err:find('no plot script'), 'a missing plot script is an error', err)
else
  tap.skip('gmoe plot', 'gnuplot not installed')
end

os.execute('rm -rf ' .. q(tmp))
tap.done()
