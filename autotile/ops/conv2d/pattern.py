"""The conv2d pattern: 2-D NCHW convolutions with an eval BatchNorm folded in and their epilogue, as
autotile::conv2d."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autotile.dynamo.match import Epilogue, f32_tensor, is_static, known, only_user, val, walk_epilogue
from autotile.dynamo.pattern import Context, Pattern
from autotile.dynamo.plans import Conv2dPlan

aten = torch.ops.aten


@dataclass(frozen=True)
class Conv2dMatch:
    anchor: torch.fx.Node  # the convolution
    epilogue: Epilogue
    # Per-output-channel steps (("sub" | "mul" | "add"), node) right after the conv, as an eval BatchNorm
    # decomposes; the rewrite folds them into the weight (scale) and the bias (shift).
    affine: tuple

    @property
    def last(self) -> torch.fx.Node:
        return self.epilogue.last


def per_channel(node, channels) -> bool:
    """A float32 tensor holding one value per output channel, broadcast over an NCHW output: (K, 1, 1)."""
    v = val(node)
    return f32_tensor(node) and v.dim() in (3, 4) and known(v.numel() == channels) and \
        known(v.shape[-3] == channels)


def walk_affine(e: Epilogue, channels: int) -> list:
    """Extend a conv's epilogue over the per-channel sub / mul / add chain of an eval-mode BatchNorm; its steps."""
    steps = {aten.sub.Tensor: "sub", aten.mul.Tensor: "mul", aten.add.Tensor: "add"}
    affine, cur = [], e.last
    while (user := only_user(cur)) is not None and user.op == "call_function" and user.target in steps \
            and not user.kwargs and len(user.args) == 2 and f32_tensor(user):
        step = steps[user.target]
        other = user.args[1] if user.args[0] is cur else user.args[0]
        if other is cur or (step == "sub" and user.args[0] is not cur) or not per_channel(other, channels):
            break
        affine.append((step, other))
        cur = e.last = user
    if any(step != "mul" for step, _ in affine) and "bias" not in e.steps:
        e.steps.append("bias")  # the folded shift
    return affine


def match_conv(node) -> Conv2dMatch | None:
    """2-D, non-transposed, float32 NCHW-contiguous convolutions of static shape; bias, activation, residual."""
    if node.target != aten.convolution.default or len(node.args) != 9:
        return None
    x, w, bias, stride, padding, dilation, transposed, output_padding, groups = node.args
    if transposed or not all(f32_tensor(t) for t in (x, w, node)) or (bias is not None and not f32_tensor(bias)):
        return None
    xv, wv = val(x), val(w)
    if xv.dim() != 4 or wv.dim() != 4 or not is_static(*xv.shape, *wv.shape) or not xv.is_contiguous():
        return None
    if len(stride) != 2 or len(padding) != 2 or len(dilation) != 2 or any(output_padding):
        return None
    e = Epilogue(node)
    if bias is not None:
        e.steps, e.bias = ["bias"], bias
    affine = walk_affine(e, wv.shape[0])
    # A conv's bias is its own arg or the folded shift, never an added vector; no views (NCHW results only).
    walk_epilogue(e, val(node).shape, allow_views=False, bias_along_n=False)
    return Conv2dMatch(node, e, tuple(affine))


def fold_affine(ctx: Context, steps, channels: int, bias):
    """(scale, shift) for conv(x, weight) [+ bias] followed by per-channel sub / mul / add steps.

    The steps (an eval BatchNorm's (x - mean) * invstd * gamma + beta) make y = conv(x, weight * scale) + shift.
    scale and shift are emitted as graph ops on the K-vectors, run each call, so a changed parameter or running
    statistic is always seen; the op scales the weight itself, once per (weight version, scale values), so
    no graph op runs on the weight between two convolutions."""
    e = ctx.emit
    scale, shift = None, bias
    for step, node in steps:
        c = e(aten.reshape.default, node, [channels])
        if step == "mul":
            scale = c if scale is None else e(aten.mul.Tensor, scale, c)
            shift = None if shift is None else e(aten.mul.Tensor, shift, c)
        elif step == "add":
            shift = c if shift is None else e(aten.add.Tensor, shift, c)
        else:
            shift = e(aten.neg.default, c) if shift is None else e(aten.sub.Tensor, shift, c)
    return scale, shift


class Conv2dPattern(Pattern):
    name = "conv2d"
    heavy = frozenset({aten.convolution.default})

    def match(self, node):
        return match_conv(node)

    def plan(self, m: Conv2dMatch, ctx: Context) -> Conv2dPlan:
        from autotile.ops.conv2d.workload import Conv2dWorkload

        x, weight, _, stride, padding, dilation, _, _, groups = m.anchor.args
        (n, c, h, wd), (k, _, r, s) = val(x).shape, val(weight).shape
        w = Conv2dWorkload(n, c, h, wd, k, r, s, stride=tuple(stride), padding=tuple(padding),
                           dilation=tuple(dilation), groups=groups, epilogue=m.epilogue.steps, const_weight=True)
        return Conv2dPlan(ctx.db, ctx.tuning, w, backend=ctx.backend)

    def rewrite(self, m: Conv2dMatch, plan: Conv2dPlan, ctx: Context) -> torch.fx.Node:
        x, weight = (ctx.current(a) for a in m.anchor.args[:2])
        bias, scale = ctx.current(m.epilogue.bias), None
        if m.affine:
            scale, bias = fold_affine(ctx, m.affine, val(weight).shape[0], bias)
        return ctx.emit(torch.ops.autotile.conv2d.default, x, weight, scale, ctx.as_vector(bias),
                        ctx.current(m.epilogue.residual), plan.encode())


PATTERN = Conv2dPattern()
