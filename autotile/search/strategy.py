"""Search strategies behind one small interface: propose configs, be told how they did.

A strategy never proposes a config whose canonical form was already proposed or measured
(configs that lower to the same program are measured once).
"""

from __future__ import annotations

import math
import random

import numpy as np

from autotile.costmodel.transfer import ForeignRows


class SearchStrategy:
    name = "base"
    learns = False  # whether it ranks candidates with a cost model (trained on `history` too)

    @classmethod
    def create(cls, space, *, seed: int, seeds, seen, cost_model=None, history=(), foreign=()):
        """The strategy for one tuning run; a learning one gets `cost_model` (a fresh XGBoost one when None), this
        device's past rows (`history`) and other devices' (`foreign`, weighed by their agreement with ours)."""
        return cls(space, seed=seed, seeds=seeds, seen=seen)

    def __init__(self, space, seed: int = 0, seeds=(), seen: set[str] | None = None):
        self.space = space
        self.rng = random.Random(seed)
        self.seeds = [space.canonical(c) for c in seeds if space.valid(c)]
        self.seen: set[str] = set(seen or ())
        self.measured: list = []  # (config, latency_us); inf for failures
        self.known: list = []  # (config, latency_us) measured by earlier runs: parents too, never proposed again

    def _fresh(self, config) -> bool:
        if config.key in self.seen:
            return False
        self.seen.add(config.key)
        return True

    def suggest(self, config) -> bool:
        """Put `config` first in the next batch, unless it was proposed or measured already (or is queued)."""
        config = self.space.canonical(config)
        if config.key in self.seen or any(c.key == config.key for c in self.seeds):
            return False
        self.seeds.insert(0, config)
        return True

    def _seed_batch(self, n: int) -> list:
        batch = []
        while self.seeds and len(batch) < n:
            config = self.seeds.pop(0)
            if self._fresh(config):
                batch.append(config)
        return batch

    def _random(self, n: int, tries: int = 50) -> list:
        batch = []
        for _ in range(n * tries):
            if len(batch) == n:
                break
            config = self.space.sample(self.rng)
            if self._fresh(config):
                batch.append(config)
        return batch

    def propose(self, n: int) -> list:
        raise NotImplementedError

    def notify(self, results) -> None:
        for r in results:
            self.measured.append((r.config, r.latency_us))


class RandomSearch(SearchStrategy):
    """The baseline: uniform samples from the space (after the seeds)."""

    name = "random"

    def propose(self, n: int) -> list:
        batch = self._seed_batch(n)
        return batch + self._random(n - len(batch))


class EvolutionSearch(SearchStrategy):
    """Evolution (tournament selection, mutation, crossover, elitism) filtered by a cost model.

    Each round breeds many children from the best measured configs, the cost model ranks them,
    and the top ones are measured, plus a few random ones so the model keeps learning.
    """

    name = "evolution"
    learns = True

    @classmethod
    def create(cls, space, *, seed: int, seeds, seen, cost_model=None, history=(), foreign=()):
        return cls(space, seed=seed, seeds=seeds, seen=seen, cost_model=cost_model or new_cost_model(seed),
                   history=history, foreign=foreign)

    def __init__(self, space, seed: int = 0, seeds=(), seen=None, cost_model=None, features=None,
                 population: int = 16, children: int = 512, explore: float = 0.2, history=(), foreign=()):
        super().__init__(space, seed, seeds, seen)
        self.cost_model = cost_model
        self.features = features or (lambda c: space.features(c))
        self.population = population
        self.children = children
        self.explore = explore
        self.history = list(history)  # (features, latency_us) measured here before this run, to train on
        self.foreign = ForeignRows(foreign, seed)  # other devices' rows, as much as they agree with ours
        self.foreign_weight = 1.0 if len(self.foreign) else 0.0
        self._fit()

    def _parents(self) -> list:
        ok = sorted((m for m in [*self.known, *self.measured] if math.isfinite(m[1])), key=lambda m: m[1])
        return [c for c, _ in ok[: self.population]]

    def _tournament(self, parents: list):
        # parents are sorted best first: the lower index of two random picks wins
        return parents[min(self.rng.randrange(len(parents)), self.rng.randrange(len(parents)))]

    def _breed(self, parents: list) -> list:
        children, keys = [], set()
        for _ in range(self.children * 4):
            if len(children) >= self.children:
                break
            roll = self.rng.random()
            if roll < 0.1 or not parents:
                child = self.space.sample(self.rng)
            elif roll < 0.35 and len(parents) > 1:
                child = self.space.crossover(self._tournament(parents), self._tournament(parents), self.rng)
                child = self.space.mutate(child, self.rng) if self.rng.random() < 0.3 else child
            else:
                child = self.space.mutate(self._tournament(parents), self.rng, knobs=self.rng.choice((1, 1, 2, 3)))
            if child.key not in self.seen and child.key not in keys:
                keys.add(child.key)
                children.append(child)
        return children

    def propose(self, n: int) -> list:
        batch = self._seed_batch(n)
        parents = self._parents()
        if len(batch) >= n or not parents:
            return batch + self._random(n - len(batch))
        children = self._breed(parents)
        n_explore = max(1, int(round((n - len(batch)) * self.explore)))
        n_exploit = n - len(batch) - n_explore
        ranked = self._rank(children, n_exploit)
        chosen = ranked[:n_exploit]
        rest = ranked[n_exploit:]
        chosen += self.rng.sample(rest, min(n_explore, len(rest)))
        for c in chosen:
            self.seen.add(c.key)
        if len(chosen) < n - len(batch):
            chosen += self._random(n - len(batch) - len(chosen))
        return batch + chosen

    def _rank(self, children: list, n_exploit: int) -> list:
        """Children best first by the cost model; in bred order while it is untrained. Children left out of
        the returned list are dropped from this round."""
        if self.cost_model is not None and self.cost_model.trained and children:
            scores = self.cost_model.predict(np.array([self.features(c) for c in children], dtype=float))
            return [children[i] for i in np.argsort(-scores, kind="stable")]
        return children

    def notify(self, results) -> None:
        super().notify(results)
        self._fit()

    def set_foreign(self, rows) -> None:
        """Other devices' rows anew (set at another level, search/history.py `levels`), the cost model refit."""
        self.foreign = ForeignRows(rows, self.foreign.seed)
        self._fit()

    def _own_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, latency) of everything measured on this device: past rows, then this run's."""
        X = [f for f, _ in self.history] + [self.features(c) for c, _ in self.measured]
        y = [lat for _, lat in self.history] + [lat for _, lat in self.measured]
        return np.array(X, dtype=float), np.array(y, dtype=float)

    def _teach(self, model, X, y) -> None:
        """Train `model` on this device's rows, the foreign ones beside them at their current weight."""
        self.foreign_weight = self.foreign.teach(model, X, y)
        if len(y):
            model.update(X, y)
        elif hasattr(model, "refit"):
            model.refit()

    def _fit(self):
        if self.cost_model is not None:
            self._teach(self.cost_model, *self._own_rows())


def new_cost_model(seed: int):
    from autotile.costmodel import XGBCostModel

    return XGBCostModel(nthread=1, seed=seed)


STRATEGIES = {"evolution": EvolutionSearch, "random": RandomSearch}
