"""The Triton quantized-GEMM template without a GPU: W8A8 and weight-only int2..int8 kernels verified
and fp8 x fp8 (tensor or row scales) under the interpreter against ir's reference, and AOT compiles: int8
and weight-only for sm_80 and sm_90, fp8 for sm_89 and sm_90 (sm_80 has no fp8 dot)."""

import pytest

from autotile.codegen.triton.aot import compile_program
from autotile.errors import AutotileError
from autotile.ops import triton_program, triton_space_for
from autotile.ops.qgemm.triton import TritonQGemmConfig
from autotile.ops.qgemm.workload import QGemmWorkload
from autotile.search.triton_tasks import check_config, verify_interpreted

C = TritonQGemmConfig
INTERPRETED = [
    (QGemmWorkload(20, 40, 72, "int8", "int8"), C(16, 16, 32, 1, 2, 2)),
    (QGemmWorkload(33, 40, 72, "int8", "int8", epilogue="bias,relu"), C(32, 16, 16, 2, 2, 2)),
    (QGemmWorkload(20, 40, 72, "int4", group_size=32), C(16, 16, 16, 1, 2, 2)),
    (QGemmWorkload(20, 40, 70, "int4", group_size=32, asymmetric=True, epilogue="residual,gelu"),
     C(16, 32, 32, 1, 2, 2)),
    (QGemmWorkload(17, 24, 50, "int3", group_size=16, asymmetric=True), C(16, 16, 16, 1, 2, 2)),
    (QGemmWorkload(17, 24, 50, "int5", group_size=None, epilogue="bias,silu"), C(16, 16, 32, 1, 2, 2)),
    (QGemmWorkload(17, 24, 64, "int2", group_size=16), C(16, 16, 32, 1, 2, 2)),
    (QGemmWorkload(20, 40, 72, "float8_e4m3", "float8_e4m3", epilogue="bias,gelu"), C(16, 16, 32, 1, 2, 2)),
    (QGemmWorkload(33, 40, 70, "float8_e5m2", "float8_e5m2", fp8_scales="row", epilogue="residual"),
     C(32, 16, 32, 2, 2, 2)),
]


@pytest.fixture(scope="module")
def interpreted():
    return verify_interpreted(INTERPRETED)


@pytest.mark.parametrize("index", range(len(INTERPRETED)), ids=[f"{w.key}-{c.key}" for w, c in INTERPRETED])
def test_interpreted_qgemm_matches_reference(interpreted, index):
    verdict = interpreted[index]
    assert verdict["ok"], verdict["reason"]


def test_qgemm_space_defaults_are_valid_and_fit_sm90():
    for workload in (QGemmWorkload(4096, 4096, 4096, "int8", "int8"), QGemmWorkload(16, 4096, 4096, "int4")):
        space = triton_space_for(workload)
        assert space.valid(space.default())
        assert len(space.features(space.default())) == 17
        info = check_config(workload, space.default(), "sm_90")
        assert info.fits, info


@pytest.mark.parametrize("target", ["sm_80", "sm_90"])
@pytest.mark.parametrize("workload,config", [
    (QGemmWorkload(1024, 1024, 1024, "int8", "int8", epilogue="bias"), C(64, 64, 32, 8, 4, 3)),
    (QGemmWorkload(16, 4096, 4096, "int4", group_size=128), C(16, 64, 32, 8, 4, 3)),
], ids=["w8a8", "int4"])
def test_aot_qgemm_compiles_and_fits(workload, config, target):
    info = check_config(workload, config, target)
    assert info.ok, info.error
    assert info.fits and info.shared > 0
    if workload.w8a8:
        assert info.instructions["mma"] > 0  # int8 tensor cores (IMMA / IGMMA)


def test_aot_fp8_needs_sm89():
    workload = QGemmWorkload(1024, 1024, 1024, "float8_e4m3", "float8_e4m3", fp8_scales="row", epilogue=("bias",))
    program = triton_program(workload, C(64, 64, 64, 8, 4, 3))
    for target in ("sm_89", "sm_90"):
        info = compile_program(program, target)
        assert info.ok and info.fits, info.error
        assert info.instructions["mma"] > 0  # QMMA (sm_89) / QGMMA (sm_90)
    assert not compile_program(program, "sm_80").ok
    a100 = {"kind": "cuda", "name": "NVIDIA A100", "capability": "sm_80", "sms": 108}
    with pytest.raises(AutotileError, match="fp8 GEMMs need sm_89"):
        triton_space_for(workload, a100)


def test_llm_int8_outliers_are_refused_clearly():
    workload = QGemmWorkload(16, 64, 64, "int8", "int8", outlier_threshold=6.0)
    with pytest.raises(AutotileError, match="outlier decomposition is not in the Triton template"):
        triton_space_for(workload)  # before any trial: tuning stops at once with the reason
    plain = QGemmWorkload(16, 64, 64, "int8", "int8")
    with pytest.raises(AutotileError, match="outlier"):
        triton_program(workload, triton_space_for(plain).default())
