"""Backend selection, and GPU measurement on a machine without a GPU: clear errors, CPU paths unchanged, and
the measurer's worker path for Triton (compile in a build worker, refuse to run without a GPU). Where this
machine has a GPU, "no GPU" is what torch is made to see (torch.cuda.is_available patched, or no visible device)."""

import pytest
import torch

from autotile.backends import resolve
from autotile.codegen.triton.gpu import require_cuda
from autotile.codegen.triton.launch import TritonKernel
from autotile.db.device import Device
from autotile.errors import AutotileError
from autotile.ops import space_for, triton_program
from autotile.ops.attention.workload import AttentionWorkload
from autotile.ops.conv2d.workload import Conv2dWorkload
from autotile.ops.gemm.workload import GemmWorkload
from autotile.ops.qgemm.workload import QGemmWorkload
from autotile.search.measure import TritonMeasurer


def resolve_backend(name: str) -> str:
    return resolve(name).name


H100 = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "capability": "sm_90", "sms": 132, "memory_gib": 79.1}


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_triton_exactly_where_torch_sees_a_gpu():
    assert resolve_backend("auto") == ("triton" if torch.cuda.is_available() else "tvm")
    assert resolve_backend("tvm") == "tvm"


def test_backend_selection_without_gpu(no_gpu):
    assert resolve_backend("auto") == "tvm"
    assert resolve_backend("tvm") == "tvm"
    with pytest.raises(AutotileError, match="needs a CUDA GPU"):
        resolve_backend("triton")
    with pytest.raises(AutotileError, match="unknown backend"):
        resolve_backend("cuda")


def test_cuda_devices_get_triton_spaces():
    for workload in (GemmWorkload(64, 64, 64), AttentionWorkload(1, 2, 64, 64), QGemmWorkload(16, 64, 64),
                     Conv2dWorkload(1, 8, 8, 8, 8, 3, 3, layout="nhwc")):
        gpu_space = space_for(workload, H100)
        assert gpu_space.template == f"{workload.op}.triton"
        assert gpu_space.arch == 90 and gpu_space.sms == 132
        assert not space_for(workload).template.endswith(".triton")  # CPU spaces unchanged


def test_triton_kernel_on_cpu_tensors_says_why(no_gpu):
    workload = GemmWorkload(32, 32, 32)
    space = space_for(workload, H100)
    kernel = TritonKernel(workload, space.default(), triton_program(workload, space.default()))
    with pytest.raises(AutotileError, match="TRITON_INTERPRET"):
        kernel(torch.randn(32, 32), torch.randn(32, 32), out=torch.empty(32, 32))
    with pytest.raises(AutotileError, match="no CUDA GPU"):
        require_cuda()


def test_triton_measurer_compiles_then_refuses_to_run_without_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the measurer's worker processes see no GPU
    device = Device("cuda-nvidia_h100_80gb_hbm3-sm_90-sms132", H100)
    workload = GemmWorkload(256, 256, 1024, epilogue="bias")
    space = space_for(workload, H100)
    fits = space.canonical(space.config_type(32, 32, 32, 8, 1, 4, 2))
    too_big = space.config_type(128, 128, 128, 8, 1, 8, 5)  # 4 stages of 128 KiB operand tiles: > 227 KiB
    with TritonMeasurer(device, build_workers=1) as measurer:
        built_ok, built_big = measurer.build(workload, [fits, space.canonical(too_big)])
        assert isinstance(built_ok, tuple) and len(built_ok[0]) == 64  # the program's key
        assert "does not fit sm_90" in str(built_big) or "compile failed" in str(built_big)
        [result] = measurer.measure(workload, [fits])
    assert not result.ok and "no CUDA GPU" in result.error
