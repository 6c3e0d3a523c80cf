"""The IR every family shares: the workload base and epilogue chain (workload.py), dtypes, reference
implementations and the one definition of "verified" (reference.py).

Each family's own workload lives in its package (autotile/ops/<op>/workload.py); the public ones are named here
too, imported on first use: `from autotile.ir import GemmWorkload, Conv2dWorkload, ...`.
"""

from autotile.ir.dtypes import DTYPES, dtype
from autotile.ir.workload import parse_epilogue

_WORKLOADS = {
    "GemmWorkload": "autotile.ops.gemm.workload",
    "Conv2dWorkload": "autotile.ops.conv2d.workload",
    "AttentionWorkload": "autotile.ops.attention.workload",
    "QGemmWorkload": "autotile.ops.qgemm.workload",
    "LayerNormWorkload": "autotile.ops.layernorm.workload",
}

__all__ = ["DTYPES", "dtype", "parse_epilogue", *_WORKLOADS]


def __getattr__(name):
    if name in _WORKLOADS:
        import importlib

        return getattr(importlib.import_module(_WORKLOADS[name]), name)
    raise AttributeError(f"module 'autotile.ir' has no attribute {name!r}")
