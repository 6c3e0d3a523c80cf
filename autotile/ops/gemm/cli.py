"""`autotile tune gemm` and `autotile tune bmm`."""

from __future__ import annotations

import click

from autotile.cli_tools import common_tune_options, parse_shape, run_and_report, user_errors


@click.command("gemm")
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
@click.option("--addend-dtype", default="float32", show_default=True,
              help="The bias's and residual's dtype: float32, or --dtype's 16-bit type (a bfloat16 model's linear, "
              "as the torch.compile backend tunes it for model.bfloat16()).")
@click.option("--prologue", type=click.Choice(["layernorm"]), default=None,
              help="A is layer-normalized over its rows of K as the kernel reads it (a pre-norm block's LayerNorm "
              "fused into the linear after it; float32, what the torch.compile backend tunes for it).")
@click.option("--eps", type=float, default=1e-5, show_default=True, help="The layernorm prologue's epsilon.")
@common_tune_options
@user_errors
def tune_gemm(shape, batch, dtype, layout, epilogue, const_b, addend_dtype, prologue, eps, **common):
    """Tune a GEMM (optionally batched, with a fused epilogue)."""
    from autotile.ir import GemmWorkload

    m, n, k = parse_shape(shape, "MNK")
    workload = GemmWorkload(m, n, k, batch=batch, dtype=dtype, trans_a=layout[0] == "t", trans_b=layout[1] == "t",
                            epilogue=epilogue, const_b=const_b, addend_dtype=addend_dtype,
                            prologue=prologue or "", eps=eps)
    run_and_report(workload, **common)


@click.command("bmm")
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


def commands() -> list:
    return [tune_gemm, tune_bmm]
