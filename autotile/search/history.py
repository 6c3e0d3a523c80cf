"""What a device's past measurements teach a new search: the cost model's training rows."""

from __future__ import annotations

import math

from autotile.errors import AutotileError


def history(db, device, space, workload, backend: str, features=None) -> list:
    """Past measurements of this space's template on this device as (features, latency scaled to this workload's
    flops); `features(workload, space, config)` defaults to the space's config features."""
    from autotile.ops import template, workload_from_dict

    features = features or (lambda _workload, other_space, config: other_space.features(config))
    out = []
    width = len(features(workload, space, space.default()))
    descriptions = db.workloads()
    for r in db.measurements(device=device.key, backend=backend, template=space.template):
        try:
            other = workload if r["workload"] == workload.key else workload_from_dict(descriptions[r["workload"]])
            other_space = space if other is workload else template(space.template).space_for(other, device.fingerprint)
            config = other_space.config_type.from_dict(r["config"])
        except (KeyError, TypeError, ValueError, AutotileError):  # a record this version cannot read: skipped
            continue
        if other.op != workload.op:
            continue
        row = features(other, other_space, config)
        if len(row) != width:
            continue
        latency = math.inf if r["status"] != "ok" else workload.flops / (r["gflops"] * 1e3)
        out.append((row, latency))
    return out
