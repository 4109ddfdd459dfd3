-- gmoe.data.util: option helpers shared by the gmoe.data submodules (generators from
-- {generator=g} or {seed=s}, checked integer and choice options, Lua values to tensors, and bytes
-- to tensors for the file readers). Internal: not part of gm.data.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'

local M = {}

-- The generator named by opts: opts.generator, else a fresh gm.Generator(opts.seed), else nil
-- (the default generator, as gm.rand does).
function M.generator(opts, fname)
  if opts.generator ~= nil then
    if opts.seed ~= nil then error(fname .. ': give generator= or seed=, not both', 3) end
    return opts.generator
  end
  if opts.seed ~= nil then
    if math.type(opts.seed) ~= 'integer' then error(fname .. ': seed must be an integer', 3) end
    return gm.Generator(opts.seed)
  end
  return nil
end

-- opts[key] as an integer >= lo (default def); errors name the function and the value.
function M.int(opts, key, def, lo, fname)
  local v = opts[key]
  if v == nil then v = def end
  if math.type(v) ~= 'integer' then
    if type(v) == 'number' and v == math.floor(v) then v = math.tointeger(v)
    else error(('%s: %s must be an integer, got %s'):format(fname, key, tostring(v)), 3) end
  end
  if lo and v < lo then error(('%s: %s must be >= %d, got %d'):format(fname, key, lo, v), 3) end
  return v
end

-- opts[key] as a number (default def).
function M.num(opts, key, def, fname)
  local v = opts[key]
  if v == nil then v = def end
  if type(v) ~= 'number' then error(('%s: %s must be a number, got %s'):format(fname, key, tostring(v)), 3) end
  return v
end

-- opts[key] as one of the strings in `choices` (default def).
function M.choice(opts, key, def, choices, fname)
  local v = opts[key]
  if v == nil then v = def end
  for _, c in ipairs(choices) do if v == c then return v end end
  error(('%s: %s must be one of "%s", got %s'):format(fname, key, table.concat(choices, '", "'),
                                                   tostring(v)), 3)
end

-- The bytes of the regular file at path; anything else (a FIFO would block forever, a device
-- never end) is an error naming fname and what path is.
function M.read_file(path, fname)
  if type(path) ~= 'string' then error(fname .. ': path must be a string, got ' .. type(path)) end
  local kind = gm._C.file_kind(path)
  if kind and kind ~= 'file' then error(('%s: cannot read %s: it is a %s, not a regular file'):format(fname, path, kind)) end
  local f, err = io.open(path, 'rb')
  if not f then error(('%s: cannot open %s'):format(fname, err)) end
  local s = f:read('a')
  f:close()
  if s == nil then error(('%s: cannot read %s'):format(fname, path)) end
  return s
end

-- Reject option keys a function does not know (a typo must not pass silently).
function M.known(opts, keys, fname)
  require('gmoe.errors').check(fname, 1, 'opts', opts, 'table')
  local set = {}
  for _, k in ipairs(keys) do set[k] = true end
  for k in pairs(opts) do
    if not set[k] then
      table.sort(keys)
      error(('%s: unknown option %s (known: %s)'):format(fname, tostring(k), table.concat(keys, ', ')), 3)
    end
  end
end

-- A number, Lua array (possibly nested) or tensor as a tensor of dtype.
function M.as_tensor(v, dtype, what, fname)
  if gm.is_tensor(v) then return v.dtype == dtype and v or v:to(dtype) end
  if type(v) == 'number' or type(v) == 'table' then return gm.tensor(v, {dtype = dtype}) end
  error(('%s: %s must be a tensor, a number or a Lua array, got %s'):format(fname, what, type(v)), 3)
end

-- Bytes s[i .. i+n-1] (1-based i) as unsigned values in a new 1-D tensor of dtype (in C).
function M.bytes_to_tensor(s, i, n, dtype)
  return gm._C.from_bytes(s, i, n, dtype)
end

return M
