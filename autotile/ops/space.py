"""What every template's config space offers the search: plain values, stable keys, features.

A config is a frozen dataclass of ints, strings and bools. Its key is built from its values
(never from hash() or repr), so it keys database rows and kernel caches across processes.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Base of template configs: serialisation and a readable key shared by all of them."""

    @property
    def key(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                value = int(value)
            parts.append(f"{f.name}{value}")
        return "_".join(parts)

    def __str__(self) -> str:
        return self.key

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict):
        """The config these values describe; a ValueError when they are another template's (a knob this one
        lacks, or one of its own missing): a record is never filled in with defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(d) - names), sorted(names - set(d))
        if unknown or missing:
            raise ValueError(f"not a {cls.__name__}: " + "; ".join(
                part for part in (unknown and f"unknown knobs {unknown}", missing and f"missing knobs {missing}")
                if part))
        return cls(**d)


def vector_unit(fingerprint: dict | None) -> tuple[int, int]:
    """(float32 lanes per vector register, vector registers) of the CPU a fingerprint describes; AVX-512's when
    the fingerprint is unknown."""
    flags = (fingerprint or {}).get("flags", ["avx512f"])
    return (16, 32) if "avx512f" in flags else (8, 16)


def threads_of(fingerprint: dict | None) -> int:
    """The thread count kernels run with on the device a fingerprint describes; one when it is unknown."""
    return int((fingerprint or {}).get("threads", 1))


def has_bf16_dot(fingerprint: dict | None) -> bool:
    """Whether the CPU has AVX-512's bf16 dot product (vdpbf16ps); never assumed for an unknown fingerprint."""
    flags = (fingerprint or {}).get("flags", [])
    return "avx512f" in flags and "avx512_bf16" in flags


def has_vnni(fingerprint: dict | None) -> bool:
    """Whether the CPU has AVX-512 VNNI (vpdpbusd); assumed for an unknown fingerprint, as its AVX-512 is."""
    flags = (fingerprint or {}).get("flags", ["avx512f", "avx512_vnni"])
    return "avx512f" in flags and "avx512_vnni" in flags


class ConfigSpace:
    """A template's space: domains per knob, a validity check, and a canonical form.

    Subclasses define `domains` (knob -> list of values), `valid(config)`, `canonical(config)`
    (equal for configs that lower to the same program), `default()` and `features(config)`.
    Sampling, mutation and crossover are generic over the domains.
    """

    config_type: type[Config]
    template: str  # the template's name, recorded with every measurement of its configs ("gemm.blis")
    domains: dict[str, list]

    def valid(self, config) -> bool:
        return True

    def canonical(self, config):
        return config

    def default(self):
        raise NotImplementedError

    def adopt(self, config, fingerprint: dict | None):
        """`config`, a winner on the CPU `fingerprint` describes, rewritten for this space's device: the CPU
        templates whose knobs count float lanes (gemm, attention, layer norm, conv) keep its register tiles in
        vectors and its blocks in bytes, so an AVX2 winner seeds an AVX-512 search with 512-bit tiles, not 256-bit
        ones. The others keep it as it is."""
        return config

    def _fit_rows(self, config, rows: tuple[str, ...]):
        """`config` with its register-tile rows (the knobs `rows`) cut one at a time, the tallest first, until
        it fits this device's registers; None if even one row does not."""
        while not self.valid(config):
            name = max(rows, key=lambda knob: getattr(config, knob))
            if getattr(config, name) <= 1:
                return None
            config = dataclasses.replace(config, **{name: getattr(config, name) - 1})
        return config

    def features(self, config) -> list[float]:
        raise NotImplementedError

    def _retry(self, make, rng: random.Random, fallback):
        for _ in range(200):
            config = make()
            if self.valid(config):
                return self.canonical(config)
        return self.canonical(fallback)

    def sample(self, rng: random.Random):
        return self._retry(
            lambda: self.config_type(**{k: rng.choice(v) for k, v in self.domains.items()}), rng, self.default()
        )

    def mutate(self, config, rng: random.Random, knobs: int = 1):
        def make():
            changed = config.to_dict()
            for name in rng.sample(sorted(self.domains), knobs):
                changed[name] = _neighbour(self.domains[name], changed[name], rng)
            return self.config_type(**changed)

        return self._retry(make, rng, config)

    def crossover(self, a, b, rng: random.Random):
        da, db = a.to_dict(), b.to_dict()
        return self._retry(
            lambda: self.config_type(**{k: (da if rng.random() < 0.5 else db)[k] for k in da}), rng, a
        )


def _neighbour(domain: list, value, rng: random.Random):
    """Ordered domains step to an adjacent value (small moves); others jump anywhere. A value between a domain's
    values (a default's block of every row, 22 tiles) steps to those around its place."""
    if _ordered(domain) and _number(value):
        if value in domain:
            i = domain.index(value)
            j = min(max(i + rng.choice((-2, -1, 1, 2)), 0), len(domain) - 1)
            if j != i:
                return domain[j]
        else:
            place = bisect.bisect(domain, value)
            return rng.choice(domain[max(place - 2, 0):place + 2])
    others = [v for v in domain if v != value]
    return rng.choice(others) if others else value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ordered(domain: list) -> bool:
    return bool(domain) and all(map(_number, domain)) and domain == sorted(domain)
