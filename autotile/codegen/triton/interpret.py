"""Verify Triton kernels on CPU under TRITON_INTERPRET=1, in a process of its own.

Triton reads TRITON_INTERPRET when @triton.jit decorates a function, so the interpreter must be chosen
before any kernel module is imported; a child process keeps that choice away from the caller's session.
`python -m autotile.codegen.triton.interpret` reads a JSON list of {"workload": ..., "config": ...} on stdin
and prints one verdict per case as JSON on stdout. Correctness only: interpreter timings mean nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def verify_interpreted(cases: list[tuple], timeout: float = 600.0) -> list[dict]:
    """[(workload, config)] -> [{"ok", "max_abs_error", "reason"}], each checked against ir.reference."""
    payload = json.dumps([{"workload": w.to_dict(), "config": c.to_dict()} for w, c in cases])
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-m", "autotile.codegen.triton.interpret"], input=payload,
                          capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"interpreter process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _verify_one(case: dict) -> dict:
    from autotile.codegen.triton.launch import TritonKernel
    from autotile.ir.reference import verify
    from autotile.kernels import triton_program, triton_space_for, workload_from_dict

    try:
        workload = workload_from_dict(case["workload"])
        config = triton_space_for(workload).config_type.from_dict(case["config"])
        verdict = verify(workload, TritonKernel(workload, config, triton_program(workload, config)))
        return {"ok": verdict.ok, "max_abs_error": verdict.max_abs_error, "reason": verdict.reason}
    except Exception as e:  # a kernel that fails to trace or run is a failed case, reported with its reason
        return {"ok": False, "max_abs_error": float("inf"), "reason": f"{type(e).__name__}: {e}"[-2000:]}


def run_task(workload_dict: dict, config_dict: dict, key: str, repeat: int, min_repeat_s: float) -> dict:
    """InterpretedTritonMeasurer's runner side (a worker started with TRITON_INTERPRET=1): verify on CPU
    tensors against the reference, then time the interpreter. The verdict is real; the time is not a GPU's."""
    from autotile.codegen.triton.launch import TritonKernel
    from autotile.kernels import triton_program, triton_space_for, workload_from_dict
    from autotile.search.measure import verify_then_time

    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the interpreted runner needs TRITON_INTERPRET=1 set before Triton is imported")
    workload = workload_from_dict(workload_dict)
    config = triton_space_for(workload).config_type.from_dict(config_dict)
    program = triton_program(workload, config)
    if program.key != key:
        raise RuntimeError(f"built program {key[:12]} is not the one lowered here ({program.key[:12]})")
    kernel = TritonKernel(workload, config, program)
    return verify_then_time(workload, kernel, repeat, min_repeat_s, threads=None)


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run with TRITON_INTERPRET=1 (verify_interpreted does)")
    import warnings

    warnings.filterwarnings("ignore")  # numpy overflow in exp() of masked lanes, fp-fusion notices
    results = [_verify_one(case) for case in json.loads(sys.stdin.read())]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
