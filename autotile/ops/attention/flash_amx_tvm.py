"""Lowering of bfloat16 flash attention to AMX tiles (see flash_amx.py): a TVMScript program.

    kp[b, g, kt, dp, l, h] = bits(K[b, g, 16 kt + l, 2 dp + h])   (key tiles in head_dim pairs: S's B tiles)
    vp[b, g, dt, kq, l, h] = bits(V[b, g, 2 kq + h, 16 dt + l])   (head_dim tiles in key pairs: P V's B tiles)
    per (batch, head, q block), for each key block a row of it sees:
      S = Q K^T                        tiles: Q rows (bf16) as A, kp as B, two key tiles per product
      m' = max(m, rowmax(scale S)); P = exp(scale S - m'), masked; l = l exp(m - m') + rowsum P    (float32)
      O = O exp(m - m') + bf16(P) V    tiles: P rows as A, vp as B, two head_dim tiles per product
    out = O / l, rounded to bfloat16 once.

kp and vp are made once per call (zero past the last key); the tiles' sums go through small float32 buffers
(S, and P V before it is added to O). Each parallel work item loads the tile config first and releases the tiles
last. The tile products are emitted by Python (autotile.codegen.tvm.amx.emit_tile_product) into the program.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from autotile.codegen.tvm import amx, amx_permission
from autotile.ops.attention.flash import NEG, _ceil_div
from autotile.ops.attention.flash_amx import KEY_STEP, AmxAttentionConfig
from autotile.ops.attention.softmax_tvm import key_blocks, normalized_rows, online_softmax
from autotile.ops.attention.workload import AttentionWorkload

VEC = 16


def schedule(w: AttentionWorkload, c: AmxAttentionConfig, emulate: bool | None = None) -> tvm.IRModule:
    """The kernel main(q, k, v, out). emulate: tile instructions as calls into their emulation (default:
    AUTOTILE_AMX_EMULATE)."""
    emulate = amx_permission.emulated() if emulate is None else emulate
    return tvm.IRModule({"main": _program(w, c, emulate)})


def _program(w: AttentionWorkload, c: AmxAttentionConfig, emulate: bool):  # noqa: C901 (one generated program)
    B, H, HKV, SQ, SKV, D = w.batch, w.heads, w.kv_heads, w.seq_q, w.seq_kv, w.head_dim
    QT, BKV, PER_TASK = c.q_tiles, c.block_kv, c.q_blocks_per_task
    BQ = 16 * QT
    GROUP, NQ, NKV = H // HKV, _ceil_div(SQ, BQ), _ceil_div(SKV, BKV)
    SKVP, NKT = NKV * BKV, NKV * BKV // 16
    CAUSAL, OFF = w.causal, w.causal_offset
    SCALE = T.float32(w.scale)
    TASKS = B * H * NQ // PER_TASK

    def bits(x):
        return T.reinterpret("uint16", x)

    def visible(i, j):
        ok = j < SKV
        return T.And(ok, j <= i + OFF) if CAUSAL else ok

    def s_product(qb, kp, s, b, hk, kb, pair):
        """s[:, 32 pair : 32 pair + 32] = Q K^T over two key tiles of key block kb."""
        kt0 = kb * (BKV // 16) + pair * 2
        amx.emit_tile_product(
            "bf16",
            [[(s.access_ptr("w", offset=m * 16 * BKV + pair * 32 + n * 16), BKV * 4) for n in range(2)]
             for m in range(QT)],
            [lambda step, m=m: (qb.access_ptr("r", offset=m * 16 * D + step * 32), D * 2) for m in range(QT)],
            [lambda step, n=n: (kp.access_ptr("r", offset=((((b * HKV + hk) * NKT + kt0 + n) * (D // 2))
                                                           + step * 16) * 32), 64) for n in range(2)],
            D // 32, emulate)

    def pv_product(p16, vp, pv, b, hk, kb, pair):
        """pv[:, 32 pair : 32 pair + 32] = P V over two head_dim tiles, all keys of block kb."""
        amx.emit_tile_product(
            "bf16",
            [[(pv.access_ptr("w", offset=m * 16 * D + pair * 32 + n * 16), D * 4) for n in range(2)]
             for m in range(QT)],
            [lambda step, m=m: (p16.access_ptr("r", offset=m * 16 * BKV + step * KEY_STEP), BKV * 2)
             for m in range(QT)],
            [lambda step, n=n: (vp.access_ptr("r", offset=((((b * HKV + hk) * (D // 16) + pair * 2 + n) * (SKVP // 2))
                                                           + (kb * BKV + step * KEY_STEP) // 2) * 32), 64)
             for n in range(2)],
            BKV // KEY_STEP, emulate)

    @T.macro
    def kv_block(kp, vp, qb, s, p16, pv, o, m, ell, alpha, b, hk, i0, kb, masked):
        softmax = T.meta_var(online_softmax(BQ, BKV, VEC, visible, scale=SCALE, bits=p16))
        j0 = kb * BKV
        for pair in range(BKV // 32):
            s_product(qb, kp, s, b, hk, kb, pair)
        softmax(s, m, ell, alpha, i0, j0, masked)
        for pair in range(D // 32):
            pv_product(p16, vp, pv, b, hk, kb, pair)
        for i in range(BQ):
            for do in range(D // VEC):
                for di in T.vectorized(VEC):
                    o[i, do * VEC + di] = o[i, do * VEC + di] * alpha[i] + pv[i, do * VEC + di]

    write_rows = normalized_rows(w, BQ, VEC)

    @T.macro
    def q_block(q, out, kp, vp, b, h, qb_index):
        hk = h // GROUP
        i0 = qb_index * BQ
        qb = T.alloc_buffer((BQ, D), "uint16", scope="local")
        s = T.alloc_buffer((BQ, BKV), "float32", scope="local")
        p16 = T.alloc_buffer((BQ, BKV), "uint16", scope="local")
        pv = T.alloc_buffer((BQ, D), "float32", scope="local")
        o = T.alloc_buffer((BQ, D), "float32", scope="local")
        m = T.alloc_buffer((BQ,), "float32", scope="local")
        ell = T.alloc_buffer((BQ,), "float32", scope="local")
        alpha = T.alloc_buffer((BQ,), "float32", scope="local")
        for i in range(BQ):  # padded rows repeat the last query; they are never written out
            for do in range(D // VEC):
                for di in T.vectorized(VEC):
                    qb[i, do * VEC + di] = bits(q[b, h, T.min(i0 + i, SQ - 1), do * VEC + di])
                    o[i, do * VEC + di] = T.float32(0)
            m[i] = T.float32(NEG)
            ell[i] = T.float32(0)
        n_full, n_all = T.meta_var(key_blocks(w, BQ, BKV, i0))
        for kb in range(n_full):
            kv_block(kp, vp, qb, s, p16, pv, o, m, ell, alpha, b, hk, i0, kb, False)
        for kb in range(n_full, n_all):
            kv_block(kp, vp, qb, s, p16, pv, o, m, ell, alpha, b, hk, i0, kb, True)
        write_rows(out, o, ell, b, h, i0)

    @T.prim_func(check_well_formed=False)
    def main(q_handle: T.handle, k_handle: T.handle, v_handle: T.handle, out_handle: T.handle):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        qs0, qs1, qs2 = T.int32(), T.int32(), T.int32()
        ks0, ks1, ks2 = T.int32(), T.int32(), T.int32()
        vs0, vs1, vs2 = T.int32(), T.int32(), T.int32()
        os0, os1, os2 = T.int32(), T.int32(), T.int32()
        q = T.match_buffer(q_handle, (B, H, SQ, D), "bfloat16", strides=[qs0, qs1, qs2, 1])
        k = T.match_buffer(k_handle, (B, HKV, SKV, D), "bfloat16", strides=[ks0, ks1, ks2, 1])
        v = T.match_buffer(v_handle, (B, HKV, SKV, D), "bfloat16", strides=[vs0, vs1, vs2, 1])
        out = T.match_buffer(out_handle, (B, H, SQ, D), "bfloat16", strides=[os0, os1, os2, 1])
        kp = T.alloc_buffer((B, HKV, NKT, D // 2, 16, 2), "uint16")
        vp = T.alloc_buffer((B, HKV, D // 16, SKVP // 2, 16, 2), "uint16")
        for bh in T.parallel(B * HKV):
            T.attr(0, "pragma_import_llvm", amx.llvm_ir(emulate))
            for kt, dp, lane, hh in T.grid(NKT, D // 2, 16, 2):
                kp[bh // HKV, bh % HKV, kt, dp, lane, hh] = T.if_then_else(
                    kt * 16 + lane < SKV, bits(k[bh // HKV, bh % HKV, T.min(kt * 16 + lane, SKV - 1), dp * 2 + hh]),
                    T.uint16(0))
            for dt, kq, lane, hh in T.grid(D // 16, SKVP // 2, 16, 2):
                vp[bh // HKV, bh % HKV, dt, kq, lane, hh] = T.if_then_else(
                    kq * 2 + hh < SKV, bits(v[bh // HKV, bh % HKV, T.min(kq * 2 + hh, SKV - 1), dt * 16 + lane]),
                    T.uint16(0))
        for task in T.parallel(TASKS):
            T.evaluate(T.call_extern("void", amx.BEGIN))
            for sub in range(PER_TASK):
                item = task * PER_TASK + sub
                q_block(q, out, kp, vp, item // (H * NQ), item // NQ % H, item % NQ)
            T.evaluate(T.call_extern("void", amx.END))

    return main
