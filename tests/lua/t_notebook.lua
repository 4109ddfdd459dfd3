-- t_notebook.lua: Markdown notebooks (lua/gmoe/notebook.lua): `gmoe run nb.md` runs the lua
-- cells in order, `--update` rewrites outputs and figures in place and keeps the prose (and a
-- second update changes nothing), errors name the notebook line; %export from the REPL to .md
-- replays to the same outputs; %export to .ipynb writes nbformat-4 JSON.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local q, path, slurp, spit = tap.q, tap.tmpfile, tap.slurp, tap.spit

local has_gnuplot = os.execute('command -v gnuplot >/dev/null 2>&1')

local nb = path('_nb.md')
local src = table.concat({
  '# A notebook',
  '',
  'Some prose before the first cell.',
  '',
  '```lua',
  'x = 20',
  '```',
  '',
  '```lua',
  'x + 1',
  '```',
  '',
  '```text',
  'stale output',
  '```',
  '',
  'More prose, with `code` and a list:',
  '- one',
  '',
  '```lua',
  'for i = 1, 2 do print("line", i) end',
  'io.write("no newline")',
  '```',
  '',
  '```python',
  'not run = 1',
  '```',
  '',
}, '\n')
spit(nb, src)

local rc, out, err = tap.run('run ' .. q(nb))
tap.is(rc, 0, 'gmoe run nb.md exits 0')
tap.is(err, '', 'nothing on stderr')
tap.is(out, '21\nline\t1\nline\t2\nno newline', 'the lua cells run in order; values are shown')
tap.is(slurp(nb), src, 'without --update the file is untouched')

rc, out, err = tap.run('run ' .. q(nb) .. ' --update')
tap.is(rc, 0, '--update exits 0')
local updated = slurp(nb)
tap.like(updated, '^# A notebook\n\nSome prose before the first cell%.\n\n```lua\nx = 20\n```\n\n```lua\n',
  'prose kept; a cell without output gets no block')
tap.like(updated, '```lua\nx %+ 1\n```\n\n```text\n21\n```\n\nMore prose', 'stale output replaced')
tap.like(updated, '```text\nline\t1\nline\t2\nno newline\n```\n\n```python\nnot run = 1\n```\n',
  'a new output block; other languages untouched')
rc = tap.run('run ' .. q(nb) .. ' --update')
tap.is(slurp(nb), updated, 'a second update changes nothing')

-- figures beside the notebook
if has_gnuplot then
  local fnb = path('_fig.md')
  spit(fnb, "```lua\nfig = gm.plot{y = {1, 3, 2}, title = \"t\"}\n```\n")
  rc, out, err = tap.run('run ' .. q(fnb) .. ' --update')
  tap.is(rc, 0, 'a cell with a figure')
  local stem = fnb:match('([^/]*)%.md$')
  tap.like(slurp(fnb), '\n!%[figure 1%]%(' .. stem:gsub('%p', '%%%0') .. '_files/cell%-1%-1%.png%)\n',
    'the figure linked under its cell')
  local png = fnb:gsub('%.md$', '_files/cell-1-1.png')
  tap.is(slurp(png):sub(2, 4), 'PNG', 'as a PNG file beside the notebook')
  local first = slurp(fnb)
  tap.run('run ' .. q(fnb) .. ' --update')
  tap.is(slurp(fnb), first, 'figure links are replaced, not added again')
  os.remove(png)
  os.remove((fnb:gsub('%.md$', '_files')))
else
  tap.skip('figures', 'gnuplot is not installed')
end

-- errors stop the run and name the notebook's line
local bad = path('_bad.md')
spit(bad, 'text\n\n```lua\ny = 1\n```\n\n```lua\n\nerror("cell failed")\n```\n')
rc, out, err = tap.run('run ' .. q(bad) .. ' --update')
tap.is(rc, 1, 'a failing cell exits 1')
tap.like(err, '_bad%.md:9: cell failed', 'with the line in the notebook')
tap.like(slurp(bad), '^text\n\n```lua\ny = 1\n```\n\n```lua\n\nerror', 'and the file is not rewritten')
rc, out, err = tap.run('run ' .. q(bad) .. ' --bogus')
tap.is(rc, 1, 'unknown notebook arguments fail')
tap.like(err, "unknown argument '%-%-bogus'", 'and say so')

-- the REPL's %export, replayed by gmoe run
local exp = path('_exp.md')
local ipynb = path('_exp.ipynb')
rc, out, err = tap.run('', {env = 'GMOE_HISTORY=/dev/null', input = table.concat({
  'gm.manual_seed(1)',
  'w = gm.randn{2, 3}',
  'w',
  'print("mean", w:mean():item() < 10)',
  'undefined_function()',
  '?gm.zeros',
  '{k = "v"}',
  '%export ' .. exp,
  '%export ' .. ipynb,
}, '\n') .. '\n'})
local session_out = out
tap.like(out, 'wrote .-_exp%.md %(6 cells, 0 figures; 1 failed, kept with their errors%)',
  '%export .md: the cells that ran, the failed one included')
local exported = slurp(exp)
tap.like(exported, '```lua\nw\n```\n\n```text\ntensor f32%[2, 3%] cpu  min ', 'values under their cells')
tap.like(exported, '```lua\n{k = "v"}\n```\n\n```text\n{k = "v"}\n```', 'tables too')
tap.like(exported, '```lua\nundefined_function%(%)\n```\n\n```error\nstdin:1: attempt to call a nil value',
  'a failing cell is kept, marked with its error')
tap.ok(not exported:find('?gm.zeros', 1, true) and not exported:find('%export', 1, true),
  'help and %export are left out')
rc, out, err = tap.run('run ' .. q(exp) .. ' --update')
tap.is(rc, 0, 'the exported notebook runs')
tap.is(slurp(exp), exported, 'and reproduces the same outputs and the same error')

local js = slurp(ipynb)
tap.like(js, '"nbformat": 4', 'ipynb: nbformat 4')
tap.like(js, '"cell_type": "code"', 'code cells')
tap.like(js, '"output_type": "stream"', 'with stream outputs')
tap.like(js, '"output_type": "error"', 'and the failed cell with an error output')
tap.like(session_out, 'wrote .-_exp%.ipynb %(6 cells, 0 figures; 1 failed, kept with their errors%)',
  '%export .ipynb says so too')
if os.execute('command -v python3 >/dev/null 2>&1') then
  local ok = os.execute('python3 -c ' .. q('import json,sys; d = json.load(open(sys.argv[1])); '
    .. 'assert d["nbformat"] == 4 and len(d["cells"]) == 6; '
    .. 'assert all(c["cell_type"] == "code" and "source" in c for c in d["cells"])') .. ' ' .. q(ipynb))
  tap.ok(ok, 'the .ipynb is valid JSON with 6 code cells (python3 json)')
  if os.execute('/usr/bin/python3 -c "import nbformat" 2>/dev/null') then
    ok = os.execute('/usr/bin/python3 -c ' .. q('import nbformat,sys; nbformat.validate(nbformat.read(sys.argv[1], '
      .. 'as_version=4))') .. ' ' .. q(ipynb))
    tap.ok(ok, 'and valid nbformat 4, its error output included (nbformat.validate)')
  end
else
  tap.skip('ipynb JSON check', 'python3 is not installed')
end

tap.is(require('gmoe.notebook').base64('Man'), 'TWFu', 'base64')
tap.is(require('gmoe.notebook').base64('Ma'), 'TWE=', 'base64 padding')

tap.done()
