"""The online softmax of the flash attention programs (flash_tvm.py on vectors, flash_amx_tvm.py on tiles), as
TVMScript macros over explicit buffers: one row block's running max, rescale factor, probabilities and sum, and
the key blocks a query block visits."""

from __future__ import annotations

from tvm.script import tirx as T

from autotile.codegen.tvm import fastmath
from autotile.ops.attention.flash import NEG


def online_softmax(rows: int, keys: int, vec: int, visible, scale=None, bits=None):
    """A macro softmax(s, m, ell, alpha, i0, j0, masked) over `rows` rows of `keys` scores in s: the new running
    max m, alpha = exp(m_old - m), s = exp(s - m) (masked entries 0), ell = ell alpha + rowsum. `scale`: the scores
    are multiplied by it first (else they come scaled); `bits`: a buffer that also gets bfloat16 bits of each
    probability (the A tiles of P V). visible(i, j): key j (absolute) is unmasked for query row i (absolute)."""
    exp = fastmath.exp

    @T.macro
    def halve(red, width, is_max):
        """One step of a tree reduction of a vector: short dependency chains instead of a serial scan."""
        for ji in T.vectorized(width):
            if is_max:
                red[ji] = T.max(red[ji], red[ji + width])
            else:
                red[ji] = red[ji] + red[ji + width]

    @T.macro
    def reduce(red, is_max):
        if vec >= 16:
            halve(red, 8, is_max)
        halve(red, 4, is_max)
        halve(red, 2, is_max)
        halve(red, 1, is_max)

    @T.macro
    def softmax(s, m, ell, alpha, i0, j0, masked):
        for i in range(rows):
            red = T.alloc_buffer((vec,), "float32", scope="local")
            for ji in T.vectorized(vec):
                red[ji] = T.float32(NEG)
            for jo in range(keys // vec):
                for ji in T.vectorized(vec):
                    if scale is not None:
                        if masked:
                            s[i, jo * vec + ji] = T.Select(visible(i0 + i, j0 + jo * vec + ji),
                                                           s[i, jo * vec + ji] * scale, T.float32(NEG))
                        else:
                            s[i, jo * vec + ji] = s[i, jo * vec + ji] * scale
                    red[ji] = T.max(red[ji], s[i, jo * vec + ji])
            reduce(red, True)
            top = T.alloc_buffer((1,), "float32", scope="local")
            top[0] = T.max(m[i], red[0])
            alpha[i] = exp(m[i] - top[0])
            m[i] = top[0]
            for ji in T.vectorized(vec):
                red[ji] = T.float32(0)
            for jo in range(keys // vec):
                for ji in T.vectorized(vec):
                    if masked:
                        s[i, jo * vec + ji] = T.Select(visible(i0 + i, j0 + jo * vec + ji),
                                                       exp(s[i, jo * vec + ji] - top[0]), T.float32(0))
                    else:
                        s[i, jo * vec + ji] = exp(s[i, jo * vec + ji] - top[0])
                    red[ji] += s[i, jo * vec + ji]
                    if bits is not None:
                        bits[i, jo * vec + ji] = fastmath.bf16_bits(s[i, jo * vec + ji])
            reduce(red, False)
            ell[i] = ell[i] * alpha[i] + red[0]

    return softmax


def normalized_rows(w, rows: int, lanes: int):
    """A macro write(out, o, ell, b, h, i0): out rows i0... (those that exist) = o / ell, cast to the workload's
    dtype once; a row that saw no key (ell == 0) is defined to be zeros."""

    @T.macro
    def write(out, o, ell, b, h, i0):
        for i in range(T.min(rows, w.seq_q - i0)):
            inv = T.alloc_buffer((1,), "float32", scope="local")
            inv[0] = T.Select(ell[i] > T.float32(0), T.float32(1) / ell[i], T.float32(0))
            for do in range(w.head_dim // lanes):
                for di in T.vectorized(lanes):
                    out[b, h, i0 + i, do * lanes + di] = fastmath.cast(o[i, do * lanes + di] * inv[0], w.dtype)

    return write


def key_blocks(w, block_q: int, block_kv: int, i0):
    """(unmasked, all): the key blocks a query block starting at row i0 visits, those every row of it sees in full
    first (the rest, the causal diagonal and padded keys, apply the mask; blocks no row sees are never visited)."""
    n_kv, full = -(-w.seq_kv // block_kv), w.seq_kv // block_kv
    if not w.causal:
        return full, n_kv
    last = T.min(i0 + block_q, w.seq_q) - 1
    n_full = T.max(T.min(T.floordiv(i0 + w.causal_offset + 1, block_kv), full), 0)
    n_all = T.max(T.min(T.floordiv(last + w.causal_offset, block_kv) + 1, n_kv), 0)
    return n_full, n_all
