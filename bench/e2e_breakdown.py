"""Where a tuned block's end-to-end time goes, and why it is more than the sum of its tuned kernels.

    .venv/bin/python bench/e2e_breakdown.py [--db bench/results/tune_model_gpt_znver4_c2t2.db]
                                            [--d-model 768] [--seq 128 | --case resnet] [--dtype float32|bfloat16]
                                            [--trials 0] [--calls 100] [--json FILE]

The GPT block of bench/e2e_cpu.py (or another of its cases), compiled with the backend on a copy of a tuned database
(tuning="cached"), is timed whole, then profiled: each autotile op inside the model (torch's profiler, per call; the
profiler's own cost inflates it), and Inductor's kernels (named by Inductor's kernel profiling). Each op is also
replayed alone, repeated on the very arguments the model gave it (strided views included), and its kernel timed
alone on fresh contiguous inputs; beside them, the kernel's latency in the database (the tuner's isolated
measurement, weights read from memory: what `tune-model` sums into its estimate). The forward minus the replayed ops
is what running in sequence costs: operands fresh from the previous op, weights evicted by the others, Dynamo and
the wrapper. --trials N first tunes what the database lacks (N trials a workload, into the copy; --db may name a
file that does not exist yet: an empty database).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import warnings
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as in e2e_cpu.py: every contender runs with it
if __name__ == "__main__":
    _scratch = tempfile.mkdtemp(prefix="autotile-bench-breakdown-")
    os.environ["AUTOTILE_CACHE_DIR"] = str(Path(_scratch) / "kernels")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(_scratch) / "inductor")

import torch  # noqa: E402
import torch._inductor.config as inductor_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import e2e_cpu  # noqa: E402
import peers  # noqa: E402

from autotile.db.store import TuningDB, copy_database  # noqa: E402
from autotile.dynamo import compile_model, stats  # noqa: E402
from autotile.dynamo.resolve import resolver  # noqa: E402
from autotile.ir.reference import random_inputs  # noqa: E402
from autotile.ops import workload_from_dict  # noqa: E402

DEFAULT_DB = Path(__file__).parent / "results" / "tune_model_gpt_znver4_c2t2.db"


def profile(fn, x, calls: int):
    """{event name: [(input numels, µs with its children)]} of the compiled graph's own ops over `calls` calls."""
    with torch.profiler.profile(record_shapes=True) as prof:
        for _ in range(calls):
            fn(x)
    events = defaultdict(list)
    for e in prof.events():
        if e.cpu_parent is not None and e.cpu_parent.name.startswith("## Call CompiledFxGraph"):
            numels = tuple(math.prod(s) for s in e.input_shapes if s)
            events[e.name].append((numels, e.cpu_time_total))
    return events


@contextmanager
def recording(calls: list):
    """The autotile ops the compiled model calls, recorded with their very arguments (strided views included): each
    op's CPU kernel is wrapped for the duration (a dispatch mode would make Dynamo run the model eagerly)."""
    from autotile.dynamo import ops

    lib = torch.library.Library("autotile", "IMPL")
    with warnings.catch_warnings():  # "overriding a previously registered kernel": meant, and undone below
        warnings.simplefilter("ignore")
        for name in ("gemm", "attention", "layer_norm", "conv2d"):
            fn = getattr(ops, name).fn
            lib.impl(name, lambda *args, fn=fn, name=name: calls.append((name, fn, args)) or fn(*args), "CPU")
    try:
        yield calls
    finally:
        lib._destroy()  # the ops' own kernels are theirs again


def replayed_us(calls) -> dict:
    """Each recorded op call timed alone, repeated with its own arguments: {(op name, input numels): µs}."""
    return {(f"autotile::{name}", tuple(t.numel() for t in args if isinstance(t, torch.Tensor))[:2]):
            peers.seconds_per_call(lambda fn=fn, args=args: fn(*args), 0.2) * 1e6 for name, fn, args in calls}


def op_workloads(db_path: str) -> dict:
    """The workloads the compiled model's autotile ops run, by op name and input numels."""
    with TuningDB(db_path) as db:
        described = db.workloads()
    found = {}
    for key in stats.workloads:
        w = workload_from_dict(described[key])
        numels = tuple(math.prod(s) for s in w.operand_shapes().values())[:2]
        found[key] = (w, numels)
    return found


def isolated_latency_us(db_path: str, w, repeats: int = 200) -> tuple[float | None, float]:
    """(the database's best latency, the same kernel timed here on warm random inputs), µs."""
    with TuningDB(db_path) as db:
        ok = [r["latency_us"] for r in db.measurements(workload=w.key, status="ok")]
    kernel = resolver(db_path, "cached", "tvm").load(w).kernel
    inputs = random_inputs(w, seed=0)
    return (min(ok) if ok else None), peers.seconds_per_call(lambda: kernel(*inputs), 0.2) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default=str(DEFAULT_DB), help="a tuned database (copied; the copy is used)")
    p.add_argument("--case", default=None, choices=sorted(e2e_cpu.CASES),
                   help="a model of bench/e2e_cpu.py instead of the GPT block of --d-model and --seq")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the model's and input's")
    p.add_argument("--trials", type=int, default=0, help="tune workloads the database lacks first, N trials each")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    db_path = str(Path(_scratch) / "tuned.db")
    if Path(args.db).exists():
        copy_database(args.db, db_path)
    inductor_config.cpp.enable_kernel_profile = True  # Inductor's kernels appear by name in the profile

    torch.manual_seed(0)
    model, x = (e2e_cpu.CASES[args.case] if args.case else e2e_cpu.gpt(args.d_model, args.seq))()
    model, x = model.eval().to(getattr(torch, args.dtype)), x.to(getattr(torch, args.dtype))
    print(e2e_cpu.cpu_line())
    with torch.no_grad():
        if args.trials:
            compile_model(model, tuning="tune", trials_per_workload=args.trials, db=db_path, progress=False)(x)
            torch._dynamo.reset()
        stats.reset()
        compiled = compile_model(model, tuning="cached", db=db_path)
        for _ in range(10):
            compiled(x)
        forward_us = peers.seconds_per_call(lambda: compiled(x), 0.5) * 1e6
        events = profile(compiled, x, args.calls)
        workloads = op_workloads(db_path)
        with recording([]) as calls:
            compiled(x)
        replayed = replayed_us(calls)

        rows, estimate = [], 0.0
        for key, (w, numels) in workloads.items():
            name = f"autotile::{w.op.replace('layernorm', 'layer_norm')}"
            times = [us for n, us in events.get(name, []) if n[:2] == numels]
            per_call = len(times) / args.calls
            in_model = statistics.median(times) if times else float("nan")
            db_us, warm_us = isolated_latency_us(db_path, w)
            estimate += per_call * (db_us or warm_us)
            rows.append({"workload": key, "calls": per_call, "in_model_us": in_model, "database_us": db_us,
                         "isolated_warm_us": warm_us, "replayed_us": replayed.get((name, numels))})
    autotile_us = sum(r["calls"] * r["in_model_us"] for r in rows)
    inductor_us = sum(us for name, ev in events.items() if name.startswith("cpp_fused") for _, us in ev) / args.calls
    other = {name: sum(us for _, us in ev) / args.calls for name, ev in events.items()
             if not name.startswith(("cpp_fused", "autotile::"))}

    model_name = f"case {args.case}" if args.case else f"GPT block d_model {args.d_model}, seq {args.seq}"
    print(f"{model_name}, {args.dtype}; database {args.db}"
          + (f", tuned {args.trials} trials a workload first" if args.trials else ""))
    print("µs per call: in model (profiled), the op replayed alone on the model's own arguments, the kernel alone "
          "on fresh contiguous inputs, and the database's (isolated, cold weights)")
    print(f"{'workload':58s} {'calls':>5s} {'in model':>9s} {'op replay':>9s} {'kernel':>9s} {'database':>9s}")
    for r in rows:
        db = f"{r['database_us']:9.1f}" if r["database_us"] else f"{'-':>9s}"
        print(f"{r['workload'][:58]:58s} {r['calls']:5.0f} {r['in_model_us']:9.1f} {r['replayed_us'] or 0:9.1f} "
              f"{r['isolated_warm_us']:9.1f} {db}")
    print(f"\nforward (timed whole)             {forward_us:9.1f} us")
    print(f"estimate (sum calls x database)   {estimate:9.1f} us   ({forward_us / estimate:.2f}x of it measured)")
    replay_us = sum(r["calls"] * (r["replayed_us"] or 0) for r in rows)
    kernel_us = sum(r["calls"] * r["isolated_warm_us"] for r in rows)
    print(f"kernels alone, summed             {kernel_us:9.1f} us")
    print(f"ops replayed alone, summed        {replay_us:9.1f} us")
    print(f"autotile ops inside the model     {autotile_us:9.1f} us   (profiled)")
    print(f"Inductor kernels (cpp_fused_*)    {inductor_us:9.1f} us")
    for name, us in sorted(other.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  other top-level event {name[:40]:40s} {us:9.1f} us")
    print(f"forward - ops replayed alone      {forward_us - replay_us - inductor_us:9.1f} us   (in sequence: operands "
          f"fresh from the previous op, weights evicted by the others, Dynamo and wrapper; the profiler's own cost "
          f"inflates the profiled column)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "forward_us": forward_us, "estimate_us": estimate,
                                               "autotile_us": autotile_us, "inductor_us": inductor_us,
                                               "kernel_us": kernel_us, "replay_us": replay_us,
                                               "other_us": other}, indent=1))


if __name__ == "__main__":
    main()
