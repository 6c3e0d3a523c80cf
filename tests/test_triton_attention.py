"""The Triton FlashAttention-2 template without a GPU: verified under the interpreter against the float64
reference (causal in both alignments, GQA, ragged lengths, head_dim not a power of two, bfloat16 with P rounded
as the tensor-core kernel rounds it) and compiled ahead of time for sm_80 and sm_90."""

import random

import pytest

from autotile.codegen.triton.aot import SHARED_LIMIT
from autotile.ops import triton_program, triton_space_for
from autotile.ops.attention.triton import TritonAttentionConfig
from autotile.ops.attention.workload import AttentionWorkload
from autotile.search.triton_tasks import check_config, verify_interpreted

C = TritonAttentionConfig
INTERPRETED = [
    (AttentionWorkload(1, 2, 40, 16), C(16, 16, 2, 2)),
    (AttentionWorkload(1, 2, 40, 24, causal=True), C(16, 16, 2, 2, True, True)),
    (AttentionWorkload(2, 4, 33, 16, seq_kv=50, kv_heads=2, causal=True, causal_align="bottom-right"),
     C(16, 32, 2, 2)),
    # seq_q > seq_kv, bottom-right: the first 30 query rows see no key and must be zeros.
    (AttentionWorkload(1, 2, 50, 16, seq_kv=20, causal=True, causal_align="bottom-right"), C(16, 16, 2, 2, False)),
    (AttentionWorkload(1, 4, 20, 32, seq_kv=45, kv_heads=1, scale=0.5), C(32, 16, 4, 2)),
    (AttentionWorkload(1, 2, 40, 24, causal=True, dtype="bfloat16"), C(16, 16, 2, 2, True, True)),
    (AttentionWorkload(2, 4, 33, 16, seq_kv=50, kv_heads=2, causal=True, causal_align="bottom-right",
                       dtype="bfloat16"), C(16, 32, 2, 2, False)),
]


@pytest.fixture(scope="module")
def interpreted():
    return verify_interpreted(INTERPRETED)


@pytest.mark.parametrize("index", range(len(INTERPRETED)), ids=[f"{w.key}-{c.key}" for w, c in INTERPRETED])
def test_interpreted_attention_matches_reference(interpreted, index):
    verdict = interpreted[index]
    assert verdict["ok"], verdict["reason"]


def test_attention_space():
    workload = AttentionWorkload(2, 8, 1000, 80, seq_kv=1200, kv_heads=2, causal=True)
    space = triton_space_for(workload)
    rng = random.Random(0)
    for _ in range(30):
        config = space.sample(rng)
        assert space.valid(config) and space.canonical(config) == config
        assert "tl.math.exp2" in triton_program(workload, config).source
    assert space.valid(space.default())
    assert len(space.features(space.default())) == len(space.features(space.sample(rng)))


AOT = [
    (AttentionWorkload(1, 8, 1024, 64, causal=True), C(32, 32, 4, 2, True, True)),
    (AttentionWorkload(1, 8, 500, 80, seq_kv=600, kv_heads=2, causal=True, causal_align="bottom-right"),
     C(16, 32, 4, 2)),
    (AttentionWorkload(1, 8, 1024, 64, causal=True, dtype="bfloat16"), C(128, 64, 8, 2, True, True)),
]


@pytest.mark.parametrize("target", ["sm_80", "sm_90"])
@pytest.mark.parametrize("index", range(len(AOT)))
def test_aot_attention_compiles_and_fits(index, target):
    workload, config = AOT[index]
    info = check_config(workload, config, target)
    assert info.ok, info.error
    assert 0 < info.shared <= SHARED_LIMIT[info.arch] and 0 < info.registers <= 255
    assert info.instructions["ffma"] > 0
    if workload.dtype == "bfloat16":
        assert info.instructions["mma"] > 0  # both dots on tensor cores


def test_default_attention_config_fits_sm90():
    workload = AttentionWorkload(1, 8, 1024, 64, causal=True)
    info = check_config(workload, triton_space_for(workload).default(), "sm_90")
    assert info.fits, info
