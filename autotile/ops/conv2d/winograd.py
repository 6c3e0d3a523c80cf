"""The conv2d.winograd template's space: Winograd F(2x2,3x3) ("winograd", 2.25x fewer multiplies) and F(4x4,3x3)
("winograd4", 4x fewer) for 3x3, stride 1, undilated, ungrouped fp32 convolutions (any padding, either layout);
the lowering and its stages are in winograd_tvm.py.

Its knobs are conv2d.direct's (Conv2dSpace's geometry and features apply): ow_bn tiles x oc_bn output channels is
the register tile of the batched GEMM over the (m+2)^2 transform positions (per input channel, ow_bn broadcast
values times oc_bn/lanes weight vectors); `outer` orders its tile and channel blocks; `unroll` unrolls its input
channels; ic_bn is the channel vector of the input transform (the device's lanes, fewer for narrow inputs);
`epilogue_at` places the write-back: "tile" per channel vector of a row of tiles (its block stays in L1), "row" per
row of tiles. oh_bn, rorder and pack_input do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotile.ops.conv2d.direct import WINOGRAD, Conv2dConfig, Conv2dSpace, _round_up
from autotile.ops.conv2d.workload import Conv2dWorkload
from autotile.ops.gemm.blis import _ceil_div


def applies(w: Conv2dWorkload, fingerprint: dict | None = None) -> bool:
    """Winograd F(m x m, 3x3) computes this convolution: 3x3, stride 1, undilated, one group, fp32."""
    return (w.r == w.s == 3 and w.stride == (1, 1) and w.dilation == (1, 1) and w.groups == 1
            and w.dtype == "float32")


def preferred(w: Conv2dWorkload) -> bool:
    """Untuned, F(4x4, 3x3) beats the direct kernels unless the channels are few: 2.2-2.4x faster on 64x56x56
    (Zen 4, one core)."""
    return min(w.c, w.k) >= 16


@dataclass(frozen=True)
class WinogradConfig(Conv2dConfig):
    template: str = "winograd4"


class WinogradSpace(Conv2dSpace):
    config_type = WinogradConfig
    template = "conv2d.winograd"

    def __init__(self, workload: Conv2dWorkload, vector_lanes: int = 16, vector_registers: int = 32):
        super().__init__(workload, vector_lanes, vector_registers)
        self.domains["template"] = list(WINOGRAD)

    def canonical(self, c: WinogradConfig) -> WinogradConfig:
        w = self.workload
        base = WinogradConfig()
        ic_bn = min(self.lanes, max(4, 1 << (w.c - 1).bit_length()))  # the channel vector of the transforms
        oc_bn = min(c.oc_bn, _round_up(w.k, self.lanes))
        tiles = self.winograd_tiles(c.template)
        ow_bn = min(c.ow_bn, tiles)
        unroll = max(u for u in (1, 2, 4, 8, 16) if u <= c.unroll and ic_bn % u == 0)
        outer = c.outer if _ceil_div(w.k, oc_bn) > 1 and _ceil_div(tiles, ow_bn) > 1 else base.outer
        return WinogradConfig(c.template, ic_bn, oc_bn, ow_bn, 1, base.rorder, unroll, outer, c.epilogue_at, True)

    def default(self) -> WinogradConfig:
        """F(4x4, 3x3) with two vectors of output channels (one for few channels), 6 tiles per register tile."""
        oc_bn = 2 * self.lanes if self.channels()[1] > self.lanes else self.lanes
        return self.canonical(WinogradConfig("winograd4", oc_bn=oc_bn, ow_bn=6, unroll=4, epilogue_at="tile"))
