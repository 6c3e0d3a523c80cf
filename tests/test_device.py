import json
import subprocess
import sys

import pytest

from autotile.db.device import Device, cpu_fingerprint, cuda_fingerprint, current_device, device_key
from autotile.errors import AutotileError


def test_cpu_fingerprint_and_key():
    fp = cpu_fingerprint()
    for field in ("mcpu", "vendor", "family", "model", "flags", "physical_cores", "logical_cpus", "threads"):
        assert field in fp
    assert fp["flags"] == sorted(fp["flags"]) and all(isinstance(v, int) for v in fp["caches"].values())
    key = device_key(fp)
    assert key.startswith(f"cpu-{fp['mcpu']}-") and f"f{fp['family']}m{fp['model']}" in key
    assert key.endswith(f"c{fp['physical_cores']}t{fp['threads']}") and key == key.lower() and " " not in key
    fp["flags"].append("mutated")  # a caller's copy: the next fingerprint is untouched
    assert cpu_fingerprint() == Device.cpu().fingerprint and device_key(cpu_fingerprint()) == key
    assert hash(Device.cpu()) == hash(Device.cpu()) and Device.cpu().kind == "cpu"


def test_key_tells_cpu_generations_and_thread_counts_apart():
    base = {"kind": "cpu", "mcpu": "znver4", "vendor": "AuthenticAMD", "family": 25, "model": 17,
            "flags": ["avx2", "avx512f"], "physical_cores": 2, "threads": 2}
    zen5 = {**base, "mcpu": "znver5", "family": 26, "model": 2}
    keys = {device_key(base), device_key(zen5), device_key({**base, "threads": 1}),
            device_key({**base, "flags": ["avx2"]})}
    assert len(keys) == 4
    assert device_key(base) == "cpu-znver4-amd-f25m17-avx2+avx512f-c2t2"


def test_threads_follow_tvm_num_threads(monkeypatch):
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    assert cpu_fingerprint()["threads"] == 1
    assert cpu_fingerprint(threads=3)["threads"] == 3
    assert current_device("tvm", threads=4).key.endswith("t4")
    monkeypatch.setenv("TVM_NUM_THREADS", "two")
    with pytest.raises(AutotileError, match="TVM_NUM_THREADS"):
        cpu_fingerprint()
    with pytest.raises(AutotileError, match="threads"):
        cpu_fingerprint(threads=0)


def test_key_is_stable_across_processes():
    code = "from autotile.db.device import Device; print(Device.cpu().to_json())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    other = json.loads(out)
    here = Device.cpu()
    assert other["key"] == here.key and other["fingerprint"] == here.fingerprint


def test_gpu_key_is_model_capability_and_sms():
    cuda = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "capability": "sm_90", "sms": 132, "memory_gib": 79.1}
    assert device_key(cuda) == "cuda-nvidia_h100_80gb_hbm3-sm_90-sms132"
    with pytest.raises(AutotileError, match="unknown backend"):
        current_device("cuda")


def test_the_gpu_torch_sees_is_the_triton_device():
    import torch

    fp = cuda_fingerprint()
    if not torch.cuda.is_available():
        assert fp is None
        with pytest.raises(AutotileError, match="no CUDA GPU"):
            current_device("triton")
        return
    major, minor = torch.cuda.get_device_capability(0)
    assert fp["kind"] == "cuda" and fp["capability"] == f"sm_{major}{minor}" and fp["sms"] > 0
    device = current_device("triton")
    assert device.key == device_key(fp) and device.key.startswith("cuda-") and device.kind == "cuda"
    assert current_device("tvm").kind == "cpu"  # the CPU stays a device of its own


def test_without_a_gpu_the_triton_device_is_a_clear_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    assert cuda_fingerprint() is None
    with pytest.raises(AutotileError, match="no CUDA GPU"):
        current_device("triton")


def test_hidden_flags_make_another_device_whose_kernels_lack_them(tmp_path, monkeypatch):
    """AUTOTILE_HIDE_CPU_FLAGS: this CPU as a lesser machine, with a key of its own and kernels without the hidden
    ISA: AVX-512 hidden where the CPU has it (an AVX2 machine), else FMA (an AVX2 machine without FMA)."""
    import torch

    import autotile
    from autotile.ir import GemmWorkload
    from autotile.search.tuner import TuneOptions

    here = Device.cpu()
    wide = "avx512f" in here.fingerprint["flags"]
    hide, flag, llvm_feature, instruction = (("avx512*, amx*", "avx512f", "avx512f", "zmm") if wide
                                             else ("fma", "fma", "fma", "vfmadd"))
    monkeypatch.setenv("AUTOTILE_HIDE_CPU_FLAGS", hide)
    masked = Device.cpu()
    fp = masked.fingerprint
    assert flag not in fp["flags"] and not any(f.startswith(("avx512", "amx")) for f in fp["flags"])
    assert f"-{llvm_feature}" in fp["mattr"] and "+avx2" in fp["mattr"]
    assert flag in fp["hidden_flags"] and masked.key != here.key
    assert flag not in masked.key.split("-")[4].split("+")  # the key's flag part

    w = GemmWorkload(7, 33, 19)
    with autotile.Session(tmp_path / "lesser.db", "tvm") as session:  # its own: the process-wide one keeps its device
        assert session.device.key == masked.key
        result = session.tune(w, TuneOptions(trials=2))
        assert result.verified
        assert {r["device"] for r in session.db.measurements(workload=w.key)} == {masked.key}
        kern = session.kernel(w)
    code = subprocess.run(["objdump", "-d", str(kern.path)], capture_output=True, text=True, check=True).stdout
    assert "ymm" in code and instruction not in code
    base = torch.randn(1 + 7 * 19)
    a = base[1:].view(7, 19)  # at a storage offset: misaligned for any vector width
    b = torch.randn(19, 33)
    torch.testing.assert_close(kern(a, b).double(), a.double() @ b.double(), rtol=1e-5, atol=1e-4)

    monkeypatch.setenv("AUTOTILE_HIDE_CPU_FLAGS", "avx1024*")
    with pytest.raises(AutotileError, match="avx1024"):
        Device.cpu()
