"""The workload base: what every op family's workload shares (validation at the boundary, a stable key,
operand shapes and sizes), and the epilogue chain GEMM-like ops fuse."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields

from autotile.errors import AutotileError
from autotile.ir.dtypes import (
    GPU_ONLY_GEMM_DTYPES,
    dtype,
)

# Kernels index an operand's elements with 32-bit integers (TVM's index type for these shapes, Triton's offsets).
MAX_OPERAND_ELEMENTS = 2**31 - 1
STORAGE_ONLY = GPU_ONLY_GEMM_DTYPES  # dtypes tensors never have (tf32 is float32 data)
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")
EPILOGUE_OPS = ("bias", "residual", *ACTIVATIONS)  # plus "cast:<dtype>"


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise AutotileError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise AutotileError(f"{name} must be a positive integer, got {value}")
    return value


def parse_epilogue(spec) -> tuple[str, ...]:
    """'bias,gelu' or ['bias', 'gelu'] -> ('bias', 'gelu'), validated."""
    if spec is None or spec == "" or spec == "none":
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    ops = []
    for raw in items:
        op = str(raw).strip().lower()
        if op.startswith("cast:"):
            op = "cast:" + dtype(op[5:]).name
        elif op not in EPILOGUE_OPS:
            raise AutotileError(
                f"unknown epilogue op {raw!r}; expected a chain of {', '.join(EPILOGUE_OPS)}, cast:<dtype>"
            )
        ops.append(op)
    casts = [i for i, op in enumerate(ops) if op.startswith("cast:")]
    if casts and casts != [len(ops) - 1]:
        raise AutotileError(f"cast must be the last epilogue op, once: {','.join(ops)}")
    for name in ("bias", "residual"):
        if ops.count(name) > 1:
            raise AutotileError(f"epilogue op {name!r} given twice: {','.join(ops)}")
    return tuple(ops)


def positive_pair(name: str, value, minimum: int = 1) -> tuple[int, int]:
    """N or (H, W) -> (H, W) of integers >= minimum, with an error naming the parameter."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise AutotileError(f"{name} must be one integer or a pair (H, W), got {value!r}")
    out = []
    for v in pair:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise AutotileError(f"{name} must be integers >= {minimum}, got {value!r}")
        out.append(v)
    return out[0], out[1]


class Workload:
    """What every op's workload offers the tuner, the database and the verifier.

    Subclasses are frozen dataclasses with a class attribute `op` and define `key`, `flops`,
    `reduction` (the length of the longest sum, which sets the verification tolerance),
    `operand_shapes()` (kernel arguments in call order, the output last) and `reference(*inputs)`
    (the float64 result). Tuple fields are stored as lists in dicts and restored by `from_dict`.
    """

    op: str
    dtype: str

    @property
    def out_dtype(self) -> str:
        return self.dtype

    @property
    def accumulate_dtype(self) -> str:
        """The precision the kernel computes in, which sets the verification tolerance (the output's rounding to
        out_dtype is added to it): the inputs' dtype unless a subclass computes wider (bfloat16 attention)."""
        return self.dtype

    def __str__(self) -> str:
        return self.key

    @property
    def structure(self) -> str:
        """The workload less its sizes: workloads of one structure run the same loop nest over other extents, so
        one can reach about the throughput another reached (Ansor's "similar tasks"). Subclasses whose other
        fields change the loop nest (a conv's window and stride, a quantized GEMM's formats) add them."""
        return f"{self.op}:{self.dtype}"

    def to_dict(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        d["op"] = self.op
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"op"})
        if unknown:
            raise AutotileError(f"{cls.op} workloads have no field(s) {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})

    @property
    def output_shape(self) -> tuple[int, ...]:
        return list(self.operand_shapes().values())[-1]

    def input_dtype(self, name: str) -> str:
        """Element type of an input operand: the workload's dtype unless a subclass says otherwise."""
        return self.dtype

    # Operands the kernel reads and writes through runtime strides (unit stride in the last dim only);
    # all others must be contiguous.
    strided_operands: tuple[str, ...] = ()

    def check_sizes(self) -> None:
        """Clear error for an operand too large for the kernels' 32-bit indices; the last step of validation.
        (TVM would fail inside its compiler, or worse, build a kernel whose offsets wrap around.)"""
        for name, shape in self.operand_shapes().items():
            count = math.prod(shape)
            if count > MAX_OPERAND_ELEMENTS:
                raise AutotileError(
                    f"{self.key}: operand {name} ({' x '.join(map(str, shape))}) would have {count:,} elements; "
                    f"kernels index operands with 32-bit integers, so one holds at most 2**31 - 1 = "
                    f"{MAX_OPERAND_ELEMENTS:,} elements")

    def operand_bytes(self) -> int:
        """Bytes of all operands of one call, the output included."""
        shapes = self.operand_shapes()
        dtypes = [self.input_dtype(name) for name in list(shapes)[:-1]] + [self.out_dtype]
        return sum(math.prod(shape) * dtype(dt).bits // 8 for shape, dt in zip(shapes.values(), dtypes))

    def check_operands(self, args) -> None:
        """Clear error when tensors handed to a kernel do not fit this workload."""
        shapes = self.operand_shapes()
        if len(args) != len(shapes):
            raise AutotileError(f"{self.key} takes {len(shapes)} tensors ({', '.join(shapes)}), got {len(args)}")
        for (name, want), arg in zip(shapes.items(), args):
            got = tuple(arg.shape)
            if got != want:
                raise AutotileError(f"{self.key}: operand {name} has shape {got}, expected {want}")
