"""Modules users put in their models to get autotile's quantized kernels, eagerly or under torch.compile.

    from autotile.nn import QuantizedLinear
    model.fc = QuantizedLinear.from_linear(model.fc, weight_dtype="int4", group_size=128)   # weight-only
    model.fc = QuantizedLinear.from_linear(model.fc, weight_dtype="int8", act_dtype="int8")  # W8A8

The weight is quantized once, here, with `autotile.ops.qgemm.quant` (layouts documented there) and kept only in its
quantized form: packed codes, float32 scales and, with `asymmetric=True`, int32 zero points. A call runs
`torch.ops.autotile.qlinear`, the tuned qgemm kernel for its bucket of rows (autotile.dynamo.buckets), with the
kernel from the database (exact workload, else the nearest tuned shape, else the template default). Under
`torch.compile(model, backend="autotile", options=...)` its workloads follow the backend's `tuning` and `db`.
"""

from __future__ import annotations

import torch
from torch import nn

from autotile.errors import AutotileError


class QuantizedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, weight_dtype: str = "int4",
                 group_size: int | None = 128, asymmetric: bool = False, act_dtype: str = "float32",
                 db: str | None = None, tuning: str = "cached"):
        super().__init__()
        from autotile.dynamo import ops  # noqa: F401  (registers torch.ops.autotile.qlinear)
        from autotile.dynamo.options import Options
        from autotile.dynamo.plans import QLinearPlan
        from autotile.ops.qgemm.workload import QGemmWorkload

        options = Options(tuning=tuning, db=db)
        # m is a placeholder: each call's bucket of rows replaces it.
        self.workload = QGemmWorkload(1, out_features, in_features, weight_dtype=weight_dtype, act_dtype=act_dtype,
                                      group_size=group_size, asymmetric=asymmetric,
                                      epilogue="bias" if bias else "")
        self.in_features, self.out_features = in_features, out_features
        shapes = self.workload.operand_shapes()
        for name, buffer in (("W", "codes"), ("scales", "scales"), ("zeros", "zeros"), ("bias", "bias")):
            if name in shapes:
                dtype = getattr(torch, self.workload.input_dtype(name))
                self.register_buffer(buffer, torch.zeros(shapes[name], dtype=dtype))
            else:
                self.register_buffer(buffer, None)
        # The op's plan, as the text its schema takes; the codes are already the kernel's (no signed values).
        self.plan = QLinearPlan(str(options.db_path()), options.tuning, self.workload, signed_bits=None,
                                pack=("codes", "scales", "zeros")).encode()

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options) -> QuantizedLinear:
        """A quantized copy of `linear` (float32 weight N x K); `options` as for the constructor."""
        if not isinstance(linear, nn.Linear):
            raise AutotileError(f"from_linear takes a torch.nn.Linear, got {type(linear).__name__}")
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, **options)
        module.load_weight(linear.weight.detach(), None if linear.bias is None else linear.bias.detach())
        return module

    @torch.no_grad()
    def load_weight(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Quantize a float weight (out_features x in_features) into this module's codes and scales."""
        from autotile.ops.qgemm.quant import quantize_int, quantize_rows_int8

        w = self.workload
        if tuple(weight.shape) != (w.n, w.k):
            raise AutotileError(f"weight has shape {tuple(weight.shape)}, expected {(w.n, w.k)}")
        if w.w8a8:
            codes, scales = quantize_rows_int8(weight.float())
            zeros = None
        else:
            q = quantize_int(weight.float(), w.bits, w.group_size, not w.asymmetric)
            codes, scales, zeros = q.packed, q.scales, q.zeros
        self.codes.copy_(codes)
        self.scales.copy_(scales)
        if self.zeros is not None:
            self.zeros.copy_(zeros)
        if self.bias is not None:
            if bias is None:
                raise AutotileError("this QuantizedLinear has a bias: pass one")
            self.bias.copy_(bias.float())

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight the kernel computes with (for checks; never used by forward)."""
        from autotile.ops.qgemm.quant import IntQuantized

        w = self.workload
        if w.w8a8:
            return self.codes.float() * self.scales[:, None]
        return IntQuantized(self.codes, self.scales, self.zeros, w.bits, w.group_size, (w.n, w.k)).dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.shape[-1] != self.in_features:
            raise AutotileError(f"QuantizedLinear takes float32 inputs with {self.in_features} features, "
                                f"got {x.dtype} of shape {tuple(x.shape)}")
        return torch.ops.autotile.qlinear(x, self.codes, self.scales, self.zeros, self.bias, self.plan)

    def extra_repr(self) -> str:
        w = self.workload
        scheme = "w8a8" if w.w8a8 else f"{w.weight_dtype}, group {w.group_size or 'per channel'}" + \
            (", asymmetric" if w.asymmetric else "")
        return f"in_features={self.in_features}, out_features={self.out_features}, {scheme}"
