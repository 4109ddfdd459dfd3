-- t_checkpoint.lua: gm.save/gm.load (safetensors), gm.save_npy/gm.load_npy, interop with numpy
-- in both directions (when Debian's python3-numpy is present), errors that name the file, atomic
-- replacement, and training checkpoints: N steps + save + load into fresh objects + N steps is
-- bitwise equal to 2N steps (optimiser state, generator states and the step restored).
package.path = 'tests/?.lua;' .. package.path
local tap = require 'tap'
local gm = require 'gmoe'

local dir = os.tmpname()
os.remove(dir)
assert(os.execute('mkdir -p ' .. dir))
local function P(name) return dir .. '/' .. name end

local function bits_equal(a, b)
  if a.dtype ~= b.dtype or table.concat(a.shape, ',') ~= table.concat(b.shape, ',') then return false end
  local x, y = a:reshape{-1}:totable(), b:reshape{-1}:totable()
  if a:dim() == 0 then x, y = {a:item()}, {b:item()} end
  for i = 1, #x do
    if x[i] ~= y[i] and not (x[i] ~= x[i] and y[i] ~= y[i]) then return false end
  end
  return true
end

local function read_file(p)
  local f = assert(io.open(p, 'rb'))
  local s = f:read('a')
  f:close()
  return s
end

-- ---- safetensors round trips -------------------------------------------------------------------
do
  local t = {
    w = gm.randn{3, 4},
    d = gm.randn({5}, {dtype = 'f64'}),
    ids = gm.tensor({{1, -2}, {2147483647, -2147483648}}, {dtype = 'i32'}),
    s = gm.tensor(2.5),
    e = gm.zeros{0, 3},
    view = gm.arange(0, 12):reshape{3, 4}:to('f32'):transpose(0, 1),
    nested = {bias = gm.ones{2}},
  }
  gm.save(P('a.safetensors'), t, {metadata = {note = 'héllo "x"', lr = 0.001, n = 3, flag = true}})
  local back, meta = gm.load(P('a.safetensors'))
  local ok = true
  for _, k in ipairs {'w', 'd', 'ids', 's', 'e', 'view'} do ok = ok and back[k] and bits_equal(back[k], t[k]) end
  tap.ok(ok, 'save/load: f32, f64, i32 (extremes), 0-dim, zero-size and a transposed view are exact')
  tap.ok(back['nested.bias'] and bits_equal(back['nested.bias'], t.nested.bias), 'nested tables become dotted names')
  tap.ok(meta.note == 'héllo "x"' and meta.lr == '0.001' and meta.n == '3' and meta.flag == 'true',
         'metadata round-trips as strings (numbers and booleans converted)')
  local raw = read_file(P('a.safetensors'))
  local hlen = string.unpack('<I8', raw)
  tap.ok((8 + hlen) % 8 == 0 and raw:sub(9, 9) == '{', 'the data section is 8-byte aligned')
  local r2 = gm.load(P('a.safetensors'))
  r2.w[0][0] = 42
  tap.ok(back.w[0][0]:item() ~= 42, 'loaded tensors are fresh (no sharing between loads)')
end

-- a module-like object: its state_dict is saved
do
  local m = {state_dict = function() return {weight = gm.ones{2, 2}} end}
  gm.save(P('m.safetensors'), m)
  local back = gm.load(P('m.safetensors'))
  tap.ok(back.weight and back.weight:sum():item() == 4, 'gm.save takes an object with state_dict()')
end

-- ---- .npy round trips --------------------------------------------------------------------------
do
  local cases = {gm.randn{2, 3}, gm.randn({7}, {dtype = 'f64'}), gm.tensor(5, {dtype = 'i32'}),
                 gm.zeros{0}, gm.randn{2, 1, 3}:transpose(0, 2)}
  local ok = true
  for i, x in ipairs(cases) do
    gm.save_npy(P('x' .. i .. '.npy'), x)
    ok = ok and bits_equal(gm.load_npy(P('x' .. i .. '.npy')), x)
  end
  tap.ok(ok, 'save_npy/load_npy: f32, f64, i32 0-dim, empty, non-contiguous are exact')
end

-- ---- errors ----------------------------------------------------------------------------------
tap.errors(function() gm.load(P('missing.safetensors')) end, "missing%.safetensors'?: cannot open: No such file",
           'a missing safetensors file names the path')
tap.errors(function() gm.load_npy(P('missing.npy')) end, 'missing%.npy', 'a missing npy file names the path')
tap.errors(function() gm.load(P('x1.npy')) end, "x1%.npy'?: header length", 'an npy file is not a safetensors file')
tap.errors(function() gm.load_npy(P('a.safetensors')) end, 'a%.safetensors.*not a %.npy file',
           'a safetensors file is not an npy file')
tap.errors(function() gm.save(P('b.safetensors'), {x = 1}) end, "'x' is a number, not a tensor", 'save refuses non-tensors')
tap.errors(function() gm.save(P('b.safetensors'), {x = gm.ones{1}}, {metadata = {k = {}}}) end,
           "metadata 'k' is a table", 'save refuses non-string metadata')
tap.errors(function() gm.save_npy(P('b.npy'), 3) end, 'expected a tensor', 'save_npy refuses non-tensors')
do
  local ok, err = pcall(function() gm.load(P('missing.safetensors')) end)
  tap.like(err, '^[^:]*t_checkpoint%.lua:%d+: ', "errors point at the caller's line")
  local f = io.open(P('trunc.safetensors'), 'wb')
  f:write(read_file(P('a.safetensors')):sub(1, 100))
  f:close()
  tap.errors(function() gm.load(P('trunc.safetensors')) end, 'trunc%.safetensors.*runs past the end',
             'a truncated file is refused, naming the file')
end

-- ---- atomic replacement --------------------------------------------------------------------
do
  local before = read_file(P('a.safetensors'))
  pcall(gm.save, P('a.safetensors'), {x = gm.ones{1}, y = 'no'})
  tap.ok(read_file(P('a.safetensors')) == before, 'a failed save leaves the existing file untouched')
  gm.save(P('a.safetensors'), {only = gm.ones{3}})
  local back = gm.load(P('a.safetensors'))
  tap.ok(back.only and back.w == nil, 'a successful save replaces the file')
  local p = io.popen('ls -a ' .. dir)
  local listing = p:read('a')
  p:close()
  tap.ok(not listing:find('tmp%-'), 'no temporary files are left behind')
end

-- ---- numpy interop --------------------------------------------------------------------------
local python
for _, py in ipairs {'python3', '/usr/bin/python3'} do
  if not python and os.execute(py .. " -c 'import numpy' >/dev/null 2>&1") then python = py end
end
if not python then
  tap.skip('numpy reads gmoe files', 'no python3 with numpy')
  tap.skip('gmoe reads numpy files', 'no python3 with numpy')
else
  local a = gm.arange(0, 6):reshape{2, 3}:to('f32') / 4
  local b = gm.arange(0, 5):to('f64') / 3
  local c = gm.tensor(-7, {dtype = 'i32'})
  gm.save_npy(P('g_a.npy'), a)
  gm.save_npy(P('g_b.npy'), b)
  gm.save_npy(P('g_c.npy'), c)
  gm.save(P('g.safetensors'), {a = a, b = b, c = c}, {metadata = {who = 'gmoe'}})
  local script = [==[
import json, struct, sys
import numpy as np
d = sys.argv[1]
a = np.arange(6, dtype=np.float32).reshape(2, 3) / np.float32(4)
b = np.arange(5, dtype=np.float64) / 3
c = np.array(-7, dtype=np.int32)
# numpy reads what gmoe wrote
for name, want in (('g_a', a), ('g_b', b), ('g_c', c)):
    got = np.load(d + '/' + name + '.npy')
    assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), name
raw = open(d + '/g.safetensors', 'rb').read()
(n,) = struct.unpack('<Q', raw[:8])
hdr = json.loads(raw[8:8 + n])
assert (8 + n) % 8 == 0 and hdr['__metadata__'] == {'who': 'gmoe'}
kinds = {'F32': '<f4', 'F64': '<f8', 'I32': '<i4'}
for name, want in (('a', a), ('b', b), ('c', c)):
    e = hdr[name]
    lo, hi = e['data_offsets']
    got = np.frombuffer(raw[8 + n + lo:8 + n + hi], dtype=kinds[e['dtype']]).reshape(e['shape'])
    assert np.array_equal(got, want), name
# numpy writes what gmoe reads
np.save(d + '/p_f4.npy', a)
np.save(d + '/p_fortran.npy', np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)))
np.save(d + '/p_i8.npy', np.array([[1, -2], [3, 2**31 - 1]], dtype=np.int64))
np.save(d + '/p_f2.npy', np.array([0.5, -1.25, 65504], dtype=np.float16))
np.save(d + '/p_be.npy', np.array([1.5, -2.0], dtype='>f8'))
np.save(d + '/p_scalar.npy', np.float32(3.25))
np.save(d + '/p_bool.npy', np.array([True, False]))
with open(d + '/p_v2.npy', 'wb') as f:
    np.lib.format.write_array(f, b, version=(2, 0))
with open(d + '/p_v3.npy', 'wb') as f:
    np.lib.format.write_array(f, b, version=(3, 0))
# a safetensors file by hand: F32, I64, BF16 (the top halves of f32 values) and metadata
bf = (np.array([1.0, -2.5, 3.0], dtype=np.float32).view(np.uint32) >> 16).astype('<u2')
tensors = [('x', 'F32', [2, 3], a.astype('<f4').tobytes()),
           ('idx', 'I64', [3], np.array([0, 5, -1], dtype='<i8').tobytes()),
           ('half', 'BF16', [3], bf.tobytes())]
header, data = {'__metadata__': {'from': 'numpy'}}, b''
for name, dt, shape, payload in tensors:
    header[name] = {'dtype': dt, 'shape': shape, 'data_offsets': [len(data), len(data) + len(payload)]}
    data += payload
h = json.dumps(header).encode()
h += b' ' * (-(8 + len(h)) % 8)
open(d + '/p.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + data)
]==]
  local f = io.open(P('check.py'), 'w')
  f:write(script)
  f:close()
  local ok = os.execute(python .. ' ' .. P('check.py') .. ' ' .. dir)
  tap.ok(ok, 'numpy reads gmoe files (.npy with np.load, safetensors with json + frombuffer)')
  if ok then
    local function vals(x) return x:reshape{-1}:to('f64'):totable() end
    local function same(x, want)
      local v = vals(x)
      if #v ~= #want then return false end
      for i = 1, #v do if v[i] ~= want[i] then return false end end
      return true
    end
    local r = {}
    r[#r + 1] = bits_equal(gm.load_npy(P('p_f4.npy')), a)
    local fo = gm.load_npy(P('p_fortran.npy'))
    r[#r + 1] = fo.dtype == 'f64' and same(fo, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
    local i8 = gm.load_npy(P('p_i8.npy'))
    r[#r + 1] = i8.dtype == 'i32' and same(i8, {1, -2, 3, 2147483647})
    r[#r + 1] = same(gm.load_npy(P('p_f2.npy')), {0.5, -1.25, 65504})
    r[#r + 1] = same(gm.load_npy(P('p_be.npy')), {1.5, -2})
    local sc = gm.load_npy(P('p_scalar.npy'))
    r[#r + 1] = sc:dim() == 0 and sc:item() == 3.25
    r[#r + 1] = bits_equal(gm.load_npy(P('p_v2.npy')), b) and bits_equal(gm.load_npy(P('p_v3.npy')), b)
    local t, meta = gm.load(P('p.safetensors'))
    r[#r + 1] = bits_equal(t.x, a) and t.idx.dtype == 'i32' and same(t.idx, {0, 5, -1}) and
                t.half.dtype == 'f32' and same(t.half, {1, -2.5, 3}) and meta.from == 'numpy'
    local all = true
    for i = 1, #r do
      if not r[i] then all = false; tap.diag('interop check ' .. i .. ' failed') end
    end
    tap.ok(all, 'gmoe reads numpy files: <f4, Fortran order, <i8, <f2, >f8, scalar, v2.0, v3.0, hand-made safetensors with I64 and BF16')
    tap.errors(function() gm.load_npy(P('p_bool.npy')) end, "dtype '|b1' is not supported", 'a bool array is refused clearly')
  else
    tap.skip('gmoe reads numpy files', 'the python side failed')
  end
end

-- ---- training checkpoints: resume is bitwise -----------------------------------------------
-- A 2-layer MLP with dropout drawn from its own generator and minibatches drawn from the default
-- generator, trained with AdamW: every piece of state matters for the next step.
local X = gm.randn({64, 6}, {generator = gm.Generator(11)})
local Y = (X:sum(1, true) * 0.3):tanh()

local function raw_model(seed)
  local g = gm.Generator(seed)
  return {
    fc1 = {weight = (gm.randn({6, 16}, {generator = g}) * 0.4):requires_grad_(),
           bias = gm.zeros{16}:requires_grad_()},
    fc2 = {weight = (gm.randn({16, 1}, {generator = g}) * 0.4):requires_grad_(),
           bias = gm.zeros{1}:requires_grad_()},
  }
end
local function raw_params(m) return {m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias} end
local function raw_forward(m, x, mask)
  return (((x:matmul(m.fc1.weight) + m.fc1.bias):tanh() * mask):matmul(m.fc2.weight) + m.fc2.bias)
end

local function train(m, params, forward, opt, drop, steps)
  for _ = 1, steps do
    local idx = gm.randint(0, 64, {16})
    local x, y = X:index_select(0, idx), Y:index_select(0, idx)
    local mask = gm.rand({16, 16}, {generator = drop}):lt(0.8) / 0.8
    local loss = (forward(m, x, mask) - y):pow(2):mean()
    opt:zero_grad()
    loss:backward()
    opt:step()
  end
end

local function resume_test(label, make, params_of, forward, target_of)
  local N = 5
  -- reference: 2N uninterrupted steps
  gm.manual_seed(99)
  local m = make(1)
  local opt = gm.optim.AdamW(params_of(m), {lr = 1e-2, weight_decay = 0.01})
  local drop = gm.Generator(5)
  train(m, params_of(m), forward, opt, drop, 2 * N)
  local want = params_of(m)
  -- N steps, save, load into fresh objects, N more
  gm.manual_seed(99)
  local m1 = make(1)
  local opt1 = gm.optim.AdamW(params_of(m1), {lr = 1e-2, weight_decay = 0.01})
  local drop1 = gm.Generator(5)
  train(m1, params_of(m1), forward, opt1, drop1, N)
  gm.checkpoint.save(P('ck_' .. label .. '.safetensors'),
    {model = target_of(m1), optimizer = opt1, generators = {dropout = drop1}, step = N,
     extra = {note = 'resume', losses = {0.5, 0.25}, best = 0.125}})
  gm.manual_seed(12345) -- scramble everything the checkpoint must restore
  local m2 = make(2)
  local opt2 = gm.optim.AdamW(params_of(m2), {lr = 0.5, weight_decay = 0})
  local drop2 = gm.Generator(77)
  local ck = gm.checkpoint.load(P('ck_' .. label .. '.safetensors'),
    {model = target_of(m2), optimizer = opt2, generators = {dropout = drop2}})
  tap.ok(ck.step == N and math.type(ck.step) == 'integer' and ck.extra.note == 'resume' and
         ck.extra.losses[2] == 0.25 and ck.extra.best == 0.125, label .. ': step and extra come back')
  tap.ok(opt2.lr == 1e-2 and opt2.weight_decay == 0.01, label .. ': optimiser hyper-parameters restored')
  train(m2, params_of(m2), forward, opt2, drop2, N)
  local got, ok = params_of(m2), true
  for i = 1, #want do ok = ok and bits_equal(got[i], want[i]) end
  tap.ok(ok, label .. ': N steps + checkpoint + N steps == 2N steps, bitwise')
end

resume_test('raw', raw_model, raw_params, raw_forward, function(m) return m end)

local has_nn = gm.nn and gm.nn.Linear and pcall(function() return gm.nn.Linear(2, 2):state_dict() end)
if has_nn then
  local function nn_model(seed)
    gm.manual_seed(seed)
    return {fc1 = gm.nn.Linear(6, 16), fc2 = gm.nn.Linear(16, 1),
            sd = function(self) return self end}
  end
  local function nn_params(m)
    local ps = {}
    for _, l in ipairs {m.fc1, m.fc2} do for _, p in ipairs(l:parameters()) do ps[#ps + 1] = p end end
    return ps
  end
  local function nn_forward(m, x, mask) return m.fc2(m.fc1(x):tanh() * mask) end
  -- a module target: one Sequential-like holder would do; use fc1 through load_state_dict and
  -- fc2 through a plain table of its parameters, covering both restore paths
  local function target(m)
    return {state_dict = function()
              local sd = {}
              for k, v in pairs(m.fc1:state_dict()) do sd['fc1.' .. k] = v end
              for k, v in pairs(m.fc2:state_dict()) do sd['fc2.' .. k] = v end
              return sd
            end,
            load_state_dict = function(_, sd)
              local a, b = {}, {}
              for k, v in pairs(sd) do
                if k:sub(1, 4) == 'fc1.' then a[k:sub(5)] = v else b[k:sub(5)] = v end
              end
              m.fc1:load_state_dict(a)
              m.fc2:load_state_dict(b)
            end}
  end
  resume_test('gm.nn', nn_model, nn_params, nn_forward, target)
else
  tap.skip('gm.nn: resume is bitwise', 'gm.nn.Linear is not available')
end

-- ---- checkpoint errors ---------------------------------------------------------------------
do
  local m = raw_model(1)
  gm.checkpoint.save(P('ck.safetensors'), {model = m, step = 1})
  tap.errors(function() gm.checkpoint.load(P('a.safetensors'), {model = m}) end, 'not a gmoe checkpoint',
             'a plain safetensors file is not a checkpoint')
  tap.errors(function() gm.checkpoint.load(P('ck.safetensors'), {model = {fc1 = m.fc1}}) end,
             "has 'model%.fc2%.[a-z]+', which the model lacks", 'an unexpected tensor is refused')
  tap.errors(function() gm.checkpoint.load(P('ck.safetensors'), {model = {fc1 = m.fc1, fc2 = m.fc2, x = gm.ones{1}}}) end,
             "has no tensor 'model%.x'", 'a missing tensor is refused')
  local small = raw_model(1)
  small.fc1.bias = gm.zeros{3}
  tap.errors(function() gm.checkpoint.load(P('ck.safetensors'), {model = small}) end,
             "'model%.fc1%.bias' is %[16%]", 'a shape mismatch is refused')
  tap.errors(function() gm.checkpoint.load(P('ck.safetensors'), {optimizer = gm.optim.SGD(raw_params(m), {lr = 0.1})}) end,
             'holds no optimiser state', 'an absent optimiser state is reported')
  tap.errors(function() gm.checkpoint.load(P('ck.safetensors'), {generators = {g = gm.Generator(1)}}) end,
             "holds no generator 'g'", 'an absent generator is reported')
  tap.errors(function() gm.checkpoint.save(P('ck2.safetensors'), {modle = m}) end, "unknown field 'modle'",
             'a misspelt field is refused')
  tap.errors(function() gm.checkpoint.save(P('ck2.safetensors'), {extra = {x = math.huge}}) end,
             'extra%.x is inf', 'non-finite numbers in extra are refused')
  local ck = gm.checkpoint.load(P('ck.safetensors'))
  tap.ok(ck.model['fc1.weight'] and ck.step == 1, 'checkpoint.load without targets returns the contents')
end

-- ---- documentation -------------------------------------------------------------------------
do
  local doc = require 'gmoe.doc'
  local missing = {}
  for _, name in ipairs {'gm.save', 'gm.load', 'gm.save_npy', 'gm.load_npy', 'gm.checkpoint.save', 'gm.checkpoint.load'} do
    if not doc.get(name) then missing[#missing + 1] = name end
  end
  tap.ok(#missing == 0, 'every public function has a doc entry', table.concat(missing, ', '))
end

os.execute('rm -rf ' .. dir)
tap.done()
