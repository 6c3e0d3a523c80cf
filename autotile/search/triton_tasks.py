"""Triton work done in other processes, where templates meet the compiler and the GPU: compile checks in the
measurer's build workers (no GPU needed), verify-then-time on the GPU in its runner, and verification under
TRITON_INTERPRET=1 on CPU (`python -m autotile.search.triton_tasks` reads a JSON list of {"workload": ...,
"config": ...} on stdin and prints one verdict per case; correctness only, interpreter timings mean nothing).
A kernel that faults or hangs takes only its process down.

Triton reads TRITON_INTERPRET when @triton.jit decorates a function, so the interpreter must be chosen before
any kernel module is imported; a child process keeps that choice away from the caller's session.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from autotile.codegen.triton.aot import CompileInfo, compile_program
from autotile.codegen.triton.gpu import require_cuda, time_cuda
from autotile.errors import Unsupported, WrongResult


def decode(workload_dict: dict, config_dict: dict):
    from autotile.ops import triton_space_for, workload_from_dict

    workload = workload_from_dict(workload_dict)
    return workload, triton_space_for(workload).config_type.from_dict(config_dict)


def compile_task(workload_dict: dict, config_dict: dict, arch: int, cache_dir: str):
    """Build-worker side: compile for the GPU's arch and refuse what does not fit; returns (key, seconds)."""
    from autotile.ops import triton_program

    os.environ["AUTOTILE_CACHE_DIR"] = cache_dir
    workload, config = decode(workload_dict, config_dict)
    start = time.perf_counter()
    program = triton_program(workload, config)
    info = compile_program(program, arch)
    if not info.ok:
        raise RuntimeError(f"compile failed: {info.error.splitlines()[-1] if info.error else '?'}")
    if not info.fits:
        raise Unsupported(f"does not fit sm_{arch}: shared {info.shared} B, {info.registers} registers, "
                           f"{info.spill_stores} spill stores")
    return program.key, time.perf_counter() - start



def run_task(workload_dict: dict, config_dict: dict, key: str, repeat: int, min_repeat_s: float):
    """Runner side: verify on the GPU against the float64 reference, then time. Raises on a wrong result."""
    from autotile.codegen.triton.launch import TritonKernel
    from autotile.ir.reference import compare, poisoned_output
    from autotile.ops import triton_program
    from autotile.search.measure import _draws

    torch = require_cuda()
    workload, config = decode(workload_dict, config_dict)
    kernel = TritonKernel(workload, config, triton_program(workload, config))
    max_error = 0.0
    for inputs, reference in _draws(workload):
        gpu_inputs = [x.cuda() for x in inputs]
        out = poisoned_output(workload).cuda()
        kernel(*gpu_inputs, out=out)
        verdict = compare(workload, out.cpu(), reference)
        if not verdict.ok:
            raise WrongResult(f"wrong result: {verdict.reason}")
        max_error = max(max_error, verdict.max_abs_error)
    gpu_inputs = [x.cuda() for x in _draws(workload)[0][0]]
    out = torch.empty_like(poisoned_output(workload), device="cuda")
    times_us = [t * 1e6 for t in time_cuda(lambda: kernel(*gpu_inputs, out=out), max(min_repeat_s * repeat, 0.02))]
    return {
        "median": statistics.median(times_us), "mean": statistics.fmean(times_us), "min": min(times_us),
        "max": max(times_us), "std": statistics.pstdev(times_us), "runs": len(times_us), "threads": None,
        "max_abs_error": max_error,
    }


def check_config(workload, config, target=90) -> CompileInfo:
    """Compile the kernel of (workload, config) for `target`; see `compile_program`."""
    from autotile.ops import triton_program

    return compile_program(triton_program(workload, config), target)


def prune(workload, configs, target=90) -> list:
    """The configs whose kernels compile for `target` and fit it (shared memory, registers, no spills)."""
    return [c for c in configs if check_config(workload, c, target).fits]


def verify_interpreted(cases: list[tuple], timeout: float = 600.0) -> list[dict]:
    """[(workload, config)] -> [{"ok", "max_abs_error", "reason"}], each checked against ir.reference."""
    payload = json.dumps([{"workload": w.to_dict(), "config": c.to_dict()} for w, c in cases])
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-m", "autotile.search.triton_tasks"], input=payload,
                          capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"interpreter process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _verify_one(case: dict) -> dict:
    from autotile.codegen.triton.launch import TritonKernel
    from autotile.ir.reference import verify
    from autotile.ops import triton_program, triton_space_for, workload_from_dict

    try:
        workload = workload_from_dict(case["workload"])
        config = triton_space_for(workload).config_type.from_dict(case["config"])
        verdict = verify(workload, TritonKernel(workload, config, triton_program(workload, config)))
        return {"ok": verdict.ok, "max_abs_error": verdict.max_abs_error, "reason": verdict.reason}
    except Exception as e:  # a kernel that fails to trace or run is a failed case, reported with its reason
        return {"ok": False, "max_abs_error": float("inf"), "reason": f"{type(e).__name__}: {e}"[-2000:]}


def interpreted_run_task(workload_dict: dict, config_dict: dict, key: str, repeat: int, min_repeat_s: float) -> dict:
    """InterpretedTritonMeasurer's runner side (a worker started with TRITON_INTERPRET=1): verify on CPU
    tensors against the reference, then time the interpreter. The verdict is real; the time is not a GPU's."""
    from autotile.codegen.triton.launch import TritonKernel
    from autotile.ops import triton_program, triton_space_for, workload_from_dict
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
