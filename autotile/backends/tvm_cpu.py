"""The TVM backend: every family's CPU templates, compiled by LLVM for this CPU's mcpu and features."""

from __future__ import annotations


class TvmCpu:
    name = "tvm"
    tensor_device = "cpu"
    unavailable_reason = ""
    shares_history = True  # its searchers' cost models train on the spaces' own features (search/history.py)

    def available(self) -> bool:
        return True

    def device(self, threads: int | None = None):
        from autotile.db.device import current_device

        return current_device("tvm", threads)

    def versions(self) -> dict:
        from autotile.codegen.tvm.build import toolchain_versions

        return toolchain_versions()

    def spaces(self, workload, fingerprint: dict) -> list:
        from autotile.ops import spaces_for

        return spaces_for(workload, fingerprint, backend=self.name)

    def measurer(self, device):
        from autotile.search.measure import Measurer

        return Measurer(device, device.fingerprint.get("threads") or 1)

    def searcher(self, strategy, space, *, workload, db, device, measurer, seed: int, seeds, seen, cost_model):
        from autotile.search.history import history

        if not strategy.learns:
            return strategy.create(space, seed=seed, seeds=seeds, seen=seen)
        past = history(db, device, space, workload, self.name)
        return strategy.create(space, seed=seed, seeds=seeds, seen=seen, cost_model=cost_model, history=past.own,
                               foreign=past.foreign)

    def load(self, device, workload, config, verified: bool):
        """Built, loaded and first verified in a worker unless cached (search/isolated.py); kernels called beside
        torch spin briefly (codegen/tvm/pool.py)."""
        from autotile.codegen.tvm.pool import limit_spinning
        from autotile.search.isolated import load_kernel

        limit_spinning()  # before this process's first kernel call
        return load_kernel(device, workload, config)
