"""bfloat16 flash attention on AMX tiles (attention.flash_amx).

Where the CPU has no AMX, kernels run with the tile instructions emulated and are checked against the float64
reference of the bfloat16 values (P is rounded to bfloat16 once, as for P V on tiles it must be); the real
instructions are checked in the assembly built for Sapphire Rapids and run only on a CPU with AMX."""

import random
import re

import pytest
import torch
from tvm_kernels import amx_assembly, amx_build, check, check_emulated, requires_cpu_flags

from autotile.codegen.tvm import amx_permission
from autotile.ir.reference import compare, random_inputs
from autotile.ops import default_template, templates_for
from autotile.ops.attention.flash_amx import AmxAttentionConfig, AmxAttentionSpace
from autotile.ops.attention.flash_amx_tvm import schedule
from autotile.ops.attention.workload import AttentionWorkload

CASES = {
    "prime lengths": dict(batch=1, heads=3, seq_q=37, head_dim=32, seq_kv=53),
    "causal, prime": dict(batch=1, heads=2, seq_q=67, head_dim=64, causal=True),
    "seq 1": dict(batch=2, heads=2, seq_q=1, head_dim=64),
    "decode, gqa": dict(batch=2, heads=4, seq_q=1, head_dim=64, seq_kv=101, kv_heads=2, causal=True,
                        causal_align="bottom-right"),
    "gqa, causal, d128": dict(batch=1, heads=4, seq_q=41, head_dim=128, kv_heads=2, causal=True),
    "rows that see no key": dict(batch=1, heads=2, seq_q=40, head_dim=32, seq_kv=8, causal=True,
                                 causal_align="bottom-right"),
}


@pytest.fixture(autouse=True)
def emulated(monkeypatch):
    """Emulated tile instructions (tests that need them real unset this)."""
    monkeypatch.setenv(amx_permission.EMULATE_ENV, "1")


def emulated_check(w, config):
    return check_emulated(schedule, w, config)


@pytest.mark.parametrize("name", list(CASES))
def test_emulated_tiles_match_the_reference(name):
    w = AttentionWorkload(**CASES[name], dtype="bfloat16")
    space, rng = AmxAttentionSpace(w), random.Random(len(name))
    for config in {space.default(), space.sample(rng), space.sample(rng)}:
        kernel = emulated_check(w, config)
    q, k, v = random_inputs(w, 3)
    out = kernel(q, k, v, out=torch.full(w.output_shape, float("nan"), dtype=torch.bfloat16))
    assert torch.isfinite(out).all()


def test_every_knob_value():
    w = AttentionWorkload(1, 2, 70, 64, seq_kv=130, causal=True, dtype="bfloat16")
    space = AmxAttentionSpace(w)
    for q_tiles in (1, 2):
        for block_kv in (32, 64, 128):
            config = space.canonical(AmxAttentionConfig(q_tiles, block_kv, q_tiles))
            assert (config.q_tiles, config.block_kv) == (q_tiles, block_kv)
            emulated_check(w, config)


def test_operands_at_an_offset_and_strided_from_a_fused_projection():
    """q, k, v as views of one (B, S, 3, H, D) projection, 2 bytes into their storage; out strided too."""
    w = AttentionWorkload(2, 4, 37, 32, causal=True, dtype="bfloat16")
    kernel = emulated_check(w, AmxAttentionSpace(w).default())
    storage = torch.randn(2 * 37 * 3 * 4 * 32 + 1).bfloat16()
    qkv = storage[1:].view(2, 37, 3, 4, 32).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    out = torch.full((2, 37, 4, 32), float("nan"), dtype=torch.bfloat16).transpose(1, 2)
    assert not q.is_contiguous() and q.data_ptr() % 64
    assert kernel(q, k, v, out=out) is out
    reference = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    verdict = compare(w, out, reference)
    assert verdict.ok, verdict.reason


def test_offered_for_bfloat16_with_whole_tile_rows_of_head_dim(monkeypatch):
    w = AttentionWorkload(1, 2, 64, 64, dtype="bfloat16")
    assert default_template(w).name == "attention.flash_amx"
    for other in (AttentionWorkload(1, 2, 64, 64), AttentionWorkload(1, 2, 64, 48, dtype="bfloat16")):
        assert "attention.flash_amx" not in [t.name for t in templates_for(other)], other.key
    monkeypatch.delenv(amx_permission.EMULATE_ENV)
    amd = {"flags": ["avx512f", "avx512_bf16"]}
    assert "attention.flash_amx" not in [t.name for t in templates_for(w, amd)]


def test_the_real_instructions_in_the_assembly(monkeypatch):
    """Built for sapphirerapids: the tile config per work item, tile loads, tdpbf16ps for S and P V, stores;
    no exp library calls."""
    monkeypatch.delenv(amx_permission.EMULATE_ENV)
    w = AttentionWorkload(1, 4, 100, 64, causal=True, dtype="bfloat16")
    asm = amx_assembly(schedule, w, AmxAttentionSpace(w).default())
    for instruction in ("ldtilecfg", "tilezero", "tileloadd", "tdpbf16ps", "tilestored", "tilerelease"):
        assert re.search(rf"\b{instruction}\b", asm), instruction
    calls = set(re.findall(r"call\w*\s+(\S+)", asm))
    assert not [c for c in calls if "exp" in c or "emu" in c], calls


@requires_cpu_flags("amx_tile", "amx_bf16")
def test_real_tiles_match_the_reference(monkeypatch):
    monkeypatch.delenv(amx_permission.EMULATE_ENV)
    assert amx_permission.status().usable, amx_permission.status().reason
    for name in ("causal, prime", "decode, gqa"):
        w = AttentionWorkload(**CASES[name], dtype="bfloat16")
        space = AmxAttentionSpace(w)
        for config in {space.default(), space.sample(random.Random(1))}:
            check(w, config, amx_build(schedule, w, config, emulate=False))
