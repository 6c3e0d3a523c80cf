"""Lowering of W8A8 to TVM: dynamic row quantization, VNNI panels, int32 tiles, fused dequant epilogue.

    scale_a[i] = absmax(A[i, :]) / 127              Au[i, k] = clamp(nearbyint(A / scale_a), -127, 127) + 128
    Wp[jo, ko, ji, kv] = W[16 jo + ji, 4 ko + kv]    (16 x 4 bytes: one vpdpbusd operand, zero padded)
    acc[i, j] = sum_k Au[i, k] * Wp[...]             (uint8 x int8 -> int32, tensorized to vpdpbusd)
    C[i, j] = epilogue((acc - 128 * colsum(W)[j]) * scale_a[i] * scale_w[j] [+ F[i, j]])

With an outlier threshold (LLM.int8), outlier columns of A quantize to zero (Au = 128) and are left out
of scale_a; F, their float32 product with the dequantized weight, is added in the write-back.
"""

from __future__ import annotations

import tvm
from tvm import te
from tvm import tirx as tir

import autotile.codegen.tvm.intrinsics as intrinsics
from autotile.codegen.tvm.fastmath import ACTIVATIONS
from autotile.ir.qgemm import QGemmWorkload
from autotile.kernels.gemm import _ceil_div
from autotile.kernels.qgemm_int8 import LANES, Int8GemmConfig


def define(w: QGemmWorkload, c: Int8GemmConfig):
    mc, nc = c.mc_tiles * c.mr, c.nc_tiles * c.nrv * LANES
    mp, np_ = _ceil_div(w.m, mc) * mc, _ceil_div(w.n, nc) * nc
    kp = _ceil_div(w.k, 4 * c.unroll_k) * 4 * c.unroll_k
    shapes = w.operand_shapes()
    A = te.placeholder(shapes["A"], "float32", name="A")
    W = te.placeholder(shapes["W"], "int8", name="W")
    scale_w = te.placeholder(shapes["scales"], "float32", name="scales")
    extra = {name: te.placeholder(shapes[name], "float32", name=name) for name in ("bias", "residual")
             if name in shapes}

    outlier = outlier_mask(w, A)
    r = te.reduce_axis((0, w.k), name="r")
    if outlier is None:
        amax = te.compute((w.m,), lambda i: te.max(te.abs(A[i, r]), axis=r), name="amax")
    else:  # outlier columns are left out of the int8 part, so out of its scale too
        amax = te.compute((w.m,), lambda i: te.max(tir.Select(outlier[r] != 0, tir.const(0.0, "float32"),
                                                              te.abs(A[i, r])), axis=r), name="amax")
    scale_a = te.compute((w.m,), lambda i: tir.Select(amax[i] > 0, amax[i] / tir.const(127.0, "float32"),
                                                      tir.const(1.0, "float32")), name="scale_a")

    def quantized(i, k):
        inside = tir.all(i < w.m, k < w.k)
        i, k = te.min(i, w.m - 1), te.min(k, w.k - 1)
        q = te.max(te.min(tir.nearbyint(A[i, k] / scale_a[i]), 127.0), -127.0).astype("int32") + 128
        if outlier is not None:
            inside = tir.all(inside, outlier[k] == 0)
        return tir.Select(inside, q, 128).astype("uint8")

    Au = te.compute((mp, kp), quantized, name="Au")
    Wp = te.compute((np_ // LANES, kp // 4, LANES, 4), lambda jo, ko, ji, kv: tir.Select(
        tir.all(jo * LANES + ji < w.n, ko * 4 + kv < w.k),
        W[te.min(jo * LANES + ji, w.n - 1), te.min(ko * 4 + kv, w.k - 1)], tir.const(0, "int8")), name="Wp")
    s = te.reduce_axis((0, w.k), name="s")
    colsum = te.compute((w.n,), lambda j: te.sum(W[j, s].astype("int32"), axis=s), name="colsum")
    k = te.reduce_axis((0, kp), name="k")
    acc = te.compute((mp, np_), lambda i, j: te.sum(
        Au[i, k].astype("int32") * Wp[j // LANES, k // 4, j % LANES, k % 4].astype("int32"), axis=k), name="mm")

    floats = None if outlier is None else outlier_product(w, A, W, scale_w, outlier)

    def write_back(i, j):
        x = (acc[i, j] - 128 * colsum[j]).astype("float32") * scale_a[i] * scale_w[j]
        if floats is not None:
            x = x + floats[i, j]
        for op in w.epilogue:
            if op == "bias":
                x = x + extra["bias"][j]
            elif op == "residual":
                x = x + extra["residual"][i, j]
            else:
                x = ACTIVATIONS[op](x)
        return x

    C = te.compute((w.m, w.n), write_back, name="C")
    return [A, W, scale_w, *extra.values(), C]


def outlier_mask(w: QGemmWorkload, A):
    """LLM.int8: 1 for the K columns of A with some |A| above the threshold, else 0; None when off."""
    if not w.outlier_threshold:
        return None
    r = te.reduce_axis((0, w.m), name="rm")
    column_max = te.compute((w.k,), lambda k: te.max(te.abs(A[r, k]), axis=r), name="column_max")
    threshold = tir.const(w.outlier_threshold, "float32")
    return te.compute((w.k,), lambda k: tir.Select(column_max[k] > threshold, 1, 0), name="outlier")


def outlier_product(w: QGemmWorkload, A, W, scale_w, outlier):
    """F[i, j] = sum over outlier columns k of A[i, k] * W[j, k] * scale_w[j], in float32.

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
        weight = tir.BufferLoad(wt, [j, k]).astype("float32") * tir.BufferLoad(scale, [j])
        update = tir.BufferStore(out, tir.BufferLoad(out, [i, j]) + tir.BufferLoad(a, [i, k]) * weight, [i, j])
        columns = tir.For(k, 0, w.k, serial, tir.IfThenElse(
            tir.BufferLoad(mask, [k]) != 0, tir.For(i, 0, w.m, serial, tir.For(j, 0, w.n, serial, update)), None))
        return tir.SeqStmt([zero, columns])

    return te.extern((w.m, w.n), [A, W, scale_w, outlier], body, name="outlier_product", dtype="float32")


def schedule(w: QGemmWorkload, c: Int8GemmConfig) -> tvm.IRModule:
    sch = tvm.s_tir.Schedule(te.create_prim_func(define(w, c)))
    mm = sch.get_sblock("mm")
    i, j, k = sch.get_loops(mm)
    i0, i1, i2 = sch.split(i, [None, c.mc_tiles, c.mr])
    j0, j1, j2, j3 = sch.split(j, [None, c.nc_tiles, c.nrv, LANES])
    k0, k1, k2 = sch.split(k, [None, c.unroll_k, 4])
    outer = (i0, j0) if c.outer == "ij" else (j0, i0)
    sch.reorder(*outer, i1, j1, k0, k1, i2, j2, j3, k2)
    # "global" scope: the intrinsic's C buffer is global; a tile-sized buffer stays on the stack.
    tile = sch.cache_write(mm, 0, "global")
    sch.reverse_compute_at(tile, j1)
    # The dequantizing write-back reads the column sums and row scales, computed at the root, so it
    # runs as its own parallel pass over C rather than inside the tile loop.
    out = sch.get_sblock("C")
    # Parallel before tensorize: TVM checks the dataflow of plain blocks only.
    n_par = {"both": 2, "first": 1, "none": 0}[c.parallel]
    if n_par:
        sch.parallel(sch.fuse(*outer[:n_par]) if n_par > 1 else outer[0])
    sch.decompose_reduction(mm, k0)
    sch.tensorize(j3, intrinsics.VNNI_DOT_16X4)
    sch.unroll(i2)
    sch.unroll(j2)
    if c.unroll_k > 1:
        sch.unroll(k1)
    _, vec = sch.split(sch.get_loops(tile)[-1], [None, LANES])
    sch.vectorize(vec)
    out_rows, out_cols = sch.get_loops(out)
    sch.parallel(out_rows)
    if w.n >= LANES:
        sch.vectorize(sch.split(out_cols, [None, LANES])[1])
    for name in ("amax", "colsum"):
        sch.parallel(sch.get_loops(sch.get_sblock(name))[0])
    if w.outlier_threshold:
        sch.vectorize(sch.split(sch.get_loops(sch.get_sblock("column_max"))[0], [None, LANES])[1])
    au = sch.get_sblock("Au")
    au_rows, au_k = sch.get_loops(au)
    sch.parallel(au_rows)
    sch.vectorize(sch.split(au_k, [None, LANES])[1])
    wp_loops = sch.get_loops(sch.get_sblock("Wp"))
    sch.parallel(wp_loops[0])
    sch.vectorize(sch.fuse(*wp_loops[-2:]))
    return sch.mod
