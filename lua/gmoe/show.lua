-- show.lua (module gmoe.show): how the REPL, gm.show and tostring print values.
-- Tensors print like PyTorch's (torch/_tensor_str.py): one number format per tensor, "..."
-- summaries past `threshold` elements fetched with narrow/select (never the whole tensor),
-- then dtype, shape, device, requires_grad and grad_fn. gm.show (the REPL) puts a header line
-- first, with min/max/mean/std and NaN/Inf counts for float tensors. Tables print nested, with
-- depth and length caps; objects with __tostring or __name (modules, gates, optimisers) print
-- with tostring. Colour (opts.color) is switched on by the REPL on a terminal without NO_COLOR.
local M = {}

-- Printing options, changed in place: require('gmoe.show').opts.precision = 6
M.opts = {
  precision = 4,     -- digits after the point
  threshold = 1000,  -- summarise tensors with more elements than this
  edgeitems = 3,     -- items kept at each end of a summarised dim
  linewidth = 80,    -- wrap rows of numbers at this width
  depth = 3,         -- nested tables deeper than this print as {...}
  items = 20,        -- entries printed per table before "..."
  stats = true,      -- gm.show: min/max/mean/std and NaN/Inf counts in a float tensor's header
  color = false,     -- ANSI colour; the REPL sets it on a terminal unless NO_COLOR is set
}

-- ANSI SGR codes by role; paint() leaves text alone when colour is off.
local COLORS = {header = '36', string = '32', number = '0', nil_ = '2', bad = '31', dim = '2'}
local function paint(role, s)
  if not M.opts.color then return s end
  return '\27[' .. COLORS[role] .. 'm' .. s .. '\27[0m'
end
M.paint = paint

local INDENT = #'tensor('
local ELLIPSIS = {}  -- stands for the items a summary leaves out

local function is_tensor(v)
  local t = type(v)
  if t ~= 'userdata' and t ~= 'table' then return false end
  local gm = package.loaded.gmoe or rawget(_G, 'gm')
  return type(gm) == 'table' and type(gm.is_tensor) == 'function' and gm.is_tensor(v) == true
end

local function shape_str(shape)
  return '[' .. table.concat(shape, ', ') .. ']'
end

-- "f32[2, 3] cpu requires_grad grad_fn=matmul"
local function meta_str(x)
  local s = x.dtype .. shape_str(x.shape) .. ' ' .. x.device
  if x.requires_grad then s = s .. ' requires_grad' end
  local fn = x.grad_fn
  if fn then s = s .. ' grad_fn=' .. tostring(fn) end
  return s
end

-- x's values as nested Lua arrays. When summarising, a dim longer than 2*edgeitems keeps only
-- its edge items around ELLIPSIS, so only those slices are copied out of the tensor.
local function gather(x, summarize)
  local e, n = M.opts.edgeitems, x.shape[1]
  local short = not summarize or n <= 2 * e
  if x:dim() == 1 or not summarize then
    if short then return x:totable() end
    local out = x:narrow(0, 0, e):totable()
    out[#out + 1] = ELLIPSIS
    for _, v in ipairs(x:narrow(0, n - e, e):totable()) do out[#out + 1] = v end
    return out
  end
  local out = {}
  local function take(i) out[#out + 1] = gather(x:select(0, i), true) end
  if short then
    for i = 0, n - 1 do take(i) end
  else
    for i = 0, e - 1 do take(i) end
    out[#out + 1] = ELLIPSIS
    for i = n - e, n - 1 do take(i) end
  end
  return out
end

local function flatten(t, acc)
  for _, v in ipairs(t) do
    if type(v) ~= 'table' then acc[#acc + 1] = v
    elseif v ~= ELLIPSIS then flatten(v, acc) end
  end
  return acc
end

local function nonfinite(v)
  if v ~= v then return 'nan' end
  if v == math.huge then return 'inf' end
  if v == -math.huge then return '-inf' end
end

-- One format for all the values of a tensor (torch's _Formatter): integers for i32; for
-- floats "1." style when every value is whole, scientific when the finite non-zero magnitudes
-- span more than 1e3 or leave [1e-4, 1e8], else fixed point. Returns the padding function
-- and the common width.
local function formatter(vals, dtype)
  local fmt
  if dtype == 'i32' then
    fmt = function(v) return string.format('%d', v) end
  else
    local p = M.opts.precision
    local whole, lo, hi, any = true, math.huge, 0, false
    for _, v in ipairs(vals) do
      if v ~= 0 and not nonfinite(v) then
        local a = math.abs(v)
        any, lo, hi = true, math.min(lo, a), math.max(hi, a)
        if v ~= math.floor(v) then whole = false end
      end
    end
    local sci = any and (hi / lo > 1000 or hi > 1e8 or (not whole and lo < 1e-4))
    local pat = sci and ('%.' .. p .. 'e') or ('%.' .. p .. 'f')
    fmt = function(v)
      local s = nonfinite(v)
      if s then return s end
      if whole and not sci then return string.format('%.0f.', v) end
      return string.format(pat, v)
    end
  end
  local width = 1
  for _, v in ipairs(vals) do
    if dtype == 'i32' or (v ~= 0 and not nonfinite(v)) then width = math.max(width, #fmt(v)) end
  end
  return function(v)
    local s = fmt(v)
    return string.rep(' ', width - #s) .. s
  end, width
end

-- The bracketed block for nested arrays t of dim `dim`, starting at column `indent`.
local function render(t, dim, indent, fmt, width)
  if dim == 1 then
    local per_line = math.max(1, (M.opts.linewidth - indent) // (width + 2))
    local items, lines = {}, {}
    for i, v in ipairs(t) do items[i] = v == ELLIPSIS and ' ...' or fmt(v) end
    for i = 1, #items, per_line do
      lines[#lines + 1] = table.concat(items, ', ', i, math.min(i + per_line - 1, #items))
    end
    return '[' .. table.concat(lines, ',\n' .. string.rep(' ', indent + 1)) .. ']'
  end
  local parts = {}
  for i, sub in ipairs(t) do
    parts[i] = sub == ELLIPSIS and '...' or render(sub, dim - 1, indent + 1, fmt, width)
  end
  local sep = ',' .. string.rep('\n', dim - 1) .. string.rep(' ', indent + 1)
  return '[' .. table.concat(parts, sep) .. ']'
end

-- tensor([[ 0.1234, -1.2000],
--         [ 3.0000,  4.5000]])  f32[2, 2] cpu requires_grad
function M.tensor_str(x)
  local body
  if x:numel() == 0 then
    body = '[]'
  elseif x:dim() == 0 then
    local v = x:item()
    body = formatter({v}, x.dtype)(v)
  else
    local data = gather(x, x:numel() > M.opts.threshold)
    local fmt, width = formatter(flatten(data, {}), x.dtype)
    body = render(data, x:dim(), INDENT, fmt, width)
  end
  return 'tensor(' .. body .. ')  ' .. meta_str(x)
end

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch('%a+') do KEYWORDS[w] = true end

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == 'number' or ta == 'string' then return a < b end
  return tostring(a) < tostring(b)
end

local format

local function key_str(k, depth, seen)
  if type(k) == 'string' and k:match('^[%a_][%w_]*$') and not KEYWORDS[k] then return k end
  return '[' .. format(k, depth, seen) .. ']'
end

-- {1, 2, x = "a", sub = {...}}: the array part in order, then the other keys sorted.
local function table_str(t, depth, seen)
  if seen[t] then return '<cycle>' end
  if depth >= M.opts.depth then return '{...}' end
  seen[t] = true
  local parts, cap, n = {}, M.opts.items, rawlen(t)
  for i = 1, math.min(n, cap) do parts[#parts + 1] = format(rawget(t, i), depth + 1, seen) end
  local keys = {}
  for k in next, t do
    if not (math.type(k) == 'integer' and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_less)
  for i = 1, math.min(#keys, cap - #parts) do
    local k = keys[i]
    local v = format(rawget(t, k), depth + 1, seen)
    parts[#parts + 1] = key_str(k, depth + 1, seen) .. ' = ' .. v
  end
  if n + #keys > #parts then parts[#parts + 1] = '...' end
  seen[t] = nil
  return '{' .. table.concat(parts, ', ') .. '}'
end

function format(v, depth, seen)
  local t = type(v)
  if is_tensor(v) then
    -- Inside a table only small tensors print in full; the others as their header.
    if depth == 0 or v:numel() <= 10 then
      local s = M.tensor_str(v)
      if depth == 0 or not s:find('\n') then return s end
    end
    return '<tensor ' .. meta_str(v) .. '>'
  elseif t == 'string' then
    return (string.format('%q', v):gsub('\\\n', '\\n'))
  elseif t == 'number' then
    return nonfinite(v) or tostring(v)
  elseif t == 'table' then
    local mt = getmetatable(v)
    if type(mt) == 'table' and (rawget(mt, '__tostring') or rawget(mt, '__name')) then
      return tostring(v)
    end
    return table_str(v, depth, seen)
  end
  return tostring(v)
end

-- One value as a string: tensors as above, tables nested (depth 3, 20 entries per level),
-- strings quoted, everything else with tostring.
function M.format(v)
  return format(v, 0, {})
end

local function num(v)
  if nonfinite(v) then return nonfinite(v) end
  return string.format('%.' .. M.opts.precision .. 'g', v)
end

-- Statistics of a float tensor over its finite elements, computed without recording a graph:
-- "min -1.2 max 3.4 mean 0.5 std 1.1 nan 2 inf 1" (counts only when non-zero).
local function stats_str(x)
  local gm = package.loaded.gmoe
  return gm.no_grad(function()
    local d = x:detach()
    local finite = d:eq(d) * d:abs():lt(math.huge)
    local nfin = finite:sum():item()
    local nan = x:numel() - d:eq(d):sum():item()
    local inf = x:numel() - nfin - nan
    local s = ''
    if nfin > 0 then
      local zero = gm.zeros_like(d)
      local mean = gm.where(finite, d, zero):sum():item() / nfin
      local dev = gm.where(finite, d - mean, zero)
      local std = math.sqrt((dev * dev):sum():item() / nfin)
      local lo = gm.where(finite, d, gm.full_like(d, math.huge)):min():item()
      local hi = gm.where(finite, d, gm.full_like(d, -math.huge)):max():item()
      s = ('min %s  max %s  mean %s  std %s'):format(num(lo), num(hi), num(mean), num(std))
    end
    if nan > 0 then s = s .. '  ' .. paint('bad', 'nan ' .. math.tointeger(nan)) end
    if inf > 0 then s = s .. '  ' .. paint('bad', 'inf ' .. math.tointeger(inf)) end
    return s
  end)
end

-- The REPL's view of a tensor: a header line, then the values.
--   tensor f32[2, 3] cpu  min -0.9247  max 0.9911  mean -0.1677  std 0.6472
--   [[ 0.9911, -0.9247, -0.6176],
--    [-0.4821, -0.1536,  0.1808]]
function M.tensor_show(x)
  local head = 'tensor ' .. meta_str(x)
  if M.opts.stats and x.dtype ~= 'i32' and x:numel() > 0 then
    local st = stats_str(x)
    if st ~= '' then head = head .. '  ' .. st end
  end
  local body
  if x:numel() == 0 then
    body = '[]'
  elseif x:dim() == 0 then
    local v = x:item()
    body = formatter({v}, x.dtype)(v)
  else
    local data = gather(x, x:numel() > M.opts.threshold)
    local fmt, width = formatter(flatten(data, {}), x.dtype)
    body = render(data, x:dim(), 0, fmt, width)
  end
  return paint('header', head) .. '\n' .. body
end

-- format() with colour for the REPL: strings green, nil dim; tensors with a header.
local function show_one(v)
  if is_tensor(v) then return M.tensor_show(v) end
  local s = format(v, 0, {})
  if type(v) == 'string' then return paint('string', s) end
  if v == nil then return paint('nil_', s) end
  return s
end

-- Prints its arguments like the REPL does: formatted, separated by tabs (lua.c's print).
function M.show(...)
  local n = select('#', ...)
  local parts = {}
  for i = 1, n do parts[i] = show_one((select(i, ...))) end
  io.stdout:write(table.concat(parts, '\t'), '\n')
end

return M
