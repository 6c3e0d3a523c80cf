"""Whole-model tuning benchmark (`autotile tune-model`'s scheduler): measured end-to-end latency against total
trials for the gradient scheduler, round robin and an equal split, each from an empty database.

    .venv/bin/python bench/tune_model.py [--cases gpt,resnet,resnet-down] [--per-task 64] [--rounds 5]
                                         [--warm-from OTHER_DEVICE.db] [--keep DIR [--reuse]] [--json FILE]
    .venv/bin/python bench/tune_model.py --cases gpt --seeds 3 [--seed-timing]   # schedulers over search seeds

Per case (inference, batch 1; "gpt": a GPT block, d_model 768, 12 heads, seq 128; "resnet": a ResNet stage, two
basic blocks of 64 channels at 56x56, ResNet-18's layer1; "resnet-down": ResNet-18's layer2, whose first block
downsamples 64 to 128 channels at stride 2 with a 1x1 shortcut: four tasks of unequal size and calls), with n
tasks and B = per-task x n trials, every number is a run of
`tune_tasks` of its own from an empty database:
- "full": every task tuned to `--per-task` trials, one after another (the equal split of B);
- the gradient scheduler, round robin and the equal split with budgets of 25%, 50% and 60% of B. Not cuts of
  longer runs: an equal split's cut keeps each task's first trials, which a cost model that had seen all of the
  earlier tasks' trials guided (1-3% faster than an equal split of the smaller budget ever is), and a cut of any
  run lacks the re-measure of the finalists that ends a run.
Each database is compiled with the backend (tuning="cached") and timed in alternating rounds (median of
`--rounds`). Untuned: no record, every op on its template's default. Targets: the gradient scheduler reaches 95%
of the full run's speedup over untuned within 60% of B, and at 25% and 50% of B runs faster than round robin and
the equal split.

--warm-from: a database recorded on another machine (another device key); a gradient run starts from a copy of it
and its curve is set beside the cold one's (the warm start: seeds and cost-model rows from the other device).
With --seeds, one such run per seed beside that seed's cold gradient run (add --schedulers gradient to skip the
others), and with --warm-timing also warm runs of half the trials, all timed end to end against the cold runs.
Such a database: `autotile tune-model bench/tune_model.py:gpt --trials 192 --db other.db` on the other machine,
or here as another ISA: `AUTOTILE_HIDE_CPU_FLAGS='avx512*,amx*' autotile tune-model ...` (AVX2 kernels,
another device key; not another CPU model's timings).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # empty caches before torch, TVM or autotile start
    _scratch = tempfile.mkdtemp(prefix="autotile-bench-tune-model-")
    os.environ["AUTOTILE_CACHE_DIR"] = str(Path(_scratch) / "kernels")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(_scratch) / "inductor")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as in e2e_cpu.py: every contender runs with it

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import e2e_cpu  # noqa: E402
import peers  # noqa: E402

from autotile.db import model_runs  # noqa: E402
from autotile.db.device import current_device  # noqa: E402
from autotile.db.store import TuningDB, copy_database  # noqa: E402
from autotile.dynamo import compile_model  # noqa: E402
from autotile.dynamo.extraction import extract_tasks  # noqa: E402
from autotile.modeltune import ModelTuneOptions, tune_tasks  # noqa: E402
from autotile.session import Session  # noqa: E402

CASES = {"gpt": e2e_cpu.CASES["gpt128"], "resnet": e2e_cpu.CASES["resnet"], "resnet-down": e2e_cpu.CASES["resnet-down"]}
CHECKPOINTS = (0.25, 0.5, 0.6)
LABELS = ("gradient", "round-robin", "equal")


def gpt():
    """The GPT case as a tune-model factory: `autotile tune-model bench/tune_model.py:gpt`."""
    torch.manual_seed(0)
    return CASES["gpt"]()


def resnet():
    torch.manual_seed(0)
    return CASES["resnet"]()


def resnet_down():
    torch.manual_seed(0)
    return CASES["resnet-down"]()


def tune_run(tasks, db_path: Path, scheduler: str, trials: int, cap: int | None = None, seed: int = 0) -> dict:
    start = time.perf_counter()
    options = ModelTuneOptions(trials=trials, scheduler=scheduler, max_trials_per_task=cap, progress=True, seed=seed)
    with Session(str(db_path), "tvm") as session:
        result = tune_tasks(tasks, session=session, name=scheduler, options=options)
    seconds = time.perf_counter() - start
    print(f"  {scheduler:12s} {result.trials} trials in {seconds:.0f} s; estimated {result.estimated_us:.0f} us; "
          f"trials per task {[t['trials'] for t in result.tasks]}", flush=True)
    return {"trials": result.trials, "seconds": seconds, "tasks": result.tasks, "run": result.run}


def reused_run(db_path: Path) -> dict:
    with TuningDB(db_path) as db:
        run = model_runs.all_runs(db)[-1]
        tasks = model_runs.tasks(db, run["id"])
    print(f"  reused {db_path.name}: {run['trials']} trials, trials per task {[t['trials'] for t in tasks]}")
    return {"trials": run["trials"], "seconds": run["budget"].get("elapsed"), "run": run["id"],
            "tasks": [{k: t[k] for k in ("workload", "calls", "trials")} for t in tasks]}


def task_measurements(db_path: Path) -> dict[str, list[int]]:
    """Each task's measurement ids in the order they were made (the latest model run's tasks)."""
    with TuningDB(db_path) as db:
        run = model_runs.all_runs(db)[-1]
        out = {}
        for t in model_runs.tasks(db, run["id"]):
            rows = db.db.execute("select id from measurements where run_id = ? order by id", [t["run_id"]])
            out[t["workload"]] = [r[0] for r in rows]
        return out


def allow_recompiles():
    """One compile per cut of the same block: more than dynamo's default limit of recompiles."""
    torch._dynamo.config.cache_size_limit = 64
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 64


def time_databases(model, x, databases: dict, args) -> dict:
    """The model compiled with the backend on each database (tuning="cached"), checked against eager, and timed in
    alternating rounds: {key: [seconds per call, one per round]}."""
    allow_recompiles()
    compiled = {}
    with torch.no_grad():
        ref = model(x)
        for key, path in databases.items():
            fn = compile_model(model, db=str(path), tuning="cached", progress=False)
            error = float((fn(x) - ref).abs().max())
            assert error < 1e-2, f"{key}: max abs error {error}"
            compiled[key] = fn
        return peers.alternating_rounds(
            {key: (lambda fn=fn: peers.seconds_per_call(lambda: fn(x), args.min_time)) for key, fn in compiled.items()},
            args.rounds)


def cut(db_path: Path, target: Path, keep: set[int]) -> Path:
    """A copy of the database holding only the measurements `keep`."""
    copy_database(db_path, target)
    conn = sqlite3.connect(target)
    with conn:
        conn.execute("create temp table keep(id integer primary key)")
        conn.executemany("insert into keep values (?)", [(i,) for i in keep])
        conn.execute("delete from measurements where id not in (select id from keep)")
    conn.close()
    return target


def estimated_ms(db_path: Path, tasks) -> float | None:
    """sum(calls x the fastest verified latency) over the tasks in a database: the objective the scheduler spends
    its budget on, each op timed alone (free of the end-to-end timing's noise, blind to what runs around it)."""
    device = current_device("tvm").key  # a warm start's database also holds another device's records
    with TuningDB(db_path) as db:
        total = 0.0
        for t in tasks:
            ok = [r["latency_us"] for r in db.measurements(device=device, workload=t.workload.key, status="ok")]
            if not ok:
                return None
            total += t.calls * min(ok)
    return total / 1e3


def first_per_task(db_path: Path, k: int) -> set[int]:
    """Each task's first k trials."""
    return {i for ids in task_measurements(db_path).values() for i in ids[:k]}


def run_case(name: str, args, work: Path) -> dict:
    torch.manual_seed(0)
    model, x = CASES[name]()
    model.eval()
    tasks = extract_tasks(model, (x,), "tvm")
    n, budget = len(tasks), args.per_task * len(tasks)
    print(f"\n== {name}: {n} tasks {[(t.workload.key, t.calls) for t in tasks]}; B = {budget} trials", flush=True)
    runs, cuts = {}, {}
    plan = [("equal", 1.0)] + [(label, fraction) for label in LABELS + (("gradient-warm",) if args.warm_from else ())
                               for fraction in CHECKPOINTS]
    for label, fraction in plan:
        path = cuts[(label, fraction)] = work / f"{name}-{label}-{fraction}.db"
        if args.reuse and path.exists():  # tuned before: only the end-to-end timing is done again
            runs[(label, fraction)] = reused_run(path)
            continue
        if label == "gradient-warm":  # the other device's records: seeds and cost-model rows
            copy_database(Path(args.warm_from), path)
        runs[(label, fraction)] = tune_run(tasks, path, label.removesuffix("-warm"), round(fraction * budget),
                                           cap=args.per_task if label == "equal" else None)
    cuts[("untuned", 0.0)] = cut(cuts[("equal", 1.0)], work / f"{name}-untuned.db", set())

    times = time_databases(model, x, cuts, args)
    ms = {key: statistics.median(v) * 1e3 for key, v in times.items()}
    est = {key: estimated_ms(path, tasks) for key, path in cuts.items()}
    # The defaults alone: each task's first trial, its default config (measured first by every run).
    est[("untuned", 0.0)] = estimated_ms(cut(cuts[("equal", 1.0)], work / f"{name}-defaults.db",
                                             first_per_task(cuts[("equal", 1.0)], 1)), tasks)
    untuned, full = ms[("untuned", 0.0)], ms[("equal", 1.0)]
    print(f"{name}: end-to-end ms (median of {args.rounds}), untuned {untuned:.3f}, every task at "
          f"{args.per_task} trials {full:.3f} ({untuned / full:.2f}x untuned)")
    labels = list(LABELS) + (["gradient-warm"] if args.warm_from else [])
    print(f"  {'trials':>14s} " + " ".join(f"{label:>14s}" for label in labels))
    for fraction in CHECKPOINTS:
        row = " ".join(f"{ms[(label, fraction)]:14.3f}" for label in labels)
        print(f"  {round(fraction * budget):>5d} ({fraction:4.0%}) {row}")
    print(f"  estimated ms in the tuned ops (sum of calls x each op's best, timed alone): untuned (defaults) "
          f"{_fmt(est[('untuned', 0.0)])}, every task at {args.per_task} trials {_fmt(est[('equal', 1.0)])}")
    for fraction in CHECKPOINTS:
        row = " ".join(f"{_fmt(est[(label, fraction)]):>14s}" for label in labels)
        print(f"  {round(fraction * budget):>5d} ({fraction:4.0%}) {row}")
    if est[("untuned", 0.0)] and est[("gradient", 0.6)]:
        e0, ef, eg = est[("untuned", 0.0)], est[("equal", 1.0)], est[("gradient", 0.6)]
        print(f"  estimated: gradient at 60% of B saves {(e0 - eg) / (e0 - ef):.1%} of what every task at "
              f"{args.per_task} saves ({e0 / eg:.3f}x vs {e0 / ef:.3f}x the defaults)")
    speedup_full = untuned / full
    speedup_g60 = untuned / ms[("gradient", 0.6)]
    reduction = ("the full run is no faster than untuned here" if untuned <= full else
                 f"{(untuned - ms[('gradient', 0.6)]) / (untuned - full):.1%} of its latency reduction")
    print(f"  gradient at 60% of B: {speedup_g60:.3f}x untuned = {speedup_g60 / speedup_full:.1%} of the full "
          f"run's {speedup_full:.3f}x ({reduction}); target >= 95%")
    for fraction in (0.25, 0.5):
        g, r, e = (ms[(label, fraction)] for label in ("gradient", "round-robin", "equal"))
        print(f"  at {fraction:.0%} of B: gradient {g:.3f} ms vs round robin {r:.3f} ({r / g:.2f}x) and equal split "
              f"{e:.3f} ({e / g:.2f}x); target: gradient below both")
    return {"case": name, "tasks": [[t.workload.key, t.calls] for t in tasks], "budget": budget,
            "runs": {f"{k[0]}@{k[1]}": v for k, v in runs.items()}, "ms": {f"{k[0]}@{k[1]}": v for k, v in ms.items()},
            "estimated_ms": {f"{k[0]}@{k[1]}": v for k, v in est.items()},
            "rounds_ms": {f"{k[0]}@{k[1]}": [t * 1e3 for t in v] for k, v in times.items()}}


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def seed_study(name: str, args, work: Path) -> dict:
    """The three schedulers from an empty database with `--seeds` search seeds each, a run per budget (25%, 50%, 60%
    of B, and the equal split at all of B), as in run_case. Compared on the estimated time in the tuned ops and,
    with --seed-timing, end to end: one run's search luck is as large as the schedulers' difference, so only an
    average over seeds tells them apart."""
    torch.manual_seed(0)
    model, x = CASES[name]()
    tasks = extract_tasks(model.eval(), (x,), "tvm")
    budget = args.per_task * len(tasks)
    marks = [round(f * budget) for f in CHECKPOINTS]
    table, cuts = {}, {}
    for seed in range(args.seeds):
        for scheduler in args.schedulers:
            for mark in marks + ([budget] if scheduler == "equal" else []):
                path = cuts[(scheduler, seed, mark)] = work / f"{name}-seed{seed}-{scheduler}-{mark}.db"
                if not (args.reuse and path.exists()):
                    tune_run(tasks, path, scheduler, mark, cap=args.per_task if scheduler == "equal" else None,
                             seed=seed)
            table[(scheduler, seed)] = [estimated_ms(cuts[(scheduler, seed, m)], tasks) for m in marks]
    print(f"\n{name}: estimated ms in the tuned ops after {marks} trials (25%, 50%, 60% of B = {budget}), "
          f"{args.seeds} seeds")
    means = {}
    for scheduler in args.schedulers:
        rows = [table[(scheduler, seed)] for seed in range(args.seeds)]
        means[scheduler] = [statistics.fmean(r[i] for r in rows if r[i] is not None) for i in range(len(marks))]
        for seed, row in enumerate(rows):
            print(f"  {scheduler:12s} seed {seed}: " + " ".join(f"{_fmt(v):>8s}" for v in row))
        print(f"  {scheduler:12s} mean  : " + " ".join(f"{v:8.3f}" for v in means[scheduler]))
    warm = warm_study(name, args, work, tasks, marks, cuts) if args.warm_from else {}
    if args.warm_from and args.warm_timing:
        warm["end_to_end_ms"] = time_warm(name, args, work, tasks, model, x, marks[-1], cuts)
    timed = time_seed_cuts(name, args, work, model, x, marks, budget, cuts) if args.seed_timing else {}
    return {"case": name, "marks": marks, "budget": budget, "estimated_ms": {f"{k[0]}/{k[1]}": v for k, v in
                                                                            table.items()},
            "means": means, "warm": warm, "end_to_end_ms": timed}


def warm_study(name, args, work, tasks, marks, cuts) -> dict:
    """Per seed, a gradient run to 60% of B from a copy of `--warm-from` (another device's records) beside the
    cold gradient run of that seed: the trials each needs to reach the cold run's final estimate, from the runs'
    own curves (the estimate after every round)."""
    mark, out = marks[-1], {}
    print(f"\n{name}: warm start from {args.warm_from} (its devices: {devices_of(Path(args.warm_from))}); "
          f"gradient runs of {mark} trials, estimated ms after each round")
    for seed in range(args.seeds):
        path = cuts[("gradient-warm", seed, mark)] = warm_run(name, args, work, tasks, seed, mark)
        cold, warm = run_curve(cuts[("gradient", seed, mark)]), run_curve(path)
        target = cold[-1][1]
        at = next((t for t, est in warm if est <= target), None)
        out[seed] = {"cold": cold, "warm": warm, "target_us": target, "reached_at": at}
        print(f"  seed {seed}: cold final {target / 1e3:.3f} ms after {cold[-1][0]} trials; warm reaches it after "
              f"{at} trials ({_share(at, cold[-1][0])}); warm at "
              + ", ".join(f"{m}: {_fmt(estimate_at(warm, m))}" for m in marks)
              + "; cold at " + ", ".join(f"{m}: {_fmt(estimate_at(cold, m))}" for m in marks))
    reached = [v["reached_at"] for v in out.values()]
    print(f"  warm reaches the cold final after {reached} trials of {mark}; target: at most half")
    # Over seeds, as the schedulers are compared: the mean warm estimate against the mean cold final.
    cold_final = statistics.fmean(v["target_us"] for v in out.values()) / 1e3
    steps = sorted({t for v in out.values() for t, _ in v["warm"]})
    at = next((t for t in steps if _mean_warm_at(out, t) <= cold_final), None)
    print(f"  mean over seeds: cold final {cold_final:.3f} ms; the mean warm estimate reaches it after {at} trials "
          f"({_share(at, mark)}); mean warm at "
          + ", ".join(f"{m}: {_mean_warm_at(out, m):.3f}" for m in (mark // 4, mark // 2, mark)))
    return out


def warm_run(name, args, work, tasks, seed: int, trials: int) -> Path:
    """A gradient run of `trials` from a copy of --warm-from (kept and reused with --reuse)."""
    path = work / f"{name}-seed{seed}-gradient-warm-{Path(args.warm_from).stem}-{trials}.db"
    if not (args.reuse and path.exists()):
        copy_database(Path(args.warm_from), path)
        tune_run(tasks, path, "gradient", trials, seed=seed)
    return path


def time_warm(name, args, work, tasks, model, x, mark, cuts) -> dict:
    """End to end, per seed: the cold gradient run of `mark` trials against warm runs of its own of half as many
    and of as many trials (each from a copy of --warm-from), and untuned; the issue's test of a warm start."""
    half = mark // 2
    databases = {("untuned", 0, 0): cut(cuts[("gradient", 0, mark)], work / f"{name}-warm-untuned.db", set())}
    for seed in range(args.seeds):
        databases.update({("cold", seed, mark): cuts[("gradient", seed, mark)],
                          ("warm", seed, half): warm_run(name, args, work, tasks, seed, half),
                          ("warm", seed, mark): cuts[("gradient-warm", seed, mark)]})
    ms = {key: statistics.median(v) * 1e3 for key, v in time_databases(model, x, databases, args).items()}
    columns = [("cold", mark), ("warm", half), ("warm", mark)]
    print(f"{name}: end to end (ms, median of {args.rounds} alternated rounds), untuned {ms[('untuned', 0, 0)]:.3f}; "
          + ", ".join(f"{label} {trials}" for label, trials in columns))
    for seed in range(args.seeds):
        print(f"  seed {seed}: " + " ".join(f"{ms[(label, seed, trials)]:8.3f}" for label, trials in columns))
    means = [statistics.fmean(ms[(label, seed, trials)] for seed in range(args.seeds)) for label, trials in columns]
    print("  mean  : " + " ".join(f"{v:8.3f}" for v in means)
          + f"; warm after {half} trials is {means[0] / means[1]:.3f}x the cold run of {mark} (target: >= 1, "
            f"i.e. the cold final latency in at most half the trials)")
    return {f"{k[0]}/{k[1]}@{k[2]}": v for k, v in ms.items()}


def _mean_warm_at(out, trials) -> float:
    return statistics.fmean(estimate_at(v["warm"], trials) or math.inf for v in out.values())


def run_curve(db_path: Path) -> list:
    """The latest model run's estimate after each round: [(total trials, estimated us)]."""
    with TuningDB(db_path) as db:
        return [(t, est) for t, est, *_ in model_runs.all_runs(db)[-1]["curve"] if est is not None]


def estimate_at(curve, trials: int) -> float | None:
    """The estimate in ms once `trials` were spent (the last round that ended at or before them)."""
    before = [est for t, est in curve if t <= trials]
    return before[-1] / 1e3 if before else None


def devices_of(db_path: Path) -> list[str]:
    """Read-only: TuningDB would migrate an older committed database in place."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return sorted(d for (d,) in conn.execute("select distinct device from measurements"))
    finally:
        conn.close()


def _share(part, whole) -> str:
    return "-" if part is None else f"{part / whole:.0%}"


def time_seed_cuts(name, args, work, model, x, marks, budget, cuts) -> dict:
    """End to end, each seed's database cut back to each mark (and the equal split's at all of B), timed in
    alternating rounds; printed as each scheduler's mean over seeds of the median of rounds, and per seed."""
    cuts = {("untuned", 0, 0): cut(cuts[("equal", 0, budget)], work / f"{name}-seeds-untuned.db", set()), **cuts}
    times = time_databases(model, x, cuts, args)
    ms = {key: statistics.median(v) * 1e3 for key, v in times.items()}
    full = statistics.fmean(ms[("equal", seed, budget)] for seed in range(args.seeds))
    print(f"{name}: end-to-end ms, mean over {args.seeds} seeds of the median of {args.rounds} rounds; untuned "
          f"{ms[('untuned', 0, 0)]:.3f}; every task at {args.per_task} trials {full:.3f}")
    for scheduler in LABELS:
        per_seed = [[ms[(scheduler, seed, mark)] for mark in marks] for seed in range(args.seeds)]
        mean = [statistics.fmean(row[i] for row in per_seed) for i in range(len(marks))]
        print(f"  {scheduler:12s} after {marks}: " + " ".join(f"{v:8.3f}" for v in mean) + "   per seed: " +
              "; ".join(" ".join(f"{v:.3f}" for v in row) for row in per_seed))
    paired = paired_ratios(times, marks, args.seeds)
    print("  paired, round by round (a round times every database once, so a slow spell of the host between rounds "
          "cancels): the other's time over gradient's, median over seeds x rounds [share where gradient is faster]")
    for other, per_mark in paired.items():
        print(f"    gradient vs {other:12s} after {marks}: " +
              "  ".join(f"{p['median']:.3f}x [{p['gradient_faster']:.0%}]" for p in per_mark))
    return {"ms": {f"{k[0]}/{k[1]}@{k[2]}": v for k, v in ms.items()}, "paired": paired}


def paired_ratios(times: dict, marks, seeds: int) -> dict:
    """Per mark, round robin's and the equal split's time over gradient's of the same seed and round."""
    out = {}
    for other in ("round-robin", "equal"):
        if not all((other, 0, m) in times and ("gradient", 0, m) in times for m in marks):
            continue
        out[other] = []
        for mark in marks:
            ratios = [o / g for seed in range(seeds)
                      for o, g in zip(times[(other, seed, mark)], times[("gradient", seed, mark)])]
            out[other].append({"median": statistics.median(ratios),
                               "gradient_faster": sum(r > 1 for r in ratios) / len(ratios)})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="gpt,resnet", help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--per-task", type=int, default=64, help="trials per task of the full run")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.25, help="seconds of calls per timing sample")
    p.add_argument("--warm-from", default=None, help="a database recorded on another device")
    p.add_argument("--keep", default=None, help="keep the databases here (default: a temporary directory)")
    p.add_argument("--reuse", action="store_true", help="take the runs' databases already in --keep; time only")
    p.add_argument("--seeds", type=int, default=0,
                   help="instead: each scheduler from N search seeds, compared on the estimate (and end to end "
                        "with --seed-timing)")
    p.add_argument("--seed-timing", action="store_true", help="with --seeds: also time each seed's cuts end to end")
    p.add_argument("--warm-timing", action="store_true",
                   help="with --seeds --warm-from: also warm runs of half the trials, and the runs timed end to end")
    p.add_argument("--schedulers", default=",".join(LABELS),
                   help="with --seeds: these only (--warm-from needs gradient, --seed-timing all three)")
    p.add_argument("--json", default=None, help="also write every number here")
    args = p.parse_args()
    args.schedulers = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    if unknown := set(args.schedulers) - set(LABELS):
        p.error(f"--schedulers: unknown {sorted(unknown)}; choose from {', '.join(LABELS)}")
    if args.warm_from and args.seeds and "gradient" not in args.schedulers:
        p.error("--warm-from compares with the cold gradient runs: --schedulers must include gradient")
    if args.seed_timing and set(args.schedulers) != set(LABELS):
        p.error("--seed-timing compares all three schedulers: leave --schedulers out")
    work = Path(args.keep or tempfile.mkdtemp(prefix="autotile-tune-model-dbs-"))
    work.mkdir(parents=True, exist_ok=True)
    print(e2e_cpu.cpu_line())
    print(f"TVM threads {os.environ.get('TVM_NUM_THREADS')}, GOMP_SPINCOUNT {os.environ.get('GOMP_SPINCOUNT')}, "
          f"torch {torch.__version__}; databases in {work}")
    study = seed_study if args.seeds else run_case
    results = [study(name.strip(), args, work) for name in args.cases.split(",") if name.strip()]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
