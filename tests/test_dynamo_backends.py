"""Which backend's kernels the torch.compile backend uses: the one that takes the inputs' device (TVM for CPU
tensors, Triton for CUDA tensors), or the one the `backend` option names. Triton is reached for real here, in a
subprocess whose Triton runs its kernels in the interpreter (TRITON_INTERPRET=1, no GPU needed), and checked
against float64 torch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import autotile
from autotile.backends import for_tensors
from autotile.dynamo.compile import kernel_backend
from autotile.dynamo.options import Options
from autotile.errors import AutotileError

TRITON_COMPILE = textwrap.dedent("""
    import json, sys, torch
    import torch.nn as nn
    import autotile
    from autotile.dynamo.counters import stats
    from autotile.dynamo.resolve import _RESOLVERS

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(23, 40), nn.GELU(), nn.Linear(40, 7)).eval()
    x = torch.randn(6, 24)[1:, 1:]  # odd sizes, a view at a storage offset
    with torch.no_grad():
        expected = model.double()(x.double())
        model.float()
        out = autotile.compile(model, backend=sys.argv[2], tuning="off", fallback="eager", db=sys.argv[1])(x)
    kernels = {w: type(l.kernel).__name__ for r in _RESOLVERS.values() for w, l in r._loaded.items()}
    print(json.dumps({"replaced": dict(stats.replaced), "kernels": kernels,
                      "error": (out.double() - expected).abs().max().item()}))
""")


def compile_in_subprocess(tmp_path, backend: str, interpret: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, "-c", TRITON_COMPILE, str(tmp_path / "t.db"), backend],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_triton_backend_runs_the_linears_of_a_compiled_model(tmp_path):
    result = compile_in_subprocess(tmp_path, "triton", interpret=True)
    assert result["replaced"] == {"gemm": 2}
    assert sorted(result["kernels"].values()) == ["TritonKernel", "TritonKernel"]
    assert result["error"] < 1e-4


def test_auto_follows_the_inputs_device_to_tvm_on_cpu_tensors(tmp_path):
    result = compile_in_subprocess(tmp_path, "auto", interpret=False)
    assert result["replaced"] == {"gemm": 2}
    assert sorted(result["kernels"].values()) == ["CompiledKernel", "CompiledKernel"]
    assert result["error"] < 1e-4


def test_backend_choice_from_inputs_and_options():
    cpu = [torch.zeros(2, 3), 5]  # a SymInt-like non-tensor input is ignored
    assert kernel_backend(cpu, Options()) == "tvm"
    assert kernel_backend(cpu, Options(backend="triton")) == "triton"
    assert for_tensors([torch.zeros(1)]).tensor_device == "cpu"
    with pytest.raises(AutotileError, match="no autotile backend runs kernels on meta tensors"):
        for_tensors([torch.zeros(1, device="meta")])
    with pytest.raises(AutotileError, match="option backend must be one of auto, tvm, triton"):
        Options(backend="cuda")


def test_the_python_api_follows_a_device_too(tmp_path):
    from autotile.api import backend_for_device
    from autotile.ops.gemm.workload import GemmWorkload

    assert [backend_for_device(d) for d in ("cpu", torch.zeros(1), "cuda:0", torch.device("cuda"))] == \
        ["tvm", "tvm", "triton", "triton"]
    with pytest.raises(AutotileError, match="'tpu' is no torch device"):
        backend_for_device("tpu")
    w = GemmWorkload(7, 13, 5)
    a, b = torch.randn(8, 5)[1:], torch.randn(5, 13)  # a view at an offset
    kern = autotile.kernel(w, db=tmp_path / "k.db", device=a)
    torch.testing.assert_close(kern(a, b).double(), a.double() @ b.double(), rtol=1e-5, atol=1e-5)
