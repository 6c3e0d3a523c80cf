"""Measurement in real worker processes: verified timings, and failures contained with their reasons."""

from types import SimpleNamespace

import pytest

from autotile.db.device import cpu_fingerprint
from autotile.ir import GemmWorkload
from autotile.ops.gemm.blis import GemmConfig, GemmSpace
from autotile.search.failures import Failure
from autotile.search.measure import Measurer
from autotile.search.worker import Worker, WorkerFailure, WorkerPool

# This CPU's own target: the fp32 GEMMs measured here need no ISA feature, so they run on any host.
HOST_MCPU = cpu_fingerprint()["mcpu"]
DEVICE = SimpleNamespace(key="cpu-test", fingerprint={"mcpu": HOST_MCPU, "flags": [], "threads": 2})


@pytest.fixture(scope="module")
def broken_measurer():
    m = Measurer(DEVICE, threads=2, run_timeout=8, builder="broken_kernels:builder", loader="broken_kernels:loader")
    yield m
    m.close()


@pytest.mark.slow
def test_good_and_broken_candidates_in_one_batch(broken_measurer):
    w = GemmWorkload(24, 40, 36)
    space = GemmSpace(w)
    configs = [space.canonical(GemmConfig(mr=mr, nr=16, vec=16)) for mr in (1, 2, 3, 4, 6, 5)]
    results = broken_measurer.measure(w, configs)
    by_mr = {r.config.mr: r for r in results}
    assert [r.config for r in results] == configs
    assert by_mr[1].status == "failed" and by_mr[1].error.startswith("build:")
    assert "Cannot find a block" in by_mr[1].error  # TVM's own message, not a traceback
    assert by_mr[2].status == "failed" and by_mr[2].error.startswith("wrong result: mismatch")
    assert by_mr[3].status == "failed" and "crashed (killed by SIGSEGV)" in by_mr[3].error
    assert by_mr[4].status == "failed" and "timed out" in by_mr[4].error
    assert [by_mr[mr].failure for mr in (1, 2, 3, 4)] == [Failure.COMPILE, Failure.WRONG_RESULT, Failure.CRASH,
                                                          Failure.TIMEOUT]
    for mr in (5, 6):  # the runner was replaced after the crash and the hang, and still measures
        assert by_mr[mr].ok, by_mr[mr].error
        assert by_mr[mr].latency["median"] > 0 and by_mr[mr].gflops > 0 and by_mr[mr].threads == 2
        # ranked by its fastest repeat: noise on a shared machine only ever slows a repeat down
        assert by_mr[mr].latency_us == by_mr[mr].latency["min"] <= by_mr[mr].latency["median"]
        assert by_mr[mr].latency["runs"] == 10
    assert all(r.latency_us == float("inf") for r in results if not r.ok)


def test_worker_reports_exceptions_and_survives():
    w = Worker(warm_imports=())
    try:
        with pytest.raises(WorkerFailure, match="ZeroDivisionError"):
            w.call("operator:truediv", 1, 0, timeout=30)
        assert w.call("operator:add", 2, 3, timeout=30) == 5
    finally:
        w.close()


def test_pool_runs_items_in_parallel_and_keeps_order():
    pool = WorkerPool(2, warm_imports=())
    try:
        results = pool.map("operator:mul", [(i, 10) for i in range(7)], timeout=30)
        assert results == [i * 10 for i in range(7)]
        timed_out = pool.map("time:sleep", [(30,), (0,)], timeout=2)
        assert isinstance(timed_out[0], WorkerFailure) and timed_out[1] is None
    finally:
        pool.close()


def test_a_constant_weight_is_timed_from_memory_not_cache():
    """A kernel that packs its weight ahead is timed over distinct packed copies spanning twice the L3."""
    import torch

    from autotile.ir.reference import random_inputs
    from autotile.search.artifacts import build, compiled
    from autotile.search.measure import cold_weight_sets, l3_bytes

    w = GemmWorkload(8, 1024, 512, trans_b=True, epilogue="bias", const_b=True)  # B: 2 MiB
    config = GemmSpace(w).default()
    kernel = compiled(w, config, build(w, config, HOST_MCPU, 2))
    inputs = random_inputs(w, 0)
    sets = cold_weight_sets(kernel, inputs)
    assert len(sets) == min(16, -(-2 * l3_bytes() // (2 << 20)))
    assert len({s[1].tensor.data_ptr() for s in sets}) == len(sets)  # distinct memory
    want = inputs[0] @ inputs[1].T + inputs[2]
    for s in (sets[0], sets[-1]):
        torch.testing.assert_close(kernel(*s), want, rtol=1e-4, atol=1e-4)
    plain = GemmWorkload(8, 1024, 512, trans_b=True, epilogue="bias")  # B may change per call: timed as given
    assert len(cold_weight_sets(compiled(plain, config, build(plain, config, HOST_MCPU, 2)), inputs)) == 1
