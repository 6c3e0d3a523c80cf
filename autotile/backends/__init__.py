"""Backends: what turns a family's templates into kernels on one kind of device.

A Backend says which device it runs on, which templates are its own, which toolchain versions its records are
made with, how candidates are measured and searched, and how a chosen config becomes a callable kernel. The
tuner, the Python API and the torch.compile backend hold a Backend object and never branch on its name.
Two exist: TVM for CPUs (tvm_cpu.py) and Triton for NVIDIA GPUs (triton_cuda.py); a device kind may have
several later (the tuner then lets their templates compete, as it does for one backend's templates).
"""

from __future__ import annotations

from typing import Protocol

from autotile.errors import AutotileError


class Backend(Protocol):
    name: str  # recorded with every measurement: "tvm", "triton"
    tensor_device: str  # the torch device type of the tensors its kernels take: "cpu", "cuda"

    def available(self) -> bool:
        """Whether this machine has the device."""

    def device(self, threads: int | None = None):
        """This machine's device (autotile.db.device.Device): its key and fingerprint."""

    def versions(self) -> dict:
        """The toolchain a record is made with; records of other versions only seed a search."""

    def spaces(self, workload, fingerprint: dict) -> list:
        """The config space of each of its templates that computes `workload` on this device."""

    def measurer(self, device):
        """Worker processes that build, verify and time candidates (search/measure.Measurer's interface)."""

    def searcher(self, strategy, space, *, workload, db, device, measurer, seed: int, seeds, seen, cost_model):
        """The search strategy instance for one template's space."""

    def load(self, device, workload, config, verified: bool):
        """A kernel callable on tensors of `tensor_device`; an unverified config is verified first."""


BACKENDS = ("auto", "tvm", "triton")


def named(name: str) -> Backend:
    """The backend called `name` ("tvm", "triton")."""
    if name == "tvm":
        from autotile.backends.tvm_cpu import TvmCpu

        return TvmCpu()
    if name == "triton":
        from autotile.backends.triton_cuda import TritonCuda

        return TritonCuda()
    raise AutotileError(f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}")


def resolve(name: str = "auto") -> Backend:
    """The backend to tune or load with: "auto" is Triton when a CUDA GPU is present, else TVM (CPU)."""
    if name not in BACKENDS:
        raise AutotileError(f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}")
    if name != "auto":
        backend = named(name)
        if not backend.available():
            raise AutotileError(backend.unavailable_reason)
        return backend
    triton = named("triton")
    return triton if triton.available() else named("tvm")


def for_tensors(tensors) -> Backend:
    """The backend whose kernels take these tensors: Triton for CUDA tensors, TVM for CPU ones."""
    kinds = {t.device.type for t in tensors if hasattr(t, "device")}
    if len(kinds) > 1:
        raise AutotileError(f"inputs on several devices ({', '.join(sorted(kinds))}): put them on one")
    return for_device_type(kinds.pop() if kinds else "cpu")


def for_device_type(kind: str) -> Backend:
    """The backend whose kernels take tensors of this torch device type ("cpu", "cuda")."""
    for name in ("tvm", "triton"):
        backend = named(name)
        if backend.tensor_device == kind:
            return backend
    raise AutotileError(f"no autotile backend runs kernels on {kind} tensors (only cpu and cuda)")
