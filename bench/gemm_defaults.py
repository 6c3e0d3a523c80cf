"""The untuned GEMM kernels: the templates' default config beside the blocks the default had before (8 x 8 register
tiles per block), and torch's own linear, timed side by side in alternating rounds on one CPU.

    TVM_NUM_THREADS=2 .venv/bin/python bench/gemm_defaults.py [--rounds 5]

The default is what a model runs before any tuning (and where every search starts): a GPT block's four linears
(d_model 768, seq 128: B constant and transposed, a layernorm fused into QKV and FC1), linears of 1 to 1024 rows,
GEMMs with a B that changes per call, batched ones, bf16 (gemm.lowp) and weight-only int4/int8 (qgemm.weight_only).
Each figure is the median over rounds of a round's median call, in microseconds; "ratio" is before / now (>1: the
default now is faster) and "torch" is F.linear (or torch.matmul) on the same fp32 operands, the epilogue left out
(a floor for the GEMM itself: MKL/oneDNN at this CPU's FMA peak).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import e2e_cpu  # noqa: E402
import peers  # noqa: E402

from autotile.ops.gemm.workload import GemmWorkload  # noqa: E402
from autotile.ops.qgemm.workload import QGemmWorkload  # noqa: E402
from autotile.session import Session  # noqa: E402

TEMPLATES = ("gemm.blis", "gemm.lowp", "qgemm.weight_only")
BEFORE = {"mc_tiles": 8, "nc_tiles": 8}  # the default's blocks until 390fdfd


def linear(m, n, k, *, epilogue=("bias",), **kw):
    return GemmWorkload(m, n, k, trans_b=True, const_b=True, epilogue=epilogue, **kw)


CASES = [
    ("gpt qkv", linear(128, 2304, 768, prologue="layernorm")),
    ("gpt fc1", linear(128, 3072, 768, epilogue=("bias", "gelu"), prologue="layernorm")),
    ("gpt fc2", linear(128, 768, 3072, epilogue=("bias", "residual"))),
    ("gpt proj", linear(128, 768, 768, epilogue=("bias", "residual"))),
    ("linear", linear(1, 768, 768)), ("linear", linear(8, 768, 768)), ("linear", linear(32, 3072, 768)),
    ("linear", linear(197, 768, 768)), ("linear", linear(512, 3072, 768, epilogue=("bias", "gelu"))),
    ("B per call", GemmWorkload(128, 2304, 768, epilogue=("bias",))), ("B per call", GemmWorkload(1024, 1024, 1024)),
    ("batched", GemmWorkload(128, 128, 64, batch=12)), ("batched", GemmWorkload(64, 64, 128, batch=12)),
    ("small N", linear(256, 32, 256, epilogue=())),
    ("bf16", linear(128, 768, 768, dtype="bfloat16")), ("bf16", linear(32, 3072, 768, dtype="bfloat16")),
    ("int4 w", QGemmWorkload(128, 768, 768)), ("int4 w", QGemmWorkload(32, 3072, 768)),
    ("int8 w", QGemmWorkload(128, 768, 768, weight_dtype="int8", group_size=None)),
]


def torch_call(w):
    """F.linear / matmul on fp32 operands of the workload's shape: the GEMM alone."""
    batch = getattr(w, "batch", 1)
    a = torch.randn(*([batch] if batch > 1 else []), w.m, w.k)
    if getattr(w, "trans_b", False):
        b = torch.randn(w.n, w.k)
        return lambda: torch.nn.functional.linear(a, b)
    b = torch.randn(*([batch] if batch > 1 else []), w.k, w.n)
    return lambda: torch.matmul(a, b)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    print(e2e_cpu.cpu_line())
    print(f"{'case':11s} {'workload':58s} {'template':18s} {'before':>15s} {'now':>15s} {'ratio':>6s} {'torch':>7s}")
    with Session(None, "tvm") as session:
        measurer = session.measurer
        for label, w in CASES:
            space = next(s for s in session.backend.spaces(w, session.device.fingerprint) if s.template in TEMPLATES)
            now = space.default()
            before = space.canonical(dataclasses.replace(now, **BEFORE))
            kernels = [(c, measurer.build(w, [c])[0][0]) for c in (before, now)]
            times = [[], [], []]
            torch_fn = torch_call(w)
            for _ in range(args.rounds):
                for i, (config, built) in enumerate(kernels):
                    times[i].append(measurer.run(w, config, built, 5, 0.02).latency["median"])
                times[2].append(peers.seconds_per_call(torch_fn, min_time=0.05, repeats=5) * 1e6)
            t_before, t_now, t_torch = (statistics.median(t) for t in times)
            blocks = [f"mc{c.mc_tiles} nc{c.nc_tiles} {t:6.0f}" for c, t in ((before, t_before), (now, t_now))]
            print(f"{label:11s} {w.key[:58]:58s} {space.template:18s} {blocks[0]:>15s} {blocks[1]:>15s} "
                  f"{t_before / t_now:6.3f} {t_torch:7.0f}", flush=True)


if __name__ == "__main__":
    main()
