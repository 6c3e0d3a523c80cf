"""Cost models that rank candidate configs; the tuner measures only the most promising."""

from autotile.costmodel.xgb import CostModel, XGBCostModel, cross_validate, ranking_quality

__all__ = ["CostModel", "XGBCostModel", "cross_validate", "ranking_quality"]
