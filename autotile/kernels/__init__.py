"""Template families, one module each, found by op name.

A family is a workload type (in `ir/`), a config space (`kernels/<op>.py`, a ConfigSpace with a
`for_device(workload, fingerprint)` constructor) and a TVM lowering (`kernels/<op>_tvm.py`, a
`schedule(workload, config)` returning an IRModule). The tuner, measurer, cost model and database
only see these three, so a new family adds an entry here, not a new tuner.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotile.errors import AutotileError


@dataclass(frozen=True)
class Family:
    workload: str  # "module:Class" of the workload dataclass
    space: str  # "module:Class" of its ConfigSpace
    tvm_schedule: str  # "module:function" lowering (workload, config) to an IRModule


FAMILIES = {
    "gemm": Family("autotile.ir.workload:GemmWorkload", "autotile.kernels.gemm:GemmSpace",
                   "autotile.kernels.gemm_tvm:schedule"),
    "conv2d": Family("autotile.ir.conv:Conv2dWorkload", "autotile.kernels.conv2d:Conv2dSpace",
                     "autotile.kernels.conv2d_tvm:schedule"),
    "attention": Family("autotile.ir.attention:AttentionWorkload", "autotile.kernels.attention:AttentionSpace",
                        "autotile.kernels.attention_tvm:schedule"),
    "qgemm": Family("autotile.ir.qgemm:QGemmWorkload", "autotile.kernels.qgemm:QGemmSpace",
                    "autotile.kernels.qgemm_tvm:schedule"),
}


def _load(dotted: str):
    from autotile.search.worker import resolve

    return resolve(dotted)


def family(op: str) -> Family:
    if op not in FAMILIES:
        raise AutotileError(f"unknown op {op!r}; expected one of: {', '.join(FAMILIES)}")
    return FAMILIES[op]


def space_for(workload, fingerprint: dict | None = None):
    """The config space of the template family that implements this workload on this device."""
    return _load(family(workload.op).space).for_device(workload, fingerprint)


def tvm_schedule(workload, config):
    """The scheduled TVM IRModule for (workload, config)."""
    return _load(family(workload.op).tvm_schedule)(workload, config)


def workload_from_dict(d: dict):
    return _load(family(d.get("op", "gemm")).workload).from_dict(d)
