"""Small models the backend tests and the model-tuning tests share (importable by their subprocesses too)."""

import torch
import torch.nn.functional as F
from torch import nn

from autotile.examples import BasicBlock, GPTBlock  # noqa: F401  (the tests import them from here)


class MLP(nn.Module):
    """Every GEMM epilogue the pass fuses: bias + relu / gelu / gelu tanh / silu, and a residual add."""

    def __init__(self, d=32, hidden=64):
        super().__init__()
        self.up = nn.ModuleList(nn.Linear(d, hidden) for _ in range(4))
        self.down = nn.Linear(4 * hidden, d)

    def forward(self, x):
        h = [F.relu(self.up[0](x)), F.gelu(self.up[1](x)), F.gelu(self.up[2](x), approximate="tanh"),
             F.silu(self.up[3](x))]
        return self.down(torch.cat(h, -1)) + x


class TinyMLP(nn.Module):
    """Two linears with fused epilogues: the smallest model with two tasks of different weight."""

    def __init__(self, d=32, hidden=48):
        super().__init__()
        self.up, self.down = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.down(F.relu(self.up(x)))
