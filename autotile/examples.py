"""Example models: what the benchmarks time and tune (bench/e2e_cpu.py, bench/tune_model.py) and the tests compile
at a small size. Each holds every op the backend replaces in its kind of network."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class GPTBlock(nn.Module):
    """A pre-norm transformer block: causal self-attention and a GELU MLP, each with a residual."""

    def __init__(self, d_model: int = 64, heads: int = 4, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.fc1, self.fc2 = nn.Linear(d_model, mlp_ratio * d_model), nn.Linear(mlp_ratio * d_model, d_model)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class BasicBlock(nn.Module):
    """A ResNet basic block: two 3x3 convolutions with batch norm, a shortcut, ReLU. With a stride or a change of
    width the shortcut is a strided 1x1 convolution with batch norm (torchvision's downsample)."""

    def __init__(self, channels: int = 8, in_channels: int | None = None, stride: int = 1):
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
        out = F.relu(self.bn1(self.conv1(x)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(self.bn2(self.conv2(out)) + shortcut)


def resnet_stage(channels: int = 64, blocks: int = 2, in_channels: int | None = None, stride: int = 1) -> nn.Module:
    """A stage of ResNet-18/34: its first block may downsample (stride 2, wider), the rest keep the shape."""
    first = BasicBlock(channels, in_channels, stride)
    return nn.Sequential(first, *(BasicBlock(channels) for _ in range(blocks - 1)))
