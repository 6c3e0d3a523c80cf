"""Lowering of W8A8 to TVM: dynamic row quantization, VNNI panels, int32 tiles, fused dequant epilogue.

    scale_a[i] = absmax(A[i, :]) / 127              Au[i, k] = clamp(round_half_even(A / scale_a), -127, 127) + 128
    Wp[jo, ko, ji, kv] = W[16 jo + ji, 4 ko + kv]    (16 x 4 bytes: one vpdpbusd operand, zero padded)
    corr[j] = -128 * sum_k W[j, k]                   (undoes the +128 shift of A)
    acc[i, j] = sum_k Au[i, k] * Wp[...]             (uint8 x int8 -> int32, tensorized to vpdpbusd)
    C[i, j] = epilogue((acc + corr[j]) * scale_a[i] * scale_w[j] [+ F[i, j]])

Wp and corr depend on the weight only: `pack_W` makes them once per weight (see prepacked_operands for the
layout), outside the call; the call quantizes A (vectorized, parallel over rows), runs the register tiles
and dequantizes each tile straight from its accumulators (the write-back is fused into the tile loop).

With an outlier threshold (LLM.int8), outlier columns of A quantize to zero (Au = 128) and are left out
of scale_a; F, their float32 product with the dequantized weight, is added in the write-back.
"""
from __future__ import annotations

import tvm
from tvm import te
from tvm import tirx as tir

import autotile.codegen.tvm.intrinsics as intrinsics
from autotile.codegen.tvm.fastmath import apply_epilogue
from autotile.errors import AutotileError
from autotile.ops.gemm.blis import _ceil_div
from autotile.ops.qgemm.int8 import LANES, Int8Avx2Config, Int8GemmConfig
from autotile.ops.qgemm.workload import QGemmWorkload


def layout(w: QGemmWorkload, c: Int8GemmConfig) -> dict:
    """Sizes of the kernel: Mp x Np the padded output (whole blocks), KQ the groups of 4 bytes of K."""
    mc, nc = c.mc_tiles * c.mr, c.nc_tiles * c.nrv * LANES
    return {"Mp": _ceil_div(w.m, mc) * mc, "Np": _ceil_div(w.n, nc) * nc, "KQ": _ceil_div(w.k, 4)}


def prepacked_operands(w: QGemmWorkload, c: Int8GemmConfig) -> dict[str, tuple[int, ...]]:
    """W, made once per weight by `pack_W` (outside the timed call, like a layer's weight):
    W (N, K) int8 -> Wp (Np / 16, KQ + 1, 16, 4) int8, KQ = ceil(K / 4), Np = N padded to whole blocks.
    Wp[t, q, l, b] = W[16 t + l, 4 q + b] (0 past N or K): each (t, q) is one 64-byte vpdpbusd operand; for
    qgemm.int8_avx2 the same 64 bytes in vpmaddwd's order (avx2_source).
    Wp[t, KQ, l, 0:4] = the little-endian bytes of the int32 -128 * sum_k W[16 t + l, k] (0 past N): the
    correction that undoes the +128 shift of A, read by the write-back as one int32 per column."""
    s = layout(w, c)
    return {"W": (s["Np"] // LANES, s["KQ"] + 1, LANES, 4)}


def pack_function(w: QGemmWorkload, c: Int8GemmConfig) -> tvm.tirx.PrimFunc:
    """pack_W(W, Wp): see prepacked_operands."""
    return pack_panels(w, prepacked_operands(w, c)["W"], corrected=True, avx2_order=isinstance(c, Int8Avx2Config))


def avx2_source(t, q, lane, b):
    """(row, k) of W whose byte qgemm.int8_avx2 stores at Wp[t, q, lane, b] (intrinsics.avx2_panel_position)."""
    o = lane * 4 + b
    return t * LANES + o // 32 * 8 + o // 2 % 8, q * 4 + o // 16 % 2 * 2 + o % 2


def pack_panels(w: QGemmWorkload, shape: tuple[int, ...], corrected: bool, avx2_order: bool = False
                ) -> tvm.tirx.PrimFunc:
    """pack_W(W, Wp): W (N, K) int8 in 16-column x 4-K panels of `shape` (Np / 16, groups, 16, 4),
    Wp[t, q, l, b] = W[16 t + l, 4 q + b], 0 past N or K: what vpdpbusd reads, and 16 rows of a panel are one B
    tile of tdpbssd. avx2_order: each 64-byte block's bytes in the order vpmaddwd reads them (avx2_source).
    corrected: the last group holds VNNI's column corrections instead (see prepacked_operands)."""
    W = te.placeholder(w.operand_shapes()["W"], "int8", name="W")
    groups = shape[1] - corrected  # groups of K values
    zero = tir.const(0, "int8")
    if corrected:
        r = te.reduce_axis((0, w.k), name="r")
        colsum = te.compute((w.n,), lambda j: te.sum(W[j, r].astype("int32"), axis=r), name="colsum")

    def body(t, q, lane, b):
        # Bounds by if_then_else, which reads only the branch taken: TVM's simplifier drops a clamp of the
        # index inside a Select guarded by the same bound, and Select reads both (out-of-bounds loads).
        j, kk = t * LANES + lane, q * 4 + b
        byte = ((colsum[j] * -128 >> (b * 8)) & 255).astype("uint8").astype("int8") if corrected else None
        if avx2_order:  # the row read is another than the column's whose correction sits here
            row, k = avx2_source(t, q, lane, b)
            value = tir.if_then_else(row < w.n, tir.if_then_else(k < w.k, W[row, k], zero), zero)
            return tir.if_then_else(q < groups, value, tir.if_then_else(j < w.n, byte, zero)) if corrected else value
        value = tir.if_then_else(kk < w.k, W[j, kk], zero)
        if corrected:
            value = tir.Select(q < groups, value, byte)
        return tir.if_then_else(j < w.n, value, zero)

    Wp = te.compute(shape, body, name="Wp")
    sch = tvm.s_tir.Schedule(te.create_prim_func([W, Wp]))
    if corrected:
        sch.parallel(sch.get_loops(sch.get_sblock("colsum"))[0])
    loops = sch.get_loops(sch.get_sblock("Wp"))
    sch.parallel(loops[0])
    return sch.mod["main"].with_attr("global_symbol", "pack_W")


def define(w: QGemmWorkload, c: Int8GemmConfig):
    s = layout(w, c)
    mp, np_, kq = s["Mp"], s["Np"], s["KQ"]
    kp = 4 * kq
    A, Wp, scale_w, extra = w8a8_placeholders(w, prepacked_operands(w, c)["W"])

    outlier, scale_a, Au = quantize_rows(w, A, mp, kp, shift=128)

    def corr_of(j):  # the int32 in the last group of column j's panel
        t, lane = j // LANES, j % LANES
        b = [Wp[t, kq, lane, i].astype("uint8").astype("int32") for i in range(4)]
        return b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)

    corr = te.compute((np_,), corr_of, name="corr")
    k = te.reduce_axis((0, kp), name="k")
    # Wp read as the 16 x 4 blocks the dot-product intrinsics take; qgemm.int8_avx2's stores each block's bytes in
    # another order, which only its intrinsic, pack_W and the outlier product know (intrinsics.AVX2_DOT_16X4).
    acc = te.compute((mp, np_), lambda i, j: te.sum(
        Au[i, k].astype("int32") * Wp[j // LANES, k // 4, j % LANES, k % 4].astype("int32"), axis=k), name="mm")

    floats = None if outlier is None else outlier_product(w, A, Wp, scale_w, outlier,
                                                          avx2_order=isinstance(c, Int8Avx2Config))
    # Operands in this order: create_prim_func places their stages in it, so the correction and the outlier
    # products are computed before the tile loops (the schedule checks it).
    C = te.compute((w.m, w.n), lambda i, j: apply_epilogue(
        dequantized(corr[j] + acc[i, j], i, j, scale_a, scale_w, floats), w.epilogue, extra, j, (i, j)), name="C")
    return [A, Wp, scale_w, *extra.values(), C]


def w8a8_placeholders(w: QGemmWorkload, packed_w_shape):
    """A (float32), the packed weight Wp (int8), its row scales, and the bias / residual the epilogue reads."""
    shapes = w.operand_shapes()
    extra = {name: te.placeholder(shapes[name], "float32", name=name) for name in ("bias", "residual")
             if name in shapes}
    return (te.placeholder(shapes["A"], "float32", name="A"), te.placeholder(packed_w_shape, "int8", name="Wp"),
            te.placeholder(shapes["scales"], "float32", name="scales"), extra)


def dequantized(acc, i, j, scale_a, scale_w, floats):
    """The float32 product at (i, j) from its int32 sum: scaled by both scales, plus the outlier product."""
    x = acc.astype("float32") * scale_a[i] * scale_w[j]
    return x if floats is None else floats[i, j] + x


def quantize_rows(w: QGemmWorkload, A, mp: int, kp: int, shift: int):
    """(outlier, scale_a, Aq): A quantized per row (see the module's docstring) into "Aq" (mp, kp), plus `shift`
    (128: uint8 for vpdpbusd; 0: int8), padding rows and K columns (and outlier columns) at `shift`. Scheduled
    by schedule_quantization."""
    outlier = outlier_mask(w, A)
    # Row absmax in two steps, so that it vectorizes: 16 partial maxima per row, then their maximum.
    kv = _ceil_div(w.k, LANES)
    ro = te.reduce_axis((0, kv), name="ro")

    def magnitude(i, kk):
        value = te.abs(A[i, kk])
        if outlier is not None:
            value = tir.Select(outlier[kk] == 0, value, tir.const(0.0, "float32"))
        # A partial last vector (if_then_else, see pack_panels: scalar, only there).
        return tir.if_then_else(kk < w.k, value, tir.const(0.0, "float32")) if w.k % LANES else value

    part = te.compute((w.m, LANES), lambda i, lane: te.max(magnitude(i, ro * LANES + lane), axis=ro), name="part")
    rl = te.reduce_axis((0, LANES), name="rl")
    amax = te.compute((w.m,), lambda i: te.max(part[i, rl], axis=rl), name="amax")
    scale_a = te.compute((w.m,), lambda i: tir.Select(amax[i] > 0, amax[i] / tir.const(127.0, "float32"),
                                                      tir.const(1.0, "float32")), name="scale_a")

    def quantized(i, k):
        # tir.round is round-half-to-even (llvm.nearbyint) like torch.round, and vectorizes; tir.nearbyint
        # does not (TVM leaves the loop scalar).
        q = te.max(te.min(tir.round(A[i, k] / scale_a[i]), 127.0), -127.0).astype("int32") + shift
        if outlier is not None:
            q = tir.Select(outlier[k] == 0, q, shift)
        # Padding rows and K columns (only where there are some) quantize to 0 (`shift` after the shift); by
        # if_then_else (see pack_panels): the row test is uniform over a vector, the K one only for odd K.
        if kp > w.k:
            q = tir.if_then_else(k < w.k, q, shift)
        if mp > w.m:
            q = tir.if_then_else(i < w.m, q, shift)
        return q.astype("uint8" if shift else "int8")

    return outlier, scale_a, te.compute((mp, kp), quantized, name="Aq")


def outlier_mask(w: QGemmWorkload, A):
    """LLM.int8: 1 for the K columns of A with some |A| above the threshold, else 0; None when off."""
    if not w.outlier_threshold:
        return None
    r = te.reduce_axis((0, w.m), name="rm")
    column_max = te.compute((w.k,), lambda k: te.max(te.abs(A[r, k]), axis=r), name="column_max")
    threshold = tir.const(w.outlier_threshold, "float32")
    return te.compute((w.k,), lambda k: tir.Select(column_max[k] > threshold, 1, 0), name="outlier")


def outlier_product(w: QGemmWorkload, A, Wp, scale_w, outlier, avx2_order: bool = False):
    """F[i, j] = sum over outlier columns k of A[i, k] * W[j, k] * scale_w[j], in float32; W read from its
    panels (in AVX2 order: see pack_panels).

    Which columns are outliers is known only at run time, so this is a loop nest written by hand
    (te.extern) that skips the other columns: O(K + M * N * outliers), not a second dense GEMM.
    """

    def body(ins, outs):
        a, wt, scale, mask = ins
        out = outs[0]
        i0, j0, i, j, k = (tir.Var(name, "int32") for name in ("i0", "j0", "i", "j", "k"))
        serial = tir.ForKind.SERIAL
        zero = tir.For(i0, 0, w.m, serial, tir.For(j0, 0, w.n, serial,
                                                   tir.BufferStore(out, tir.const(0.0, "float32"), [i0, j0])))
        if avx2_order:
            o = intrinsics.avx2_panel_position(j % LANES, k % 4)
            packed = tir.BufferLoad(wt, [j // LANES, k // 4, o // 4, o % 4])
        else:
            packed = tir.BufferLoad(wt, [j // LANES, k // 4, j % LANES, k % 4])  # W[j, k], see prepacked_operands
        weight = packed.astype("float32") * tir.BufferLoad(scale, [j])
        update = tir.BufferStore(out, tir.BufferLoad(out, [i, j]) + tir.BufferLoad(a, [i, k]) * weight, [i, j])
        columns = tir.For(k, 0, w.k, serial, tir.IfThenElse(
            tir.BufferLoad(mask, [k]) != 0, tir.For(i, 0, w.m, serial, tir.For(j, 0, w.n, serial, update)), None))
        return tir.SeqStmt([zero, columns])

    return te.extern((w.m, w.n), [A, Wp, scale_w, outlier], body, name="outlier_product", dtype="float32")


def write_back_after(sch, computed_first: set[str]):
    """The write-back "C" runs per tile, under the tile loops. Its other producers (`computed_first`: row scales,
    column corrections, outlier products) run at the root before them; hiding those reads from the dataflow
    check lets it move there. Returns the new schedule (which recomputes the dataflow)."""
    sch = hide_write_back_reads(sch, computed_first)
    order = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    if any(order.index(name) > order.index("mm") for name in computed_first if name in order):
        raise AutotileError(f"W8A8 stages out of order: {order}")
    return sch


def hide_write_back_reads(sch, names: set[str]):
    """The write-back "C" with its reads of `names` hidden from the dataflow check (again after a primitive that
    rebuilt its reads from its body, such as inlining into it). Returns the new schedule."""
    out = sch.get_sblock("C")
    hidden = [n for n, region in enumerate(sch.get(out).reads) if region.source.name in names]
    sch.unsafe_hide_buffer_access(out, "read", hidden)
    return tvm.s_tir.Schedule(sch.mod)


def schedule_quantization(sch, w: QGemmWorkload):
    """A's quantization in one parallel loop over rows: per row, 16 partial maxima (vectorized), their max, the
    row scale, then the row's bytes (the row stays in L1 between its two passes). Returns the row loop."""
    rows, ks = sch.get_loops(sch.get_sblock("Aq"))
    for name in ("scale_a", "amax", "part"):
        sch.compute_at(sch.get_sblock(name), rows, preserve_unit_loops=True)
    sch.parallel(rows)
    sch.vectorize(sch.split(ks, [None, LANES])[1])
    part = sch.get_sblock("part")
    p_lanes, p_red = sch.get_loops(part)[-2:]
    sch.reorder(p_red, p_lanes)
    sch.vectorize(p_lanes)
    sch.decompose_reduction(part, p_red)
    if w.outlier_threshold:
        sch.vectorize(sch.split(sch.get_loops(sch.get_sblock("column_max"))[0], [None, LANES])[1])
    return rows


def schedule(w: QGemmWorkload, c: Int8GemmConfig) -> tvm.IRModule:
    sch = write_back_after(tvm.s_tir.Schedule(te.create_prim_func(define(w, c))),
                           {"scale_a", "corr", "outlier_product"})
    mm = sch.get_sblock("mm")
    i, j, k = sch.get_loops(mm)
    i0, i1, i2 = sch.split(i, [None, c.mc_tiles, c.mr])
    j0, j1, j2, j3 = sch.split(j, [None, c.nc_tiles, c.nrv, LANES])
    outer = (i0, j0) if c.outer == "ij" else (j0, i0)
    tiles = (i1, j1) if c.tile_order == "ij" else (j1, i1)
    out = sch.get_sblock("C")
    if c.k_block:
        # K in blocks of k_block groups, outside the tiles of a block: a tile's A and W slivers stay in L1
        # while the other tiles of the block reuse them; the block's accumulators go to memory in between,
        # and the write-back runs once per block.
        kb, k0, k1, k2 = sch.split(k, [None, c.k_block // c.unroll_k, c.unroll_k, 4])
        sch.reorder(*outer, kb, *tiles, k0, k1, i2, j2, j3, k2)
        sch.reverse_compute_at(out, outer[1])
    else:
        # The dequantizing write-back runs per tile, right after its K loop, from the tile's accumulators.
        k0, k1, k2 = sch.split(k, [None, c.unroll_k, 4])
        sch.reorder(*outer, *tiles, k0, k1, i2, j2, j3, k2)
        sch.reverse_compute_at(out, tiles[1])
    # Parallel before tensorize: TVM checks the dataflow of plain blocks only.
    n_par = {"both": 2, "first": 1, "none": 0}[c.parallel]
    if n_par:
        sch.parallel(sch.fuse(*outer[:n_par]) if n_par > 1 else outer[0])
    sch.decompose_reduction(mm, kb if c.k_block else k0)
    sch.tensorize(j3, intrinsics.AVX2_DOT_16X4 if isinstance(c, Int8Avx2Config) else intrinsics.VNNI_DOT_16X4)
    sch.unroll(i2)
    sch.unroll(j2)
    if c.unroll_k > 1:
        sch.unroll(k1)
    init = sch.get_sblock("mm_init")
    sch.vectorize(sch.get_loops(init)[-1])
    out_cols = sch.get_loops(out)[-1]
    if w.n >= LANES:
        sch.vectorize(sch.split(out_cols, [None, LANES])[1])
    schedule_quantization(sch, w)
    sch.vectorize(sch.split(sch.get_loops(sch.get_sblock("corr"))[0], [None, LANES])[1])
    return tvm.IRModule({"main": sch.mod["main"], "pack_W": pack_function(w, c)})
