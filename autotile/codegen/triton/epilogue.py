"""Triton source for the fused epilogue chain (bias, residual, activations, cast) shared by every template.

The chain runs on the fp32 accumulator tile in registers, in the order the workload gives (ir/workload.py);
the caller says how to address bias (by output column) and residual (like the output) in its own layout.
"""

from __future__ import annotations

from autotile.codegen.triton.program import TL_TYPES

# gelu_tanh = x (1 + tanh(y)) / 2 = x sigmoid(2y): tl has no tanh that also runs under the interpreter.
_ACTIVATIONS = {
    "relu": "{x} = tl.maximum({x}, 0.0)",
    "gelu": "{x} = 0.5 * {x} * (1.0 + tl.math.erf({x} * 0.7071067811865476))",
    "gelu_tanh": "{x} = {x} * tl.sigmoid(1.5957691216057308 * ({x} + 0.044715 * {x} * {x} * {x}))",
    "silu": "{x} = {x} * tl.sigmoid({x})",
}


def epilogue_lines(epilogue, x: str, col: str, col_mask: str, out_offsets: str, mask: str) -> list[str]:
    """Statements applying `epilogue` to the fp32 tile `x`. `col` is the 1-D output-column index vector (bias
    is per column), `out_offsets` the 2-D element offsets of the output tile (residual shares its layout)."""
    lines = []
    for op in epilogue:
        if op == "bias":
            lines.append(f"{x} = {x} + tl.load(bias_ptr + {col}, mask={col_mask}, other=0.0).to(tl.float32)[None, :]")
        elif op == "residual":
            lines.append(f"{x} = {x} + tl.load(residual_ptr + {out_offsets}, mask={mask}, other=0.0).to(tl.float32)")
        elif op in _ACTIVATIONS:
            lines.append(_ACTIVATIONS[op].format(x=x))
    return lines


def store_line(out_dtype: str, x: str, out_offsets: str, mask: str, ptr: str = "C_ptr") -> str:
    return f"tl.store({ptr} + {out_offsets}, {x}.to({TL_TYPES[out_dtype]}), mask={mask})"
