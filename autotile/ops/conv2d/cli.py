"""`autotile tune conv2d`."""

from __future__ import annotations

import click

from autotile.cli_tools import common_tune_options, parse_pair, parse_shape, run_and_report, user_errors
from autotile.errors import AutotileError


@click.command("conv2d")
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
    from autotile.ops.conv2d.workload import Conv2dWorkload

    workload = Conv2dWorkload(n, c, h, w, k, r, s, **geometry, groups=groups, layout=layout,
                              epilogue=epilogue, const_weight=const_weight)  # validates groups
    if cg != c // groups:
        raise AutotileError(f"--weight {weight}: the second dim must be C/groups = {c // groups}, got {cg}")
    run_and_report(workload, **common)


def commands() -> list:
    return [tune_conv2d]
