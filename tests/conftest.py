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
