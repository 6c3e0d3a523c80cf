"""Lowering of weight-only quantized GEMM to TVM: the GEMM template with a dequantizing B loader.

B[k, j] = (code(W[j], k) - zero[j, g]) * scale[j, g] with g = k // group_size; code i of a row sits at
bits [i*bits, (i+1)*bits) of its packed bytes (see ir/quant.py). The GEMM's B pack stage, computed per
block, is where codes become floats, so the weight is read packed and never exists dequantized in full.
fp8 uses the same template with loaders that decode fp8 codes exactly (emulation: no fp8 arithmetic here).
"""

from __future__ import annotations

import tvm
from tvm import te
from tvm import tirx as tir

from autotile.ir.qgemm import QGemmWorkload
from autotile.kernels.gemm_tvm import _epilogue_stage
from autotile.kernels.gemm_tvm import schedule as gemm_schedule
from autotile.kernels.qgemm import decode_rows_of_a


def quantized_operands(w: QGemmWorkload):
    shapes = w.operand_shapes()
    A = te.placeholder(shapes["A"], "float32", name="A")
    W = te.placeholder(shapes["W"], "uint8", name="W")
    scales = te.placeholder(shapes["scales"], "float32", name="scales")
    zeros = te.placeholder(shapes["zeros"], "int32", name="zeros") if w.asymmetric else None
    bits, row_bytes = w.bits, shapes["W"][1]
    mask = (1 << bits) - 1
    group = w.group_size or w.k

    def code(j, k):
        bit = k * bits
        low = W[j, bit // 8].astype("int32")
        if 8 % bits == 0:  # whole codes per byte
            return (low >> (bit % 8)) & mask
        high = W[j, te.min(bit // 8 + 1, row_bytes - 1)].astype("int32")  # a code may straddle two bytes
        return ((low | (high << 8)) >> (bit % 8)) & mask

    def a_at(bi, i, k):
        return A[i, k]

    def b_at(bi, k, j):
        g = k // group
        zero = zeros[j, g] if zeros is not None else tir.const(1 << (bits - 1), "int32")
        return (code(j, k) - zero).astype("float32") * scales[j, g]

    inputs = [A, W, scales] + ([zeros] if zeros is not None else [])
    return inputs, a_at, b_at


def decode_fp8(code, fmt: str):
    """The exact float32 value of an fp8 bit code (uint8), by integer arithmetic on its fields:
    normals rebuilt as float32 bits, subnormals as m * 2**(1 - bias - mantissa bits), inf and NaN kept."""
    c = code.astype("int32")
    e4m3 = fmt == "float8_e4m3"
    mantissa_bits, exponent_mask = (3, 15) if e4m3 else (2, 31)
    exponent = (c >> mantissa_bits) & exponent_mask
    mantissa = c & ((1 << mantissa_bits) - 1)
    rebias = 127 - (7 if e4m3 else 15)
    bits = ((exponent + rebias) << 23) | (mantissa << (23 - mantissa_bits))
    if e4m3:  # float8_e4m3fn: no infinities, S.1111.111 is NaN
        bits = tir.Select(tir.all(exponent == 15, mantissa == 7), tir.const(0x7FC00000, "int32"), bits)
    else:  # float8_e5m2: exponent 31 is inf / NaN, as in float32
        bits = tir.Select(exponent == 31, (255 << 23) | (mantissa << 21), bits)
    subnormal_step = 2.0 ** ((-6 if e4m3 else -14) - mantissa_bits)
    magnitude = tir.Select(exponent == 0, mantissa.astype("float32") * tir.const(subnormal_step, "float32"),
                           tir.reinterpret("float32", bits))
    return tir.Select((c >> 7) != 0, -magnitude, magnitude)


def fp8_operands(w: QGemmWorkload):
    """A and W as fp8 codes, decoded and scaled as they are packed (A * scale_a, W * scale_w)."""
    shapes = w.operand_shapes()
    A = te.placeholder(shapes["A"], "uint8", name="A")
    scale_a = te.placeholder(shapes["scale_a"], "float32", name="scale_a")
    W = te.placeholder(shapes["W"], "uint8", name="W")
    scale_w = te.placeholder(shapes["scales"], "float32", name="scales")
    row = w.fp8_scales == "row"

    def a_at(bi, i, k):
        return decode_fp8(A[i, k], w.act_dtype) * scale_a[i if row else 0]

    def b_at(bi, k, j):
        return decode_fp8(W[j, k], w.weight_dtype) * scale_w[j if row else 0]

    return [A, scale_a, W, scale_w], a_at, b_at


LANES = 16  # bytes of packed int4 codes per vector step: 32 codes, widened to 2 x 16 float lanes


def decode_schedule(w: QGemmWorkload, c) -> tvm.IRModule:
    """int4 for few rows of A, bound by weight bytes: no packing, nibbles split in registers.

        Ap[i, h, t] = A[i, 2t + h]                      (A split into even and odd K, once per call)
        part[i, j, g, l] = sum over 16-byte chunks q of group g and halves h of
                           Ap[i, h, t] * (nibble h of W[j, t]),   t = g*G/2 + 16q + l
        acc[i, j, l] = sum_g scale[j, g] * part[i, j, g, l]
        C[i, j] = epilogue(sum_l acc[i, j, l] - sum_g scale[j, g] * zero[j, g] * sum(A[i, group g]))

    A tile of decode_rows output rows x up to 8 / decode_rows rows of A keeps its 16-lane sums in
    registers; a weight byte is loaded once per tile, split and widened (pmovzx, cvt) once and used by
    each of the tile's rows of A with one FMA; the scale is applied once per group and the zero point
    once per row and group.
    """
    shapes = w.operand_shapes()
    A = te.placeholder(shapes["A"], "float32", name="A")
    W = te.placeholder(shapes["W"], "uint8", name="W")
    scales = te.placeholder(shapes["scales"], "float32", name="scales")
    zeros = te.placeholder(shapes["zeros"], "int32", name="zeros") if w.asymmetric else None
    extra = {name: te.placeholder(shapes[name], "float32", name=name) for name in ("bias", "residual")
             if name in shapes}
    group = w.group_size or w.k
    half_group = group // 2  # bytes per group
    Ap = te.compute((w.m, 2, w.k // 2), lambda i, h, t: A[i, 2 * t + h], name="Ap")
    r = te.reduce_axis((0, group), name="r")
    a_sum = te.compute((w.m, w.groups), lambda i, g: te.sum(A[i, g * group + r], axis=r), name="a_sum")
    q = te.reduce_axis((0, half_group // LANES), name="q")
    h = te.reduce_axis((0, 2), name="h")

    def part_body(i, j, g, lane):
        t = g * half_group + q * LANES + lane
        code = (W[j, t].astype("int32") >> (4 * h)) & 15
        return te.sum(Ap[i, h, t] * code.astype("float32"), axis=[q, h])

    part = te.compute((w.m, w.n, w.groups, LANES), part_body, name="part")
    g = te.reduce_axis((0, w.groups), name="g")
    acc = te.compute((w.m, w.n, LANES), lambda i, j, lane: te.sum(scales[j, g] * part[i, j, g, lane], axis=g),
                     name="acc")
    lane = te.reduce_axis((0, LANES), name="lane")
    total = te.compute((w.m, w.n), lambda i, j: te.sum(acc[i, j, lane], axis=lane), name="total")
    g2 = te.reduce_axis((0, w.groups), name="g2")

    def zero_term(i, j):
        zero = zeros[j, g2].astype("float32") if zeros is not None else tir.const(8.0, "float32")
        return te.sum(scales[j, g2] * zero * a_sum[i, g2], axis=g2)

    offset = te.compute((w.m, w.n), zero_term, name="offset")
    net = te.compute((w.m, w.n), lambda i, j: total[i, j] - offset[i, j], name="net")
    out = _epilogue_stage(w, net, w.epilogue, extra, "C", "float32")
    args = [A, W, scales] + ([zeros] if zeros is not None else []) + [*extra.values(), out]

    # The checks of `vectorize` reject lane loops of reductions computed inside their consumers' loops;
    # the program is the plain loop nest it reads as (every build is verified against the reference).
    sch = tvm.s_tir.Schedule(te.create_prim_func(args), enable_check=False)
    i, j = sch.get_loops(sch.get_sblock("C"))
    rows_a = decode_rows_of_a(w.m, c.decode_rows)  # rows of A per tile: more are separate tiles
    jo, ji = sch.split(j, [None, c.decode_rows])
    if rows_a < w.m:
        io, ii = sch.split(i, [None, rows_a])
        sch.reorder(jo, io, ji, ii)
    else:
        sch.reorder(jo, ji, i)
        io = jo  # one tile of all rows of A
    sch.parallel(jo)
    for name in ("net", "offset", "total", "acc"):
        sch.compute_at(sch.get_sblock(name), io)
    # compute_at makes one loop per block var, in order, dropping those of extent 1.
    sizes = {"i": rows_a, "j": c.decode_rows, "lane": LANES, "g": w.groups, "q": half_group // LANES, "h": 2}

    def named_loops(block, names, skip):
        kept = [name for name in names if sizes[name] > 1]
        return dict(zip(kept, sch.get_loops(block)[skip:]))

    acc_block = sch.get_sblock("acc")
    loops = named_loops(acc_block, ("i", "j", "lane", "g"), 1 + (rows_a < w.m))
    order = [loops[name] for name in ("g", "j", "i", "lane") if name in loops]
    sch.reorder(*order)
    part_block = sch.get_sblock("part")
    sch.compute_at(part_block, loops["g"] if "g" in loops else io)  # per channel: one group
    if "g" in loops:
        sch.decompose_reduction(acc_block, loops["g"])
    for name in ("j", "i"):
        if name in loops:
            sch.unroll(loops[name])
    sch.vectorize(loops["lane"])
    ploops = named_loops(part_block, ("i", "j", "lane", "q", "h"), 1 + (rows_a < w.m) + ("g" in loops))
    porder = [ploops[name] for name in ("q", "h", "j", "i", "lane") if name in ploops]
    sch.reorder(*porder)
    for name in ("q", "h", "j", "i"):
        if name in ploops:
            sch.unroll(ploops[name])
    sch.decompose_reduction(part_block, porder[0])
    sch.vectorize(ploops["lane"])
    for name in ("part_init", "acc_init") if "g" in loops else ("part_init",):
        sch.vectorize(sch.get_loops(sch.get_sblock(name))[-1])
    return sch.mod


def schedule(w: QGemmWorkload, c) -> tvm.IRModule:
    if getattr(c, "decode", False):
        return decode_schedule(w, c)
    if w.fp8:
        return gemm_schedule(w, c, operands=fp8_operands, pack_at="block")
    if w.w8a8:
        from autotile.kernels.qgemm_int8_tvm import schedule as int8_schedule

        return int8_schedule(w, c)
    return gemm_schedule(w, c, operands=quantized_operands, pack_at="block")
