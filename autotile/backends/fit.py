"""Whether a workload can run where a backend's kernels run: clear errors before any tuning or build starts."""

from __future__ import annotations

from autotile.errors import AutotileError


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

        return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
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
