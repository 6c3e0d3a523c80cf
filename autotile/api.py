"""The Python API: tune a workload, or get its best compiled kernel."""

from __future__ import annotations

from autotile.errors import AutotileError

# Why `auto` on a CUDA device tunes Triton alone: TVM may be built with CUDA (this project's TVM 0.27 wheel has
# USE_CUDA=ON), but autotile's TVM templates are CPU schedules; there is no TVM-CUDA lowering to compete.
TVM_CUDA_NOTE = ("autotile has no TVM GPU schedules (its TVM templates are CPU schedules), so on a CUDA device "
                 "only Triton kernels are tuned and the winner per workload is Triton's best")


def tune(workload, trials: int = 64, db=None, *, time_budget: float | None = None, seed: int = 0,
         strategy: str = "evolution", backend: str = "auto", retune: bool = False, progress: bool = False):
    """Tune `workload` on this machine; the result is recorded in the database (default path if None).

    A workload already tuned with this toolchain is answered from the database (`cached=True`)
    unless `retune`; retuning runs `trials` new trials and never re-measures a recorded config.
    `backend` "auto" is Triton when a CUDA GPU is present (TVM_CUDA_NOTE), else TVM.
    """
    from autotile.search.strategy import STRATEGIES
    from autotile.search.tuner import TuneOptions
    from autotile.session import default_session

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise AutotileError(f"trials must be a positive integer, got {trials!r}")
    if time_budget is not None and time_budget <= 0:
        raise AutotileError(f"time budget must be positive seconds, got {time_budget!r}")
    if strategy not in STRATEGIES:
        raise AutotileError(f"unknown search strategy {strategy!r}; expected one of: {', '.join(STRATEGIES)}")
    options = TuneOptions(trials=trials, time_budget=time_budget, seed=seed, strategy=strategy, retune=retune,
                          progress=progress)
    with default_session(backend, db) as session:
        return session.tune(workload, options)


def kernel(workload, db=None, backend: str = "auto", device=None):
    """The best verified kernel for `workload` on this device; untuned, the config of the nearest tuned shape
    that differs only in size, else the heuristic default (autotile.search.choose).

    `device` ("cpu", "cuda", a torch.device or a tensor the kernel will be called with): the backend follows it,
    TVM for CPU tensors and Triton for CUDA tensors; without it, `backend` decides ("auto": Triton when a CUDA GPU
    is present). Libraries are cached on disk, so a tuned workload loads in milliseconds. A freshly built library
    is verified before it is first returned; a borrowed config that fails there gives way to the default.
    """
    from autotile.session import default_session

    if device is not None:
        backend = backend_for_device(device)
    with default_session(backend, db) as session:
        return session.kernel(workload)


def backend_for_device(device) -> str:
    """The backend whose kernels take tensors on `device` (a name, a torch.device or a tensor)."""
    import torch

    from autotile.backends import for_device_type

    if isinstance(device, torch.Tensor):
        return for_device_type(device.device.type).name
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as e:
        raise AutotileError(f"device {device!r} is no torch device: {e}") from None
    return for_device_type(kind).name


def open_db(db):
    from autotile.db.store import TuningDB

    return db if isinstance(db, TuningDB) else TuningDB(db)
