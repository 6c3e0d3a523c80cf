"""Lowering of bfloat16 / float16 GEMMs to TVM: the fp32 template with widening loaders, or vdpbf16ps tiles.

dpbf16 (one GEMM, bfloat16, AVX512_BF16):
    Ap[i, k] = bits(A[i, k])                            (uint16, zero padded to mp x kp, kp even)
    Bp[jo, kq, ji, kv] = bits(B[2 kq + kv, 16 jo + ji])  (16 columns x 2 K values: one vdpbf16ps operand)
    mm[i, j] = sum_k float(Ap[i, k]) * float(Bp[...])    (float32, tensorized to vdpbf16ps)
    C = epilogue(mm), cast to the output dtype in the write-back, per tile or per block.
"""

from __future__ import annotations

import tvm
from tvm import te
from tvm import tirx as tir

import autotile.codegen.tvm.intrinsics as intrinsics
from autotile.ops.gemm.blis import _ceil_div
from autotile.ops.gemm.blis_tvm import (
    _epilogue_stage,
    dense_operands,
    layer_normalized,
    schedule_epilogue_stages,
    schedule_row_major_pack,
)
from autotile.ops.gemm.blis_tvm import schedule as gemm_schedule
from autotile.ops.gemm.lowp import LowpGemmConfig
from autotile.ops.gemm.workload import GemmWorkload

LANES = 16


def widened_operands(w: GemmWorkload):
    """A and B read as float32: the packs (or the inner loop, unpacked) hold widened values."""
    inputs, a_at, b_at = dense_operands(w)
    return (inputs, lambda bi, i, k: a_at(bi, i, k).astype("float32"),
            lambda bi, k, j: b_at(bi, k, j).astype("float32"))


def _padded(w: GemmWorkload, c: LowpGemmConfig) -> tuple[int, int, int]:
    mc, nc = c.mc_tiles * c.mr, c.nc_tiles * c.nr
    return _ceil_div(w.m, mc) * mc, _ceil_div(w.n, nc) * nc, _ceil_div(w.k, 2 * c.unroll_k) * 2 * c.unroll_k


def prepacks_b(w: GemmWorkload, c: LowpGemmConfig) -> bool:
    """A constant B (a layer's weight) of the dpbf16 tiles is packed into K pairs once, ahead of the calls."""
    return w.const_b and getattr(c, "mode", "") == "dpbf16"


def prepacked_operands(w: GemmWorkload, c: LowpGemmConfig) -> dict:
    """B packed ahead: its bits (uint16) in 16-column x 2-K panels, as Bpack in `define`."""
    if not prepacks_b(w, c):
        return {}
    _, np_, kp = _padded(w, c)
    return {"B": pair_panels_shape(np_, kp)}


def pair_panels_shape(np_: int, kp: int):
    """The packed B of the bfloat16 dot products (vdpbf16ps and AMX's tdpbf16ps read the same panels)."""
    return (np_ // LANES, kp // 2, LANES, 2), "uint16"


def packed_bits(w: GemmWorkload, mp: int, np_: int, kp: int, prepacked_b: bool):
    """(inputs, stages): A's bits zero padded to mp x kp ("Apack"), and B's in 16-column x 2-K panels ("Bpack",
    Bpack[jo, kq, ji, kv] = bits(B[2 kq + kv, 16 jo + ji])). prepacked_b: the kernel reads B's panels from an
    argument, made by stages["Bpack_ahead"] once."""
    inputs, a_at, b_at = dense_operands(w)
    ln_inputs = []
    if w.prologue:
        ln_inputs, a_at = layer_normalized(w, a_at)
    bits, zero = lambda x: tir.reinterpret("uint16", x), tir.const(0, "uint16")

    def a_bits(i, k):
        inside = tir.all(i < w.m, k < w.k)
        return tir.Select(inside, bits(a_at((), te.min(i, w.m - 1), te.min(k, w.k - 1))), zero)

    def b_bits(jo, kq, ji, kv):
        j, k = jo * LANES + ji, kq * 2 + kv
        inside = tir.all(j < w.n, k < w.k)
        return tir.Select(inside, bits(b_at((), te.min(k, w.k - 1), te.min(j, w.n - 1))), zero)

    stages = {"Apack": te.compute((mp, kp), a_bits, name="Apack"),
              "Bpack": te.compute(pair_panels_shape(np_, kp)[0], b_bits, name="Bpack")}
    if prepacked_b:
        stages["B"], stages["Bpack_ahead"] = inputs[1], stages["Bpack"]
        stages["Bpack"] = te.placeholder(stages["Bpack"].shape, "uint16", name="Bpacked")
        inputs = [inputs[0], stages["Bpack"]]
    return [*inputs, *ln_inputs], stages


def addend_placeholders(w: GemmWorkload) -> dict:
    return {name: te.placeholder(shape, w.addend_dtype, name=name) for name, shape in w.operand_shapes().items()
            if name in ("bias", "residual")}


def epilogue_stages(w: GemmWorkload, mm, fuse_epilogue: int, extra: dict, stages: dict):
    """The write-back "C" (the fused ops, the cast to the output dtype) and the ops left out ("epi<n>"), added to
    stages; mm is read as mm[i, j]. Returns the last stage."""
    fused, rest = w.epilogue[:fuse_epilogue], w.epilogue[fuse_epilogue:]
    last = stages["C"] = _epilogue_stage(w, mm, fused, extra, "C", w.out_dtype if not rest else "float32")
    for n, op in enumerate(rest):
        last = stages[f"epi{n}"] = _epilogue_stage(w, last, (op,), extra, f"epi{n}",
                                                   w.out_dtype if n == len(rest) - 1 else "float32")
    return last


def define(w: GemmWorkload, c: LowpGemmConfig, prepacked_b: bool = False):
    mp, np_, kp = _padded(w, c)
    inputs, stages = packed_bits(w, mp, np_, kp, prepacked_b)
    widen = intrinsics.bf16_bits_to_float
    k = te.reduce_axis((0, kp), name="k")
    stages["mm"] = te.compute((mp, np_), lambda i, j: te.sum(
        widen(stages["Apack"][i, k]) * widen(stages["Bpack"][j // LANES, k // 2, j % LANES, k % 2]), axis=k),
        name="mm")

    extra = addend_placeholders(w)
    last = epilogue_stages(w, stages["mm"], c.fuse_epilogue, extra, stages)
    return [*inputs, *extra.values(), last], stages


def schedule_b_pack(sch, block) -> None:
    loops = sch.get_loops(block)
    sch.parallel(loops[0])
    sch.vectorize(sch.fuse(*loops[-2:]))


def schedule_dpbf16(w: GemmWorkload, c: LowpGemmConfig) -> tvm.IRModule:
    prepacked = prepacks_b(w, c)
    args, stages = define(w, c, prepacked_b=prepacked)
    sch = tvm.s_tir.Schedule(te.create_prim_func(args))
    mm = sch.get_sblock("mm")
    i, j, k = sch.get_loops(mm)
    i0, i1, i2 = sch.split(i, [None, c.mc_tiles, c.mr])
    j0, j1, j2, j3 = sch.split(j, [None, c.nc_tiles, c.nr // LANES, LANES])
    k0, k1, k2 = sch.split(k, [None, c.unroll_k, 2])
    outer = (i0, j0) if c.outer == "ij" else (j0, i0)
    inner = (i1, j1) if c.inner == "ij" else (j1, i1)
    sch.reorder(*outer, *inner, k0, k1, i2, j2, j3, k2)
    # "global" scope: the intrinsic's C buffer is global; a tile-sized buffer stays on the stack.
    tile = sch.cache_write(mm, 0, "global")
    sch.reverse_compute_at(tile, inner[-1])
    out = sch.get_sblock("C")
    sch.reverse_compute_at(out, inner[-1] if c.epilogue_at == "tile" else outer[-1])
    n_par = {"both": 2, "first": 1, "none": 0}[c.parallel]
    if n_par:  # before tensorize: TVM checks the dataflow of plain blocks only
        sch.parallel(sch.fuse(*outer[:n_par]) if n_par > 1 else outer[0])
    sch.decompose_reduction(mm, k0)
    sch.tensorize(j3, intrinsics.BF16_DOT_16X2)
    sch.unroll(i2)
    sch.unroll(j2)
    if c.unroll_k > 1:
        sch.unroll(k1)
    sch.vectorize(sch.split(sch.get_loops(tile)[-1], [None, LANES])[1])
    if w.n >= LANES:
        sch.vectorize(sch.split(sch.get_loops(out)[-1], [None, LANES])[1])
    schedule_row_major_pack(sch, "Apack", LANES, bool(w.prologue))
    a_rows = sch.get_loops(sch.get_sblock("Apack"))[0]
    if not prepacked:
        schedule_b_pack(sch, sch.get_sblock("Bpack"))
    # Links the vdpbf16ps helper into the module, once (a loop outside everything that calls it).
    sch.annotate(a_rows, "pragma_import_llvm", intrinsics.BF16_DOT_LLVM_IR)
    schedule_epilogue_stages(sch, w, stages, LANES)
    if not prepacked:
        return sch.mod
    # The B pack as its own function, `pack_B(B, Bpacked)`, run once per weight by the caller.
    pack = tvm.s_tir.Schedule(te.create_prim_func([stages["B"], stages["Bpack_ahead"]]))
    schedule_b_pack(pack, pack.get_sblock("Bpack"))
    return tvm.IRModule({"main": sch.mod["main"], "pack_B": pack.mod["main"].with_attr("global_symbol", "pack_B")})


def schedule(w: GemmWorkload, c: LowpGemmConfig) -> tvm.IRModule:
    mode = getattr(c, "mode", "convert_pack")  # a plain GemmConfig widens in the packs
    if mode == "dpbf16":
        return schedule_dpbf16(w, c)
    operands = widened_operands if mode == "convert_pack" else dense_operands
    return gemm_schedule(w, c, operands=operands)
