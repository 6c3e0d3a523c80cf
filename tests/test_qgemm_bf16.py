"""Weight-only int4 with bfloat16 activations: the vdpbf16ps kernel (bf16_dot) and its fallbacks, real TVM
builds for an explicit AVX512_BF16 CPU (tvm_kernels.MCPU), each checked, where this CPU can run it, against the
exact reference (A rounded to bfloat16, then float64), which they must match within float32's tolerance."""

import random

import pytest
import torch
from tvm_kernels import build_for_mcpu, check, compiled

import autotile
from autotile.errors import AutotileError
from autotile.ir.reference import verify
from autotile.ops import space_for
from autotile.ops.qgemm.quant import quantize_int
from autotile.ops.qgemm.workload import QGemmWorkload

BF16_CPU = {"kind": "cpu", "flags": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]}
PLAIN_AVX512 = {"kind": "cpu", "flags": ["avx2", "fma", "avx512f"]}


def workload(m, n, k, group=128, asymmetric=False, epilogue=""):
    return QGemmWorkload(m, n, k, weight_dtype="int4", act_dtype="bfloat16", group_size=group,
                         asymmetric=asymmetric, epilogue=epilogue)


def dot(space, **knobs):
    return space.canonical(space.config_type(bf16_dot=True, **knobs))


@pytest.mark.parametrize("shape, group, asymmetric, epilogue", [
    ((16, 64, 256), 128, False, ""),
    ((1, 45, 128), 32, False, "bias"),
    ((5, 40, 384), 128, True, "bias,gelu"),
    ((33, 37, 96), 32, True, "residual"),
    ((3, 20, 64), None, False, "silu"),
    ((13, 100, 192), 64, True, ""),
])
def test_bf16_dot_matches_the_exact_reference(shape, group, asymmetric, epilogue):
    w = workload(*shape, group, asymmetric, epilogue)
    space = space_for(w, BF16_CPU)
    assert space.default().bf16_dot
    check(w, space.default())
    check(w, dot(space, dot_rows=4, dot_vectors=2, unroll_k=4))


@pytest.mark.parametrize("seed", range(3))
def test_sampled_bf16_dot_configs(seed):
    w = workload([2, 17, 32][seed], 50, 256, group=64, asymmetric=bool(seed % 2))
    space = space_for(w, BF16_CPU)
    rng = random.Random(seed)
    configs = [c for c in (space.canonical(space.sample(rng)) for _ in range(40)) if c.bf16_dot]
    assert configs
    config = configs[0]
    assert space.valid(config) and config.dot_rows * config.dot_vectors <= 24
    check(w, config)


def test_inner_loop_is_decode_plus_vdpbf16ps():
    """A decoded pair of 16 columns (vpmovzxbd, a shift, an or, vpermw) feeds one vdpbf16ps per row of A:
    25 instructions per pair of K for 16 rows with znver4's LLVM (one A pair is broadcast separately)."""
    w = workload(16, 64, 256)
    space = space_for(w, BF16_CPU)
    config = dot(space, dot_rows=16, dot_vectors=1, unroll_k=1)
    executable = build_for_mcpu(w, config)
    asm = executable.mod.inspect_source("s")
    assert asm.count("vdpbf16ps") >= 16 and "vpermw" in asm and "vpmovzxbd" in asm
    loop = inner_loop(asm)
    assert loop.count("vdpbf16ps") == 16 and loop.count("vpermw") == 1 and "vfmadd" not in loop
    assert loop.count("{1to16}") >= 15  # A's pair broadcast from memory inside (all but one) vdpbf16ps
    check(w, config, executable)


def inner_loop(asm: str) -> str:
    """The body of the innermost loop holding vdpbf16ps: from its label to the backward branch."""
    lines = asm.splitlines()
    first = next(i for i, line in enumerate(lines) if "vdpbf16ps" in line)
    start = max(i for i in range(first) if lines[i].startswith(".LBB"))
    label = lines[start].rstrip(":")
    end = next(i for i in range(first, len(lines)) if lines[i].strip().endswith(label))
    return "\n".join(lines[start:end + 1])


def test_packed_layout_is_documented_one():
    """pack_W/pack_scales/pack_zeros give the (tiles, K/2 or groups, 16 x dot_vectors) layout."""
    from autotile.ops.qgemm.weight_only_tvm import prepacked_operands

    w = workload(2, 40, 128, group=32, asymmetric=True)
    space = space_for(w, BF16_CPU)
    config = dot(space, dot_rows=2, dot_vectors=2)
    kernel = compiled(w, config)
    a, codes, scales, zeros = w.random_inputs(0)
    shapes = prepacked_operands(w, config)
    assert shapes == {"W": (2, 64, 32), "scales": (2, 4, 32), "zeros": (2, 4, 32)}
    for name, t in (("W", codes), ("scales", scales), ("zeros", zeros)):
        packed = kernel.pack_operand(name, t).tensor
        expected = t[torch.arange(64).clamp(max=39)]  # columns past N repeat the last one
        assert torch.equal(packed, expected.reshape(2, 32, -1).transpose(1, 2)), name


def test_activations_round_to_nearest_even_like_torch():
    """Ties and near-ties of A round as torch's .bfloat16() does; the reference and kernel agree on them."""
    w = workload(2, 16, 64, group=32)
    space = space_for(w, BF16_CPU)
    kernel = check(w, space.default())
    base = torch.tensor([1.0, -3.0, 0.375, 1024.0]).repeat_interleave(16)
    bits = base.view(torch.int32)
    a = torch.stack([(bits + 0x8000).view(torch.float32), (bits + 0x18000).view(torch.float32)])  # ties
    weight = torch.zeros(16, 64)
    weight[torch.arange(16), torch.arange(16) * 4] = 1.0  # column j picks a[:, 4j]
    q = quantize_int(weight, 4, 32)
    out = kernel(a, q.packed, q.scales).double()
    expected = a.bfloat16().double() @ q.dequantize(torch.float64).t()
    unrounded = a.double() @ q.dequantize(torch.float64).t()
    assert ((out - expected).abs() <= 1e-6 * expected.abs()).all()  # the scale's float32 product only
    assert ((unrounded - expected).abs() > 1e-4 * expected.abs()).all()  # far from A not rounded


def test_weight_is_packed_once_per_tensor():
    w = workload(3, 32, 128)
    space = space_for(w, BF16_CPU)
    kernel = check(w, space.default())
    a, codes, scales = w.random_inputs(1)
    first = kernel(a, codes, scales).clone()
    packed = kernel._packed["W"][2]
    again = kernel(a, codes, scales)
    assert kernel._packed["W"][2] is packed and torch.equal(first, again)
    prepared = [kernel.pack_operand("W", codes), kernel.pack_operand("scales", scales)]
    assert torch.equal(kernel(a, *prepared), first)


def test_without_avx512_bf16_or_for_other_shapes_it_falls_back():
    for w, fingerprint in [(workload(4, 32, 128), PLAIN_AVX512),  # no vdpbf16ps on this CPU
                           (workload(4, 32, 96, group=64), BF16_CPU),  # K is not a whole number of groups
                           (QGemmWorkload(4, 32, 128, weight_dtype="int3", act_dtype="bf16", group_size=32),
                            BF16_CPU)]:
        space = space_for(w, fingerprint)
        assert space.domains["bf16_dot"] == [False] and not space.default().bf16_dot
        assert not space.valid(space.config_type(bf16_dot=True))
        assert not space.canonical(space.config_type(bf16_dot=True)).bf16_dot
        check(w, space.default())  # A rounded to bf16, float32 arithmetic
    w = workload(1, 32, 128)
    space = space_for(w, PLAIN_AVX512)
    assert space.default().decode
    check(w, space.default())


def test_bad_input_is_a_clear_error():
    from autotile.ops.qgemm.weight_only import QGemmConfig
    from autotile.ops.qgemm.weight_only_tvm import schedule

    with pytest.raises(AutotileError, match="the vdpbf16ps kernel"):
        schedule(workload(4, 32, 96, group=64), QGemmConfig(bf16_dot=True))
    with pytest.raises(AutotileError, match="bfloat16 activations are for weight-only GEMMs"):
        QGemmWorkload(4, 8, 64, weight_dtype="fp8e4m3", act_dtype="bfloat16")
    assert workload(16, 4096, 4096).key == "qgemm_16x4096x4096_bfloat16_int4_g128_sym_none"


@pytest.mark.slow
def test_short_tuning_run_and_cli(tmp_path):
    """Tunes on this host's CPU: vdpbf16ps where it has AVX512_BF16, the fallbacks elsewhere."""
    import json

    from click.testing import CliRunner

    from autotile.cli import main

    w = workload(8, 48, 256, group=128, asymmetric=True, epilogue="bias")
    db = tmp_path / "bf.db"
    result = autotile.tune(w, trials=4, db=db, backend="tvm")
    assert result.verified and result.trials == 4
    assert verify(w, autotile.kernel(w, db=db, backend="tvm")).ok
    out = CliRunner().invoke(main, ["tune", "qgemm", "--shape", "3x32x128", "--weight-dtype", "int4",
                                    "--group-size", "64", "--act-dtype", "bfloat16", "--trials", "2", "--backend",
                                    "tvm", "--db", str(db), "--json"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["verified"] and record["workload"] == "qgemm_3x32x128_bfloat16_int4_g64_sym_none"


def test_quantized_linear_with_bf16_activations(tmp_path):
    """autotile.nn.QuantizedLinear(act_dtype="bfloat16"): float32 in and out, A rounded to bf16 inside; the
    kernel packs the module's weight on the first call and reuses it."""
    from autotile.nn import QuantizedLinear

    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 48)
    module = QuantizedLinear.from_linear(linear, weight_dtype="int4", group_size=64, act_dtype="bfloat16",
                                         db=str(tmp_path / "nn.db"))
    x = torch.randn(3, 5, 256)
    y = module(x)
    expected = torch.nn.functional.linear(x.bfloat16().double(), module.dequantized_weight().double(),
                                          linear.bias.double())
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(module(x), y)
