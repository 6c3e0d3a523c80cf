"""The W8A8 int8 GEMM on AMX tiles (Intel Xeon since Sapphire Rapids): its config space.

The tile GEMM of gemm.amx (autotile/ops/gemm/amx.py, whose space this one is) on `tdpbssd`: int8 x int8 products
summed in int32 C tiles, K in steps of 64 (one tile row of int8). The kernel (int8_amx_tvm.py) quantizes A per row
to signed int8, as qgemm.int8_vnni does but without its +128 shift (tdpbssd multiplies signed by signed, so W
needs no column sums either), reads W from 16-column x 4-K panels made once per weight, and dequantizes each
micro-kernel's (or block's) C tiles in the write-back, fused with the epilogue.

Offered only where the CPU has amx_tile and amx_int8 and Linux granted this process the tile state
(autotile.codegen.tvm.amx_permission), or where the instructions are emulated (AUTOTILE_AMX_EMULATE=1, for tests).
"""

from __future__ import annotations

from dataclasses import dataclass

from autotile.codegen.tvm import amx_permission
from autotile.ops.gemm.amx import AmxGemmConfig, AmxGemmSpace
from autotile.ops.qgemm.workload import QGemmWorkload


@dataclass(frozen=True)
class Int8AmxConfig(AmxGemmConfig):
    """gemm.amx's knobs; K chunks (kc) count int8 values."""

    kc: int = 2048


def applies(workload: QGemmWorkload, fingerprint: dict | None = None) -> bool:
    """W8A8 where AMX's int8 tiles run (or are emulated)."""
    return workload.w8a8 and amx_permission.tiles_usable(fingerprint, "amx_int8")


def preferred(workload: QGemmWorkload) -> bool:
    return True  # where AMX runs at all, its default beats the VNNI template's default


class Int8AmxSpace(AmxGemmSpace):
    config_type = Int8AmxConfig
    template = "qgemm.int8_amx"
    dot = "s8s8"

    def features(self, c: Int8AmxConfig) -> list[float]:
        return [*super().features(c), float(self.workload.outlier_threshold > 0)]
