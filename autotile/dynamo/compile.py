"""Hand a dynamo graph to Inductor or to AOTAutograd + eager, with the autotile pass on every post-grad graph."""

from __future__ import annotations

import os
import sys
import warnings

from autotile.dynamo.graph_pass import AutotilePass
from autotile.dynamo.options import Options


def warn_about_spinning_openmp():
    """torch's OpenMP threads spin after each parallel region and take the cores TVM's kernels need in between
    (measured: a GPT block 2x slower). libgomp reads its settings once, when torch loads, so only a warning helps."""
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        warnings.warn("autotile: set GOMP_SPINCOUNT=10000 (or OMP_WAIT_POLICY=passive) before starting Python; "
                      "torch's spinning OpenMP threads slow autotile's kernels down", stacklevel=3)


def torchao_weight_bits(example_inputs) -> dict[int, int]:
    """The bit width of each torchao intN weight (IntxUnpackedToInt8Tensor) among a dynamo graph's inputs, by
    input index. The post-grad graph holds only such a weight's int8 values (qdata), whose placeholder names the
    input it came from; its target dtype (torch.int1 .. torch.int8) is known only here."""
    intx = getattr(sys.modules.get("torchao.quantization"), "IntxUnpackedToInt8Tensor", None)
    if intx is None:
        return {}  # torchao not loaded: no torchao tensors either
    import torch

    signed = {getattr(torch, f"int{bits}"): bits for bits in range(1, 9) if hasattr(torch, f"int{bits}")}
    return {i: signed[t.target_dtype] for i, t in enumerate(example_inputs)
            if isinstance(t, intx) and getattr(t, "target_dtype", None) in signed}


def kernel_backend(example_inputs, options: Options) -> str:
    """The backend whose kernels replace the matched ops: the option's, or the one that takes the inputs' device."""
    if options.backend != "auto":
        return options.backend
    import torch

    from autotile.backends import for_tensors

    return for_tensors([t for t in example_inputs if isinstance(t, torch.Tensor)]).name


def compile_inductor(gm, example_inputs, options: Options):
    from torch._inductor.compile_fx import compile_fx

    warn_about_spinning_openmp()
    # Inductor's own decompositions (the pass matches decomposed activations), so its FX graph cache applies.
    graph_pass = AutotilePass(options, torchao_weight_bits(example_inputs), kernel_backend(example_inputs, options))
    return compile_fx(gm, example_inputs, config_patches={"post_grad_custom_post_pass": graph_pass})


def compile_eager(gm, example_inputs, options: Options):
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    warn_about_spinning_openmp()
    graph_pass = AutotilePass(options, torchao_weight_bits(example_inputs), kernel_backend(example_inputs, options))

    def run_pass(graph_module, _inputs):
        graph_pass(graph_module.graph)
        graph_module.recompile()
        return make_boxed_func(graph_module.forward)

    return aot_autograd(fw_compiler=run_pass, bw_compiler=run_pass)(gm, example_inputs)
