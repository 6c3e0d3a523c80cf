"""Timing Triton kernels on a CUDA GPU: CUDA events around each launch alone, with L2 flushed before every
launch (a buffer larger than any L2 is zeroed), so a candidate never profits from the previous run's cache
lines. Knows torch and CUDA, nothing of templates or tuning."""

from __future__ import annotations

from autotile.errors import AutotileError

L2_FLUSH_BYTES = 256 * 2**20  # larger than the L2 of every NVIDIA GPU so far (H100: 50 MiB, B200: 126 MiB)


def require_cuda():
    """The torch module, with a clear error when there is no CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        raise AutotileError("no CUDA GPU on this machine: Triton kernels can only be compiled here "
                            "(autotile.codegen.triton.aot) or checked under TRITON_INTERPRET=1")
    return torch


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
