"""Lowering of the attention template to TVM: a TVMScript program generated from the config.

TE cannot express the online-softmax recurrence, so the kernel is written as explicit loops over
explicit buffers, with the block sizes closed over as compile-time constants. Register tiles are
small "local" buffers indexed only by unrolled and vectorized loops, so LLVM keeps them in vector
registers; exp is the polynomial one from fastmath (vector FMAs, not libm calls).

bfloat16 operands are widened to float32 where they are copied anyway, never in the inner loops: Q when it is
scaled into its block, K when it is packed, and V into a float32 copy packed the same way as K (once, "global", or
per key block, "block"); the output is rounded to bfloat16 once, when it is written.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from autotile.codegen.tvm import fastmath
from autotile.ops.attention.flash import NEG, AttentionConfig, _ceil_div
from autotile.ops.attention.softmax_tvm import key_blocks, normalized_rows, online_softmax
from autotile.ops.attention.workload import AttentionWorkload


def schedule(w: AttentionWorkload, c: AttentionConfig) -> tvm.IRModule:
    """The kernel main(q, k, v, out) for this workload and config."""
    return tvm.IRModule({"main": _program(w, c)})


def _program(w: AttentionWorkload, c: AttentionConfig):  # noqa: C901 (one generated program)
    B, H, HKV, SQ, SKV, D = w.batch, w.heads, w.kv_heads, w.seq_q, w.seq_kv, w.head_dim
    BQ, BKV, VEC, RS, RO, DT = c.block_q, c.block_kv, c.vec, c.rows_s, c.rows_o, c.d_tile
    VD = c.vec_d  # lanes of the head_dim vectors (head_dim need not be a multiple of VEC)
    UD, UKV = c.unroll_d, c.unroll_kv
    GROUP, NQ, NKV = H // HKV, _ceil_div(SQ, BQ), _ceil_div(SKV, BKV)
    CAUSAL, OFF = w.causal, w.causal_offset
    SCALE = T.float32(w.scale)
    GLOBAL_K = c.pack_k == "global"
    TASKS = B * H * NQ if c.parallel == "bhq" else B * H
    PER_TASK = 1 if c.parallel == "bhq" else NQ
    BF16 = w.dtype == "bfloat16"

    def widen(x):  # float32 untouched: its program is the same as before bf16 existed
        return fastmath.widen(x, w.dtype)

    def v_at(vw, b, hk, j0, j, d):
        """V[b, hk, j, d] in float32 from `vw`: V itself, its widened copy, or this key block's (from j0 on)."""
        return vw[j - j0, d] if BF16 and not GLOBAL_K else vw[b, hk, j, d]

    def visible(i, j):
        """Key j (absolute) is unmasked for query row i (absolute)."""
        ok = j < SKV
        return T.And(ok, j <= i + OFF) if CAUSAL else ok

    softmax = online_softmax(BQ, BKV, VEC, visible)
    write_rows = normalized_rows(w, BQ, VD)

    @T.macro
    def kv_block(k, v, kglob, vw, qs, kt, s, o, m, ell, alpha, b, hk, i0, kb, masked):
        j0 = kb * BKV
        keys = T.min(BKV, SKV - j0) if masked else BKV  # keys of this block that exist
        if not GLOBAL_K:  # transpose this block of K into a D x BKV panel
            # Along K's rows, each read once: rows of a fused qkv projection lie 9 KB apart, which maps every 4th
            # one to the same L1 sets, so reading down columns missed L1 (measured at seq 128: 316 -> 287 us).
            for j, d in T.grid(BKV, D):
                kt[d, j] = widen(k[b, hk, T.min(j0 + j, SKV - 1), d])
            if BF16:
                for j in range(keys):
                    for do in range(D // VD):
                        for di in T.vectorized(VD):
                            vw[j, do * VD + di] = widen(v[b, hk, j0 + j, do * VD + di])
        # S = (scale q) k^T, RS rows x BKV columns of accumulators at a time.
        for it in range(BQ // RS):
            acc = T.alloc_buffer((RS, BKV), "float32", scope="local")
            for r in T.unroll(RS):
                for jo in T.unroll(BKV // VEC):
                    for ji in T.vectorized(VEC):
                        acc[r, jo * VEC + ji] = T.float32(0)
            for do in range(D // UD):
                for du in T.unroll(UD):
                    for r in T.unroll(RS):
                        for jo in T.unroll(BKV // VEC):
                            for ji in T.vectorized(VEC):
                                if GLOBAL_K:
                                    acc[r, jo * VEC + ji] += qs[it * RS + r, do * UD + du] * kglob[
                                        b, hk, kb, do * UD + du, jo * VEC + ji]
                                else:
                                    acc[r, jo * VEC + ji] += qs[it * RS + r, do * UD + du] * kt[
                                        do * UD + du, jo * VEC + ji]
            for r in T.unroll(RS):
                for jo in T.unroll(BKV // VEC):
                    for ji in T.vectorized(VEC):
                        if masked:
                            s[it * RS + r, jo * VEC + ji] = T.Select(
                                visible(i0 + it * RS + r, j0 + jo * VEC + ji), acc[r, jo * VEC + ji], T.float32(NEG))
                        else:
                            s[it * RS + r, jo * VEC + ji] = acc[r, jo * VEC + ji]
        # Online softmax: new running max, rescale factor, P = exp(S - max) in place, running sum.
        softmax(s, m, ell, alpha, i0, j0, masked)
        # O = alpha O + P V, RO rows x DT columns of accumulators at a time; padded keys are skipped.
        for it in range(BQ // RO):
            for dt in range(D // DT):
                acc = T.alloc_buffer((RO, DT), "float32", scope="local")
                for r in T.unroll(RO):
                    for do in T.unroll(DT // VD):
                        for di in T.vectorized(VD):
                            acc[r, do * VD + di] = o[it * RO + r, dt * DT + do * VD + di] * alpha[it * RO + r]
                for jo in range(keys // UKV):
                    for ju in T.unroll(UKV):
                        for r in T.unroll(RO):
                            for do in T.unroll(DT // VD):
                                for di in T.vectorized(VD):
                                    acc[r, do * VD + di] += s[it * RO + r, jo * UKV + ju] * v_at(
                                        vw, b, hk, j0, j0 + jo * UKV + ju, dt * DT + do * VD + di)
                for ju in range(keys % UKV):  # leftover keys of a short block
                    for r in T.unroll(RO):
                        for do in T.unroll(DT // VD):
                            for di in T.vectorized(VD):
                                acc[r, do * VD + di] += s[it * RO + r, keys // UKV * UKV + ju] * v_at(
                                    vw, b, hk, j0, j0 + keys // UKV * UKV + ju, dt * DT + do * VD + di)
                for r in T.unroll(RO):
                    for do in T.unroll(DT // VD):
                        for di in T.vectorized(VD):
                            o[it * RO + r, dt * DT + do * VD + di] = acc[r, do * VD + di]

    @T.macro
    def q_block(q, k, v, out, kglob, vglob, b, h, qb):
        hk = h // GROUP
        i0 = qb * BQ
        qs = T.alloc_buffer((BQ, D), "float32", scope="local")
        s = T.alloc_buffer((BQ, BKV), "float32", scope="local")
        o = T.alloc_buffer((BQ, D), "float32", scope="local")
        m = T.alloc_buffer((BQ,), "float32", scope="local")
        ell = T.alloc_buffer((BQ,), "float32", scope="local")
        alpha = T.alloc_buffer((BQ,), "float32", scope="local")
        kt = T.alloc_buffer((D, BKV) if not GLOBAL_K else (1, 1), "float32", scope="local")
        if BF16 and not GLOBAL_K:
            vw = T.alloc_buffer((BKV, D), "float32", scope="local")  # this key block of V, widened
        else:
            vw = T.meta_var(vglob)
        for i in range(BQ):  # padded rows repeat the last query; they are never written out
            for do in range(D // VD):
                for di in T.vectorized(VD):
                    qs[i, do * VD + di] = widen(q[b, h, T.min(i0 + i, SQ - 1), do * VD + di]) * SCALE
                    o[i, do * VD + di] = T.float32(0)
            m[i] = T.float32(NEG)
            ell[i] = T.float32(0)
        # Key blocks every row of this block sees in full run unmasked; the rest (the causal
        # diagonal, padded keys) apply the mask; blocks no row sees are never visited.
        n_full, n_all = T.meta_var(key_blocks(w, BQ, BKV, i0))
        for kb in range(n_full):
            kv_block(k, v, kglob, vw, qs, kt, s, o, m, ell, alpha, b, hk, i0, kb, False)
        for kb in range(n_full, n_all):
            kv_block(k, v, kglob, vw, qs, kt, s, o, m, ell, alpha, b, hk, i0, kb, True)
        write_rows(out, o, ell, b, h, i0)

    @T.prim_func(check_well_formed=False)
    def main(q_handle: T.handle, k_handle: T.handle, v_handle: T.handle, out_handle: T.handle):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        # Strides of the outer three dims are bound at call time (see Workload.strided_operands).
        qs0, qs1, qs2 = T.int32(), T.int32(), T.int32()
        ks0, ks1, ks2 = T.int32(), T.int32(), T.int32()
        vs0, vs1, vs2 = T.int32(), T.int32(), T.int32()
        os0, os1, os2 = T.int32(), T.int32(), T.int32()
        q = T.match_buffer(q_handle, (B, H, SQ, D), w.dtype, strides=[qs0, qs1, qs2, 1])
        k = T.match_buffer(k_handle, (B, HKV, SKV, D), w.dtype, strides=[ks0, ks1, ks2, 1])
        v = T.match_buffer(v_handle, (B, HKV, SKV, D), w.dtype, strides=[vs0, vs1, vs2, 1])
        out = T.match_buffer(out_handle, (B, H, SQ, D), w.dtype, strides=[os0, os1, os2, 1])
        kglob = T.alloc_buffer((B, HKV, NKV, D, BKV) if GLOBAL_K else (1, 1, 1, 1, 1), "float32")
        if BF16 and GLOBAL_K:
            vglob = T.alloc_buffer((B, HKV, SKV, D), "float32")  # V widened once
        else:
            vglob = T.meta_var(v)  # float32: P V reads V itself ("block" packs widen V per key block, in q_block)
        if GLOBAL_K:  # K^T packed once into BKV-wide panels, zero past the last key
            for bh in T.parallel(B * HKV):
                for kb in range(NKV):
                    for j in range(BKV):
                        for d in range(D):
                            kglob[bh // HKV, bh % HKV, kb, d, j] = T.if_then_else(
                                kb * BKV + j < SKV, widen(k[bh // HKV, bh % HKV, T.min(kb * BKV + j, SKV - 1), d]),
                                T.float32(0))
                if BF16:
                    for j in range(SKV):
                        for do in range(D // VD):
                            for di in T.vectorized(VD):
                                vglob[bh // HKV, bh % HKV, j, do * VD + di] = widen(
                                    v[bh // HKV, bh % HKV, j, do * VD + di])
        for task in T.parallel(TASKS):
            for sub in range(PER_TASK):
                if c.parallel == "bhq":
                    q_block(q, k, v, out, kglob, vglob, task // (H * NQ), task // NQ % H, task % NQ)
                else:
                    q_block(q, k, v, out, kglob, vglob, task // H, task % H, sub)

    return main
