"""Lowering of weight-only quantized GEMM to TVM: the GEMM template with a dequantizing B loader.

B[k, j] = (code(W[j], k) - zero[j, g]) * scale[j, g] with g = k // group_size; code i of a row sits at
bits [i*bits, (i+1)*bits) of its packed bytes (see ir/quant.py). The GEMM's B pack stage, computed per
block, is where codes become floats, so the weight is read packed and never exists dequantized in full.
fp8 uses the same template with loaders that decode fp8 codes exactly (emulation: no fp8 arithmetic here).
With bfloat16 activations these kernels compute with A rounded to bfloat16 (`activation`); int4 with
bfloat16 activations also has `bf16dot_schedule`, vdpbf16ps tiles over a weight repacked once ahead of the
calls (`prepacked_operands`, `pack_<name>` functions in the same module, run by CompiledKernel).
"""

from __future__ import annotations

import tvm
from tvm import te
from tvm import tirx as tir

from autotile.codegen.tvm.fastmath import bf16_bits
from autotile.codegen.tvm.intrinsics import INT4_ZERO
from autotile.errors import AutotileError
from autotile.ops.gemm.blis_tvm import _epilogue_stage
from autotile.ops.gemm.blis_tvm import schedule as gemm_schedule
from autotile.ops.qgemm.weight_only import decode_rows_of_a
from autotile.ops.qgemm.workload import QGemmWorkload


def activation(w: QGemmWorkload, a):
    """A's value as the kernel computes with it: rounded to bfloat16 for act_dtype bfloat16."""
    if w.act_dtype != "bfloat16":
        return a
    from autotile.codegen.tvm.intrinsics import bf16_bits_to_float

    return bf16_bits_to_float(bf16_bits(a))


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
        return activation(w, A[i, k])

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
    Ap = te.compute((w.m, 2, w.k // 2), lambda i, h, t: activation(w, A[i, 2 * t + h]), name="Ap")
    r = te.reduce_axis((0, group), name="r")
    a_sum = te.compute((w.m, w.groups), lambda i, g: te.sum(activation(w, A[i, g * group + r]), axis=r),
                       name="a_sum")
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
    if getattr(c, "bf16_dot", False):
        return bf16dot_schedule(w, c)
    if getattr(c, "decode", False):
        return decode_schedule(w, c)
    if w.fp8:
        return gemm_schedule(w, c, operands=fp8_operands, pack_at="block")
    return gemm_schedule(w, c, operands=quantized_operands, pack_at="block")


# --- int4 weights x bfloat16 activations on vdpbf16ps (AVX512_BF16) ---------------------------------

def bf16dot_layout(w: QGemmWorkload, c) -> dict:
    """Sizes of the bf16dot kernel: V columns per tile (16 per vector), T tiles, R rows of A per tile."""
    group = w.group_size or w.k
    lanes = 16 * c.dot_vectors
    tiles = -(-w.n // lanes)
    rows = max(1, min(c.dot_rows, w.m))
    return {"group": group, "pairs": w.k // 2, "group_pairs": group // 2, "V": lanes, "T": tiles, "R": rows,
            "Mp": -(-w.m // rows) * rows}


def prepacked_operands(w: QGemmWorkload, c) -> dict[str, tuple[int, ...]]:
    """Operands the bf16dot kernel reads in its own layout, made once per weight by `pack_<name>`:
    W (N, K/2 bytes) -> (T, K/2, V): for each tile of V output columns, the byte of every column for each
    pair of K (so one pair of V columns is V contiguous bytes); scales (N, G) -> (T, G, V) float32 and zeros
    (N, G) -> (T, G, V) int32. Columns past N (the last tile's padding) repeat column N-1, never written out."""
    if not getattr(c, "bf16_dot", False):
        return {}
    s = bf16dot_layout(w, c)
    shapes = {"W": (s["T"], s["pairs"], s["V"]), "scales": (s["T"], w.groups, s["V"])}
    if w.asymmetric:
        shapes["zeros"] = (s["T"], w.groups, s["V"])
    return shapes


def _pack_body(src, lanes: int, n: int):
    def body(t, p, lane):  # columns past N repeat column N-1 (a clamp, not a Select: see bf16dot_schedule)
        return src[te.min(t * lanes + lane, n - 1), p]

    return body


def scaled_group_sums(shape, groups: int, part_at, Sp, Zp, asum, zero: int):
    """acc[m, t, lane] = sum_g Sp[t, g, lane] * (part_at(m, g, t, lane) - (Zp[t, g, lane] - zero) * asum[m, g]):
    each group's exact sum of code x activation products, scaled; the zero-point term only with zero points (Zp,
    and asum, the group's sum of A), the codes having been decoded minus the fixed `zero`."""
    g = te.reduce_axis((0, groups), name="g")

    def body(m, t, lane):
        value = part_at(m, g, t, lane)
        if Zp is not None:
            value = value - (Zp[t, g, lane] - zero).astype("float32") * asum[m, g]
        return te.sum(Sp[t, g, lane] * value, axis=g)

    return te.compute(shape, body, name="acc")


def bf16dot_pack_functions(w: QGemmWorkload, c) -> dict:
    """The pack_<name> functions of prepacked_operands."""
    return tile_pack_functions(w, prepacked_operands(w, c), bf16dot_layout(w, c)["V"])


def tile_pack_functions(w: QGemmWorkload, packed_shapes: dict, lanes: int) -> dict:
    """pack_<name> (TE, scheduled: parallel over tiles) for each operand in packed_shapes, (T, rows, lanes):
    for each tile of `lanes` output columns, the column values of each row (a K pair, a group)."""
    shapes = w.operand_shapes()
    out = {}
    for name, dtype in (("W", "uint8"), ("scales", "float32"), ("zeros", "int32")):
        if name not in packed_shapes:
            continue
        src = te.placeholder(shapes[name], dtype, name=name)
        dst = te.compute(packed_shapes[name], _pack_body(src, lanes, w.n), name=f"{name}_packed")
        sch = tvm.s_tir.Schedule(te.create_prim_func([src, dst]))
        loops = sch.get_loops(sch.get_sblock(f"{name}_packed"))
        sch.parallel(loops[0])
        sch.vectorize(loops[-1])
        out[f"pack_{name}"] = sch.mod["main"].with_attr("global_symbol", f"pack_{name}")
    return out


def bf16dot_schedule(w: QGemmWorkload, c) -> tvm.IRModule:
    """int4 weights times bfloat16 activations on vdpbf16ps, for few rows of A (see prepacked_operands):

        Ab[p, m, h] = bf16 bits of A[m, 2p + h]        (rounded to nearest even, once per call; M padded to tiles)
        Wd[t, p, l, h] = bf16(nibble h of Wp[t, p, l] - 8)   (exact: decoded in registers, table lookup)
        part[m, g, t, l] = sum over pairs p of group g, h of Ab[p, m, h] * Wd[t, p, l, h]   (vdpbf16ps, fp32)
        acc[m, t, l] = sum_g scale[t, g, l] * (part[m, g, t, l] - (zero[t, g, l] - 8) * asum[m, g])
        C[m, j] = epilogue(acc[m, j // V, j % V])

    A tile holds R rows of A x V columns of sums in registers; a decoded pair of V columns is used by each of
    the R rows (one vdpbf16ps each, A's pair broadcast from memory); the scale is applied once per group.
    Asymmetric codes use the symmetric decode and subtract (zero - 8) x the group's sum of A (asum).
    """
    from autotile.codegen.tvm import intrinsics
    from autotile.ops.qgemm.weight_only import bf16_dot_eligible

    if not bf16_dot_eligible(w):
        raise AutotileError(f"{w.key}: the vdpbf16ps kernel (bf16_dot) takes int4 weights, bfloat16 activations "
                            f"and K a whole number of groups of even size")
    s = bf16dot_layout(w, c)
    V, T, R, Mp, P, GP = s["V"], s["T"], s["R"], s["Mp"], s["pairs"], s["group_pairs"]
    shapes = w.operand_shapes()
    A = te.placeholder(shapes["A"], "float32", name="A")
    Wp = te.placeholder((T, P, V), "uint8", name="Wp")
    Sp = te.placeholder((T, w.groups, V), "float32", name="Sp")
    Zp = te.placeholder((T, w.groups, V), "int32", name="Zp") if w.asymmetric else None
    extra = {name: te.placeholder(shapes[name], "float32", name=name) for name in ("bias", "residual")
             if name in shapes}
    m_last = w.m - 1
    # Rows past M repeat row M-1: their sums are never written out. (A clamp, not a Select: TVM's simplifier
    # drops a clamp inside a Select guarded by the same bound, and a Select reads both of its branches.)
    Ab = te.compute((P, Mp, 2), lambda p, m, h: bf16_bits(A[te.min(m, m_last), 2 * p + h]), name="Ab")
    Wd = te.compute((T, P, V, 2), lambda t, p, lane, h: intrinsics.int4_bf16_bits(
        (Wp[t, p, lane] >> (h * 4).astype("uint8")) & tir.const(15, "uint8")), name="Wd")
    widen = intrinsics.bf16_bits_to_float
    kk = te.reduce_axis((0, GP), name="kk")
    hh = te.reduce_axis((0, 2), name="hh")
    part = te.compute((Mp, w.groups, T, V), lambda m, g, t, lane: te.sum(
        widen(Ab[g * GP + kk, m, hh]) * widen(Wd[t, g * GP + kk, lane, hh]), axis=[kk, hh]), name="part")
    asum = None
    if Zp is not None:
        k2 = te.reduce_axis((0, GP), name="k2")
        h2 = te.reduce_axis((0, 2), name="h2")
        asum = te.compute((Mp, w.groups), lambda m, gg: te.sum(widen(Ab[gg * GP + k2, m, h2]), axis=[k2, h2]),
                          name="asum")
    acc = scaled_group_sums((Mp, T, V), w.groups, lambda m, g, t, lane: part[m, g, t, lane], Sp, Zp, asum, INT4_ZERO)
    net = te.compute((w.m, w.n), lambda i, j: acc[i, j // V, j % V], name="net")
    out = _epilogue_stage(w, net, w.epilogue, extra, "C", "float32")
    args = [A, Wp, Sp] + ([Zp] if Zp is not None else []) + [*extra.values(), out]

    # As in decode_schedule, `vectorize`'s checks reject the lane loops of reductions computed inside their
    # consumers' loops; every build is verified against the reference.
    sch = tvm.s_tir.Schedule(te.create_prim_func(args), enable_check=False)
    sch.compute_inline(sch.get_sblock("net"))
    i, j = sch.get_loops(sch.get_sblock("C"))
    jt, jl = sch.split(j, [None, V])
    it, il = sch.split(i, [None, R])
    sch.reorder(jt, it, il, jl)
    sch.parallel(jt)
    acc_block = sch.get_sblock("acc")
    sch.compute_at(acc_block, it)
    # compute_at makes one loop per block var over the region needed, dropping those of extent 1.
    aloops = sch.get_loops(acc_block)[2:]  # (m, lane, g) of those longer than 1
    names = [n for n, size in (("m", R), ("lane", V), ("g", w.groups)) if size > 1]
    al = dict(zip(names, aloops))
    lv, lane = sch.split(al["lane"], [None, 16])
    order = ([al["g"]] if "g" in al else []) + ([al["m"]] if "m" in al else []) + [lv, lane]
    sch.reorder(*order)
    part_block = sch.get_sblock("part")
    sch.compute_at(part_block, al["g"] if "g" in al else it)
    sch.decompose_reduction(acc_block, order[0])
    sch.unroll(lv)
    if "m" in al:
        sch.unroll(al["m"])
    sch.vectorize(lane)
    ploops = sch.get_loops(part_block)[2 + ("g" in al):]
    pnames = [n for n, size in (("m", R), ("lane", V), ("kk", GP), ("hh", 2)) if size > 1]
    pl = dict(zip(pnames, ploops))
    plv, plane = sch.split(pl["lane"], [None, 16])
    ko, ku = sch.split(pl["kk"], [None, c.unroll_k])
    sch.reorder(ko, ku, *([pl["m"]] if "m" in pl else []), plv, plane, pl["hh"])
    sch.decompose_reduction(part_block, ko)
    wd_block = sch.get_sblock("Wd")
    sch.compute_at(wd_block, ku)
    wl = sch.get_loops(wd_block)
    wlv, wlane = sch.split(wl[-2], [None, 16])
    sch.tensorize(wlane, intrinsics.INT4_BF16_PAIRS_16)
    sch.tensorize(plane, intrinsics.BF16_DOT_16X2)
    for loop in (ku, plv, wlv) + ((pl["m"],) if "m" in pl else ()):
        sch.unroll(loop)
    init = sch.get_loops(sch.get_sblock("part_init"))
    sch.vectorize(init[-1])
    for loop in init[-3:-1]:
        sch.unroll(loop)
    init = sch.get_loops(sch.get_sblock("acc_init"))
    sch.vectorize(sch.fuse(*init[-2:]))
    if w.n % V == 0:  # whole tiles: the write-back is vectorized too
        sch.vectorize(sch.split(sch.get_loops(sch.get_sblock("C"))[-1], [None, 16])[1])
    if Zp is not None:
        aloops = sch.get_loops(sch.get_sblock("asum"))
        sch.parallel(aloops[0])
    ab_loops = sch.get_loops(sch.get_sblock("Ab"))
    sch.parallel(ab_loops[0])
    sch.vectorize(ab_loops[-1])
    # Links the two helpers (vdpbf16ps, int4 -> bf16 pairs) into the module, once.
    sch.annotate(ab_loops[0], "pragma_import_llvm", intrinsics.BF16_DOT_LLVM_IR)
    sch.annotate(ab_loops[1], "pragma_import_llvm", intrinsics.INT4_BF16_LLVM_IR)
    return tvm.IRModule({"main": sch.mod["main"], **bf16dot_pack_functions(w, c)})
