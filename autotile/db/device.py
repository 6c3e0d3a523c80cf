"""The device a kernel is tuned for: a canonical key and the full fingerprint behind it.

`model name` says only "AMD EPYC" on these machines and cannot tell Zen 4 from Zen 5, so the
CPU key is built from LLVM's mcpu, the cpu family/model numbers, the ISA flags kernels depend
on, and the core and thread counts kernels run with.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from autotile.errors import AutotileError

KERNEL_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "sse4_2")
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


def _cache_sizes() -> dict:
    sizes = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind in ("Data", "Unified"):
            sizes[f"l{level}"] = size
    return sizes


@cache
def _static_cpu_facts() -> dict:
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
        "physical_cores": physical,
        "logical_cpus": os.cpu_count() or physical,
        "caches": _cache_sizes(),
    }


def cpu_fingerprint(threads: int | None = None) -> dict:
    facts = dict(_static_cpu_facts())
    if threads is None:
        env = os.environ.get("TVM_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else facts["physical_cores"]
    facts["threads"] = int(threads)
    return facts


def cuda_fingerprint(index: int = 0) -> dict | None:
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
    key: str
    fingerprint: dict

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
    if backend == "triton":
        return Device.cuda()
    return Device.cpu(threads)
