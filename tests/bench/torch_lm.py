"""torch_lm.py: the PyTorch side of tests/bench/lm.lua (loaded by peer.py).

The same step as gm.nn.LM{vocab, d_model, layers=2, state_mixer="mlp", mixer=...} (heads 1):
embedding N(0, 0.02); per block h = h + mixer(LN(h)), h = h + MLP(LN(h)) (d -> 4d, erf gelu,
-> d); final LayerNorm; head tied to the embedding; cross_entropy over all B*T positions;
backward; AdamW (lr 1e-3). Mixers:
  attention: qkv Linear(d, 3d), causal softmax(q k^T / sqrt(d)) v (explicit: torch 1.13 has
             no fused SDPA), out_proj Linear(d, d);
  recurrent / chunk: gated linear attention as gm.nn.GLA (fla's layer: q, k d -> d/2, v, g
             d -> d, no biases; log gate = logsigmoid(x W1 W2 + b) / 16 with rank 16; output
             o_proj(RMSNorm(o) * silu(g))); "recurrent" loops over time steps
             S_t = diag(a_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t (what PyTorch code without a
             fused kernel does); "chunk" is the chunkwise form (chunks of 32, matmuls within
             and across chunks, decays from the cumulative log gate).
Case keys: B, T, V, d, mixer, chunk.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv, self.out_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        T, d = x.shape[1], x.shape[2]
        q, k, v = self.qkv(x).split(d, -1)
        s = (q @ k.transpose(1, 2)) / math.sqrt(d)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        return self.out_proj(s.masked_fill(mask, float("-inf")).softmax(-1) @ v)


class GLA(nn.Module):
    def __init__(self, d, mode, chunk):
        super().__init__()
        dk, self.mode, self.chunk = d // 2, mode, chunk
        self.q_proj, self.k_proj = nn.Linear(d, dk, bias=False), nn.Linear(d, dk, bias=False)
        self.v_proj, self.g_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.gk = nn.Sequential(nn.Linear(d, 16, bias=False), nn.Linear(16, dk))
        self.o_proj = nn.Linear(d, d, bias=False)
        self.norm_w = nn.Parameter(torch.ones(d))

    def forward(self, x):
        q, k, v = self.q_proj(x) / math.sqrt(self.q_proj.out_features), self.k_proj(x), self.v_proj(x)
        g = F.logsigmoid(self.gk(x)) / 16
        o = self.recurrent(q, k, v, g) if self.mode == "recurrent" else self.chunked(q, k, v, g)
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * self.norm_w
        return self.o_proj(o * F.silu(self.g_proj(x)))

    @staticmethod
    def recurrent(q, k, v, g):
        B, T, dk = q.shape
        S = q.new_zeros(B, dk, v.shape[-1])
        out = []
        for t in range(T):
            S = S * g[:, t].exp().unsqueeze(-1) + k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(1)
            out.append((q[:, t].unsqueeze(1) @ S).squeeze(1))
        return torch.stack(out, 1)

    def chunked(self, q, k, v, g):
        B, T, dk = q.shape
        C = self.chunk
        S = q.new_zeros(B, dk, v.shape[-1])
        mask = torch.ones(C, C, dtype=torch.bool).tril()
        out = []
        for s in range(0, T, C):
            qc, kc, vc, b = q[:, s:s + C], k[:, s:s + C], v[:, s:s + C], g[:, s:s + C].cumsum(1)
            qe, ke = qc * b.exp(), kc * (-b).exp()
            a = (qe @ ke.transpose(1, 2)).masked_fill(~mask[: qc.shape[1], : qc.shape[1]], 0)
            out.append(qe @ S + a @ vc)
            last = b[:, -1:]
            S = S * last.exp().transpose(1, 2) + (kc * (last - b).exp()).transpose(1, 2) @ vc
        return torch.cat(out, 1)


class Block(nn.Module):
    def __init__(self, d, mixer, chunk):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mixer = Attention(d) if mixer == "attention" else GLA(d, mixer, chunk)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, h):
        h = h + self.mixer(self.norm1(h))
        return h + self.fc2(F.gelu(self.fc1(self.norm2(h))))


class LM(nn.Module):
    def __init__(self, V, d, mixer, chunk):
        super().__init__()
        self.embed = nn.Embedding(V, d)
        self.blocks = nn.ModuleList([Block(d, mixer, chunk) for _ in range(2)])
        self.norm_f = nn.LayerNorm(d)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0, 0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, ids):
        h = self.embed(ids)
        for b in self.blocks:
            h = b(h)
        return self.norm_f(h) @ self.embed.weight.t()


def setup(case, threads):
    B, T, V, d = case["B"], case["T"], case["V"], case["d"]
    lm = LM(V, d, case["mixer"], case.get("chunk", 32))
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    ids, tgt = torch.randint(0, V, (B, T)), torch.randint(0, V, (B * T,))

    def step():
        opt.zero_grad()
        F.cross_entropy(lm(ids).reshape(B * T, V), tgt).backward()
        opt.step()

    return step
