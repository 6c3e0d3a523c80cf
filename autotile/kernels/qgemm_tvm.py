"""Lowering of weight-only quantized GEMM to TVM: the GEMM template with a dequantizing B loader.

B[k, j] = (code(W[j], k) - zero[j, g]) * scale[j, g] with g = k // group_size; code i of a row sits at
bits [i*bits, (i+1)*bits) of its packed bytes (see ir/quant.py). The GEMM's B pack stage, computed per
block, is where codes become floats, so the weight is read packed and never exists dequantized in full.
"""

from __future__ import annotations

import tvm
from tvm import te
from tvm import tirx as tir

from autotile.ir.qgemm import QGemmWorkload
from autotile.kernels.gemm_tvm import schedule as gemm_schedule


def quantized_operands(w: QGemmWorkload):
    shapes = w.operand_shapes()
    A = te.placeholder(shapes["A"], "float32", name="A")
    W = te.placeholder(shapes["W"], "uint8", name="W")
    scales = te.placeholder(shapes["scales"], "float32", name="scales")
    zeros = te.placeholder(shapes["zeros"], "int32", name="zeros") if w.asymmetric else None
    bits, row_bytes = w.bits, shapes["W"][1]
    mask = (1 << bits) - 1
    group = w.group_size or w.k

    def code(j, k):
        bit = k * bits
        low = W[j, bit // 8].astype("int32")
        if 8 % bits == 0:  # whole codes per byte
            return (low >> (bit % 8)) & mask
        high = W[j, te.min(bit // 8 + 1, row_bytes - 1)].astype("int32")  # a code may straddle two bytes
        return ((low | (high << 8)) >> (bit % 8)) & mask

    def a_at(bi, i, k):
        return A[i, k]

    def b_at(bi, k, j):
        g = k // group
        zero = zeros[j, g] if zeros is not None else tir.const(1 << (bits - 1), "int32")
        return (code(j, k) - zero).astype("float32") * scales[j, g]

    inputs = [A, W, scales] + ([zeros] if zeros is not None else [])
    return inputs, a_at, b_at


def schedule(w: QGemmWorkload, c) -> tvm.IRModule:
    if w.w8a8:
        from autotile.kernels.qgemm_int8_tvm import schedule as int8_schedule

        return int8_schedule(w, c)
    return gemm_schedule(w, c, operands=quantized_operands, pack_at="block")
