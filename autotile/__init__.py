"""autotile: a kernel auto-tuning compiler.

    import autotile
    from autotile.ir import GemmWorkload
    result = autotile.tune(GemmWorkload(512, 768, 768, epilogue="bias,gelu"), trials=64)
    kern = autotile.kernel(GemmWorkload(512, 768, 768, epilogue="bias,gelu"))
    c = kern(a, b, bias)          # torch tensors, no copies
    model = autotile.compile(model, tuning="tune")   # torch.compile(model, backend="autotile", ...)
    autotile.tune_model(model, (x,), trials=256)    # every workload of the model under one budget

Importing it changes nothing in the process: the environment TVM needs is set by the first Session
(autotile.session), which the functions above make.
"""

__version__ = "0.1.0"

from autotile.api import kernel, tune  # noqa: E402
from autotile.session import Session  # noqa: E402


def compile(model, **options):
    """`torch.compile(model, backend="autotile", options=options)`; see `autotile.dynamo.Options`."""
    from autotile.dynamo import compile_model

    return compile_model(model, **options)


def tune_model(model, example_inputs, **options):
    """Tune every workload the backend would replace in `model` under one budget (autotile.modeltune)."""
    from autotile.modeltune import tune_model as run

    return run(model, example_inputs, **options)


__all__ = ["Session", "compile", "kernel", "tune", "tune_model", "__version__"]
