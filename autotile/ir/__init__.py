"""Workloads, dtypes, references and the one definition of "verified"."""

from autotile.ir.dtypes import DTYPES, dtype
from autotile.ir.workload import GemmWorkload, parse_epilogue

__all__ = ["DTYPES", "GemmWorkload", "dtype", "parse_epilogue"]

# The other op families' workloads live in their own modules, imported on first use:
#   autotile.ir.conv.Conv2dWorkload, autotile.ir.attention.AttentionWorkload, autotile.ir.qgemm.QGemmWorkload
