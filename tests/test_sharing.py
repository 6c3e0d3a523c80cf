"""Sharing tuned configs between machines: bundles out, bundles in, and what an imported record may be trusted with.

The databases are real SQLite files; the records are real configs of real templates on this machine's device key
(so the importing "second machine" shares the key and imported records arrive as foreign ones).
"""

import dataclasses
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import broken_kernels
import pytest
from click.testing import CliRunner

from autotile.cli import main
from autotile.db import bundle
from autotile.db.device import current_device
from autotile.db.importer import CONTENT, import_bundles, merge_databases
from autotile.db.store import SCHEMA_VERSION, TuningDB
from autotile.errors import AutotileError
from autotile.ir import GemmWorkload
from autotile.ops import space_for
from autotile.search.measure import Measurer
from autotile.search.tuner import backend_versions, best_of, current_best

WORKLOADS = (GemmWorkload(16, 32, 24), GemmWorkload(8, 24, 16, epilogue="bias"))
ROOT = Path(__file__).resolve().parents[1]


def configs(workload, count, seed=0, last=0, unbroken=False):
    """`count` distinct configs of the workload's default template here, the same first ones for any count; none of
    the final `last` has the smallest key (a bundle lists a workload's records by key: its first line is one of
    `fill`'s ok records, never its failed one, on every CPU). unbroken: none has a row count broken_kernels' builder
    breaks (an AVX2 CPU's registers hold only a few rows: most samples there had)."""
    space = space_for(workload, current_device("tvm").fingerprint)
    broken = (broken_kernels.COMPILE_ERROR, broken_kernels.WRONG_RESULT, broken_kernels.CRASH, broken_kernels.HANG)
    rng, found = random.Random(seed), {}
    while len(found) < count:
        config = space.sample(rng)
        if unbroken and config.mr in broken:
            continue
        if len(found) < count - last or config.key > min(list(found)[:count - last], default=""):
            found[config.key] = config
    return space.template, list(found.values())


def fill(path, seed=0, latencies=(5.0, 7.0, 9.0), failed=1, workloads=WORKLOADS, fastest_wrong=False):
    """A database as a tuning run leaves it: ok records with latency statistics, failed ones with their kind.
    fastest_wrong: the fastest config of each workload is one broken_kernels' builder makes compute a wrong result
    (mr=2), so re-verifying it here fails for real."""
    device = current_device("tvm")
    with TuningDB(path) as db:
        db.ensure_device(device.key, device.fingerprint)
        for w in workloads:
            db.ensure_workload(w.key, w.op, w.to_dict())
            template, found = configs(w, len(latencies) + failed, seed, last=failed, unbroken=fastest_wrong)
            if fastest_wrong:
                space = space_for(w, device.fingerprint)
                found[0] = space.canonical(dataclasses.replace(found[0], mr=broken_kernels.WRONG_RESULT))
                assert space.valid(found[0]) and len({c.key for c in found}) == len(found)
            for i, config in enumerate(found):
                ok = i < len(latencies)
                # a record's latency is its fastest repeat, "min"
                stats = {"median": latencies[i] * 1.1, "mean": latencies[i] * 1.1, "min": latencies[i],
                         "max": latencies[i] * 1.3, "std": 0.1, "runs": 5} if ok else None
                db.record_measurement(device=device.key, workload=w.key, backend="tvm", template=template,
                                      config_key=config.key, config=config.to_dict(), status="ok" if ok else "failed",
                                      failure=None if ok else "compile", error=None if ok else "build: refused",
                                      latency=stats, gflops=w.flops / latencies[i] / 1e3 if ok else None, threads=2,
                                      versions=backend_versions("tvm"))
    return path


def cli(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def listing(db):
    return json.loads(cli("db", "list", "--db", str(db), "--json"))


def without_provenance(rows):
    return [{k: v for k, v in r.items() if k not in ("trust", "origins")} for r in rows]


def contents(db) -> list:
    with TuningDB(db) as d:
        return sorted((tuple(json.dumps(r[k], sort_keys=True) for k in CONTENT), r["origin"], r["trust"])
                      for r in d.measurements())


def export(db, *extra) -> bytes:
    out = Path(str(db) + f".{len(extra)}.jsonl")
    cli("db", "export", "--db", str(db), "-o", str(out), *extra)
    return out.read_bytes()


def test_export_import_round_trip(tmp_path):
    """Export is deterministic (plain and gzip); the importer holds the same records, as foreign ones; and a
    foreign record exported again and imported elsewhere arrives unchanged, origin included."""
    a = fill(tmp_path / "a.db")
    data = export(a)
    assert export(a) == data
    cli("db", "export", "--db", str(a), "-o", str(tmp_path / "x.jsonl.gz"))
    first = (tmp_path / "x.jsonl.gz").read_bytes()
    cli("db", "export", "--db", str(a), "-o", str(tmp_path / "x.jsonl.gz"))
    assert (tmp_path / "x.jsonl.gz").read_bytes() == first and first[:2] == b"\x1f\x8b"
    lines = [json.loads(line) for line in data.splitlines()]
    assert [line["kind"] for line in lines] == ["header", "device", "workload", "workload"] + \
        ["measurement"] * 8 + ["trailer"]
    assert "timestamp" not in lines[0] and lines[0]["schema_version"] == SCHEMA_VERSION
    assert lines[-1]["sha256"] == hashlib.sha256(data[:data.rindex(b'{"kind":"trailer"')]).hexdigest()
    assert lines[-1]["measurements"] == 8 and lines[-1]["lines"] == 12

    b, c = tmp_path / "b.db", tmp_path / "c.db"
    cli("db", "import", str(tmp_path / "x.jsonl.gz"), "--db", str(b))
    assert without_provenance(listing(b)) == without_provenance(listing(a))
    assert all(r["trust"] == {"foreign": 4} and r["origins"] == [f"bundle:{lines[-1]['sha256'][:12]}"]
               for r in listing(b))
    assert [x[0] for x in contents(b)] == [x[0] for x in contents(a)]  # every field of every record
    (tmp_path / "b.jsonl").write_bytes(export(b))
    cli("db", "import", str(tmp_path / "b.jsonl"), "--db", str(c))
    assert listing(c) == listing(b) and contents(c) == contents(b)
    assert export(b, "--device", current_device("tvm").key) == export(c, "--device", current_device("tvm").key)


def test_import_twice_is_once_and_order_does_not_matter(tmp_path):
    """Two bundles disagree about the same configs: the importer settles each by content, whatever the order."""
    one = export(fill(tmp_path / "one.db", latencies=(5.0, 7.0, 9.0)))
    two = export(fill(tmp_path / "two.db", latencies=(6.0, 6.5, 8.0, 4.0), failed=0))
    (tmp_path / "one.jsonl").write_bytes(one)
    (tmp_path / "two.jsonl").write_bytes(two)
    orders = {"ab": ("one", "two"), "ba": ("two", "one")}
    for name, order in orders.items():
        with TuningDB(tmp_path / f"{name}.db") as db:
            for source in order:
                import_bundles(db, [tmp_path / f"{source}.jsonl"])
    together = tmp_path / "together.db"
    with TuningDB(together) as db:
        import_bundles(db, [tmp_path / "two.jsonl", tmp_path / "one.jsonl"])
    assert contents(tmp_path / "ab.db") == contents(tmp_path / "ba.db") == contents(together)
    before = contents(together)
    with TuningDB(together) as db:
        again = import_bundles(db, [tmp_path / "one.jsonl", tmp_path / "two.jsonl"])
    assert contents(together) == before and again.inserted == again.replaced == 0
    with TuningDB(together) as db:  # the faster of two conflicting foreign figures stands
        (w,) = [w for w in WORKLOADS if w.key.startswith("gemm_b1_16x32")]
        latencies = sorted(r["latency_us"] for r in db.measurements(workload=w.key, status="ok"))
    assert latencies == [4.0, 5.0, 6.5, 8.0]  # 5.0 beat 6.0, 6.5 beat 7.0, 8.0 beat 9.0; 4.0 was a failure


def test_a_foreign_record_never_overwrites_a_local_one(tmp_path):
    ours = fill(tmp_path / "ours.db", latencies=(50.0, 70.0, 90.0))
    (tmp_path / "theirs.jsonl").write_bytes(export(fill(tmp_path / "theirs.db", latencies=(1.0, 2.0, 3.0))))
    before = contents(ours)
    with TuningDB(ours) as db:
        summary = import_bundles(db, [tmp_path / "theirs.jsonl"])
    assert summary.kept_local == 8 and summary.inserted == 0 and contents(ours) == before


def test_merge_keeps_trust_and_prefers_what_was_measured(tmp_path):
    a = fill(tmp_path / "a.db", latencies=(5.0, 7.0, 9.0))
    (tmp_path / "a.jsonl").write_bytes(export(a))
    b = fill(tmp_path / "b.db", latencies=(50.0, 1.0), failed=0, workloads=WORKLOADS[:1])
    cli("db", "import", str(tmp_path / "a.jsonl"), "--db", str(b))  # foreign in b, except where b measured
    cli("db", "merge", str(a), str(b), "-o", str(tmp_path / "c.db"))
    with TuningDB(tmp_path / "c.db") as db:
        rows = db.measurements()
    assert {r["trust"] for r in rows} == {"local"} and len(rows) == 8
    w = WORKLOADS[0].key
    assert sorted(r["latency_us"] for r in rows if r["workload"] == w and r["status"] == "ok") == [1.0, 5.0, 9.0]
    with pytest.raises(AutotileError, match="exists"):
        merge_databases([a, b], tmp_path / "c.db")


# -- damaged and hostile bundles ---------------------------------------------------------------------------------

def reseal(lines: list) -> bytes:
    """Lines (dicts, or raw bytes) under a correct trailer: a hostile bundle is as well sealed as an honest one."""
    body = b"".join(x if isinstance(x, bytes) else bundle.encode(x) for x in lines)
    count = sum(1 for x in lines if isinstance(x, dict) and x.get("kind") == "measurement")
    return body + bundle.encode({"kind": "trailer", "lines": len(lines), "measurements": count,
                                 "sha256": hashlib.sha256(body).hexdigest()})


def edit(line, **changes):
    """Change fields of line `line` (1-based; "failed": the first failed measurement); "config__x" and "latency__x"
    change one entry of those objects."""
    def mutate(lines):
        obj = next(x for x in lines if x.get("status") == "failed") if line == "failed" else lines[line - 1]
        for name, value in changes.items():
            outer, _, inner = name.partition("__")
            if inner:
                obj[outer] = {**obj[outer], inner: value}
            else:
                obj[outer] = value
        return reseal(lines)
    return mutate


def raw(line: int, text: bytes):
    def mutate(lines):
        lines[line - 1] = text
        return reseal(lines)
    return mutate


def flip(after: bytes, byte=None):
    """The byte just after the first `after` flipped (its lowest bit), or set to `byte`."""
    def mutate(lines):
        data = bytearray(reseal(lines))
        i = data.index(after) + len(after)
        data[i] = byte if byte is not None else data[i] ^ 0x01
        return bytes(data)
    return mutate


M = 5  # the first measurement line (header, device, two workloads before it)
CORPUS = {
    "truncated mid-line": (lambda lines: reseal(lines)[:-300], "no trailer line: the bundle is truncated"),
    "truncated in the trailer": (lambda lines: reseal(lines)[:-1], "line 13: the trailer line has no final newline"),
    "truncated at a line": (lambda lines: b"".join(bundle.encode(x) for x in lines[:7]), "no trailer line"),
    "empty": (lambda lines: b"", "empty: no header line"),
    "a digit flipped": (flip(b'"median":'), "line 13: checksum mismatch"),
    "a byte flipped into the JSON": (flip(b'"status"', ord("{")), "not valid JSON"),
    "gzip cut short": (lambda lines: bundle.compress(reseal(lines))[:-30], "compressed stream is damaged"),
    "not a bundle": (lambda lines: b"\x00\xff garbage\n", "line 1: not valid JSON"),
    "a wrong checksum": (lambda lines: re.sub(rb'"sha256":"[0-9a-f]{64}"', b'"sha256":"' + b"0" * 64 + b'"',
                                              reseal(lines)), "line 13: checksum mismatch"),
    "a latency as text": (edit(M, latency__median="fast"), f"line {M}: latency median must be a number, got str"),
    "a threads count as a bool": (edit(M, threads=True), f"line {M}: threads must be an integer"),
    "a huge latency": (edit(M, latency__median=1e300), f"line {M}: latency median = 1e+300 is outside its range"),
    "a negative latency": (edit(M, latency__median=-1.0), "outside its range"),
    "a huge thread count": (edit(M, threads=10**30), "threads = 1000000000000000000000000000000 is outside"),
    "a number JSON forbids": (raw(M, b'{"kind":"measurement","gflops":NaN}\n'), "NaN is not a number JSON allows"),
    "a 5000-digit number": (raw(M, b'{"kind":"measurement","threads":' + b"9" * 5000 + b"}\n"), "not valid JSON"),
    "an unknown schema version": (edit(1, schema_version=99), "line 1: unknown schema version '99'"),
    "an unknown format version": (edit(1, format_version=2), "line 1: unknown bundle format version"),
    "not an autotile bundle": (edit(1, format="tvm-records"), "not an autotile bundle"),
    "SQL in a device key": (edit(M, device="cpu-x'; drop table measurements; --"), f"line {M}: device \"cpu-x'"),
    "a path in a workload key": (edit(M, workload="../../etc/passwd"), "is not of the expected form"),
    "a path in a template": (edit(M, template="../gemm.blis"), "template '../gemm.blis' is not of the expected"),
    "an unknown template": (edit(M, template="gemm.fastest"), "unknown template 'gemm.fastest'"),
    "a path in an origin": (edit(M, origin="/etc/passwd"), "origin '/etc/passwd' is not of the expected form"),
    "SQL in a knob": (edit(M, config__outer="ij'); delete from measurements; --"), "knob outer"),
    "a config that does not parse": (edit(M, config={"mr": 6}), "config does not parse in gemm.blis"),
    "a knob below its domain": (edit(M, config__mr=-4), "knob mr = -4 is below its domain"),
    "a knob of another type": (edit(M, config__outer=7), "knob outer = 7 is not a str"),
    "a config its space refuses": (edit(M, config__vec=3), "is not valid in gemm.blis's space"),
    "a config key that is not the config's": (edit(M, config_key="mr1"), "is not the key of its config"),
    "an unknown field": (edit(M, note="hi"), f"line {M}: unknown field(s) 'note'"),
    "a key given twice": (raw(M, b'{"kind":"measurement","kind":"device"}\n'), "given twice"),
    "a line too long": (edit(M, error="x" * 70000), f"line {M}: longer than 64 KiB"),
    "a long error": (edit("failed", error="x" * 5000), "error is 5000 characters long, at most 4096"),
    "a device key not of its fingerprint": (edit(2, key="cpu-znver9-amd-f1m1-noflags-c1t1"),
                                            "line 2: device key 'cpu-znver9-amd-f1m1-noflags-c1t1' is not the key"),
    "a workload not of its key": (edit(3, description={**WORKLOADS[0].to_dict(), "m": 17}),
                                  "is not the key of its description"),
    "an impossible workload": (edit(3, description={**WORKLOADS[0].to_dict(), "m": -1}), "no valid workload"),
    "an undeclared workload": (lambda lines: reseal([lines[0], lines[1], *lines[4:]]), "is not declared"),
    "a measurement twice": (lambda lines: reseal([*lines[:-1], lines[M - 1], lines[-1]]), "as line 5"),
    "an ok record with a failure": (edit(M, failure="crash"), "an ok measurement has latency statistics and no"),
    "an unknown failure kind": (edit("failed", failure="exploded"), "failure must be one of"),
    "a failure with a latency": (edit("failed", latency={"median": 1.0}), "a failed measurement has no latency"),
    "an unknown trust": (edit(M, trust="trusted"), "trust must be one of"),
    "a timestamp of another form": (edit(M, timestamp="yesterday"), "timestamp 'yesterday' is not of the"),
    "a second header": (lambda lines: reseal([*lines, lines[0]]), "a second header"),
    "a line after the trailer": (lambda lines: reseal(lines) + bundle.encode(lines[1]), "a line after the trailer"),
    "a trailer that miscounts": (lambda lines: reseal(lines).replace(b'"measurements":8', b'"measurements":9'),
                                 "the trailer counts 9 measurements"),
}


@pytest.fixture(scope="module")
def good_lines(tmp_path_factory):
    path = fill(tmp_path_factory.mktemp("corpus") / "good.db")
    with TuningDB(path) as db:
        data = bundle.bundle_bytes(bundle.select(db), SCHEMA_VERSION)
    return [json.loads(line) for line in data.splitlines()[:-1]]


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_a_damaged_or_hostile_bundle_is_refused_and_changes_nothing(case, good_lines, tmp_path):
    make, reason = CORPUS[case]
    (tmp_path / "bad.jsonl").write_bytes(make(json.loads(json.dumps(good_lines))))
    db = fill(tmp_path / "ours.db", latencies=(3.0,), failed=0, workloads=(GemmWorkload(4, 8, 8),))
    before = contents(db)
    result = CliRunner().invoke(main, ["db", "import", str(tmp_path / "bad.jsonl"), "--db", str(db)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "bundle refused, nothing imported" in result.output and reason in result.output, result.output
    assert contents(db) == before
    with TuningDB(db) as d:
        assert len(d.workloads()) == 1 and len(d.devices()) == 1


def test_every_problem_is_named_by_its_line(good_lines):
    lines = json.loads(json.dumps(good_lines))
    first, second = [i for i, x in enumerate(lines) if x.get("status") == "ok"][:2]
    lines[first]["threads"] = 0
    lines[second]["latency"] = {"median": 0}
    with pytest.raises(AutotileError) as caught:
        bundle.read_bundle(reseal(lines))
    assert "2 problem(s)" in str(caught.value)
    assert f"line {first + 1}: threads = 0 is outside" in str(caught.value)
    assert f"line {second + 1}: latency median = 0 is outside" in str(caught.value)


# -- trust: what is served ---------------------------------------------------------------------------------------

def test_a_foreign_record_is_never_the_best_until_verified(tmp_path):
    import autotile

    (tmp_path / "a.jsonl").write_bytes(export(fill(tmp_path / "a.db", fastest_wrong=True)))
    b = tmp_path / "b.db"
    cli("db", "import", str(tmp_path / "a.jsonl"), "--db", str(b))
    w = WORKLOADS[0]
    with autotile.Session(b, "tvm") as session:
        templates = [s.template for s in session.backend.spaces(w, session.device.fingerprint)]
        assert best_of(session.db, session.device, w, "tvm", templates) is None
        config, source = session.choose(w)
        fastest = min(session.db.measurements(workload=w.key, status="ok"), key=lambda r: r["latency_us"])
        assert source == "foreign" and config.key == fastest["config_key"]
        assert session.db.measured_config_keys(session.device.key, w.key, "tvm") == set()  # still to measure here
        from autotile.search.tuner import _seed_configs

        space = space_for(w, session.device.fingerprint)  # a tuning run here tries the foreign winner first
        assert _seed_configs(session.db, session.device, w, space, "tvm")[1].key == fastest["config_key"]

        from autotile.db.verify import verify_foreign

        # Real workers, whose builder makes the fastest foreign config (mr=2) compute a wrong result here.
        session._measurer = Measurer(session.device, threads=2, builder="broken_kernels:builder",
                                     loader="broken_kernels:loader")
        report = verify_foreign(session, top_k=2)
        assert [r.workload for r in report] == sorted(x.key for x in WORKLOADS)
        assert all(r.built == 2 and r.candidates == 3 and r.failed == 1 for r in report)  # top 2 of 3, no more
        rows = {r["config_key"]: r for r in session.db.measurements(workload=w.key)}
        failed_here = rows[fastest["config_key"]]  # failed here: a local fact, never served
        assert failed_here["status"] == "failed" and failed_here["trust"] == "local"
        assert failed_here["failure"] == "wrong_result" and failed_here["foreign_latency_us"] == 5.0
        best = best_of(session.db, session.device, w, "tvm", templates)
        assert best["trust"] == "verified" and best["foreign_latency_us"] == 7.0
        assert best["latency_us"] > 0 and best["latency"]["runs"] >= 15  # timed here, as the tuner re-times
        assert session.choose(w) == (session.backend.spaces(w, session.device.fingerprint)[0].config_type.from_dict(
            best["config"]), "exact")
        assert sorted(r["trust"] for r in rows.values()) == ["foreign", "foreign", "local", "verified"]


def test_a_schema_3_database_migrates_its_records_to_local(tmp_path):
    path = fill(tmp_path / "old.db", latencies=(4.0,), failed=0, workloads=WORKLOADS[:1])
    conn = sqlite3.connect(path)
    for column in ("origin", "trust", "foreign_latency_us"):
        conn.execute(f"alter table measurements drop column {column}")
    conn.execute("update meta set value = '3' where name = 'schema_version'")
    conn.commit()
    conn.close()
    with TuningDB(path) as db:
        (row,) = db.measurements()
        assert (row["origin"], row["trust"], row["foreign_latency_us"]) == ("local", "local", None)
        assert current_best(db, current_device("tvm"), WORKLOADS[0], "tvm", row["template"])["id"] == row["id"]


def test_t4_export(tmp_path):
    doc = json.loads(export(fill(tmp_path / "a.db"), "--format", "t4"))
    assert doc["schema_version"] == "1.0.0" and len(doc["results"]) == 8
    invalid = [r for r in doc["results"] if r["invalidity"] != "correct"]
    assert [r["invalidity"] for r in invalid] == ["compile", "compile"] and all(r["correctness"] == 0 for r in invalid)
    ok = next(r for r in doc["results"] if r["invalidity"] == "correct")
    assert ok["measurements"][0]["unit"] == "us" and ok["configuration"]["mr"] > 0


# -- real tuning: verification, torch.compile, crashes and concurrency ---------------------------------------------

def run_cli(*args, db):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOTILE_DB": str(db)}
    return subprocess.Popen([sys.executable, "-m", "autotile.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_warm_compile_on_imported_verified_records_tunes_and_times_nothing(tmp_path, monkeypatch):
    """Machine A tunes a model's linear; machine B (same device key) imports A's bundle, verifies it, and then
    compiles the model with tuning on: nothing is tuned, built or timed, and the outputs are right."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import autotile
    import autotile.search.isolated as isolated
    from autotile.db.verify import verify_foreign
    from autotile.dynamo import compile_model, stats
    from autotile.search.measure import Measurer

    torch.manual_seed(0)
    lin = nn.Linear(32, 48)
    fn = lambda x: F.gelu(lin(x))
    x, a, b = torch.randn(12, 32), tmp_path / "a.db", tmp_path / "b.db"
    torch._dynamo.reset()
    with torch.no_grad():
        compile_model(fn, tuning="tune", trials_per_workload=2, db=a, progress=False)(x)
    key = "gemm_b1_12x48x32_float32_nt_bias+gelu_constB"
    (tmp_path / "a.jsonl.gz").write_bytes(bundle.compress(export(a)))
    cli("db", "import", str(tmp_path / "a.jsonl.gz"), "--db", str(b))

    built = []
    measure = Measurer.measure
    monkeypatch.setattr(Measurer, "measure", lambda self, w, configs, *args, **kwargs:
                        built.extend(c.key for c in configs) or measure(self, w, configs, *args, **kwargs))
    with autotile.Session(b, "tvm") as session:
        (row,) = verify_foreign(session, top_k=3)
        assert row.workload == key and row.built == len(built) <= 3 and row.verified >= 1
    assert len(set(built)) == len(built)  # each config built (and verified, and timed) once

    def forbidden(*args, **kwargs):
        raise AssertionError("a warm compile on verified records must not build or measure anything")

    monkeypatch.setattr(Measurer, "measure", forbidden)
    monkeypatch.setattr(isolated, "_builder", forbidden)
    torch._dynamo.reset()
    stats.reset()
    with torch.no_grad():
        out = compile_model(fn, tuning="tune", trials_per_workload=2, db=b, progress=False)(x)
        expected = F.gelu(F.linear(x.double(), lin.weight.double(), lin.bias.double()))
    assert stats.tuned == [] and stats.workloads == {key: "exact"} and stats.replaced == {"gemm": 1}
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()


KILLED_TUNER = """
import sys
from autotile.db.store import TuningDB
record = TuningDB.record_measurement
def reported(self, **kw):
    id = record(self, **kw)
    print(kw["config_key"], flush=True)  # reported only once recorded
    return id
TuningDB.record_measurement = reported
import autotile
from autotile.ir import GemmWorkload
autotile.tune(GemmWorkload(24, 40, 32), trials=200, db=sys.argv[1], backend="tvm")
"""


@pytest.mark.slow
def test_a_tuner_killed_mid_run_loses_nothing_it_reported(tmp_path):
    db = tmp_path / "killed.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_TUNER, str(db)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    reported = []
    try:
        deadline = time.monotonic() + 240
        while len(reported) < 5 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            reported.append(line.strip())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the tuner and its build and run workers, mid-run
        proc.wait(30)
    assert len(reported) >= 5 and proc.returncode == -signal.SIGKILL
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with TuningDB(db) as d:
        assert set(reported) <= {r["config_key"] for r in d.measurements()}
        assert all(r["trust"] == "local" for r in d.measurements())


@pytest.mark.slow
def test_an_import_while_two_tuners_write(tmp_path):
    """Two tuners and an import on one database at once: all succeed, nothing is lost, the file is sound."""
    db = tmp_path / "shared.db"
    TuningDB(db).close()
    theirs = WORKLOADS[1]
    (tmp_path / "theirs.jsonl").write_bytes(export(fill(tmp_path / "theirs.db", workloads=(theirs,))))
    tuners = [run_cli("tune", "gemm", "--shape", shape, "--trials", "2", "--backend", "tvm", "--json", db=db)
              for shape in ("16x24x8", "12x16x20")]
    imports = 0
    while any(t.poll() is None for t in tuners) or imports == 0:
        with TuningDB(db) as d:
            import_bundles(d, [tmp_path / "theirs.jsonl"])  # idempotent: again and again while they write
        imports += 1
        time.sleep(1.0)
    results = [json.loads(t.communicate()[0].strip().splitlines()[-1]) for t in tuners]
    assert all(t.returncode == 0 for t in tuners) and all(r["verified"] and r["trials"] == 2 for r in results)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with TuningDB(db) as d:
        assert len(d.measurements(workload=theirs.key, trust="foreign")) == 4
        for r in results:
            assert len(d.measurements(workload=r["workload"], trust="local")) >= 2
