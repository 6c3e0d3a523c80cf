"""Accepted bundles applied to a tuning database, all in one transaction: `autotile db import` and `db merge`.

A foreign record never overwrites a record measured or verified here. Two records of the same key (device,
workload, backend, config) from different sources are settled by content alone (see `rank`), so importing A then
B gives the same database as B then A, and importing a bundle twice changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from autotile.db import bundle as bundles
from autotile.db.store import SCHEMA_VERSION, SERVED, TuningDB, _now, kernel_latency
from autotile.errors import AutotileError

# The fields that make a record what it is; origin and trust say where it came from and whether it is believed.
CONTENT = ("device", "workload", "backend", "template", "config_key", "config", "status", "failure", "error",
           "latency", "gflops", "threads", "versions", "timestamp")


@dataclass
class ImportSummary:
    bundles: int = 0
    devices: int = 0  # new in the database
    workloads: int = 0
    inserted: int = 0  # records new to the database
    replaced: int = 0  # foreign records replaced by a better-ranked foreign one
    kept_local: int = 0  # records skipped: the database measured or verified that config itself
    unchanged: int = 0  # records the database already held (or held a better-ranked foreign one of)

    def to_json_dict(self) -> dict:
        return asdict(self)


def digest(record: dict) -> str:
    """SHA-256 of a record's content (JSON columns decoded), the same for a bundle line and the row it became."""
    content = {k: record.get(k) for k in CONTENT}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def rank(record: dict) -> tuple:
    """Smaller wins: believed here (local, verified) before foreign, ok before failed, then the faster, then the
    smaller content hash and origin (a total order, so the order of imports never matters)."""
    ok = record["status"] == "ok"
    return (record["trust"] not in SERVED, not ok, record["latency_us"] if ok else math.inf, digest(record),
            record["origin"])


def _row(m: dict, sha256: str, keep_trust: bool) -> dict:
    """A bundle line as a database row (JSON columns decoded). Imported, it is foreign: its origin names the bundle,
    unless the exporter had itself imported it (then it keeps the origin it came with)."""
    ok = m["status"] == "ok"
    latency = kernel_latency(m["latency"]) if ok else None
    if keep_trust:
        origin, trust, foreign = m["origin"], m["trust"], m["foreign_latency_us"]
    else:
        relayed = m["trust"] == "foreign" and m["origin"] != "local"
        origin, trust, foreign = (m["origin"] if relayed else f"bundle:{sha256[:12]}"), "foreign", latency
    return {**{k: m[k] for k in CONTENT}, "latency_us": latency, "run_id": None, "origin": origin, "trust": trust,
            "foreign_latency_us": foreign}


def _encoded(row: dict) -> dict:
    """A row as stored: JSON columns as text, the way TuningDB.record_measurement writes them."""
    return {**row, "config": json.dumps(row["config"], sort_keys=True),
            "latency": json.dumps(row["latency"], sort_keys=True) if row["latency"] else None,
            "versions": json.dumps(row["versions"] or {}, sort_keys=True)}


def apply(db: TuningDB, accepted: list, keep_trust: bool = False) -> ImportSummary:
    """Write accepted bundles (bundle.Bundle) into `db` in one transaction; nothing is written if any write fails."""
    summary = ImportSummary(bundles=len(accepted))
    incoming: dict = {}  # key -> best-ranked row over all the bundles
    devices, workloads = {}, {}
    for b in accepted:
        devices.update(b.devices)
        workloads.update(b.workloads)
        for m in b.measurements:
            row = _row(m, b.sha256, keep_trust)
            key = (row["device"], row["workload"], row["backend"], row["config_key"])
            if key not in incoming or rank(row) < rank(incoming[key]):
                incoming[key] = row
    conn = db.db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: never upgraded mid-way under other writers
        new_devices = [{"key": k, "kind": fp.get("kind", "cpu"), "fingerprint": json.dumps(fp, sort_keys=True),
                        "first_seen": _now()} for k, fp in sorted(devices.items())
                       if db.db["devices"].count_where("key = ?", [k]) == 0]
        new_workloads = [{"key": k, "op": w.op, "description": json.dumps(w.to_dict(), sort_keys=True)}
                         for k, w in sorted(workloads.items()) if db.db["workloads"].count_where("key = ?", [k]) == 0]
        db.db["devices"].insert_all(new_devices)
        db.db["workloads"].insert_all(new_workloads)
        summary.devices, summary.workloads = len(new_devices), len(new_workloads)
        inserts, replacements = [], []
        tasks: dict = {}
        for key in sorted(incoming):
            tasks.setdefault(key[:3], []).append(key)
        for task, keys in tasks.items():
            existing = {r["config_key"]: r for r in db.measurements(*task)}
            for key in keys:
                row, there = incoming[key], existing.get(key[3])
                if there is None:
                    inserts.append(_encoded(row))
                elif there["trust"] in SERVED and not keep_trust:
                    summary.kept_local += 1
                elif rank(row) < rank(there):
                    replacements.append({**_encoded(row), "id": there["id"]})
                else:
                    summary.unchanged += 1
        _write_rows(conn, inserts, "insert")
        _write_rows(conn, replacements, "insert or replace")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    summary.inserted, summary.replaced = len(inserts), len(replacements)
    return summary


def _write_rows(conn, rows: list, verb: str) -> None:
    """Rows of one shape in one executemany: a third of the time of insert_all's per-value checks, which a 10,000
    record import (target: under 2 s) notices; the values are already checked and encoded."""
    if rows:
        columns = list(rows[0])
        conn.executemany(f"{verb} into measurements ({', '.join(f'[{c}]' for c in columns)}) values "
                         f"({', '.join('?' * len(columns))})", [[r[c] for c in columns] for r in rows])


def import_bundles(db: TuningDB, paths) -> ImportSummary:
    """Import bundle files: all are read and checked first, so one refused bundle imports none of them."""
    accepted = [bundles.read_bundle(p) for p in paths]
    try:
        return apply(db, accepted)
    except sqlite3.Error as e:
        raise AutotileError(f"import into {db.path} failed, nothing written: {e}") from None


def merge_databases(sources, out) -> ImportSummary:
    """A new database `out` with every record of `sources` (paths), each keeping the origin and trust it has
    there; a conflict prefers a record measured or verified in its database over a foreign one, then `rank`."""
    out = Path(out)
    if out.exists():
        raise AutotileError(f"{out} exists; merge writes a new database (choose another -o)")
    accepted = []
    for source in sources:
        if not Path(source).is_file():
            raise AutotileError(f"no database at {source}")
        with TuningDB(source) as db:
            selection = bundles.select(db)
        # Through the bundle format and its checks: a database file is as foreign as a bundle.
        accepted.append(bundles.read_bundle(bundles.bundle_bytes(selection, SCHEMA_VERSION)))
    with TuningDB(out) as db:
        return apply(db, accepted, keep_trust=True)
