-- t_sweep.lua: what `gmoe sweep --emit slurm|parallel` and `--status` write, without a
-- scheduler: the array script (throttle, resources, threads, chdir, absolute paths), run by hand
-- the way Slurm runs it (SLURM_* variables, from another directory), re-emission of only the
-- unfinished jobs, failures reported with their logs, and the option errors. make test-cluster
-- runs the same against a real Slurm and GNU parallel.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local q = tap.q

local tmp = os.tmpname()
os.remove(tmp)
os.execute('mkdir -p ' .. q(tmp .. '/elsewhere'))
local script = tmp .. '/sw.lua'
tap.spit(script, [[
local gm = require 'gmoe'
return gm.experiment {
  name = 'sw', description = 'a toy experiment for the sweep emitter tests',
  config = {n = 1, fail = 0},
  run = function(cfg, run)
    run:metric('threads', gm.get_num_threads())
    if cfg.n == cfg.fail then error('sw: job n=' .. cfg.n .. ' fails on purpose') end
  end,
}
]])
local runs = tmp .. '/runs'
local function sweep(args) return tap.run('sweep ' .. q(script) .. ' --out ' .. q(runs) .. ' ' .. args) end
local function lines(s)
  local t = {}
  for l in s:gmatch('[^\n]+') do t[#t + 1] = l end
  return t
end
local function sh(cmd) -- exit code of a shell command
  local _, _, code = os.execute(cmd)
  return code
end

-- ---- the array script ------------------------------------------------------------------------
local code, out, err = sweep('n=1..4 fail=3 --emit slurm')
tap.is(code, 0, 'gmoe sweep --emit slurm', err)
local sb = out:match('^(%S+sweep%.sbatch)\n$')
tap.ok(sb ~= nil, 'stdout is the path of the array script, nothing else', out)
sb = sb or '?'
local sdir = sb:match('^(.*)/[^/]+$') or '?'
local cwd = io.popen('pwd'):read('l')
local text = tap.slurp(sb)
tap.like(text, '\n#SBATCH %-%-array=0%-3\n', 'unthrottled by default: one task per job')
tap.like(text, '\n#SBATCH %-%-job%-name=sw\n', 'the job is named after the experiment')
tap.like(text, '\n#SBATCH %-%-output=' .. sdir:gsub('%p', '%%%0') .. '/slurm%-%%A_%%a%.out\n', 'logs go to the sweep folder')
tap.like(text, '\n#SBATCH %-%-chdir=' .. cwd:gsub('%p', '%%%0') .. '\n', 'jobs run where the sweep was emitted')
tap.like(text, '\n#SBATCH %-%-cpus%-per%-task=1\n', 'one CPU per task by default')
tap.like(text, 'OMP_NUM_THREADS="%${SLURM_CPUS_PER_TASK', 'threads follow the allocation')
tap.ok(not text:find('--time') and not text:find('--mem') and not text:find('--gpus'), 'no resources unless asked')
local jobs = lines(tap.slurp(sdir .. '/jobs.txt'))
tap.is(#jobs, 4, 'jobs.txt: one line per job')
tap.like(jobs[2] or '', "^cd '" .. cwd:gsub('%p', '%%%0') .. "' && '/[^']*gmoe' run '" .. script:gsub('%p', '%%%0') ..
  "' %-%-out '/[^']*' 'n=2' 'fail=3'$",
  'each job: cd to where it was emitted, gmoe run with absolute binary, script and runs root')

code, out, err = sweep('n=1..4 fail=3 --emit slurm --max-running 2 --time 1:00:00 --mem 2G --partition short ' ..
  '--gpus a100:1 --cpus-per-task 4')
text = tap.slurp(out:match('(%S+)') or '?')
tap.like(text, '\n#SBATCH %-%-array=0%-3%%2\n', '--max-running throttles the array')
for _, l in ipairs {'--time=1:00:00', '--mem=2G', '--partition=short', '--gpus=a100:1', '--cpus-per-task=4'} do
  tap.like(text, '\n#SBATCH ' .. l:gsub('%p', '%%%0') .. '\n', 'resource line ' .. l)
end

-- ---- run by hand as Slurm would: from elsewhere, with SLURM_* set ----------------------------
code, out, err = sweep('n=1..4 fail=3 --emit slurm')
local function task(i, cpus)
  return sh(('cd %s && SLURM_JOB_ID=%d SLURM_ARRAY_JOB_ID=7 SLURM_ARRAY_TASK_ID=%d SLURM_CPUS_PER_TASK=%d ' ..
    'sh %s > %s 2>&1'):format(q(tmp .. '/elsewhere'), 100 + i, i, cpus, q(sb), q(('%s/slurm-7_%d.out'):format(sdir, i))))
end
tap.is(task(1, 2), 0, 'array task 1 runs its job')
tap.is(task(2, 1), 1, 'array task 2 fails: its job fails')
local done = io.popen('ls ' .. q(runs) .. '/sw/[0-9]*/DONE 2>/dev/null'):read('a')
tap.is(#lines(done), 1, 'the job has DONE, under --out whatever the directory')
local dir = done:match('^(.*)/DONE') or '?'
local meta = tap.slurp(dir .. '/meta.json')
tap.like(meta, '"threads": 2,', 'the job ran with SLURM_CPUS_PER_TASK threads')
tap.like(meta, '"scheduler": {[^}]*"array_job_id": "7"', 'meta.json records the Slurm array job')
tap.like(meta, '"array_task_id": "1"', 'and the task')
tap.like(meta, '"cwd": "' .. cwd:gsub('%p', '%%%0') .. '"', 'the job ran in the emitting directory (git commit as local runs)')
tap.is(tap.slurp(dir .. '/overrides.txt'), 'n=2\nfail=3\n', 'task 1 is the second job')

-- ---- --status and re-emission ------------------------------------------------------------------
code, out, err = sweep('n=1..4 fail=3 --status')
tap.is(code, 1, '--status fails while jobs are not done')
tap.like(err, 'job 3/4 %(n=3 fail=3%) failed: [^\n]*fails on purpose', '--status names the failed job and its error')
tap.like(err, '\n  log: ' .. sdir:gsub('%p', '%%%0') .. '/slurm%-7_2%.out\n', 'with its Slurm log')
tap.like(err, '1 done, 0 queued, 1 failed, 0 unfinished, 2 not started', 'and counts every state')
local summary = tap.slurp(out:match('(%S+)') or '?')
tap.like(summary, '^# n\tstatus\tthreads\trun\n1\tmissing\tNaN\t%-\n2\tdone\t2\t/', 'summary.tsv holds every job with its state')
tap.like(summary, '\n3\tfailed\t1\t/', 'the failed job row points at its run folder')

code, out, err = sweep('n=1..4 fail=3 --emit slurm --max-running 1')
tap.like(tap.slurp(out:match('(%S+)') or '?'), '\n#SBATCH %-%-array=0,2%-3%%1\n', 're-emission: an array of the unfinished jobs only')
tap.like(err, '3 jobs to run', 'and says how many')

code, out, err = sweep('n=1..4 fail=3 --emit parallel --cpus-per-task 2')
tap.is(code, 0, 'gmoe sweep --emit parallel', err)
local pl = lines(tap.slurp(out:match('^(%S+parallel%.txt)\n$') or '?'))
tap.is(#pl, 3, 'parallel.txt: one line per unfinished job')
tap.like(pl[1] or '', "^cd '[^']+' && OMP_NUM_THREADS=2 exec '/[^']*gmoe' run .*'n=1' 'fail=3' > '[^']*/job%-1%.log' 2>&1$",
  'each line: cd, threads, the job, its log')
for _, l in ipairs(pl) do sh('cd ' .. q(tmp .. '/elsewhere') .. ' && sh -c ' .. q(l)) end
code, out, err = sweep('n=1..4 fail=3 --status')
tap.like(err, '\n  log: ' .. sdir:gsub('%p', '%%%0') .. '/job%-3%.log\n', 'the newest log of a failed job is reported')
tap.like(err, '3 done, 0 queued, 1 failed', 'after running the list by hand')

code, out, err = sweep('n=1,2 fail=3 --emit slurm')
tap.is(out, '', 'nothing to submit: stdout stays empty')
tap.like(err, 'nothing to run; summary ', 'and summary.tsv is written')
code, out, err = sweep('n=1,2 fail=3')
tap.ok(code == 0 and err:find('2 already done'), 'the local pool resumes too', err)

-- ---- bad options ---------------------------------------------------------------------------------
for _, c in ipairs {
  {'n=1,2 --emit parallel --time 10', '%-%-time is for %-%-emit slurm'},
  {'n=1,2 --max-running 2', '%-%-max%-running is for %-%-emit'},
  {'n=1,2 --emit slurm --mem lots', '%-%-mem takes a size such as 500M or 4G, got "lots"'},
  {'n=1,2 --emit slurm --cpus-per-task 0', '%-%-cpus%-per%-task takes a positive integer'},
  {'n=1,2 --emit slurm --time', '%-%-time takes .*got nothing'},
  {'n=1,2 --status --emit slurm', '%-%-status reports; it takes no %-%-emit'},
} do
  code, out, err = sweep(c[1])
  tap.ok(code ~= 0 and err:find(c[2]), 'rejected: ' .. c[1], err)
end
code, out, err = tap.run(q(script) .. ' --emit slurm')
tap.ok(code ~= 0 and err:find('belong to gmoe sweep'), 'gmoe run rejects the sweep options', err)

os.execute('rm -rf ' .. q(tmp))
tap.done()
