"""Lowering of W8A8 to AMX int8 tiles (see int8_amx.py for the space, codegen/tvm/amx.py for the tiles).

    scale_a[i] = absmax(A[i, :]) / 127          Aq[i, k] = clamp(round_half_even(A / scale_a), -127, 127)
    Wp[jo, kq, ji, kv] = W[16 jo + ji, 4 kq + kv]   (16-column x 4-K panels, zero padded; a B tile is 16 rows of one)
    mm[i, jo, ji] = sum_kq,kv Aq[i, 4 kq + kv] * Wp[jo, kq, ji, kv]   (int8 x int8 -> int32, tensorized: tdpbssd)
    C[i, j] = epilogue(mm[i, j / 16, j % 16] * scale_a[i] * scale_w[j] [+ F[i, j]])

The numerics of qgemm.int8_vnni (int8_tvm.py, whose quantization stages, outlier mask and outlier product this
reuses), but tdpbssd multiplies signed by signed: A needs no +128 shift and W no column sums. Aq is padded to
(mp, kp) (whole blocks, whole K chunks), at 0. Wp depends on the weight only: `pack_W` makes it once per weight,
outside the call. The dequantizing write-back runs per micro-kernel from its C tiles' int32 buffer (epilogue_at
"tile"), or per block.
"""

from __future__ import annotations

import tvm
from tvm import te

from autotile.codegen.tvm import amx, amx_permission
from autotile.ops.gemm.amx_tvm import Panels, padded, schedule_tiles
from autotile.ops.gemm.blis_tvm import schedule_epilogue_stages
from autotile.ops.gemm.lowp_tvm import LANES, epilogue_stages
from autotile.ops.qgemm.int8_amx import Int8AmxConfig
from autotile.ops.qgemm.int8_tvm import (
    dequantized,
    hide_write_back_reads,
    outlier_product,
    pack_panels,
    quantize_rows,
    schedule_quantization,
    w8a8_placeholders,
    write_back_after,
)
from autotile.ops.qgemm.workload import QGemmWorkload

DOT = amx.DOTS["s8s8"]


def prepacked_operands(w: QGemmWorkload, c: Int8AmxConfig) -> dict[str, tuple[int, ...]]:
    """W, made once per weight by `pack_W` (outside the timed call, like a layer's weight): W (N, K) int8 ->
    Wp (Np / 16, Kp / 4, 16, 4) int8, Np and Kp padded to whole blocks and K chunks,
    Wp[t, q, l, b] = W[16 t + l, 4 q + b] (0 past N or K)."""
    _, np_, kp = padded(w, c)
    return {"W": (np_ // LANES, kp // DOT.group, LANES, DOT.group)}


class _Dequantized:
    """C's value before the epilogue, read as x[i, j]: the int32 tile sums dequantized, plus the outlier product."""

    def __init__(self, mm, scale_a, scale_w, floats):
        self.mm, self.scale_a, self.scale_w, self.floats = Panels(mm), scale_a, scale_w, floats

    def __getitem__(self, idx):
        i, j = idx
        return dequantized(self.mm[i, j], i, j, self.scale_a, self.scale_w, self.floats)


def define(w: QGemmWorkload, c: Int8AmxConfig):
    mp, np_, kp = padded(w, c)
    A, Wp, scale_w, extra = w8a8_placeholders(w, prepacked_operands(w, c)["W"])
    outlier, scale_a, Aq = quantize_rows(w, A, mp, kp, shift=0)
    kq, kv = te.reduce_axis((0, kp // DOT.group), name="kq"), te.reduce_axis((0, DOT.group), name="kv")
    stages = {"mm": te.compute((mp, np_ // LANES, LANES), lambda i, jo, ji: te.sum(
        amx.widen(DOT, Aq[i, kq * DOT.group + kv]) * amx.widen(DOT, Wp[jo, kq, ji, kv]), axis=[kq, kv]), name="mm")}
    floats = None if outlier is None else outlier_product(w, A, Wp, scale_w, outlier)
    # The outlier product is read first in C: create_prim_func then computes it before the tile loops.
    last = epilogue_stages(w, _Dequantized(stages["mm"], scale_a, scale_w, floats), c.fuse_epilogue, extra, stages)
    return [A, Wp, scale_w, *extra.values(), last], stages


def schedule(w: QGemmWorkload, c: Int8AmxConfig, emulate: bool | None = None) -> tvm.IRModule:
    """emulate: tile instructions as calls into their emulation (default: AUTOTILE_AMX_EMULATE)."""
    emulate = amx_permission.emulated() if emulate is None else emulate
    args, stages = define(w, c)
    computed_first = {"scale_a", "outlier_product"}
    sch = write_back_after(tvm.s_tir.Schedule(te.create_prim_func(args)), computed_first)
    schedule_tiles(sch, w, c, "s8s8", emulate)
    # Where the write-back reads the C tiles' buffer in place, inlining the copy into it brought those reads back.
    sch = hide_write_back_reads(sch, computed_first)
    rows = schedule_quantization(sch, w)
    sch.annotate(rows, "pragma_import_llvm", amx.llvm_ir(emulate))
    schedule_epilogue_stages(sch, w, stages, LANES)
    main = amx.with_tile_config(sch.mod["main"])
    return tvm.IRModule({"main": main, "pack_W": pack_panels(w, prepacked_operands(w, c)["W"], corrected=False)})
