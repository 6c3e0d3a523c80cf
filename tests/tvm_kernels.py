"""Shared by the TVM kernel tests: build a kernel for a fixed CPU and check it against the reference."""

from autotile.codegen.tvm.build import CompiledKernel, build
from autotile.ir.reference import verify

MCPU = "znver4"  # explicit, so the generated code is the same on any x86 host (and has AVX512_BF16, F16C)


def check(workload, config):
    """Build `config` for `workload`, assert it matches the reference, return the kernel."""
    kernel = CompiledKernel(workload, config, build(workload, config, MCPU, 2))
    verdict = verify(workload, kernel)
    assert verdict.ok, f"{workload.key} {config.key}: {verdict.reason}"
    return kernel
