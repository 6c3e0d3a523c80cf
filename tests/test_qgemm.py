"""Weight-only quantized GEMM: real TVM builds for every bit width and scheme, checked against the
exact (float64 dequantize, then GEMM) reference."""

import random

import pytest
import torch
from tvm_kernels import MCPU, assembly, check, skip_unless_cpu_has

import autotile
from autotile.errors import AutotileError
from autotile.ir.reference import verify
from autotile.ops import space_for, workload_from_dict
from autotile.ops.qgemm.quant import quantize_int
from autotile.ops.qgemm.workload import QGemmWorkload


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
    (dict(act_dtype="float16"), "activation dtype 'float16' is not supported"),
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
    result = autotile.tune(w, trials=4, db=tmp_path / "q.db", backend="tvm")
    assert result.verified and result.trials == 4 and result.config["pack_b"]
    kernel = autotile.kernel(w, db=tmp_path / "q.db", backend="tvm")
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

    w = w8a8(32, 64, 128)
    asm = assembly(w, space_for(w).default())
    assert asm.count("vpdpbusd") >= 4


def test_w8a8_reference_quantizes_rows_like_the_kernel_documents():
    """Dynamic per-row int8: the reference result equals quantize_rows_int8 then an exact int GEMM."""
    from autotile.ops.qgemm.quant import quantize_rows_int8

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
    assert autotile.tune(w8a8(4, 32, 64), trials=2, db=db, backend="tvm").verified
    w = QGemmWorkload(4, 32, 64, weight_dtype="int4", group_size=32)
    result = autotile.tune(w, trials=10, db=db, backend="tvm")  # > one batch: the cost model is fitted on the history
    assert result.verified and result.trials == 10


# --- LLM.int8 outlier decomposition ----------------------------------------------------------------

@pytest.mark.parametrize("shape, epilogue", [((1, 16, 4), ""), ((5, 40, 70), "bias,gelu"),
                                             ((33, 50, 129), "residual,relu")])
def test_w8a8_outliers_match_the_exact_reference(shape, epilogue):
    w = QGemmWorkload(*shape, weight_dtype="int8", act_dtype="int8", epilogue=epilogue, outlier_threshold=6.0)
    space = space_for(w)
    check(w, space.default())
    check(w, space.sample(random.Random(sum(shape))))


def test_outlier_decomposition_is_llm_int8():
    """Outlier columns are computed in float with the dequantized weight, the rest in int8 with a row
    scale that ignores them: far closer to the float product than plain W8A8 on the same inputs."""
    from autotile.ops.qgemm.quant import outlier_columns, quantize_rows_int8

    w = QGemmWorkload(6, 24, 64, weight_dtype="int8", act_dtype="int8", outlier_threshold=6.0)
    a, weight, scales = w.random_inputs(0)
    columns = outlier_columns(a, 6.0)
    assert 1 <= len(columns) < 64
    regular = a.clone()
    regular[:, columns] = 0
    qa, scale_a = quantize_rows_int8(regular)
    dequantized = weight.double() * scales.double()[:, None]
    expected = (qa.double() @ weight.double().t()) * scale_a.double()[:, None] * scales.double() \
        + a[:, columns].double() @ dequantized[:, columns].t()
    assert torch.equal(w.reference(a, weight, scales), expected)
    exact = a.double() @ dequantized.t()
    plain = w8a8(6, 24, 64).reference(a, weight, scales)
    assert (expected - exact).abs().max() * 4 < (plain - exact).abs().max()
    assert w.key == "qgemm_6x24x64_w8a8_outliers6_none"


def test_outlier_threshold_validation():
    with pytest.raises(AutotileError, match="needs int8 activations"):
        QGemmWorkload(4, 8, 64, weight_dtype="int4", outlier_threshold=6.0)
    with pytest.raises(AutotileError, match="outlier threshold must be a finite number"):
        QGemmWorkload(4, 8, 64, weight_dtype="int8", act_dtype="int8", outlier_threshold=-1)


@pytest.mark.parametrize("flags, key", [
    (["--weight-dtype", "int8", "--act-dtype", "int8", "--outlier-threshold", "6"],
     "qgemm_3x32x40_w8a8_outliers6_none"),
    (["--weight-dtype", "fp8e5m2", "--act-dtype", "fp8e5m2", "--fp8-scales", "row"],
     "qgemm_3x32x40_float8_e5m2_float8_e5m2_rowscale_none"),
])
def test_cli_outliers_and_fp8(flags, key, tmp_path):
    import json

    from click.testing import CliRunner

    from autotile.cli import main

    out = CliRunner().invoke(main, ["tune", "qgemm", "--shape", "3x32x40", *flags, "--trials", "1", "--backend",
                                    "tvm", "--db", str(tmp_path / "o.db"), "--json"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["verified"] and record["workload"] == key


# --- fp8 (emulated: exact decode, float32 arithmetic) ----------------------------------------------

@pytest.mark.parametrize("act, weight, scales, shape, epilogue", [
    ("fp8e4m3", "fp8e4m3", "tensor", (7, 45, 31), ""),
    ("fp8e5m2", "fp8e5m2", "row", (13, 20, 70), "bias,gelu"),
    ("fp8e4m3", "fp8e5m2", "row", (1, 33, 17), "residual"),
])
def test_fp8_matches_the_exact_reference(act, weight, scales, shape, epilogue):
    w = QGemmWorkload(*shape, weight_dtype=weight, act_dtype=act, fp8_scales=scales, epilogue=epilogue)
    space = space_for(w)
    check(w, space.default())
    check(w, space.sample(random.Random(sum(shape))))


@pytest.mark.parametrize("fmt", ["float8_e4m3", "float8_e5m2"])
def test_fp8_decode_is_exact_for_every_code(fmt):
    """All 256 codes (subnormals, -0, inf, NaN) decode bit for bit as ml_dtypes decodes them."""
    import ml_dtypes
    import numpy as np
    import tvm
    from tvm import te

    from autotile.ops.qgemm.weight_only_tvm import decode_fp8

    codes = te.placeholder((256,), "uint8", name="codes")
    values = te.compute((256,), lambda i: decode_fp8(codes[i], fmt), name="values")
    lib = tvm.compile(te.create_prim_func([codes, values]), tvm.target.Target({"kind": "llvm", "mcpu": MCPU}))
    out = tvm.runtime.tensor(np.zeros(256, "float32"))
    skip_unless_cpu_has()
    lib(tvm.runtime.tensor(np.arange(256, dtype=np.uint8)), out)
    got = out.numpy()
    expected = np.arange(256, dtype=np.uint8).view(getattr(ml_dtypes, "float8_e4m3fn" if fmt == "float8_e4m3"
                                                           else fmt)).astype(np.float32)
    assert ((got.view(np.uint32) == expected.view(np.uint32)) | (np.isnan(got) & np.isnan(expected))).all()


def test_fp8_kernel_on_user_quantized_tensors():
    """quantize_fp8 -> uint8 codes -> kernel; the result is the float product within fp8 rounding."""
    import numpy as np

    from autotile.ops.qgemm.quant import quantize_fp8

    w = QGemmWorkload(4, 32, 48, weight_dtype="fp8e4m3", act_dtype="fp8e4m3", fp8_scales="row")
    g = torch.Generator().manual_seed(0)  # unseeded draws failed now and then (a near-zero output, rtol 0.1)
    x, weight = torch.randn(4, 48, generator=g), torch.randn(32, 48, generator=g)
    qa, sa = quantize_fp8(x, "float8_e4m3", per_row=True)
    qw, sw = quantize_fp8(weight, "float8_e4m3", per_row=True)
    kernel = check(w, space_for(w).default())
    out = kernel(torch.from_numpy(qa.view(np.uint8).copy()), sa, torch.from_numpy(qw.view(np.uint8).copy()), sw)
    torch.testing.assert_close(out, x @ weight.t(), rtol=0.1, atol=0.6)
    assert w.key == "qgemm_4x32x48_float8_e4m3_float8_e4m3_rowscale_none"


def test_fp8_validation():
    with pytest.raises(AutotileError, match="fp8 GEMMs take fp8 activations and fp8 weights"):
        QGemmWorkload(4, 8, 64, weight_dtype="fp8e4m3")
    with pytest.raises(AutotileError, match="fp8 scales must be 'tensor' or 'row'"):
        QGemmWorkload(4, 8, 64, weight_dtype="fp8e4m3", act_dtype="fp8e4m3", fp8_scales="block")


# --- int4 decode kernel (few rows of A) ------------------------------------------------------------

@pytest.mark.parametrize("shape, group, asymmetric, epilogue", [
    ((1, 45, 96), 32, False, ""), ((3, 20, 128), 64, True, "bias,gelu"), ((8, 7, 256), 128, True, "residual"),
    ((2, 33, 64), None, False, "silu"),
])
def test_int4_decode_kernel(shape, group, asymmetric, epilogue):
    w = QGemmWorkload(*shape, weight_dtype="int4", group_size=group, asymmetric=asymmetric, epilogue=epilogue)
    space = space_for(w)
    assert space.default().decode  # the default for int4 with few rows of A
    check(w, space.default())
    check(w, space.canonical(space.config_type(decode=True, decode_rows=2)))


def test_decode_kernel_only_where_it_applies():
    for w in [QGemmWorkload(1, 32, 96, weight_dtype="int3", group_size=32),  # codes straddle bytes
              QGemmWorkload(33, 32, 96, weight_dtype="int4", group_size=32),  # too many rows of A
              QGemmWorkload(1, 32, 80, weight_dtype="int4", group_size=16)]:  # groups of half a chunk
        space = space_for(w)
        assert space.domains["decode"] == [False] and not space.default().decode
        assert not space.valid(space.config_type(decode=True))
    space = space_for(QGemmWorkload(4, 2, 96, weight_dtype="int4", group_size=32))
    assert space.canonical(space.config_type(decode=True, decode_rows=8)).decode_rows == 2  # N = 2


def test_decode_kernel_tiles_many_rows_of_a():
    w = QGemmWorkload(13, 20, 128, weight_dtype="int4", group_size=64, asymmetric=True, epilogue="bias")
    space = space_for(w)
    assert not space.default().decode  # more than 8 rows: the GEMM template by default, decode is tuned
    check(w, space.canonical(space.config_type(decode=True, decode_rows=2)))  # tiles of 4 rows of A
