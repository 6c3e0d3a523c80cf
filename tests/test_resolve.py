"""Which config a model's workload runs with: exact record, else the nearest tuned shape's, else the default."""

import random

from autotile.db.device import current_device
from autotile.db.store import TuningDB
from autotile.dynamo.resolve import Resolver
from autotile.ir import GemmWorkload
from autotile.ir.qgemm import QGemmWorkload
from autotile.kernels import space_for
from autotile.search.tuner import backend_versions


def record_best(db, device, workload, config):
    db.ensure_workload(workload.key, workload.op, workload.to_dict())
    latency = {"median": 10.0, "mean": 10.0, "min": 10.0, "max": 10.0, "std": 0.0, "runs": 5}
    db.record_measurement(device=device.key, workload=workload.key, backend="tvm", config_key=config.key,
                          config=config.to_dict(), status="ok", latency=latency, gflops=1.0, threads=2,
                          versions=backend_versions("tvm"))


def a_non_default_config(workload, seed=3):
    space = space_for(workload, current_device("tvm").fingerprint)
    rng = random.Random(seed)
    while True:
        config = space.sample(rng)
        if config != space.default():
            return config


def check_borrowing(tmp_path, tuned, asked, unrelated):
    device = current_device("tvm")
    borrowed = a_non_default_config(tuned)
    with TuningDB(tmp_path / "r.db") as db:
        record_best(db, device, tuned, borrowed)
        resolver = Resolver(str(tmp_path / "r.db"), "cached")
        exact, source = resolver.choose(tuned, db)
        assert (exact, source) == (borrowed, "exact")
        config, source = resolver.choose(asked, db)
        space = space_for(asked, device.fingerprint)
        assert source == "nearest" and config == space.canonical(borrowed)
        config, source = resolver.choose(unrelated, db)  # differs in more than shape: nothing to borrow
        assert (config, source) == (space_for(unrelated, device.fingerprint).default(), "default")


def test_a_gemm_borrows_the_nearest_tuned_shape(tmp_path):
    check_borrowing(tmp_path, GemmWorkload(128, 768, 768), GemmWorkload(96, 768, 768),
                    GemmWorkload(96, 768, 768, epilogue="bias"))


def test_a_quantized_linear_borrows_the_nearest_tuned_shape(tmp_path):
    def q(m, group=32):
        return QGemmWorkload(m, 64, 256, weight_dtype="int8", act_dtype="float32", group_size=group)

    check_borrowing(tmp_path, q(32), q(16), q(16, group=64))
