"""Tensor intrinsics TVM lacks or ships broken for its bundled LLVM: VNNI int8 and AVX512_BF16 dot products.

TVM 0.27's `dot_16x4_vnni` passes <16 x i32> operands to `llvm.x86.avx512.vpdpbusd.512`, whose
signature in this LLVM takes <64 x i8>: the module fails LLVM's verifier. This one reinterprets
the operands as bytes. Semantics (the description TVM matches against): C[16] int32 +=
sum over 4 of uint8 A[4] (broadcast to every lane) * int8 B[16, 4].
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

VNNI_DOT_16X4 = "autotile_dot_16x4_vnni"


# The description is TVM's (tvm.s_tir.tensor_intrin.x86), restated: importing that package parses
# every CUDA intrinsic too, which takes a minute on these machines.
@T.prim_func(s_tir=True)
def _dot_16x4_u8i8i32_desc(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dot_16x4_vnni(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a_word = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        a_bytes = T.reinterpret(T.broadcast(a_word, 16), dtype="int8x64")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"), a_bytes, B.vload([0, 0], dtype="int8x64"), dtype="int32x16")


TensorIntrin.register(VNNI_DOT_16X4, _dot_16x4_u8i8i32_desc, _dot_16x4_vnni, override=True)


# --- the same dot product on AVX2 without VNNI (Zen 3): vpmaddwd ------------------------------------
#
# vpdpbusd is AVX-512 VNNI: on an AVX2 target LLVM aborts on it ("Do not know how to split"). vpmaddwd multiplies
# int16 pairs and adds each pair into int32, so B's bytes are stored in the order it wants (AVX2_PANEL_ORDER, made
# by pack_W ahead of the call, never at run time): the 64 bytes of a 16 x 4 block are, for each half of the rows
# (h) and each pair of K (p), the 8 rows' (k 2p, k 2p+1) byte pairs, 16 bytes. Each 16 bytes sign-extend to int16
# (vpmovsxbw, straight from memory) and meet A's pair p, zero-extended and broadcast, in one vpmaddwd: 8 rows'
# partial sums in row order; the two pairs added are the rows' whole sums. Per block: 4 extending loads, 4
# vpmaddwd, 4 adds (the first version split B's pairs apart in every call: 3 more shuffles per 8 rows). Exact:
# |uint8 x int8| < 2^15, and two of them fit int32. The description is the VNNI one: C[16] += A[4] . B[16, 4], B
# read as the block it stores; only pack_W and the outlier product (int8_tvm.py) know the bytes' order.
AVX2_DOT_16X4 = "autotile_dot_16x4_avx2"


def avx2_panel_position(row: int, k: int) -> int:
    """Where W's byte (row, k) of a 16 x 4 block sits among its 64 bytes in AVX2 order (row < 16, k < 4); ints,
    or TIR expressions (the outlier product's index)."""
    return (row // 8) * 32 + (k // 2) * 16 + (row % 8) * 2 + k % 2


def _a_pair(a_pairs, p: int):
    """A's pair p (k 2p, k 2p+1) of `a_pairs` (int32x2 of zero-extended int16 pairs), in each of 8 int32 lanes."""
    return T.reinterpret(T.broadcast(T.Shuffle([a_pairs], [p]), 8), dtype="int16x16")


def _pmaddwd(b_pairs, a_pairs):
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), b_pairs, a_pairs,
                                   dtype="int32x8")


def _b_pairs(B, h: int, p: int):
    """The 16 bytes of rows 8h..8h+7, pair p, sign-extended to int16 (their first byte's position: 32h + 16p)."""
    return T.Cast("int16x16", B.vload([8 * h + 4 * p, 0], "int8x16"))


@T.prim_func(s_tir=True)
def _dot_16x4_avx2(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a = T.reinterpret(T.Cast("int16x4", A.vload([0], "uint8x4")), dtype="int32x2")
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], "int32x8") + _pmaddwd(_b_pairs(B, 0, 0), _a_pair(a, 0)) + _pmaddwd(
            _b_pairs(B, 0, 1), _a_pair(a, 1))
        C[T.ramp(T.int32(8), 1, 8)] = C.vload([8], "int32x8") + _pmaddwd(_b_pairs(B, 1, 0), _a_pair(a, 0)) + _pmaddwd(
            _b_pairs(B, 1, 1), _a_pair(a, 1))


TensorIntrin.register(AVX2_DOT_16X4, _dot_16x4_u8i8i32_desc, _dot_16x4_avx2, override=True)


# --- bfloat16 dot products: vdpbf16ps (AVX512_BF16) ------------------------------------------------
#
# TVM cannot hand a bfloat16 vector to an LLVM intrinsic: its BF16 legalization (always on for CPU
# targets) promotes every bfloat16 operand to float32 and stores bfloat16 as uint16, while
# `llvm.x86.avx512bf16.dpbf16ps.512` takes <32 x bfloat>. So the kernel keeps bfloat16 as uint16
# bits, the intrinsic calls a small LLVM IR function that bitcasts and calls vdpbf16ps, and the
# schedule links that function in with the `pragma_import_llvm` annotation (once per module, see
# BF16_DOT_LLVM_IR); LLVM inlines it (alwaysinline). Built for a CPU without AVX512_BF16 it fails to
# compile (LLVM cannot select the instruction) rather than running an illegal instruction. A (the
# broadcast pair) goes last, the operand x86 can read from memory, so the broadcast folds into the
# instruction ({1to16}) instead of taking a shuffle of its own; the products commute, bit for bit.
# Semantics: C[16] float32 += sum over 2 of bf16 A[2] (broadcast to every lane) * bf16 B[16, 2], with
# the instruction's rounding (nearest even) and denormals flushed to zero.

BF16_DOT_16X2 = "autotile_dot_16x2_bf16"
BF16_DOT_FUNCTION = "autotile_dpbf16ps"
BF16_DOT_LLVM_IR = f"""
define linkonce_odr hidden <16 x float> @{BF16_DOT_FUNCTION}(<16 x float> %acc, <16 x i32> %a, <16 x i32> %b) #0 {{
  %abf = bitcast <16 x i32> %a to <32 x bfloat>
  %bbf = bitcast <16 x i32> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %bbf, <32 x bfloat> %abf)
  ret <16 x float> %r
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
attributes #0 = {{ alwaysinline nounwind }}
"""


def bf16_bits_to_float(x):
    """float32 value of bfloat16 bits (uint16): the exact widening, shared by kernel and intrinsic."""
    from tvm import tirx as tir

    return tir.reinterpret("float32", tir.shift_left(x.astype("uint32"), tir.const(16, "uint32")))


@T.prim_func(s_tir=True)
def _dot_16x2_bf16_desc(
    A: T.Buffer((2,), "uint16", offset_factor=1),
    B: T.Buffer((16, 2), "uint16", offset_factor=1),
    C: T.Buffer((16,), "float32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:2], B[0:16, 0:2])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.reinterpret(
                        "float32", T.shift_left(T.Cast("uint32", A[vk]), T.uint32(16))
                    ) * T.reinterpret("float32", T.shift_left(T.Cast("uint32", B[vi, vk]), T.uint32(16)))


@T.prim_func(s_tir=True)
def _dot_16x2_bf16(
    A: T.Buffer((2,), "uint16", offset_factor=1),
    B: T.Buffer((16, 2), "uint16", offset_factor=1),
    C: T.Buffer((16,), "float32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:2], B[0:16, 0:2])
        T.writes(C[0:16])
        a_pair = T.reinterpret(A.vload([0], "uint16x2"), dtype="int32")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_extern(
            "float32x16", BF16_DOT_FUNCTION, C.vload([0], dtype="float32x16"), T.broadcast(a_pair, 16),
            T.reinterpret(B.vload([0, 0], dtype="uint16x32"), dtype="int32x16"))


TensorIntrin.register(BF16_DOT_16X2, _dot_16x2_bf16_desc, _dot_16x2_bf16, override=True)


# --- int4 codes -> bfloat16 pairs (for vdpbf16ps over weight-only int4) ----------------------------
#
# 16 bytes of packed int4 codes, byte l holding the codes of one output column for two consecutive K
# (low nibble first), become one vdpbf16ps operand: lane l = bf16(low - 8) | bf16(high - 8) << 16. The
# codes minus 8 are integers in [-8, 7], exact in bfloat16, so the products are exact too. Decoding is
# vpmovzxbd (byte l to dword l), a shift and an or (dword l = byte | byte << 12: the low nibble in bits 0-3
# of word 2l, the high one in bits 0-3 of word 2l+1) and one vpermw looking the words up in a table of the
# 16 bf16 values (vpermw reads 5 index bits; bit 4 is the other nibble's, so the table is given twice).

INT4_BF16_PAIRS_16 = "autotile_int4_bf16_pairs_16"
INT4_BF16_FUNCTION = "autotile_int4_bf16_pairs"
INT4_ZERO = 8  # the fixed zero point of symmetric int4 codes, subtracted by the table


def _bf16_bits(value: float) -> int:
    import struct

    return struct.unpack("<I", struct.pack("<f", value))[0] >> 16  # exact for small integers


_INT4_TABLE = ", ".join(f"i16 {_bf16_bits(float(c % 16 - INT4_ZERO))}" for c in range(32))
INT4_BF16_LLVM_IR = f"""
define linkonce_odr hidden <16 x i32> @{INT4_BF16_FUNCTION}(<16 x i8> %w) #1 {{
  %x = zext <16 x i8> %w to <16 x i32>
  %s = shl <16 x i32> %x, splat (i32 12)
  %y = or <16 x i32> %x, %s
  %idx = bitcast <16 x i32> %y to <32 x i16>
  %r = call <32 x i16> @llvm.x86.avx512.permvar.hi.512(<32 x i16> <{_INT4_TABLE}>, <32 x i16> %idx)
  %out = bitcast <32 x i16> %r to <16 x i32>
  ret <16 x i32> %out
}}
declare <32 x i16> @llvm.x86.avx512.permvar.hi.512(<32 x i16>, <32 x i16>)
attributes #1 = {{ alwaysinline nounwind }}
"""


def int4_bf16_bits(code):
    """bfloat16 bits (uint16) of an int4 code minus 8: the exact value, shared by kernel and intrinsic."""
    from tvm import tirx as tir

    value = (code.astype("int32") - tir.const(INT4_ZERO, "int32")).astype("float32")
    return tir.shift_right(tir.reinterpret("uint32", value), tir.const(16, "uint32")).astype("uint16")


@T.prim_func(s_tir=True)
def _int4_bf16_pairs_desc(
    W: T.Buffer((16,), "uint8", offset_factor=1),
    D: T.Buffer((16, 2), "uint16", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(W[0:16])
        T.writes(D[0:16, 0:2])
        for i in T.serial(0, 16):
            for h in T.serial(0, 2):
                with T.sblock("decode"):
                    vi, vh = T.axis.remap("SS", [i, h])
                    D[vi, vh] = T.Cast("uint16", T.shift_right(T.reinterpret("uint32", T.Cast(
                        "float32", T.Cast("int32", T.bitwise_and(T.shift_right(W[vi], T.Cast("uint8", vh * 4)),
                                                                 T.uint8(15))) - 8)), T.uint32(16)))


@T.prim_func(s_tir=True)
def _int4_bf16_pairs(
    W: T.Buffer((16,), "uint8", offset_factor=1),
    D: T.Buffer((16, 2), "uint16", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(W[0:16])
        T.writes(D[0:16, 0:2])
        D[0, T.ramp(T.int32(0), 1, 32)] = T.reinterpret(
            T.call_extern("int32x16", INT4_BF16_FUNCTION, W.vload([0], dtype="uint8x16")), dtype="uint16x32")


TensorIntrin.register(INT4_BF16_PAIRS_16, _int4_bf16_pairs_desc, _int4_bf16_pairs, override=True)
