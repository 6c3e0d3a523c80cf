"""Small models the backend tests and the model-tuning tests share (importable by their subprocesses too)."""

import torch
import torch.nn.functional as F
from torch import nn


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


class GPTBlock(nn.Module):
    """A pre-norm transformer block at test size: causal attention over 4 heads of 16, a GELU MLP, residuals."""

    def __init__(self, d=64, heads=4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class BasicBlock(nn.Module):
    """A ResNet basic block at test size: conv, batch norm, ReLU, conv, batch norm, shortcut, ReLU. The shortcut is
    the identity, or with a stride or a change of width a strided 1x1 conv and batch norm (torchvision's)."""

    def __init__(self, channels=8, in_channels=None, stride=1):
        super().__init__()
        in_channels = in_channels or channels
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TinyMLP(nn.Module):
    """Two linears with fused epilogues: the smallest model with two tasks of different weight."""

    def __init__(self, d=32, hidden=48):
        super().__init__()
        self.up, self.down = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.down(F.relu(self.up(x)))
