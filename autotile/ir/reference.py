"""Reference implementations (float64, torch) and the one definition of "verified".

A kernel is verified when, on two draws of zero-mean random inputs (randn) and with its
output buffer poisoned beforehand (NaN, or a sentinel for integer outputs), its output matches
the float64 reference within the tolerance that `tolerance(dtype, k)` gives; integer
accumulations must match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autotile.ir.dtypes import dtype as lookup_dtype

# Per dtype: (rtol, atol per unit of K). Rounding error of a K-term dot product of randn values
# grows with K; a dropped K tile or a single lost product is still far outside these bounds.
TOLERANCES = {
    "float32": (1e-5, 2e-6),
    "bfloat16": (1.6e-2, 4e-3),
    "float16": (2e-3, 5e-4),
    "tfloat32": (2e-3, 5e-4),  # float32 inputs, products rounded to a 10-bit mantissa (as float16's)
    "float8_e4m3": (1.25e-1, 3e-2),
    "float8_e5m2": (2.5e-1, 6e-2),
}
INTEGER_SENTINEL = -123456789


def tolerance(dtype_name: str, k: int) -> tuple[float, float]:
    """(rtol, atol) for outputs of a K-long reduction in this dtype; (0, 0) for integers."""
    dt = lookup_dtype(dtype_name)
    if dt.kind != "float":
        return 0.0, 0.0
    rtol, atol_per_k = TOLERANCES[dt.name]
    return rtol, atol_per_k * max(k, 16)


def gemm_reference(workload, *inputs) -> torch.Tensor:
    """C = epilogue(op(A) @ op(B)) in float64; inputs in the workload's operand order."""
    named = dict(zip(workload.operand_shapes(), inputs))
    a, b = named["A"].double(), named["B"].double()  # a shared (unbatched) operand broadcasts
    if getattr(workload, "prologue", "") == "layernorm":
        a = torch.nn.functional.layer_norm(a, (a.shape[-1],), named["ln_weight"].double(),
                                           named["ln_bias"].double(), workload.eps)
    if workload.trans_a:
        a = a.transpose(-1, -2)
    if workload.trans_b:
        b = b.transpose(-1, -2)
    return apply_epilogue(a @ b, workload.epilogue, named)


def apply_epilogue(x: torch.Tensor, epilogue, named: dict) -> torch.Tensor:
    """The epilogue chain on a float64 result; bias and residual come from the named operands."""
    for op in epilogue:
        if op == "bias":
            x = x + named["bias"].double()
        elif op == "residual":
            x = x + named["residual"].double()
        elif op == "relu":
            x = torch.relu(x)
        elif op == "gelu":
            x = torch.nn.functional.gelu(x)
        elif op == "gelu_tanh":
            x = torch.nn.functional.gelu(x, approximate="tanh")
        elif op == "silu":
            x = torch.nn.functional.silu(x)
    return x


def reference(workload, *inputs) -> torch.Tensor:
    """The float64 result of any workload, inputs in its operand order."""
    return workload.reference(*inputs)


def random_inputs(workload, seed: int) -> list[torch.Tensor]:
    """Zero-mean random inputs (all-positive inputs would hide a dropped K tile); a workload whose
    operands must be consistent (packed quantized codes) draws its own."""
    if hasattr(workload, "random_inputs"):
        return workload.random_inputs(seed)
    g = torch.Generator().manual_seed(seed)
    names = list(workload.operand_shapes().items())[:-1]
    return [torch.randn(s, generator=g, dtype=torch.float64).to(getattr(torch, workload.input_dtype(n)))
            for n, s in names]


def poisoned_output(workload) -> torch.Tensor:
    shape = workload.output_shape
    dt = getattr(torch, workload.out_dtype)
    if dt.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dt)
    return torch.full(shape, INTEGER_SENTINEL, dtype=dt)


@dataclass
class Verdict:
    ok: bool
    max_abs_error: float
    reason: str = ""


def compare(workload, out: torch.Tensor, ref: torch.Tensor) -> Verdict:
    out64 = out.double()
    if not torch.isfinite(out64).all() and torch.isfinite(ref).all():
        bad = int((~torch.isfinite(out64)).sum())
        return Verdict(False, float("inf"), f"{bad} output elements not written or not finite")
    rtol, atol = tolerance(workload.accumulate_dtype, workload.reduction)
    if workload.out_dtype != workload.accumulate_dtype:  # the cast rounds too
        out_rtol, _ = tolerance(workload.out_dtype, 1)
        rtol, atol = max(rtol, out_rtol), max(atol, out_rtol * float(ref.abs().max()))
    err = (out64 - ref).abs()
    max_err = float(err.max()) if err.numel() else 0.0
    bound = atol + rtol * ref.abs()
    if bool((err > bound).any()):
        worst = int(torch.argmax((err - bound).flatten()))
        index = np.unravel_index(worst, tuple(ref.shape))
        return Verdict(False, max_err, f"mismatch at {tuple(int(i) for i in index)}: got "
                       f"{float(out64.flatten()[worst]):.6g}, expected {float(ref.flatten()[worst]):.6g} "
                       f"(max abs error {max_err:.3g}, atol {atol:.3g}, rtol {rtol:.3g})")
    return Verdict(True, max_err)


def verify(workload, kernel, seeds=(0, 1)) -> Verdict:
    """Run `kernel(*inputs, out=poisoned)` on two random draws and compare with the reference."""
    worst = Verdict(True, 0.0)
    for seed in seeds:
        inputs = random_inputs(workload, seed)
        out = poisoned_output(workload)
        kernel(*inputs, out=out)
        verdict = compare(workload, out, reference(workload, *inputs))
        if not verdict.ok:
            return verdict
        worst = Verdict(True, max(worst.max_abs_error, verdict.max_abs_error))
    return worst
