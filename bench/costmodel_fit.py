"""How long the XGBoost cost model takes to fit, against how long one trial takes to build and measure.

    .venv/bin/python bench/costmodel_fit.py [--samples 250,1000,4000] [--features 30]

The tuner refits after every batch, so a fit must stay small beside a trial (a TVM build plus timed runs,
about 0.3-1 s here). Prints seconds per fit and that ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from autotile.costmodel import XGBCostModel

TRIAL_SECONDS = 0.5  # a typical build + measure of one candidate on these machines


def synthetic(n: int, features: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, features))
    f = 3 * (X[:, 0] - 0.3) ** 2 + np.sin(4 * X[:, 1]) + 2 * X[:, 2] * X[:, 3]
    return X, 100 * np.exp(f + rng.normal(0, 0.1, n))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", default="250,1000,4000")
    p.add_argument("--features", type=int, default=30)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"{'samples':>8s} {'fit s (median)':>15s} {'fit / one trial':>16s}")
    for n in (int(x) for x in args.samples.split(",")):
        X, lat = synthetic(n, args.features)
        times = []
        for _ in range(args.repeats):
            model = XGBCostModel()
            start = time.perf_counter()
            model.update(X, lat)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"{n:8d} {median:15.3f} {median / TRIAL_SECONDS:15.2f}x")


if __name__ == "__main__":
    main()
