-- gmoe.doc: the documentation registry behind `?name` in the REPL and gm.help(name).
-- Every public gm function, class and layer registers one entry where it is defined:
--   require('gmoe.doc').add('gm.nn.Linear', 'gm.nn.Linear{in_features, out_features, bias=true}',
--     'One paragraph: what it computes, defaults, shapes.', {formula = '...', paper = '...'})
-- Ops of the op table are documented from core/ops/*.def and need no entry here.
local M = {entries = {}}

--- add(name, signature, text, extra): register the doc of `name` (a dotted path from gm).
-- extra: {formula = string, paper = string}; where it was registered is recorded too.
function M.add(name, sig, text, extra)
  assert(type(name) == 'string' and type(sig) == 'string' and type(text) == 'string',
         'doc.add(name, signature, text, extra)')
  local info = debug.getinfo(2, 'Sl')
  local e = {name = name, sig = sig, text = text,
             where = info and (info.short_src .. ':' .. (info.currentline or 0)) or '?'}
  for k, v in pairs(extra or {}) do e[k] = v end
  M.entries[name] = e
  return e
end

--- get(name) -> entry or nil
function M.get(name) return M.entries[name] end

return M
