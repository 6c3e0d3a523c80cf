"""bfloat16 and float16 GEMMs with float32 accumulation: every mode built for an explicit mcpu and
checked against the float64 reference within the dtype's tolerance (vdpbf16ps rounds to nearest even
and flushes denormals, so bf16 results are never compared bit for bit)."""

import json
import random

import pytest
import torch
from click.testing import CliRunner
from tvm_kernels import build_for_mcpu, check, compiled

import autotile
from autotile.cli import main
from autotile.errors import AutotileError
from autotile.ir import GemmWorkload
from autotile.ops import space_for

BF16_CPU = {"flags": ["avx512f", "avx512_bf16", "f16c"]}
PLAIN_AVX512 = {"flags": ["avx512f", "f16c"]}


def with_mode(space, mode, **changes):
    return space.canonical(space.config_type(**{**space.default().to_dict(), "mode": mode, **changes}))


@pytest.mark.parametrize("dtype, shape, epilogue, mode", [
    ("bfloat16", (13, 37, 29), "", "dpbf16"),
    ("bfloat16", (1, 50, 3), "bias,gelu", "dpbf16"),
    ("bfloat16", (33, 16, 64), "residual,relu,cast:float32", "dpbf16"),
    ("bfloat16", (7, 45, 31), "silu", "convert_pack"),
    ("bfloat16", (9, 20, 18), "", "convert_inner"),
    ("float16", (13, 37, 29), "bias", "convert_pack"),
    ("float16", (5, 70, 33), "residual,cast:float32", "convert_inner"),
])
def test_every_mode_on_odd_shapes(dtype, shape, epilogue, mode):
    w = GemmWorkload(*shape, dtype=dtype, epilogue=epilogue)
    check(w, with_mode(space_for(w, BF16_CPU), mode))


@pytest.mark.parametrize("dtype, shape, epilogue, mode", [
    ("bfloat16", (13, 37, 29), "bias,gelu,residual", "dpbf16"),
    ("bfloat16", (1, 50, 3), "bias", "convert_pack"),
    ("bfloat16", (17, 23, 40), "residual,silu", "convert_inner"),
    ("float16", (5, 70, 33), "bias,residual", "convert_pack"),
])
def test_16_bit_bias_and_residual(dtype, shape, epilogue, mode):
    """A 16-bit model's linear: bias and residual in the inputs' dtype, widened as the epilogue reads them."""
    w = GemmWorkload(*shape, dtype=dtype, epilogue=epilogue, addend_dtype=dtype)
    assert w.input_dtype("bias" if "bias" in epilogue else "residual") == dtype and w.key.endswith(f"_add-{dtype}")
    check(w, with_mode(space_for(w, BF16_CPU), mode))


@pytest.mark.parametrize("seed", range(3))
def test_layernorm_prologue_in_the_bits_pack(seed):
    """A bf16 linear with its layer norm: the row stats and LN(A) rounded to bf16 computed as A is packed to bits,
    against F.layer_norm and matmul in float64; only the vdpbf16ps mode takes it, only where it runs."""
    rng = random.Random(seed)
    shape = [(1, 17, 1), (13, 37, 29), (70, 48, 96)][seed]
    w = GemmWorkload(*shape, dtype="bfloat16", trans_b=True, const_b=seed != 1, epilogue="bias,gelu",
                     addend_dtype="bfloat16", prologue="layernorm", eps=1e-6)
    space = space_for(w, BF16_CPU)
    assert space.domains["mode"] == ["dpbf16"]
    for config in [space.default(), space.sample(rng)]:
        check(w, config)
    with pytest.raises(AutotileError, match="no tvm template computes this workload"):
        space_for(w, PLAIN_AVX512)
    with pytest.raises(AutotileError, match="no tvm template computes this workload"):
        space_for(GemmWorkload(*shape, dtype="float16", prologue="layernorm"), BF16_CPU)


def test_bf16_weight_is_packed_once_as_bits():
    """A linear's weight (const_b) for the vdpbf16ps tiles: packed ahead into K pairs of uint16 bits, then read by
    every call; results match with the packed copy reused and with a fresh weight packed again."""
    w = GemmWorkload(19, 40, 35, dtype="bfloat16", trans_b=True, const_b=True, epilogue="bias,gelu,residual",
                     addend_dtype="bfloat16")
    config = with_mode(space_for(w, BF16_CPU), "dpbf16", unroll_k=2)
    kernel = check(w, config)
    b = torch.randn(40, 35).bfloat16()
    packed = kernel.pack_operand("B", b)
    assert packed.tensor.dtype == torch.uint16 and packed.tensor.shape[-2:] == (16, 2)
    assert torch.equal(packed.tensor[0, 0, :, 0].view(torch.bfloat16), b[:16, 0])  # B[k, j] = W[j, k]
    a, bias, residual = torch.randn(19, 35).bfloat16(), torch.randn(40).bfloat16(), torch.randn(19, 40).bfloat16()
    want = w.reference(a, b, bias, residual)
    for operand in (packed, b):
        torch.testing.assert_close(kernel(a, operand, bias, residual).double(), want, rtol=2e-2, atol=2e-2)


def test_addend_dtype_is_float32_or_the_inputs():
    with pytest.raises(AutotileError, match="addend_dtype .* must be float32 or the inputs' dtype bfloat16"):
        GemmWorkload(8, 8, 8, dtype="bfloat16", epilogue="bias", addend_dtype="float16")
    assert GemmWorkload(8, 8, 8).key == "gemm_b1_8x8x8_float32_nn_none"  # float32 keys are unchanged


def test_bf16_tiles_are_vdpbf16ps():
    w = GemmWorkload(32, 64, 128, dtype="bf16", epilogue="bias")
    space = space_for(w, BF16_CPU)
    assert space.default().mode == "dpbf16"
    executable = build_for_mcpu(w, space.default())
    asm = executable.mod.inspect_source("s")
    assert asm.count("vdpbf16ps") >= space.default().mr * space.default().nr // 16
    check(w, space.default(), executable)


def test_fp16_widens_with_f16c():
    """No AVX512_FP16 on these CPUs: float16 is vcvtph2ps into float32 FMAs."""
    w = GemmWorkload(16, 48, 40, dtype="float16")
    executables = {mode: build_for_mcpu(w, with_mode(space_for(w, BF16_CPU), mode))
                   for mode in ("convert_pack", "convert_inner")}
    for mode, executable in executables.items():
        asm = executable.mod.inspect_source("s")
        assert asm.count("vcvtph2ps") >= 1 and "vfmadd" in asm, mode
    for mode, executable in executables.items():
        check(w, with_mode(space_for(w, BF16_CPU), mode), executable)


def test_batched_and_transposed_operands_convert():
    w = GemmWorkload(6, 20, 24, batch=3, dtype="bfloat16", trans_a=True, trans_b=True, broadcast="b")
    space = space_for(w, BF16_CPU)
    assert "dpbf16" not in space.domains["mode"]  # the bf16 tiles are written for one GEMM
    for mode in ("convert_pack", "convert_inner"):
        check(w, with_mode(space, mode))


def test_sampled_configs():
    w = GemmWorkload(11, 40, 26, dtype="bfloat16", epilogue="bias,gelu_tanh")
    space = space_for(w, BF16_CPU)
    rng = random.Random(3)
    for config in [space.sample(rng) for _ in range(3)] + [with_mode(space, "dpbf16", unroll_k=2, nr=48)]:
        check(w, config)


def test_without_avx512_bf16_the_space_only_converts():
    w = GemmWorkload(64, 64, 64, dtype="bfloat16")
    space = space_for(w, PLAIN_AVX512)
    assert space.domains["mode"] == ["convert_pack", "convert_inner"]
    assert space.default().mode == "convert_pack"
    assert not space.valid(space.config_type(mode="dpbf16"))
    rng = random.Random(0)
    assert all(space.sample(rng).mode != "dpbf16" for _ in range(50))


def test_output_dtype_follows_the_inputs_unless_cast():
    assert GemmWorkload(2, 3, 4, dtype="bf16").out_dtype == "bfloat16"
    assert GemmWorkload(2, 3, 4, dtype="fp16", epilogue="cast:float32").out_dtype == "float32"
    w = GemmWorkload(4, 16, 8, dtype="bfloat16")
    kernel = compiled(w, space_for(w).default())
    a, b = torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(8, 16, dtype=torch.bfloat16)
    out = kernel(a, b)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, (a.float() @ b.float()).bfloat16(), rtol=1.6e-2, atol=1e-2)
    with pytest.raises(AutotileError, match="not supported by the GEMM templates"):
        GemmWorkload(2, 3, 4, dtype="float8_e4m3")


def test_tune_and_cli(tmp_path):
    """A short tuning run on this host's CPU (vdpbf16ps where it has AVX512_BF16, conversion elsewhere)."""
    db = tmp_path / "lowp.db"
    result = autotile.tune(GemmWorkload(8, 32, 24, dtype="bfloat16", epilogue="relu"), trials=3, db=db,
                           backend="tvm")
    assert result.verified and result.trials == 3
    out = CliRunner().invoke(main, ["tune", "gemm", "--shape", "5x24x20", "--dtype", "fp16", "--trials", "2",
                                    "--backend", "tvm", "--db", str(db), "--json"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["verified"] and "float16" in record["workload"]
