"""Tuned-config bundles: what one machine's database sends another. Versioned JSON Lines, data only, never a
compiled library: a header, the devices (with fingerprints) and workloads the records refer to, every measurement,
then a trailer with the SHA-256 of everything above it and the count. The same records always give the same bytes
(sorted, no timestamp of its own; gzip with mtime 0).

Reading is strict and bounded (line length, line count, total size); every refused line is named with its number
and reason, and any refusal refuses the whole bundle. What each line may hold is db/validate.py's business; what
an accepted bundle does to a database is db/importer.py's.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import autotile
from autotile.db import validate
from autotile.db.validate import Rejected
from autotile.errors import AutotileError

MAX_LINE_BYTES = 64 * 1024
MAX_RECORDS = 10**6  # device, workload and measurement lines together
MAX_TOTAL_BYTES = 1 << 30  # decompressed: a small gzip must not unpack into a disk's worth
SHOWN_REJECTIONS = 50
TOOLCHAIN = ("apache-tvm", "apache-tvm-ffi", "triton", "torch")


def encode(obj: dict) -> bytes:
    """One line: canonical JSON (sorted keys, no spaces, ASCII), so equal records are equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode() + b"\n"


def toolchain() -> dict:
    """The installed toolchain's versions, read from package metadata (no heavy import)."""
    found = {}
    for name in TOOLCHAIN:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def measurement_line(r: dict) -> dict:
    """A database record (decoded) as a bundle line."""
    return {"kind": "measurement", **{k: r.get(k) for k in validate.MEASUREMENT_FIELDS if k != "kind"}}


@dataclass
class Selection:
    """What an export holds: the measurements of exportable records, and the devices and workloads they name."""

    devices: dict = field(default_factory=dict)  # key -> fingerprint
    workloads: dict = field(default_factory=dict)  # key -> description
    measurements: list = field(default_factory=list)
    skipped: int = 0  # records that no importer could read back: no fingerprint, no description, no template


def select(db, device: str | None = None, workload: str | None = None) -> Selection:
    """The records of `device` (a key) and of workloads whose key starts with `workload`, sorted."""
    fingerprints = {d["key"]: d["fingerprint"] for d in db.devices()}
    descriptions = db.workloads()
    out = Selection()
    for r in db.measurements(device=device):
        if workload is not None and not r["workload"].startswith(workload):
            continue
        if r["device"] not in fingerprints or r["workload"] not in descriptions or r["template"] in (None, "unknown"):
            out.skipped += 1
            continue
        out.devices[r["device"]] = fingerprints[r["device"]]
        out.workloads[r["workload"]] = descriptions[r["workload"]]
        out.measurements.append(measurement_line(r))
    out.measurements.sort(key=lambda m: (m["device"], m["workload"], m["backend"], m["config_key"]))
    return out


def bundle_bytes(selection: Selection, schema_version: int) -> bytes:
    """The bundle of a selection, uncompressed."""
    header = {"kind": "header", "format": validate.FORMAT, "format_version": validate.FORMAT_VERSION,
              "schema_version": schema_version, "autotile": autotile.__version__, "toolchain": toolchain()}
    body = [encode(header)]
    body += [encode({"kind": "device", "key": k, "fingerprint": selection.devices[k]})
             for k in sorted(selection.devices)]
    body += [encode({"kind": "workload", "key": k, "op": selection.workloads[k]["op"],
                     "description": selection.workloads[k]}) for k in sorted(selection.workloads)]
    body += [encode(m) for m in selection.measurements]
    data = b"".join(body)
    trailer = {"kind": "trailer", "lines": len(body), "measurements": len(selection.measurements),
               "sha256": hashlib.sha256(data).hexdigest()}
    return data + encode(trailer)


def compress(data: bytes) -> bytes:
    """gzip with no name and mtime 0: the same bundle compresses to the same bytes."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0, filename="") as f:
        f.write(data)
    return out.getvalue()


# -- reading -------------------------------------------------------------------------------------------------------

@dataclass
class Bundle:
    """An accepted bundle: everything in it has passed db/validate.py."""

    name: str
    sha256: str
    header: dict
    devices: dict  # key -> fingerprint
    workloads: dict  # key -> workload (autotile.ir)
    measurements: list  # bundle lines, validated


def _no_constants(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key is given twice in one object: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
    return dict(pairs)


def parse_line(raw: bytes):
    try:
        return json.loads(raw, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise Rejected("nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise Rejected(f"not valid JSON: {e}"[:200]) from None


def _lines(stream):
    """(number, bytes without the newline, complete) for each line, at most MAX_LINE_BYTES read of any one."""
    total, number = 0, 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        total += len(raw)
        if not raw.endswith(b"\n") and len(raw) > MAX_LINE_BYTES:
            while raw and not raw.endswith(b"\n"):  # the rest of an overlong line is skipped, not kept
                raw = stream.readline(MAX_LINE_BYTES + 1)
                total += len(raw)
                if total > MAX_TOTAL_BYTES:
                    break
            yield number, None, True
        else:
            yield number, raw[:-1] if raw.endswith(b"\n") else raw, raw.endswith(b"\n")
        if total > MAX_TOTAL_BYTES:
            raise Rejected(f"the bundle is larger than {MAX_TOTAL_BYTES >> 20} MiB")


class _Stop(Rejected):
    """A rejection after which the rest of the bundle is not worth reading (no header, too many lines)."""


class _Reader:
    """One pass over a bundle's lines, each checked as it comes; rejections collected, not raised."""

    def __init__(self, name: str, schema_version: int):
        self.name, self.schema_version = name, schema_version
        self.rejected: list[str] = []
        self.digest = hashlib.sha256()
        self.header = self.trailer = None
        self.body_lines = self.measurement_lines = 0
        self.devices, self.workloads, self.measurements = {}, {}, []
        self.seen: dict = {}  # (device, workload, backend, config_key) -> line number
        self.spaces = validate.Spaces()

    def reject(self, number: int | None, reason: str):
        self.rejected.append(f"line {number}: {reason}" if number else reason)

    def read(self, stream):
        try:
            for number, raw, complete in _lines(stream):
                try:
                    self.line(number, raw, complete)
                except _Stop as e:
                    self.reject(number, str(e))
                    return
                except Rejected as e:
                    self.reject(number, str(e))
        except Rejected as e:
            self.reject(None, str(e))
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            self.reject(None, f"the compressed stream is damaged ({type(e).__name__}: {e})")
        if self.header is None and not self.rejected:
            self.reject(None, "empty: no header line")
        elif self.trailer is None:
            self.reject(None, "no trailer line: the bundle is truncated")

    def line(self, number: int, raw: bytes | None, complete: bool):
        if raw is None:
            raise Rejected(f"longer than {MAX_LINE_BYTES // 1024} KiB")
        if self.trailer is not None:
            raise Rejected("a line after the trailer")
        obj = parse_line(raw)
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if kind == "trailer":
            self.trailer = validate.check_trailer(obj)
            if not complete:
                raise Rejected("the trailer line has no final newline: the bundle is truncated")
            self.check_trailer()
            return
        if not complete:
            raise Rejected("the last line has no newline: the bundle is truncated")
        self.digest.update(raw + b"\n")
        self.body_lines += 1
        if number == 1:
            try:
                self.header = validate.check_header(obj, self.schema_version)
            except Rejected as e:
                raise _Stop(str(e)) from None
            return
        if self.body_lines > MAX_RECORDS + 1:
            raise _Stop(f"more than {MAX_RECORDS:,} records")
        if kind == "device":
            key, fingerprint = validate.check_device(obj)
            if key in self.devices:
                raise Rejected(f"device {key!r} declared twice")
            self.devices[key] = fingerprint
        elif kind == "workload":
            workload = validate.check_workload(obj)
            if workload.key in self.workloads:
                raise Rejected(f"workload {workload.key!r} declared twice")
            self.workloads[workload.key] = workload
        elif kind == "measurement":
            self.measurement_lines += 1
            m = validate.check_measurement(obj, self.devices, self.workloads, self.spaces)
            key = (m["device"], m["workload"], m["backend"], m["config_key"])
            if key in self.seen:
                raise Rejected(f"the same config of the same workload and device as line {self.seen[key]}")
            self.seen[key] = number
            self.measurements.append(m)
        elif kind == "header":
            raise Rejected("a second header")
        else:
            raise Rejected(f"unknown line kind {str(kind)[:40]!r}")

    def check_trailer(self):
        t = self.trailer
        if t["lines"] != self.body_lines:
            raise Rejected(f"the trailer counts {t['lines']} lines before it, the bundle has {self.body_lines}")
        if t["measurements"] != self.measurement_lines:
            raise Rejected(f"the trailer counts {t['measurements']} measurements, the bundle has "
                           f"{self.measurement_lines}")
        if t["sha256"] != self.digest.hexdigest():
            raise Rejected("checksum mismatch: the bundle was changed or damaged after it was written")


def _open(source) -> tuple[str, io.BufferedIOBase]:
    """(name, binary stream) of a path or of bytes; gzip is recognized by its magic number."""
    if isinstance(source, (bytes, bytearray)):
        name, stream = "<bundle>", io.BytesIO(source)
    else:
        name = str(source)
        try:
            stream = open(Path(source), "rb")
        except OSError as e:
            raise AutotileError(f"cannot read the bundle {name}: {e.strerror or e}") from None
    magic = stream.read(2)
    stream.seek(0)
    return name, gzip.GzipFile(fileobj=stream, mode="rb") if magic == b"\x1f\x8b" else stream


def read_bundle(source, schema_version: int | None = None) -> Bundle:
    """The bundle at `source` (a path, or bytes), every line checked; an AutotileError naming each rejected line
    when any is."""
    from autotile.db.store import SCHEMA_VERSION

    name, stream = _open(source)
    reader = _Reader(name, schema_version or SCHEMA_VERSION)
    with stream, getattr(stream, "fileobj", None) or stream:  # a gzip stream's file is closed too
        reader.read(stream)
    if reader.rejected:
        shown = reader.rejected[:SHOWN_REJECTIONS]
        more = len(reader.rejected) - len(shown)
        raise AutotileError(f"{name}: bundle refused, nothing imported ({len(reader.rejected)} problem(s)):\n  "
                            + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else ""))
    return Bundle(name, reader.digest.hexdigest(), reader.header, reader.devices, reader.workloads,
                  reader.measurements)
