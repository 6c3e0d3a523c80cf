"""Test setup: TVM threads fixed before TVM starts; every test gets its own database and kernel cache."""

import os
import tempfile

os.environ.setdefault("TVM_NUM_THREADS", "2")
# The whole session's kernels go to a temporary cache, never the user's.
os.environ["AUTOTILE_CACHE_DIR"] = tempfile.mkdtemp(prefix="autotile-test-kernels-")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def isolated_db(tmp_path, monkeypatch):
    """Each test's default database is a fresh file of its own."""
    path = tmp_path / "autotile.db"
    monkeypatch.setenv("AUTOTILE_DB", str(path))
    return path


class VirtualClock:
    """time.perf_counter for the tuning loop and the torch.compile backend's tuning, advanced only by what the
    tuner records: `per_record` seconds for each measurement (a trial or a re-measurement), none for anything
    else. A time budget then runs out after a number of trials the test fixes, however fast this machine is."""

    def __init__(self, per_record: float = 1.0):
        self.now, self.per_record = 0.0, per_record

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def virtual_clock(monkeypatch):
    from autotile.modeltune import run as model_run
    from autotile.search import task, tuner

    clock = VirtualClock()
    record = task._record

    def timed_record(*args, **kwargs):
        record(*args, **kwargs)
        clock.now += clock.per_record

    monkeypatch.setattr(task, "_record", timed_record)
    for module in (tuner, task, model_run):  # the modules that read the clock to keep a budget
        monkeypatch.setattr(module, "time", clock)
    return clock
