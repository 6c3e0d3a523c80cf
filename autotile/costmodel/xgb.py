"""Cost models that rank candidate configs by predicted speed, trained online on measurements."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class CostModel(ABC):
    """Scores feature vectors so that a higher score means a predicted faster kernel."""

    @property
    def trained(self) -> bool:
        """False while scores are only exploration noise; models that need no data are always trained."""
        return True

    @abstractmethod
    def update(self, X: np.ndarray, latency_us: np.ndarray) -> None:
        """Learn from measured configs; a latency of inf (or nan, <= 0) marks a failed candidate."""

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """One score per row of X, higher = predicted faster."""

    @abstractmethod
    def save(self, path) -> None: ...

    @abstractmethod
    def load(self, path) -> CostModel: ...


def throughput(latency_us) -> np.ndarray:
    """1/latency; failed candidates (inf, nan, <= 0) get 0 so they count as slowest."""
    lat = np.asarray(latency_us, dtype=float)
    ok = np.isfinite(lat) & (lat > 0)
    return np.where(ok, 1.0 / np.where(ok, lat, 1.0), 0.0)


class XGBCostModel(CostModel):
    """Gradient-boosted trees regressing log throughput relative to the best seen, refit from scratch.

    Regression on log(best_latency / latency) ranked held-out configs better than rank:pairwise on the
    synthetic tests (Spearman ~0.95 vs ~0.8), and a refit from scratch keeps the targets consistent
    as the best seen changes; shallow trees fit 1000 x 30 in ~0.1 s on one thread.
    """

    ROUNDS = 200
    PARAMS = {"objective": "reg:squarederror", "eta": 0.1, "max_depth": 3, "subsample": 0.8,
              "colsample_bytree": 0.8, "tree_method": "hist", "verbosity": 0}
    FAILED_MARGIN = 1.0  # failures sit one e-fold below the slowest working config: low but finite

    def __init__(self, nthread: int = 1, seed: int = 0, min_samples: int = 8):
        self.nthread, self.seed, self.min_samples = nthread, seed, min_samples
        self._X: np.ndarray | None = None
        self._y = np.empty(0)
        # Rows from elsewhere (other devices' records) learned beside this model's own at a weight of their own:
        # set by set_prior, never merged into the data update() keeps.
        self._prior_X: np.ndarray | None = None
        self._prior_y = np.empty(0)
        self.prior_weight = 0.0
        self._booster = None
        self._rng = np.random.default_rng(seed)

    @property
    def trained(self) -> bool:
        return self._booster is not None

    @property
    def n_samples(self) -> int:
        return len(self._y)

    def set_prior(self, X, latency_us, weight: float) -> None:
        """Rows learned at `weight` (0 leaves them out) beside update()'s, from the next fit on: another device's
        records, whose say shrinks as this device's measurements disagree with them (costmodel/transfer.py)."""
        y = np.asarray(latency_us, dtype=float).ravel()
        self._prior_X = np.atleast_2d(np.asarray(X, dtype=float)) if len(y) else None
        self._prior_y, self.prior_weight = y, float(weight) if len(y) else 0.0

    @property
    def booster(self):
        return self._booster

    def update(self, X, latency_us) -> None:
        X = np.atleast_2d(np.asarray(X, dtype=float))
        y = np.asarray(latency_us, dtype=float).ravel()
        if len(X) != len(y):
            raise ValueError(f"{len(X)} feature rows but {len(y)} latencies")
        if self._X is not None and X.shape[1] != self._X.shape[1]:
            raise ValueError(f"expected {self._X.shape[1]} features, got {X.shape[1]}")
        if len(y) == 0:
            return
        X = X if self._X is None else np.vstack([self._X, X])
        y = np.concatenate([self._y, y])
        # Callers may pass the whole history on every update: drop exact (features, latency) repeats so
        # old points do not gain weight; a real re-measurement has a different latency and is kept.
        _, first = np.unique(np.column_stack([X, y]), axis=0, return_index=True)
        keep = np.sort(first)
        self._X, self._y = X[keep], y[keep]
        self.refit()

    def refit(self) -> None:
        """Fit on the rows held now, the prior's included, once there are min_samples of them (a search with no
        measurement of its own yet starts from another device's)."""
        if self.n_samples + (len(self._prior_y) if self.prior_weight > 0 else 0) >= self.min_samples:
            self._fit()

    def _training_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, latencies, sample weights): this model's rows at 1, the prior's at its weight (when above 0)."""
        if self.prior_weight <= 0 or self._prior_X is None:
            return self._X, self._y, np.ones(len(self._y))
        if self._X is None:
            return self._prior_X, self._prior_y, np.full(len(self._prior_y), self.prior_weight)
        if self._prior_X.shape[1] != self._X.shape[1]:
            raise ValueError(f"prior rows have {self._prior_X.shape[1]} features, this model {self._X.shape[1]}")
        return (np.vstack([self._X, self._prior_X]), np.concatenate([self._y, self._prior_y]),
                np.concatenate([np.ones(len(self._y)), np.full(len(self._prior_y), self.prior_weight)]))

    def _targets(self, latency_us: np.ndarray | None = None) -> np.ndarray:
        thr = throughput(self._y if latency_us is None else latency_us)
        ok = thr > 0
        if not ok.any():
            return np.zeros(len(thr))
        target = np.log(thr / thr[ok].max(), where=ok, out=np.zeros(len(thr)))
        target[~ok] = target[ok].min() - self.FAILED_MARGIN
        return target

    def _fit(self) -> None:
        import xgboost as xgb

        params = {**self.PARAMS, "nthread": self.nthread, "seed": self.seed}
        X, y, weight = self._training_set()
        data = xgb.DMatrix(X, label=self._targets(y), weight=weight, nthread=self.nthread)
        self._booster = xgb.train(params, data, self.ROUNDS)

    def predict(self, X) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=float))
        if not self.trained:
            return self._rng.random(len(X))  # too little data: random scores make the search explore
        if len(X) == 0:
            return np.empty(0)
        return np.asarray(self._booster.inplace_predict(X), dtype=float)

    def save(self, path) -> None:
        """Writes a directory: booster.json (xgboost's JSON format), data.npz (the data seen), meta.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        booster_file = path / "booster.json"
        if self._booster is not None:
            self._booster.save_model(str(booster_file))
        else:
            booster_file.unlink(missing_ok=True)
        X = self._X if self._X is not None else np.empty((0, 0))
        prior_X = self._prior_X if self._prior_X is not None else np.empty((0, 0))
        np.savez(path / "data.npz", X=X, y=self._y, prior_X=prior_X, prior_y=self._prior_y,
                 prior_weight=self.prior_weight)
        meta = {"format": 1, "seed": self.seed, "min_samples": self.min_samples, "nthread": self.nthread}
        (path / "meta.json").write_text(json.dumps(meta))

    def load(self, path) -> XGBCostModel:
        """Restores a saved model into self (returned for chaining); keeps this instance's nthread,
        since the thread budget belongs to the machine that runs it, not the one that saved it."""
        import xgboost as xgb

        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        self.seed, self.min_samples = meta["seed"], meta["min_samples"]
        self._rng = np.random.default_rng(self.seed)
        with np.load(path / "data.npz") as data:
            self._X = data["X"] if data["X"].size else None
            self._y = data["y"]
            if "prior_y" in data:  # saved before priors existed: none
                self._prior_X = data["prior_X"] if data["prior_X"].size else None
                self._prior_y, self.prior_weight = data["prior_y"], float(data["prior_weight"])
        self._booster = None
        if (path / "booster.json").exists():
            self._booster = xgb.Booster(model_file=str(path / "booster.json"))
            self._booster.set_param({"nthread": self.nthread})
        return self


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata), so tied failures do not fake an order."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def spearman(a, b) -> float:
    """Spearman rank correlation; 0.0 when either side is constant (no ordering information)."""
    ra, rb = _ranks(np.asarray(a, dtype=float)), _ranks(np.asarray(b, dtype=float))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def ranking_quality(model: CostModel, X, latency_us, k: int = 8) -> dict:
    """How well `model` ranks held-out measured configs.

    spearman: rank correlation between predicted score and measured throughput (failures = 0).
    recall_at_k: fraction of the model's top k that are among the truly k fastest (ties count as hits).
    """
    scores = np.asarray(model.predict(X), dtype=float)
    thr = throughput(latency_us)
    k = min(k, len(thr))
    top_pred = np.argsort(-scores, kind="stable")[:k]
    kth_best = np.sort(thr)[::-1][k - 1] if k else 0.0
    recall = float(np.mean(thr[top_pred] >= kth_best)) if k else float("nan")
    return {"spearman": spearman(scores, thr), "recall_at_k": recall, "k": k, "n": len(thr)}


def cross_validate(X, latency_us, folds: int = 4, seed: int = 0, k: int = 8, make_model=None) -> dict:
    """ranking_quality averaged over shuffled folds, a fresh model (default XGBCostModel) per fold."""
    X = np.atleast_2d(np.asarray(X, dtype=float))
    lat = np.asarray(latency_us, dtype=float).ravel()
    make_model = make_model or (lambda: XGBCostModel(seed=seed))
    parts = np.array_split(np.random.default_rng(seed).permutation(len(lat)), folds)
    results = []
    for i, test in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != i])
        model = make_model()
        model.update(X[train], lat[train])
        results.append(ranking_quality(model, X[test], lat[test], k=k))
    return {"spearman": float(np.mean([r["spearman"] for r in results])),
            "recall_at_k": float(np.mean([r["recall_at_k"] for r in results])), "k": k, "folds": folds}
