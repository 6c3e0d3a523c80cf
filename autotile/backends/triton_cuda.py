"""The Triton backend: every family's GPU templates, compiled for this NVIDIA GPU's architecture."""

from __future__ import annotations

import os

from autotile.errors import KernelBuildError

# With TRITON_INTERPRET=1 (set before Triton is imported) and no GPU, Triton kernels run on CPU tensors in
# Triton's interpreter: compiled (and pruned) as for this GPU, timed meaninglessly. For tests of the plumbing.
INTERPRETER = {"kind": "cuda", "name": "Triton interpreter", "capability": "sm_90", "sms": 132, "memory_gib": 80.0}


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


class TritonCuda:
    name = "triton"
    tensor_device = "cuda"
    unavailable_reason = ("the triton backend needs a CUDA GPU, and this machine has none; use --backend tvm "
                          "(Triton kernels can still be compiled for a GPU target here: autotile.codegen.triton.aot)")

    def available(self) -> bool:
        from autotile.db.device import cuda_fingerprint

        return cuda_fingerprint() is not None or interpreted()

    def device(self, threads: int | None = None):
        from autotile.db.device import Device, cuda_fingerprint, current_device, device_key

        if cuda_fingerprint() is None and interpreted():
            return Device(device_key(INTERPRETER), dict(INTERPRETER))
        return current_device("triton", threads)

    def versions(self) -> dict:
        import triton

        import autotile

        return {"autotile": autotile.__version__, "triton": triton.__version__}

    def spaces(self, workload, fingerprint: dict) -> list:
        from autotile.ops import spaces_for

        return spaces_for(workload, fingerprint, backend=self.name)

    def measurer(self, device):
        from autotile.search.measure import TritonMeasurer

        return TritonMeasurer(device)

    def searcher(self, strategy, space, *, workload, db, device, measurer, seed: int, seeds, seen, cost_model):
        """A learning strategy's cost model also sees compile metadata (search/compiled.py)."""
        if not strategy.learns:
            return strategy.create(space, seed=seed, seeds=seeds, seen=seen)
        from autotile.search.compiled import CompileAwareSearch, CompileFeatures, pool_compiler
        from autotile.search.history import history
        from autotile.search.strategy import new_cost_model

        pool = getattr(measurer, "build_pool", None)
        compile_many = pool_compiler(pool, workload, space.arch) if pool is not None else None
        compiled = CompileFeatures(workload, space, space.arch, compile_many)
        past = history(db, device, space, workload, self.name, features=compiled.of)
        return CompileAwareSearch(space, compiled=compiled, seed=seed, seeds=seeds, seen=seen,
                                  cost_model=cost_model or new_cost_model(seed), history=past.own,
                                  foreign=past.foreign)

    def load(self, device, workload, config, verified: bool):
        """A Triton kernel on the GPU (called with CUDA tensors); an unmeasured config is verified first."""
        from autotile.codegen.triton.launch import TritonKernel
        from autotile.ir.reference import verify
        from autotile.ops import triton_program

        compiled = TritonKernel(workload, config, triton_program(workload, config))
        if not verified:
            import torch

            where = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: the interpreter's tensors

            def on_gpu(*inputs, out):  # verify() hands CPU tensors
                out.copy_(compiled(*(x.to(where) for x in inputs), out=out.to(where)).cpu())

            verdict = verify(workload, on_gpu)
            if not verdict.ok:
                raise KernelBuildError(f"the default Triton kernel for {workload.key} failed verification: "
                                       f"{verdict.reason}")
        return compiled
