-- t_api_args.lua: every public gm function, called with arguments of the wrong type, fails with
-- a message of its own at the caller's line: never a Lua internal error ("attempt to call a
-- number value") and never a position inside gm's library (lua/gmoe/...). Errors raised deep in
-- the library point at the user's line too (lua/gmoe/errors.lua, gm_lua_where in lgmoe.c).
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local skip = {['gm.plot'] = true, ['gm.savefig'] = true} -- drive gnuplot: tested in t_plot.lua
local seen, checked, bad = {}, 0, {}
local function walk(t, prefix, depth)
  if depth > 2 or seen[t] then return end
  seen[t] = true
  local keys = {}
  for k in pairs(t) do if type(k) == 'string' and not k:match('^_') then keys[#keys + 1] = k end end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v, name = t[k], prefix .. '.' .. k
    if type(v) == 'function' and not skip[name] then
      checked = checked + 1
      for _, args in ipairs {{5}, {'x'}, {{}}, {5, 5}, {true}} do
        local ok, e = pcall(v, table.unpack(args))
        e = tostring(e)
        if not ok and (e:find('attempt to') or e:find('lua/gmoe/', 1, true)) then
          bad[#bad + 1] = ('%s(%s): %s'):format(name, tostring(args[1]), e:gsub('\n.*', ''))
          break
        end
      end
    elseif type(v) == 'table' and getmetatable(v) == nil then
      walk(v, name, depth + 1)
    end
  end
end
walk(gm, 'gm', 0)
tap.ok(checked > 150, ('the walk reached the public functions (%d)'):format(checked))
tap.is(#bad, 0, 'wrong argument types give a message of the function itself at the caller\'s line')
for _, b in ipairs(bad) do tap.diag(b) end

-- positions: the user's line, however deep in the library the error was raised (the chunks
-- avoid `return f()`, a tail call, which leaves no frame of their own to point at)
local chunk = load('local m = gm.nn.Linear(2, 3)\nlocal y = m(gm.randn{4, 5})\nreturn y', '=user.lua')
local ok, e = pcall(chunk)
tap.ok(not ok and e:find('^user.lua:2: linear:'), 'an op error inside a layer points at the user\'s line', e)
ok, e = pcall(load('local q = gm.randn({2}, {requires_grad = true}) * 2\nlocal o = gm.optim.SGD({q}, {lr = 0.1})\nreturn o', '=user.lua'))
tap.ok(not ok and e:find('^user.lua:2: SGD: params%[1%] is not a leaf'), 'an optimiser refuses a non-leaf, at the user\'s line', e)
ok, e = pcall(load('local x = gm.tensor({1e10}, {dtype = "f64"})\nlocal y = x:to("i32")\nreturn y', '=user.lua'))
tap.ok(not ok and e:find('^user.lua:2: conversion to i32'), 'a C error raised under a library wrapper points at the user', e)
ok, e = pcall(load('local e = gm.gradcheck(5, {})\nreturn e', '=user.lua'))
tap.ok(not ok and e:find('^user.lua:1: gm.gradcheck: argument 1 %(f%): expected a function, got number'),
       'gradcheck checks its arguments', e)
ok, e = pcall(load('return gm.optim.AdamW({gm.randn({2}, {requires_grad = true})}, {lr = -1})', '=user.lua'))
tap.ok(not ok and e:find('AdamW: lr must be a number >= 0, got %-1'), 'the AdamW range message reads right', e)

tap.done()
