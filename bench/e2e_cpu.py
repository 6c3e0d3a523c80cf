"""End-to-end CPU benchmark of the torch.compile backend: eager, inductor and autotile on whole blocks.

    .venv/bin/python bench/e2e_cpu.py [--cases gpt128,gpt512,resnet | --cases gpt-sizes]
                                      [--dtype float32|bfloat16] [--trials 32] [--budget 600] [--rounds 5]
                                      [--json bench/results/e2e_cpu_<mcpu>.json] [--unfused]

Cases: gpt-d<d_model>-s<seq> for d_model 256, 512, 768, 1024 (heads of 64) at seq 128 and 512 ("gpt-sizes": all
eight; gpt128 and gpt512 are d_model 768), and two ResNet-18 stages: "resnet" (layer1) and "resnet-down" (layer2,
whose first block downsamples with a strided 1x1 shortcut). Per case, in one process (inference, batch 1):
compile time cold (empty inductor cache, empty autotile database and kernel cache, autotile tuning with
`--trials` per workload within `--budget` seconds) and warm (median of 3 compiles after torch._dynamo.reset(),
caches kept, autotile tuning="cached"), the number of ops autotile replaced and the templates that won, then
latency of eager, inductor and warm autotile timed in alternating rounds. Ratios: inductor / autotile latency
(>1: autotile faster) and autotile / inductor warm compile time. The CPU's name, mcpu and flags head the output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # run as the benchmark; an import (of its models) changes no cache path
    # Empty caches before torch, TVM or autotile start: "cold" means cold.
    _scratch = tempfile.mkdtemp(prefix="autotile-bench-e2e-")
    os.environ["AUTOTILE_DB"] = str(Path(_scratch) / "bench.db")
    os.environ["AUTOTILE_CACHE_DIR"] = str(Path(_scratch) / "kernels")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(_scratch) / "inductor")
# libgomp's threads spin ~300k iterations after each parallel region (read once, when torch loads), stealing
# the cores TVM's pool needs for the autotile kernels in between. Every contender runs with this setting: 10k
# keeps eager and inductor at their fastest (0 made inductor's ResNet stage 30% slower and autotile's GPT faster).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import torch  # noqa: E402

import autotile  # noqa: E402
from autotile.session import prepare_environment  # noqa: E402

prepare_environment()  # TVM_NUM_THREADS: the physical cores unless set, before anything imports TVM
from autotile.dynamo import compile_model, stats  # noqa: E402
from autotile.examples import GPTBlock, resnet_stage  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402


def gpt(d_model: int, seq: int):
    return lambda: (GPTBlock(d_model, d_model // 64), torch.randn(1, seq, d_model))


CASES = {
    "gpt128": gpt(768, 128),
    "gpt512": gpt(768, 512),
    **{f"gpt-d{d}-s{s}": gpt(d, s) for s in (128, 512) for d in (256, 512, 768, 1024)},
    "resnet": lambda: (resnet_stage(64, 2), torch.randn(1, 64, 56, 56)),
    "resnet-down": lambda: (resnet_stage(128, 2, in_channels=64, stride=2), torch.randn(1, 64, 56, 56)),
}
GROUPS = {"gpt-sizes": [f"gpt-d{d}-s{s}" for s in (128, 512) for d in (256, 512, 768, 1024)]}


def cpu_line() -> str:
    """The CPU as /proc/cpuinfo names it, its LLVM mcpu and the flags that decide which templates apply."""
    from autotile.db.device import current_device

    fp = current_device("tvm").fingerprint
    flags = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                         "amx_int8") if f in fp.get("flags", [])]
    return (f"CPU: {fp.get('model_name', '?')} (mcpu {fp['mcpu']}, family {fp.get('family')} model "
            f"{fp.get('model')}, {fp.get('physical_cores')} cores), flags {' '.join(flags) or '-'}")


def winning_templates(workloads) -> dict:
    """The template of each tuned workload's fastest verified record in the benchmark's database."""
    from autotile.db.store import TuningDB

    with TuningDB(os.environ["AUTOTILE_DB"]) as db:
        won = {}
        for key in workloads:
            records = db.measurements(workload=key, status="ok")
            if records:
                won[key] = min(records, key=lambda r: r["latency_us"])["template"]
        return won


def warm_compile_seconds(make, x, repeats: int = 3) -> tuple[object, float]:
    """compile_seconds' median over `repeats` warm compiles: one sample of a ~0.1 s compile is noise-bound."""
    runs = [compile_seconds(make, x) for _ in range(repeats)]
    return runs[-1][0], statistics.median(seconds for _, seconds in runs)


def compile_seconds(make, x) -> tuple[object, float]:
    """(compiled model, seconds of its first call minus one steady call): the compile time."""
    torch._dynamo.reset()
    compiled = make()
    start = time.perf_counter()
    compiled(x)
    first = time.perf_counter() - start
    start = time.perf_counter()
    compiled(x)
    return compiled, max(first - (time.perf_counter() - start), 0.0)


def autotile_ops_per_call(fn, x) -> dict:
    """autotile ops one call runs, by name, from the profiler: a graph loaded from Inductor's cache runs them
    without the pass running again, so the pass's own counters would read zero."""
    with torch.profiler.profile() as prof:
        fn(x)
    names = [e.name for e in prof.events() if e.name.startswith("autotile::")]
    return {n.split("::")[1]: names.count(n) for n in sorted(set(names))}


def run_case(name: str, args) -> dict:
    torch.manual_seed(0)
    model, x = CASES[name]()
    model.eval()
    if args.dtype != "float32":
        model, x = model.to(getattr(torch, args.dtype)), x.to(getattr(torch, args.dtype))
    with torch.no_grad():
        ref = model(x)
        inductor, inductor_cold = compile_seconds(lambda: torch.compile(model), x)
        inductor, inductor_warm = warm_compile_seconds(lambda: torch.compile(model), x)
        stats.reset()
        tune = dict(tuning="tune", trials_per_workload=args.trials, time_budget_s=args.budget, progress=False)
        _, autotile_cold = compile_seconds(lambda: compile_model(model, **tune), x)
        tuned = list(stats.tuned)
        # The first compile after tuning misses Inductor's FX graph cache (the database changed); warm is the next.
        _, autotile_after_tuning = compile_seconds(lambda: compile_model(model, tuning="cached"), x)
        stats.reset()
        ours, autotile_warm = warm_compile_seconds(lambda: compile_model(model, tuning="cached"), x)
        replaced, sources = autotile_ops_per_call(ours, x), dict(stats.workloads)
        error = float((ours(x) - ref).abs().max())
        contenders = {
            "eager": lambda: peers.seconds_per_call(lambda: model(x), args.min_time),
            "inductor": lambda: peers.seconds_per_call(lambda: inductor(x), args.min_time),
            "autotile": lambda: peers.seconds_per_call(lambda: ours(x), args.min_time),
        }
        if args.unfused:  # the same backend with each layer norm a kernel of its own, tuned alike
            compile_seconds(lambda: compile_model(model, fuse_prologues=False, **tune), x)
            unfused, _ = warm_compile_seconds(lambda: compile_model(model, tuning="cached", fuse_prologues=False), x)
            contenders["autotile-unfused"] = lambda: peers.seconds_per_call(lambda: unfused(x), args.min_time)
        times = peers.alternating_rounds(contenders, args.rounds)
    ms = {k: [t * 1e3 for t in v] for k, v in times.items()}
    result = {
        "case": name, "input": list(x.shape), "latency_ms": {k: statistics.median(v) for k, v in ms.items()},
        "latency_ms_rounds": ms, "vs_inductor": peers.ratio_stats(ms["autotile"], ms["inductor"], False),
        "vs_eager": peers.ratio_stats(ms["autotile"], ms["eager"], False),
        "compile_s": {"inductor_cold": inductor_cold, "inductor_warm": inductor_warm,
                      "autotile_cold": autotile_cold, "autotile_after_tuning": autotile_after_tuning,
                      "autotile_warm": autotile_warm},
        "warm_compile_vs_inductor": autotile_warm / max(inductor_warm, 1e-9),
        "replaced": replaced, "kernels": sources, "tuned": tuned, "templates": winning_templates(tuned),
        "max_abs_error": error, "dtype": args.dtype,
    }
    lat, comp = result["latency_ms"], result["compile_s"]
    print(f"{name:8s} latency ms: eager {lat['eager']:.3f}  inductor {lat['inductor']:.3f}  "
          f"autotile {lat['autotile']:.3f}   autotile vs inductor {peers.format_ratio(result['vs_inductor'])}  "
          f"vs eager {peers.format_ratio(result['vs_eager'])}")
    print(f"{'':8s} compile s: inductor cold {comp['inductor_cold']:.1f} warm {comp['inductor_warm']:.2f}  "
          f"autotile cold {comp['autotile_cold']:.1f} warm {comp['autotile_warm']:.2f} "
          f"({result['warm_compile_vs_inductor']:.2f}x inductor's warm)   replaced {replaced}   "
          f"max abs error {error:.2e}")
    print(f"{'':8s} templates won: {', '.join(sorted(set(result['templates'].values()))) or '-'}")
    if "autotile-unfused" in ms:
        result["fused_vs_unfused"] = peers.ratio_stats(ms["autotile"], ms["autotile-unfused"], False)
        print(f"{'':8s} layer norms fused into the linears: {lat['autotile']:.3f} ms vs "
              f"{lat['autotile-unfused']:.3f} ms as kernels of their own, "
              f"{peers.format_ratio(result['fused_vs_unfused'])}")
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="gpt128,gpt512,resnet",
                   help=f"comma-separated, from {', '.join([*CASES, *GROUPS])}")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the model's and input's")
    p.add_argument("--trials", type=int, default=32, help="tuning trials per workload in the cold compile")
    p.add_argument("--budget", type=float, default=600.0, help="tuning seconds in all, per case")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.25, help="seconds of calls per timing sample")
    p.add_argument("--json", default=None, help="also write every number here")
    p.add_argument("--unfused", action="store_true", help="also time autotile with fuse_prologues=False (each layer "
                   "norm a kernel of its own): what fusing them into the linears gains")
    args = p.parse_args()
    names = [n for c in args.cases.split(",") if c.strip() for n in GROUPS.get(c.strip(), [c.strip()])]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; expected: {', '.join(CASES)}")
    from autotile.db.device import current_device

    device = current_device("tvm")
    print(cpu_line())
    print(f"dtype {args.dtype}, device {device.key}, TVM threads {os.environ.get('TVM_NUM_THREADS')}, GOMP_SPINCOUNT "
          f"{os.environ.get('GOMP_SPINCOUNT')}, torch threads "
          f"{torch.get_num_threads()}, autotile {autotile.__version__}, torch {torch.__version__}")
    results = [run_case(name, args) for name in names]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"device": device.key, "fingerprint": device.fingerprint,
                                               "args": vars(args), "cases": results}, indent=2))


if __name__ == "__main__":
    main()
