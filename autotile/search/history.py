"""What past measurements teach a new search: the cost model's training rows. This device's come first; while it
has few, other devices' records of the template are extra data (the warm start), kept apart so the search can weigh
them by how well they agree with what it measures here (costmodel/transfer.py). The ranking carries over between
CPUs, the level does not: each other device's throughputs are set at this device's level by the configs both
measured (`levels`), else by matching its best to this device's best.
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple

from autotile.costmodel.transfer import OWN_ENOUGH
from autotile.errors import AutotileError


class Past(NamedTuple):
    own: list  # (features, latency scaled to the workload's flops) of this device's records
    foreign: list  # the same of other devices' records, set at this device's level


def history(db, device, space, workload, backend: str, features=None) -> Past:
    """Past measurements of this space's template as (features, latency scaled to this workload's flops): this
    device's, and other devices' while this one has fewer than OWN_ENOUGH; `features(workload, space, config)`
    defaults to the space's config features."""
    features = features or config_features
    records = db.measurements(backend=backend, template=space.template)
    own = _rows(db, device, space, workload, [r for r in records if r["device"] == device.key], features)
    if len(own) >= OWN_ENOUGH:
        return Past(own, [])
    return Past(own, foreign_rows(db, device, space, workload, records, levels(records, device.key), features))


def config_features(_workload, space, config) -> list:
    return space.features(config)


def foreign_rows(db, device, space, workload, records, at: dict, features=config_features) -> list:
    """Other devices' rows of `records`, each device's latencies divided by its level's scale (`at`: `levels`)."""
    out = []
    for key in sorted(at):
        rows = _rows(db, device, space, workload, [r for r in records if r["device"] == key], features)
        out += [(row, lat / at[key].scale) for row, lat in rows]
    return out


class Level(NamedTuple):
    scale: float  # how much faster this device runs the template than the other: their latency / ours
    anchors: int  # the configs both measured, which set it (0: their best matched to ours, or 1 with no own rows)


def levels(records, here: str) -> dict[str, Level]:
    """Per other device among `records` (of one template), its level against this device's: the median ratio of
    the throughputs of the configs both measured, workload for workload (the same kernel, timed on both CPUs);
    with none, their best throughput to ours. Anchoring at the bests told a search whose own rows were only the
    default that the default ran as fast as the other device's best config (the other CPU's best, 277 us, put at
    this one's default, 600 us, for attention), and it bred around the default."""
    fastest = {}  # (device, workload, config key) -> its best GFLOP/s
    for r in records:
        if r["status"] == "ok" and r.get("gflops"):
            key = (r["device"], r["workload"], r["config_key"])
            fastest[key] = max(fastest.get(key, 0.0), r["gflops"])
    mine = {(w, c): g for (d, w, c), g in fastest.items() if d == here}
    out = {}
    for other in sorted({r["device"] for r in records} - {here}):
        theirs = {(w, c): g for (d, w, c), g in fastest.items() if d == other}
        common = sorted(theirs.keys() & mine.keys())
        if common:
            out[other] = Level(statistics.median(mine[k] / theirs[k] for k in common), len(common))
        else:
            out[other] = Level(max(mine.values()) / max(theirs.values()) if mine and theirs else 1.0, 0)
    return out


def newer_rows(db, device, space, workload, backend: str, since: int) -> tuple[list, int]:
    """This device's records of the template on other workloads measured after record id `since`, as training
    rows (as `history` makes them), and the newest record id seen: what a model run's other tasks, tuned in turns
    with this one, have measured since its searcher last looked."""
    records = [r for r in db.measurements(device=device.key, backend=backend, template=space.template)
               if r["id"] > since]
    newest = max((r["id"] for r in records), default=since)
    others = [r for r in records if r["workload"] != workload.key]
    return _rows(db, device, space, workload, others, config_features), newest


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
