"""torch_moe.py: the PyTorch side of tests/bench/moe.lua (loaded by peer.py).

The same top-k MoE training step as gm.nn.MoE{d_model, d_ff, experts, gate=TopK{k}} with its
defaults: router Linear(d, E, no bias) -> softmax -> top-k, weights renormalised over the k;
tokens sorted by expert (gather), per expert h = gelu(x W1_e + b1_e) (erf gelu), y = h W2_e + b2_e
(one matmul per expert, the usual PyTorch MoE loop), combined with the weights (index_add);
the layer's auxiliary outputs (balance loss, z-loss, gate entropy; not in the loss) computed
as gmoe computes them; loss = mse(y, target); backward; AdamW over router, W1, b1, W2, b2.
Case keys: T, d, f (d_ff), E, k.
"""
import math

import torch
import torch.nn.functional as F


def setup(case, threads):
    T, d, f, E, k = case["T"], case["d"], case["f"], case["E"], case["k"]
    g = torch.Generator().manual_seed(0)

    def uniform(shape, fan_in):
        b = 1.0 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=g) * 2 - 1).mul_(b).requires_grad_()

    router = uniform((E, d), d)
    w1, b1 = uniform((E, d, f), d), uniform((E, f), d)
    w2, b2 = uniform((E, f, d), f), uniform((E, d), f)
    params = [router, w1, b1, w2, b2]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x, target = torch.randn(T, d, generator=g), torch.randn(T, d, generator=g)

    def step():
        opt.zero_grad()
        logits = x @ router.t()
        probs = logits.softmax(-1)
        vals, ids = probs.topk(k, dim=-1)
        w = vals / vals.sum(-1, keepdim=True)
        flat = ids.reshape(-1)
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=E).tolist()
        tok = order // k
        xs = x.index_select(0, tok)
        outs, s = [], 0
        for e in range(E):
            n = counts[e]
            if n:
                h = F.gelu(xs[s:s + n] @ w1[e] + b1[e])
                outs.append(h @ w2[e] + b2[e])
            s += n
        ys = torch.cat(outs, 0) * w.reshape(-1)[order].unsqueeze(-1)
        y = torch.zeros(T, d).index_add(0, tok, ys)
        # auxiliary outputs, as gm.nn.MoE computes them every forward
        with torch.no_grad():
            routed = F.one_hot(ids, E).sum((0, 1)).to(x.dtype)
        balance = (routed / (T * k) * probs.mean(0)).sum() * E
        z_loss = logits.logsumexp(-1).pow(2).mean()
        entropy = -(probs * logits.log_softmax(-1)).sum(-1).mean()
        entropy.item()  # gmoe's routing statistics read the entropy back every step
        del balance, z_loss
        loss = F.mse_loss(y, target)
        loss.backward()
        opt.step()

    return step
