"""Sharing at scale: export and import of a 10,000-record bundle (the issue's target: import < 2 s).

    .venv/bin/python bench/share_import.py [--records 10000] [--workloads 50] [--rounds 3]

The records are real configs of the GEMM template on this machine's device key (sampled, with made-up latencies),
so every import check runs as on a real bundle: JSON, types and ranges, device and workload keys rebuilt, each
config parsed in its template's space. The peer is the floor: the same rows written by sqlite-utils' insert_all
with no checks at all. Each figure is the median of the rounds, each round into a fresh database.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotile.db import bundle  # noqa: E402
from autotile.db.device import current_device  # noqa: E402
from autotile.db.importer import import_bundles  # noqa: E402
from autotile.db.store import SCHEMA_VERSION, TuningDB  # noqa: E402
from autotile.ir import GemmWorkload  # noqa: E402
from autotile.ops import space_for  # noqa: E402
from autotile.search.tuner import backend_versions  # noqa: E402


def source_rows(device, workloads, per_workload: int, seed: int = 0) -> list[dict]:
    rng, versions, rows = random.Random(seed), json.dumps(backend_versions("tvm"), sort_keys=True), []
    for w in workloads:
        space = space_for(w, device.fingerprint)
        found: dict = {}
        while len(found) < per_workload:
            config = space.sample(rng)
            found[config.key] = config
        for i, config in enumerate(found.values()):
            ok = i % 10 != 9  # a tenth failed, as in a real run
            us = rng.uniform(5, 500)
            stats = {"median": us, "mean": us * 1.01, "min": us * 0.97, "max": us * 1.1, "std": us * 0.02, "runs": 5}
            rows.append({"device": device.key, "workload": w.key, "backend": "tvm", "template": space.template,
                         "config_key": config.key, "config": json.dumps(config.to_dict(), sort_keys=True),
                         "status": "ok" if ok else "failed", "failure": None if ok else "compile",
                         "error": None if ok else "build: refused", "latency_us": us if ok else None,
                         "latency": json.dumps(stats, sort_keys=True) if ok else None,
                         "gflops": w.flops / us / 1e3 if ok else None, "threads": 2, "versions": versions,
                         "run_id": None, "timestamp": "2026-01-01T00:00:00+00:00", "origin": "local",
                         "trust": "local", "foreign_latency_us": None})
    return rows


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--workloads", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="autotile-share-"))
    device = current_device("tvm")
    workloads = [GemmWorkload(16 * (1 + i % 10), 64 * (1 + i // 10), 96) for i in range(args.workloads)]
    rows = source_rows(device, workloads, args.records // args.workloads)
    with TuningDB(scratch / "source.db") as db:
        db.ensure_device(device.key, device.fingerprint)
        for w in workloads:
            db.ensure_workload(w.key, w.op, w.to_dict())
        db.db["measurements"].insert_all(rows, batch_size=500)
        export_s = [timed(lambda db=db: (scratch / "b.jsonl").write_bytes(
            bundle.bundle_bytes(bundle.select(db), SCHEMA_VERSION))) for _ in range(args.rounds)]
        gzip_s = [timed(lambda db=db: (scratch / "b.jsonl.gz").write_bytes(
            bundle.compress(bundle.bundle_bytes(bundle.select(db), SCHEMA_VERSION)))) for _ in range(args.rounds)]
    size, packed = (scratch / "b.jsonl").stat().st_size, (scratch / "b.jsonl.gz").stat().st_size

    def fresh(name):
        path = scratch / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return TuningDB(path)

    results = {"import": [], "import gzip": [], "import again (all unchanged)": [], "floor: insert_all, no checks": [],
               "CLI `autotile db import` (process start included)": []}
    for _ in range(args.rounds):
        with fresh("imported") as db:
            results["import"].append(timed(lambda db=db: import_bundles(db, [scratch / "b.jsonl"])))
            again = timed(lambda db=db: import_bundles(db, [scratch / "b.jsonl"]))
            results["import again (all unchanged)"].append(again)
            assert len(db.measurements()) == len(rows)
        with fresh("gz") as db:
            results["import gzip"].append(timed(lambda db=db: import_bundles(db, [scratch / "b.jsonl.gz"])))
        with fresh("floor") as db:
            results["floor: insert_all, no checks"].append(timed(lambda db=db: db.db["measurements"].insert_all(
                rows, batch_size=500)))
        fresh("cli").close()
        command = [sys.executable, "-m", "autotile.cli", "db", "import", str(scratch / "b.jsonl"), "--db",
                   str(scratch / "cli.db")]
        results["CLI `autotile db import` (process start included)"].append(timed(
            lambda command=command: subprocess.run(command, check=True, capture_output=True,
                                                   env={"PYTHONPATH": str(ROOT)})))
    print(f"device {device.key}")
    print(f"{len(rows):,} records ({sum(r['status'] == 'ok' for r in rows):,} ok) of {len(workloads)} GEMM workloads; "
          f"bundle {size / 1e6:.2f} MB, gzip {packed / 1e6:.2f} MB; median of {args.rounds} rounds")
    print(f"  {'export (select + encode + write)':52s} {statistics.median(export_s):7.3f} s")
    print(f"  {'export gzip':52s} {statistics.median(gzip_s):7.3f} s")
    for name, times in results.items():
        print(f"  {name:52s} {statistics.median(times):7.3f} s  (min {min(times):.3f}, max {max(times):.3f})")
    floor = statistics.median(results["floor: insert_all, no checks"])
    print(f"import / floor: {statistics.median(results['import']) / floor:.1f}x; target: import < 2 s -> "
          f"{'met' if statistics.median(results['import']) < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
