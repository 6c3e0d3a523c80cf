"""The CPU conv2d templates' config space: three register-blocked templates, picked by the `template` knob.

Every template computes a register tile of (oh_bn x ow_bn) output pixels x oc_bn output channels, the
channels in vector lanes, so the inner loop is one broadcast input value times a weight vector, FMA'd
into accumulators that stay in registers:

- "nchwc": direct convolution over a blocked copy of the input, [n, g, C/ic_bn, H, W, ic_bn] with the
  zero padding written in, and weights packed [g, K/oc_bn, C/ic_bn, R, S, ic_bn, oc_bn]. Pixel tiles are
  2-D (oh_bn rows x ow_bn columns); the reduction walks ic blocks, R, S in the order `rorder`.
- "gemm": implicit GEMM (no im2col): M = the output pixels of an image, flattened, so a tile may cross
  rows (good for 7x7 and 14x14 outputs and 1x1 convolutions); N = K; the reduction runs over R, S, C on
  a padded NHWC copy of the input (or the NHWC input itself when no copy is needed). oh_bn and ic_bn
  do not apply.
- "depthwise" (groups == C == K): channels in vector lanes, the R x S reduction per channel over a
  channel-blocked padded input.

Two NCHW templates put output pixels in the vector lanes instead, so the input is read in place:

- "pointwise" (1x1, stride 1, no padding, one group, NCHW): a GEMM out[k, m] = sum_c W[k, c] * x[c, m]
  over the flattened pixels m; a register tile of oc_bn output channels (each weight value broadcast) x
  ow_bn pixels (vectors, contiguous in NCHW); oh_bn tiles of pixels per block, `outer` orders the
  channel and pixel blocks, `unroll` unrolls C. The weight is packed [K/oc_bn, C, oc_bn] in the kernel.
- "dwrows" (depthwise, NCHW): each channel a 2-D stencil over a zero-padded copy of that channel only
  (it stays in cache); tiles of oh_bn rows x ow_bn columns, the columns in vector lanes.

The Winograd kernels ("winograd", "winograd4") are another template, conv2d.winograd (winograd.py): they share
this config type's knobs and this space's geometry, and compete with these in tuning where they apply.

Layout transforms and padding run inside the kernel, so they are part of every measured time. The packs
are transposes, vectorized over the blocked channels (a small ic_bn makes the input's cheap; ic_bn = 1 makes
it a padded copy of NCHW rows). For a constant weight (`Conv2dWorkload(const_weight=True)`, what the
torch.compile backend tunes) the "nchwc", "gemm", "depthwise" and Winograd kernels take the weight packed
(or transformed) by a separate `pack_weight` function, run once per weight (direct_tvm.prepacked_operands,
codegen/tvm/build.py), and their timings leave it out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autotile.ops.conv2d.workload import Conv2dWorkload
from autotile.ops.gemm.blis import _ceil_div, balanced
from autotile.ops.space import Config, ConfigSpace, vector_unit

TEMPLATES = ("nchwc", "gemm", "depthwise", "pointwise", "dwrows", "winograd", "winograd4")
WINOGRAD = {"winograd": 2, "winograd4": 4}  # template -> output tile side m of F(m x m, 3x3)
# The most straight-line code a config may ask for: the product of the unrolled loops of its inner loop nest
# (Conv2dSpace.unrolled). The register limits already keep it at 480 (16 unrolled channels x 30 accumulators),
# and such configs built in 3.5-6 s on ResNet-50's 3x3 layers; this keeps a larger register file or unroll domain
# from offering minute-long builds (the tuner's build limit is 120 s).
MAX_UNROLLED = 512


@dataclass(frozen=True)
class Conv2dConfig(Config):
    template: str = "nchwc"
    ic_bn: int = 16  # input channels per block ("nchwc")
    oc_bn: int = 32  # output channels per register tile (a multiple of the vector lanes)
    ow_bn: int = 8  # output pixels per tile row ("gemm": pixels per tile, flattened)
    oh_bn: int = 1  # output rows per tile ("nchwc", "depthwise")
    rorder: str = "crs"  # "nchwc" reduction order: ic blocks outside R, S ("crs") or inside ("rsc")
    unroll: int = 1  # unroll factor of the innermost reduction loop (input channels; "depthwise": S)
    outer: str = "kp"  # "kp": channel blocks outside pixel rows; "pk": rows outside channel blocks
    epilogue_at: str = "tile"  # write-back (with the epilogue) per register tile, per row block, or "root"
    pack_input: bool = True  # False: read an NHWC input in place (only where no padding copy is needed)


def _round_up(x: int, step: int) -> int:
    return _ceil_div(x, step) * step


class Conv2dSpace(ConfigSpace):
    config_type = Conv2dConfig
    template = "conv2d.direct"

    def __init__(self, workload: Conv2dWorkload, vector_lanes: int = 16, vector_registers: int = 32):
        self.workload = workload
        self.lanes = vector_lanes
        self.registers = vector_registers
        lanes = vector_lanes
        w = workload
        pointwise = (w.layout == "nchw" and w.r == w.s == 1 and w.stride == (1, 1) and w.padding == (0, 0)
                     and w.groups == 1)
        dwrows = w.depthwise and w.layout == "nchw"
        if w.depthwise:
            templates = ["depthwise", "dwrows"] if dwrows else ["depthwise"]
        else:
            templates = ["nchwc", "gemm", "pointwise"] if pointwise else ["nchwc", "gemm"]
        wide = pointwise or dwrows  # pixel vectors: wider pixel tiles, and (pointwise) a few channels per tile
        self.domains = {
            "template": templates,
            "ic_bn": [1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512],
            "oc_bn": ([1, 2, 3, 4, 5, 6, 8] if pointwise else []) + [lanes, 2 * lanes, 3 * lanes, 4 * lanes],
            "ow_bn": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 28] + ([32, 48, 56, 64] if wide else []),
            "oh_bn": [1, 2, 3, 4] + ([6, 8] if wide else []),
            "rorder": ["crs", "rsc"],
            "unroll": [1, 2, 4, 8, 16],
            "outer": ["kp", "pk"],
            "epilogue_at": ["tile", "row"],
            "pack_input": [True, False],
        }

    @classmethod
    def for_device(cls, workload: Conv2dWorkload, fingerprint: dict | None = None) -> Conv2dSpace:
        return cls(workload, *vector_unit(fingerprint))

    # -- geometry the lowering shares ---------------------------------------------------------
    def channels(self):
        """(C/g, K/g) per group."""
        w = self.workload
        return w.c // w.groups, w.k // w.groups

    def valid(self, c: Conv2dConfig) -> bool:
        if c.template not in self.domains["template"]:
            return False
        return self._fits_registers(c) and self.unrolled(self.canonical(c)) <= MAX_UNROLLED

    def unrolled(self, c: Conv2dConfig) -> int:
        """Copies of the inner loop's body the schedule's unrolled loops make (their extents' product): the
        register tile (pixels x vectors of channels) times the unrolled reduction steps."""
        vectors = _ceil_div(c.oc_bn, self.lanes)
        if c.template in WINOGRAD or c.template == "gemm":
            return c.unroll * c.ow_bn * vectors
        if c.template in ("nchwc", "depthwise"):
            return c.unroll * c.oh_bn * c.ow_bn * vectors
        pixel_vectors = _ceil_div(c.ow_bn, self.lanes)
        if c.template == "pointwise":
            return c.unroll * c.oc_bn * pixel_vectors
        return self.workload.r * self.workload.s * c.oh_bn * pixel_vectors  # "dwrows": the taps are unrolled

    def _fits_registers(self, c: Conv2dConfig) -> bool:
        if c.template in WINOGRAD:
            if c.oc_bn % self.lanes or c.ic_bn > self.lanes:
                return False
            vectors = c.oc_bn // self.lanes
            return c.ow_bn * vectors + vectors + 1 <= self.registers
        if c.template in ("pointwise", "dwrows"):
            vectors = _ceil_div(c.ow_bn, self.lanes)
            rows = c.oc_bn if c.template == "pointwise" else c.oh_bn
            if c.template == "pointwise" and c.ow_bn % self.lanes:
                return False  # whole vectors of pixels: other widths lower to slow gathers
            # Accumulators, one row of input vectors and a broadcast weight value.
            return rows * vectors + vectors + 1 <= self.registers
        if c.oc_bn % self.lanes:
            return False
        vectors = _ceil_div(c.oc_bn, self.lanes)
        rows = 1 if c.template == "gemm" else c.oh_bn
        # Accumulators, one row of weight vectors and a broadcast input value must fit in registers.
        return rows * c.ow_bn * vectors + vectors + 1 <= self.registers

    def adopt(self, c: Conv2dConfig, fingerprint: dict | None) -> Conv2dConfig:
        """Another CPU's winner with as many vectors per register tile: of channels, or of pixels where the pixels
        are in the lanes ("pointwise", "dwrows"); then its rows (pixels, or channels) cut until it fits this
        CPU's registers."""
        lanes = vector_unit(fingerprint)[0]
        pixel_lanes = c.template in ("pointwise", "dwrows")
        if lanes == self.lanes or (c.ow_bn if pixel_lanes else c.oc_bn) % lanes:
            return c
        if pixel_lanes:
            adopted = replace(c, ow_bn=c.ow_bn // lanes * self.lanes)
            rows = ("oc_bn",) if c.template == "pointwise" else ("oh_bn",)
        else:
            adopted = replace(c, oc_bn=c.oc_bn // lanes * self.lanes)
            rows = ("ow_bn", "oh_bn")
        return self._fit_rows(self.canonical(adopted), rows) or c

    def input_in_place(self, c: Conv2dConfig) -> bool:
        """Whether an NHWC input can be read directly: no padding, one group, no channel blocks, and
        tiles that never run past the input's edge."""
        w = self.workload
        p, q = w.out_hw
        if c.template == "pointwise":
            return True
        if w.layout != "nhwc" or w.padding != (0, 0) or w.groups > 1 or c.template == "depthwise":
            return False
        if c.template == "gemm":
            return p * q % c.ow_bn == 0
        return c.ic_bn == w.c and p % c.oh_bn == 0 and q % c.ow_bn == 0

    def canonical(self, c: Conv2dConfig) -> Conv2dConfig:
        """Clamp tiles to the problem and normalize knobs the chosen template ignores."""
        w = self.workload
        cg, kg = self.channels()
        p, q = w.out_hw
        base = Conv2dConfig()
        template = c.template
        if template in ("pointwise", "dwrows"):
            return self._canonical_nchw(c)
        oc_bn = min(c.oc_bn, _round_up(w.k if template == "depthwise" else kg, self.lanes))
        if template == "gemm":
            ic_bn, oh_bn, ow_bn, rorder = cg, 1, min(c.ow_bn, p * q), "rsc"
        elif template == "depthwise":
            ic_bn, oh_bn, ow_bn, rorder = 1, min(c.oh_bn, p), min(c.ow_bn, q), "rsc"
        else:
            ic_bn, oh_bn, ow_bn, rorder = balanced(cg, c.ic_bn), min(c.oh_bn, p), min(c.ow_bn, q), c.rorder
            if _ceil_div(cg, ic_bn) == 1 or w.r * w.s == 1:
                rorder = "crs"  # one ic block, or one tap: both orders are the same loop nest
        inner = w.s if template == "depthwise" else ic_bn
        unroll = max(u for u in (1, 2, 4, 8, 16) if u <= c.unroll and inner % u == 0)
        blocks = _ceil_div(w.k if template == "depthwise" else kg, oc_bn)
        rows = p if template != "gemm" else _ceil_div(p * q, ow_bn)
        outer = c.outer if blocks > 1 and rows > 1 else base.outer
        if template == "depthwise":
            outer = base.outer
        epilogue_at = c.epilogue_at
        if template == "gemm" and q % ow_bn and ow_bn % q:
            # A tile of flattened pixels that is not whole rows or part of one is no rectangle of the
            # output, and TVM's region inference cannot follow it: write back after the convolution.
            epilogue_at = "root"
        if w.groups > 1 and template != "depthwise" and kg % oc_bn:
            epilogue_at = "root"  # padded channels inside each group: the write-back cannot follow tiles
        candidate = Conv2dConfig(template, ic_bn, oc_bn, ow_bn, oh_bn, rorder, unroll, outer, epilogue_at, True)
        pack = c.pack_input or not self.input_in_place(candidate)
        return Conv2dConfig(template, ic_bn, oc_bn, ow_bn, oh_bn, rorder, unroll, outer, epilogue_at, pack)

    def winograd_tiles(self, template: str) -> int:
        """Output tiles of F(m x m, 3x3) over the batch: the M of its GEMMs."""
        w = self.workload
        m = WINOGRAD[template]
        p, q = w.out_hw
        return w.n * _ceil_div(p, m) * _ceil_div(q, m)

    def _canonical_nchw(self, c: Conv2dConfig) -> Conv2dConfig:
        w = self.workload
        p, q = w.out_hw
        base = Conv2dConfig()
        if c.template == "dwrows":
            ow_bn, oh_bn = min(c.ow_bn, q), min(c.oh_bn, p)
            return Conv2dConfig("dwrows", 1, self.lanes, ow_bn, oh_bn, base.rorder, 1, base.outer,
                                c.epilogue_at if c.epilogue_at in ("tile", "row") else "tile", True)
        m = p * q
        ow_bn, oc_bn = min(c.ow_bn, _round_up(m, self.lanes)), min(c.oc_bn, w.k)
        tiles = _ceil_div(m, ow_bn)
        oh_bn = max(t for t in range(1, min(c.oh_bn, tiles) + 1) if tiles % t == 0)
        unroll = max(u for u in (1, 2, 4, 8, 16) if u <= c.unroll and w.c % u == 0)
        outer = c.outer if _ceil_div(w.k, oc_bn) > 1 and tiles // oh_bn > 1 else base.outer

        def rectangle(t):  # a run of flattened pixels that is whole rows or part of one
            return t % q == 0 or q % t == 0

        epilogue_at = c.epilogue_at
        if epilogue_at == "row" and not rectangle(ow_bn * oh_bn):
            epilogue_at = "tile"
        if epilogue_at == "tile" and not rectangle(ow_bn):
            epilogue_at = "root"
        return Conv2dConfig("pointwise", w.c, oc_bn, ow_bn, oh_bn, base.rorder, unroll, outer, epilogue_at, False)

    def default(self) -> Conv2dConfig:
        """A heuristic for AVX-512: two vectors of output channels, the widest pixel row tile that fits
        the registers and divides the output width; the implicit GEMM for 1x1 convolutions. NCHW inputs
        get the in-place templates where they apply: "pointwise" for 1x1 convolutions whose pixel count is
        whole vectors, "dwrows" for depthwise ones."""
        w = self.workload
        p, q = w.out_hw
        cg, kg = self.channels()
        lanes = self.lanes
        if "dwrows" in self.domains["template"]:  # NCHW depthwise: pixel rows in the lanes, no transposes
            ow_bn = q if q <= 2 * lanes else min(q, 4 * lanes) if q <= 4 * lanes else 2 * lanes
            return self.canonical(Conv2dConfig("dwrows", ow_bn=ow_bn, oh_bn=4 if ow_bn <= 2 * lanes else 2))
        if w.depthwise:
            return self.canonical(Conv2dConfig("depthwise", oc_bn=2 * lanes, ow_bn=_row_tile(q, 8), oh_bn=1))
        widths = [v * lanes for v in (4, 3, 2, 1) if v <= self.registers // 8 and p * q % (v * lanes) == 0]
        if "pointwise" in self.domains["template"] and widths:
            # NCHW 1x1: a GEMM over the input in place, 4-8 output channels x up to 4 vectors of pixels; the
            # write-back per block of tiles that makes whole rows, where a few tiles do.
            tiles = p * q // widths[0]
            rows = [t for t in range(1, 9) if tiles % t == 0 and (widths[0] * t) % q == 0]
            v = widths[0] // lanes
            oc_bn = min(4 if v >= 3 else 8, (self.registers - 1 - v) // v)  # 12-16 accumulators with AVX-512
            return self.canonical(Conv2dConfig("pointwise", oc_bn=oc_bn, ow_bn=widths[0], oh_bn=rows[0] if rows else 1,
                                               unroll=4, outer="kp", epilogue_at="row" if rows else "tile"))
        oc_bn = 2 * lanes if kg > lanes else lanes
        limit = (self.registers - 1) // (oc_bn // lanes) - 1
        if w.r == w.s == 1 and w.stride == (1, 1) and w.padding == (0, 0):
            tile = _row_tile(p * q, min(limit, 14))
            return self.canonical(Conv2dConfig("gemm", oc_bn=oc_bn, ow_bn=tile, unroll=4, pack_input=False))
        ow_bn = _row_tile(q, min(limit, 14))
        # Blocks of a few channels: the NCHW -> NCHW[x]c transpose is cheaper (rows of x-element gathers),
        # and the broadcast loads do not care; channels-last inputs are read in whole vectors.
        ic_bn = min(cg, 4 if w.layout == "nchw" else 16)
        return self.canonical(Conv2dConfig("nchwc", ic_bn=ic_bn, oc_bn=oc_bn, ow_bn=ow_bn, unroll=4))

    def features(self, c: Conv2dConfig) -> list[float]:
        w = self.workload
        log = math.log2
        p, q = w.out_hw
        cg, kg = self.channels()
        if c.template in WINOGRAD:  # whole tiles of m x m pixels, whole register tiles of them
            ow_pad = _round_up(self.winograd_tiles(c.template), c.ow_bn) * WINOGRAD[c.template] ** 2 / (w.n * p * q)
        elif c.template == "gemm":
            ow_pad = _round_up(p * q, c.ow_bn) / (p * q)
        else:
            ow_pad = _round_up(q, c.ow_bn) * _round_up(p, c.oh_bn) / (p * q)
        k_pad = _round_up(kg, c.oc_bn) / kg
        c_pad = _round_up(cg, c.ic_bn) / cg
        vectors = c.oc_bn / self.lanes
        pixels = c.ow_bn * c.oh_bn
        return [
            log(w.n), log(w.c), log(w.h), log(w.w), log(w.k), w.r, w.s, *w.stride, *w.padding, *w.dilation,
            log(w.groups), float(w.layout == "nhwc"), len(w.epilogue), log(p * q),
            *(float(c.template == t) for t in TEMPLATES),
            log(c.ic_bn), c.oc_bn / self.lanes, c.ow_bn, c.oh_bn, float(c.rorder == "crs"), log(c.unroll),
            float(c.outer == "kp"), ("tile", "row", "root").index(c.epilogue_at), float(c.pack_input),
            pixels * vectors,  # accumulator registers
            (pixels + vectors) / (pixels * vectors),  # loads per FMA in the inner loop
            ow_pad * k_pad * c_pad,  # wasted work from padding the tiles
            log(c.ic_bn * w.r * w.s * c.oc_bn * 4),  # weight block bytes per ic block
        ]


def _row_tile(extent: int, limit: int) -> int:
    """The largest tile <= limit that divides extent, or limit itself when only small ones do."""
    best = max(t for t in range(1, min(limit, extent) + 1) if extent % t == 0)
    return best if best * 2 > min(limit, extent) else min(limit, extent)
