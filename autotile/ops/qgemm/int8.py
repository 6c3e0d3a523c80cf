"""The W8A8 int8 GEMM space: VNNI register tiles of mr rows x nrv 16-lane int32 vectors.

The kernel quantizes A per row, reads W from 16x4 byte panels (what `vpdpbusd` reads, made once per weight
with its column sums, int8_tvm.prepacked_operands), and sums uint8 x int8 products in int32; the +128
shift that makes A unsigned is undone with W's column sums. Knobs: the register tile (mr x nrv), tiles per
block (mc_tiles x nc_tiles), block order and parallel loops, K unrolling, K blocking and the tile order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.ops.gemm.blis import _ceil_div, balanced
from autotile.ops.qgemm.workload import QGemmWorkload
from autotile.ops.space import Config, ConfigSpace, has_vnni

LANES = 16  # int32 lanes of one vpdpbusd


@dataclass(frozen=True)
class Int8GemmConfig(Config):
    mr: int = 4  # rows of the register tile
    nrv: int = 4  # 16-column vectors of the register tile
    mc_tiles: int = 4  # row block = mc_tiles * mr
    nc_tiles: int = 4  # column block = nc_tiles * nrv * 16
    outer: str = "ij"
    parallel: str = "both"
    unroll_k: int = 1  # groups of 4 bytes of K per unrolled step
    k_block: int = 0  # groups of 4 bytes of K per block (outside the tiles of a row x column block); 0: all K
    tile_order: str = "ij"  # order of the register tiles inside a block: rows then columns, or columns first


def applies(workload: QGemmWorkload, fingerprint: dict | None = None) -> bool:
    """W8A8 (int8 activations times int8 weights) on a CPU with VNNI."""
    return workload.w8a8 and has_vnni(fingerprint)


def applies_without_vnni(workload: QGemmWorkload, fingerprint: dict | None = None) -> bool:
    """W8A8 on a CPU without VNNI (AVX2: Zen 3)."""
    return workload.w8a8 and not has_vnni(fingerprint)


class Int8GemmSpace(ConfigSpace):
    config_type = Int8GemmConfig
    template = "qgemm.int8_vnni"

    def __init__(self, workload: QGemmWorkload, vector_registers: int = 32):
        self.workload = workload
        self.registers = vector_registers
        self.domains = {
            "mr": [1, 2, 3, 4, 5, 6, 7, 8, 10, 12],
            "nrv": [1, 2, 3, 4],
            "mc_tiles": [1, 2, 4, 8, 16, 32],
            "nc_tiles": [1, 2, 4, 8, 16],
            "outer": ["ij", "ji"],
            "parallel": ["both", "first", "none"],
            "unroll_k": [1, 2, 4],
            "k_block": [0, 16, 32, 64, 128],
            "tile_order": ["ij", "ji"],
        }

    @classmethod
    def for_device(cls, workload: QGemmWorkload, fingerprint: dict | None = None) -> Int8GemmSpace:
        return cls(workload)

    def valid(self, c: Int8GemmConfig) -> bool:
        # Accumulators, one row of W panels and the broadcast A word fit in the zmm registers.
        return c.mr * c.nrv + c.nrv + 1 <= self.registers

    def canonical(self, c: Int8GemmConfig) -> Int8GemmConfig:
        w = self.workload
        mr = min(c.mr, w.m)
        nrv = min(c.nrv, _ceil_div(w.n, LANES))
        m_tiles, n_tiles = _ceil_div(w.m, mr), _ceil_div(w.n, nrv * LANES)
        mc_tiles, nc_tiles = balanced(m_tiles, c.mc_tiles), balanced(n_tiles, c.nc_tiles)
        m_blocks, n_blocks = _ceil_div(m_tiles, mc_tiles), _ceil_div(n_tiles, nc_tiles)
        outer = c.outer if m_blocks > 1 and n_blocks > 1 else "ij"
        parallel = c.parallel
        if m_blocks * n_blocks == 1:
            parallel = "none"
        elif parallel == "first" and (m_blocks if outer == "ij" else n_blocks) == 1:
            parallel = "none"
        groups = _ceil_div(w.k, 4)  # the packed weight's K groups: the unrolled steps divide them
        unroll_k = max(u for u in (1, 2, 4) if u <= c.unroll_k and groups % u == 0)
        # K blocks divide K's groups (and hold whole unrolled steps); one block is no blocking.
        k_block = c.k_block if 0 < c.k_block < groups and groups % c.k_block == 0 else 0
        k_block = k_block if k_block % unroll_k == 0 else 0
        tile_order = c.tile_order if mc_tiles > 1 and nc_tiles > 1 else "ij"
        return self.config_type(mr, nrv, mc_tiles, nc_tiles, outer, parallel, unroll_k, k_block, tile_order)

    def default(self) -> Int8GemmConfig:
        return self.canonical(self.config_type(mr=4, nrv=4, mc_tiles=8, nc_tiles=4, unroll_k=4))

    def features(self, c: Int8GemmConfig) -> list[float]:
        w = self.workload
        mc, nc = c.mc_tiles * c.mr, c.nc_tiles * c.nrv * LANES
        blocks = _ceil_div(w.m, mc) * _ceil_div(w.n, nc)
        padded = (_ceil_div(w.m, mc) * mc) * (_ceil_div(w.n, nc) * nc) / (w.m * w.n)
        return [math.log2(w.m), math.log2(w.n), math.log2(w.k), len(w.epilogue), c.mr, c.nrv, c.mc_tiles,
                c.nc_tiles, math.log2(mc), math.log2(nc), c.outer == "ij", ("both", "first", "none").index(c.parallel),
                c.unroll_k, c.mr * c.nrv, (c.mr + c.nrv) / (c.mr * c.nrv), padded, math.log2(blocks), blocks % 2,
                float(w.outlier_threshold > 0), math.log2(c.k_block or _ceil_div(w.k, 4)), c.tile_order == "ij",
                # bytes of the A and W slivers one tile reads per K block (what must stay in L1)
                math.log2((c.mr + c.nrv * LANES) * 4 * (c.k_block or _ceil_div(w.k, 4)))]


@dataclass(frozen=True)
class Int8Avx2Config(Int8GemmConfig):
    """qgemm.int8_avx2's: the same knobs, a type of its own (a record is read back only by its template)."""


class Int8Avx2Space(Int8GemmSpace):
    """The W8A8 kernel on AVX2 without VNNI: the same panels and tiles, each 16-lane int32 vector two ymm registers
    and the dot product vpmaddwd (intrinsics.AVX2_DOT_16X4)."""

    config_type = Int8Avx2Config
    template = "qgemm.int8_avx2"

    def __init__(self, workload: QGemmWorkload, vector_registers: int = 16):
        super().__init__(workload, vector_registers)

    def valid(self, c: Int8GemmConfig) -> bool:
        # Accumulators (two ymm per 16 lanes) and about four more: a 16-column group's four extended W pair vectors
        # stay live across the rows, A's two broadcast pairs come and go (LLVM spills one accumulator at 4 x 1).
        return 2 * c.mr * c.nrv + 4 <= self.registers

    def default(self) -> Int8GemmConfig:
        # 4 x 1 vectors: 68 GOP/s at 128x768x768 on Zen 3, where 3 x 2 (its accumulators spilled) ran at 52
        return self.canonical(self.config_type(mr=4, nrv=1, mc_tiles=8, nc_tiles=4, unroll_k=4))
