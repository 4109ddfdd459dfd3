"""torch_mqar.py: the MQAR training step of experiments/associative_recall.lua in PyTorch, for
tests/bench/mqar.lua through peer.py: a 2-block LM (pre-LN; each block h += mixer(LN h), then
h += LN h, zoology's Identity state mixer), embedding dropout 0.1, final LN, logits only at the
D answer positions of each row through the tied embedding, cross-entropy, backward, AdamW
(weight decay 0.1). Mixers as zoology's code writes them: attention = MHA with 1 head (fused qkv
Linear with bias, einsum scores, additive causal mask, softmax, out_proj) and learned absolute
positions; base_conv = BaseConv with a depthwise Conv1d (k = 3) in block 0 and the implicit long
convolution (ReLU filter MLP on zoology's positional features, FFT convolution with the +u skip)
in block 1, each times a Linear projection plus the residual. setup(case, threads) -> step.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class MHA(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.Wqkv = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.Wqkv(x).view(b, t, 3, d).unbind(dim=2)
        scores = torch.einsum("btd,bsd->bts", q, k * (1.0 / math.sqrt(d)))
        mask = torch.triu(torch.full((t, t), -10000.0), 1)
        p = torch.softmax(scores + mask, dim=-1)
        return self.out_proj(torch.einsum("bts,bsd->btd", p, v))


def positional_features(d_emb, L):
    """zoology's PositionalEmbedding(d_emb, L).z: [1, L, d_emb]."""
    t = torch.linspace(0, 1, L)[None, :, None]
    bands = (d_emb - 1) // 2
    w = 2 * math.pi * torch.linspace(0, L - 1, L)[None, :, None] / L
    f = torch.linspace(1e-4, bands - 1, bands)[None, None]
    z = torch.exp(-1j * f * w)
    return torch.cat([t, z.real, z.imag], dim=-1)


class BaseConv(nn.Module):
    def __init__(self, d, T, long):
        super().__init__()
        self.projection = nn.Linear(d, d)
        self.long = long
        if long:
            self.register_buffer("z", positional_features(3, T))
            self.mlp = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, d))
        else:
            self.conv = nn.Conv1d(d, d, kernel_size=3, groups=d, padding=2)

    def forward(self, u):
        t = u.shape[1]
        x = u.transpose(1, 2)
        if self.long:
            k = self.mlp(self.z[:, :t]).transpose(1, 2)  # [1, d, t]
            n = 2 * t
            y = torch.fft.irfft(torch.fft.rfft(x, n=n) * (torch.fft.rfft(k, n=n) / n), n=n, norm="forward")[..., :t]
            y = y + x
        else:
            y = self.conv(x)[..., :t]
        return y.transpose(1, 2) * self.projection(u) + u


class Block(nn.Module):
    def __init__(self, d, mixer):
        super().__init__()
        self.norm1, self.mixer, self.norm2 = nn.LayerNorm(d), mixer, nn.LayerNorm(d)

    def forward(self, h):
        h = h + self.mixer(self.norm1(h))
        return h + self.norm2(h)


class LM(nn.Module):
    def __init__(self, mixer, V, d, T):
        super().__init__()
        self.embed = nn.Embedding(V, d)
        self.pos = nn.Embedding(T, d) if mixer == "attention" else None
        self.drop = nn.Dropout(0.1)
        mix = [MHA(d), MHA(d)] if mixer == "attention" else [BaseConv(d, T, False), BaseConv(d, T, True)]
        self.blocks = nn.ModuleList([Block(d, m) for m in mix])
        self.norm_f = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if p.dim() > 1 and "conv" not in name:
                nn.init.normal_(p, std=0.02 / math.sqrt(4) if "out_proj" in name else 0.02)

    def forward(self, ids, sel):
        b, t = ids.shape
        h = self.embed(ids)
        if self.pos is not None:
            h = h + self.pos.weight[:t]
        h = self.drop(h)
        for blk in self.blocks:
            h = blk(h)
        h = self.norm_f(h).reshape(b * t, -1).index_select(0, sel)
        return h @ self.embed.weight.t()


def setup(case, threads):
    B, T, d, V, D = case["B"], case["T"], case["d"], case["V"], case["D"]
    model = LM(case["mixer"], V, d, T)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (B, T), generator=g)
    # D answer positions per row (the first query slots after the 2D context), flat b*T + t
    sel = (torch.arange(B)[:, None] * T + 2 * D + 2 * torch.arange(D)[None, :]).reshape(-1)
    tgt = torch.randint(V // 2, V, (B * D,), generator=g)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(ids, sel), tgt)
        loss.backward()
        opt.step()

    return step
