"""torch_comet.py: the PyTorch side of tests/bench/comet.lua, loaded by peer.py.

The same multi-gate MoE as experiments/lib/mmoe.lua at the COMET reproduction's size: 16 shared
experts (Linear(10, 32) -> ReLU -> Linear(32, 1), stacked), one gate per task (2 tasks), task
heads Linear(1, 1), MSE per task summed, Adam (lr 1e-3). One step of the benchmark is one training
epoch: a random permutation of n examples, then n / batch minibatch steps (zero_grad, forward,
loss, backward, Adam). Gates: "topk" (softmax over Linear(10, 16, no bias), the 2 largest
renormalised, scattered into dense weights) or "comet" (COMET's tree gate as in
gm.gates.COMET: k = 2 soft trees over 16 leaves, smooth-step nodes from Linear(10, 2*15), leaf
scores from Linear(10, 2*16), one softmax over (tree, leaf) of score + log reach, the entropy
regulariser 0.1 * mean_batch sum -mu log(mu + 1e-6); gamma 1).
"""
import torch


def smooth_step(x, g):
    y = -2 * x ** 3 / g ** 3 + 3 * x / (2 * g) + 0.5
    return torch.where(x <= -g / 2, torch.zeros_like(x), torch.where(x >= g / 2, torch.ones_like(x), y))


class TopK(torch.nn.Module):
    def __init__(self, d, e, k):
        super().__init__()
        self.router = torch.nn.Linear(d, e, bias=False)
        self.k = k

    def forward(self, x):
        p = torch.softmax(self.router(x), -1)
        v, i = p.topk(self.k, -1)
        w = v / v.sum(-1, keepdim=True)
        return torch.zeros_like(p).scatter(1, i, w), None


class COMET(torch.nn.Module):
    def __init__(self, d, e, k, gamma, entropy):
        super().__init__()
        self.e, self.k, self.gamma, self.entropy = e, k, gamma, entropy
        self.nodes = torch.nn.Linear(d, k * (e - 1))
        self.leaves = torch.nn.Linear(d, k * e)
        self.depth = (e - 1).bit_length()

    def forward(self, x):
        b, e, k = x.shape[0], self.e, self.k
        p = smooth_step(self.nodes(x).view(b, k, e - 1), self.gamma)
        mu = torch.ones(b, k, 1)
        for level in range(self.depth):  # heap order: level l holds nodes 2^l - 1 .. 2^(l+1) - 2
            pl = p[:, :, 2 ** level - 1:2 ** (level + 1) - 1]
            mu = torch.stack((mu * pl, mu * (1 - pl)), -1).view(b, k, -1)
        a = self.leaves(x).view(b, k, e)
        reach = mu > 0
        logit = torch.where(reach, a + torch.log(torch.where(reach, mu, torch.ones_like(mu))),
                            torch.full_like(a, -float("inf")))
        g = torch.softmax(logit.view(b, k * e), -1).view(b, k, e).sum(1)
        ent = (-(mu * torch.log(mu + 1e-6))).sum() / b * self.entropy
        return g, ent


class MMoE(torch.nn.Module):
    def __init__(self, gate, d=10, e=16, h=32, tasks=2):
        super().__init__()
        self.e, self.h = e, h
        self.lin1 = torch.nn.Linear(d, e * h)
        self.w2 = torch.nn.Parameter(torch.empty(e, h).uniform_(-h ** -0.5, h ** -0.5))
        self.b2 = torch.nn.Parameter(torch.empty(e).uniform_(-h ** -0.5, h ** -0.5))
        self.gates = torch.nn.ModuleList(gate() for _ in range(tasks))
        self.heads = torch.nn.ModuleList(torch.nn.Linear(1, 1) for _ in range(tasks))

    def forward(self, x):
        f = (torch.relu(self.lin1(x)).view(x.shape[0], self.e, self.h) * self.w2).sum(-1) + self.b2
        outs, aux = [], None
        for gate, head in zip(self.gates, self.heads):
            w, a = gate(x)
            if a is not None:
                aux = a if aux is None else aux + a
            outs.append(head((w * f).sum(-1, keepdim=True)).view(-1))
        return outs, aux


def setup(case, threads):
    n, batch = int(case.get("n", 20000)), int(case.get("batch", 256))
    if case["gate"] == "topk":
        model = MMoE(lambda: TopK(10, 16, 2))
    else:
        model = MMoE(lambda: COMET(10, 16, 2, 1.0, 0.1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(n, 10), torch.randn(n, 2)

    def epoch():
        perm = torch.randperm(n)
        xs, ys = x[perm], y[perm]
        for s in range(0, n, batch):
            xb, yb = xs[s:s + batch], ys[s:s + batch]
            opt.zero_grad()
            outs, aux = model(xb)
            loss = torch.nn.functional.mse_loss(outs[0], yb[:, 0]) + torch.nn.functional.mse_loss(outs[1], yb[:, 1])
            if aux is not None:
                loss = loss + aux
            loss.backward()
            opt.step()

    return epoch
