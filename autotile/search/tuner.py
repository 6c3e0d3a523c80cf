"""The tuning loop: propose -> build -> verify + time -> record -> learn, within trials and time.

A trial is one candidate built and measured (failures count; configs found equivalent and
skipped do not). Every measurement is recorded in the database as it happens, so nothing is
lost on a crash, and a later `--retune` never re-measures a recorded config.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from autotile.codegen.tvm.build import toolchain_versions
from autotile.kernels import space_for
from autotile.search.measure import Measurer, MeasureResult
from autotile.search.strategy import STRATEGIES

BATCH = 8  # candidates per round: built together, then timed one by one
FIRST_BATCH_UNDER_BUDGET = 2
REMEASURE_TOP = 3
REMEASURE_REPEAT = 15
REMEASURE_MIN_REPEAT_S = 0.05
REMEASURE_SECONDS = REMEASURE_REPEAT * REMEASURE_MIN_REPEAT_S  # at least, per re-measured config


@dataclass
class TuneResult:
    device: str
    workload: str
    backend: str
    config: dict
    latency_us: float | None
    gflops: float | None
    trials: int
    tuning_seconds: float
    verified: bool
    cached: bool
    threads: int | None = None
    failed: int = 0
    history: list = field(default_factory=list)

    def to_json_dict(self, with_history: bool = False) -> dict:
        d = asdict(self)
        if not with_history:
            d.pop("history")
        return d


def result_from_record(device, workload, record, run, cached: bool) -> TuneResult:
    return TuneResult(
        device=device.key, workload=workload.key, backend=record["backend"], config=record["config"],
        latency_us=record["latency_us"], gflops=record["gflops"], trials=run["trials"] if run else 0,
        tuning_seconds=run["seconds"] if run else 0.0, verified=record["status"] == "ok", cached=cached,
        threads=record.get("threads"),
    )


def backend_versions(backend: str) -> dict:
    """The toolchain a record was made with: autotile's and the backend's own (TVM is not needed for Triton's)."""
    if backend == "triton":
        import triton

        import autotile

        return {"autotile": autotile.__version__, "triton": triton.__version__}
    return toolchain_versions()


def current_best(db, device, workload, backend: str):
    """The best verified record made with this toolchain; records from other versions are only seeds."""
    versions = backend_versions(backend)
    records = [r for r in db.measurements(device=device.key, workload=workload.key, backend=backend, status="ok")
               if r.get("versions") == versions]
    return min(records, key=lambda r: r["latency_us"], default=None)


def _seed_configs(db, device, workload, space, backend: str, limit: int = 4) -> list:
    """Configs that won elsewhere: other devices on this workload, this device on other shapes."""
    seeds = [space.default()]
    descriptions = db.workloads()
    records = [r for r in db.measurements(backend=backend, status="ok")
               if (r["workload"] != workload.key or r["device"] != device.key)
               and descriptions.get(r["workload"], {}).get("op") == workload.op]
    best_per_task: dict = {}
    for r in records:
        task = (r["device"], r["workload"])
        if task not in best_per_task or r["latency_us"] < best_per_task[task]["latency_us"]:
            best_per_task[task] = r
    ranked = sorted(best_per_task.values(), key=lambda r: -(r.get("gflops") or 0))
    for r in ranked[:limit]:
        try:  # a record of another template of this op, or from another version, is only skipped
            config = space.config_type.from_dict(r["config"])
            if space.valid(config):
                seeds.append(space.canonical(config))
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
    return seeds


def _history(db, device, space, workload, backend: str, features=None) -> list:
    """Past measurements on this device as (features, latency scaled to this workload's flops);
    `features(workload, space, config)` defaults to the space's config features."""
    from autotile.kernels import workload_from_dict

    features = features or (lambda _workload, other_space, config: other_space.features(config))
    out = []
    width = len(features(workload, space, space.default()))  # one op may hold several templates (W8A8, ...)
    descriptions = db.workloads()
    for r in db.measurements(device=device.key, backend=backend):
        try:
            other = workload if r["workload"] == workload.key else workload_from_dict(descriptions[r["workload"]])
            other_space = space if other is workload else space_for(other, device.fingerprint)
            config = other_space.config_type.from_dict(r["config"])
        except Exception:  # a record this version cannot read is only skipped
            continue
        if other.op != workload.op:
            continue
        row = features(other, other_space, config)
        if len(row) != width:
            continue
        latency = math.inf if r["status"] != "ok" else workload.flops / (r["gflops"] * 1e3)
        out.append((row, latency))
    return out


def _compile_aware_search(workload, space, measurer, db, device, seed, seeds, seen, cost_model):
    from autotile.search.compiled import CompileAwareSearch, CompileFeatures, pool_compiler

    pool = getattr(measurer, "build_pool", None)
    compile_many = pool_compiler(pool, workload, space.arch) if pool is not None else None
    compiled = CompileFeatures(workload, space, space.arch, compile_many)
    history = _history(db, device, space, workload, "triton", features=compiled.of)
    return CompileAwareSearch(space, compiled=compiled, seed=seed, seeds=seeds, seen=seen, cost_model=cost_model,
                              history=history)


class Progress:
    """A rich progress bar on stderr: trials done, best GFLOP/s so far."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=False)
        self.task = self.bar.add_task(label, total=total, best="-")
        self.bar.start()

    def update(self, done: int, best_gflops: float | None):
        if self.enabled:
            best = f"{best_gflops:.1f} GFLOP/s" if best_gflops else "-"
            self.bar.update(self.task, completed=done, best=best)

    def close(self):
        if self.enabled:
            self.bar.stop()


def tune(workload, *, db, device, trials: int = 64, time_budget: float | None = None, seed: int = 0,
         strategy: str = "evolution", backend: str = "tvm", retune: bool = False, progress: bool = False,
         threads: int | None = None, measurer: Measurer | None = None, cost_model=None) -> TuneResult:
    start = time.perf_counter()  # the budget covers everything: worker start-up and re-measurement too
    deadline = None if time_budget is None else start + time_budget
    versions = backend_versions(backend)
    db.ensure_device(device.key, device.fingerprint)
    db.ensure_workload(workload.key, workload.op, workload.to_dict())
    best = current_best(db, device, workload, backend)
    if best is not None and not retune:
        return result_from_record(device, workload, best, db.last_run(device.key, workload.key, backend), True)

    threads = threads or device.fingerprint.get("threads") or 1
    space = space_for(workload, device.fingerprint)
    seen = db.measured_config_keys(device.key, workload.key, backend)
    seeds = _seed_configs(db, device, workload, space, backend)
    own_measurer = measurer is None
    measurer = measurer or Measurer(device, threads)
    if strategy == "evolution":
        if cost_model is None:
            from autotile.costmodel import XGBCostModel

            cost_model = XGBCostModel(nthread=1, seed=seed)
        if backend == "triton":  # the cost model also sees compile metadata (search/compiled.py)
            searcher = _compile_aware_search(workload, space, measurer, db, device, seed, seeds, seen, cost_model)
        else:
            searcher = STRATEGIES[strategy](space, seed=seed, seeds=seeds, seen=seen, cost_model=cost_model,
                                            history=_history(db, device, space, workload, backend))
    else:
        searcher = STRATEGIES[strategy](space, seed=seed, seeds=seeds, seen=seen)
    run_id = db.start_run(device.key, workload.key, backend, strategy, seed)
    done, history, results = 0, [], []
    bar = Progress(trials, f"tuning {workload.key}", progress)
    try:
        loop_start = time.perf_counter()
        # The search stops early enough to re-measure the best (up to a tenth of the budget).
        search_deadline = None if deadline is None else deadline - min(REMEASURE_TOP * REMEASURE_SECONDS,
                                                                        0.1 * time_budget)
        while done < trials and (deadline is None or time.perf_counter() < search_deadline):
            per_trial = (time.perf_counter() - loop_start) / done if done else None
            configs = searcher.propose(_batch_size(trials - done, search_deadline, per_trial))
            if not configs:
                break  # the space is exhausted
            batch = measurer.measure(workload, configs)
            for r in batch:
                _record(db, device, workload, backend, r, versions, run_id)
                history.append({"trial": done, "latency_us": r.latency_us if r.ok else None, "status": r.status,
                                "failure": r.failure and r.failure.value, "config": r.config.key, "error": r.error})
                done += 1
            results.extend(batch)
            searcher.notify(batch)
            best_so_far = min((r for r in results if r.ok), key=lambda r: r.latency_us, default=None)
            bar.update(done, best_so_far.gflops if best_so_far else None)
        _remeasure_top(measurer, db, device, workload, backend, results, versions, run_id, deadline)
    finally:
        bar.close()
        if own_measurer:
            measurer.close()
    seconds = time.perf_counter() - start
    best = current_best(db, device, workload, backend)
    db.finish_run(run_id, done, seconds, best["id"] if best else None)
    failed = sum(1 for r in results if not r.ok)
    if best is None:
        return TuneResult(device.key, workload.key, backend, {}, None, None, done, seconds, False, False,
                          threads, failed, history)
    result = result_from_record(device, workload, best, {"trials": done, "seconds": seconds}, False)
    result.failed, result.history = failed, history
    return result


def _record(db, device, workload, backend, r: MeasureResult, versions, run_id):
    db.record_measurement(
        device=device.key, workload=workload.key, backend=backend, config_key=r.config.key,
        config=r.config.to_dict(), status=r.status, failure=r.failure and r.failure.value, error=r.error,
        latency=r.latency or None, gflops=r.gflops, threads=r.threads, versions=versions, run_id=run_id)


def _batch_size(trials_left: int, deadline: float | None, seconds_per_trial: float | None) -> int:
    """BATCH, or fewer when the time left holds fewer trials (at the pace so far): a batch is never cut short,
    so a big one started just before the deadline would overrun the budget by a whole batch."""
    size = min(BATCH, trials_left)
    if deadline is None:
        return size
    if seconds_per_trial is None:  # no pace yet: a first batch as small as the build pool
        return min(size, FIRST_BATCH_UNDER_BUDGET)
    fits = int((deadline - time.perf_counter()) / max(seconds_per_trial, 1e-6))
    return max(1, min(size, fits))


def _remeasure_top(measurer, db, device, workload, backend, results, versions, run_id, deadline=None):
    """Time the few best again with more repeats, while the budget lasts; the re-measurement replaces the first
    record."""
    top = sorted((r for r in results if r.ok), key=lambda r: r.latency_us)[:REMEASURE_TOP]
    for r in top:
        if deadline is not None and time.perf_counter() + REMEASURE_SECONDS > deadline:
            break
        again = measurer.run(workload, r.config, r.path, repeat=REMEASURE_REPEAT, min_repeat_s=REMEASURE_MIN_REPEAT_S)
        again.build_seconds = r.build_seconds
        _record(db, device, workload, backend, again, versions, run_id)
