"""torch_train.py: the PyTorch side of tests/bench/train.lua (loaded by peer.py).

case net = "mlp": x [256, 512] -> Linear 512->1024 -> ReLU -> Linear 1024->512, MSE to a random
target, AdamW (lr 1e-3). net = "cnn": x [128, 3, 32, 32] -> 4 x (Conv 3x3 pad 1 + ReLU), channels
3->16->32->32->64, max-pool 2 after convs 2 and 4, global average pool, Linear 64->10,
cross_entropy, AdamW. One step = zero_grad + forward + backward + optimiser step.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def setup(case, threads):
    if case["net"] == "mlp":
        net = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 512))
        x, y = torch.randn(256, 512), torch.randn(256, 512)
        loss_fn = F.mse_loss
    else:
        net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
        x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
        loss_fn = F.cross_entropy
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    return step
