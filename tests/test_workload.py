import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autotile.errors import AutotileError
from autotile.ir import GemmWorkload, dtype
from autotile.ir.dtypes import DTYPES
from autotile.ir.reference import compare, gemm_reference, random_inputs, tolerance


def test_key_is_readable_and_canonical():
    w = GemmWorkload(512, 768, 256, epilogue="Bias, GELU")
    assert w.key == "gemm_b1_512x768x256_float32_nn_bias+gelu"
    assert GemmWorkload(512, 768, 256, epilogue=("bias", "gelu")).key == w.key
    assert GemmWorkload(512, 768, 256, dtype="fp32", epilogue=["bias", "gelu"]) == w
    assert GemmWorkload(2, 3, 4, batch=5, trans_b=True, epilogue="relu,cast:bf16").key == \
        "gemm_b5_2x3x4_float32_nt_relu+cast-bfloat16"


def test_a_layernorm_prologue_names_its_eps_and_adds_its_scale_and_shift():
    w = GemmWorkload(128, 2304, 768, trans_b=True, const_b=True, epilogue="bias", prologue="layernorm", eps=1e-6)
    assert w.key == "gemm_b1_128x2304x768_float32_nt_bias_constB_layernorm-eps1e-06"
    assert list(w.operand_shapes()) == ["A", "B", "ln_weight", "ln_bias", "bias", "C"]
    assert w.operand_shapes()["ln_weight"] == (768,) and GemmWorkload.from_dict(w.to_dict()) == w
    assert GemmWorkload(2, 3, 4, eps=0.5).key == GemmWorkload(2, 3, 4).key  # eps means nothing without it


def test_key_is_stable_across_processes():
    code = ("from autotile.ir import GemmWorkload;"
            "print(GemmWorkload(17, 33, 65, batch=3, trans_a=True, epilogue='bias,silu,residual').key)")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout.strip() for seed in (1, 2)}
    assert outputs == {GemmWorkload(17, 33, 65, batch=3, trans_a=True, epilogue="bias,silu,residual").key}


@given(st.integers(1, 4096), st.integers(1, 4096), st.integers(1, 4096), st.integers(1, 8),
       st.lists(st.sampled_from(["bias", "relu", "gelu", "gelu_tanh", "silu", "residual"]), unique=True, max_size=4))
def test_dict_round_trip(m, n, k, batch, epilogue):
    w = GemmWorkload(m, n, k, batch=batch, epilogue=epilogue)
    assert GemmWorkload.from_dict(w.to_dict()) == w
    assert GemmWorkload.from_dict(w.to_dict()).key == w.key


@pytest.mark.parametrize("kwargs, message", [
    (dict(m=0, n=1, k=1), "M must be a positive integer"),
    (dict(m=1, n=-3, k=1), "N must be a positive integer"),
    (dict(m=1, n=1, k=2.5), "K must be a positive integer"),
    (dict(m=1, n=1, k="8"), "K must be a positive integer"),
    (dict(m=1, n=1, k=1, batch=0), "batch must be a positive integer"),
    (dict(m=1, n=1, k=1, dtype="float12"), "unknown dtype 'float12'"),
    (dict(m=1, n=1, k=1, dtype="int8"), "not supported by the GEMM templates yet"),
    (dict(m=1, n=1, k=1, epilogue="bias,swish"), "unknown epilogue op 'swish'"),
    (dict(m=1, n=1, k=1, epilogue="cast:float16,relu"), "cast must be the last"),
    (dict(m=1, n=1, k=1, epilogue="bias,bias"), "given twice"),
    (dict(m=1, n=1, k=1, prologue="rmsnorm"), "prologue must be 'layernorm' or empty"),
    (dict(m=1, n=1, k=1, batch=2, prologue="layernorm"), "single row-major A: batch 1 and trans_a false"),
    (dict(m=1, n=1, k=1, trans_a=True, prologue="layernorm"), "single row-major A"),
    (dict(m=1, n=1, k=1, prologue="layernorm", eps=0.0), r"eps must be a number in \(0, 1\), got 0.0"),
    (dict(m=1, n=1, k=1, prologue="layernorm", eps="1e-5"), "eps must be a number"),
])
def test_validation_errors_name_the_problem(kwargs, message):
    with pytest.raises(AutotileError, match=message):
        GemmWorkload(**kwargs)


def test_operand_shape_mismatch_is_a_clear_error():
    import torch

    w = GemmWorkload(4, 5, 6, epilogue="bias")
    with pytest.raises(AutotileError, match=r"operand B has shape \(5, 6\), expected \(6, 5\)"):
        w.check_operands([torch.zeros(4, 6), torch.zeros(5, 6), torch.zeros(5), torch.zeros(4, 5)])


def test_dtype_table_admits_the_low_precision_types():
    for name in ["float16", "bfloat16", "int8", "int4", "float8_e4m3", "float8_e5m2"]:
        assert name in DTYPES
    assert dtype("e4m3").numpy == "float8_e4m3fn"
    assert dtype("fp8_e5m2").name == "float8_e5m2"


def test_tolerance_catches_a_dropped_k_tile():
    w = GemmWorkload(32, 32, 512)
    a, b = random_inputs(w, 0)
    ref = gemm_reference(w, a, b)
    dropped = (a[:, 64:].double() @ b[64:].double()).float()  # the first 64-wide K tile lost
    assert compare(w, (a @ b), ref).ok
    verdict = compare(w, dropped, ref)
    assert not verdict.ok and "mismatch" in verdict.reason
    nan_out = (a @ b).clone()
    nan_out[3, 4] = float("nan")
    assert "not written" in compare(w, nan_out, ref).reason
    assert tolerance("int8", 512) == (0.0, 0.0)


def test_shared_operand_is_part_of_the_key_and_needs_a_batch():
    w = GemmWorkload(8, 16, 4, batch=4, broadcast="b")
    assert w.key == "gemm_b4_8x16x4_float32_nn_none_sharedB"
    assert w.operand_shapes() == {"A": (4, 8, 4), "B": (4, 16), "C": (4, 8, 16)}
    assert GemmWorkload(8, 16, 4, broadcast="b") == GemmWorkload(8, 16, 4)  # one batch: nothing shared
    assert GemmWorkload.from_dict(w.to_dict()) == w
    with pytest.raises(AutotileError, match="broadcast must be 'a', 'b'"):
        GemmWorkload(8, 16, 4, batch=2, broadcast="c")
