"""The peers autotile is measured against, each timed the same way: GFLOP/s of one call.

numpy runs in a subprocess with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed, so OpenBLAS picks
its best kernel for this CPU (those variables cap it at AVX2 on these machines).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

NUMPY_WORKER = Path(__file__).with_name("numpy_worker.py")


def seconds_per_call(fn, min_time: float = 0.25, repeats: int = 7) -> float:
    """Median seconds per call over `repeats` batches, each batch long enough to time well."""
    for _ in range(3):
        fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(min_time / repeats / once))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def gemm_inputs(m, n, k, epilogue, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    bias = torch.randn(n, generator=g) if "bias" in epilogue else None
    return a, b, bias


class TorchGemm(torch.nn.Module):
    """What a user's model holds: the weight (and bias) as parameters, so inductor's freezing applies."""

    def __init__(self, b, bias, epilogue):
        super().__init__()
        self.b = torch.nn.Parameter(b, requires_grad=False)
        self.bias = torch.nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.gelu = "gelu" in epilogue

    def forward(self, a):
        if self.gelu:  # eager takes the addmm path for bias
            return torch.nn.functional.gelu(torch.addmm(self.bias, a, self.b))
        return a @ self.b


def torch_gflops(m, n, k, epilogue, compile_options=None, min_time=0.25) -> tuple[float, float]:
    """(GFLOP/s, compile seconds) of eager torch, or torch.compile with the given options."""
    import torch._inductor.config as inductor_config

    a, b, bias = gemm_inputs(m, n, k, epilogue)
    module = TorchGemm(b, bias, epilogue).eval()
    compile_seconds = 0.0
    with torch.no_grad():
        if compile_options is not None:
            torch._dynamo.reset()
            options = dict(compile_options)
            inductor_config.freezing = options.pop("freezing", False)
            module = torch.compile(module, **options)
            start = time.perf_counter()
            module(a)
            compile_seconds = time.perf_counter() - start
        gflops = 2 * m * n * k / seconds_per_call(lambda: module(a), min_time) / 1e9
    inductor_config.freezing = False
    return gflops, compile_seconds


def numpy_gflops(m, n, k, epilogue, min_time=0.25) -> tuple[float, str]:
    """(GFLOP/s, OpenBLAS kernel) from a subprocess with the capping variables unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run([sys.executable, str(NUMPY_WORKER), json.dumps([m, n, k, list(epilogue), min_time])],
                         capture_output=True, text=True, check=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["gflops"], result["kernel"]


# --- TVM MetaSchedule ------------------------------------------------------------------------------

def _te_gemm(m, n, k, epilogue):
    from tvm import te

    a = te.placeholder((m, k), "float32", name="A")
    b = te.placeholder((k, n), "float32", name="B")
    r = te.reduce_axis((0, k), name="k")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, r] * b[r, j], axis=r), name="C")
    args = [a, b]
    if "bias" in epilogue:
        bias = te.placeholder((n,), "float32", name="bias")
        args.append(bias)
        c = te.compute((m, n), lambda i, j: c[i, j] + bias[j], name="bias_add")
    if "gelu" in epilogue:
        c = te.compute((m, n), lambda i, j: 0.5 * c[i, j] * (1.0 + te.erf(c[i, j] * 0.7071067811865476)),
                       name="gelu")
    return te.create_prim_func([*args, c])


@contextlib.contextmanager
def _quiet():
    """MetaSchedule prints its task tables from C++ straight to the stdout file descriptor."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def metaschedule(m, n, k, epilogue, trials=64, threads=None):
    """Tune with MetaSchedule (tune_tir, `trials` global trials); returns (callable, tuning seconds)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    threads = threads or int(os.environ.get("TVM_NUM_THREADS", "1"))
    target = host_target(threads)
    func = _te_gemm(m, n, k, epilogue)
    with tempfile.TemporaryDirectory() as work_dir, _quiet():
        start = time.perf_counter()
        database = ms.tir_integration.tune_tir(func, target, work_dir, max_trials_global=trials,
                                               num_trials_per_iter=32)
        seconds = time.perf_counter() - start
        sch = ms.tir_integration.compile_tir(database, func, target)
    lib = tvm.compile(sch.mod, target)
    return lib, seconds


def tvm_gflops(lib, m, n, k, epilogue, min_time=0.25) -> tuple[float, float]:
    """(GFLOP/s, max abs error vs torch float64) of a TVM library with args (A, B, [bias], C)."""
    a, b, bias = gemm_inputs(m, n, k, epilogue)
    c = torch.full((m, n), float("nan"))
    args = [a, b] + ([bias] if bias is not None else []) + [c]
    lib(*args)
    ref = a.double() @ b.double()
    if bias is not None:
        ref = ref + bias.double()
    if "gelu" in epilogue:
        ref = torch.nn.functional.gelu(ref)
    error = float((c.double() - ref).abs().max())
    return 2 * m * n * k / seconds_per_call(lambda: lib(*args), min_time) / 1e9, error


def numpy_reference_error(m, n, k):  # used by the smoke test of the numpy worker
    a, b = np.random.randn(m, k).astype("float32"), np.random.randn(k, n).astype("float32")
    return float(np.abs(a @ b - (a.astype("float64") @ b.astype("float64"))).max())


def alternating_rounds(contenders: dict, rounds: int) -> dict:
    """Each contender's measurement (a callable returning a number) once per round, the order rotated
    every round so that no contender always runs first (or right after another's cache footprint)."""
    results = {name: [] for name in contenders}
    for r in range(rounds):
        names = list(contenders)
        for name in names[r % len(names):] + names[: r % len(names)]:
            results[name].append(contenders[name]())
    return results


def ratio_stats(ours: list, theirs: list, higher_is_better: bool = True) -> dict:
    """autotile's advantage per round (speed over the peer's), as median, min and max."""
    ratios = [a / p if higher_is_better else p / a for a, p in zip(ours, theirs)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def format_ratio(stats: dict) -> str:
    return f"{stats['median']:5.2f}x [{stats['min']:.2f}-{stats['max']:.2f}]"


def host_target(threads: int):
    """This CPU's LLVM target as autotile builds for it: mcpu and the features its flags report."""
    from autotile.codegen.tvm.build import llvm_target
    from autotile.db.device import cpu_fingerprint

    fp = cpu_fingerprint(threads)
    return llvm_target(fp["mcpu"], threads, fp["mattr"])
