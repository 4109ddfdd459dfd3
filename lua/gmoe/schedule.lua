-- gmoe.schedule: gm.schedule, values annealed over training steps (temperatures, thresholds).
-- A schedule is an object with :value(step); gates take a schedule or a plain number wherever
-- an option is temperature-like. Steps past `steps` keep the final value; negative steps the
-- first.
local error = require('gmoe.errors').raise -- errors point at the caller's line
local doc = require 'gmoe.doc'

local M = {}

local Schedule = {}
Schedule.__index = Schedule
Schedule.__name = 'gm.schedule'
function Schedule:__tostring()
  if self.kind == 'fixed' then return ('gm.schedule.fixed(%g)'):format(self.v0) end
  return ('gm.schedule.%s(%g, %g, %d)'):format(self.kind, self.v0, self.v1, self.steps)
end

local function num(fn, key, v)
  if type(v) ~= 'number' or v ~= v then
    error(('gm.schedule.%s: %s must be a number, got %s'):format(fn, key, tostring(v)), 3)
  end
  return v
end

local function make(kind, v0, v1, steps, f)
  num(kind, 'v0', v0); num(kind, 'v1', v1)
  if math.type(steps) ~= 'integer' or steps < 1 then
    error(('gm.schedule.%s: steps must be an integer >= 1, got %s'):format(kind, tostring(steps)), 3)
  end
  return setmetatable({kind = kind, v0 = v0, v1 = v1, steps = steps, f = f}, Schedule)
end

-- Progress in [0, 1] at step.
local function progress(self, step)
  if type(step) ~= 'number' then
    error(('gm.schedule.%s:value(step): step must be a number, got %s'):format(self.kind, type(step)), 3)
  end
  local t = step / self.steps
  return t < 0 and 0 or t > 1 and 1 or t
end

--- s:value(step) -> number
function Schedule:value(step)
  if self.kind == 'fixed' then return self.v0 end
  return self.f(self.v0, self.v1, progress(self, step))
end

--- s(step) is s:value(step).
Schedule.__call = function(self, step) return self:value(step) end

function M.fixed(v)
  return setmetatable({kind = 'fixed', v0 = num('fixed', 'v', v)}, Schedule)
end

function M.linear(v0, v1, steps)
  return make('linear', v0, v1, steps, function(a, b, t) return a + (b - a) * t end)
end

function M.cosine(v0, v1, steps)
  return make('cosine', v0, v1, steps, function(a, b, t) return b + 0.5 * (a - b) * (1 + math.cos(math.pi * t)) end)
end

function M.geometric(v0, v1, steps)
  if type(v0) == 'number' and type(v1) == 'number' and (v0 <= 0 or v1 <= 0) then
    error(('gm.schedule.geometric: v0 and v1 must be > 0, got %g and %g'):format(v0, v1), 2)
  end
  return make('geometric', v0, v1, steps, function(a, b, t) return a * (b / a) ^ t end)
end

--- is(v): v is a schedule object.
function M.is(v) return getmetatable(v) == Schedule end

doc.add('gm.schedule.fixed', 'gm.schedule.fixed(v) -> schedule',
  'A constant schedule: s:value(step) = v for every step.', {formula = 'v(t) = v'})
doc.add('gm.schedule.linear', 'gm.schedule.linear(v0, v1, steps) -> schedule',
  'Linear interpolation from v0 at step 0 to v1 at step `steps`, then v1.',
  {formula = 'v(t) = v0 + (v1 - v0) * min(t/steps, 1)'})
doc.add('gm.schedule.cosine', 'gm.schedule.cosine(v0, v1, steps) -> schedule',
  'Half-cosine from v0 at step 0 to v1 at step `steps`, then v1 (EvoMoE\'s cosine heat ' ..
  'scheduler without its warm-up).',
  {formula = 'v(t) = v1 + (v0 - v1) * (1 + cos(pi * min(t/steps, 1))) / 2',
   paper = 'Nie et al. 2021, EvoMoE (cosine heat scheduler)'})
doc.add('gm.schedule.geometric', 'gm.schedule.geometric(v0, v1, steps) -> schedule',
  'Geometric (exponential) decay from v0 to v1 over `steps`, then v1; v0, v1 > 0. EvoMoE\'s ' ..
  'dense-to-sparse temperature anneals 2.0 -> 0.3 this way (its heat scheduler multiplies by a ' ..
  'shrink factor per epoch; this is the continuous form).',
  {formula = 'v(t) = v0 * (v1/v0)^min(t/steps, 1)', paper = 'Nie et al. 2021, EvoMoE'})
doc.add('gm.schedule.is', 'gm.schedule.is(v) -> boolean', 'True when v is a schedule object.')

return M
