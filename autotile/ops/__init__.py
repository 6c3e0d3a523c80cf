"""The op families, one package each: `autotile/ops/<op>/` holds the workload, its templates (config spaces and
their TVM and Triton lowerings), and its `autotile tune <op>` command; its `__init__` declares them in a `FAMILY`
(autotile.ops.family.Family).

This module is the one registry the tuner, the measurer, the kernel cache, the resolver and the CLI iterate:
families are found by listing this package, so a new family or template touches only its own package.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from functools import cache
from pathlib import Path

from autotile.errors import AutotileError
from autotile.ops.family import Family, Template

__all__ = ["Family", "Template", "families", "family", "template", "templates_for", "spaces_for", "space_for",
           "template_of_config", "workload_from_dict"]


@cache
def families() -> dict[str, Family]:
    """Every family, by op name: each subpackage of autotile.ops that declares a FAMILY."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.ispkg:
            declared = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
            if declared is not None:
                found[declared.op] = declared
    return found


def family(op: str) -> Family:
    known = families()
    if op not in known:
        raise AutotileError(f"unknown op {op!r}; expected one of: {', '.join(known)}")
    return known[op]


@cache
def template(name: str) -> Template:
    """The template recorded as `name` ("conv2d.winograd")."""
    for fam in families().values():
        for t in fam.templates:
            if t.name == name:
                return t
    raise AutotileError(f"unknown template {name!r}")


def backend_of(fingerprint: dict | None) -> str:
    """The backend whose templates run on a device: Triton's on a CUDA GPU, TVM's on a CPU."""
    return "triton" if fingerprint and fingerprint.get("kind") == "cuda" else "tvm"


def templates_for(workload, fingerprint: dict | None = None, backend: str | None = None) -> list[Template]:
    """The templates of `backend` (default: the device's) that compute this workload on this device."""
    backend = backend or backend_of(fingerprint)
    found = [t for t in family(workload.op).templates if t.backend == backend and t.applies_to(workload, fingerprint)]
    if not found:
        raise AutotileError(f"{workload.key}: no {backend} template computes this workload")
    return found


def spaces_for(workload, fingerprint: dict | None = None, backend: str | None = None) -> list:
    """The config space of every template that computes this workload on this device."""
    return [t.space_for(workload, fingerprint) for t in templates_for(workload, fingerprint, backend)]


def default_template(workload, fingerprint: dict | None = None, backend: str | None = None) -> Template:
    """The template whose default runs an untuned workload: the first that prefers it, else the first."""
    candidates = templates_for(workload, fingerprint, backend)
    return next((t for t in candidates if t.prefers(workload)), candidates[0])


def space_for(workload, fingerprint: dict | None = None, backend: str | None = None):
    """The config space of the default template (default_template) for this workload on this device."""
    return default_template(workload, fingerprint, backend).space_for(workload, fingerprint)


def triton_space_for(workload, fingerprint: dict | None = None):
    """The Triton config space for this workload on a CUDA device (an H100 when fingerprint is None)."""
    return space_for(workload, fingerprint, backend="triton")


def template_of_config(workload, config) -> Template:
    """The template a config belongs to: every template has its own config type."""
    for t in family(workload.op).templates:
        if t.space_type.config_type is type(config):
            return t
    raise AutotileError(f"{workload.key}: {type(config).__name__} is no template's config")


def encode_config(workload, config) -> tuple[str, dict]:
    """(template name, knobs): a config as sent to a worker process, which decode_config reads back."""
    return template_of_config(workload, config).name, config.to_dict()


def decode_config(payload) -> object:
    """The config encode_config sent; ValueError when the knobs are not its template's."""
    name, values = payload
    return template(name).space_type.config_type.from_dict(values)


def lower(workload, config):
    """The template's lowering of (workload, config): a TVM IRModule or a Triton Program."""
    return template_of_config(workload, config).lower(workload, config)


def tvm_schedule(workload, config):
    """The scheduled TVM IRModule for (workload, config)."""
    mod = lower(workload, config)
    check_buffer_sizes(mod, workload, config)
    return mod


def triton_program(workload, config):
    """The lowered Triton Program (source, launch geometry) for (workload, config)."""
    return lower(workload, config)


def prepacked_operands(workload, config) -> dict[str, tuple[int, ...]]:
    """Operands the TVM kernel for (workload, config) takes pre-transformed by its `pack_<name>` function, run
    once per operand value (a layer's weight), with their packed shapes."""
    return template_of_config(workload, config).prepacked_operands(workload, config)


def workload_from_dict(d: dict):
    return family(d.get("op", "gemm")).workload_type.from_dict(d)


def template_of(op: str, config: dict) -> str | None:
    """The name of the template of `op` whose configs have exactly these knobs, or None (a record of a template
    that no longer exists). How records made before templates were recorded are read."""
    for t in family(op).templates:
        try:
            t.space_type.config_type.from_dict(config)
        except (TypeError, ValueError):
            continue
        return t.name
    return None


def rehome(old_name: str, op: str, workload: dict, config: dict) -> str | None:
    """The template now owning a record made under a former template name: the first that names it `formerly`
    and whose space accepts the config for that workload; None when none does (the record is never read back)."""
    for t in family(op).templates:
        if old_name not in t.formerly:
            continue
        try:
            space = t.space_for(workload_from_dict(workload))
            if space.valid(space.config_type.from_dict(config)):
                return t.name
        except (TypeError, ValueError, AutotileError):
            continue
    return None


def graph_patterns() -> list:
    """Every family's torch.compile graph pattern, in the order the graph pass tries them."""
    from autotile.dotted import resolve

    ordered = sorted((f for f in families().values() if f.pattern), key=lambda f: (f.pattern_order, f.op))
    return [resolve(f.pattern) for f in ordered]


def tvm_template_modules() -> list[str]:
    """Every TVM template's lowering module: what a build worker imports ahead, so no first build waits on it."""
    return [t.lowering_module for fam in families().values() for t in fam.templates if t.backend == "tvm"]


NOT_TVM_CODE = ("triton.py", "cli.py", "pattern.py")  # in a family package, files that never change its TVM code


@cache
def template_digest(op: str | None = None) -> str:
    """Hash of the sources that decide an op's generated TVM code (the IR, its family's package and those it
    builds on, this registry, the TVM code generator), so a changed template never loads a stale library, while
    editing one family (or a Triton template) leaves the others' libraries valid."""
    root = Path(__file__).resolve().parents[1]  # the autotile package
    ops = Path(__file__).resolve().parent
    names = [op, *family(op).builds_on] if op is not None else list(families())
    packages = [p for name in names for p in (ops / name).glob("*.py") if p.name not in NOT_TVM_CODE]
    h = hashlib.sha256()
    for path in sorted([*root.glob("ir/*.py"), *ops.glob("*.py"), *packages, *root.glob("codegen/tvm/*.py")]):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


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
