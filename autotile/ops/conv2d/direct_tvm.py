"""Lowering of the conv2d templates to TVM: a TE definition (packs, padded conv, write-back), then a
TensorIR schedule from the config. See direct.py for what each kernel computes.

The conv stage always runs over zero-padded extents (whole tiles of pixels and channels), pixel-major
with the channels innermost, so the register tile is a few pixels x a few channel vectors; the
write-back stage cuts the padding off, applies the epilogue and writes the user's layout.
"""

from __future__ import annotations

import tvm
from tvm import te
from tvm import tirx as tir

from autotile.codegen.tvm.fastmath import apply_epilogue
from autotile.ops.conv2d.direct import Conv2dConfig, _round_up
from autotile.ops.conv2d.workload import Conv2dWorkload


class _Geometry:
    """Padded extents shared by the definition and the schedule."""

    def __init__(self, w: Conv2dWorkload, c: Conv2dConfig):
        self.G = 1 if c.template == "depthwise" else w.groups
        self.cg, self.kg = (1, w.k) if c.template == "depthwise" else (w.c // w.groups, w.k // w.groups)
        self.P, self.Q = w.out_hw
        self.kgp = _round_up(self.kg, c.oc_bn)  # output channels per group, padded to whole tiles
        self.cgp = _round_up(self.cg, c.ic_bn)
        (sh, sw), (dh, dw) = w.stride, w.dilation
        if c.template == "gemm":
            self.mp = _round_up(self.P * self.Q, c.ow_bn)
            rows = -(-self.mp // self.Q)
            self.hp, self.wp = (rows - 1) * sh + (w.r - 1) * dh + 1, (self.Q - 1) * sw + (w.s - 1) * dw + 1
        else:
            self.pp, self.qp = _round_up(self.P, c.oh_bn), _round_up(self.Q, c.ow_bn)
            self.hp = (self.pp - 1) * sh + (w.r - 1) * dh + 1
            self.wp = (self.qp - 1) * sw + (w.s - 1) * dw + 1


def _padded_loader(w: Conv2dWorkload, X, g: _Geometry):
    """x(n, channel, hh, ww, extra_cond): the input at padded coordinates, zero outside it."""
    (ph, pw) = w.padding
    zero = tir.const(0, w.dtype)

    def clamp(v, n):
        return te.max(te.min(v, n - 1), 0)

    def x(n, ch, hh, ww, extra):
        h, wi = hh - ph, ww - pw
        inside = tir.all(h >= 0, h < w.h, wi >= 0, wi < w.w, *extra)
        chc = clamp(ch, w.c) if extra else ch
        idx = (n, chc, clamp(h, w.h), clamp(wi, w.w)) if w.layout == "nchw" else \
            (n, clamp(h, w.h), clamp(wi, w.w), chc)
        return tir.if_then_else(inside, X[idx], zero)

    return x


def define(w: Conv2dWorkload, c: Conv2dConfig, prepacked: bool = False):
    """TE tensors: input and weight packs, the padded 'conv' stage, the write-back 'out'; (args, stages).
    prepacked: the kernel takes the packed weight (computed ahead of time by stages["wpack"], which is then
    no part of the kernel) in place of the weight."""
    g = _Geometry(w, c)
    X, W, extra = placeholders(w)
    zero = tir.const(0, w.dtype)
    (sh, sw), (dh, dw) = w.stride, w.dilation
    x_at = _padded_loader(w, X, g)
    stages = {}
    rr, rs = te.reduce_axis((0, w.r), name="rr"), te.reduce_axis((0, w.s), name="rs")

    if c.template == "depthwise":
        cb_n = g.kgp // c.oc_bn
        stages["xpack"] = te.compute(
            (w.n, cb_n, g.hp, g.wp, c.oc_bn),
            lambda n, cb, hh, ww, ci: x_at(n, cb * c.oc_bn + ci, hh, ww, [cb * c.oc_bn + ci < w.c]), name="xpack")
        stages["wpack"] = te.compute(
            (cb_n, w.r, w.s, c.oc_bn),
            lambda cb, r, s, ci: tir.if_then_else(
                cb * c.oc_bn + ci < w.k, W[te.min(cb * c.oc_bn + ci, w.k - 1), 0, r, s], zero), name="wpack")
        xp, wp = stages["xpack"], _weight_operand(stages, prepacked)
        stages["conv"] = te.compute(
            (w.n, g.pp, g.qp, g.kgp),
            lambda n, p, q, k: te.sum(
                xp[n, k // c.oc_bn, p * sh + rr * dh, q * sw + rs * dw, k % c.oc_bn].astype("float32")
                * wp[k // c.oc_bn, rr, rs, k % c.oc_bn].astype("float32"), axis=[rr, rs]), name="conv")
    else:
        cb_n, kb_n = g.cgp // c.ic_bn, g.kgp // c.oc_bn
        if c.pack_input:
            stages["xpack"] = te.compute(
                (w.n, g.G, cb_n, g.hp, g.wp, c.ic_bn),
                lambda n, gi, cb, hh, ww, ci: x_at(n, gi * g.cg + cb * c.ic_bn + ci, hh, ww,
                                                   [cb * c.ic_bn + ci < g.cg] if g.cgp > g.cg else []),
                name="xpack")
            xp = stages["xpack"]

            def load(n, gi, cb, h, wi, ci):
                return xp[n, gi, cb, h, wi, ci]
        else:  # NHWC input read in place: one group, one channel block, no padding, no over-read

            def load(n, gi, cb, h, wi, ci):
                return X[n, h, wi, ci]

        def weight(gi, kb, cb, r, s, ci, ko):
            k, ch = kb * c.oc_bn + ko, cb * c.ic_bn + ci
            if g.kgp == g.kg and g.cgp == g.cg:  # no padded channels: a plain (vectorizable) transpose
                return W[gi * g.kg + k, ch, r, s]
            value = W[gi * g.kg + te.min(k, g.kg - 1), te.min(ch, g.cg - 1), r, s]
            return tir.if_then_else(tir.all(k < g.kg, ch < g.cg), value, zero)

        stages["wpack"] = te.compute((g.G, kb_n, cb_n, w.r, w.s, c.ic_bn, c.oc_bn), weight, name="wpack")
        wp = _weight_operand(stages, prepacked)
        rci = te.reduce_axis((0, c.ic_bn), name="rci")

        def split_k(kk):
            return kk // g.kgp, kk % g.kgp // c.oc_bn, kk % c.oc_bn

        if c.template == "gemm":
            def body(n, m, kk):
                gi, kb, ko = split_k(kk)
                x = load(n, gi, 0, m // g.Q * sh + rr * dh, m % g.Q * sw + rs * dw, rci)
                return te.sum(x.astype("float32") * wp[gi, kb, 0, rr, rs, rci, ko].astype("float32"),
                              axis=[rr, rs, rci])

            stages["conv"] = te.compute((w.n, g.mp, g.G * g.kgp), body, name="conv")
        else:
            rco = te.reduce_axis((0, cb_n), name="rco")

            def body(n, p, q, kk):
                gi, kb, ko = split_k(kk)
                x = load(n, gi, rco, p * sh + rr * dh, q * sw + rs * dw, rci)
                return te.sum(x.astype("float32") * wp[gi, kb, rco, rr, rs, rci, ko].astype("float32"),
                              axis=[rco, rr, rs, rci])

            stages["conv"] = te.compute((w.n, g.pp, g.qp, g.G * g.kgp), body, name="conv")

    stages["out"] = _write_back(w, c, g, stages["conv"], extra)
    weight = stages.pop("wpack_argument", W)
    return [X, weight, *extra.values(), stages["out"]], stages


def _weight_operand(stages, prepacked: bool):
    """What the convolution reads as its weight: the pack stage, or (prepacked) an argument of its shape."""
    if not prepacked:
        return stages["wpack"]
    pack = stages["wpack"]
    stages["wpack_argument"] = te.placeholder(pack.shape, pack.dtype, name="wpack")
    return stages["wpack_argument"]


def _write_back(w: Conv2dWorkload, c: Conv2dConfig, g: _Geometry, conv, extra):
    """out (user layout) = epilogue(conv) without the padding; all epilogue ops fused here."""
    padded_groups = g.G > 1 and g.kgp != g.kg

    def body(*idx):
        n, k, p, q = idx if w.layout == "nchw" else (idx[0], idx[3], idx[1], idx[2])
        kk = k // g.kg * g.kgp + k % g.kg if padded_groups else k
        x = conv[n, p * g.Q + q, kk] if c.template == "gemm" else conv[n, p, q, kk]
        return apply_epilogue(x, w.epilogue, extra, k, idx, w.out_dtype)

    return te.compute(w.out_shape, body, name="out")


def _extent(sch, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tir.IntImm) else None


def loops_under(sch, block, loop) -> list:
    """The loops of `block` nested inside `loop`, e.g. the tile loops a reverse_compute_at made. A tile dimension
    of extent 1 gets no loop there, so counting from the innermost (`get_loops(block)[-2]`) can reach the block
    loops above the tile: unrolling the parallel loop of a Winograd GEMM with ow_bn = 1 took minutes to build a
    one-thread kernel."""
    loops = sch.get_loops(block)
    at = sch.get(loop)
    depth = next(i for i, candidate in enumerate(loops) if sch.get(candidate).same_as(at))
    return loops[depth + 1:]


def unroll_and_vectorize(sch, loops) -> None:
    """A register tile's write-back: its loops unrolled, the innermost vectorized."""
    for loop in loops[:-1]:
        sch.unroll(loop)
    if loops:
        sch.vectorize(loops[-1])


def _vectorize_tail(sch, block, widths, loop=None):
    """Vectorize the innermost loop of a block (or `loop`) in the widest chunk that divides it evenly."""
    loop = sch.get_loops(block)[-1] if loop is None else loop
    extent = _extent(sch, loop)
    for v in widths:
        if extent and extent % v == 0:
            if extent > v:
                loop = sch.split(loop, [None, v])[1]
            sch.vectorize(loop)
            return


def prepacked_operands(w: Conv2dWorkload, c: Conv2dConfig) -> dict[str, tuple[int, ...]]:
    """A constant weight's packed (or Winograd-transformed) shape, for the templates that transform it
    ahead: the kernel's library then holds `pack_weight` too (codegen/tvm/build.py runs it once per weight)."""
    if not w.const_weight or c.template not in PREPACKABLE:
        return {}
    packed = define(w, c, prepacked=True)[1]["wpack"]  # the TE definition only: no schedule is built for a shape
    return {"weight": tuple(int(d) for d in packed.shape)}


def schedule(w: Conv2dWorkload, c: Conv2dConfig, prepacked: bool = False) -> tvm.IRModule:
    if w.const_weight and not prepacked and c.template in PREPACKABLE:
        return with_pack_weight(*prepacked_modules(w, c)[:2])
    if c.template == "pointwise":
        return schedule_pointwise(w, c)
    if c.template == "dwrows":
        return schedule_dwrows(w, c)
    args, stages = define(w, c, prepacked)
    if prepacked:
        del stages["wpack"]  # computed ahead of time, outside this kernel
    sch = tvm.s_tir.Schedule(te.create_prim_func(args))
    g = _Geometry(w, c)
    lanes = 16 if c.oc_bn % 16 == 0 else 8  # the space makes oc_bn a multiple of the device's lanes

    conv = sch.get_sblock("conv")
    loops = sch.get_loops(conv)
    unrolled = []
    if c.template == "depthwise":
        n, p, q, kk, rr, rs = loops
        kb, ko = sch.split(kk, [None, c.oc_bn])
        p_o, p_i = sch.split(p, [None, c.oh_bn])
        q_o, q_i = sch.split(q, [None, c.ow_bn])
        rs_o, rs_u = sch.split(rs, [None, c.unroll])
        ko_o, ko_v = sch.split(ko, [None, lanes])
        par, tile, row = [n, kb, p_o], q_o, p_o
        order = [*par, q_o, rr, rs_o, rs_u, p_i, q_i, ko_o, ko_v]
        unrolled = [rs_u, p_i, q_i, ko_o]
        first_reduce = rr
    else:
        gi, kb, ko = sch.split(loops[-4 if c.template == "gemm" else -5], [g.G, g.kgp // c.oc_bn, c.oc_bn])
        ko_o, ko_v = sch.split(ko, [None, lanes])
        if c.template == "gemm":
            n, m, rr, rs, rci = loops[0], loops[1], loops[3], loops[4], loops[5]
            m_o, m_i = sch.split(m, [None, c.ow_bn])
            rci_o, rci_u = sch.split(rci, [None, c.unroll])
            blocks = (kb, m_o) if c.outer == "kp" else (m_o, kb)
            # A write-back per channel block (all pixels) sits beside the pixel loop: parallelize above it.
            par = [n, gi, *blocks] if c.epilogue_at != "row" else [n, gi, blocks[0]]
            tile, row = blocks[1], blocks[0]
            order = [n, gi, *blocks, rr, rs, rci_o, rci_u, m_i, ko_o, ko_v]
            unrolled = [rci_u, m_i, ko_o]
            first_reduce = rr
        else:
            n, p, q, _, rco, rr, rs, rci = loops
            p_o, p_i = sch.split(p, [None, c.oh_bn])
            q_o, q_i = sch.split(q, [None, c.ow_bn])
            rci_o, rci_u = sch.split(rci, [None, c.unroll])
            blocks = (kb, p_o) if c.outer == "kp" else (p_o, kb)
            par, tile, row = [n, gi, *blocks], q_o, blocks[1]
            reduce = [rco, rr, rs] if c.rorder == "crs" else [rr, rs, rco]
            order = [*par, q_o, *reduce, rci_o, rci_u, p_i, q_i, ko_o, ko_v]
            unrolled = [rci_u, p_i, q_i, ko_o]
            first_reduce = reduce[0]
    sch.reorder(*order)

    acc = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(acc, tile)
    out = sch.get_sblock("out")
    if c.epilogue_at != "root":
        sch.reverse_compute_at(out, tile if c.epilogue_at == "tile" else row)
    sch.vectorize(ko_v)
    for loop in unrolled:
        sch.unroll(loop)
    sch.parallel(sch.fuse(*par))
    sch.decompose_reduction(conv, first_reduce)
    if c.epilogue_at == "tile":  # the write-back reads the tile's accumulators: no copy through memory
        sch.compute_inline(acc)
    else:
        sch.vectorize(sch.get_loops(acc)[-1])
    # An NCHW output is a transpose of the channels-last accumulators: a vector of the whole pixel row
    # (gathered) beats scalar copies.
    whole = (_extent(sch, sch.get_loops(out)[-1]) or 1,) if w.layout == "nchw" else ()
    _vectorize_tail(sch, out, (*whole, lanes, 8, 4))
    if c.epilogue_at == "root":
        sch.parallel(sch.get_loops(out)[0])

    depthwise = c.template == "depthwise"
    if "xpack" in stages:
        rows = c.ic_bn == 1 and w.layout == "nchw" and not depthwise  # a padded copy of NCHW rows
        _schedule_pack(sch, "xpack", 3 if depthwise else 4, rows)
    if "wpack" in stages:
        _schedule_pack(sch, "wpack", 1 if depthwise else 2)
    return sch.mod


def _schedule_pack(sch, name: str, outer: int, rows: bool = False):
    """A pack stage: parallel over its `outer` loops, a vector over the innermost (blocked channel) axis.
    The packs are transposes; vectors gathered from the source's strided elements run 3-5x faster than
    scalar copies. rows: the two inner loops are a contiguous row of the source: one vector loop."""
    loops = sch.get_loops(sch.get_sblock(name))
    sch.parallel(sch.fuse(*loops[:outer]) if outer > 1 else loops[0])
    sch.vectorize(sch.fuse(*loops[-2:]) if rows else loops[-1])


PREPACKABLE = ("nchwc", "gemm", "depthwise")  # templates with a separable weight transform


def with_pack_weight(pack, conv) -> tvm.IRModule:
    """One module holding the kernel (main, taking the packed weight) and `pack_weight`, run once per weight."""
    return tvm.IRModule({"main": conv["main"], "pack_weight": pack["main"].with_attr("global_symbol", "pack_weight")})


def prepacked_modules(w: Conv2dWorkload, c: Conv2dConfig):
    """(pack, conv, packed shape): the kernel split in two IRModules, `pack` (weight -> packed weight) to
    run once per weight and `conv` (input, packed weight, epilogue operands..., out) on every call. None
    for the templates that read the weight in place ("dwrows") or pack it per tile ("pointwise"). Winograd's
    `pack` is the weight transform U = G g G^T (winograd_tvm.prepacked_modules)."""
    if c.template not in PREPACKABLE:
        return None
    _, stages = define(w, c, prepacked=True)
    pack = stages["wpack"]
    sch = tvm.s_tir.Schedule(te.create_prim_func([pack.op.input_tensors[0], pack]))
    _schedule_pack(sch, "wpack", 1 if c.template == "depthwise" else 2)
    return sch.mod, schedule(w, c, prepacked=True), tuple(int(d) for d in pack.shape)


# -- NCHW templates that read the input in place ------------------------------------------------

def placeholders(w: Conv2dWorkload):
    """The kernel's input and weight placeholders, and its epilogue operands by name."""
    shapes = w.operand_shapes()
    X = te.placeholder(shapes["input"], w.dtype, name="input")
    W = te.placeholder(shapes["weight"], w.dtype, name="weight")
    return X, W, _extras(w)


def _extras(w: Conv2dWorkload):
    shapes = w.operand_shapes()
    extra = {}
    if "bias" in w.epilogue:
        extra["bias"] = te.placeholder(shapes["bias"], "float32", name="bias")
    if "residual" in w.epilogue:
        extra["residual"] = te.placeholder(shapes["residual"], "float32", name="residual")
    return extra


def _nchw_write_back(w: Conv2dWorkload, at, extra):
    """out[n, k, p, q] = epilogue(at(n, k, p, q)) for an NCHW output."""

    def body(n, k, p, q):
        return apply_epilogue(at(n, k, p, q), w.epilogue, extra, k, (n, k, p, q), w.out_dtype)

    return te.compute(w.out_shape, body, name="out")


def define_pointwise(w: Conv2dWorkload, c: Conv2dConfig):
    """1x1, stride 1, unpadded, one group, NCHW: conv[n, k, m] = sum_c wpack[k / mr, c, k % mr] * x[n, c, m] over
    the flattened pixels m, the input read in place; mr = oc_bn output channels, ow_bn pixels per tile."""
    shapes = w.operand_shapes()
    X = te.placeholder(shapes["input"], w.dtype, name="input")
    W = te.placeholder(shapes["weight"], w.dtype, name="weight")
    extra = _extras(w)
    zero = tir.const(0, w.dtype)
    pq, q_ = w.h * w.w, w.w
    mp, kp = _round_up(pq, c.ow_bn), _round_up(w.k, c.oc_bn)
    mr = c.oc_bn
    wpack = te.compute(
        (kp // mr, w.c, mr),
        lambda kb, ch, ki: tir.if_then_else(kb * mr + ki < w.k, W[te.min(kb * mr + ki, w.k - 1), ch, 0, 0], zero),
        name="wpack")
    rc = te.reduce_axis((0, w.c), name="rc")

    def body(n, k, m):
        mm = te.min(m, pq - 1) if mp > pq else m
        # The flattened pixel as the last index: the same address as [m // Q, m % Q], but an affine one, so
        # a tile that crosses rows is still one contiguous vector load.
        x = X[n, rc, 0, mm]
        return te.sum(wpack[k // mr, rc, k % mr].astype("float32") * x.astype("float32"), axis=rc)

    conv = te.compute((w.n, kp, mp), body, name="conv")
    out = _nchw_write_back(w, lambda n, k, p, q: conv[n, k, p * q_ + q], extra)
    return [X, W, *extra.values(), out], {"wpack": wpack, "conv": conv, "out": out}


def schedule_pointwise(w: Conv2dWorkload, c: Conv2dConfig) -> tvm.IRModule:
    args, stages = define_pointwise(w, c)
    sch = tvm.s_tir.Schedule(te.create_prim_func(args))
    conv = sch.get_sblock("conv")
    n, k, m, rc = sch.get_loops(conv)
    k0, k1 = sch.split(k, [None, c.oc_bn])
    m0, m1, m2 = sch.split(m, [None, c.oh_bn, c.ow_bn])
    rc_o, rc_u = sch.split(rc, [None, c.unroll])
    blocks = [k0, m0] if c.outer == "kp" else [m0, k0]
    sch.reorder(n, *blocks, m1, rc_o, rc_u, k1, m2)
    acc = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(acc, m1)
    write_back = loops_under(sch, acc, m1)  # k1 (none when oc_bn = 1), m2
    out = sch.get_sblock("out")
    if c.epilogue_at != "root":
        sch.reverse_compute_at(out, m1 if c.epilogue_at == "tile" else blocks[1])
    sch.vectorize(m2)
    sch.unroll(k1)
    if c.unroll > 1:
        sch.unroll(rc_u)
    par = [n, *blocks] if c.epilogue_at != "row" else [n, blocks[0]]
    sch.parallel(sch.fuse(*par))
    sch.decompose_reduction(conv, rc_o)
    unroll_and_vectorize(sch, write_back)
    oloops = sch.get_loops(out)
    _vectorize_tail(sch, out, (oloops and _extent(sch, oloops[-1]) or 1, 16, 8, 4))
    if c.epilogue_at == "root":
        sch.parallel(sch.fuse(*oloops[:2]))
    wl = sch.get_loops(sch.get_sblock("wpack"))
    sch.parallel(wl[0])
    return sch.mod


def define_dwrows(w: Conv2dWorkload, c: Conv2dConfig):
    """Depthwise, NCHW: each channel a 2-D stencil over a zero-padded copy of that channel (made per channel,
    so it stays in cache); tiles of oh_bn rows x ow_bn columns, the columns in vector lanes."""
    shapes = w.operand_shapes()
    X = te.placeholder(shapes["input"], w.dtype, name="input")
    W = te.placeholder(shapes["weight"], w.dtype, name="weight")
    extra = _extras(w)
    (sh, sw), (dh, dw) = w.stride, w.dilation
    p_, q_ = w.out_hw
    pp, qp = _round_up(p_, c.oh_bn), _round_up(q_, c.ow_bn)
    hp, wp = (pp - 1) * sh + (w.r - 1) * dh + 1, (qp - 1) * sw + (w.s - 1) * dw + 1
    (ph, pw) = w.padding
    zero = tir.const(0, w.dtype)

    def pad(n, k, hh, ww):
        h, wi = hh - ph, ww - pw
        inside = tir.all(h >= 0, h < w.h, wi >= 0, wi < w.w)
        return tir.if_then_else(inside, X[n, k, te.max(te.min(h, w.h - 1), 0), te.max(te.min(wi, w.w - 1), 0)], zero)

    xpad = te.compute((w.n, w.k, hp, wp), pad, name="xpad")
    rr, rs = te.reduce_axis((0, w.r), name="rr"), te.reduce_axis((0, w.s), name="rs")
    conv = te.compute(
        (w.n, w.k, pp, qp),
        lambda n, k, p, q: te.sum(xpad[n, k, p * sh + rr * dh, q * sw + rs * dw].astype("float32")
                                  * W[k, 0, rr, rs].astype("float32"), axis=[rr, rs]), name="conv")
    out = _nchw_write_back(w, lambda n, k, p, q: conv[n, k, p, q], extra)
    return [X, W, *extra.values(), out], {"xpad": xpad, "conv": conv, "out": out}


def schedule_dwrows(w: Conv2dWorkload, c: Conv2dConfig) -> tvm.IRModule:
    args, stages = define_dwrows(w, c)
    sch = tvm.s_tir.Schedule(te.create_prim_func(args))
    conv = sch.get_sblock("conv")
    n, k, p, q, rr, rs = sch.get_loops(conv)
    p_o, p_i = sch.split(p, [None, c.oh_bn])
    q_o, q_i = sch.split(q, [None, c.ow_bn])
    sch.reorder(n, k, p_o, q_o, rr, rs, p_i, q_i)
    acc = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(acc, q_o)
    write_back = loops_under(sch, acc, q_o)  # p_i (none when oh_bn = 1), q_i (none when ow_bn = 1)
    out = sch.get_sblock("out")
    at = q_o if c.epilogue_at == "tile" else p_o
    sch.reverse_compute_at(out, at)
    out_tile = loops_under(sch, out, at)  # none for a tile of one pixel
    xpad = sch.get_sblock("xpad")
    sch.compute_at(xpad, k)
    sch.vectorize(q_i)
    for loop in (rr, rs, p_i):
        sch.unroll(loop)
    sch.parallel(sch.fuse(n, k))
    sch.decompose_reduction(conv, rr)
    unroll_and_vectorize(sch, write_back)
    if out_tile:
        _vectorize_tail(sch, out, (_extent(sch, out_tile[-1]) or 1, 16, 8, 4), out_tile[-1])
    _vectorize_tail(sch, xpad, (_extent(sch, sch.get_loops(xpad)[-1]) or 1, 16, 8, 4))
    return sch.mod
