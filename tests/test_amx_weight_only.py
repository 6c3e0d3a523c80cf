"""int4 weight-only GEMM with bfloat16 activations on AMX tiles (qgemm.weight_only_amx), for M >= 16.

Where the CPU has no AMX, kernels run with the tile instructions emulated and are checked against the exact
reference (A rounded to bfloat16, codes exact, group sums in float32); the real instructions are checked in the
assembly built for Sapphire Rapids and run only on a CPU with AMX."""

import random
import re

import pytest
import torch
from tvm_kernels import amx_assembly, amx_build, check, check_emulated, requires_cpu_flags

from autotile.codegen.tvm import amx_permission
from autotile.ops import default_template, templates_for
from autotile.ops.qgemm.weight_only_amx import WeightOnlyAmxConfig, WeightOnlyAmxSpace
from autotile.ops.qgemm.weight_only_amx_tvm import prepacked_operands, schedule
from autotile.ops.qgemm.workload import QGemmWorkload


def int4(m, n, k, group=128, asymmetric=False, epilogue="", bits=4):
    return QGemmWorkload(m, n, k, weight_dtype=f"int{bits}", group_size=group, act_dtype="bfloat16",
                         asymmetric=asymmetric, epilogue=epilogue)


@pytest.fixture(autouse=True)
def emulated(monkeypatch):
    """Emulated tile instructions (tests that need them real unset this)."""
    monkeypatch.setenv(amx_permission.EMULATE_ENV, "1")


def emulated_check(w, config):
    return check_emulated(schedule, w, config)


@pytest.mark.parametrize("shape, group, asymmetric, epilogue, bits", [
    ((16, 40, 256), 128, False, "bias", 4),
    ((17, 45, 128), 32, True, "residual,gelu", 4),
    ((33, 50, 192), 64, False, "", 4),
    ((64, 17, 128), 128, True, "bias,silu", 4),
    ((19, 45, 128), 64, False, "bias", 8),
    ((33, 17, 192), 32, True, "residual", 8),
])
def test_emulated_tiles_match_the_exact_reference(shape, group, asymmetric, epilogue, bits):
    """int4 and int8 codes; odd N, M past a whole tile, groups of one to four tile rows, zero points, every knob
    sampled (seeded)."""
    w = int4(*shape, group=group, asymmetric=asymmetric, epilogue=epilogue, bits=bits)
    space, rng = WeightOnlyAmxSpace(w), random.Random(sum(shape))
    for config in (space.default(), *(space.sample(rng) for _ in range(3))):
        assert config.kc == group and config.korder == "outer" and config.epilogue_at == "block"
        emulated_check(w, config)


def test_parallel_splits_and_orders():
    w = int4(70, 70, 256, asymmetric=True, epilogue="bias,gelu")
    space = WeightOnlyAmxSpace(w)
    for n, (tiles_m, tiles_n) in enumerate([(1, 3), (2, 2), (3, 1)]):
        config = space.canonical(WeightOnlyAmxConfig(
            tiles_m=tiles_m, tiles_n=tiles_n, mc_tiles=2, nc_tiles=2, unroll_k=2 ** n, outer=("ij", "ji")[n % 2],
            inner=("ji", "ij")[n % 2], parallel=("both", "first", "none")[n]))
        assert config.parallel == ("both", "first", "none")[n]
        emulated_check(w, config)


def test_the_weight_is_packed_once_per_weight():
    """W, scales and zero points in 16-column tiles, made by pack_<name> once and again for a new weight."""
    w = int4(20, 40, 128, group=64, asymmetric=True, epilogue="bias")
    config = WeightOnlyAmxSpace(w).default()
    assert prepacked_operands(w, config) == {"W": (4, 64, 16), "scales": (4, 2, 16), "zeros": (4, 2, 16)}
    w8 = int4(20, 40, 128, group=64, asymmetric=True, epilogue="bias", bits=8)
    assert prepacked_operands(w8, config)["W"] == (4, 64, 16, 2)
    for workload in (w, w8):
        kernel = emulated_check(workload, config)
        for seed in (1, 2):
            inputs = workload.random_inputs(seed)
            for _ in range(2):
                torch.testing.assert_close(kernel(*inputs).double(), workload.reference(*inputs), rtol=2e-2,
                                           atol=2e-2)


def test_offered_for_a_tile_of_rows_and_int4_bf16_only(monkeypatch):
    assert default_template(int4(16, 64, 256)).name == "qgemm.weight_only_amx"
    assert default_template(int4(16, 64, 256, bits=8)).name == "qgemm.weight_only_amx"
    for w in (int4(15, 64, 256), int4(1, 64, 256), int4(32, 64, 240, group=48), int4(32, 64, 256, bits=3),
              QGemmWorkload(32, 64, 256, weight_dtype="int4", group_size=128)):  # float32 activations
        assert "qgemm.weight_only_amx" not in [t.name for t in templates_for(w)], w.key
    monkeypatch.delenv(amx_permission.EMULATE_ENV)
    amd = {"flags": ["avx512f", "avx512_bf16"]}
    assert "qgemm.weight_only_amx" not in [t.name for t in templates_for(int4(16, 64, 256), amd)]


@pytest.mark.parametrize("bits", [4, 8])
def test_the_real_instructions_in_the_assembly(bits):
    """Built for sapphirerapids: tile config, tile loads, tdpbf16ps, and the int4 decode (vpermw) per group."""
    w = int4(33, 45, 256, asymmetric=True, epilogue="bias,gelu", bits=bits)
    for config in (WeightOnlyAmxSpace(w).default(), WeightOnlyAmxSpace(w).sample(random.Random(3))):
        asm = amx_assembly(schedule, w, config)
        for instruction in ("ldtilecfg", "tilezero", "tileloadd", "tdpbf16ps", "tilestored", "tilerelease",
                            *(("vpermw",) if bits == 4 else ())):
            assert re.search(rf"\b{instruction}\b", asm), (instruction, config)
        assert "autotile_emu_" not in asm


def test_the_group_tile_sums_are_not_zeroed_before_their_tilezero():
    """Each micro-kernel starts its C tiles with tilezero over the group's K: the scheduled TIR keeps no init of the
    tile sums' buffer (TVM's tensorize would keep one: a 4 KiB zero fill per micro-kernel and group)."""
    w = int4(33, 45, 256, group=64, asymmetric=True, epilogue="bias")
    config = WeightOnlyAmxSpace(w).default()
    script = schedule(w, config, emulate=True)["main"].script()
    assert "tilezero" in script
    assert not re.search(r"part(_local)?\[[^\]]*\] = T\.float32\(0", script)
    emulated_check(w, config)


@requires_cpu_flags("amx_tile", "amx_bf16")
def test_real_tiles_match_the_exact_reference(monkeypatch):
    monkeypatch.delenv(amx_permission.EMULATE_ENV, raising=False)
    assert amx_permission.status().usable, amx_permission.status().reason
    w = int4(33, 45, 256, asymmetric=True, epilogue="bias,gelu")
    space, rng = WeightOnlyAmxSpace(w), random.Random(4)
    for config in (space.default(), space.sample(rng), space.sample(rng)):
        check(w, config, amx_build(schedule, w, config, emulate=False))
