"""Attention: the workload, its reference, the config space, and real TVM builds checked against the reference."""

import math
import random
import re
from types import SimpleNamespace

import broken_kernels
import pytest
import torch
import torch.nn.functional as F
from tvm_kernels import assembly, check

import autotile
from autotile.db.device import cpu_fingerprint
from autotile.db.store import TuningDB
from autotile.errors import AutotileError
from autotile.ir.reference import compare, random_inputs
from autotile.ops import space_for, workload_from_dict
from autotile.ops.attention.flash import AttentionConfig, AttentionSpace
from autotile.ops.attention.workload import AttentionWorkload
from autotile.search.failures import Failure
from autotile.search.measure import Measurer

# -- the workload ------------------------------------------------------------------------------

def test_defaults_are_resolved_so_equal_workloads_have_equal_keys():
    a = AttentionWorkload(1, 12, 512, 64)
    b = AttentionWorkload(1, 12, 512, 64, seq_kv=512, kv_heads=12, scale=0.125)
    assert a == b and a.key == b.key
    assert a.key == "attention_b1_h12_q512_kv512_d64_kvh12_full_s0.125_float32"
    gqa = AttentionWorkload(1, 32, 2048, 128, kv_heads=8, causal=True)
    assert gqa.key == "attention_b1_h32_q2048_kv2048_d128_kvh8_causal-tl_s0.0883883476_float32"
    bottom_right = AttentionWorkload(1, 1, 4, 8, causal=True, causal_align="bottom-right")
    assert bottom_right.key.endswith("causal-br_s0.353553391_float32")
    assert list(a.operand_shapes()) == ["q", "k", "v", "out"]
    assert gqa.operand_shapes()["k"] == (1, 8, 2048, 128) and gqa.output_shape == (1, 32, 2048, 128)


def test_round_trip_through_dicts():
    w = AttentionWorkload(2, 8, 100, 32, seq_kv=70, kv_heads=2, causal=True, causal_align="bottom-right", scale=0.3)
    d = w.to_dict()
    assert d["op"] == "attention" and d["seq_kv"] == 70 and d["scale"] == 0.3
    assert workload_from_dict(d) == w and AttentionWorkload.from_dict(d).key == w.key


def test_flops_count_only_unmasked_pairs():
    assert AttentionWorkload(2, 3, 10, 8).flops == 4 * 2 * 3 * 8 * 100
    assert AttentionWorkload(1, 1, 10, 8, causal=True).flops == 4 * 8 * 55  # 1 + 2 + ... + 10 keys
    # bottom-right, 4 queries over 10 keys: rows see 7, 8, 9, 10 keys
    assert AttentionWorkload(1, 1, 4, 8, seq_kv=10, causal=True, causal_align="bottom-right").flops == 4 * 8 * 34
    # bottom-right, 10 queries over 4 keys: the first 6 rows see nothing
    assert AttentionWorkload(1, 1, 10, 8, seq_kv=4, causal=True, causal_align="bottom-right").flops == 4 * 8 * 10


@pytest.mark.parametrize("kwargs, message", [
    (dict(heads=6, kv_heads=4), "heads=6 is not divisible by kv_heads=4"),
    (dict(seq_q=0), "seq_q must be a positive integer, got 0"),
    (dict(head_dim=-64), "head_dim must be a positive integer"),
    (dict(seq_kv=0), "seq_kv must be a positive integer"),
    (dict(kv_heads=2.5), "kv_heads must be a positive integer"),
    (dict(causal=True, causal_align="diagonal"), "causal_align must be one of top-left, bottom-right"),
    (dict(scale=0.0), "scale must be a positive finite number, got 0.0"),
    (dict(scale=-1.0), "scale must be a positive finite number"),
    (dict(scale=float("nan")), "scale must be a positive finite number, got nan"),
    (dict(dtype="float16"), "dtype 'float16' is not supported by the attention templates yet; supported: float32, "
                            "bfloat16"),
    (dict(dtype="float33"), "float33"),
])
def test_bad_workloads_are_clear_errors(kwargs, message):
    args = dict(batch=1, heads=6, seq_q=16, head_dim=64) | kwargs
    with pytest.raises(AutotileError, match=message):
        AttentionWorkload(**args)


# -- the reference -----------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_reference_matches_torch_sdpa(causal, kv_heads):
    """torch's is_causal is the top-left alignment; GQA is SDPA on repeated kv heads."""
    w = AttentionWorkload(2, 4, 19, 16, seq_kv=19 if causal else 23, kv_heads=kv_heads, causal=causal, scale=0.2)
    q, k, v = random_inputs(w, 0)
    group = w.heads // w.kv_heads
    expected = F.scaled_dot_product_attention(q.double(), k.double().repeat_interleave(group, 1),
                                              v.double().repeat_interleave(group, 1), is_causal=causal, scale=0.2)
    torch.testing.assert_close(w.reference(q, k, v), expected, rtol=1e-12, atol=1e-12)


def test_bottom_right_reference_and_rows_that_see_no_key():
    """Bottom-right: query i sees keys j <= i + seq_kv - seq_q; with more queries than keys the first rows
    see nothing and are defined as zeros (FlashAttention's convention), never NaN."""
    w = AttentionWorkload(1, 2, 9, 8, seq_kv=5, causal=True, causal_align="bottom-right")
    q, k, v = random_inputs(w, 1)
    out = w.reference(q, k, v)
    assert torch.isfinite(out).all()
    assert (out[:, :, :4] == 0).all() and (out[:, :, 4:].abs().sum(-1) > 0).all()
    mask = torch.arange(5)[None, :] <= torch.arange(9)[:, None] - 4
    expected = F.scaled_dot_product_attention(q.double()[:, :, 4:], k.double(), v.double(), attn_mask=mask[4:])
    torch.testing.assert_close(out[:, :, 4:], expected, rtol=1e-12, atol=1e-12)
    # fewer queries than keys: the last query sees every key, as in decoding
    wide = AttentionWorkload(1, 1, 3, 8, seq_kv=7, causal=True, causal_align="bottom-right")
    q, k, v = random_inputs(wide, 2)
    full = AttentionWorkload(1, 1, 3, 8, seq_kv=7).reference(q, k, v)
    torch.testing.assert_close(wide.reference(q, k, v)[:, :, -1], full[:, :, -1])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("seq_kv", [512, 8192])
def test_tolerance_catches_a_dropped_key_block(seq_kv, dtype):
    """Dropping 64 keys changes the output by more than the tolerance, even at long sequences: bfloat16 attention
    computes in float32 and rounds once, so it is held to float32's tolerance plus that rounding."""
    w = AttentionWorkload(1, 2, 16, 64, seq_kv=seq_kv, dtype=dtype)
    q, k, v = random_inputs(w, 0)
    keep = torch.cat([torch.arange(64), torch.arange(128, seq_kv)])
    dropped = AttentionWorkload(1, 2, 16, 64, seq_kv=seq_kv - 64).reference(q, k[:, :, keep], v[:, :, keep])
    reference = w.reference(q, k, v)
    out_dtype = getattr(torch, dtype)
    assert not compare(w, dropped.to(out_dtype), reference).ok
    assert compare(w, reference.to(out_dtype), reference).ok  # rounding the exact result alone passes


def test_bfloat16_reference_is_float64_from_the_bfloat16_values():
    w = AttentionWorkload(1, 4, 19, 16, kv_heads=2, causal=True, dtype="bfloat16")
    assert w.key.endswith("_causal-tl_s0.25_bfloat16") and w.accumulate_dtype == "float32"
    q, k, v = random_inputs(w, 0)
    assert q.dtype == torch.bfloat16
    exact = AttentionWorkload(1, 4, 19, 16, kv_heads=2, causal=True).reference(q.float(), k.float(), v.float())
    assert torch.equal(w.reference(q, k, v), exact)


# -- the config space --------------------------------------------------------------------------

def test_space_is_found_by_op_and_samples_are_valid_and_canonical():
    w = AttentionWorkload(2, 4, 37, 24, seq_kv=53, kv_heads=2, causal=True)
    space = space_for(w)
    assert isinstance(space, AttentionSpace)
    rng = random.Random(0)
    keys = set()
    for _ in range(200):
        c = space.sample(rng)
        assert space.valid(c) and space.canonical(c) == c  # canonical is idempotent
        assert c.block_kv % c.vec == 0 and c.block_q % c.rows_s == 0 and w.head_dim % c.d_tile == 0
        assert AttentionConfig.from_dict(c.to_dict()) == c
        keys.add(c.key)
    assert len(keys) > 150  # the space is not collapsing onto the default
    mutated = space.mutate(space.default(), rng)
    assert space.valid(mutated) and space.canonical(mutated) == mutated


def test_canonical_clamps_to_the_problem_and_registers_bound_validity():
    w = AttentionWorkload(1, 2, 5, 40, seq_kv=20)
    space = AttentionSpace(w)
    c = space.canonical(AttentionConfig(block_q=256, block_kv=256, rows_s=3, rows_o=2, d_tile=64))
    assert c.block_q == 6 and c.block_kv == 32 and c.d_tile == 40 and c.pack_k == "block" and c.parallel == "bhq"
    long = AttentionSpace(AttentionWorkload(1, 2, 512, 64))
    assert not long.valid(AttentionConfig(block_kv=256, rows_s=8))  # 8 x 16 accumulators do not fit
    assert long.valid(AttentionConfig(block_kv=64, rows_s=6))
    avx2 = AttentionSpace.for_device(w, {"flags": ["avx2", "fma"]})
    assert avx2.lanes == 8 and avx2.valid(avx2.default()) and avx2.default().vec == 8


def test_features_are_fixed_length_numbers():
    w = AttentionWorkload(1, 4, 100, 64, causal=True)
    space = AttentionSpace(w)
    rng = random.Random(1)
    lengths = {len(space.features(space.sample(rng))) for _ in range(20)}
    assert len(lengths) == 1
    assert all(isinstance(x, (int, float)) and math.isfinite(x) for x in space.features(space.default()))
    bf16 = AttentionSpace(AttentionWorkload(1, 4, 100, 64, causal=True, dtype="bfloat16"))
    assert bf16.features(space.default()) != space.features(space.default())  # the cost model tells dtypes apart


# -- real builds -------------------------------------------------------------------------------

CASES = {
    "full": dict(batch=2, heads=2, seq_q=64, head_dim=32),
    "causal": dict(batch=1, heads=2, seq_q=64, head_dim=32, causal=True),
    "odd lengths": dict(batch=1, heads=3, seq_q=37, head_dim=24, seq_kv=53),
    "causal odd": dict(batch=1, heads=2, seq_q=65, head_dim=16, causal=True),
    "bottom-right, fewer queries": dict(batch=1, heads=2, seq_q=21, head_dim=32, seq_kv=70, causal=True,
                                        causal_align="bottom-right"),
    "bottom-right, more queries": dict(batch=1, heads=2, seq_q=70, head_dim=32, seq_kv=19, causal=True,
                                       causal_align="bottom-right"),
    "top-left, more keys": dict(batch=1, heads=1, seq_q=30, head_dim=16, seq_kv=90, causal=True),
    "top-left, more queries": dict(batch=1, heads=1, seq_q=90, head_dim=16, seq_kv=30, causal=True),
    "gqa": dict(batch=2, heads=8, seq_q=40, head_dim=64, kv_heads=2, causal=True),
    "mqa, custom scale": dict(batch=1, heads=4, seq_q=33, head_dim=8, seq_kv=129, kv_heads=1, scale=0.3),
    "decode": dict(batch=2, heads=4, seq_q=1, head_dim=64, seq_kv=100, kv_heads=2, causal=True,
                   causal_align="bottom-right"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_default_config_builds_and_verifies(name):
    w = AttentionWorkload(**CASES[name])
    check(w, AttentionSpace(w).default())


@pytest.mark.parametrize("name", ["odd lengths", "causal odd", "bottom-right, more queries", "gqa"])
def test_sampled_configs_build_and_verify(name):
    w = AttentionWorkload(**CASES[name])
    space = AttentionSpace(w)
    rng = random.Random(name)
    for _ in range(3):
        check(w, space.sample(rng))


@pytest.mark.slow
def test_every_knob_value_builds_and_verifies():
    """Each knob moved alone from the default, on odd lengths with a causal diagonal and GQA."""
    w = AttentionWorkload(1, 2, 33, 32, seq_kv=50, kv_heads=1, causal=True, causal_align="bottom-right")
    space = AttentionSpace(w)
    # 3 q blocks and 2 kv blocks, so that every knob can matter
    base = space.canonical(AttentionConfig(**{**space.default().to_dict(), "block_q": 16, "block_kv": 32}))
    seen = {base.key}
    for knob, values in space.domains.items():
        for value in values[::-1]:  # the far end of each domain first: it differs most from the default
            config = space.canonical(AttentionConfig(**{**base.to_dict(), knob: value}))
            if space.valid(config) and config.key not in seen and getattr(config, knob) == value:
                seen.add(config.key)
                check(w, config)
                break
    assert len(seen) == 1 + len(space.domains)  # every knob changed the program at least once


def test_rows_that_see_no_key_come_out_as_zeros():
    w = AttentionWorkload(1, 2, 40, 16, seq_kv=8, causal=True, causal_align="bottom-right")
    kernel = check(w, AttentionSpace(w).default())
    q, k, v = random_inputs(w, 3)
    out = kernel(q, k, v, out=torch.full(w.output_shape, float("nan")))
    assert (out[:, :, :32] == 0).all() and torch.isfinite(out).all()


def test_key_blocks_no_query_sees_are_never_read():
    """Causal loop bounds depend on the q block: with NaN values in the key blocks past the last query,
    any visit would turn the output into NaN (0 * NaN), even where the mask zeroes the weights."""
    w = AttentionWorkload(1, 2, 64, 32, seq_kv=256, causal=True)
    config = AttentionSpace(w).canonical(AttentionConfig(block_q=16, block_kv=64, rows_s=4, rows_o=4, d_tile=32))
    kernel = check(w, config)
    q, k, v = random_inputs(w, 4)
    k[:, :, 64:], v[:, :, 64:] = float("nan"), float("nan")
    out = kernel(q, k, v)
    assert torch.isfinite(out).all()
    seen = AttentionWorkload(1, 2, 64, 32, causal=True).reference(q, k[:, :, :64], v[:, :, :64])
    torch.testing.assert_close(out.double(), seen, rtol=1e-5, atol=1e-4)


def test_exp_is_the_vector_polynomial():
    """No libm calls (scalar expf, 16 per vector): every exp is inline vector arithmetic."""
    w = AttentionWorkload(1, 1, 100, 64, causal=True)
    asm = assembly(w, AttentionSpace(w).default())
    calls = set(re.findall(r"call\w*\s+(\S+)", asm))
    assert calls and not [c for c in calls if "exp" in c]  # only runtime calls (thread pool, errors)
    assert len([line for line in asm.splitlines() if "vfmadd" in line and "zmm" in line]) >= 32


# -- bfloat16: float32 inside, the output rounded once -------------------------------------------------

BF16_CASES = {
    "prime lengths": dict(batch=1, heads=3, seq_q=37, head_dim=24, seq_kv=53),
    "causal, prime": dict(batch=1, heads=2, seq_q=67, head_dim=32, causal=True),
    "seq 1": dict(batch=2, heads=2, seq_q=1, head_dim=64),
    "decode, gqa": dict(batch=2, heads=4, seq_q=1, head_dim=64, seq_kv=101, kv_heads=2, causal=True,
                        causal_align="bottom-right"),
    "gqa, causal": dict(batch=2, heads=8, seq_q=41, head_dim=64, kv_heads=2, causal=True),
}


def assert_rounded_once(out, reference):
    """float32 arithmetic, then one rounding to nearest: within half a bfloat16 ulp (at most 2^-8 of the value)."""
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), reference, rtol=2**-8, atol=1e-5)


@pytest.mark.parametrize("pack_k", ["global", "block"])  # V is widened with K: once, or per key block
@pytest.mark.parametrize("name", list(BF16_CASES))
def test_bfloat16_kernels_round_the_float32_result_once(name, pack_k):
    w = AttentionWorkload(**BF16_CASES[name], dtype="bfloat16")
    space = AttentionSpace(w)
    config = space.canonical(AttentionConfig(**{**space.default().to_dict(), "block_q": 16, "pack_k": pack_k}))
    kernel = check(w, config)
    for seed in (0, 1):
        inputs = random_inputs(w, seed)
        assert_rounded_once(kernel(*inputs), w.reference(*inputs))


def test_bfloat16_operands_at_a_storage_offset():
    """Views that start 2 bytes into their storage (misaligned for the kernel's vector loads) are read right,
    and a misaligned output is written right."""
    w = AttentionWorkload(1, 4, 29, 32, kv_heads=2, causal=True, dtype="bfloat16")
    kernel = check(w, AttentionSpace(w).default())

    def offset_view(shape, fill=None):
        n = math.prod(shape)
        storage = torch.randn(n + 1).bfloat16() if fill is None else torch.full((n + 1,), fill, dtype=torch.bfloat16)
        return storage[1:].view(shape)

    q, k, v = (offset_view(s) for s in list(w.operand_shapes().values())[:3])
    out = offset_view(w.output_shape, float("nan"))
    assert all(t.data_ptr() % 64 for t in (q, k, v, out))
    assert kernel(q, k, v, out=out) is out
    assert_rounded_once(out, w.reference(q, k, v))


# -- tuning through the generic pipeline -------------------------------------------------------

@pytest.mark.slow
def test_tuning_records_verified_measurements(tmp_path):
    w = AttentionWorkload(1, 2, 48, 32, seq_kv=40, kv_heads=1, causal=True)
    db_path = tmp_path / "attention.db"
    result = autotile.tune(w, trials=6, db=db_path, seed=1, backend="tvm")
    assert result.verified and result.trials == 6 and result.threads == 2
    with TuningDB(db_path) as db:
        records = db.measurements(workload=w.key)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    assert len({r["config_key"] for r in records}) == 6
    kernel = autotile.kernel(w, db=db_path, backend="tvm")
    q, k, v = random_inputs(w, 5)
    torch.testing.assert_close(kernel(q, k, v).double(), w.reference(q, k, v), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_a_wrong_bfloat16_kernel_is_recorded_as_failed_and_the_others_measured():
    """Measured in worker processes like any tuning trial: verification (at bfloat16 attention's tolerance)
    rejects the kernel computed with the wrong scale, and the batch goes on."""
    w = AttentionWorkload(1, 2, 40, 32, causal=True, dtype="bfloat16")
    space = AttentionSpace(w)
    configs = [space.canonical(AttentionConfig(block_q=q, block_kv=32, rows_s=4, rows_o=4, d_tile=32))
               for q in (broken_kernels.WRONG_ATTENTION_BLOCK_Q, 16)]
    device = SimpleNamespace(key="cpu-test", fingerprint={"mcpu": cpu_fingerprint()["mcpu"], "flags": [], "threads": 2})
    with Measurer(device, threads=2, builder="broken_kernels:attention_builder") as measurer:
        wrong, good = measurer.measure(w, configs)
    assert wrong.status == "failed" and wrong.failure == Failure.WRONG_RESULT, wrong.error
    assert good.ok and good.gflops > 0, good.error


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("knobs", [{}, {"pack_k": "global"}])
def test_strided_operands_from_a_fused_qkv_projection(knobs, dtype):
    """q, k, v as views of one (B, S, 3, H, D) projection and out in (B, S, H, D) storage: no copies needed."""
    w = AttentionWorkload(2, 4, 37, 16, causal=True, dtype=dtype)
    space = AttentionSpace(w)
    config = space.canonical(AttentionConfig(**{**space.default().to_dict(), **knobs}))
    kernel = check(w, config)
    qkv = torch.randn(2, 37, 3, 4, 16).to(getattr(torch, dtype)).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    out = torch.full((2, 37, 4, 16), float("nan"), dtype=q.dtype).transpose(1, 2)
    assert not q.is_contiguous() and not out.is_contiguous()
    assert kernel(q, k, v, out=out) is out
    verdict = compare(w, out, w.reference(q.contiguous(), k.contiguous(), v.contiguous()))
    assert verdict.ok, verdict.reason
    with pytest.raises(AutotileError, match="unit stride in its last dim"):
        kernel(q.transpose(-1, -2).contiguous().transpose(-1, -2), k, v)
