"""The conv2d.winograd template: the transform matrices, where it applies (and competes with conv2d.direct), and
real TVM builds checked against the float64 reference (odd sizes, channel counts that are not whole vectors, every
epilogue, both layouts, batch 2, the weight transformed ahead)."""

import random
import re
from fractions import Fraction

import pytest
import torch
from tvm_kernels import assembly, check, compiled

from autotile.ir.reference import random_inputs
from autotile.ops import default_template, templates_for
from autotile.ops.conv2d.direct import WINOGRAD, Conv2dConfig, Conv2dSpace
from autotile.ops.conv2d.winograd import WinogradConfig, WinogradSpace
from autotile.ops.conv2d.winograd_tvm import MATRICES
from autotile.ops.conv2d.workload import Conv2dWorkload


def configured(workload, **knobs):
    space = WinogradSpace(workload)
    config = space.canonical(WinogradConfig(**{**WinogradConfig().to_dict(), **knobs}))
    assert space.valid(config), config.key
    return config


@pytest.mark.parametrize("m", [2, 4])
def test_matrices_compute_the_correlation_exactly(m):
    # 1-D F(m, 3), exactly: A^T [(G g) * (B^T d)] = the m outputs of correlating d (m + 2 values) with g (3).
    BT, G, AT = MATRICES[m]
    rng = random.Random(m)
    for _ in range(5):
        d = [Fraction(rng.randint(-9, 9)) for _ in range(m + 2)]
        g = [Fraction(rng.randint(-9, 9)) for _ in range(3)]
        u = [sum(G[i][j] * g[j] for j in range(3)) for i in range(m + 2)]
        v = [sum(BT[i][j] * d[j] for j in range(m + 2)) for i in range(m + 2)]
        y = [sum(AT[i][j] * u[j] * v[j] for j in range(m + 2)) for i in range(m)]
        assert y == [sum(d[i + j] * g[j] for j in range(3)) for i in range(m)]


def names(workload) -> list[str]:
    return [t.name for t in templates_for(workload)]


def test_applies_only_where_it_computes_the_convolution():
    base = dict(n=1, c=16, h=9, w=9, k=16, r=3, s=3, padding=1)
    assert names(Conv2dWorkload(**base)) == ["conv2d.direct", "conv2d.winograd"]
    assert names(Conv2dWorkload(**{**base, "layout": "nhwc", "padding": 0})) == ["conv2d.direct", "conv2d.winograd"]
    assert WinogradSpace(Conv2dWorkload(**base)).domains["template"] == list(WINOGRAD)
    for other in (dict(stride=2), dict(stride=(1, 2)), dict(dilation=2), dict(r=1, s=1, padding=0), dict(r=5, s=5),
                  dict(s=1), dict(groups=2), dict(groups=16)):
        assert names(Conv2dWorkload(**{**base, **other})) == ["conv2d.direct"], other
    # conv2d.direct never offers or accepts a Winograd kernel: they are the other template's configs
    direct = Conv2dSpace(Conv2dWorkload(**base))
    assert direct.domains["template"] == ["nchwc", "gemm"]
    for template in WINOGRAD:
        assert not direct.valid(Conv2dConfig(template=template, oc_bn=16, ow_bn=4))


def test_canonical_and_valid():
    w = Conv2dWorkload(1, 24, 10, 10, 40, 3, 3, padding=1)
    space = WinogradSpace(w)
    rng = random.Random(0)
    seen = set()
    for _ in range(300):
        config = space.sample(rng)
        assert space.canonical(config) == config and space.valid(config) and type(config) is WinogradConfig
        seen.add(config.template)
    assert set(WINOGRAD) == seen
    one = space.canonical(WinogradConfig(template="winograd4", ic_bn=4, oh_bn=3, rorder="rsc", pack_input=False,
                                       epilogue_at="tile", ow_bn=28, oc_bn=64))
    assert (one.ic_bn, one.oh_bn, one.rorder, one.pack_input, one.epilogue_at) == (16, 1, "crs", True, "tile")
    assert one.ow_bn == 9 and one.oc_bn == 48  # 3 x 3 tiles; 40 channels in whole vectors
    assert not space.valid(WinogradConfig(template="winograd", oc_bn=64, ow_bn=8))  # 32 accumulators + 4 + 1
    assert space.default().template == "winograd4" and default_template(w).name == "conv2d.winograd"
    few = Conv2dWorkload(1, 8, 10, 10, 8, 3, 3, padding=1)  # few channels: the direct kernel is the default
    assert default_template(few).name == "conv2d.direct" and Conv2dSpace(few).default().template == "nchwc"
    assert space.canonical(WinogradConfig(template="winograd", ic_bn=16)).ic_bn == 16
    narrow = WinogradSpace(Conv2dWorkload(1, 3, 10, 10, 8, 3, 3))
    assert narrow.canonical(WinogradConfig(template="winograd")).ic_bn == 4


@pytest.mark.parametrize("template", list(WINOGRAD))
@pytest.mark.parametrize("case", [
    # odd output sizes (not whole tiles), C and K not whole vectors, batch 2
    (Conv2dWorkload(2, 7, 11, 9, 19, 3, 3, padding=1, epilogue="bias,relu"), dict(ow_bn=5, oc_bn=32)),
    (Conv2dWorkload(1, 20, 13, 10, 24, 3, 3, padding=(1, 0), epilogue="bias,residual,relu"),
     dict(ow_bn=6, oc_bn=16, outer="pk", epilogue_at="root")),
    (Conv2dWorkload(2, 16, 9, 7, 16, 3, 3, layout="nhwc", epilogue="residual"),
     dict(ow_bn=4, oc_bn=16, epilogue_at="row")),
    (Conv2dWorkload(1, 33, 6, 15, 17, 3, 3, padding=2, layout="nhwc", epilogue="bias,relu"),
     dict(ow_bn=3, oc_bn=32, epilogue_at="root")),
])
def test_builds_match_the_reference(template, case):
    workload, knobs = case
    check(workload, configured(workload, template=template, unroll=4, **knobs))


def test_realistic_layer_within_the_fp32_tolerance():
    # K = 64 * 9: the full reduction of a ResNet stage; the default (F(4x4)) is verified like every candidate.
    w = Conv2dWorkload(1, 64, 20, 20, 64, 3, 3, padding=1, epilogue="bias,relu")
    config = WinogradSpace(w).default()
    assert config.template == "winograd4" and default_template(w).name == "conv2d.winograd"
    kernel = check(w, config)
    inputs = random_inputs(w, 7)
    torch.testing.assert_close(kernel(*inputs).double(), w.reference(*inputs), rtol=1e-5, atol=64 * 9 * 2e-6)


def test_weight_transformed_ahead_of_time():
    from autotile.ops.conv2d.winograd_tvm import prepacked_operands

    w = Conv2dWorkload(1, 12, 9, 10, 20, 3, 3, padding=1, epilogue="bias,relu", const_weight=True)
    config = configured(w, template="winograd4", ow_bn=4, oc_bn=32)
    assert prepacked_operands(w, config) == {"weight": (36, 1, 16, 32)}  # [positions, K blocks, C (padded), oc_bn]
    kernel = compiled(w, config)
    inputs = random_inputs(w, 3)
    torch.testing.assert_close(kernel(*inputs).double(), w.reference(*inputs), rtol=1e-5, atol=1e-3)
    inputs[1].mul_(-0.5)  # changed in place: transformed again
    torch.testing.assert_close(kernel(*inputs).double(), w.reference(*inputs), rtol=1e-5, atol=1e-3)


def test_gemm_inner_loop_is_broadcast_fma_on_zmm():
    w = Conv2dWorkload(1, 64, 16, 16, 64, 3, 3, padding=1)
    config = configured(w, template="winograd4", ow_bn=6, oc_bn=32, unroll=4)
    asm = assembly(w, config)
    # 6 tiles x 2 vectors x 4 unrolled channels: 48 FMAs and 24 broadcasts of V per iteration, 12 accumulators.
    assert len(re.findall(r"vfmadd231ps\s+%zmm\d+, %zmm\d+, %zmm\d+", asm)) >= 48
    assert len(re.findall(r"vbroadcastss\s+-?\d*\(%r", asm)) >= 24
