"""Deliberately broken candidates, chosen by the config's mr, for the containment tests (and a wrong Triton one,
and wrong attention kernels chosen by block_q).

Imported inside the spawned build and run workers (by dotted name), so each failure is real:
a TVM schedule error, a kernel that computes a wrong result, a segfault, a hang.
"""

import ctypes
import dataclasses
import os
import sys
import time

from autotile.codegen.tvm import build as tvm_build
from autotile.search import artifacts

COMPILE_ERROR, WRONG_RESULT, CRASH, HANG = 1, 2, 3, 4


def builder(device_key, workload, config, mcpu, threads, mattr=()):
    if config.mr == COMPILE_ERROR:
        import tvm

        from autotile.ops.gemm.blis_tvm import schedule

        sch = tvm.s_tir.Schedule(schedule(workload, config))
        sch.get_sblock("mm")  # decompose_reduction renamed it: TVM raises a schedule error
    if config.mr == WRONG_RESULT:
        return _dropped_last_k(workload, mcpu, threads)
    return artifacts.build_cached(device_key, workload, config, mcpu, threads, mattr)


def _dropped_last_k(workload, mcpu, threads):
    """A real TVM GEMM whose reduction stops one element short of K."""
    import tempfile

    import tvm
    from tvm import te

    a = te.placeholder((workload.m, workload.k), "float32", name="A")
    b = te.placeholder((workload.k, workload.n), "float32", name="B")
    k = te.reduce_axis((0, workload.k - 1), name="k")
    c = te.compute((workload.m, workload.n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    lib = tvm.compile(te.create_prim_func([a, b, c]), tvm_build.llvm_target(mcpu, threads))
    path = tempfile.mktemp(suffix=".so")
    lib.export_library(path)
    return path


WRONG_ATTENTION_BLOCK_Q = 8


def attention_builder(device_key, workload, config, mcpu, threads, mattr=()):
    """Real attention kernels; those of configs with block_q WRONG_ATTENTION_BLOCK_Q use twice the scale (wrong)."""
    if config.block_q == WRONG_ATTENTION_BLOCK_Q:
        workload = dataclasses.replace(workload, scale=2 * workload.scale)
    return artifacts.build_cached(device_key, workload, config, mcpu, threads, mattr)


def loader(workload, config, path):
    kernel = artifacts.load(workload, config, path)
    if config.mr == CRASH:
        def crash(*args, **kwargs):
            ctypes.string_at(0)  # segfault in the runner process

        return crash
    if config.mr == HANG:
        def hang(*args, **kwargs):
            while True:
                time.sleep(1)

        return hang
    return kernel


def abort_saying(message: str):
    """Die as LLVM does: a line on stderr, then SIGABRT."""
    os.write(2, f"{message}\n".encode())
    os.abort()


def exit_saying(message: str, code: int):
    print(message, file=sys.stderr, flush=True)
    os._exit(code)


def wrong_triton_result(workload_dict, config_dict, key, repeat, min_repeat_s):
    """The interpreted Triton runner's task (autotile.codegen.triton.interpret:run_task) for a real Triton kernel
    whose output is then made wrong in one element: the verification must reject it."""
    from autotile.codegen.triton.launch import TritonKernel
    from autotile.ops import triton_program, triton_space_for, workload_from_dict
    from autotile.search.measure import verify_then_time

    workload = workload_from_dict(workload_dict)
    config = triton_space_for(workload).config_type.from_dict(config_dict)
    kernel = TritonKernel(workload, config, triton_program(workload, config))

    def one_element_off(*inputs, out):
        kernel(*inputs, out=out)
        out.view(-1)[0] += 1000.0

    return verify_then_time(workload, one_element_off, repeat, min_repeat_s, threads=None)
