"""The GEMM space for bfloat16 and float16 inputs: the fp32 GEMM's knobs plus where the inputs widen.

Products are summed in float32 whatever the mode (`mode`):
- "convert_pack": the packs widen A and B to float32 once; the inner loop is the fp32 GEMM's.
- "convert_inner": the packs keep 16-bit values (half the bytes) and the inner loop widens them
  (vcvtph2ps for float16, a shift for bfloat16).
- "dpbf16": bfloat16 on CPUs with AVX512_BF16; vdpbf16ps tiles over A and B packed in pairs along K
  (lowp_tvm.py). Offered only where the device's flags include avx512_bf16, so other
  CPUs get the conversion modes, never an illegal instruction.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotile.ops.gemm.blis import GemmConfig, GemmSpace
from autotile.ops.gemm.workload import GemmWorkload

MODES = ("convert_pack", "convert_inner", "dpbf16")


@dataclass(frozen=True)
class LowpGemmConfig(GemmConfig):
    mode: str = "convert_pack"


def applies(workload: GemmWorkload, fingerprint: dict | None = None) -> bool:
    """bfloat16 and float16 inputs; a layernorm prologue in the vdpbf16ps mode only (bfloat16, AVX512_BF16), whose
    bits pack computes it."""
    if workload.prologue:
        flags = set((fingerprint or {}).get("flags", ()))
        return workload.dtype == "bfloat16" and workload.batch == 1 and {"avx512f", "avx512_bf16"} <= flags
    return workload.dtype != "float32"


class LowpGemmSpace(GemmSpace):
    config_type = LowpGemmConfig
    template = "gemm.lowp"
    takes_bf16_dot = True

    def __init__(self, workload: GemmWorkload, vector_lanes: int = 16, vector_registers: int = 32,
                 bf16_dot: bool = False, threads: int = 1):
        super().__init__(workload, vector_lanes, vector_registers, threads)
        # The bf16 tiles are written for one (unbatched) GEMM of 16-lane vectors.
        self.bf16_dot = bf16_dot and workload.dtype == "bfloat16" and workload.batch == 1 and vector_lanes == 16
        self.domains["mode"] = list(MODES if self.bf16_dot else MODES[:2])
        if workload.prologue:  # see applies()
            self.domains["mode"] = ["dpbf16"]

    def valid(self, c: LowpGemmConfig) -> bool:
        if c.mode not in self.domains["mode"]:
            return False
        if c.mode == "dpbf16" and c.nr % 16:
            return False
        return super().valid(c)

    def canonical(self, c: LowpGemmConfig) -> LowpGemmConfig:
        mode = getattr(c, "mode", MODES[0])  # GemmSpace.default hands a plain GemmConfig
        base = {**super().canonical(c).to_dict(), "mode": mode}
        if mode == "dpbf16":
            # Both operands are always packed (A as bits, B in K pairs); each tile sums all of K.
            nr = -(-base["nr"] // 16) * 16
            base.update(nr=nr, vec=16, kc=self.workload.k, korder="inner", pack_a=True, pack_b=True,
                        epilogue_at=c.epilogue_at, unroll_k=min(c.unroll_k, 4))
        return LowpGemmConfig(**base)

    def default(self) -> LowpGemmConfig:
        mode = "dpbf16" if self.bf16_dot else "convert_pack"
        return self.canonical(LowpGemmConfig(**{**super().default().to_dict(), "mode": mode}))

    def features(self, c: LowpGemmConfig) -> list[float]:
        return [*super().features(c), MODES.index(c.mode), float(self.workload.dtype == "bfloat16")]
