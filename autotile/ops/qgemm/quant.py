"""Quantized tensors: bit packing, integer schemes (per tensor, channel, group) and OCP MX block formats.

Layouts (what a kernel reads, and what users prepare weights into):

- **Bit codes** are unsigned integers of `bits` bits packed along the last dim as a little-endian
  bitstream: code i occupies bits [i*bits, (i+1)*bits) of the row, so 8 codes fill exactly `bits`
  bytes. A row of K codes takes ceil(K*bits/8) bytes; for bits 2, 4 and 8 a byte holds whole codes
  (low bits first), for 3, 5, 6 and 7 codes straddle bytes.
- **Integer weights** W (N x K, as torch.nn.Linear holds them) quantize per channel (one scale per
  row; `group_size=None`) or per group of `group_size` consecutive K elements. Codes are unsigned:
  code = clamp(round(w / scale) + zero, 0, 2**bits - 1), and w ~= (code - zero) * scale. Symmetric
  schemes use the fixed zero 2**(bits-1) (not stored) and scale = absmax / (2**(bits-1) - 1), so
  nothing is clipped; asymmetric ones store an integer zero point per group and scale =
  (max - min) / (2**bits - 1). Either way |w - dequantize(w)| <= scale / 2 (tested).
- **MX** (OCP Microscaling v1.0): blocks of 32 consecutive elements along the last dim share an
  E8M0 scale 2**e with e = floor(log2(absmax of the block)) - emax(element format); elements are
  x / 2**e rounded to nearest even in the element format and saturated to its largest finite value.
  Elements are stored as bit codes (FP4 E2M1, FP6 E2M3/E3M2, FP8 E4M3/E5M2) or, for MXINT8, as
  int8 with an implicit 2**-6 (values -2 .. 1.984375). Scales are stored as uint8 biased exponents
  (e + 127; 255 is NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
import torch

from autotile.errors import AutotileError
from autotile.ir.dtypes import dtype as lookup_dtype

INT_BITS = range(2, 9)
MX_BLOCK = 32
# Element formats of MX: numpy (ml_dtypes) type, bits per code, exponent of the largest normal.
MX_ELEMENTS = {
    "float4_e2m1": (ml_dtypes.float4_e2m1fn, 4, 2),
    "float6_e2m3": (ml_dtypes.float6_e2m3fn, 6, 2),
    "float6_e3m2": (ml_dtypes.float6_e3m2fn, 6, 4),
    "float8_e4m3": (ml_dtypes.float8_e4m3fn, 8, 8),
    "float8_e5m2": (ml_dtypes.float8_e5m2, 8, 15),
    "int8": (None, 8, 0),
}
MXINT8_STEP = 2.0**-6


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in INT_BITS:
        raise AutotileError(f"bits must be an integer from 2 to 8, got {bits!r}")
    return bits


# --- bit packing --------------------------------------------------------------------------------------

def packed_bytes(count: int, bits: int) -> int:
    return -(-count * bits // 8)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes (any integer dtype, values < 2**bits) -> uint8, packed along the last dim."""
    _check_bits(bits)
    codes = torch.as_tensor(codes)
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise AutotileError(f"pack_bits takes integer codes, got {codes.dtype}")
    c = codes.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= 1 << bits):
        raise AutotileError(f"codes must lie in [0, {(1 << bits) - 1}] for {bits} bits, "
                            f"got [{int(c.min())}, {int(c.max())}]")
    count = c.shape[-1]
    pad = -count % 8
    c = torch.nn.functional.pad(c, (0, pad)).reshape(*c.shape[:-1], -1, 8)
    # 8 codes -> one integer of 8*bits bits -> `bits` little-endian bytes.
    word = (c << (torch.arange(8, dtype=torch.int64) * bits)).sum(-1)
    out = (word.unsqueeze(-1) >> (torch.arange(bits, dtype=torch.int64) * 8)) & 0xFF
    out = out.reshape(*c.shape[:-2], -1)[..., : packed_bytes(count, bits)]
    return out.to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The inverse of pack_bits: uint8 rows -> `count` int64 codes per row."""
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise AutotileError(f"packed codes must be uint8, got {packed.dtype}")
    if packed.shape[-1] != packed_bytes(count, bits):
        raise AutotileError(f"{count} codes of {bits} bits take {packed_bytes(count, bits)} bytes per row, "
                            f"got {packed.shape[-1]}")
    groups = -(-count // 8)
    p = torch.nn.functional.pad(packed.to(torch.int64), (0, groups * bits - packed.shape[-1]))
    p = p.reshape(*p.shape[:-1], groups, bits)
    word = (p << (torch.arange(bits, dtype=torch.int64) * 8)).sum(-1)
    codes = (word.unsqueeze(-1) >> (torch.arange(8, dtype=torch.int64) * bits)) & ((1 << bits) - 1)
    return codes.reshape(*codes.shape[:-2], -1)[..., :count]


# --- integer schemes ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class IntQuantized:
    """W (N x K) as packed codes with per-channel or per-group scales (and zero points if asymmetric)."""

    packed: torch.Tensor  # uint8 (N, ceil(K*bits/8))
    scales: torch.Tensor  # float32 (N, groups)
    zeros: torch.Tensor | None  # int32 (N, groups) for asymmetric schemes; None: 2**(bits-1)
    bits: int
    group_size: int | None  # None: one group per row (per channel)
    shape: tuple[int, int]

    @property
    def codes(self) -> torch.Tensor:
        return unpack_bits(self.packed, self.bits, self.shape[1])

    def dequantize(self, dtype=torch.float32) -> torch.Tensor:
        """(code - zero) * scale, computed exactly in float64 and returned in `dtype`."""
        n, k = self.shape
        group = self.group_size or k
        zeros = self.zeros if self.zeros is not None else torch.full_like(self.scales, 1 << (self.bits - 1))
        expand = lambda t: t.double().repeat_interleave(group, dim=1)[:, :k]
        return ((self.codes.double() - expand(zeros)) * expand(self.scales)).to(dtype)


def _groups(w: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, int]:
    """(N, K) -> (N, groups, group) with K zero-padded to whole groups."""
    n, k = w.shape
    group = group_size or k
    pad = -k % group
    return torch.nn.functional.pad(w, (0, pad)).reshape(n, -1, group), group


def quantize_int(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True) -> IntQuantized:
    """Quantize a float weight (N x K) to `bits`-bit codes, per channel or per group along K."""
    _check_bits(bits)
    if w.dim() != 2 or not w.dtype.is_floating_point:
        raise AutotileError(f"quantize_int takes a 2-D float weight (N x K), got {w.dtype} of shape {tuple(w.shape)}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                   or group_size <= 0):
        raise AutotileError(f"group_size must be a positive integer or None (per channel), got {group_size!r}")
    if not torch.isfinite(w).all():
        raise AutotileError("cannot quantize a weight with NaN or infinite values")
    n, k = w.shape
    g, group = _groups(w.double(), group_size)
    top = (1 << bits) - 1
    if symmetric:
        half = 1 << (bits - 1)
        scales = g.abs().amax(-1) / (half - 1 if bits > 1 else 1)
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        zeros = torch.full_like(scales, half)
    else:
        lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)  # zero stays exactly representable
        scales = (hi - lo) / top
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        zeros = torch.round(-lo / scales).clamp(0, top)
    codes = torch.clamp(torch.round(g / scales[..., None]) + zeros[..., None], 0, top).to(torch.int64)
    codes = codes.reshape(n, -1)[:, :k]
    return IntQuantized(pack_bits(codes, bits), scales.float(), None if symmetric else zeros.to(torch.int32),
                        bits, group_size, (n, k))


def quantize_rows_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic symmetric per-row int8 (the activation side of W8A8): x ~= q * scale[:, None]."""
    scale = x.abs().amax(-1).float() / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(x.float() / scale[..., None]), -127, 127).to(torch.int8)
    return q, scale


def outlier_columns(x: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """LLM.int8 outlier features: the K indices where any |x| exceeds the threshold."""
    return torch.nonzero((x.abs() > threshold).any(dim=0)).flatten()


# --- floating point: fp8 scaled and OCP MX ----------------------------------------------------------

def _to_format(x: np.ndarray, fmt: str) -> np.ndarray:
    """Round to nearest even in an ml_dtypes format, saturating at its largest finite value."""
    np_type = MX_ELEMENTS[fmt][0] if fmt in MX_ELEMENTS else getattr(ml_dtypes, lookup_dtype(fmt).numpy)
    top = float(ml_dtypes.finfo(np_type).max)
    return np.clip(x, -top, top).astype(np_type)


def quantize_fp8(x: torch.Tensor, fmt: str = "float8_e4m3", per_row: bool = False):
    """fp8 with a float32 scale per tensor or per row: x ~= q.float() * scale. Returns (q, scale),
    q as a numpy ml_dtypes array (torch float8 ops are not available on every CPU build)."""
    fmt = lookup_dtype(fmt).name
    if fmt not in ("float8_e4m3", "float8_e5m2"):
        raise AutotileError(f"fp8 format must be float8_e4m3 or float8_e5m2, got {fmt!r}")
    top = float(ml_dtypes.finfo(getattr(ml_dtypes, lookup_dtype(fmt).numpy)).max)
    amax = x.abs().amax(-1, keepdim=True) if per_row else x.abs().max().reshape(1, 1)
    scale = (amax.double() / top).clamp(min=1e-30)
    q = _to_format((x.double() / scale).numpy(), fmt)
    return q, scale.float().reshape(-1) if per_row else scale.float().reshape(())


def decode_fp8(codes: torch.Tensor, fmt: str) -> torch.Tensor:
    """fp8 bit codes (uint8) -> their exact values in float64 (ml_dtypes decodes, NaN included)."""
    fmt = lookup_dtype(fmt).name
    if fmt not in ("float8_e4m3", "float8_e5m2"):
        raise AutotileError(f"fp8 format must be float8_e4m3 or float8_e5m2, got {fmt!r}")
    if codes.dtype != torch.uint8:
        raise AutotileError(f"fp8 codes must be uint8 bit patterns, got {codes.dtype}")
    np_type = getattr(ml_dtypes, lookup_dtype(fmt).numpy)
    return torch.from_numpy(codes.numpy().view(np_type).astype(np.float64))


@dataclass(frozen=True)
class MXQuantized:
    """A tensor in an OCP MX format: element codes plus one E8M0 scale per 32-element block."""

    elements: torch.Tensor  # uint8 packed codes (float formats) or int8 (MXINT8), (..., K or bytes)
    scales: torch.Tensor  # uint8 biased exponents, (..., ceil(K / 32))
    fmt: str
    shape: tuple[int, ...]

    def dequantize(self) -> torch.Tensor:
        k = self.shape[-1]
        np_type, bits, _ = MX_ELEMENTS[self.fmt]
        if np_type is None:
            values = self.elements.double() * MXINT8_STEP
        else:
            codes = unpack_bits(self.elements, bits, k).to(torch.uint8).numpy() if bits < 8 else \
                self.elements.numpy()
            values = torch.from_numpy(codes.view(np_type).astype(np.float64))
        exps = self.scales.to(torch.int64) - 127
        scale = torch.pow(2.0, exps.double()).repeat_interleave(MX_BLOCK, dim=-1)[..., :k]
        scale = torch.where(self.scales.repeat_interleave(MX_BLOCK, dim=-1)[..., :k] == 255,
                            torch.tensor(float("nan"), dtype=torch.float64), scale)
        return (values * scale).float()


def quantize_mx(x: torch.Tensor, fmt: str) -> MXQuantized:
    """Quantize along the last dim into blocks of 32 with a shared power-of-two scale (OCP MX v1.0)."""
    fmt = "int8" if fmt in ("int8", "mxint8") else lookup_dtype(fmt).name
    if fmt not in MX_ELEMENTS:
        raise AutotileError(f"MX element format must be one of {', '.join(MX_ELEMENTS)}, got {fmt!r}")
    if not x.dtype.is_floating_point or not torch.isfinite(x).all():
        raise AutotileError("quantize_mx takes a finite float tensor")
    np_type, bits, emax = MX_ELEMENTS[fmt]
    k = x.shape[-1]
    pad = -k % MX_BLOCK
    blocks = torch.nn.functional.pad(x.double(), (0, pad)).reshape(*x.shape[:-1], -1, MX_BLOCK)
    amax = blocks.abs().amax(-1)
    # An all-zero block gets the smallest scale; its elements are zero either way.
    exps = torch.where(amax > 0, torch.floor(torch.log2(torch.where(amax > 0, amax, 1.0))) - emax,
                       torch.full_like(amax, -127)).clamp(-127, 127)
    scaled = (blocks / torch.pow(2.0, exps)[..., None]).reshape(*x.shape[:-1], -1)[..., :k]
    if np_type is None:
        elements = torch.clamp(torch.round(scaled / MXINT8_STEP), -127, 127).to(torch.int8)
    else:
        codes = torch.from_numpy(_to_format(scaled.numpy(), fmt).view(np.uint8).copy())
        elements = pack_bits(codes, bits) if bits < 8 else codes
    return MXQuantized(elements, (exps + 127).to(torch.uint8), fmt, tuple(x.shape))


def mx_error_bound(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Per-element bound on |x - dequantize(quantize_mx(x))|: half a unit in the last place of the
    element format at the block's scale (saturation of the block maximum included)."""
    np_type, _, emax = MX_ELEMENTS["int8" if fmt in ("int8", "mxint8") else lookup_dtype(fmt).name]
    k = x.shape[-1]
    pad = -k % MX_BLOCK
    blocks = torch.nn.functional.pad(x.double().abs(), (0, pad)).reshape(*x.shape[:-1], -1, MX_BLOCK)
    amax = blocks.amax(-1, keepdim=True)
    exps = torch.where(amax > 0, torch.floor(torch.log2(torch.where(amax > 0, amax, 1.0))) - emax, -127.0)
    scale = torch.pow(2.0, exps)
    if np_type is None:
        ulp = torch.full_like(blocks, MXINT8_STEP)
        top = 127 * MXINT8_STEP
    else:
        mant = ml_dtypes.finfo(np_type).nmant
        tiny = float(ml_dtypes.finfo(np_type).smallest_subnormal)
        scaled = blocks / scale
        exponent = torch.floor(torch.log2(torch.where(scaled > 0, scaled, 1.0)))
        ulp = torch.maximum(torch.pow(2.0, exponent - mant), torch.full_like(scaled, tiny))
        top = float(ml_dtypes.finfo(np_type).max)
    saturation = (blocks / scale - top).clamp(min=0)
    bound = (ulp / 2 + saturation) * scale
    return bound.reshape(*x.shape[:-1], -1)[..., :k].float()


def bits_of(name: str) -> int:
    """Bits per element of an integer or MX element format, from the dtype table."""
    return lookup_dtype(name).bits


__all__ = [
    "IntQuantized", "MXQuantized", "MX_BLOCK", "MX_ELEMENTS", "bits_of", "decode_fp8", "mx_error_bound",
    "outlier_columns",
    "pack_bits", "packed_bytes", "quantize_fp8", "quantize_int", "quantize_mx", "quantize_rows_int8", "unpack_bits",
]
