"""Kernel libraries on disk: a (workload, config) lowered through its template, compiled for a CPU target by
codegen, kept under the kernel cache keyed by device, workload, config, target, toolchain and template
sources, and loaded as a CompiledKernel that knows which operands its template packs ahead."""

from __future__ import annotations

import hashlib
from pathlib import Path

from autotile.codegen.tvm.amx_permission import emulated, require_tiles
from autotile.codegen.tvm.build import CompiledKernel, compile_module, export, toolchain_versions
from autotile.ops import prepacked_operands, template_digest, template_of_config, tvm_schedule
from autotile.paths import kernel_cache_dir


def target_of(device) -> tuple[str, int, list[str]]:
    """(mcpu, threads, mattr) the device's kernels are built for."""
    fp = device.fingerprint
    return fp["mcpu"], fp["threads"], list(fp.get("mattr", []))


def build(workload, config, mcpu: str, threads: int, mattr=()):
    """The Executable of (workload, config) for a CPU (not written anywhere)."""
    return compile_module(tvm_schedule(workload, config), mcpu, threads, mattr)


def kernel_path(device_key: str, workload, config, mcpu: str = "", mattr=()) -> Path:
    # The template digest is in the path, not in the database's versions: an edited template rebuilds its
    # libraries, while tuned configs stay valid answers (they are re-verified when built). The target is in it
    # too: the same device key built with other features is another library.
    target = f"{mcpu}{''.join(mattr)}" + ("+amx-emulated" if _amx_template(workload, config) and emulated() else "")
    stamp = {**toolchain_versions(), "templates": template_digest(workload.op), "target": target}
    versions = ",".join(f"{k}={v}" for k, v in sorted(stamp.items()))
    digest = hashlib.sha256(f"{config.key}|{versions}".encode()).hexdigest()[:16]
    return kernel_cache_dir() / device_key / workload.key / f"{digest}.so"


def build_cached(device_key: str, workload, config, mcpu: str, threads: int, mattr=()) -> Path:
    """Path of the compiled library for (workload, config) on this device, building it if missing."""
    path = kernel_path(device_key, workload, config, mcpu, mattr)
    if not path.exists():
        export(build(workload, config, mcpu, threads, mattr), path)
    return path


def _amx_template(workload, config) -> str | None:
    """The config's template name where its kernels run AMX tile instructions, else None."""
    template = template_of_config(workload, config)
    return template.name if "amx" in template.runtime_needs else None


def compiled(workload, config, module, path: Path | None = None) -> CompiledKernel:
    """A built or loaded module as a kernel callable on torch tensors, packing what its template packs ahead.
    An AMX kernel first gets this process the tile state (refused by name where Linux does not grant it)."""
    amx = _amx_template(workload, config)
    if amx:
        require_tiles(f"{workload.key} ({amx})")
    return CompiledKernel(workload, config, module, path, prepacked_operands(workload, config))


def load(workload, config, path) -> CompiledKernel:
    """The library at `path` (written by build_cached), loaded into this process."""
    import tvm

    return compiled(workload, config, tvm.runtime.load_module(str(path)), Path(path))
