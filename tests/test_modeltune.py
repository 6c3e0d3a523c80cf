"""Whole-model tuning: the scheduler's allocation on synthetic tasks, extraction against what the backend replaces,
exact resume after SIGKILLs at seeded points (real subprocesses, a real SQLite file), the report, the CLI."""

import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from measurers import Scaled
from models import BasicBlock, GPTBlock, TinyMLP

import autotile
from autotile.cli import main as cli
from autotile.db import model_runs
from autotile.db.store import TuningDB, copy_database
from autotile.dynamo import compile_model, stats
from autotile.dynamo.extraction import extract_tasks
from autotile.errors import AutotileError
from autotile.modeltune.scheduler import SCHEDULERS, TaskState, advance
from autotile.search.task import BATCH

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


# -- the scheduler on synthetic tasks ------------------------------------------------------------------------------

def synthetic_latency(start: float, floor: float, tau: float):
    """A task whose best latency falls from `start` towards `floor` with `tau` trials' time constant."""
    return lambda trials: floor + (start - floor) * math.exp(-trials / tau)


def simulate(name: str, tasks: dict, budget: int, flops: dict | None = None) -> dict[str, TaskState]:
    """Run a scheduler over tasks {key: (calls, latency curve)} until `budget` trials: {key: state}."""
    scheduler = SCHEDULERS[name](budget)
    states = {key: TaskState(key, calls, curve=[[0, curve(0)]], flops=(flops or {}).get(key, 0.0))
              for key, (calls, curve) in tasks.items()}
    while (spent := sum(s.trials for s in states.values())) < budget:
        state = scheduler.next(list(states.values()))
        if state is None:
            break
        trials = state.trials + min(BATCH, budget - spent, scheduler.round_limit(state, list(states.values())) or BATCH)
        advance(state, scheduler, trials=trials, best=tasks[state.key][1](trials), exhausted=False, cap=None)
    return states


SYNTHETIC = {
    "heavy": (12, synthetic_latency(100.0, 40.0, 40)),  # runs 12 times per forward, still improving
    "light": (1, synthetic_latency(100.0, 40.0, 40)),
    "flat": (1, synthetic_latency(50.0, 49.9, 4)),  # nothing to gain
}


def objective(states: dict) -> float:
    return sum(s.calls * s.best for s in states.values())


def test_gradient_gives_the_heavy_task_more_trials_and_round_robin_does_not():
    gradient = simulate("gradient", SYNTHETIC, budget=160)
    robin = simulate("round-robin", SYNTHETIC, budget=160)
    assert gradient["heavy"].trials > 2 * gradient["light"].trials
    assert gradient["flat"].trials < robin["flat"].trials
    assert max(s.trials for s in robin.values()) - min(s.trials for s in robin.values()) <= BATCH
    assert objective(gradient) < objective(robin)  # the point of it: more end-to-end time saved
    equal = simulate("equal", SYNTHETIC, budget=160)
    assert [s.trials for s in equal.values()] == [54, 53, 53]  # 160 // 3 each, the one left to the first


def test_a_similar_task_that_reads_level_within_the_noise_offers_its_winner():
    """GPT's QKV and FC1 GEMMs read 178.5 and 179.5 flops/us after their warm-up (FC1's default read 12% fast): QKV
    is a lead for FC1 although it looks 0.6% slower. A task far behind, or of another structure, is not; a task with
    no verified latency yet takes every similar task's."""
    from autotile.modeltune.scheduler import similar_leads

    def task(key, structure, flops, best):
        return TaskState(key, 1, structure=structure, flops=flops, curve=[[0, None], [9, best]])

    fc1 = task("fc1", "gemm:float32", 603979776, 3365.0)
    qkv = task("qkv", "gemm:float32", 452984832, 2538.0)
    proj = task("proj", "gemm:float32", 150994944, 1500.0)  # 101 flops/us: far behind
    conv = task("conv", "conv2d:float32", 603979776, 1000.0)  # faster, but another structure
    fresh = task("fresh", "gemm:float32", 603979776, None)
    tasks = [fc1, qkv, proj, conv, fresh]
    assert qkv.throughput < fc1.throughput  # strictly faster, the rule before: no lead at all
    assert similar_leads(fc1, tasks) == [qkv]
    assert similar_leads(qkv, tasks) == [fc1]
    assert similar_leads(proj, tasks) == [fc1, qkv]
    assert similar_leads(fresh, tasks) == [fc1, qkv, proj]
    assert similar_leads(conv, tasks) == []


def test_gradient_retires_tasks_that_stopped_improving_and_ends_early():
    flat = simulate("gradient", {"a": SYNTHETIC["flat"], "b": SYNTHETIC["flat"]}, budget=400)
    assert all(s.retired == "converged" for s in flat.values())
    assert sum(s.trials for s in flat.values()) < 100  # the budget left is not spent on nothing


def test_a_task_far_below_its_structures_best_throughput_is_tuned_first():
    """Ansor's similar-task term: two 3x3 convs of equal flops, one at a quarter of the other's throughput, no
    history of gains on either: the slow one gets the round, however many trials it already had. A 1x1 strided conv
    is not similar to a 3x3 one (it never reaches its throughput), nor a GEMM: each of those keeps its own pace."""
    from autotile.ir import Conv2dWorkload, GemmWorkload

    wide, narrow = (Conv2dWorkload(1, c, 28, 28, 128, 3, 3, padding=1) for c in (128, 64))
    pointwise = Conv2dWorkload(1, 64, 56, 56, 128, 1, 1, stride=2)
    assert wide.structure == narrow.structure != pointwise.structure != GemmWorkload(8, 8, 8).structure
    fast = TaskState("fast", 1, trials=8, curve=[[8, 100.0]], structure=wide.structure, flops=1e6)
    slow = TaskState("slow", 1, trials=40, curve=[[40, 400.0]], structure=narrow.structure, flops=1e6)
    # the device's peak, far above both (a retired GEMM measured it): neither is near its floor
    gemm = TaskState("gemm", 1, trials=64, curve=[[64, 1000.0]], structure="gemm", flops=1e8, retired="converged")
    assert SCHEDULERS["gradient"](100).next([fast, slow, gemm]) is slow
    for other in (pointwise, GemmWorkload(8, 8, 8)):
        alone = TaskState("slow", 1, trials=40, curve=[[40, 400.0]], structure=other.structure, flops=1e6)
        assert SCHEDULERS["gradient"](100).next([fast, alone, gemm]) is fast  # not similar: ~100/8 > ~400/40


def test_a_task_near_the_devices_peak_yields_to_one_far_below_it():
    """A GPT block on Zen 3 after its warm-up: FC2 at 25 trials runs at 180 flops/us, the best of the run; attention
    at 9 trials at 112. Ansor's latency / trials guesses FC2 gains 134 us a trial and attention 50, so attention
    kept its warm-up trials to the end. Neither can fall below its flops at the peak: FC2 is 10% above that floor,
    attention 1.8x, and attention gets the round. Without flops (tasks of unknown work) the guess is Ansor's."""
    fc2 = TaskState("fc2", 1, trials=25, curve=[[25, 3349.0]], structure="gemm", flops=603979776)
    attention = TaskState("attention", 1, trials=9, curve=[[9, 449.0]], structure="attention", flops=50331648)
    assert SCHEDULERS["gradient"](320).next([fc2, attention]) is attention
    unknown = [TaskState(t.key, 1, trials=t.trials, curve=t.curve, structure=t.structure) for t in (fc2, attention)]
    assert SCHEDULERS["gradient"](320).next(unknown).key == "fc2"  # 3349/25 > 449/9
    tasks = {"near-peak": (1, synthetic_latency(1000.0, 980.0, 20)),
             "far-below": (1, synthetic_latency(400.0, 100.0, 20))}
    floored = simulate("gradient", tasks, budget=64, flops={"near-peak": 1e5, "far-below": 1e4})
    ansors = simulate("gradient", tasks, budget=64)
    assert floored["far-below"].trials > ansors["far-below"].trials
    assert objective(floored) < objective(ansors)


def test_a_task_whose_every_config_fails_does_not_eat_the_budget():
    states = simulate("gradient", {**SYNTHETIC, "broken": (50, lambda trials: None)}, budget=200)
    assert states["broken"].trials <= BATCH and states["heavy"].trials > states["light"].trials
    robin = simulate("round-robin", {"broken": (1, lambda trials: None), **SYNTHETIC}, budget=400)
    assert robin["broken"].retired == "no-valid-config" and robin["broken"].trials < 40


def test_a_task_without_a_verified_latency_goes_first_and_the_budget_is_kept():
    tasks = {**SYNTHETIC, "new": (1, synthetic_latency(10.0, 5.0, 10))}
    scheduler = SCHEDULERS["gradient"](64)
    states = [TaskState(k, c, curve=[[0, f(0)]]) for k, (c, f) in SYNTHETIC.items()]
    states.append(TaskState("new", 1))  # no record, default unknown
    assert scheduler.next(states).key == "new"
    assert sum(s.trials for s in simulate("gradient", tasks, budget=64).values()) == 64


def test_unknown_scheduler_and_bad_budget_are_clear_errors():
    from autotile.modeltune import ModelTuneOptions

    with pytest.raises(AutotileError, match="scheduler must be one of"):
        ModelTuneOptions(scheduler="fastest")
    with pytest.raises(AutotileError, match="trials must be a positive integer"):
        ModelTuneOptions(trials=0)


# -- extraction: exactly what the backend replaces -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("make_model, shape", [(GPTBlock, (2, 16, 64)), (BasicBlock, (1, 8, 8, 8))],
                         ids=["gpt-block", "resnet-block"])
def test_extracted_tasks_are_the_workloads_the_backend_replaces(make_model, shape):
    torch.manual_seed(0)
    model, x = make_model().eval(), torch.randn(shape)
    tasks = extract_tasks(model, (x,))
    torch._dynamo.reset()
    stats.reset()
    with torch.no_grad():
        torch.testing.assert_close(compile_model(model)(x), model(x), rtol=1e-4, atol=1e-4)
    assert {t.workload.key for t in tasks} == set(stats.workloads)
    assert sum(t.calls for t in tasks) == stats.total  # calls per forward: every replaced op counted once


# -- similar tasks share their winners ------------------------------------------------------------------------------

def slow_defaults(fingerprint):
    """A Scaled measurer's factor: each workload's default config reads 3x slower, so a search always has a
    winner other than the default (on a small GEMM, the default is often the fastest) and a task's default is
    slower than a similar task's winner."""
    from autotile.ops import default_template

    def factor(workload, r):
        default = default_template(workload, fingerprint, "tvm").space_for(workload, fingerprint).default()
        return 3.0 if r.config.key == default.key else 1.0

    return factor


@pytest.mark.slow
def test_a_task_measures_a_faster_similar_tasks_winner_first(tmp_path):
    """Two GEMMs of one shape, one with a ReLU: the equal split tunes the first, then the second's first round
    opens with the first's winner (offered: a faster task of its structure) and never measures it twice; the
    tuned model matches float64 torch on an input at a storage offset."""
    from autotile.modeltune import ModelTuneOptions, tune_tasks
    from autotile.ops import template
    from autotile.search.task import REMEASURE_REPEAT, REMEASURE_TOP
    from autotile.session import Session

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40)).eval()
    x = torch.randn(5, 40)
    db_path = tmp_path / "offer.db"
    tasks = extract_tasks(model, (x,), "tvm")
    with Session(str(db_path), "tvm") as session:
        session._measurer = Scaled(session.measurer, slow_defaults(session.device.fingerprint))
        result = tune_tasks(tasks, session=session, options=ModelTuneOptions(scheduler="equal", trials=34))
        records = session.db.measurements(backend="tvm")
        fingerprint = session.device.fingerprint
    assert result.trials == 34 and [t.workload.key for t in tasks] == [row["workload"] for row in result.tasks]
    first, second = (t.workload for t in tasks)
    second_default, *second_rounds = [r for r in records if r["workload"] == second.key]
    # the first task's winner when the second began is one of its best few, which the run's end re-timed side by
    # side (and may have reordered)
    first_best = [r for r in records if r["workload"] == first.key and r["status"] == "ok"
                  and r["latency"]["runs"] == REMEASURE_REPEAT]
    assert 0 < len(first_best) <= REMEASURE_TOP
    assert min(r["latency_us"] for r in first_best) < second_default["latency_us"]
    offered = set()
    for r in first_best:
        space = template(r["template"]).space_for(second, fingerprint)
        offered.add(space.canonical(space.config_type.from_dict(r["config"])).key)
    assert second_default["config_key"] not in offered
    assert second_rounds[0]["config_key"] in offered and second_rounds[0]["status"] == "ok"
    keys = [r["config_key"] for r in [second_default, *second_rounds]]
    assert len(keys) == len(set(keys)) == 17
    storage = torch.randn(5 * 40 + 1)[1:].view(5, 40)  # at a storage offset of one element
    torch._dynamo.reset()
    with torch.no_grad():
        out = compile_model(model, db=str(db_path), tuning="cached")(storage)
        expected = model.double()(storage.double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


# -- resume after SIGKILLs -----------------------------------------------------------------------------------------

CHILD = r"""
import os, signal, sys, threading
sys.path.insert(0, sys.argv[5])
import sqlite_utils.db, torch
from models import TinyMLP
from autotile.search.measure import Measurer

db, point, nth, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
calls = [0]

def hit():
    calls[0] += 1
    return calls[0] == nth

def kill_soon():  # the build or the timing is under way when the kill lands
    threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGKILL)).start()

measure = Measurer.measure
def logged_measure(self, workload, configs, *a, **k):
    with open(log, "a") as f:
        f.write("".join(f"{workload.key} {c.key}\n" for c in configs))
    return measure(self, workload, configs, *a, **k)
Measurer.measure = logged_measure

if point == "build":
    build = Measurer.build
    def killing_build(self, *a, **k):
        if hit():
            kill_soon()
        return build(self, *a, **k)
    Measurer.build = killing_build
elif point == "measure":
    run = Measurer.run
    def killing_run(self, *a, **k):
        if hit():
            kill_soon()
        return run(self, *a, **k)
    Measurer.run = killing_run
else:  # commit: killed inside the measurement's transaction, after its insert, before the commit
    insert = sqlite_utils.db.Table.insert
    def killing_insert(self, *a, **k):
        out = insert(self, *a, **k)
        if self.name == "measurements" and hit():
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    sqlite_utils.db.Table.insert = killing_insert

import autotile
torch.manual_seed(0)
autotile.tune_model(TinyMLP().eval(), (torch.randn(4, 32),), db=db, trials=int(os.environ["BUDGET"]),
                    scheduler="round-robin", resume=True)
print("finished")
"""

BUDGET = 24  # more than the killed processes get through before their seeded points (each must die there)


def recorded_keys(db_path) -> set[tuple[str, str]]:
    with TuningDB(db_path) as db:
        return {(r["workload"], r["config_key"]) for r in db.measurements()}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A round-robin run of TinyMLP killed with SIGKILL at three seeded points (mid-build, mid-measure,
    mid-commit), each time resumed by a new process, then resumed here to its end."""
    tmp = tmp_path_factory.mktemp("resume")
    db_path, rng = tmp / "resume.db", random.Random(20)
    points = [("build", rng.randint(2, 3)), ("measure", rng.randint(2, 8)), ("commit", rng.randint(2, 8))]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BUDGET": str(BUDGET), "GOMP_SPINCOUNT": "0"}
    repeats = []  # configs a process measured that were recorded before it started
    for i, (point, nth) in enumerate(points):
        before, log = recorded_keys(db_path) if db_path.exists() else set(), tmp / f"measured{i}.txt"
        proc = subprocess.run([sys.executable, "-c", CHILD, str(db_path), point, str(nth), str(log), str(TESTS)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, f"not killed at {point} #{nth}:\n{proc.stderr[-2000:]}"
        measured = {tuple(line.split()) for line in log.read_text().splitlines()}
        repeats += sorted(measured & before)
    before = recorded_keys(db_path)
    torch.manual_seed(0)
    result = autotile.tune_model(TinyMLP().eval(), (torch.randn(4, 32),), db=db_path, trials=BUDGET,
                                 scheduler="round-robin", resume=True)
    return db_path, points, repeats, before, result


@pytest.mark.slow
def test_resume_after_sigkills_repeats_nothing_and_keeps_the_budget(resumed):
    db_path, points, repeats, before, result = resumed
    assert repeats == []  # no killed-and-resumed process measured a recorded config again
    assert not result.cached and result.trials == BUDGET
    with TuningDB(db_path) as db:
        run = model_runs.all_runs(db)
        assert len(run) == 1 and run[0]["status"] == "done" and run[0]["trials"] == BUDGET  # one run, resumed
        tasks = model_runs.tasks(db, run[0]["id"])
        counted = sum(sum(db.run_trials(t["run_id"]).values()) for t in tasks)
        records = db.measurements()
    assert counted == BUDGET == sum(t["trials"] for t in tasks)  # the records the runs made: exactly the budget
    assert len({(r["workload"], r["config_key"]) for r in records}) == len(records)
    assert before <= {(r["workload"], r["config_key"]) for r in records}  # nothing recorded was lost
    conn = sqlite3.connect(db_path)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    conn.close()


@pytest.mark.slow
def test_a_finished_model_run_is_answered_and_an_unfinished_one_needs_resume(resumed, tmp_path):
    db_path = copy_database(resumed[0], tmp_path / "copy.db")  # this test changes the run; the others read it
    torch.manual_seed(0)
    again = autotile.tune_model(TinyMLP().eval(), (torch.randn(4, 32),), db=db_path, trials=BUDGET)
    assert again.cached and again.trials == BUDGET and again.run == resumed[4].run
    # A run left unfinished is not silently restarted.
    with TuningDB(db_path) as db:
        model_runs.save(db, again.run, tasks=[], trials=again.trials, curve=[], status="running")
    with pytest.raises(AutotileError, match="pass --resume"):
        autotile.tune_model(TinyMLP().eval(), (torch.randn(4, 32),), db=db_path, trials=BUDGET)


@pytest.mark.slow
def test_report_files_hold_the_database_curves(resumed, tmp_path):
    db_path = resumed[0]
    out = tmp_path / "report"
    proc = CliRunner().invoke(cli, ["report", "--db", str(db_path), "--out", str(out)])
    assert proc.exit_code == 0, proc.output
    assert {"report.html", "curves.json", "tasks.png", "overall.png"} <= {p.name for p in out.iterdir()}
    data = json.loads((out / "curves.json").read_text())
    with TuningDB(db_path) as db:
        run = model_runs.all_runs(db)[-1]
        tasks = model_runs.tasks(db, run["id"])
    assert data["overall"] == run["curve"] and run["curve"][-1][0] == BUDGET
    assert [t["curve"] for t in data["tasks"]] == [t["curve"] for t in tasks]
    assert [t["workload"] for t in data["tasks"]] == [t["workload"] for t in tasks]
    html = (out / "report.html").read_text()
    assert all(t["workload"] in html for t in tasks) and "speedup over default" in html
    shown = CliRunner().invoke(cli, ["db", "show", "--models", "--db", str(db_path), "--json"])
    assert json.loads(shown.output)[0]["trials"] == BUDGET


# -- a single workload killed mid-run --------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_killed_tune_command_is_continued_not_served(tmp_path):
    db_path, trials = tmp_path / "single.db", 16
    args = [sys.executable, "-m", "autotile.cli", "tune", "gemm", "--shape", "33x40x20", "--backend", "tvm",
            "--trials", str(trials), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOTILE_DB": str(db_path)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if db_path.exists() and len(recorded_keys(db_path)) >= BATCH:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(recorded_keys(db_path))
    assert BATCH <= killed_at < trials
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    result = json.loads(again.stdout)
    assert not result["cached"] and result["trials"] == trials  # continued to its trials, not served from 8
    with TuningDB(db_path) as db:
        records = db.measurements()
        runs = list(db.db["runs"].rows)
    assert len(records) == trials == len({r["config_key"] for r in records})
    assert len(runs) == 1 and runs[0]["trials"] == trials  # the same run, finished
    cached = json.loads(CliRunner().invoke(cli, args[3:], env={"AUTOTILE_DB": str(db_path)}).stdout)
    assert cached["cached"] and cached["trials"] == trials


# -- the CLI ---------------------------------------------------------------------------------------------------------

MODEL_FILE = """
import torch
from torch import nn

def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 24))
"""


@pytest.mark.slow
def test_tune_model_command_on_a_factory_file(tmp_path):
    (tmp_path / "zoo.py").write_text(MODEL_FILE)
    db = tmp_path / "cli.db"
    args = ["tune-model", f"{tmp_path / 'zoo.py'}:mlp", "--input-shape", "3x24", "--trials", "6", "--db", str(db),
            "--json"]
    proc = CliRunner().invoke(cli, args)
    assert proc.exit_code == 0, proc.output
    result = json.loads(proc.output.strip().splitlines()[-1])
    assert result["trials"] == 6 and len(result["tasks"]) == 2
    assert {t["workload"] for t in result["tasks"]} == {"gemm_b1_3x40x24_float32_nt_bias+relu_constB",
                                                        "gemm_b1_3x24x40_float32_nt_bias_constB"}
    # The tuned database serves the compiled model: its kernels are exact records, and it matches torch.
    model = eval_model(tmp_path / "zoo.py")
    x = torch.randn(3, 24)
    torch._dynamo.reset()
    stats.reset()
    with torch.no_grad():
        out = compile_model(model, db=str(db))(x)
    torch.testing.assert_close(out.double(), model.double()(x.double()), rtol=1e-4, atol=1e-4)
    assert set(stats.workloads.values()) == {"exact"}


def eval_model(path: Path):
    scope: dict = {}
    exec(path.read_text(), scope)
    return scope["mlp"]().eval()


@pytest.mark.parametrize("spec, message", [("nomodule", "must be MODULE:FACTORY"),
                                           ("missing_file.py:f", "does not exist"),
                                           ("json:no_such_factory", "has no function")])
def test_tune_model_command_names_a_bad_model(spec, message):
    proc = CliRunner().invoke(cli, ["tune-model", spec, "--input-shape", "2x2"])
    assert proc.exit_code == 2 and message in proc.output
