import json

import numpy as np
import pytest

from autotile.costmodel import CostModel, XGBCostModel, cross_validate, ranking_quality
from autotile.costmodel.xgb import spearman


def synthetic(n, seed=0):
    """Latency of ~10 features: nonlinear, with interactions, a discrete knob, 3 irrelevant features, noise."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, 10))
    X[:, 5] = rng.integers(0, 6, n)  # like log2 of a tile size
    f = (3 * (X[:, 0] - 0.3) ** 2 + np.sin(4 * X[:, 1]) + 2 * X[:, 2] * X[:, 3]
         + 0.3 * np.abs(X[:, 5] - 3) + 0.5 * (X[:, 4] > 0.6))  # features 6..9 are irrelevant
    return X, 100 * np.exp(f + rng.normal(0, 0.1, n))


def trained_model(n=200, data_seed=0, **kwargs):
    X, lat = synthetic(n, data_seed)
    model = XGBCostModel(**kwargs)
    model.update(X, lat)
    return model


def test_ranks_held_out_configs():
    model = trained_model(200, data_seed=0)
    X, lat = synthetic(200, seed=1)
    q = ranking_quality(model, X, lat, k=8)
    assert q["spearman"] > 0.8
    assert q["recall_at_k"] >= 0.375  # random picks would hit 8/200 = 4% on average
    assert model.trained and model.n_samples == 200


def test_learns_more_than_random_scores():
    X, lat = synthetic(200, seed=1)
    untrained = ranking_quality(XGBCostModel(), X, lat)
    assert abs(untrained["spearman"]) < 0.3
    assert ranking_quality(trained_model(), X, lat)["spearman"] > untrained["spearman"] + 0.5


def test_cross_validate():
    X, lat = synthetic(400, seed=2)
    cv = cross_validate(X, lat, folds=4, seed=0)
    assert cv["spearman"] > 0.8 and cv["recall_at_k"] >= 0.4 and cv["folds"] == 4


def test_failed_candidates_rank_last():
    X, lat = synthetic(300, seed=3)
    lat[X[:, 8] > 0.8] = np.inf  # e.g. too much shared memory: fails to compile
    model = XGBCostModel()
    model.update(X[:200], lat[:200])
    scores = model.predict(X[200:])
    failed = ~np.isfinite(lat[200:])
    assert failed.sum() >= 10
    assert scores[failed].max() < np.quantile(scores[~failed], 0.05)
    # the failures seen in training score below every working config seen
    train_scores = model.predict(X[:200])
    assert train_scores[~np.isfinite(lat[:200])].max() < train_scores[np.isfinite(lat[:200])].min()


def test_untrained_scores_are_random_but_seeded():
    X, lat = synthetic(20)
    model = XGBCostModel(seed=7, min_samples=8)
    model.update(X[:5], lat[:5])
    assert not model.trained
    scores = model.predict(X)
    assert scores.shape == (20,)
    assert np.array_equal(scores, XGBCostModel(seed=7).predict(X))
    assert not np.array_equal(scores, XGBCostModel(seed=8).predict(X))
    model.update(X[5:8], lat[5:8])
    assert model.trained


def test_repeated_history_is_not_double_counted():
    X, lat = synthetic(50)
    model = XGBCostModel()
    model.update(X[:30], lat[:30])
    model.update(X, lat)  # the search passes all it has measured each time
    assert model.n_samples == 50
    model.update(X[:1], lat[:1] * 1.1)  # a re-measurement is new data
    assert model.n_samples == 51


def test_save_load_round_trip(tmp_path):
    model = trained_model(100, nthread=1, seed=3)
    X, _ = synthetic(50, seed=9)
    model.save(tmp_path / "cm")
    loaded = XGBCostModel(nthread=2).load(tmp_path / "cm")
    assert loaded.trained and loaded.n_samples == 100 and loaded.seed == 3
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert json.loads(loaded.booster.save_config())["learner"]["generic_param"]["nthread"] == "2"
    # the data came back too: more data refits on all of it
    X2, lat2 = synthetic(10, seed=10)
    loaded.update(X2, lat2)
    assert loaded.n_samples == 110


def test_save_load_untrained(tmp_path):
    model = XGBCostModel(seed=4)
    model.save(tmp_path / "cm")
    loaded = XGBCostModel().load(tmp_path / "cm")
    assert not loaded.trained and loaded.n_samples == 0
    X, _ = synthetic(10)
    assert np.array_equal(loaded.predict(X), XGBCostModel(seed=4).predict(X))


@pytest.mark.parametrize("nthread", [1, 2])
def test_nthread_is_respected(nthread):
    model = trained_model(50, nthread=nthread)
    assert json.loads(model.booster.save_config())["learner"]["generic_param"]["nthread"] == str(nthread)


def test_rejects_mismatched_inputs():
    model = trained_model(20)
    with pytest.raises(ValueError, match="features"):
        model.update(np.zeros((3, 4)), np.ones(3))
    with pytest.raises(ValueError, match="latencies"):
        model.update(np.zeros((3, 10)), np.ones(2))


def test_metrics():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [5, 5, 5, 5]) == 0.0

    class Oracle(CostModel):
        def update(self, X, latency_us): ...
        def predict(self, X): return -np.asarray(X)[:, 0]
        def save(self, path): ...
        def load(self, path): return self

    lat = np.array([5.0, 1.0, np.inf, 3.0, 2.0])
    assert ranking_quality(Oracle(), lat[:, None], lat, k=2) == {"spearman": pytest.approx(1.0),
                                                                 "recall_at_k": 1.0, "k": 2, "n": 5}
    # scoring by the slowest first finds none of the 2 fastest
    q = ranking_quality(Oracle(), -np.array([5.0, 1.0, 10.0, 3.0, 2.0])[:, None], lat, k=2)
    assert q["recall_at_k"] == 0.0 and q["spearman"] < 0


def test_another_devices_rows_count_as_much_as_they_agree_with_ours():
    """A warm start's foreign rows: full weight before this device has AGREEMENT_ROWS rows; then the rank
    correlation of a model of them alone with what is measured here (clipped at 0), and none from OWN_ENOUGH."""
    from autotile.costmodel.transfer import AGREEMENT_ROWS, OWN_ENOUGH, ForeignRows

    X, lat = synthetic(200, seed=4)
    agreeing = ForeignRows(list(zip(X[:150], lat[:150])))
    contrary = ForeignRows(list(zip(X[:150], 1e4 / lat[:150])))  # the same configs, the order reversed
    own_X, own_lat = X[150:150 + 16], lat[150:150 + 16]
    assert agreeing.weight(own_X[:AGREEMENT_ROWS - 1], own_lat[:AGREEMENT_ROWS - 1]) == 1.0
    assert contrary.weight(own_X[:AGREEMENT_ROWS - 1], own_lat[:AGREEMENT_ROWS - 1]) == 1.0
    assert agreeing.weight(own_X, own_lat) > 0.6
    assert contrary.weight(own_X, own_lat) == 0.0
    many_X, many_lat = synthetic(OWN_ENOUGH, seed=5)
    assert agreeing.weight(many_X, many_lat) == 0.0
    assert ForeignRows().weight(own_X, own_lat) == 0.0


def test_a_prior_trains_the_model_at_its_weight(tmp_path):
    """Prior rows train a model that has no rows of its own yet; at weight 0 they are left out, and a contrary
    prior at weight 1 drags a small model's ranking while at 0 it does not; the prior survives save and load."""
    X, lat = synthetic(300, seed=6)
    test_X, test_lat = X[200:], lat[200:]
    alone = XGBCostModel()
    alone.set_prior(X[:150], lat[:150], 1.0)
    alone.refit()
    assert alone.trained and alone.n_samples == 0
    assert ranking_quality(alone, test_X, test_lat)["spearman"] > 0.7

    quality = {}
    for weight in (0.0, 1.0):
        model = XGBCostModel()
        model.set_prior(X[:150], 1e4 / lat[:150], weight)  # reversed: a device where the order is the opposite
        model.update(X[150:190], lat[150:190])
        quality[weight] = ranking_quality(model, test_X, test_lat)["spearman"]
    assert quality[0.0] > 0.5 and quality[1.0] < quality[0.0] - 0.3

    model = XGBCostModel()
    model.set_prior(X[:150], lat[:150], 0.25)
    model.update(X[150:190], lat[150:190])
    model.save(tmp_path / "m")
    loaded = XGBCostModel().load(tmp_path / "m")
    assert loaded.prior_weight == 0.25 and np.array_equal(loaded._prior_y, lat[:150])
    assert np.allclose(loaded.predict(test_X), model.predict(test_X))
