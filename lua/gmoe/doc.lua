-- gmoe.doc: the documentation registry behind `?name` in the REPL and gm.help(name).
-- Every public gm function, class and layer registers one entry where it is defined:
--   require('gmoe.doc').add('gm.nn.Linear', 'gm.nn.Linear{in_features, out_features, bias=true}',
--     'One paragraph: what it computes, defaults, shapes.', {formula = '...', paper = '...'})
-- Ops of the op table are documented from core/ops/*.def and need no entry here. Functions
-- defined in C (lua/lgmoe.c) and in lua/gmoe/init.lua are documented in gmoe.docs_core,
-- loaded the first time an entry is looked up. tests/lua/t_doc.lua checks that every public
-- function has an entry.
local M = {entries = {}}

--- add(name, signature, text, extra): register the doc of `name` (a dotted path from gm).
-- extra: {formula = string, paper = string, where = string}; where defaults to the place
-- add was called from.
function M.add(name, sig, text, extra)
  local check = require('gmoe.errors').check
  check('doc.add', 1, 'name', name, 'string')
  check('doc.add', 2, 'signature', sig, 'string')
  check('doc.add', 3, 'text', text, 'string')
  local info = debug.getinfo(2, 'Sl')
  local e = {name = name, sig = sig, text = text,
             where = info and (info.short_src .. ':' .. (info.currentline or 0)) or '?'}
  for k, v in pairs(extra or {}) do e[k] = v end
  M.entries[name] = e
  return e
end

local core_loaded = false
local function load_core()
  if core_loaded then return end
  core_loaded = true
  if package.preload['gmoe.docs_core'] or package.searchpath('gmoe.docs_core', package.path) then
    require 'gmoe.docs_core'
  end
end

--- get(name) -> entry or nil
function M.get(name)
  load_core()
  return M.entries[name]
end

--- names() -> sorted array of every documented name
function M.names()
  load_core()
  local t = {}
  for k in pairs(M.entries) do t[#t + 1] = k end
  table.sort(t)
  return t
end

return M
