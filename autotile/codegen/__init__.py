"""Code generation below the templates: a lowered program and a target in, an artifact out (a compiled TVM library
called on torch tensors, a Triton kernel). Knows TVM, Triton and torch, nothing of families, tuning or databases;
imports nothing of autotile above it."""
