"""How TVM's CPU thread pool behaves in a process that runs autotile kernels beside other work (torch, numpy).

Only processes that load kernels for a user call this. The tuner's runner, which runs nothing but the kernel it
times, has no one to leave the cores to: it should time with TVM's own long spin, never a short one it inherited.
"""

from __future__ import annotations

import os

SPIN_COUNT_VAR = "TVM_THREAD_POOL_SPIN_COUNT"
SHORT_SPIN = 1000
TVM_DEFAULT_SPIN = 300000  # what TVM's pool does when the variable is unset


def limit_spinning() -> None:
    """TVM's pool workers spin 300k sched_yield()s (about 150 ms) after each kernel, on the cores the torch, numpy
    or Inductor code that runs next needs (measured: numpy and torch calls right after a kernel ran 2-5x slower; a
    ResNet stage went from 0.59x to 0.78x of Inductor's speed when the workers slept at once). Sleeping at once
    costs each kernel a wake-up (30-35 us measured in a GPT block, whose code between kernels is all autotile's),
    so they spin 1000 yields, about 0.5 ms: enough to bridge the Python between two kernels, short next to the
    torch work that follows one. A value the user set wins.

    TVM reads the variable once per process (getenv), when its pool's first worker starts, which is at the first
    parallel kernel call: call this before that, e.g. when a kernel is loaded. Setting it after `import tvm` is
    fine; after a first TVM kernel call it is too late for this process."""
    os.environ.setdefault(SPIN_COUNT_VAR, str(SHORT_SPIN))
