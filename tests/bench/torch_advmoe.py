"""torch_advmoe.py: the PyTorch side of tests/bench/advmoe.lua (loaded by peer.py).

One PGD-2 adversarial training step (Madry: uniform random start, two signed steps of 5/255 at
eps 8/255 with the input gradient only, in eval mode, then SGD on the cross-entropy of the
adversarial batch in train mode) of the gmoe.nn.DenseCNN / gmoe.nn.MoECNN models of the
router-robustness experiment, written the same way in PyTorch: convs 3x3 (padding 1, no bias) of
widths 8-16-32-32 (ratio 0.5 of 16-32-64-64) with strides 1-2-1-2, each + BatchNorm2d + ReLU,
global average pool, Linear -> 10. The MoE model has 2 channel-group experts per conv (batch norm
shared by the experts) and one image-level router (conv 3->8, conv 8->16 stride 2, each + batch
norm + ReLU, pool, Linear 16->2) with hard top-1 and a straight-through gate; compute="selected" groups the batch by expert once
and runs each expert's convs on its own images (as gmoe), "all" runs every group on every image
and keeps the selected channels (the released AdvMoE MoEConv).
case: model = "dense" | "moe", batch = 128, compute = "selected" | "all".
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = (8, 16, 32, 32)
STRIDES = (1, 2, 1, 2)


class Dense(nn.Module):
    def __init__(self):
        super().__init__()
        chans = (3,) + WIDTHS
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, STRIDES[i], 1, bias=False) for i in range(4))
        self.bns = nn.ModuleList(nn.BatchNorm2d(w) for w in WIDTHS)
        self.head = nn.Linear(WIDTHS[-1], 10)

    def forward(self, x):
        for c, b in zip(self.convs, self.bns):
            x = F.relu(b(c(x)))
        return self.head(x.mean((2, 3)))


class Router(nn.Module):
    def __init__(self, experts):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, experts)

    def forward(self, x):
        return self.fc(F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))).mean((2, 3)))


class MoE(nn.Module):
    def __init__(self, compute, experts=2):
        super().__init__()
        self.E, self.compute = experts, compute
        chans = (3,) + WIDTHS
        self.router = Router(experts)
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], experts * chans[i + 1], 3, STRIDES[i], 1, bias=False)
                                   for i in range(4))
        self.bns = nn.ModuleList(nn.BatchNorm2d(w) for w in WIDTHS)
        self.head = nn.Linear(WIDTHS[-1], 10)

    def forward(self, x):
        s = self.router(x)
        ids = s.argmax(1)
        sel = s.gather(1, ids[:, None])[:, 0]
        gate = (1 + sel - sel.detach())[:, None, None, None]  # straight-through: 1 in value
        if self.compute == "all":
            onehot = F.one_hot(ids, self.E).to(x.dtype)[:, :, None, None, None]
            for c, b, w in zip(self.convs, self.bns, WIDTHS):
                y = c(x)
                y = (y.view(y.shape[0], self.E, w, y.shape[2], y.shape[3]) * onehot).sum(1)
                x = F.relu(b(y * gate))
            return self.head(x.mean((2, 3)))
        perm = torch.argsort(ids, stable=True)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel())
        counts = torch.bincount(ids, minlength=self.E).tolist()
        x, gate = x[perm], gate[perm]
        for c, b, w in zip(self.convs, self.bns, WIDTHS):
            parts, off = [], 0
            for e, n in enumerate(counts):
                if n:
                    parts.append(F.conv2d(x[off:off + n], c.weight[e * w:(e + 1) * w], None, c.stride, c.padding))
                    off += n
            x = F.relu(b(torch.cat(parts, 0) * gate))
        return self.head(x.mean((2, 3)))[inv]


def setup(case, threads):
    torch.manual_seed(0)
    B = int(case.get("batch", 128))
    model = Dense() if case.get("model", "dense") == "dense" else MoE(case.get("compute", "selected"))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(B, 3, 32, 32)
    y = torch.randint(0, 10, (B,))
    if isinstance(model, MoE):  # an even split between the experts, as advmoe.lua does
        with torch.no_grad():
            s = model.router(x)
            d = (s[:, 1] - s[:, 0]).sort()[0]
            model.router.fc.bias[1] -= 0.5 * (d[(B - 1) // 2] + d[B // 2])
    eps, step = 8 / 255, 5 / 255

    def train_step():
        model.eval()
        xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(2):
            xa.requires_grad_(True)
            g, = torch.autograd.grad(F.cross_entropy(model(xa), y), [xa])
            xa = torch.min(torch.max(xa.detach() + step * g.sign(), x - eps), x + eps).clamp(0, 1)
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(xa), y).backward()
        opt.step()

    return train_step
