"""What the GPU benchmarks share: a clear exit without a GPU, one timing function for every contender (CUDA
events, L2 flushed before each launch: autotile.codegen.triton.gpu.time_cuda), tuning through the public
API, the matmul tutorial's triton.autotune kernel, and the ratio table."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import traceback
from pathlib import Path


def run(script: str, doc: str, default_shapes: str, title: str, bench_shape, extra=None):
    """The whole benchmark: arguments, a GPU or a clear exit, a fresh database, then one bench_shape(spec, args,
    torch) per shape (a row or a list of rows), and the ratio table."""
    args = parse_args(doc, default_shapes, extra)
    torch = require_gpu(script)
    isolate()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means IEEE fp32 for every contender
    rows, failed = [], []
    print(f"{title} on {device_name()}; {versions()}; {args.trials} trials per workload", flush=True)
    for spec in args.shapes.split(","):
        try:
            got = bench_shape(spec, args, torch)
        except Exception as e:  # one shape's failure is reported, and the other shapes still run
            traceback.print_exc()
            failed.append({"shape": spec, "error": f"{type(e).__name__}: {e}"[:2000]})
            print(f"  {spec}: FAILED: {failed[-1]['error'].splitlines()[0][:300]}", flush=True)
            continue
        got = got if isinstance(got, list) else [got]
        for row in got:  # as soon as measured, and the JSON rewritten: a run stopped at a time limit keeps these
            print(f"  {format_row(row)}", flush=True)
        rows += got
        if args.json:
            write_json(args.json, rows, args.trials, failed)
    report(title, rows, args.json, args.trials, failed)
    if failed:
        sys.exit(f"{script}: {len(failed)} shape(s) failed: {', '.join(f['shape'] for f in failed)}")


def parse_args(doc: str, default_shapes: str, extra=None):
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=default_shapes, help="comma-separated shapes (see the list above)")
    p.add_argument("--trials", type=int, default=64, help="autotile tuning trials per workload")
    p.add_argument("--quick", action="store_true", help="8 trials and the first shape: a smoke test")
    p.add_argument("--json", default=None, help="also write every number here")
    for add in extra or ():
        add(p)
    args = p.parse_args()
    if args.quick:
        args.trials = 8
        args.shapes = args.shapes.split(",")[0]
    return args


def require_gpu(script: str):
    """torch, or exit with a clear message: these benchmarks time CUDA kernels and mean nothing elsewhere."""
    import torch

    if not torch.cuda.is_available():
        sys.exit(f"{script}: no CUDA GPU on this machine; run it on an NVIDIA GPU (the CPU benchmarks are "
                 f"bench/*_cpu.py; Triton kernels are checked on CPU by tests/test_triton_*.py)")
    return torch


def isolate():
    """A fresh database and kernel cache for this run, before autotile is imported."""
    scratch = tempfile.mkdtemp(prefix="autotile-gpu-bench-")
    os.environ["AUTOTILE_DB"] = str(Path(scratch) / "bench.db")
    os.environ["AUTOTILE_CACHE_DIR"] = str(Path(scratch) / "kernels")


def cuda_us(fn) -> float:
    from autotile.codegen.triton.gpu import time_cuda

    return statistics.median(time_cuda(fn, min_total_s=0.1)) * 1e6


def tuned_kernel(workload, trials: int):
    """autotile's best Triton kernel for `workload` after `trials` trials, and the tuning result."""
    import autotile.api as api

    result = api.tune(workload, trials=trials, backend="triton")
    return api.kernel(workload, backend="triton"), result


def cuda_inputs(workload, seed: int = 0):
    from autotile.ir.reference import random_inputs

    return [x.cuda() for x in random_inputs(workload, seed)]


def device_name() -> str:
    import torch

    props = torch.cuda.get_device_properties(0)
    return f"{props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs)"


def versions() -> str:
    import torch
    import triton

    return f"torch {torch.__version__}, triton {triton.__version__}"


def format_row(row: dict) -> str:
    """One shape: autotile's time and each peer's time / autotile's (>1: autotile faster)."""
    base = row["autotile_us"]
    peers = [(k[:-3], v) for k, v in row.items() if k.endswith("_us") and k != "autotile_us" and v]
    ratios = "  ".join(f"{name} {v / base:.2f}x" for name, v in peers)
    return f"{row['workload']}: autotile {base:.1f} us | vs {ratios}"


def write_json(path: str, rows: list[dict], trials: int | None = None, failed: list[dict] | None = None):
    Path(path).write_text(json.dumps({"device": device_name(), "versions": versions(), "trials": trials,
                                      "rows": rows, "failed": failed or []}, indent=2))


def report(title: str, rows: list[dict], path: str | None, trials: int | None = None,
           failed: list[dict] | None = None):
    """rows: {"workload", "autotile_us", "<peer>_us"...}; prints peer / autotile speed ratios (>1: autotile faster)."""
    print(f"\n{title} on {device_name()}")
    for row in rows:
        print(f"  {format_row(row)}")
    for f in failed or ():
        print(f"  {f['shape']}: FAILED: {f['error'].splitlines()[0][:300]}")
    if path:
        write_json(path, rows, trials, failed)


# --- the matmul tutorial's kernel, tuned by triton.autotune over the tutorial's fp16 configs --------------

def tutorial_matmul():
    """(matmul(a, b) -> c) autotuned by triton.autotune over the eight configs of Triton's matmul tutorial.
    fp32 inputs use IEEE products (INPUT_PRECISION), like autotile's fp32 GEMM."""
    import torch
    import triton
    import triton.language as tl

    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w)
               for m, n, k, s, w in [(128, 256, 64, 3, 8), (64, 256, 32, 4, 4), (128, 128, 32, 4, 4),
                                     (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (128, 32, 32, 4, 4),
                                     (64, 32, 32, 5, 2), (32, 64, 32, 5, 2)]]

    @triton.autotune(configs=configs, key=["M", "N", "K"])
    @triton.jit
    def kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr):
        pid = tl.program_id(0)
        tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        group = GROUP_M * tiles_n
        first_m = (pid // group) * GROUP_M
        size_m = min(tiles_m - first_m, GROUP_M)
        pm = first_m + (pid % group) % size_m
        pn = (pid % group) // size_m
        rm = (pm * BLOCK_M + tl.arange(0, BLOCK_M)) % M
        rn = (pn * BLOCK_N + tl.arange(0, BLOCK_N)) % N
        rk = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + rm[:, None] * sam + rk[None, :] * sak
        b_ptrs = b_ptr + rk[:, None] * sbk + rn[None, :] * sbn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            a = tl.load(a_ptrs, mask=rk[None, :] < K - k * BLOCK_K, other=0.0)
            b = tl.load(b_ptrs, mask=rk[:, None] < K - k * BLOCK_K, other=0.0)
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
            a_ptrs += BLOCK_K * sak
            b_ptrs += BLOCK_K * sbk
        cm = pm * BLOCK_M + tl.arange(0, BLOCK_M)
        cn = pn * BLOCK_N + tl.arange(0, BLOCK_N)
        tl.store(c_ptr + cm[:, None] * scm + cn[None, :] * scn, acc.to(c_ptr.dtype.element_ty),
                 mask=(cm[:, None] < M) & (cn[None, :] < N))

    def matmul(a, b):
        m, k = a.shape
        n = b.shape[1]
        c = torch.empty((m, n), device=a.device, dtype=a.dtype)
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
        precision = "ieee" if a.dtype == torch.float32 else None  # None: tl.dot's default for 16-bit inputs
        kernel[grid](a, b, c, m, n, k, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
                     INPUT_PRECISION=precision)
        return c

    return matmul
