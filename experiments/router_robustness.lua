-- router_robustness.lua: Reproduction 3 (papers.md §6, AdvMoE, Zhang et al. ICCV 2023): router
-- robustness of MoE-CNNs under adversarial training, at the §6.4 CPU scale. Arms, each trained
-- from the same initialisation per seed:
--   dense_at           gm.nn.DenseCNN (ratio 0.5), PGD adversarial training (Madry: CE on PGD-k inputs;
--                      at_loss=trades gives the released dense baseline, train_ori.py, instead);
--   moe_joint_at       gm.nn.MoECNN (ratio 0.5, 2 experts, one image-level router shared by all layers),
--                      router and experts in one optimiser, the same PGD-AT;
--   advmoe             the released AdvMoE step (train_moe.py): per batch, (1) an expert step: x_adv from
--                      x + 0.001 N(0, 1) by k signed steps on KL(f(x) || f(x_adv)) + KL(r(x) || r(x_adv))
--                      (sums), then CE(f(x), y) + beta/B KL(f(x) || f(x_adv)) with the backbone optimiser;
--                      (2) a router step: x_adv regenerated the same way, then
--                      alpha CE(r(x), y mod E) + beta/B KL(r(x) || r(x_adv)) with the router optimiser;
--   moe_router_frozen  the ablation of AdvMoE's router step: the MoE-CNN pre-trained on clean data for
--                      pretrain_epochs (curve epochs <= 0; CE(f(x), y) + alpha CE(r(x), y mod E), one
--                      optimiser), then the router frozen and only AdvMoE's expert step run for `epochs`.
-- Metrics per arm and seed (results.tsv): SA (clean accuracy), RA (PGD-test_steps, step test_step,
-- eps, uniform random start, CE of the model's output; for MoE models the per-image worst case of
-- two attacks: the gradient through the straight-through router as in the released model, and
-- the routing held hard so no gradient passes through it: the straight-through term is not the
-- network's gradient and can steer PGD off, which made RA > SA for a collapsed router), router_attack_acc / router_acc (PGD of the same
-- budget on the router alone, against router_target: "clean" = the router's own clean choice, so
-- router_acc = the share still routed as on x; "label" = y mod E as the released adv_val_router),
-- flip_rate (share of test inputs whose expert changes between x and its RA adversarial input),
-- active_macs_frac (active MACs per image, router included, over the full-width dense network's).
-- curves.tsv: per epoch the mean training loss, SA on the test set, RA on its first n_curve images,
-- and the share of test images routed to each expert. Data: gm.data.shapes (3x32x32, 10 classes)
-- by default, or data=cifar10 / data=mnist with data_dir= (files the user has; `dir` is the runner's).
-- The models have batch norm (as released): training attacks run in eval mode (running statistics;
-- as the released TRADES attacks, and for PGD-AT too so every arm's attack sees the same network),
-- evaluation in eval mode. Every (arm, seed) is one run:unit, so an interrupted run resumes.
--   gmoe run experiments/router_robustness.lua [--quick] [arms=advmoe+dense_at seeds=3 epochs=15 ...]
local gm = require 'gmoe'

local ARMS = {dense_at = true, moe_joint_at = true, advmoe = true, moe_router_frozen = true}
local ORDER = {'dense_at', 'moe_joint_at', 'advmoe', 'moe_router_frozen'}

local split = gm.experiment.list

-- The released routing target y mod E (i32 division truncates; labels are >= 0).
local function parity(y, E) return y - (y / E) * E end

-- ---- data -----------------------------------------------------------------------------------------
local function missing(dir, names)
  local out = {}
  for _, n in ipairs(names) do
    local f = io.open(dir .. '/' .. n, 'rb')
    if f then f:close() else out[#out + 1] = dir .. '/' .. n end
  end
  return out
end

local function load_data(cfg, run)
  local Xtr, Ytr, Xte, Yte
  if cfg.data == 'shapes' then
    local X, Y = gm.data.shapes {n = cfg.n_train + cfg.n_test, channels = 3, size = 32, generator = run:generator('data')}
    Xtr, Ytr = X:narrow(0, 0, cfg.n_train), Y:narrow(0, 0, cfg.n_train)
    Xte, Yte = X:narrow(0, cfg.n_train, cfg.n_test), Y:narrow(0, cfg.n_train, cfg.n_test)
  else
    if cfg.data_dir == '' then error(('data=%s needs data_dir=<folder with the files>'):format(cfg.data), 0) end
    local need = cfg.data == 'cifar10'
      and {'data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin', 'test_batch.bin'}
      or {'train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'}
    local miss = missing(cfg.data_dir, need)
    if cfg.data == 'mnist' and #miss > 0 then -- the readers also take the dotted names
      local dotted = {}
      for i, n in ipairs(need) do dotted[i] = n:gsub('%-idx', '.idx') end
      if #missing(cfg.data_dir, dotted) == 0 then miss = {} end
    end
    if #miss > 0 then error(('data=%s: missing files: %s'):format(cfg.data, table.concat(miss, ', ')), 0) end
    local load = cfg.data == 'cifar10' and gm.data.load_cifar10 or gm.data.load_mnist
    Xtr, Ytr = load(cfg.data_dir, {split = 'train'})
    Xte, Yte = load(cfg.data_dir, {split = 'test'})
    if Xtr.shape[1] < cfg.n_train or Xte.shape[1] < cfg.n_test then
      error(('data=%s has %d train / %d test images, fewer than n_train=%d / n_test=%d'):format(
        cfg.data, Xtr.shape[1], Xte.shape[1], cfg.n_train, cfg.n_test), 0)
    end
    Xtr, Ytr = Xtr:narrow(0, 0, cfg.n_train), Ytr:narrow(0, 0, cfg.n_train)
    Xte, Yte = Xte:narrow(0, 0, cfg.n_test), Yte:narrow(0, 0, cfg.n_test)
  end
  return {Xtr = Xtr:contiguous(), Ytr = Ytr:contiguous(), Xte = Xte:contiguous(), Yte = Yte:contiguous(),
          C = Xtr.shape[2], H = Xtr.shape[3], W = Xtr.shape[4]}
end

-- ---- evaluation -----------------------------------------------------------------------------------
local EVAL_BATCH = 250

local function correct(logits, y) return logits:argmax(-1):eq(y):sum():item() end

-- Accuracies on the first n test images; with attacks, also RA, the flip rate and the
-- router-only attack (MoE models).
local function evaluate(model, d, cfg, n, gen, full)
  local moe = gm.nn.MoECNN:is_instance(model)
  model:eval()
  local r = {sa = 0, ra = 0, flips = 0, ratk = 0, racc = 0, n = n}
  local atk = {eps = cfg.eps, step = cfg.test_step, steps = cfg.test_steps, random_start = true, generator = gen,
               mode = 'eval'}
  for s = 0, n - 1, EVAL_BATCH do
    local m = math.min(EVAL_BATCH, n - s)
    local x, y = d.Xte:narrow(0, s, m), d.Yte:narrow(0, s, m)
    r.sa = r.sa + gm.no_grad(function() return correct(model(x), y) end)
    if cfg.test_steps > 0 then
      local xa = gm.attack.pgd(model, x, y, atk)
      local ok = gm.no_grad(function() return model(xa):argmax(-1):eq(y) end)
      if moe and cfg.ra_hard then -- the worst case of the two attacks, per image
        local hard = function(z) return model(z, {hard = true}) end
        local xh = gm.attack.pgd(hard, x, y, {eps = atk.eps, step = atk.step, steps = atk.steps, random_start = true,
                                             generator = gen, mode = 'eval', modules = {model}})
        ok = ok * gm.no_grad(function() return model(xh):argmax(-1):eq(y) end)
      end
      r.ra = r.ra + ok:sum():item()
      if moe then
        local ids = model:routing(x)
        r.flips = r.flips + gm.nn.flip_rate(ids, model:routing(xa)) * m
        if full and model.router then -- per-layer gates have no separate router to attack
          -- how often the clean routing matches the released target y mod E, and SA on each side
          local hit = ids:eq(parity(y, cfg.experts))
          local ok_clean = gm.no_grad(function() return model(x):argmax(-1):eq(y) end)
          r.phit = (r.phit or 0) + hit:sum():item()
          r.sa_hit = (r.sa_hit or 0) + (ok_clean * hit):sum():item()
          local target = cfg.router_target == 'label' and parity(y, cfg.experts) or ids
          local xr = gm.attack.pgd(model.router, x, target, atk)
          r.ratk = r.ratk + gm.no_grad(function() return correct(model(xr), y) end)
          r.racc = r.racc + model:routing(xr):eq(target):sum():item()
        end
      end
    end
  end
  model:train()
  local out = {SA = r.sa / n, RA = r.ra / n, flip_rate = 0 / 0, router_attack_acc = 0 / 0, router_acc = 0 / 0}
  if moe then
    out.flip_rate = r.flips / n
    if full and model.router then
      out.router_attack_acc, out.router_acc = r.ratk / n, r.racc / n
      -- diagnostics (log and metrics): routing vs y mod E on clean images, SA when it matches / not
      out.parity_routed = r.phit / n
      out.sa_parity_routed = r.sa_hit / math.max(1, r.phit)
      out.sa_other_routed = (r.sa - r.sa_hit) / math.max(1, n - r.phit)
    end
  end
  return out
end

local function usage(model, d, cfg)
  if not gm.nn.MoECNN:is_instance(model) then return nil end
  local ids = {}
  model:eval()
  for s = 0, cfg.n_test - 1, EVAL_BATCH do
    ids[#ids + 1] = model:routing(d.Xte:narrow(0, s, math.min(EVAL_BATCH, cfg.n_test - s)))
  end
  model:train()
  return gm.nn.expert_usage(gm.cat(ids, 0), cfg.experts)
end

-- ---- training -------------------------------------------------------------------------------------
local function sgd(params, lr, cfg, steps)
  local opt = gm.optim.SGD(params, {lr = lr, momentum = cfg.momentum, weight_decay = cfg.wd})
  return opt, gm.optim.LRScheduler(opt, gm.optim.schedule.cosine(steps))
end

local function set_trainable(params, on)
  for _, p in ipairs(params) do p:requires_grad_(on) end
end

local function backbone_params(model)
  local out = {}
  for _, e in ipairs(model:named_parameters()) do
    if not e[1]:match('^router%.') then out[#out + 1] = e[2] end
  end
  return out
end

local function kl_sum(logits, target_logits)
  return gm.kl_div(logits:log_softmax(-1), target_logits:log_softmax(-1), 'sum')
end

-- The AdvMoE attack of train_moe.py: from x + init_std N(0, 1), signed steps on the summed KL of
-- the model's and the router's outputs to their clean values.
local function advmoe_attack(model, x, cfg, gen)
  model:eval()
  local out_nat, scores_nat = gm.no_grad(function() return model(x) end)
  model:train()
  return gm.attack.pgd(model, x, nil, {
    eps = cfg.eps, step = cfg.train_step, steps = cfg.train_steps, random_start = 'normal', init_std = 0.001,
    generator = gen, mode = 'eval',
    loss = function(out, _, scores) return kl_sum(out, out_nat) + kl_sum(scores, scores_nat) end})
end

-- One epoch; returns the mean training loss.
local function epoch_of(arm, st, loader, cfg, gen)
  local model, total, nb = st.model, 0, 0
  local pgd = {eps = cfg.eps, step = cfg.train_step, steps = cfg.train_steps, random_start = true, generator = gen,
               mode = 'eval'}
  for _, x, y in loader:iter() do
    local loss
    if st.clean then -- clean pre-training: both AdvMoE objectives without their adversarial terms
      st.opt:zero_grad()
      local logits, scores = model(x)
      loss = gm.cross_entropy(logits, y)
      ;(loss + gm.cross_entropy(scores, parity(y, cfg.experts)) * cfg.alpha):backward()
      st.opt:step(); st.sched:step()
    elseif arm == 'moe_router_frozen' then -- AdvMoE's expert step; the router stays as pre-trained
      local xa = advmoe_attack(model, x, cfg, gen)
      st.opt:zero_grad()
      loss = gm.trades_loss(model(x), model(xa), y, {beta = cfg.beta})
      loss:backward()
      st.opt:step(); st.sched:step()
    elseif arm == 'advmoe' then
      -- (1) expert step: the router's parameters are out of the graph (the released code zeroes
      -- their gradient before the router step, so this changes nothing but the work).
      set_trainable(st.router_params, false)
      local xa = advmoe_attack(model, x, cfg, gen)
      st.opt:zero_grad()
      loss = gm.trades_loss(model(x), model(xa), y, {beta = cfg.beta})
      loss:backward()
      st.opt:step(); st.sched:step()
      set_trainable(st.router_params, true)
      -- (2) router step on a regenerated x_adv
      set_trainable(st.model_params, false)
      xa = advmoe_attack(model, x, cfg, gen)
      st.ropt:zero_grad()
      local scores, scores_adv = model.router(x), model.router(xa)
      local rloss = gm.cross_entropy(scores, parity(y, cfg.experts)) * cfg.alpha +
                    gm.kl_div(scores_adv:log_softmax(-1), scores:log_softmax(-1)) * cfg.beta
      rloss:backward()
      st.ropt:step(); st.rsched:step()
      set_trainable(st.model_params, true)
    elseif cfg.at_loss == 'trades' then -- the released dense baseline (train_ori.py), also for the joint MoE
      local out_nat = gm.no_grad(function() return (model:eval()(x)) end)
      model:train()
      local xa = gm.attack.pgd(model, x, nil, {
        eps = cfg.eps, step = cfg.train_step, steps = cfg.train_steps, random_start = 'normal', init_std = 0.001,
        generator = gen, mode = 'eval', loss = function(out) return kl_sum(out, out_nat) end})
      st.opt:zero_grad()
      loss = gm.trades_loss(model(x), model(xa), y, {beta = cfg.beta})
      loss:backward()
      st.opt:step(); st.sched:step()
    else
      local xa = gm.attack.pgd(model, x, y, pgd)
      st.opt:zero_grad()
      loss = gm.cross_entropy(model(xa), y)
      loss:backward()
      st.opt:step(); st.sched:step()
    end
    total, nb = total + loss:item(), nb + 1
  end
  return total / math.max(1, nb)
end

local function build(arm, d, cfg, gen)
  local common = {in_channels = d.C, classes = 10, ratio = cfg.ratio, generator = gen}
  if arm == 'dense_at' then return gm.nn.DenseCNN(common) end
  common.experts, common.router = cfg.experts, cfg.router
  return gm.nn.MoECNN(common)
end

return gm.experiment {
  name = 'router_robustness',
  description = 'AdvMoE reproduction: SA/RA, router-only attacks and routing flip rate of MoE-CNNs under ' ..
                'dense PGD-AT, joint MoE PGD-AT, AdvMoE and a frozen-router ablation',
  config = {seed = 1, seeds = 3, arms = 'dense_at+moe_joint_at+advmoe+moe_router_frozen', data = 'shapes',
            data_dir = '', n_train = 6000, n_test = 1000, n_curve = 300, epochs = 10, pretrain_epochs = 3,
            batch = 128, lr = 0.05, router_lr = 0.05, momentum = 0.9, wd = 5e-4, eps = 8 / 255,
            train_step = 5 / 255, train_steps = 2, test_step = 2 / 255, test_steps = 10, beta = 6.0, alpha = 6.0,
            ratio = 0.5, experts = 2, router = 'shared', router_target = 'clean', at_loss = 'pgd', ra_hard = true},
  quick = {seeds = 2, n_train = 512, n_test = 250, n_curve = 250, epochs = 2, pretrain_epochs = 1},
  choices = {data = {'shapes', 'cifar10', 'mnist'}, router = {'shared', 'per_layer'},
             router_target = {'clean', 'label'}, at_loss = {'pgd', 'trades'}},
  doc = {arms = "'+'-separated subset of dense_at, moe_joint_at, advmoe, moe_router_frozen",
         seeds = 'seeds seed .. seed+seeds-1, each a run:unit per arm',
         data_dir = 'folder of the CIFAR-10 binary or MNIST IDX files for data=cifar10|mnist',
         n_curve = 'test images attacked for the per-epoch RA of curves.tsv',
         pretrain_epochs = 'clean epochs (both AdvMoE objectives) before the router is frozen (moe_router_frozen)',
         router_target = 'router-only attack target: the clean routing (clean) or y mod E (label, released)',
         router = 'shared (one image-level router, the released code) or per_layer (the appendix figure)',
         ra_hard = 'MoE RA is the per-image worst case of PGD through the straight-through router (as released) and ' ..
                   'PGD with the routing held hard (no gradient through it); false: the first only',
         at_loss = 'objective of dense_at and moe_joint_at: pgd (Madry PGD-AT, the issue) or trades (the ' ..
                   'released dense baseline train_ori.py)'},
  check = function(cfg)
    for _, a in ipairs(split(cfg.arms)) do assert(ARMS[a], 'unknown arm ' .. a) end
    assert(cfg.seeds >= 1 and cfg.epochs >= 1 and cfg.n_train >= cfg.batch and cfg.n_test >= 1, 'bad sizes')
    assert(cfg.n_curve <= cfg.n_test, 'n_curve must be <= n_test')
    assert(cfg.experts >= 2, 'experts must be >= 2')
    for _, a in ipairs(split(cfg.arms)) do
      assert(cfg.router == 'shared' or a == 'dense_at' or a == 'moe_joint_at',
             'router=per_layer works with dense_at and moe_joint_at only (AdvMoE trains one image-level router)')
    end
  end,
  run = function(cfg, run)
    local arms = {}
    for _, a in ipairs(ORDER) do
      for _, b in ipairs(split(cfg.arms)) do if a == b then arms[#arms + 1] = a end end
    end
    local d = load_data(cfg, run)
    run:log('data %s: train %d, test %d, %dx%dx%d', cfg.data, cfg.n_train, cfg.n_test, d.C, d.H, d.W)
    local results = run:tsv('results', {'arm', 'seed', 'data', 'SA', 'RA', 'router_attack_acc', 'router_acc',
                                        'flip_rate', 'active_macs_frac'})
    local ucols = {}
    for e = 0, cfg.experts - 1 do ucols[#ucols + 1] = 'usage_' .. e end
    local curves = run:tsv('curves', {'arm', 'seed', 'epoch', 'loss', 'SA', 'RA', table.unpack(ucols)})
    local total, done = #arms * cfg.seeds, 0
    local by_arm = {}
    for _, arm in ipairs(arms) do by_arm[arm] = {} end
    -- Seed-major: every arm of seed 1 first, so a partial run already compares all arms.
    for s = cfg.seed, cfg.seed + cfg.seeds - 1 do
      for _, arm in ipairs(arms) do
        local res = run:unit(('%s/%d'):format(arm, s), function()
          local t0 = gm.clock()
          local model = build(arm, d, cfg, run:generator('init/' .. (arm == 'dense_at' and 'dense/' or 'moe/') .. s))
          local gen = run:generator(('attack/%s/%d'):format(arm, s))
          local egen = run:generator(('eval/%s/%d'):format(arm, s))
          local loader = gm.data.DataLoader({d.Xtr, d.Ytr}, {batch_size = cfg.batch, shuffle = true, drop_last = true,
                                                           generator = run:generator('shuffle/' .. s)})
          local steps = #loader * cfg.epochs
          local st = {model = model}
          local function curve(epoch, loss)
            local ev = evaluate(model, d, {eps = cfg.eps, test_step = cfg.test_step, test_steps = cfg.test_steps,
                                           experts = cfg.experts, ra_hard = cfg.ra_hard}, cfg.n_curve, egen, false)
            local sa = cfg.n_curve < cfg.n_test and evaluate(model, d, {test_steps = 0}, cfg.n_test, egen).SA or ev.SA
            local u = usage(model, d, cfg) or {}
            local row = {arm = arm, seed = s, epoch = epoch, loss = loss, SA = sa, RA = ev.RA}
            for e = 0, cfg.experts - 1 do row['usage_' .. e] = u[e + 1] end
            curves:row(row)
            run:log('%s seed %d epoch %d: loss %.4f SA %.3f RA %.3f%s', arm, s, epoch, loss, sa, ev.RA,
                    u[1] and (' usage ' .. table.concat(u, '/', 1, #u):gsub('(%d%.%d%d%d)%d*', '%1')) or '')
          end
          if arm == 'moe_router_frozen' and cfg.pretrain_epochs > 0 then
            st.clean = true
            st.opt, st.sched = sgd(model:parameters(), cfg.lr, cfg, #loader * cfg.pretrain_epochs)
            for e = 1, cfg.pretrain_epochs do curve(e - cfg.pretrain_epochs, epoch_of(arm, st, loader, cfg, gen)) end
            st.clean = nil
          end
          if arm == 'advmoe' then
            st.model_params, st.router_params = backbone_params(model), model.router:parameters()
            st.opt, st.sched = sgd(st.model_params, cfg.lr, cfg, steps)
            st.ropt, st.rsched = sgd(st.router_params, cfg.router_lr, cfg, steps)
          elseif arm == 'moe_router_frozen' then
            set_trainable(model.router:parameters(), false)
            st.opt, st.sched = sgd(backbone_params(model), cfg.lr, cfg, steps)
          else
            st.opt, st.sched = sgd(model:parameters(), cfg.lr, cfg, steps)
          end
          for e = 1, cfg.epochs do
            curve(e, epoch_of(arm, st, loader, cfg, gen))
            run:progress(done * cfg.epochs + e, total * cfg.epochs, ('%s seed %d'):format(arm, s))
          end
          local ev = evaluate(model, d, cfg, cfg.n_test, egen, true)
          local active, full = model:macs(d.H, d.W)
          ev.active_macs_frac = active / full
          results:row {arm = arm, seed = s, data = cfg.data, SA = ev.SA, RA = ev.RA,
                       router_attack_acc = ev.router_attack_acc, router_acc = ev.router_acc,
                       flip_rate = ev.flip_rate, active_macs_frac = ev.active_macs_frac}
          run:log('%s seed %d: SA %.4f RA %.4f router-attack acc %.4f router acc %.4f flip %.4f MACs %.3f (%.0f s)',
                  arm, s, ev.SA, ev.RA, ev.router_attack_acc, ev.router_acc, ev.flip_rate, ev.active_macs_frac,
                  gm.clock() - t0)
          if ev.parity_routed then
            run:log('%s seed %d: %.3f of test images routed to expert y mod %d; SA %.3f on those, %.3f on the rest',
                    arm, s, ev.parity_routed, cfg.experts, ev.sa_parity_routed, ev.sa_other_routed)
            run:metric(('parity_routed_%s_%d'):format(arm, s), ev.parity_routed)
            run:metric(('sa_parity_routed_%s_%d'):format(arm, s), ev.sa_parity_routed)
            run:metric(('sa_other_routed_%s_%d'):format(arm, s), ev.sa_other_routed)
          end
          return ev
        end)
        by_arm[arm][#by_arm[arm] + 1] = res
        done = done + 1
        run:progress(done * cfg.epochs, total * cfg.epochs, ('%s seed %d'):format(arm, s))
      end
    end
    -- Per-arm means and standard errors for the figure (panel a, b) and the metrics.
    local summary = run:tsv('summary', {'arm', 'index', 'n', 'SA', 'SA_se', 'RA', 'RA_se', 'router_attack_acc',
                                        'router_attack_acc_se', 'router_acc', 'router_acc_se', 'flip_rate',
                                        'flip_rate_se', 'active_macs_frac'})
    for i, arm in ipairs(arms) do
      local row = {arm = arm, index = i - 1, n = #by_arm[arm]}
      for _, k in ipairs {'SA', 'RA', 'router_attack_acc', 'router_acc', 'flip_rate', 'active_macs_frac'} do
        local v = {}
        for j, r in ipairs(by_arm[arm]) do v[j] = r[k] end
        local m, se = gm.stats.mean(v), #v > 1 and gm.stats.stderr(v) or 0 / 0
        row[k] = m
        if k ~= 'active_macs_frac' then row[k .. '_se'] = se end
        run:metric(('%s_%s'):format(k, arm), m)
      end
      summary:row(row)
    end
    gm.experiment.write_atomic(run.dir .. '/layout.gp', ('arms = "%s"\nepochs = %d\nseed0 = %d\nnseeds = %d\n'):format(
      table.concat(arms, ' '), cfg.epochs, cfg.seed, cfg.seeds))
  end,
}
