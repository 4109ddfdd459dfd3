-- gmoe.checkpoint: tensor files from Lua and training checkpoints. Loading this module also
-- sets gm.save / gm.load (safetensors: named tensors plus a string->string metadata map) and
-- gm.save_npy / gm.load_npy (one array, numpy's .npy). A checkpoint is one safetensors file:
-- tensors under dotted names ("model.fc1.weight", "optimizer.state.1.exp_avg") and the rest
-- (step, optimiser hyper-parameters, generator states, extra) as JSON strings in the metadata.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local gm = require 'gmoe'
local doc = require 'gmoe.doc'
local C = gm._C

local M = {}
local FORMAT, VERSION = 'gmoe.checkpoint', '1'

-- Errors point at the caller's line: C errors by gm_lua_where (lgmoe.c), these by gmoe.errors.
local function fail(fmt, ...) error(fmt:format(...)) end

local function is_module(x)
  return type(x) == 'table' and type(x.state_dict) == 'function'
end

-- name -> tensor from a (possibly nested) table of tensors: nested keys join with '.'.
local function flatten(tbl, prefix, out, what)
  for k, v in pairs(tbl) do
    if type(k) ~= 'string' and math.type(k) ~= 'integer' then
      fail('%s: key %s in %s is a %s; names must be strings', what, tostring(k), prefix ~= '' and prefix or 'the table', type(k))
    end
    local name = prefix == '' and tostring(k) or prefix .. '.' .. tostring(k)
    if gm.is_tensor(v) then
      if out[name] then fail("%s: two tensors are named '%s'", what, name) end
      out[name] = v
    elseif type(v) == 'table' and getmetatable(v) == nil then
      flatten(v, name, out, what)
    else
      fail("%s: '%s' is a %s, not a tensor (numbers and strings go in metadata)", what, name, type(v))
    end
  end
  return out
end

local function state_of(x, what)
  if is_module(x) then x = x:state_dict() end
  if type(x) ~= 'table' then fail('%s: expected a table of tensors or a module, got %s', what, type(x)) end
  return flatten(x, '', {}, what)
end

local function meta_strings(meta, what)
  local out = {}
  if meta == nil then return out end
  if type(meta) ~= 'table' then fail('%s: metadata must be a table, got %s', what, type(meta)) end
  for k, v in pairs(meta) do
    if type(k) ~= 'string' then fail('%s: metadata keys must be strings, got a %s', what, type(k)) end
    if math.type(v) == 'float' then v = ('%.17g'):format(v)
    elseif type(v) == 'number' or type(v) == 'boolean' then v = tostring(v)
    elseif type(v) ~= 'string' then
      fail("%s: metadata '%s' is a %s; values must be strings (or numbers, booleans)", what, k, type(v))
    end
    out[k] = v
  end
  return out
end

-- ---- plain tensor files ------------------------------------------------------------------------
local function save(path, tensors, opts)
  if type(path) ~= 'string' then fail('save: path must be a string, got %s', type(path)) end
  opts = opts or {}
  C.st_save(path, state_of(tensors, 'save'), meta_strings(opts.metadata, 'save'))
end

local function load(path)
  if type(path) ~= 'string' then fail('load: path must be a string, got %s', type(path)) end
  return C.st_load(path)
end

gm.save, gm.load = save, load
gm.save_npy = function(path, x)
  if type(path) ~= 'string' then fail('save_npy: path must be a string, got %s', type(path)) end
  if not gm.is_tensor(x) then fail('save_npy: expected a tensor, got %s', type(x)) end
  C.npy_save(path, x)
end
gm.load_npy = function(path)
  if type(path) ~= 'string' then fail('load_npy: path must be a string, got %s', type(path)) end
  return C.npy_load(path)
end

-- ---- JSON for the non-tensor state ----------------------------------------------------------
-- Tensors met while encoding are stored under their dotted path and referenced as
-- {"__tensor__": path}; integer-keyed tables that are not sequences carry "__int_keys__".
local TENSOR, INT_KEYS = '__tensor__', '__int_keys__'

local function quote(s, path)
  if not utf8.len(s) or s:find('\0', 1, true) then
    fail('checkpoint: the string at %s is not UTF-8 text', path)
  end
  return '"' .. s:gsub('[%c"\\]', function(ch)
    if ch == '"' or ch == '\\' then return '\\' .. ch end
    return ('\\u%04x'):format(ch:byte())
  end) .. '"'
end

local function is_seq(v, n)
  for i = 1, n do if v[i] == nil then return false end end
  return true
end

local function encode(v, path, tensors, out)
  local t = type(v)
  if gm.is_tensor(v) then
    if tensors[path] then fail("checkpoint: two tensors are named '%s'", path) end
    tensors[path] = v
    out[#out + 1] = '{"' .. TENSOR .. '":' .. quote(path, path) .. '}'
  elseif t == 'string' then out[#out + 1] = quote(v, path)
  elseif t == 'boolean' then out[#out + 1] = tostring(v)
  elseif math.type(v) == 'integer' then out[#out + 1] = ('%d'):format(v)
  elseif t == 'number' then
    if v ~= v or v == math.huge or v == -math.huge then
      fail('checkpoint: %s is %s, which JSON cannot hold', path, tostring(v))
    end
    local s = ('%.17g'):format(v)
    out[#out + 1] = s:find('[.eE]') and s or s .. '.0' -- stays a float when read back
  elseif t == 'table' then
    local n, strs, ints = #v, {}, {}
    for k in pairs(v) do
      if type(k) == 'string' then
        if k == TENSOR or k == INT_KEYS then fail("checkpoint: key '%s' at %s is reserved", k, path) end
        strs[#strs + 1] = k
      elseif math.type(k) == 'integer' then ints[#ints + 1] = k
      else fail('checkpoint: %s has a %s key; keys must be strings or integers', path, type(k)) end
    end
    if #strs > 0 and #ints > 0 then
      fail('checkpoint: %s mixes string and integer keys', path)
    elseif #ints > 0 and #ints == n and is_seq(v, n) then
      out[#out + 1] = '['
      for i = 1, n do
        if i > 1 then out[#out + 1] = ',' end
        encode(v[i], path .. '.' .. i, tensors, out)
      end
      out[#out + 1] = ']'
    else
      local keys = #ints > 0 and ints or strs
      table.sort(keys)
      out[#out + 1] = #ints > 0 and '{"' .. INT_KEYS .. '":true' or '{'
      for i, k in ipairs(keys) do
        if i > 1 or #ints > 0 then out[#out + 1] = ',' end
        out[#out + 1] = quote(tostring(k), path) .. ':'
        encode(v[k], path .. '.' .. tostring(k), tensors, out)
      end
      out[#out + 1] = '}'
    end
  elseif t == 'nil' then out[#out + 1] = 'null'
  else
    fail('checkpoint: %s is a %s, which a checkpoint cannot hold', path, t)
  end
end

local function to_json(v, path, tensors)
  local out = {}
  encode(v, path, tensors, out)
  return table.concat(out)
end

local function resolve(v, tensors, path)
  if type(v) ~= 'table' then return v end
  if v[TENSOR] ~= nil then
    local t = tensors[v[TENSOR]]
    if not t then fail("%s: metadata refers to tensor '%s', which is not in the file", path, tostring(v[TENSOR])) end
    return t
  end
  local ints = v[INT_KEYS]
  v[INT_KEYS] = nil
  local r = {}
  for k, x in pairs(v) do
    if ints then
      local i = math.tointeger(tonumber(k))
      if not i then fail('%s: bad integer key %s in the metadata', path, tostring(k)) end
      k = i
    end
    r[k] = resolve(x, tensors, path)
  end
  return r
end

local function from_json(meta, key, tensors, path)
  local s = meta[key]
  if s == nil then return nil end
  return resolve(C.json_decode(s, path .. ': metadata "' .. key .. '"'), tensors, path)
end

-- ---- training checkpoints -----------------------------------------------------------------------
local function shape_str(t) return '[' .. table.concat(t.shape, ', ') .. ']' end

local function ck_save(path, ck)
  if type(path) ~= 'string' then fail('checkpoint.save: path must be a string, got %s', type(path)) end
  if type(ck) ~= 'table' then fail('checkpoint.save: expected a table {model=, optimizer=, ...}, got %s', type(ck)) end
  for k in pairs(ck) do
    if k ~= 'model' and k ~= 'optimizer' and k ~= 'generators' and k ~= 'step' and k ~= 'extra' then
      fail("checkpoint.save: unknown field '%s' (model, optimizer, generators, step, extra)", tostring(k))
    end
  end
  local tensors = {}
  local meta = {format = FORMAT, version = VERSION}
  if ck.model ~= nil then
    for name, t in pairs(state_of(ck.model, 'checkpoint.save: model')) do tensors['model.' .. name] = t end
  end
  if ck.optimizer ~= nil then
    local o = ck.optimizer
    local sd = (type(o) == 'table' and type(o.state_dict) == 'function') and o:state_dict() or o
    if type(sd) ~= 'table' then fail('checkpoint.save: optimizer must be an optimiser or its state_dict()') end
    meta.optimizer = to_json(sd, 'optimizer', tensors)
  end
  local gens = {}
  for name, g in pairs(ck.generators or {}) do
    if type(name) ~= 'string' then fail('checkpoint.save: generators must be named by strings') end
    local ok, st = pcall(function() return g:get_state() end)
    if not ok then fail("checkpoint.save: generators.%s is not a gm.Generator", name) end
    gens[name] = st
  end
  meta.generators = to_json(gens, 'generators', tensors)
  meta.rng = to_json(gm.get_rng_state(), 'rng', tensors)
  if ck.step ~= nil then meta.step = to_json(ck.step, 'step', tensors) end
  if ck.extra ~= nil then meta.extra = to_json(ck.extra, 'extra', tensors) end
  C.st_save(path, tensors, meta)
end

-- Copy a flat name -> tensor state into a (possibly nested) table of live tensors, strictly:
-- the same names on both sides, the same shapes.
local function copy_into(target, sd, path)
  local dst = flatten(target, '', {}, 'checkpoint.load: model')
  for name, t in pairs(dst) do
    local src = sd[name]
    if not src then fail("checkpoint.load: %s has no tensor 'model.%s'", path, name) end
    if shape_str(src) ~= shape_str(t) then
      fail("checkpoint.load: 'model.%s' is %s in %s but %s in the model", name, shape_str(src), path, shape_str(t))
    end
  end
  for name in pairs(sd) do
    if not dst[name] then fail("checkpoint.load: %s has 'model.%s', which the model lacks", path, name) end
  end
  gm.no_grad(function() for name, t in pairs(dst) do t:copy_(sd[name]) end end)
end

local function ck_load(path, into)
  if type(path) ~= 'string' then fail('checkpoint.load: path must be a string, got %s', type(path)) end
  into = into or {}
  if type(into) ~= 'table' then fail('checkpoint.load: expected a table {model=, optimizer=, ...}, got %s', type(into)) end
  local tensors, meta = C.st_load(path)
  if meta.format ~= FORMAT then
    fail("checkpoint.load: '%s' is not a gmoe checkpoint (no format=%s metadata); gm.load reads any safetensors file", path, FORMAT)
  end
  if meta.version ~= VERSION then
    fail("checkpoint.load: '%s' has checkpoint version %s; this gmoe reads version %s", path, tostring(meta.version), VERSION)
  end
  local where = "'" .. path .. "'"
  local ck = {model = {}, metadata = meta}
  for name, t in pairs(tensors) do
    if name:sub(1, 6) == 'model.' then ck.model[name:sub(7)] = t end
  end
  ck.optimizer = from_json(meta, 'optimizer', tensors, where)
  ck.generators = from_json(meta, 'generators', tensors, where) or {}
  ck.rng = from_json(meta, 'rng', tensors, where)
  ck.step = from_json(meta, 'step', tensors, where)
  ck.extra = from_json(meta, 'extra', tensors, where)
  if into.model ~= nil then
    if type(into.model) == 'table' and type(into.model.load_state_dict) == 'function' then
      into.model:load_state_dict(ck.model)
    elseif type(into.model) == 'table' then
      copy_into(into.model, ck.model, where)
    else
      fail('checkpoint.load: model must be a module or a table of tensors, got %s', type(into.model))
    end
  end
  if into.optimizer ~= nil then
    if not ck.optimizer then fail('checkpoint.load: %s holds no optimiser state', where) end
    into.optimizer:load_state_dict(ck.optimizer)
  end
  for name, g in pairs(into.generators or {}) do
    local st = ck.generators[name]
    if not st then fail("checkpoint.load: %s holds no generator '%s'", where, tostring(name)) end
    g:set_state(st)
  end
  if into.rng ~= false and ck.rng then gm.set_rng_state(ck.rng) end
  return ck
end

M.save, M.load = ck_save, ck_load

-- ---- documentation ------------------------------------------------------------------------------
doc.add('gm.save', 'gm.save(path, tensors_or_module, {metadata={key=string}})',
  'Writes a safetensors file: each tensor (a table name -> tensor, nested tables joined with ".", ' ..
  'or a module\'s state_dict()) in its own dtype (f32 -> F32, f64 -> F64, i32 -> I32), C order, ' ..
  'little-endian, sorted by name, plus a "__metadata__" map of strings (numbers and booleans are ' ..
  'converted). The write is atomic: a temporary file next to path is renamed over it only when ' ..
  'everything was written, so a failed save never damages an existing file.')
doc.add('gm.load', 'gm.load(path) -> tensors, metadata',
  'Reads a safetensors file: a table name -> tensor and the "__metadata__" table (strings). F32, F16 ' ..
  'and BF16 become f32, F64 f64, I32 and I64 i32 (an I64 value outside the i32 range is an error). ' ..
  'The file is checked before anything is read: header length, JSON syntax, duplicate names, dtypes, ' ..
  'shapes against byte ranges, and ranges that tile the data exactly; errors name the file and the problem.')
doc.add('gm.save_npy', 'gm.save_npy(path, tensor)',
  'Writes one tensor as a numpy .npy file (format 1.0, C order, <f4, <f8 or <i4), atomically. ' ..
  'numpy.load reads it.')
doc.add('gm.load_npy', 'gm.load_npy(path) -> tensor',
  'Reads a .npy file of format 1.0, 2.0 or 3.0: <f4, <f8, <i4 (and their big-endian forms), <f2 read ' ..
  'as f32, <i8 as i32 (range-checked); fortran_order True is loaded into C order; shapes () and (n,) ' ..
  'give 0-dim and 1-D tensors. Other dtypes (bool, uint8, object, structured) are refused.')
doc.add('gm.checkpoint.save', 'gm.checkpoint.save(path, {model=m, optimizer=opt, generators={name=g}, step=n, extra=v})',
  'Saves a training checkpoint in one safetensors file: the model\'s tensors (a module with ' ..
  'state_dict, or a table of tensors) as "model.<name>", the optimiser\'s state_dict (its tensors as ' ..
  '"optimizer.<path>", the rest as JSON metadata), the state of each named gm.Generator and of the ' ..
  'default generator, the step and any extra value (tables, numbers, strings, booleans, tensors). ' ..
  'Atomic like gm.save.')
doc.add('gm.checkpoint.load', 'gm.checkpoint.load(path, {model=m, optimizer=opt, generators={name=g}, rng=true}) -> ck',
  'Restores a checkpoint written by gm.checkpoint.save: model parameters (m:load_state_dict, or copies ' ..
  'into a table of tensors with the same names and shapes), the optimiser state, each named ' ..
  'generator and the default generator (unless rng=false). Returns {model=, optimizer=, generators=, ' ..
  'rng=, step=, extra=, metadata=}. Resuming this way continues training bitwise as if uninterrupted.')

return M
