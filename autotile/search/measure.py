"""Measurement: build candidates in parallel workers, then verify and time them one at a time.

Builds and timed runs never overlap: a batch is built first, then run in a single runner
process that uses every physical core (TVM_NUM_THREADS) and nothing else runs meanwhile.
A candidate that fails to compile, crashes, hangs or computes a wrong result becomes a failed
MeasureResult with its reason; it never raises.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass, field

from autotile.codegen.tvm.pool import SPIN_COUNT_VAR, TVM_DEFAULT_SPIN
from autotile.db.store import kernel_latency
from autotile.errors import WrongResult
from autotile.ops import encode_config, tvm_template_modules
from autotile.paths import kernel_cache_dir
from autotile.search.artifacts import target_of
from autotile.search.failures import Failure
from autotile.search.worker import Worker, WorkerFailure, WorkerPool

DEFAULT_BUILDER = "autotile.search.artifacts:build_cached"
DEFAULT_LOADER = "autotile.search.artifacts:load"


@dataclass
class MeasureResult:
    config: object
    status: str  # "ok" or "failed"
    error: str | None = None
    failure: Failure | None = None  # set when failed
    latency: dict = field(default_factory=dict)  # median, mean, min, max, std (microseconds), runs
    gflops: float | None = None
    threads: int | None = None
    build_seconds: float | None = None
    path: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def latency_us(self) -> float:
        return kernel_latency(self.latency) if self.ok else float("inf")


class Batch(list):
    """A batch's results, in the order of its configs, and its anchor's timings (see Measurer.measure)."""

    def __init__(self, results=()):
        super().__init__(results)
        self.anchors: list[MeasureResult] = []


ANCHOR_REPEAT = 5  # an anchor's timing: the fastest of a few short repeats, cheap beside a batch's builds


# --- functions that run inside workers -------------------------------------------------------

def decode_in_worker(workload_dict: dict, config_payload, cache_dir: str):
    """(workload, config) sent to a worker, which from now on keeps its libraries in the sender's kernel cache (as
    it is now: workers outlive changes to the sender's environment)."""
    import os

    from autotile.ops import decode_config, workload_from_dict

    os.environ["AUTOTILE_CACHE_DIR"] = cache_dir
    return workload_from_dict(workload_dict), decode_config(config_payload)


def build_task(builder: str, workload_dict: dict, config_payload, device_key: str, mcpu: str, threads: int,
               cache_dir: str, mattr=()):
    from autotile.search.worker import resolve

    workload, config = decode_in_worker(workload_dict, config_payload, cache_dir)
    start = time.perf_counter()
    path = resolve(builder)(device_key, workload, config, mcpu, threads, mattr)
    return str(path), time.perf_counter() - start


_REFERENCES: dict = {}  # workload key -> [(inputs, reference)] for the verification draws


def _draws(workload):
    from autotile.ir.reference import random_inputs, reference

    if workload.key not in _REFERENCES:
        _REFERENCES.clear()  # one workload at a time: a tuning run measures one
        _REFERENCES[workload.key] = [
            (inputs, reference(workload, *inputs)) for inputs in (random_inputs(workload, s) for s in (0, 1))
        ]
    return _REFERENCES[workload.key]


def time_calls(fn, repeat: int, min_repeat_s: float) -> list[float]:
    """Seconds per call, one figure per repeat; each repeat runs long enough to be timed well."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(min_repeat_s / once))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return times


def l3_bytes() -> int:
    """This CPU's level-3 cache in bytes, from sysfs (32 MiB when the OS does not say)."""
    from pathlib import Path

    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "3":
                size = (index / "size").read_text().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
        except (OSError, ValueError):
            break
    return 32 << 20


def cold_weight_sets(kernel, inputs) -> list[list]:
    """Argument lists to time a kernel with: one, unless it packs a constant operand (a layer's weight) ahead
    of the calls. Then each list holds a distinct packed copy, enough of them (at most 16) to span twice the
    L3, so the weight is read from memory as in a model whose other layers' weights passed through the cache
    in between; timed from cache, the tuner preferred tiles that re-read the weight far more often."""
    sets = [list(inputs)]
    for name in getattr(kernel, "_prepacked", {}):
        index = list(kernel.workload.operand_shapes()).index(name)
        packed = kernel.pack_operand(name, inputs[index])
        size = packed.tensor.numel() * packed.tensor.element_size()
        copies = min(16, -(-2 * l3_bytes() // size)) if size >= (1 << 20) else 1
        sets = [[*s[:index], kernel.pack_operand(name, inputs[index]) if i else packed, *s[index + 1:]]
                for i, s in enumerate(sets * copies)]
    return sets


def run_task(loader: str, workload_dict: dict, config_payload, path: str, repeat: int, min_repeat_s: float):
    """Verify, then time. Raises on a wrong result, so the parent records why."""
    import os

    from autotile.ops import decode_config, workload_from_dict
    from autotile.search.worker import resolve

    workload = workload_from_dict(workload_dict)
    config = decode_config(config_payload)
    kernel = resolve(loader)(workload, config, path)
    return verify_then_time(workload, kernel, repeat, min_repeat_s,
                            threads=int(os.environ.get("TVM_NUM_THREADS", "0")) or None)


def verify_then_time(workload, kernel, repeat: int, min_repeat_s: float, threads: int | None) -> dict:
    """Check the kernel on the verification draws (raises on a wrong result, so the parent records why),
    then time it: the measurement record's timing fields."""
    from autotile.ir.reference import compare, poisoned_output

    max_error = 0.0
    for inputs, reference in _draws(workload):
        out = poisoned_output(workload)
        kernel(*inputs, out=out)
        verdict = compare(workload, out, reference)
        if not verdict.ok:
            raise WrongResult(f"wrong result: {verdict.reason}")
        max_error = max(max_error, verdict.max_abs_error)
    inputs, _ = _draws(workload)[0]
    out = poisoned_output(workload)
    calls = itertools.cycle(cold_weight_sets(kernel, inputs))
    times_us = [t * 1e6 for t in time_calls(lambda: kernel(*next(calls), out=out), repeat, min_repeat_s)]
    return {
        "median": statistics.median(times_us), "mean": statistics.fmean(times_us), "min": min(times_us),
        "max": max(times_us), "std": statistics.pstdev(times_us), "runs": len(times_us),
        "threads": threads, "max_abs_error": max_error,
    }


# --- the parent side ----------------------------------------------------------------------------

def failed(config, failure: WorkerFailure, stage: str, **fields) -> MeasureResult:
    """A failed MeasureResult: its kind, and a one-line reason (`stage: detail`, or the wrong result's own)."""
    kind = Failure.of(failure, stage)
    text = str(failure)
    if kind is Failure.WRONG_RESULT:
        reason = text.partition(": ")[2]  # its message, after the exception's qualified name
    else:
        reason = f"{stage}: {text.splitlines()[-1] if text else 'failed'}"
    return MeasureResult(config, "failed", reason, failure=kind, **fields)


class Measurer:
    """Builds in a pool of `build_workers`, runs in one runner with `threads` kernel threads."""

    def __init__(self, device, threads: int, build_workers: int = 2, build_timeout: float = 120.0,
                 run_timeout: float = 60.0, builder: str = DEFAULT_BUILDER, loader: str = DEFAULT_LOADER):
        self.device = device
        self.threads = threads
        self.builder, self.loader = builder, loader
        self.build_timeout, self.run_timeout = build_timeout, run_timeout
        # The template modules are imported up front so the first build of each family is not slower.
        self.build_pool = WorkerPool(build_workers, warm_imports=("tvm", *tvm_template_modules()))
        # The runner times kernels alone, with TVM's own long spin, whatever the process that started it set.
        self.runner = Worker({"TVM_NUM_THREADS": threads, SPIN_COUNT_VAR: TVM_DEFAULT_SPIN},
                             warm_imports=("tvm", "torch"))

    def build(self, workload, configs) -> list:
        """Paths (str, seconds) or WorkerFailure, in order."""
        mcpu, _, mattr = target_of(self.device)
        cache_dir = str(kernel_cache_dir())
        items = [(self.builder, workload.to_dict(), encode_config(workload, c), self.device.key, mcpu, self.threads,
                  cache_dir, mattr) for c in configs]
        return self.build_pool.map("autotile.search.measure:build_task", items, self.build_timeout)

    def _run_call(self, workload, config, path: str, repeat: int, min_repeat_s: float) -> dict:
        return self.runner.call("autotile.search.measure:run_task", self.loader, workload.to_dict(),
                                encode_config(workload, config), path, repeat, min_repeat_s, timeout=self.run_timeout)

    def run(self, workload, config, path: str, repeat: int = 10, min_repeat_s: float = 0.01) -> MeasureResult:
        try:
            stats = self._run_call(workload, config, path, repeat, min_repeat_s)
        except WorkerFailure as failure:
            return failed(config, failure, "run", path=path)
        threads = stats.pop("threads")
        stats.pop("max_abs_error")
        gflops = workload.flops / (kernel_latency(stats) * 1e-6) / 1e9
        return MeasureResult(config, "ok", latency=stats, gflops=gflops, threads=threads, path=path)

    anchors = True  # whether its timings tell the host's pace (an interpreter's do not)

    def measure(self, workload, configs, repeat: int = 10, anchor: MeasureResult | None = None) -> Batch:
        """Build all, then run each built one; results in the order of configs. With an `anchor` (an earlier
        result: its config and built kernel), that kernel is timed again right before the runs and right after
        them (`Batch.anchors`): the host's pace while the batch was timed, against the anchor's record."""
        built = self.build(workload, configs)
        results = Batch()
        if anchor is not None and self.anchors:
            results.anchors.append(self.run(workload, anchor.config, anchor.path, ANCHOR_REPEAT))
        for config, made in zip(configs, built):
            if isinstance(made, WorkerFailure):
                results.append(failed(config, made, "build"))
                continue
            path, seconds = made
            result = self.run(workload, config, path, repeat)
            result.build_seconds = seconds
            results.append(result)
        if results.anchors:
            results.anchors.append(self.run(workload, anchor.config, anchor.path, ANCHOR_REPEAT))
        return results

    def close(self):
        self.build_pool.close()
        self.runner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TritonMeasurer(Measurer):
    """Triton candidates on a CUDA device: build workers compile for the GPU's arch and refuse what does not
    fit; one runner process owns the GPU, verifies each kernel and times it with CUDA events
    (autotile.search.triton_tasks). Same results and interface as Measurer."""

    def __init__(self, device, build_workers: int = 2, build_timeout: float = 300.0, run_timeout: float = 120.0):
        from autotile.codegen.triton.aot import arch_of

        self.device, self.threads = device, None
        self.arch = arch_of(device.fingerprint.get("capability", "sm_90"))
        self.build_timeout, self.run_timeout = build_timeout, run_timeout
        self.build_pool = WorkerPool(build_workers, warm_imports=("torch", "triton"))
        self.runner = Worker({}, warm_imports=("torch", "triton"))

    def build(self, workload, configs) -> list:
        items = [(workload.to_dict(), c.to_dict(), self.arch, str(kernel_cache_dir())) for c in configs]
        return self.build_pool.map("autotile.search.triton_tasks:compile_task", items, self.build_timeout)

    def _run_call(self, workload, config, path: str, repeat: int, min_repeat_s: float) -> dict:
        return self.runner.call("autotile.search.triton_tasks:run_task", workload.to_dict(), config.to_dict(), path,
                                repeat, min_repeat_s, timeout=self.run_timeout)


class InterpretedTritonMeasurer(TritonMeasurer):
    """TritonMeasurer for a machine with no GPU: candidates are compiled for `device`'s arch exactly as on the
    GPU (and refused when they do not fit), then verified under TRITON_INTERPRET=1 in the runner process.
    The verdicts are real; the latencies are the interpreter's and say nothing about the GPU. For tests and
    dry runs of Triton tuning on CPU machines."""

    anchors = False

    def __init__(self, device, build_workers: int = 2, build_timeout: float = 300.0, run_timeout: float = 300.0):
        super().__init__(device, build_workers, build_timeout, run_timeout)
        self.runner = Worker({"TRITON_INTERPRET": "1"}, warm_imports=("torch", "triton"))

    def _run_call(self, workload, config, path: str, repeat: int, min_repeat_s: float) -> dict:
        return self.runner.call("autotile.search.triton_tasks:interpreted_run_task", workload.to_dict(),
                                config.to_dict(), path, 1, 0.0, timeout=self.run_timeout)
