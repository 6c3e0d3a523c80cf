"""Quantized GEMM spaces. W8A8 has its own template (int8.py); weight-only (and fp8) use the GEMM template's
knobs, with B always packed per block, plus, for int4 with few rows of A, a decode kernel (`decode`), and,
for int4 with bfloat16 activations on CPUs with AVX512_BF16, vdpbf16ps tiles (`bf16_dot`: the weight is
repacked once, ahead of the calls, into tiles of 16 x dot_vectors columns; see weight_only_tvm.py).
Where bf16_dot is not offered (no AVX512_BF16, other widths, K not a whole number of groups), bfloat16
activations run the other kernels on A rounded to bfloat16.

The packed B panel is where the weight is dequantized, so it must be per block (cache-sized),
never the whole weight: `pack_b` is fixed and `schedule` packs at block level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.ops.gemm.blis import GemmConfig, GemmSpace, balanced
from autotile.ops.qgemm.workload import QGemmWorkload

DECODE_MAX_ACCUMULATORS = 8  # rows of A x output rows of a decode tile (two zmm sums each, no spills)
DECODE_MAX_M = 32  # the decode kernel is offered up to this many rows of A (token generation, small batches)


@dataclass(frozen=True)
class QGemmConfig(GemmConfig):
    # decode: few rows of A (token generation): a GEMV-like kernel that reads packed int4 bytes, splits
    # nibbles in registers and never packs B (weight_only_tvm.py). decode_rows: output rows per tile.
    decode: bool = False
    decode_rows: int = 4
    # bf16_dot: int4 x bfloat16 A on vdpbf16ps; a tile is dot_rows rows of A x dot_vectors x 16 columns,
    # unroll_k pairs of K per loop step.
    bf16_dot: bool = False
    dot_rows: int = 16
    dot_vectors: int = 1


def decode_rows_of_a(m: int, decode_rows: int) -> int:
    """Rows of A per decode tile: tiles of more rows would spill their sums out of registers."""
    return max(1, min(m, DECODE_MAX_ACCUMULATORS // decode_rows))


def decode_eligible(w: QGemmWorkload) -> bool:
    """int4 codes (two per byte), groups of whole 16-byte chunks, K a whole number of groups (a partial last
    group read past the row), and few rows of A (token generation)."""
    group = w.group_size or w.k
    return (not w.fp8 and not w.w8a8 and w.bits == 4 and w.k % 32 == 0 and group % 32 == 0 and w.k % group == 0
            and w.m <= DECODE_MAX_M)


DOT_MAX_ACCUMULATORS = 24  # dot_rows x dot_vectors sums in zmm registers (with the decoded pairs and A)


def bf16_dot_eligible(w: QGemmWorkload) -> bool:
    """int4 codes with bfloat16 activations, K a whole number of groups of whole pairs."""
    group = w.group_size or w.k
    return w.act_dtype == "bfloat16" and w.bits == 4 and w.k % 2 == 0 and group % 2 == 0 and w.k % group == 0


def applies(workload: QGemmWorkload, fingerprint: dict | None = None) -> bool:
    """Every scheme but W8A8 (qgemm.int8_vnni's)."""
    return not workload.w8a8


class QGemmSpace(GemmSpace):
    config_type = QGemmConfig
    template = "qgemm.weight_only"
    takes_bf16_dot = True

    def __init__(self, workload: QGemmWorkload, vector_lanes: int = 16, vector_registers: int = 32,
                 bf16_dot: bool = False, threads: int = 1):
        super().__init__(workload, vector_lanes, vector_registers, threads)
        self.domains["pack_b"] = [True]
        self.decodes = decode_eligible(workload) and vector_lanes == 16
        self.domains["decode"] = [False, True] if self.decodes else [False]
        self.domains["decode_rows"] = [1, 2, 4, 8]
        # Only where the CPU has AVX512_BF16: built for one without, vdpbf16ps aborts inside LLVM.
        self.bf16_dots = bf16_dot and bf16_dot_eligible(workload) and vector_lanes == 16
        self.domains["bf16_dot"] = [False, True] if self.bf16_dots else [False]
        self.domains["dot_rows"] = [1, 2, 4, 6, 8, 12, 16, 24]
        self.domains["dot_vectors"] = [1, 2, 4, 8]

    def valid(self, c: QGemmConfig) -> bool:
        if getattr(c, "bf16_dot", False):
            return self.bf16_dots and c.dot_rows * c.dot_vectors <= DOT_MAX_ACCUMULATORS
        if getattr(c, "decode", False):
            return self.decodes and c.decode_rows <= DECODE_MAX_ACCUMULATORS
        return super().valid(c)

    def canonical(self, c: GemmConfig) -> QGemmConfig:
        if getattr(c, "bf16_dot", False) and self.bf16_dots:  # the GEMM and decode knobs do not apply
            w = self.workload
            rows = balanced(w.m, c.dot_rows)  # tiles of equal height: 24 rows are 2 x 12, not 16 + 8 padded
            vectors = max(1, min(c.dot_vectors, -(-w.n // 16)))
            pairs = (w.group_size or w.k) // 2
            unroll = max(1, min(c.unroll_k, 8))
            while pairs % unroll:
                unroll //= 2
            return QGemmConfig(bf16_dot=True, dot_rows=rows, dot_vectors=vectors, unroll_k=unroll)
        decode = getattr(c, "decode", False) and self.decodes
        if decode:  # the GEMM knobs do not apply: one program per decode_rows
            rows = c.decode_rows
            while rows > 1 and rows > self.workload.n:
                rows //= 2
            return QGemmConfig(decode=True, decode_rows=rows)
        c = super().canonical(c)
        return QGemmConfig(**{**c.to_dict(), "pack_b": True, "decode": False, "decode_rows": 4, "bf16_dot": False,
                              "dot_rows": 16, "dot_vectors": 1})

    def default(self) -> QGemmConfig:
        if self.bf16_dots:  # few rows of A: one tile of all of them; more: tiles of 16 rows
            m = self.workload.m
            vectors = 8 if m == 1 else 4 if m <= 4 else 1  # more rows: one vector, A broadcast from memory
            return self.canonical(QGemmConfig(bf16_dot=True, dot_rows=min(m, 16), dot_vectors=vectors, unroll_k=2))
        if self.decodes and self.workload.m <= 8:
            return self.canonical(QGemmConfig(decode=True, decode_rows=max(1, 8 // self.workload.m)))
        # A kc bounded chunk keeps the dequantized panel (kc x nc floats) in L2.
        return self.canonical(QGemmConfig(**{**super().default().to_dict(), "kc": 256, "korder": "outer",
                                            "epilogue_at": "block"}))

    def features(self, c: QGemmConfig) -> list[float]:
        w = self.workload
        return [*super().features(c), w.bits, math.log2(w.group_size or w.k), float(w.asymmetric), float(w.fp8),
                float(c.decode), c.decode_rows, float(w.act_dtype == "bfloat16"), float(c.bf16_dot), c.dot_rows,
                c.dot_vectors]
