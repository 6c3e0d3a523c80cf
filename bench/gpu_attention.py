"""GPU attention benchmark: autotile's tuned Triton FlashAttention-2 forward against torch SDPA.

    .venv/bin/python bench/gpu_attention.py [--shapes BxHxSxD[xKVH][c|cbr],...] [--trials 64] [--quick]
                                            [--json out.json]

A shape is batch x heads x seq x head_dim, optionally x kv_heads (GQA), with suffix "c" for causal (top-left)
or "cbr" for causal bottom-right. Peers: torch SDPA restricted to the flash backend (fp16/bf16 only) or, for
fp32 (the only attention dtype autotile takes today), the memory-efficient backend, and SDPA's own choice.
Ratios are peer time / autotile time (above 1: autotile is faster). Exits with a message without a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import gpu_common  # noqa: E402

SHAPES = "1x12x512x64,1x8x1024x64c,4x32x2048x128x8c,1x32x4096x128c"


def parse_shape(spec: str) -> dict:
    causal, align = spec.endswith(("c", "cbr")), "bottom-right" if spec.endswith("cbr") else "top-left"
    dims = [int(x) for x in spec.removesuffix("cbr").removesuffix("c").split("x")]
    batch, heads, seq, head_dim = dims[:4]
    return {"batch": batch, "heads": heads, "seq_q": seq, "head_dim": head_dim,
            "kv_heads": dims[4] if len(dims) > 4 else heads, "causal": causal, "causal_align": align}


def bench_shape(spec: str, args, torch) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from autotile.ops.attention.workload import AttentionWorkload

    workload = AttentionWorkload(**parse_shape(spec))
    kernel, result = gpu_common.tuned_kernel(workload, args.trials)
    q, k, v = gpu_common.cuda_inputs(workload)
    out = torch.empty_like(q)
    group = workload.heads // workload.kv_heads
    kk, vv = (k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)) if group > 1 else (k, v)
    if workload.causal and workload.causal_align == "bottom-right" and workload.seq_q != workload.seq_kv:
        sys.exit("SDPA's is_causal is top-left only; use square causal shapes or 'c'")

    def sdpa(backend=None):
        def call():
            return torch.nn.functional.scaled_dot_product_attention(q, kk, vv, is_causal=workload.causal,
                                                                    scale=workload.scale)
        if backend is None:
            return call

        def restricted():
            with sdpa_kernel(backend):
                return call()
        return restricted

    fused = SDPBackend.FLASH_ATTENTION if q.dtype in (torch.float16, torch.bfloat16) else \
        SDPBackend.EFFICIENT_ATTENTION
    row = {"workload": workload.key, "config": result.config,
           "autotile_us": gpu_common.cuda_us(lambda: kernel(q, k, v, out=out)),
           f"sdpa_{fused.name.lower()}_us": gpu_common.cuda_us(sdpa(fused)),
           "sdpa_default_us": gpu_common.cuda_us(sdpa())}
    row["tflops"] = workload.flops / row["autotile_us"] / 1e6
    return row


def main():
    gpu_common.run("bench/gpu_attention.py", __doc__, SHAPES, "Attention forward (time ratios peer/autotile)",
                   bench_shape)


if __name__ == "__main__":
    main()
