-- gmoe.repl: the Lua half of the REPL (lua/repl.c reads lines, compiles cells and handles
-- Ctrl-C; everything else is here): numbered cells (In, Out, _, __), output capture for
-- notebooks, timing, `?name` help, magics (%time, %timeit, %who, ...), `!cmd`, and the
-- candidates of Tab completion. gmoe.notebook uses the same cell evaluation and capture.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local show = require 'gmoe.show'
local doc = require 'gmoe.doc'

local M = {}

M.threshold = 0.5 -- cells slower than this (seconds) print their wall time
M.cells = {}      -- [n] = {n, src, kind = 'lua'|'special', ok, out, figures}
M.last_traceback = nil

local has_term, term = pcall(require, 'gmoe.term') -- C helpers of the gmoe executable

-- {==================================================================================
-- Output capture: what a cell writes to stdout through print, io.write and io.stdout:write
-- is kept (without colour codes) for %export, and still shown as it is written.
-- ===================================================================================
local file_methods = getmetatable(io.stdout).__index
local raw_file_write, raw_io_write = file_methods.write, io.write
local CAPTURE_MAX = 1 << 20 -- bytes kept per cell
local cap                    -- nil, or {parts, size, hold}

local function record(...)
  for i = 1, select('#', ...) do
    local s = select(i, ...)
    s = type(s) == 'string' and s or tostring(s)
    local into = cap.hold or cap.parts
    if cap.hold or cap.size + #s <= CAPTURE_MAX then
      into[#into + 1] = s
      if not cap.hold then cap.size = cap.size + #s end
    end
  end
end

--- Writes s to stdout without capturing it (prompts, timings, inline plots).
function M.raw(s) raw_file_write(io.stdout, s) end

local installed = false
--- Routes stdout writes through the capture (idempotent). print is redefined on top of
-- io.stdout:write so that its text is captured too.
function M.install_capture()
  if installed then return end
  installed = true
  file_methods.write = function(f, ...)
    if cap and f == io.stdout then
      record(...)
      if cap.hold then return f end
    end
    return raw_file_write(f, ...)
  end
  io.write = function(...)
    if cap and io.output() == io.stdout then return io.stdout:write(...) end
    return raw_io_write(...)
  end
  _G.print = function(...)
    local n, t = select('#', ...), {}
    for i = 1, n do t[i] = tostring((select(i, ...))) end
    io.stdout:write(table.concat(t, '\t') .. '\n') -- one write: one piece of a stream
  end
end

function M.capture_begin() cap = {parts = {}, size = 0} end

--- Ends the capture; returns the text, colour codes removed.
function M.capture_end()
  local c = cap
  cap = nil
  if not c then return '' end
  return (table.concat(c.parts):gsub('\27%[[%d;]*[A-Za-z]', ''))
end

-- Runs fn(...) with stdout held back: returns what it wrote (shown later, e.g. after Out[n]:).
local function held(fn, ...)
  local own = not cap
  if own then M.capture_begin() end
  cap.hold = {}
  local ok, err = pcall(fn, ...)
  local text = table.concat(cap.hold)
  cap.hold = nil
  if own then cap = nil end
  if not ok then error(err, 0) end
  return text
end
-- }==================================================================================

-- {==================================================================================
-- Cells
-- ===================================================================================

--- Compiles a cell as lua.c does: as an expression first, then as statements.
-- Returns fn, is_expression; or nil, message.
function M.compile(src, chunkname)
  chunkname = chunkname or '=stdin'
  local f = load('return ' .. src .. ';', chunkname)
  if f then return f, true end
  local g, err = load(src, chunkname)
  if not g then return nil, err end
  return g, false
end

--- Strips a pasted prompt ("gmoe [3]> ", "gmoe> ", "...> ") from the start of a line.
function M.strip(line)
  return (line:gsub('^%s*gmoe %[%d*%]> ?', '', 1):gsub('^%s*gmoe> ?', '', 1)
    :gsub('^%s*%.%.%.> ?', '', 1))
end

--- True when the line is not Lua but help, a magic or a shell command.
function M.is_special(line)
  local c = line:match('^%s*(%S)')
  return c == '?' or c == '%' or c == '!'
end

local function paint(role, s) return show.paint(role, s) end

local baseline -- the globals present when the REPL started (kept by %reset, hidden by %who)
local figures_of_cell

--- Called once by the REPL: colour, capture, In/Out tables, the baseline of globals.
function M.start(opts)
  opts = opts or {}
  show.opts.color = opts.color and true or false
  M.install_capture()
  rawset(_G, 'In', rawget(_G, 'In') or {})
  rawset(_G, 'Out', rawget(_G, 'Out') or {})
  baseline = {}
  for k in pairs(_G) do baseline[k] = true end
  baseline._, baseline.__ = true, true
  local plot = package.loaded['gmoe.plot']
  if plot then
    plot.on_figure = function(fig)
      if figures_of_cell then figures_of_cell[#figures_of_cell + 1] = fig end
    end
  end
end

local t_start

--- Before a cell runs: In[n], capture, clock.
function M.begin(n, src, special)
  In[n] = src
  M.cells[n] = {n = n, src = src, kind = special and 'special' or 'lua', figures = {}}
  figures_of_cell = M.cells[n].figures
  M.capture_begin()
  t_start = gm.clock()
end

local function timing(elapsed)
  if elapsed >= M.threshold then
    io.stdout:flush()
    io.stderr:write(paint('dim', ('(%.2f s)'):format(elapsed)), '\n')
  end
end

--- The text gm.show gives the values (looked up anew each time, so a user can replace it),
-- without showing it.
function M.show_text(...)
  local shower = type(rawget(_G, 'gm')) == 'table' and gm.show or nil
  if type(shower) ~= 'function' then shower = show.show end
  return held(shower, ...)
end

--- The results of cell n become Out[n], _ and __; returns their M.show_text, captured with the
-- cell's output, or nil when there are none. The REPL prints it after "Out[n]: "; the Jupyter
-- kernel sends it as the cell's execute_result.
function M.result(n, ...)
  if select('#', ...) == 0 then return nil end
  local v = ...
  rawset(_G, '__', rawget(_G, '_'))
  rawset(_G, '_', v)
  Out[n] = v
  local text = M.show_text(...)
  if cap then record(text) end
  return text
end

--- Cell n ran without error: its captured output is kept (for %export).
function M.done(n)
  local cell = M.cells[n]
  cell.ok = true
  cell.out = M.capture_end()
  figures_of_cell = nil
end

--- After a cell ran: M.result, printed as Out[n], then M.done.
function M.finish(n, ...)
  local elapsed = gm.clock() - t_start
  local text = M.result(n, ...)
  if text then
    local prefix = paint('bad', ('Out[%d]: '):format(n))
    if text:find('\n.') then prefix = prefix .. '\n' end
    M.raw(prefix .. text)
  end
  M.done(n)
  io.stdout:flush()
  timing(elapsed)
end

--- A cell failed: its output so far and the traceback (for %tb) are kept; returns the message
-- without the traceback.
function M.failed(n, msg)
  msg = tostring(msg)
  local short = msg:match('^(.-)\nstack traceback:') or msg
  local cell = M.cells[n]
  if cell then -- %export keeps it, marked with its error (or as interrupted)
    cell.ok = false
    cell.out = M.capture_end()
    cell.err = short
    cell.interrupted = gm._C.interrupted()
  end
  cap, figures_of_cell = nil, nil
  M.last_traceback = msg
  return msg:match('^(.-)\nstack traceback:') or msg
end

--- After a cell failed: M.failed, and the message printed on stderr.
function M.fail(n, msg)
  local short = M.failed(n, msg)
  io.stdout:flush()
  io.stderr:write(paint('bad', short), '\n')
end
-- }==================================================================================

-- {==================================================================================
-- Help: ?name and ??name
-- ===================================================================================
local ops_by_name
local function op_entry(name)
  if not ops_by_name then
    ops_by_name = {}
    for _, o in ipairs(gm.ops()) do ops_by_name[o.name] = o end
  end
  return ops_by_name[name]
end

-- The value a dotted/colon name denotes, walking from _G (x:matmul -> x's method).
local function lookup(name)
  local v = _G
  for part in name:gmatch('[^.:]+') do
    if type(v) ~= 'table' and not gm.is_tensor(v) then return nil end
    local ok, w = pcall(function() return v[part] end)
    if not ok then return nil end
    v = w
  end
  return v
end

-- The repository's root, for finding an op's row in core/ops/*.def: the folder above the
-- executable's (build/gmoe -> .), when it holds core/ops.def.
local function repo_root()
  local lo = 0
  while arg and arg[lo - 1] do lo = lo - 1 end
  local exe = arg and arg[lo] or ''
  local dir = exe:match('^(.*)/[^/]+/[^/]+$') or (exe:match('^[^/]+/[^/]+$') and '.')
  if dir and io.open(dir .. '/core/ops.def') then return dir end
  if io.open('core/ops.def') then return '.' end
end

local function op_where(name)
  local root = repo_root()
  if root then
    local p = io.popen('grep -n \'"' .. name .. '",\' ' .. root .. '/core/ops/*.def 2>/dev/null')
    local hit = p and p:read('l')
    if p then p:close() end
    if hit then
      local file, line = hit:match('^(.-):(%d+):')
      if file then return file:gsub('^%./', '') .. ':' .. line .. ' (op table row)' end
    end
  end
  return 'the op table, core/ops/*.def (a C op)'
end

local function fn_where(v)
  if type(v) ~= 'function' then return nil end
  local info = debug.getinfo(v, 'S')
  if info.what == 'C' then return nil end
  return info.short_src .. ':' .. info.linedefined
end

local function wrap(text, indent, width)
  local out, line = {}, indent
  for word in text:gmatch('%S+') do
    if #line + #word + 1 > width and #line > #indent then
      out[#out + 1] = line
      line = indent
    end
    line = line .. (#line > #indent and ' ' or '') .. word
  end
  out[#out + 1] = line
  return table.concat(out, '\n')
end

--- The help text of a name (nil when nothing is known about it).
function M.help_text(name, verbose)
  name = name:match('^%s*(.-)%s*$')
  local v = lookup(name)
  local key = name:gsub(':', '.')
  local e = doc.get(key) or doc.get('gm.' .. key)
  if not e then
    local tail = key:match('[^.]+$')
    local Tensor_method = key:match('^gm%.Tensor%.') or name:find(':')
    if tail and (doc.get('gm.Tensor.' .. tail)) and (Tensor_method or v == gm.Tensor[tail]) then
      e = doc.get('gm.Tensor.' .. tail)
    end
  end
  local lines = {}
  if e then
    lines[#lines + 1] = paint('header', e.sig)
    lines[#lines + 1] = wrap(e.text, '  ', 88)
    if e.formula then lines[#lines + 1] = '  formula: ' .. e.formula end
    if e.paper then lines[#lines + 1] = '  paper: ' .. e.paper end
    if verbose then
      lines[#lines + 1] = '  defined at: ' .. (fn_where(v) or e.where)
    end
    return table.concat(lines, '\n')
  end
  local opname = key:match('[^.]+$')
  local o = opname and op_entry(opname)
  if o and (v == nil or v == gm[opname] or v == gm.Tensor[opname] or gm.is_tensor(lookup(
      name:match('^(.*)[.:]') or ''))) then
    lines[#lines + 1] = paint('header', ('gm.%s(%s)'):format(o.name, o.sig:gsub(' ', ', ')))
    lines[#lines + 1] = wrap(o.doc, '  ', 88)
    local props = {}
    if o.nodiff then props[#props + 1] = 'no gradient' end
    if o.view then props[#props + 1] = 'returns a view' end
    props[#props + 1] = ('also x:%s(...)'):format(o.name)
    lines[#lines + 1] = '  op: ' .. table.concat(props, ', ')
    if verbose then lines[#lines + 1] = '  defined at: ' .. op_where(o.name) end
    return table.concat(lines, '\n')
  end
  if v ~= nil then
    lines[#lines + 1] = paint('header', name) .. ': ' .. type(v) .. ' (no documentation)'
    if type(v) == 'table' then
      local keys = {}
      for k in pairs(v) do if type(k) == 'string' then keys[#keys + 1] = k end end
      table.sort(keys)
      lines[#lines + 1] = wrap('fields: ' .. table.concat(keys, ' '), '  ', 88)
    end
    if verbose and fn_where(v) then lines[#lines + 1] = '  defined at: ' .. fn_where(v) end
    return table.concat(lines, '\n')
  end
end

--- ?name / ??name
function M.help(name, verbose)
  if name:match('^%s*$') then return M.magics.help('') end
  local text = M.help_text(name, verbose)
  if not text then error(("no documentation for '%s' (and no such name)"):format(
    name:match('^%s*(.-)%s*$')), 0) end
  print(text)
end
-- }==================================================================================

-- {==================================================================================
-- Magics
-- ===================================================================================
M.magics = {}
local magic_help = {}
local function magic(name, usage, fn)
  M.magics[name] = fn
  magic_help[#magic_help + 1] = {name, usage}
end

local function fmt_time(s)
  if s >= 1 then return ('%.3g s'):format(s) end
  if s >= 1e-3 then return ('%.3g ms'):format(s * 1e3) end
  if s >= 1e-6 then return ('%.3g us'):format(s * 1e6) end
  return ('%.3g ns'):format(s * 1e9)
end
M.fmt_time = fmt_time

local function compile_or_fail(src)
  local f, is_expr = M.compile(src)
  if not f then error(is_expr, 0) end
  return f
end

magic('time', '%time stmt          run stmt once and print its wall time', function(rest)
  local f = compile_or_fail(rest)
  local t0 = gm.clock()
  local r = table.pack(f())
  io.stdout:flush()
  io.stderr:write(('Wall time: %s\n'):format(fmt_time(gm.clock() - t0)))
  return table.unpack(r, 1, r.n)
end)

local function median_iqr(xs)
  table.sort(xs)
  local function q(p)
    local pos = 1 + (#xs - 1) * p
    local lo = math.floor(pos)
    local hi = math.min(lo + 1, #xs)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
  end
  return q(0.5), q(0.75) - q(0.25)
end

magic('timeit', '%timeit stmt        repeat stmt: median and IQR per run', function(rest)
  local f = compile_or_fail(rest)
  -- loops per run: grow by 10x until one run takes >= 0.2 s (or 1e6 loops)
  local loops, dt = 1, 0
  while true do
    local t0 = gm.clock()
    for _ = 1, loops do f() end
    dt = gm.clock() - t0
    if dt >= 0.2 or loops >= 1000000 then break end
    loops = loops * 10
  end
  local runs = {dt / loops}
  local repeats = dt > 1 and 3 or 7
  for _ = 2, repeats do
    local t0 = gm.clock()
    for _ = 1, loops do f() end
    runs[#runs + 1] = (gm.clock() - t0) / loops
  end
  local med, iqr = median_iqr(runs)
  print(('%s +- %s per loop (median +- IQR of %d runs, %d loop%s each)'):format(
    fmt_time(med), fmt_time(iqr), #runs, loops, loops == 1 and '' or 's'))
end)

local function describe(v)
  if gm.is_tensor(v) then
    return ('tensor %s[%s] %s'):format(v.dtype, table.concat(v.shape, ', '), v.device)
  elseif type(v) == 'table' then
    local mt = getmetatable(v)
    if type(mt) == 'table' and (rawget(mt, '__tostring') or rawget(mt, '__name')) then
      return (tostring(v):match('^[^\n]*'))
    end
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    return ('table (%d entries)'):format(n)
  elseif type(v) == 'string' then
    return ('string (%d bytes)'):format(#v)
  elseif type(v) == 'number' then
    return ('%s = %s'):format(math.type(v), tostring(v))
  end
  return type(v)
end

local function user_globals()
  local names = {}
  for k in pairs(_G) do
    if type(k) == 'string' and not (baseline and baseline[k]) then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

magic('who', '%who                your variables, with types and shapes', function()
  local names = user_globals()
  if #names == 0 then print('(no variables)') return end
  local w = 0
  for _, k in ipairs(names) do w = math.max(w, #k) end
  for _, k in ipairs(names) do print(('%-' .. w .. 's  %s'):format(k, describe(rawget(_G, k)))) end
end)

magic('reset', '%reset              delete your variables and Out', function()
  for _, k in ipairs(user_globals()) do rawset(_G, k, nil) end
  rawset(_G, '_', nil)
  rawset(_G, '__', nil)
  for k in pairs(Out) do Out[k] = nil end
  collectgarbage()
  print('(variables and Out cleared)')
end)

-- "%run f.lua a k=v 'b c'": words, quotes kept together.
local function split_args(s)
  local words = {}
  local i = 1
  while i <= #s do
    local c = s:sub(i, i)
    if c:match('%s') then
      i = i + 1
    elseif c == '"' or c == "'" then
      local j = s:find(c, i + 1, true) or (#s + 1)
      words[#words + 1] = s:sub(i + 1, j - 1)
      i = j + 1
    else
      local j = s:find('%s', i) or (#s + 1)
      words[#words + 1] = s:sub(i, j - 1)
      i = j
    end
  end
  return words
end
M.split_args = split_args

magic('run', '%run file.lua [args]  run a script in the session (args as ... and arg)',
  function(rest)
    local words = split_args(rest)
    local file = words[1]
    if not file then error('usage: %run file.lua [k=v ...]', 0) end
    local f, err = loadfile(file)
    if not f then error(err, 0) end
    local saved = rawget(_G, 'arg')
    local a = {[0] = file}
    for i = 2, #words do a[i - 1] = words[i] end
    rawset(_G, 'arg', a)
    local r = table.pack(pcall(f, table.unpack(words, 2)))
    rawset(_G, 'arg', saved)
    if not r[1] then error(r[2], 0) end
    return table.unpack(r, 2, r.n)
  end)

magic('seed', '%seed n             gm.manual_seed(n)', function(rest)
  local n = math.tointeger(tonumber(rest))
  if not n then error('usage: %seed n (an integer)', 0) end
  gm.manual_seed(n)
  print(('seed %d'):format(n))
end)

magic('cd', '%cd [dir]           change the working folder (no dir: $HOME)', function(rest)
  if not has_term then error('%cd: not available in this host', 0) end
  local dir = rest ~= '' and rest or os.getenv('HOME') or '/'
  dir = dir:gsub('^~', os.getenv('HOME') or '~')
  local ok, err = term.chdir(dir)
  if not ok then error('%cd: ' .. err, 0) end
  print(term.getcwd())
end)

magic('pwd', '%pwd                print the working folder', function()
  if not has_term then error('%pwd: not available in this host', 0) end
  print(term.getcwd())
end)

magic('history', '%history [-n N] [-f file]  the cells of this session', function(rest)
  local words = split_args(rest)
  local n, file
  local i = 1
  while words[i] do
    if words[i] == '-n' then n = math.tointeger(tonumber(words[i + 1])); i = i + 2
    elseif words[i] == '-f' then file = words[i + 1]; i = i + 2
    else error('usage: %history [-n N] [-f file]', 0) end
  end
  local keys = {}
  for k in pairs(In) do keys[#keys + 1] = k end
  table.sort(keys)
  local first = n and math.max(1, #keys - n + 1) or 1
  local out = {}
  for j = first, #keys do
    local k = keys[j]
    out[#out + 1] = file and In[k] or (('%4d  %s'):format(k, In[k]:gsub('\n', '\n      ')))
  end
  if file then
    local f = assert(io.open(file, 'w'))
    f:write(table.concat(out, '\n'), '\n')
    f:close()
    print(('wrote %d cells to %s'):format(#out, file))
  else
    print(table.concat(out, '\n'))
  end
end)

magic('save', '%save file.lua      write the session\'s Lua cells as a script', function(rest)
  local file = split_args(rest)[1]
  if not file then error('usage: %save file.lua', 0) end
  local f = assert(io.open(file, 'w'))
  local count = 0
  for _, c in ipairs(M.session_cells()) do
    f:write(c.src, '\n')
    count = count + 1
  end
  f:close()
  print(('wrote %d cells to %s'):format(count, file))
end)

magic('export', '%export nb.md|nb.ipynb  write the session as a notebook', function(rest)
  local file = split_args(rest)[1]
  if not file then error('usage: %export nb.md | nb.ipynb', 0) end
  local nb = require 'gmoe.notebook'
  local info = nb.export(file, M.session_cells(true))
  print(('wrote %s (%d cells, %d figures%s)'):format(file, info.cells, info.figures,
    info.failed > 0 and ('; %d failed, kept with their errors'):format(info.failed) or ''))
end)

magic('plot', '%plot y | %plot x, y  plot values (no argument: redraw the last figure)',
  function(rest)
    local plot = require 'gmoe.plot'
    if rest == '' then return plot.redraw() end
    local f = load('return ' .. rest, '=%plot')
    if not f then error('%plot: expects expressions: %plot y or %plot x, y', 0) end
    local r = table.pack(f())
    if r.n >= 2 then return gm.plot{{x = r[1], y = r[2]}} end
    return gm.plot{r[1]}
  end)

magic('tb', '%tb                 the full traceback of the last error', function()
  print(M.last_traceback or '(no error yet)')
end)

magic('help', '%help               this list', function()
  print('?name  help on a gm function, op, class or layer (??name: and where it is defined)')
  print('!cmd   run a shell command')
  for _, h in ipairs(magic_help) do print(h[2]) end
  print('Cells: results are Out[n] (also _ and __), sources In[n]. Tab completes names and')
  print('paths in strings; Ctrl-R searches history; Ctrl-C interrupts; Ctrl-D exits.')
end)

-- Magics about the session itself, left out of an exported notebook (replaying %export would
-- write the notebook again), as are ?help lines (they change nothing).
local NOT_REPLAYED = {export = true, save = true, history = true, tb = true, help = true}

-- The cells of the session in order. Default: the Lua cells that ran without error (what %save
-- writes). all: every cell that changes or shows state, failed and interrupted ones included
-- (what %export writes, so that a replay meets the same state; see gmoe.notebook).
function M.session_cells(all)
  local keys, out = {}, {}
  for k, c in pairs(M.cells) do
    local magic = c.kind == 'special' and c.src:match('^%s*%%(%S*)')
    local help = c.kind == 'special' and c.src:match('^%s*%?')
    local keep = all and not (magic and NOT_REPLAYED[magic]) and not help and c.ok ~= nil or c.kind == 'lua' and c.ok
    if keep then keys[#keys + 1] = k end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do out[#out + 1] = M.cells[k] end
  return out
end

--- Runs a help line, magic or shell command; returns values for Out.
function M.special(line)
  line = line:match('^%s*(.-)%s*$')
  if line:sub(1, 2) == '??' then return M.help(line:sub(3), true) end
  local c = line:sub(1, 1)
  if c == '?' then return M.help(line:sub(2), false) end
  if c == '!' then
    io.stdout:flush()
    local ok, how, code = os.execute(line:sub(2))
    if not ok and how == 'exit' then io.stderr:write(('(exit status %d)\n'):format(code)) end
    return
  end
  local name, rest = line:match('^%%(%S*)%s*(.-)$')
  local fn = M.magics[name]
  if not fn then error(('unknown magic %%%s (%%help lists the magics)'):format(name), 0) end
  return fn(rest)
end
-- }==================================================================================

-- {==================================================================================
-- Completion candidates (readline calls these through lua/repl.c)
-- ===================================================================================
local KEYWORDS = {'and', 'break', 'do', 'else', 'elseif', 'end', 'false', 'for', 'function',
  'goto', 'if', 'in', 'local', 'nil', 'not', 'or', 'repeat', 'return', 'then', 'true',
  'until', 'while'}
local TENSOR_FIELDS = {'shape', 'dtype', 'device', 'requires_grad', 'grad', 'grad_fn'}

-- The string keys of v and of its metatables' __index tables (tensors: gm.Tensor).
local function keys_of(v, methods_only)
  local keys, seen = {}, {}
  local function add(k, val)
    if type(k) == 'string' and k:match('^[%a_][%w_]*$') and not seen[k]
       and (not methods_only or type(val) == 'function') then
      seen[k] = true
      keys[#keys + 1] = {k, val}
    end
  end
  if gm.is_tensor(v) then
    for k, f in pairs(gm.Tensor) do add(k, f) end
    if not methods_only then for _, k in ipairs(TENSOR_FIELDS) do add(k, 0) end end
    return keys
  end
  local depth = 0
  while v ~= nil and depth < 8 do
    if type(v) == 'table' then for k, val in pairs(v) do add(k, val) end end
    local mt = getmetatable(v)
    if type(mt) ~= 'table' then break end
    local idx = rawget(mt, '__index')
    if type(idx) ~= 'table' or idx == v then break end
    v, depth = idx, depth + 1
  end
  return keys
end

--- Candidates for the word `text` (a Lua expression prefix such as "gm.ze" or "x:ma").
function M.complete(text)
  local out = {}
  local base, sep, part = text:match('^(.-)([.:])([%w_]*)$')
  if base and base:match('^[%a_][%w_.]*$') and not base:find('%.%.') and not base:find('%.%d')
     and not base:find('%.$') then
    local v = lookup(base)
    for _, kv in ipairs(keys_of(v, sep == ':')) do
      local k, val = kv[1], kv[2]
      if k:sub(1, #part) == part then
        local suffix = ''
        if type(val) == 'function' then suffix = '('
        elseif type(val) == 'table' and sep == '.' and next(val) ~= nil and getmetatable(val) == nil
          then suffix = '.' end
        out[#out + 1] = base .. sep .. k .. suffix
      end
    end
  elseif text:match('^[%a_]?[%w_]*$') then
    for k, val in pairs(_G) do
      if type(k) == 'string' and k:sub(1, #text) == text and k:match('^[%a_][%w_]*$') then
        out[#out + 1] = k .. ((type(val) == 'table' and k == 'gm') and '.' or '')
      end
    end
    for _, k in ipairs(KEYWORDS) do
      if k:sub(1, #text) == text then out[#out + 1] = k end
    end
  end
  table.sort(out)
  return out
end
-- }==================================================================================

return M
