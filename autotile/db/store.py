"""The tuning database: SQLite through sqlite-utils, shared by every process on a machine.

Every measured config is its own record (device, workload, backend, config), ok or failed with
its reason, so retuning never repeats a measurement and the cost model can learn from all of
them. WAL mode and a busy timeout let several processes write at once.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from autotile.errors import AutotileError
from autotile.paths import user_cache_dir

# 1: the first schema. 2: measurements.failure, the kind of a failed one (autotile.search.failures.Failure), and
# measurements.template, the name of the template the config belongs to (a space's `template`). 3: templates
# renamed or split, records re-homed. 5: runs.owner (host:pid, so a live run is never continued by another process)
# and runs.model_run (the model tuning run a workload's run belongs to); the model_runs and model_tasks tables.
# 6: measurements.origin and measurements.trust (see TRUST_LEVELS) and measurements.foreign_latency_us, the latency
# an imported record came with (db/importer.py, db/verify.py). (4 was skipped: both steps only add what is missing.)
SCHEMA_VERSION = 6
RUN_COLUMNS = {"owner": str, "model_run": int}
BUSY_TIMEOUT_S = 30
JSON_COLUMNS = ("fingerprint", "description", "config", "latency", "versions")
# Whose latency is believed: "local" measured here, "verified" imported then rebuilt, re-verified and re-timed here
# (latency_us is then the local figure), "foreign" anything else. Only SERVED records are a device's best.
TRUST_LEVELS = ("local", "verified", "foreign")
SERVED = ("local", "verified")
SHARING_COLUMNS = {"origin": str, "trust": str}  # "local" for records measured here (and all before schema 6)


def default_path() -> Path:
    env = os.environ.get("AUTOTILE_DB")
    return Path(env) if env else user_cache_dir() / "autotile.db"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _decode(row: dict) -> dict:
    for column in JSON_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


def process_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process that owns a run (`process_owner`) is another one still running on this host."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _retry(fn):
    """A write retried a few times: the busy timeout covers nearly all contention, not all."""
    for attempt in range(5):
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))



def kernel_latency(latency: dict | None) -> float | None:
    """A measurement's latency in microseconds: its fastest repeat. Noise on a shared machine (another VM on the
    core, an interrupt) only ever slows a repeat down, by up to 2x for seconds at a time on these hosts, so the
    fastest repeat is the kernel's own speed and the steadiest figure to rank configs by (as timeit's
    documentation advises); a record with no "min" (older, or imported from a tool that keeps only the median)
    gives its median."""
    if not latency:
        return None
    return latency.get("min", latency.get("median"))

class TuningDB:
    """The tuning database at `path` (default: $AUTOTILE_DB, else the user cache dir); records are plain dicts."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            # Switching a fresh file to WAL needs a moment alone with it: retried when processes open it together.
            _retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        except (OSError, sqlite3.Error) as e:
            raise AutotileError(f"cannot open the tuning database {self.path}: {e}") from None
        self.db = sqlite_utils.Database(conn)
        _retry(self._create_schema)
        version = int(self.db["meta"].get("schema_version")["value"])
        if version > SCHEMA_VERSION:
            self.close()
            raise AutotileError(f"the tuning database {self.path} has schema version {version}, newer than this "
                                f"autotile understands ({SCHEMA_VERSION}); upgrade autotile or use another --db")
        if version < SCHEMA_VERSION:
            _retry(lambda: self._migrate(version))

    def _create_schema(self):
        db = self.db
        with db.conn:
            db["meta"].create({"name": str, "value": str}, pk="name", if_not_exists=True)
            db["meta"].insert({"name": "schema_version", "value": str(SCHEMA_VERSION)}, ignore=True)
            db["devices"].create({"key": str, "kind": str, "fingerprint": str, "first_seen": str}, pk="key",
                                 if_not_exists=True)
            db["workloads"].create({"key": str, "op": str, "description": str}, pk="key", if_not_exists=True)
            db["runs"].create({"id": int, "device": str, "workload": str, "backend": str, "strategy": str,
                               "seed": int, "trials": int, "seconds": float, "best_measurement": int,
                               "timestamp": str, **RUN_COLUMNS}, pk="id", if_not_exists=True)
            db["measurements"].create({
                "id": int, "device": str, "workload": str, "backend": str, "template": str, "config_key": str,
                "config": str, "status": str, "failure": str, "error": str, "latency_us": float, "latency": str,
                "gflops": float, "threads": int, "versions": str, "run_id": int, "timestamp": str,
                **SHARING_COLUMNS, "foreign_latency_us": float},
                pk="id", not_null=set(SHARING_COLUMNS), defaults=dict.fromkeys(SHARING_COLUMNS, "local"),
                if_not_exists=True)
            # A model tuning run (autotile/db/model_runs.py): its tasks' state is written after every round.
            db["model_runs"].create({"id": int, "fingerprint": str, "name": str, "device": str, "backend": str,
                                     "scheduler": str, "budget": str, "seed": int, "status": str, "trials": int,
                                     "curve": str, "started": str, "updated": str}, pk="id", if_not_exists=True)
            db["model_tasks"].create({"model_run": int, "workload": str, "calls": int, "run_id": int, "trials": int,
                                      "default_latency_us": float, "curve": str, "retired": str},
                                     pk=("model_run", "workload"), if_not_exists=True)
            # Also serves lookups by (device, workload, backend), its leading columns.
            db["measurements"].create_index(["device", "workload", "backend", "config_key"], unique=True,
                                            if_not_exists=True)

    def _migrate(self, version: int):
        """Bring a database of an older schema to this one, in one transaction (all or nothing)."""
        from autotile.ops import template_of
        from autotile.search.failures import Failure

        with self.db.conn:
            if version < 2:
                table = self.db["measurements"]
                for column in ("failure", "template"):
                    if column not in table.columns_dict:
                        table.add_column(column, str)
                for row in list(table.rows_where("status = 'failed' and failure is null", select="id, error")):
                    table.update(row["id"], {"failure": Failure.from_legacy_error(row["error"]).value})
                ops = {r["key"]: r["op"] for r in self.db["workloads"].rows}
                for row in list(table.rows_where("template is null", select="id, workload, config")):
                    op = ops.get(row["workload"])
                    name = template_of(op, json.loads(row["config"])) if op else None
                    table.update(row["id"], {"template": name or "unknown"})  # unknown: never read back
            if version < 3:  # templates renamed or split: each record goes to the template that now owns it
                self._rehome_templates()
            if version < 5:
                runs = self.db["runs"]
                for column, kind in RUN_COLUMNS.items():
                    if column not in runs.columns_dict:
                        runs.add_column(column, kind)
            if version < 6:  # sharing: every record has an origin and a trust; those before were measured here
                table = self.db["measurements"]
                for column, kind in SHARING_COLUMNS.items():
                    if column not in table.columns_dict:
                        table.add_column(column, kind, not_null_default="local")
                if "foreign_latency_us" not in table.columns_dict:
                    table.add_column("foreign_latency_us", float)
            self.db["meta"].update("schema_version", {"value": str(SCHEMA_VERSION)})

    def _rehome_templates(self):
        from autotile.ops import families, rehome

        former = sorted({old for fam in families().values() for t in fam.templates for old in t.formerly})
        if not former:
            return
        table = self.db["measurements"]
        workloads = {r["key"]: r for r in self.db["workloads"].rows}
        marks = ", ".join("?" * len(former))
        for row in list(table.rows_where(f"template in ({marks})", former, select="id, workload, template, config")):
            w = workloads.get(row["workload"])
            name = w and rehome(row["template"], w["op"], json.loads(w["description"]), json.loads(row["config"]))
            table.update(row["id"], {"template": name or "unknown"})

    # -- writing --------------------------------------------------------------------------------
    def ensure_device(self, key: str, fingerprint: dict):
        record = {"key": key, "kind": fingerprint.get("kind", "cpu"), "fingerprint": json.dumps(fingerprint,
                  sort_keys=True), "first_seen": _now()}
        _retry(lambda: self.db["devices"].insert(record, ignore=True))

    def ensure_workload(self, key: str, op: str, description: dict):
        record = {"key": key, "op": op, "description": json.dumps(description, sort_keys=True)}
        _retry(lambda: self.db["workloads"].insert(record, ignore=True))

    def record_measurement(self, *, device: str, workload: str, backend: str, config_key: str, config: dict,
                           status: str, template: str | None = None, failure: str | None = None,
                           error: str | None = None, latency: dict | None = None, gflops: float | None = None,
                           threads: int | None = None, versions: dict | None = None,
                           run_id: int | None = None) -> int:
        """Insert one measurement; a second one of the same config replaces it (a re-measurement), same id."""
        if status not in ("ok", "failed"):
            raise ValueError(f"status must be 'ok' or 'failed', got {status!r}")
        if status == "ok" and (latency or {}).get("median") is None:
            raise ValueError("an ok measurement needs latency['median']")
        if (status == "failed") != (failure is not None):
            raise ValueError(f"a failed measurement, and only one, has a failure kind (status {status!r}, "
                             f"failure {failure!r})")
        if failure is not None:
            from autotile.search.failures import Failure

            failure = Failure(failure).value  # raises on a kind that does not exist
        record = {
            "device": device, "workload": workload, "backend": backend, "template": template, "config_key": config_key,
            "config": json.dumps(config, sort_keys=True), "status": status, "failure": failure, "error": error,
            "latency_us": kernel_latency(latency) if status == "ok" else None,
            "latency": json.dumps(latency, sort_keys=True) if latency else None,
            "gflops": gflops if status == "ok" else None, "threads": threads,
            "versions": json.dumps(versions or {}, sort_keys=True), "run_id": run_id, "timestamp": _now(),
        }

        table, same = self.db["measurements"], "device = ? and workload = ? and backend = ? and config_key = ?"

        def write():
            with self.db.conn:
                # Keep the earlier record's id (runs point at their best measurement by id) and, for a record
                # measured here, its run (a run's trials are the records it made; a re-measurement is no new
                # trial); a foreign record measured here for the first time is this run's trial.
                earlier = next(table.rows_where(same, [device, workload, backend, config_key],
                                                select="id, run_id, trust"), None)
                row = record if earlier is None else {**record, "id": earlier["id"]}
                if earlier is not None and earlier["trust"] != "foreign":
                    row["run_id"] = earlier["run_id"]
                return table.insert(row, replace=True).last_pk

        return _retry(write)

    def start_run(self, device: str, workload: str, backend: str, strategy: str, seed: int,
                  model_run: int | None = None) -> int:
        # trials and seconds stay null until finish_run: that is how an unfinished (crashed) run shows.
        record = {"device": device, "workload": workload, "backend": backend, "strategy": strategy, "seed": seed,
                  "trials": None, "seconds": None, "best_measurement": None, "timestamp": _now(),
                  "owner": process_owner(), "model_run": model_run}

        def write():
            with self.db.conn:
                return self.db["runs"].insert(record).last_pk

        return _retry(write)

    def finish_run(self, run_id: int, trials: int, seconds: float, best_measurement: int | None):
        def write():
            with self.db.conn:
                self.db["runs"].update(run_id, {"trials": trials, "seconds": seconds,
                                                "best_measurement": best_measurement, "timestamp": _now()})

        _retry(write)

    # -- reading --------------------------------------------------------------------------------
    def unfinished_run(self, device: str, workload: str, backend: str) -> dict | None:
        """The latest run of a single workload that stopped before finishing (killed, crashed, interrupted) and
        that no live process on this host still owns: the one the next tuning of the workload continues."""
        rows = self._rows("runs", {"device": device, "workload": workload, "backend": backend},
                          "seconds is null and model_run is null", order_by="id desc", limit=1)
        return rows[0] if rows and not owner_alive(rows[0].get("owner")) else None

    def run_trials(self, run_id: int) -> dict[str, int]:
        """Trials a run has recorded so far, by template (counted from its measurements: exact after a kill)."""
        rows = self.db.execute("select template, count(*) from measurements where run_id = ? group by template",
                               [run_id]).fetchall()
        return dict(rows)

    def _rows(self, table: str, where: dict, extra: str | None = None, **options) -> list[dict]:
        """Rows whose columns equal `where`'s non-None values (and satisfy `extra`), JSON columns decoded."""
        filters = {k: v for k, v in where.items() if v is not None}
        clause = " and ".join([f"[{k}] = :{k}" for k in filters] + ([extra] if extra else [])) or None
        return [_decode(dict(r)) for r in self.db[table].rows_where(clause, filters, **options)]

    def measurements(self, device=None, workload=None, backend=None, status=None, template=None,
                     trust=None) -> list[dict]:
        return self._rows("measurements", {"device": device, "workload": workload, "backend": backend,
                                           "status": status, "template": template, "trust": trust}, order_by="id")

    def measured_config_keys(self, device: str, workload: str, backend: str) -> set[str]:
        """Every config measured here, ok or failed: none is measured twice. A foreign record's config is not
        among them: measuring it here is how it gets a local figure."""
        return {r["config_key"] for r in self._rows(
            "measurements", {"device": device, "workload": workload, "backend": backend}, "trust != 'foreign'",
            select="config_key")}

    def last_run(self, device: str, workload: str, backend: str | None = None) -> dict | None:
        """The most recent finished run, or None."""
        rows = self._rows("runs", {"device": device, "workload": workload, "backend": backend},
                          "seconds is not null", order_by="id desc", limit=1)
        return rows[0] if rows else None

    def workloads(self) -> dict[str, dict]:
        """Workload key -> its description."""
        return {r["key"]: r["description"] for r in self._rows("workloads", {})}

    def devices(self) -> list[dict]:
        return self._rows("devices", {}, order_by="key")

    def list_workloads(self, device: str | None = None) -> list[dict]:
        """One row per (device, workload, backend): measurements, failures, best latency_us and its gflops (of
        any trust), the records per trust level and their origins."""
        groups: dict = {}
        for r in self._rows("measurements", {"device": device},
                            select="device, workload, backend, status, latency_us, gflops, origin, trust"):
            g = groups.setdefault((r["device"], r["workload"], r["backend"]), {
                "device": r["device"], "workload": r["workload"], "backend": r["backend"], "measurements": 0,
                "failures": 0, "best_latency_us": None, "best_gflops": None, "trust": {}, "origins": []})
            g["measurements"] += 1
            g["trust"][r["trust"]] = g["trust"].get(r["trust"], 0) + 1
            if r["origin"] not in g["origins"]:
                g["origins"] = sorted([*g["origins"], r["origin"]])
            if r["status"] != "ok":
                g["failures"] += 1
            elif g["best_latency_us"] is None or r["latency_us"] < g["best_latency_us"]:
                g["best_latency_us"], g["best_gflops"] = r["latency_us"], r["gflops"]
        return [groups[k] for k in sorted(groups, key=lambda k: (k[1], k[0], k[2]))]

    def resolve_workload(self, key_or_prefix: str) -> str:
        keys = sorted(self.workloads())
        if key_or_prefix in keys:
            return key_or_prefix
        matches = [k for k in keys if k.startswith(key_or_prefix)]
        if not matches:
            raise AutotileError(f"no workload in {self.path} matches {key_or_prefix!r}; see `autotile db list`")
        if len(matches) > 1:
            shown = ", ".join(matches[:10]) + (" ..." if len(matches) > 10 else "")
            raise AutotileError(f"workload prefix {key_or_prefix!r} is ambiguous: {shown}")
        return matches[0]

    def close(self):
        self.db.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def copy_database(source, target) -> Path:
    """A consistent copy of a tuning database (SQLite's backup: its WAL included, safe while others write)."""
    src, dst = sqlite3.connect(str(source), timeout=BUSY_TIMEOUT_S), sqlite3.connect(str(target))
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return Path(target)
