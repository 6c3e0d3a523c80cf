"""Quantized GEMM spaces. W8A8 has its own (qgemm_int8.py); weight-only uses the GEMM template's
knobs, with B always packed per block.

The packed B panel is where the weight is dequantized, so it must be per block (cache-sized),
never the whole weight: `pack_b` is fixed and `schedule` packs at block level.
"""

from __future__ import annotations

import math

from autotile.ir.qgemm import QGemmWorkload
from autotile.kernels.gemm import GemmConfig, GemmSpace


class QGemmSpace(GemmSpace):
    @classmethod
    def for_device(cls, workload: QGemmWorkload, fingerprint: dict | None = None):
        if workload.w8a8:  # a different template: VNNI int8 tiles
            from autotile.kernels.qgemm_int8 import Int8GemmSpace

            return Int8GemmSpace.for_device(workload, fingerprint)
        return super().for_device(workload, fingerprint)

    def __init__(self, workload: QGemmWorkload, vector_lanes: int = 16, vector_registers: int = 32):
        super().__init__(workload, vector_lanes, vector_registers)
        self.domains["pack_b"] = [True]

    def canonical(self, c: GemmConfig) -> GemmConfig:
        c = super().canonical(c)
        return GemmConfig(**{**c.to_dict(), "pack_b": True})

    def default(self) -> GemmConfig:
        # A kc bounded chunk keeps the dequantized panel (kc x nc floats) in L2.
        return self.canonical(GemmConfig(**{**super().default().to_dict(), "kc": 256, "korder": "outer",
                                            "epilogue_at": "block"}))

    def features(self, c: GemmConfig) -> list[float]:
        w = self.workload
        return [*super().features(c), w.bits, math.log2(w.group_size or w.k), float(w.asymmetric)]
