"""Which config runs a workload on a device: the one answer the Python API, the CLI and the torch.compile
backend share. The exact workload's best verified record of its template; else the best of the nearest tuned
shape that differs only in size, canonicalized for this one; else the template's heuristic default."""

from __future__ import annotations

import math

from autotile.kernels import family, space_for, workload_from_dict
from autotile.search.tuner import current_best


def shape_distance(op: str, a: dict, b: dict) -> float | None:
    """Log-distance between two workloads' shapes, None when they differ in anything but shape."""
    shape = family(op).shape_fields  # every other field must match for a tuned config to be borrowed
    if {k: v for k, v in a.items() if k not in shape} != {k: v for k, v in b.items() if k not in shape}:
        return None
    return sum(abs(math.log2(a[f] / b[f])) for f in shape)


def choose_config(db, device, workload, backend: str, space=None) -> tuple[object, str]:
    """(config, source) with source "exact", "nearest" or "default"; `db` an open TuningDB or None."""
    space = space or space_for(workload, device.fingerprint)
    if db is None:
        return space.default(), "default"
    best = current_best(db, device, workload, backend, space.template)
    if best is not None:
        return space.config_type.from_dict(best["config"]), "exact"
    mine = workload.to_dict()
    ranked = []
    for key, description in db.workloads().items():
        if description.get("op") == workload.op and key != workload.key:
            d = shape_distance(workload.op, mine, description)
            if d is not None:
                ranked.append((d, key, description))
    for _, _, description in sorted(ranked, key=lambda r: (r[0], r[1])):
        record = current_best(db, device, workload_from_dict(description), backend, space.template)
        if record is None:
            continue
        try:
            config = space.canonical(space.config_type.from_dict(record["config"]))
        except (TypeError, ValueError):  # knobs of an older version of the template
            continue
        if space.valid(config):
            return config, "nearest"
    return space.default(), "default"
