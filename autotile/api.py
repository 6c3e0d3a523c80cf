"""The Python API: tune a workload, or get its best compiled kernel."""

from __future__ import annotations

import atexit

from autotile.errors import AutotileError, KernelBuildError

BACKENDS = ("auto", "tvm", "triton")


# Why `auto` on a CUDA device tunes Triton alone: TVM may be built with CUDA (this project's TVM 0.27 wheel has
# USE_CUDA=ON), but autotile's TVM templates are CPU schedules; there is no TVM-CUDA lowering to compete.
TVM_CUDA_NOTE = ("autotile has no TVM GPU schedules (its TVM templates are CPU schedules), so on a CUDA device "
                 "only Triton kernels are tuned and the winner per workload is Triton's best")


def resolve_backend(backend: str) -> str:
    """"tvm" (CPU kernels) or "triton" (NVIDIA GPU kernels).

    "auto" picks triton when a CUDA GPU is present and tvm otherwise. On a CUDA device it tunes Triton only
    (TVM_CUDA_NOTE): the best record per workload on that device is then the Triton winner, and CPU (tvm)
    records live under the CPU's own device key, never mixed with the GPU's.
    """
    if backend not in BACKENDS:
        raise AutotileError(f"unknown backend {backend!r}; expected one of: {', '.join(BACKENDS)}")
    if backend == "tvm":
        return "tvm"
    from autotile.db.device import cuda_fingerprint

    has_gpu = cuda_fingerprint() is not None
    if backend == "triton" and not has_gpu:
        raise AutotileError("the triton backend needs a CUDA GPU, and this machine has none; use --backend tvm "
                            "(Triton kernels can still be compiled for a GPU target here: autotile.codegen.triton.aot)")
    if has_gpu and backend == "auto":
        import logging

        logging.getLogger("autotile").info("backend auto: triton (CUDA GPU found); %s", TVM_CUDA_NOTE)
    return "triton" if has_gpu else "tvm"


def check_backend_supports(workload, backend: str) -> None:
    """A clear error for a workload the resolved backend cannot run (tf32 is a GPU tensor-core precision)."""
    from autotile.ir.dtypes import GPU_ONLY_GEMM_DTYPES

    dt = getattr(workload, "dtype", None)
    if backend == "tvm" and dt in GPU_ONLY_GEMM_DTYPES:
        raise AutotileError(f"dtype {dt} (TensorFloat-32) is an input precision of NVIDIA tensor cores, and the tvm "
                            "backend runs on this CPU, which has none: use dtype float32 here, or the triton backend "
                            "on a CUDA GPU")


def device_memory(kind: str) -> int | None:
    """Bytes of memory where the kernels run: the first CUDA GPU's, or this machine's RAM (or its cgroup's
    limit, when lower); None when unknown."""
    import os

    if kind == "cuda":
        import torch

        return torch.cuda.get_device_properties(0).total_memory
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        return min(ram, int(limit)) if limit.isdigit() else ram
    except OSError:
        return ram


def check_fits_memory(workload, kind: str) -> None:
    """A clear error for a workload whose operands alone exceed the memory of the device that would run it
    (its tuning, or verification, would die allocating them)."""
    need, have = workload.operand_bytes(), device_memory(kind)
    if have is not None and need > have:
        where = "GPU" if kind == "cuda" else "machine"
        raise AutotileError(f"{workload.key}: its operands take {need / 2**30:.1f} GiB, more than the "
                            f"{have / 2**30:.1f} GiB of memory this {where} has")


_MEASURERS: dict = {}


def shared_measurer(device):
    """One persistent set of worker processes per device for the life of this process:
    spawning them (and their TVM imports) costs seconds, so later tuning runs reuse them."""
    from autotile.search.measure import Measurer, TritonMeasurer

    key = (device.key, device.fingerprint.get("threads"))
    if key not in _MEASURERS:
        if not _MEASURERS:
            atexit.register(_close_measurers)
        if device.kind == "cuda":
            _MEASURERS[key] = TritonMeasurer(device)
        else:
            _MEASURERS[key] = Measurer(device, device.fingerprint.get("threads") or 1)
    return _MEASURERS[key]


def _close_measurers():
    for measurer in _MEASURERS.values():
        measurer.close()
    _MEASURERS.clear()


def open_db(db):
    from autotile.db.store import TuningDB

    return db if isinstance(db, TuningDB) else TuningDB(db)


def tune(workload, trials: int = 64, db=None, *, time_budget: float | None = None, seed: int = 0,
         strategy: str = "evolution", backend: str = "auto", retune: bool = False, progress: bool = False):
    """Tune `workload` on this machine; the result is recorded in the database (default path if None).

    A workload already tuned with this toolchain is answered from the database (`cached=True`)
    unless `retune`; retuning runs `trials` new trials and never re-measures a recorded config.
    """
    from autotile.db.device import current_device
    from autotile.search.strategy import STRATEGIES
    from autotile.search.tuner import tune as run_tuning

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise AutotileError(f"trials must be a positive integer, got {trials!r}")
    if time_budget is not None and time_budget <= 0:
        raise AutotileError(f"time budget must be positive seconds, got {time_budget!r}")
    if strategy not in STRATEGIES:
        raise AutotileError(f"unknown search strategy {strategy!r}; expected one of: {', '.join(STRATEGIES)}")
    backend = resolve_backend(backend)
    check_backend_supports(workload, backend)
    device = current_device(backend)
    check_fits_memory(workload, device.kind)
    with open_db(db) as database:
        return run_tuning(workload, db=database, device=device, trials=trials, time_budget=time_budget, seed=seed,
                          strategy=strategy, backend=backend, retune=retune, progress=progress,
                          measurer=shared_measurer(device))


def kernel(workload, db=None, backend: str = "auto"):
    """The best verified kernel for `workload` on this device; untuned, the config of the nearest tuned shape
    that differs only in size, else the heuristic default (autotile.search.choose).

    Libraries are cached on disk, so a tuned workload loads in milliseconds. A freshly built library is verified
    before it is first returned; a borrowed config that fails there gives way to the default.
    """
    from autotile.codegen.tvm.pool import limit_spinning
    from autotile.db.device import current_device
    from autotile.kernels import space_for
    from autotile.search.choose import choose_config
    from autotile.search.isolated import load_kernel

    backend = resolve_backend(backend)
    check_backend_supports(workload, backend)
    device = current_device(backend)
    check_fits_memory(workload, device.kind)
    with open_db(db) as database:
        config, source = choose_config(database, device, workload, backend)
    if backend == "triton":
        return _triton_kernel(workload, config, verified=source == "exact")
    limit_spinning()  # before this process's first kernel call
    try:
        return load_kernel(device, workload, config)
    except KernelBuildError:
        if source != "nearest":
            raise
        return load_kernel(device, workload, space_for(workload, device.fingerprint).default())


def _triton_kernel(workload, config, verified: bool):
    """A Triton kernel on the GPU (called with CUDA tensors); an unmeasured config is verified first."""
    from autotile.codegen.triton.launch import TritonKernel
    from autotile.ir.reference import verify
    from autotile.kernels import triton_program

    compiled = TritonKernel(workload, config, triton_program(workload, config))
    if not verified:
        def on_gpu(*inputs, out):  # verify() hands CPU tensors
            out.copy_(compiled(*(x.cuda() for x in inputs), out=out.cuda()).cpu())

        verdict = verify(workload, on_gpu)
        if not verdict.ok:
            raise KernelBuildError(f"the default Triton kernel for {workload.key} failed verification: "
                                   f"{verdict.reason}")
    return compiled
