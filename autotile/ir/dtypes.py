"""The table of element types autotile knows, by canonical name.

Later templates (low precision, block-scaled) extend behaviour, not this table's names.
"""

from dataclasses import dataclass

from autotile.errors import AutotileError


@dataclass(frozen=True)
class DType:
    name: str  # canonical name, used in workload keys
    bits: int
    kind: str  # "float", "int", "uint", "scale" (E8M0: an exponent only)
    numpy: str | None  # numpy / ml_dtypes name, None for sub-byte packed types
    tvm: str | None  # TVM dtype string, None where TVM has no scalar type


DTYPES: dict[str, DType] = {
    d.name: d
    for d in [
        DType("float32", 32, "float", "float32", "float32"),
        # TensorFloat-32: float32 tensors whose products NVIDIA tensor cores compute with a 10-bit mantissa
        # (the Triton backend's input_precision="tf32"); stored as float32 (STORAGE), no CPU meaning.
        DType("tfloat32", 32, "float", "float32", None),
        DType("float16", 16, "float", "float16", "float16"),
        DType("bfloat16", 16, "float", "bfloat16", "bfloat16"),
        DType("float8_e4m3", 8, "float", "float8_e4m3fn", "float8_e4m3fn"),
        DType("float8_e5m2", 8, "float", "float8_e5m2", "float8_e5m2"),
        DType("int32", 32, "int", "int32", "int32"),
        DType("int8", 8, "int", "int8", "int8"),
        DType("uint8", 8, "uint", "uint8", "uint8"),
        DType("int4", 4, "int", None, "int4"),
        # Narrow integer weights: stored as packed bit codes (see ir/quant.py), never as scalars.
        *(DType(f"int{b}", b, "int", None, None) for b in (2, 3, 5, 6, 7)),
        # OCP MX element formats (stored as packed bit codes) and the E8M0 power-of-two block scale.
        DType("float6_e3m2", 6, "float", "float6_e3m2fn", None),
        DType("float6_e2m3", 6, "float", "float6_e2m3fn", None),
        DType("float4_e2m1", 4, "float", "float4_e2m1fn", None),
        DType("float8_e8m0", 8, "scale", "float8_e8m0fnu", None),
    ]
}

# Spellings users type, mapped to the canonical name.
ALIASES = {
    "fp32": "float32",
    "f32": "float32",
    "tf32": "tfloat32",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "fp8_e4m3": "float8_e4m3",
    "e4m3": "float8_e4m3",
    "float8_e4m3fn": "float8_e4m3",
    "fp8_e5m2": "float8_e5m2",
    "e5m2": "float8_e5m2",
    "i8": "int8",
    "i32": "int32",
    "u8": "uint8",
    "i4": "int4",
    "fp8e4m3": "float8_e4m3",
    "fp8e5m2": "float8_e5m2",
    "fp6_e3m2": "float6_e3m2",
    "fp6_e2m3": "float6_e2m3",
    "fp4": "float4_e2m1",
    "fp4_e2m1": "float4_e2m1",
    "e8m0": "float8_e8m0",
}

# What the float templates (GEMM, convolution) can run today; the table above admits more for later issues.
SUPPORTED_GEMM_DTYPES = ("float32",)
# 16-bit float inputs of the GEMM template, accumulated in float32 (ops/gemm/lowp.py).
LOW_PRECISION_GEMM_DTYPES = ("bfloat16", "float16")
# GEMM input precisions only GPU tensor cores have: the Triton backend runs them, the TVM (CPU) backend refuses.
GPU_ONLY_GEMM_DTYPES = ("tfloat32",)
# Compute precisions held in another type's tensors: the name torch / numpy tensors of the dtype have.
STORAGE = {"tfloat32": "float32"}


def storage_name(name: str) -> str:
    """The dtype of the tensors that hold values of `name` (itself except for compute precisions: tf32)."""
    return STORAGE.get(name, name)


def dtype(name: str) -> DType:
    """Look a dtype up by canonical name or alias; a clear error names the unknown one."""
    canonical = ALIASES.get(str(name).lower(), str(name).lower())
    if canonical not in DTYPES:
        known = ", ".join(DTYPES)
        raise AutotileError(f"unknown dtype {name!r}; expected one of: {known}")
    return DTYPES[canonical]
