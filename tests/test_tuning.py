"""Short real tuning runs: recorded in a real SQLite file, verified, cached, retuned without repeats."""

import json
import random

import pytest
import torch
from measurers import Scaled, scale

import autotile
from autotile.db.device import current_device
from autotile.db.store import TuningDB
from autotile.errors import AutotileError
from autotile.ir import GemmWorkload
from autotile.ir.reference import gemm_reference, random_inputs
from autotile.search.tuner import current_best


@pytest.fixture(scope="module")
def tvm_measurer():
    """The TVM backend's worker processes, started once for the tests that wrap them in a measurer of their own
    (a start costs seconds: each worker imports TVM)."""
    from autotile.backends import named

    with named("tvm").measurer(current_device("tvm")) as measurer:
        yield measurer


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One 12-trial evolution run on an odd shape with a fused epilogue, shared by the tests below."""
    db_path = tmp_path_factory.mktemp("db") / "tune.db"
    w = GemmWorkload(37, 70, 53, epilogue="bias,gelu")
    result = autotile.tune(w, trials=12, db=db_path, seed=3, backend="tvm")
    return w, db_path, result


def test_tuning_records_a_verified_best(tuned):
    w, db_path, result = tuned
    assert result.verified and not result.cached
    assert result.trials == 12 and len(result.history) == 12
    assert result.latency_us > 0 and result.gflops == pytest.approx(w.flops / result.latency_us / 1e3)
    assert result.threads == 2
    with TuningDB(db_path) as db:
        records = db.measurements(workload=w.key)
        assert len(records) == 12  # every measured config is its own record
        best = current_best(db, current_device("tvm"), w, "tvm", "gemm.blis")
    assert best["config"] == result.config and best["status"] == "ok"
    assert len({r["config_key"] for r in records}) == 12  # no config measured twice
    assert all(r["status"] == "ok" for r in records)  # the space holds only valid programs
    ok_latencies = [r["latency_us"] for r in records if r["status"] == "ok"]
    assert result.latency_us == min(ok_latencies)


def test_second_run_is_cached_and_retune_never_repeats(tuned):
    w, db_path, first = tuned
    again = autotile.tune(w, trials=12, db=db_path, seed=3, backend="tvm")
    assert again.cached and again.config == first.config and again.trials == first.trials
    assert again.tuning_seconds == pytest.approx(first.tuning_seconds)
    retuned = autotile.tune(w, trials=4, db=db_path, seed=3, retune=True, backend="tvm")
    assert not retuned.cached and retuned.trials == 4
    with TuningDB(db_path) as db:
        records = db.measurements(workload=w.key)
    keys = [r["config_key"] for r in records]
    assert len(keys) == 16 and len(set(keys)) == 16
    # The answer is the fastest of all 16 records, the first run's included, not of the retune's 4 alone.
    fastest = min((r for r in records if r["status"] == "ok"), key=lambda r: r["latency_us"])
    assert retuned.config == fastest["config"] and retuned.latency_us == fastest["latency_us"]


def test_kernel_from_database_matches_reference(tuned):
    w, db_path, result = tuned
    kern = autotile.kernel(w, db=db_path, backend="tvm")
    with TuningDB(db_path) as db:  # the fastest record now: the retune above may have beaten the first run
        best = current_best(db, current_device("tvm"), w, "tvm", result.template)
    assert kern.config.to_dict() == best["config"]
    a, b, bias = random_inputs(w, 7)
    torch.testing.assert_close(kern(a, b, bias).double(), gemm_reference(w, a, b, bias), rtol=1e-5, atol=1e-4)


def test_kernel_without_tuning_uses_the_verified_default(tmp_path):
    w = GemmWorkload(5, 9, 300, epilogue="relu")
    kern = autotile.kernel(w, db=tmp_path / "empty.db", backend="tvm")
    a, b = random_inputs(w, 1)
    torch.testing.assert_close(kern(a, b).double(), gemm_reference(w, a, b), rtol=1e-5, atol=1e-4)


def test_random_search_stops_at_its_time_budget(tmp_path, virtual_clock):
    """Every recorded measurement takes one second of the virtual clock: a 4 s budget is spent after a few trials
    of the 1000 asked for, overrun by at most one, and the run is recorded as finished."""
    w, budget = GemmWorkload(16, 16, 16), 4.0
    result = autotile.tune(w, trials=1000, db=tmp_path / "t.db", strategy="random", time_budget=budget,
                           backend="tvm")
    assert result.verified and not result.cached
    assert budget / 2 < result.tuning_seconds <= budget + virtual_clock.per_record  # spent, overrun by one at most
    assert 2 <= result.trials <= budget + 1
    with TuningDB(tmp_path / "t.db") as db:
        run = db.last_run(result.device, w.key, "tvm")
        assert len(db.measurements(workload=w.key)) == result.trials  # re-measurements replace, never add
    assert run["trials"] == result.trials and run["seconds"] == result.tuning_seconds


class BurstOfLoad:
    """The real measurer, its re-timings at the end of a run read `factor` x what they measured: a burst of the
    host's other load (factor > 1) or a quieter moment (factor < 1); and the batches of one `lucky` config read
    1/3 of it (a record set at a misread drift). It keeps each config's first figure and fastest re-timing."""

    def __init__(self, real, factor: float, lucky: int = 1):
        self.real, self.factor, self.lucky, self.first, self.again = real, factor, lucky, {}, {}
        self.lucky_key = None

    def measure(self, workload, configs, repeat: int = 10, anchor=None):
        results = self.real.measure(workload, configs, repeat, anchor)
        ok = [r for r in results if r.ok]
        if not self.first and len(ok) > self.lucky:
            scale(ok[self.lucky], 1 / 3)
            self.lucky_key = ok[self.lucky].config.key
        self.first.update({r.config.key: r.latency_us for r in ok})
        return results

    def run(self, workload, config, path, repeat: int = 10, min_repeat_s: float = 0.01):
        from autotile.search.task import REMEASURE_MIN_REPEAT_S

        r = self.real.run(workload, config, path, repeat, min_repeat_s)
        if min_repeat_s == REMEASURE_MIN_REPEAT_S and r.ok:
            scale(r, self.factor)
            self.again[config.key] = min(r.latency_us, self.again.get(config.key, float("inf")))
        return r

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.parametrize("factor", [3.0, 0.5], ids=["slower", "faster"])
def test_the_best_few_are_retimed_side_by_side_and_ranked_by_it(tmp_path, factor, tvm_measurer):
    """The best few are timed again at the end of a run, in turns. The fastest of them then keeps the faster of
    its two figures (a burst of load cannot demote it); the others are set at its figure times their ratio to it
    in the re-timing. A record made in a lucky batch (one config read 1/3 of what it ran) loses its lead."""
    from autotile.backends import named
    from autotile.search.task import REMEASURE_TOP
    from autotile.search.tuner import TuneOptions, tune

    backend, device = named("tvm"), current_device("tvm")
    w = GemmWorkload(19, 33, 27, epilogue="bias")
    with TuningDB(tmp_path / "r.db") as db:
        measurer = BurstOfLoad(tvm_measurer, factor)
        result = tune(w, db=db, device=device, backend=backend, options=TuneOptions(trials=5), measurer=measurer)
        records = {r["config_key"]: r["latency_us"] for r in db.measurements(workload=w.key)}
    again = measurer.again
    assert result.verified and len(again) == min(REMEASURE_TOP, len(measurer.first))
    leader = min(again, key=again.get)
    level = min(measurer.first[leader], again[leader])
    for key, now in again.items():
        assert records[key] == pytest.approx(level * now / again[leader])
    lucky = measurer.lucky_key
    assert lucky in again  # read at 1/3, it was among the best few
    if lucky != leader:  # it ran slower than the leader side by side: its lucky lead is gone
        assert records[lucky] > records[leader]
    assert result.latency_us == pytest.approx(min(records.values())) == pytest.approx(records[leader])
    kern = autotile.kernel(w, db=tmp_path / "r.db", backend="tvm")
    assert kern.config.key == leader
    base = torch.randn(1 + 19 * 27, dtype=torch.float32)
    a, b, bias = base[1:].view(19, 27), torch.randn(27, 33), torch.randn(33)  # A at a storage offset
    torch.testing.assert_close(kern(a, b, bias).double(), a.double() @ b.double() + bias.double(),
                               rtol=1e-5, atol=1e-4)


class SlowSpells:
    """The real measurer on a host whose pace changes between batches: every timing in the i-th batch (its
    candidates' and its anchor's) reads factors[i] x what it measured, its anchor's `anchor_bias` x more (one
    figure, or one per batch). It keeps each batch's figures as read."""

    def __init__(self, real, factors, anchor_bias: float | list = 1.0):
        self.real, self.factors, self.anchor_bias, self.read, self.retimed = real, factors, anchor_bias, [], set()

    def measure(self, workload, configs, repeat: int = 10, anchor=None):
        factor = self.factors[len(self.read)]
        bias = self.anchor_bias[len(self.read)] if isinstance(self.anchor_bias, list) else self.anchor_bias
        results = self.real.measure(workload, configs, repeat, anchor)
        for r in [*results, *results.anchors]:
            if r.ok:
                scale(r, factor * (bias if r in results.anchors else 1.0))
        self.read.append({r.config.key: r.latency_us for r in results if r.ok})
        return results

    def run(self, workload, config, path, repeat: int = 10, min_repeat_s: float = 0.01):
        from autotile.search.task import REMEASURE_MIN_REPEAT_S

        if min_repeat_s == REMEASURE_MIN_REPEAT_S:
            self.retimed.add(config.key)
        return self.real.run(workload, config, path, repeat, min_repeat_s)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_batch_timed_in_a_slow_spell_is_set_at_the_steady_pace(tmp_path, tvm_measurer):
    """Four batches; the first and the last read 3x slow. The second batch's anchor (the first's winner) runs
    faster than its record, so that record is lowered; the last's anchor runs ~3x the pace the middle two set,
    so the last batch's figures are divided by that drift, kept in each record."""
    from autotile.backends import named
    from autotile.search.task import BATCH, REMEASURE_TOP
    from autotile.search.tuner import TuneOptions, tune

    backend, device = named("tvm"), current_device("tvm")
    w = GemmWorkload(41, 96, 67, epilogue="bias")
    with TuningDB(tmp_path / "s.db") as db:
        measurer = SlowSpells(tvm_measurer, [3.0, 1.0, 1.0, 3.0])
        result = tune(w, db=db, device=device, backend=backend, options=TuneOptions(trials=4 * BATCH, seed=1),
                      measurer=measurer)
        records = {r["config_key"]: r for r in db.measurements(workload=w.key, status="ok")}
    first, _, _, third = measurer.read
    winner = min(first, key=first.get)
    # re-timed at the steady pace, beside batch two: a third of the 3x read, give or take the host's own drift
    # (a slow Zen 3 host read it at 1/1.57)
    assert records[winner]["latency_us"] < first[winner] / 1.3
    # timed again side by side: the last batch's would-be leads beside the incumbent (as they come), and the run's
    # best few at its end; each keeps the pace of its re-timing
    retimed = measurer.retimed
    assert 0 < len(retimed) <= 2 * REMEASURE_TOP
    assert all("drift" in records[key]["latency"] for key in set(third) - retimed)
    set_back = {key: records[key]["latency"]["drift"] for key in set(third) - retimed}
    for key, drift in set_back.items():  # 3x the host's own pace, which drifts too: 4.7 read on a slow Zen 3 host
        assert 2.0 < drift < 6.0 and records[key]["latency_us"] == pytest.approx(third[key] / drift)
    assert all(records[key]["latency_us"] < read / 2 for key, read in third.items())
    assert result.latency_us == pytest.approx(min(r["latency_us"] for r in records.values()))
    kern = autotile.kernel(w, db=tmp_path / "s.db", backend="tvm")
    base = torch.randn(3 + 41 * 67, dtype=torch.float32)
    a, b, bias = base[3:].view(41, 67), torch.randn(67, 96), torch.randn(96)  # A at a storage offset
    torch.testing.assert_close(kern(a, b, bias).double(), a.double() @ b.double() + bias.double(),
                               rtol=1e-5, atol=1e-4)


def test_a_lead_taken_on_a_misread_drift_is_confirmed_beside_the_incumbent(tmp_path, tvm_measurer):
    """The fourth batch's anchor reads 8x slow while its candidates run at the steady pace: a drift misread (an
    anchor caught in a spell the batch missed). Set back by it, the batch's figures would read an eighth of what
    its kernels run at, and its best would lead, served for good. The would-be leads are timed beside the
    incumbent instead; their figures as read over the confirmed ones show the batch's real drift (about 1),
    and the rest of the batch is left at its reading. (8x, not the 3x of a real spell: the check below must hold
    while the host's own spells move the readings 2-3x, as one did in a CI run at 3x: a record at 0.497 of its
    reading.)"""
    from autotile.backends import named
    from autotile.search.task import BATCH
    from autotile.search.tuner import TuneOptions, tune

    backend, device = named("tvm"), current_device("tvm")
    w = GemmWorkload(43, 88, 61, epilogue="bias")
    with TuningDB(tmp_path / "m.db") as db:
        measurer = SlowSpells(tvm_measurer, [1.0] * 4, anchor_bias=[1.0, 1.0, 1.0, 8.0])
        result = tune(w, db=db, device=device, backend=backend, options=TuneOptions(trials=4 * BATCH, seed=4),
                      measurer=measurer)
        records = {r["config_key"]: r["latency_us"] for r in db.measurements(workload=w.key, status="ok")}
    misread = measurer.read[3]
    assert misread and set(misread) & measurer.retimed  # its would-be leads were timed again
    for key, read in misread.items():  # none kept at an eighth of its reading
        assert records[key] > read / 4, (key, read, records[key])
    assert result.latency_us == pytest.approx(min(records.values()))
    kern = autotile.kernel(w, db=tmp_path / "m.db", backend="tvm")
    base = torch.randn(5 + 43 * 61, dtype=torch.float32)
    a, b, bias = base[5:].view(43, 61), torch.randn(61, 88), torch.randn(88)  # A at a storage offset
    torch.testing.assert_close(kern(a, b, bias).double(), a.double() @ b.double() + bias.double(),
                               rtol=1e-5, atol=1e-4)


def test_leads_confirmed_beside_a_guessed_incumbent_stay_guesses(tmp_path, tvm_measurer):
    """An incumbent whose figure is a drift guess (here a third of what it ran at) sets the level of the leads
    confirmed beside it, so their figures are guesses too. The run's closing re-timing takes its level from a
    record that was timed, or from the re-timing itself where the best few are all guesses: none of them keeps a
    figure near a third of what it runs at. (Taken as timed, such a guess left a 1x1 conv at 42 us, 303 GFLOP/s
    on two Zen 4 cores whose FMA peak is about 237; it ran at 105.)"""
    from autotile.backends import named
    from autotile.search.task import BATCH, REMEASURE_REPEAT, REMEASURE_TOP, TaskTuner, at_pace
    from autotile.search.tuner import TuneOptions

    backend, device = named("tvm"), current_device("tvm")
    w = GemmWorkload(37, 72, 53, epilogue="bias")
    with TuningDB(tmp_path / "g.db") as db:
        run_id = db.start_run(device.key, w.key, backend.name, "evolution", 3)
        tuner = TaskTuner(w, backend.spaces(w, device.fingerprint), db=db, device=device, backend=backend,
                          run_id=run_id, measurer=tvm_measurer, options=TuneOptions(trials=BATCH, seed=3))
        template = next(iter(tuner.spaces))
        tuner.search(template, BATCH, None)
        ok = sorted((r for r, _ in tuner.results if r.ok), key=lambda r: r.latency_us)
        assert len(ok) >= 3
        incumbent, batch = ok[0], ok[1:]
        as_run = {r.config.key: r.latency_us for r in ok}
        at_pace(incumbent, 3.0)  # the incumbent's figure: a guess at a third of what it ran at
        tuner._inferred.add(incumbent.config.key)
        read = {r.config.key: (r.latency, r.gflops) for r in batch}
        for r in batch:  # a batch set back by a larger misread drift: its best would lead
            at_pace(r, 10.0)
        tuner._inferred.update(read)
        tuner._confirm(incumbent, batch, read, template, None)
        confirmed = [r.config.key for r in batch if r.latency["runs"] == REMEASURE_REPEAT]  # timed beside it
        assert confirmed and set(confirmed) <= tuner._inferred
        closing = [r.config.key for r in sorted((r for r, _ in tuner.results if r.ok),
                                                key=lambda r: r.latency_us)[:REMEASURE_TOP]]
        tuner.remeasure_top(None)
        records = {r["config_key"]: r["latency_us"] for r in db.measurements(workload=w.key, status="ok")}
    for key in closing:  # one host's timings spread far less than 2x; a guess kept as the level reads about 1/3
        assert records[key] > as_run[key] / 2, (key, records[key], as_run[key])
    kern = autotile.kernel(w, db=tmp_path / "g.db", backend="tvm")
    base = torch.randn(7 + 37 * 53, dtype=torch.float32)
    a, b, bias = base[7:].view(37, 53), torch.randn(53, 72), torch.randn(72)  # A at a storage offset
    torch.testing.assert_close(kern(a, b, bias).double(), a.double() @ b.double() + bias.double(),
                               rtol=1e-5, atol=1e-4)


def test_an_anchor_that_always_reads_slower_than_its_record_is_no_slow_spell(tmp_path, tvm_measurer):
    """A record is the fastest reading of its batch, so its anchor reads above it on a steady host too; here 1.3x,
    every batch. Only a pace above the template's typical one is a spell: at most one batch is set back (a real
    spell of this host while the test runs; set against the record, all three anchored batches would be)."""
    from autotile.backends import named
    from autotile.search.task import BATCH
    from autotile.search.tuner import TuneOptions, tune

    backend, device = named("tvm"), current_device("tvm")
    w = GemmWorkload(29, 80, 45, epilogue="bias,relu")
    with TuningDB(tmp_path / "b.db") as db:
        measurer = SlowSpells(tvm_measurer, [1.0] * 4, anchor_bias=1.3)
        tune(w, db=db, device=device, backend=backend, options=TuneOptions(trials=4 * BATCH, seed=2),
             measurer=measurer)
        records = db.measurements(workload=w.key, status="ok")
    set_back = [r for r in records if "drift" in r["latency"] and r["config_key"] not in measurer.retimed]
    assert len(records) == 4 * BATCH and len(set_back) <= BATCH  # the side-by-side re-timings keep their drift
    kern = autotile.kernel(w, db=tmp_path / "b.db", backend="tvm")
    base = torch.randn(2 + 29 * 45, dtype=torch.float32)
    a, b, bias = base[2:].view(29, 45), torch.randn(45, 80), torch.randn(80)  # A at a storage offset
    torch.testing.assert_close(kern(a, b, bias).double(), (a.double() @ b.double() + bias.double()).relu(),
                               rtol=1e-5, atol=1e-4)


def slow_template(template: str, factor: float):
    """A Scaled measurer's factor: `template`'s candidates read `factor` x slower."""
    from autotile.ops import template_of_config

    return lambda workload, r: factor if template_of_config(workload, r.config).name == template else 1.0


@pytest.mark.slow
def test_a_template_far_behind_the_leader_gets_no_more_rounds(tmp_path, tvm_measurer):
    """Winograd and the direct kernels compete on a 3x3 conv. Winograd, the default template, goes first; the
    direct kernels, read 10x slower, get a probe of PROBE trials and no exploration round after it (each would
    have cost a round of the leader's). 20 trials: Winograd's half round (4), the probe (2), a round of the leader
    (8), then the round where the direct kernels, under a third of the leader's trials, would be explored were
    they close (6)."""
    from autotile.backends import named
    from autotile.ir import Conv2dWorkload
    from autotile.search.task import PROBE
    from autotile.search.tuner import TuneOptions, tune

    backend, device = named("tvm"), current_device("tvm")
    w = Conv2dWorkload(1, 16, 9, 11, 16, 3, 3, padding=1, epilogue="bias,relu")
    with TuningDB(tmp_path / "t.db") as db:
        result = tune(w, db=db, device=device, backend=backend, options=TuneOptions(trials=20),
                      measurer=Scaled(tvm_measurer, slow_template("conv2d.direct", 10.0)))
        records = db.measurements(workload=w.key)
    per_template = {t: len({r["config_key"] for r in records if r["template"] == t})
                    for t in ("conv2d.direct", "conv2d.winograd")}
    assert result.verified and result.trials == 20 and result.template == "conv2d.winograd"
    assert per_template == {"conv2d.direct": PROBE, "conv2d.winograd": 20 - PROBE}
    kern = autotile.kernel(w, db=tmp_path / "t.db", backend="tvm")
    base = torch.randn(1 + 16 * 9 * 11)
    x, weight, bias = base[1:].view(1, 16, 9, 11), torch.randn(16, 16, 3, 3), torch.randn(16)  # x at an offset
    expected = torch.relu(torch.nn.functional.conv2d(x.double(), weight.double(), bias.double(), padding=1))
    torch.testing.assert_close(kern(x, weight, bias).double(), expected, rtol=1e-4, atol=1e-4)


def test_bad_options_are_clear_errors(tmp_path, monkeypatch):
    w = GemmWorkload(4, 4, 4)
    with pytest.raises(AutotileError, match="trials must be a positive integer"):
        autotile.tune(w, trials=0, db=tmp_path / "x.db", backend="tvm")
    with pytest.raises(AutotileError, match="unknown search strategy 'annealing'"):
        autotile.tune(w, strategy="annealing", db=tmp_path / "x.db", backend="tvm")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    with pytest.raises(AutotileError, match="needs a CUDA GPU"):
        autotile.tune(w, backend="triton", db=tmp_path / "x.db")


def test_result_json_has_the_contract_fields(tuned):
    _, _, result = tuned
    d = json.loads(json.dumps(result.to_json_dict()))
    for field in ("device", "workload", "backend", "config", "latency_us", "gflops", "trials", "tuning_seconds",
                  "verified", "cached"):
        assert field in d


def test_tuned_kernel_loads_from_the_disk_cache_without_building(tuned, monkeypatch):
    import autotile.search.isolated as isolated

    w, db_path, _ = tuned

    def no_build(*args, **kwargs):
        raise AssertionError("a tuned kernel must load from the cache, not be rebuilt")

    monkeypatch.setattr(isolated, "_builder", no_build)  # the worker that would build it
    kern = autotile.kernel(w, db=db_path, backend="tvm")
    a, b, bias = random_inputs(w, 2)
    torch.testing.assert_close(kern(a, b, bias).double(), gemm_reference(w, a, b, bias), rtol=1e-5, atol=1e-4)


def test_seeds_from_a_database_holding_other_ops(tuned):
    """A GEMM's winning configs never seed a conv search (it once crashed reading their features)."""
    from autotile.db.device import current_device
    from autotile.ops import space_for
    from autotile.ops.conv2d.workload import Conv2dWorkload
    from autotile.search.tuner import _seed_configs

    w, db_path, _ = tuned
    device = current_device()
    conv = Conv2dWorkload(1, 8, 9, 9, 8, 3, 3)
    conv_space = space_for(conv, device.fingerprint)
    with TuningDB(db_path) as db:
        conv_seeds = _seed_configs(db, device, conv, conv_space, "tvm")
        other_gemm = GemmWorkload(64, 64, 64)
        gemm_seeds = _seed_configs(db, device, other_gemm, space_for(other_gemm, device.fingerprint), "tvm")
    assert conv_seeds == [conv_space.default()]
    assert len(gemm_seeds) > 1 and all(type(s).__name__ == "GemmConfig" for s in gemm_seeds)


def test_warm_start_from_another_devices_records(tmp_path, monkeypatch):
    """Another device's records of a workload (this CPU with AVX-512 hidden: a device key of its own) seed a search
    here, adopted to this CPU's vector width and in turns with this device's winners of other shapes, and train its
    cost model, scaled so that their best matches ours; the search measures the seeds first and its kernel is
    right."""
    from autotile.db.device import cpu_flags
    from autotile.ops import space_for
    from autotile.search.history import history
    from autotile.search.tuner import TuneOptions, _seed_configs

    if "avx512f" not in cpu_flags():
        pytest.skip("hiding AVX-512 makes another device only on a CPU that has it")
    db = tmp_path / "warm.db"
    w, other_shape = GemmWorkload(24, 48, 40, epilogue="bias"), GemmWorkload(16, 64, 40, epilogue="bias")
    monkeypatch.setenv("AUTOTILE_HIDE_CPU_FLAGS", "avx512*,amx*")
    with autotile.Session(db, "tvm") as other:  # sessions of their own: the process-wide one keeps its device
        other.tune(w, TuneOptions(trials=4))
        elsewhere, other_fingerprint = other.device.key, other.device.fingerprint
    monkeypatch.delenv("AUTOTILE_HIDE_CPU_FLAGS")
    with autotile.Session(db, "tvm") as here:
        assert here.device.key != elsewhere
        here.tune(other_shape, TuneOptions(trials=3))
        space = space_for(w, here.device.fingerprint)

        def best_config(device, workload):
            best = min(here.db.measurements(device=device, workload=workload.key, status="ok"),
                       key=lambda r: r["latency_us"])
            return space.config_type.from_dict(best["config"])

        theirs = best_config(elsewhere, w)
        adopted = space.canonical(space.adopt(theirs, other_fingerprint))
        if theirs.vec == 8:  # AVX2's tile, in 512-bit vectors
            assert adopted.vec == 16 and adopted.nr // 16 == theirs.nr // 8
        else:  # their winner's tile is of 16-lane groups (two AVX2 vectors each) already: kept
            assert theirs.vec == 16 and adopted == space.canonical(theirs)
        seeds = _seed_configs(here.db, here.device, w, space, "tvm")
        expected = []  # each config once, after the default (their winner may adopt to ours of the other shape)
        for key in (adopted.key, space.canonical(best_config(here.device.key, other_shape)).key):
            if key not in (space.default().key, *expected):
                expected.append(key)
        assert seeds[0] == space.default() and [s.key for s in seeds[1:1 + len(expected)]] == expected

        past = history(here.db, here.device, space, w, "tvm")
        n_own = len(here.db.measurements(device=here.device.key, template=space.template))
        n_theirs = len(here.db.measurements(device=elsewhere, template=space.template))
        assert n_own == 3 and n_theirs == 4 and (len(past.own), len(past.foreign)) == (n_own, n_theirs)
        assert min(lat for _, lat in past.foreign) == pytest.approx(min(lat for _, lat in past.own))

        result = here.tune(w, TuneOptions(trials=3))
        measured = sorted(here.db.measurements(device=here.device.key, workload=w.key), key=lambda r: r["id"])
        # the seeds measured (a CI run of the whole suite once held a fourth record of this workload, an AVX2 tile
        # of 8 lanes, first by id: not reproduced alone; noted in the stop note of 2026-12-06)
        assert result.verified and {s.key for s in seeds[:3]} <= {r["config_key"] for r in measured}
        kern = here.kernel(w)
    base = torch.randn(1 + 24 * 40, dtype=torch.float32)
    a, b, bias = base[1:].view(24, 40), torch.randn(40, 48), torch.randn(48)  # A at a storage offset
    torch.testing.assert_close(kern(a, b, bias).double(), a.double() @ b.double() + bias.double(),
                               rtol=1e-5, atol=1e-4)


AVX2, AVX512 = {"flags": ["avx2", "fma"]}, {"flags": ["avx2", "fma", "avx512f"]}


def test_a_warm_search_stops_learning_from_a_device_that_disagrees_with_this_one():
    """Another device's rows train the cost model of a search that has measured nothing yet, in full; once it has
    measured AGREEMENT_ROWS configs here, rows whose ranking is the opposite of ours count for nothing, and rows
    that agree keep most of their say. (Synthetic latencies: no kernel is built.)"""
    from types import SimpleNamespace

    from autotile.costmodel.transfer import AGREEMENT_ROWS
    from autotile.ops import space_for
    from autotile.search.strategy import EvolutionSearch

    workload = GemmWorkload(96, 128, 64)
    space = space_for(workload, {"flags": ["avx2", "fma"]})
    rng = random.Random(0)
    configs = list({c.key: c for c in (space.canonical(space.sample(rng)) for _ in range(120))}.values())

    def here(c):  # more accumulators, fewer loads: faster
        return 1e3 / (c.mr * c.nr) + c.kc / 64

    weights = {}
    for name, there in (("agreeing", here), ("contrary", lambda c: 1e5 / here(c))):
        foreign = [(space.features(c), there(c)) for c in configs[:80]]
        search = EvolutionSearch.create(space, seed=0, seeds=[space.default()], seen=set(), foreign=foreign)
        assert search.cost_model.trained and search.foreign_weight == 1.0
        search.notify([SimpleNamespace(config=c, latency_us=here(c)) for c in configs[80:80 + AGREEMENT_ROWS + 8]])
        weights[name] = search.foreign_weight
        assert search.cost_model.prior_weight == weights[name]
    assert weights["contrary"] == 0.0 and weights["agreeing"] > 0.5


@pytest.mark.parametrize("there, here", [(AVX2, AVX512), (AVX512, AVX2)], ids=["avx2-to-avx512", "avx512-to-avx2"])
def test_another_cpus_winner_is_adopted_to_this_vector_width(there, here):
    """A config that won on a CPU of another vector width keeps its register tiles in vectors and its blocks in
    bytes, and fits this CPU's registers; one from the same width is kept as it is."""
    from autotile.ir import AttentionWorkload, Conv2dWorkload, LayerNormWorkload
    from autotile.ops import space_for, template
    from autotile.ops.attention.flash import AttentionConfig
    from autotile.ops.conv2d.direct import Conv2dConfig
    from autotile.ops.conv2d.winograd import WinogradConfig
    from autotile.ops.gemm.blis import GemmConfig
    from autotile.ops.layernorm.rows import LayerNormConfig
    from autotile.ops.space import vector_unit

    ratio = vector_unit(here)[0] / vector_unit(there)[0]
    gemm = space_for(GemmWorkload(128, 768, 768, epilogue="bias"), here)
    lanes = vector_unit(there)[0]
    for mr in (4, 6, 14):
        won = GemmConfig(mr=mr, nr=2 * lanes, vec=lanes, nc_tiles=8)
        adopted = gemm.adopt(won, there)
        assert gemm.valid(adopted) and adopted.vec == gemm.lanes and adopted.nr // adopted.vec == 2
        assert adopted.nr * adopted.nc_tiles == won.nr * won.nc_tiles  # the same block of B, in floats
        assert adopted.mr == mr or (ratio < 1 and adopted.mr < mr)  # rows cut only where registers are fewer
        assert gemm.adopt(won, here) == won

    attention = space_for(AttentionWorkload(1, 12, 128, 64, causal=True), here)
    won = AttentionConfig(block_kv=4 * lanes, vec=lanes, rows_s=4, rows_o=4, d_tile=2 * lanes)
    adopted = attention.adopt(won, there)
    assert attention.valid(adopted) and adopted.vec == attention.lanes
    assert adopted.block_kv == won.block_kv * ratio and adopted.d_tile == won.d_tile * ratio

    layernorm = space_for(LayerNormWorkload(128, 768), here)
    adopted = layernorm.adopt(LayerNormConfig(vec=lanes, unroll=2), there)
    assert adopted.vec == vector_unit(here)[0] and adopted.unroll == 2

    conv = {"direct": space_for(Conv2dWorkload(1, 64, 56, 56, 128, 3, 3, stride=2, padding=1), here),
            "winograd": template("conv2d.winograd").space_for(Conv2dWorkload(1, 128, 28, 28, 128, 3, 3, padding=1),
                                                              here),
            "pointwise": space_for(Conv2dWorkload(1, 64, 28, 28, 128, 1, 1), here)}
    for space, won in ((conv["direct"], Conv2dConfig("nchwc", ic_bn=16, oc_bn=2 * lanes, ow_bn=14, oh_bn=1)),
                       (conv["direct"], Conv2dConfig("gemm", oc_bn=lanes, ow_bn=28)),
                       (conv["winograd"], WinogradConfig("winograd4", oc_bn=2 * lanes, ow_bn=12))):
        adopted = space.adopt(won, there)
        assert space.valid(adopted) and adopted.template == won.template and adopted.oc_bn == won.oc_bn * ratio
        assert adopted.ow_bn == won.ow_bn or (ratio < 1 and adopted.ow_bn < won.ow_bn)  # cut only to fit
        assert space.adopt(won, here) == won
    won = Conv2dConfig("pointwise", oc_bn=6, ow_bn=2 * lanes, oh_bn=2)
    adopted = conv["pointwise"].adopt(won, there)
    assert conv["pointwise"].valid(adopted) and adopted.ow_bn == won.ow_bn * ratio and adopted.oc_bn <= 6


@pytest.mark.slow
def test_a_task_learns_from_other_tasks_between_its_rounds(tmp_path, tvm_measurer):
    """The cross-task refresh: two tasks of one template tuned in turns (as a model run does); at each of its
    rounds a task's cost model trains on the records the other task made since its last round."""
    from autotile.backends import named
    from autotile.search.task import TaskTuner
    from autotile.search.tuner import TuneOptions

    backend, device = named("tvm"), current_device("tvm")
    with TuningDB(tmp_path / "turns.db") as db:
        db.ensure_device(device.key, device.fingerprint)
        tuners = []
        for w in (GemmWorkload(24, 40, 32), GemmWorkload(40, 24, 48)):
            db.ensure_workload(w.key, w.op, w.to_dict())
            run = db.start_run(device.key, w.key, backend.name, "evolution", 0)
            tuners.append(TaskTuner(w, backend.spaces(w, device.fingerprint), db=db, device=device,
                                    backend=backend, run_id=run, measurer=tvm_measurer, options=TuneOptions()))
        first, second = tuners
        first.step(3)
        searcher = first.searcher("gemm.blis")
        before = len(searcher.history)
        second.step(4)
        others = [r for r in db.measurements(workload=second.workload.key) if r["template"] == "gemm.blis"]
        first.step(3)
        assert len(searcher.history) == before + len(others) and len(others) == 4
        first.step(2)  # nothing new from the other task: nothing added twice
        assert len(searcher.history) == before + len(others)


def test_other_devices_rows_are_set_at_this_devices_level_by_the_configs_both_measured():
    """`levels`: the median throughput ratio over the configs both devices measured on the same workload, not
    their bests (their best is a config this device never ran); with none in common their best to ours; with no
    rows here, 1."""
    from autotile.search.history import Level, levels

    def record(device, config, gflops, workload="w1", status="ok"):
        return {"device": device, "workload": workload, "config_key": config, "status": status,
                "gflops": gflops if status == "ok" else None}

    records = [record("here", "default", 10.0), record("here", "a", 20.0), record("here", "b", 30.0),
               record("here", "b", 33.0),  # re-measured: the faster reading is the config's
               record("here", "c", 5.0, workload="w2"),
               record("anchored", "default", 5.0), record("anchored", "a", 8.0), record("anchored", "b", 16.5),
               record("anchored", "best", 100.0),  # its best, never measured here
               record("anchored", "c", 1.0),  # the same config of another workload: no anchor
               record("unanchored", "x", 66.0), record("unanchored", "y", 11.0),
               record("failed-only", "a", None, status="failed")]
    at = levels(records, "here")
    assert at["anchored"] == Level(pytest.approx(2.0), 3)  # ratios 2.0, 2.5, 2.0
    assert at["unanchored"] == Level(pytest.approx(0.5), 0)  # 33 here / 66 there
    assert at["failed-only"] == Level(1.0, 0)
    assert set(at) == {"anchored", "unanchored", "failed-only"}
    assert levels([r for r in records if r["device"] != "here"], "here")["anchored"] == Level(1.0, 0)


@pytest.mark.slow
def test_a_warm_search_sets_the_other_devices_rows_at_the_level_of_the_default_both_measured(tmp_path,
                                                                                              tvm_measurer):
    """A warm search made before this device measured anything keeps the other device's rows as they read; once
    it has timed the default, which the other device timed too, their rows are set at this device's level: the
    other device's default row reads as this one's, and its other rows keep their ratio to it."""
    from autotile.backends import named
    from autotile.ops import space_for
    from autotile.search.task import TaskTuner
    from autotile.search.tuner import TuneOptions

    backend, device, w = named("tvm"), current_device("tvm"), GemmWorkload(24, 40, 32)
    space = space_for(w, device.fingerprint)
    rng = random.Random(3)
    theirs = [space.default()] + [c for c in {space.canonical(space.sample(rng)) for _ in range(12)}
                                  if c.key != space.default().key][:5]
    with TuningDB(tmp_path / "warm.db") as db:
        db.ensure_device(device.key, device.fingerprint)
        db.ensure_device("cpu-elsewhere", {"kind": "cpu", "mcpu": "elsewhere"})
        db.ensure_workload(w.key, w.op, w.to_dict())
        for i, config in enumerate(theirs):  # the other CPU: its default at 1 GFLOP/s, the others faster
            latency_us = w.flops / ((1.0 + i) * 1e3)
            db.record_measurement(device="cpu-elsewhere", workload=w.key, backend="tvm", config_key=config.key,
                                  config=config.to_dict(), status="ok", template="gemm.blis",
                                  latency={"median": latency_us, "min": latency_us}, gflops=1.0 + i)
        run = db.start_run(device.key, w.key, backend.name, "evolution", 0)
        tuner = TaskTuner(w, backend.spaces(w, device.fingerprint), db=db, device=device, backend=backend,
                          run_id=run, measurer=tvm_measurer, options=TuneOptions())
        tuner.step(1)  # the default, measured by a searcher made before any row of this device
        searcher = tuner.searcher("gemm.blis")
        as_read = sorted(searcher.foreign.latency)
        assert as_read == pytest.approx(sorted(w.flops / ((1.0 + i) * 1e3) for i in range(len(theirs))))
        (default,) = db.measurements(device=device.key, workload=w.key)
        assert default["config_key"] == space.default().key and default["status"] == "ok"
        tuner.step(2)  # set at the level of the default as step(1) recorded it (this round may time it again)
        scale = default["gflops"] / 1.0
        assert sorted(searcher.foreign.latency) == pytest.approx([lat / scale for lat in as_read])
        default_row = [lat for x, lat in zip(searcher.foreign.X, searcher.foreign.latency)
                       if list(x) == list(space.features(space.default()))]
        assert default_row == [pytest.approx(w.flops / (default["gflops"] * 1e3))]
        assert searcher.cost_model.prior_weight > 0 and sorted(searcher.cost_model._prior_y) == pytest.approx(
            sorted(searcher.foreign.latency))
        assert all(r["status"] == "ok" for r in db.measurements(device=device.key, workload=w.key))
