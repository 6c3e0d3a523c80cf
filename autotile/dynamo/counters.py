"""What the backend did in this process, for tests and benchmarks: graphs, replaced ops, kernels, weight packs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    graphs: int = 0  # post-grad graphs the pass ran on (forward, backward and inference graphs each count)
    replaced: Counter = field(default_factory=Counter)  # op kind -> ops replaced (alone, or inside another's kernel)
    fused: Counter = field(default_factory=Counter)  # op kind -> ops computed inside another op's kernel
    left: Counter = field(default_factory=Counter)  # heavy ATen ops still in the graphs after the pass, by name
    workloads: dict = field(default_factory=dict)  # workload key -> kernel source (autotile.search.choose)
    templates: dict = field(default_factory=dict)  # workload key -> the template of its kernel ("gemm.amx")
    tuned: list = field(default_factory=list)  # workload keys tuned by tuning="tune"
    packs: int = 0  # weights converted to a kernel's layout (once per weight and version)
    pass_seconds: float = 0.0  # time in the graph pass, tuning and kernel loading included

    def reset(self):
        self.__init__()

    @property
    def total(self) -> int:
        """autotile ops put in the graphs: the replaced ops, less those another op's kernel computes."""
        return sum(self.replaced.values()) - sum(self.fused.values())


stats = Stats()
