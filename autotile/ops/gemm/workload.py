"""GEMM workloads: what to compute, validated at the boundary, with a stable key.

C[b] = epilogue(op(A[b]) @ op(B[b])), op = optional transpose. The epilogue is a chain applied
left to right to the fp32 accumulator: bias (a vector of N), relu, gelu (erf form, torch's
default), gelu_tanh, silu, residual (an M x N tensor added), cast:<dtype> (output dtype).
A and B are float32, bfloat16 or float16 (accumulated in float32); C has their dtype unless a cast
says otherwise; bias and residual are float32, or A's 16-bit dtype when addend_dtype says so (a 16-bit
model's linear: its bias and residual stream are 16-bit tensors, widened as the epilogue reads them).
dtype tfloat32 (GPU only) is float32 data whose products tensor cores compute in TF32.
A prologue normalizes A as it is read: "layernorm" is C = epilogue(LN(A) @ op(B)) with
LN(A)[i, :] = (A[i, :] - mean) * rsqrt(var + eps) * ln_weight + ln_bias over A's row of K (a pre-norm
transformer's LayerNorm fused into the linear that follows it: one pass over A, no normalized copy), computed
in float32 and, for 16-bit inputs, rounded to their type as a layer-norm kernel's output is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autotile.errors import AutotileError
from autotile.ir.dtypes import (
    GPU_ONLY_GEMM_DTYPES,
    LOW_PRECISION_GEMM_DTYPES,
    SUPPORTED_GEMM_DTYPES,
    dtype,
    storage_name,
)
from autotile.ir.workload import STORAGE_ONLY, Workload, _positive_int, parse_epilogue

BROADCASTS = ("", "a", "b")
PROLOGUES = ("", "layernorm")


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
    addend_dtype: str = "float32"  # bias and residual: float32, or the inputs' 16-bit dtype
    prologue: str = ""  # "layernorm": A is layer-normalized over K as the kernel reads it
    eps: float = 1e-5  # the prologue's layer-norm epsilon

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
        addend = dtype(self.addend_dtype).name
        if addend not in ("float32", storage_name(dt)):
            raise AutotileError(f"addend_dtype (bias and residual) must be float32 or the inputs' dtype "
                                f"{storage_name(dt)}, got {addend!r}")
        # Without a bias or residual there is nothing to read: one key for the workload.
        has_addend = any(op in ("bias", "residual") for op in self.epilogue)
        object.__setattr__(self, "addend_dtype", addend if has_addend else "float32")
        if self.broadcast not in BROADCASTS:
            raise AutotileError(f"broadcast must be 'a', 'b' or empty (none), got {self.broadcast!r}")
        if self.broadcast and self.batch == 1:
            object.__setattr__(self, "broadcast", "")  # nothing to share with one batch
        self._check_prologue()
        self.check_sizes()

    def _check_prologue(self) -> None:
        if self.prologue not in PROLOGUES:
            raise AutotileError(f"prologue must be 'layernorm' or empty (none), got {self.prologue!r}")
        if not self.prologue:
            object.__setattr__(self, "eps", 1e-5)  # unused: one key for the workload
            return
        if self.batch != 1 or self.trans_a:
            raise AutotileError("a layernorm prologue normalizes the rows of a single row-major A: "
                                f"batch 1 and trans_a false, got batch {self.batch}, trans_a {self.trans_a}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps < 1:
            raise AutotileError(f"the layernorm prologue's eps must be a number in (0, 1), got {self.eps!r}")
        object.__setattr__(self, "eps", float(self.eps))

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
        addend = f"_add-{self.addend_dtype}" if self.addend_dtype != "float32" else ""
        pro = f"_{self.prologue}-eps{self.eps:g}" if self.prologue else ""
        return (f"gemm_b{self.batch}_{self.m}x{self.n}x{self.k}_{self.dtype}_{self.layout}_{epi}{shared}{const}"
                f"{addend}{pro}")

    @property
    def reduction(self) -> int:
        return self.k

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k * self.batch

    # -- operands -----------------------------------------------------------------------
    def operand_shapes(self) -> dict[str, tuple[int, ...]]:
        """Kernel argument shapes in call order: A, B, [ln_weight, ln_bias], [bias], [residual], C."""
        b = (self.batch,) if self.batch > 1 else ()
        shapes = {
            "A": (() if self.broadcast == "a" else b) + ((self.k, self.m) if self.trans_a else (self.m, self.k)),
            "B": (() if self.broadcast == "b" else b) + ((self.n, self.k) if self.trans_b else (self.k, self.n)),
        }
        if self.prologue:
            shapes["ln_weight"] = shapes["ln_bias"] = (self.k,)
        if "bias" in self.epilogue:
            shapes["bias"] = (self.n,)
        if "residual" in self.epilogue:
            shapes["residual"] = b + (self.m, self.n)
        shapes["C"] = b + (self.m, self.n)
        return shapes

    def input_dtype(self, name: str) -> str:
        return storage_name(self.dtype) if name in ("A", "B", "ln_weight", "ln_bias") else self.addend_dtype

    def reference(self, *inputs):
        from autotile.ir.reference import gemm_reference

        return gemm_reference(self, *inputs)
