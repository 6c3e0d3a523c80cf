"""The quantized GEMM pattern: torchao's weight-only linears on CPU, int8 (Int8WeightOnlyConfig) and intN
(IntxWeightOnlyConfig), as autotile::qlinear; and the autotile::qlinear calls autotile.nn.QuantizedLinear puts
in a model, pointed at the compile's database."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from autotile.dynamo.buckets import bucket
from autotile.dynamo.match import (
    VIEWS,
    Epilogue,
    f32_tensor,
    is_call,
    is_static,
    known,
    mm_operands,
    only_user,
    swaps_last_two,
    take_addend,
    val,
    walk_epilogue,
)
from autotile.dynamo.pattern import Context, Pattern, Skip, static_or_bucket
from autotile.dynamo.plans import QLinearPlan

aten = torch.ops.aten
prims = torch.ops.prims


@dataclass(frozen=True)
class QGemmMatch:
    anchor: torch.fx.Node  # the mm or addmm of x and the dequantized weight
    x: torch.fx.Node
    codes: torch.fx.Node  # the int8 (N, K) graph input holding the weight's values
    scales: torch.fx.Node  # one per output channel or group
    zeros: torch.fx.Node | None  # torchao's signed zero points (None: int8, symmetric)
    epilogue: Epilogue

    @property
    def last(self) -> torch.fx.Node:
        return self.epilogue.last


def _float(node):
    """x behind convert_element_type(x, float32) (Inductor's graphs) or _to_copy(x, dtype=float32) (AOTAutograd's
    for the eager fallback), else None."""
    if not isinstance(node, torch.fx.Node) or len(node.args) < 1:
        return None
    x = node.args[0]
    if is_call(node, prims.convert_element_type.default, x, torch.float32):
        return x
    to_float = node.target == aten._to_copy.default and len(node.args) == 1 and node.kwargs == {"dtype": torch.float32}
    return x if to_float else None


def _int8_weight(node):
    """The int8 (N, K) placeholder behind `float(permute(W, [1, 0]))` (`_float`), else None."""
    t = _float(node)
    if t is None or not swaps_last_two(t) or t.args[0].op != "placeholder":
        return None
    w = val(t.args[0])
    return t.args[0] if isinstance(w, torch.Tensor) and w.dtype == torch.int8 and w.dim() == 2 else None


def _qgemm(anchor, e: Epilogue, x, codes, scales, zeros=None) -> QGemmMatch | None:
    """A weight-only quantized linear's match extended over its epilogue; None when the epilogue takes a residual,
    which the quantized op has no operand for (left to the float path)."""
    walk_epilogue(e, val(anchor).shape, allow_views=True, bias_along_n=True)
    return None if "residual" in e.steps else QGemmMatch(anchor, x, codes, scales, zeros, e)


def match_int8_weight_only(node) -> QGemmMatch | None:
    """torchao's int8 weight-only linear as it reaches the post-grad graph on CPU (Int8WeightOnlyConfig):
    mm(x, float(W_int8^T)) * scale[N] [+ bias, activation]."""
    if node.target != aten.mm.default or not f32_tensor(node.args[0]):
        return None
    weight = _int8_weight(node.args[1])
    if weight is None or not is_static(*val(node.args[1]).shape):
        return None
    n = val(node).shape[-1]
    scale = only_user(node)
    if scale is None or scale.target != aten.mul.Tensor or len(scale.args) != 2 or scale.kwargs:
        return None
    other = scale.args[1] if scale.args[0] is node else scale.args[0]
    if other is node or not f32_tensor(other) or not known(val(other).numel() == n):
        return None
    return _qgemm(node, Epilogue(scale), node.args[0], weight, other)


def _placeholder(node, dtype, shape):
    """`node` when it is a graph input of this dtype and static shape, else None."""
    v = val(node)
    ok = isinstance(v, torch.Tensor) and node.op == "placeholder" and v.dtype == dtype and list(v.shape) == shape
    return node if ok else None


def _unview(node):
    """(what `node` views, its shape as a list): through one reshape / view, if there is one."""
    inner = node.args[0] if isinstance(node, torch.fx.Node) and node.target in VIEWS else node
    v = val(node)
    return inner, list(v.shape) if isinstance(v, torch.Tensor) else None


def _operands(node, target):
    """The two args of a binary `target` call (aten.sub.Tensor, aten.mul.Tensor) without alpha, else None."""
    ok = isinstance(node, torch.fx.Node) and node.target == target and len(node.args) == 2 and not node.kwargs
    return node.args if ok else None


def intx_weight(node):
    """(qdata, scale, zero_point), the graph inputs a torchao IntxUnpackedToInt8Tensor flattens to, when `node`
    is its dequantized float (N, K) weight as torchao 0.18 computes it on CPU (each reshape may be absent):
        per group (G groups of g):  reshape((float(reshape(qdata, [N, G, g])) - float(reshape(zero_point, [N, G, 1])))
                                            * reshape(scale, [N, G, 1]), [N, K])
        per channel (G = 1):        (float(qdata) - float(zero_point)) * scale, zero_point and scale (N, 1).
    qdata int8 (N, K) holds signed values of the tensor's bit width; None when `node` is anything else."""
    v = val(node)
    if not f32_tensor(node) or v.dim() != 2 or not is_static(*v.shape):
        return None
    n, k = v.shape
    mul, _ = _unview(node)
    if (factors := _operands(mul, aten.mul.Tensor)) is None:
        return None
    sub, scale_view = factors
    terms = _operands(sub, aten.sub.Tensor)
    if terms is None or (q_view := _float(terms[0])) is None or (z_view := _float(terms[1])) is None:
        return None
    (qdata, q_shape), (scale, s_shape), (zero_point, z_shape) = map(_unview, (q_view, scale_view, z_view))
    groups = val(scale).shape[-1] if isinstance(val(scale), torch.Tensor) else None
    if not isinstance(groups, int) or groups < 1 or k % groups:
        return None
    # The shapes that broadcast one scale and zero point over each group of K: (N, G, g) by (N, G, 1), or, with
    # one group, (N, K) by (N, 1).
    grouped = ([n, groups, k // groups], [n, groups, 1]) if len(q_shape or ()) == 3 else ([n, k], [n, 1])
    if (q_shape, s_shape) != grouped or z_shape != grouped[1] or val(mul).shape != val(q_view).shape:
        return None
    inputs = (_placeholder(qdata, torch.int8, [n, k]), _placeholder(scale, torch.float32, [n, groups]),
              _placeholder(zero_point, torch.int8, [n, groups]))
    return None if None in inputs else inputs


def subclass_input(node) -> int | None:
    """The index of the graph input (a tensor subclass) that placeholder `node` is the `qdata` of, as
    AOTAutograd's descriptor records it; None for any other placeholder."""
    desc = node.meta.get("desc")
    base = getattr(desc, "base", None)
    index = getattr(base, "idx", None)
    return index if getattr(desc, "attr", None) == "qdata" and type(base).__name__ == "PlainAOTInput" else None


def match_intx_weight_only(node) -> QGemmMatch | None:
    """torchao's intN weight-only linear on CPU (IntxWeightOnlyConfig, N = 1..8, per group or per channel):
    mm / addmm(bias, x, dequantize(W)^T) [+ activation]. The bit width is not in the graph: the plan reads it from
    the subclass (`subclass_input`)."""
    operands = mm_operands(node)
    if operands is None:
        return None
    addend, x, w_t = operands
    if not f32_tensor(x) or not swaps_last_two(w_t) or (weight := intx_weight(w_t.args[0])) is None:
        return None
    if subclass_input(weight[0]) is None:
        return None  # plain int8 buffers, not a torchao tensor: no bit width to read, left to the gemm pattern
    e = Epilogue(node)
    if addend is not None and not take_addend(e, addend, val(node).shape[-1]):
        return None
    return _qgemm(node, e, x, *weight)


class QGemmPattern(Pattern):
    name = "qlinear"  # its op's name, the key stats.replaced has always counted it under
    # Its mm and addmm are the gemm pattern's heavy ops already.

    def match(self, node):
        return match_int8_weight_only(node) or match_intx_weight_only(node)

    def plan(self, m: QGemmMatch, ctx: Context) -> QLinearPlan:
        """torchao's int8 (per channel, no zero point) or intN (per group or channel, zero points) weight-only
        linear as a quantized GEMM."""
        from autotile.ops.qgemm.workload import QGemmWorkload

        xv, (n, k) = val(m.x), val(m.codes).shape
        rows, _ = static_or_bucket(xv.shape[0])
        bits = 8 if m.zeros is None else ctx.weight_bits.get(subclass_input(m.codes))
        if bits is None:
            raise Skip  # not a torchao weight the backend saw, or of a dtype it does not know
        groups = val(m.scales).shape[-1] if m.zeros is not None else 1
        w = QGemmWorkload(bucket(rows), n, k, weight_dtype=f"int{bits}", group_size=k // groups,
                          asymmetric=m.zeros is not None, epilogue=m.epilogue.steps)
        # The scales reach the op through a reshape, a new tensor each call, which a per-tensor cache would convert
        # every time: only codes and zeros are kept converted.
        return QLinearPlan(ctx.db, ctx.tuning, w, backend=ctx.backend, signed_bits=bits, pack=("codes", "zeros"))

    def rewrite(self, m: QGemmMatch, plan: QLinearPlan, ctx: Context) -> torch.fx.Node:
        x, codes = ctx.current(m.x), ctx.current(m.codes)
        # (N, groups) as the kernel takes them; int8's per-channel scales may come as (N,) or (1, N).
        n = val(m.anchor).shape[-1]
        scales = ctx.emit(aten.reshape.default, ctx.current(m.scales), [n, -1])
        bias = ctx.as_vector(ctx.current(m.epilogue.bias))
        new = ctx.emit(torch.ops.autotile.qlinear.default, x, codes, scales, ctx.current(m.zeros), bias,
                       plan.encode())
        return ctx.viewed(new, m.epilogue.view)

    def adopt(self, node, ctx: Context):
        """A QuantizedLinear's op follows this compile's database and tuning mode; its workload to prepare has
        the bucket of the traced rows."""
        if node.target != torch.ops.autotile.qlinear.default:
            return None
        plan = replace(QLinearPlan.decode(node.args[-1]), db=ctx.db, tuning=ctx.tuning)
        node.args = (*node.args[:-1], plan.encode())
        x = val(node.args[0])
        rows, _ = static_or_bucket(x.numel() // x.shape[-1] if x.dim() > 1 else 1)
        return plan.resized({"m": bucket(rows)})


PATTERN = QGemmPattern()
