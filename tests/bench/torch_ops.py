"""torch_ops.py: the PyTorch side of tests/bench/overhead.lua (loaded by peer.py).

Case op = "add8": c = a + b on 8-element f32 tensors, n times in a Python loop (per-op
overhead); "add8_grad": the same with a requiring grad (autograd records every add);
"matmul": a @ b at 1024^3 f32; "add_big": a + b on 2^24-element f32 tensors.
"""
import torch


def setup(case, threads):
    op = case["op"]
    if op in ("add8", "add8_grad"):
        a, b = torch.randn(8, requires_grad=(op == "add8_grad")), torch.randn(8)
        n = case["n"]

        def step():
            for _ in range(n):
                c = a + b
            return c

        return step
    if op == "matmul":
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        return lambda: a @ b
    if op == "add_big":
        a, b = torch.randn(1 << 24), torch.randn(1 << 24)
        return lambda: a + b
    raise ValueError("unknown op " + op)
