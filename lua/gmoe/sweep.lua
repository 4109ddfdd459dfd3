-- gmoe.sweep: `gmoe sweep`. The jobs of a command line run in a local process pool, or go to a
-- scheduler: --emit slurm writes an sbatch array over the jobs still to run, --emit parallel a
-- command list for GNU parallel; --status reports every job (done, queued, failed with its log,
-- unfinished) and writes summary.tsv. Every mode resumes: a job whose run folder has DONE is
-- never run again (unless --force), so re-running the same command after a cancel runs the rest.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local X = require 'gmoe.experiment'
local H = X._sweep_helpers
local q, shell, exists, read_file = H.q, H.shell, H.exists, H.read_file

local M = {}

local function abs(path, cwd)
  if path:sub(1, 1) == '/' then return path end
  return (((cwd .. '/' .. path):gsub('/%./', '/')))
end

-- The gmoe executable as an absolute path (a bare name is looked up on PATH).
local function binary_path(cwd)
  local b = X.binary()
  if b:find('/') then return abs(b, cwd) end
  return shell('command -v ' .. q(b)) or b
end

-- A job's command line: absolute paths only, so it does the same from any directory.
local function job_command(bin, script, opts, root, j)
  local w = {q(bin), 'run', q(script)}
  if opts.quick then w[#w + 1] = '--quick' end
  if opts.force then w[#w + 1] = '--force' end
  w[#w + 1] = '--out ' .. q(root)
  for _, x in ipairs(j.words) do w[#w + 1] = q(x) end
  return table.concat(w, ' ')
end

-- Tasks of this sweep's array script that Slurm still holds: {[job index] = '12_3 RUNNING'}.
-- Asked only once the sweep was emitted for Slurm (squeue may wait on an absent controller).
local function slurm_queued(sdir)
  local sb = sdir .. '/sweep.sbatch'
  if not exists(sb) or not shell('command -v squeue') then return {} end
  local queued = {}
  for id, k, state, cmd in (shell("squeue --me -h -r -o '%i|%K|%T|%o'") or ''):gmatch('([^|\n]*)|([^|\n]*)|([^|\n]*)|([^\n]*)') do
    local task = math.tointeger(tonumber(k))
    if cmd == sb and task then queued[task + 1] = id .. ' ' .. state end
  end
  return queued
end

-- The newest log of job i (1-based): the pool's or GNU parallel's job-<i>.log, or Slurm's
-- slurm-<array job>_<i-1>.out.
local function job_log(sdir, i)
  local out = shell(('cd %s && ls -td -- job-%d.log slurm-*_%d.out 2>/dev/null | head -n 1'):format(q(sdir), i, i - 1))
  return out and out ~= '' and (sdir .. '/' .. out) or nil
end

-- The first line of a run's error (its log.txt), else the last line of the scheduler's log.
local function error_line(dir, log)
  local text = dir and read_file(dir .. '/log.txt') or ''
  local err = ('\n' .. text):match('.*\nerror: ([^\n]*)')
  if not err and log then err = (read_file(log) or ''):match('([^\n]+)\n*$') end
  return err
end

-- Each job's state: done, queued (in Slurm), failed (its run recorded an error), unfinished
-- (started, no DONE: cancelled, killed, died before its run folder, or running elsewhere),
-- missing (never started); with --force every job not queued is todo. Sets j.state, j.dir,
-- j.log, j.error (the error, else the log's last line) and returns the counts.
local function classify(e, jobs, opts, root, sdir)
  local queued = slurm_queued(sdir)
  local n = {done = 0, queued = 0, failed = 0, unfinished = 0, missing = 0, todo = 0}
  for i, j in ipairs(jobs) do
    local id = X.config_id(j.cfg)
    local fin = not opts.force and X.finished_run(root, e.name, id)
    if fin then
      j.state, j.dir = 'done', fin
    elseif queued[i] then
      j.state, j.queued = 'queued', queued[i]
    elseif opts.force then
      j.state = 'todo'
    else
      j.dir, j.log = X.latest_any(root, e.name, id), job_log(sdir, i)
      local meta = j.dir and read_file(j.dir .. '/meta.json') or ''
      local status = meta:match('\n  "status": "(%a+)"')
      j.state = status == 'failed' and 'failed' or (j.dir or j.log) and 'unfinished' or 'missing'
      if j.state ~= 'missing' then j.error = error_line(j.dir, j.log) end
    end
    n[j.state] = n[j.state] + 1
  end
  return n
end

-- Failed and unfinished jobs one by one (run folder, log); queued ones by their Slurm arrays.
local function report(e, jobs)
  local arrays, seen = {}, {}
  for i, j in ipairs(jobs) do
    if j.state == 'failed' or j.state == 'unfinished' then
      io.stderr:write(('%s: job %d/%d (%s) %s%s\n'):format(e.name, i, #jobs, table.concat(j.words, ' '),
        j.state == 'failed' and 'failed' or 'did not finish', j.error and (': ' .. j.error) or ''))
      if j.dir then io.stderr:write('  run folder: ' .. j.dir .. '\n') end
      if j.log then io.stderr:write('  log: ' .. j.log .. '\n') end
    elseif j.state == 'queued' then
      local a = j.queued:match('^(%d+)')
      if a and not seen[a] then seen[a] = true; arrays[#arrays + 1] = a end
    end
  end
  if #arrays > 0 then
    io.stderr:write(('%s: jobs queued or running in Slurm array %s\n'):format(e.name, table.concat(arrays, ', ')))
  end
end

local function counts_line(e, jobs, n)
  return ('%s: %d jobs: %d done, %d queued, %d failed, %d unfinished, %d not started'):format(e.name, #jobs,
    n.done, n.queued, n.failed, n.unfinished, n.missing + n.todo)
end

-- "0-3,5,7-9" from sorted 0-based indices (a Slurm --array list).
local function index_ranges(idx)
  local parts, a = {}, 1
  while a <= #idx do
    local b = a
    while idx[b + 1] == idx[b] + 1 do b = b + 1 end
    parts[#parts + 1] = a == b and tostring(idx[a]) or ('%d-%d'):format(idx[a], idx[b])
    a = b + 1
  end
  return table.concat(parts, ',')
end

local function slurm_script(e, sdir, cwd, todo, total, sched)
  for _, p in ipairs {sdir, cwd} do
    if p:find('%s') then error(('%s: Slurm cannot take the path "%s" (it has white space)'):format(e.name, p), 0) end
  end
  local idx = {}
  for _, i in ipairs(todo) do idx[#idx + 1] = i - 1 end
  if idx[#idx] > 1000 then
    io.stderr:write(('%s: note: array index %d exceeds Slurm\'s default MaxArraySize (1001)\n'):format(e.name, idx[#idx]))
  end
  local l = {'#!/bin/sh',
    ('# %s: %d of the %d jobs of a gmoe sweep. Array task i runs line i+1 of jobs.txt; running'):format(e.name, #todo, total),
    '# the same `gmoe sweep ... --emit slurm` again writes an array of the jobs not finished by then.',
    '#SBATCH --job-name=' .. e.name,
    '#SBATCH --array=' .. index_ranges(idx) .. (sched.max_running and ('%' .. sched.max_running) or ''),
    '#SBATCH --output=' .. sdir .. '/slurm-%A_%a.out',
    '#SBATCH --chdir=' .. cwd,
    '#SBATCH --cpus-per-task=' .. (sched.cpus or 1)}
  for _, o in ipairs {{'time', 'time'}, {'mem', 'mem'}, {'partition', 'partition'}, {'gpus', 'gpus'}} do
    if sched[o[1]] then l[#l + 1] = ('#SBATCH --%s=%s'):format(o[2], sched[o[1]]) end
  end
  local jobs_txt = q(sdir .. '/jobs.txt')
  l[#l + 1] = 'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"'
  l[#l + 1] = ('line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" %s)'):format(jobs_txt)
  l[#l + 1] = ('[ -n "$line" ] || { echo "gmoe: no job $SLURM_ARRAY_TASK_ID in "%s >&2; exit 1; }'):format(jobs_txt)
  l[#l + 1] = 'echo "gmoe: array task $SLURM_ARRAY_TASK_ID on $(hostname), $OMP_NUM_THREADS threads: $line" >&2'
  l[#l + 1] = 'exec sh -c "$line"'
  return table.concat(l, '\n') .. '\n'
end

local function sleep(s) os.execute('sleep ' .. s) end

-- The local process pool: each pending job in the background, its exit status into a file we poll.
local function pool(e, jobs, pending, opts, sdir, root, finished)
  local running, n_running, failed, total, t0 = {}, 0, 0, #jobs, os.time()
  local threads = opts.sched.cpus and ('OMP_NUM_THREADS=' .. opts.sched.cpus .. ' ') or ''
  while #pending > 0 or next(running) do
    while #pending > 0 and n_running < opts.jobs do
      local i = table.remove(pending, 1)
      local rc = ('%s/job-%d.rc'):format(sdir, i)
      os.remove(rc)
      os.execute(('( %s%s > %s 2>&1; echo $? > %s.tmp && mv %s.tmp %s ) &'):format(threads, jobs[i].cmd,
        q(('%s/job-%d.log'):format(sdir, i)), q(rc), q(rc), q(rc)))
      running[i] = rc
      n_running = n_running + 1
    end
    sleep(0.1)
    for i, rc in pairs(running) do
      local s = read_file(rc)
      if s then
        running[i] = nil
        n_running = n_running - 1
        local j = jobs[i]
        local code = tonumber(s:match('%d+'))
        j.dir = X.latest_any(root, e.name, X.config_id(j.cfg))
        if code == 0 then j.status = 'done' else j.status = 'failed'; failed = failed + 1 end
        finished = finished + 1
        io.stderr:write(('%s: job %d/%d %s (%s)  %d/%d finished, %ds\n'):format(e.name, i, total,
          j.status, table.concat(j.words, ' '), finished, total, os.time() - t0))
        if code ~= 0 then io.stderr:write(('  log: %s/job-%d.log\n'):format(sdir, i)) end
      end
    end
  end
  return failed
end

--- M.run(e, script, args): gmoe sweep SCRIPT ARGS for experiment e. Returns true on success.
function M.run(e, script, args)
  local opts, over = e:parse_args(args)
  local sched = opts.sched
  if opts.status and opts.emit then error(e.name .. ': --status reports; it takes no --emit', 0) end
  for _, k in ipairs {'time', 'mem', 'partition', 'gpus'} do
    if sched[k] and opts.emit ~= 'slurm' then error(('%s: --%s is for --emit slurm'):format(e.name, k), 0) end
  end
  if sched.max_running and not opts.emit then error(e.name .. ': --max-running is for --emit (the local pool takes -j N)', 0) end
  local jobs, swept = e:jobs(opts, over)
  local cwd = H.cwd()
  if not cwd then error(e.name .. ': cannot tell the current directory', 0) end
  local root = abs(H.runs_root(opts), cwd)
  local sdir = abs(H.sweep_dir(e, opts, over), cwd)
  local bin, spath = binary_path(cwd), abs(script, cwd)
  local lines = {}
  for i, j in ipairs(jobs) do
    j.cmd = job_command(bin, spath, opts, root, j)
    lines[i] = ('cd %s && %s'):format(q(cwd), j.cmd) -- where it was emitted: git commit, relative data paths
  end
  X.write_atomic(sdir .. '/jobs.txt', table.concat(lines, '\n') .. '\n')
  local n = classify(e, jobs, opts, root, sdir)
  if not opts.emit and not opts.status and n.failed + n.unfinished > 0 then
    io.stderr:write(e.name .. ': earlier attempts (these jobs run again):\n')
  end
  report(e, jobs)
  local todo = {}
  for i, j in ipairs(jobs) do if j.state ~= 'done' and j.state ~= 'queued' then todo[#todo + 1] = i end end

  if opts.status then
    for _, j in ipairs(jobs) do j.status = j.state == 'todo' and 'missing' or j.state end
    H.write_summary(sdir .. '/summary.tsv', jobs, swept)
    print(sdir .. '/summary.tsv')
    io.stderr:write(counts_line(e, jobs, n) .. '\n')
    return n.done == #jobs
  end

  if opts.emit then
    io.stderr:write(counts_line(e, jobs, n) .. '\n')
    if #todo == 0 then
      if n.done == #jobs then
        for _, j in ipairs(jobs) do j.status = 'done' end
        H.write_summary(sdir .. '/summary.tsv', jobs, swept)
        io.stderr:write(('%s: nothing to run; summary %s/summary.tsv\n'):format(e.name, sdir))
      else
        io.stderr:write(('%s: nothing to submit: the unfinished jobs are queued in Slurm\n'):format(e.name))
      end
      return true
    end
    if opts.emit == 'slurm' then
      if sched.gpus and (shell(q(bin) .. ' --version') or ''):find('CUDA backend: not built') then
        io.stderr:write(('%s: note: --gpus, but %s was built without the CUDA backend\n'):format(e.name, bin))
      end
      X.write_atomic(sdir .. '/sweep.sbatch', slurm_script(e, sdir, cwd, todo, #jobs, sched))
      print(sdir .. '/sweep.sbatch')
      io.stderr:write(('%s: %d jobs to run; submit with  sbatch %s/sweep.sbatch\n'):format(e.name, #todo, sdir))
    else
      local pl = {}
      for _, i in ipairs(todo) do
        pl[#pl + 1] = ('cd %s && OMP_NUM_THREADS=%s exec %s > %s 2>&1'):format(q(cwd), sched.cpus or 1, jobs[i].cmd,
          q(('%s/job-%d.log'):format(sdir, i)))
      end
      X.write_atomic(sdir .. '/parallel.txt', table.concat(pl, '\n') .. '\n')
      print(sdir .. '/parallel.txt')
      io.stderr:write(('%s: %d jobs to run; run them with  parallel%s < %s/parallel.txt\n'):format(e.name, #todo,
        sched.max_running and (' -j ' .. sched.max_running) or '', sdir))
    end
    return true
  end

  for _, j in ipairs(jobs) do
    j.status = j.state == 'done' and 'skipped' or j.state == 'queued' and 'queued' or nil
  end
  io.stderr:write(('%s: sweep of %d jobs (%d already done%s), -j %d, in %s\n'):format(e.name, #jobs, n.done,
    n.queued > 0 and (', ' .. n.queued .. ' queued in Slurm') or '', opts.jobs, sdir))
  local failed = pool(e, jobs, todo, opts, sdir, root, n.done + n.queued)
  H.write_summary(sdir .. '/summary.tsv', jobs, swept)
  print(sdir .. '/summary.tsv')
  io.stderr:write(('%s: %d jobs, %d failed; summary %s/summary.tsv\n'):format(e.name, #jobs, failed, sdir))
  return failed == 0
end

return M
