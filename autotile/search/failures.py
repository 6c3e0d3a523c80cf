"""The kinds of failure a candidate kernel can have: one small vocabulary for the measurer, the database
(its `failure` column) and the reports. Plain values only; nothing here builds or runs anything."""

from __future__ import annotations

from enum import Enum

from autotile.errors import Unsupported, WrongResult


class Failure(str, Enum):
    """How a candidate failed; the database stores the value, the error text says the rest."""

    COMPILE = "compile"            # the template or the compiler refused the config
    UNSUPPORTED = "unsupported"    # it compiled, but cannot run here (does not fit the GPU's resources)
    CRASH = "crash"                # a build or run worker died (LLVM abort, segfault)
    TIMEOUT = "timeout"            # a build or run outlasted its limit
    WRONG_RESULT = "wrong_result"  # it ran and disagreed with the reference
    RUNTIME = "runtime"            # calling it raised

    @classmethod
    def of(cls, failure, stage: str) -> Failure:
        """The kind of a WorkerFailure (autotile.search.worker) at `stage` ("build" or "run")."""
        if failure.kind in ("crash", "timeout"):
            return cls(failure.kind)
        if failure.error_type == WrongResult.__name__:
            return cls.WRONG_RESULT
        if failure.error_type == Unsupported.__name__:
            return cls.UNSUPPORTED
        return cls.COMPILE if stage == "build" else cls.RUNTIME

    @classmethod
    def from_legacy_error(cls, error: str | None) -> Failure:
        """The kind of a failure recorded before kinds existed, from its text (`stage: detail`)."""
        text = error or ""
        if text.startswith("wrong result"):
            return cls.WRONG_RESULT
        if "timed out" in text:
            return cls.TIMEOUT
        if "worker crashed" in text:
            return cls.CRASH
        if "does not fit" in text:
            return cls.UNSUPPORTED
        return cls.RUNTIME if text.startswith("run:") else cls.COMPILE
