"""A tuned or default kernel for the caller's process, built and first verified in a worker process.

LLVM aborts, and a bad kernel can segfault, which would take a user's Python process down with it: so a
library not yet in the on-disk cache is built, loaded and verified in a spawned worker, and only a verified
library is loaded here. A library already in the cache loads in-process, with no worker start.
"""

from __future__ import annotations

import atexit

from autotile.codegen.tvm.build import CompiledKernel
from autotile.errors import KernelBuildError, WrongResult
from autotile.ops import encode_config
from autotile.paths import kernel_cache_dir
from autotile.search.artifacts import build_cached, kernel_path, load, target_of
from autotile.search.worker import Worker, WorkerFailure

# Generous: a build outside the tuner has no other candidate to fall back on; this only stops a hang.
BUILD_TIMEOUT_S = 600.0

_worker: Worker | None = None


def _builder() -> Worker:
    global _worker
    if _worker is None:
        _worker = Worker(warm_imports=("tvm", "torch"))
        atexit.register(_worker.close)
    return _worker


def load_kernel(device, workload, config) -> CompiledKernel:
    """The library for (workload, config) on `device`; a fresh build is verified first, since a tuned config may
    have been measured with an older template (or never measured at all: a default)."""
    mcpu, threads, mattr = target_of(device)
    path = kernel_path(device.key, workload, config, mcpu, mattr)
    if not path.exists():
        try:
            _builder().call("autotile.search.isolated:build_and_verify", device.key, workload.to_dict(),
                            encode_config(workload, config), mcpu, threads, mattr, str(kernel_cache_dir()),
                            timeout=BUILD_TIMEOUT_S)
        except WorkerFailure as failure:
            text = str(failure).strip()
            reason = text.partition(": ")[2] if failure.error_type == WrongResult.__name__ else text
            reason = reason.splitlines()[-1] if reason else "failed"
            raise KernelBuildError(f"kernel {config.key} for {workload.key} could not be built and verified on "
                                   f"{mcpu}: {reason}") from None
    return load(workload, config, path)


def build_and_verify(device_key: str, workload_dict: dict, config_payload, mcpu: str, threads: int,
                     mattr: list[str], cache_dir: str) -> str:
    """In the worker: build into the cache, then check the library against the reference; a wrong one is
    removed from the cache (so it is never loaded) and reported."""
    from autotile.ir.reference import verify
    from autotile.search.measure import decode_in_worker

    workload, config = decode_in_worker(workload_dict, config_payload, cache_dir)
    path = build_cached(device_key, workload, config, mcpu, threads, mattr)
    verdict = verify(workload, load(workload, config, path))
    if not verdict.ok:
        path.unlink()
        raise WrongResult(f"failed verification: {verdict.reason}")
    return str(path)
