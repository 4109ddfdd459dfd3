-- gmoe.experiment: the experiment runner. A script declares a name, a description, a config of
-- typed defaults, a quick preset and a run function (`return gm.experiment{...}`); run as a
-- script it resolves its config from `arg`, expands comma lists and a..b ranges into a sweep,
-- and writes one run folder per job (config.lua, meta.json, TSV results, log.txt, DONE last, every
-- file atomically). `gmoe sweep` runs the jobs in a process pool (or emits them for GNU parallel
-- or Slurm) and `gmoe plot` renders plots/<name>.gp against a run (cli below).
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'

local M = {}
local Run = {}
Run.__index = Run
local Exp = {}
Exp.__index = Exp

local RESERVED = {quick = true, force = true, out = true, dir = true}
M.loading = false -- set while the cli loads a script for its spec (no auto-run then)

-- ---- small helpers -----------------------------------------------------------------------------
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function shell(cmd) -- stdout of cmd without the trailing newline, nil on failure
  local p = io.popen(cmd .. ' 2>/dev/null')
  if not p then return nil end
  local out = p:read('a')
  local ok = p:close()
  if not ok then return nil end
  return (out:gsub('\n$', ''))
end

local function exists(path)
  local f = io.open(path, 'r')
  if f then f:close() return true end
  return false
end

local function mkdir_p(path)
  if not os.execute('mkdir -p ' .. q(path)) then error('experiment: cannot create folder ' .. path, 0) end
end

--- Write text to path atomically: a temporary file in the same folder, then a rename.
function M.write_atomic(path, text)
  local tmp = ('%s.tmp%d'):format(path, math.random(1, 1 << 30))
  local f, err = io.open(tmp, 'wb')
  if not f then error('experiment: cannot write ' .. path .. ': ' .. tostring(err), 0) end
  f:write(text)
  assert(f:close())
  local ok, rerr = os.rename(tmp, path)
  if not ok then os.remove(tmp) error('experiment: cannot rename onto ' .. path .. ': ' .. tostring(rerr), 0) end
end

local function read_file(path)
  local f = io.open(path, 'rb')
  if not f then return nil end
  local s = f:read('a')
  f:close()
  return s
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

local function fmt_value(v) -- a value as Lua source
  if type(v) == 'string' then return ('%q'):format(v) end
  if math.type(v) == 'float' then
    if v ~= v then return '0/0' end
    if v == math.huge then return 'math.huge' elseif v == -math.huge then return '-math.huge' end
    local s = ('%.15g'):format(v)
    if tonumber(s) ~= v then s = ('%.17g'):format(v) end
    if not s:find('[%.eEn]') then s = s .. '.0' end
    return s
  end
  return tostring(v)
end

local function config_source(cfg)
  local lines = {'return {'}
  for _, k in ipairs(sorted_keys(cfg)) do lines[#lines + 1] = ('  %s = %s,'):format(k, fmt_value(cfg[k])) end
  lines[#lines + 1] = '}'
  return table.concat(lines, '\n') .. '\n'
end

local function hash8(s) -- FNV-1a, 32 bits, as 8 hex digits
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return ('%08x'):format(h)
end

--- gm.experiment.list(s, conv): the words of a '+'-separated config value ("attention+gla",
--- "1e-3+3e-3": a list inside one job, where a comma makes a sweep of jobs), each through conv
--- when given. Also splits on commas and blanks, for values given from Lua.
function M.list(s, conv)
  local out = {}
  for w in tostring(s):gmatch('[^+,%s]+') do out[#out + 1] = conv and conv(w) or w end
  return out
end

--- The id of a resolved config: the same config always gives the same id (resume, skip).
function M.config_id(cfg) return hash8(config_source(cfg)) end

-- JSON for meta.json: tables with 1..n keys are arrays, others objects with sorted keys.
local function json(v, ind)
  ind = ind or ''
  local t = type(v)
  if t == 'nil' then return 'null' end
  if t == 'boolean' then return tostring(v) end
  if t == 'number' then
    if v ~= v or v == math.huge or v == -math.huge then return 'null' end
    if math.type(v) == 'integer' then return tostring(v) end
    local s = ('%.15g'):format(v)
    return tonumber(s) == v and s or ('%.17g'):format(v)
  end
  if t == 'string' then
    return '"' .. v:gsub('[%c"\\]', function(c)
      local e = {['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\t'] = '\\t', ['\r'] = '\\r'}
      return e[c] or ('\\u%04x'):format(c:byte())
    end) .. '"'
  end
  local inner = ind .. '  '
  if #v > 0 or next(v) == nil then
    if next(v) == nil then return '[]' end
    local parts = {}
    for i, x in ipairs(v) do parts[i] = json(x, inner) end
    return '[' .. table.concat(parts, ', ') .. ']'
  end
  local parts = {}
  for _, k in ipairs(sorted_keys(v)) do parts[#parts + 1] = inner .. json(tostring(k)) .. ': ' .. json(v[k], inner) end
  return '{\n' .. table.concat(parts, ',\n') .. '\n' .. ind .. '}'
end
M.json = json

local function levenshtein(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = {[0] = i}
    for j = 1, #b do
      local c = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + c)
    end
    prev = cur
  end
  return prev[#b]
end

local function nearest(key, keys)
  local best, bd = nil, math.huge
  for _, k in ipairs(keys) do
    local d = levenshtein(key, k)
    if d < bd then best, bd = k, d end
  end
  return best
end

-- ---- the schema --------------------------------------------------------------------------------
local function kind_of(v)
  if math.type(v) == 'integer' then return 'integer' end
  if type(v) == 'number' then return 'number' end
  if type(v) == 'string' or type(v) == 'boolean' then return type(v) end
  return nil
end

-- One override value, typed by the key's default.
local function parse_value(e, key, s)
  local kind = e.types[key]
  if kind == 'integer' then
    local v = math.tointeger(tonumber(s))
    if not v then error(('%s: %s must be an integer, got "%s"'):format(e.name, key, s), 0) end
    return v
  elseif kind == 'number' then
    local v = tonumber(s)
    if not v then error(('%s: %s must be a number, got "%s"'):format(e.name, key, s), 0) end
    return v + 0.0
  elseif kind == 'boolean' then
    if s == 'true' or s == '1' then return true end
    if s == 'false' or s == '0' then return false end
    error(('%s: %s must be true or false, got "%s"'):format(e.name, key, s), 0)
  end
  local choices = e.choices[key]
  if choices then
    for _, c in ipairs(choices) do if c == s then return s end end
    error(('%s: %s must be one of %s, got "%s"'):format(e.name, key, table.concat(choices, ', '), s), 0)
  end
  return s
end

-- The values of one override: a comma list, an integer range a..b, or a single value.
local function parse_values(e, key, s)
  if e.types[key] == nil then
    local near = nearest(key, e.keys)
    error(('%s: unknown config key "%s"%s (keys: %s)'):format(e.name, key,
      near and (', did you mean "' .. near .. '"?') or '', table.concat(e.keys, ', ')), 0)
  end
  local lo, hi = s:match('^(%-?%d+)%.%.(%-?%d+)$')
  if lo and e.types[key] == 'integer' then
    lo, hi = math.tointeger(tonumber(lo)), math.tointeger(tonumber(hi))
    if hi < lo then error(('%s: empty range %s for %s'):format(e.name, s, key), 0) end
    local vs = {}
    for v = lo, hi do vs[#vs + 1] = v end
    return vs
  end
  local vs = {}
  for part in (s .. ','):gmatch('([^,]*),') do vs[#vs + 1] = parse_value(e, key, part) end
  return vs
end

-- gmoe sweep's scheduler options (--emit): option -> {field of opts.sched, check, what it takes}.
local SCHED_OPTS = {
  ['--max-running'] = {'max_running', '^[1-9]%d*$', 'a positive integer'},
  ['--cpus-per-task'] = {'cpus', '^[1-9]%d*$', 'a positive integer'},
  ['--time'] = {'time', '^%d[%d:%-]*$', 'a Slurm time limit (minutes, HH:MM:SS or D-HH:MM:SS)'},
  ['--mem'] = {'mem', '^[1-9]%d*[KMGT]?$', 'a size such as 500M or 4G'},
  ['--partition'] = {'partition', '^[%w_%-%.,]+$', 'a partition name'},
  ['--gpus'] = {'gpus', '^[%w_%-]*:?[1-9]%d*$', 'a GPU count, optionally TYPE:N'},
}

--- Parse command-line words: --quick, --force, --out DIR (runs root), --dir DIR (exact run
-- folder), -j N, --emit parallel|slurm, --status, the scheduler options above, key=value.
-- Returns opts (opts.sched holds the scheduler options) and overrides {key, values}.
function Exp:parse_args(args)
  local opts, over, seen = {quick = false, force = false, jobs = 1, sched = {}}, {}, {}
  local i = 1
  while args[i] do
    local a = args[i]
    local k, v = a:match('^([%a_][%w_]*)=(.*)$')
    if k == 'out' then opts.dir = v -- out=DIR: the same as --dir DIR
    elseif a == '--quick' then opts.quick = true
    elseif a == '--force' then opts.force = true
    elseif a == '--status' then opts.status = true
    elseif SCHED_OPTS[a] then
      local field, pat, what = table.unpack(SCHED_OPTS[a])
      local val = args[i + 1]
      if not val or not val:match(pat) then
        error(('%s: %s takes %s, got %s'):format(self.name, a, what, val and ('"' .. val .. '"') or 'nothing'), 0)
      end
      opts.sched[field] = val
      i = i + 1
    elseif a == '--join' then
      local val = args[i + 1]
      if not val then error(self.name .. ': --join needs a run folder', 0) end
      opts.join = opts.join or {}
      opts.join[#opts.join + 1] = val
      i = i + 1
    elseif a == '--out' or a == '--dir' or a == '-j' or a == '--emit' then
      local val = args[i + 1]
      if not val then error(('%s: %s needs a value'):format(self.name, a), 0) end
      i = i + 1
      if a == '-j' then
        opts.jobs = math.tointeger(tonumber(val))
        if not opts.jobs or opts.jobs < 1 then error(self.name .. ': -j needs a positive integer', 0) end
      elseif a == '--emit' then
        if val ~= 'parallel' and val ~= 'slurm' then error(self.name .. ': --emit takes parallel or slurm', 0) end
        opts.emit = val
      else
        opts[a:sub(3)] = val
      end
    elseif a:match('^%-j%d+$') then opts.jobs = math.tointeger(tonumber(a:sub(3)))
    elseif k then
      if seen[k] then error(('%s: %s given twice'):format(self.name, k), 0) end
      seen[k] = true
      over[#over + 1] = {key = k, values = parse_values(self, k, v), text = v}
    else
      error(('%s: expected --quick, --force, --out DIR, --dir DIR or key=value, got "%s"'):format(self.name, a), 0)
    end
    i = i + 1
  end
  return opts, over
end

--- The resolved configs of a command line: defaults, then the quick preset, then overrides;
-- a key with several values expands (cartesian product, in the order given) into several jobs.
-- Each job is {cfg = resolved, set = {key = value of the swept keys}, words = override words}.
function Exp:jobs(opts, over)
  local base = {}
  for k, v in pairs(self.config) do base[k] = v end
  if opts.quick then for k, v in pairs(self.quick) do base[k] = v end end
  local jobs = {{cfg = base, set = {}, words = {}}}
  for _, o in ipairs(over) do
    local nxt = {}
    for _, j in ipairs(jobs) do
      for _, v in ipairs(o.values) do
        local cfg, set, words = {}, {}, {table.unpack(j.words)}
        for k, x in pairs(j.cfg) do cfg[k] = x end
        for k, x in pairs(j.set) do set[k] = x end
        cfg[o.key] = v
        if #o.values > 1 then set[o.key] = v end
        words[#words + 1] = o.key .. '=' .. (type(v) == 'number' and fmt_value(v):gsub('%.0$', '') or tostring(v))
        nxt[#nxt + 1] = {cfg = cfg, set = set, words = words}
      end
    end
    jobs = nxt
  end
  local swept = {}
  for _, o in ipairs(over) do if #o.values > 1 then swept[#swept + 1] = o.key end end
  for _, j in ipairs(jobs) do
    if self.check then
      local ok, err = pcall(self.check, j.cfg)
      if not ok then error(('%s: bad config: %s'):format(self.name, tostring(err):gsub('^[^:]*:%d+: ', '')), 0) end
    end
  end
  return jobs, swept
end

--- gm.experiment{name=, description=, config={defaults}, quick={preset}, choices={key={...}},
--- doc={key=text}, select={keys}, check=function(cfg), run=function(cfg, run)} -> experiment
-- Called from the script named by arg[0] (gmoe run x.lua ...), or when arg[0] is <name>.lua, it
-- runs itself from arg.
function M.define(spec)
  if type(spec) ~= 'table' then error('experiment: expects a table {name=, config=, run=}', 2) end
  if type(spec.name) ~= 'string' or not spec.name:match('^[%w_%-]+$') then
    error('experiment: name must be a string of letters, digits, _ and -', 2)
  end
  if type(spec.run) ~= 'function' then error(spec.name .. ': run must be a function(cfg, run)', 2) end
  local e = setmetatable({name = spec.name, description = spec.description or '', config = spec.config or {},
                          quick = spec.quick or {}, choices = spec.choices or {}, doc = spec.doc or {},
                          check = spec.check, fn = spec.run, types = {}, keys = {}, select = {}}, Exp)
  for k, v in pairs(e.config) do
    if type(k) ~= 'string' or not k:match('^[%a_][%w_]*$') then error(spec.name .. ': config keys must be identifiers', 2) end
    if RESERVED[k] then error(('%s: config key "%s" is reserved for the runner'):format(spec.name, k), 2) end
    local kind = kind_of(v)
    if not kind then error(('%s: config.%s must be a number, string or boolean, got %s'):format(spec.name, k, type(v)), 2) end
    e.types[k] = kind
    e.keys[#e.keys + 1] = k
  end
  table.sort(e.keys)
  for _, k in ipairs(spec.select or {}) do
    if e.types[k] == nil then error(('%s: select names "%s", which is not a config key'):format(spec.name, tostring(k)), 2) end
    e.select[k] = true
  end
  for k, v in pairs(e.quick) do
    if e.types[k] == nil then
      local near = nearest(k, e.keys)
      error(('%s: quick preset sets unknown key "%s"%s'):format(spec.name, k, near and (', did you mean "' .. near .. '"?') or ''), 2)
    end
    local kind = kind_of(v)
    if kind ~= e.types[k] and not (kind == 'integer' and e.types[k] == 'number') then
      error(('%s: quick.%s is a %s but config.%s is a %s'):format(spec.name, k, tostring(kind), k, e.types[k]), 2)
    end
  end
  -- run ourselves when called from the main script (gmoe run x.lua / gmoe x.lua)
  -- (`return gm.experiment{...}` is a tail call that leaves no frame of the script, hence also
  -- the file-name rule: experiments/<name>.lua)
  local main_script = false
  if arg and type(arg[0]) == 'string' then
    main_script = arg[0]:match('([^/]+)%.lua$') == spec.name
    for level = 2, 4 do
      local info = debug.getinfo(level, 'S')
      if info and info.source == '@' .. arg[0] then main_script = true end
    end
  end
  if not M.loading and main_script then
    local ok = e:main(arg)
    if not ok then os.exit(1) end
  end
  return e
end

-- ---- provenance --------------------------------------------------------------------------------
local function binary()
  local lo = 0
  if not arg then return 'gmoe' end
  while arg[lo - 1] do lo = lo - 1 end
  return lo < 0 and arg[lo] or 'gmoe'
end
M.binary = binary

local function command_line()
  if not arg then return '' end
  local lo, hi = 0, #arg
  while arg[lo - 1] do lo = lo - 1 end
  local w = {}
  for i = lo, hi do w[#w + 1] = arg[i] end
  return table.concat(w, ' ')
end

local git_cache
local function git_info()
  if git_cache then return git_cache end
  local commit = shell('git rev-parse HEAD')
  local dirty
  if commit then
    local st = shell('git status --porcelain --untracked-files=no')
    dirty = st ~= nil and st ~= ''
  end
  git_cache = {commit = commit, dirty = dirty}
  return git_cache
end

local function host()
  return shell('hostname') or read_file('/etc/hostname') or 'unknown'
end

-- The scheduler job this run is, when it is one (Slurm's environment), for meta.json.
local function scheduler_info()
  local id = os.getenv('SLURM_JOB_ID')
  if not id then return nil end
  return {name = 'slurm', job_id = id, array_job_id = os.getenv('SLURM_ARRAY_JOB_ID'),
          array_task_id = os.getenv('SLURM_ARRAY_TASK_ID'), cpus_per_task = os.getenv('SLURM_CPUS_PER_TASK'),
          node = os.getenv('SLURMD_NODENAME'), partition = os.getenv('SLURM_JOB_PARTITION')}
end

local function build_info()
  local b = {version = gm.version, lua = _VERSION, blas = gm.blas_info and gm.blas_info() or nil,
             threads = gm.get_num_threads and gm.get_num_threads() or nil, cuda = 'none'}
  local ver = shell(q(binary()) .. ' --version')
  if ver then b.version_text = ver end
  if gm.build_info then
    local ok, info = pcall(gm.build_info)
    if ok then b.build = info end
  end
  return b
end

-- ---- a run ---------------------------------------------------------------------------------
--- The folder of a finished run of this config under root, or nil.
local function find_runs(root, name, id)
  local listing = shell(('ls -1 %s'):format(q(root .. '/' .. name))) or ''
  local found = {}
  for d in listing:gmatch('[^\n]+') do
    if d:sub(-9) == '-' .. id then found[#found + 1] = root .. '/' .. name .. '/' .. d end
  end
  table.sort(found)
  return found
end

function M.finished_run(root, name, id)
  local found = find_runs(root, name, id)
  for i = #found, 1, -1 do
    if exists(found[i] .. '/DONE') then return found[i] end
  end
  return nil
end

local function now() return os.date('!%Y-%m-%dT%H:%M:%SZ') end

-- A new run folder <base>/<UTC date-time>-<config id>, claimed with a plain mkdir (atomic: two
-- processes never get the same one). A second run of one config within the same second (--force,
-- concurrent sweeps) takes the next free second's stamp, so names stay unique and in start order.
local function new_run_dir(base, id)
  mkdir_p(base)
  local t = os.time()
  for k = 0, 600 do
    local dir = base .. '/' .. os.date('!%Y%m%d-%H%M%S', t + k) .. '-' .. id
    if not exists(dir) and os.execute('mkdir ' .. q(dir) .. ' 2>/dev/null') then return dir end
  end
  error('experiment: cannot create a new run folder in ' .. base, 0)
end

local function wall_clock()
  local s = shell('date +%s.%N')
  return tonumber(s) or os.time()
end

--- seed = run:seed(stream): a stream's seed derived from the master seed (cfg.seed, else 0).
function Run:seed(stream)
  stream = stream or 'default'
  local s = tonumber(hash8(('%d/%s'):format(self.master_seed, stream)), 16)
  self.streams[stream] = s
  return s
end

--- gen = run:generator(stream): gm.Generator(run:seed(stream)).
function Run:generator(stream) return gm.Generator(self:seed(stream)) end

--- run:log(fmt, ...): a line to log.txt (and stderr).
function Run:log(fmt, ...)
  local line = select('#', ...) > 0 and fmt:format(...) or tostring(fmt)
  self.log_lines[#self.log_lines + 1] = line
  if self.capture then table.insert(self.capture.logs, line) end
  if not self.quiet then self:_clear_bar() io.stderr:write(line, '\n') end
  self:_maybe_flush()
end

--- run:metric(name, value): a final metric (metrics.tsv; gmoe sweep's summary.tsv).
function Run:metric(name, value)
  if type(name) ~= 'string' or not name:match('^[%w_%.%-]+$') then error('metric: name must be an identifier', 2) end
  if self.metrics[name] == nil then self.metric_order[#self.metric_order + 1] = name end
  self.metrics[name] = value
  if self.capture then table.insert(self.capture.metrics, {name, value}) end
end

local Tsv = {}
Tsv.__index = Tsv

local function cell(v)
  if type(v) == 'number' then
    if v ~= v then return 'NaN' end
    if v == math.huge then return 'Inf' elseif v == -math.huge then return '-Inf' end
    return math.type(v) == 'integer' and tostring(v) or ('%.9g'):format(v)
  end
  if v == nil then return 'NaN' end
  return tostring(v)
end

--- w = run:tsv(name, columns): a TSV results file run_dir/name.tsv with a '# col1\tcol2' header.
--- w:row(v1, v2, ...) or w:row{col = v, ...} appends a row; w:flush() replaces the file
--- atomically (done at most every 2 s while rows come in, and when the run ends).
function Run:tsv(name, columns)
  if type(name) ~= 'string' or not name:match('^[%w_%-]+$') then error('tsv: name must be an identifier', 2) end
  if type(columns) ~= 'table' or #columns == 0 then error('tsv: columns must be a non-empty array of names', 2) end
  if self.tsvs[name] then return self.tsvs[name] end
  local w = setmetatable({run = self, name = name, path = self.dir .. '/' .. name .. '.tsv', columns = columns,
                          rows = {}}, Tsv)
  self.tsvs[name] = w
  self.tsv_order[#self.tsv_order + 1] = name
  w:flush()
  return w
end

function Tsv:row(first, ...)
  local vals
  if type(first) == 'table' then
    vals = {}
    for i, c in ipairs(self.columns) do vals[i] = first[c] end
    for k in pairs(first) do
      local known = false
      for _, c in ipairs(self.columns) do if c == k then known = true end end
      if not known then error(('tsv %s: unknown column %s'):format(self.path, tostring(k)), 2) end
    end
  else
    vals = {first, ...}
    if select('#', ...) + 1 ~= #self.columns then
      error(('tsv %s: a row has %d values but there are %d columns'):format(self.path, select('#', ...) + 1, #self.columns), 2)
    end
  end
  local cells = {}
  for i = 1, #self.columns do cells[i] = cell(vals[i]) end
  self:_add(table.concat(cells, '\t'))
  self.run:_maybe_flush()
end

function Tsv:_add(text)
  self.rows[#self.rows + 1] = text
  local cap = self.run.capture
  if cap then table.insert(cap.rows, {self.name, text}) end
end

--- w:fields() -> the rows written so far (replayed units' rows included), each an array of its
--- cells as written (strings; 'NaN' for a missing value), blank lines left out: a summary built
--- from the rows stays right when a resumed run replays units instead of recomputing them.
function Tsv:fields()
  local out = {}
  for _, line in ipairs(self.rows) do
    if line ~= '' then
      local f = {}
      for w in (line .. '\t'):gmatch('([^\t]*)\t') do f[#f + 1] = w end
      out[#out + 1] = f
    end
  end
  return out
end

--- w:blank(n=1): n blank lines (gnuplot blocks: one between blocks, two between data sets).
function Tsv:blank(n)
  for _ = 1, n or 1 do self:_add('') end
end

function Tsv:flush()
  local body = '# ' .. table.concat(self.columns, '\t') .. '\n'
  if #self.rows > 0 then body = body .. table.concat(self.rows, '\n') .. '\n' end
  M.write_atomic(self.path, body)
end

function Run:flush()
  for _, n in ipairs(self.tsv_order) do self.tsvs[n]:flush() end
  M.write_atomic(self.dir .. '/log.txt', #self.log_lines > 0 and table.concat(self.log_lines, '\n') .. '\n' or '')
  local m = {'# name\tvalue'}
  for _, k in ipairs(self.metric_order) do m[#m + 1] = k .. '\t' .. cell(self.metrics[k]) end
  M.write_atomic(self.dir .. '/metrics.tsv', table.concat(m, '\n') .. '\n')
  self.last_flush = os.time()
end

function Run:_maybe_flush()
  if os.time() - (self.last_flush or 0) >= 2 then self:flush() end
end

-- Progress: a bar with ETA on a terminal, a plain line every 10% (or 10 s) otherwise.
local has_term, term = pcall(require, 'gmoe.term')
local function stderr_tty()
  return has_term and term.isatty(2) and os.getenv('TERM') ~= 'dumb'
end

function Run:_clear_bar()
  if self.bar_shown then io.stderr:write('\r\27[K') self.bar_shown = false end
end

local function fmt_secs(s)
  if s ~= s or s == math.huge then return '?' end
  if s < 60 then return ('%.0fs'):format(s) end
  if s < 3600 then return ('%dm%02ds'):format(s // 60, math.floor(s % 60)) end
  return ('%dh%02dm'):format(s // 3600, math.floor(s % 3600 / 60))
end

--- run:progress(done, total, note): report progress on stderr (never stdout).
function Run:progress(done, total, note)
  if self.quiet then return end
  local elapsed = os.clock() - self.cpu0
  local wall = os.time() - self.t0
  local eta = done > 0 and (math.max(wall, elapsed) * (total - done) / done) or math.huge
  note = note and ('  ' .. note) or ''
  if self.tty then
    local width = 24
    local fill = total > 0 and math.floor(width * done / total + 0.5) or 0
    io.stderr:write(('\r\27[K%s [%s%s] %d/%d  ETA %s%s'):format(self.exp.name, ('#'):rep(fill),
      ('.'):rep(width - fill), done, total, fmt_secs(eta), note))
    io.stderr:flush()
    self.bar_shown = done < total
    if done >= total then io.stderr:write('\n') end
  else
    local step = math.max(1, total // 10)
    if done == total or done % step == 0 or os.time() - (self.last_line or 0) >= 10 then
      io.stderr:write(('%s: %d/%d  elapsed %s  ETA %s%s\n'):format(self.exp.name, done, total, fmt_secs(wall),
        fmt_secs(eta), note))
      self.last_line = os.time()
    end
  end
end

-- ---- units: per-unit checkpoints, so an interrupted run resumes --------------------------------
-- A unit's return value (and everything it wrote) is kept as Lua source in units/<n>.lua.
local function serialize(v, path)
  local t = type(v)
  if t == 'nil' or t == 'boolean' or t == 'number' or t == 'string' then return fmt_value(v) end
  if t ~= 'table' or getmetatable(v) ~= nil then
    error(('unit: %s is a %s; a unit returns numbers, strings, booleans and plain tables of them')
      :format(path, gm.is_tensor and gm.is_tensor(v) and 'tensor' or t), 0)
  end
  local parts = {}
  for _, k in ipairs(sorted_keys(v)) do
    if type(k) ~= 'string' and math.type(k) ~= 'integer' then error(('unit: %s has a %s key'):format(path, type(k)), 0) end
    parts[#parts + 1] = ('[%s] = %s'):format(fmt_value(k), serialize(v[k], path .. '.' .. tostring(k)))
  end
  return '{' .. table.concat(parts, ', ') .. '}'
end

-- The finished units saved in dir/units, in their order: a list of {i = n, unit = table, text =
-- the file's source}; unreadable or partial files are skipped.
local function saved_units(dir)
  local listing = shell('ls -1 ' .. q(dir .. '/units') .. ' 2>/dev/null') or ''
  local files = {}
  for f in listing:gmatch('[^\n]+') do
    local i = tonumber(f:match('^(%d+)%.lua$'))
    if i then files[#files + 1] = i end
  end
  table.sort(files)
  local out = {}
  for _, i in ipairs(files) do
    local path = ('%s/units/%d.lua'):format(dir, i)
    local text = read_file(path)
    local chunk = text and load(text, '=' .. path, 't', {})
    local ok, u = false, nil
    if chunk then ok, u = pcall(chunk) end
    if ok and type(u) == 'table' and type(u.key) == 'string' then out[#out + 1] = {i = i, unit = u, text = text} end
  end
  return out
end

local function load_units(dir)
  local units, n = {}, 0
  for _, s in ipairs(saved_units(dir)) do units[s.unit.key] = s.unit; n = math.max(n, s.i) end
  return units, n
end

--- value = run:unit(key, fn): runs fn() as one resumable unit of the experiment (one training run,
--- one fit). When this run folder resumes an interrupted run of the same config and unit `key`
--- finished there, fn is not called: the unit's TSV rows, metrics and log lines are replayed, the
--- default generator is set to the state the unit left it in, and its return value (numbers,
--- strings, booleans, plain tables) is returned. Otherwise fn() runs and all of that is saved
--- (units/<n>.lua, atomically) before run:unit returns. Draw a unit's randomness from the default
--- generator or from streams seeded inside the unit (run:generator(key)), not from a generator
--- carried over from an earlier unit, so a resumed run equals an uninterrupted one.
function Run:unit(key, fn)
  if type(key) ~= 'string' or key == '' then error('unit: key must be a non-empty string', 2) end
  if type(fn) ~= 'function' then error('unit: fn must be a function', 2) end
  if self.capture then error(('unit: units do not nest (%s inside %s)'):format(key, self.capture.key), 2) end
  if self.unit_seen[key] then error(('unit: key "%s" used twice in one run'):format(key), 2) end
  self.unit_seen[key] = true
  local u = self.units[key]
  if u then
    for _, r in ipairs(u.rows) do
      local w = self.tsvs[r[1]]
      if not w then error(('unit %s: its rows go to %s.tsv, which this run has not opened (run:tsv before the unit)')
        :format(key, r[1]), 2) end
      w.rows[#w.rows + 1] = r[2]
    end
    for _, m in ipairs(u.metrics) do self:metric(m[1], m[2]) end
    for _, l in ipairs(u.logs) do self.log_lines[#self.log_lines + 1] = l end
    gm.set_rng_state(u.rng)
    self.units_replayed = self.units_replayed + 1
    return u.value
  end
  self.capture = {key = key, rows = {}, metrics = {}, logs = {}}
  local ok, res = pcall(fn)
  local cap = self.capture
  self.capture = nil
  if not ok then error(res, 0) end
  self.unit_n = self.unit_n + 1
  local rng = gm.get_rng_state()
  local text = ('return {key = %s, value = %s, rng = %s, rows = %s, metrics = %s, logs = %s}\n'):format(
    fmt_value(key), serialize(res, 'the value of unit ' .. key), serialize({seed = rng.seed, offset = rng.offset}, 'rng'),
    serialize(cap.rows, 'rows'), serialize(cap.metrics, 'metrics'), serialize(cap.logs, 'logs'))
  mkdir_p(self.dir .. '/units')
  M.write_atomic(('%s/units/%d.lua'):format(self.dir, self.unit_n), text)
  self:flush()
  return res
end

-- root/name/latest -> the run folder (a folder of that name from older tools is moved aside).
local function point_latest(root, name, dir)
  local link = root .. '/' .. name .. '/latest'
  os.execute(('if [ -d %s ] && [ ! -L %s ]; then mv %s %s; fi; ln -sfn %s %s'):format(q(link), q(link), q(link),
    q(link .. '.old-' .. os.date('!%Y%m%d-%H%M%S')), q(dir:match('[^/]+$')), q(link)))
end

local function runs_root(opts)
  return opts.out or os.getenv('GMOE_RUNS') or 'runs'
end

-- ---- how a run ended: done, failed, interrupted (a signal it caught), stale (killed outright) ----
-- meta.json of a run folder as a table, or nil.
local function read_meta(dir)
  local text = read_file(dir .. '/meta.json')
  local ok, m = pcall(function() return text and gm._C.json_decode(text, dir .. '/meta.json') end)
  return ok and type(m) == 'table' and m or nil
end

-- --join FROM: copy the finished units of run folder FROM (the same experiment, a config that
-- differs only in keys the experiment declares as selecting units: spec.select) into this run's
-- units/, numbered after its own, so this run replays them. Units this run has are kept.
-- Returns how many were copied.
local function join_units(exp, cfg, dir, from, units, unit_n)
  local src = read_file(from .. '/config.lua')
  local chunk = src and load(src, '=' .. from .. '/config.lua', 't', {})
  local ok, other = false, nil
  if chunk then ok, other = pcall(chunk) end
  if not ok or type(other) ~= 'table' then
    error(('%s: --join %s: not a run folder (no readable config.lua)'):format(exp.name, from), 0)
  end
  local meta = read_meta(from)
  if meta and meta.name and meta.name ~= exp.name then
    error(('%s: --join %s is a run of %s'):format(exp.name, from, meta.name), 0)
  end
  local keys = {}
  for k in pairs(cfg) do keys[k] = true end
  for k in pairs(other) do keys[k] = true end
  for _, k in ipairs(sorted_keys(keys)) do
    if cfg[k] ~= other[k] and not exp.select[k] then
      local sel = sorted_keys(exp.select)
      error(('%s: --join %s: its config has %s = %s where this run has %s; only the keys that choose ' ..
        'which units run may differ (%s)'):format(exp.name, from, k, fmt_value(other[k]), fmt_value(cfg[k]),
        #sel > 0 and table.concat(sel, ', ') or 'this experiment declares none: select = {...}'), 0)
    end
  end
  local n = 0
  mkdir_p(dir .. '/units')
  for _, saved in ipairs(saved_units(from)) do
    if not units[saved.unit.key] then
      n = n + 1
      M.write_atomic(('%s/units/%d.lua'):format(dir, unit_n + n), saved.text)
      units[saved.unit.key] = saved.unit
    end
  end
  return n
end

-- Is process pid a gmoe still running here? (A pid the system gave to another program since
-- counts as gone.)
local function gmoe_alive(pid)
  if math.type(pid) ~= 'integer' or pid <= 0 then return false end
  local cmd = read_file(('/proc/%d/cmdline'):format(pid))
  if cmd then return cmd:find('gmoe', 1, true) ~= nil end
  return os.execute(('kill -0 %d 2>/dev/null'):format(pid)) == true
end

-- An unfinished run folder about to be resumed: a "running" run whose process is gone (kill -9,
-- out of memory, a lost node) is marked stale in its meta.json, and one whose process still
-- runs on this host is an error (two processes must not write one folder). Returns the earlier
-- attempts, oldest first, for the new meta.json, and a log line about the last one.
local function take_over(dir, me)
  local old = read_meta(dir)
  if not old then return {}, nil end
  local attempts = type(old.attempts) == 'table' and old.attempts or {}
  local here = old.host == host()
  if old.status == 'running' and here and old.pid ~= me and gmoe_alive(old.pid) then
    error(('%s: a run of this config is in progress in %s (pid %d); wait for it, or stop it first'):format(
      old.name or 'run', dir, old.pid), 0)
  end
  local line
  if old.status == 'running' and here then
    old.status, old.reason = 'stale', ('process %s ended without recording how (killed outright: kill -9, out of ' ..
      'memory, a lost machine); found at %s'):format(tostring(old.pid), now())
    M.write_atomic(dir .. '/meta.json', json(old) .. '\n')
  end
  if old.status then
    line = ('resumed after an earlier attempt: %s%s (pid %s, started %s)'):format(old.status,
      old.reason and (': ' .. old.reason) or '', tostring(old.pid), tostring(old.start))
    attempts[#attempts + 1] = {start = old.start, ['end'] = old['end'], status = old.status, reason = old.reason,
                               pid = old.pid, host = old.host}
  end
  return attempts, line
end

-- Execute one job in this process. Returns the run folder and whether it ran (false: skipped).
function Exp:execute(job, opts, quiet)
  local cfg = job.cfg
  local id = M.config_id(cfg)
  local root = runs_root(opts)
  local dir = opts.dir
  if not opts.force then
    local done = dir and (exists(dir .. '/DONE') and read_file(dir .. '/config.lua') == config_source(cfg) and dir)
      or (not dir and M.finished_run(root, self.name, id))
    if done then
      if not quiet then io.stderr:write(('%s: already done in %s (--force reruns)\n'):format(self.name, done)) end
      if not dir then point_latest(root, self.name, done) end
      return done, false
    end
  end
  -- an unfinished run of the same config (interrupted, killed, failed) is resumed in its folder
  local resume = dir
  if resume then
    resume = read_file(dir .. '/config.lua') == config_source(cfg) and dir or nil
  elseif not opts.force then
    resume = M.latest_any(root, self.name, id)
  end
  if resume and opts.force then resume = nil end
  if not dir then dir = resume or new_run_dir(root .. '/' .. self.name, id) end
  local me = tonumber(shell('echo $PPID'))
  local attempts, taken = {}, nil
  if resume then attempts, taken = take_over(dir, me) end
  mkdir_p(dir)
  os.remove(dir .. '/DONE')
  if not resume then os.execute('rm -rf ' .. q(dir .. '/units')) end
  local units, unit_n = {}, 0
  if resume then units, unit_n = load_units(dir) end
  local joined = {}
  for _, from in ipairs(opts.join or {}) do
    local n = join_units(self, cfg, dir, from, units, unit_n)
    unit_n = unit_n + n
    joined[#joined + 1] = {dir = from, units = n}
  end
  local run = setmetatable({exp = self, dir = dir, cfg = cfg, id = id, tsvs = {}, tsv_order = {}, metrics = {},
                            metric_order = {}, log_lines = {}, streams = {}, quiet = quiet,
                            tty = stderr_tty(), t0 = os.time(), cpu0 = os.clock(), last_flush = os.time(),
                            master_seed = math.tointeger(cfg.seed) or 0, units = units, unit_n = unit_n,
                            unit_seen = {}, units_replayed = 0}, Run)
  M.write_atomic(dir .. '/config.lua', config_source(cfg))
  M.write_atomic(dir .. '/overrides.txt', table.concat(job.words, '\n') .. (#job.words > 0 and '\n' or ''))
  local meta = {name = self.name, description = self.description, id = id, config = cfg, overrides = job.words,
                quick = opts.quick, gmoe = build_info(), git = git_info(), host = host(), command = command_line(),
                cwd = has_term and term.getcwd() or nil, scheduler = scheduler_info(), start = now(), status = 'running',
                pid = me, resumed = resume and unit_n or nil, attempts = #attempts > 0 and attempts or nil,
                joined = #joined > 0 and joined or nil,
                seeds = {master = run.master_seed, streams = run.streams}}
  M.write_atomic(dir .. '/meta.json', json(meta) .. '\n')
  if not quiet then
    local lines = {}
    for _, k in ipairs(sorted_keys(cfg)) do lines[#lines + 1] = k .. '=' .. fmt_value(cfg[k]) end
    io.stderr:write(('%s: %s\n%s: run folder %s\n'):format(self.name, table.concat(lines, ' '), self.name, dir))
    if resume then
      io.stderr:write(('%s: resuming an unfinished run: %d unit(s) already done\n'):format(self.name, unit_n))
    end
    for _, j in ipairs(joined) do
      io.stderr:write(('%s: joined %d unit(s) from %s\n'):format(self.name, j.units, j.dir))
    end
  end
  if taken then run.log_lines[#run.log_lines + 1] = taken end
  local w0 = wall_clock()
  -- A Ctrl-C or SIGTERM is held (its flag lowered) until the folder says how the run ended,
  -- then raised again: the bookkeeping below runs to the end and the interrupt still unwinds.
  local ok, err, sig
  if has_term then ok, err, sig = term.xpcall_held(self.fn, cfg, run)
  else ok, err = xpcall(self.fn, debug.traceback, cfg, run) end
  run:_clear_bar()
  meta['end'] = now()
  meta.wall_s = wall_clock() - w0
  meta.cpu_s = os.clock() - run.cpu0
  meta.status = sig and 'interrupted' or ok and 'done' or 'failed'
  meta.metrics = run.metrics
  if run.unit_n > 0 then meta.units = {done = run.unit_n, replayed = run.units_replayed} end
  if sig then
    meta.reason = sig == 'SIGTERM' and 'SIGTERM (terminated)' or 'SIGINT (Ctrl-C)'
    run.log_lines[#run.log_lines + 1] = ('interrupted by %s at %s after %d unit(s); rerun the same command to resume'):format(
      meta.reason, meta['end'], run.unit_n)
  elseif not ok then
    meta.error = tostring(err)
    run.log_lines[#run.log_lines + 1] = 'error: ' .. tostring(err)
  end
  run:flush()
  M.write_atomic(dir .. '/meta.json', json(meta) .. '\n')
  if sig then
    local msg = ('%s: interrupted by %s; rerun the same command to resume in %s'):format(self.name, meta.reason, dir)
    term.reraise(sig)
    error(msg, 0)
  end
  if not ok then error(('%s: run failed (%s): %s'):format(self.name, dir, tostring(err)), 0) end
  M.write_atomic(dir .. '/DONE', meta['end'] .. '\n')
  if not opts.dir then point_latest(root, self.name, dir) end
  if not quiet then io.stderr:write(('%s: done in %.1f s\n'):format(self.name, meta.wall_s)) end
  return dir, true
end

local function read_metrics(dir)
  local m, order = {}, {}
  local text = read_file(dir .. '/metrics.tsv') or ''
  for line in text:gmatch('[^\n]+') do
    local k, v = line:match('^([^#][^\t]*)\t(.*)$')
    if k then m[k] = v; order[#order + 1] = k end
  end
  return m, order
end

-- summary.tsv of a sweep: one row per job, the swept keys then every metric any job reported.
local function write_summary(path, jobs, swept)
  local mnames, seen = {}, {}
  for _, j in ipairs(jobs) do
    if j.dir then
      local _, order = read_metrics(j.dir)
      for _, k in ipairs(order) do if not seen[k] then seen[k] = true; mnames[#mnames + 1] = k end end
    end
  end
  local cols = {}
  for _, k in ipairs(swept) do cols[#cols + 1] = k end
  cols[#cols + 1] = 'status'
  for _, k in ipairs(mnames) do cols[#cols + 1] = k end
  cols[#cols + 1] = 'run'
  local lines = {'# ' .. table.concat(cols, '\t')}
  for _, j in ipairs(jobs) do
    local m = j.dir and read_metrics(j.dir) or {}
    local row = {}
    for _, k in ipairs(swept) do row[#row + 1] = cell(j.cfg[k]) end
    row[#row + 1] = j.status or 'failed'
    for _, k in ipairs(mnames) do row[#row + 1] = m[k] or 'NaN' end
    row[#row + 1] = j.dir or '-'
    lines[#lines + 1] = table.concat(row, '\t')
  end
  M.write_atomic(path, table.concat(lines, '\n') .. '\n')
end

local function sweep_dir(self, opts, over)
  local words = {}
  for _, o in ipairs(over) do words[#words + 1] = o.key .. '=' .. o.text end
  local id = hash8((opts.quick and '--quick ' or '') .. table.concat(words, ' '))
  local dir = runs_root(opts) .. '/' .. self.name .. '/sweep-' .. id
  mkdir_p(dir)
  return dir
end

--- gmoe run: run every job of the command line in this process, one after another. Returns
--- true when all succeeded.
function Exp:main(args)
  local ok, err = pcall(function()
    local opts, over = self:parse_args(args)
    if opts.emit or opts.status or next(opts.sched) then
      error(self.name .. ': --emit, --status and the scheduler options belong to gmoe sweep', 0)
    end
    local jobs, swept = self:jobs(opts, over)
    if opts.dir and #jobs > 1 then error(self.name .. ': --dir names one run folder; a sweep needs --out', 0) end
    if opts.join and #jobs > 1 then error(self.name .. ': --join fills one run; join each config of a sweep on its own', 0) end
    local failed = 0
    for i, j in ipairs(jobs) do
      if #jobs > 1 then io.stderr:write(('%s: job %d/%d: %s\n'):format(self.name, i, #jobs, table.concat(j.words, ' '))) end
      local jok, dir, ran = pcall(self.execute, self, j, opts, false)
      if not jok and has_term and term.pending() then error(dir, 0) end -- an interrupt ends the sweep
      if jok then
        j.dir, j.status = dir, ran and 'done' or 'skipped'
      else
        failed = failed + 1
        io.stderr:write(tostring(dir), '\n')
        j.dir = M.latest_any(runs_root(opts), self.name, M.config_id(j.cfg))
      end
    end
    if #jobs > 1 then
      local sdir = sweep_dir(self, opts, over)
      write_summary(sdir .. '/summary.tsv', jobs, swept)
      io.stderr:write(('%s: %d jobs, %d failed; summary %s/summary.tsv\n'):format(self.name, #jobs, failed, sdir))
    end
    if failed > 0 then error(('%s: %d of %d jobs failed'):format(self.name, failed, #jobs), 0) end
  end)
  if not ok and has_term and term.pending() then error(err, 0) end -- reported once, by the caller
  if not ok then io.stderr:write(tostring(err), '\n') end
  return ok
end

function M.latest_any(root, name, id)
  local found = find_runs(root, name, id)
  return found[#found]
end

-- ---- gmoe sweep ----------------------------------------------------------------------------
-- The sweep runner (local pool, --emit parallel|slurm, --status) lives in gmoe/sweep.lua; it
-- reaches the runner's helpers through M._sweep_helpers.
M._sweep_helpers = {q = q, shell = shell, exists = exists, read_file = read_file, mkdir_p = mkdir_p,
                    runs_root = runs_root, sweep_dir = sweep_dir, write_summary = write_summary,
                    cwd = function() return has_term and term.getcwd() or nil end}

function Exp:sweep(script, args) return require('gmoe.sweep').run(self, script, args) end

-- ---- gmoe plot -----------------------------------------------------------------------------
--- M.plot(name, run_dir=latest, opts): renders plots/<name>.gp into run_dir as PDF, PNG, SVG.
function M.plot(name, dir, opts)
  opts = opts or {}
  local gp = (opts.plots or os.getenv('GMOE_PLOTS') or 'plots') .. '/' .. name .. '.gp'
  if not exists(gp) then error(('plot: no plot script %s'):format(gp), 0) end
  if not dir then
    local base = runs_root(opts) .. '/' .. name
    if exists(base .. '/latest/DONE') then
      dir = base .. '/latest'
    else
      local listing = shell('ls -1 ' .. q(base)) or ''
      for d in listing:gmatch('[^\n]+') do
        if d:match('^%d+%-%d+%-%x+$') and exists(base .. '/' .. d .. '/DONE') then dir = base .. '/' .. d end
      end
    end
    if not dir then error(('plot: no finished run of %s under %s'):format(name, base), 0) end
  end
  if not exists(dir .. '/DONE') and not opts.unfinished then
    io.stderr:write(('plot: warning: %s has no DONE (unfinished run)\n'):format(dir))
  end
  local gnuplot = os.getenv('GMOE_GNUPLOT') or 'gnuplot'
  local outs = {}
  for _, fmt in ipairs {'pdf', 'png', 'svg'} do
    local out = dir .. '/' .. name .. '.' .. fmt
    local tmpname = dir .. '/.' .. name .. '.tmp.' .. fmt
    local cmd = ('%s -e %s %s 2>&1'):format(q(gnuplot),
      q(("dir='%s'; fmt='%s'; out='%s'"):format(dir, fmt, tmpname)), q(gp))
    local p = io.popen(cmd)
    local msg = p:read('a')
    local ok = p:close()
    if not ok or not exists(tmpname) then
      os.remove(tmpname)
      error(('plot: gnuplot failed on %s (%s):\n%s'):format(gp, fmt, msg), 0)
    end
    if msg ~= '' then io.stderr:write(msg) end
    assert(os.rename(tmpname, out))
    outs[#outs + 1] = out
  end
  return outs
end

-- ---- command line --------------------------------------------------------------------------
local function load_experiment(script)
  M.loading = true
  local chunk, err = loadfile(script)
  if not chunk then M.loading = false error(err, 0) end
  local ok, e = pcall(chunk)
  M.loading = false
  if not ok then error(e, 0) end
  if getmetatable(e) ~= Exp then error(script .. ': does not return gm.experiment{...}', 0) end
  return e
end
M.load = load_experiment

local USAGE = [[
usage: gmoe run experiments/NAME.lua [--quick] [--force] [--out ROOT | --dir DIR] [--join RUN_DIR ...] [key=value | key=a,b,c | key=1..9 ...]
       gmoe sweep experiments/NAME.lua [--quick] [--force] [--out ROOT] [-j N | --emit parallel|slurm | --status]
                  [--max-running N] [--cpus-per-task N] [--time T] [--mem M] [--partition P] [--gpus G] key=a,b,c ...
       gmoe plot NAME [RUN_DIR]   (renders plots/NAME.gp to PDF, PNG and SVG in the run folder; latest run by default)
Run folders go to ROOT/NAME/<timestamp>-<config id>/ (ROOT: --out, else $GMOE_RUNS, else runs);
a sweep's jobs.txt, sweep.sbatch, parallel.txt, logs and summary.tsv go to ROOT/NAME/sweep-<id>/.
--emit slurm|parallel writes only the jobs not yet done; --status reports each job (failed ones
with their logs) and writes summary.tsv. Plot scripts come from $GMOE_PLOTS, else plots.]]

--- M.cli(cmd, args): gmoe sweep / gmoe plot. Returns true on success (errors are reported).
function M.cli(cmd, args)
  local ok, res = pcall(function()
    if args[1] == '-h' or args[1] == '--help' then print(USAGE) return true end
    if cmd == 'sweep' then
      local script = args[1]
      if not script then error('sweep: missing the experiment script\n' .. USAGE, 0) end
      local e = load_experiment(script)
      return e:sweep(script, {table.unpack(args, 2)})
    elseif cmd == 'plot' then
      local name, dir = args[1], args[2]
      if not name then error('plot: missing the experiment name\n' .. USAGE, 0) end
      name = name:gsub('^.*/', ''):gsub('%.lua$', ''):gsub('%.gp$', '')
      for _, o in ipairs(M.plot(name, dir)) do print(o) end
      return true
    end
    error('gmoe: unknown command ' .. tostring(cmd) .. '\n' .. USAGE, 0)
  end)
  if not ok and has_term and term.pending() then error(res, 0) end -- reported once, by the caller
  if not ok then io.stderr:write('gmoe ', cmd, ': ', tostring(res), '\n') return false end
  return res
end

doc.add('gm.experiment',
  'gm.experiment{name=, description=, config={key=default}, quick={key=value}, choices={key={...}}, ' ..
  'select={keys}, check=function(cfg), run=function(cfg, run)} -> experiment',
  'Declares an experiment. Config values are numbers, integers, strings or booleans; their defaults ' ..
  'type the overrides. Run as a script (gmoe run experiments/NAME.lua [--quick] [--force] [--out ROOT | ' ..
  '--dir DIR] [key=v | key=a,b,c | key=1..9 ...]) it resolves defaults, then the quick preset, then ' ..
  'the overrides (an unknown key is an error naming the nearest key), expands lists into a sweep ' ..
  '(summary.tsv), and runs each job in ROOT/NAME/<UTC timestamp>-<config id>/ (ROOT: --out, ' ..
  '$GMOE_RUNS, else runs; ROOT/NAME/latest points at the last one): config.lua, overrides.txt, ' ..
  'meta.json (version, git commit and dirty flag, BLAS, threads, CUDA, host, command, seeds, start, ' ..
  'end, wall time, status), the TSV files, metrics.tsv, log.txt and DONE last, each written ' ..
  'atomically. A finished run of the same config is skipped unless --force; an unfinished one ' ..
  '(interrupted, killed, failed) is resumed in its folder, its finished units replayed. --join RUN_DIR (repeatable) ' ..
  'copies the finished units of another run of the experiment into this one, which then replays them: a run split ' ..
  'by arms=a / arms=b over processes or machines joins into one run of arms=a+b; the configs may differ only in the ' ..
  'keys the experiment lists in select = {...} (keys that choose which units run, not what a unit computes). ' ..
  'Inside run(cfg, run): ' ..
  'run:tsv(name, columns) -> writer with :row(...) / :row{col=v} / :blank() / :fields() (the rows so far as ' ..
  'arrays of cells, replayed units\' rows included, for summaries); run:metric(name, v); ' ..
  'run:log(fmt, ...); gm.experiment.list(cfg.arms) splits a \'+\'-separated value into its words; ' ..
  'run:progress(done, total, note) (stderr: a bar with ETA on a terminal, plain ' ..
  'lines otherwise); run:unit(key, fn) runs one resumable unit (see ?run:unit); run:seed(stream) and run:generator(stream) derive stream seeds from cfg.seed; ' ..
  'run.dir is the folder. `gmoe sweep experiments/NAME.lua key=a,b seed=1..10 -j N` runs the jobs ' ..
  'in N processes and resumes; with --emit slurm it writes an sbatch array of the jobs not yet done ' ..
  '(--max-running N, --cpus-per-task N sets their threads, --time, --mem, --partition, --gpus), with ' ..
  '--emit parallel a GNU parallel job list, and --status reports every job (failed ones with their ' ..
  'logs) and writes summary.tsv (README: Running on a cluster); ' ..
  '`gmoe plot NAME [run-dir]` renders plots/NAME.gp (given dir, fmt, out) to PDF, PNG and SVG in the run.',
  {example = 'return gm.experiment{name="demo", config={n=100, seed=1}, quick={n=10},\n' ..
     '  run=function(cfg, run) local w = run:tsv("out", {"i", "v"}) for i = 1, cfg.n do w:row(i, i * i) end end}'})

doc.add('run:unit', 'value = run:unit(key, fn)',
  'Runs fn() as one resumable unit of an experiment (one training run, one fit) and returns its value ' ..
  '(numbers, strings, booleans, plain tables). The unit\'s TSV rows, metrics, log lines, value and ' ..
  'the default generator\'s state afterwards are saved in the run folder (units/<n>.lua, atomically). ' ..
  'Re-running the same config after an interruption, a kill or a failure continues in that folder: a ' ..
  'finished unit is not run again but replayed (rows, metrics, log, generator state, value), so the ' ..
  'results equal an uninterrupted run. Keys are unique per run; units do not nest. Draw a unit\'s ' ..
  'randomness from the default generator or from streams made inside it (run:generator(key)).',
  {example = 'for _, lr in ipairs{1e-3, 3e-3} do\n  local acc = run:unit("lr=" .. lr, function() return train(lr) end)\nend'})

return setmetatable(M, {__call = function(_, spec) return M.define(spec) end})
