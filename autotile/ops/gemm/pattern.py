"""The GEMM pattern: mm, addmm and bmm on float32 tensors (bfloat16 / float16 on CPU) with their fused epilogue,
as autotile::gemm."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from autotile.dynamo.match import (
    VIEWS,
    Epilogue,
    cast_to,
    float_dtype,
    is_static,
    layout,
    mm_operands,
    swaps_last_two,
    take_addend,
    val,
    walk_epilogue,
)
from autotile.dynamo.pattern import Context, Pattern, static_or_bucket
from autotile.dynamo.plans import GemmPlan
from autotile.errors import AutotileError

aten = torch.ops.aten


@dataclass(frozen=True)
class GemmMatch:
    anchor: torch.fx.Node  # the mm, addmm or bmm
    a: torch.fx.Node
    b: torch.fx.Node  # the op's B operand: B itself, or the weight W when `b_is_weight`
    b_is_weight: bool  # B is W^T with W a graph input (a linear's weight): the op gets W, packed once per version
    epilogue: Epilogue
    prologue: object = None  # the layer norm's match (layernorm pattern) A is, when the kernel computes it

    @property
    def last(self) -> torch.fx.Node:
        return self.epilogue.last


def match_gemm(node) -> GemmMatch | None:
    """mm, addmm (beta = alpha = 1) and bmm whose operands and result share one float dtype (float_dtype); N, K and
    the batch static, M may be symbolic."""
    if node.target == aten.bmm.default:
        inp, (a, b) = None, node.args[:2]
    elif (operands := mm_operands(node)) is not None:
        inp, a, b = operands
    else:
        return None
    dtypes = {float_dtype(x) for x in (a, b, node)}
    if len(dtypes) != 1 or None in dtypes:
        return None
    av, bv, ov = val(a), val(b), val(node)
    if not is_static(*bv.shape, av.shape[-1], *av.shape[:-2]):
        return None
    e = Epilogue(node, dtype=dtypes.pop())
    if inp is not None and not take_addend(e, inp, bv.shape[-1]):
        return None
    walk_epilogue(e, ov.shape, allow_views=av.dim() == 2, bias_along_n=True)
    # A linear's weight W, used as W^T: the op gets W itself (the same object every call), a constant B that the
    # kernel reads as B^T and packs into its panels once per version.
    weight = graph_weight(b.args[0], e.dtype) if swaps_last_two(b) else None
    return GemmMatch(node, a, b if weight is None else weight, weight is not None, e)


def graph_weight(node, dtype: str) -> torch.fx.Node | None:
    """The graph input a linear's weight is: the input itself, or (autocast) the float32 input cast to the GEMM's
    16-bit dtype on every call, a cast the op then makes once per weight version, as it packs it."""
    if node.op == "placeholder":
        return node
    source = node.args[0] if cast_to(node) == dtype else None
    if source is not None and source.op == "placeholder" and float_dtype(source) == "float32":
        return source
    return None


class GemmPattern(Pattern):
    name = "gemm"
    heavy = frozenset({aten.mm.default, aten.addmm.default, aten.bmm.default})

    def match(self, node):
        return match_gemm(node)

    def plan(self, m: GemmMatch, ctx: Context) -> GemmPlan:
        from autotile.ops.gemm.workload import GemmWorkload

        av, bv = val(m.a), val(m.anchor.args[-1])  # B as the mm reads it (W^T for a weight)
        rows, dynamic = static_or_bucket(av.shape[-2])
        w = GemmWorkload(rows, bv.shape[-1], bv.shape[-2], batch=av.shape[0] if av.dim() == 3 else 1,
                         trans_a=layout(av) == "t", trans_b=m.b_is_weight or layout(bv) == "t",
                         epilogue=m.epilogue.steps, const_b=m.b_is_weight, dtype=m.epilogue.dtype,
                         addend_dtype=m.epilogue.dtype)
        return GemmPlan(ctx.db, ctx.tuning, w, backend=ctx.backend, m_dim=av.dim() - 2 if dynamic else None)

    def prologue_source(self, m: GemmMatch):
        """A 2-D A's value before any views: a pre-norm block's layer norm, which the GEMM can compute as it packs
        A (no normalized copy, no op in between)."""
        if val(m.a).dim() != 2:
            return None
        source = m.a
        while source.op == "call_function" and source.target in VIEWS and len(source.users) == 1:
            source = source.args[0]
        return source

    def with_prologue(self, m: GemmMatch, plan: GemmPlan, producer: str, produced, ctx: Context):
        """A layer norm with scale and shift, of the GEMM's dtype, where every template this device has for the
        plain GEMM takes it too (fusing never costs the GEMM a template, e.g. AMX tiles)."""
        if producer != "layernorm" or produced.weight is None or produced.bias is None \
                or float_dtype(produced.x) != plan.workload.dtype:
            return None
        from autotile.db.device import current_device
        from autotile.ops import templates_for

        fused = replace(plan.workload, prologue="layernorm", eps=produced.eps)
        try:  # (no CUDA GPU for the triton backend: nothing fused, the plain GEMM's plan decides)
            fingerprint = current_device(ctx.backend).fingerprint
            names = [{t.name for t in templates_for(w, fingerprint, backend=ctx.backend)}
                     for w in (plan.workload, fused)]
        except AutotileError:
            return None
        if not names[0] <= names[1]:
            return None
        return replace(m, prologue=produced), replace(plan, workload=fused)

    def rewrite(self, m: GemmMatch, plan: GemmPlan, ctx: Context) -> torch.fx.Node:
        e = m.epilogue
        bias, residual = ctx.as_vector(ctx.current(e.bias)), ctx.current(e.residual)
        if residual is not None and e.view is not None:
            residual = ctx.emit(aten.reshape.default, residual, [-1, val(m.anchor).shape[-1]])
        a, ln_weight, ln_bias = ctx.current(m.a), None, None
        if m.prologue is not None:  # A is the layer norm's input, normalized by the kernel
            ln = m.prologue
            a = ctx.emit(aten.reshape.default, ctx.current(ln.x), [-1, plan.workload.k])
            ln_weight, ln_bias = ctx.current(ln.weight), ctx.current(ln.bias)
        new = ctx.emit(torch.ops.autotile.gemm.default, a, ctx.current(m.b), ln_weight, ln_bias, bias, residual,
                       plan.encode())
        return ctx.viewed(new, e.view)


PATTERN = GemmPattern()
