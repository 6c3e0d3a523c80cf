"""Shared by the TVM kernel tests: kernels built for a named CPU, so the generated code (and any assembly a test
reads) is the same on every host that can run it. On a CPU that cannot (AVX2 only: Zen 3), a kernel is built for
this CPU instead, where its template runs here, else the test is skipped with the reason. Tests of a kernel that
needs one ISA feature say so with `requires_cpu_flags`."""

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
    """The kernel built for MCPU, where this CPU can run MCPU's code; elsewhere (an AVX2 CPU) built for this CPU,
    where its template runs here (built_here). An `executable` given (built for MCPU) is skipped where this CPU
    cannot run it."""
    if executable is None and missing_cpu_flags(*MCPU_FLAGS):
        return built_here(workload, config)
    if executable is None:
        executable = build_for_mcpu(workload, config)
    skip_unless_cpu_has()
    return artifacts.compiled(workload, config, executable)


@cache
def _host():
    from autotile.db.device import current_device

    return current_device("tvm", threads=2)


@cache
def _builder(emulate_amx: bool):
    """A build worker for the session (one per AMX emulation setting, which tests switch): an instruction LLVM
    cannot lower for this CPU aborts it, not pytest."""
    import atexit

    from autotile.codegen.tvm.amx_permission import EMULATE_ENV
    from autotile.search.worker import Worker

    worker = Worker({EMULATE_ENV: "1" if emulate_amx else "0"}, warm_imports=("tvm",))
    atexit.register(worker.close)
    return worker


def built_here(workload, config) -> CompiledKernel:
    """The kernel built for this CPU (its mcpu and features) in a worker process, then loaded here. Skipped where
    its template does not run on this CPU, or the config takes a code path that MCPU's space offers and this CPU's
    does not (gemm.lowp's vdpbf16ps mode without AVX512_BF16); a build that fails otherwise fails the test: the
    product would build it here."""
    from autotile.codegen.tvm.amx_permission import emulated
    from autotile.ops import encode_config, template_of_config
    from autotile.paths import kernel_cache_dir
    from autotile.search.measure import DEFAULT_BUILDER
    from autotile.search.worker import WorkerFailure

    device = _host()
    fingerprint, mcpu = device.fingerprint, device.fingerprint["mcpu"]
    template = template_of_config(workload, config)
    if not template.applies_to(workload, fingerprint):
        pytest.skip(f"{template.name} does not run on this CPU ({mcpu})")
    here = template.space_for(workload, fingerprint).domains
    there = template.space_for(workload, {"flags": list(MCPU_FLAGS), "mcpu": MCPU, "threads": 2}).domains
    for knob, value in config.to_dict().items():  # a code path (a name or a switch) offered on MCPU, not here
        if isinstance(value, (str, bool)) and value in there.get(knob, ()) and value not in here.get(knob, ()):
            pytest.skip(f"{template.name} offers {knob}={value!r} only on other CPUs than this one ({mcpu})")
    mcpu, threads, mattr = artifacts.target_of(device)
    try:
        path, _ = _builder(emulated()).call("autotile.search.measure:build_task", DEFAULT_BUILDER,
                                            workload.to_dict(), encode_config(workload, config), device.key, mcpu,
                                            threads, str(kernel_cache_dir()), mattr, timeout=600)
    except WorkerFailure as failure:
        pytest.fail(f"{workload.key} {config.key}: {template.name} runs on {mcpu} but did not build for it: {failure}")
    return artifacts.load(workload, config, path)


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
