-- gmoe.kernel: the Lua half of gmoe's Jupyter kernel (lua/jupyter.c runs the sockets and calls
-- handle for each shell request). Cells run with the REPL's own machinery: gmoe.repl for In/Out,
-- printing, magics, help and completion candidates; gmoe.term for the continuation rule, the
-- completion word and file names; the REPL's protected call for Ctrl-C (jupyter.docall).
-- Results go out as execute_result (text/plain as the REPL prints them, text/html for tables of
-- records), figures as display_data (image/png and image/svg+xml), io.read as input_request.
-- Also `gmoe kernel install|uninstall` (the kernelspec).
local gm = require 'gmoe'
local repl = require 'gmoe.repl'
local term = require 'gmoe.term' -- the C helpers of the gmoe executable

local M = {}

M.spec = {name = 'gmoe', display_name = 'gmoe (Lua 5.4)', language = 'lua'}
M.language_info = {name = 'lua', version = _VERSION:match('%d+%.%d+'), mimetype = 'text/x-lua',
  file_extension = '.lua', pygments_lexer = 'lua', codemirror_mode = 'lua'}

local J           -- the C module gmoe.jupyter, once the kernel runs
local count = 0   -- execution_count of the last cell stored in history
local quiet = false -- a silent request is running: no displays
local allow_stdin = false
local pending = '' -- what the user typed that io.read has not consumed yet

-- {==================================================================================
-- Text positions: Jupyter counts Unicode code points, Lua bytes
-- ===================================================================================
local function byte_pos(s, chars)
  if not chars then return #s end
  local b = utf8.offset(s, chars + 1)
  return b and b - 1 or #s
end

local function char_pos(s, bytes)
  local n = utf8.len(s, 1, bytes)
  return n or bytes
end
-- }==================================================================================

-- {==================================================================================
-- Cells: a cell is read as the REPL reads lines
-- ===================================================================================

--- The parts of a cell: a line starting with ?, % or ! (not inside an unfinished Lua chunk) is
-- a help, magic or shell line of its own, as at the REPL's prompt; the lines between run as
-- one Lua chunk. Pasted REPL prompts are stripped. Returns {{text=, special=, line=}, ...}.
function M.parts(code)
  local parts, lua, first = {}, {}, 1
  local function flush()
    local text = table.concat(lua, '\n')
    if text:find('%S') then parts[#parts + 1] = {text = text, line = first} end
    lua = {}
  end
  local n = 0
  for line in (code:gsub('\r\n', '\n') .. '\n'):gmatch('([^\n]*)\n') do
    n = n + 1
    line = repl.strip(line)
    if repl.is_special(line) and (#lua == 0 or term.chunk_status(table.concat(lua, '\n')) ~= 'incomplete') then
      flush()
      parts[#parts + 1] = {text = line, special = true, line = n}
    else
      if #lua == 0 then first = n end
      lua[#lua + 1] = line
    end
  end
  flush()
  return parts
end

-- The traceback as lines, without the frames of the kernel that ran the cell.
local function traceback_lines(msg)
  local lines = {}
  for line in (msg .. '\n'):gmatch('([^\n]*)\n') do
    if line:find("in function 'gmoe.jupyter.docall'", 1, true) then break end
    lines[#lines + 1] = line
  end
  if lines[#lines] == 'stack traceback:' then lines[#lines] = nil end
  return J.array(lines)
end

--- Compiles a Lua part of a cell as the REPL compiles a cell (an expression, else statements),
-- except that when the last lines are an expression after complete statements, the chunk
-- returns their value: a notebook cell's last line shows its value ("t = {...}" then "t").
-- A cell the REPL reads never splits so (its prefix would have ended it). Returns fn or
-- nil, message.
function M.compile(src, chunkname)
  local f, is_expr = repl.compile(src, chunkname)
  if is_expr == true then return f end
  local lines = {}
  for line in (src .. '\n'):gmatch('([^\n]*)\n') do lines[#lines + 1] = line end
  for i = #lines, 2, -1 do
    local prefix = table.concat(lines, '\n', 1, i - 1)
    if prefix:find('%S') and load(prefix, chunkname) then
      local g = load(prefix .. '\nreturn ' .. table.concat(lines, '\n', i) .. '\n;', chunkname)
      if g then return g end
    end
  end
  return f, is_expr
end

-- Runs the parts of a cell in order; stops at the first error. Returns true and the values of
-- the last part, or false, message, ename.
local function run_parts(parts, n)
  local r = {true, n = 1}
  for _, p in ipairs(parts) do
    if p.special then
      r = table.pack(J.docall(repl.special, p.text))
    else
      local f, err = M.compile(string.rep('\n', p.line - 1) .. p.text, ('=In[%d]'):format(n))
      if not f then return false, err, 'SyntaxError' end
      r = table.pack(J.docall(f))
    end
    if not r[1] then return false, tostring(r[2]), r[3] and 'Interrupted' or 'Error' end
  end
  return table.unpack(r, 1, r.n)
end

-- text/html for values that read better as a table (see M.html).
local html = require 'gmoe.show_html'

local function execute_result(n, text, ...)
  local data = {['text/plain'] = (text:gsub('\n$', ''))}
  if select('#', ...) == 1 then data['text/html'] = html.html((...)) end
  J.publish('execute_result', {execution_count = n, data = data, metadata = {}})
end

-- user_expressions: each evaluated after the cell, as text/plain.
local function user_expressions(exprs)
  local out = {}
  for name, src in pairs(type(exprs) == 'table' and exprs or {}) do
    local f, err = repl.compile(tostring(src), '=user_expression')
    local r = f and table.pack(J.docall(f)) or {false, err}
    if r[1] then
      out[name] = {status = 'ok', data = {['text/plain'] = (repl.show_text(table.unpack(r, 2, r.n))
        :gsub('\n$', ''))}, metadata = {}}
    else
      out[name] = {status = 'error', ename = 'Error', evalue = tostring(r[2]), traceback = J.array({})}
    end
  end
  return out
end

local handlers = {}

function handlers.execute_request(c)
  local code = type(c.code) == 'string' and c.code or ''
  local silent = c.silent == true
  local store = not silent and c.store_history ~= false
  if store then count = count + 1 end
  local n = count
  quiet, allow_stdin, pending = silent, c.allow_stdin == true, ''
  if silent then J.streams(false) else
    J.publish('execute_input', {code = code, execution_count = n})
  end
  local parts = M.parts(code)
  local special = false
  for _, p in ipairs(parts) do special = special or p.special end
  if store then repl.begin(n, code, special) end
  local r = table.pack(run_parts(parts, n))
  local reply
  if r[1] then
    local text
    if r.n > 1 and not silent then
      text = store and repl.result(n, table.unpack(r, 2, r.n)) or repl.show_text(table.unpack(r, 2, r.n))
    end
    if store then repl.done(n) end
    if text then execute_result(n, text, table.unpack(r, 2, r.n)) end
    reply = {status = 'ok', execution_count = n, payload = J.array({}),
             user_expressions = user_expressions(c.user_expressions)}
  else
    local msg, ename = r[2], r[3]
    local short = repl.failed(store and n or nil, msg)
    reply = {status = 'error', execution_count = n, ename = ename, evalue = short,
             traceback = traceback_lines(msg)}
    if not silent then
      J.publish('error', {ename = ename, evalue = short, traceback = reply.traceback})
    end
  end
  if silent then J.streams(true) end
  quiet = false
  J.reply('execute_reply', reply)
  return not r[1] and c.stop_on_error ~= false
end

function handlers.complete_request(c)
  local code = type(c.code) == 'string' and c.code or ''
  local pos = byte_pos(code, c.cursor_pos)
  local start, in_string = term.word_start(code, pos)
  local word = code:sub(start + 1, pos)
  local matches = in_string and term.paths(word) or repl.complete(word)
  J.reply('complete_reply', {status = 'ok', matches = J.array(matches), metadata = {},
    cursor_start = char_pos(code, start), cursor_end = char_pos(code, pos)})
end

-- The name whose help Shift-Tab (inspect) asks for: the dotted name around byte pos, else the
-- function of the call the cursor is in.
local function name_at(code, pos)
  local s, e = pos, pos
  while s > 0 and code:sub(s, s):match('[%w_.:]') do s = s - 1 end
  while e < #code and code:sub(e + 1, e + 1):match('[%w_]') do e = e + 1 end
  local name = code:sub(s + 1, e):gsub('[.:]+$', '')
  if name:match('^[%a_]') then return name end
  local depth = 0
  for i = pos, 1, -1 do
    local ch = code:sub(i, i)
    if ch == ')' then depth = depth + 1
    elseif ch == '(' then
      if depth == 0 then
        local j = i - 1
        while j > 0 and code:sub(j, j):match('%s') do j = j - 1 end
        return j > 0 and code:sub(j, j):match('[%w_]') and name_at(code, j) or nil
      end
      depth = depth - 1
    end
  end
end

function handlers.inspect_request(c)
  local code = type(c.code) == 'string' and c.code or ''
  local name = name_at(code, byte_pos(code, c.cursor_pos))
  local text = name and repl.help_text(name, (tonumber(c.detail_level) or 0) > 0)
  J.reply('inspect_reply', {status = 'ok', found = text ~= nil,
    data = text and {['text/plain'] = text} or {}, metadata = {}})
end

function handlers.is_complete_request(c)
  local parts = M.parts(type(c.code) == 'string' and c.code or '')
  local last = parts[#parts]
  local status = (not last or last.special) and 'complete' or term.chunk_status(last.text)
  J.reply('is_complete_reply', {status = status, indent = status == 'incomplete' and '' or nil})
end

-- "a*b?" (the glob of history searches) as a Lua pattern.
local function glob(p)
  return '^' .. p:gsub('[%^%$%(%)%%%.%[%]%+%-]', '%%%0'):gsub('%*', '.*'):gsub('%?', '.') .. '$'
end

function handlers.history_request(c)
  local keys = {}
  for k in pairs(In) do keys[#keys + 1] = k end
  table.sort(keys)
  local kind, pick = c.hist_access_type, {}
  if kind == 'range' then
    local start, stop = tonumber(c.start) or 1, tonumber(c.stop)
    for _, k in ipairs(keys) do
      if k >= start and (not stop or k < stop) then pick[#pick + 1] = k end
    end
  elseif kind == 'search' then
    local pat, seen = glob(tostring(c.pattern or '*')), {}
    for i = #keys, 1, -1 do
      local k = keys[i]
      if In[k]:match(pat) and not (c.unique and seen[In[k]]) then
        seen[In[k]] = true
        table.insert(pick, 1, k)
      end
    end
  else
    pick = keys
  end
  local limit = tonumber(c.n)
  if kind ~= 'range' and limit and #pick > limit then pick = table.move(pick, #pick - limit + 1, #pick, 1, {}) end
  local items = J.array({})
  for i, k in ipairs(pick) do
    local cell = repl.cells[k]
    local src = c.output and J.array({In[k], cell and cell.out or J.array({})}) or In[k]
    items[i] = J.array({1, k, src})
  end
  J.reply('history_reply', {status = 'ok', history = items})
end

function handlers.comm_info_request()
  J.reply('comm_info_reply', {status = 'ok', comms = {}})
end

--- Answers one shell request (called by lua/jupyter.c). Returns true when queued execute
-- requests are to be aborted (a cell failed with stop_on_error).
function M.handle(msg_type, content, header)
  local h = handlers[msg_type]
  if not h then
    J.log(('no handler for %s'):format(msg_type))
    return false
  end
  return h(type(content) == 'table' and content or {}, header) == true
end
-- }==================================================================================

-- {==================================================================================
-- Figures and input
-- ===================================================================================
local function rendered(fig, ext)
  local path = os.tmpname()
  local ok, err = pcall(fig.savefig, fig, path .. '.' .. ext)
  local f = io.open(path .. '.' .. ext, 'rb')
  local s = f and f:read('a')
  if f then f:close() end
  os.remove(path)
  os.remove(path .. '.' .. ext)
  if not ok then error(err, 0) end
  return s
end

-- gm.plot's figure, drawn in the cell's output.
local function display(fig)
  if quiet then return end
  local nb = require 'gmoe.notebook'
  J.publish('display_data', {metadata = {}, data = {
    ['image/png'] = nb.base64(rendered(fig, 'png')),
    ['image/svg+xml'] = rendered(fig, 'svg'),
    ['text/plain'] = tostring(fig)}})
end

-- One more line from the client into `pending`.
local function more_input()
  if not allow_stdin then
    error('io.read: this client does not take input (its execute_request has allow_stdin = false)', 0)
  end
  pending = pending .. J.input('', false) .. '\n'
end

-- One io.read format over the typed lines (Lua's formats: "n", "l", "L", "a", a byte count).
local function read_one(fmt)
  if type(fmt) == 'string' then fmt = fmt:gsub('^%*', ''):sub(1, 1) end
  if math.type(fmt) == 'integer' then
    if fmt == 0 then return '' end
    while #pending < fmt do more_input() end
    local s = pending:sub(1, fmt)
    pending = pending:sub(fmt + 1)
    return s
  elseif fmt == 'l' or fmt == 'L' then
    if not pending:find('\n') then more_input() end
    local line, rest = pending:match('^([^\n]*\n)(.*)$')
    pending = rest
    return fmt == 'L' and line or line:sub(1, -2)
  elseif fmt == 'n' then
    while not pending:find('%S') do more_input() end
    local ws, num, rest = pending:match('^(%s*)([%w%.%+%-]*)(.*)$')
    pending = rest
    return tonumber(num)
  elseif fmt == 'a' then
    if pending == '' then more_input() end
    local s = pending
    pending = ''
    return s
  end
  error(("bad argument to 'read' (invalid format '%s')"):format(tostring(fmt)), 3)
end

local function read_input(...)
  local n = select('#', ...)
  if n == 0 then return read_one('l') end
  local out = {}
  for i = 1, n do
    out[i] = read_one((select(i, ...)))
    if out[i] == nil then return table.unpack(out, 1, i) end
  end
  return table.unpack(out, 1, n)
end

-- io.read, io.stdin:read, io.lines() and io.stdin:lines() read from the client.
local function install_input()
  local methods = getmetatable(io.stdin).__index
  local raw_read, raw_io_read, raw_lines, raw_io_lines = methods.read, io.read, methods.lines, io.lines
  methods.read = function(f, ...)
    if f == io.stdin then return read_input(...) end
    return raw_read(f, ...)
  end
  io.read = function(...)
    if io.input() == io.stdin then return read_input(...) end
    return raw_io_read(...)
  end
  local function lines(...)
    local fmts = table.pack(...)
    return function() return read_input(table.unpack(fmts, 1, fmts.n)) end
  end
  methods.lines = function(f, ...)
    if f == io.stdin then return lines(...) end
    return raw_lines(f, ...)
  end
  io.lines = function(file, ...)
    if file == nil and io.input() == io.stdin then return lines(...) end
    return raw_io_lines(file, ...)
  end
end
-- }==================================================================================

function M.kernel_info()
  return {status = 'ok', protocol_version = '5.3', implementation = 'gmoe',
    implementation_version = gm.version, language_info = M.language_info,
    banner = ('gmoe %s  %s  (?name: help, %%help: magics, Tab completes)'):format(gm.version, _VERSION),
    help_links = J.array({})}
end

--- Called once by lua/jupyter.c: the REPL's Lua half without colour, figures and io.read
-- routed to the client. Returns the content of kernel_info_reply.
function M.start()
  J = require 'gmoe.jupyter'
  repl.start{color = false}
  require('gmoe.plot').display = display
  install_input()
  return M.kernel_info()
end

-- {==================================================================================
-- The kernelspec: gmoe kernel install|uninstall
-- ===================================================================================
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local USAGE = [[
usage: gmoe kernel install [--user | --prefix DIR]   write the Jupyter kernelspec "gmoe"
       gmoe kernel uninstall [--user | --prefix DIR] remove it
       gmoe kernel -f CONNECTION_FILE               run the kernel (Jupyter starts it so)
Without --user or --prefix the kernelspec goes to /usr/local/share/jupyter/kernels/gmoe (for
every user); --user: $JUPYTER_DATA_DIR or ${XDG_DATA_HOME:-~/.local/share}/jupyter;
--prefix DIR: DIR/share/jupyter (then put DIR/share/jupyter on JUPYTER_PATH).]]

--- The folder of the kernelspec for install/uninstall options {'--user'} | {'--prefix', dir}.
function M.spec_dir(opts)
  local base
  if opts[1] == '--user' and #opts == 1 then
    base = os.getenv('JUPYTER_DATA_DIR')
    if not base or base == '' then
      local xdg = os.getenv('XDG_DATA_HOME')
      if not xdg or xdg == '' then
        local home = os.getenv('HOME')
        if not home or home == '' then error('gmoe kernel: --user needs $HOME', 0) end
        xdg = home .. '/.local/share'
      end
      base = xdg .. '/jupyter'
    end
  elseif opts[1] == '--prefix' and opts[2] and #opts == 2 then
    base = opts[2] .. '/share/jupyter'
  elseif #opts == 0 then
    base = '/usr/local/share/jupyter'
  else
    error('gmoe kernel: bad options ' .. table.concat(opts, ' ') .. '\n' .. USAGE, 0)
  end
  return base .. '/kernels/' .. M.spec.name
end

function M.install(opts)
  local jupyter = require 'gmoe.jupyter'
  local dir = M.spec_dir(opts)
  if not os.execute('mkdir -p ' .. q(dir)) then error('gmoe kernel: cannot create ' .. dir, 0) end
  local spec = {argv = {jupyter.exe(), 'kernel', '-f', '{connection_file}'},
    display_name = M.spec.display_name, language = M.spec.language, interrupt_mode = 'signal',
    metadata = {debugger = false}}
  local path, tmp = dir .. '/kernel.json', dir .. '/.kernel.json.tmp'
  local f, err = io.open(tmp, 'w')
  if not f then error('gmoe kernel: ' .. err, 0) end
  f:write(jupyter.encode(spec), '\n')
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then error('gmoe kernel: ' .. rerr, 0) end
  return dir
end

function M.uninstall(opts)
  local dir = M.spec_dir(opts)
  if not os.remove(dir .. '/kernel.json') then
    error('gmoe kernel: no kernelspec at ' .. dir, 0)
  end
  os.remove(dir)
  return dir
end

--- `gmoe kernel install|uninstall [--user | --prefix DIR]` (args without the command).
function M.cli(args)
  local cmd = table.remove(args, 1)
  if cmd == 'install' then
    print(('installed the kernelspec %s in %s'):format(M.spec.name, M.install(args)))
  elseif cmd == 'uninstall' then
    print(('removed the kernelspec %s from %s'):format(M.spec.name, M.uninstall(args)))
  elseif cmd == nil or cmd == '-h' or cmd == '--help' then
    print(USAGE)
  else
    error(("gmoe kernel: unknown command '%s'\n"):format(cmd) .. USAGE, 0)
  end
  return true
end
-- }==================================================================================

return M
