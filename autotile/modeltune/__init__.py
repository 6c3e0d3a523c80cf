"""Whole-model offline tuning: a model's workloads, weighted by their calls per forward, tuned under one budget by
a task scheduler (scheduler.py), with the run's state in the database after every round (run.py)."""

from autotile.modeltune.run import ModelTuneOptions, ModelTuneResult, tune_model, tune_tasks

__all__ = ["ModelTuneOptions", "ModelTuneResult", "tune_model", "tune_tasks"]
