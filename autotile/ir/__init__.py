"""Workloads, dtypes, references and the one definition of "verified"."""

from autotile.ir.dtypes import DTYPES, dtype
from autotile.ir.workload import GemmWorkload, parse_epilogue

__all__ = ["DTYPES", "GemmWorkload", "dtype", "parse_epilogue"]
