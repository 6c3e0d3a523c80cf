"""The workloads a model's compile would ask for, and how often each runs per forward, without building a kernel.

The model is traced by the same torch.compile backend and the same graph pass (patterns, plans, buckets), so the
tasks `autotile tune-model` tunes are exactly the workloads the backend will look up; while collecting, the pass
records its workloads and leaves the graph as it is.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

from autotile.errors import AutotileError

_local = threading.local()


def collect(workloads) -> bool:
    """Called by the graph pass: True (and the workloads noted) when an extraction is collecting."""
    seen = getattr(_local, "seen", None)
    if seen is None:
        return False
    seen.extend(workloads)
    return True


@contextmanager
def _collecting():
    _local.seen = []
    try:
        yield _local.seen
    finally:
        _local.seen = None


@dataclass(frozen=True)
class Task:
    workload: object  # an autotile.ir workload
    calls: int  # times it runs per forward


def extract_tasks(model, example_inputs, backend: str = "auto", fallback: str = "inductor") -> list[Task]:
    """The model's autotile workloads with their calls per forward, in first-seen order (inference, no grad)."""
    import torch
    import torch._functorch.config
    import torch._inductor.config

    from autotile.dynamo import autotile_backend

    options = {"tuning": "off", "fallback": fallback, "backend": backend, "progress": False}
    torch._dynamo.reset()  # a graph traced before would not reach the pass again; nor would a cached one:
    no_caches = (torch._inductor.config.patch(fx_graph_cache=False),
                 torch._functorch.config.patch(enable_autograd_cache=False))
    try:
        with _collecting() as seen, torch.no_grad(), no_caches[0], no_caches[1]:
            compiled = torch.compile(model, backend=lambda gm, inputs: autotile_backend(gm, inputs, options))
            compiled(*example_inputs)
    except AutotileError:
        raise
    except Exception as e:  # the model's own error, while tracing or running it
        raise AutotileError(f"running the model on its example inputs failed: {type(e).__name__}: {e}") from e
    finally:
        torch._dynamo.reset()
    calls = Counter(w.key for w in seen)
    first = {}
    for w in seen:
        first.setdefault(w.key, w)
    return [Task(w, calls[key]) for key, w in first.items()]
