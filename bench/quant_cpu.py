"""CPU low-precision GEMM benchmark: W8A8 int8, int4 weight-only (group 128), bf16 and fp16 GEMM, against
torch and autotile fp32.

    TVM_NUM_THREADS=2 .venv/bin/python bench/quant_cpu.py [--trials 64] [--rounds 5]
        [--cases w8a8,int4,bfloat16,float16] [--json out.json]

W8A8 (shapes 512x1024x1024, 128x3072x768, and decode-like M 1 and 16 with N=K=4096): autotile's kernel
quantizes the float activations per row inside the timed call; its int8 weight is packed once per weight set
into the kernel's VNNI panels (with the column sums), outside the timed calls, as a layer's weight would be;
torch's dynamic int8 Linear (quantize_dynamic: fbgemm on x86, activations quantized per call, per tensor) is the
peer a torch user has; torch._int_mm is timed with the same dynamic quantization and scaling in torch around it,
and alone on pre-quantized int8 (labelled).
int4 weight-only (M 1 and 16, N=K=4096): against torch fp32 and bf16 linear, numpy fp32 (OpenBLAS with its
capping variables unset, in its own process) and autotile's fp32 GEMM. Two autotile rows: bfloat16
activations (A rounded to bf16 as torch's bf16 linear takes it; vdpbf16ps on CPUs with AVX512_BF16, the
weight repacked once per weight set, outside the timed calls) and float32 activations; the ratio column is
the first row's, and a line under the table gives the second's against the same peers.
bf16 / fp16 (cases "bfloat16", "float16"; 1024x1024x1024, 512x768x768 and 128x3072x768): against torch's linear
and matmul in the same dtype and both fp32 GEMMs. Each table names the template that won (gemm.amx on AMX tiles,
offered only where the CPU and Linux allow it, which the first lines say).
Decode shapes rotate through distinct weight sets, more than twice the L3 in total, so no contender is
timed from cache. Every contender runs in the same process in alternating rounds; ratios are autotile's
speed over the peer's (median [min-max] over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

_scratch = tempfile.mkdtemp(prefix="autotile-bench-")
os.environ["AUTOTILE_DB"] = str(Path(_scratch) / "bench.db")
os.environ["AUTOTILE_CACHE_DIR"] = str(Path(_scratch) / "kernels")

import torch  # noqa: E402

import autotile  # noqa: E402
from autotile.session import prepare_environment  # noqa: E402

prepare_environment()  # TVM_NUM_THREADS: the physical cores unless set, before anything imports TVM
from autotile.db.device import Device  # noqa: E402
from autotile.ir import GemmWorkload  # noqa: E402
from autotile.ops.qgemm.quant import quantize_int, quantize_rows_int8  # noqa: E402
from autotile.ops.qgemm.workload import QGemmWorkload  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402

L3_BYTES = 32 << 20
W8A8_SHAPES = [(512, 1024, 1024), (128, 3072, 768), (1, 4096, 4096), (16, 4096, 4096)]
INT4_SHAPES = [(1, 4096, 4096), (16, 4096, 4096)]


def rotation(count: int):
    """A callable that cycles through `count` indices: each call uses the next weight set."""
    state = {"i": -1}

    def next_index():
        state["i"] = (state["i"] + 1) % count
        return state["i"]

    return next_index


def sets_needed(bytes_per_set: int, m: int) -> int:
    return max(2, -(-2 * L3_BYTES // bytes_per_set)) if m <= 16 else 1


def tuned_kernel(w, trials, seed):
    result = autotile.tune(w, trials=trials, seed=seed)
    print(f"   tuned {w.key}: {result.trials} trials in {result.tuning_seconds:.1f} s, {result.gflops:.1f} G(FL)OP/s",
          flush=True)
    return autotile.kernel(w), result


def quantized_setup(w, args):
    """Tuned kernels for `w` and for the fp32 GEMM of its shape, an activation, and enough float weight sets
    (N x K) to rotate through: (kernel, tuning result, fp32 kernel, x, weights, pick)."""
    m, n, k = w.m, w.n, w.k
    kern, result = tuned_kernel(w, args.trials, args.seed)
    kern32, _ = tuned_kernel(GemmWorkload(m, n, k, trans_b=True), args.trials, args.seed)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g)
    sets = sets_needed(n * k * 4, m)
    floats = [torch.randn(n, k, generator=g) for _ in range(sets)]
    return kern, result, kern32, x, floats, rotation(sets)


def dynamic_int8_linear(weight):
    """torch's own W8A8 Linear: quantize_dynamic (int8 weight packed once, activations quantized per call, per
    tensor; fbgemm's vpmaddubsw kernels on x86), the peer a torch user already has."""
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight.data.copy_(weight)
    return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)


def w8a8_contenders(m, n, k, args):
    w = QGemmWorkload(m, n, k, weight_dtype="int8", act_dtype="int8")
    kern, result, kern32, x, floats, pick = quantized_setup(w, args)
    quantized = [quantize_rows_int8(f) for f in floats]
    weights_t = [q.t() for q, _ in quantized]  # _int_mm takes B as (K, N); a transposed view is what it wants
    out, out32 = torch.empty(m, n), torch.empty(m, n)

    def torch_w8a8():
        i = pick()
        qa, sa = quantize_rows_int8(x)
        return torch._int_mm(qa if m > 16 else torch.nn.functional.pad(qa, (0, 0, 0, 17 - m)), weights_t[i])[:m] \
            .float() * sa[:, None] * quantized[i][1]

    qa_pre, _ = quantize_rows_int8(x)
    qa_pre = qa_pre if m > 16 else torch.nn.functional.pad(qa_pre, (0, 0, 0, 17 - m))  # _int_mm needs M > 16
    # The kernel's own weight layout (VNNI panels and column sums), made once per weight set, untimed.
    prepared = [(kern.pack_operand("W", q), scales) for q, scales in quantized]
    torch.testing.assert_close(kern(x, *prepared[0], out=out).double(), w.reference(x, *quantized[0]),
                               rtol=1e-4, atol=1e-3)
    print(f"   W8A8 kernel: {result.config}", flush=True)
    dynamic = [dynamic_int8_linear(f) for f in floats]
    return w, result, {
        "autotile W8A8": lambda: kern(x, *prepared[pick()], out=out),
        f"torch dynamic int8 Linear ({torch.backends.quantized.engine})": lambda: dynamic[pick()](x),
        "torch._int_mm + dynamic quant": torch_w8a8,
        "torch._int_mm alone (pre-quantized A)": lambda: torch._int_mm(qa_pre, weights_t[pick()]),
        "autotile fp32": lambda: kern32(x, floats[pick()], out=out32),
        "torch fp32 linear": lambda: torch.nn.functional.linear(x, floats[pick()]),
    }


INT4_FP32_ACT = "autotile int4 g128"


def int4_contenders(m, n, k, args):
    w = QGemmWorkload(m, n, k, weight_dtype="int4", group_size=128)
    kern, _, kern32, x, floats, pick = quantized_setup(w, args)
    wb = QGemmWorkload(m, n, k, weight_dtype="int4", group_size=128, act_dtype="bfloat16")
    kern_bf, result = tuned_kernel(wb, args.trials, args.seed)
    bf16 = [f.bfloat16() for f in floats]
    quantized = [quantize_int(f, 4, 128) for f in floats]
    # The bf16 kernel's own weight layout (if its config has one), made once per weight set, untimed.
    prepared = [(kern_bf.pack_operand("W", q.packed), kern_bf.pack_operand("scales", q.scales)) for q in quantized]
    x16 = x.bfloat16()
    out, out32, out_bf = torch.empty(m, n), torch.empty(m, n), torch.empty(m, n)
    q0 = quantized[0]
    torch.testing.assert_close(kern(x, q0.packed, q0.scales, out=out), x @ q0.dequantize().t(), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(kern_bf(x, *prepared[0], out=out_bf), x16.float() @ q0.dequantize().t(), rtol=1e-4,
                               atol=1e-3)
    knobs = ("bf16_dot", "dot_rows", "dot_vectors", "unroll_k", "decode")
    print(f"   bf16-activation kernel: {', '.join(f'{k}={result.config.get(k)}' for k in knobs)}", flush=True)
    return wb, result, {
        "autotile int4 g128 (bf16 activations)": lambda: kern_bf(x, *prepared[pick()], out=out_bf),
        INT4_FP32_ACT: lambda: (lambda q: kern(x, q.packed, q.scales, out=out))(quantized[pick()]),
        "autotile fp32": lambda: kern32(x, floats[pick()], out=out32),
        "torch fp32 linear": lambda: torch.nn.functional.linear(x, floats[pick()]),
        "torch bf16 linear": lambda: torch.nn.functional.linear(x16, bf16[pick()]),
        # Full-speed OpenBLAS in its own process; its one fp32 weight (64 MiB at 4096^2) is larger than L3.
        "numpy fp32 (own process)": OwnTiming(lambda: w.flops / (peers.numpy_gflops(m, n, k, ())[0] * 1e9)),
    }


class OwnTiming:
    """A contender that times itself (seconds per call), e.g. in another process."""

    def __init__(self, seconds):
        self.seconds = seconds


LOWP_SHAPES = [(1024, 1024, 1024), (512, 768, 768), (128, 3072, 768)]


def lowp_contenders(m, n, k, dtype, args):
    """bf16 / fp16 GEMM (fp32 accumulation, output in the input dtype) against torch in the same dtype
    and autotile's fp32 GEMM; the weight is B given as (N, K), as a linear layer holds it, and packed once (const_b)
    as the torch.compile backend packs a layer's weight."""
    w = GemmWorkload(m, n, k, dtype=dtype, trans_b=True, const_b=True)
    fp32 = GemmWorkload(m, n, k, trans_b=True, const_b=True)
    kern, result = tuned_kernel(w, args.trials, args.seed)
    kern32, _ = tuned_kernel(fp32, args.trials, args.seed)
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    xl, wl = x.to(getattr(torch, dtype)), weight.to(getattr(torch, dtype))
    out, out32 = torch.empty(m, n, dtype=xl.dtype), torch.empty(m, n)
    torch.testing.assert_close(kern(xl, wl, out=out).float(), xl.float() @ wl.float().t(), rtol=2e-2, atol=0.5)
    return w, result, {
        f"autotile {dtype}": lambda: kern(xl, wl, out=out),
        f"torch {dtype} linear": lambda: torch.nn.functional.linear(xl, wl),
        f"torch {dtype} matmul": lambda: xl @ wl.t(),
        "autotile fp32": lambda: kern32(x, weight, out=out32),
        "torch fp32 linear": lambda: torch.nn.functional.linear(x, weight),
    }


def weight_bytes(w) -> int:
    """Bytes of weight a call reads: the quantized weight, or B of a GEMM (2 bytes an element for 16-bit)."""
    if hasattr(w, "weight_bytes"):
        return w.weight_bytes
    return w.n * w.k * (4 if w.dtype == "float32" else 2)


def report(w, result, contenders, args) -> dict:
    print(f"\n== {w.key}  (weight {weight_bytes(w) / 2**20:.1f} MiB per call)", flush=True)
    timed = {name: fn.seconds if isinstance(fn, OwnTiming) else (lambda fn=fn: peers.seconds_per_call(fn))
             for name, fn in contenders.items()}
    rounds = peers.alternating_rounds(timed, args.rounds)
    ours = next(iter(rounds))
    row = {"workload": w.key, "tuning_seconds": result.tuning_seconds, "config": result.config,
           "template": result.template, "seconds": rounds, "ratios": {}}
    print(f"   autotile's template: {result.template}, config {result.config}", flush=True)
    print(f"   {'contender':40s} {'us':>9s} {'GOP/s':>7s} {'weight GB/s':>11s}   autotile speed / peer's")
    for name, values in rounds.items():
        median = statistics.median(values)
        line = f"   {name:40s} {median * 1e6:9.1f} {w.flops / median / 1e9:7.1f}"
        line += f" {weight_bytes(w) / median / 1e9:11.1f}" if name == ours else " " * 12
        if name != ours:
            row["ratios"][name] = peers.ratio_stats(rounds[ours], values, higher_is_better=False)
            line += "   " + peers.format_ratio(row["ratios"][name])
        print(line, flush=True)
    if INT4_FP32_ACT in rounds and INT4_FP32_ACT != ours:
        peers_only = [name for name in rounds if not name.startswith("autotile")]
        row["ratios_float32_activations"] = {name: peers.ratio_stats(rounds[INT4_FP32_ACT], rounds[name],
                                                                     higher_is_better=False) for name in peers_only}
        print(f"   {INT4_FP32_ACT} (float32 activations) speed / peer's: " + ", ".join(
            f"{name} {peers.format_ratio(r)}" for name, r in row["ratios_float32_activations"].items()), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", default="w8a8,int4")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["TVM_NUM_THREADS"]))
    print(f"device key: {Device.cpu().key}; torch on {torch.get_num_threads()} threads")
    from autotile.codegen.tvm import amx_permission

    print(amx_permission.describe())
    rows = []
    cases = args.cases.split(",")
    if "w8a8" in cases:
        rows += [report(*w8a8_contenders(*shape, args), args) for shape in W8A8_SHAPES]
    if "int4" in cases:
        rows += [report(*int4_contenders(*shape, args), args) for shape in INT4_SHAPES]
    for dtype in ("bfloat16", "float16"):
        if dtype in cases:
            rows += [report(*lowp_contenders(*shape, dtype, args), args) for shape in LOWP_SHAPES]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
