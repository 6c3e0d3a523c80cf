"""Model tuning runs in the tuning database: the run (model fingerprint, budget, scheduler, overall curve) and one
row per task (workload, calls per forward, its own tuning run, trials, best latency after each round). Written
after every round, so a killed run is resumed from where it stood; trials are recounted from the measurements."""

from __future__ import annotations

import json

from autotile.db.store import _now, _retry


def find(db, fingerprint: str, status: str | None = None) -> dict | None:
    """The latest model run of this fingerprint (with `status`, when given)."""
    where, args = "fingerprint = ?", [fingerprint]
    if status is not None:
        where, args = where + " and status = ?", args + [status]
    rows = list(db.db["model_runs"].rows_where(where, args, order_by="id desc", limit=1))
    return _decode_run(rows[0]) if rows else None


def all_runs(db) -> list[dict]:
    return [_decode_run(r) for r in db.db["model_runs"].rows_where(order_by="id")]


def start(db, *, fingerprint: str, name: str, device: str, backend: str, scheduler: str, budget: dict,
          seed: int) -> int:
    record = {"fingerprint": fingerprint, "name": name, "device": device, "backend": backend,
              "scheduler": scheduler, "budget": json.dumps(budget, sort_keys=True), "seed": seed,
              "status": "running", "trials": 0, "curve": "[]", "started": _now(), "updated": _now()}

    def write():
        with db.db.conn:
            return db.db["model_runs"].insert(record).last_pk

    return _retry(write)


def save(db, run_id: int, *, tasks, trials: int, curve: list, status: str = "running",
         budget: dict | None = None) -> None:
    """The run's state after a round: every task's row and the run's totals, in one transaction."""
    rows = [{"model_run": run_id, "workload": t.key, "calls": t.calls, "run_id": t.run_id, "trials": t.trials,
             "default_latency_us": t.default_latency_us, "curve": json.dumps(t.curve), "retired": t.retired}
            for t in tasks]
    update = {"trials": trials, "curve": json.dumps(curve), "status": status, "updated": _now()}
    if budget is not None:
        update["budget"] = json.dumps(budget, sort_keys=True)

    def write():
        with db.db.conn:
            db.db["model_tasks"].insert_all(rows, replace=True)
            db.db["model_runs"].update(run_id, update)

    _retry(write)


def tasks(db, run_id: int) -> list[dict]:
    rows = db.db["model_tasks"].rows_where("model_run = ?", [run_id], order_by="rowid")
    return [{**r, "curve": json.loads(r["curve"] or "[]")} for r in rows]


def _decode_run(row: dict) -> dict:
    return {**row, "budget": json.loads(row["budget"] or "{}"), "curve": json.loads(row["curve"] or "[]")}
