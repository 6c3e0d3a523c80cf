"""A second machine serves a GPT block from the first one's bundle: tune on A, export, import on B, verify, then
compile on B with tuning on. Prints what B tuned (nothing is the goal), what B built to verify, and the two
compiled blocks' latencies side by side (B / A: 1.0 is the tuned speed).

    .venv/bin/python bench/share_gpt_block.py [--trials 8] [--d-model 128] [--seq 64]

Both "machines" are this one (the same device key), each with its own database; the kernel cache is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

_scratch = Path(tempfile.mkdtemp(prefix="autotile-share-gpt-"))
os.environ["AUTOTILE_CACHE_DIR"] = str(_scratch / "kernels")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import autotile  # noqa: E402
from autotile.db import bundle  # noqa: E402
from autotile.db.importer import import_bundles  # noqa: E402
from autotile.db.store import SCHEMA_VERSION, TuningDB  # noqa: E402
from autotile.db.verify import verify_foreign  # noqa: E402
from autotile.dynamo import compile_model, stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from autotile.examples import GPTBlock  # noqa: E402  (the benchmarks' block)


def latency_us(fn, x, rounds=200) -> float:
    for _ in range(10):
        fn(x)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--seq", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    block, x = GPTBlock(args.d_model, heads=4).eval(), torch.randn(1, args.seq, args.d_model)
    a, b = _scratch / "a.db", _scratch / "b.db"
    with torch.no_grad():
        start = time.perf_counter()
        on_a = compile_model(block, tuning="tune", trials_per_workload=args.trials, db=a, progress=False)
        on_a(x)
        tuned_a = list(stats.tuned)
        print(f"A: tuned {len(tuned_a)} workloads in {time.perf_counter() - start:.0f} s")
        with TuningDB(a) as db:
            data = bundle.compress(bundle.bundle_bytes(bundle.select(db), SCHEMA_VERSION))
        (_scratch / "block.jsonl.gz").write_bytes(data)
        with TuningDB(b) as db:
            summary = import_bundles(db, [_scratch / "block.jsonl.gz"])
        print(f"B: imported {summary.inserted} records ({len(data) / 1e3:.1f} kB gzip)")
        start = time.perf_counter()
        with autotile.Session(b, "tvm") as session:
            rows = verify_foreign(session, top_k=3)
        print(f"B: db verify --top-k 3: {sum(r.built for r in rows)} builds for {len(rows)} workloads "
              f"(at most {3 * len(rows)}), {sum(r.verified for r in rows)} verified, "
              f"{time.perf_counter() - start:.0f} s")
        torch._dynamo.reset()
        stats.reset()
        on_b = compile_model(block, tuning="tune", trials_per_workload=args.trials, db=b, progress=False)
        out = on_b(x)
        sources = sorted(set(stats.workloads.values()))
        print(f"B: compile with tuning on: tuned {len(stats.tuned)} workloads; kernel sources {sources}")
        torch.testing.assert_close(out, block(x), rtol=1e-4, atol=1e-4)
        rounds = [(latency_us(on_a, x), latency_us(on_b, x), latency_us(block, x)) for _ in range(5)]  # alternated
    ta, tb, eager = (statistics.median(r[i] for r in rounds) for i in range(3))
    ratios = sorted(b / a for a, b, _ in rounds)
    print(f"compiled block: A {ta:.1f} us, B {tb:.1f} us, B / A {statistics.median(ratios):.2f} "
          f"({ratios[0]:.2f}-{ratios[-1]:.2f} over 5 alternated rounds); eager {eager:.1f} us")
    same = 0
    with TuningDB(a) as da, TuningDB(b) as db:
        for key in sorted(stats.workloads):
            best = [min((r for r in d.measurements(workload=key, status="ok") if r["trust"] != "foreign"),
                        key=lambda r: r["latency_us"]) for d in (da, db)]
            same += best[0]["config_key"] == best[1]["config_key"]
            print(f"  {key}: A {best[0]['latency_us']:.1f} us, B {best[1]['latency_us']:.1f} us "
                  f"({'same config' if best[0]['config_key'] == best[1]['config_key'] else 'another config'})")
    print(f"{same} of {len(stats.workloads)} workloads run A's best config on B")


if __name__ == "__main__":
    main()
