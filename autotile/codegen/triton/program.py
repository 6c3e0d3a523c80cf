"""A lowered Triton kernel: generated source plus everything needed to compile or launch it.

A Program is a plain value built by a template (`ops/<op>/triton.py`) from (workload, config). It knows
nothing of devices: the same Program is compiled ahead of time for sm_80/sm_90 and launched on a GPU or
under TRITON_INTERPRET=1.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

# Triton's names for element types in signatures, and the tl attribute of each.
SIGNATURE_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float8_e4m3": "fp8e4nv",
                   "float8_e5m2": "fp8e5", "int8": "i8", "uint8": "u8", "int32": "i32"}
TL_TYPES = {"float32": "tl.float32", "float16": "tl.float16", "bfloat16": "tl.bfloat16",
            "float8_e4m3": "tl.float8e4nv", "float8_e5m2": "tl.float8e5", "int8": "tl.int8", "uint8": "tl.uint8",
            "int32": "tl.int32"}


def kernel_source(name: str, params: list[str], body: list[str]) -> str:
    """A module defining `@triton.jit def name(params)` with `body` (lines, indented relative to the def)."""
    head = ["import triton", "import triton.language as tl", "", "", "@triton.jit", f"def {name}({', '.join(params)}):"]
    return "\n".join(head + ["    " + line for line in body]) + "\n"


@dataclass(frozen=True)
class Scratch:
    """A zero-filled buffer the kernel needs beside its operands (split-K partials, tile counters); kernels
    that use counters leave them zero again, so one allocation serves every launch."""

    name: str
    numel: int
    dtype: str  # "float32" or "int32"


@dataclass(frozen=True)
class Program:
    source: str  # a module defining one @triton.jit function `name`
    name: str
    tensors: tuple[str, ...]  # workload operand names in call order (output last), each passed as <name>_ptr
    scalars: tuple[tuple[str, int], ...]  # runtime integer arguments after the tensors
    constexprs: tuple[tuple[str, object], ...]
    grid: tuple[int, ...]
    num_warps: int
    num_stages: int
    dtypes: tuple[str, ...] = ()  # element type per tensor, for the AOT signature
    scratch: tuple[Scratch, ...] = ()
    persistent: bool = False  # grid[0] is the tile count; launch caps it at the device's SM count
    meta: dict = field(default_factory=dict, hash=False, compare=False)

    def signature(self) -> dict[str, str]:
        """Triton's signature for ASTSource: pointers, i32 scalars, then the constexprs."""
        sig = {f"{n}_ptr": "*" + SIGNATURE_TYPES[d] for n, d in zip(self.tensors, self.dtypes)}
        sig.update({f"{s.name}_ptr": "*" + SIGNATURE_TYPES[s.dtype] for s in self.scratch})
        sig.update({name: "i32" for name, _ in self.scalars})
        if self.persistent:
            sig["NUM_PROGRAMS"] = "i32"
        sig.update({name: "constexpr" for name, _ in self.constexprs})
        return sig

    def attrs(self) -> dict:
        """What Triton's JIT would specialize at launch: every pointer 16-byte aligned (torch allocations
        are), i32 scalars divisible by 16 where they are. Without it AOT compiles of 16-bit loads lose their
        vector width and cp.async pipelining, and report a different kernel than the one that runs."""
        divisible = [["tt.divisibility", 16]]
        attrs = {}
        values = dict(self.scalars)
        for i, (name, kind) in enumerate(self.signature().items()):
            if kind.startswith("*") or (kind == "i32" and name in values and values[name] % 16 == 0):
                attrs[(i,)] = divisible
        return attrs

    @property
    def key(self) -> str:
        """sha256 of everything that changes the compiled kernel."""
        blob = json.dumps([self.source, self.name, self.signature(), [list(c) for c in self.constexprs],
                           self.num_warps, self.num_stages], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()
