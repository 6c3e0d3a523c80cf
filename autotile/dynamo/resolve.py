"""Which compiled kernel runs a workload found in a model, chosen and loaded once per process.

The config is autotile.search.choose's answer (exact, else the nearest tuned shape, else the default); with
tuning="tune" the missing workloads are tuned first. Libraries come from the disk cache (search/artifacts.py).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from autotile.dynamo.counters import stats
from autotile.errors import AutotileError, KernelBuildError


@dataclass
class Loaded:
    kernel: object  # CompiledKernel
    source: str  # "exact", "nearest", "default"


class Resolver:
    """Kernels for one (database, tuning mode) pair, shared by the graph pass and the ops at run time."""

    def __init__(self, db_path: str, tuning: str):
        from autotile.db.device import current_device

        self.db_path = db_path
        self.tuning = tuning
        self.device = current_device("tvm")
        self._loaded: dict[str, Loaded] = {}

    def _template(self, workload) -> str:
        from autotile.kernels import space_for

        return space_for(workload, self.device.fingerprint).template

    def _open(self):
        from autotile.db.store import TuningDB

        return TuningDB(self.db_path)

    def choose(self, workload, db=None):
        """(config, source) for `workload`: exact, nearest or default (autotile.search.choose)."""
        from autotile.search.choose import choose_config

        return choose_config(db, self.device, workload, "tvm")

    def load(self, workload) -> Loaded:
        """The kernel for `workload`, chosen, built (or read from the disk cache) and verified once."""
        hit = self._loaded.get(workload.key)
        if hit is not None:
            stats.workloads[workload.key] = hit.source
            return hit
        if self.tuning == "off":
            config, source = self.choose(workload)
        else:
            with self._open() as db:
                config, source = self.choose(workload, db)
        from autotile.codegen.tvm.pool import limit_spinning
        from autotile.search.isolated import load_kernel

        limit_spinning()  # before this process's first kernel call: torch's code runs between autotile's kernels
        try:
            kernel = load_kernel(self.device, workload, config)
        except (AutotileError, KernelBuildError):
            if source == "default":
                raise
            config, source = self.choose(workload)  # a borrowed config that fails here: the default
            kernel = load_kernel(self.device, workload, config)
        self._loaded[workload.key] = loaded = Loaded(kernel, source)
        stats.workloads[workload.key] = source
        return loaded

    def tune_missing(self, workloads, trials: int, budget_s: float | None, progress: bool) -> list[str]:
        """Tune each workload the database lacks, within `trials` each and `budget_s` seconds in all."""
        import autotile
        from autotile.search.tuner import current_best

        with self._open() as db:
            missing = [w for w in workloads if current_best(db, self.device, w, "tvm", self._template(w)) is None]
        tuned, start = [], time.perf_counter()
        for i, w in enumerate(missing):
            left = None if budget_s is None else budget_s - (time.perf_counter() - start)
            if left is not None and left <= 0:
                if progress:
                    print(f"autotile: time budget spent; {len(missing) - i} workload(s) left untuned", file=sys.stderr)
                break
            if progress:
                print(f"autotile: tuning {i + 1}/{len(missing)} {w.key}", file=sys.stderr)
            result = autotile.tune(w, trials=trials, db=self.db_path, time_budget=left, progress=progress,
                                   backend="tvm")
            self._loaded.pop(w.key, None)
            if result.trials:  # a budget's last crumbs may leave no time for even one
                tuned.append(w.key)
                stats.tuned.append(w.key)
        return tuned


_RESOLVERS: dict[tuple[str, str], Resolver] = {}


def resolver(db_path: str, tuning: str) -> Resolver:
    key = (db_path, tuning)
    if key not in _RESOLVERS:
        _RESOLVERS[key] = Resolver(db_path, tuning)
    return _RESOLVERS[key]
