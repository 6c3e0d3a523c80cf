"""The tuning loop: propose -> build -> verify + time -> record -> learn, within trials and time.

A trial is one candidate built and measured (failures count; configs found equivalent and
skipped do not). Every measurement is recorded in the database as it happens, so nothing is
lost on a crash, and a later `--retune` never re-measures a recorded config.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from autotile.errors import AutotileError
from autotile.search.measure import MeasureResult
from autotile.search.progress import Progress

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
    template: str | None = None  # the winner's template (several may have competed)
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
        threads=record.get("threads"), template=record.get("template"),
    )


def backend_versions(backend: str) -> dict:
    """The toolchain a record of `backend` ("tvm", "triton") is made with."""
    from autotile.backends import named

    return named(backend).versions()


def current_best(db, device, workload, backend: str, template: str):
    """The best verified record of `template` made with this toolchain and measured (or re-timed) here; records
    from other versions and foreign ones (imported, not yet verified here) are only seeds, and another
    template's configs are never read as this one's."""
    from autotile.db.store import SERVED

    versions = backend_versions(backend)
    records = [r for r in db.measurements(device=device.key, workload=workload.key, backend=backend, status="ok",
                                          template=template)
               if r.get("versions") == versions and r.get("trust", "local") in SERVED]
    return min(records, key=lambda r: r["latency_us"], default=None)


def best_of(db, device, workload, backend: str, templates) -> dict | None:
    """The fastest current_best over several templates (those that compete on the workload)."""
    records = [current_best(db, device, workload, backend, t) for t in templates]
    return min((r for r in records if r is not None), key=lambda r: r["latency_us"], default=None)


def _seed_configs(db, device, workload, space, backend: str, limit: int = 4) -> list:
    """Configs that won elsewhere: foreign (imported) records of this very task first, then other devices on this
    workload and this device on other shapes."""
    seeds = [space.default()]
    descriptions = db.workloads()
    records = [r for r in db.measurements(backend=backend, status="ok", template=space.template)
               if (r["workload"] != workload.key or r["device"] != device.key or r.get("trust") == "foreign")
               and descriptions.get(r["workload"], {}).get("op") == workload.op]
    best_per_task: dict = {}
    for r in records:
        task = (r["device"], r["workload"], r.get("trust") == "foreign")
        if task not in best_per_task or r["latency_us"] < best_per_task[task]["latency_us"]:
            best_per_task[task] = r
    this_task = (device.key, workload.key)
    ranked = sorted(best_per_task.values(),
                    key=lambda r: ((r["device"], r["workload"]) != this_task, -(r.get("gflops") or 0)))
    for r in ranked[:limit]:
        try:  # a record from another version whose knobs changed is only skipped
            config = space.config_type.from_dict(r["config"])
            if space.valid(config):
                seeds.append(space.canonical(config))
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
    return seeds


@dataclass(frozen=True)
class TuneOptions:
    """How long and how to search: `trials` candidates built and measured (failures count) within `time_budget`
    seconds, by `strategy` (search/strategy.STRATEGIES); `retune` runs new trials on a tuned workload; `templates`,
    when given, restricts the search to those of the competing templates."""

    trials: int = 64
    time_budget: float | None = None
    seed: int = 0
    strategy: str = "evolution"
    retune: bool = False
    progress: bool = False
    templates: tuple[str, ...] | None = None


def tune(workload, *, db, device, backend, options: TuneOptions = TuneOptions(), measurer=None,
         cost_model=None) -> TuneResult:
    """Tune `workload` on `device` with `backend` (an autotile.backends.Backend). Every template of the backend
    that computes the workload competes: the trials and the time are shared out between them, and the fastest
    verified record of any of them is the result."""
    from autotile.search.strategy import STRATEGIES

    start = time.perf_counter()  # the budget covers everything: worker start-up and re-measurement too
    deadline = None if options.time_budget is None else start + options.time_budget
    versions = backend.versions()
    db.ensure_device(device.key, device.fingerprint)
    db.ensure_workload(workload.key, workload.op, workload.to_dict())
    spaces = [s for s in backend.spaces(workload, device.fingerprint)
              if options.templates is None or s.template in options.templates]
    if not spaces:
        raise AutotileError(f"{workload.key}: none of the templates {list(options.templates)} computes it here")
    templates = [space.template for space in spaces]
    best = best_of(db, device, workload, backend.name, templates)
    if best is not None and not options.retune:
        return result_from_record(device, workload, best, db.last_run(device.key, workload.key, backend.name), True)

    threads = device.fingerprint.get("threads") or 1
    own_measurer = measurer is None
    measurer = measurer or backend.measurer(device)
    run_id = db.start_run(device.key, workload.key, backend.name, options.strategy, options.seed)
    bar = Progress(options.trials, f"tuning {workload.key}", options.progress)
    run = _Run(workload, db, device, backend.name, versions, run_id, measurer, bar)
    try:
        # The search stops early enough to re-measure the best (up to a tenth of the budget).
        search_deadline = None if deadline is None else deadline - min(REMEASURE_TOP * REMEASURE_SECONDS,
                                                                        0.1 * options.time_budget)
        for i, (space, trials) in enumerate(zip(spaces, _shares(options.trials, len(spaces)))):
            searcher = backend.searcher(
                STRATEGIES[options.strategy], space, workload=workload, db=db, device=device, measurer=measurer,
                seed=options.seed, seeds=_seed_configs(db, device, workload, space, backend.name),
                seen=db.measured_config_keys(device.key, workload.key, backend.name),
                cost_model=cost_model if i == 0 else None)
            share_deadline = None if search_deadline is None else \
                time.perf_counter() + (search_deadline - time.perf_counter()) / (len(spaces) - i)
            run.search(searcher, space.template, trials, share_deadline)
        run.remeasure_top(deadline)
    finally:
        bar.close()
        if own_measurer:
            measurer.close()
    seconds = time.perf_counter() - start
    best = best_of(db, device, workload, backend.name, templates)
    db.finish_run(run_id, run.done, seconds, best["id"] if best else None)
    failed = sum(1 for r, _ in run.results if not r.ok)
    if best is None:
        return TuneResult(device.key, workload.key, backend.name, {}, None, None, run.done, seconds, False, False,
                          threads, failed, run.history)
    result = result_from_record(device, workload, best, {"trials": run.done, "seconds": seconds}, False)
    result.failed, result.history = failed, run.history
    return result


def _shares(trials: int, parts: int) -> list[int]:
    """`trials` split as evenly as whole trials allow, the first parts taking the remainder."""
    return [trials // parts + (i < trials % parts) for i in range(parts)]


class _Run:
    """One tuning run's measuring and recording: every result is recorded as it comes, with its template."""

    def __init__(self, workload, db, device, backend: str, versions: dict, run_id, measurer, bar):
        self.workload, self.db, self.device, self.backend = workload, db, device, backend
        self.versions, self.run_id, self.measurer, self.bar = versions, run_id, measurer, bar
        self.done, self.history, self.results = 0, [], []  # results: (MeasureResult, template)

    def search(self, searcher, template: str, trials: int, deadline: float | None) -> None:
        """Propose, measure, record and learn until `trials` more are done, the deadline or the space's end."""
        loop_start, target = time.perf_counter(), self.done + trials
        while self.done < target and (deadline is None or time.perf_counter() < deadline):
            done_here = trials - (target - self.done)
            per_trial = (time.perf_counter() - loop_start) / done_here if done_here else None
            configs = searcher.propose(_batch_size(target - self.done, deadline, per_trial))
            if not configs:
                break  # the space is exhausted
            batch = self.measurer.measure(self.workload, configs)
            for r in batch:
                self.record(r, template)
                self.history.append({"trial": self.done, "latency_us": r.latency_us if r.ok else None,
                                     "status": r.status, "failure": r.failure and r.failure.value,
                                     "template": template, "config": r.config.key, "error": r.error})
                self.done += 1
            self.results.extend((r, template) for r in batch)
            searcher.notify(batch)
            best_so_far = min((r for r, _ in self.results if r.ok), key=lambda r: r.latency_us, default=None)
            self.bar.update(self.done, best_so_far.gflops if best_so_far else None)

    def record(self, r: MeasureResult, template: str) -> None:
        _record(self.db, self.device, self.workload, self.backend, template, r, self.versions, self.run_id)

    def remeasure_top(self, deadline: float | None) -> None:
        """Time the few best again with more repeats, while the budget lasts; the re-measurement replaces the
        first record."""
        top = sorted(((r, t) for r, t in self.results if r.ok), key=lambda rt: rt[0].latency_us)[:REMEASURE_TOP]
        for r, template in top:
            if deadline is not None and time.perf_counter() + REMEASURE_SECONDS > deadline:
                break
            again = self.measurer.run(self.workload, r.config, r.path, repeat=REMEASURE_REPEAT,
                                      min_repeat_s=REMEASURE_MIN_REPEAT_S)
            again.build_seconds = r.build_seconds
            self.record(again, template)


def _record(db, device, workload, backend, template: str, r: MeasureResult, versions, run_id):
    db.record_measurement(
        device=device.key, workload=workload.key, backend=backend, template=template, config_key=r.config.key,
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
