"""The CPU layer-norm template: one row at a time, three vectorized passes over it while it sits in L1.

    parallel over blocks of `grain` rows
      mean = sum(x) / cols                 `unroll` independent vector accumulators of `vec` lanes
      var  = sum((x - mean)^2) / cols      two passes, not E[x^2] - mean^2, which cancels for large means
      out  = (x - mean) * rsqrt(var + eps) * weight + bias

Columns past the last whole vector run as a scalar tail. A 16-bit row is widened to float32 as it is read, in
each pass, and the output rounded back as it is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autotile.ir.dtypes import dtype
from autotile.ops.layernorm.workload import LayerNormWorkload
from autotile.ops.space import Config, ConfigSpace, vector_unit


@dataclass(frozen=True)
class LayerNormConfig(Config):
    vec: int = 16  # lanes of each accumulator and of the normalize pass
    unroll: int = 2  # independent accumulators in the two sums (a divisor of the row's whole vectors)
    grain: int = 4  # rows per parallel work item


class LayerNormSpace(ConfigSpace):
    config_type = LayerNormConfig
    template = "layernorm.rows"

    def __init__(self, workload: LayerNormWorkload, vector_lanes: int = 16):
        self.workload = workload
        self.lanes = vector_lanes
        self.domains = {
            "vec": [8, 16] if vector_lanes >= 16 else [4, 8],
            "unroll": [1, 2, 4, 8],
            "grain": [1, 2, 4, 8, 16, 32],
        }

    @classmethod
    def for_device(cls, workload: LayerNormWorkload, fingerprint: dict | None = None) -> LayerNormSpace:
        return cls(workload, vector_unit(fingerprint)[0])

    def adopt(self, c: LayerNormConfig, fingerprint: dict | None) -> LayerNormConfig:
        lanes = vector_unit(fingerprint)[0]
        if lanes == self.lanes:
            return c
        return self.canonical(replace(c, vec=c.vec * self.lanes // lanes))

    def canonical(self, c: LayerNormConfig) -> LayerNormConfig:
        """A vector no wider than the row; unroll a divisor of its whole vectors; grain at most the rows."""
        w = self.workload
        vec = c.vec
        while vec > 4 and vec > w.cols:
            vec //= 2
        whole = max(w.cols // vec, 1)
        return LayerNormConfig(vec, math.gcd(c.unroll, whole), min(c.grain, w.rows))

    def default(self) -> LayerNormConfig:
        return self.canonical(LayerNormConfig(self.lanes, 2, 4))

    def features(self, c: LayerNormConfig) -> list[float]:
        w = self.workload
        log = math.log2
        items = -(-w.rows // c.grain)
        row_bytes = dtype(w.dtype).bits // 8 * w.cols
        return [log(w.rows), log(w.cols), c.vec, c.unroll, log(c.grain), log(items), items % 2,
                (w.cols % c.vec) / c.vec, log(row_bytes * c.grain)]
