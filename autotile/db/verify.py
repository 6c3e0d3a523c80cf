"""`autotile db verify`: foreign records of this device made trustworthy by doing their work again here.

For each workload, the few fastest foreign records of this device key are rebuilt, verified against the reference
and timed by the session's measurer (the tuner's own: one build and one timing of 15 repeats each). One that passes
becomes `verified`, its latency the local figure with the foreign one kept beside it (foreign_latency_us); one that
fails here is recorded failed with its reason, as a local measurement, and is never served.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from autotile.db.store import _now, _retry

VERIFY_REPEAT = 15  # a foreign record timed here: as many repeats as a careful re-measurement


@dataclass
class Verified:
    workload: str
    candidates: int  # foreign ok records of this device and workload
    built: int  # rebuilt, verified and timed here (at most top_k)
    verified: int
    failed: int
    best_local_us: float | None  # the fastest verified record's local latency
    its_foreign_us: float | None  # what the bundle said of that record

    def to_json_dict(self) -> dict:
        return asdict(self)


def verify_foreign(session, top_k: int = 3, workload: str | None = None, progress=None) -> list[Verified]:
    """Verify the `top_k` fastest foreign records of each workload (keys starting with `workload`) on the session's
    device and backend; `progress(text)` is told which workload is being verified."""
    from autotile.ops import workload_from_dict
    from autotile.search.choose import _usable

    db, device, backend = session.db, session.device, session.backend
    versions = backend.versions()
    foreign: dict = {}
    for r in db.measurements(device=device.key, backend=backend.name, status="ok", trust="foreign"):
        if workload is None or r["workload"].startswith(workload):
            foreign.setdefault(r["workload"], []).append(r)
    descriptions = db.workloads()
    report = []
    for key in sorted(foreign):
        w = workload_from_dict(descriptions[key])
        spaces = {s.template: s for s in backend.spaces(w, device.fingerprint)}
        chosen = []  # (record, config): the fastest usable ones, by what their bundle said
        for record in sorted(foreign[key], key=lambda r: (r["latency_us"], r["config_key"])):
            config = _usable(spaces, record)
            if config is not None and config.key == record["config_key"]:
                chosen.append((record, config))
            if len(chosen) == top_k:
                break
        if progress:
            progress(f"verifying {len(chosen)} of {len(foreign[key])} foreign record(s) of {key}")
        # One build and one timing each, with the repeats the tuner gives its final re-measurement.
        results = session.measurer.measure(w, [c for _, c in chosen], repeat=VERIFY_REPEAT) if chosen else []
        for (record, _), result in zip(chosen, results):
            _write(db, record, result, versions)
        ok = [(r, res) for (r, _), res in zip(chosen, results) if res.ok]
        best = min(ok, key=lambda pair: pair[1].latency_us, default=None)
        report.append(Verified(key, len(foreign[key]), len(chosen), len(ok), len(chosen) - len(ok),
                               best[1].latency_us if best else None, best[0]["latency_us"] if best else None))
    return report


def _write(db, record: dict, result, versions: dict) -> None:
    """The record as measured here: verified with the local latency, or failed here (a local fact)."""
    fields = {"versions": json.dumps(versions, sort_keys=True), "threads": result.threads, "timestamp": _now(),
              "foreign_latency_us": record["latency_us"], "run_id": None}
    if result.ok:
        fields.update(trust="verified", latency_us=result.latency_us, gflops=result.gflops,
                      latency=json.dumps(result.latency, sort_keys=True))
    else:
        fields.update(trust="local", status="failed", failure=result.failure.value, error=result.error,
                      latency_us=None, latency=None, gflops=None)

    def write():
        with db.db.conn:
            db.db["measurements"].update(record["id"], fields)

    _retry(write)
