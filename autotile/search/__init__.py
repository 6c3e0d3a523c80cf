"""Tuning: search strategies (strategy.py), the tuning loop where a backend's templates compete (tuner.py), which
config runs a workload (choose.py), worker processes that build, verify and time candidates with typed failures
(worker.py, measure.py, failures.py), the kernel cache on disk (artifacts.py), builds contained outside tuning
(isolated.py), and the Triton build and run tasks (triton_tasks.py, compiled.py)."""
