"""GEMM workloads: what to compute, validated at the boundary, with a stable key.

C[b] = epilogue(op(A[b]) @ op(B[b])), op = optional transpose. The epilogue is a chain applied
left to right to the fp32 accumulator: bias (a vector of N), relu, gelu (erf form, torch's
default), gelu_tanh, silu, residual (an M x N tensor added), cast:<dtype> (output dtype).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from autotile.errors import AutotileError
from autotile.ir.dtypes import SUPPORTED_GEMM_DTYPES, dtype

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


@dataclass(frozen=True)
class GemmWorkload:
    m: int
    n: int
    k: int
    batch: int = 1
    dtype: str = "float32"
    trans_a: bool = False
    trans_b: bool = False
    epilogue: tuple[str, ...] = field(default=())

    op = "gemm"

    def __post_init__(self):
        for name in ("m", "n", "k", "batch"):
            label = name.upper() if name != "batch" else name
            object.__setattr__(self, name, _positive_int(label, getattr(self, name)))
        dt = dtype(self.dtype).name
        if dt not in SUPPORTED_GEMM_DTYPES:
            supported = ", ".join(SUPPORTED_GEMM_DTYPES)
            raise AutotileError(f"dtype {dt!r} is not supported by the GEMM templates yet; supported: {supported}")
        object.__setattr__(self, "dtype", dt)
        object.__setattr__(self, "trans_a", bool(self.trans_a))
        object.__setattr__(self, "trans_b", bool(self.trans_b))
        object.__setattr__(self, "epilogue", parse_epilogue(self.epilogue))

    # -- naming -------------------------------------------------------------------------
    @property
    def out_dtype(self) -> str:
        last = self.epilogue[-1] if self.epilogue else ""
        return last[5:] if last.startswith("cast:") else self.dtype

    @property
    def layout(self) -> str:
        return ("t" if self.trans_a else "n") + ("t" if self.trans_b else "n")

    @property
    def key(self) -> str:
        """Readable, canonical and stable: built from values only, never from hash() or repr."""
        epi = "+".join(op.replace(":", "-") for op in self.epilogue) or "none"
        return f"gemm_b{self.batch}_{self.m}x{self.n}x{self.k}_{self.dtype}_{self.layout}_{epi}"

    def __str__(self) -> str:
        return self.key

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k * self.batch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["op"] = self.op
        d["epilogue"] = list(self.epilogue)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> GemmWorkload:
        d = {k: v for k, v in d.items() if k != "op"}
        return cls(**d)

    # -- operands -----------------------------------------------------------------------
    def operand_shapes(self) -> dict[str, tuple[int, ...]]:
        """Kernel argument shapes in call order: A, B, [bias], [residual], C."""
        b = (self.batch,) if self.batch > 1 else ()
        shapes = {
            "A": b + ((self.k, self.m) if self.trans_a else (self.m, self.k)),
            "B": b + ((self.n, self.k) if self.trans_b else (self.k, self.n)),
        }
        if "bias" in self.epilogue:
            shapes["bias"] = (self.n,)
        if "residual" in self.epilogue:
            shapes["residual"] = b + (self.m, self.n)
        shapes["C"] = b + (self.m, self.n)
        return shapes

    def check_operands(self, args) -> None:
        """Clear error when tensors handed to a kernel do not fit this workload."""
        shapes = self.operand_shapes()
        if len(args) != len(shapes):
            raise AutotileError(f"{self.key} takes {len(shapes)} tensors ({', '.join(shapes)}), got {len(args)}")
        for (name, want), arg in zip(shapes.items(), args):
            got = tuple(arg.shape)
            if got != want:
                raise AutotileError(f"{self.key}: operand {name} has shape {got}, expected {want}")
