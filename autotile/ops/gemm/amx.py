"""The bfloat16 GEMM on AMX tiles (Intel Xeon since Sapphire Rapids): its config space.

A micro-kernel keeps tiles_m x tiles_n float32 C tiles (16 x 16 each) in tile registers while it runs K in steps of
32 (one A tile per 16 rows, one B tile per 16 columns, a `tdpbf16ps` per C tile); 8 tile registers bound
tiles_m * tiles_n + tiles_m + tiles_n. Around it: micro-kernels per block (mc_tiles x nc_tiles), the block order,
the parallel split, K chunks (the C tiles are stored to the block's buffer and reloaded between chunks), and where
the epilogue runs (per micro-kernel, from its C tiles stored to a small buffer, or per block). A and B are packed
as their bfloat16 bits, B in 16-column x 2-K panels (made once for a constant weight), as for `vdpbf16ps`.

Offered only where the CPU has amx_tile and amx_bf16 and Linux granted this process the tile state
(autotile.codegen.tvm.amx_permission), or where the instructions are emulated (AUTOTILE_AMX_EMULATE=1, for tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.codegen.tvm import amx_permission
from autotile.codegen.tvm.amx import DOTS, ROW_BYTES, TILE_ROWS, tile_budget_ok
from autotile.ops.gemm.blis import _ceil_div, balanced
from autotile.ops.gemm.workload import GemmWorkload
from autotile.ops.space import Config, ConfigSpace


@dataclass(frozen=True)
class AmxGemmConfig(Config):
    tiles_m: int = 2  # C tiles down a micro-kernel (16 rows each)
    tiles_n: int = 2  # C tiles across (16 columns each)
    unroll_k: int = 1  # K steps (32 values each) per iteration of the tile loop
    kc: int = 1024  # K chunk
    mc_tiles: int = 2  # micro-kernels per block, down
    nc_tiles: int = 4  # micro-kernels per block, across
    outer: str = "ij"
    inner: str = "ij"
    korder: str = "inner"  # "inner": each micro-kernel runs all its K chunks; "outer": chunks around the block
    parallel: str = "both"
    epilogue_at: str = "tile"  # "tile" (needs korder inner) or "block"
    fuse_epilogue: int = 99


def applies(workload: GemmWorkload, fingerprint: dict | None = None) -> bool:
    """One bfloat16 GEMM where AMX's bf16 tiles run (or are emulated)."""
    return (workload.dtype == "bfloat16" and workload.batch == 1
            and amx_permission.tiles_usable(fingerprint, "amx_bf16"))


def preferred(workload: GemmWorkload) -> bool:
    return True  # where AMX runs at all, its default beats the AVX-512 templates' defaults


class AmxGemmSpace(ConfigSpace):
    """The tile GEMM's knobs for one tile dot product (`dot`, a key of codegen.tvm.amx.DOTS): its K step sets
    the K chunks. Other element types (W8A8 on int8 tiles, qgemm.int8_amx) subclass it with their own dot,
    config type and template name."""

    config_type = AmxGemmConfig
    template = "gemm.amx"
    dot = "bf16"

    def __init__(self, workload):
        self.workload = workload
        self.k_step = DOTS[self.dot].k_step  # K values one tile row holds (32 bfloat16, 64 int8)
        self.domains = {
            "tiles_m": [1, 2, 3],
            "tiles_n": [1, 2, 3],
            "unroll_k": [1, 2, 4],
            "kc": [self.k_step * 2 ** e for e in range(1, 8)],  # the same bytes of K whatever the element type
            "mc_tiles": [1, 2, 3, 4, 6, 8, 16],
            "nc_tiles": [1, 2, 3, 4, 6, 8, 16],
            "outer": ["ij", "ji"],
            "inner": ["ij", "ji"],
            "korder": ["inner", "outer"],
            "parallel": ["both", "first", "none"],
            "epilogue_at": ["tile", "block"],
            "fuse_epilogue": list(range(len(workload.epilogue) + 1)),
        }

    @classmethod
    def for_device(cls, workload, fingerprint: dict | None = None) -> AmxGemmSpace:
        return cls(workload)

    def valid(self, c: AmxGemmConfig) -> bool:
        return tile_budget_ok(c.tiles_m, c.tiles_n)

    def canonical(self, c: AmxGemmConfig) -> AmxGemmConfig:
        w, k_step = self.workload, self.k_step
        tiles_m = min(c.tiles_m, _ceil_div(w.m, TILE_ROWS))
        tiles_n = min(c.tiles_n, _ceil_div(w.n, TILE_ROWS))
        steps = _ceil_div(w.k, k_step)
        chunk = balanced(steps, max(1, c.kc // k_step))  # K steps per chunk
        unroll = min(c.unroll_k, chunk)
        while chunk % unroll:  # unrolled steps that pad K past its chunks would be wasted tile products
            unroll //= 2
        kc = chunk * k_step
        m_kernels, n_kernels = _ceil_div(w.m, TILE_ROWS * tiles_m), _ceil_div(w.n, TILE_ROWS * tiles_n)
        mc_tiles, nc_tiles = balanced(m_kernels, c.mc_tiles), balanced(n_kernels, c.nc_tiles)
        m_blocks, n_blocks = _ceil_div(m_kernels, mc_tiles), _ceil_div(n_kernels, nc_tiles)
        korder = c.korder if kc < steps * k_step else "inner"
        outer = c.outer if (m_blocks > 1 and n_blocks > 1) else "ij"
        inner = c.inner if (mc_tiles > 1 and nc_tiles > 1) else "ij"
        parallel = c.parallel
        if m_blocks * n_blocks == 1:
            parallel = "none"
        elif parallel == "first" and (m_blocks if outer == "ij" else n_blocks) == 1:
            parallel = "none"
        epilogue_at = c.epilogue_at if korder == "inner" else "block"
        return self.config_type(tiles_m, tiles_n, unroll, kc, mc_tiles, nc_tiles, outer, inner, korder, parallel,
                                epilogue_at, min(c.fuse_epilogue, len(w.epilogue)))

    def default(self) -> AmxGemmConfig:
        """2 x 2 C tiles (all eight registers), K in chunks of 2 KiB (all of K for most layers) per micro-kernel,
        the epilogue fused per micro-kernel."""
        return self.canonical(self.config_type(kc=32 * self.k_step,
                                               fuse_epilogue=len(self.workload.epilogue)))

    def features(self, c: AmxGemmConfig) -> list[float]:
        w = self.workload
        log = math.log2
        size = ROW_BYTES // self.k_step  # bytes of an element
        mc, nc = c.mc_tiles * c.tiles_m * TILE_ROWS, c.nc_tiles * c.tiles_n * TILE_ROWS
        m_pad, n_pad = _ceil_div(w.m, mc) * mc, _ceil_div(w.n, nc) * nc
        k_pad = _ceil_div(w.k, c.kc) * c.kc
        blocks = _ceil_div(w.m, mc) * _ceil_div(w.n, nc)
        return [
            log(w.m), log(w.n), log(w.k), len(w.epilogue), float(w.trans_a), float(w.trans_b),
            c.tiles_m, c.tiles_n, c.unroll_k, log(c.kc), c.mc_tiles, c.nc_tiles, log(mc), log(nc),
            c.outer == "ij", c.inner == "ij", c.korder == "outer", ("both", "first", "none").index(c.parallel),
            c.epilogue_at == "block", c.fuse_epilogue,
            (c.tiles_m + c.tiles_n) / (c.tiles_m * c.tiles_n),  # tile loads per tile product
            m_pad * n_pad * k_pad / (w.m * w.n * w.k),  # wasted work from padding
            log(blocks), blocks % 2,
            log(c.kc * nc * size), log(mc * c.kc * size),  # B block and A block footprints in bytes
        ]
