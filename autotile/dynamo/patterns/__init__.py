"""The graph patterns the pass replaces, one module per op family, each self-contained (it imports dynamo's
generic helpers, ir/ and kernels/, never another pattern), so a family's pattern can move into its own package.

Order matters: the first pattern that matches a node owns it. torchao's quantized linears are mm / addmm too, so
qgemm comes before gemm.
"""

from __future__ import annotations

from autotile.dynamo.patterns import attention, conv2d, gemm, layernorm, qgemm

PATTERNS = (qgemm.PATTERN, gemm.PATTERN, conv2d.PATTERN, attention.PATTERN, layernorm.PATTERN)
