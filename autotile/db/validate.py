"""What each line of a bundle may hold: strict types, known keys only, numbers finite and in range, strings
bounded, keys that the code would itself produce, and configs that parse in their template's space here.

Every check raises Rejected with a reason a person can act on. Nothing here reads or writes a database: a record
that passes is only well-formed; whether it is believed is its trust's business (db/importer.py).
"""

from __future__ import annotations

import functools
import math
import re

from autotile.db.store import TRUST_LEVELS
from autotile.errors import AutotileError

FORMAT = "autotile-bundle"
FORMAT_VERSION = 1
MIN_SCHEMA_VERSION = 6  # the first schema with origin and trust, and so the first that bundles were written by

MAX_KEY = 256
MAX_ERROR = 4096
MAX_SHORT = 128
MAX_LATENCY_US = 1e12
MAX_GFLOPS = 1e9
MAX_THREADS = 4096
MAX_RUNS = 10**9
MAX_KNOBS = 64
MAX_FINGERPRINT_ITEMS = 64

DEVICE_KEY = re.compile(r"(cpu|cuda)-[a-z0-9_.+\-]{1,240}")
WORKLOAD_KEY = re.compile(r"[a-z][A-Za-z0-9_.+\-]{0,255}")
TEMPLATE = re.compile(r"[a-z][a-z0-9_]{0,63}\.[a-z][a-z0-9_]{0,63}")
ORIGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9:_.+\-]{0,255}")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
WORD = re.compile(r"[A-Za-z0-9_.+\-]{0,64}")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?")

BACKENDS = ("tvm", "triton")
LATENCY_STATS = ("median", "mean", "min", "max", "std", "runs", "drift")
MAX_DRIFT = 100.0  # the host's slowdown a batch was set back from (search/task.py at_pace)
HEADER_FIELDS = ("kind", "format", "format_version", "schema_version", "autotile", "toolchain")
DEVICE_FIELDS = ("kind", "key", "fingerprint")
WORKLOAD_FIELDS = ("kind", "key", "op", "description")
MEASUREMENT_FIELDS = ("kind", "device", "workload", "backend", "template", "config_key", "config", "status",
                      "failure", "error", "latency", "gflops", "threads", "versions", "timestamp", "origin",
                      "trust", "foreign_latency_us")
TRAILER_FIELDS = ("kind", "lines", "measurements", "sha256")


class Rejected(Exception):
    """Why one line of a bundle is refused."""


def fields(obj, names) -> dict:
    """`obj` when it is an object with exactly these keys."""
    if not isinstance(obj, dict):
        raise Rejected(f"expected a JSON object, got {type(obj).__name__}")
    unknown, missing = sorted(set(obj) - set(names)), [n for n in names if n not in obj]
    if unknown:
        raise Rejected(f"unknown field(s) {', '.join(map(repr, unknown))[:200]}")
    if missing:
        raise Rejected(f"missing field(s) {', '.join(map(repr, missing))}")
    return obj


def text(value, name: str, pattern: re.Pattern | None = None, limit: int = MAX_KEY, optional: bool = False):
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise Rejected(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise Rejected(f"{name} is {len(value)} characters long, at most {limit} allowed")
    if pattern is not None and not pattern.fullmatch(value):
        raise Rejected(f"{name} {value[:80]!r} is not of the expected form")
    return value


def number(value, name: str, low: float, high: float, *, integer: bool = False, low_open: bool = False,
           optional: bool = False):
    """A finite number in [low, high] (or (low, high] when low_open); never a bool."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise Rejected(f"{name} must be {'an integer' if integer else 'a number'}, got {type(value).__name__}")
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        raise Rejected(f"{name} = {value!r:.40} is outside its range ({'(' if low_open else '['}{low}, {high}])")
    return value


def one_of(value, name: str, choices):
    if value not in choices or isinstance(value, bool):
        raise Rejected(f"{name} must be one of {', '.join(map(repr, choices))}, got {str(value)[:60]!r}")
    return value


def string_map(value, name: str, limit: int = 16) -> dict:
    """{name: short string}, as toolchain versions are."""
    if not isinstance(value, dict) or len(value) > limit:
        raise Rejected(f"{name} must be an object of at most {limit} names")
    for k, v in value.items():
        text(k, f"{name} name", NAME)
        text(v, f"{name}[{k!r}]", limit=MAX_SHORT)
    return value


def check_header(obj, schema_version: int) -> dict:
    fields(obj, HEADER_FIELDS)
    if obj["kind"] != "header":
        raise Rejected("the first line must be the header")
    if obj["format"] != FORMAT:
        raise Rejected(f"not an autotile bundle (format {str(obj['format'])[:60]!r}, expected {FORMAT!r})")
    if obj["format_version"] != FORMAT_VERSION or isinstance(obj["format_version"], bool):
        raise Rejected(f"unknown bundle format version {str(obj['format_version'])[:20]!r}; this autotile reads "
                       f"version {FORMAT_VERSION}")
    version = obj["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or not MIN_SCHEMA_VERSION <= version <= schema_version:
        raise Rejected(f"unknown schema version {str(version)[:20]!r}; this autotile reads schema versions "
                       f"{MIN_SCHEMA_VERSION} to {schema_version} (a newer one needs a newer autotile)")
    text(obj["autotile"], "autotile version", WORD)
    string_map(obj["toolchain"], "toolchain")
    return obj


def _plain(value, name: str, depth: int = 0):
    """JSON made of bounded scalars, lists and objects, at most three levels deep (a device fingerprint)."""
    if depth > 3:
        raise Rejected(f"{name} is nested too deeply")
    if isinstance(value, dict):
        if len(value) > MAX_FINGERPRINT_ITEMS:
            raise Rejected(f"{name} has more than {MAX_FINGERPRINT_ITEMS} entries")
        for k, v in value.items():
            text(k, f"{name} name", NAME)
            _plain(v, f"{name}.{k}", depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_FINGERPRINT_ITEMS:
            raise Rejected(f"{name} has more than {MAX_FINGERPRINT_ITEMS} items")
        for v in value:
            _plain(v, name, depth + 1)
    elif isinstance(value, str):
        text(value, name, limit=MAX_SHORT)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number(value, name, -1e18, 1e18)
    elif value is not None and not isinstance(value, bool):
        raise Rejected(f"{name} holds a {type(value).__name__}")


def check_device(obj) -> tuple[str, dict]:
    """(key, fingerprint): the key must be the one this autotile derives from the fingerprint."""
    from autotile.db.device import device_key

    fields(obj, DEVICE_FIELDS)
    key = text(obj["key"], "device key", DEVICE_KEY)
    fingerprint = obj["fingerprint"]
    if not isinstance(fingerprint, dict):
        raise Rejected("fingerprint must be an object")
    _plain(fingerprint, "fingerprint")
    one_of(fingerprint.get("kind"), "fingerprint kind", ("cpu", "cuda"))
    try:
        derived = device_key(fingerprint)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise Rejected(f"fingerprint of {key} lacks what a device key is made of ({type(e).__name__}: {e})"[:300]) \
            from None
    if derived != key:
        raise Rejected(f"device key {key!r} is not the key of its fingerprint ({derived[:120]!r})")
    return key, fingerprint


def check_workload(obj):
    """The workload: its description must rebuild, through the op's own validation, into the same key."""
    from autotile.ops import workload_from_dict

    fields(obj, WORKLOAD_FIELDS)
    key = text(obj["key"], "workload key", WORKLOAD_KEY)
    op = text(obj["op"], "op", NAME)
    description = obj["description"]
    if not isinstance(description, dict) or description.get("op") != op:
        raise Rejected(f"description must be an object whose op is {op!r}")
    _plain(description, "description")
    try:
        workload = workload_from_dict(description)
    except (AutotileError, TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        raise Rejected(f"description of {key} is no valid workload: {e}"[:300]) from None
    if workload.key != key:
        raise Rejected(f"workload key {key!r} is not the key of its description ({workload.key[:120]!r})")
    return workload


class Spaces:
    """Config spaces by (template, workload, device), made once each: a bundle has many records per workload."""

    def __init__(self):
        self._spaces: dict = {}

    def get(self, name: str, workload, device_key: str, fingerprint: dict):
        from autotile.ops import template

        cache_key = (name, workload.key, device_key)
        if cache_key not in self._spaces:
            try:
                t = template(name)
            except AutotileError:
                self._spaces[cache_key] = Rejected(f"unknown template {name!r}")
            else:
                self._spaces[cache_key] = self._space(t, workload, fingerprint)
        space = self._spaces[cache_key]
        if isinstance(space, Rejected):
            raise space
        return space

    @staticmethod
    def _space(t, workload, fingerprint: dict):
        from autotile.ops import family

        if t not in family(workload.op).templates:
            return Rejected(f"template {t.name!r} does not compute {workload.op} workloads")
        try:
            if not t.applies_to(workload, fingerprint):
                return Rejected(f"template {t.name!r} does not compute {workload.key} on this device")
            return t.space_for(workload, fingerprint)
        except (AutotileError, TypeError, ValueError, KeyError, AttributeError) as e:
            return Rejected(f"template {t.name!r} has no space for {workload.key} on this device: {e}"[:300])


@functools.lru_cache(maxsize=4096)
def _knob_rules(space) -> dict:
    """knob -> (the types its domain holds, the smallest number it may be or None); made once per space."""
    rules = {}
    for name, domain in space.domains.items():
        numeric = bool(domain) and all(type(v) in (int, float) for v in domain)
        rules[name] = (frozenset(type(v) for v in domain), min([0, *domain]) if numeric else None)
    return rules


def check_config(config, space):
    """The config these knobs describe in `space`: the template's own knobs, each a plain value of its domain's
    type, and valid. (Canonical configs may leave a domain, a tile clipped to a small shape: never its type or
    sign.)"""
    if not isinstance(config, dict) or len(config) > MAX_KNOBS:
        raise Rejected(f"config must be an object of at most {MAX_KNOBS} knobs")
    rules = _knob_rules(space)
    for name, value in config.items():
        kind = type(value)
        kinds, floor = rules.get(name) or ((), None)
        if kinds and kind not in kinds and not (kind is int and float in kinds):
            raise Rejected(f"knob {name} = {value!r:.40} is not a {' or '.join(sorted(k.__name__ for k in kinds))}")
        if kind is str:
            text(value, f"knob {name}", WORD)
        elif kind is not bool:
            number(value, f"knob {name}", -(2**31), 2**31 - 1)
            if floor is not None and value < floor:
                raise Rejected(f"knob {name} = {value!r} is below its domain ({floor} and up)")
    try:
        parsed = space.config_type.from_dict(config)
        valid = space.valid(parsed)
        space.canonical(parsed)
    except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError, OverflowError) as e:
        raise Rejected(f"config does not parse in {space.template}: {e}"[:300]) from None
    if not valid:
        raise Rejected(f"config {parsed.key[:120]} is not valid in {space.template}'s space for this workload")
    return parsed


def check_latency(latency) -> dict:
    if not isinstance(latency, dict):
        raise Rejected("latency must be an object of statistics")
    unknown = sorted(set(latency) - set(LATENCY_STATS))
    if unknown or "median" not in latency:
        raise Rejected(f"latency holds {', '.join(LATENCY_STATS)} (median required), got {sorted(latency)[:10]}")
    for name in ("median", "mean", "min", "max"):
        if name in latency:
            number(latency[name], f"latency {name}", 0, MAX_LATENCY_US, low_open=True)
    if "std" in latency:
        number(latency["std"], "latency std", 0, MAX_LATENCY_US)
    if "runs" in latency:
        number(latency["runs"], "latency runs", 1, MAX_RUNS, integer=True)
    if "drift" in latency:
        number(latency["drift"], "latency drift", 1, MAX_DRIFT)
    return latency


def check_measurement(obj, devices: dict, workloads: dict, spaces: Spaces) -> dict:
    """A measurement of a device and a workload declared earlier in the bundle, its config parsed in its
    template's space for that device."""
    from autotile.ops import backend_of
    from autotile.search.failures import Failure

    fields(obj, MEASUREMENT_FIELDS)
    device = text(obj["device"], "device", DEVICE_KEY)
    workload_key = text(obj["workload"], "workload", WORKLOAD_KEY)
    if device not in devices:
        raise Rejected(f"device {device!r} is not declared by an earlier device line")
    if workload_key not in workloads:
        raise Rejected(f"workload {workload_key!r} is not declared by an earlier workload line")
    backend = one_of(obj["backend"], "backend", BACKENDS)
    if backend != backend_of(devices[device]):
        raise Rejected(f"backend {backend!r} does not run on device {device!r}")
    name = text(obj["template"], "template", TEMPLATE)
    space = spaces.get(name, workloads[workload_key], device, devices[device])
    config = check_config(obj["config"], space)
    if text(obj["config_key"], "config_key", limit=1024) != config.key:
        raise Rejected(f"config_key {obj['config_key'][:80]!r} is not the key of its config ({config.key[:80]!r})")
    status = one_of(obj["status"], "status", ("ok", "failed"))
    failure, latency, gflops = obj["failure"], obj["latency"], obj["gflops"]
    if status == "ok":
        if failure is not None or latency is None:
            raise Rejected("an ok measurement has latency statistics and no failure kind")
        check_latency(latency)
        number(gflops, "gflops", 0, MAX_GFLOPS, optional=True)
    else:
        one_of(failure, "failure", [f.value for f in Failure])
        if latency is not None or gflops is not None:
            raise Rejected("a failed measurement has no latency and no gflops")
    text(obj["error"], "error", limit=MAX_ERROR, optional=True)
    number(obj["threads"], "threads", 1, MAX_THREADS, integer=True, optional=True)
    string_map(obj["versions"], "versions")
    text(obj["timestamp"], "timestamp", TIMESTAMP, limit=64, optional=True)
    text(obj["origin"], "origin", ORIGIN)
    one_of(obj["trust"], "trust", TRUST_LEVELS)
    number(obj["foreign_latency_us"], "foreign_latency_us", 0, MAX_LATENCY_US, low_open=True, optional=True)
    return obj


def check_trailer(obj) -> dict:
    fields(obj, TRAILER_FIELDS)
    number(obj["lines"], "lines", 1, 10**7, integer=True)
    number(obj["measurements"], "measurements", 0, 10**7, integer=True)
    text(obj["sha256"], "sha256", re.compile(r"[0-9a-f]{64}"))
    return obj
