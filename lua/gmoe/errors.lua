-- gmoe.errors: errors raised by gm's Lua modules point at the user's line, not at the library.
-- Each module starts with `local error = require('gmoe.errors').raise`: a message gets the
-- position of the first caller outside gm's modules (and outside C functions), however deep in
-- the library it was raised, so explicit error levels that guess the depth are not needed.
-- error(msg, 0) still adds no position; tables and other non-string errors pass unchanged.
-- check() tests an argument's type at a public entry, so a wrong call says so instead of
-- failing later inside the library ("attempt to call a number value").
local M = {}

local lib_error = error

-- Is this chunk one of gm's own Lua modules (embedded as "@lua/gmoe/...")?
local function in_library(source) return source:find('^@lua/gmoe/') ~= nil end

function M.raise(msg, level)
  if level == 0 or type(msg) ~= 'string' then lib_error(msg, 0) end
  -- level 1 is this function, 2 the module that raised; look further out for the user's frame
  local l = 2
  while true do
    local info = debug.getinfo(l, 'S')
    if not info then l = 2 break end -- only library frames: keep the raising line
    if info.what ~= 'C' and not in_library(info.source) then break end
    l = l + 1
  end
  lib_error(msg, l) -- error's own level 1 is M.raise, as debug.getinfo's is
end

-- check(fname, n, name, v, kind): argument n (called name) of fname must be a kind: "function"
-- (anything callable), "table", "tensor", "number", "string"; with a trailing "?" nil is fine.
-- Raises "fname: argument n (name): expected a K, got T" at the user's line.
local function callable(v)
  local mt = getmetatable(v)
  return type(v) == 'function' or (type(mt) == 'table' and mt.__call ~= nil)
end

local function is_tensor(v)
  local gm = package.loaded.gmoe -- loaded by the time anything is checked
  return gm ~= nil and gm.is_tensor(v)
end

function M.check(fname, n, name, v, kind)
  local opt = kind:sub(-1) == '?'
  local k = opt and kind:sub(1, -2) or kind
  if v == nil and opt then return v end
  local ok
  if k == 'function' then ok = callable(v)
  elseif k == 'tensor' then ok = is_tensor(v)
  else ok = type(v) == k end
  if not ok then
    local what = is_tensor(v) and 'tensor' or type(v)
    M.raise(('%s: argument %d (%s): expected a %s, got %s'):format(fname, n, name, k, what))
  end
  return v
end

return M
