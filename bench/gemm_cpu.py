"""CPU GEMM benchmark: autotile (64 trials, empty database) against numpy, torch, inductor and MetaSchedule.

    .venv/bin/python bench/gemm_cpu.py [--trials 64] [--rounds 5] [--json out.json] [--quick] [--bf16-only]

Every contender is timed in the same process (numpy in a subprocess with OpenBLAS's capping variables
unset), in alternating rounds; each ratio is autotile / peer, the median over rounds with the min-max
spread. Also: two extra shapes picked at random, and the search curve of evolution + cost model
against random search. Then the bfloat16 case: the named shapes in bf16 (fp32 accumulation, bf16 out) against
torch's bf16 matmul (oneDNN, on AMX where the CPU has it), with the template that won (gemm.amx on AMX tiles,
gemm.lowp on AVX-512) and whether this CPU and process can run AMX at all.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Fresh database and kernel cache, and TVM's thread count, before autotile or TVM is imported.
_scratch = tempfile.mkdtemp(prefix="autotile-bench-")
os.environ["AUTOTILE_DB"] = str(Path(_scratch) / "bench.db")
os.environ["AUTOTILE_CACHE_DIR"] = str(Path(_scratch) / "kernels")

import autotile  # noqa: E402
from autotile.session import prepare_environment  # noqa: E402

prepare_environment()  # TVM_NUM_THREADS: the physical cores unless set, before anything imports TVM
from autotile.db.device import Device  # noqa: E402
from autotile.ir import GemmWorkload  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402

NAMED_SHAPES = [(1024, 1024, 1024), (128, 3072, 768), (512, 768, 768)]
EPILOGUES = [(), ("bias", "gelu")]
CURVE_POINTS = (8, 16, 24, 32, 48, 64)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="picks the two extra shapes")
    p.add_argument("--shapes", default=None, help="comma-separated MxNxK list instead of the named shapes")
    p.add_argument("--extra", type=int, default=2, help="random extra shapes")
    p.add_argument("--skip-metaschedule", action="store_true")
    p.add_argument("--skip-curve", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test of the script")
    p.add_argument("--json", default=None, help="also write every number here")
    p.add_argument("--bf16-only", action="store_true", help="only the bfloat16 case")
    return p.parse_args()


def autotile_gflops(kern, w: GemmWorkload) -> float:
    a, b, bias = peers.gemm_inputs(w.m, w.n, w.k, w.epilogue)
    inputs = [a, b] + ([bias] if bias is not None else [])
    out = kern(*inputs)
    return w.flops / peers.seconds_per_call(lambda: kern(*inputs, out=out)) / 1e9


def measure_workload(w: GemmWorkload, args) -> dict:
    m, n, k, epi = w.m, w.n, w.k, w.epilogue
    print(f"\n== {w.key}", flush=True)
    result = autotile.tune(w, trials=args.trials, seed=args.seed)
    kern = autotile.kernel(w)
    print(f"   autotile: {result.trials} trials in {result.tuning_seconds:.1f} s, tuned "
          f"{result.gflops:.1f} GFLOP/s, config {kern.config}", flush=True)
    ms_lib, ms_seconds, ms_error = None, None, None
    if not args.skip_metaschedule:
        ms_lib, ms_seconds = peers.metaschedule(m, n, k, epi, trials=args.trials)
        _, ms_error = peers.tvm_gflops(ms_lib, m, n, k, epi, min_time=0.05)
        print(f"   MetaSchedule: {args.trials} trials in {ms_seconds:.1f} s (max abs error {ms_error:.2g})", flush=True)

    compiled = {"inductor": {}, "inductor freezing+max-autotune": {"freezing": True, "mode": "max-autotune"}}
    contenders = {
        "autotile": lambda: autotile_gflops(kern, w),
        "numpy": lambda: peers.numpy_gflops(m, n, k, epi)[0],
        "torch eager": lambda: peers.torch_gflops(m, n, k, epi)[0],
        **{name: (lambda o=o: peers.torch_gflops(m, n, k, epi, o)[0]) for name, o in compiled.items()},
    }
    if ms_lib is not None:
        contenders["MetaSchedule"] = lambda: peers.tvm_gflops(ms_lib, m, n, k, epi)[0]
    rounds = peers.alternating_rounds(contenders, args.rounds)
    row = {"workload": w.key, "autotile_tuning_seconds": result.tuning_seconds, "autotile_trials": result.trials,
           "metaschedule_tuning_seconds": ms_seconds, "config": result.config, "gflops": rounds, "ratios": {}}
    print(f"   {'contender':34s} {'GFLOP/s':>9s}   autotile / peer (median [min-max] of {args.rounds} rounds)")
    for name, values in rounds.items():
        line = f"   {name:34s} {statistics.median(values):9.1f}"
        if name != "autotile":
            row["ratios"][name] = peers.ratio_stats(rounds["autotile"], values)
            line += "   " + peers.format_ratio(row["ratios"][name])
        print(line, flush=True)
    if ms_seconds:
        print(f"   tuning time: autotile {result.tuning_seconds:.1f} s vs MetaSchedule {ms_seconds:.1f} s "
              f"({result.tuning_seconds / ms_seconds:.2f}x)")
    return row


def measure_bf16(w: GemmWorkload, args) -> dict:
    """A bf16 GEMM: autotile (the template that won) against torch's bf16 matmul and its fp32 one, same process."""
    import torch

    print(f"\n== {w.key}", flush=True)
    result = autotile.tune(w, trials=args.trials, seed=args.seed)
    kern = autotile.kernel(w)
    print(f"   autotile: {result.trials} trials in {result.tuning_seconds:.1f} s, template {result.template}, "
          f"config {kern.config}", flush=True)
    a, b, _ = peers.gemm_inputs(w.m, w.n, w.k, ())
    a16, b16 = a.bfloat16(), b.bfloat16()
    out = kern(a16, b16)
    torch.testing.assert_close(out.float(), a16.float() @ b16.float(), rtol=2e-2, atol=0.5)
    gflops = lambda fn: lambda: w.flops / peers.seconds_per_call(fn) / 1e9  # noqa: E731
    contenders = {f"autotile ({result.template})": gflops(lambda: kern(a16, b16, out=out)),
                  "torch bf16 matmul": gflops(lambda: a16 @ b16), "torch fp32 matmul": gflops(lambda: a @ b)}
    rounds = peers.alternating_rounds(contenders, args.rounds)
    ours = next(iter(rounds))
    row = {"workload": w.key, "template": result.template, "config": result.config, "gflops": rounds, "ratios": {}}
    print(f"   {'contender':34s} {'GFLOP/s':>9s}   autotile / peer (median [min-max] of {args.rounds} rounds)")
    for name, values in rounds.items():
        line = f"   {name:34s} {statistics.median(values):9.1f}"
        if name != ours:
            row["ratios"][name] = peers.ratio_stats(rounds[ours], values)
            line += "   " + peers.format_ratio(row["ratios"][name])
        print(line, flush=True)
    return row


def search_curve(w: GemmWorkload, trials: int, seeds=(0, 1)) -> dict:
    """Best-so-far GFLOP/s vs trials, evolution + cost model against random search, fresh database each."""
    curves = {}
    for strategy in ("evolution", "random"):
        for seed in seeds:
            db = Path(_scratch) / f"curve-{strategy}-{seed}.db"
            result = autotile.tune(w, trials=trials, db=db, seed=seed, strategy=strategy)
            best, curve = float("inf"), []
            for h in result.history:
                best = min(best, h["latency_us"] or float("inf"))
                curve.append(w.flops / best / 1e3 if best < float("inf") else 0.0)
            curves[f"{strategy} seed {seed}"] = curve
    print(f"\n== search curve on {w.key}: best GFLOP/s so far after N trials")
    points = [p for p in CURVE_POINTS if p <= trials]
    print("   " + f"{'':22s}" + "".join(f"{p:>8d}" for p in points))
    for name, curve in curves.items():
        print("   " + f"{name:22s}" + "".join(f"{curve[p - 1]:8.1f}" for p in points))
    for seed in seeds:
        target = curves[f"random seed {seed}"][-1]
        evo = curves[f"evolution seed {seed}"]
        reached = next((i + 1 for i, g in enumerate(evo) if g >= target), None)
        print(f"   seed {seed}: random's {trials}-trial best {target:.1f} GFLOP/s reached by evolution + cost model "
              f"after {reached if reached else 'more than ' + str(trials)} trials")
    return curves


def main():
    args = parse_args()
    if args.quick:
        args.trials, args.rounds, args.extra = 4, 1, 0
    device = Device.cpu()
    _, kernel = peers.numpy_gflops(64, 64, 64, (), min_time=0.01)
    fp = device.fingerprint
    print(f"CPU: {fp['model_name']} mcpu={fp['mcpu']} family {fp['family']} model {fp['model']}, "
          f"{fp['physical_cores']} cores, kernels on {fp['threads']} threads (TVM_NUM_THREADS)")
    print(f"device key: {device.key}")
    print(f"numpy's OpenBLAS kernel (capping variables unset): {kernel}")
    from autotile.codegen.tvm import amx_permission

    print(amx_permission.describe())
    shapes = ([tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")] if args.shapes
              else NAMED_SHAPES)
    rng = random.Random(args.seed)
    extra = [(rng.choice([64, 96, 200, 256, 384, 640, 1000]), rng.choice([256, 512, 768, 1000, 1536, 2048]),
              rng.choice([256, 512, 768, 1024, 1536])) for _ in range(args.extra)]
    print(f"extra shapes picked at random (seed {args.seed}): {', '.join('x'.join(map(str, s)) for s in extra)}")
    start = time.perf_counter()
    bf16_rows = [measure_bf16(GemmWorkload(*s, dtype="bfloat16"), args) for s in shapes]
    if args.bf16_only:
        print(f"\nbenchmark wall time {time.perf_counter() - start:.0f} s")
        if args.json:
            Path(args.json).write_text(json.dumps({"device": device.key, "fingerprint": fp,
                                                   "amx": amx_permission.describe(), "bf16_rows": bf16_rows}, indent=1))
        return
    workloads = [GemmWorkload(*s, epilogue=e) for s in shapes for e in EPILOGUES]
    workloads += [GemmWorkload(*s) for s in extra]
    rows = [measure_workload(w, args) for w in workloads]
    plain = {r["workload"]: r for r in rows}
    for r in rows:
        if r["workload"].endswith("bias+gelu"):
            base = plain.get(r["workload"].replace("bias+gelu", "none"))
            if base:
                ratio = statistics.median(r["gflops"]["autotile"]) / statistics.median(base["gflops"]["autotile"])
                print(f"fused bias+gelu vs autotile's plain GEMM, {r['workload']}: {ratio:.2f}x of its speed")
    curves = {} if args.skip_curve else search_curve(GemmWorkload(512, 768, 768), args.trials)
    print(f"\nbenchmark wall time {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device.key, "fingerprint": fp, "numpy_kernel": kernel,
                                               "rows": rows, "bf16_rows": bf16_rows, "amx": amx_permission.describe(),
                                               "search_curve": curves}, indent=1))


if __name__ == "__main__":
    main()
