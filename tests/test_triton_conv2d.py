"""The Triton implicit-GEMM conv2d template without a GPU: verified under the interpreter (NHWC with stride,
padding, dilation, groups, depthwise, every epilogue op; NCHW by strides) and compiled for sm_80 and sm_90."""

import random

import pytest

from autotile.ops import triton_program, triton_space_for
from autotile.ops.conv2d.triton import TritonConv2dConfig
from autotile.ops.conv2d.workload import Conv2dWorkload
from autotile.search.triton_tasks import check_config, verify_interpreted

C = TritonConv2dConfig
INTERPRETED = [
    (Conv2dWorkload(2, 8, 9, 9, 16, 3, 3, padding=1, layout="nhwc"), C(32, 16, 16, 1, 2, 2, "rsc")),
    (Conv2dWorkload(2, 8, 9, 9, 16, 3, 3, padding=1, layout="nhwc", epilogue="bias,relu"),
     C(32, 16, 16, 1, 2, 2, "flat")),
    (Conv2dWorkload(1, 3, 11, 10, 16, 3, 3, stride=2, padding=(1, 2), layout="nhwc",
                    epilogue="bias,residual,gelu"), C(16, 16, 16, 1, 2, 2, "flat")),
    (Conv2dWorkload(1, 8, 10, 10, 8, 3, 3, dilation=2, padding=2, groups=2, layout="nhwc", epilogue="silu"),
     C(16, 16, 16, 2, 2, 2, "rsc")),
    (Conv2dWorkload(1, 16, 6, 6, 24, 1, 1, layout="nchw", epilogue="bias"), C(16, 16, 16, 4, 2, 2, "flat")),
    (Conv2dWorkload(1, 8, 7, 7, 8, 3, 3, padding=1, groups=8, layout="nhwc"), C(16, 16, 16, 1, 2, 2, "flat")),
]


@pytest.fixture(scope="module")
def interpreted():
    return verify_interpreted(INTERPRETED)


@pytest.mark.parametrize("index", range(len(INTERPRETED)), ids=[f"{w.key}-{c.key}" for w, c in INTERPRETED])
def test_interpreted_conv2d_matches_reference(interpreted, index):
    verdict = interpreted[index]
    assert verdict["ok"], verdict["reason"]


def test_conv2d_space():
    workload = Conv2dWorkload(8, 64, 56, 56, 64, 3, 3, padding=1, layout="nhwc", epilogue="bias,relu")
    space = triton_space_for(workload)
    rng = random.Random(0)
    for _ in range(30):
        config = space.sample(rng)
        assert space.valid(config) and space.canonical(config) == config
        assert "def autotile_conv2d(" in triton_program(workload, config).source
    assert space.default().k_loop == "rsc"
    first_layer = Conv2dWorkload(1, 3, 224, 224, 64, 7, 7, stride=2, padding=3, layout="nhwc")
    assert triton_space_for(first_layer).default().k_loop == "flat"  # 3 channels: one flat R*S*C loop


AOT = [
    (Conv2dWorkload(8, 64, 56, 56, 64, 3, 3, padding=1, layout="nhwc", epilogue="bias,relu"),
     C(64, 64, 32, 8, 4, 3, "rsc")),
    (Conv2dWorkload(1, 3, 224, 224, 64, 7, 7, stride=2, padding=3, layout="nhwc"), C(64, 32, 32, 8, 4, 2, "flat")),
]


@pytest.mark.parametrize("target", ["sm_80", "sm_90"])
@pytest.mark.parametrize("index", range(len(AOT)))
def test_aot_conv2d_compiles_and_fits(index, target):
    workload, config = AOT[index]
    info = check_config(workload, config, target)
    assert info.ok, info.error
    assert info.fits and info.shared > 0 and info.registers > 0
