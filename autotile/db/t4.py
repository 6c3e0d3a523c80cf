"""Records in Kernel Tuner's T4 results format (schema 1.0.0), for tools that read it: one result per measurement,
its config as the `configuration`, its failure kind as T4's `invalidity`. Export only; autotile reads its own
bundles (db/bundle.py), which keep what T4 has no field for."""

from __future__ import annotations

import json

T4_SCHEMA_VERSION = "1.0.0"
# autotile's failure kinds (autotile.search.failures.Failure) as T4 invalidities; "correct" is T4's ok.
INVALIDITY = {"compile": "compile", "unsupported": "runtime", "crash": "runtime", "timeout": "timeout",
              "wrong_result": "correctness", "runtime": "runtime"}


def t4_result(m: dict) -> dict:
    """One bundle measurement line as a T4 result; autotile's keys ride along under "autotile"."""
    ok = m["status"] == "ok"
    latency = m["latency"] or {}
    return {
        "timestamp": m["timestamp"] or "",
        "configuration": m["config"],
        "objectives": ["time"],
        "times": {},
        "invalidity": "correct" if ok else INVALIDITY[m["failure"]],
        "correctness": 1 if ok else 0,
        "measurements": [{"name": "time", "value": latency["median"], "unit": "us"}] if ok else [],
        "autotile": {k: m[k] for k in ("device", "workload", "backend", "template", "config_key", "error", "gflops",
                                       "threads", "versions", "origin", "trust")},
    }


def t4_bytes(selection) -> bytes:
    """The T4 document of a bundle selection (db/bundle.select), canonical JSON."""
    doc = {"schema_version": T4_SCHEMA_VERSION, "results": [t4_result(m) for m in selection.measurements]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode() + b"\n"
