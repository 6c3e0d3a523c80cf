"""Which compiled kernel runs a workload found in a model, chosen and loaded once per process.

The config is autotile.search.choose's answer (exact, else the nearest tuned shape, else the default); with
tuning="tune" the missing workloads are tuned first. Libraries come from the disk cache (search/artifacts.py).
"""

from __future__ import annotations

import atexit
import sys
import time
from dataclasses import dataclass

from autotile.dynamo.counters import stats
from autotile.errors import AutotileError, KernelBuildError


@dataclass
class Loaded:
    kernel: object  # CompiledKernel
    source: str  # "exact", "foreign", "nearest", "default" (autotile.search.choose)


class Resolver:
    """Kernels for one (database, tuning mode, backend), shared by the graph pass and the ops at run time; its
    Session owns the device, the database and the tuning workers."""

    def __init__(self, db_path: str, tuning: str, backend: str = "tvm"):
        from autotile.session import Session

        self.db_path = db_path
        self.tuning = tuning
        self.session = Session(db_path, backend)
        self.device = self.session.device
        self._loaded: dict[str, Loaded] = {}

    def choose(self, workload, use_db: bool = True):
        """(config, source) for `workload`: exact, nearest or default (autotile.search.choose)."""
        return self.session.choose(workload, use_db)

    def load(self, workload) -> Loaded:
        """The kernel for `workload`, chosen, built (or read from the disk cache) and verified once."""
        hit = self._loaded.get(workload.key)
        if hit is not None:
            stats.workloads[workload.key] = hit.source
            return hit
        config, source = self.choose(workload, use_db=self.tuning != "off")
        backend = self.session.backend
        try:
            kernel = backend.load(self.device, workload, config, verified=source == "exact")
        except (AutotileError, KernelBuildError):
            if source == "default":
                raise
            config, source = self.choose(workload, use_db=False)  # a borrowed config that fails here: the default
            kernel = backend.load(self.device, workload, config, verified=False)
        self._loaded[workload.key] = loaded = Loaded(kernel, source)
        stats.workloads[workload.key] = source
        return loaded

    def tune_missing(self, workloads, trials: int, budget_s: float | None, progress: bool) -> list[str]:
        """Tune each workload the database lacks, within `trials` each and `budget_s` seconds in all."""
        from autotile.search.tuner import TuneOptions, best_of

        backend, db = self.session.backend, self.session.db
        missing = [w for w in workloads
                   if best_of(db, self.device, w, backend.name,
                              [s.template for s in backend.spaces(w, self.device.fingerprint)]) is None]
        tuned, start = [], time.perf_counter()
        for i, w in enumerate(missing):
            left = None if budget_s is None else budget_s - (time.perf_counter() - start)
            if left is not None and left <= 0:
                if progress:
                    print(f"autotile: time budget spent; {len(missing) - i} workload(s) left untuned", file=sys.stderr)
                break
            if progress:
                print(f"autotile: tuning {i + 1}/{len(missing)} {w.key}", file=sys.stderr)
            result = self.session.tune(w, TuneOptions(trials=trials, time_budget=left, progress=progress))
            self._loaded.pop(w.key, None)
            if result.trials:  # a budget's last crumbs may leave no time for even one
                tuned.append(w.key)
                stats.tuned.append(w.key)
        return tuned

    def close(self) -> None:
        self.session.close()


_RESOLVERS: dict[tuple[str, str, str], Resolver] = {}


def resolver(db_path: str, tuning: str, backend: str = "tvm") -> Resolver:
    key = (db_path, tuning, backend)
    if key not in _RESOLVERS:
        if not _RESOLVERS:
            atexit.register(close_resolvers)
        _RESOLVERS[key] = Resolver(db_path, tuning, backend)
    return _RESOLVERS[key]


def close_resolvers() -> None:
    for r in _RESOLVERS.values():
        r.close()
    _RESOLVERS.clear()
