"""Turn generated Triton source into a @triton.jit function.

Triton reads a kernel's source with `inspect`, so generated code must live in a real file: it is written
once under the kernel cache, named by its hash, and imported from there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from autotile.paths import user_cache_dir

_LOADED: dict = {}


def triton_cache_dir() -> Path:
    env = os.environ.get("AUTOTILE_CACHE_DIR")
    return (Path(env) if env else user_cache_dir() / "kernels") / "triton"


def load_jit(source: str, name: str):
    """The jit function `name` defined by `source` (imported once per process and source)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    key = (digest, name)
    if key not in _LOADED:
        folder = triton_cache_dir() / "src"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"k_{digest}.py"
        if not path.exists() or path.read_text() != source:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(source)
            os.replace(tmp, path)  # atomic: concurrent workers never import half a file
        module_name = f"autotile_triton_k_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        _LOADED[key] = getattr(module, name)
    return _LOADED[key]
