"""Shared by the TVM kernel tests: kernels built for a named CPU, so the generated code (and any assembly a test
reads) is the same on every host; a kernel runs only where this CPU can execute that code, else the test is
skipped with the reason. Tests of a kernel that needs one ISA feature say so with `requires_cpu_flags`."""

from functools import cache
from pathlib import Path

import pytest

from autotile.codegen.tvm.build import CompiledKernel, compile_module
from autotile.ir.reference import verify
from autotile.search import artifacts

MCPU = "znver4"  # explicit, so the generated code is the same on any x86 host (and has AVX512_BF16, F16C)
# The /proc/cpuinfo flags of the vector ISA that LLVM may use in code built for MCPU (AVX-512 with VNNI, BF16,
# VBMI, GFNI...). Zen 4, Zen 5 and Sapphire Rapids-class Xeons (the AMX machine) have them all.
MCPU_FLAGS = ("avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512dq", "avx512bw", "avx512vl",
              "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq",
              "avx512_bf16", "gfni")


@cache
def cpu_flags() -> frozenset[str]:
    """Every flag /proc/cpuinfo lists for this CPU (the device fingerprint keeps only those kernels choose by)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def missing_cpu_flags(*flags: str) -> list[str]:
    return [f for f in flags if f not in cpu_flags()]


def _reason(missing: list[str]) -> str:
    return f"needs a CPU with {', '.join(missing)}; this one lacks them"


def requires_cpu_flags(*flags: str):
    """Mark a test that runs code needing these ISA flags: it is skipped, with the reason, on a CPU without them."""
    missing = missing_cpu_flags(*flags)
    return pytest.mark.skipif(bool(missing), reason=_reason(missing))


def skip_unless_cpu_has(*flags: str) -> None:
    """Skip the calling test here, with the reason, unless this CPU has these flags (MCPU's by default)."""
    missing = missing_cpu_flags(*(flags or MCPU_FLAGS))
    if missing:
        pytest.skip(_reason(missing) + f" (the kernel is built for {MCPU})")


def build_for_mcpu(workload, config):
    return artifacts.build(workload, config, MCPU, 2)


def assembly(workload, config) -> str:
    """The kernel's assembly for MCPU: readable on any host."""
    return build_for_mcpu(workload, config).mod.inspect_source("s")


def compiled(workload, config, executable=None) -> CompiledKernel:
    """The kernel built for MCPU (on every host), then the test is skipped where this CPU cannot run it."""
    if executable is None:
        executable = build_for_mcpu(workload, config)
    skip_unless_cpu_has()
    return artifacts.compiled(workload, config, executable)


def check(workload, config, executable=None) -> CompiledKernel:
    """Build `config` for `workload`, assert it matches the reference, return the kernel."""
    kernel = compiled(workload, config, executable)
    verdict = verify(workload, kernel)
    assert verdict.ok, f"{workload.key} {config.key}: {verdict.reason}"
    return kernel


# AMX tile kernels (autotile.codegen.tvm.amx): run emulated on any host, or built for a Xeon with AMX.
AMX_MCPU, AMX_MATTR = "sapphirerapids", ["+amx-tile", "+amx-bf16", "+amx-int8"]


def amx_build(schedule, workload, config, emulate: bool):
    """A tile kernel's library: its instructions emulated, built for MCPU; or real, built for AMX_MCPU."""
    module = schedule(workload, config, emulate=emulate)
    return compile_module(module, MCPU, 2) if emulate else compile_module(module, AMX_MCPU, 2, AMX_MATTR)


def check_emulated(schedule, workload, config) -> CompiledKernel:
    """check() of the kernel with its tile instructions emulated (AUTOTILE_AMX_EMULATE must be set to load it)."""
    return check(workload, config, amx_build(schedule, workload, config, emulate=True))


def amx_assembly(schedule, workload, config) -> str:
    return amx_build(schedule, workload, config, emulate=False).mod.inspect_source("s")
