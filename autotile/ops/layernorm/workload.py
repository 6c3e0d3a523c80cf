"""Layer normalization workloads: what to compute, validated at the boundary, with a stable key.

out[r] = (x[r] - mean(x[r])) / sqrt(var(x[r]) + eps) * weight + bias, over the last dim of a rows x cols
matrix (var is the biased one, as torch's layer_norm). weight and bias are vectors of cols; a layer without them
passes ones and zeros (two FMAs per element cost nothing next to the three passes over the row).

dtype bfloat16 or float16 (a 16-bit model's layer norm): x, weight, bias and out all in it; the statistics and the
normalization are computed in float32 and the output rounded once (to nearest even), as torch's layer_norm does.

Not a heavy op: in a transformer block it is the only code between the tuned GEMMs that is not fused into one,
and running it as an autotile kernel keeps the whole block on one thread pool (see docs/platform-notes.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.errors import AutotileError
from autotile.ir.dtypes import dtype
from autotile.ir.workload import Workload, _positive_int

SUPPORTED_NORM_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LayerNormWorkload(Workload):
    rows: int
    cols: int
    eps: float = 1e-5
    dtype: str = "float32"

    op = "layernorm"

    def __post_init__(self):
        for name in ("rows", "cols"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        eps = self.eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise AutotileError(f"eps must be a finite number >= 0, got {self.eps!r}")
        object.__setattr__(self, "eps", float(eps))
        dt = dtype(self.dtype).name
        if dt not in SUPPORTED_NORM_DTYPES:
            raise AutotileError(f"dtype {dt!r} is not supported by the layernorm template yet; supported: "
                                f"{', '.join(SUPPORTED_NORM_DTYPES)}")
        object.__setattr__(self, "dtype", dt)
        self.check_sizes()

    @property
    def key(self) -> str:
        return f"layernorm_{self.rows}x{self.cols}_eps{self.eps:.9g}_{self.dtype}"

    @property
    def flops(self) -> int:
        """Per element: the mean, the squared deviation, normalize, scale and shift (about 8 operations)."""
        return 8 * self.rows * self.cols

    @property
    def reduction(self) -> int:
        return self.cols

    @property
    def accumulate_dtype(self) -> str:
        """Whatever it stores, it sums in float32: verified to float32's tolerance plus the output's rounding."""
        return "float32"

    def operand_shapes(self) -> dict[str, tuple[int, ...]]:
        """Kernel argument shapes in call order: x, weight, bias, out."""
        rows = (self.rows, self.cols)
        return {"x": rows, "weight": (self.cols,), "bias": (self.cols,), "out": rows}

    def random_inputs(self, seed: int):
        """Rows with means away from zero and unequal spreads, as a residual stream has (a zero-mean, unit-variance
        draw would hide a dropped mean or a wrong variance divisor)."""
        import torch

        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.rows, self.cols, generator=g, dtype=torch.float64)
        x = x * torch.rand(self.rows, 1, generator=g, dtype=torch.float64).mul(2).add(0.5) \
            + torch.randn(self.rows, 1, generator=g, dtype=torch.float64) * 5
        weight, bias = (torch.randn(self.cols, generator=g, dtype=torch.float64) for _ in range(2))
        return [t.to(getattr(torch, self.dtype)) for t in (x, weight, bias)]

    def reference(self, *inputs):
        import torch

        self.check_operands((*inputs, torch.empty(self.output_shape)))
        x, weight, bias = (t.double() for t in inputs)
        mean = x.mean(dim=1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * weight + bias
