"""Ahead-of-time compiles of a Program for an NVIDIA target, with no GPU: does it compile, does it fit, and
what did the compiler make of it (shared memory, registers, spills, instruction mix; cost-model features).

Results are cached on disk as JSON keyed by the Program's source, signature, options, target and the Triton
version, so pruning a space twice costs nothing. This module never launches anything.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from autotile.codegen.triton.program import Program
from autotile.codegen.triton.source import load_jit, triton_cache_dir
from autotile.errors import AutotileError

# Shared memory one block may use (the opt-in maximum), per compute capability.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 87: 163 * 1024, 89: 99 * 1024, 90: 227 * 1024}
REGISTER_LIMIT = 255  # per thread
MAX_SPILL_STORES = 8  # a few spilled scalars cost nothing; a spilled accumulator tile costs thousands
TARGETS = {"sm_80": 80, "sm_89": 89, "sm_90": 90}
# SASS opcode families counted for the cost model.
_OPCODE_GROUPS = {
    "mma": ("HMMA", "HGMMA", "IMMA", "QMMA", "QGMMA", "IGMMA", "DMMA"), "ffma": ("FFMA",), "ldg": ("LDG",),
    "stg": ("STG",), "lds": ("LDS", "LDSM"), "sts": ("STS",), "ldgsts": ("LDGSTS",), "tma": ("UTMALDG", "UTMASTG"),
    "bar": ("BAR", "SYNCS"), "spill_store": ("STL",), "spill_load": ("LDL",), "atom": ("ATOM", "ATOMG", "RED"),
}


@dataclass
class CompileInfo:
    arch: int
    ok: bool
    error: str = ""
    shared: int = 0  # bytes of shared memory per block
    registers: int = 0  # per thread
    local_bytes: int = 0  # per-thread local memory (stack and spills)
    spill_stores: int = 0  # STL instructions in the SASS
    instructions: dict = field(default_factory=dict)  # opcode family -> count, "total"
    num_warps: int = 0
    seconds: float = 0.0

    @property
    def fits(self) -> bool:
        """Compiles, fits the target's shared memory, and does not spill more than a few registers."""
        return (self.ok and self.shared <= SHARED_LIMIT.get(self.arch, 99 * 1024)
                and self.registers <= REGISTER_LIMIT and self.spill_stores <= MAX_SPILL_STORES)

    def features(self) -> list[float]:
        """Cost-model features: whether it compiled and fits, then what the compiler made of it (the
        instruction counts are of the whole kernel, so a longer unrolled loop shows up in them)."""
        ins = self.instructions
        return [float(self.ok), float(self.fits), self.shared / 1024, self.registers, self.spill_stores,
                self.local_bytes, ins.get("total", 0), ins.get("mma", 0), ins.get("ffma", 0), ins.get("ldg", 0),
                ins.get("lds", 0), ins.get("ldgsts", 0), ins.get("tma", 0), ins.get("bar", 0), ins.get("atom", 0)]

    @classmethod
    def feature_count(cls) -> int:
        return len(cls(0, False).features())


def arch_of(target) -> int:
    """90, "sm_90", "sm_90a" or "9.0" -> 90."""
    text = str(target).lower().removeprefix("sm_").rstrip("a").replace(".", "")
    if not text.isdigit():
        raise AutotileError(f"unknown CUDA target {target!r}; expected e.g. sm_80, sm_89, sm_90")
    return int(text)


@cache
def _tool(name: str) -> str:
    """The CUDA binary tools Triton ships inside its package."""
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.exists():
        raise AutotileError(f"{name} not found at {path}: the installed Triton has no NVIDIA backend tools")
    return str(path)


def parse_res_usage(text: str) -> dict:
    """`cuobjdump -res-usage` -> {"registers", "local_bytes"} of the first function."""
    m = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", text)
    if not m:
        raise AutotileError(f"could not read register usage from cuobjdump output: {text[:200]!r}")
    return {"registers": int(m.group(1)), "local_bytes": int(m.group(2)) + int(m.group(4))}


def instruction_mix(sass: str) -> dict:
    """Opcode-family counts from `cuobjdump -sass` text."""
    opcodes, tf32 = Counter(), 0
    for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)([\w.]*)", sass):
        opcodes[m.group(1)] += 1
        tf32 += ".TF32" in m.group(2)  # HMMA.1688.F32.TF32 (sm_80), HGMMA.64x128x8.F32.TF32 (sm_90)
    mix = {group: sum(n for op, n in opcodes.items() if op in ops) for group, ops in _OPCODE_GROUPS.items()}
    mix["mma_tf32"] = tf32
    mix["total"] = sum(opcodes.values())
    return mix


def _inspect_cubin(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True,
                               check=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout
    mix = instruction_mix(sass)
    return {**parse_res_usage(usage), "instructions": mix, "spill_stores": mix["spill_store"]}


def _triton_version() -> str:
    import triton

    return triton.__version__


def _cache_path(program: Program, arch: int) -> Path:
    import hashlib

    key = hashlib.sha256(f"v2|{program.key}|{program.attrs()}|sm_{arch}|{_triton_version()}".encode()).hexdigest()
    return triton_cache_dir() / "aot" / f"{key[:32]}.json"


def cached_info(program: Program, target=90) -> CompileInfo | None:
    """The cached compile result of `program` for `target`, or None when it was never compiled here."""
    path = _cache_path(program, arch_of(target))
    try:
        return CompileInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def compile_program(program: Program, target=90, use_cache: bool = True) -> CompileInfo:
    """Compile `program` for `target` (sm_80, sm_89, sm_90...) and report what the compiler produced.
    A compile error is a result (ok=False, error=...), never an exception: pruning must go on."""
    arch = arch_of(target)
    path = _cache_path(program, arch)
    if use_cache and (hit := cached_info(program, arch)) is not None:
        return hit
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    start = time.perf_counter()
    try:
        fn = load_jit(program.source, program.name)
        src = ASTSource(fn=fn, signature=program.signature(), constexprs=dict(program.constexprs),
                        attrs=program.attrs())
        options = {"num_warps": program.num_warps, "num_stages": program.num_stages, "enable_fp_fusion": True}
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
        info = CompileInfo(arch, True, shared=int(compiled.metadata.shared), num_warps=program.num_warps,
                           **_inspect_cubin(compiled.asm["cubin"]))
    except AutotileError:
        raise
    except Exception as e:  # Triton raises many types (CompilationError, RuntimeError from MLIR, ...)
        info = CompileInfo(arch, False, error=f"{type(e).__name__}: {str(e).strip()[-800:]}",
                           num_warps=program.num_warps)
    info.seconds = time.perf_counter() - start
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(info)))
        os.replace(tmp, path)
    return info
