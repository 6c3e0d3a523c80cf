"""Template families, one module each; `space_for` finds the one that serves a workload."""

from __future__ import annotations


def space_for(workload, fingerprint: dict | None = None):
    """The config space of the template family that implements this workload on this device."""
    if workload.op == "gemm":
        from autotile.kernels.gemm import GemmSpace

        return GemmSpace.for_device(workload, fingerprint)
    from autotile.errors import AutotileError

    raise AutotileError(f"no template for op {workload.op!r}")


def workload_from_dict(d: dict):
    from autotile.errors import AutotileError
    from autotile.ir.workload import GemmWorkload

    if d.get("op", "gemm") == "gemm":
        return GemmWorkload.from_dict(d)
    raise AutotileError(f"unknown op {d.get('op')!r}")
