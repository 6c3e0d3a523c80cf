"""What past measurements teach a new search: the cost model's training rows. This device's come first; while it
has few, other devices' records of the template are extra data (the warm start), each device's throughputs
scaled so its best matches this device's best (the ranking carries over between CPUs, the level does not), kept
apart so the search can weigh them by how well they agree with what it measures here (costmodel/transfer.py)."""

from __future__ import annotations

import math
from typing import NamedTuple

from autotile.costmodel.transfer import OWN_ENOUGH
from autotile.errors import AutotileError


class Past(NamedTuple):
    own: list  # (features, latency scaled to the workload's flops) of this device's records
    foreign: list  # the same of other devices' records, their best scaled to this device's best


def history(db, device, space, workload, backend: str, features=None) -> Past:
    """Past measurements of this space's template as (features, latency scaled to this workload's flops): this
    device's, and other devices' while this one has fewer than OWN_ENOUGH; `features(workload, space, config)`
    defaults to the space's config features."""
    features = features or (lambda _workload, other_space, config: other_space.features(config))
    records = db.measurements(backend=backend, template=space.template)
    own = _rows(db, device, space, workload, [r for r in records if r["device"] == device.key], features)
    if len(own) >= OWN_ENOUGH:
        return Past(own, [])
    own_best = max((_throughput(lat) for _, lat in own), default=None)
    foreign = []
    for key in sorted({r["device"] for r in records} - {device.key}):
        rows = _rows(db, device, space, workload, [r for r in records if r["device"] == key], features)
        best = max((_throughput(lat) for _, lat in rows), default=0.0)
        scale = own_best / best if own_best and best else 1.0  # latency x 1/scale: their best = our best
        foreign += [(row, lat / scale) for row, lat in rows]
    return Past(own, foreign)


def newer_rows(db, device, space, workload, backend: str, since: int) -> tuple[list, int]:
    """This device's records of the template on other workloads measured after record id `since`, as training
    rows (as `history` makes them), and the newest record id seen: what a model run's other tasks, tuned in turns
    with this one, have measured since its searcher last looked."""
    records = [r for r in db.measurements(device=device.key, backend=backend, template=space.template)
               if r["id"] > since]
    newest = max((r["id"] for r in records), default=since)
    others = [r for r in records if r["workload"] != workload.key]
    return _rows(db, device, space, workload, others, lambda _w, other_space, c: other_space.features(c)), newest


def newest_id(db, device, space, backend: str) -> int:
    return max((r["id"] for r in db.measurements(device=device.key, backend=backend, template=space.template)),
               default=0)


def _throughput(latency: float) -> float:
    return 0.0 if not math.isfinite(latency) or latency <= 0 else 1.0 / latency


def _rows(db, device, space, workload, records, features) -> list:
    from autotile.ops import template, workload_from_dict

    out = []
    width = len(features(workload, space, space.default()))
    descriptions = db.workloads()
    for r in records:
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
