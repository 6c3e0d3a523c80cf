"""How much another device's records may teach a search here: as much as they agree with this device.

A warm start trains the cost model on other devices' records while this one has few. Where the two CPUs agree,
that saves the trials a cold model spends learning; where they do not (Zen 4's GEMM blocks, sized for a 1 MiB L2
and 32 vector registers, measured 2-7% slower than the default on a Zen 3), the foreign rows pull the search
into the other CPU's optimum: half a warm run's GEMM trials went to Zen 4-sized blocks, against a tenth to a
quarter of a cold run's. So the foreign rows are weighted by how well a model of them alone ranks the configs
measured here, an out-of-sample test that sharpens as the search measures more.
"""

from __future__ import annotations

import math

import numpy as np

from autotile.costmodel.xgb import XGBCostModel, spearman, throughput

OWN_ENOUGH = 64  # rows of this device past which other devices' records are left out
AGREEMENT_ROWS = 8  # rows of this device before the agreement is measured; until then the foreign rows count fully


class ForeignRows:
    """Other devices' training rows, `(features, latency)` scaled to this device, and their current weight."""

    def __init__(self, rows=(), seed: int = 0):
        self.X = np.array([f for f, _ in rows], dtype=float)
        self.latency = np.array([lat for _, lat in rows], dtype=float)
        self.seed = seed
        self._model: XGBCostModel | None = None

    def __len__(self) -> int:
        return len(self.latency)

    def _alone(self) -> XGBCostModel:
        """A cost model of the foreign rows alone (fit once): whose ranking of this device's rows is the test."""
        if self._model is None:
            self._model = XGBCostModel(nthread=1, seed=self.seed)
            self._model.update(self.X, self.latency)
        return self._model

    def weight(self, own_X, own_latency) -> float:
        """1 while this device has fewer than AGREEMENT_ROWS rows, 0 from OWN_ENOUGH on; between, the Spearman
        correlation (clipped to 0..1) between the foreign model's scores and the throughputs measured here."""
        n = len(own_latency)
        if not len(self) or n >= OWN_ENOUGH:
            return 0.0
        if n < AGREEMENT_ROWS:
            return 1.0
        model = self._alone()
        if not model.trained:
            return 0.0
        rho = spearman(model.predict(np.asarray(own_X, dtype=float)), throughput(own_latency))
        return 0.0 if math.isnan(rho) else min(1.0, max(0.0, rho))

    def teach(self, cost_model, own_X, own_latency) -> float:
        """Set them as `cost_model`'s prior at their weight against these own rows; returns the weight."""
        weight = self.weight(own_X, own_latency)
        if len(self) and hasattr(cost_model, "set_prior"):
            cost_model.set_prior(self.X, self.latency, weight)
        return weight
