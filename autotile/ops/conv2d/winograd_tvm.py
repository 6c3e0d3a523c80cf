"""Winograd F(2x2,3x3) ("winograd") and F(4x4,3x3) ("winograd4") convolution for 3x3, stride 1, undilated,
ungrouped float32 convolutions, lowered to TVM. See winograd.py for the knobs.

With m = 2 or 4 output pixels per tile side and a = m + 2 input pixels, the output is cut in tiles of m x m
pixels; every tile t and channel c gives an a x a input patch d, and

    U[xi, c, k] = (G g[k, c] G^T)[xi]              weight transform (a x a per (c, k); in the kernel)
    V[xi, t, c] = (B^T d[t, c] B)[xi]               input transform
    M[xi, t, k] = sum_c V[xi, t, c] * U[xi, c, k]    a*a independent GEMMs: this is where the time goes
    Y[t, k]     = A^T M[:, t, k] A                  output transform (m x m pixels), then the epilogue

Stages, each its own parallel loop nest:
- "xpack"  the input, zero-padded to whole tiles, channels blocked: [n, C/ic_bn, hp, wp, ic_bn] (vector gathers
           from NCHW, plain copies from NHWC).
- "wt1", "wtrans"  U, packed for the GEMM: [a*a, K/oc_bn, C, oc_bn], vectorized over output channels.
- "vt1", "vtrans"  V, packed for the GEMM: [a*a, T/ow_bn, C/ic_bn, ow_bn, ic_bn], vectorized over channels;
           the first (row) half of the transform stays in a small local buffer per tile.
- "mm"     the GEMMs: a register tile of ow_bn tiles x oc_bn output channels; per input channel ow_bn broadcast
           values of V (contiguous) times oc_bn/lanes vectors of U, FMA'd into accumulators in registers.
- "ot1", "conv"  the output transform into channels-last pixels [n, nH*m, nW*m, K] (vectors of channels).
- "out"    the epilogue and the user's layout (for NCHW a transpose: vectors of a pixel row gathered from the
           channels-last block), per channel vector of a row of tiles ("tile"), per row of tiles, or as its own pass.

Where the time went (64x56x56, F(4x4), one Zen 4 core, perf, "row" write-back): the GEMMs 63% (near the FMA
peak), the output transform and NCHW write-back 20% (the gathers), the input transform 7%, the weight transform 6%,
the pack 4%.

The transforms are written with their matrices' constants: each position's expression is a sum over the
non-zero coefficients only, picked by a Select over the position; the schedule unrolls the position loops so
that the Selects fold away and every transform is straight-line vector code.
"""

from __future__ import annotations

from fractions import Fraction as F

import tvm
from tvm import te
from tvm import tirx as tir

from autotile.codegen.tvm.fastmath import apply_epilogue
from autotile.ops.conv2d.direct import WINOGRAD, Conv2dConfig, _round_up
from autotile.ops.conv2d.direct_tvm import loops_under, placeholders, unroll_and_vectorize, with_pack_weight
from autotile.ops.conv2d.workload import Conv2dWorkload

# (B^T, G, A^T) per output tile size m. F(2,3): Lavin & Gray's (interpolation points 0, 1, -1). F(4,3): the points
# 0, -1, 1, 1/2, -2 of Barabasz et al. (arXiv:1803.10986), as TVM's topi uses; on randn inputs their rounding error
# is about half that of Lavin's 0, +-1, +-2, which used up to 90% of the fp32 tolerance of `verify` (these: < 40%).
MATRICES = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [F(1, 2), F(1, 2), F(1, 2)], [F(1, 2), F(-1, 2), F(1, 2)], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [[1, F(-3, 2), -2, F(3, 2), 1, 0], [0, 1, F(-5, 2), F(1, 2), 1, 0], [0, -1, F(1, 2), F(5, 2), 1, 0],
         [0, -2, -1, 2, 1, 0], [0, F(1, 2), -1, F(-1, 2), 1, 0], [0, 1, F(-3, 2), -2, F(3, 2), 1]],
        [[1, 0, 0], [F(-1, 3), F(1, 3), F(-1, 3)], [F(1, 3), F(1, 3), F(1, 3)], [F(-16, 15), F(-8, 15), F(-4, 15)],
         [F(1, 15), F(-2, 15), F(4, 15)], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, -1, 1, F(1, 2), -2, 0], [0, 1, 1, F(1, 4), 4, 0], [0, -1, 1, F(1, 8), -8, 1]],
    ),
}


def _combo(row, get):
    """sum_j row[j] * get(j) over the non-zero coefficients only (+-1 as additions)."""
    expr = None
    for j, coef in enumerate(row):
        if coef == 0:
            continue
        term = get(j)
        if abs(coef) != 1:
            term = term * tir.const(float(abs(coef)), "float32")
        if expr is None:
            expr = term if coef > 0 else -term
        else:
            expr = expr + term if coef > 0 else expr - term
    return expr


def _select(index, matrix, get):
    """(matrix @ v)[index] for v[j] = get(j); index a loop variable the schedule unrolls."""
    expr = _combo(matrix[-1], get)
    for r in range(len(matrix) - 2, -1, -1):
        expr = tir.Select(index == r, _combo(matrix[r], get), expr)
    return expr


class _Geometry:
    def __init__(self, w: Conv2dWorkload, c: Conv2dConfig):
        self.m = m = WINOGRAD[c.template]
        self.a = m + 2
        self.P, self.Q = w.out_hw
        self.nH, self.nW = -(-self.P // m), -(-self.Q // m)
        self.T = w.n * self.nH * self.nW
        self.Tp = _round_up(self.T, c.ow_bn)
        self.Cp = _round_up(w.c, c.ic_bn)
        self.Kp = _round_up(w.k, c.oc_bn)
        self.hp, self.wp = self.nH * m + 2, self.nW * m + 2


def define(w: Conv2dWorkload, c: Conv2dConfig, prepacked: bool = False):
    g = _Geometry(w, c)
    m, a = g.m, g.a
    BT, G, AT = MATRICES[m]
    X, W, extra = placeholders(w)
    zero = tir.const(0, "float32")
    (ph, pw) = w.padding
    stages = {}

    def clamp(v, n):
        return te.max(te.min(v, n - 1), 0)

    def x_at(n, ch, hh, ww):
        h, wi = hh - ph, ww - pw
        conds = [h >= 0, h < w.h, wi >= 0, wi < w.w] + ([ch < w.c] if g.Cp > w.c else [])
        chc = te.min(ch, w.c - 1) if g.Cp > w.c else ch
        idx = (n, chc, clamp(h, w.h), clamp(wi, w.w)) if w.layout == "nchw" else \
            (n, clamp(h, w.h), clamp(wi, w.w), chc)
        return tir.if_then_else(tir.all(*conds), X[idx], zero)

    cb_n = g.Cp // c.ic_bn
    xpack = te.compute((w.n, cb_n, g.hp, g.wp, c.ic_bn),
                       lambda n, cb, hh, ww, ci: x_at(n, cb * c.ic_bn + ci, hh, ww), name="xpack")

    # Weight transform: wt1 = G g (rows), U = wt1 G^T (columns), packed [a*a, K/oc_bn, Cp, oc_bn].
    def g_at(k, ch, r, s):
        if g.Kp == w.k and g.Cp == w.c:
            return W[k, ch, r, s]
        return tir.if_then_else(tir.all(k < w.k, ch < w.c), W[te.min(k, w.k - 1), te.min(ch, w.c - 1), r, s], zero)

    wt1 = te.compute((g.Kp, g.Cp, a, 3), lambda k, ch, e, s: _select(e, G, lambda r: g_at(k, ch, r, s)), name="wt1")
    wtrans = te.compute(
        (a * a, g.Kp // c.oc_bn, g.Cp, c.oc_bn),
        lambda xi, kb, ch, ko: _select(xi % a, G, lambda s: wt1[kb * c.oc_bn + ko, ch, xi // a, s]), name="wtrans")
    stages.update(xpack=xpack, wt1=wt1, wtrans=wtrans)
    U = wtrans
    if prepacked:
        U = stages["wtrans_argument"] = te.placeholder(wtrans.shape, "float32", name="wtrans")

    # Input transform: vt1 = B^T d (rows), V = vt1 B (columns).
    def tile(t):
        t = te.min(t, g.T - 1) if g.Tp > g.T else t  # padding tiles repeat the last one (never written back)
        return t // (g.nH * g.nW), t // g.nW % g.nH, t % g.nW

    def vt1_body(t, cb, e, j, ci):
        n, th, tw = tile(t)
        return _select(e, BT, lambda i: xpack[n, cb, th * m + i, tw * m + j, ci])

    vt1 = te.compute((g.Tp, cb_n, a, a, c.ic_bn), vt1_body, name="vt1")
    vtrans = te.compute(
        (a * a, g.Tp // c.ow_bn, cb_n, c.ow_bn, c.ic_bn),
        lambda xi, tb, cb, ti, ci: _select(xi % a, BT, lambda j: vt1[tb * c.ow_bn + ti, cb, xi // a, j, ci]),
        name="vtrans")

    rcb, rci = te.reduce_axis((0, cb_n), name="rcb"), te.reduce_axis((0, c.ic_bn), name="rci")
    mm = te.compute(
        (a * a, g.Tp, g.Kp),
        lambda xi, t, k: te.sum(vtrans[xi, t // c.ow_bn, rcb, t % c.ow_bn, rci]
                                * U[xi, k // c.oc_bn, rcb * c.ic_bn + rci, k % c.oc_bn], axis=[rcb, rci]), name="mm")

    # Output transform: ot1 = A^T M (rows), Y = ot1 A (columns), channels-last pixels.
    ot1 = te.compute((g.Tp, a, m, g.Kp), lambda t, e, j, k: _select(j, AT, lambda e2: mm[e * a + e2, t, k]),
                     name="ot1")

    def conv_body(n, p, q, k):
        t = (n * g.nH + p // m) * g.nW + q // m
        return _select(p % m, AT, lambda e: ot1[t, e, q % m, k])

    conv = te.compute((w.n, g.nH * m, g.nW * m, g.Kp), conv_body, name="conv")
    stages.update(vt1=vt1, vtrans=vtrans, mm=mm, ot1=ot1, conv=conv)

    def out_body(*idx):
        n, k, p, q = idx if w.layout == "nchw" else (idx[0], idx[3], idx[1], idx[2])
        return apply_epilogue(conv[n, p, q, k], w.epilogue, extra, k, idx, w.out_dtype)

    stages["out"] = te.compute(w.out_shape, out_body, name="out")
    weight = stages.pop("wtrans_argument", W)
    return [X, weight, *extra.values(), stages["out"]], stages


def _extent(sch, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tir.IntImm) else None


def _vectorize(sch, loop, lanes: int):
    """Vectorize a loop in chunks of `lanes` (or whole, when it is shorter)."""
    extent = _extent(sch, loop) or 1
    if extent > lanes and extent % lanes == 0:
        loop = sch.split(loop, [None, lanes])[1]
    elif extent > lanes:
        return
    sch.vectorize(loop)


def schedule(w: Conv2dWorkload, c: Conv2dConfig, prepacked: bool = False) -> tvm.IRModule:
    args, stages = define(w, c, prepacked)
    sch = tvm.s_tir.Schedule(te.create_prim_func(args))
    g = _Geometry(w, c)
    lanes = 16 if c.oc_bn % 16 == 0 else 8

    # GEMM: [xi, t, k] -> xi, tb/kb blocks, rc, ti, ko (vector)
    mm = sch.get_sblock("mm")
    xi, t, k, rcb, rci = sch.get_loops(mm)
    tb, ti = sch.split(t, [None, c.ow_bn])
    kb, ko = sch.split(k, [None, c.oc_bn])
    ko_o, ko_v = sch.split(ko, [None, lanes])
    rc_o, rc_u = sch.split(rci, [None, c.unroll])
    blocks = [kb, tb] if c.outer == "kp" else [tb, kb]
    sch.reorder(xi, *blocks, rcb, rc_o, rc_u, ti, ko_o, ko_v)
    acc = sch.cache_write(mm, 0, "local")
    sch.reverse_compute_at(acc, blocks[1])
    write_back = loops_under(sch, acc, blocks[1])  # ti (none when ow_bn = 1), ko
    sch.vectorize(ko_v)
    for loop in (rc_u, ti, ko_o):
        sch.unroll(loop)
    sch.parallel(sch.fuse(xi, *blocks))
    sch.decompose_reduction(mm, rcb)
    unroll_and_vectorize(sch, write_back)

    # Input transform: per (tb, cb, ti): all a*a positions, vectors of ic_bn channels.
    vtrans = sch.get_sblock("vtrans")
    vxi, vtb, vcb, vti, vci = sch.get_loops(vtrans)
    sch.reorder(vtb, vcb, vti, vxi, vci)
    vt1 = sch.get_sblock("vt1")
    sch.compute_at(vt1, vti)
    sch.set_scope(vt1, 0, "local")
    sch.parallel(sch.fuse(vtb, vcb))
    sch.unroll(vxi)
    sch.vectorize(vci)
    l1 = sch.get_loops(vt1)
    sch.unroll(l1[-3])
    sch.unroll(l1[-2])
    sch.vectorize(l1[-1])

    # Output transform: per tile (po, qo) and channel vector: m x m pixels.
    conv = sch.get_sblock("conv")
    n, p, q, kk = sch.get_loops(conv)
    po, pi = sch.split(p, [None, g.m])
    qo, qi = sch.split(q, [None, g.m])
    kv_o, kv = sch.split(kk, [None, lanes])
    # "tile": channel blocks outside the tiles of a row, and the write-back per channel block of the row (its
    # channels-last block stays in L1 for the transposing gathers); "row": per row of tiles, all channels.
    sch.reorder(n, po, *((kv_o, qo) if c.epilogue_at == "tile" else (qo, kv_o)), pi, qi, kv)
    ot1 = sch.get_sblock("ot1")
    sch.compute_at(ot1, kv_o if c.epilogue_at != "tile" else qo)
    sch.set_scope(ot1, 0, "local")
    sch.unroll(pi)
    sch.unroll(qi)
    sch.vectorize(kv)
    o1 = sch.get_loops(ot1)
    sch.unroll(o1[-3])
    sch.unroll(o1[-2])
    sch.vectorize(o1[-1])
    out = sch.get_sblock("out")
    if c.epilogue_at != "root":
        sch.reverse_compute_at(out, kv_o if c.epilogue_at == "tile" else po)
    sch.parallel(sch.fuse(n, po))
    oloops = sch.get_loops(out)
    if w.layout == "nchw":  # a vector of the whole pixel row, gathered from the channels-last tiles
        _vectorize(sch, oloops[-1], _extent(sch, oloops[-1]) or 1)
    else:
        _vectorize(sch, oloops[-1], lanes)
    if c.epilogue_at == "root":
        sch.parallel(sch.fuse(*oloops[:2]))

    # Packs.
    xl = sch.get_loops(sch.get_sblock("xpack"))
    sch.parallel(sch.fuse(*xl[:3]))
    sch.vectorize(xl[-1])
    if not prepacked:
        wtrans = sch.get_sblock("wtrans")
        wxi, wkb, wch, wko = sch.get_loops(wtrans)
        wko_o, wko_v = sch.split(wko, [None, lanes])
        sch.reorder(wkb, wch, wko_o, wxi, wko_v)
        wt1 = sch.get_sblock("wt1")
        sch.compute_at(wt1, wko_o)
        sch.set_scope(wt1, 0, "local")
        wl = sch.get_loops(wt1)  # ..., k (lanes), e, s
        sch.reorder(wl[-2], wl[-1], wl[-3])
        sch.unroll(wl[-2])
        sch.unroll(wl[-1])
        sch.vectorize(wl[-3])
        sch.parallel(sch.fuse(wkb, wch))
        sch.unroll(wxi)
        sch.vectorize(wko_v)
    return sch.mod


def lower(w: Conv2dWorkload, c: Conv2dConfig) -> tvm.IRModule:
    """The conv2d.winograd template's kernel; for a constant weight, with `pack_weight` (the weight transform)."""
    if w.const_weight:
        return with_pack_weight(*prepacked_modules(w, c)[:2])
    return schedule(w, c)


def prepacked_operands(w: Conv2dWorkload, c: Conv2dConfig) -> dict[str, tuple[int, ...]]:
    """A constant weight's transformed shape (the TE definition only: no schedule is built for a shape)."""
    if not w.const_weight:
        return {}
    return {"weight": tuple(int(d) for d in define(w, c, prepacked=True)[1]["wtrans"].shape)}


def prepacked_modules(w: Conv2dWorkload, c: Conv2dConfig):
    """(weight transform, kernel taking the transformed weight, its shape), for constant weights."""
    _, stages = define(w, c, prepacked=True)
    wtrans = stages["wtrans"]
    W = stages["wt1"].op.input_tensors[0]
    sch = tvm.s_tir.Schedule(te.create_prim_func([W, wtrans]))
    lanes = 16 if c.oc_bn % 16 == 0 else 8
    wxi, wkb, wch, wko = sch.get_loops(sch.get_sblock("wtrans"))
    wko_o, wko_v = sch.split(wko, [None, lanes])
    sch.reorder(wkb, wch, wko_o, wxi, wko_v)
    sch.parallel(sch.fuse(wkb, wch))
    sch.vectorize(wko_v)
    return sch.mod, schedule(w, c, prepacked=True), tuple(int(d) for d in wtrans.shape)
