"""Lowering of the GEMM template to TVM: a TE definition, then a TensorIR schedule from the config."""

from __future__ import annotations

import tvm
from tvm import te
from tvm import tirx as tir

from autotile.codegen.tvm import fastmath
from autotile.codegen.tvm.fastmath import apply_epilogue
from autotile.ops.gemm.blis import GemmConfig, _ceil_div
from autotile.ops.gemm.workload import GemmWorkload


def _round_up(x: int, step: int) -> int:
    return _ceil_div(x, step) * step


def _epilogue_stage(w: GemmWorkload, src, ops, extra, name, out_dtype):
    """One elementwise stage over (batch?, M, N) applying `ops` to src."""
    batched = w.batch > 1

    def body(*idx):
        b, i, j = idx if batched else (None, *idx)
        return apply_epilogue(src[idx], ops, extra, j, idx, out_dtype)

    shape = ((w.batch,) if batched else ()) + (w.m, w.n)
    return te.compute(shape, body, name=name)


def dense_operands(w: GemmWorkload):
    """A and B as plain tensors: (placeholders, a_at(bi, i, k), b_at(bi, k, j)). Other templates
    (quantized weights) supply their own loaders and reuse the rest of the GEMM."""
    shapes = w.operand_shapes()
    A = te.placeholder(shapes["A"], w.dtype, name="A")
    B = te.placeholder(shapes["B"], w.dtype, name="B")

    def a_at(bi, i, k):
        idx = (k, i) if w.trans_a else (i, k)
        return A[idx if w.broadcast == "a" else (*bi, *idx)]

    def b_at(bi, k, j):
        idx = (j, k) if w.trans_b else (k, j)
        return B[idx if w.broadcast == "b" else (*bi, *idx)]

    return [A, B], a_at, b_at


def layer_normalized(w: GemmWorkload, a_at, lanes: int = 16):
    """The layernorm prologue: ([ln_weight, ln_bias] placeholders, a loader of A normalized over its rows).
    The loader reads each row's mean and rstd from stages (ln_sum/ln_mean, ln_sq/ln_var, ln_rstd): lane-wise
    partial sums over K, then their lanes, two passes as the layer-norm template (no E[x^2] - mean^2)."""
    lanes = min(lanes, w.k)
    chunks = _ceil_div(w.k, lanes)
    ln_weight = te.placeholder((w.k,), w.dtype, name="ln_weight")
    ln_bias = te.placeholder((w.k,), w.dtype, name="ln_bias")
    inv_k = tir.const(1.0 / w.k, "float32")

    def row(i, k):
        return fastmath.widen(a_at((), i, k), w.dtype)

    def lane_sums(name, term):
        ko = te.reduce_axis((0, chunks), name=f"{name}_k")

        def body(i, lane):
            k = ko * lanes + lane
            if chunks * lanes == w.k:
                return te.sum(term(i, k), axis=ko)
            return te.sum(tir.if_then_else(k < w.k, term(i, te.min(k, w.k - 1)), tir.const(0.0, "float32")), axis=ko)

        return te.compute((w.m, lanes), body, name=name)

    def row_mean(name, sums):
        lane = te.reduce_axis((0, lanes), name=f"{name}_lane")
        return te.compute((w.m,), lambda i: te.sum(sums[i, lane] * inv_k, axis=lane), name=name)

    mean = row_mean("ln_mean", lane_sums("ln_sum", row))
    var = row_mean("ln_var", lane_sums("ln_sq", lambda i, k: (row(i, k) - mean[i]) * (row(i, k) - mean[i])))
    rstd = te.compute((w.m,), lambda i: tir.const(1.0, "float32") / te.sqrt(var[i] + tir.const(w.eps, "float32")),
                      name="ln_rstd")

    def normalized(bi, i, k):
        value = (row(i, k) - mean[i]) * rstd[i] * fastmath.widen(ln_weight[k], w.dtype) + \
            fastmath.widen(ln_bias[k], w.dtype)
        return fastmath.cast(value, w.dtype)  # 16 bits: rounded as a layer-norm kernel rounds its output

    return [ln_weight, ln_bias], normalized


ROW_STATS = ("ln_rstd", "ln_var", "ln_sq", "ln_mean", "ln_sum")  # consumers first: each moves under the A pack


def schedule_row_stats(sch, reader: str = "Apack") -> None:
    """The prologue's row statistics under the parallel row loop of the stage reading LN(A) (the A pack, or the
    normalized copy): each row block's, while in cache; the lane-wise sums stream K with the lanes vectorized."""
    panel = sch.get_loops(sch.get_sblock(reader))[0]
    for name in ROW_STATS:
        sch.compute_at(sch.get_sblock(name), panel, preserve_unit_loops=True)
    for name in ("ln_sum", "ln_sq"):
        block = sch.get_sblock(name)
        i, lane, ko = sch.get_loops(block)[-3:]
        sch.reorder(i, ko, lane)
        sch.vectorize(lane)
        init = sch.decompose_reduction(block, ko)
        sch.vectorize(sch.get_loops(init)[-1])


def schedule_row_major_pack(sch, name: str, lanes: int, prologue: bool) -> None:
    """A row-major (rows, K) stage A is read from (A's bits, LN(A)): parallel over rows, K vectorized, and a
    layernorm prologue's row statistics under its row loop."""
    rows, cols = sch.get_loops(sch.get_sblock(name))
    sch.parallel(rows)
    sch.vectorize(sch.split(cols, [None, lanes])[1])
    if prologue:
        schedule_row_stats(sch, name)


def prepacks_b(w: GemmWorkload, c: GemmConfig) -> bool:
    """B (constant across calls) is packed into panels once, ahead of the calls, by a second function."""
    return (getattr(w, "const_b", False) and c.pack_b and w.dtype == "float32"
            and (w.batch == 1 or w.broadcast == "b"))


def prepacked_operands(w: GemmWorkload, c: GemmConfig) -> dict[str, tuple[int, ...]]:
    """Operands the kernel takes pre-transformed, and their packed shapes (see codegen/tvm/build.py)."""
    if not prepacks_b(w, c):
        return {}
    nc = c.nc_tiles * c.nr
    return {"B": (_round_up(w.n, nc) // c.nr, _round_up(w.k, c.kc), c.nr)}


def define(w: GemmWorkload, c: GemmConfig, operands=dense_operands, prepacked_b: bool = False):
    """TE tensors: the padded accumulator stage 'mm', packs, and epilogue stages; returns (args, stages).
    prepacked_b: the kernel reads B's panels from an argument (made by stages["Bpack_ahead"] once)."""
    batched = w.batch > 1
    bdim = (w.batch,) if batched else ()
    mc, nc = c.mc_tiles * c.mr, c.nc_tiles * c.nr
    mp, np_, kp = _round_up(w.m, mc), _round_up(w.n, nc), _round_up(w.k, c.kc)

    inputs, a_at, b_at = operands(w)
    stages, ln_inputs = {}, []
    if getattr(w, "prologue", ""):
        ln_inputs, a_at = layer_normalized(w, a_at)
        if not c.pack_a:  # LN(A) once, row-major: the tiles read it as they would read A
            stages["Anorm"] = te.compute((w.m, w.k), lambda i, k: a_at((), i, k), name="Anorm")
            a_at = lambda bi, i, k: stages["Anorm"][i, k]  # noqa: E731
    extra = {}
    addend = getattr(w, "addend_dtype", "float32")  # the quantized GEMMs reuse this with float32 addends
    if "bias" in w.epilogue:
        extra["bias"] = te.placeholder((w.n,), addend, name="bias")
    if "residual" in w.epilogue:
        extra["residual"] = te.placeholder(bdim + (w.m, w.n), addend, name="residual")

    def clamp(x, n, padded):
        return te.min(x, n - 1) if padded > n else x

    def pack(name, tile, extent, padded, load, shared):
        """name[b, outer, k, inner] = operand[outer*tile + inner, k], zero beyond its extent and K:
        a panel the inner loop reads contiguously. A shared (broadcast) operand is packed once."""

        def body(*idx):
            bi, (outer, k, inner) = idx[:-3], idx[-3:]
            x = outer * tile + inner
            value = load(bi, clamp(x, extent, padded), clamp(k, w.k, kp))
            return tir.if_then_else(tir.all(x < extent, k < w.k), value, tir.const(0, str(value.expr_ty())))

        return te.compute((() if shared else bdim) + (padded // tile, kp, tile), body, name=name)

    def own(bi, operand):
        return () if w.broadcast == operand else bi

    if c.pack_a:
        stages["Apack"] = pack("Apack", c.mr, w.m, mp, a_at, w.broadcast == "a")
    if c.pack_b:
        stages["Bpack"] = pack("Bpack", c.nr, w.n, np_, lambda bi, j, k: b_at(bi, k, j), w.broadcast == "b")
        if prepacked_b:
            stages["B"], stages["Bpack_ahead"] = inputs[1], stages["Bpack"]
            stages["Bpack"] = te.placeholder(stages["Bpack"].shape, w.dtype, name="Bpacked")
            inputs = [inputs[0], stages["Bpack"]]

    k = te.reduce_axis((0, kp), name="k")

    def mm(*idx):
        bi, (i, j) = idx[:-2], idx[-2:]
        if c.pack_a:
            a = stages["Apack"][(*own(bi, "a"), i // c.mr, k, i % c.mr)]
        else:
            a = a_at(bi, clamp(i, w.m, mp), clamp(k, w.k, kp))
        if c.pack_b:
            b = stages["Bpack"][(*own(bi, "b"), j // c.nr, k, j % c.nr)]
        else:
            b = b_at(bi, clamp(k, w.k, kp), clamp(j, w.n, np_))
            if kp > w.k and not c.pack_a:  # some operand must supply zeros past K
                b = tir.if_then_else(k < w.k, b, tir.const(0, str(b.expr_ty())))
        return te.sum(a.astype("float32") * b.astype("float32"), axis=k)

    stages["mm"] = te.compute(bdim + (mp, np_), mm, name="mm")

    fused, rest = w.epilogue[: c.fuse_epilogue], w.epilogue[c.fuse_epilogue:]
    out_dtype = w.out_dtype
    # The write-back stage cuts the padding off and applies the fused ops.
    stages["C"] = _epilogue_stage(w, stages["mm"], fused, extra, "C", out_dtype if not rest else "float32")
    last = stages["C"]
    for n, op in enumerate(rest):
        final = n == len(rest) - 1
        last = _epilogue_stage(w, last, (op,), extra, f"epi{n}", out_dtype if final else "float32")
        stages[f"epi{n}"] = last
    args = [*inputs, *ln_inputs, *extra.values(), last]
    return args, stages


def _vectorize_inner(sch, block, lanes: int):
    """Parallelize the outer loop and vectorize the innermost of an elementwise stage."""
    loops = sch.get_loops(block)
    inner = loops[-1]
    _, v = sch.split(inner, [None, lanes])
    sch.vectorize(v)


def schedule(w: GemmWorkload, c: GemmConfig, operands=None, pack_at: str = "root") -> tvm.IRModule:
    """operands: the loaders (default: A and B as given). pack_at "block": each outer block packs the
    panels it reads (bounded memory, e.g. a dequantized weight tile) instead of the whole operand once."""
    prepacked = operands is None and prepacks_b(w, c)
    args, stages = define(w, c, operands or dense_operands, prepacked_b=prepacked)
    sch = tvm.s_tir.Schedule(te.create_prim_func(args))
    batched = w.batch > 1

    mm = sch.get_sblock("mm")
    loops = sch.get_loops(mm)
    bl, (i, j, k) = loops[:-3], loops[-3:]
    i0, i1, i2 = sch.split(i, [None, c.mc_tiles, c.mr])
    j0, j1, j2 = sch.split(j, [None, c.nc_tiles, c.nr])
    k0, k1 = sch.split(k, [None, c.kc])
    k1a, k1b = sch.split(k1, [None, c.unroll_k])
    j2o, j2i = sch.split(j2, [None, c.vec])
    outer = (i0, j0) if c.outer == "ij" else (j0, i0)
    inner = (i1, j1) if c.inner == "ij" else (j1, i1)
    if c.korder == "outer":
        order = [*bl, *outer, k0, *inner, k1a, k1b, i2, j2o, j2i]
    else:
        order = [*bl, *outer, *inner, k0, k1a, k1b, i2, j2o, j2i]
    sch.reorder(*order)

    acc = sch.cache_write(mm, 0, "local")
    sch.reverse_compute_at(acc, inner[-1])
    c_block = sch.get_sblock("C")
    sch.reverse_compute_at(c_block, inner[-1] if c.epilogue_at == "tile" else outer[-1])

    sch.vectorize(j2i)
    sch.unroll(j2o)
    sch.unroll(i2)
    if c.unroll_k > 1:
        sch.unroll(k1b)
    if pack_at == "block":  # before the outer loops are fused for parallelism
        for name in ("Apack", "Bpack"):
            if name in stages:  # a kc-deep panel when K is chunked outside the tiles
                block = sch.get_sblock(name)
                sch.compute_at(block, k0 if c.korder == "outer" else outer[-1])
                sch.vectorize(sch.get_loops(block)[-1])
    n_par = {"both": 2, "first": 1, "none": 0}[c.parallel]
    par = list(bl) + list(outer[:n_par])
    if par:
        sch.parallel(sch.fuse(*par) if len(par) > 1 else par[0])
    sch.decompose_reduction(mm, k0)

    acc_loops = sch.get_loops(acc)
    sch.vectorize(acc_loops[-1])
    c_loops = sch.get_loops(c_block)
    if w.n >= c.vec:
        _, cv = sch.split(c_loops[-1], [None, c.vec])
        sch.vectorize(cv)

    for name in ("Apack", "Bpack"):
        if name in stages and pack_at == "root" and not (name == "Bpack" and prepacked):
            _schedule_root_pack(sch, sch.get_sblock(name), batched and w.broadcast != name[0].lower(), len(bl),
                                vectorize=name == "Bpack")
    if "Anorm" in stages:
        schedule_row_major_pack(sch, "Anorm", c.vec, prologue=True)
    elif getattr(w, "prologue", ""):
        schedule_row_stats(sch)
    schedule_epilogue_stages(sch, w, stages, c.vec)
    if not prepacked:
        return sch.mod
    # The B pack as its own function, `pack_B(B, Bpacked)`, run once per weight by the caller.
    pack = tvm.s_tir.Schedule(te.create_prim_func([stages["B"], stages["Bpack_ahead"]]))
    _schedule_root_pack(pack, pack.get_sblock("Bpack"), False, 0, vectorize=True)
    return tvm.IRModule({"main": sch.mod["main"], "pack_B": pack.mod["main"].with_attr("global_symbol", "pack_B")})


def _schedule_root_pack(sch, block, per_batch: bool, batch_dims: int, vectorize: bool) -> None:
    """A whole-operand pack: parallel over panels (and batches), a B panel's row vectorized."""
    ploops = sch.get_loops(block)
    sch.parallel(sch.fuse(*ploops[: batch_dims + 1]) if per_batch else ploops[0])
    if vectorize:
        sch.vectorize(ploops[-1])


def schedule_epilogue_stages(sch, w: GemmWorkload, stages, lanes: int) -> None:
    """The epilogue ops left out of the write-back: one parallel, vectorized pass each."""
    for name in stages:
        if name.startswith("epi"):
            block = sch.get_sblock(name)
            eloops = sch.get_loops(block)
            sch.parallel(sch.fuse(*eloops[:-1]))
            if w.n >= lanes:
                _vectorize_inner(sch, block, lanes)
