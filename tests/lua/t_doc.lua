-- t_doc.lua: every public gm function and class has documentation for ?name: an entry in the
-- doc registry (lua/gmoe/doc.lua, lua/gmoe/docs_core.lua, each module's doc.add) or a row of
-- the op table (gm.ops()). Walks gm, gm.Tensor and every submodule present (optim, nn, data,
-- checkpoint, plot, ...): a new public function without documentation fails here by name.
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local doc = require 'gmoe.doc'

local ops = {}
for _, o in ipairs(gm.ops()) do ops[o.name] = o end

-- Every public function and class reachable from gm, under all its names (gm.nn.F is
-- gm.nn.functional): it is documented when one of its names has an entry (or is an op).
local names_of, order = {}, {}
local function found(name, v)
  if not names_of[v] then names_of[v] = {}; order[#order + 1] = v end
  table.insert(names_of[v], name)
end

local function public(k) return type(k) == 'string' and not k:match('^_') end

-- Classes (tables with a metatable or an __index field) are documented as a whole; other
-- tables are modules and are walked (not back into a table on the current path).
local function walk(prefix, t, depth, path)
  if path[t] or depth > 4 then return end
  path[t] = true
  for k, v in pairs(t) do
    if public(k) then
      local name = prefix .. '.' .. k
      local class = type(v) == 'table' and (getmetatable(v) ~= nil or rawget(v, '__index') ~= nil)
      if type(v) == 'function' then
        found(name, v)
      elseif type(v) == 'table' and v ~= gm.Tensor and k ~= 'entries' then
        if class then found(name, v) else walk(name, v, depth + 1, path) end
      end
    end
  end
  path[t] = nil
end
walk('gm', gm, 0, {})
walk('gm.Tensor', gm.Tensor, 0, {})

local missing, checked = {}, 0
for _, v in ipairs(order) do
  checked = checked + 1
  local ok = false
  for _, name in ipairs(names_of[v]) do
    local k = name:match('[^.]+$')
    if doc.get(name) or (ops[k] and (v == gm[k] or v == gm.Tensor[k])) then ok = true end
  end
  if not ok then missing[#missing + 1] = table.concat(names_of[v], ' = ') end
end
table.sort(missing)

tap.ok(checked > 100, ('the walk saw the API (%d functions and classes)'):format(checked))
tap.ok(#missing == 0, 'every public function and class is documented',
  #missing > 0 and ('missing: ' .. table.concat(missing, ', ')) or nil)

-- entries are well formed
local bad = {}
for _, name in ipairs(doc.names()) do
  local e = doc.get(name)
  if not (e.sig:find('%S') and #e.text > 10 and e.where) then bad[#bad + 1] = name end
end
tap.ok(#bad == 0, 'every entry has a signature, a paragraph and a place',
  #bad > 0 and table.concat(bad, ', ') or nil)
for _, o in ipairs(gm.ops()) do
  if not (o.doc and o.doc:find('%S')) then bad[#bad + 1] = o.name end
end
tap.ok(#bad == 0, 'every op has a doc string in the op table', table.concat(bad, ', '))

-- the registry API others call
local e = doc.add('gm.test_only_fn', 'gm.test_only_fn(x)', 'A function that exists only in this test.',
  {formula = 'y = x', paper = 'none'})
tap.is(doc.get('gm.test_only_fn'), e, 'doc.add registers, doc.get finds')
tap.like(e.where, 't_doc%.lua:%d+', 'where defaults to the caller')
tap.is(e.formula, 'y = x', 'extra fields are kept')

-- the REPL's help text
local R = require 'gmoe.repl'
tap.like(R.help_text('gm.test_only_fn', true), 'formula: y = x\n  paper: none\n  defined at: .*t_doc%.lua',
  '??name shows formula, paper and place')
tap.like(R.help_text('gm.optim.AdamW'), '^gm%.optim%.AdamW%(params', 'submodule functions')
tap.like(R.help_text('Tensor.t'), '^x:t%(%)', 'tensor methods that are not ops')
tap.like(R.help_text('softmax'), '^gm%.softmax%(', 'ops by their bare name')
tap.is(R.help_text('nosuch_name_at_all'), nil, 'nil for unknown names')

tap.done()
