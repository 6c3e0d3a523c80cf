"""`autotile tune attention`."""

from __future__ import annotations

import click

from autotile.cli_tools import common_tune_options, parse_shape, run_and_report, user_errors


@click.command("attention")
@click.option("--qkv", required=True, help="BxHxSxD: batch, query heads, sequence length, head dim.")
@click.option("--kv-seq", type=int, default=None, help="Key/value sequence length (default: S).")
@click.option("--kv-heads", type=int, default=None, help="Key/value heads, grouped-query (default: H).")
@click.option("--causal", is_flag=True, help="Mask keys after the query (torch is_causal).")
@click.option("--causal-align", type=click.Choice(["top-left", "bottom-right"]), default="top-left",
              show_default=True, help="top-left as torch's is_causal; bottom-right as FlashAttention (decoding).")
@click.option("--scale", type=float, default=None, help="Softmax scale (default 1/sqrt(D)).")
@click.option("--dtype", default="float32", show_default=True,
              help="q, k, v and output: float32, or bfloat16 (computed in float32, the output rounded once).")
@common_tune_options
@user_errors
def tune_attention(qkv, kv_seq, kv_heads, causal, causal_align, scale, dtype, **common):
    """Tune scaled dot-product attention (flash style: the score matrix is never materialized)."""
    from autotile.ops.attention.workload import AttentionWorkload

    b, h, s, d = parse_shape(qkv, "BHSD")
    workload = AttentionWorkload(b, h, s, d, seq_kv=kv_seq, kv_heads=kv_heads, causal=causal,
                                 causal_align=causal_align, scale=scale, dtype=dtype)
    run_and_report(workload, **common)


def commands() -> list:
    return [tune_attention]
