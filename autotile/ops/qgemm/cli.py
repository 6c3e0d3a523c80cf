"""`autotile tune qgemm`."""

from __future__ import annotations

import click

from autotile.cli_tools import common_tune_options, parse_shape, run_and_report, user_errors
from autotile.errors import AutotileError


@click.command("qgemm")
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
    from autotile.ops.qgemm.workload import QGemmWorkload

    m, n, k = parse_shape(shape, "MNK")
    if group_size < 0:
        raise AutotileError(f"--group-size must be 0 (per channel) or positive, got {group_size}")
    workload = QGemmWorkload(m, n, k, weight_dtype=weight_dtype, act_dtype=act_dtype, group_size=group_size or None,
                             asymmetric=asymmetric, epilogue=epilogue, outlier_threshold=outlier_threshold,
                             fp8_scales=fp8_scales)
    run_and_report(workload, **common)


def commands() -> list:
    return [tune_qgemm]
