"""The GPU conv2d template in Triton: implicit GEMM, no im2col buffer.

Per group g: M = N*P*Q output pixels, N_gemm = K/groups output channels, K_gemm = R*S*C/groups. A program
computes a BLOCK_M x BLOCK_N tile of output pixels x channels; its A tile is gathered from the input on the
fly (zero outside the padded image), its B tile read from the KCRS weight. The reduction walks either R and
S outside and channel blocks inside (`k_loop` "rsc": contiguous channel loads in NHWC) or one flat loop
over R*S*C/g (`k_loop` "flat": no wasted lanes when C/g is small, e.g. a first RGB layer). NHWC is the
layout this template is for; NCHW tensors are addressed by their strides. Stride, padding, dilation and
groups are compile-time constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.codegen.triton.epilogue import epilogue_lines, store_line
from autotile.codegen.triton.program import Program, kernel_source
from autotile.codegen.triton.tiling import grouped_tile_lines
from autotile.ir.dtypes import dtype as lookup_dtype
from autotile.ops.conv2d.workload import Conv2dWorkload
from autotile.ops.gemm.triton import arch_and_sms, cdiv, dot_precision, pow2_at_least, shared_limit
from autotile.ops.space import Config, ConfigSpace


@dataclass(frozen=True)
class TritonConv2dConfig(Config):
    block_m: int = 64
    block_n: int = 64
    block_k: int = 32
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    k_loop: str = "rsc"  # "rsc" or "flat"


class TritonConv2dSpace(ConfigSpace):
    config_type = TritonConv2dConfig
    template = "conv2d.triton"

    def __init__(self, workload: Conv2dWorkload, arch: int = 90, sms: int = 132):
        self.workload, self.arch, self.sms = workload, arch, sms
        self.itemsize = lookup_dtype(workload.dtype).bits // 8
        p, q = workload.out_hw
        self.m, self.n, self.k = workload.n * p * q, workload.k // workload.groups, workload.reduction
        self.domains = {
            "block_m": [16, 32, 64, 128, 256],
            "block_n": [16, 32, 64, 128, 256],
            "block_k": [16, 32, 64, 128],
            "group_m": [1, 4, 8, 16],
            "num_warps": [2, 4, 8],
            "num_stages": [1, 2, 3, 4],
            "k_loop": ["rsc", "flat"],
        }

    @classmethod
    def for_device(cls, workload: Conv2dWorkload, fingerprint: dict | None = None) -> TritonConv2dSpace:
        return cls(workload, *arch_and_sms(fingerprint))

    def valid(self, c: TritonConv2dConfig) -> bool:
        threads = 32 * c.num_warps
        per_thread = c.block_m * c.block_n / threads
        if per_thread > (64 if self.itemsize == 4 else 256) or c.block_m * c.block_n < 4 * threads:
            return False
        smem = (c.block_m + c.block_n) * c.block_k * self.itemsize * max(c.num_stages - 1, 1)
        return smem <= shared_limit(self.arch)

    def canonical(self, c: TritonConv2dConfig) -> TritonConv2dConfig:
        w = self.workload
        bm = min(c.block_m, pow2_at_least(self.m))
        bn = min(c.block_n, pow2_at_least(self.n))
        channels = w.c // w.groups
        k_loop = "flat" if w.r * w.s == 1 else c.k_loop  # one (r, s): both loops are the same
        bk = min(c.block_k, pow2_at_least(channels if k_loop == "rsc" else self.k))
        group = c.group_m if cdiv(self.m, bm) > 1 and cdiv(self.n, bn) > 1 else 1
        return TritonConv2dConfig(bm, bn, bk, group, c.num_warps, c.num_stages, k_loop)

    def default(self) -> TritonConv2dConfig:
        k_loop = "rsc" if self.workload.c // self.workload.groups >= 32 else "flat"
        big = self.itemsize <= 2
        c = self.canonical(TritonConv2dConfig(128 if big else 64, 128 if big else 64, 32, 8, 4, 3, k_loop))
        return c if self.valid(c) else self.canonical(TritonConv2dConfig(32, 32, 32, 8, 4, 2, k_loop))

    def features(self, c: TritonConv2dConfig) -> list[float]:
        w = self.workload
        log = math.log2
        tiles = cdiv(self.m, c.block_m) * cdiv(self.n, c.block_n) * w.groups
        waste_k = (cdiv(w.c // w.groups, c.block_k) * c.block_k * w.r * w.s if c.k_loop == "rsc"
                   else cdiv(self.k, c.block_k) * c.block_k) / self.k
        return [log(self.m), log(self.n), log(self.k), w.groups, w.r * w.s, w.stride[0], w.layout == "nhwc",
                self.arch, log(c.block_m), log(c.block_n), log(c.block_k), c.group_m, c.num_warps, c.num_stages,
                c.k_loop == "rsc", log(tiles), tiles / self.sms, waste_k, c.block_m * c.block_n / (32 * c.num_warps)]


def _strides(w: Conv2dWorkload) -> tuple[dict, dict]:
    """Element strides of the input (n, c, h, w) and output (n, k, p, q) in their layout."""
    p, q = w.out_hw
    if w.layout == "nhwc":
        return ({"n": w.h * w.w * w.c, "c": 1, "h": w.w * w.c, "w": w.c},
                {"n": p * q * w.k, "k": 1, "p": q * w.k, "q": w.k})
    return ({"n": w.c * w.h * w.w, "c": w.h * w.w, "h": w.w, "w": 1}, {"n": w.k * p * q, "k": p * q, "p": q, "q": 1})


def _reduction_lines(w: Conv2dWorkload, c: TritonConv2dConfig, dot: str) -> list[str]:
    """The K loop accumulating `acc`; `img` (row offsets of each pixel's image), `ih0`, `iw0` are set."""
    dh, dw = w.dilation
    if c.k_loop == "rsc":
        return [
            "for r in range(R):",
            "    for s in range(S):",
            f"        ih = ih0 + r * {dh}",
            f"        iw = iw0 + s * {dw}",
            "        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)",
            "        at = img + ih * SXH + iw * SXW",
            "        for c0 in range(0, CG, BLOCK_K):",
            "            ch = c0 + tl.arange(0, BLOCK_K)",
            "            a = tl.load(input_ptr + at[:, None] + (g * CG + ch)[None, :] * SXC,",
            "                        mask=inside[:, None] & (ch[None, :] < CG), other=0.0)",
            "            b = tl.load(weight_ptr + wrow[None, :] + ch[:, None] * (R * S) + r * S + s,",
            "                        mask=ch[:, None] < CG, other=0.0)",
            f"            acc = tl.dot(a, b, acc{dot})",
        ]
    return [
        "for k0 in range(0, KG, BLOCK_K):",
        "    kk = k0 + tl.arange(0, BLOCK_K)  # ordered (r, s, c): c fastest, contiguous in NHWC",
        "    ch = kk % CG",
        "    rs = kk // CG",
        "    r = rs // S",
        "    s = rs % S",
        f"    ih = ih0[:, None] + r[None, :] * {dh}",
        f"    iw = iw0[:, None] + s[None, :] * {dw}",
        "    inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W) & (kk[None, :] < KG)",
        "    a = tl.load(input_ptr + img[:, None] + ih * SXH + iw * SXW + (g * CG + ch)[None, :] * SXC,",
        "                mask=inside, other=0.0)",
        "    b = tl.load(weight_ptr + wrow[None, :] + (ch * (R * S) + r * S + s)[:, None],",
        "                mask=kk[:, None] < KG, other=0.0)",
        f"    acc = tl.dot(a, b, acc{dot})",
    ]


def program(w: Conv2dWorkload, c: TritonConv2dConfig) -> Program:
    name = "autotile_conv2d"
    p, q = w.out_hw
    xs, os_ = _strides(w)
    (sh, sw), (ph, pw), _ = w.stride, w.padding, w.dilation
    m, kg = w.n * p * q, w.k // w.groups
    tiles_m, tiles_n = cdiv(m, c.block_m), cdiv(kg, c.block_n)
    constexprs = {"M": m, "KOUT": kg, "CG": w.c // w.groups, "KG": w.reduction, "H": w.h, "W": w.w, "P": p, "Q": q,
                  "R": w.r, "S": w.s, "SXN": xs["n"], "SXC": xs["c"], "SXH": xs["h"], "SXW": xs["w"],
                  "SON": os_["n"], "SOK": os_["k"], "SOP": os_["p"], "SOQ": os_["q"], "TILES_M": tiles_m,
                  "TILES_N": tiles_n, "BLOCK_M": c.block_m, "BLOCK_N": c.block_n, "BLOCK_K": c.block_k,
                  "GROUP_M": c.group_m}
    out_offsets = "(img_o[:, None] + oc[None, :] * SOK)"
    body = [
        "t = tl.program_id(0)",
        "g = tl.program_id(1)",
        *grouped_tile_lines("t"),
        "rm = pm * BLOCK_M + tl.arange(0, BLOCK_M)",
        "rn = pn * BLOCK_N + tl.arange(0, BLOCK_N)",
        "pix = rm % M  # rows past M wrap onto real pixels; they are never stored",
        "n = pix // (P * Q)",
        "oh = (pix % (P * Q)) // Q",
        "ow = pix % Q",
        f"ih0 = oh * {sh} - {ph}",
        f"iw0 = ow * {sw} - {pw}",
        "img = n.to(tl.int64) * SXN",
        "wrow = (g * KOUT + rn % KOUT) * (CG * R * S)  # weight rows (output channels), KCRS",
        "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
    ]
    body += _reduction_lines(w, c, dot_precision(w.dtype))
    body += [
        "oc = g * KOUT + rn",
        "img_o = n.to(tl.int64) * SON + oh * SOP + ow * SOQ",
        "mask = (rm[:, None] < M) & (rn[None, :] < KOUT)",
    ]
    body += epilogue_lines(w.epilogue, "acc", "oc", "rn < KOUT", out_offsets, "mask")
    body += [store_line(w.out_dtype, "acc", out_offsets, "mask", ptr="out_ptr")]
    tensors = tuple(w.operand_shapes())
    params = [f"{t}_ptr" for t in tensors] + [f"{k}: tl.constexpr" for k in constexprs]
    dtypes = tuple(w.input_dtype(t) for t in tensors[:-1]) + (w.out_dtype,)
    return Program(kernel_source(name, params, body), name, tensors, (), tuple(constexprs.items()),
                   (tiles_m * tiles_n, w.groups), c.num_warps, c.num_stages, dtypes)


Space = TritonConv2dSpace
