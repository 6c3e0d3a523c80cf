"""The device a kernel is tuned for: a canonical key and the full fingerprint behind it.

`model name` says only "AMD EPYC" on these machines and cannot tell Zen 4 from Zen 5, so the
CPU key is built from LLVM's mcpu, the cpu family/model numbers, the ISA flags kernels depend
on, and the core and thread counts kernels run with.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from copy import deepcopy
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from autotile.errors import AutotileError

# /proc/cpuinfo's name of each ISA feature a kernel may use -> LLVM's name for it. The LLVM target is built from
# the CPU's mcpu *and* these flags: a hypervisor's model number can name an older generation than the CPU is
# (an AMX Xeon reports one LLVM calls `rocketlake`, which lacks avx512bf16), and LLVM aborts the process on an
# intrinsic its target cannot select. LLVM ignores an unknown feature with a mere warning, so
# tests/test_target_features.py checks every name here against LLVM itself.
LLVM_FEATURES = {
    "sse4_1": "sse4.1", "sse4_2": "sse4.2", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
    "bmi1": "bmi", "bmi2": "bmi2", "avx512f": "avx512f", "avx512dq": "avx512dq", "avx512cd": "avx512cd",
    "avx512bw": "avx512bw", "avx512vl": "avx512vl", "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi",
    "avx512_vbmi2": "avx512vbmi2", "avx512_vnni": "avx512vnni", "avx512_bitalg": "avx512bitalg",
    "avx512_vpopcntdq": "avx512vpopcntdq", "avx512_bf16": "avx512bf16", "avx512_fp16": "avx512fp16",
    "avx_vnni": "avxvnni", "amx_tile": "amx-tile", "amx_int8": "amx-int8", "amx_bf16": "amx-bf16",
    "amx_fp16": "amx-fp16",
}
KERNEL_FLAGS = tuple(LLVM_FEATURES)
# The flags that change which kernels are possible. avx512bw/vl and amx_int8/bf16 are left out: every
# CPU with avx512f / amx_tile that we tune on has them too, and adding them would only change keys
# already stored in databases.
KEY_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")


def _cpuinfo() -> list[dict]:
    processors, current = [], {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if not line.strip():
            if current:
                processors.append(current)
            current = {}
            continue
        name, _, value = line.partition(":")
        current[name.strip()] = value.strip()
    if current:
        processors.append(current)
    return processors


def cpu_flags() -> set[str]:
    """Every flag /proc/cpuinfo lists for cpu0 (without importing TVM)."""
    processors = _cpuinfo()
    return set(processors[0].get("flags", "").split()) if processors else set()


def _cache_sizes() -> dict:
    """Data/unified cache bytes per level of cpu0, e.g. {"l1": 32768, "l2": 1048576, ...}; {} if unreadable."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    sizes = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()  # "1024K"
            if kind in ("Data", "Unified"):
                sizes[f"l{level}"] = int(size.rstrip("KMG")) * units.get(size[-1], 1)
        except (OSError, ValueError, IndexError):  # optional facts: skip what this kernel does not expose
            continue
    return sizes


@cache
def _static_cpu_facts() -> dict:
    """Everything but the thread count; read once per process (importing tvm is slow)."""
    import tvm

    try:
        processors = _cpuinfo()
    except OSError:
        processors = [{}]
    first = processors[0] if processors else {}
    flags = set(first.get("flags", "").split())
    cores = {(p.get("physical id"), p.get("core id")) for p in processors if "core id" in p}
    if not cores:
        import psutil

        physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    else:
        physical = len(cores)
    return {
        "kind": "cpu",
        "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
        "vendor": first.get("vendor_id", "unknown"),
        "family": int(first.get("cpu family", 0) or 0),
        "model": int(first.get("model", 0) or 0),
        "model_name": first.get("model name", "unknown"),
        "flags": sorted(f for f in KERNEL_FLAGS if f in flags),
        "mattr": llvm_mattr(flags),
        "physical_cores": physical,
        "logical_cpus": os.cpu_count() or physical,
        "caches": _cache_sizes(),
    }


def llvm_mattr(flags) -> list[str]:
    """LLVM `mattr` for a CPU with these /proc/cpuinfo flags: each kernel feature on ("+avx512bf16") or off
    ("-amx-tile"), so the target has exactly the CPU's ISA whatever its mcpu name implies."""
    present = set(flags)
    return [("+" if flag in present else "-") + name for flag, name in LLVM_FEATURES.items()]


def cpu_fingerprint(threads: int | None = None) -> dict:
    """This CPU, and the thread count kernels run with: `threads`, else $TVM_NUM_THREADS, else physical cores."""
    facts = deepcopy(_static_cpu_facts())  # callers may mutate their copy; the cache stays intact
    if threads is None:
        env = os.environ.get("TVM_NUM_THREADS")
        if env is None:
            threads = facts["physical_cores"]
        elif env.strip().isdigit() and int(env) > 0:
            threads = int(env)
        else:
            raise AutotileError(f"TVM_NUM_THREADS must be a positive integer, got {env!r}")
    if int(threads) < 1:
        raise AutotileError(f"threads must be at least 1, got {threads!r}")
    facts["threads"] = int(threads)
    return _hide_flags(facts, os.environ.get("AUTOTILE_HIDE_CPU_FLAGS", ""))


def _hide_flags(facts: dict, spec: str) -> dict:
    """The CPU as if it lacked the kernel flags `spec` names (comma-separated fnmatch patterns, e.g. "avx512*,amx*"):
    an AVX2 machine's device, key and kernels on this one, for warm-start studies and for testing the AVX2 paths."""
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    if not patterns:
        return facts
    hidden = set()
    for pattern in patterns:
        matched = fnmatch.filter(KERNEL_FLAGS, pattern)
        if not matched:
            raise AutotileError(f"AUTOTILE_HIDE_CPU_FLAGS: {pattern!r} names no kernel flag; "
                                f"they are {', '.join(KERNEL_FLAGS)}")
        hidden.update(matched)
    facts["flags"] = [f for f in facts["flags"] if f not in hidden]
    facts["mattr"] = llvm_mattr(facts["flags"])
    facts["hidden_flags"] = sorted(hidden)
    return facts


def cuda_fingerprint(index: int = 0) -> dict | None:
    """GPU `index` as torch sees it; None when there is no CUDA GPU (or no torch)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    return {
        "kind": "cuda", "name": props.name, "capability": f"sm_{props.major}{props.minor}",
        "sms": props.multi_processor_count, "memory_gib": round(props.total_memory / 2**30, 1),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_.+]+", "_", text.lower()).strip("_")


def device_key(fp: dict) -> str:
    """Canonical and stable: values only, e.g. cpu-znver4-amd-f25m17-avx2+avx512f+...-c2t2."""
    if fp["kind"] == "cuda":
        return f"cuda-{_slug(fp['name'])}-{fp['capability']}-sms{fp['sms']}"
    vendor = {"authenticamd": "amd", "genuineintel": "intel"}.get(fp["vendor"].lower(), _slug(fp["vendor"]))
    flags = "+".join(f for f in KEY_FLAGS if f in fp["flags"]) or "noflags"
    return (f"cpu-{_slug(fp['mcpu'])}-{vendor}-f{fp['family']}m{fp['model']}-{flags}"
            f"-c{fp['physical_cores']}t{fp['threads']}")


@dataclass(frozen=True)
class Device:
    """A device key and the fingerprint it was built from (stored as JSON beside the key)."""

    key: str
    fingerprint: dict = field(hash=False)  # a dict cannot be hashed; the key determines it anyway

    @classmethod
    def cpu(cls, threads: int | None = None) -> Device:
        fp = cpu_fingerprint(threads)
        return cls(device_key(fp), fp)

    @classmethod
    def cuda(cls, index: int = 0) -> Device:
        fp = cuda_fingerprint(index)
        if fp is None:
            raise AutotileError("no CUDA GPU on this machine: the triton backend needs one")
        return cls(device_key(fp), fp)

    @property
    def kind(self) -> str:
        return self.fingerprint["kind"]

    @property
    def mcpu(self) -> str | None:
        return self.fingerprint.get("mcpu")

    def to_json(self) -> str:
        return json.dumps({"key": self.key, "fingerprint": self.fingerprint}, sort_keys=True)


def current_device(backend: str = "tvm", threads: int | None = None) -> Device:
    """The device a backend's kernels run on: the CPU for tvm, GPU 0 for triton."""
    if backend == "triton":
        return Device.cuda()
    if backend == "tvm":
        return Device.cpu(threads)
    raise AutotileError(f"unknown backend {backend!r}; expected 'tvm' or 'triton'")
