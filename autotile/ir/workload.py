"""GEMM workloads: what to compute, validated at the boundary, with a stable key.

C[b] = epilogue(op(A[b]) @ op(B[b])), op = optional transpose. The epilogue is a chain applied
left to right to the fp32 accumulator: bias (a vector of N), relu, gelu (erf form, torch's
default), gelu_tanh, silu, residual (an M x N tensor added), cast:<dtype> (output dtype).
A and B are float32, bfloat16 or float16 (accumulated in float32); C has their dtype unless a cast
says otherwise; bias and residual are float32. dtype tfloat32 (GPU only) is float32 data whose products
tensor cores compute in TF32.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

from autotile.errors import AutotileError
from autotile.ir.dtypes import (
    GPU_ONLY_GEMM_DTYPES,
    LOW_PRECISION_GEMM_DTYPES,
    SUPPORTED_GEMM_DTYPES,
    dtype,
    storage_name,
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

    def __str__(self) -> str:
        return self.key

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


BROADCASTS = ("", "a", "b")


@dataclass(frozen=True)
class GemmWorkload(Workload):
    m: int
    n: int
    k: int
    batch: int = 1
    dtype: str = "float32"
    trans_a: bool = False
    trans_b: bool = False
    epilogue: tuple[str, ...] = field(default=())
    broadcast: str = ""  # "a" or "b": that operand has no batch dim and is shared by every batch
    # B is constant across calls (a layer's weight): the kernel may transform it once, ahead of the calls
    # (packed panels, kept while the same unchanged tensor is passed), and its timings leave that out.
    const_b: bool = False

    op = "gemm"

    def __post_init__(self):
        for name in ("m", "n", "k", "batch"):
            label = name.upper() if name != "batch" else name
            object.__setattr__(self, name, _positive_int(label, getattr(self, name)))
        dt = dtype(self.dtype).name
        if dt not in SUPPORTED_GEMM_DTYPES + LOW_PRECISION_GEMM_DTYPES + GPU_ONLY_GEMM_DTYPES:
            supported = ", ".join(SUPPORTED_GEMM_DTYPES + LOW_PRECISION_GEMM_DTYPES + GPU_ONLY_GEMM_DTYPES)
            raise AutotileError(f"dtype {dt!r} is not supported by the GEMM templates yet; supported: {supported}")
        object.__setattr__(self, "dtype", dt)
        object.__setattr__(self, "trans_a", bool(self.trans_a))
        object.__setattr__(self, "trans_b", bool(self.trans_b))
        object.__setattr__(self, "const_b", bool(self.const_b))
        object.__setattr__(self, "epilogue", parse_epilogue(self.epilogue))
        if self.out_dtype in STORAGE_ONLY:
            raise AutotileError(f"cast:{self.out_dtype} is a compute precision, not an output type; "
                                f"cast to {storage_name(self.out_dtype)}")
        if self.broadcast not in BROADCASTS:
            raise AutotileError(f"broadcast must be 'a', 'b' or empty (none), got {self.broadcast!r}")
        if self.broadcast and self.batch == 1:
            object.__setattr__(self, "broadcast", "")  # nothing to share with one batch
        self.check_sizes()

    # -- naming -------------------------------------------------------------------------
    @property
    def out_dtype(self) -> str:
        last = self.epilogue[-1] if self.epilogue else ""
        return last[5:] if last.startswith("cast:") else storage_name(self.dtype)

    @property
    def layout(self) -> str:
        return ("t" if self.trans_a else "n") + ("t" if self.trans_b else "n")

    @property
    def key(self) -> str:
        """Readable, canonical and stable: built from values only, never from hash() or repr."""
        epi = "+".join(op.replace(":", "-") for op in self.epilogue) or "none"
        shared = f"_shared{self.broadcast.upper()}" if self.broadcast else ""
        const = "_constB" if self.const_b else ""
        return f"gemm_b{self.batch}_{self.m}x{self.n}x{self.k}_{self.dtype}_{self.layout}_{epi}{shared}{const}"

    @property
    def reduction(self) -> int:
        return self.k

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k * self.batch

    # -- operands -----------------------------------------------------------------------
    def operand_shapes(self) -> dict[str, tuple[int, ...]]:
        """Kernel argument shapes in call order: A, B, [bias], [residual], C."""
        b = (self.batch,) if self.batch > 1 else ()
        shapes = {
            "A": (() if self.broadcast == "a" else b) + ((self.k, self.m) if self.trans_a else (self.m, self.k)),
            "B": (() if self.broadcast == "b" else b) + ((self.n, self.k) if self.trans_b else (self.k, self.n)),
        }
        if "bias" in self.epilogue:
            shapes["bias"] = (self.n,)
        if "residual" in self.epilogue:
            shapes["residual"] = b + (self.m, self.n)
        shapes["C"] = b + (self.m, self.n)
        return shapes

    def input_dtype(self, name: str) -> str:
        return storage_name(self.dtype) if name in ("A", "B") else "float32"

    def reference(self, *inputs):
        from autotile.ir.reference import gemm_reference

        return gemm_reference(self, *inputs)
