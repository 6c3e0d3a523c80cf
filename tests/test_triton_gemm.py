"""The Triton GEMM template without a GPU: kernels verified under the interpreter (in a child process) and
compiled ahead of time for sm_80 and sm_90, with their compile metadata."""

import dataclasses
import random

import pytest

from autotile.codegen.triton.aot import SHARED_LIMIT, compile_program
from autotile.errors import AutotileError
from autotile.ops import triton_program, triton_space_for
from autotile.ops.gemm.triton import TritonGemmConfig, TritonGemmSpace
from autotile.ops.gemm.workload import GemmWorkload
from autotile.search.triton_tasks import check_config, prune, verify_interpreted

C = TritonGemmConfig
# Small shapes that are not multiples of the blocks, every epilogue op, transposes, split-K, GROUP_M
# swizzles, persistent grids, TMA loads and batched GEMMs with a broadcast operand.
INTERPRETED = [
    (GemmWorkload(40, 48, 36), C(16, 16, 16, 1, 1, 2, 2)),
    (GemmWorkload(70, 40, 36, epilogue="bias,gelu"), C(32, 16, 16, 2, 1, 2, 2)),
    (GemmWorkload(40, 48, 100, epilogue="bias,gelu_tanh,cast:float32"), C(16, 16, 16, 1, 4, 2, 2)),
    (GemmWorkload(33, 17, 80, trans_a=True, trans_b=True, epilogue="residual,relu"), C(16, 16, 16, 1, 2, 2, 2)),
    (GemmWorkload(64, 32, 64, batch=3, broadcast="b", trans_a=True, epilogue="residual,silu"),
     C(32, 32, 16, 4, 1, 4, 2, tma=True)),
    (GemmWorkload(50, 40, 32, batch=2, trans_b=True, epilogue="bias,relu"), C(16, 16, 16, 2, 1, 2, 2, True, True)),
    (GemmWorkload(24, 40, 20, batch=2, broadcast="a"), C(16, 16, 16, 1, 1, 2, 2, persistent=True)),
    # 16-bit inputs, fp32 accumulation: fp16 through a persistent TMA kernel, bf16 with split-K and a cast.
    (GemmWorkload(64, 48, 64, batch=2, dtype="float16", trans_b=True, epilogue="bias,gelu"),
     C(32, 16, 16, 1, 1, 2, 2, True, True)),
    (GemmWorkload(40, 48, 64, dtype="bfloat16", epilogue="residual,cast:float32"), C(16, 32, 32, 1, 2, 2, 2)),
    # tf32 (float32 tensors, tf32 products; the interpreter computes them in fp32, within tf32's tolerance).
    (GemmWorkload(40, 48, 72, dtype="tf32", epilogue="bias,relu"), C(16, 32, 16, 1, 2, 2, 2)),
]


@pytest.fixture(scope="module")
def interpreted():
    return verify_interpreted(INTERPRETED)


@pytest.mark.parametrize("index", range(len(INTERPRETED)), ids=[f"{w.key}-{c.key}" for w, c in INTERPRETED])
def test_interpreted_kernel_matches_reference(interpreted, index):
    verdict = interpreted[index]
    assert verdict["ok"], verdict["reason"]


def test_space_samples_are_valid_canonical_and_lower():
    workload = GemmWorkload(1000, 700, 300, epilogue="bias,relu")
    space = triton_space_for(workload)  # no GPU: an H100's space
    assert isinstance(space, TritonGemmSpace) and space.arch == 90
    rng = random.Random(0)
    for _ in range(50):
        config = space.sample(rng)
        assert space.valid(config) and space.canonical(config) == config
        assert len(space.features(config)) == len(space.features(space.default()))
        assert "def autotile_gemm(" in triton_program(workload, config).source
    default = space.default()
    assert not default.tma  # IEEE fp32 dots are FMA work: TMA's swizzled tiles only add register pressure
    half = triton_space_for(GemmWorkload(1024, 768, 512, dtype="float16")).default()
    assert half.tma and half.persistent  # tensor cores on sm_90: a persistent grid fed by TMA


def test_space_respects_the_target():
    unaligned = GemmWorkload(64, 63, 64)  # B rows of 63 fp32 are not 16-byte aligned: no TMA descriptor
    assert not TritonGemmSpace(unaligned).valid(C(tma=True))
    aligned = GemmWorkload(64, 64, 64)
    assert TritonGemmSpace(aligned, arch=90).valid(C(tma=True))
    assert not TritonGemmSpace(aligned, arch=80).valid(C(tma=True))
    cuda = {"kind": "cuda", "name": "NVIDIA A100", "capability": "sm_80", "sms": 108}
    assert triton_space_for(aligned, cuda).arch == 80
    assert triton_space_for(aligned, cuda).default().tma is False
    # Split-K partials of a large output would need GBs of workspace; a skinny output is what it is for.
    assert not TritonGemmSpace(GemmWorkload(8192, 8192, 8192)).valid(C(64, 64, 32, 8, 16, 4, 3))
    assert TritonGemmSpace(GemmWorkload(128, 128, 8192)).valid(C(64, 64, 32, 8, 16, 4, 3))
    tiny = TritonGemmSpace(GemmWorkload(8, 8, 8)).canonical(C(128, 256, 128, 8, 8))
    assert (tiny.block_m, tiny.block_n, tiny.block_k, tiny.group_m, tiny.split_k) == (16, 16, 16, 1, 1)


AOT = [
    (GemmWorkload(512, 512, 512, epilogue="bias,gelu"), C(64, 64, 32, 8, 1, 4, 3)),
    (GemmWorkload(256, 256, 1024, epilogue="residual"), C(32, 64, 32, 8, 4, 4, 2)),
    (GemmWorkload(256, 192, 128, batch=2, broadcast="b", trans_b=True), C(32, 32, 32, 4, 1, 4, 3, persistent=True)),
]


@pytest.mark.parametrize("target", ["sm_80", "sm_90"])
@pytest.mark.parametrize("index", range(len(AOT)))
def test_aot_compile_reports_metadata(index, target):
    workload, config = AOT[index]
    info = check_config(workload, config, target)
    assert info.ok, info.error
    assert info.fits and 0 < info.shared <= SHARED_LIMIT[info.arch]
    assert 0 < info.registers <= 255
    assert info.instructions["ffma"] > 0  # IEEE fp32: FMA, never tf32 tensor cores
    assert info.instructions["mma"] == 0
    assert (info.instructions["atom"] > 0) == (config.split_k > 1)  # the split-K arrival counter


@pytest.mark.parametrize("workload", [
    GemmWorkload(2048, 2048, 1024, dtype="float16", epilogue="bias,gelu"),
    GemmWorkload(1024, 512, 768, batch=4, broadcast="b", trans_a=True, dtype="float16", epilogue="residual,silu"),
], ids=["2d", "batched-3d-descriptors"])
def test_aot_persistent_tma_kernel_on_sm90(workload):
    default = triton_space_for(workload).default()
    assert default.tma and default.persistent
    info = check_config(workload, default, "sm_90")
    assert info.fits, info.error
    assert info.instructions["tma"] > 0  # the loads go through the tensor memory accelerator
    assert info.instructions["mma"] > 0  # warpgroup MMA (HGMMA) on fp16 tensor cores


def test_aot_bf16_uses_tensor_cores_on_sm80():
    workload = GemmWorkload(1024, 1024, 1024, dtype="bfloat16", epilogue="bias")
    info = check_config(workload, C(128, 128, 32, 8, 1, 4, 3), "sm_80")
    assert info.fits, info.error
    assert info.instructions["mma"] > 0 and info.instructions["ldgsts"] > 0  # HMMA fed by cp.async


def test_aot_results_are_cached_on_disk():
    workload, config = AOT[0]
    program = triton_program(workload, config)
    first = compile_program(program, "sm_90")
    again = compile_program(program, "sm_90")
    assert again == first  # the same record, read back from the cache


def test_prune_drops_configs_that_do_not_fit():
    workload = GemmWorkload(1024, 1024, 1024)
    small = C(32, 32, 32, 8, 1, 4, 2)
    huge = C(256, 128, 128, 8, 1, 8, 4)  # 3 x 192 KiB of fp32 operand tiles in flight
    assert prune(workload, [small, huge], "sm_80") == [small]


def test_compile_error_is_a_result_not_an_exception():
    workload = GemmWorkload(64, 64, 64)
    program = triton_program(workload, C(16, 16, 16, 1, 1, 2, 2))
    source = program.source.replace("tl.program_id(0)", "tl.program_id(0) + undefined_name")
    broken = dataclasses.replace(program, source=source)
    info = compile_program(broken, "sm_90")
    assert not info.ok and not info.fits and info.error


def test_tf32_is_float32_data_with_a_tf32_tolerance():
    from autotile.ir.reference import random_inputs, tolerance

    workload = GemmWorkload(64, 32, 128, dtype="tf32", epilogue="bias")
    assert workload.dtype == "tfloat32" and workload.key.endswith("_tfloat32_nn_bias")
    assert workload.out_dtype == "float32" and workload.input_dtype("A") == "float32"
    assert all(t.dtype.is_floating_point and t.element_size() == 4 for t in random_inputs(workload, 0))
    assert tolerance("tfloat32", 128)[0] > 100 * tolerance("float32", 128)[0]  # 10-bit mantissa, not 23
    assert 'input_precision="tf32"' in triton_program(workload, C(32, 32, 32, 1, 1, 4, 2)).source
    assert 'input_precision="ieee"' in triton_program(GemmWorkload(64, 32, 128), C(32, 32, 32, 1, 1, 4, 2)).source
    with pytest.raises(AutotileError, match="compute precision"):
        GemmWorkload(64, 32, 128, epilogue="cast:tfloat32")


@pytest.mark.parametrize("target", ["sm_80", "sm_90"])
def test_aot_tf32_uses_tf32_tensor_cores(target):
    workload = GemmWorkload(256, 256, 256, dtype="tfloat32", epilogue="bias")
    info = check_config(workload, C(64, 64, 32, 8, 1, 4, 3), target)
    assert info.fits, info.error
    # HMMA.1688.F32.TF32 on sm_80, HGMMA.64x64x8.F32.TF32 (warpgroup MMA) on sm_90: products in tf32.
    assert info.instructions["mma"] > 0 and info.instructions["mma_tf32"] == info.instructions["mma"]
    fp32 = check_config(GemmWorkload(256, 256, 256, epilogue="bias"), C(64, 64, 32, 8, 1, 4, 3), target)
    assert fp32.instructions["mma_tf32"] == 0 and fp32.instructions["ffma"] > 0  # float32 stays IEEE


def test_tf32_on_the_cpu_backend_is_a_clear_error(tmp_path):
    from autotile.api import kernel, tune

    workload = GemmWorkload(64, 64, 64, dtype="tfloat32")
    for call in (lambda: tune(workload, trials=1, db=tmp_path / "t.db", backend="tvm"),
                 lambda: kernel(workload, db=tmp_path / "t.db", backend="tvm")):
        with pytest.raises(AutotileError, match="TensorFloat-32.*use dtype float32"):
            call()
    from click.testing import CliRunner

    from autotile.cli import main

    done = CliRunner().invoke(main, ["tune", "gemm", "--shape", "64x64x64", "--dtype", "tfloat32", "--backend", "tvm",
                                     "--db", str(tmp_path / "t.db")])
    assert done.exit_code == 2 and "TensorFloat-32" in done.output and "Traceback" not in done.output
