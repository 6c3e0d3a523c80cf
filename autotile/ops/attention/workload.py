"""Scaled dot-product attention workloads: what to compute, validated at the boundary, with a stable key.

out[b, h] = softmax(scale * q[b, h] @ k[b, g]^T + mask) @ v[b, g], g = h // (heads / kv_heads) (grouped-query
attention when kv_heads < heads). Causal masks come in two alignments: "top-left" (torch's `is_causal`: query i
sees keys j <= i) and "bottom-right" (FlashAttention, decoding: j <= i + seq_kv - seq_q). A query row that sees
no key at all (bottom-right with seq_q > seq_kv) is defined to be all zeros, as FlashAttention returns.
bfloat16: q, k, v and out in bfloat16; scores, softmax and p.v are computed in float32 and the output rounded once
(nearest even), so a kernel is held to float32's tolerance plus that one rounding (`accumulate_dtype`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.errors import AutotileError
from autotile.ir.dtypes import dtype
from autotile.ir.workload import Workload, _positive_int

ALIGNMENTS = {"top-left": "tl", "bottom-right": "br"}
SUPPORTED_ATTENTION_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class AttentionWorkload(Workload):
    batch: int
    heads: int
    seq_q: int
    head_dim: int
    seq_kv: int | None = None  # defaults to seq_q
    kv_heads: int | None = None  # defaults to heads
    causal: bool = False
    causal_align: str = "top-left"
    scale: float | None = None  # defaults to 1 / sqrt(head_dim)
    dtype: str = "float32"

    op = "attention"

    def __post_init__(self):
        for name in ("batch", "heads", "seq_q", "head_dim"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        # Defaults are stored resolved, so equal workloads have equal fields and keys.
        for name, default in (("seq_kv", self.seq_q), ("kv_heads", self.heads)):
            value = default if getattr(self, name) is None else getattr(self, name)
            object.__setattr__(self, name, _positive_int(name, value))
        if self.heads % self.kv_heads:
            raise AutotileError(f"heads={self.heads} is not divisible by kv_heads={self.kv_heads}")
        object.__setattr__(self, "causal", bool(self.causal))
        if self.causal_align not in ALIGNMENTS:
            raise AutotileError(f"causal_align must be one of {', '.join(ALIGNMENTS)}, got {self.causal_align!r}")
        scale = 1.0 / math.sqrt(self.head_dim) if self.scale is None else self.scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise AutotileError(f"scale must be a positive finite number, got {self.scale!r}")
        object.__setattr__(self, "scale", float(scale))
        dt = dtype(self.dtype).name
        if dt not in SUPPORTED_ATTENTION_DTYPES:
            supported = ", ".join(SUPPORTED_ATTENTION_DTYPES)
            raise AutotileError(f"dtype {dt!r} is not supported by the attention templates yet; supported: {supported}")
        object.__setattr__(self, "dtype", dt)
        self.check_sizes()

    @property
    def accumulate_dtype(self) -> str:
        return "float32"

    # -- masking ------------------------------------------------------------------------
    @property
    def causal_offset(self) -> int:
        """Query i sees keys j <= i + causal_offset (causal workloads only)."""
        return self.seq_kv - self.seq_q if self.causal_align == "bottom-right" else 0

    def visible_keys(self, i: int) -> int:
        """How many keys query row i sees: a prefix of the keys, possibly empty."""
        if not self.causal:
            return self.seq_kv
        return min(max(i + self.causal_offset + 1, 0), self.seq_kv)

    # -- naming -------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """Readable, canonical and stable: built from values only. The scale prints with 9 significant digits,
        enough to tell float32 values apart (the kernel multiplies by the float32 scale)."""
        mask = f"causal-{ALIGNMENTS[self.causal_align]}" if self.causal else "full"
        return (f"attention_b{self.batch}_h{self.heads}_q{self.seq_q}_kv{self.seq_kv}_d{self.head_dim}"
                f"_kvh{self.kv_heads}_{mask}_s{self.scale:.9g}_{self.dtype}")

    @property
    def pairs(self) -> int:
        """Number of unmasked (query, key) pairs per head."""
        return sum(self.visible_keys(i) for i in range(self.seq_q)) if self.causal else self.seq_q * self.seq_kv

    @property
    def flops(self) -> int:
        """Two matmuls over the unmasked pairs only (what a flash kernel must do)."""
        return 4 * self.batch * self.heads * self.head_dim * self.pairs

    @property
    def reduction(self) -> int:
        """head_dim, the q.k sum: p.v is a convex combination, whose rounding error does not grow like a
        seq_kv-long randn dot product. max(seq_kv, head_dim) would be too loose: at seq_kv 8192 its atol (0.016)
        exceeds what dropping a whole 64-key block changes (about 0.01; tests/test_attention.py checks this)."""
        return self.head_dim

    # -- operands -----------------------------------------------------------------------
    # q, k, v straight from a fused qkv projection ((B, S, 3, H, D) storage) and out in (B, S, H, D) storage,
    # as models hold them: copying them to contiguous cost more than the kernel at seq 128.
    strided_operands = ("q", "k", "v", "out")

    def operand_shapes(self) -> dict[str, tuple[int, ...]]:
        """Kernel argument shapes in call order: q, k, v, out."""
        kv = (self.batch, self.kv_heads, self.seq_kv, self.head_dim)
        return {"q": (self.batch, self.heads, self.seq_q, self.head_dim), "k": kv, "v": kv,
                "out": (self.batch, self.heads, self.seq_q, self.head_dim)}

    def reference(self, *inputs):
        """float64 masked softmax, written out (no fused kernel); rows that see no key are zeros."""
        import torch

        self.check_operands((*inputs, torch.empty(self.output_shape)))
        q, k, v = (x.double() for x in inputs)
        group = self.heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)) * self.scale
        if self.causal:
            i = torch.arange(self.seq_q).unsqueeze(1)
            j = torch.arange(self.seq_kv).unsqueeze(0)
            scores = scores.masked_fill(j > i + self.causal_offset, float("-inf"))
        peak = scores.amax(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float64).min)  # -inf rows: no NaN
        weights = torch.exp(scores - peak)
        total = weights.sum(dim=-1, keepdim=True)
        return torch.where(total > 0, weights @ v / total.clamp(min=1e-300), 0.0)
