"""autotile: a kernel auto-tuning compiler.

    import autotile
    from autotile.ir import GemmWorkload
    result = autotile.tune(GemmWorkload(512, 768, 768, epilogue="bias,gelu"), trials=64)
    kern = autotile.kernel(GemmWorkload(512, 768, 768, epilogue="bias,gelu"))
    c = kern(a, b, bias)          # torch tensors, no copies
    model = autotile.compile(model, tuning="tune")   # torch.compile(model, backend="autotile", ...)
"""

import os

__version__ = "0.1.0"


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


# TVM's thread pool assumes hyper-threading and runs on half the cores unless told; it reads this
# once, when its runtime starts, so it is set before anything imports TVM.
os.environ.setdefault("TVM_NUM_THREADS", str(_physical_cores()))

from autotile.api import kernel, tune  # noqa: E402


def compile(model, **options):
    """`torch.compile(model, backend="autotile", options=options)`; see `autotile.dynamo.Options`."""
    from autotile.dynamo import compile_model

    return compile_model(model, **options)


__all__ = ["compile", "kernel", "tune", "__version__"]
