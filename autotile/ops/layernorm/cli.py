"""`autotile tune layernorm`."""

from __future__ import annotations

import click

from autotile.cli_tools import common_tune_options, parse_shape, run_and_report, user_errors


@click.command("layernorm")
@click.option("--shape", required=True, help="RxC: layer norm over each of R rows of C elements.")
@click.option("--eps", type=float, default=1e-5, show_default=True)
@click.option("--dtype", default="float32", show_default=True, help="float32, bfloat16 or float16 (x, weight, bias "
              "and out; computed in float32).")
@common_tune_options
@user_errors
def tune_layernorm(shape, eps, dtype, **common):
    """Tune a layer norm over the last dim (with its weight and bias), as in a transformer block."""
    from autotile.ops.layernorm.workload import LayerNormWorkload

    rows, cols = parse_shape(shape, ("R", "C"))
    run_and_report(LayerNormWorkload(rows, cols, eps=eps, dtype=dtype), **common)


def commands() -> list:
    return [tune_layernorm]
