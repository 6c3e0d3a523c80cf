"""The attention pattern: CPU flash attention for inference (no mask, no dropout), as autotile::attention."""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from autotile.dynamo.match import float_dtype, val
from autotile.dynamo.pattern import Context, Pattern, Skip, static_or_bucket
from autotile.dynamo.plans import AttentionPlan

FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default


@dataclass(frozen=True)
class AttentionMatch:
    anchor: torch.fx.Node  # the flash attention call
    last: torch.fx.Node  # its output, getitem 0 (the logsumexp has no users)
    q: torch.fx.Node
    k: torch.fx.Node
    v: torch.fx.Node


def operand_dtype(*nodes) -> str | None:
    """The dtype q, k and v share when the CPU template takes it (float32, or a model.bfloat16()'s), else None."""
    from autotile.ops.attention.workload import SUPPORTED_ATTENTION_DTYPES

    names = {float_dtype(n) for n in nodes}
    return names.pop() if len(names) == 1 and names <= set(SUPPORTED_ATTENTION_DTYPES) else None


def match_attention(node) -> AttentionMatch | None:
    """CPU flash attention with no mask, no dropout, whose logsumexp nobody uses (inference)."""
    if node.target != FLASH:
        return None
    users = list(node.users)
    if not users or any(u.target != operator.getitem or u.args[1] != 0 for u in users) or len(users) != 1:
        return None
    q, k, v = node.args[:3]
    dropout = node.args[3] if len(node.args) > 3 else node.kwargs.get("dropout_p", 0.0)
    if dropout != 0.0 or node.kwargs.get("attn_mask") is not None or operand_dtype(q, k, v) is None:
        return None
    if any(val(t).dim() != 4 for t in (q, k, v)):
        return None
    return AttentionMatch(node, users[0], q, k, v)


class AttentionPattern(Pattern):
    name = "attention"
    heavy = frozenset({FLASH})

    def match(self, node):
        return match_attention(node)

    def plan(self, m: AttentionMatch, ctx: Context) -> AttentionPlan:
        from autotile.ops.attention.workload import AttentionWorkload

        causal = bool(m.anchor.args[4]) if len(m.anchor.args) > 4 else bool(m.anchor.kwargs.get("is_causal"))
        qv, kv = val(m.q), val(m.k)
        (bsz, heads, seq_q, dim), (kv_bsz, kv_heads, seq_kv, kdim) = qv.shape, kv.shape
        if not all(isinstance(x, int) for x in (heads, dim, kv_heads, kdim)) or str(val(m.v).shape) != str(kv.shape):
            raise Skip
        dynamic_batch = not isinstance(bsz, int)
        if dynamic_batch and str(bsz) != str(kv_bsz):
            raise Skip
        dynamic_seq = not isinstance(seq_q, int) or not isinstance(seq_kv, int)
        # Zero-padding is exact only when padded keys are hidden from real queries: top-left causal, same length.
        if dynamic_seq and (not causal or str(seq_q) != str(seq_kv)):
            raise Skip
        bsz, _ = static_or_bucket(bsz)
        seq_q, _ = static_or_bucket(seq_q)
        seq_kv = seq_q if dynamic_seq else seq_kv
        w = AttentionWorkload(bsz, heads, seq_q, dim, seq_kv=seq_kv, kv_heads=kv_heads, causal=causal,
                              scale=m.anchor.kwargs.get("scale"), dtype=operand_dtype(m.q, m.k, m.v))
        out = val(m.last)
        bshd = out.dim() == 4 and out.transpose(1, 2).is_contiguous() and not out.is_contiguous()
        return AttentionPlan(ctx.db, ctx.tuning, w, backend=ctx.backend, dynamic_batch=dynamic_batch,
                             dynamic_seq=dynamic_seq, out_layout="bshd" if bshd else "contiguous")

    def rewrite(self, m: AttentionMatch, plan: AttentionPlan, ctx: Context) -> torch.fx.Node:
        q, k, v = (ctx.current(t) for t in (m.q, m.k, m.v))
        return ctx.emit(torch.ops.autotile.attention.default, q, k, v, plan.encode())


PATTERN = AttentionPattern()
