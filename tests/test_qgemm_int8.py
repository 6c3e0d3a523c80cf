"""W8A8 int8 GEMM on VNNI (and on AVX2 without it): the weight's packed layout (made once per weight, outside the
call), and kernels with the register-tile, K-unroll and blocking knobs, every one checked against the exact
reference."""

import random

import pytest
import torch
from tvm_kernels import check

from autotile.codegen.tvm import amx_permission
from autotile.codegen.tvm.build import Packed
from autotile.ops import prepacked_operands, space_for
from autotile.ops.qgemm.int8 import Int8GemmConfig
from autotile.ops.qgemm.workload import QGemmWorkload


def w8a8(m, n, k, epilogue="", outliers=0.0):
    return QGemmWorkload(m, n, k, weight_dtype="int8", act_dtype="int8", epilogue=epilogue,
                         outlier_threshold=outliers)


def test_packed_weight_layout():
    """pack_W: 16 x 4 byte panels of W, zero padded, then per column the int32 -128 * sum_k W[j, k]."""
    w = w8a8(5, 40, 70)
    config = space_for(w).canonical(Int8GemmConfig(mr=2, nrv=2, mc_tiles=1, nc_tiles=1))
    kernel = check(w, config)
    _, weight, _ = w.random_inputs(3)
    packed = kernel.pack_operand("W", weight).tensor
    tiles, groups = 64 // 16, -(-70 // 4)  # N padded to whole blocks of 32 columns
    assert tuple(packed.shape) == prepacked_operands(w, config)["W"] == (tiles, groups + 1, 16, 4)
    expected = torch.zeros(tiles * 16, groups * 4, dtype=torch.int8)
    expected[:40, :70] = weight
    panels = expected.reshape(tiles, 16, groups, 4).permute(0, 2, 1, 3)
    assert torch.equal(packed[:, :groups], panels)
    corr = packed[:, groups].reshape(tiles * 16, 4).contiguous().view(torch.int32).flatten()
    assert torch.equal(corr[:40], -128 * weight.int().sum(1))
    assert torch.equal(corr[40:], torch.zeros(tiles * 16 - 40, dtype=torch.int32))


@pytest.mark.parametrize("amx", ["", "1"], ids=["default template", "AMX emulated"])
def test_packed_weight_is_made_once_and_remade_when_the_weight_changes(amx, monkeypatch):
    """The W8A8 template this CPU gets by default (VNNI, or AMX tiles on a Xeon), and AMX with its tiles
    emulated: the weight is packed once, reused while unchanged, packed again when it changes."""
    monkeypatch.setenv(amx_permission.EMULATE_ENV, amx)
    w = w8a8(9, 48, 64, "bias")
    kernel = check(w, space_for(w).default())
    a, weight, scales, bias = w.random_inputs(1)
    prepared = kernel.pack_operand("W", weight)
    assert isinstance(prepared, Packed)
    first = kernel(a, prepared, scales, bias)
    torch.testing.assert_close(first.double(), w.reference(a, weight, scales, bias), rtol=1e-4, atol=1e-3)
    assert torch.equal(kernel(a, weight, scales, bias), first)
    assert torch.equal(kernel(a, weight, scales, bias), first)  # the same weight: its packed copy again
    weight.neg_()  # changed in place: packed again
    torch.testing.assert_close(kernel(a, weight, scales, bias).double(), w.reference(a, weight, scales, bias),
                               rtol=1e-4, atol=1e-3)
    other = torch.randint(-127, 128, weight.shape, dtype=torch.int8)  # another weight
    torch.testing.assert_close(kernel(a, other, scales, bias).double(), w.reference(a, other, scales, bias),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape, epilogue, outliers", [
    ((3, 17, 5), "", 0.0), ((7, 50, 130), "bias,gelu", 0.0), ((20, 33, 67), "residual,relu", 6.0),
    ((48, 96, 256), "bias", 0.0), ((2, 40, 36), "bias,silu", 6.0)])
def test_sampled_configs_match_the_exact_reference(shape, epilogue, outliers):
    w = w8a8(*shape, epilogue, outliers)
    space = space_for(w)
    rng = random.Random(sum(shape))
    for config in {space.default(), space.sample(rng), space.sample(rng)}:
        assert space.valid(config)
        check(w, config)


def test_activation_rounding_ties_go_to_even_like_the_reference():
    """A / scale_a exactly halfway between two integers rounds to the even one (torch.round), in-kernel."""
    w = w8a8(2, 16, 8)
    kernel = check(w, space_for(w).default())
    a = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5],
                      [-127.0, 3.5, -3.5, 4.5, 125.5, -125.5, 0.0, 1.0]])
    _, weight, scales = w.random_inputs(0)
    got = kernel(a, weight, scales)
    torch.testing.assert_close(got.double(), w.reference(a, weight, scales), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("knobs", [
    dict(mr=4, nrv=2, mc_tiles=2, nc_tiles=2, k_block=16),
    dict(mr=3, nrv=3, mc_tiles=2, nc_tiles=2, k_block=32, unroll_k=4, tile_order="ji"),
    dict(mr=8, nrv=3, mc_tiles=1, nc_tiles=2, k_block=16, outer="ji", parallel="first"),
    dict(mr=5, nrv=1, mc_tiles=4, nc_tiles=3, tile_order="ji", unroll_k=2)])
@pytest.mark.parametrize("shape, epilogue, outliers", [((37, 90, 256), "residual,gelu", 0.0),
                                                        ((21, 70, 260), "bias,relu", 6.0)])
def test_k_blocks_and_tile_orders_match_the_exact_reference(knobs, shape, epilogue, outliers):
    w = w8a8(*shape, epilogue, outliers)
    space = space_for(w)
    config = space.canonical(Int8GemmConfig(**knobs))
    assert space.valid(config)
    if shape[2] == 256:  # 64 groups of K: the blocks are kept
        assert config.k_block == knobs.get("k_block", 0)
    check(w, config)


AVX2_MCPU = "znver3"  # AVX2 and FMA, no AVX-512: code every x86 CPU we tune on runs


@pytest.mark.parametrize("shape, epilogue, outliers", [
    ((1, 17, 7), "bias", 0.0), ((37, 53, 71), "residual,gelu", 0.0), ((20, 33, 67), "bias,relu", 6.0),
    ((48, 96, 256), "bias", 0.0)])
def test_without_vnni_the_avx2_template_matches_float64_torch(shape, epilogue, outliers):
    """A CPU without AVX-512 VNNI (Zen 3) gets qgemm.int8_avx2 (vpdpbusd there was an LLVM abort, no kernel at all):
    its default and sampled configs, built for an AVX2 CPU, agree with the exact reference and, A a view at a storage
    offset, with float64 torch on the dequantized codes."""
    from autotile.ir.reference import verify
    from autotile.ops import templates_for
    from autotile.ops.qgemm.int8 import Int8Avx2Config
    from autotile.ops.qgemm.quant import quantize_rows_int8
    from autotile.search import artifacts

    w = w8a8(*shape, epilogue, outliers)
    fingerprint = {"flags": ["avx2", "fma"], "threads": 2}
    assert [t.name for t in templates_for(w, fingerprint)] == ["qgemm.int8_avx2"]
    space = space_for(w, fingerprint)
    rng = random.Random(sum(shape))
    for config in {space.default(), space.sample(rng), space.sample(rng)}:
        assert isinstance(config, Int8Avx2Config) and space.valid(config)
        kernel = artifacts.compiled(w, config, artifacts.build(w, config, AVX2_MCPU, 2))
        verdict = verify(w, kernel)
        assert verdict.ok, f"{w.key} {config.key}: {verdict.reason}"
    a, weight, scales, *rest = w.random_inputs(5)
    a = torch.randn(3 + a.numel())[3:].view_as(a).copy_(a)  # at a storage offset: misaligned for any vector width
    got = kernel(a, weight, scales, *rest).double()
    torch.testing.assert_close(got, w.reference(a, weight, scales, *rest), rtol=1e-5, atol=1e-4)
    if epilogue == "bias" and not outliers:  # plain torch: A's codes times W's in float64, dequantized, plus bias
        codes, row_scales = quantize_rows_int8(a)
        exact = (codes.double() @ weight.double().T) * row_scales.double()[:, None] * scales.double() + rest[0].double()
        torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-4)


def test_the_avx2_packed_weight_holds_each_block_in_vpmaddwds_order():
    """qgemm.int8_avx2's pack_W: the panels and column corrections of VNNI's layout, each 16 x 4 block's 64 bytes
    in the order its vpmaddwd reads them (intrinsics.avx2_panel_position: per half of the rows and pair of K, the
    8 rows' byte pairs); built for an AVX2 CPU, so it runs in every CI."""
    from autotile.codegen.tvm.intrinsics import avx2_panel_position
    from autotile.ops.qgemm.int8 import Int8Avx2Config
    from autotile.search import artifacts

    w = w8a8(5, 40, 70)
    space = space_for(w, {"flags": ["avx2", "fma"], "threads": 2})
    config = space.canonical(Int8Avx2Config(mr=2, nrv=2, mc_tiles=1, nc_tiles=1))
    kernel = artifacts.compiled(w, config, artifacts.build(w, config, AVX2_MCPU, 2))
    _, weight, _ = w.random_inputs(3)
    packed = kernel.pack_operand("W", weight).tensor
    tiles, groups = 64 // 16, -(-70 // 4)
    assert tuple(packed.shape) == prepacked_operands(w, config)["W"] == (tiles, groups + 1, 16, 4)
    expected = torch.zeros(tiles * 16, groups * 4, dtype=torch.int8)
    expected[:40, :70] = weight
    blocks = expected.reshape(tiles, 16, groups, 4).permute(0, 2, 1, 3)
    order = [row * 4 + k for _, row, k in sorted((avx2_panel_position(row, k), row, k)
                                                  for row in range(16) for k in range(4))]
    assert sorted(avx2_panel_position(row, k) for row in range(16) for k in range(4)) == list(range(64))
    in_order = blocks.reshape(tiles, groups, 64)[:, :, order]
    assert torch.equal(packed[:, :groups].reshape(tiles, groups, 64), in_order)
    corr = packed[:, groups].reshape(tiles * 16, 4).contiguous().view(torch.int32).flatten()
    assert torch.equal(corr[:40], -128 * weight.int().sum(1))
