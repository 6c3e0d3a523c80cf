"""CPU attention benchmark: autotile (tuned, empty database) against torch SDPA and a naive matmul-softmax-matmul.

    .venv/bin/python bench/attention_cpu.py [--trials 64] [--rounds 5] [--cases 0,1,2] [--sweep 1024,2048,4096,8192]
                                            [--dtype float32] [--json bench/results/attention_cpu_<mcpu>.json]

Speed: each case is tuned from an empty database and kernel cache, then every contender is timed in the same
process in alternating rounds; ratios are autotile / peer (median [min-max] over rounds). Every contender takes
--dtype tensors (float32 or bfloat16; bfloat16 attention computes in float32 inside, see ops/attention/workload.py).
Memory: each method runs once in a fresh subprocess that reports its peak RSS (VmHWM, reset after the imports
and inputs; see peak_rss); a baseline child that only imports the same libraries and allocates the inputs is
subtracted, so what is left is the method's own extra memory. A flash kernel's grows at most linearly with the
sequence, the naive one's quadratically (the scores).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# Fresh database and kernel cache before autotile or TVM is imported.
_scratch = tempfile.mkdtemp(prefix="autotile-bench-attention-")
os.environ["AUTOTILE_DB"] = str(Path(_scratch) / "bench.db")
os.environ["AUTOTILE_CACHE_DIR"] = str(Path(_scratch) / "kernels")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import autotile  # noqa: E402
from autotile.session import prepare_environment  # noqa: E402

prepare_environment()  # TVM_NUM_THREADS: the physical cores unless set, before anything imports TVM
from autotile.db.device import Device  # noqa: E402
from autotile.ops.attention.workload import AttentionWorkload  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402

CASES = [
    AttentionWorkload(1, 12, 512, 64),
    AttentionWorkload(1, 8, 1024, 64, causal=True),
    AttentionWorkload(1, 32, 2048, 128, kv_heads=8, causal=True),
]
SWEEP_SHAPE = dict(batch=1, heads=4, head_dim=64)  # sequence length varies; non-causal
METHODS = ("autotile", "sdpa", "naive")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", default="0,1,2", help="indices into the three named cases, or 'none'")
    p.add_argument("--sweep", default="1024,2048,4096,8192", help="sequence lengths for the memory sweep, or 'none'")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--json", default=None, help="also write every number here")
    p.add_argument("--memory-child", nargs=4, metavar=("METHOD", "SEQ", "LIBRARY", "DTYPE"), help=argparse.SUPPRESS)
    return p.parse_args()


def inputs(w: AttentionWorkload, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = list(w.operand_shapes().values())[:3]
    return [torch.randn(s, generator=g).to(getattr(torch, w.dtype)) for s in shapes]


def sdpa(w: AttentionWorkload, q, k, v):
    """torch's fused attention; causal is top-left (is_causal), GQA without copies (enable_gqa)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=w.causal, scale=w.scale,
                                          enable_gqa=w.kv_heads != w.heads)


def naive(w: AttentionWorkload, q, k, v, mask=None):
    """What a model written by hand does: the whole seq_q x seq_kv score matrix, softmax, matmul."""
    group = w.heads // w.kv_heads
    if group > 1:
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = (q @ k.transpose(-1, -2)) * w.scale
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def causal_mask(w: AttentionWorkload):
    if not w.causal:
        return None
    i, j = torch.arange(w.seq_q)[:, None], torch.arange(w.seq_kv)[None, :]
    return j > i + w.causal_offset


def measure_case(w: AttentionWorkload, args) -> dict:
    print(f"\n== {w.key}", flush=True)
    result = autotile.tune(w, trials=args.trials, seed=args.seed)
    kern = autotile.kernel(w)
    print(f"   autotile: {result.trials} trials, tuning {result.tuning_seconds:.1f} s, tuned {result.gflops:.1f} "
          f"GFLOP/s, template {result.template}, config {kern.config}", flush=True)
    q, k, v = inputs(w)
    out = torch.empty(w.output_shape, dtype=q.dtype)
    mask = causal_mask(w)
    expected = sdpa(w, q, k, v)
    errors = {"autotile": float((kern(q, k, v, out=out) - expected).abs().max()),
              "naive": float((naive(w, q, k, v, mask) - expected).abs().max())}
    print(f"   max abs difference from SDPA: autotile {errors['autotile']:.2g}, naive {errors['naive']:.2g}")
    contenders = {
        "autotile": lambda: kern(q, k, v, out=out),
        "torch SDPA": lambda: sdpa(w, q, k, v),
        "naive matmul-softmax-matmul": lambda: naive(w, q, k, v, mask),
    }
    gflops = {name: (lambda fn=fn: w.flops / peers.seconds_per_call(fn) / 1e9) for name, fn in contenders.items()}
    rounds = peers.alternating_rounds(gflops, args.rounds)
    row = {"workload": w.key, "tuning_seconds": result.tuning_seconds, "trials": result.trials,
           "template": result.template, "config": result.config, "max_abs_diff_vs_sdpa": errors, "gflops": rounds,
           "ratios": {}}
    print(f"   {'contender':30s} {'GFLOP/s':>9s}   autotile / peer (median [min-max] of {args.rounds} rounds)")
    for name, values in rounds.items():
        line = f"   {name:30s} {statistics.median(values):9.1f}"
        if name != "autotile":
            row["ratios"][name] = peers.ratio_stats(rounds["autotile"], values)
            line += "   " + peers.format_ratio(row["ratios"][name])
        print(line, flush=True)
    return row


# -- memory ------------------------------------------------------------------------------------

def sweep_workload(seq: int, dtype: str) -> AttentionWorkload:
    return AttentionWorkload(seq_q=seq, dtype=dtype, **SWEEP_SHAPE)


def memory_child(method: str, seq: int, library: str, dtype: str):
    """Runs in a fresh process: allocate the inputs, reset the peak RSS (the imports' transient peak would
    hide small allocations), run `method` once, print the peak RSS in bytes."""
    import tvm  # noqa: F401  (every child loads the same libraries, so they cancel out)

    w = sweep_workload(seq, dtype)
    q, k, v = inputs(w)
    out = torch.empty(w.output_shape, dtype=q.dtype).zero_()
    run = {"baseline": lambda: None, "sdpa": lambda: sdpa(w, q, k, v), "naive": lambda: naive(w, q, k, v)}
    if method == "autotile":
        from autotile.ops import space_for
        from autotile.search.artifacts import load

        kern = load(w, space_for(w).default(), Path(library))  # built by the parent
        run["autotile"] = lambda: kern(q, k, v, out=out)
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap from the imports would otherwise be reused unseen
    Path("/proc/self/clear_refs").write_text("5")  # Linux: resets this process's RSS high-water mark
    run[method]()
    print(json.dumps({"maxrss_bytes": peak_rss()}))


def peak_rss() -> int:
    """VmHWM, the peak RSS of this process's memory. Not ru_maxrss: across fork + exec it starts at the
    parent's RSS (the benchmark's, hundreds of MiB after an LLVM build), which would hide everything."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child_peak(method: str, seq: int, library: str, dtype: str) -> int:
    proc = subprocess.run([sys.executable, __file__, "--memory-child", method, str(seq), library, dtype],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["maxrss_bytes"]


def memory_sweep(seqs: list[int], dtype: str) -> dict:
    from autotile.codegen.tvm.build import export
    from autotile.ops import space_for
    from autotile.search.artifacts import build

    device = Device.cpu()
    mcpu, threads, mattr = device.fingerprint["mcpu"], device.fingerprint["threads"], device.fingerprint["mattr"]
    print(f"\n== extra peak memory (MiB) over a baseline child that only allocates the inputs; "
          f"batch {SWEEP_SHAPE['batch']}, {SWEEP_SHAPE['heads']} heads, head_dim {SWEEP_SHAPE['head_dim']}, "
          f"non-causal, {dtype}; autotile runs its default config")
    print(f"   {'seq':>6s} {'inputs':>8s}" + "".join(f"{m:>10s}" for m in METHODS))
    rows = []
    for seq in seqs:
        w = sweep_workload(seq, dtype)
        executable = build(w, space_for(w).default(), mcpu, threads, mattr)
        library = str(export(executable, Path(_scratch) / f"sweep-{seq}.so"))
        base = child_peak("baseline", seq, library, dtype)
        extra = {m: child_peak(m, seq, library, dtype) - base for m in METHODS}
        input_bytes = w.operand_bytes()
        rows.append({"seq": seq, "baseline_bytes": base, "input_and_output_bytes": input_bytes, "extra_bytes": extra})
        print(f"   {seq:6d} {input_bytes / 2**20:8.1f}" + "".join(f"{extra[m] / 2**20:10.2f}" for m in METHODS),
              flush=True)
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        factor = last["seq"] / first["seq"]
        print(f"   from {first['seq']} to {last['seq']} ({factor:.0f}x the sequence; linear growth is {factor:.0f}x, "
              f"quadratic {factor ** 2:.0f}x):")
        for m in METHODS:
            a, b = first["extra_bytes"][m], last["extra_bytes"][m]
            growth = f"{b / a:.1f}x" if a >= 2**20 else f"under 1 MiB at {first['seq']}"
            print(f"     {m:9s} {a / 2**20:8.2f} -> {b / 2**20:8.2f} MiB ({growth})")
    return {"shape": SWEEP_SHAPE, "rows": rows}


def main():
    args = parse_args()
    if args.memory_child:
        method, seq, library, dtype = args.memory_child
        return memory_child(method, int(seq), library, dtype)
    torch.set_num_threads(int(os.environ["TVM_NUM_THREADS"]))  # the same cores for every contender
    device = Device.cpu()
    fp = device.fingerprint
    print(f"CPU: {fp['model_name']} mcpu={fp['mcpu']}, {fp['physical_cores']} cores, kernels on {fp['threads']} "
          f"threads (TVM_NUM_THREADS), torch on {torch.get_num_threads()} threads")
    print(f"device key: {device.key}")
    from autotile.codegen.tvm import amx_permission

    print(amx_permission.describe())
    start = time.perf_counter()
    cases = [] if args.cases == "none" else [replace(CASES[int(i)], dtype=args.dtype) for i in args.cases.split(",")]
    rows = [measure_case(w, args) for w in cases]
    sweep = {} if args.sweep == "none" else memory_sweep([int(s) for s in args.sweep.split(",")], args.dtype)
    print(f"\nbenchmark wall time {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device.key, "fingerprint": fp, "rows": rows,
                                               "memory": sweep}, indent=1))


if __name__ == "__main__":
    main()
