"""Compile metadata as cost-model features for Triton tuning, with real AOT compiles for sm_90 and a real
database; the tuned kernels are verified under TRITON_INTERPRET=1 (the interpreted measurer) since there is no
GPU here, and their latencies are the interpreter's: these tests check the plumbing, never speed."""

import numpy as np
import pytest

from autotile.backends import named
from autotile.codegen.triton.aot import CompileInfo, cached_info, compile_program
from autotile.costmodel import XGBCostModel
from autotile.db.device import Device
from autotile.db.store import TuningDB
from autotile.ops import space_for, triton_program
from autotile.ops.gemm.workload import GemmWorkload
from autotile.search.compiled import CompileAwareSearch, CompileFeatures, pool_compiler
from autotile.search.measure import InterpretedTritonMeasurer
from autotile.search.tuner import TuneOptions, tune
from autotile.search.worker import WorkerPool

H100 = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "capability": "sm_90", "sms": 132, "memory_gib": 79.1}
DEVICE = Device("cuda-nvidia_h100_80gb_hbm3-sm_90-sms132", H100)


class DefaultComputesWrong(InterpretedTritonMeasurer):
    """The interpreted measurer, but the space's heuristic default runs as a kernel with one element wrong."""

    def __init__(self, device, default):
        super().__init__(device)
        self.default = default

    def _run_call(self, workload, config, path, repeat, min_repeat_s):
        if config != self.default:
            return super()._run_call(workload, config, path, repeat, min_repeat_s)
        return self.runner.call("broken_kernels:wrong_triton_result", workload.to_dict(), config.to_dict(), path,
                                1, 0.0, timeout=self.run_timeout)


@pytest.mark.slow
def test_triton_tuning_rejects_a_wrong_kernel_and_feeds_compile_metadata_to_the_cost_model(tmp_path):
    """The default, always measured first, computes a wrong result here: it is recorded as failed (wrong_result)
    and never chosen; every kernel recorded ok passed the check against the reference."""
    workload = GemmWorkload(32, 32, 48, dtype="tfloat32", epilogue="bias,relu")  # tf32 tensor cores
    space = space_for(workload, H100)
    model = XGBCostModel(seed=0)
    with TuningDB(tmp_path / "t.db") as db, DefaultComputesWrong(DEVICE, space.default()) as measurer:
        result = tune(workload, db=db, device=DEVICE, backend=named("triton"), options=TuneOptions(trials=12),
                      measurer=measurer, cost_model=model)
        records = db.measurements(device=DEVICE.key, workload=workload.key, backend="triton")
    assert result.verified and result.backend == "triton" and result.trials == 12
    (wrong,) = [r for r in records if r["config_key"] == space.default().key]
    assert wrong["status"] == "failed" and wrong["failure"] == "wrong_result" and "wrong result" in wrong["error"]
    assert result.config != wrong["config"]
    assert [r for r in records if r["failure"] == "wrong_result"] == [wrong]  # the real kernels all verified
    assert sum(r["status"] == "ok" for r in records) >= 8
    n_config = len(space.features(space.default()))
    n_compile = 1 + CompileInfo.feature_count()
    assert model.trained and model._X.shape[1] == n_config + n_compile
    # Every measured config's row carries the metadata of its real sm_90 compile (made by the build workers).
    by_config = {tuple(np.round(row[:n_config], 9)): row[n_config:] for row in model._X}
    checked = 0
    for r in records:
        config = space.config_type.from_dict(r["config"])
        info = cached_info(triton_program(workload, config), "sm_90")
        assert info is not None and info.arch == 90
        row = by_config[tuple(np.round(space.features(config), 9))]
        assert row[0] == 1.0 and list(row[1:]) == pytest.approx(info.features())
        if info.ok:
            assert row[4] == info.registers > 0 and row[7] == info.instructions["total"] > 0
            assert row[8] == info.instructions["mma"] == info.instructions["mma_tf32"] > 0  # HGMMA...TF32
            checked += 1
    assert checked >= 8


def test_shortlist_is_compiled_pruned_by_fit_and_reranked():
    """A screen model that likes large tiles shortlists fp32 tiles whose accumulators spill on sm_90: the real
    compiles drop them before they are proposed, and the full model ranks the rest on compile features."""
    workload = GemmWorkload(512, 512, 256)
    space = space_for(workload, H100)
    C = space.config_type
    small = [C(bm, bn, 32, 8, 1, 4, 2) for bm in (16, 32, 64) for bn in (16, 32, 64)]
    small = [c for c in map(space.canonical, small) if space.valid(c)]
    pool = WorkerPool(2, warm_imports=("triton",))
    try:
        compiled = CompileFeatures(workload, space, 90, pool_compiler(pool, workload, 90))
        infos = compiled.ensure(small)
        assert all(i.fits for i in infos.values())
        # Synthetic latencies (no GPU): bigger tiles are faster, so the screen extrapolates to the largest.
        history = [(compiled(c), 1e4 / (c.block_m * c.block_n)) for c in small]
        search = CompileAwareSearch(space, compiled=compiled, cost_model=XGBCostModel(seed=0), history=history,
                                    seed=0, shortlist_min=6, children=64)
        search.measured = [(c, lat) for c, (_, lat) in zip(small, history)]
        search.seen |= {c.key for c in small}
        before = compiled.compiled
        proposed = search.propose(4)
    finally:
        pool.close()
    assert search.screen_model.trained and search.cost_model._X.shape[1] == compiled.width
    assert 0 < compiled.compiled - before <= 6  # the shortlist only, never all 64 children
    assert search.pruned, "expected some shortlisted fp32 tiles to spill or overflow on sm_90"
    for c in search.pruned:
        assert not compiled.infos[c.key].fits and c not in proposed
    for c in proposed:
        assert space.valid(c) and c.key not in {s.key for s in small}
    shortlisted_fitting = [c for c in proposed if c.key in compiled.infos and compiled.infos[c.key].fits]
    assert shortlisted_fitting  # the exploited picks come from the compiled shortlist


def test_compile_features_never_compile_for_history():
    workload = GemmWorkload(64, 64, 64)
    space = space_for(workload, H100)
    compiled = CompileFeatures(workload, space, 90)
    config = space.canonical(space.config_type(32, 32, 32, 1, 1, 4, 2))
    other = GemmWorkload(96, 64, 64)
    row = compiled.of(other, space_for(other, H100), config)
    assert len(row) == compiled.width and row[compiled.n_config] == 0.0 and compiled.compiled == 0
    info = compile_program(triton_program(other, config), 90)
    row = compiled.of(other, space_for(other, H100), config)
    assert row[compiled.n_config:] == [1.0, *info.features()]
