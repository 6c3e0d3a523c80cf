"""The backend's options, validated once at the boundary: unknown names and bad values are clear errors.

    torch.compile(model, backend="autotile", options={"tuning": "tune", "trials_per_workload": 8})
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from autotile.errors import AutotileError

TUNING = ("cached", "tune", "off")
FALLBACKS = ("inductor", "eager")
BACKENDS = ("auto", "tvm", "triton")  # auto: the one whose kernels take the example inputs' device (cpu, cuda)


@dataclass(frozen=True)
class Options:
    """tuning: "cached" (database lookups only, never tune; the default), "tune" (tune workloads the database
    lacks, within `trials_per_workload` each and `time_budget_s` in all), "off" (no database: every matched op
    runs its template's heuristic default kernel). db: the tuning database (default $AUTOTILE_DB or the user
    cache). fallback: what runs the rest of the graph, "inductor" or "eager" (aot_eager-style, no codegen).
    backend: whose kernels replace the matched ops, "auto" (TVM for CPU inputs, Triton for CUDA inputs), "tvm" or
    "triton" (on CPU tensors only under TRITON_INTERPRET=1, for tests). fuse_prologues: an op whose only use is
    the next kernel's input (a layer norm before a linear) is computed inside that kernel (True, the default) or
    by a kernel of its own (False: to compare, or to rule the fusion out)."""

    tuning: str = "cached"
    trials_per_workload: int = 16
    time_budget_s: float | None = None
    db: str | None = None
    fallback: str = "inductor"
    progress: bool = True
    backend: str = "auto"
    fuse_prologues: bool = True

    def __post_init__(self):
        if self.tuning not in TUNING:
            raise AutotileError(f"option tuning must be one of {', '.join(TUNING)}, got {self.tuning!r}")
        if self.backend not in BACKENDS:
            raise AutotileError(f"option backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.fallback not in FALLBACKS:
            raise AutotileError(f"option fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")
        trials = self.trials_per_workload
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise AutotileError(f"option trials_per_workload must be a positive integer, got {trials!r}")
        budget = self.time_budget_s
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
            raise AutotileError(f"option time_budget_s must be positive seconds or None, got {budget!r}")
        if self.db is not None:
            object.__setattr__(self, "db", str(Path(self.db).expanduser().resolve()))
        object.__setattr__(self, "progress", bool(self.progress))
        if not isinstance(self.fuse_prologues, bool):
            raise AutotileError(f"option fuse_prologues must be True or False, got {self.fuse_prologues!r}")

    @classmethod
    def parse(cls, options: dict | None) -> Options:
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise AutotileError(f"unknown autotile option(s) {', '.join(map(repr, unknown))}; "
                                f"expected: {', '.join(sorted(known))}")
        return cls(**options)

    def db_path(self) -> Path:
        from autotile.db.store import default_path

        return Path(self.db) if self.db else default_path()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
