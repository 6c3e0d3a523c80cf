"""A model tuning run: its tasks tuned a round at a time under one budget, the state saved after every round.

    result = autotile.tune_model(model, (x,), trials=256)        # or: autotile tune-model pkg.mod:factory ...

The run is identified by its fingerprint (device, backend, and every task with its calls): the same model on the
same machine is the same run, so a killed run is resumed (`resume=True`) with nothing measured twice and the total
trials ending at the budget; a finished one is answered from the database unless `retune`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

from autotile.db import model_runs
from autotile.db.store import SERVED
from autotile.errors import AutotileError
from autotile.modeltune.scheduler import SCHEDULERS, TaskState, advance, similar_leads
from autotile.search.task import BATCH

TRIALS_PER_TASK = 32  # the default budget: this many per task, spent where they help most


@dataclass(frozen=True)
class ModelTuneOptions:
    """`trials`: the global budget (default TRIALS_PER_TASK per task); `time_budget` in seconds; at most
    `max_trials_per_task` on any task; `scheduler` gradient | round-robin | equal; `resume` continues a killed run
    of the same model; `retune` starts a new run even when one finished."""

    trials: int | None = None
    time_budget: float | None = None
    max_trials_per_task: int | None = None
    scheduler: str = "gradient"
    strategy: str = "evolution"
    seed: int = 0
    resume: bool = False
    retune: bool = False
    progress: bool = False

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise AutotileError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        for name in ("trials", "max_trials_per_task"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise AutotileError(f"{name} must be a positive integer, got {value!r}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise AutotileError(f"time_budget must be positive seconds, got {self.time_budget!r}")


@dataclass
class ModelTuneResult:
    run: int
    name: str
    device: str
    backend: str
    scheduler: str
    trials: int
    seconds: float
    estimated_us: float | None  # sum of calls x best latency over the tasks: the forward's time in tuned ops
    cached: bool
    tasks: list = field(default_factory=list)  # one row per task (task_rows)

    def to_json_dict(self) -> dict:
        return asdict(self)


def fingerprint(tasks, device_key: str, backend: str) -> str:
    body = {"device": device_key, "backend": backend, "tasks": sorted([t.workload.key, t.calls] for t in tasks)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def estimated_us(states) -> float | None:
    costs = [s.cost for s in states]
    return None if any(c is None for c in costs) else sum(costs)


def task_rows(states) -> list[dict]:
    """The task table: workload, calls, trials, best and default latency, share of the estimated forward."""
    total = sum(s.cost or 0 for s in states) or None
    return [{"workload": s.key, "calls": s.calls, "trials": s.trials, "best_latency_us": s.best,
             "default_latency_us": s.default_latency_us,
             "share": (s.cost / total) if total and s.cost is not None else None, "retired": s.retired}
            for s in states]


class ModelRun:
    """One model run's tasks, tuners and saved state (a new run, or one resumed from the database)."""

    def __init__(self, tasks, session, options: ModelTuneOptions, name: str):
        self.session, self.options, self.name = session, options, name
        self.db, self.device, self.backend = session.db, session.device, session.backend
        self.workloads = {t.workload.key: t.workload for t in tasks}
        self.fingerprint = fingerprint(tasks, self.device.key, self.backend.name)
        self.start = time.perf_counter()
        self.elapsed_before = 0.0
        self.states: list[TaskState] = []
        self.tuners: dict = {}
        self.curve: list = []  # [total trials, estimated us, seconds] after each round
        self.id: int | None = None
        self.default_keys: dict[str, str] = {}  # task -> its default config's key
        self._tasks = tasks

    # -- opening ---------------------------------------------------------------------------------
    def open(self) -> dict | None:
        """Start or resume the run; the finished run to answer from instead, or None."""
        db, options = self.db, self.options
        unfinished = model_runs.find(db, self.fingerprint, "running")
        if unfinished and not (options.resume or options.retune):
            raise AutotileError(f"model run {unfinished['id']} of this model stopped at {unfinished['trials']} "
                                f"trials; pass --resume (resume=True) to continue it, or --retune to start over")
        if unfinished and options.resume:
            self._resume(unfinished)
            return None
        if unfinished:
            model_runs.save(db, unfinished["id"], tasks=[], trials=unfinished["trials"], curve=unfinished["curve"],
                            status="abandoned")
        finished = model_runs.find(db, self.fingerprint, "done")
        if finished and not options.retune:
            return finished
        self._start()
        return None

    def _budget(self) -> dict:
        o, n = self.options, len(self._tasks)
        trials = o.trials if o.trials is not None else (None if o.time_budget else TRIALS_PER_TASK * n)
        return {"trials": trials, "seconds": o.time_budget, "max_trials_per_task": o.max_trials_per_task,
                "elapsed": 0.0}

    def _start(self):
        db, device, backend = self.db, self.device, self.backend
        db.ensure_device(device.key, device.fingerprint)
        self.budget, self.scheduler = self._budget(), self.options.scheduler
        self.id = model_runs.start(db, fingerprint=self.fingerprint, name=self.name, device=device.key,
                                   backend=backend.name, scheduler=self.scheduler, budget=self.budget,
                                   seed=self.options.seed)
        for t in self._tasks:
            db.ensure_workload(t.workload.key, t.workload.op, t.workload.to_dict())
            run_id = db.start_run(device.key, t.workload.key, backend.name, self.options.strategy,
                                  self.options.seed, model_run=self.id)
            state = TaskState(t.workload.key, t.calls, run_id=run_id, structure=t.workload.structure,
                              flops=t.workload.flops)
            best = self._best(t.workload)
            state.curve.append([0, best])  # where this run starts from: a record of an earlier run, or nothing
            self.states.append(state)
        self.save()

    def _resume(self, row: dict):
        self.id, self.budget, self.curve, self.scheduler = row["id"], row["budget"], row["curve"], row["scheduler"]
        for key, value in (("trials", self.options.trials), ("seconds", self.options.time_budget),
                           ("max_trials_per_task", self.options.max_trials_per_task)):
            if value is not None:  # a budget given again: the resumed run ends there (to extend it, or cut it)
                self.budget[key] = value
        self.elapsed_before = self.budget.get("elapsed", 0.0)
        saved = {r["workload"]: r for r in model_runs.tasks(self.db, self.id)}
        for t in self._tasks:
            r = saved[t.workload.key]
            trials = sum(self.db.run_trials(r["run_id"]).values())  # recounted: exact after a kill
            self.states.append(TaskState(t.workload.key, t.calls, trials=trials, curve=r["curve"],
                                         retired=r["retired"], default_latency_us=r["default_latency_us"],
                                         run_id=r["run_id"], structure=t.workload.structure, flops=t.workload.flops))

    # -- tuning ----------------------------------------------------------------------------------
    def tuner(self, state: TaskState):
        if state.key not in self.tuners:
            from autotile.search.task import TaskTuner
            from autotile.search.tuner import TuneOptions

            workload = self.workloads[state.key]
            spaces = self.backend.spaces(workload, self.device.fingerprint)
            self.tuners[state.key] = TaskTuner(
                workload, spaces, db=self.db, device=self.device, backend=self.backend, run_id=state.run_id,
                measurer=self.session.measurer, done=self.db.run_trials(state.run_id),
                options=TuneOptions(seed=self.options.seed, strategy=self.options.strategy))
        return self.tuners[state.key]

    def _best_record(self, workload) -> dict | None:
        """The workload's fastest served record of any of its templates here."""
        from autotile.search.tuner import best_of

        spaces = self.backend.spaces(workload, self.device.fingerprint)
        return best_of(self.db, self.device, workload, self.backend.name, [s.template for s in spaces])

    def _best(self, workload) -> float | None:
        best = self._best_record(workload)
        return best["latency_us"] if best else None

    def measure_defaults(self, deadline):
        """Each task's default config timed once (a trial of the task), unless the database has it: the task
        table's estimate before tuning, and what the report's speedups are over."""
        from autotile.ops import default_template

        for state in self.states:
            if state.default_latency_us is not None or self.out_of_budget(deadline):
                continue
            workload = self.workloads[state.key]
            template = default_template(workload, self.device.fingerprint, self.backend.name)
            key = template.space_for(workload, self.device.fingerprint).default().key
            self.default_keys[state.key] = key
            if self._default_record(state, key) is None and state.trials == 0:
                tuner = self.tuner(state)
                tuner.search(template.name, 1, deadline)
                state.trials = tuner.done
                state.curve.append([state.trials, self._best(workload)])
            record = self._default_record(state, key)
            state.default_latency_us = record["latency_us"] if record else None
        self.save()

    def _default_record(self, state, key):
        records = [r for r in self.db.measurements(device=self.device.key, workload=state.key,
                                                   backend=self.backend.name, status="ok")
                   if r["config_key"] == key and r.get("versions") == self.backend.versions()
                   and r.get("trust", "local") in SERVED]
        return records[0] if records else None

    @property
    def total(self) -> int:
        return sum(s.trials for s in self.states)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    def out_of_budget(self, deadline) -> bool:
        trials = self.budget.get("trials")
        return (trials is not None and self.total >= trials) or (deadline is not None and
                                                                 time.perf_counter() >= deadline)

    def round(self, scheduler, deadline) -> bool:
        """One batch of the task the scheduler picks; False when the budget is spent or every task retired."""
        if self.out_of_budget(deadline):
            return False
        state = scheduler.next(self.states)
        if state is None:
            return False
        cap, trials = self.budget.get("max_trials_per_task"), self.budget.get("trials")
        limit = scheduler.round_limit(state, self.states)
        n = min([BATCH] + ([trials - self.total] if trials else []) + ([cap - state.trials] if cap else []) +
                ([limit] if limit else []))
        tuner = self.tuner(state)
        self.offer_similar_winners(state, tuner)
        made = tuner.step(n, deadline)
        advance(state, scheduler, trials=tuner.done, best=self._best(self.workloads[state.key]),
                exhausted=made == 0 and tuner.finished, cap=cap)
        self.curve.append([self.total, estimated_us(self.states), round(self.elapsed(), 3)])
        self.save()
        return True

    def offer_similar_winners(self, state: TaskState, tuner) -> None:
        """The best configs of the tasks of `state`'s structure that run at its throughput or above (within
        reading noise: scheduler.similar_leads), each measured first in its next round: a model's tasks of one
        structure often share a winner (ResNet-18's layer2 has the same 3x3 conv with and without the residual;
        runs left one at 353 us, the other at 368-388), and one task's find is then one trial away for the others.
        A config is offered once: never re-measured."""
        for other in similar_leads(state, self.states):
            if record := self._best_record(self.workloads[other.key]):
                tuner.offer(record["template"], record["config"])

    def finish(self, deadline):
        for state in self.states:
            tuner = self.tuners.get(state.key)
            if tuner is not None:
                tuner.remeasure_top(deadline)
                state.curve[-1][1] = self._best(self.workloads[state.key])
                record = self._default_record(state, self.default_keys.get(state.key))
                if record is not None:  # the default itself re-measured: the speedup over it compares like with like
                    state.default_latency_us = record["latency_us"]
            best = self._best_record(self.workloads[state.key])
            self.db.finish_run(state.run_id, state.trials, self.elapsed(), best["id"] if best else None)
        self.save(status="done")

    def save(self, status: str = "running"):
        self.budget["elapsed"] = round(self.elapsed(), 3)
        model_runs.save(self.db, self.id, tasks=self.states, trials=self.total, curve=self.curve, status=status,
                        budget=self.budget)

    def result(self, cached: bool) -> ModelTuneResult:
        return ModelTuneResult(self.id, self.name, self.device.key, self.backend.name, self.scheduler,
                               self.total, self.elapsed(), estimated_us(self.states), cached,
                               task_rows(self.states))


def tune_tasks(tasks, *, session, options: ModelTuneOptions = ModelTuneOptions(),
               name: str = "model") -> ModelTuneResult:
    """Tune `tasks` (autotile.dynamo.extraction.Task) under one budget, with progress on stderr if asked."""
    if not tasks:
        raise AutotileError("the model has no op autotile replaces: nothing to tune")
    for t in tasks:
        session.check(t.workload)
    run = ModelRun(tasks, session, options, name)
    finished = run.open()
    if finished is not None:
        return _finished_result(session, finished)
    deadline = None
    if run.budget.get("seconds") is not None:
        deadline = time.perf_counter() + max(run.budget["seconds"] - run.elapsed_before, 0.0)
    from autotile.modeltune.progress import ModelProgress

    progress = ModelProgress(run, enabled=options.progress)
    try:
        run.measure_defaults(deadline)
        progress.table()
        scheduler = SCHEDULERS[run.scheduler](run.budget.get("trials"))
        while run.round(scheduler, deadline):
            progress.update()
        run.finish(deadline)
    finally:
        progress.close()
    return run.result(cached=False)


def _finished_result(session, row: dict) -> ModelTuneResult:
    states = [TaskState(r["workload"], r["calls"], trials=r["trials"], curve=r["curve"], retired=r["retired"],
                        default_latency_us=r["default_latency_us"], run_id=r["run_id"])
              for r in model_runs.tasks(session.db, row["id"])]
    return ModelTuneResult(row["id"], row["name"], row["device"], row["backend"], row["scheduler"],
                           sum(s.trials for s in states), row["budget"].get("elapsed", 0.0), estimated_us(states),
                           True, task_rows(states))


def tune_model(model, example_inputs, *, db=None, backend: str = "auto", name: str | None = None,
               **options) -> ModelTuneResult:
    """Extract `model`'s autotile workloads (as the torch.compile backend would find them), weight each by its
    calls per forward, and tune them under one budget (ModelTuneOptions' fields as keywords). Its measurements run
    in the worker processes of the process's default session, as autotile.tune's do: started once."""
    from autotile.dynamo.extraction import extract_tasks
    from autotile.session import default_session

    opts = ModelTuneOptions(**options)
    with default_session(backend, db) as session:
        tasks = extract_tasks(model, example_inputs, session.backend.name)
        return tune_tasks(tasks, session=session, options=opts, name=name or type(model).__name__)
