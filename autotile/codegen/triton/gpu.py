"""Triton candidates in the measurer's worker processes: compile checks in the build workers (no GPU needed),
verify-then-time on the GPU in the runner, so a kernel that faults or hangs takes only its worker down.

Timing uses CUDA events around each launch alone, with L2 flushed before every launch (a buffer larger than
any L2 is zeroed), so a candidate never profits from the previous run's cache lines.
"""

from __future__ import annotations

import statistics
import time

from autotile.errors import AutotileError, Unsupported, WrongResult

L2_FLUSH_BYTES = 256 * 2**20  # larger than the L2 of every NVIDIA GPU so far (H100: 50 MiB, B200: 126 MiB)


def require_cuda():
    """The torch module, with a clear error when there is no CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        raise AutotileError("no CUDA GPU on this machine: Triton kernels can only be compiled here "
                            "(autotile.codegen.triton.aot) or checked under TRITON_INTERPRET=1")
    return torch


def _decode(workload_dict: dict, config_dict: dict):
    from autotile.kernels import triton_space_for, workload_from_dict

    workload = workload_from_dict(workload_dict)
    return workload, triton_space_for(workload).config_type.from_dict(config_dict)


def compile_task(workload_dict: dict, config_dict: dict, arch: int, cache_dir: str):
    """Build-worker side: compile for the GPU's arch and refuse what does not fit; returns (key, seconds)."""
    import os

    from autotile.codegen.triton.aot import compile_program
    from autotile.kernels import triton_program

    os.environ["AUTOTILE_CACHE_DIR"] = cache_dir
    workload, config = _decode(workload_dict, config_dict)
    start = time.perf_counter()
    program = triton_program(workload, config)
    info = compile_program(program, arch)
    if not info.ok:
        raise RuntimeError(f"compile failed: {info.error.splitlines()[-1] if info.error else '?'}")
    if not info.fits:
        raise Unsupported(f"does not fit sm_{arch}: shared {info.shared} B, {info.registers} registers, "
                           f"{info.spill_stores} spill stores")
    return program.key, time.perf_counter() - start


def time_cuda(fn, min_total_s: float = 0.05, max_runs: int = 200) -> list[float]:
    """Seconds per launch, each launch timed alone by CUDA events after an L2 flush."""
    torch = require_cuda()
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    runs = int(min(max_runs, max(5, min_total_s / max(start.elapsed_time(end) * 1e-3, 1e-6))))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    for begin, stop in events:
        flush.zero_()
        begin.record()
        fn()
        stop.record()
    torch.cuda.synchronize()
    return [begin.elapsed_time(stop) * 1e-3 for begin, stop in events]


def run_task(workload_dict: dict, config_dict: dict, key: str, repeat: int, min_repeat_s: float):
    """Runner side: verify on the GPU against the float64 reference, then time. Raises on a wrong result."""
    from autotile.codegen.triton.launch import TritonKernel
    from autotile.ir.reference import compare, poisoned_output
    from autotile.kernels import triton_program
    from autotile.search.measure import _draws

    torch = require_cuda()
    workload, config = _decode(workload_dict, config_dict)
    kernel = TritonKernel(workload, config, triton_program(workload, config))
    max_error = 0.0
    for inputs, reference in _draws(workload):
        gpu_inputs = [x.cuda() for x in inputs]
        out = poisoned_output(workload).cuda()
        kernel(*gpu_inputs, out=out)
        verdict = compare(workload, out.cpu(), reference)
        if not verdict.ok:
            raise WrongResult(f"wrong result: {verdict.reason}")
        max_error = max(max_error, verdict.max_abs_error)
    gpu_inputs = [x.cuda() for x in _draws(workload)[0][0]]
    out = torch.empty_like(poisoned_output(workload), device="cuda")
    times_us = [t * 1e6 for t in time_cuda(lambda: kernel(*gpu_inputs, out=out), max(min_repeat_s * repeat, 0.02))]
    return {
        "median": statistics.median(times_us), "mean": statistics.fmean(times_us), "min": min(times_us),
        "max": max(times_us), "std": statistics.pstdev(times_us), "runs": len(times_us), "threads": None,
        "max_abs_error": max_error,
    }
