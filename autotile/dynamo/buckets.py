"""Shape buckets for symbolic (dynamic) dimensions: one tuned kernel per bucket, inputs zero-padded up to it.

Boundaries: 1, 2, 4, 8, 16, then every power of two p >= 16 and 1.5 p (16, 24, 32, 48, 64, 96, 128, ...).
A size n runs the kernel of the smallest boundary >= n, so at most a third of the work is padding past 16.
Padding is exact where it is used: extra GEMM rows are zero and sliced off; extra causal attention rows and
keys come after every real one, and a top-left causal mask hides later keys from earlier queries.
"""

from __future__ import annotations


def bucket(n: int) -> int:
    """The smallest boundary >= n."""
    if n < 1:
        raise ValueError(f"a bucketed size must be positive, got {n}")
    if n <= 16:
        return 1 << (n - 1).bit_length()
    p = 1 << (n.bit_length() - 1)  # the power of two <= n
    if n == p:
        return p
    return p + p // 2 if n <= p + p // 2 else 2 * p


def boundaries(up_to: int) -> list[int]:
    """Every boundary <= up_to, ascending."""
    out, n = [], 1
    while n <= up_to:
        out.append(n)
        n = bucket(n + 1)
    return out
