-- t_plot.lua: gm.plot and gm.savefig (lua/gmoe/plot.lua): series forms, the gnuplot script a
-- figure makes, inline drawing through gnuplot's dumb terminal (GMOE_PLOT_TERM), files by
-- extension, and the errors (bad series, no figure, gnuplot missing).
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local q, path, slurp = tap.q, tap.tmpfile, tap.slurp

tap.is(type(gm.plot), 'table', 'gm.plot is the module')
tap.is(type(gm.savefig), 'function', 'gm.savefig is set when it loads')
tap.errors(function() gm.savefig('x.png') end, 'no figure yet', 'savefig before any figure')

if not os.execute('command -v gnuplot >/dev/null 2>&1') then
  tap.skip_all('gnuplot is not installed')
end

-- figures (stdout is not a terminal and GMOE_PLOT_TERM is unset here: nothing is drawn)
local x = gm.linspace(0, 1, 5)
local fig = gm.plot{x = x, y = x * 2, title = 'line "q"', xlabel = 'step', logy = true}
tap.is(getmetatable(fig), gm.plot.Figure, 'gm.plot{...} is callable and returns a figure')
tap.is(gm.plot.last, fig, 'and keeps it as the last figure')
local body = fig:body()
tap.like(body, 'set title "line \\"q\\""', 'the title, quoted for gnuplot')
tap.like(body, 'set xlabel "step"', 'axis labels')
tap.like(body, 'set logscale y', 'log axes')
tap.like(body, '%$s1 << EOD\n0 0\n0%.25 0%.5\n', 'the data inline as a datablock')
tap.like(body, 'with lines lw 2 lc rgb "#0072B2" notitle', 'lines in the first Okabe-Ito colour')

fig = gm.plot{{1, 4, 9}, {y = {2, 3, 4}, err = {0.5, 0.5, 0.5}, label = 'band', with = 'points'},
  {{0, 1}, {5, 6}}}
body = fig:body()
tap.is(#fig.series, 3, 'several series')
tap.like(body, '%$s1 << EOD\n0 1\n1 4\n2 9\nEOD', 'an array is y against 0, 1, ...')
tap.like(body, '%$s2 << EOD\n0 2 1%.5 2%.5\n', 'err makes lo/hi columns')
tap.like(body, 'using 1:3:4 with filledcurves', 'drawn as a band')
tap.like(body, 'with points pt 7 lc rgb "#D55E00" title "band"', 'points with a label')
tap.like(body, '%$s3 << EOD\n0 5\n1 6\nEOD', '{x, y} pairs')
tap.like(fig:body(true), 'using 1:3 with lines dt 3', 'text terminals draw band edges')
tap.like(gm.plot(gm.tensor{1, 0/0, 3}):body(), '\n1 NaN\n', 'a bare tensor; NaN is a gap')

tap.errors(function() gm.plot{} end, 'no series', 'an empty figure')
tap.errors(function() gm.plot{{x = {1, 2}, y = {1}}} end, '2 x values for 1 y values', 'length mismatch')
tap.errors(function() gm.plot{{1, 'a'}} end, 'is a string, not a number', 'non-numbers')
tap.errors(function() gm.plot{y = {1}, with = 'bars'} end, "with = 'bars'", 'unknown styles')

-- files by extension
local png, svg, pdf = path('.png'), path('.svg'), path('.pdf')
tap.is(gm.savefig(png), png, 'savefig returns the path')
tap.is(slurp(png):sub(1, 8), '\137PNG\r\n\26\n', 'a PNG file')
gm.savefig(svg)
tap.like(slurp(svg), '<svg', 'an SVG file')
fig:savefig(pdf)
tap.is(slurp(pdf):sub(1, 5), '%PDF-', 'a PDF file (fig:savefig)')
tap.errors(function() gm.savefig(path('.jpg')) end, 'must end in %.pdf, %.png or %.svg', 'other extensions')

-- inline drawing: GMOE_PLOT_TERM picks a terminal; dumb draws text on stdout
local rc, out, err = tap.run('-e ' .. q('gm.plot{title = "T1", y = {1, 2, 3}, label = "rise"}'),
  {env = "GMOE_PLOT_TERM='dumb size 60,15'"})
tap.is(rc, 0, 'a script with GMOE_PLOT_TERM=dumb')
tap.like(out, 'T1', 'draws the figure inline (title)')
tap.like(out, '%+%-%-%-%-', 'with its frame')
tap.like(out, 'rise', 'and its key')
tap.is(#out:match('[^\n]*'), 60, 'at the requested width')
rc, out = tap.run('-e ' .. q('gm.plot{y = {1, 2}}'))
tap.is(out, '', 'nothing is drawn when stdout is not a terminal')
rc, out = tap.run('-e ' .. q('print(gm.plot.inline_terminal())'), {env = 'GMOE_PLOT_TERM=none'})
tap.is(out, 'nil\n', 'GMOE_PLOT_TERM=none turns inline drawing off')

-- a missing gnuplot is a clear error
rc, out, err = tap.run('-e ' .. q('gm.plot{y = {1, 2}}'), {env = 'GMOE_GNUPLOT=/nonexistent/gnuplot'})
tap.is(rc, 1, 'gm.plot without gnuplot fails')
tap.like(err, 'gnuplot not found %(/nonexistent/gnuplot%); install it', 'and says what to do')

tap.done()
