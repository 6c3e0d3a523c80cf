"""The CPU attention template: flash-style scaled dot-product attention, never materializing seq_q x seq_kv.

    parallel over (batch, head, q block)             (or only (batch, head): q blocks run in order)
      for each key block a row of the q block sees   (causal: blocks above the diagonal are skipped)
        S = (scale Q) K^T                            rows_s x block_kv accumulators, vectorized over keys
        mask                                         only on diagonal blocks and the padded last block
        m' = max(m, rowmax S); P = exp(S - m'); l = l exp(m - m') + rowsum P
        O = O exp(m - m') + P V                      rows_o x d_tile accumulators, vectorized over head_dim
      out = O / l

K^T is packed into block_kv-wide panels, either once for the whole tensor ("global") or per key
block inside each q block ("block", no extra memory). Both lengths are padded to whole blocks.
bfloat16 inputs are widened to float32 in those packs, and V with K (once, or per key block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autotile.ops.attention.workload import AttentionWorkload
from autotile.ops.space import Config, ConfigSpace, vector_unit

NEG = -1e30  # "minus infinity" for masked scores and the initial running max: finite, so max - max is 0, not NaN


@dataclass(frozen=True)
class AttentionConfig(Config):
    block_q: int = 64  # query rows per block (a parallel work item)
    block_kv: int = 64  # keys per block (multiple of vec)
    vec: int = 16  # lanes along the keys in S and softmax
    rows_s: int = 4  # register tile rows of S = Q K^T
    rows_o: int = 4  # register tile rows of O += P V
    d_tile: int = 64  # register tile columns of O (a divisor of head_dim)
    pack_k: str = "block"  # "global" or "block"
    unroll_d: int = 1  # unroll of the head_dim sum in S
    unroll_kv: int = 1  # unroll of the key sum in O
    parallel: str = "bhq"  # "bhq": every (batch, head, q block) is a work item; "bh": q blocks in order

    @property
    def vec_d(self) -> int:
        """Lanes of the head_dim vectors: at most vec, dividing d_tile."""
        return math.gcd(self.vec, self.d_tile)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _largest_divisor(n: int, at_most: int, step: int = 1) -> int:
    """The largest multiple of step that divides n and is <= at_most (step itself if none)."""
    for d in range(min(at_most, n), 0, -1):
        if n % d == 0 and d % step == 0:
            return d
    return step


class AttentionSpace(ConfigSpace):
    config_type = AttentionConfig
    template = "attention.flash"

    def __init__(self, workload: AttentionWorkload, vector_lanes: int = 16, vector_registers: int = 32):
        self.workload = workload
        self.lanes = vector_lanes
        self.registers = vector_registers
        self.domains = {
            "block_q": [8, 16, 32, 48, 64, 96, 128, 192, 256],
            "block_kv": [16, 32, 48, 64, 96, 128, 192, 256],
            "vec": [8, 16] if vector_lanes >= 16 else [8],
            "rows_s": [1, 2, 3, 4, 6, 8],
            "rows_o": [1, 2, 3, 4, 6, 8],
            "d_tile": [16, 32, 48, 64, 96, 128, 256],
            "pack_k": ["global", "block"],
            "unroll_d": [1, 2, 4, 8],
            "unroll_kv": [1, 2, 4],
            "parallel": ["bhq", "bh"],
        }

    @classmethod
    def for_device(cls, workload: AttentionWorkload, fingerprint: dict | None = None) -> AttentionSpace:
        return cls(workload, *vector_unit(fingerprint))

    def _vectors(self, width: int, lanes: int) -> int:
        """Machine registers one row of `width` floats takes, `lanes` at a time."""
        return _ceil_div(width, lanes) * _ceil_div(lanes, self.lanes)

    def valid(self, c: AttentionConfig) -> bool:
        """Judged on the canonical form: blocks and tiles are clamped to the problem there first."""
        c = self.canonical(c)
        if c.block_kv % c.vec or c.block_q % c.rows_s or c.block_q % c.rows_o or self.workload.head_dim % c.d_tile:
            return False
        # Accumulators, one row of the other operand and a broadcast value must fit in registers.
        s_row, o_row = self._vectors(c.block_kv, c.vec), self._vectors(c.d_tile, c.vec_d)
        return (c.rows_s + 1) * s_row + 1 <= self.registers and (c.rows_o + 1) * o_row + 1 <= self.registers

    def canonical(self, c: AttentionConfig) -> AttentionConfig:
        """Clamp blocks to the problem and drop choices that do not change the program."""
        w = self.workload
        vec = min(c.vec, self.lanes)
        block_kv = min(c.block_kv, _ceil_div(w.seq_kv, vec) * vec)
        block_q = min(c.block_q, w.seq_q)
        rows_s, rows_o = min(c.rows_s, block_q), min(c.rows_o, block_q)
        # Round the q block up to whole register tiles (padded rows are never written).
        tile = rows_s * rows_o // math.gcd(rows_s, rows_o)
        block_q = _ceil_div(block_q, tile) * tile
        d_tile = _largest_divisor(w.head_dim, c.d_tile)
        unroll_d = math.gcd(c.unroll_d, w.head_dim)
        unroll_kv = min(c.unroll_kv, block_kv)
        n_q = _ceil_div(w.seq_q, block_q)
        parallel = "bhq" if n_q == 1 else c.parallel  # one q block per head: the same loop
        pack_k = c.pack_k
        if n_q == 1 and w.heads == w.kv_heads:
            pack_k = "block"  # each K block is read by a single q block: packing it all first only costs memory
        return AttentionConfig(block_q, block_kv, vec, rows_s, rows_o, d_tile, pack_k, unroll_d, unroll_kv, parallel)

    def default(self) -> AttentionConfig:
        """Heuristic: 64 x 64 blocks; S tiles of 4 rows x 64 keys, O tiles of 4 rows x 64 of head_dim; K^T packed
        once for all q blocks ("global": one extra copy of K), which measured 1.10-1.21x the per-block packing on
        1x12x512x64, causal 1x8x1024x64 and causal GQA 1x32x2048x128 (Zen 4, 2 threads)."""
        d_tile = 64 if self.lanes == 16 else 32
        rows = 4 if self.lanes == 16 else 3
        config = AttentionConfig(block_q=64, block_kv=4 * self.lanes, vec=self.lanes, rows_s=rows, rows_o=rows,
                                 d_tile=d_tile, pack_k="global", parallel="bhq")
        config = self.canonical(config)
        if not self.valid(config):  # tiny head_dim or tile clamps: shrink the register tiles
            config = self.canonical(AttentionConfig(block_q=config.block_q, block_kv=config.block_kv,
                                                    vec=config.vec, rows_s=1, rows_o=1, d_tile=config.d_tile))
        return config

    def adopt(self, c: AttentionConfig, fingerprint: dict | None) -> AttentionConfig:
        lanes = vector_unit(fingerprint)[0]
        if lanes == self.lanes or c.vec != lanes:
            return c
        adopted = self.canonical(replace(  # as many vectors per S and O row
            c, vec=self.lanes, block_kv=c.block_kv * self.lanes // lanes, d_tile=c.d_tile * self.lanes // lanes))
        return self._fit_rows(adopted, ("rows_s", "rows_o")) or c

    def features(self, c: AttentionConfig) -> list[float]:
        w = self.workload
        log = math.log2
        n_q, n_kv = _ceil_div(w.seq_q, c.block_q), _ceil_div(w.seq_kv, c.block_kv)
        items = w.batch * w.heads * (n_q if c.parallel == "bhq" else 1)
        padded_pairs = n_q * c.block_q * n_kv * c.block_kv
        return [
            log(w.batch), log(w.heads), log(w.seq_q), log(w.seq_kv), log(w.head_dim), w.heads / w.kv_heads,
            float(w.causal), w.pairs / (w.seq_q * w.seq_kv),
            float(w.dtype != "float32"),  # 16-bit operands: widened in the packs, so the inner loops cost the same
            log(c.block_q), log(c.block_kv), c.vec, c.rows_s, c.rows_o, log(c.d_tile), c.pack_k == "global",
            c.unroll_d, c.unroll_kv, c.parallel == "bhq",
            c.rows_s * c.block_kv / self.lanes, c.rows_o * c.d_tile / self.lanes,  # accumulator registers
            (c.rows_s + c.block_kv) / (c.rows_s * c.block_kv),  # loads per FMA in S
            (c.rows_o + c.d_tile) / (c.rows_o * c.d_tile),  # loads per FMA in O
            padded_pairs / (w.seq_q * w.seq_kv),  # wasted work from padding
            log(items), items % 2,  # parallel work items and their balance on 2 cores
            log(4 * (c.block_q * (2 * w.head_dim + c.block_kv) + c.block_kv * w.head_dim)),  # block footprint, bytes
        ]
