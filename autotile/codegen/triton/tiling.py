"""Triton source for the grouped (GROUP_M-swizzled) order of output tiles, shared by the GEMM-shaped templates.

Consecutive programs walk GROUP_M tile rows column by column, so they share panels of A and B in L2. The
kernel must define TILES_M, TILES_N and GROUP_M as constexprs; the lines set `pm` and `pn`.
"""

from __future__ import annotations


def grouped_tile_lines(index: str) -> list[str]:
    """Statements mapping the linear tile number `index` to its tile row `pm` and column `pn`."""
    return [
        "group = GROUP_M * TILES_N",
        f"first_m = ({index} // group) * GROUP_M",
        "rows_in_group = min(TILES_M - first_m, GROUP_M)",
        f"pm = first_m + ({index} % group) % rows_in_group",
        f"pn = ({index} % group) // rows_in_group",
    ]
