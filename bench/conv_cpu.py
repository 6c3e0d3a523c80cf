"""CPU conv2d benchmark: autotile (64 trials, empty database) against torch eager (oneDNN), torch.compile and
TVM MetaSchedule, on ResNet-50 layers at batch 1, plain and with a fused bias+relu.

    .venv/bin/python bench/conv_cpu.py [--trials 64] [--metaschedule-trials 64] [--layers 0,2] [--rounds 5]
                                       [--json out.json]

Every contender is timed in the same process, in alternating rounds; each ratio is the speed of autotile
over the peer's (peer seconds / autotile seconds), the median over rounds with the min-max spread.
Two autotile rows: the tuned kernel as the runtime calls it (every layout transform inside the timed call),
and, labelled "weight packed ahead", the same config split in two so that the weight's transform runs once,
before timing (as torch.compile's freezing does for its oneDNN weight); the input and output transforms stay
in the timed call. A third, "autotile, direct templates" (a peer, --direct), is tuned with the same budget on a
space without the Winograd templates (own database): the speed of Winograd over our best direct convolution.
torch eager runs both NCHW and channels_last inputs each round and the faster one counts; torch.compile
holds the weight (and bias) as frozen Parameters, with inductor's freezing on. MetaSchedule tunes a
plain TE conv2d (padding, bias and relu as separate stages it may inline) with the same trial budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Fresh database and kernel cache, and TVM's thread count, before autotile or TVM is imported.
_scratch = tempfile.mkdtemp(prefix="autotile-bench-")
os.environ["AUTOTILE_DB"] = str(Path(_scratch) / "bench.db")
os.environ["AUTOTILE_CACHE_DIR"] = str(Path(_scratch) / "kernels")

import torch  # noqa: E402

import autotile  # noqa: E402
from autotile.session import prepare_environment  # noqa: E402

prepare_environment()  # TVM_NUM_THREADS: the physical cores unless set, before anything imports TVM
from autotile.db.device import Device  # noqa: E402
from autotile.ops.conv2d.direct_tvm import prepacked_operands  # noqa: E402
from autotile.ops.conv2d.workload import Conv2dWorkload  # noqa: E402
from autotile.search.artifacts import build, compiled  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402

# ResNet-50 layers at batch 1: (C, H, W, K, R, S, stride, padding, groups)
LAYERS = [
    (64, 56, 56, 64, 3, 3, 1, 1, 1),
    (128, 28, 28, 128, 3, 3, 1, 1, 1),
    (256, 14, 14, 256, 3, 3, 1, 1, 1),
    (256, 56, 56, 64, 1, 1, 1, 0, 1),
    (128, 56, 56, 128, 3, 3, 2, 1, 1),
    (256, 28, 28, 256, 3, 3, 1, 1, 256),  # depthwise
]
EPILOGUES = ["", "bias,relu"]
PACKED = "autotile, weight packed ahead"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--metaschedule-trials", type=int, default=None, help="default: --trials; 0 skips MetaSchedule")
    p.add_argument("--layers", default=None, help="comma-separated indices into the layer list (default: all)")
    p.add_argument("--epilogues", default="none,bias+relu", help="comma-separated: none, bias+relu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--direct", action=argparse.BooleanOptionalAction, default=True,
                   help="also tune the direct templates alone (no Winograd) as a peer, where Winograd applies")
    p.add_argument("--cpu-time", action="store_true",
                   help="time calls by the calling thread's CPU time, not the wall clock: steady on a shared machine, "
                        "where other processes take turns on the cores; one thread only (TVM_NUM_THREADS=1)")
    p.add_argument("--json", default=None, help="also write every number here")
    args = p.parse_args()
    if args.metaschedule_trials is None:
        args.metaschedule_trials = args.trials
    return args


def workload(layer, epilogue: str) -> Conv2dWorkload:
    c, h, w, k, r, s, stride, padding, groups = layer
    return Conv2dWorkload(1, c, h, w, k, r, s, stride=stride, padding=padding, groups=groups, epilogue=epilogue)


def inputs(w: Conv2dWorkload, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(w.in_shape, generator=g)
    weight = torch.randn(w.weight_shape, generator=g)
    bias = torch.randn(w.k, generator=g) if "bias" in w.epilogue else None
    return x, weight, bias


class TorchConv(torch.nn.Module):
    """What a user's model holds: weight and bias as parameters, so inductor's freezing applies."""

    def __init__(self, w: Conv2dWorkload, weight, bias):
        super().__init__()
        self.w = w
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def forward(self, x):
        w = self.w
        y = torch.nn.functional.conv2d(x, self.weight, self.bias, stride=w.stride, padding=w.padding,
                                       dilation=w.dilation, groups=w.groups)
        return torch.relu(y) if "relu" in w.epilogue else y


def torch_contenders(w: Conv2dWorkload):
    """{name: seconds-per-call function} for eager (best of NCHW and channels_last) and inductor."""
    import torch._inductor.config as inductor_config

    x, weight, bias = inputs(w)
    eager = TorchConv(w, weight, bias).eval()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    inductor_config.freezing = True
    compiled = torch.compile(TorchConv(w, weight, bias).eval())
    with torch.no_grad():
        start = time.perf_counter()
        compiled(x)
        compile_seconds = time.perf_counter() - start
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-3, atol=1e-3)
    inductor_config.freezing = False

    def timed(fn):
        def run():
            with torch.no_grad():
                return peers.seconds_per_call(fn)
        return run

    return {
        "torch eager": lambda: min(timed(lambda: eager(x))(), timed(lambda: eager(x_cl))()),
        "torch.compile (freezing)": timed(lambda: compiled(x)),
    }, compile_seconds


# --- TVM MetaSchedule --------------------------------------------------------------------------------

def _te_conv(w: Conv2dWorkload):
    from tvm import te
    from tvm import tirx as tir

    (sh, sw), (ph, pw), (dh, dw) = w.stride, w.padding, w.dilation
    cg, kg = w.c // w.groups, w.k // w.groups
    p, q = w.out_hw
    x = te.placeholder(w.in_shape, "float32", name="input")
    weight = te.placeholder(w.weight_shape, "float32", name="weight")
    pad = te.compute((w.n, w.c, w.h + 2 * ph, w.w + 2 * pw), lambda n, c, h, i: tir.if_then_else(
        tir.all(h >= ph, h < w.h + ph, i >= pw, i < w.w + pw), x[n, c, h - ph, i - pw], tir.const(0.0, "float32")),
        name="pad")
    rc, rr, rs = te.reduce_axis((0, cg), "rc"), te.reduce_axis((0, w.r), "rr"), te.reduce_axis((0, w.s), "rs")
    out = te.compute((w.n, w.k, p, q), lambda n, k, i, j: te.sum(
        pad[n, k // kg * cg + rc, i * sh + rr * dh, j * sw + rs * dw] * weight[k, rc, rr, rs], axis=[rc, rr, rs]),
        name="conv")
    args = [x, weight]
    if "bias" in w.epilogue:
        bias = te.placeholder((w.k,), "float32", name="bias")
        args.append(bias)
        out = te.compute(out.shape, lambda n, k, i, j: out[n, k, i, j] + bias[k], name="bias_add")
    if "relu" in w.epilogue:
        out = te.compute(out.shape, lambda *i: te.max(out(*i), tir.const(0.0, "float32")), name="relu")
    return te.create_prim_func([*args, out])


def metaschedule(w: Conv2dWorkload, trials: int):
    """Tune with MetaSchedule (tune_tir, `trials` global trials); returns (callable, tuning seconds)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    threads = int(os.environ.get("TVM_NUM_THREADS", "1"))
    target = peers.host_target(threads)
    func = _te_conv(w)
    with tempfile.TemporaryDirectory() as work_dir, peers._quiet():
        start = time.perf_counter()
        database = ms.tir_integration.tune_tir(func, target, work_dir, max_trials_global=trials,
                                               num_trials_per_iter=min(32, trials))
        seconds = time.perf_counter() - start
        sch = ms.tir_integration.compile_tir(database, func, target)
    if sch is None:  # every candidate failed to build or run (or timed out on a busy machine)
        return None, seconds
    return tvm.compile(sch.mod, target), seconds


def tvm_callable(lib, w: Conv2dWorkload):
    """A timed call of a MetaSchedule library, checked once against the float64 reference."""
    x, weight, bias = inputs(w)
    args = [x, weight] + ([bias] if bias is not None else [])
    out = torch.full(w.out_shape, float("nan"))
    lib(*args, out)
    torch.testing.assert_close(out.double(), w.reference(*args), rtol=1e-4, atol=1e-3)
    return lambda: peers.seconds_per_call(lambda: lib(*args, out))


# --- our direct templates alone ---------------------------------------------------------------------

DIRECT = "autotile, direct templates"


def direct_contender(w: Conv2dWorkload, args, operands):
    """Tune conv2d.direct alone, without conv2d.winograd (same trials, own database); None where Winograd does not
    apply (the autotile row is then this already)."""
    from autotile.ops import templates_for
    from autotile.search.tuner import TuneOptions

    if "conv2d.winograd" not in [t.name for t in templates_for(w)]:
        return None
    with autotile.Session(db=Path(_scratch) / "direct.db", backend="tvm") as session:
        result = session.tune(w, TuneOptions(trials=args.trials, seed=args.seed, templates=("conv2d.direct",)))
        kern = session.kernel(w)
    print(f"   {DIRECT}: tuned {result.gflops:.1f} GFLOP/s, config {kern.config}", flush=True)
    out = kern(*operands)
    torch.testing.assert_close(out.double(), w.reference(*operands), rtol=1e-4, atol=1e-3)
    return lambda: peers.seconds_per_call(lambda: kern(*operands, out=out))


# --- one workload ---------------------------------------------------------------------------------

def measure_workload(w: Conv2dWorkload, args) -> dict:
    print(f"\n== {w.key}  ({w.flops / 1e6:.0f} MFLOP)", flush=True)
    result = autotile.tune(w, trials=args.trials, seed=args.seed)
    kern = autotile.kernel(w)
    print(f"   autotile: {result.trials} trials in {result.tuning_seconds:.1f} s, tuned {result.gflops:.1f} GFLOP/s, "
          f"config {kern.config}", flush=True)
    x, weight, bias = inputs(w)
    operands = [x, weight] + ([bias] if bias is not None else [])
    out = kern(*operands)
    torch.testing.assert_close(out.double(), w.reference(*operands), rtol=1e-4, atol=1e-3)
    contenders = {"autotile": lambda: peers.seconds_per_call(lambda: kern(*operands, out=out))}
    constant = dataclasses.replace(w, const_weight=True)  # the same config, its weight transformed once ahead
    if prepacked_operands(constant, kern.config):
        fp = Device.cpu().fingerprint
        executable = build(constant, kern.config, fp["mcpu"], fp["threads"], fp["mattr"])
        packed = compiled(constant, kern.config, executable)
        packed_out = packed(*operands)
        torch.testing.assert_close(packed_out.double(), w.reference(*operands), rtol=1e-4, atol=1e-3)
        contenders[PACKED] = lambda: peers.seconds_per_call(lambda: packed(*operands, out=packed_out))
    direct = direct_contender(w, args, operands) if args.direct else None
    if direct is not None:
        contenders[DIRECT] = direct
    torch_fns, compile_seconds = torch_contenders(w)
    contenders.update(torch_fns)
    ms_seconds = None
    if args.metaschedule_trials > 0:
        lib, ms_seconds = metaschedule(w, args.metaschedule_trials)
        if lib is None:
            print(f"   MetaSchedule: no working schedule after {args.metaschedule_trials} trials "
                  f"({ms_seconds:.1f} s); left out", flush=True)
        else:
            contenders["MetaSchedule"] = tvm_callable(lib, w)
            print(f"   MetaSchedule: {args.metaschedule_trials} trials in {ms_seconds:.1f} s", flush=True)

    rounds = peers.alternating_rounds(contenders, args.rounds)
    ours = [name for name in ("autotile", PACKED) if name in rounds]
    row = {"workload": w.key, "flops": w.flops, "config": result.config, "autotile_trials": result.trials,
           "autotile_tuning_seconds": result.tuning_seconds, "metaschedule_tuning_seconds": ms_seconds,
           "inductor_compile_seconds": compile_seconds, "seconds": rounds, "ratios": {}}
    print(f"   {'contender':31s} {'us':>9s} {'GFLOP/s':>8s}   speed / peer's of {' | '.join(ours)} "
          f"(median [min-max] of {args.rounds} rounds)")
    for name, values in rounds.items():
        median = statistics.median(values)
        line = f"   {name:31s} {median * 1e6:9.1f} {w.flops / median / 1e9:8.1f}"
        if name not in ours:
            for mine in ours:
                stats = peers.ratio_stats(rounds[mine], values, higher_is_better=False)
                row["ratios"][name if mine == "autotile" else f"{name}, w packed"] = stats
                line += "   " + peers.format_ratio(stats)
        print(line, flush=True)
    if ms_seconds:
        print(f"   tuning time: autotile {result.tuning_seconds:.1f} s vs MetaSchedule {ms_seconds:.1f} s")
    return row


def main():
    args = parse_args()
    device = Device.cpu()
    fp = device.fingerprint
    if args.cpu_time:
        if int(fp.get("threads") or 1) != 1:
            sys.exit("--cpu-time measures one thread: run with TVM_NUM_THREADS=1")
        import types

        # Kernels on one thread run in the calling thread (TVM's pool and OpenMP alike): its CPU time is the
        # call's, without the time slices other processes took.
        peers.time = types.SimpleNamespace(perf_counter=time.thread_time)
        print("timing: the calling thread's CPU time (--cpu-time)")
    torch.set_num_threads(int(fp.get("threads") or 1))
    print(f"CPU: {fp['model_name']} mcpu={fp['mcpu']} family {fp['family']} model {fp['model']}, "
          f"{fp['physical_cores']} cores; kernels on {fp['threads']} threads (TVM_NUM_THREADS, torch threads)")
    print(f"device key: {device.key}")
    indices = [int(i) for i in args.layers.split(",")] if args.layers else range(len(LAYERS))
    epilogues = ["" if e == "none" else e.replace("+", ",") for e in args.epilogues.split(",")]
    workloads = [workload(LAYERS[i], e) for i in indices for e in epilogues]
    start = time.perf_counter()
    rows = [measure_workload(w, args) for w in workloads]
    peer_names = list(dict.fromkeys(name for r in rows for name in r["ratios"]))
    print(f"\nautotile speed / peer's (median; 'w packed': {PACKED})\n{'workload':72s} "
          + " ".join(f"{n[:34]:>34s}" for n in peer_names))
    for r in rows:
        cells = [f"{r['ratios'][n]['median']:33.2f}x" if n in r["ratios"] else f"{'-':>34s}" for n in peer_names]
        print(f"{r['workload']:72s} " + " ".join(cells))
    print(f"\nbenchmark wall time {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device.key, "fingerprint": fp, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
