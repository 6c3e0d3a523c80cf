"""Lowering of the bfloat16 GEMM to AMX tiles (see amx.py for the space, codegen/tvm/amx.py for the tiles).

    Apack[i, k] = bits(A[i, k])                           (uint16, zero padded to mp x kp; see reads_a_in_place)
    Bpack[jo, kq, ji, kv] = bits(B[2 kq + kv, 16 jo + ji]) (16-column x 2-K panels; a B tile is 16 rows of one)
    mm[i, jo, ji] = sum_kq,kv float(Apack[i, 2 kq + kv]) * float(Bpack[jo, kq, ji, kv])   (tensorized: tiles)
    C[i, j] = epilogue(mm[i, j / 16, j % 16]), cast to the output dtype, per micro-kernel or per block.
"""

from __future__ import annotations

import tvm
from tvm import te

from autotile.codegen.tvm import amx, amx_permission
from autotile.ops.gemm.amx import AmxGemmConfig
from autotile.ops.gemm.blis import _ceil_div
from autotile.ops.gemm.blis_tvm import schedule_epilogue_stages, schedule_row_major_pack
from autotile.ops.gemm.lowp_tvm import (
    LANES,
    addend_placeholders,
    epilogue_stages,
    packed_bits,
    pair_panels_shape,
    schedule_b_pack,
)
from autotile.ops.gemm.workload import GemmWorkload


def padded(w: GemmWorkload, c: AmxGemmConfig) -> tuple[int, int, int]:
    mc, nc = c.mc_tiles * c.tiles_m * amx.TILE_ROWS, c.nc_tiles * c.tiles_n * amx.TILE_ROWS
    return _ceil_div(w.m, mc) * mc, _ceil_div(w.n, nc) * nc, _ceil_div(w.k, c.kc) * c.kc


def reads_a_in_place(w: GemmWorkload, c: AmxGemmConfig) -> bool:
    """A row-major A that needs no padding (M whole blocks, K whole chunks) is read by the tile loads themselves,
    16 rows of 64 bytes at its row stride, never past its end; else it is packed, zero padded, first."""
    mp, _, kp = padded(w, c)
    return not w.trans_a and not w.prologue and (mp, kp) == (w.m, w.k)


def prepacks_b(w: GemmWorkload, c: AmxGemmConfig) -> bool:
    return w.const_b


def prepacked_operands(w: GemmWorkload, c: AmxGemmConfig) -> dict:
    """A constant B (a layer's weight) is packed into its panels once, ahead of the calls (`pack_B`)."""
    if not prepacks_b(w, c):
        return {}
    _, np_, kp = padded(w, c)
    return {"B": pair_panels_shape(np_, kp)}


class Panels:
    """mm[i, jo, ji] read as mm[i, j]: what the epilogue stages index."""

    def __init__(self, mm):
        self.mm = mm

    def __getitem__(self, idx):
        i, j = idx
        return self.mm[i, j // LANES, j % LANES]


def define(w: GemmWorkload, c: AmxGemmConfig, prepacked_b: bool):
    mp, np_, kp = padded(w, c)
    inputs, stages = packed_bits(w, mp, np_, kp, prepacked_b)
    dot = amx.DOTS["bf16"]
    if reads_a_in_place(w, c):
        A = inputs[0]
        del stages["Apack"]
    else:
        A = stages["Apack"]
    kq, kv = te.reduce_axis((0, kp // 2), name="kq"), te.reduce_axis((0, 2), name="kv")
    stages["mm"] = te.compute((mp, np_ // LANES, LANES), lambda i, jo, ji: te.sum(
        amx.widen(dot, amx.a_bits(dot, A, i, kq * 2 + kv)) * amx.widen(dot, stages["Bpack"][jo, kq, ji, kv]),
        axis=[kq, kv]), name="mm")
    extra = addend_placeholders(w)
    last = epilogue_stages(w, Panels(stages["mm"]), c.fuse_epilogue, extra, stages)
    return [*inputs, *extra.values(), last], stages


def schedule(w: GemmWorkload, c: AmxGemmConfig, emulate: bool | None = None) -> tvm.IRModule:
    """emulate: tile instructions as calls into their emulation (default: AUTOTILE_AMX_EMULATE)."""
    emulate = amx_permission.emulated() if emulate is None else emulate
    prepacked = prepacks_b(w, c)
    args, stages = define(w, c, prepacked)
    sch = tvm.s_tir.Schedule(te.create_prim_func(args))
    in_place = "Apack" not in stages
    if not in_place:  # before the tiles: a prologue's compute-at needs every block whole, and a zero-init
        schedule_row_major_pack(sch, "Apack", LANES, bool(w.prologue))  # micro-kernel's block loses its init
    schedule_tiles(sch, w, c, "bf16", emulate, a_dtype="bfloat16" if in_place else None)
    if not prepacked:
        schedule_b_pack(sch, sch.get_sblock("Bpack"))
    # The tile helpers' LLVM IR, linked once: on the outermost loop of the tile loops.
    sch.annotate(sch.get_loops(sch.get_sblock("C"))[0], "pragma_import_llvm", amx.llvm_ir(emulate))
    schedule_epilogue_stages(sch, w, stages, LANES)
    main = amx.with_tile_config(sch.mod["main"])
    if not prepacked:
        return tvm.IRModule({"main": main})
    pack = tvm.s_tir.Schedule(te.create_prim_func([stages["B"], stages["Bpack_ahead"]]))
    schedule_b_pack(pack, pack.get_sblock("Bpack"))
    return tvm.IRModule({"main": main, "pack_B": pack.mod["main"].with_attr("global_symbol", "pack_B")})


def schedule_tiles(sch, w, c: AmxGemmConfig, kind: str, emulate: bool, a_dtype: str | None = None) -> None:
    """The loops of "mm" (mm[i, jo, ji] summed over kq, kv, see define) around the tile micro-kernel of `kind`
    (a key of amx.DOTS), its C tiles' buffer, and the write-back "C" per micro-kernel or per block (which the
    caller keeps free to move there). A write-back at the buffer's level reads the tiles' buffer in place (the copy
    is inlined into it, which rebuilds its reads from its body). a_dtype: A's, where the tiles read it in place
    (see amx.tile_gemm_intrinsic). The kernel still needs amx.llvm_ir imported and amx.with_tile_config."""
    mm = sch.get_sblock("mm")
    i, jo, ji, kq, kv = sch.get_loops(mm)
    i0, i1, i2 = sch.split(i, [None, c.mc_tiles, amx.TILE_ROWS * c.tiles_m])
    j0, j1, j2 = sch.split(jo, [None, c.nc_tiles, c.tiles_n])
    k0, k1 = sch.split(kq, [None, c.kc // amx.DOTS[kind].group])
    outer = (i0, j0) if c.outer == "ij" else (j0, i0)
    inner = (i1, j1) if c.inner == "ij" else (j1, i1)
    if c.korder == "outer":
        sch.reorder(*outer, k0, *inner, i2, j2, ji, k1, kv)
    else:
        sch.reorder(*outer, *inner, k0, i2, j2, ji, k1, kv)
    # The C tiles' buffer: a micro-kernel's (korder inner: on the stack) or the block's (K chunks around the block).
    # Where the write-back runs at the same level, it reads that buffer; else the sums are copied out first.
    per_kernel = c.korder == "inner"
    c_scope = "local" if per_kernel else "global"
    tile = sch.cache_write(mm, 0, c_scope)
    out = sch.get_sblock("C")
    copied = per_kernel != (c.epilogue_at == "tile")
    sch.reverse_compute_at(tile, inner[-1] if per_kernel else outer[-1])
    sch.reverse_compute_at(out, inner[-1] if c.epilogue_at == "tile" else outer[-1])
    if not copied:
        sch.compute_inline(tile)
    n_par = {"both": 2, "first": 1, "none": 0}[c.parallel]
    if n_par:
        sch.parallel(sch.fuse(*outer[:n_par]) if n_par > 1 else outer[0])
    # One K chunk: the micro-kernel starts its C tiles at zero (tilezero); several: the tile buffer is zeroed
    # once and each chunk's micro-kernel loads and stores its tiles.
    one_chunk = int(sch.get(k0).extent) == 1
    if not one_chunk:
        sch.vectorize(sch.get_loops(sch.decompose_reduction(mm, k0))[-1])
    amx.tensorize_tile_gemm(sch, i2, kind, c.tiles_m, c.tiles_n, c.kc, c.unroll_k, emulate, zero_init=one_chunk,
                            c_scope=c_scope, a_dtype=a_dtype)
    if copied:
        sch.vectorize(sch.get_loops(tile)[-1])
    if w.n >= LANES:
        sch.vectorize(sch.split(sch.get_loops(out)[-1], [None, LANES])[1])
