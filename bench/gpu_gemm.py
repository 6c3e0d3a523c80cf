"""GPU GEMM benchmark: autotile's tuned Triton GEMM against cuBLAS (torch.matmul), triton.autotune over the
matmul tutorial's configs, and Inductor's mm templates (torch.compile max-autotune, Triton backend only).

    .venv/bin/python bench/gpu_gemm.py [--shapes 4096x4096x4096,...] [--dtype float32] [--epilogue bias,gelu]
                                       [--trials 64] [--quick] [--json out.json]

Shapes are MxNxK or MxNxKxB (batched). Every contender is timed by the same function (CUDA events, L2 flushed
before each launch); ratios are peer time / autotile time (above 1: autotile is faster). fp32 means IEEE
fp32 products everywhere (TF32 off). Exits with a message on a machine without a CUDA GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import gpu_common  # noqa: E402

SHAPES = "4096x4096x4096,8192x8192x1024,128x3072x768,512x768x768x16"


def bench_shape(spec: str, args, torch) -> dict:
    from autotile.ops.gemm.workload import GemmWorkload

    dims = [int(x) for x in spec.lower().split("x")]
    m, n, k, batch = (*dims, 1) if len(dims) == 3 else dims
    workload = GemmWorkload(m, n, k, batch=batch, dtype=args.dtype, epilogue=args.epilogue)
    kernel, result = gpu_common.tuned_kernel(workload, args.trials)
    inputs = gpu_common.cuda_inputs(workload)
    out = torch.empty(workload.output_shape, device="cuda", dtype=getattr(torch, workload.out_dtype))
    named = dict(zip(workload.operand_shapes(), inputs))
    a, b = named["A"], named["B"]
    activations = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu,
                   "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}

    def eager():  # cuBLAS, then the epilogue op by op
        c = torch.matmul(a.mT if workload.trans_a else a, b.mT if workload.trans_b else b)
        for op in workload.epilogue:
            c = c + named[op] if op in ("bias", "residual") else activations.get(op, lambda x: x)(c)
        return c

    import torch._inductor.config as inductor_config

    inductor_config.max_autotune_gemm_backends = "TRITON"
    torch._dynamo.reset()
    inductor = torch.compile(eager, mode="max-autotune-no-cudagraphs")
    inductor()
    row = {"workload": workload.key, "config": result.config,
           "autotile_us": gpu_common.cuda_us(lambda: kernel(*inputs, out=out)),
           "cublas_us": gpu_common.cuda_us(eager), "inductor_us": gpu_common.cuda_us(inductor)}
    if batch == 1 and not workload.epilogue:
        tutorial = gpu_common.tutorial_matmul()
        tutorial(a, b)  # autotune once, outside the timing
        row["tutorial_autotune_us"] = gpu_common.cuda_us(lambda: tutorial(a, b))
    row["tflops"] = workload.flops / row["autotile_us"] / 1e6
    return row


def main():
    extra = [lambda p: p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16"),
             lambda p: p.add_argument("--epilogue", default="", help="e.g. bias,gelu (fused by autotile and Inductor)")]
    gpu_common.run("bench/gpu_gemm.py", __doc__, SHAPES, "GEMM (time ratios peer/autotile)", bench_shape, extra)


if __name__ == "__main__":
    main()
