-- gmoe.docs_core: documentation of the public functions that are defined where doc.add is not
-- at hand: the C constructors and utilities of lua/lgmoe.c, the Lua helpers of
-- lua/gmoe/init.lua, tensor methods that are not ops, and gm.optim (lua/gmoe/optim.lua).
-- Loaded by gmoe.doc the first time an entry is looked up. Ops need no entry (gm.ops()).
local doc = require 'gmoe.doc'

local function C(name, sig, text) doc.add(name, sig, text, {where = 'lua/lgmoe.c'}) end
local function I(name, sig, text) doc.add(name, sig, text, {where = 'lua/gmoe/init.lua'}) end
local function O(name, sig, text) doc.add(name, sig, text, {where = 'lua/gmoe/optim.lua'}) end

local OPTS = 'Options {dtype="f32"|"f64"|"i32", requires_grad=false, generator=g}.'

-- ---- constructors (lua/lgmoe.c) -------------------------------------------------------------
C('gm.tensor', 'gm.tensor(values, {dtype=, requires_grad=}) -> tensor',
  'A tensor from a number (0-dim) or a nested Lua array of numbers (rows of equal length). '
  .. 'dtype defaults to f32.')
C('gm.zeros', 'gm.zeros(shape | d0, d1, ..., opts) -> tensor',
  'A tensor of zeros. The shape is a Lua array ({2, 3}) or integers (2, 3). ' .. OPTS)
C('gm.ones', 'gm.ones(shape | d0, d1, ..., opts) -> tensor', 'A tensor of ones. ' .. OPTS)
C('gm.full', 'gm.full(shape, value, opts) -> tensor', 'A tensor filled with value. ' .. OPTS)
C('gm.empty', 'gm.empty(shape | d0, d1, ..., opts) -> tensor',
  'A tensor whose values are not initialised (fast; fill it before reading). ' .. OPTS)
C('gm.rand', 'gm.rand(shape, opts) -> tensor',
  'Uniform samples in [0, 1) from the Philox generator (the default one, or opts.generator). '
  .. OPTS)
C('gm.randn', 'gm.randn(shape, opts) -> tensor',
  'Standard normal samples from the Philox generator (the default one, or opts.generator). '
  .. OPTS)
C('gm.randint', 'gm.randint(lo, hi, shape, opts) -> i32 tensor',
  'Uniform integers in [lo, hi) (i32 by default).')
C('gm.randperm', 'gm.randperm(n, opts) -> i32 tensor', 'A random permutation of 0 .. n-1.')
C('gm.arange', 'gm.arange(start?, stop, step?, opts) -> tensor',
  'Values start, start+step, ... below stop (as Python range). i32 when the bounds are '
  .. 'integers, else f32; opts.dtype overrides.')
C('gm.linspace', 'gm.linspace(start, stop, n, opts) -> tensor',
  'n evenly spaced values from start to stop inclusive.')
C('gm.eye', 'gm.eye(n, m?, opts) -> tensor', 'The n x m (default n x n) identity matrix.')

-- ---- RNG, autograd, threads, misc (lua/lgmoe.c) -----------------------------------------------
C('gm.Generator', 'gm.Generator(seed) -> generator',
  'A Philox 4x32-10 generator of its own, for opts.generator of the random constructors. '
  .. 'g:manual_seed(s), g:get_state() -> {seed, offset}, g:set_state(state).')
C('gm.manual_seed', 'gm.manual_seed(seed)',
  'Seeds the default generator (offset 0). The same seed gives the same numbers whatever '
  .. 'the thread count.')
C('gm.get_rng_state', 'gm.get_rng_state() -> {seed, offset}',
  'The state of the default generator, for gm.set_rng_state.')
C('gm.set_rng_state', 'gm.set_rng_state(state)', 'Restores a state from gm.get_rng_state.')
C('gm.is_tensor', 'gm.is_tensor(v) -> boolean', 'True when v is a gmoe tensor.')
C('gm.is_grad_enabled', 'gm.is_grad_enabled() -> boolean',
  'Whether ops are recorded for autograd here (false inside gm.no_grad).')
C('gm.set_num_threads', 'gm.set_num_threads(n)',
  'Threads used by the CPU kernels (an integer in 1 .. 1024; anything else is an error); matrix products are cut into one single-threaded BLAS call per thread. '
  .. 'Results do not depend on it for a seed, except BLAS products (matmul, linear, conv2d, large expert '
  .. 'products), which agree across thread counts to rounding and are bitwise reproducible for a given count.')
C('gm.get_num_threads', 'gm.get_num_threads() -> n', 'Threads used by the CPU kernels.')
C('gm.live_bytes', 'gm.live_bytes() -> bytes', 'Bytes of tensor storage alive now.')
C('gm.blas_info', 'gm.blas_info() -> string', 'The BLAS library, its core type (kernel set) and why that core runs: set by OPENBLAS_CORETYPE, OpenBLAS\'s own choice, or chosen by gmoe at start-up after a product check (README, BLAS core).')
C('gm.ops', 'gm.ops() -> array of {name, sig, doc, n_in, n_out, nodiff, view, ...}',
  'The op table: every op of core/ops.def with its signature and documentation (what ?name '
  .. 'shows for ops).')
C('gm.clock', 'gm.clock() -> seconds', 'Wall time from a monotonic clock, for timing.')

-- ---- lua/gmoe/init.lua -------------------------------------------------------------------------
I('gm.profile', 'gm.profile(fn, ...) -> report, fn(...)',
  'Runs fn with the kernel profiler on. The report lists every kernel that ran (report[i] = '
  .. '{kernel, calls, seconds, share}, slowest first) with report.total (seconds in kernels) and '
  .. 'report.wall; print(report) shows a table. Time outside kernels is Lua, dispatch and autograd '
  .. 'bookkeeping. Like torch.profiler, but per kernel rather than per op.')
I('gm.no_grad', 'gm.no_grad(fn, ...) -> fn(...)',
  'Calls fn with autograd recording off and returns its results; restored even on error.')
I('gm.enable_grad', 'gm.enable_grad(fn, ...) -> fn(...)',
  'Calls fn with autograd recording on (inside a gm.no_grad region).')
I('gm.split', 'gm.split(x, size, dim=0) -> array of views',
  'Views of x of `size` along dim; the last may be smaller.')
I('gm.chunk', 'gm.chunk(x, n, dim=0) -> array of views',
  'At most n views of equal size along dim; the last may be smaller.')
I('gm.zeros_like', 'gm.zeros_like(x, opts) -> tensor', 'Zeros with the shape and dtype of x.')
I('gm.ones_like', 'gm.ones_like(x, opts) -> tensor', 'Ones with the shape and dtype of x.')
I('gm.rand_like', 'gm.rand_like(x, opts) -> tensor', 'gm.rand with the shape and dtype of x.')
I('gm.randn_like', 'gm.randn_like(x, opts) -> tensor', 'gm.randn with the shape and dtype of x.')
I('gm.full_like', 'gm.full_like(x, value, opts) -> tensor',
  'A tensor of value with the shape and dtype of x.')
I('gm.gradcheck', 'gm.gradcheck(f, inputs, {eps=1e-6, seed=7}) -> max_err, worst',
  'Compares the gradients autograd gives for the float inputs of f with central finite '
  .. 'differences in f64. f gets f64 copies of the inputs; its float outputs are projected on '
  .. 'fixed random weights to a scalar. Error per element |analytic - numeric| / max(1, '
  .. '|numeric|); worst = {input, index, analytic, numeric}.')
I('gm.show', 'gm.show(...)',
  'Prints values the way the REPL does (tensors with a header line of dtype, shape, device, '
  .. 'statistics and NaN/Inf counts; tables nested with a depth cap; objects through '
  .. 'tostring). The REPL looks gm.show up for every result: replace it to change printing. '
  .. "Options: require('gmoe.show').opts (precision, threshold, edgeitems, linewidth, depth, "
  .. 'items, stats, color).')

-- ---- tensor methods that are not ops ----------------------------------------------------------
local TM = {
  {'dim', 'x:dim() -> n', 'Number of dims.'},
  {'numel', 'x:numel() -> n', 'Number of elements.'},
  {'size', 'x:size(d?) -> n | shape', 'The size of dim d (0-based, negative from the end), or '
    .. 'the shape as a Lua array.'},
  {'stride', 'x:stride(d?) -> n | strides', 'The stride (in elements) of dim d, or all.'},
  {'is_contiguous', 'x:is_contiguous() -> boolean', 'Whether x is laid out row-major densely.'},
  {'item', 'x:item() -> number', 'The value of a one-element tensor.'},
  {'totable', 'x:totable() -> nested Lua arrays', 'The values as Lua arrays (1-based).'},
  {'backward', 'x:backward(grad?, {retain_graph=false})', 'Backpropagates from x (a scalar, or '
    .. 'give grad) and accumulates into the .grad of the leaves that require grad.'},
  {'requires_grad_', 'x:requires_grad_(flag=true) -> x', 'Marks a leaf for autograd.'},
  {'detach', 'x:detach() -> tensor', 'The same values, cut from the graph (shares storage).'},
  {'fill_', 'x:fill_(v) -> x', 'Sets every element to v, in place.'},
  {'zero_', 'x:zero_() -> x', 'Sets every element to 0, in place.'},
  {'copy_', 'x:copy_(src) -> x', 'Copies src (broadcast to x\'s shape) into x, in place.'},
  {'data_ptr', 'x:data_ptr() -> integer', 'The address of the first element (for debugging).'},
  {'to', 'x:to(dtype | "cpu") -> tensor', 'A copy converted to "f32", "f64" or "i32"; "cpu" '
    .. 'returns x.'},
  {'float', 'x:float() -> tensor', 'x:to("f32").'},
  {'double', 'x:double() -> tensor', 'x:to("f64").'},
  {'int', 'x:int() -> tensor', 'x:to("i32").'},
  {'cpu', 'x:cpu() -> x', 'x itself (every tensor is on the CPU in this build).'},
  {'type', 'x:type() -> dtype', 'The dtype name, as x.dtype.'},
  {'t', 'x:t() -> tensor', 'The transpose of a 1-D or 2-D tensor (a view).'},
  {'split', 'x:split(size, dim=0) -> array of views', 'As gm.split.'},
  {'chunk', 'x:chunk(n, dim=0) -> array of views', 'As gm.chunk.'},
}
for _, m in ipairs(TM) do
  local where = ({to = 1, float = 1, double = 1, int = 1, cpu = 1, type = 1, t = 1, split = 1,
                  chunk = 1})[m[1]] and 'lua/gmoe/init.lua' or 'lua/lgmoe.c'
  doc.add('gm.Tensor.' .. m[1], m[2], m[3], {where = where})
end

-- ---- gm.optim (lua/gmoe/optim.lua) ---------------------------------------------------------------
local OPT_METHODS = 'Methods: opt:zero_grad(), opt:step(closure?), opt:state_dict(), '
  .. 'opt:load_state_dict(sd); opt.lr may be changed at any time. The update runs in C.'
O('gm.optim.SGD', 'gm.optim.SGD(params, {lr, momentum=0, dampening=0, nesterov=false, '
  .. 'weight_decay=0})',
  'Stochastic gradient descent as torch.optim.SGD: g += wd*p; buf = momentum*buf + '
  .. '(1-dampening)*g; g = nesterov and g + momentum*buf or buf; p -= lr*g. ' .. OPT_METHODS)
O('gm.optim.Adam', 'gm.optim.Adam(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, '
  .. 'weight_decay=0})',
  'Adam (Kingma & Ba 2015) with L2 weight decay folded into the gradient, as torch.optim.Adam. '
  .. OPT_METHODS)
O('gm.optim.AdamW', 'gm.optim.AdamW(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, '
  .. 'weight_decay=1e-2})',
  'Adam with decoupled weight decay (Loshchilov & Hutter 2019): p *= 1 - lr*wd before the '
  .. 'Adam update, as torch.optim.AdamW. ' .. OPT_METHODS)
O('gm.optim.clip_grad_norm', 'gm.optim.clip_grad_norm(params, max_norm) -> norm',
  'Scales every gradient by max_norm / (norm + 1e-6) when their global L2 norm exceeds '
  .. 'max_norm (torch.nn.utils.clip_grad_norm_); returns the norm before clipping.')
O('gm.optim.LRScheduler', 'gm.optim.LRScheduler(opt, schedule) -> scheduler',
  'Sets opt.lr = base_lr * schedule factor at each sched:step(); sched:get_lr(), '
  .. 'sched:state_dict(), sched:load_state_dict(sd).')
O('gm.optim.schedule.constant', 'gm.optim.schedule.constant()', 'Factor 1 at every step.')
O('gm.optim.schedule.linear_warmup', 'gm.optim.schedule.linear_warmup(warmup_steps)',
  'Factor (step+1)/warmup_steps during the warmup, then 1.')
O('gm.optim.schedule.cosine', 'gm.optim.schedule.cosine(total_steps, {warmup=0, min_lr=0})',
  'Linear warmup, then half a cosine from the base rate down to min_lr (absolute) at '
  .. 'total_steps, constant after (Loshchilov & Hutter 2017, SGDR without restarts).')

-- ---- gmoe.doc itself -------------------------------------------------------------------------
doc.add('gm.doc.add', 'gm.doc.add(name, signature, text, {formula=, paper=, where=})',
  'Registers the documentation of `name` (a dotted path such as "gm.nn.Linear") for ?name. '
  .. 'Every public function, class and layer calls it where it is defined.')
doc.add('gm.doc.get', 'gm.doc.get(name) -> entry | nil',
  'The entry of name: {name, sig, text, where, formula?, paper?}.')
doc.add('gm.doc.names', 'gm.doc.names() -> array', 'Every documented name, sorted.')

return true
