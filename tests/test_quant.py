"""Quantization utilities: packing round trips and error bounds as properties, MX against the spec's rules."""

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from autotile.errors import AutotileError
from autotile.ops.qgemm.quant import (
    MX_BLOCK,
    decode_fp8,
    mx_error_bound,
    outlier_columns,
    pack_bits,
    packed_bytes,
    quantize_fp8,
    quantize_int,
    quantize_mx,
    quantize_rows_int8,
    unpack_bits,
)


@given(bits=st.integers(2, 8), rows=st.integers(1, 3), count=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_pack_unpack_round_trip(bits, rows, count, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1 << bits, (rows, count), generator=g)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (rows, packed_bytes(count, bits))
    assert torch.equal(unpack_bits(packed, bits, count), codes)


def test_packed_layout_is_the_documented_bitstream():
    # 4 bits: low nibble first; 3 bits: code i at bit 3i, straddling bytes.
    assert pack_bits(torch.tensor([[1, 2, 15]]), 4).tolist() == [[0x21, 0x0F]]
    codes = torch.tensor([[5, 3, 7]])  # bits: 101 011 111 -> 0b11_011_101, then 0b1
    assert pack_bits(codes, 3).tolist() == [[0b11011101, 0b1]]


@pytest.mark.parametrize("bad, message", [
    (lambda: pack_bits(torch.tensor([[4]]), 2), r"codes must lie in \[0, 3\]"),
    (lambda: pack_bits(torch.tensor([[1]]), 9), "bits must be an integer from 2 to 8"),
    (lambda: unpack_bits(torch.zeros(1, 2, dtype=torch.uint8), 4, 5), "take 3 bytes"),
    (lambda: quantize_int(torch.ones(4), 4), "2-D float weight"),
    (lambda: quantize_int(torch.ones(2, 4), 4, group_size=0), "group_size must be a positive integer"),
    (lambda: quantize_int(torch.tensor([[float("nan")]]), 4), "NaN"),
    (lambda: quantize_mx(torch.ones(4), "float7"), "unknown dtype"),
    (lambda: quantize_mx(torch.ones(4), "int4"), "MX element format must be one of"),
    (lambda: decode_fp8(torch.zeros(2, dtype=torch.int8), "e4m3"), "fp8 codes must be uint8"),
    (lambda: decode_fp8(torch.zeros(2, dtype=torch.uint8), "int8"), "fp8 format must be"),
])
def test_bad_input_is_a_clear_error(bad, message):
    with pytest.raises(AutotileError, match=message):
        bad()


@given(bits=st.integers(2, 8), n=st.integers(1, 5), k=st.integers(1, 300), group=st.sampled_from([None, 32, 64, 128]),
       symmetric=st.booleans(), seed=st.integers(0, 2**16))
def test_int_dequantize_error_is_at_most_half_a_step(bits, n, k, group, symmetric, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 3 + (0 if symmetric else 1)
    q = quantize_int(w, bits, group, symmetric)
    assert q.packed.shape == (n, packed_bytes(k, bits))
    assert int(q.codes.min()) >= 0 and int(q.codes.max()) < 1 << bits
    scale = q.scales.repeat_interleave(group or k, dim=1)[:, :k]
    err = (q.dequantize() - w).abs()
    assert bool((err <= scale / 2 * (1 + 1e-5) + 1e-6).all())


def test_asymmetric_zero_points_use_the_whole_range():
    w = torch.linspace(0.0, 15.0, 16).reshape(1, 16)  # one group: min 0 -> code 0, max 15 -> code 15
    q = quantize_int(w, 4, symmetric=False)
    assert q.zeros.tolist() == [[0]] and q.codes.tolist() == [list(range(16))]
    assert torch.allclose(q.dequantize(), w)


def test_row_int8_and_outliers():
    x = torch.randn(4, 64)
    x[1, 5] = 40.0
    q, scale = quantize_rows_int8(x)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert bool(((q.float() * scale[:, None] - x).abs() <= scale[:, None] / 2 + 1e-6).all())
    assert outlier_columns(x, 6.0).tolist() == [5]


@pytest.mark.parametrize("fmt", ["float8_e4m3", "float8_e5m2"])
@pytest.mark.parametrize("per_row", [False, True])
def test_fp8_scaled(fmt, per_row):
    x = torch.randn(8, 40) * torch.logspace(-2, 2, 8)[:, None]
    q, scale = quantize_fp8(x, fmt, per_row)
    back = torch.from_numpy(q.astype(np.float64)) * (scale[:, None] if per_row else scale).double()
    rel = 2.0 ** -(4 if fmt == "float8_e4m3" else 3)  # half an ulp at 3 or 2 mantissa bits, relative
    assert bool(((back - x.double()).abs() <= rel * x.double().abs() + 1e-3 * scale.max()).all())


@pytest.mark.parametrize("fmt", ["float4_e2m1", "float6_e2m3", "float6_e3m2", "float8_e4m3", "float8_e5m2", "int8"])
@given(rows=st.integers(1, 3), k=st.integers(1, 100), spread=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_mx_round_trip_within_half_an_ulp(fmt, rows, k, spread, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g) * spread
    q = quantize_mx(x, fmt)
    assert q.scales.shape == (rows, -(-k // MX_BLOCK)) and q.scales.dtype == torch.uint8
    err = (q.dequantize().double() - x.double()).abs()
    assert bool((err <= mx_error_bound(x, fmt).double() * (1 + 1e-6) + 1e-30).all())


def test_mx_scale_follows_the_spec():
    """Block max 5.0 in FP4 E2M1 (emax 2): shared exponent floor(log2 5) - 2 = 0, stored as 127;
    elements are 5.0 -> 4 or 6 by round-to-nearest-even (4), 0.25 -> 0 or 0.5 (ties to even: 0)."""
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 1], x[0, 2] = 5.0, 0.25, -1.5
    q = quantize_mx(x, "float4_e2m1")
    assert q.scales.tolist() == [[127]]
    back = q.dequantize()[0, :3].tolist()
    assert back == [float(np.float32(5.0).astype(ml_dtypes.float4_e2m1fn)), 0.0, -1.5]
    zero = quantize_mx(torch.zeros(2, 40), "float8_e4m3")
    assert torch.equal(zero.dequantize(), torch.zeros(2, 40))


def test_decode_fp8_inverts_quantize_fp8():
    x = torch.randn(3, 40) * 5
    for fmt, top in (("float8_e4m3", 448.0), ("float8_e5m2", 57344.0)):
        q, scale = quantize_fp8(x, fmt, per_row=True)
        values = decode_fp8(torch.from_numpy(q.view(np.uint8).copy()), fmt)
        assert values.dtype == torch.float64 and float(values.abs().max()) <= top
        assert torch.equal(values, torch.from_numpy(q.astype(np.float64)))
