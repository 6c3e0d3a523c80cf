"""Weight-only quantized GEMM: real TVM builds for every bit width and scheme, checked against the
exact (float64 dequantize, then GEMM) reference."""

import random

import pytest
import torch

import autotile
from autotile.codegen.tvm.build import CompiledKernel, build
from autotile.errors import AutotileError
from autotile.ir.qgemm import QGemmWorkload
from autotile.ir.quant import quantize_int
from autotile.ir.reference import verify
from autotile.kernels import space_for, workload_from_dict

MCPU = "znver4"


def check(workload, config):
    kernel = CompiledKernel(workload, config, build(workload, config, MCPU, 2))
    verdict = verify(workload, kernel)
    assert verdict.ok, f"{workload.key} {config.key}: {verdict.reason}"
    return kernel


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("asymmetric", [False, True])
def test_every_bit_width_and_scheme(bits, asymmetric):
    group = [32, 64, 128, None][bits % 4]
    w = QGemmWorkload(7, 45, 150, weight_dtype=f"int{bits}", group_size=group, asymmetric=asymmetric,
                      epilogue="bias,gelu" if asymmetric else "")
    check(w, space_for(w).default())


@pytest.mark.parametrize("seed", range(3))
def test_sampled_configs(seed):
    w = QGemmWorkload([1, 16, 33][seed], 70, 130, weight_dtype="int4", group_size=64, epilogue="residual")
    space = space_for(w)
    config = space.sample(random.Random(seed))
    assert config.pack_b  # the weight is only ever dequantized per block
    check(w, config)


def test_kernel_matches_a_user_quantized_linear():
    """The documented flow: quantize a float weight with quantize_int, call the kernel, compare with
    torch's linear on the dequantized weight."""
    w = QGemmWorkload(3, 40, 96, weight_dtype="int4", group_size=32)
    weight, x = torch.randn(40, 96), torch.randn(3, 96)
    q = quantize_int(weight, 4, 32)
    kernel = check(w, space_for(w).default())
    out = kernel(x, q.packed, q.scales)
    torch.testing.assert_close(out, torch.nn.functional.linear(x, q.dequantize()), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weight_dtype="int9"), "unknown dtype 'int9'"),
    (dict(weight_dtype="float16"), "not supported for weight-only GEMM"),
    (dict(act_dtype="bfloat16"), "activation dtype 'bfloat16' is not supported"),
    (dict(group_size=0), "group size must be a positive integer"),
    (dict(epilogue="cast:float16"), "cast epilogue is not supported"),
])
def test_validation_errors(kwargs, message):
    with pytest.raises(AutotileError, match=message):
        QGemmWorkload(4, 8, 64, **kwargs)


def test_key_and_round_trip():
    w = QGemmWorkload(1, 4096, 4096, weight_dtype="i4", group_size=128, asymmetric=True)
    assert w.key == "qgemm_1x4096x4096_float32_int4_g128_asym_none"
    assert workload_from_dict(w.to_dict()) == w
    assert QGemmWorkload(2, 8, 64, group_size=128).group_size is None  # one group: per channel
    assert w.weight_bytes == 4096 * 2048 + 2 * 4 * 4096 * 32


def test_short_tuning_run_records_verified_kernels(tmp_path):
    w = QGemmWorkload(9, 40, 64, weight_dtype="int3", group_size=32, asymmetric=True)
    result = autotile.tune(w, trials=4, db=tmp_path / "q.db")
    assert result.verified and result.trials == 4 and result.config["pack_b"]
    kernel = autotile.kernel(w, db=tmp_path / "q.db")
    assert verify(w, kernel).ok


# --- W8A8 ------------------------------------------------------------------------------------------

def w8a8(m, n, k, epilogue=""):
    return QGemmWorkload(m, n, k, weight_dtype="int8", act_dtype="int8", epilogue=epilogue)


@pytest.mark.parametrize("shape, epilogue", [((1, 16, 4), ""), ((5, 40, 70), "bias,gelu"),
                                             ((33, 100, 129), "residual,relu"), ((64, 48, 256), "bias")])
def test_w8a8_matches_the_exact_reference(shape, epilogue):
    w = w8a8(*shape, epilogue)
    space = space_for(w)
    check(w, space.default())
    check(w, space.sample(random.Random(sum(shape))))


def test_w8a8_uses_vnni_dot_products():
    """The int32 tiles come from vpdpbusd (compiled for an explicit AVX512-VNNI mcpu, any host)."""
    from autotile.codegen.tvm.build import build

    w = w8a8(32, 64, 128)
    asm = build(w, space_for(w).default(), MCPU, 2).mod.inspect_source("s")
    assert asm.count("vpdpbusd") >= 4


def test_w8a8_reference_quantizes_rows_like_the_kernel_documents():
    """Dynamic per-row int8: the reference result equals quantize_rows_int8 then an exact int GEMM."""
    from autotile.ir.quant import quantize_rows_int8

    w = w8a8(4, 8, 32)
    a, weight, scales = w.random_inputs(0)
    qa, scale_a = quantize_rows_int8(a)
    expected = (qa.double() @ weight.double().t()) * scale_a.double()[:, None] * scales.double()
    assert torch.equal(w.reference(a, weight, scales), expected)
    assert torch.allclose(expected.float(), a @ (weight.float() * scales[:, None]).t(), rtol=0.05, atol=0.5)


def test_w8a8_validation():
    with pytest.raises(AutotileError, match="int8 activations need int8 weights"):
        QGemmWorkload(4, 8, 64, weight_dtype="int4", act_dtype="int8")
    assert w8a8(4, 8, 64).key == "qgemm_4x8x64_w8a8_none"


def test_tuning_after_another_template_of_the_same_op(tmp_path):
    """W8A8 and weight-only records share the op 'qgemm' but not a feature layout: the cost model's
    history must only take records of this workload's template."""
    db = tmp_path / "mixed.db"
    assert autotile.tune(w8a8(4, 32, 64), trials=2, db=db).verified
    w = QGemmWorkload(4, 32, 64, weight_dtype="int4", group_size=32)
    result = autotile.tune(w, trials=10, db=db)  # > one batch, so the cost model is fitted on the history
    assert result.verified and result.trials == 10
