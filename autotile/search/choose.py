"""Which config runs a workload on a device: the one answer the Python API, the CLI and the torch.compile
backend share. The fastest verified record of the exact workload among the templates that compute it, measured or
re-timed here; else the fastest foreign (imported, unverified) record of the exact workload on this device key,
built and verified before its first use like any unmeasured config but never recorded as the best; else the best
of the nearest tuned shape that differs only in size, canonicalized for this one; else the default template's
heuristic default."""

from __future__ import annotations

import math

from autotile.ops import default_template, family, workload_from_dict
from autotile.search.tuner import best_of


def shape_distance(op: str, a: dict, b: dict) -> float | None:
    """Log-distance between two workloads' shapes, None when they differ in anything but shape."""
    shape = family(op).shape_fields  # every other field must match for a tuned config to be borrowed
    if {k: v for k, v in a.items() if k not in shape} != {k: v for k, v in b.items() if k not in shape}:
        return None
    return sum(abs(math.log2(a[f] / b[f])) for f in shape)


def _usable(spaces: dict, record):
    """The record's config, canonical for this workload, or None when its template's space here refuses it (a
    record of an older version of the template, or of another shape that does not carry over)."""
    space = spaces.get(record["template"])
    try:
        config = space.canonical(space.config_type.from_dict(record["config"]))
    except (TypeError, ValueError, AttributeError):
        return None
    return config if space.valid(config) else None


def _foreign(db, device, workload, backend: str, spaces: dict):
    """The fastest usable foreign record's config of this exact task, or None."""
    records = db.measurements(device=device.key, workload=workload.key, backend=backend, status="ok",
                              trust="foreign")
    for record in sorted(records, key=lambda r: (r["latency_us"], r["config_key"])):
        if record["template"] in spaces and (config := _usable(spaces, record)) is not None:
            return config
    return None


def choose_config(db, device, workload, backend) -> tuple[object, str]:
    """(config, source) with source "exact", "foreign", "nearest" or "default"; `db` an open TuningDB or None,
    `backend` an autotile.backends.Backend. Only "exact" is a config verified here: callers verify the others
    before their first use."""
    spaces = {s.template: s for s in backend.spaces(workload, device.fingerprint)}
    if db is not None:
        best = best_of(db, device, workload, backend.name, spaces)
        if best is not None and (config := _usable(spaces, best)) is not None:
            return config, "exact"
        if (config := _foreign(db, device, workload, backend.name, spaces)) is not None:
            return config, "foreign"
        mine = workload.to_dict()
        ranked = []
        for key, description in db.workloads().items():
            if description.get("op") == workload.op and key != workload.key:
                d = shape_distance(workload.op, mine, description)
                if d is not None:
                    ranked.append((d, key, description))
        for _, _, description in sorted(ranked, key=lambda r: (r[0], r[1])):
            record = best_of(db, device, workload_from_dict(description), backend.name, spaces)
            if record is not None and (config := _usable(spaces, record)) is not None:
                return config, "nearest"
    template = default_template(workload, device.fingerprint, backend.name)
    return spaces[template.name].default(), "default"
