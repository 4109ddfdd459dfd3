-- gmoe.notebook: sessions as notebooks. export() writes the REPL's cells as Markdown (```lua
-- blocks, their text output in a ```text block beneath, figures as PNG files in <name>_files/
-- linked as ![figure k](...)) or as a minimal nbformat-4 .ipynb. run() executes the Lua cells
-- of a Markdown notebook in order, the way the REPL would (expressions show their value), and
-- with update=true rewrites the outputs and figures in place; prose is left untouched.
-- A notebook replays the session: every cell that ran is exported in order, magics included
-- (%seed, %cd, %run, %time stmt change state), and a cell that failed is kept with its error
-- in an ```error block, because what it did before failing is part of the state later cells
-- saw. run() expects such a cell to fail with the same message; a cell that was interrupted
-- cannot be replayed (how far it got depends on when Ctrl-C came), so run() stops there with
-- an error, as it does when a cell's outcome differs from the recorded one.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local repl = require 'gmoe.repl'
local doc = require 'gmoe.doc'

local M = {}

-- "dir/nb.md" -> "dir/", "nb"
local function split_path(path)
  local dir, file = path:match('^(.*/)([^/]*)$')
  dir, file = dir or '', file or path
  return dir, (file:gsub('%.[^.]*$', ''))
end

local function write_file(path, s)
  local f, err = io.open(path, 'wb')
  if not f then error(err, 0) end
  f:write(s)
  f:close()
end

local function read_file(path)
  local f, err = io.open(path, 'rb')
  if not f then error(err, 0) end
  local s = f:read('a')
  f:close()
  return s
end

-- The figures of cell i as PNG files beside the notebook; returns their paths relative to it.
local function save_figures(path, i, figs)
  local links = {}
  if #figs == 0 then return links end
  local dir, stem = split_path(path)
  local sub = stem .. '_files'
  os.execute("mkdir -p '" .. (dir .. sub):gsub("'", "'\\''") .. "'")
  for k, fig in ipairs(figs) do
    local rel = ('%s/cell-%d-%d.png'):format(sub, i, k)
    fig:savefig(dir .. rel)
    links[k] = rel
  end
  return links
end

local function fence_for(text)
  local fence = '```'
  while text:find(fence, 1, true) do fence = fence .. '`' end
  return fence
end

-- What an interrupted cell's ```error block holds.
local INTERRUPTED = 'interrupted'

-- One cell as Markdown: the code, its output, its error (a cell that failed), its figure links.
local function md_cell(src, out, links, err)
  local s = {'```lua\n', src, '\n```\n'}
  if out ~= '' then
    local f = fence_for(out)
    s[#s + 1] = '\n' .. f .. 'text\n' .. out .. (out:sub(-1) == '\n' and '' or '\n') .. f .. '\n'
  end
  if err then
    local f = fence_for(err)
    s[#s + 1] = '\n' .. f .. 'error\n' .. err .. '\n' .. f .. '\n'
  end
  for k, rel in ipairs(links) do s[#s + 1] = ('\n![figure %d](%s)\n'):format(k, rel) end
  return table.concat(s)
end

-- {=====================================================================================
-- JSON (enough for nbformat) and base64
-- =====================================================================================
local function json(v)
  local t = type(v)
  if t == 'string' then
    return '"' .. v:gsub('[%c"\\]', function(c)
      local esc = {['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\t'] = '\\t', ['\r'] = '\\r'}
      return esc[c] or ('\\u%04x'):format(c:byte())
    end) .. '"'
  elseif t == 'number' then
    return math.type(v) == 'integer' and tostring(v) or ('%.17g'):format(v)
  elseif t == 'boolean' then
    return tostring(v)
  elseif v == nil or v == json then
    return 'null'
  elseif v[1] ~= nil or next(v) == nil and getmetatable(v) == 'array' then
    local parts = {}
    for i = 1, #v do parts[i] = json(v[i]) end
    return '[' .. table.concat(parts, ', ') .. ']'
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = json(k) .. ': ' .. json(v[k]) end
  return '{' .. table.concat(parts, ', ') .. '}'
end
local function array(t) return setmetatable(t, {__metatable = 'array'}) end

local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function base64(s)
  require('gmoe.errors').check('base64', 1, 's', s, 'string')
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local chunk = {}
    for k = 1, 4 do
      local idx = (n >> (6 * (4 - k))) & 63
      chunk[k] = B64:sub(idx + 1, idx + 1)
    end
    if not b then chunk[3], chunk[4] = '=', '=' elseif not c then chunk[4] = '=' end
    out[#out + 1] = table.concat(chunk)
  end
  return table.concat(out)
end
M.base64 = base64

-- "a\nb\n" -> {"a\n", "b\n"} (nbformat's multi-line strings)
local function lines_of(s)
  local t = {}
  for line in s:gmatch('[^\n]*\n?') do if line ~= '' then t[#t + 1] = line end end
  return array(t)
end
-- }=====================================================================================

local function export_ipynb(path, cells)
  local kernel = require 'gmoe.kernel' -- the metadata names gmoe's Jupyter kernel
  local nb_cells, nfig, failed = array({}), 0, 0
  for i, c in ipairs(cells) do
    local outputs = array({})
    if c.out and c.out ~= '' then
      outputs[#outputs + 1] = {output_type = 'stream', name = 'stdout', text = lines_of(c.out)}
    end
    for _, fig in ipairs(c.figures or {}) do
      local tmp = os.tmpname() .. '.png'
      fig:savefig(tmp)
      local png = read_file(tmp)
      os.remove(tmp)
      outputs[#outputs + 1] = {output_type = 'display_data', metadata = {},
        data = {['image/png'] = base64(png), ['text/plain'] = array({tostring(fig)})}}
      nfig = nfig + 1
    end
    if c.ok == false then
      failed = failed + 1
      local ename = c.interrupted and INTERRUPTED or 'error'
      outputs[#outputs + 1] = {output_type = 'error', ename = ename, evalue = c.err or ename,
                               traceback = array({c.err or ename})}
    end
    nb_cells[i] = {cell_type = 'code', execution_count = c.n or i, metadata = {},
                   source = lines_of(c.src), outputs = outputs}
  end
  local nb = {nbformat = 4, nbformat_minor = 4, cells = nb_cells,
    metadata = {kernelspec = kernel.spec, language_info = kernel.language_info}}
  write_file(path, json(nb) .. '\n')
  return {cells = #cells, figures = nfig, failed = failed}
end

--- export(path, cells): cells are {src=, out=, figures=, ok=, err=, interrupted=} (the REPL's
-- cells in order; ok = false marks one that failed with err, or was interrupted).
-- .md or .ipynb by the extension; returns {cells = n, figures = m, failed = k}.
function M.export(path, cells)
  require('gmoe.errors').check('notebook.export', 1, 'path', path, 'string')
  require('gmoe.errors').check('notebook.export', 2, 'cells', cells, 'table')
  if path:match('%.ipynb$') then return export_ipynb(path, cells) end
  if not path:match('%.md$') then error('%export: the file must end in .md or .ipynb', 0) end
  local parts, nfig = {('# gmoe session, %s\n\n'):format(os.date('%Y-%m-%d %H:%M')),
    '<!-- `gmoe run FILE` runs the lua cells in order; `gmoe run FILE --update` rewrites '
      .. 'their outputs and figures. -->\n'}, 0
  local failed = 0
  for i, c in ipairs(cells) do
    local links = save_figures(path, i, c.figures or {})
    nfig = nfig + #links
    local err = c.ok == false and (c.interrupted and INTERRUPTED or c.err or 'error') or nil
    if err then failed = failed + 1 end
    parts[#parts + 1] = '\n' .. md_cell(c.src, c.out or '', links, err)
  end
  write_file(path, table.concat(parts))
  return {cells = #cells, figures = nfig, failed = failed}
end

-- {=====================================================================================
-- Running a Markdown notebook
-- =====================================================================================

-- Items of a Markdown notebook: {text = line} or {cell = src, line = first line of code}.
-- The ```text block and ![figure k](...) links that follow a cell belong to it (replaced on
-- update).
local function parse(s)
  local lines = {}
  for line in (s .. (s:sub(-1) == '\n' and '' or '\n')):gmatch('([^\n]*)\n') do
    lines[#lines + 1] = line
  end
  local items, i = {}, 1
  while i <= #lines do
    local line = lines[i]
    if line:match('^```lua%s*$') then
      local j, code = i + 1, {}
      while j <= #lines and not lines[j]:match('^```%s*$') do
        code[#code + 1] = lines[j]
        j = j + 1
      end
      if j > #lines then error(('notebook: the lua block at line %d is not closed'):format(i), 0) end
      items[#items + 1] = {cell = table.concat(code, '\n'), line = i + 1}
      i = j + 1
      -- owned output: blank lines, then a ```text block and/or figure links
      local k = i
      while lines[k] and lines[k]:match('^%s*$') do k = k + 1 end
      for _, kind in ipairs {'text', 'error'} do
        local fence = lines[k] and lines[k]:match('^(```+)' .. kind .. '%s*$')
        if fence then
          local m, body = k + 1, {}
          while lines[m] and lines[m] ~= fence do body[#body + 1] = lines[m]; m = m + 1 end
          if kind == 'error' then items[#items].err = table.concat(body, '\n') end
          i, k = m + 1, m + 1
          while lines[k] and lines[k]:match('^%s*$') do k = k + 1 end
        end
      end
      while lines[k] and lines[k]:match('^!%[figure %d+%]%(.-%)%s*$') do
        i, k = k + 1, k + 1
        while lines[k] and lines[k]:match('^%s*$') do k = k + 1 end
      end
    else
      items[#items + 1] = {text = line}
      i = i + 1
    end
  end
  return items
end

-- Runs one cell as the REPL does (a line starting with %, ! or ? is a magic, a shell command or
-- help); returns its captured output and, when it failed, its error message.
local function run_cell(src, chunkname, line)
  local pad = string.rep('\n', line - 1)
  local f, err
  if src:match('^%s*[%%!?]') then
    f = function() return repl.special(src) end
  else
    f = load(pad .. 'return ' .. src .. ';', chunkname)
    if not f then f, err = load(pad .. src, chunkname) end
    if not f then return '', err end
  end
  repl.capture_begin()
  local r = table.pack(pcall(f))
  if r[1] and r.n > 1 then
    rawset(_G, '__', rawget(_G, '_'))
    rawset(_G, '_', r[2])
    local shower = type(rawget(_G, 'gm')) == 'table' and type(gm.show) == 'function' and gm.show
      or require('gmoe.show').show
    r = table.pack(pcall(shower, table.unpack(r, 2, r.n)))
  end
  io.stdout:flush()
  local out = repl.capture_end()
  if not r[1] then return out, tostring(r[2]) end
  return out
end

-- An error message without its "chunk:line: " (the session's cells were "stdin", the
-- notebook's are the file).
local function unplaced(msg) return (msg:gsub('^[^\n:]+:%d+: ', '')) end

--- run(path, {update = bool}): runs the notebook's Lua cells in order, printing their
-- outputs; with update, rewrites the file with the new outputs and figures.
function M.run(path, opts)
  require('gmoe.errors').check('notebook.run', 1, 'path', path, 'string')
  opts = require('gmoe.errors').check('notebook.run', 2, 'opts', opts, 'table?') or {}
  local items = parse(read_file(path))
  local plot = package.loaded['gmoe.plot']
  local figs
  if plot then plot.on_figure = function(fig) if figs then figs[#figs + 1] = fig end end end
  repl.install_capture()
  local chunkname = '@' .. path
  local results, ncell = {}, 0
  for idx, it in ipairs(items) do
    if it.cell then
      ncell = ncell + 1
      if it.err == INTERRUPTED then
        error(('%s:%d: this cell was interrupted in the session: what it did before the interrupt cannot be '
          .. 'replayed (delete it, or run it to the end and export again)'):format(path, it.line), 0)
      end
      figs = {}
      local out, err = run_cell(it.cell, chunkname, it.line)
      if err and not it.err then error(err, 0) end
      if it.err and not err then
        error(('%s:%d: this cell failed in the session (%s) but runs without error now: the notebook does not '
          .. 'reproduce the session'):format(path, it.line, it.err), 0)
      end
      if err and unplaced(err) ~= unplaced(it.err) then
        error(('%s:%d: this cell failed in the session with "%s" but now fails with "%s"'):format(path, it.line,
          unplaced(it.err), unplaced(err)), 0)
      end
      if err then io.stderr:write(err, '\n') end
      results[idx] = {out = out, figures = figs, err = it.err} -- as recorded: equal but for its position
      figs = nil
    end
  end
  if opts.update then
    local parts, n = {}, 0
    for idx, it in ipairs(items) do
      if it.text then
        parts[#parts + 1] = it.text .. '\n'
      else
        n = n + 1
        local res = results[idx]
        parts[#parts + 1] = md_cell(it.cell, res.out, save_figures(path, n, res.figures), res.err)
      end
    end
    write_file(path, table.concat(parts))
  end
  return ncell
end

doc.add('gm.notebook.export', 'gm.notebook.export(path, cells) -> {cells=, figures=}',
  'Writes cells ({src=, out=, figures=}) as a Markdown notebook (path ending .md: ```lua '
  .. 'blocks, their text output in ```text blocks, figures as PNG files in <name>_files/) or '
  .. 'as a minimal nbformat-4 notebook (.ipynb, figures inline as PNG). The REPL\'s %export '
  .. 'calls it with every cell of the session that ran, magics included: one that failed is kept, '
  .. 'marked with its error (a ```error block; an nbformat error output), so a replay meets the '
  .. 'state the session had.')
doc.add('gm.notebook.run', 'gm.notebook.run(path, {update=false}) -> number of cells',
  'Runs the ```lua cells of a Markdown notebook in order in this Lua state, as the REPL would '
  .. '(a cell that is an expression shows its value through gm.show; %magic, !shell and ?help lines '
  .. 'run as in the REPL). A cell recorded with an ```error block must fail with the same message; '
  .. 'one recorded as interrupted, or one whose outcome differs, stops the run with an error naming '
  .. 'its line. With update=true the file is rewritten with the new outputs and figures; prose is '
  .. 'kept. `gmoe run nb.md [--update]` calls it.')
doc.add('gm.notebook.base64', 'gm.notebook.base64(s) -> string', 'Base64 of a byte string.')

return M
