"""The GPU attention template in Triton: FlashAttention-2 forward.

One program owns BLOCK_M query rows of one (batch, head) and streams BLOCK_N keys at a time through an
online softmax (running max m, running sum l, exp2 with the scale folded in), never materializing the
score matrix. Key blocks every row fully sees run without masks; the rest (the causal diagonal, the ragged
last block) run with them. GQA: query head h reads kv head h // (heads / kv_heads). A row that sees no key
(bottom-right causal with seq_q > seq_kv) stays zero, as FlashAttention defines it. bfloat16: tensor-core dots
with float32 accumulation, P rounded to bfloat16 for P V (as FlashAttention does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.codegen.triton.program import TL_TYPES, Program, kernel_source
from autotile.ir.dtypes import dtype as lookup_dtype
from autotile.ops.attention.workload import AttentionWorkload
from autotile.ops.gemm.triton import (
    arch_and_sms,
    cdiv,
    dot_precision,
    interpreter_bf16_workaround,
    pow2_at_least,
    shared_limit,
)
from autotile.ops.space import Config, ConfigSpace

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class TritonAttentionConfig(Config):
    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    split_mask: bool = True  # run fully visible key blocks in a loop without masks
    reverse: bool = False  # causal: launch the longest (last) query blocks first


class TritonAttentionSpace(ConfigSpace):
    config_type = TritonAttentionConfig
    template = "attention.triton"

    def __init__(self, workload: AttentionWorkload, arch: int = 90, sms: int = 132):
        self.workload, self.arch, self.sms = workload, arch, sms
        self.d_pad = pow2_at_least(workload.head_dim)
        self.itemsize = lookup_dtype(workload.dtype).bits // 8
        self.domains = {
            "block_m": [16, 32, 64, 128],
            "block_n": [16, 32, 64, 128],
            "num_warps": [2, 4, 8],
            "num_stages": [1, 2, 3, 4],
            "split_mask": [False, True],
            "reverse": [False, True],
        }

    @classmethod
    def for_device(cls, workload: AttentionWorkload, fingerprint: dict | None = None) -> TritonAttentionSpace:
        return cls(workload, *arch_and_sms(fingerprint))

    def valid(self, c: TritonAttentionConfig) -> bool:
        threads = 32 * c.num_warps
        # Live fp32 tiles per thread: the output accumulator and the score block.
        # IEEE fp32 dots run on FMA units with operands in registers: ptxas spills past about 32 (sm_80/90).
        live = (c.block_m * self.d_pad + c.block_m * c.block_n) / threads
        if live > (32 if self.itemsize == 4 else 128) or c.block_m * c.block_n < 4 * threads:
            return False
        smem = (c.block_n * self.d_pad * 2 * max(c.num_stages - 1, 1) + c.block_m * self.d_pad) * self.itemsize
        return smem <= shared_limit(self.arch)

    def canonical(self, c: TritonAttentionConfig) -> TritonAttentionConfig:
        w = self.workload
        bm = min(c.block_m, pow2_at_least(w.seq_q))
        bn = min(c.block_n, pow2_at_least(w.seq_kv))
        stages = min(c.num_stages, cdiv(w.seq_kv, bn) + 1)
        reverse = c.reverse and w.causal and cdiv(w.seq_q, bm) > 1
        return TritonAttentionConfig(bm, bn, c.num_warps, stages, c.split_mask, reverse)

    def default(self) -> TritonAttentionConfig:
        """The largest tiles that stay in registers: 128x64 on tensor cores (16-bit), 64x32 for IEEE fp32."""
        candidates = [(128, 64, 8), (64, 64, 4), (64, 32, 8), (32, 32, 4), (16, 32, 4), (16, 16, 2)]
        configs = [self.canonical(TritonAttentionConfig(m, n, warps, 2, True, True)) for m, n, warps in candidates]
        return next((c for c in configs if self.valid(c)), configs[-1])

    def features(self, c: TritonAttentionConfig) -> list[float]:
        w = self.workload
        log = math.log2
        programs = cdiv(w.seq_q, c.block_m) * w.batch * w.heads
        return [log(w.batch * w.heads), log(w.seq_q), log(w.seq_kv), log(w.head_dim), w.heads / w.kv_heads,
                w.causal, self.arch, log(c.block_m), log(c.block_n), c.num_warps, c.num_stages, c.split_mask,
                c.reverse, log(programs), programs / self.sms, (programs % self.sms) / self.sms,
                (c.block_m * self.d_pad + c.block_m * c.block_n) / (32 * c.num_warps)]


def _block_lines(w: AttentionWorkload, masked: bool, dot: str, widen: bool) -> list[str]:
    """One key block at offset `start_n`: scores, online softmax update, P V. `widen`: bf16 tiles as float32 (the
    interpreter's workaround), P still rounded to bf16 first, as the compiled kernel's P V dot takes it."""
    d_mask = w.head_dim != pow2_at_least(w.head_dim)
    kv_mask = ["(cols[:, None] < SEQ_KV)"] if masked else []
    if d_mask:
        kv_mask.append("(d[None, :] < HEAD_DIM)")
    load_mask = f", mask={' & '.join(kv_mask)}, other=0.0" if kv_mask else ""
    lines = [
        "cols = start_n + tl.arange(0, BLOCK_N)",
        "kv_offsets = cols[:, None] * HEAD_DIM + d[None, :]",
        f"k = tl.load(k_base + kv_offsets{load_mask})",
        f"v = tl.load(v_base + kv_offsets{load_mask})",
        *(["k = k.to(tl.float32)", "v = v.to(tl.float32)"] if widen else []),
        f"s = tl.dot(q, tl.trans(k){dot}) * QK_SCALE",
    ]
    if masked:
        visible = "(cols[None, :] < SEQ_KV)"
        if w.causal:
            visible += " & (cols[None, :] <= rows[:, None] + CAUSAL_OFFSET)"
        lines += [f"visible = {visible}", "s = tl.where(visible, s, -1.0e30)"]
    lines += [
        "m_new = tl.maximum(m, tl.max(s, 1))",
        "alpha = tl.math.exp2(m - m_new)",
        "p = tl.math.exp2(s - m_new[:, None])",
    ]
    if masked:
        lines.append("p = tl.where(visible, p, 0.0)  # a row with no visible key keeps l = 0")
    p = "p.to(tl.bfloat16).to(tl.float32)" if widen else "p.to(v.dtype)"
    lines += [
        "l = l * alpha + tl.sum(p, 1)",
        f"acc = tl.dot({p}, v, acc * alpha[:, None]{dot})",
        "m = m_new",
    ]
    return lines


def program(w: AttentionWorkload, c: TritonAttentionConfig) -> Program:
    name = "autotile_attention"
    d_pad = pow2_at_least(w.head_dim)
    m_blocks = cdiv(w.seq_q, c.block_m)
    widen = interpreter_bf16_workaround(w.dtype)
    dot = dot_precision("float32" if widen else w.dtype)
    d_mask = w.head_dim != d_pad
    q_mask = "(rows[:, None] < SEQ_Q)" + (" & (d[None, :] < HEAD_DIM)" if d_mask else "")
    constexprs = {"SEQ_Q": w.seq_q, "SEQ_KV": w.seq_kv, "HEAD_DIM": w.head_dim, "D_PAD": d_pad, "HEADS": w.heads,
                  "GROUP": w.heads // w.kv_heads, "KV_HEADS": w.kv_heads, "M_BLOCKS": m_blocks,
                  "QK_SCALE": w.scale * LOG2E, "CAUSAL_OFFSET": w.causal_offset, "BLOCK_M": c.block_m,
                  "BLOCK_N": c.block_n}
    pid = "M_BLOCKS - 1 - tl.program_id(0)" if c.reverse else "tl.program_id(0)"
    body = [
        f"start_m = ({pid}) * BLOCK_M",
        "bh = tl.program_id(1)",
        "kv_bh = (bh // HEADS) * KV_HEADS + (bh % HEADS) // GROUP",
        "rows = start_m + tl.arange(0, BLOCK_M)",
        "d = tl.arange(0, D_PAD)",
        "q_offsets = bh.to(tl.int64) * SEQ_Q * HEAD_DIM + rows[:, None] * HEAD_DIM + d[None, :]",
        f"q = tl.load(q_ptr + q_offsets, mask={q_mask}, other=0.0)",
        *(["q = q.to(tl.float32)"] if widen else []),
        "k_base = k_ptr + kv_bh.to(tl.int64) * SEQ_KV * HEAD_DIM",
        "v_base = v_ptr + kv_bh.to(tl.int64) * SEQ_KV * HEAD_DIM",
        "m = tl.full((BLOCK_M,), -1.0e30, dtype=tl.float32)",
        "l = tl.zeros((BLOCK_M,), dtype=tl.float32)",
        "acc = tl.zeros((BLOCK_M, D_PAD), dtype=tl.float32)",
    ]
    # Key blocks [0, full) are visible to every row of this query block; [full, end) need masks.
    if w.causal:
        body += ["end = tl.minimum(SEQ_KV, tl.maximum(start_m + BLOCK_M + CAUSAL_OFFSET, 0))",
                 "full = tl.minimum(tl.maximum(start_m + CAUSAL_OFFSET + 1, 0), SEQ_KV) // BLOCK_N * BLOCK_N"]
    else:
        body += ["end = SEQ_KV", "full = SEQ_KV // BLOCK_N * BLOCK_N"]
    if c.split_mask:
        body += ["for start_n in range(0, full, BLOCK_N):"]
        body += ["    " + line for line in _block_lines(w, False, dot, widen)]
        body += ["for start_n in range(full, end, BLOCK_N):"]
    else:
        body += ["for start_n in range(0, end, BLOCK_N):"]
    body += ["    " + line for line in _block_lines(w, True, dot, widen)]
    body += [
        "out = tl.where(l[:, None] > 0, acc / tl.where(l > 0, l, 1.0)[:, None], 0.0)",
        f"tl.store(out_ptr + q_offsets, out.to({TL_TYPES[w.out_dtype]}), mask={q_mask})",
    ]
    params = ["q_ptr", "k_ptr", "v_ptr", "out_ptr"] + [f"{k}: tl.constexpr" for k in constexprs]
    return Program(kernel_source(name, params, body), name, ("q", "k", "v", "out"), (), tuple(constexprs.items()),
                   (m_blocks, w.batch * w.heads), c.num_warps, c.num_stages, (w.dtype,) * 4)


Space = TritonAttentionSpace
