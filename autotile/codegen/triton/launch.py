"""A Program launched on torch tensors: `kernel(*inputs, out=out)`, the calling convention `ir.reference.verify`
and the measurer use. Runs on a CUDA device, or on CPU tensors under TRITON_INTERPRET=1 (tests).
"""

from __future__ import annotations

from autotile.codegen.triton.program import Program
from autotile.codegen.triton.source import load_jit
from autotile.errors import AutotileError

_ALLOCATOR_SET = False


def _tma_allocator():
    """Device-side tensor descriptors live in global scratch that Triton asks the host for."""
    global _ALLOCATOR_SET
    if not _ALLOCATOR_SET:
        import torch
        import triton

        triton.set_allocator(lambda size, alignment, stream: torch.empty(size, device="cuda", dtype=torch.int8))
        _ALLOCATOR_SET = True


def _interpreted(fn) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(fn, InterpretedFunction)


class TritonKernel:
    def __init__(self, workload, config, program: Program):
        self.workload, self.config, self.program = workload, config, program
        self.fn = load_jit(program.source, program.name)
        self._scratch: dict = {}

    def _scratch_for(self, device):
        import torch

        if device not in self._scratch:
            self._scratch[device] = [torch.zeros(max(s.numel, 1), dtype=getattr(torch, s.dtype), device=device)
                                     for s in self.program.scratch]
        return self._scratch[device]

    def grid(self, device) -> tuple[int, ...]:
        grid = self.program.grid
        if self.program.persistent and device.type == "cuda":
            import torch

            sms = torch.cuda.get_device_properties(device).multi_processor_count
            grid = (min(grid[0], sms), *grid[1:])
        return grid

    def pack_operand(self, name: str, t):
        """`t` itself: no Triton template takes an operand packed ahead (the TVM kernels' interface)."""
        return t

    def __call__(self, *inputs, out=None):
        if out is None:
            import torch

            shape = list(self.workload.operand_shapes().values())[-1]
            out = torch.empty(shape, dtype=getattr(torch, self.workload.out_dtype), device=inputs[0].device)
        tensors = (*inputs, out)
        self.workload.check_operands(tensors)
        if not out.is_contiguous():
            raise AutotileError(f"{self.workload.key}: the output tensor must be contiguous")
        device = out.device
        if device.type == "cuda":
            _tma_allocator()
        elif not _interpreted(self.fn):
            raise AutotileError(f"{self.workload.key}: Triton kernels run on CUDA tensors, got {device.type} tensors; "
                                "CPU tensors work only when TRITON_INTERPRET=1 was set before the kernels were "
                                "imported (autotile.search.triton_tasks)")
        args = [t if t.is_contiguous() else t.contiguous() for t in inputs] + [out]
        args += self._scratch_for(device)
        args += [value for _, value in self.program.scalars]
        grid = self.grid(device)
        if self.program.persistent:
            args.append(grid[0])
        self.fn[grid](*args, **dict(self.program.constexprs), num_warps=self.program.num_warps,
                      num_stages=self.program.num_stages)
        return out
