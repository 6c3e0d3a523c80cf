"""int4 and int8 weight-only GEMMs with bfloat16 activations on AMX tiles, for M >= 16: their config space.

The tile GEMM of gemm.amx (whose space this one is) over one quantization group at a time: the codes of a block
of columns are decoded into bfloat16 B tiles (code - 8 or code - 128: small integers, exact) once per group and
block, a micro-kernel sums
a group's products in its C tiles (exact in float32), and the group's scale is applied as those sums are added to
the block's float32 accumulators (weight_only_amx_tvm.py). K chunks are the groups, so `kc` and `korder` do not
apply, and the epilogue runs once per block. Fewer rows than a tile (token generation) keep the AVX-512 decode
kernels of qgemm.weight_only, which is why this template applies from M = 16.

Offered only where the CPU has amx_tile and amx_bf16 and Linux granted this process the tile state
(autotile.codegen.tvm.amx_permission), or where the instructions are emulated (AUTOTILE_AMX_EMULATE=1, for tests).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from autotile.codegen.tvm import amx_permission
from autotile.codegen.tvm.amx import TILE_ROWS
from autotile.ops.gemm.amx import AmxGemmConfig, AmxGemmSpace
from autotile.ops.qgemm.workload import QGemmWorkload


@dataclass(frozen=True)
class WeightOnlyAmxConfig(AmxGemmConfig):
    """gemm.amx's knobs; kc is the quantization group and the epilogue runs per block."""

    korder: str = "outer"
    epilogue_at: str = "block"


def group_of(w: QGemmWorkload) -> int:
    return w.group_size or w.k


def applies(workload: QGemmWorkload, fingerprint: dict | None = None) -> bool:
    """int4 or int8 codes, bfloat16 activations, K in groups of whole tile rows (32), at least a tile of rows, on
    AMX."""
    group = group_of(workload)
    return (workload.act_dtype == "bfloat16" and workload.bits in (4, 8) and group % 32 == 0
            and workload.k % group == 0 and workload.m >= TILE_ROWS
            and amx_permission.tiles_usable(fingerprint, "amx_bf16") and unpacks_int4_here(fingerprint))


def unpacks_int4_here(fingerprint: dict | None) -> bool:
    """The int4 unpacking is AVX-512BW code (vpermw: intrinsics.INT4_BF16_LLVM_IR), which every AMX CPU has; with the
    tiles emulated on a CPU without it (an AVX2 Zen 3), LLVM aborts on it, so the template is not offered there."""
    return fingerprint is None or "avx512bw" in fingerprint.get("flags", ())


def preferred(workload: QGemmWorkload) -> bool:
    return True


class WeightOnlyAmxSpace(AmxGemmSpace):
    config_type = WeightOnlyAmxConfig
    template = "qgemm.weight_only_amx"
    dot = "bf16"

    def __init__(self, workload: QGemmWorkload):
        super().__init__(workload)
        group = group_of(workload)
        self.domains.update(kc=[group], korder=["outer"], epilogue_at=["block"])

    def canonical(self, c: WeightOnlyAmxConfig) -> WeightOnlyAmxConfig:
        base = super().canonical(replace(c, kc=group_of(self.workload)))
        return WeightOnlyAmxConfig(**{**base.to_dict(), "kc": group_of(self.workload), "korder": "outer",
                                      "epilogue_at": "block"})

    def features(self, c: WeightOnlyAmxConfig) -> list[float]:
        return [*super().features(c), float(self.workload.asymmetric), self.workload.bits]
