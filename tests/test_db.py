"""The tuning database on real SQLite files: round trips, lookups, and concurrent writers."""

import json
import multiprocessing as mp
import sqlite3

import pytest

from autotile.db.device import Device
from autotile.db.store import SCHEMA_VERSION, TuningDB, default_path
from autotile.errors import AutotileError
from autotile.ir import GemmWorkload
from autotile.ops.gemm.blis import GemmSpace
from autotile.ops.gemm.lowp import LowpGemmSpace
from autotile.search.tuner import backend_versions, current_best

DEV, W, BACKEND, TEMPLATE = "cpu-test-c2t2", "gemm_b1_8x8x8_float32_nn_none", "tvm", "gemm.blis"


def record(db, config_key, latency=None, status="ok", versions=None, template=TEMPLATE, **extra):
    stats = {"median": latency, "mean": latency, "min": latency, "max": latency, "std": 0.0, "runs": 5}
    return db.record_measurement(device=DEV, workload=W, backend=BACKEND, template=template, config_key=config_key,
                                 config={"key": config_key}, status=status, latency=stats if latency else None,
                                 gflops=1024 / latency / 1e3 if latency else None, threads=2,
                                 versions=versions or {"tvm": "0.27"}, **extra)


def test_round_trip(tmp_path):
    with TuningDB(tmp_path / "a.db") as db:
        db.ensure_device(DEV, {"kind": "cpu", "mcpu": "znver4"})
        db.ensure_device(DEV, {"kind": "cpu", "mcpu": "changed"})  # first fingerprint stays
        db.ensure_workload(W, "gemm", {"op": "gemm", "m": 8})
        run = db.start_run(DEV, W, BACKEND, "evolution", 3)
        fast = record(db, "c1", 5.0, run_id=run)
        record(db, "c2", 9.0, run_id=run)
        record(db, "c3", status="failed", failure="compile", error="build: boom", run_id=run)
        db.finish_run(run, trials=3, seconds=1.5, best_measurement=fast)
    with TuningDB(tmp_path / "a.db") as db:  # reopened: everything persisted
        assert db.devices()[0]["fingerprint"] == {"kind": "cpu", "mcpu": "znver4"}
        assert db.workloads() == {W: {"op": "gemm", "m": 8}}
        rows = db.measurements(device=DEV, workload=W)
        assert [r["config_key"] for r in rows] == ["c1", "c2", "c3"]
        assert rows[0]["latency"]["runs"] == 5 and rows[0]["versions"] == {"tvm": "0.27"}
        assert rows[2]["status"] == "failed" and rows[2]["error"] == "build: boom" and rows[2]["latency_us"] is None
        assert rows[2]["failure"] == "compile" and rows[0]["failure"] is None
        assert min(db.measurements(status="ok"), key=lambda r: r["latency_us"])["config_key"] == "c1"
        assert db.measured_config_keys(DEV, W, BACKEND) == {"c1", "c2", "c3"}
        run_row = db.last_run(DEV, W, BACKEND)
        assert run_row["trials"] == 3 and run_row["seconds"] == 1.5 and run_row["best_measurement"] == fast
        (listed,) = db.list_workloads()
        assert listed["measurements"] == 3 and listed["failures"] == 1 and listed["best_latency_us"] == 5.0


def test_the_best_is_verified_made_with_this_toolchain_and_remeasured(tmp_path):
    """current_best, the record every consumer runs: the fastest ok one of this device, workload, backend and
    toolchain and template; failures, other toolchains' records (seeds only), other templates' and other
    backends' never win."""
    device, workload, ours = Device(DEV, {"kind": "cpu"}), GemmWorkload(8, 8, 8), backend_versions(BACKEND)
    assert workload.key == W
    with TuningDB(tmp_path / "b.db") as db:
        assert current_best(db, device, workload, BACKEND, TEMPLATE) is None
        record(db, "only-failed", status="failed", failure="wrong_result", error="wrong result", versions=ours)
        record(db, "old-toolchain", 1.0, versions={**ours, "tvm": "0.1"})
        record(db, "other-template", 0.5, versions=ours, template="gemm.lowp")
        assert current_best(db, device, workload, BACKEND, TEMPLATE) is None
        record(db, "c1", 7.0, versions=ours)
        record(db, "c2", 8.0, versions=ours)
        for device_key, backend in (("cpu-other-c4t4", BACKEND), (DEV, "triton")):  # faster, elsewhere
            db.record_measurement(device=device_key, workload=W, backend=backend, template=TEMPLATE, config_key="c3",
                                  config={}, status="ok", latency={"median": 2.0}, versions=ours)
        assert current_best(db, device, workload, BACKEND, TEMPLATE)["config_key"] == "c1"
        # a record's latency is its fastest repeat when it has one (autotile.db.store.kernel_latency)
        db.record_measurement(device=DEV, workload=W, backend=BACKEND, template=TEMPLATE, config_key="c4", config={},
                              status="ok", latency={"median": 6.0, "min": 5.0}, versions=ours)
        assert current_best(db, device, workload, BACKEND, TEMPLATE)["latency_us"] == 5.0
        db.db.execute("delete from measurements where config_key = 'c4'")
        record(db, "c1", 9.5, versions=ours)  # the same config re-measured: one record, the new figure
        assert len(db.measurements(device=DEV, backend=BACKEND)) == 5
        assert current_best(db, device, workload, BACKEND, TEMPLATE)["config_key"] == "c2"
        with pytest.raises(ValueError, match="status"):
            record(db, "c9", 1.0, status="great")
        with pytest.raises(ValueError, match="failure kind"):
            record(db, "c9", status="failed", error="no kind")
        with pytest.raises(ValueError, match="'exploded' is not a valid Failure"):
            record(db, "c9", status="failed", failure="exploded", error="?")


def test_remeasurement_keeps_id_and_runs_point_at_it(tmp_path):
    with TuningDB(tmp_path / "u.db") as db:
        unfinished = db.start_run(DEV, W, BACKEND, "random", 0)
        assert db.last_run(DEV, W, BACKEND) is None  # started, never finished
        first = record(db, "c1", 7.0)
        db.finish_run(unfinished, trials=0, seconds=0.1, best_measurement=first)
        assert db.last_run(DEV, W)["id"] == unfinished  # finished with no new trials still counts
        assert record(db, "c1", 6.5) == first  # the upsert keeps the id the run refers to
        (row,) = db.measurements()
        assert row["id"] == db.last_run(DEV, W)["best_measurement"] and row["latency"]["median"] == 6.5
        with pytest.raises(ValueError, match="median"):
            record(db, "c2", None, status="ok")


def test_newer_schema_is_refused(tmp_path):
    with TuningDB(tmp_path / "v.db") as db:
        db.db["meta"].update("schema_version", {"value": "99"})
    with pytest.raises(AutotileError, match="schema version 99"):
        TuningDB(tmp_path / "v.db")


def test_resolve_workload_prefixes(tmp_path):
    with TuningDB(tmp_path / "c.db") as db:
        keys = ("gemm_b1_8x8x8_float32_nn_none", "gemm_b1_8x8x16_float32_nn_none", "gemm_b1_64x1x1_float32_nn_none")
        for key in keys:
            db.ensure_workload(key, "gemm", {})
        assert db.resolve_workload("gemm_b1_64") == "gemm_b1_64x1x1_float32_nn_none"
        assert db.resolve_workload("gemm_b1_8x8x8_float32_nn_none") == "gemm_b1_8x8x8_float32_nn_none"
        with pytest.raises(AutotileError, match="ambiguous"):
            db.resolve_workload("gemm_b1_8x8")
        with pytest.raises(AutotileError, match="no workload"):
            db.resolve_workload("conv")


def test_default_path_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTILE_DB", str(tmp_path / "env.db"))
    assert default_path() == tmp_path / "env.db"
    monkeypatch.delenv("AUTOTILE_DB")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_path() == tmp_path / "cache" / "autotile" / "autotile.db"
    with TuningDB() as db:
        assert db.path.exists()


def test_wal_mode_and_clear_error_for_unusable_path(tmp_path):
    with TuningDB(tmp_path / "w.db") as db:
        assert db.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(AutotileError, match="cannot open the tuning database"):
        TuningDB(tmp_path / "dir.db")


def _writer(path, worker, count):
    with TuningDB(path) as db:
        for i in range(count):
            db.record_measurement(device=DEV, workload=W, backend=BACKEND, config_key=f"w{worker}-{i}",
                                  config={"i": i}, status="ok", latency={"median": 1.0 + i}, gflops=1.0)


def test_concurrent_writers(tmp_path):
    path = tmp_path / "shared.db"
    TuningDB(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    seen = []
    with TuningDB(path) as reader:  # reads while the writers write (WAL): never blocked, never going back
        while any(p.is_alive() for p in procs):
            seen.append(len(reader.measurements()))
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    assert seen and seen == sorted(seen) and seen[-1] <= 200
    with TuningDB(path) as db:
        assert len(db.measurements()) == 200
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_schema_1_database_migrates_its_failures_to_kinds(tmp_path):
    """A database written before failure kinds: each failed record gets its kind from its recorded reason."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        create table meta (name text primary key, value text);
        insert into meta values ('schema_version', '1');
        create table measurements (id integer primary key, device text, workload text, backend text,
            config_key text, config text, status text, error text, latency_us float, latency text, gflops float,
            threads integer, versions text, run_id integer, timestamp text);
    """)
    errors = {"a": "build: Cannot find a block", "b": "wrong result: mismatch at (0, 1)",
              "c": "build: worker crashed (exit code -6)", "d": "run: timed out after 60 s",
              "e": "build: does not fit sm_90: shared 300000 B", "f": "run: RuntimeError: bad launch", "g": None}
    conn.execute("create table workloads (key text primary key, op text, description text)")
    conn.execute("insert into workloads values (?, 'gemm', '{}')", (W,))
    gemm = json.dumps(GemmSpace(GemmWorkload(8, 8, 8)).default().to_dict())
    lowp = json.dumps(LowpGemmSpace(GemmWorkload(8, 8, 8, dtype="bfloat16")).default().to_dict())
    configs = {"a": lowp, "g": gemm, "f": json.dumps({"gone": 1})}
    for key, error in errors.items():
        status = "ok" if error is None else "failed"
        conn.execute("insert into measurements (device, workload, backend, config_key, config, status, error, "
                     "latency_us) values (?, ?, 'tvm', ?, ?, ?, ?, ?)", (DEV, W, key, configs.get(key, gemm), status,
                                                                         error, 1.0 if error is None else None))
    conn.commit()
    conn.close()
    with TuningDB(path) as db:
        kinds = {r["config_key"]: r["failure"] for r in db.measurements()}
        assert kinds == {"a": "compile", "b": "wrong_result", "c": "crash", "d": "timeout", "e": "unsupported",
                         "f": "runtime", "g": None}
        templates = {r["config_key"]: r["template"] for r in db.measurements()}
        assert templates == {"a": "gemm.lowp", "f": "unknown", **{k: "gemm.blis" for k in "bcdeg"}}
        assert db.db["meta"].get("schema_version")["value"] == str(SCHEMA_VERSION)
        (ok,) = db.measurements(status="ok")
        assert ok["config_key"] == "g" and ok["failure"] is None
