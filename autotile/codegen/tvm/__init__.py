"""The TVM code generator for CPUs: LLVM targets from the CPU's flags (build.py), the libraries' calling convention
on torch tensors (CompiledKernel), LLVM intrinsics the templates use (intrinsics.py), fast math for epilogues
(fastmath.py), and how TVM's thread pool behaves beside torch (pool.py)."""
