"""Which compiled kernel runs a workload found in a model, chosen and loaded once per process.

The config is autotile.search.choose's answer (exact, else the nearest tuned shape, else the default); with
tuning="tune" the missing workloads are tuned first. Libraries come from the disk cache (search/artifacts.py).
"""

from __future__ import annotations

import atexit
import sys
from dataclasses import dataclass

from autotile.dynamo.counters import stats
from autotile.errors import AutotileError, KernelBuildError


@dataclass
class Loaded:
    kernel: object  # CompiledKernel
    source: str  # "exact", "foreign", "nearest", "default" (autotile.search.choose)
    template: str = ""  # the template its config belongs to


class Resolver:
    """Kernels for one (database, tuning mode, backend), shared by the graph pass and the ops at run time; its
    Session holds the device and the database, and tunes in the worker processes of the process's default session
    (started once, whichever database a compile names)."""

    def __init__(self, db_path: str, tuning: str, backend: str = "tvm"):
        from autotile.session import default_session

        self.db_path = db_path
        self.tuning = tuning
        self.session = default_session(backend, db_path)
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
            stats.templates[workload.key] = hit.template
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
        from autotile.ops import template_of_config

        self._loaded[workload.key] = loaded = Loaded(kernel, source, template_of_config(workload, config).name)
        stats.workloads[workload.key] = source
        stats.templates[workload.key] = loaded.template
        return loaded

    def tune_missing(self, workloads, trials: int, budget_s: float | None, progress: bool) -> list[str]:
        """Tune the workloads the database lacks ((workload, calls per forward) pairs) under one budget of
        `trials` per workload and `budget_s` seconds, spent by the model task scheduler where it saves the most."""
        from autotile.dynamo.extraction import Task
        from autotile.modeltune import ModelTuneOptions, tune_tasks
        from autotile.search.tuner import best_of

        backend, db = self.session.backend, self.session.db
        missing = [Task(w, calls) for w, calls in workloads
                   if best_of(db, self.device, w, backend.name,
                              [s.template for s in backend.spaces(w, self.device.fingerprint)]) is None]
        if not missing:
            return []
        if progress:
            print(f"autotile: tuning {len(missing)} workload(s) of this graph under one budget", file=sys.stderr)
        options = ModelTuneOptions(trials=trials * len(missing), time_budget=budget_s, progress=progress,
                                   resume=True)
        result = tune_tasks(missing, session=self.session, options=options, name="torch.compile")
        tuned = [row["workload"] for row in result.tasks if row["trials"]]
        for key in tuned:
            self._loaded.pop(key, None)
            stats.tuned.append(key)
        if progress and len(tuned) < len(missing):
            print(f"autotile: time budget spent; {len(missing) - len(tuned)} workload(s) left untuned",
                  file=sys.stderr)
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
