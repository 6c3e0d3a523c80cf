"""Lowering of int4 / int8 weight-only GEMMs with bfloat16 activations to AMX tiles (see weight_only_amx.py):

    Ab[i, k] = bf16 bits of A[i, k]                          (nearest even, once per call; rows past M repeat M-1)
    Wd[t, p, l, h] = bf16(code of column 16 t + l, K 2 p + h, minus 8 or 128)   (exact; per block and group)
    part[g, i, t, l] = sum over the group's pairs p, h of Ab[i, 2p + h] * Wd[t, p, l, h]   (tiles, exact in fp32)
    acc[i, t, l] = sum_g Sp[t, g, l] * (part[g, i, t, l] - (Zp[t, g, l] - 8) * asum[i, g])
    C[i, j] = epilogue(acc[i, j / 16, j % 16])

Wp, Sp (and Zp) are the weight, scales (and zero points) in 16-column tiles, made once per weight by pack_<name>:
int4 in the layout of the vdpbf16ps kernel (weight_only_tvm.prepacked_operands, 16 columns a tile: a byte holds
a column's K pair, decoded 16 at a time by a table lookup), int8 as the column's two bytes of each K pair. A B
tile is then the decoded codes of 16 columns for 16 pairs of K.
"""

from __future__ import annotations

import tvm
from tvm import te
from tvm import tirx as tir

import autotile.codegen.tvm.intrinsics as intrinsics
from autotile.codegen.tvm import amx, amx_permission
from autotile.codegen.tvm.fastmath import bf16_bits
from autotile.ops.gemm.amx_tvm import Panels
from autotile.ops.gemm.blis import _ceil_div
from autotile.ops.gemm.blis_tvm import schedule_epilogue_stages
from autotile.ops.gemm.lowp_tvm import LANES, epilogue_stages
from autotile.ops.qgemm.weight_only_amx import WeightOnlyAmxConfig, group_of
from autotile.ops.qgemm.weight_only_tvm import scaled_group_sums, tile_pack_functions
from autotile.ops.qgemm.workload import QGemmWorkload

DOT = amx.DOTS["bf16"]


def layout(w: QGemmWorkload, c: WeightOnlyAmxConfig) -> dict:
    mc, nc = c.mc_tiles * c.tiles_m * amx.TILE_ROWS, c.nc_tiles * c.tiles_n * LANES
    group = group_of(w)
    return {"Mp": _ceil_div(w.m, mc) * mc, "T": _ceil_div(w.n, nc) * nc // LANES, "G": w.groups, "group": group,
            "GP": group // 2, "P": w.k // 2}


def prepacked_operands(w: QGemmWorkload, c: WeightOnlyAmxConfig) -> dict[str, tuple[int, ...]]:
    """int4 W (N, K/2 bytes) -> (T, K/2, 16), int8 W (N, K) -> (T, K/2, 16, 2); scales and zeros (N, G) ->
    (T, G, 16): 16-column tiles, T covering N padded to whole blocks (columns past N repeat column N-1, never
    written out)."""
    s = layout(w, c)
    codes = (s["T"], s["P"], LANES) if w.bits == 4 else (s["T"], s["P"], LANES, 2)
    shapes = {"W": codes, "scales": (s["T"], s["G"], LANES)}
    if w.asymmetric:
        shapes["zeros"] = (s["T"], s["G"], LANES)
    return shapes


def define(w: QGemmWorkload, c: WeightOnlyAmxConfig):
    s = layout(w, c)
    mp, T, G, group, GP = s["Mp"], s["T"], s["G"], s["group"], s["GP"]
    packed = prepacked_operands(w, c)
    shapes = w.operand_shapes()
    A = te.placeholder(shapes["A"], "float32", name="A")
    Wp = te.placeholder(packed["W"], "uint8", name="Wp")
    zero_code = 1 << (w.bits - 1)  # the zero point of symmetric codes, subtracted as they are decoded
    Sp = te.placeholder(packed["scales"], "float32", name="Sp")
    Zp = te.placeholder(packed["zeros"], "int32", name="Zp") if w.asymmetric else None
    extra = {name: te.placeholder(shapes[name], "float32", name=name) for name in ("bias", "residual")
             if name in shapes}
    # Rows past M repeat row M-1 (a clamp: see weight_only_tvm.bf16dot_schedule); their sums are never written.
    Ab = te.compute((mp, w.k), lambda i, k: bf16_bits(A[te.min(i, w.m - 1), k]), name="Ab")
    if w.bits == 4:
        Wd = te.compute((T, s["P"], LANES, 2), lambda t, p, lane, h: intrinsics.int4_bf16_bits(
            (Wp[t, p, lane] >> (h * 4).astype("uint8")) & tir.const(15, "uint8")), name="Wd")
    else:  # code - 128 in [-128, 127]: exact in bfloat16, so its bits are the float32's upper half
        Wd = te.compute((T, s["P"], LANES, 2), lambda t, p, lane, h: (tir.reinterpret("uint32", (
            Wp[t, p, lane, h].astype("int32") - zero_code).astype("float32")) >> tir.const(16, "uint32")).astype(
            "uint16"), name="Wd")
    kq, kv = te.reduce_axis((0, GP), name="kq"), te.reduce_axis((0, 2), name="kv")
    part = te.compute((G, mp, T, LANES), lambda g, i, t, lane: te.sum(
        amx.widen(DOT, Ab[i, g * group + kq * 2 + kv]) * amx.widen(DOT, Wd[t, g * GP + kq, lane, kv]),
        axis=[kq, kv]), name="part")
    asum = None
    if Zp is not None:
        r = te.reduce_axis((0, group), name="r")
        asum = te.compute((mp, G), lambda i, gg: te.sum(amx.widen(DOT, Ab[i, gg * group + r]), axis=r), name="asum")
    stages = {"acc": scaled_group_sums((mp, T, LANES), G, lambda i, g, t, lane: part[g, i, t, lane], Sp, Zp, asum,
                                       zero_code)}
    last = epilogue_stages(w, Panels(stages["acc"]), c.fuse_epilogue, extra, stages)
    return [A, Wp, Sp, *([Zp] if Zp is not None else []), *extra.values(), last], stages


def schedule(w: QGemmWorkload, c: WeightOnlyAmxConfig, emulate: bool | None = None) -> tvm.IRModule:
    """Per block of rows x columns: for each group, its B tiles decoded, its micro-kernels' tile sums, then those
    sums scaled into the block's accumulators; the write-back (and fused epilogue) once the block's groups are
    done. emulate: tile instructions as calls into their emulation (default: AUTOTILE_AMX_EMULATE)."""
    emulate = amx_permission.emulated() if emulate is None else emulate
    args, stages = define(w, c)
    s = layout(w, c)
    # As in weight_only_tvm.bf16dot_schedule, `vectorize`'s checks reject the lane loop of a reduction whose
    # producer is computed inside its loops (the group's tile sums); every build is verified against the reference.
    sch = tvm.s_tir.Schedule(te.create_prim_func(args), enable_check=False)
    acc = sch.get_sblock("acc")
    i, t, lane, g = sch.get_loops(acc)
    i0, i1 = sch.split(i, [None, c.mc_tiles * c.tiles_m * amx.TILE_ROWS])
    t0, t1 = sch.split(t, [None, c.nc_tiles * c.tiles_n])
    outer = (i0, t0) if c.outer == "ij" else (t0, i0)
    sch.reorder(*outer, g, i1, t1, lane)
    sch.reverse_compute_at(sch.get_sblock("C"), outer[-1])
    part = sch.get_sblock("part")
    sch.compute_at(part, g)
    # "local": TVM never lends a local buffer's memory to another. In "global" its storage rewrite would place the
    # tile sums in Wd's (dead by the tile stores), then fail to lower the stores' typed pointers (LowerIntrin).
    sch.set_scope(part, 0, "local")
    wd = sch.get_sblock("Wd")
    sch.compute_at(wd, g)
    n_par = {"both": 2, "first": 1, "none": 0}[c.parallel]
    if n_par:
        sch.parallel(sch.fuse(*outer[:n_par]) if n_par > 1 else outer[0])
    # The group's micro-kernels: (16 tiles_m) x (16 tiles_n) C tiles each, all of the group's K.
    pi, pt, pl, pkq, pkv = sch.get_loops(part)[-5:]
    pi1, pi2 = sch.split(pi, [None, c.tiles_m * amx.TILE_ROWS])
    pt1, pt2 = sch.split(pt, [None, c.tiles_n])
    inner = (pi1, pt1) if c.inner == "ij" else (pt1, pi1)
    sch.reorder(*inner, pi2, pt2, pl, pkq, pkv)
    amx.tensorize_tile_gemm(sch, pi2, "bf16", c.tiles_m, c.tiles_n, s["group"], c.unroll_k, emulate, zero_init=True,
                            c_scope="local")
    # The group's B tiles: 16 bytes of int4 codes -> 16 bf16 pairs (one tile row) per step; int8, vectorized.
    if w.bits == 4:
        sch.tensorize(sch.get_loops(wd)[-2], intrinsics.INT4_BF16_PAIRS_16)
    else:
        sch.vectorize(sch.fuse(*sch.get_loops(wd)[-2:]))
    acc_init = sch.decompose_reduction(acc, g)
    sch.vectorize(sch.get_loops(acc_init)[-1])
    sch.vectorize(lane)
    out = sch.get_sblock("C")
    if w.n >= LANES:
        sch.vectorize(sch.split(sch.get_loops(out)[-1], [None, LANES])[1])
    rows, cols = sch.get_loops(sch.get_sblock("Ab"))
    sch.parallel(rows)
    cols, lanes = sch.split(cols, [None, LANES])
    sch.vectorize(lanes)
    if w.asymmetric:
        sch.parallel(sch.get_loops(sch.get_sblock("asum"))[0])
    sch.annotate(rows, "pragma_import_llvm", amx.llvm_ir(emulate))
    sch.annotate(cols, "pragma_import_llvm", intrinsics.INT4_BF16_LLVM_IR)
    schedule_epilogue_stages(sch, w, stages, LANES)
    main = amx.with_tile_config(sch.mod["main"])
    return tvm.IRModule({"main": main, **_pack_functions(w, c)})


def _pack_functions(w: QGemmWorkload, c: WeightOnlyAmxConfig) -> dict:
    packed = prepacked_operands(w, c)
    if w.bits == 4:
        return tile_pack_functions(w, packed, LANES)
    functions = tile_pack_functions(w, {k: v for k, v in packed.items() if k != "W"}, LANES)
    W = te.placeholder(w.operand_shapes()["W"], "uint8", name="W")
    Wp = te.compute(packed["W"], lambda t, p, lane, h: W[te.min(t * LANES + lane, w.n - 1), 2 * p + h],
                    name="W_packed")
    sch = tvm.s_tir.Schedule(te.create_prim_func([W, Wp]))
    loops = sch.get_loops(sch.get_sblock("W_packed"))
    sch.parallel(loops[0])
    sch.vectorize(sch.fuse(*loops[-2:]))
    return {**functions, "pack_W": sch.mod["main"].with_attr("global_symbol", "pack_W")}
