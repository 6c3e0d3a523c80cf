"""The torch.compile backend: heavy ATen ops (GEMMs with their epilogues, conv2d, attention) run tuned
autotile kernels, and Inductor (or eager, with fallback="eager") runs everything else around them.

    compiled = torch.compile(model, backend="autotile", options={"tuning": "cached"})
    compiled = autotile.dynamo.compile_model(model, tuning="tune", trials_per_workload=8)

Options are documented on `Options`; `stats` says what was replaced. float32 ops are replaced on CPU and GPU, bfloat16
(and float16 GEMMs and layer norms) on CPU.
"""

from __future__ import annotations

from autotile.dynamo.options import Options
from autotile.errors import AutotileError

__all__ = ["autotile_backend", "compile_model", "Options", "stats"]


def __getattr__(name):
    if name == "stats":  # the graph pass imports torch internals: loaded when first needed
        from autotile.dynamo.counters import stats

        return stats
    raise AttributeError(name)


def autotile_backend(gm, example_inputs, options: dict | None = None, mode: str | None = None):
    """The dynamo backend registered as "autotile" (entry point torch_dynamo_backends)."""
    if mode not in (None, "default"):
        raise AutotileError(f"the autotile backend takes no mode (got {mode!r}); pass options instead")
    opts = Options.parse(options)
    if opts.fallback == "inductor":
        from autotile.dynamo.compile import compile_inductor

        return compile_inductor(gm, example_inputs, opts)
    from autotile.dynamo.compile import compile_eager

    return compile_eager(gm, example_inputs, opts)


def compile_model(model, *, dynamic: bool | None = None, fullgraph: bool = False, **options):
    """torch.compile(model, backend="autotile", options=options); options are checked here, before tracing."""
    import torch

    Options.parse(options)
    return torch.compile(model, backend="autotile", options=options or None, dynamic=dynamic, fullgraph=fullgraph)
