"""The LLVM target's features come from the CPU's flags, not from its mcpu name alone, and a build that LLVM
aborts is contained: the caller gets LLVM's own message, never a dead process."""

import pytest
import torch
import tvm

from autotile.codegen.tvm.build import CompiledKernel, llvm_target
from autotile.db.device import LLVM_FEATURES, Device, cpu_fingerprint, device_key, llvm_mattr
from autotile.errors import KernelBuildError
from autotile.ir.reference import verify
from autotile.ops import space_for
from autotile.ops.qgemm.workload import QGemmWorkload
from autotile.search.artifacts import kernel_path, target_of
from autotile.search.isolated import load_kernel
from autotile.search.worker import Worker, WorkerFailure

# /proc/cpuinfo flags of the machines the project runs on, as read off them (kernel-relevant ones only).
ZEN4_FLAGS = ["sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "avx512f", "avx512dq", "avx512cd",
              "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_vnni", "avx512_bitalg",
              "avx512_vpopcntdq", "avx512_bf16"]
ZEN5_FLAGS = [*ZEN4_FLAGS, "avx_vnni"]
XEON_AMX_FLAGS = [*ZEN4_FLAGS, "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"]
MACHINES = {"zen4": ("znver4", 25, 17, ZEN4_FLAGS), "zen5": ("znver5", 26, 2, ZEN5_FLAGS),
            "xeon-amx": ("rocketlake", 6, 167, XEON_AMX_FLAGS)}

BF16_QGEMM = QGemmWorkload(16, 64, 256, weight_dtype="int4", act_dtype="bfloat16", group_size=128)


def has(target, feature: str) -> bool:
    return bool(tvm.target.codegen.llvm_cpu_has_features(feature, target))


def test_every_mapped_feature_name_is_one_llvm_knows():
    """LLVM ignores a misspelled feature with a warning; switched on by name, each must then be present."""
    target = llvm_target("x86-64", 1, ["+" + name for name in LLVM_FEATURES.values()])
    assert [name for name in LLVM_FEATURES.values() if not has(target, name)] == []
    assert not has(llvm_target("x86-64", 1), "avx512bf16")  # and the check itself can fail


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_target_has_exactly_the_cpus_features_whatever_its_mcpu(machine):
    mcpu, _, _, flags = MACHINES[machine]
    target = llvm_target(mcpu, 2, llvm_mattr(flags))
    for flag, name in LLVM_FEATURES.items():
        assert has(target, name) == (flag in flags), (machine, flag, name)


def test_xeon_reported_as_rocketlake_gets_its_real_isa():
    """The name alone lacks avx512bf16 and AMX (so LLVM would abort on vdpbf16ps); the flags add them."""
    bare = llvm_target("rocketlake", 2)
    assert not has(bare, "avx512bf16") and not has(bare, "amx-tile")
    full = llvm_target("rocketlake", 2, llvm_mattr(XEON_AMX_FLAGS))
    assert all(has(full, f) for f in ("avx512bf16", "avx512fp16", "avxvnni", "amx-tile", "amx-int8", "amx-bf16"))


def test_this_machines_fingerprint_carries_its_mattr():
    fp = cpu_fingerprint()
    assert fp["mattr"] == llvm_mattr(fp["flags"]) and len(fp["mattr"]) == len(LLVM_FEATURES)
    target = llvm_target(fp["mcpu"], fp["threads"], fp["mattr"])
    assert all(has(target, LLVM_FEATURES[f]) for f in fp["flags"])


def test_device_keys_still_tell_the_machines_apart():
    keys = {device_key({"kind": "cpu", "mcpu": mcpu, "vendor": vendor, "family": family, "model": model,
                        "flags": flags, "physical_cores": 2, "threads": 2})
            for (mcpu, family, model, flags), vendor in zip(MACHINES.values(), ("AuthenticAMD",) * 2 + ("Intel",))}
    assert len(keys) == 3
    # A key stored before the feature mapping existed is unchanged: it is built from the same fields.
    zen4 = {"kind": "cpu", "mcpu": "znver4", "vendor": "AuthenticAMD", "family": 25, "model": 17,
            "flags": ["avx2", "avx512_bf16", "avx512_vnni", "avx512f", "fma"], "physical_cores": 2, "threads": 2}
    assert device_key(zen4) == "cpu-znver4-amd-f25m17-avx2+fma+avx512f+avx512_vnni+avx512_bf16-c2t2"


def test_the_space_offers_vdpbf16ps_only_where_the_target_has_it():
    for mcpu, _, _, flags in MACHINES.values():
        fp = {"kind": "cpu", "flags": flags}
        offered = space_for(BF16_QGEMM, fp).default().bf16_dot
        assert offered == has(llvm_target(mcpu, 2, llvm_mattr(flags)), "avx512bf16")
    assert not space_for(BF16_QGEMM, {"kind": "cpu", "flags": ["avx2", "fma", "avx512f"]}).default().bf16_dot


def as_if(mcpu: str, mattr=None) -> Device:
    """This machine's device, as if LLVM had named its CPU `mcpu` (the Xeon's case), with its real flags'
    features or with the given ones."""
    fp = {**cpu_fingerprint(), "mcpu": mcpu}
    if mattr is not None:
        fp["mattr"] = mattr
    return Device(device_key(fp), fp)


requires_bf16 = pytest.mark.skipif("avx512_bf16" not in cpu_fingerprint()["flags"],
                                   reason="this CPU has no avx512_bf16: the kernel could be built but not run")


@requires_bf16
def test_bf16_kernel_for_rocketlake_builds_verifies_and_runs(tmp_path, monkeypatch):
    """The Xeon's abort, reproduced on any AVX512-BF16 machine: mcpu rocketlake, the CPU's own features."""
    monkeypatch.setenv("AUTOTILE_CACHE_DIR", str(tmp_path))
    device = as_if("rocketlake")
    config = space_for(BF16_QGEMM, device.fingerprint).default()
    assert config.bf16_dot
    kernel = load_kernel(device, BF16_QGEMM, config)
    verdict = verify(BF16_QGEMM, kernel)
    assert verdict.ok, verdict.reason
    assert isinstance(kernel, CompiledKernel)


def test_an_llvm_abort_is_an_error_with_llvms_message_not_a_dead_process(tmp_path, monkeypatch):
    """Without the features, LLVM aborts on vdpbf16ps: the caller gets LLVM's reason, and lives on."""
    monkeypatch.setenv("AUTOTILE_CACHE_DIR", str(tmp_path))
    device = as_if("rocketlake", mattr=[])
    config = space_for(BF16_QGEMM, {"kind": "cpu", "flags": XEON_AMX_FLAGS}).default()
    assert config.bf16_dot
    with pytest.raises(KernelBuildError, match=r"killed by SIGABRT.*LLVM ERROR: Do not know how to split"):
        load_kernel(device, BF16_QGEMM, config)
    mcpu, _, mattr = target_of(device)
    assert not kernel_path(device.key, BF16_QGEMM, config, mcpu, mattr).exists()  # nothing half-built to load


def test_a_cached_library_loads_without_a_worker(tmp_path, monkeypatch):
    import autotile.search.isolated as isolated

    monkeypatch.setenv("AUTOTILE_CACHE_DIR", str(tmp_path))
    w = QGemmWorkload(4, 16, 64, weight_dtype="int8", act_dtype="float32", group_size=32)
    device = Device.cpu()
    config = space_for(w, device.fingerprint).default()
    load_kernel(device, w, config)  # built and verified in the worker
    monkeypatch.setattr(isolated, "_builder", lambda: pytest.fail("a cached kernel started a worker"))
    kernel = load_kernel(device, w, config)
    assert verify(w, kernel).ok


def test_a_crashed_worker_reports_its_signal_and_last_words():
    worker = Worker(warm_imports=())
    try:
        with pytest.raises(WorkerFailure, match=r"killed by SIGABRT\): LLVM ERROR: out of luck"):
            worker.call("broken_kernels:abort_saying", "LLVM ERROR: out of luck", timeout=30)
        with pytest.raises(WorkerFailure, match=r"crashed \(exit code 3\): first words \| last words$"):
            worker.call("broken_kernels:exit_saying", "first words\nlast words", 3, timeout=30)
        assert worker.call("operator:add", 2, 3, timeout=30) == 5  # replaced, and serving again
    finally:
        worker.close()


def test_kernel_runs_on_torch_tensors_after_a_contained_build(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTILE_CACHE_DIR", str(tmp_path))
    from autotile.ir import GemmWorkload

    w = GemmWorkload(7, 9, 5, epilogue="bias")
    device = Device.cpu()
    kernel = load_kernel(device, w, space_for(w, device.fingerprint).default())
    a, b, bias = torch.randn(7, 5), torch.randn(5, 9), torch.randn(9)
    torch.testing.assert_close(kernel(a, b, bias).double(), a.double() @ b.double() + bias.double(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(any(f not in cpu_fingerprint()["flags"] for f in ZEN4_FLAGS if f != "avx512_bf16"),
                    reason="this CPU lacks AVX-512 features of an Ice Lake: the kernel could be built but not run")
def test_bf16_activations_on_a_cpu_without_avx512_bf16_fall_back_to_a_kernel_it_can_run(tmp_path, monkeypatch):
    """An AVX-512 CPU without avx512_bf16 (an Ice Lake): the space offers no vdpbf16ps, and what it does offer
    builds for that target (no LLVM abort) and computes the same bf16-rounded result."""
    monkeypatch.setenv("AUTOTILE_CACHE_DIR", str(tmp_path))
    flags = [f for f in ZEN4_FLAGS if f != "avx512_bf16"]
    fp = {**cpu_fingerprint(), "mcpu": "icelake-server", "flags": flags, "mattr": llvm_mattr(flags)}
    device = Device(device_key(fp), fp)
    config = space_for(BF16_QGEMM, fp).default()
    assert not config.bf16_dot
    kernel = load_kernel(device, BF16_QGEMM, config)
    verdict = verify(BF16_QGEMM, kernel)
    assert verdict.ok, verdict.reason
