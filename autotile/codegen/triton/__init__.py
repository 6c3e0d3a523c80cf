"""The Triton backend: generated kernel source, loading it as a @triton.jit function, launching it on torch
tensors, and ahead-of-time compiles for a GPU target (no GPU needed) whose metadata prunes the config space.

Templates (what source to generate for a workload and config) live in `autotile/ops/<op>/triton.py`.
"""
