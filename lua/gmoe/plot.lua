-- gmoe.plot (gm.plot, gm.savefig): figures through gnuplot. gm.plot{...} builds a figure (a
-- self-contained gnuplot script with the data inline), draws it in the terminal and keeps it
-- as the last figure; gm.savefig renders the last figure to .pdf/.png/.svg.
-- Inline terminal: $GMOE_PLOT_TERM (a gnuplot terminal, e.g. "dumb", "sixelgd", or "none"),
-- else sixelgd in a terminal known to show sixel (TERM foot/mlterm/yaft/contour or one with
-- "sixel" in it, TERM_PROGRAM WezTerm/mintty/iTerm.app), else gnuplot's dumb terminal at the
-- window's size, coloured (ansi) unless NO_COLOR is set. Nothing is drawn when stdout is not
-- a terminal and GMOE_PLOT_TERM is unset (scripts: use gm.savefig).
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local has_term, term = pcall(require, 'gmoe.term')

local M = {}
M.last = nil      -- the last figure
M.on_figure = nil -- called with each new figure (the REPL records them for %export)
M.display = nil   -- when set (the Jupyter kernel), draws each figure instead of the terminal
local count = 0

-- Okabe-Ito, as plots/style.gp
local COLORS = {'#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#F0E442',
                '#000000'}

local function gnuplot_bin() return os.getenv('GMOE_GNUPLOT') or 'gnuplot' end
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local checked
local function need_gnuplot()
  if checked == gnuplot_bin() then return end
  if not os.execute('command -v ' .. q(gnuplot_bin()) .. ' >/dev/null 2>&1') then
    error(('gm.plot: gnuplot not found (%s); install it (Debian: apt-get install gnuplot-nox) '
      .. 'or set GMOE_GNUPLOT to its path'):format(gnuplot_bin()), 3)
  end
  checked = gnuplot_bin()
end

-- Runs a gnuplot script; returns what gnuplot wrote on stdout.
local function run(script)
  local path = os.tmpname()
  local f = assert(io.open(path, 'w'))
  f:write(script)
  f:close()
  local p = io.popen(q(gnuplot_bin()) .. ' ' .. q(path) .. ' 2>' .. q(path .. '.err'))
  local out = p:read('a')
  local ok = p:close()
  local ef = io.open(path .. '.err')
  local err = ef and ef:read('a') or ''
  if ef then ef:close() end
  os.remove(path)
  os.remove(path .. '.err')
  if not ok then error('gm.plot: gnuplot failed: ' .. err, 0) end
  if err:find('%S') then io.stderr:write(err) end
  return out
end

-- A 1-D tensor or Lua array as a Lua array of numbers.
local function values(v, what)
  if gm.is_tensor(v) then
    if v.dtype == 'i32' then v = v:to('f64') end
    return v:detach():reshape{-1}:totable()
  elseif type(v) == 'table' then
    for i = 1, #v do
      if type(v[i]) ~= 'number' then
        error(('gm.plot: %s[%d] is a %s, not a number'):format(what, i, type(v[i])), 4)
      end
    end
    return v
  end
  error(('gm.plot: %s must be a tensor or an array of numbers, got %s'):format(what, type(v)), 4)
end

local function num(v)
  if v ~= v or v == math.huge or v == -math.huge then return 'NaN' end
  return string.format('%.9g', v)
end

local function str(s) return '"' .. tostring(s):gsub('\\', '\\\\'):gsub('"', '\\"') .. '"' end

-- One series from {x=, y=, label=, with=, err=, lo=, hi=, color=} or {x, y} or a bare y.
local function series_of(s, i)
  if gm.is_tensor(s) or (type(s) == 'table' and type(s[1]) == 'number') then s = {y = s} end
  if type(s) ~= 'table' then
    error(('gm.plot: series %d must be a table, tensor or array, got %s'):format(i, type(s)), 3)
  end
  local x, y = s.x, s.y
  if y == nil and s[2] ~= nil then x, y = s[1], s[2] elseif y == nil then y = s[1] end
  if y == nil then error(('gm.plot: series %d has no y values'):format(i), 3) end
  local ys = values(y, 'y')
  local xs = x ~= nil and values(x, 'x') or nil
  if xs and #xs ~= #ys then
    error(('gm.plot: series %d: %d x values for %d y values'):format(i, #xs, #ys), 3)
  end
  local lo, hi
  if s.err ~= nil then
    local e = values(s.err, 'err')
    lo, hi = {}, {}
    for j = 1, #ys do lo[j], hi[j] = ys[j] - (e[j] or e[1]), ys[j] + (e[j] or e[1]) end
  elseif s.lo ~= nil or s.hi ~= nil then
    lo, hi = values(s.lo or s.y, 'lo'), values(s.hi or s.y, 'hi')
  end
  local with = s.with or 'lines'
  if not ({lines = 1, points = 1, linespoints = 1})[with] then
    error(("gm.plot: with = '%s' (expected lines, points or linespoints)"):format(with), 3)
  end
  return {x = xs, y = ys, lo = lo, hi = hi, label = s.label, with = with,
          color = s.color or COLORS[(i - 1) % #COLORS + 1]}
end

local Figure = {}
Figure.__index = Figure
Figure.__name = 'gm.Figure'
function Figure:__tostring()
  return ('figure %d (%d series%s)'):format(self.id, #self.series,
    self.title and (', "' .. self.title .. '"') or '')
end

-- The figure as gnuplot commands (everything but the terminal and output). For text
-- terminals (text = true) bands are drawn as their two edges and there is no grid.
function Figure:body(text)
  local o, L = self.opts, {}
  L[#L + 1] = 'set encoding utf8'
  if o.title then L[#L + 1] = 'set title ' .. str(o.title) end
  if o.xlabel then L[#L + 1] = 'set xlabel ' .. str(o.xlabel) end
  if o.ylabel then L[#L + 1] = 'set ylabel ' .. str(o.ylabel) end
  if o.logx then L[#L + 1] = 'set logscale x' end
  if o.logy then L[#L + 1] = 'set logscale y' end
  if o.xrange then L[#L + 1] = ('set xrange [%s:%s]'):format(num(o.xrange[1]), num(o.xrange[2])) end
  if o.yrange then L[#L + 1] = ('set yrange [%s:%s]'):format(num(o.yrange[1]), num(o.yrange[2])) end
  if not text then L[#L + 1] = 'set grid' end
  L[#L + 1] = text and 'set key below noautotitle' or 'set key top right noautotitle'
  local plots = {}
  for i, s in ipairs(self.series) do
    L[#L + 1] = ('$s%d << EOD'):format(i)
    for j = 1, #s.y do
      local row = {num(s.x and s.x[j] or j - 1), num(s.y[j])}
      if s.lo then row[3], row[4] = num(s.lo[j]), num(s.hi[j]) end
      L[#L + 1] = table.concat(row, ' ')
    end
    L[#L + 1] = 'EOD'
    local lc = 'lc rgb ' .. str(s.color)
    if s.lo and text then
      plots[#plots + 1] = ('$s%d using 1:3 with lines dt 3 %s notitle, $s%d using 1:4 with lines '
        .. 'dt 3 %s notitle'):format(i, lc, i, lc)
    elseif s.lo then
      plots[#plots + 1] = ('$s%d using 1:3:4 with filledcurves fs transparent solid 0.2 '
        .. 'noborder %s notitle'):format(i, lc)
    end
    local style = s.with == 'lines' and 'lines lw 2' or s.with == 'points' and 'points pt 7'
      or 'linespoints lw 2 pt 7'
    plots[#plots + 1] = ('$s%d using 1:2 with %s %s %s'):format(i, style, lc,
      s.label and ('title ' .. str(s.label)) or 'notitle')
  end
  L[#L + 1] = 'plot ' .. table.concat(plots, ', \\\n  ')
  return table.concat(L, '\n') .. '\n'
end

-- Renders with a gnuplot terminal spec; to `output` when given, else returns gnuplot's stdout.
function Figure:render(terminal, output)
  need_gnuplot()
  local s = 'set terminal ' .. terminal .. '\n'
  if output then s = s .. 'set output ' .. str(output) .. '\n' end
  return run(s .. self:body(terminal:match('^%s*dumb') ~= nil)
    .. (output and 'unset output\n' or ''))
end

local FILE_TERMS = {
  pdf = 'pdfcairo size 5in,3.2in font "Sans,10"',
  png = 'pngcairo size 900,560 font "Sans,11"',
  svg = 'svg size 900,560 dynamic font "Sans,11"',
}

--- fig:savefig(path): render to .pdf, .png or .svg (by the extension); returns path.
function Figure:savefig(path)
  local ext = type(path) == 'string' and path:match('%.(%w+)$')
  local t = ext and FILE_TERMS[ext:lower()]
  if not t then error("savefig: the file name must end in .pdf, .png or .svg", 2) end
  self:render(t, path)
  return path
end

local function env(name)
  local v = os.getenv(name)
  return v ~= '' and v or nil
end

local stdout_tty
local function is_tty()
  if stdout_tty == nil then
    if has_term then stdout_tty = term.isatty(1) else
      stdout_tty = os.execute('test -t 1') == true
    end
  end
  return stdout_tty
end

local function window()
  local cols, rows
  if has_term then cols, rows = term.size() end
  return cols or 80, rows or 24
end

local function sixel_terminal()
  local t, p = env('TERM') or '', env('TERM_PROGRAM') or ''
  return t:find('sixel') or t:match('^foot') or t:match('^mlterm') or t:match('^yaft')
    or t:match('^contour') or p == 'WezTerm' or p == 'mintty' or p == 'iTerm.app'
end

--- The gnuplot terminal for inline drawing, or nil for none (see the header).
function M.inline_terminal()
  local cols, rows = window()
  local height = math.max(12, math.min(rows - 4, math.floor(cols * 0.35)))
  local forced = env('GMOE_PLOT_TERM')
  local color = is_tty() and not env('NO_COLOR')
  if forced then
    if forced == 'none' then return nil end
    if forced:match('^dumb') and not forced:find('size') then
      return forced .. (' size %d,%d'):format(cols, height)
    end
    if forced:match('^sixel') and not forced:find('size') then
      return forced .. ' size 800,480'
    end
    return forced
  end
  if not is_tty() then return nil end
  if sixel_terminal() then return 'sixelgd size 800,480 truecolor' end
  return ('dumb size %d,%d%s'):format(cols, height, color and ' ansi' or '')
end

-- Draws fig in the terminal (not captured into notebook text: it is a figure).
local function draw(fig)
  if M.display then return M.display(fig) end
  local t = M.inline_terminal()
  if not t then return end
  local out = fig:render(t):gsub('\f', '') -- the dumb terminal's form feed
  local repl = package.loaded['gmoe.repl']
  if repl then repl.raw(out) else io.stdout:write(out) end
  io.stdout:flush()
end

--- gm.plot{series..., title=, xlabel=, ylabel=, logx=, logy=, xrange=, yrange=}
function M.plot(spec, ...)
  if select('#', ...) > 0 or gm.is_tensor(spec) or (type(spec) == 'table' and type(spec[1]) == 'number') then
    spec = {spec, ...}
  end
  if type(spec) ~= 'table' then error('gm.plot: expects a table {series..., title=...}', 2) end
  local series = {}
  if spec.y ~= nil then series[1] = series_of(spec, 1) end
  for i = 1, #spec do series[#series + 1] = series_of(spec[i], #series + 1) end
  if #series == 0 then error('gm.plot: no series (give y values: gm.plot{y} or gm.plot{{x=, y=}})', 2) end
  need_gnuplot()
  count = count + 1
  local fig = setmetatable({id = count, series = series, title = spec.title,
    opts = {title = spec.title, xlabel = spec.xlabel, ylabel = spec.ylabel, logx = spec.logx,
            logy = spec.logy, xrange = spec.xrange, yrange = spec.yrange}}, Figure)
  M.last = fig
  if M.on_figure then M.on_figure(fig) end
  draw(fig)
  return fig
end

--- Draws the last figure again (for %plot with no argument).
function M.redraw()
  if not M.last then error('no figure yet (gm.plot{...} makes one)', 0) end
  draw(M.last)
end

--- gm.savefig(path): the last figure to .pdf/.png/.svg.
function M.savefig(path)
  if not M.last then error('gm.savefig: no figure yet (call gm.plot{...} first)', 2) end
  return M.last:savefig(path)
end

M.Figure = Figure
setmetatable(M, {__call = function(_, ...) return M.plot(...) end})
gm.savefig = M.savefig

doc.add('gm.plot', 'gm.plot{series..., title=, xlabel=, ylabel=, logx=, logy=, xrange=, yrange=}',
  'Draws a figure with gnuplot and keeps it as the last figure (returned). A series is a tensor '
  .. 'or array of y values (plotted against 0, 1, ...), {x, y}, or a table {x=, y=, label=, '
  .. "with='lines'|'points'|'linespoints', err= (a band y +- err), lo=, hi= (a band), color=}. "
  .. 'gm.plot{y = t, ...} is a single series. In the REPL the figure is drawn inline: '
  .. '$GMOE_PLOT_TERM (a gnuplot terminal or "none"), else sixel in a sixel terminal, else '
  .. "gnuplot's dumb terminal at the window's size. Scripts draw nothing unless GMOE_PLOT_TERM "
  .. 'is set: use gm.savefig. gnuplot (gnuplot-nox) must be installed; $GMOE_GNUPLOT names it.',
  {where = 'lua/gmoe/plot.lua'})
doc.add('gm.savefig', 'gm.savefig(path) -> path',
  'Renders the last figure of gm.plot to a file: .pdf (pdfcairo, 5in x 3.2in), .png (pngcairo, '
  .. '900x560) or .svg, chosen by the extension. fig:savefig(path) does the same for any figure.')
doc.add('gm.plot.plot', 'gm.plot.plot{...}', 'The same as gm.plot{...}.')
doc.add('gm.plot.savefig', 'gm.plot.savefig(path)', 'The same as gm.savefig(path).')
doc.add('gm.plot.redraw', 'gm.plot.redraw()', 'Draws the last figure in the terminal again.')
doc.add('gm.plot.inline_terminal', 'gm.plot.inline_terminal() -> string|nil',
  'The gnuplot terminal used for inline drawing (nil: none), from $GMOE_PLOT_TERM, the '
  .. "terminal's type (sixel) and the window's size (dumb).")
doc.add('gm.plot.Figure', 'gm.plot.Figure',
  'The class of figures: fig:savefig(path), fig:render(terminal, output), fig:body() (the '
  .. 'gnuplot commands, data inline), fig.series, fig.id.')

return M
