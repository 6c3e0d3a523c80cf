"""A TVM kernel whose weight is transformed once ahead of time, called on torch tensors.

The template supplies two modules: `pack` (weight -> packed weight) and `conv` (the kernel, reading the
packed weight where the plain kernel reads the weight). The packed copy is kept for the last weight seen
(held, so its memory is never reused by another tensor) and made again when another tensor, or the same
one modified in place, is passed. Never used in tuning: the tuner measures the plain kernel, transform
included.
"""

from __future__ import annotations

from autotile.codegen.tvm.build import llvm_target
from autotile.errors import AutotileError


class PrepackedKernel:
    """kernel(input, weight[, bias][, residual], out=None) -> out, the weight (operand 1) packed once."""

    def __init__(self, workload, config, pack_module, main_module, packed_shape):
        self.workload = workload
        self.config = config
        self.pack = pack_module
        self.main = main_module
        self.packed_shape = tuple(int(d) for d in packed_shape)
        self._weight = None  # (the weight tensor, its version when packed)
        self._packed = None

    @classmethod
    def build(cls, workload, config, modules, mcpu: str, threads: int) -> PrepackedKernel:
        """modules: the template's (pack, conv) IRModules and the packed weight's shape."""
        import tvm

        pack, main, shape = modules
        target = llvm_target(mcpu, threads)
        return cls(workload, config, tvm.compile(pack, target), tvm.compile(main, target), shape)

    def packed_weight(self, weight):
        import torch

        if self._weight is None or self._weight[0] is not weight or self._weight[1] != weight._version:
            if tuple(weight.shape) != self.workload.operand_shapes()["weight"] or not weight.is_contiguous():
                raise AutotileError(f"{self.workload.key}: weight must be contiguous with shape "
                                    f"{self.workload.operand_shapes()['weight']}, got {tuple(weight.shape)}")
            packed = torch.empty(self.packed_shape, dtype=weight.dtype, device=weight.device)
            self.pack(weight, packed)
            self._weight, self._packed = (weight, weight._version), packed
        return self._packed

    def __call__(self, x, weight, *rest, out=None):
        import torch

        if out is None:
            out = torch.empty(self.workload.output_shape, dtype=getattr(torch, self.workload.out_dtype),
                              device=x.device)
        self.main(x, self.packed_weight(weight), *rest, out)
        return out
