"""Where autotile keeps its files by default: under the user's cache directory."""

import os
from pathlib import Path


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autotile"


def kernel_cache_dir() -> Path:
    """Where compiled kernel libraries are kept: $AUTOTILE_CACHE_DIR, else the user cache dir's kernels/."""
    env = os.environ.get("AUTOTILE_CACHE_DIR")
    return Path(env) if env else user_cache_dir() / "kernels"
