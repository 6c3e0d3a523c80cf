"""The one owner of what autotile holds in a process: the backend and its device, the tuning database, the worker
processes that measure candidates, and the environment its kernels need. (Compiled libraries live in the kernel
cache, $AUTOTILE_CACHE_DIR or the user cache dir: autotile.paths.kernel_cache_dir.)

    with autotile.Session(db="team.db") as session:
        session.tune(GemmWorkload(512, 768, 768), TuneOptions(trials=64))
        kern = session.kernel(GemmWorkload(512, 768, 768))

The Python API (autotile.tune / autotile.kernel / autotile.tune_model), the CLI and the torch.compile backend each
make one on their database and close it; they share the worker processes of one default session per backend for
the life of the process, so worker start-up (seconds) is paid once.
"""

from __future__ import annotations

import atexit
import os

from autotile.errors import AutotileError, KernelBuildError


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def prepare_environment() -> None:
    """What must be set before TVM's runtime starts in this process: TVM's thread pool assumes hyper-threading
    and runs on half the cores unless told, and reads TVM_NUM_THREADS once. A user's own setting is kept."""
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))


class Session:
    def __init__(self, db=None, backend="auto", threads: int | None = None, *, _workers_of: Session | None = None):
        from autotile import backends

        prepare_environment()
        self.backend = backends.resolve(backend) if isinstance(backend, str) else backend
        self.device = _workers_of.device if _workers_of else self.backend.device(threads)
        self._db_arg, self._db = db, None
        self._parent = _workers_of  # a session sharing another's workers never closes them
        self._measurer = None

    # -- what it owns, made on first use -------------------------------------------------------
    @property
    def db(self):
        """The tuning database (autotile.db.store.TuningDB), opened on first use: a path, an open TuningDB, or
        None for the default ($AUTOTILE_DB, else the user cache dir)."""
        if self._db is None:
            from autotile.db.store import TuningDB

            self._db = self._db_arg if isinstance(self._db_arg, TuningDB) else TuningDB(self._db_arg)
        return self._db

    @property
    def measurer(self):
        """The worker processes that build, verify and time candidates, started on first use and kept."""
        if self._parent is not None:
            return self._parent.measurer
        if self._measurer is None:
            self._measurer = self.backend.measurer(self.device)
        return self._measurer

    def with_db(self, db) -> Session:
        """A session on another database that shares this one's device and workers."""
        return Session(db, self.backend, _workers_of=self)

    # -- what it does ------------------------------------------------------------------------------
    def tune(self, workload, options=None):
        """Tune `workload` on this device (autotile.search.tuner.tune); the result is recorded in the database."""
        from autotile.search.tuner import TuneOptions
        from autotile.search.tuner import tune as run_tuning

        options = options or TuneOptions()
        self.check(workload)
        return run_tuning(workload, db=self.db, device=self.device, backend=self.backend, options=options,
                          measurer=self.measurer)

    def choose(self, workload, use_db: bool = True):
        """(config, source): the config that runs `workload` here (autotile.search.choose)."""
        from autotile.search.choose import choose_config

        return choose_config(self.db if use_db else None, self.device, workload, self.backend)

    def kernel(self, workload, use_db: bool = True):
        """The kernel that runs `workload` here: the exact tuned config, else the nearest tuned shape's, else the
        default; a borrowed config that fails to build gives way to the default."""
        self.check(workload)
        config, source = self.choose(workload, use_db)
        try:
            return self.backend.load(self.device, workload, config, verified=source == "exact")
        except (AutotileError, KernelBuildError):
            if source == "default":
                raise
            config, _ = self.choose(workload, use_db=False)
            return self.backend.load(self.device, workload, config, verified=False)

    def check(self, workload) -> None:
        """Clear errors for a workload this backend cannot run, or whose operands this device cannot hold."""
        from autotile.backends.fit import check_backend_supports, check_fits_memory

        check_backend_supports(workload, self.backend.name)
        check_fits_memory(workload, self.device.kind)

    # -- closing -------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._measurer is not None:
            self._measurer.close()
            self._measurer = None
        if self._db is not None and self._db is not self._db_arg:
            self._db.close()
        self._db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_DEFAULT: dict[str, Session] = {}


def default_session(backend: str = "auto", db=None) -> Session:
    """A session on `db` (see Session.db; None: the default database) that measures in the worker processes of
    the backend's process-wide session ("auto" resolved first). Closing it closes its database only; the workers
    are closed when the process exits."""
    from autotile import backends

    name = backends.resolve(backend).name
    if name not in _DEFAULT:
        if not _DEFAULT:
            atexit.register(close_default_sessions)
        _DEFAULT[name] = Session(None, name)
    return _DEFAULT[name].with_db(db)


def close_default_sessions() -> None:
    for session in _DEFAULT.values():
        session.close()
    _DEFAULT.clear()
