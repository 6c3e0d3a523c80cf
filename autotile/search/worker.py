"""Persistent worker processes (spawn) that a timeout or a crash cannot take the tuner down with.

A fresh interpreter per candidate would cost seconds of imports, and forking after torch or TVM
have started threads is unsafe; so each worker is spawned once, imports TVM once, and serves
requests over a pipe. A request that times out or kills the worker is reported as a failure and
the worker is replaced. A worker's stderr goes to a file of its own, so a crash's report carries
what the worker printed last (LLVM prints its reason for an abort there, and nowhere else).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import wait

from autotile.dotted import resolve

_CTX = mp.get_context("spawn")


def _redirect_stderr(path: str):
    """fd 2 (where LLVM, TVM's C++ and Python all write) into `path`, emptied at each request."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)


def _serve(conn, env: dict, warm_imports: list[str], stderr_path: str | None = None):
    os.environ.update(env)
    if stderr_path:
        _redirect_stderr(stderr_path)
    for name in warm_imports:
        importlib.import_module(name)
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        fn_name, args = request
        if stderr_path:
            sys.stderr.flush()
            os.ftruncate(2, 0)
            os.lseek(2, 0, os.SEEK_SET)
        try:
            conn.send(("ok", resolve(fn_name)(*args)))
        except BaseException as e:  # report everything: the parent decides what failed means
            lines = traceback.format_exception_only(type(e), e)
            conn.send(("error", (type(e).__name__, "".join(lines).strip()[-2000:])))


@contextlib.contextmanager
def _main_module_hidden():
    """Spawn re-imports the parent's __main__ in the child; our workers never need it, and a
    script without an `if __name__ == "__main__"` guard (or code piped to python) would break."""
    main = sys.modules["__main__"]
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(saved)


class WorkerFailure(Exception):
    """The request did not return. `kind` says how: "timeout", "crash" (the worker died), or "error" (the call
    raised in the worker; `error_type` is that exception's class name, the message its text)."""

    def __init__(self, message: str, kind: str = "error", error_type: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.error_type = error_type


def timed_out(timeout: float) -> WorkerFailure:
    return WorkerFailure(f"timed out after {timeout:.0f} s", kind="timeout")


def describe_exit(code: int | None) -> str:
    """'killed by SIGABRT' for a negative exit code, 'exit code 3' otherwise."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def stderr_tail(text: str, limit: int = 400) -> str:
    """The part of a dead worker's stderr that says why, on one line: LLVM's own error when there is one,
    else the last non-empty lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    llvm = [line for line in lines if line.startswith("LLVM ERROR")]
    tail = llvm[-1:] or lines[-3:]
    return " | ".join(tail)[-limit:]


class Worker:
    def __init__(self, env: dict | None = None, warm_imports=("tvm", "torch")):
        self.env = {k: str(v) for k, v in (env or {}).items()}
        self.warm_imports = list(warm_imports)
        self.process = None
        self.conn = None
        self.stderr_path = None

    def start(self):
        parent, child = _CTX.Pipe()
        fd, self.stderr_path = tempfile.mkstemp(prefix="autotile-worker-", suffix=".stderr")
        os.close(fd)
        self.process = _CTX.Process(target=_serve, args=(child, self.env, self.warm_imports, self.stderr_path),
                                    daemon=True)
        with _main_module_hidden():
            self.process.start()
        child.close()
        self.conn = parent

    def ensure_started(self):
        if self.process is None or not self.process.is_alive():
            self.start()

    def submit(self, fn_name: str, *args):
        self.ensure_started()
        self.conn.send((fn_name, args))

    def collect(self, timeout: float):
        """The result of the last submit, or WorkerFailure (the worker is restarted on crash/timeout)."""
        try:
            if not self.conn.poll(timeout):
                self.kill()
                raise timed_out(timeout)
            status, value = self.conn.recv()
        except (EOFError, ConnectionError, OSError):
            raise WorkerFailure(self.crash_report(), kind="crash") from None
        if status == "error":
            error_type, message = value
            raise WorkerFailure(message, error_type=error_type)
        return value

    def crash_report(self) -> str:
        """Why the worker died, from its exit status and the end of its stderr; the worker is gone after."""
        code = None
        if self.process is not None:
            self.process.join(5)  # the pipe closes a moment before the exit status is known
            code = self.process.exitcode
        said = ""
        if self.stderr_path:
            with contextlib.suppress(OSError):
                with open(self.stderr_path, "rb") as f:
                    f.seek(max(0, os.path.getsize(self.stderr_path) - 8192))
                    said = stderr_tail(f.read().decode(errors="replace"))
        self.kill()
        return f"worker crashed ({describe_exit(code)})" + (f": {said}" if said else "")

    def call(self, fn_name: str, *args, timeout: float = 60.0):
        self.submit(fn_name, *args)
        return self.collect(timeout)

    def kill(self):
        if self.process is not None and self.process.pid is not None:
            self.process.kill()
            self.process.join(5)
        self.process = None
        self.conn = None
        if self.stderr_path:
            with contextlib.suppress(OSError):
                os.unlink(self.stderr_path)
            self.stderr_path = None

    def close(self):
        if self.process is not None and self.process.is_alive():
            try:
                self.conn.send(None)
                self.process.join(2)
            except (OSError, BrokenPipeError):
                pass
        self.kill()


class WorkerPool:
    """N workers; `map` runs one call per item, at most one per worker at a time."""

    def __init__(self, size: int, env: dict | None = None, warm_imports=("tvm",)):
        self.workers = [Worker(env, warm_imports) for _ in range(max(1, size))]

    def map(self, fn_name: str, items: list[tuple], timeout: float) -> list:
        """Results in order; a failed call's slot holds its WorkerFailure."""
        results: list = [None] * len(items)
        pending = list(enumerate(items))
        busy: dict = {}  # connection -> (worker, index, deadline)
        idle = list(self.workers)
        while pending or busy:
            while pending and idle:
                worker = idle.pop()
                index, args = pending.pop(0)
                worker.submit(fn_name, *args)
                busy[worker.conn] = (worker, index, time.monotonic() + timeout)
            next_deadline = min(deadline for _, _, deadline in busy.values())
            ready = wait(list(busy), max(0.0, next_deadline - time.monotonic()))
            now = time.monotonic()
            for conn in list(busy):
                worker, index, deadline = busy[conn]
                if conn in ready:
                    results[index] = _collect(worker, timeout)
                elif now >= deadline:
                    worker.kill()
                    results[index] = timed_out(timeout)
                else:
                    continue
                del busy[conn]
                idle.append(worker)
        return results

    def close(self):
        for w in self.workers:
            w.close()


def _collect(worker: Worker, timeout: float):
    try:
        return worker.collect(timeout)
    except WorkerFailure as e:
        return e
