-- gmoe.show_html: the HTML that the Jupyter kernel sends beside a result's text/plain, for the
-- values that read better as a table: a list of records ({{kernel = "MATMUL", calls = 19}, ...},
-- one row each, the keys as columns) and a record of scalars ({lr = 1e-3, steps = 100}, one row
-- per key). Anything else (tensors, modules, nested tables) has only its text. Cells are
-- formatted as gmoe.show formats them.
local show = require 'gmoe.show'

local M = {}
M.max_rows, M.max_cols = 200, 30

local function scalar(v)
  local t = type(v)
  return t == 'number' or t == 'string' or t == 'boolean'
end

local function esc(s)
  return (s:gsub('[&<>"]', {['&'] = '&amp;', ['<'] = '&lt;', ['>'] = '&gt;', ['"'] = '&quot;'}))
end

local function cell(v)
  if v == nil then return '' end
  return esc(type(v) == 'string' and v or show.format(v))
end

local function sorted_keys(set)
  local keys = {}
  for k in pairs(set) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- The columns of a list of records (string keys, scalar values), or nil when t is not one.
local function record_columns(t)
  local n = rawlen(t)
  if n == 0 or n > M.max_rows then return nil end
  for k in pairs(t) do
    if math.type(k) ~= 'integer' or k < 1 or k > n then return nil end
  end
  local cols = {}
  for i = 1, n do
    local r = rawget(t, i)
    if type(r) ~= 'table' or getmetatable(r) ~= nil then return nil end
    for k, v in pairs(r) do
      if type(k) ~= 'string' or not scalar(v) then return nil end
      cols[k] = true
    end
  end
  cols = sorted_keys(cols)
  if #cols == 0 or #cols > M.max_cols then return nil end
  return cols
end

-- True when t is a record of scalars: string keys only, at most max_rows of them.
local function is_record(t)
  local n = 0
  for k, v in pairs(t) do
    if type(k) ~= 'string' or not scalar(v) then return false end
    n = n + 1
  end
  return n > 0 and n <= M.max_rows
end

--- The HTML table for v, or nil when v reads as well as text.
function M.html(v)
  if type(v) ~= 'table' then return nil end
  local mt = getmetatable(v)
  local L = {'<table>'}
  local cols = record_columns(v)
  if cols then
    L[#L + 1] = '<thead><tr><th></th>'
    for _, c in ipairs(cols) do L[#L + 1] = '<th>' .. esc(c) .. '</th>' end
    L[#L + 1] = '</tr></thead><tbody>'
    for i = 1, rawlen(v) do
      L[#L + 1] = '<tr><th>' .. i .. '</th>'
      for _, c in ipairs(cols) do L[#L + 1] = '<td>' .. cell(v[i][c]) .. '</td>' end
      L[#L + 1] = '</tr>'
    end
  elseif mt == nil and is_record(v) then
    L[#L + 1] = '<tbody>'
    for _, k in ipairs(sorted_keys(v)) do
      L[#L + 1] = '<tr><th>' .. esc(k) .. '</th><td>' .. cell(v[k]) .. '</td></tr>'
    end
  else
    return nil
  end
  L[#L + 1] = '</tbody></table>'
  return table.concat(L)
end

return M
