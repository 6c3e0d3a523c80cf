"""Quantized GEMM spaces. W8A8 has its own (qgemm_int8.py); weight-only (and fp8) use the GEMM template's
knobs, with B always packed per block, plus, for int4 with few rows of A, a decode kernel (`decode`).

The packed B panel is where the weight is dequantized, so it must be per block (cache-sized),
never the whole weight: `pack_b` is fixed and `schedule` packs at block level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.ir.qgemm import QGemmWorkload
from autotile.kernels.gemm import GemmConfig, GemmSpace

DECODE_MAX_ACCUMULATORS = 8  # rows of A x output rows of a decode tile (two zmm sums each, no spills)
DECODE_MAX_M = 32  # the decode kernel is offered up to this many rows of A (token generation, small batches)


@dataclass(frozen=True)
class QGemmConfig(GemmConfig):
    # decode: few rows of A (token generation): a GEMV-like kernel that reads packed int4 bytes, splits
    # nibbles in registers and never packs B (kernels/qgemm_tvm.py). decode_rows: output rows per tile.
    decode: bool = False
    decode_rows: int = 4


def decode_rows_of_a(m: int, decode_rows: int) -> int:
    """Rows of A per decode tile: tiles of more rows would spill their sums out of registers."""
    return max(1, min(m, DECODE_MAX_ACCUMULATORS // decode_rows))


def decode_eligible(w: QGemmWorkload) -> bool:
    """int4 codes (two per byte), groups of whole 16-byte chunks, and few rows of A (token generation)."""
    return (not w.fp8 and not w.w8a8 and w.bits == 4 and w.k % 32 == 0 and (w.group_size or w.k) % 32 == 0
            and w.m <= DECODE_MAX_M)


class QGemmSpace(GemmSpace):
    config_type = QGemmConfig

    @classmethod
    def for_device(cls, workload: QGemmWorkload, fingerprint: dict | None = None):
        if workload.w8a8:  # a different template: VNNI int8 tiles
            from autotile.kernels.qgemm_int8 import Int8GemmSpace

            return Int8GemmSpace.for_device(workload, fingerprint)
        return super().for_device(workload, fingerprint)

    def __init__(self, workload: QGemmWorkload, vector_lanes: int = 16, vector_registers: int = 32):
        super().__init__(workload, vector_lanes, vector_registers)
        self.domains["pack_b"] = [True]
        self.decodes = decode_eligible(workload) and vector_lanes == 16
        self.domains["decode"] = [False, True] if self.decodes else [False]
        self.domains["decode_rows"] = [1, 2, 4, 8]

    def valid(self, c: QGemmConfig) -> bool:
        if getattr(c, "decode", False):
            return self.decodes and c.decode_rows <= DECODE_MAX_ACCUMULATORS
        return super().valid(c)

    def canonical(self, c: GemmConfig) -> QGemmConfig:
        decode = getattr(c, "decode", False) and self.decodes
        if decode:  # the GEMM knobs do not apply: one program per decode_rows
            rows = c.decode_rows
            while rows > 1 and rows > self.workload.n:
                rows //= 2
            return QGemmConfig(decode=True, decode_rows=rows)
        c = super().canonical(c)
        return QGemmConfig(**{**c.to_dict(), "pack_b": True, "decode": False, "decode_rows": 4})

    def default(self) -> QGemmConfig:
        if self.decodes and self.workload.m <= 8:
            return self.canonical(QGemmConfig(decode=True, decode_rows=max(1, 8 // self.workload.m)))
        # A kc bounded chunk keeps the dequantized panel (kc x nc floats) in L2.
        return self.canonical(QGemmConfig(**{**super().default().to_dict(), "kc": 256, "korder": "outer",
                                            "epilogue_at": "block"}))

    def features(self, c: QGemmConfig) -> list[float]:
        w = self.workload
        return [*super().features(c), w.bits, math.log2(w.group_size or w.k), float(w.asymmetric), float(w.fp8),
                float(c.decode), c.decode_rows]
