"""The CPU GEMM template: a packed, register-blocked GEMM with a fused epilogue, in TVM TensorIR.

Loop structure (BLIS-like), for a tile of mr x nr accumulators held in vector registers:

    for outer blocks (i0 over mc rows, j0 over nc columns; order and parallelism from the config)
      for k0 over K in chunks of kc          (korder "outer": partial sums per chunk)
        for inner tiles (i1, j1)
          for k1 in kc (unrolled by unroll_k)
            for i2 in mr (unrolled), j2 in nr (vectorized, vec lanes at a time)
              acc[i2, j2] += A[i, k] * B[k, j]
      epilogue (bias, activations, residual, cast) on the block or tile while it is in cache

Operands may be packed (B into nr-wide panels, A into mr-tall panels), padded with zeros to
whole tiles, so every shape runs the same unpredicated inner loop; the padding is cut off when
the result is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autotile.ops.gemm.workload import GemmWorkload
from autotile.ops.space import Config, ConfigSpace, has_bf16_dot, threads_of, vector_unit


@dataclass(frozen=True)
class GemmConfig(Config):
    mr: int = 6  # register tile rows
    nr: int = 32  # register tile columns (multiple of vec)
    vec: int = 16  # vector lanes per instruction group in the tile's j loop
    kc: int = 256  # K chunk
    mc_tiles: int = 8  # row block = mc_tiles * mr
    nc_tiles: int = 8  # column block = nc_tiles * nr
    outer: str = "ij"  # order of the outer block loops
    inner: str = "ij"  # order of the tile loops inside a block
    korder: str = "outer"  # "outer": K chunks around the tiles; "inner": each tile sums all of K
    pack_a: bool = False
    pack_b: bool = True
    unroll_k: int = 1
    parallel: str = "both"  # which outer loops are fused and run in parallel: both, first, none
    epilogue_at: str = "block"  # "block" or "tile" (tile needs korder "inner")
    fuse_epilogue: int = 99  # how many leading epilogue ops run in the kernel's write-back


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def balanced(total: int, step: int) -> int:
    """The block size <= step that splits total into the same number of blocks, evenly."""
    step = max(1, min(step, total))
    return _ceil_div(total, _ceil_div(total, step))


# The default's column block: two register tiles wide, a B panel of K x 2nr that stays in L2 while every row
# of A streams past it. Its row block: all the rows, unless the column blocks alone leave a thread short of
# WORK_PER_THREAD blocks. Against 8 x 8 tile blocks on Zen 4 (2 threads): fp32 GEMMs of 1-1024 rows 1.02-1.35x
# (a GPT block's four linears 1.12-1.24x), bf16 and weight-only int4/int8 up to 1.18x and 1.46x, none slower
# beyond noise (0.99x); mostly from B's panels read, or packed, once instead of once per row block.
DEFAULT_NC_TILES = 2
WORK_PER_THREAD = 4


def default_mc_tiles(m_tiles: int, n_blocks: int, threads: int) -> int:
    """Tiles per row block for the default: one block of all rows, split only to give each thread work."""
    row_blocks = min(m_tiles, _ceil_div(WORK_PER_THREAD * threads, n_blocks))
    return _ceil_div(m_tiles, row_blocks)


def applies(workload: GemmWorkload, fingerprint: dict | None = None) -> bool:
    """fp32 inputs (16-bit ones are gemm.lowp's)."""
    return workload.dtype == "float32"


class GemmSpace(ConfigSpace):
    config_type = GemmConfig
    template = "gemm.blis"

    def __init__(self, workload: GemmWorkload, vector_lanes: int = 16, vector_registers: int = 32, threads: int = 1):
        self.workload = workload
        self.lanes = vector_lanes
        self.registers = vector_registers
        self.threads = threads
        n_epi = len(workload.epilogue)
        self.domains = {
            "mr": [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16],
            "nr": [8, 16, 24, 32, 48, 64, 96, 128],
            "vec": [8, 16],
            "kc": [16, 32, 64, 128, 192, 256, 384, 512, 768, 1024],
            "mc_tiles": [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256],
            "nc_tiles": [1, 2, 4, 8, 16, 32, 64],
            "outer": ["ij", "ji"],
            "inner": ["ij", "ji"],
            "korder": ["outer", "inner"],
            "pack_a": [False, True],
            "pack_b": [False, True],
            "unroll_k": [1, 2, 4, 8],
            "parallel": ["both", "first", "none"],
            "epilogue_at": ["block", "tile"],
            "fuse_epilogue": list(range(n_epi + 1)),
        }

    takes_bf16_dot = False  # whether its constructor takes `bf16_dot`: a subclass with a vdpbf16ps mode

    @classmethod
    def for_device(cls, workload: GemmWorkload, fingerprint: dict | None = None) -> GemmSpace:
        extra = {"bf16_dot": has_bf16_dot(fingerprint)} if cls.takes_bf16_dot else {}
        return cls(workload, *vector_unit(fingerprint), threads=threads_of(fingerprint), **extra)

    def valid(self, c: GemmConfig) -> bool:
        if c.nr % c.vec:
            return False
        # Accumulators plus a row of B and a broadcast A value must fit in vector registers.
        return c.mr * _ceil_div(c.nr, self.lanes) + _ceil_div(c.nr, self.lanes) + 1 <= self.registers

    def canonical(self, c: GemmConfig) -> GemmConfig:
        """Clamp tiles to the problem and drop choices that do not change the program."""
        w = self.workload
        mr = min(c.mr, w.m)
        nr = min(c.nr, _ceil_div(w.n, c.vec) * c.vec)
        unroll_k = min(c.unroll_k, w.k)
        kc = balanced(w.k, c.kc)
        kc = _ceil_div(kc, unroll_k) * unroll_k
        m_tiles, n_tiles = _ceil_div(w.m, mr), _ceil_div(w.n, nr)
        mc_tiles, nc_tiles = balanced(m_tiles, c.mc_tiles), balanced(n_tiles, c.nc_tiles)
        m_blocks, n_blocks = _ceil_div(m_tiles, mc_tiles), _ceil_div(n_tiles, nc_tiles)
        korder = c.korder if kc < w.k else "inner"  # one chunk: both orders are the same loop
        outer = c.outer if (m_blocks > 1 and n_blocks > 1) else "ij"
        inner = c.inner if (mc_tiles > 1 and nc_tiles > 1) else "ij"
        parallel = c.parallel
        if m_blocks * n_blocks * w.batch == 1:
            parallel = "none"
        elif parallel == "first" and w.batch == 1 and (m_blocks if outer == "ij" else n_blocks) == 1:
            parallel = "none"
        fuse = min(c.fuse_epilogue, len(w.epilogue))
        epilogue_at = c.epilogue_at if korder == "inner" else "block"
        return GemmConfig(mr, nr, min(c.vec, nr), kc, mc_tiles, nc_tiles, outer, inner, korder,
                          c.pack_a, c.pack_b, unroll_k, parallel, epilogue_at, fuse)

    def default(self) -> GemmConfig:
        """A heuristic that is good on AVX-512 CPUs: 6x32 register tiles over B packed in panels,
        each tile summing all of K in registers (one chunk up to 1024), the epilogue fused per tile;
        blocks of all rows by two tiles' columns (see DEFAULT_NC_TILES)."""
        w = self.workload
        nr = 2 * self.lanes
        mr = 6 if self.lanes == 16 else 4
        n_blocks = _ceil_div(_ceil_div(w.n, nr), DEFAULT_NC_TILES) * w.batch
        mc_tiles = default_mc_tiles(_ceil_div(w.m, mr), n_blocks, self.threads)
        config = GemmConfig(mr=mr, nr=nr, vec=self.lanes, kc=1024, mc_tiles=mc_tiles, nc_tiles=DEFAULT_NC_TILES,
                            korder="inner", epilogue_at="tile", fuse_epilogue=len(w.epilogue))
        return self.canonical(config)

    def adopt(self, c: GemmConfig, fingerprint: dict | None) -> GemmConfig:
        lanes = vector_unit(fingerprint)[0]
        if lanes == self.lanes or c.vec != lanes:
            return c
        nr = c.nr // c.vec * self.lanes  # as many vectors per tile row
        adopted = replace(c, vec=self.lanes, nr=nr, nc_tiles=max(1, c.nc_tiles * c.nr // nr))
        return self._fit_rows(adopted, ("mr",)) or c

    def features(self, c: GemmConfig) -> list[float]:
        w = self.workload
        log = math.log2
        mc, nc = c.mc_tiles * c.mr, c.nc_tiles * c.nr
        m_pad = _ceil_div(w.m, mc) * mc
        n_pad = _ceil_div(w.n, nc) * nc
        k_pad = _ceil_div(w.k, c.kc) * c.kc
        blocks = _ceil_div(w.m, mc) * _ceil_div(w.n, nc) * w.batch
        return [
            log(w.m), log(w.n), log(w.k), log(w.batch), len(w.epilogue), float(w.trans_a), float(w.trans_b),
            c.mr, c.nr, c.vec, log(c.kc), c.mc_tiles, c.nc_tiles, log(mc), log(nc),
            c.outer == "ij", c.inner == "ij", c.korder == "outer", c.pack_a, c.pack_b, c.unroll_k,
            ("both", "first", "none").index(c.parallel), c.epilogue_at == "block", c.fuse_epilogue,
            c.mr * c.nr / self.lanes,  # accumulator registers
            (c.mr + c.nr) / (c.mr * c.nr),  # loads per FMA in the inner loop
            m_pad * n_pad * k_pad / (w.m * w.n * w.k),  # wasted work from padding
            log(blocks), blocks % 2,  # parallel work items and their balance on 2 cores
            log(c.kc * nc * 4), log(mc * c.kc * 4),  # B block and A block footprints in bytes
            float(bool(getattr(w, "prologue", ""))),  # A normalized as it is packed: a pass over A's rows first
        ]
