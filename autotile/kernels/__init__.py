"""Template families, one module each, found by op name.

A family is a workload type (in `ir/`), a config space (`kernels/<op>.py`, a ConfigSpace with a
`for_device(workload, fingerprint)` constructor) and a TVM lowering (`kernels/<op>_tvm.py`, a
`schedule(workload, config)` returning an IRModule). The tuner, measurer, cost model and database
only see these three, so a new family adds an entry here, not a new tuner.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from autotile.dotted import resolve as _load
from autotile.errors import AutotileError


@dataclass(frozen=True)
class Family:
    workload: str  # "module:Class" of the workload dataclass
    space: str  # "module:Class" of its ConfigSpace
    tvm_schedule: str  # "module:function" lowering (workload, config) to an IRModule
    triton: str = ""  # module with the GPU template: `Space` (a ConfigSpace) and `program(workload, config)`
    # Prefixes of the kernels/ modules its TVM code is made from (its own, and the GEMM template it builds on):
    # their text keys its compiled libraries.
    sources: tuple[str, ...] = ()
    # The workload fields that set its size; two workloads equal in every other field can share a tuned config
    # (the torch.compile backend borrows the nearest tuned shape's).
    shape_fields: tuple[str, ...] = ()


FAMILIES = {
    "gemm": Family("autotile.ir.workload:GemmWorkload", "autotile.kernels.gemm:GemmSpace",
                   "autotile.kernels.gemm_tvm:schedule", "autotile.kernels.gemm_triton", ("gemm",),
                   ("m", "n", "k", "batch")),
    "conv2d": Family("autotile.ir.conv:Conv2dWorkload", "autotile.kernels.conv2d:Conv2dSpace",
                     "autotile.kernels.conv2d_tvm:schedule", "autotile.kernels.conv2d_triton", ("conv2d", "gemm"),
                     ("n", "c", "h", "w", "k")),
    "attention": Family("autotile.ir.attention:AttentionWorkload", "autotile.kernels.attention:AttentionSpace",
                        "autotile.kernels.attention_tvm:schedule", "autotile.kernels.attention_triton",
                        ("attention",), ("batch", "heads", "seq_q", "seq_kv", "kv_heads")),
    "qgemm": Family("autotile.ir.qgemm:QGemmWorkload", "autotile.kernels.qgemm:QGemmSpace",
                    "autotile.kernels.qgemm_tvm:schedule", "autotile.kernels.qgemm_triton", ("qgemm", "gemm"),
                    ("m", "n", "k")),
    "layernorm": Family("autotile.ir.norm:LayerNormWorkload", "autotile.kernels.layernorm:LayerNormSpace",
                        "autotile.kernels.layernorm_tvm:schedule", "", ("layernorm",), ("rows",)),
}


def tvm_template_modules() -> list[str]:
    """Every family's TVM template module: what a build worker imports ahead, so no first build waits on it."""
    return [f.tvm_schedule.partition(":")[0] for f in FAMILIES.values()]


@cache
def template_digest(op: str | None = None) -> str:
    """Hash of the sources that decide an op's generated TVM code (the workloads, its template modules, the
    TVM code generator), so a changed template never loads a stale library, while editing one family (or a
    Triton template) leaves the others' libraries valid."""
    root = Path(__file__).resolve().parents[1]  # the autotile package
    prefixes = family(op).sources if op is not None else None
    kernels = [p for p in root.glob("kernels/*.py") if not p.stem.endswith("_triton")
               and (prefixes is None or p.stem in ("__init__", "space") or p.stem.startswith(prefixes))]
    h = hashlib.sha256()
    for path in sorted([*root.glob("ir/*.py"), *kernels, *root.glob("codegen/tvm/*.py")]):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def family(op: str) -> Family:
    if op not in FAMILIES:
        raise AutotileError(f"unknown op {op!r}; expected one of: {', '.join(FAMILIES)}")
    return FAMILIES[op]


def space_for(workload, fingerprint: dict | None = None):
    """The config space of the template family that implements this workload on this device: the
    Triton template's on a CUDA device, the TVM template's on a CPU."""
    if fingerprint and fingerprint.get("kind") == "cuda":
        return triton_space_for(workload, fingerprint)
    return _load(family(workload.op).space).for_device(workload, fingerprint)


def tvm_schedule(workload, config):
    """The scheduled TVM IRModule for (workload, config)."""
    mod = _load(family(workload.op).tvm_schedule)(workload, config)
    check_buffer_sizes(mod, workload, config)
    return mod


def check_buffer_sizes(mod, workload, config) -> None:
    """A clear error for a buffer too large for TVM's 32-bit indices, which it would report from deep inside
    its compiler. Operands are refused when the workload is made; what a config allocates (padded to whole
    tiles, packed panels) can still be larger, so a near-limit workload may build with some configs only."""
    import math

    from tvm.s_tir.analysis import detect_buffer_access_lca

    from autotile.ir.workload import MAX_OPERAND_ELEMENTS

    for func in mod.functions.values():
        for buffer in detect_buffer_access_lca(func):
            dims = [getattr(d, "value", None) for d in buffer.shape]
            if buffer.scope() != "global" or None in dims:
                continue  # local tiles are compacted to their footprint; symbolic shapes are bound at the call
            if math.prod(dims) > MAX_OPERAND_ELEMENTS:
                raise AutotileError(
                    f"{workload.key}: config {config.key} needs a buffer {buffer.name} "
                    f"({' x '.join(map(str, dims))}) of {math.prod(dims):,} elements; TVM indexes with 32-bit "
                    f"integers, so a buffer holds at most 2**31 - 1 = {MAX_OPERAND_ELEMENTS:,} elements")


def prepacked_operands(workload, config) -> dict[str, tuple[int, ...]]:
    """Operands the TVM kernel for (workload, config) takes pre-transformed by its `pack_<name>` function, run
    once per operand value (a layer's weight), with their packed shapes; the template module may define it."""
    import importlib

    module = importlib.import_module(family(workload.op).tvm_schedule.split(":")[0])
    hook = getattr(module, "prepacked_operands", None)
    return hook(workload, config) if hook else {}


def triton_template(op: str):
    """The module of this op's Triton template (kernels/<op>_triton.py)."""
    import importlib

    name = family(op).triton
    if not name:
        raise AutotileError(f"op {op!r} has no Triton template yet")
    return importlib.import_module(name)


def triton_space_for(workload, fingerprint: dict | None = None):
    """The Triton config space for this workload on a CUDA device (an H100 when fingerprint is None)."""
    return triton_template(workload.op).Space.for_device(workload, fingerprint)


def triton_program(workload, config):
    """The lowered Triton Program (source, launch geometry) for (workload, config)."""
    return triton_template(workload.op).program(workload, config)


def workload_from_dict(d: dict):
    return _load(family(d.get("op", "gemm")).workload).from_dict(d)
