"""W8A8 int8 GEMM on AMX tiles (qgemm.int8_amx).

This host (Zen 4) has no AMX: kernels run with the tile instructions emulated (AUTOTILE_AMX_EMULATE=1, or
emulate=True to the schedule) and are checked against the exact reference on odd and prime shapes; the real
instructions are checked in the assembly built for Sapphire Rapids, and run only on a CPU with AMX."""

import random
import re

import pytest
import torch
from tvm_kernels import AMX_MATTR, check, check_emulated, requires_cpu_flags

from autotile.codegen.tvm import amx_permission
from autotile.codegen.tvm.build import compile_module
from autotile.ops import default_template, prepacked_operands, space_for, templates_for
from autotile.ops.gemm.amx import AmxGemmSpace
from autotile.ops.gemm.workload import GemmWorkload
from autotile.ops.qgemm.int8_amx import Int8AmxConfig, Int8AmxSpace
from autotile.ops.qgemm.int8_amx_tvm import schedule
from autotile.ops.qgemm.workload import QGemmWorkload
from autotile.search import artifacts


def w8a8(m, n, k, epilogue="", outliers=0.0):
    return QGemmWorkload(m, n, k, weight_dtype="int8", act_dtype="int8", epilogue=epilogue,
                         outlier_threshold=outliers)


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setenv(amx_permission.EMULATE_ENV, "1")


def test_offered_only_where_int8_tiles_run(monkeypatch):
    w = w8a8(8, 32, 64)
    monkeypatch.delenv(amx_permission.EMULATE_ENV, raising=False)
    assert "qgemm.int8_amx" not in [t.name for t in templates_for(w)]
    assert default_template(w).name == "qgemm.int8_vnni"
    monkeypatch.setenv(amx_permission.EMULATE_ENV, "1")
    assert [t.name for t in templates_for(w)][:2] == ["qgemm.int8_amx", "qgemm.int8_vnni"]
    assert default_template(w).name == "qgemm.int8_amx"
    assert "qgemm.int8_amx" not in [t.name for t in templates_for(QGemmWorkload(8, 32, 64, weight_dtype="int4"))]


def test_space_counts_k_in_int8_tile_rows():
    """gemm.amx's space with a K step of 64 (one tile row of int8): chunks of whole steps, the bf16 space as it was."""
    w = w8a8(40, 50, 300)
    space = Int8AmxSpace(w)
    assert space.template == "qgemm.int8_amx" and space.k_step == 64
    assert space.domains["kc"] == [128, 256, 512, 1024, 2048, 4096, 8192]
    assert AmxGemmSpace(GemmWorkload(40, 50, 300, dtype="bfloat16")).domains["kc"] == [64, 128, 256, 512, 1024,
                                                                                        2048, 4096]
    assert space.default() == Int8AmxConfig(2, 2, 1, 320, 2, 2, "ij", "ij", "inner", "none", "tile", 0)
    rng = random.Random(0)
    for _ in range(50):
        c = space.sample(rng)
        assert type(c) is Int8AmxConfig and space.valid(c) and space.canonical(c) == c
        assert c.kc % (64 * c.unroll_k) == 0 and (c.korder == "inner" or c.kc < 320)
    features = space.features(space.default())
    assert len(features) == len(AmxGemmSpace(GemmWorkload(40, 50, 300, dtype="bfloat16")).features(
        space.default())) + 1


def test_packed_weight_layout(emulated):
    """pack_W: 16-column x 4-K panels of W, zero padded to whole blocks and K chunks; no column sums."""
    w = w8a8(5, 40, 70)
    config = space_for(w).canonical(Int8AmxConfig(tiles_m=1, tiles_n=2, mc_tiles=1, nc_tiles=1))
    kernel = check(w, config)
    _, weight, _ = w.random_inputs(3)
    packed = kernel.pack_operand("W", weight).tensor
    tiles, groups = 64 // 16, 128 // 4  # N padded to whole blocks of 32 columns, K to a chunk of 128
    assert tuple(packed.shape) == prepacked_operands(w, config)["W"] == (tiles, groups, 16, 4)
    expected = torch.zeros(tiles * 16, groups * 4, dtype=torch.int8)
    expected[:40, :70] = weight
    assert torch.equal(packed, expected.reshape(tiles, 16, groups, 4).permute(0, 2, 1, 3))


@pytest.mark.parametrize("shape, epilogue, outliers", [
    ((1, 17, 3), "", 0.0), ((7, 45, 129), "bias,gelu", 0.0), ((33, 17, 70), "residual,relu", 6.0),
    ((33, 45, 129), "bias", 0.0), ((2, 40, 36), "bias,silu", 6.0), ((1, 45, 70), "residual", 0.0)])
def test_sampled_configs_match_the_exact_reference(emulated, shape, epilogue, outliers):
    w = w8a8(*shape, epilogue, outliers)
    space = space_for(w)
    assert isinstance(space, Int8AmxSpace)
    rng = random.Random(sum(shape))
    for config in {space.default(), space.sample(rng), space.sample(rng)}:
        assert space.valid(config)
        check(w, config)


@pytest.mark.parametrize("knobs", [
    dict(tiles_m=1, tiles_n=1, kc=64, korder="outer", parallel="both", mc_tiles=1, nc_tiles=1),
    dict(tiles_m=2, tiles_n=1, kc=128, korder="outer", outer="ji", parallel="first", mc_tiles=1, nc_tiles=2,
         fuse_epilogue=1),
    dict(tiles_m=1, tiles_n=3, kc=192, unroll_k=3, inner="ji", mc_tiles=2, nc_tiles=2, epilogue_at="block"),
    dict(tiles_m=3, tiles_n=1, kc=64, unroll_k=1, parallel="both", outer="ji", fuse_epilogue=0),
    dict(tiles_m=1, tiles_n=2, kc=128, unroll_k=2, korder="inner", parallel="both", mc_tiles=1, nc_tiles=1)])
@pytest.mark.parametrize("shape, epilogue, outliers", [((37, 90, 260), "residual,gelu", 0.0),
                                                        ((21, 45, 129), "bias,relu", 6.0)])
def test_k_chunks_orders_and_parallel_loops_match_the_exact_reference(emulated, knobs, shape, epilogue, outliers):
    w = w8a8(*shape, epilogue, outliers)
    space = space_for(w)
    config = space.canonical(Int8AmxConfig(**knobs))
    assert space.valid(config)
    check(w, config)


@pytest.mark.parametrize("knobs", [dict(), dict(korder="outer", kc=64, epilogue_at="block", parallel="both")])
def test_the_write_back_reads_the_c_tiles_in_place(emulated, knobs):
    """Where the write-back runs at the level of the C tiles' buffer (per micro-kernel, or per block with K chunks
    around it), it dequantizes straight from that buffer: no copy of the tiles first, the row scales and outlier
    products still computed before the tile loops."""
    w = w8a8(37, 45, 129, "bias,gelu", 6.0)
    config = Int8AmxSpace(w).canonical(Int8AmxConfig(**knobs))
    script = schedule(w, config, emulate=True)["main"].script()
    buffer = "mm_local" if config.korder == "inner" else "mm_global"
    assert re.search(rf"T\.reads\({buffer}\[v_i0, v_i1 // 16, v_i1 % 16\]", script), config
    assert f'T.sblock("{buffer}")' not in script and " mm = T.sblock_alloc_buffer" not in script, config
    check(w, config)


def test_k_order_outer_and_parallel_are_kept():
    """The configs above keep what they test: K chunks around the block, and parallel blocks."""
    space = Int8AmxSpace(w8a8(37, 90, 260, "residual,gelu"))
    c = space.canonical(Int8AmxConfig(tiles_m=1, tiles_n=1, kc=64, korder="outer", parallel="both", mc_tiles=1,
                                      nc_tiles=1))
    assert (c.korder, c.parallel, c.epilogue_at, c.kc) == ("outer", "both", "block", 64)
    c = space.canonical(Int8AmxConfig(tiles_m=2, tiles_n=1, kc=128, korder="outer", outer="ji", parallel="first",
                                      mc_tiles=1, nc_tiles=2))
    assert (c.korder, c.outer, c.parallel) == ("outer", "ji", "first")


def test_activation_rounding_ties_go_to_even_like_the_reference(emulated):
    w = w8a8(2, 16, 8)
    kernel = check(w, space_for(w).default())
    a = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5],
                      [-127.0, 3.5, -3.5, 4.5, 125.5, -125.5, 0.0, 1.0]])
    _, weight, scales = w.random_inputs(0)
    torch.testing.assert_close(kernel(a, weight, scales).double(), w.reference(a, weight, scales), rtol=1e-6,
                               atol=1e-5)


def test_emulation_asked_of_the_schedule(monkeypatch):
    """emulate=True to the schedule, whatever the environment says (running it still needs the environment to
    say so: a kernel with tile instructions is refused where they cannot run, see tests/test_amx.py)."""
    monkeypatch.delenv(amx_permission.EMULATE_ENV, raising=False)
    w = w8a8(7, 17, 129, "bias,gelu", 6.0)
    config = Int8AmxSpace(w).canonical(Int8AmxConfig(tiles_m=1, tiles_n=1, kc=64, korder="outer", mc_tiles=1))
    assert "autotile_emu_tdpbssd" in schedule(w, config, emulate=True).script()
    assert "autotile_emu_" not in schedule(w, config).script()
    monkeypatch.setenv(amx_permission.EMULATE_ENV, "1")
    check_emulated(schedule, w, config)


def real_kernel(w, config, mcpu="sapphirerapids"):
    return compile_module(schedule(w, config, emulate=False), mcpu, 2, AMX_MATTR)


@pytest.mark.parametrize("knobs", [dict(), dict(tiles_m=1, tiles_n=3, korder="outer", kc=64, unroll_k=1)])
def test_sapphire_rapids_assembly_runs_the_tile_instructions(knobs):
    w = w8a8(33, 45, 129, "bias,gelu", 6.0)
    config = Int8AmxSpace(w).canonical(Int8AmxConfig(**knobs))
    asm = real_kernel(w, config).mod.inspect_source("s")
    for instruction in ("ldtilecfg", "tileloadd", "tdpbssd", "tilestored", "tilerelease"):
        assert instruction in asm, instruction
    assert "autotile_emu_" not in asm and "tdpbusd" not in asm


@requires_cpu_flags("amx_tile", "amx_int8")
@pytest.mark.parametrize("shape, epilogue, outliers", [((33, 45, 129), "bias,gelu", 0.0),
                                                        ((7, 100, 300), "residual", 6.0)])
def test_real_tiles_match_the_exact_reference(monkeypatch, shape, epilogue, outliers):
    monkeypatch.delenv(amx_permission.EMULATE_ENV, raising=False)
    status = amx_permission.status()
    if not status.usable:
        pytest.skip(f"AMX tiles unusable here: {status.reason}")
    w = w8a8(*shape, epilogue, outliers)
    space = Int8AmxSpace(w)
    rng = random.Random(sum(shape))
    for config in {space.default(), space.sample(rng), space.sample(rng)}:
        check(w, config, artifacts.build(w, config, "sapphirerapids", 2, AMX_MATTR))
