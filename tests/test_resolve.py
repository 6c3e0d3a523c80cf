"""Which config a model's workload runs with: exact record, else the nearest tuned shape's, else the default."""

import random

import pytest

from autotile.db.device import current_device
from autotile.db.store import TuningDB
from autotile.dynamo.resolve import Resolver
from autotile.ir import GemmWorkload
from autotile.ops import space_for
from autotile.ops.qgemm.workload import QGemmWorkload
from autotile.search.tuner import backend_versions


def record_best(db, device, workload, config, template=None):
    db.ensure_workload(workload.key, workload.op, workload.to_dict())
    latency = {"median": 10.0, "mean": 10.0, "min": 10.0, "max": 10.0, "std": 0.0, "runs": 5}
    template = template or space_for(workload, device.fingerprint).template
    db.record_measurement(device=device.key, workload=workload.key, backend="tvm", template=template,
                          config_key=config.key, config=config.to_dict(), status="ok", latency=latency, gflops=1.0,
                          threads=2, versions=backend_versions("tvm"))


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
        exact, source = resolver.choose(tuned)
        assert (exact, source) == (borrowed, "exact")
        config, source = resolver.choose(asked)
        space = space_for(asked, device.fingerprint)
        assert source == "nearest" and config == space.canonical(borrowed)
        config, source = resolver.choose(unrelated)  # differs in more than shape: nothing to borrow
        assert (config, source) == (space_for(unrelated, device.fingerprint).default(), "default")


def test_a_gemm_borrows_the_nearest_tuned_shape(tmp_path):
    check_borrowing(tmp_path, GemmWorkload(128, 768, 768), GemmWorkload(96, 768, 768),
                    GemmWorkload(96, 768, 768, epilogue="bias"))


def test_a_quantized_linear_borrows_the_nearest_tuned_shape(tmp_path):
    def q(m, group=32):
        return QGemmWorkload(m, 64, 256, weight_dtype="int8", act_dtype="float32", group_size=group)

    check_borrowing(tmp_path, q(32), q(16), q(16, group=64))


def test_another_templates_record_is_never_read_as_this_ones(tmp_path):
    """A bf16 GEMM's config (template gemm.lowp, one knob more) recorded against an fp32 GEMM: the fp32 workload
    keeps its default rather than a config filled in from another template's knobs."""
    device = current_device("tvm")
    fp32 = GemmWorkload(64, 64, 64)
    lowp = a_non_default_config(GemmWorkload(64, 64, 64, dtype="bfloat16"))
    with TuningDB(tmp_path / "t.db") as db:
        record_best(db, device, fp32, lowp, template="gemm.lowp")
        resolver = Resolver(str(tmp_path / "t.db"), "cached")
        assert resolver.choose(fp32) == (space_for(fp32, device.fingerprint).default(), "default")
    space = space_for(fp32, device.fingerprint)
    with pytest.raises(ValueError, match=r"not a GemmConfig: unknown knobs \['mode'"):
        space.config_type.from_dict(lowp.to_dict())
    with pytest.raises(ValueError, match=r"missing knobs \['mr'\]"):
        space.config_type.from_dict({k: v for k, v in space.default().to_dict().items() if k != "mr"})


def test_the_python_api_borrows_the_same_way(tmp_path, monkeypatch):
    """autotile.kernel answers as the backend does: an untuned shape runs the nearest tuned shape's config."""
    import torch

    import autotile
    from autotile.ir.reference import verify

    monkeypatch.setenv("AUTOTILE_CACHE_DIR", str(tmp_path / "kernels"))
    device = current_device("tvm")
    tuned, asked = GemmWorkload(48, 64, 32, epilogue="bias"), GemmWorkload(40, 64, 32, epilogue="bias")
    borrowed = a_non_default_config(tuned)
    with TuningDB(tmp_path / "api.db") as db:
        record_best(db, device, tuned, borrowed)
    kernel = autotile.kernel(asked, db=tmp_path / "api.db", backend="tvm")
    assert kernel.config == space_for(asked, device.fingerprint).canonical(borrowed)
    assert kernel.config != space_for(asked, device.fingerprint).default()
    assert verify(asked, kernel).ok
    a, b, bias = torch.randn(40, 32), torch.randn(32, 64), torch.randn(64)
    torch.testing.assert_close(kernel(a, b, bias).double(), a.double() @ b.double() + bias.double(),
                               rtol=1e-5, atol=1e-5)
