"""Lowering of the layer-norm template to TVM: a TVMScript program generated from the config.

A 16-bit layer norm reads and writes its own type (one pass in, one out) and computes in float32: loads widen
(bfloat16 by its bits, as the GEMM's loaders), the store rounds to nearest even (fastmath.cast).
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from autotile.codegen.tvm import fastmath
from autotile.ops.layernorm.rows import LayerNormConfig
from autotile.ops.layernorm.workload import LayerNormWorkload


def schedule(w: LayerNormWorkload, c: LayerNormConfig) -> tvm.IRModule:
    """The kernel main(x, weight, bias, out) for this workload and config."""
    return tvm.IRModule({"main": _program(w, c)})


def _program(w: LayerNormWorkload, c: LayerNormConfig):
    ROWS, COLS, VEC, U, GRAIN, DT = w.rows, w.cols, c.vec, c.unroll, c.grain, w.dtype
    WHOLE = COLS // VEC  # whole vectors per row; the rest is a scalar tail
    TAIL = COLS - WHOLE * VEC
    TASKS = -(-ROWS // GRAIN)
    INV_COLS, EPS = T.float32(1.0 / COLS), T.float32(w.eps)
    def f32(x):  # float32 itself untouched: its kernels stay as they were
        return fastmath.widen(x, DT)

    def narrow(v):
        return v if DT == "float32" else fastmath.cast(v, DT)

    @T.macro
    def row_sum(acc, stat, x, r, mean, squared):
        """stat[0] = the sum over row r of x - mean, or of its square: U x VEC partial sums, then their lanes."""
        for u, lane in T.grid(U, VEC):
            acc[u, lane] = T.float32(0)
        for j in range(WHOLE // U):
            for u in T.unroll(U):
                for lane in T.vectorized(VEC):
                    if squared:
                        acc[u, lane] = acc[u, lane] + (f32(x[r, (j * U + u) * VEC + lane]) - mean) * \
                            (f32(x[r, (j * U + u) * VEC + lane]) - mean)
                    else:
                        acc[u, lane] = acc[u, lane] + f32(x[r, (j * U + u) * VEC + lane])
        for u in range(1, U):
            for lane in T.vectorized(VEC):
                acc[0, lane] = acc[0, lane] + acc[u, lane]
        stat[0] = T.float32(0)
        for lane in range(VEC):  # once per row: a serial sum costs less than the shuffles of a tree
            stat[0] = stat[0] + acc[0, lane]
        for t in range(TAIL):
            if squared:
                stat[0] = stat[0] + (f32(x[r, WHOLE * VEC + t]) - mean) * (f32(x[r, WHOLE * VEC + t]) - mean)
            else:
                stat[0] = stat[0] + f32(x[r, WHOLE * VEC + t])

    @T.prim_func(check_well_formed=False)
    def main(x: T.Buffer((ROWS, COLS), DT), weight: T.Buffer((COLS,), DT), bias: T.Buffer((COLS,), DT),
             out: T.Buffer((ROWS, COLS), DT)):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for task in T.parallel(TASKS):
            acc = T.alloc_buffer((U, VEC), "float32", scope="local")
            mean = T.alloc_buffer((1,), "float32", scope="local")
            rstd = T.alloc_buffer((1,), "float32", scope="local")
            for rr in range(T.min(GRAIN, ROWS - task * GRAIN)):
                r = task * GRAIN + rr
                row_sum(acc, mean, x, r, T.float32(0), False)
                mean[0] = mean[0] * INV_COLS
                row_sum(acc, rstd, x, r, mean[0], True)
                rstd[0] = T.float32(1) / T.sqrt(rstd[0] * INV_COLS + EPS)
                for j in range(WHOLE):
                    for lane in T.vectorized(VEC):
                        out[r, j * VEC + lane] = narrow((f32(x[r, j * VEC + lane]) - mean[0]) * rstd[0] * f32(
                            weight[j * VEC + lane]) + f32(bias[j * VEC + lane]))
                for t in range(TAIL):
                    out[r, WHOLE * VEC + t] = narrow((f32(x[r, WHOLE * VEC + t]) - mean[0]) * rstd[0] * f32(
                        weight[WHOLE * VEC + t]) + f32(bias[WHOLE * VEC + t]))

    return main
