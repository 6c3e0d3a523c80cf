"""A layer norm fused into the linear after it (GemmWorkload prologue "layernorm") against the same two ops apart.

    .venv/bin/python bench/prologue_cpu.py [--shapes 128x2304x768,128x3072x768] [--dtype float32|bfloat16]
                                           [--rounds 7]

Per shape (M x N x K, a linear's nt layout, its weight packed once, bias; the template's default configs, untuned):
the fused kernel LN(A) @ W^T + bias; the plain GEMM and the layer-norm kernel timed alone (their sum is the unfused
pair without its hand-over); torch eager's layer_norm then linear. Alternating rounds, medians; every kernel is
checked against the float64 reference before it is timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as in e2e_cpu.py: every contender runs with it

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402

from autotile.session import prepare_environment  # noqa: E402

prepare_environment()  # TVM_NUM_THREADS: the physical cores unless set, before anything imports TVM
from autotile.db.device import current_device  # noqa: E402
from autotile.dynamo.resolve import resolver  # noqa: E402
from autotile.ir.reference import random_inputs, verify  # noqa: E402
from autotile.ops.gemm.workload import GemmWorkload  # noqa: E402
from autotile.ops.layernorm.workload import LayerNormWorkload  # noqa: E402


def kernel_and_inputs(workload, db: str):
    """The template default's kernel on this device, verified, and random inputs (a constant B packed once)."""
    kernel = resolver(db, "off", "tvm").load(workload).kernel
    verdict = verify(workload, kernel)
    if not verdict.ok:
        raise SystemExit(f"{workload.key}: {verdict.reason}")
    inputs = random_inputs(workload, 0)
    if getattr(workload, "const_b", False):
        inputs[1] = kernel.pack_operand("B", inputs[1])
    return kernel, inputs


def run_shape(m: int, n: int, k: int, dtype: str, rounds: int, db: str) -> None:
    linear = dict(trans_b=True, const_b=True, epilogue="bias", dtype=dtype, addend_dtype=dtype)
    fused, fused_in = kernel_and_inputs(GemmWorkload(m, n, k, prologue="layernorm", **linear), db)
    plain, plain_in = kernel_and_inputs(GemmWorkload(m, n, k, **linear), db)
    norm, norm_in = kernel_and_inputs(LayerNormWorkload(m, k, dtype=dtype), db)
    x, w, b = (torch.randn(s, dtype=getattr(torch, dtype)) for s in ((m, k), (n, k), (n,)))
    g, beta = torch.randn(k, dtype=x.dtype), torch.randn(k, dtype=x.dtype)
    times = peers.alternating_rounds({
        "fused": lambda: peers.seconds_per_call(lambda: fused(*fused_in)),
        "gemm": lambda: peers.seconds_per_call(lambda: plain(*plain_in)),
        "layernorm": lambda: peers.seconds_per_call(lambda: norm(*norm_in)),
        "torch": lambda: peers.seconds_per_call(lambda: F.linear(F.layer_norm(x, (k,), g, beta), w, b)),
    }, rounds)
    us = {name: statistics.median(v) * 1e6 for name, v in times.items()}
    apart = us["gemm"] + us["layernorm"]
    print(f"{m}x{n}x{k} {dtype}: fused {us['fused']:.1f} us | gemm {us['gemm']:.1f} + layernorm {us['layernorm']:.1f} "
          f"= {apart:.1f} us apart (fused saves {apart - us['fused']:+.1f} us, plus the hand-over) | torch eager "
          f"layer_norm + linear {us['torch']:.1f} us ({us['torch'] / us['fused']:.2f}x the fused kernel's time)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="128x2304x768,128x3072x768")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    device = current_device("tvm")
    print(f"device {device.key}, TVM threads {os.environ.get('TVM_NUM_THREADS')}, torch threads "
          f"{torch.get_num_threads()}")
    db = str(Path(tempfile.mkdtemp(prefix="autotile-bench-prologue-")) / "none.db")  # tuning off: never read
    for shape in args.shapes.split(","):
        run_shape(*(int(s) for s in shape.split("x")), args.dtype, args.rounds, db)


if __name__ == "__main__":
    main()
