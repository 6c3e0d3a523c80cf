"""Quantized GEMM workloads: C = epilogue(A @ dequantize(W)^T), activations A given in float32.

W8A8 (weight_dtype and act_dtype int8): W (N x K) int8 with one float32 scale per output channel;
the kernel quantizes A per row dynamically (scale_a = absmax / 127, round half to even, as
`autotile.ops.qgemm.quant.quantize_rows_int8` does), multiplies in int8 with int32 accumulation and
applies scale_a[i] * scale_w[j] in the epilogue. Operands: A (M, K) float32, W (N, K) int8,
scales (N,) float32, [bias], [residual], C (M, N) float32.
With `outlier_threshold` t > 0 (LLM.int8 mixed-precision decomposition): the K columns of A where any
|A| > t (`autotile.ops.qgemm.quant.outlier_columns`) are multiplied in float32 with the dequantized weight
(W * scale_w) and excluded from the int8 part (zero there, and out of the row absmax); the two sums
are added before the epilogue.

Weight-only (act_dtype float32, weight_dtype int2..int8): W (N x K, as torch.nn.Linear holds it) is
given as packed codes with per-group (or per-channel, group_size None) float32 scales and, with
`asymmetric`, int32 zero points, in the layout of `autotile.ops.qgemm.quant.quantize_int`. The kernel
dequantizes inside (a cache-sized panel at a time), never into a full float copy of W.

Operands: A (M, K) float32, W (N, ceil(K*bits/8)) uint8, scales (N, groups) float32,
[zeros (N, groups) int32], [bias (N,)], [residual (M, N)], C (M, N).

Weight-only with act_dtype bfloat16: the same operands (A still float32), but the kernel computes with A
rounded to bfloat16 (nearest even, as torch's `.bfloat16()`), the precision of a bf16 linear layer; codes
minus zero points are small integers, exact in bfloat16, so the products are exact and are summed in
float32. The reference rounds A the same way, then computes exactly, so results are checked with float32's
tolerance. On CPUs with AVX512_BF16, int4 runs on vdpbf16ps (ops/qgemm/weight_only_tvm.py, `bf16_dot`).

fp8 (act_dtype and weight_dtype float8_e4m3 or float8_e5m2, emulated: these CPUs have no fp8
arithmetic): A and W arrive as fp8 bit codes (uint8, as `autotile.ops.qgemm.quant.quantize_fp8` makes them)
with float32 scales per tensor (shape (1,)) or per row (`fp8_scales="row"`: (M,) and (N,)); the kernel
decodes every code exactly to float32 and multiplies A * scale_a by (W * scale_w)^T in float32.
Operands: A (M, K) uint8, scale_a, W (N, K) uint8, scales, [bias], [residual], C (M, N) float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from autotile.errors import AutotileError
from autotile.ir.dtypes import dtype as lookup_dtype
from autotile.ir.workload import Workload, _positive_int, parse_epilogue

WEIGHT_ONLY_DTYPES = tuple(f"int{b}" for b in range(2, 9))
FP8_DTYPES = ("float8_e4m3", "float8_e5m2")
ACT_DTYPES = ("float32", "bfloat16", "int8", *FP8_DTYPES)
FP8_SCALES = ("tensor", "row")


@dataclass(frozen=True)
class QGemmWorkload(Workload):
    m: int
    n: int
    k: int
    weight_dtype: str = "int4"
    act_dtype: str = "float32"
    group_size: int | None = 128
    asymmetric: bool = False
    epilogue: tuple[str, ...] = field(default=())
    outlier_threshold: float = 0.0  # W8A8 only: LLM.int8 outlier columns (|A| above it) in float; 0: off
    fp8_scales: str = "tensor"  # fp8 only: one float32 scale per tensor, or one per row of A and of W

    op = "qgemm"

    @property
    def structure(self) -> str:
        return f"qgemm:{self.weight_dtype}:{self.act_dtype}"
    # The GEMM template's view of this workload: one batch, B read as W^T.
    batch = 1
    trans_a = False
    trans_b = True
    broadcast = ""

    def __post_init__(self):
        for name in ("m", "n", "k"):
            object.__setattr__(self, name, _positive_int(name.upper(), getattr(self, name)))
        weight = lookup_dtype(self.weight_dtype).name
        act = lookup_dtype(self.act_dtype).name
        if act not in ACT_DTYPES:
            raise AutotileError(f"activation dtype {act!r} is not supported by the quantized templates yet; "
                                f"supported: {', '.join(ACT_DTYPES)}")
        if act == "bfloat16" and weight not in WEIGHT_ONLY_DTYPES:
            raise AutotileError(f"bfloat16 activations are for weight-only GEMMs (weight dtypes "
                                f"{', '.join(WEIGHT_ONLY_DTYPES)}), got weight dtype {weight!r}")
        if act == "int8" and weight != "int8":
            raise AutotileError(f"int8 activations need int8 weights (W8A8), got weight dtype {weight!r}")
        if (act in FP8_DTYPES) != (weight in FP8_DTYPES):
            raise AutotileError(f"fp8 GEMMs take fp8 activations and fp8 weights ({', '.join(FP8_DTYPES)}), "
                                f"got activation dtype {act!r} and weight dtype {weight!r}")
        if self.fp8_scales not in FP8_SCALES:
            raise AutotileError(f"fp8 scales must be 'tensor' or 'row', got {self.fp8_scales!r}")
        if weight in FP8_DTYPES:
            object.__setattr__(self, "group_size", None)
            object.__setattr__(self, "asymmetric", False)
        else:
            object.__setattr__(self, "fp8_scales", "tensor")  # not a knob of the integer schemes
        if weight not in WEIGHT_ONLY_DTYPES + FP8_DTYPES:
            raise AutotileError(f"weight dtype {weight!r} is not supported for weight-only GEMM; "
                                f"supported: {', '.join(WEIGHT_ONLY_DTYPES)}")
        object.__setattr__(self, "weight_dtype", weight)
        object.__setattr__(self, "act_dtype", act)
        if act == "int8":
            object.__setattr__(self, "group_size", None)  # W8A8: per output channel
            object.__setattr__(self, "asymmetric", False)
        if self.group_size is not None:
            group = _positive_int("group size", self.group_size)
            object.__setattr__(self, "group_size", None if group >= self.k else group)
        object.__setattr__(self, "asymmetric", bool(self.asymmetric))
        threshold = self.outlier_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0 \
                or threshold == float("inf"):
            raise AutotileError(f"outlier threshold must be a finite number >= 0 (0: off), got {threshold!r}")
        if threshold and act != "int8":
            raise AutotileError("an outlier threshold (LLM.int8 decomposition) needs int8 activations (W8A8)")
        object.__setattr__(self, "outlier_threshold", float(threshold))
        epilogue = parse_epilogue(self.epilogue)
        if any(op.startswith("cast:") for op in epilogue):
            raise AutotileError("quantized GEMMs write float32; a cast epilogue is not supported yet")
        object.__setattr__(self, "epilogue", epilogue)
        self.check_sizes()

    @property
    def dtype(self) -> str:
        return "float32"  # what the caller passes and gets: quantization happens inside

    @property
    def w8a8(self) -> bool:
        return self.act_dtype == "int8"

    @property
    def fp8(self) -> bool:
        return self.act_dtype in FP8_DTYPES

    @property
    def scale_shapes(self) -> tuple[tuple[int], tuple[int]]:
        """fp8: shapes of the scales of A and of W."""
        return ((self.m,), (self.n,)) if self.fp8_scales == "row" else ((1,), (1,))

    @property
    def bits(self) -> int:
        return lookup_dtype(self.weight_dtype).bits

    @property
    def groups(self) -> int:
        return -(-self.k // (self.group_size or self.k))

    @property
    def key(self) -> str:
        epi = "+".join(self.epilogue) or "none"
        if self.w8a8:
            outliers = f"_outliers{self.outlier_threshold:g}" if self.outlier_threshold else ""
            return f"qgemm_{self.m}x{self.n}x{self.k}_w8a8{outliers}_{epi}"
        if self.fp8:
            return f"qgemm_{self.m}x{self.n}x{self.k}_{self.act_dtype}_{self.weight_dtype}_{self.fp8_scales}scale_{epi}"
        group = f"g{self.group_size}" if self.group_size else "perchannel"
        sym = "asym" if self.asymmetric else "sym"
        return f"qgemm_{self.m}x{self.n}x{self.k}_{self.act_dtype}_{self.weight_dtype}_{group}_{sym}_{epi}"

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    @property
    def reduction(self) -> int:
        return self.k

    @property
    def weight_bytes(self) -> int:
        """Bytes of weight (codes, scales, zeros) a call reads."""
        if self.w8a8 or self.fp8:
            return self.n * self.k + 4 * self.n
        zeros = 4 * self.n * self.groups if self.asymmetric else 0
        return self.n * -(-self.k * self.bits // 8) + 4 * self.n * self.groups + zeros

    def operand_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.w8a8:
            return self._with_epilogue({"A": (self.m, self.k), "W": (self.n, self.k), "scales": (self.n,)})
        if self.fp8:
            scale_a, scale_w = self.scale_shapes
            return self._with_epilogue({"A": (self.m, self.k), "scale_a": scale_a, "W": (self.n, self.k),
                                        "scales": scale_w})
        shapes = {"A": (self.m, self.k), "W": (self.n, -(-self.k * self.bits // 8)),
                  "scales": (self.n, self.groups)}
        if self.asymmetric:
            shapes["zeros"] = (self.n, self.groups)
        return self._with_epilogue(shapes)

    def _with_epilogue(self, shapes: dict) -> dict:
        if "bias" in self.epilogue:
            shapes["bias"] = (self.n,)
        if "residual" in self.epilogue:
            shapes["residual"] = (self.m, self.n)
        shapes["C"] = (self.m, self.n)
        return shapes

    def input_dtype(self, name: str) -> str:
        if self.fp8 and name == "A":
            return "uint8"  # fp8 bit codes (torch has no fp8 arithmetic on every CPU build)
        return {"W": "int8" if self.w8a8 else "uint8", "zeros": "int32"}.get(name, "float32")

    def random_inputs(self, seed: int) -> list[torch.Tensor]:
        """A real quantized weight (quantize_int of randn), so codes, scales and zeros are consistent."""
        from autotile.ops.qgemm.quant import quantize_fp8, quantize_int, quantize_rows_int8

        g = torch.Generator().manual_seed(seed)
        a = torch.randn(self.m, self.k, generator=g)
        weight = torch.randn(self.n, self.k, generator=g)
        if self.fp8:
            named = {}
            for name, scale_name, x, fmt in (("A", "scale_a", a, self.act_dtype), ("W", "scales", weight,
                                                                                  self.weight_dtype)):
                q, scale = quantize_fp8(x, fmt, per_row=self.fp8_scales == "row")
                named[name], named[scale_name] = torch.from_numpy(q.view("uint8").copy()), scale.reshape(-1)
        elif self.w8a8:
            q, scales = quantize_rows_int8(weight)
            named = {"A": a, "W": q, "scales": scales}
            if self.outlier_threshold:  # plant outlier features (randn alone almost never has any)
                columns = torch.randperm(self.k, generator=g)[: max(1, self.k // 16)]
                a[:, columns] *= 3 * self.outlier_threshold
        else:
            q = quantize_int(weight, self.bits, self.group_size, not self.asymmetric)
            named = {"A": a, "W": q.packed, "scales": q.scales}
        if self.asymmetric:
            named["zeros"] = q.zeros
        if "bias" in self.epilogue:
            named["bias"] = torch.randn(self.n, generator=g)
        if "residual" in self.epilogue:
            named["residual"] = torch.randn(self.m, self.n, generator=g)
        return [named[name] for name in list(self.operand_shapes())[:-1]]

    def reference(self, *inputs) -> torch.Tensor:
        """Exact dequantization (codes - zero) * scale in float64, then the float64 GEMM. W8A8: A is
        quantized exactly as the kernel does it (float32 arithmetic), then the integer product is exact."""
        from autotile.ir.reference import apply_epilogue
        from autotile.ops.qgemm.quant import IntQuantized, decode_fp8, outlier_columns, quantize_rows_int8

        named = dict(zip(self.operand_shapes(), inputs))
        if self.fp8:
            a = decode_fp8(named["A"], self.act_dtype) * named["scale_a"].double().reshape(-1, 1)
            w = decode_fp8(named["W"], self.weight_dtype) * named["scales"].double().reshape(-1, 1)
            return apply_epilogue(a @ w.t(), self.epilogue, named)
        if self.w8a8:
            a, w, scale_w = named["A"], named["W"].double(), named["scales"].double()
            outliers = outlier_columns(a, self.outlier_threshold) if self.outlier_threshold else a.new_zeros(0).long()
            regular = a.clone()
            regular[:, outliers] = 0
            qa, scale_a = quantize_rows_int8(regular)
            product = (qa.double() @ w.t()) * scale_a.double()[:, None] * scale_w
            product += a[:, outliers].double() @ (w[:, outliers] * scale_w[:, None]).t()
            return apply_epilogue(product, self.epilogue, named)
        q = IntQuantized(named["W"], named["scales"], named.get("zeros"), self.bits, self.group_size,
                         (self.n, self.k))
        a = named["A"].bfloat16() if self.act_dtype == "bfloat16" else named["A"]
        return apply_epilogue(a.double() @ q.dequantize(torch.float64).t(), self.epilogue, named)
