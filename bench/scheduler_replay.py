"""How much a task scheduler can buy at all: the schedulers replayed on recorded tuning curves, beside the oracle.

    .venv/bin/python bench/scheduler_replay.py DB [DB ...] [--fractions 0.25,0.5,0.6] [--json FILE]
    .venv/bin/python bench/scheduler_replay.py --curves bench/results/scheduler_curves_gpt_znver3.json

Each DB holds one model run that tuned every task to the same number of trials (bench/tune_model.py's "full"
runs, `--keep DIR`: DIR/gpt-seed0-equal-320.db). Its records give each task's curve, the best latency after n
trials, in the order they were measured. The schedulers of autotile/modeltune/scheduler.py (the code as it is
now) are run on those curves as if each round of a task measured its next trials: the default first, then rounds
of 8; and the oracle is the allocation, in the same rounds, with the lowest sum of calls x latency, found knowing
every curve in advance. The objective is the model's time in its tuned ops, as `tune-model` estimates it.

What it answers: the most any allocation of a budget could gain over the equal split on this model (the oracle's
ratio), and how much of that the gradient scheduler takes. A live comparison of schedulers (tune_model.py) adds
the search's randomness and the host's timing noise on top, so a gap smaller than their spread between seeds
cannot be seen there.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotile.modeltune.scheduler import SCHEDULERS, TaskState, advance  # noqa: E402
from autotile.search.task import BATCH  # noqa: E402


def curves_of(db_path: str) -> dict:
    """{workload: {"calls", "flops", "structure", "curve": best latency (us) after 1, 2, ... trials}} of the
    database's one model run."""
    from autotile.ops import workload_from_dict

    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    (run_id,) = con.execute("select id from model_runs order by id desc limit 1").fetchone()
    tasks = {}
    for workload, calls, task_run in con.execute("select workload, calls, run_id from model_tasks where model_run "
                                                 "= ?", (run_id,)):
        (description,) = con.execute("select description from workloads where key = ?", (workload,)).fetchone()
        w = workload_from_dict(json.loads(description))
        best, curve = float("inf"), []
        for latency, status in con.execute("select latency_us, status from measurements where run_id = ? "
                                           "order by id", (task_run,)):
            best = min(best, latency) if status == "ok" else best
            curve.append(best)
        tasks[workload] = {"calls": calls, "flops": w.flops, "structure": w.structure, "curve": curve}
    return tasks


def at(curve: list, trials: int) -> float | None:
    value = curve[min(trials, len(curve)) - 1]
    return None if value == float("inf") else value


def replay(name: str, tasks: dict, budget: int) -> dict[str, int]:
    """Trials per task when scheduler `name` spends `budget` on these curves (each task's default first)."""
    scheduler = SCHEDULERS[name](budget)
    states = [TaskState(key, t["calls"], structure=t["structure"], flops=t["flops"]) for key, t in tasks.items()]
    for state in states:  # the task table's default, one trial each, as tune_tasks measures it
        advance(state, scheduler, trials=1, best=at(tasks[state.key]["curve"], 1), exhausted=False, cap=None)
    while (spent := sum(s.trials for s in states)) < budget:
        state = scheduler.next(states)
        if state is None:
            break
        curve = tasks[state.key]["curve"]
        n = min(BATCH, budget - spent, scheduler.round_limit(state, states) or BATCH, len(curve) - state.trials)
        trials = state.trials + n
        advance(state, scheduler, trials=trials, best=at(curve, trials), exhausted=trials >= len(curve), cap=None)
    return {s.key: s.trials for s in states}


def oracle(tasks: dict, budget: int) -> dict[str, int]:
    """The allocation (at least the default of each task) with the lowest objective, by dynamic programming over
    the tasks; trials in any number, not in rounds: a bound on every scheduler's."""
    keys = list(tasks)
    best = {0: (0.0, {})}  # trials spent -> (objective, allocation) over the tasks so far
    for key in keys:
        t = tasks[key]
        options = range(1, min(budget, len(t["curve"])) + 1)
        step = {}
        for spent, (value, alloc) in best.items():
            for n in options:
                latency = at(t["curve"], n)
                if spent + n > budget or latency is None:
                    continue
                candidate = (value + t["calls"] * latency, {**alloc, key: n})
                if spent + n not in step or candidate[0] < step[spent + n][0]:
                    step[spent + n] = candidate
        best = step
    return min(best.values(), key=lambda v: v[0])[1]


def objective(tasks: dict, alloc: dict) -> float:
    return sum(t["calls"] * at(t["curve"], alloc[key]) for key, t in tasks.items())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dbs", nargs="*", help="databases of full runs (one model run each)")
    p.add_argument("--curves", help="read the curves from this JSON (as --json writes them) instead")
    p.add_argument("--fractions", default="0.25,0.5,0.6")
    p.add_argument("--json", help="also write the curves and every number here")
    args = p.parse_args(argv)
    if args.curves:
        runs = json.loads(Path(args.curves).read_text())["curves"]
    elif args.dbs:
        runs = {"/".join(Path(d).parts[-2:]): curves_of(d) for d in args.dbs}
    else:
        p.error("give the full runs' databases, or --curves")
    fractions = [float(f) for f in args.fractions.split(",")]
    names = ["gradient", "round-robin", "equal", "oracle"]
    results = {}
    for run, tasks in runs.items():
        full = sum(len(t["curve"]) for t in tasks.values())
        print(f"{run}: {len(tasks)} tasks, {full} trials; ms in the tuned ops after")
        for fraction in fractions:
            budget = round(fraction * full)
            allocs = {name: (oracle(tasks, budget) if name == "oracle" else replay(name, tasks, budget))
                      for name in names}
            ms = {name: objective(tasks, a) / 1e3 for name, a in allocs.items()}
            results.setdefault(run, {})[fraction] = {"budget": budget, "ms": ms,
                                                     "trials": {n: list(a.values()) for n, a in allocs.items()}}
            print(f"  {budget:4d} trials ({fraction:.0%}): " + "  ".join(
                f"{name} {ms[name]:.3f} {list(allocs[name].values())}" for name in names))
    print("equal split's time over each scheduler's (>1: faster than the equal split), per run; then the median")
    for fraction in fractions:
        line = []
        for name in names:
            ratios = [r[fraction]["ms"]["equal"] / r[fraction]["ms"][name] for r in results.values()]
            line.append(f"{name} " + " ".join(f"{x:.3f}" for x in ratios) + f" | {statistics.median(ratios):.3f}")
        print(f"  {fraction:.0%}: " + ";  ".join(line))
    if args.json:
        Path(args.json).write_text(json.dumps({"curves": runs, "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
