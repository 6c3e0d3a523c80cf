"""The `autotile` command line: tune workloads, inspect the database, show the device key.

Progress and tables go to stderr; stdout carries only the result (with --json, one JSON object).
"""

from __future__ import annotations

import functools
import json
import sys

import click

import autotile
from autotile.errors import AutotileError, KernelDefect


def parse_shape(text: str, names) -> tuple[int, ...]:
    """'512x768x768' -> (512, 768, 768), with an error naming the expected form (names: dim letters)."""
    parts = text.lower().replace("*", "x").split("x")
    form = "x".join(names)
    if len(parts) != len(names):
        raise AutotileError(f"shape {text!r} must have the form {form} ({len(names)} integers joined by 'x')")
    dims = []
    for name, part in zip(names, parts):
        if not part.strip().isdigit() or int(part) <= 0:
            raise AutotileError(f"shape {text!r}: {name} must be a positive integer, got {part!r}")
        dims.append(int(part))
    return tuple(dims)


def user_errors(fn):
    """AutotileError (a bad value) -> a one-line 'Error: ...' and exit code 2; a kernel that cannot be built
    -> its one-line reason and exit code 1; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutotileError as e:
            raise click.UsageError(str(e)) from None
        except KernelDefect as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@click.group()
@click.version_option(autotile.__version__)
def main():
    """autotile: tune tensor kernels for this machine and keep the results in a shared database."""


@main.group()
def tune():
    """Tune one workload on this machine."""


def common_tune_options(fn):
    options = [
        click.option("--backend", type=click.Choice(["auto", "tvm", "triton"]), default="auto", show_default=True),
        click.option("--trials", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Candidates to build and measure (failures count)."),
        click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Stop tuning after this many seconds."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--strategy", type=click.Choice(["evolution", "random"]), default="evolution",
                     show_default=True),
        click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
                     help="SQLite database (default $AUTOTILE_DB, else the user cache dir)."),
        click.option("--retune", is_flag=True, help="Run new trials even if the workload is tuned."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_and_report(workload, backend, trials, time_budget, seed, strategy, db_path, retune, as_json):
    result = autotile.tune(workload, trials=trials, db=db_path, time_budget=time_budget, seed=seed,
                           strategy=strategy, backend=backend, retune=retune, progress=not as_json)
    print_summary(result)
    if as_json:
        click.echo(json.dumps(result.to_json_dict(), sort_keys=True))
    elif result.verified:
        click.echo(f"{result.workload}: {result.latency_us:.1f} us, {result.gflops:.1f} GFLOP/s"
                   f"{' (cached)' if result.cached else ''}")
    if not result.verified:
        raise click.ClickException(f"no candidate for {result.workload} passed verification in {result.trials} "
                                   f"trials; see `autotile db show {result.workload}`")


def print_summary(result):
    from rich.table import Table

    table = Table(title="autotile", show_header=False)
    for name, value in [
        ("workload", result.workload), ("device", result.device), ("backend", result.backend),
        ("config", " ".join(f"{k}={v}" for k, v in result.config.items())),
        ("latency", f"{result.latency_us:.1f} us" if result.latency_us else "-"),
        ("GFLOP/s", f"{result.gflops:.1f}" if result.gflops else "-"),
        ("trials", f"{result.trials} ({result.failed} failed)" if not result.cached else str(result.trials)),
        ("tuning seconds", f"{result.tuning_seconds:.1f}"), ("threads", str(result.threads)),
        ("verified", str(result.verified)), ("cached", str(result.cached)),
    ]:
        table.add_row(name, value)
    stderr_console().print(table)


@tune.command("gemm")
@click.option("--shape", required=True, help="MxNxK: C[M,N] = A[M,K] @ B[K,N].")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--dtype", default="float32", show_default=True)
@click.option("--layout", type=click.Choice(["nn", "nt", "tn", "tt"]), default="nn", show_default=True,
              help="Transposed operands: A then B ('nt': B given as [N,K]).")
@click.option("--epilogue", default="", help="Fused ops after the GEMM, e.g. bias,gelu "
              "(bias, relu, gelu, gelu_tanh, silu, residual, cast:<dtype>).")
@click.option("--const-b", is_flag=True, help="B is a layer's weight, the same on every call: the kernel may pack "
              "it once, ahead of the calls, and timings leave that out (what the torch.compile backend tunes "
              "for a linear: --layout nt --const-b).")
@common_tune_options
@user_errors
def tune_gemm(shape, batch, dtype, layout, epilogue, const_b, **common):
    """Tune a GEMM (optionally batched, with a fused epilogue)."""
    from autotile.ir import GemmWorkload

    m, n, k = parse_shape(shape, "MNK")
    workload = GemmWorkload(m, n, k, batch=batch, dtype=dtype, trans_a=layout[0] == "t", trans_b=layout[1] == "t",
                            epilogue=epilogue, const_b=const_b)
    run_and_report(workload, **common)


@tune.command("bmm")
@click.option("--shape", required=True, help="BxMxNxK: C[b] = A[b] @ B[b], b < B.")
@click.option("--shared", type=click.Choice(["a", "b"]), default=None,
              help="That operand has no batch dim and is shared by every batch (a broadcast).")
@click.option("--layout", type=click.Choice(["nn", "nt", "tn", "tt"]), default="nn", show_default=True)
@click.option("--epilogue", default="", help="Fused ops after the product, as for `tune gemm`.")
@common_tune_options
@user_errors
def tune_bmm(shape, shared, layout, epilogue, **common):
    """Tune a batched GEMM (the same workload as `tune gemm --batch B`)."""
    from autotile.ir import GemmWorkload

    b, m, n, k = parse_shape(shape, "BMNK")
    workload = GemmWorkload(m, n, k, batch=b, trans_a=layout[0] == "t", trans_b=layout[1] == "t",
                            epilogue=epilogue, broadcast=shared or "")
    run_and_report(workload, **common)


def parse_pair(text: str, name: str) -> tuple[int, int]:
    """'2' or '2x1' -> (2, 2) or (2, 1)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise AutotileError(f"{name} {text!r} must be N or HxW (non-negative integers)")
    values = [int(p) for p in parts]
    return (values[0], values[-1])


@tune.command("conv2d")
@click.option("--input", "input_shape", required=True, help="NxCxHxW (always in this order).")
@click.option("--weight", required=True, help="KxCgxRxS: K filters of C/groups channels, R x S taps.")
@click.option("--stride", default="1", show_default=True, help="N or HxW.")
@click.option("--padding", default="0", show_default=True, help="N or HxW.")
@click.option("--dilation", default="1", show_default=True, help="N or HxW.")
@click.option("--groups", type=int, default=1, show_default=True)
@click.option("--layout", type=click.Choice(["nchw", "nhwc"]), default="nchw", show_default=True,
              help="Memory layout of the input and output tensors.")
@click.option("--epilogue", default="", help="Fused ops after the convolution, e.g. bias,relu "
              "(bias, relu, gelu, gelu_tanh, silu, residual, cast:<dtype>).")
@click.option("--const-weight", is_flag=True, help="The weight is a layer's, the same on every call: the kernel "
              "may pack (or Winograd-transform) it once ahead of the calls, and timings leave that out (what the "
              "torch.compile backend tunes).")
@common_tune_options
@user_errors
def tune_conv2d(input_shape, weight, stride, padding, dilation, groups, layout, epilogue, const_weight, **common):
    """Tune a 2-D convolution (any stride, padding, dilation and groups, with a fused epilogue)."""
    n, c, h, w = parse_shape(input_shape, "NCHW")
    k, cg, r, s = parse_shape(weight, ("K", "Cg", "R", "S"))
    geometry = {name: parse_pair(value, f"--{name}") for name, value in
                (("stride", stride), ("padding", padding), ("dilation", dilation))}
    from autotile.ir.conv import Conv2dWorkload

    workload = Conv2dWorkload(n, c, h, w, k, r, s, **geometry, groups=groups, layout=layout,
                              epilogue=epilogue, const_weight=const_weight)  # validates groups
    if cg != c // groups:
        raise AutotileError(f"--weight {weight}: the second dim must be C/groups = {c // groups}, got {cg}")
    run_and_report(workload, **common)


@tune.command("attention")
@click.option("--qkv", required=True, help="BxHxSxD: batch, query heads, sequence length, head dim.")
@click.option("--kv-seq", type=int, default=None, help="Key/value sequence length (default: S).")
@click.option("--kv-heads", type=int, default=None, help="Key/value heads, grouped-query (default: H).")
@click.option("--causal", is_flag=True, help="Mask keys after the query (torch is_causal).")
@click.option("--causal-align", type=click.Choice(["top-left", "bottom-right"]), default="top-left",
              show_default=True, help="top-left as torch's is_causal; bottom-right as FlashAttention (decoding).")
@click.option("--scale", type=float, default=None, help="Softmax scale (default 1/sqrt(D)).")
@common_tune_options
@user_errors
def tune_attention(qkv, kv_seq, kv_heads, causal, causal_align, scale, **common):
    """Tune scaled dot-product attention (flash style: the score matrix is never materialized)."""
    from autotile.ir.attention import AttentionWorkload

    b, h, s, d = parse_shape(qkv, "BHSD")
    workload = AttentionWorkload(b, h, s, d, seq_kv=kv_seq, kv_heads=kv_heads, causal=causal,
                                 causal_align=causal_align, scale=scale)
    run_and_report(workload, **common)


@tune.command("layernorm")
@click.option("--shape", required=True, help="RxC: layer norm over each of R rows of C elements.")
@click.option("--eps", type=float, default=1e-5, show_default=True)
@common_tune_options
@user_errors
def tune_layernorm(shape, eps, **common):
    """Tune a layer norm over the last dim (with its weight and bias), as in a transformer block."""
    from autotile.ir.norm import LayerNormWorkload

    rows, cols = parse_shape(shape, ("R", "C"))
    run_and_report(LayerNormWorkload(rows, cols, eps=eps), **common)


@tune.command("qgemm")
@click.option("--shape", required=True, help="MxNxK: C[M,N] = A[M,K] @ dequantize(W[N,K])^T.")
@click.option("--weight-dtype", default="int4", show_default=True,
              help="int2 .. int8 (packed codes), or fp8e4m3 / fp8e5m2 (with an fp8 --act-dtype).")
@click.option("--act-dtype", default="float32", show_default=True,
              help="float32 or bfloat16 (weight-only: float32 activations, or rounded to bf16 for vdpbf16ps "
              "dot products on int4 weights), int8 (W8A8), fp8e4m3 / fp8e5m2 (fp8).")
@click.option("--group-size", type=int, default=128, show_default=True,
              help="Scales per group of K elements; 0 for one scale per output channel.")
@click.option("--asymmetric", is_flag=True, help="Zero points per group (else symmetric).")
@click.option("--epilogue", default="", help="Fused ops after the product (bias, relu, gelu, ...).")
@click.option("--outlier-threshold", type=float, default=0.0, show_default=True,
              help="W8A8: activation columns with |A| above it run in float (LLM.int8, e.g. 6.0); 0 = off.")
@click.option("--fp8-scales", type=click.Choice(["tensor", "row"]), default="tensor", show_default=True,
              help="fp8: one scale per tensor, or per row of A and of W.")
@common_tune_options
@user_errors
def tune_qgemm(shape, weight_dtype, act_dtype, group_size, asymmetric, epilogue, outlier_threshold, fp8_scales,
               **common):
    """Tune a quantized GEMM: weight-only int2..int8 (dequantized in the kernel), W8A8, or fp8 (emulated)."""
    from autotile.ir.qgemm import QGemmWorkload

    m, n, k = parse_shape(shape, "MNK")
    if group_size < 0:
        raise AutotileError(f"--group-size must be 0 (per channel) or positive, got {group_size}")
    workload = QGemmWorkload(m, n, k, weight_dtype=weight_dtype, act_dtype=act_dtype, group_size=group_size or None,
                             asymmetric=asymmetric, epilogue=epilogue, outlier_threshold=outlier_threshold,
                             fp8_scales=fp8_scales)
    run_and_report(workload, **common)


@main.group("db")
def db_group():
    """Inspect the tuning database."""


@db_group.command("list")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def db_list(db_path, as_json):
    """Tuned workloads: one row per device, workload and backend."""
    from autotile.api import open_db

    with open_db(db_path) as db:
        rows = db.list_workloads()
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("workload", "device", "backend", "measured", "failed", "best us", "GFLOP/s")
    for r in rows:
        table.add_row(r["workload"], r["device"], r["backend"], str(r["measurements"]), str(r["failures"]),
                      f"{r['best_latency_us']:.1f}" if r.get("best_latency_us") else "-",
                      f"{r['best_gflops']:.1f}" if r.get("best_gflops") else "-")
    Console(width=200).print(table)


@db_group.command("show")
@click.argument("key")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=int, default=20, show_default=True, help="Measurements to list, fastest first.")
@user_errors
def db_show(key, db_path, as_json, limit):
    """Measurements of one workload (KEY: its key as `db list` prints it, or a unique prefix)."""
    from autotile.api import open_db

    with open_db(db_path) as db:
        full = db.resolve_workload(key)
        records = db.measurements(workload=full)
    records.sort(key=lambda r: (r["status"] != "ok", r["latency_us"] or 0))
    if as_json:
        click.echo(json.dumps({"workload": full, "measurements": records}, sort_keys=True, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("device", "status", "us", "GFLOP/s", "threads", "config / error", title=full)
    for r in records[:limit]:
        detail = r["error"] or " ".join(f"{k}={v}" for k, v in r["config"].items())
        status = f"failed: {r['failure']}" if r["failure"] else r["status"]
        table.add_row(r["device"], status, f"{r['latency_us']:.1f}" if r["latency_us"] else "-",
                      f"{r['gflops']:.1f}" if r["gflops"] else "-", str(r["threads"]), detail)
    failed = sum(r["status"] != "ok" for r in records)
    Console(width=200).print(table)
    click.echo(f"{len(records)} measurements, {failed} failed")


@db_group.command("model-quality")
@click.argument("key")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None)
@click.option("--folds", type=click.IntRange(min=2), default=4, show_default=True)
@click.option("-k", "top_k", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def db_model_quality(key, db_path, folds, top_k, as_json):
    """How well the cost model ranks a workload's measured configs it has not seen (cross-validated)."""
    from autotile.api import open_db
    from autotile.costmodel import cross_validate
    from autotile.kernels import space_for, workload_from_dict

    with open_db(db_path) as db:
        full = db.resolve_workload(key)
        workload = workload_from_dict(db.workloads()[full])
        records = db.measurements(workload=full)
    space = space_for(workload)
    if len(records) < 2 * folds:
        raise AutotileError(f"{full} has {len(records)} measurements; {2 * folds} are needed for {folds} folds")
    X = [space.features(space.config_type.from_dict(r["config"])) for r in records]
    latency = [r["latency_us"] if r["status"] == "ok" else float("inf") for r in records]
    report = {"workload": full, "measurements": len(records), **cross_validate(X, latency, folds=folds, k=top_k)}
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    else:
        click.echo(f"{full}: {len(records)} measurements, {folds}-fold cross-validation: "
                   f"Spearman {report['spearman']:.3f}, top-{top_k} recall {report['recall_at_k']:.2f}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def device(as_json):
    """This machine's device key and full fingerprint."""
    from autotile.db.device import current_device

    dev = current_device("tvm")
    if as_json:
        click.echo(json.dumps({"key": dev.key, "fingerprint": dev.fingerprint}, sort_keys=True))
    else:
        click.echo(dev.key)
        click.echo(json.dumps(dev.fingerprint, indent=2, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
