"""Compile scheduled TVM modules for a CPU, write them as libraries, and call them on torch tensors.

Knows TVM and torch, nothing of templates or tuning: what to lower, where libraries are cached and which
operands a template packs ahead are its callers' (autotile.search.artifacts).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from autotile.errors import AutotileError


def toolchain_versions() -> dict:
    import tvm
    import tvm_ffi

    import autotile

    return {"autotile": autotile.__version__, "tvm": tvm.__version__, "tvm_ffi": tvm_ffi.__version__}


def llvm_target(mcpu: str, threads: int, mattr=()):
    """The LLVM target for a CPU: its mcpu and, from its flags (autotile.db.device.llvm_mattr), the features the
    mcpu name may not imply; without them LLVM aborts the process on an intrinsic it cannot select."""
    import tvm

    spec = {"kind": "llvm", "mcpu": mcpu, "num-cores": int(threads)}
    if mattr:
        spec["mattr"] = list(mattr)
    return tvm.target.Target(spec)


def compile_module(module, mcpu: str, threads: int, mattr=()):
    """A scheduled IRModule compiled for a CPU: the Executable (not yet written anywhere)."""
    import tvm

    return tvm.compile(module, llvm_target(mcpu, threads, mattr))


def export(executable, path: Path) -> Path:
    """Write the library atomically: a crash never leaves a half-written .so to be loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        executable.export_library(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def packed_spec(spec) -> tuple[tuple[int, ...], str | None]:
    """(shape, dtype) of an operand packed ahead: a template names its packed shape, and its dtype when that is not
    the operand's own (16-bit floats packed as their bits, the uint16 that vdpbf16ps tiles read)."""
    if spec and isinstance(spec[-1], str):
        return tuple(spec[0]), spec[1]
    return tuple(spec), None


class CompiledKernel:
    """A compiled kernel called on torch tensors without copies (DLPack), but for operands it cannot read in place
    (see ALIGNMENT and INDEX_LIMIT), which are copied.

    kernel(A, B[, bias][, residual], out=None) -> C, operands in the workload's order.

    Some kernels read an operand that is constant across calls (a weight) in a packed layout: the library
    then holds `pack_<name>(operand, packed)` too, run on the first call and again only when another tensor,
    or the same one changed in place, is passed. The packed copy is kept with the tensor it came from (held,
    so its memory is never reused by another tensor).
    """

    # TVM declares every buffer a kernel takes 64-byte aligned (its default) and checks nothing at the call: LLVM
    # is told so (`llvm.assume` align 64) and emits aligned vector moves (vmovaps), which fault on any other
    # address. An operand elsewhere (a view into a larger tensor: `x[1:]`, `split`, `narrow`) is copied.
    ALIGNMENT = 64
    # TVM indexes in int32: a strided operand whose last element lies further from its first is copied too.
    INDEX_LIMIT = 2**31 - 1

    def __init__(self, workload, config, module, path: Path | None = None, prepacked: dict | None = None):
        """`prepacked`: operand name -> packed shape, for the operands this template packs ahead (its library
        then has `pack_<name>`); autotile.search.artifacts.compiled fills it in from the template."""
        import torch

        self.workload = workload
        self.config = config
        self.config_key = config.key  # read on every call that passes a Packed operand: built once
        self.module = module
        self.path = path
        self._shapes = workload.operand_shapes()
        # (name, shape, read through strides) per operand, the output last: checked on every call, so kept ready
        self._checks = [(name, torch.Size(shape), name in workload.strided_operands)
                        for name, shape in self._shapes.items()]
        self._out_dtype = getattr(torch, workload.out_dtype)
        self._prepacked = {name: (list(self._shapes).index(name), module[f"pack_{name}"], packed_spec(spec))
                           for name, spec in (prepacked or {}).items()}
        self._packed: dict[str, tuple] = {}  # name -> (tensor, its stamp when packed, packed copy)

    def __call__(self, *inputs, out=None):
        import torch

        if len(inputs) != len(self._checks) - 1:
            names = [name for name, _, _ in self._checks]
            raise AutotileError(f"{self.workload.key} takes {len(names) - 1} inputs ({', '.join(names[:-1])}), "
                                f"got {len(inputs)}")
        if out is None:
            out = torch.empty(self._checks[-1][1], dtype=self._out_dtype, device=inputs[0].device)
        addresses = 0  # every operand's address OR-ed together: one test for all of them below
        for (name, shape, strided), t in zip(self._checks, (*inputs, out)):
            if t.__class__ is Packed:
                continue  # checked when it was packed
            if t.shape != shape:
                raise AutotileError(f"{self.workload.key}: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
            if strided:
                if t.dim() and t.stride(-1) != 1:
                    raise AutotileError(f"{self.workload.key}: {name} needs unit stride in its last dim "
                                        f"(strides {t.stride()})")
                if t.untyped_storage().nbytes() >> 31 and self._span(t) > self.INDEX_LIMIT:
                    addresses |= 1  # out of int32 offsets' reach (only a view of a huge tensor can be): copied
            elif not t.is_contiguous():
                raise AutotileError(f"{self.workload.key}: {name} must be contiguous (strides {t.stride()})")
            addresses |= t.data_ptr()
        if self._prepacked:
            inputs = list(inputs)
            for name, (index, _, _) in self._prepacked.items():
                inputs[index] = self._packed_operand(name, inputs[index])
        if addresses & 63:  # ALIGNMENT - 1
            return self._call_realigned(inputs, out)
        self.module(*inputs, out)
        return out

    def _call_realigned(self, inputs, out):
        """The call when some operand is one the kernel cannot take in place (not ALIGNMENT-aligned, or strided
        beyond INDEX_LIMIT): those inputs are copied, and a misplaced `out` is written through a fresh tensor."""
        inputs = [t if t.__class__ is Packed or not self._needs_copy(t) else self.aligned_copy(t) for t in inputs]
        if not self._needs_copy(out):
            self.module(*inputs, out)
            return out
        result = self.aligned_empty(out.shape, out.dtype, out.device)
        self.module(*inputs, result)
        return out.copy_(result)

    def pack_operand(self, name: str, t):
        """`t` as this kernel reads operand `name`: a `Packed` copy if it is one the kernel packs ahead
        (callers that keep one per weight pass it back in place of the tensor), else `t` itself."""
        import torch

        if name not in self._prepacked:
            return t
        _, pack, (shape, dtype) = self._prepacked[name]
        if tuple(t.shape) != self._shapes[name] or not t.is_contiguous():
            raise AutotileError(f"{self.workload.key}: {name} must be contiguous with shape {self._shapes[name]}, "
                                f"got shape {tuple(t.shape)} strides {t.stride()}")
        packed = self.aligned_empty(shape, t.dtype if dtype is None else getattr(torch, dtype), t.device)
        pack(t.detach() if not self._needs_copy(t) else self.aligned_copy(t.detach()), packed)
        return Packed(packed, self.config_key)

    def _packed_operand(self, name: str, t):
        if isinstance(t, Packed):
            if t.config_key != self.config_key:
                raise AutotileError(f"{self.workload.key}: {name} was packed for another kernel ({t.config_key})")
            return t.tensor
        stamp = None if t.is_inference() else (t._version, t.data_ptr())  # inference tensors have no version
        entry = self._packed.get(name)
        if stamp is not None and entry is not None and entry[0] is t and entry[1] == stamp:
            return entry[2]
        packed = self.pack_operand(name, t).tensor
        if stamp is not None:
            self._packed[name] = (t, stamp, packed)
        return packed

    @staticmethod
    def _span(t) -> int:
        """How many elements past its first a tensor's last element lies."""
        return sum((n - 1) * s for n, s in zip(t.shape, t.stride()))

    @classmethod
    def _needs_copy(cls, t) -> bool:
        return t.data_ptr() % cls.ALIGNMENT != 0 or (not t.is_contiguous() and cls._span(t) > cls.INDEX_LIMIT)

    @classmethod
    def aligned_empty(cls, shape, dtype, device):
        """An uninitialized contiguous tensor whose data starts at a multiple of ALIGNMENT bytes: torch's CPU
        allocator gives that; should another allocator not, the tensor is cut from a slightly larger one."""
        import torch

        t = torch.empty(shape, dtype=dtype, device=device)
        if t.data_ptr() % cls.ALIGNMENT == 0:
            return t
        size = t.numel() * t.element_size()
        raw = torch.empty(size + cls.ALIGNMENT, dtype=torch.uint8, device=device)
        start = -raw.data_ptr() % cls.ALIGNMENT
        return raw[start:start + size].view(dtype).view(shape)

    @classmethod
    def aligned_copy(cls, t):
        """A contiguous copy of `t` starting at a multiple of ALIGNMENT bytes."""
        return cls.aligned_empty(t.shape, t.dtype, t.device).copy_(t)


class Packed:
    """An operand already in a kernel's packed layout, made by `CompiledKernel.pack_operand`."""

    __slots__ = ("tensor", "config_key")

    def __init__(self, tensor, config_key: str):
        self.tensor = tensor
        self.config_key = config_key

    @property
    def shape(self):
        return self.tensor.shape
