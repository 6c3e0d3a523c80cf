"""The layer_norm pattern: Inductor's decomposition of an inference layer_norm over the last dim, as
autotile::layer_norm (it keeps the code between two GEMMs on TVM's thread pool). A 16-bit model's layer norm is
the same float32 math between an upcast of x and a downcast of the result: the op takes the whole chain, reading and
writing the 16-bit type itself."""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from autotile.dynamo.match import (
    FLOATS,
    f32_tensor,
    is_call,
    is_commutative_call,
    is_static,
    known,
    only_user,
    prims,
    val,
)
from autotile.dynamo.pattern import Context, Pattern, static_or_bucket
from autotile.dynamo.plans import LayerNormPlan

aten = torch.ops.aten


@dataclass(frozen=True)
class LayerNormMatch:
    anchor: torch.fx.Node  # the var_mean
    last: torch.fx.Node  # the normalized value, or its affine scale / shift when it has them; 16-bit: the downcast
    x: torch.fx.Node  # the kernel's input: a 16-bit x before its upcast
    weight: torch.fx.Node | None  # the affine scale vector, when there is one
    bias: torch.fx.Node | None  # the affine shift vector, when there is one
    eps: float


def _row_contiguous(v: torch.Tensor) -> bool:
    """Contiguous, proven for every value of its symbolic sizes (never adds a guard)."""
    expected = 1
    for size, stride in reversed(list(zip(v.shape, v.stride()))):
        if not known(stride == expected):
            return False
        expected = expected * size
    return True


def _getitem(node, index: int):
    return next((u for u in node.users if u.target == operator.getitem and u.args[1] == index), None)


def upcast_from_16_bits(node):
    """The bfloat16 / float16 tensor `node` converts (to float32, the var_mean's type), or None. Matching only the
    float32 middle would leave both casts as passes of their own (measured 0.65x Inductor on a bfloat16 GPT block),
    so a 16-bit layer norm is replaced from the upcast to the downcast or not at all."""
    if node.op != "call_function" or node.target != prims.convert_element_type.default:
        return None
    source = val(node.args[0])
    return node.args[0] if isinstance(source, torch.Tensor) and source.dtype in (torch.bfloat16, torch.float16) \
        else None


def match_layer_norm(node) -> LayerNormMatch | None:
    """Inductor's decomposition of layer_norm over the last dim of a contiguous float32 tensor, inference only:
    var, mean = var_mean(x, [-1], correction=0, keepdim=True); (x - mean) * rsqrt(var + eps) [* weight] [+ bias].
    A bfloat16 / float16 x: x is its upcast to float32, weight and bias have its type and the result is cast back
    to it. In training the mean and rsqrt have more users (the backward's) and nothing matches."""
    if node.target != aten.var_mean.correction or len(node.args) != 2 or not f32_tensor(node.args[0]):
        return None
    x, dims = node.args
    source = upcast_from_16_bits(x)  # the upcast may have other users: they keep it, the kernel reads source
    xv = val(x if source is None else source)
    if xv.dim() < 2 or [d % xv.dim() for d in dims] != [xv.dim() - 1] or not is_static(xv.shape[-1]) \
            or node.kwargs != {"correction": 0, "keepdim": True} or not _row_contiguous(xv):
        return None
    var, mean = _getitem(node, 0), _getitem(node, 1)
    if var is None or mean is None or len(node.users) != 2:
        return None
    centered, shifted = only_user(mean), only_user(var)
    if not is_call(centered, aten.sub.Tensor, x, mean) or shifted is None or shifted.target != aten.add.Tensor \
            or shifted.kwargs or len(shifted.args) != 2 or shifted.args[0] is not var \
            or not isinstance(shifted.args[1], float):
        return None
    rstd = only_user(shifted)
    normed = only_user(rstd) if is_call(rstd, aten.rsqrt.default, shifted) else None
    if normed is None or only_user(centered) is not normed or \
            not is_commutative_call(normed, aten.mul.Tensor, centered, rstd):
        return None
    last, affine = normed, {}
    cols = xv.shape[-1]
    for target in (aten.mul.Tensor, aten.add.Tensor):  # the affine scale, then the shift, each optional
        user = only_user(last)
        if user is None or user.target != target or user.kwargs or len(user.args) != 2:
            continue
        other = user.args[1] if user.args[0] is last else user.args[0]
        v = val(other)
        if other is last or not isinstance(v, torch.Tensor) or (v.dtype, v.device) != (xv.dtype, xv.device) \
                or v.dim() != 1 or not known(v.shape[0] == cols):
            continue
        affine[target], last = other, user
    if source is not None:  # the float32 result must go straight back to x's type, which the kernel writes
        down = only_user(last)
        if not is_call(down, prims.convert_element_type.default, last, xv.dtype):
            return None
        x, last = source, down
    return LayerNormMatch(node, last, x, affine.get(aten.mul.Tensor), affine.get(aten.add.Tensor), shifted.args[1])


class LayerNormPattern(Pattern):
    name = "layernorm"

    def match(self, node):
        return match_layer_norm(node)

    def plan(self, m: LayerNormMatch, ctx: Context) -> LayerNormPlan:
        from autotile.ops.layernorm.workload import LayerNormWorkload

        xv = val(m.x)
        rows, dynamic = static_or_bucket(xv.numel() // xv.shape[-1])
        w = LayerNormWorkload(rows, xv.shape[-1], eps=m.eps, dtype=FLOATS[xv.dtype])
        return LayerNormPlan(ctx.db, ctx.tuning, w, backend=ctx.backend, dynamic_rows=dynamic)

    def rewrite(self, m: LayerNormMatch, plan: LayerNormPlan, ctx: Context) -> torch.fx.Node:
        x, weight, bias = (ctx.current(t) for t in (m.x, m.weight, m.bias))
        return ctx.emit(torch.ops.autotile.layer_norm.default, x, weight, bias, plan.encode())


PATTERN = LayerNormPattern()
