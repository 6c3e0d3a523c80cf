"""The tuning loop: propose -> build -> verify + time -> record -> learn, within trials and time.

A trial is one candidate built and measured (failures count; configs found equivalent and
skipped do not). Every measurement is recorded in the database as it happens (search/task.py), so
nothing is lost on a crash: the same command continues a killed run to its trials, and a later
`--retune` never re-measures a recorded config.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field

from autotile.errors import AutotileError
from autotile.search.progress import Progress
from autotile.search.task import BATCH, REMEASURE_SECONDS, REMEASURE_TOP, TaskTuner


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
    """The default, then up to `limit` configs that won elsewhere (one per device and workload): foreign (imported)
    records of this very task first; then, in turns, other devices' winners of this workload and this device's
    winners of other shapes; then other devices' other shapes. Other devices carry the workload's ranking from
    another CPU, this device its ranking from another shape; seeded from one kind alone, a search can stay in its
    basin. Another CPU's configs are adopted to this one's vector width first (ConfigSpace.adopt): as they were,
    an AVX2 machine's winners held an AVX-512 search in 256-bit tiles."""
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
    bests = sorted(best_per_task.values(), key=lambda r: -(r.get("gflops") or 0))
    here, same_workload = (lambda r: r["device"] == device.key), (lambda r: r["workload"] == workload.key)
    other_devices = [r for r in bests if not here(r) and same_workload(r)]
    other_shapes = [r for r in bests if here(r) and not same_workload(r)]
    in_turns = [r for pair in itertools.zip_longest(other_devices, other_shapes) for r in pair if r is not None]
    ranked = ([r for r in bests if here(r) and same_workload(r)] + in_turns
              + [r for r in bests if not here(r) and not same_workload(r)])
    fingerprints = {d["key"]: d["fingerprint"] for d in db.devices()}
    for r in ranked:
        if len(seeds) > limit:
            break
        try:  # a record from another version whose knobs changed is only skipped
            config = space.adopt(space.config_type.from_dict(r["config"]), fingerprints.get(r["device"]))
            if space.valid(config) and (config := space.canonical(config)) not in seeds:
                seeds.append(config)
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
    that computes the workload competes: each gets a first round, then the one in the lead takes most of the
    trials (search/task.py `next_template`), and the fastest verified record of any of them is the result. A run
    that stopped before its end (killed, crashed) is continued to `options.trials`, never served as done; a
    finished one is served from the database unless `retune`."""
    start = time.perf_counter()  # the budget covers everything: worker start-up and re-measurement too
    deadline = None if options.time_budget is None else start + options.time_budget
    db.ensure_device(device.key, device.fingerprint)
    db.ensure_workload(workload.key, workload.op, workload.to_dict())
    spaces = [s for s in backend.spaces(workload, device.fingerprint)
              if options.templates is None or s.template in options.templates]
    if not spaces:
        raise AutotileError(f"{workload.key}: none of the templates {list(options.templates)} computes it here")
    templates = [space.template for space in spaces]
    unfinished = None if options.retune else db.unfinished_run(device.key, workload.key, backend.name)
    done = db.run_trials(unfinished["id"]) if unfinished else {}
    if unfinished and sum(done.values()) >= options.trials:  # killed after its last trial: it is done
        db.finish_run(unfinished["id"], sum(done.values()), 0.0, None)
        unfinished = None
    best = best_of(db, device, workload, backend.name, templates)
    if unfinished is None and best is not None and not options.retune:
        return result_from_record(device, workload, best, db.last_run(device.key, workload.key, backend.name), True)

    own_measurer = measurer is None
    measurer = measurer or backend.measurer(device)
    run_id = unfinished["id"] if unfinished else db.start_run(device.key, workload.key, backend.name,
                                                              options.strategy, options.seed)
    bar = Progress(options.trials, f"tuning {workload.key}", options.progress)
    task = TaskTuner(workload, spaces, db=db, device=device, backend=backend, run_id=run_id, measurer=measurer,
                     options=options, cost_model=cost_model, bar=bar, done=done)
    try:
        # The search stops early enough to re-measure the best (up to a tenth of the budget).
        search_deadline = None if deadline is None else deadline - min(REMEASURE_TOP * REMEASURE_SECONDS,
                                                                        0.1 * options.time_budget)
        while task.done < options.trials and not task.finished:
            made = task.step(min(BATCH, options.trials - task.done), search_deadline)
            if made == 0 and search_deadline is not None and time.perf_counter() >= search_deadline:
                break
        task.remeasure_top(deadline)
    finally:
        bar.close()
        if own_measurer:
            measurer.close()
    seconds = time.perf_counter() - start
    best = best_of(db, device, workload, backend.name, templates)
    db.finish_run(run_id, task.done, seconds, best["id"] if best else None)
    threads = device.fingerprint.get("threads") or 1
    if best is None:
        return TuneResult(device.key, workload.key, backend.name, {}, None, None, task.done, seconds, False, False,
                          threads, task.failed, task.history)
    result = result_from_record(device, workload, best, {"trials": task.done, "seconds": seconds}, False)
    result.failed, result.history = task.failed, task.history
    return result
