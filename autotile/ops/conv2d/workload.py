"""2-D convolution workloads: what to compute, validated at the boundary, with a stable key.

out = epilogue(conv2d(input, weight)). Shapes are always given in NCHW / KCRS order: input N x C x H x W,
weight K x C/groups x R x S. `layout` picks the memory layout of the input, residual and output tensors
("nchw", or "nhwc": input (N, H, W, C), output (N, P, Q, K)); the weight is KCRS in both layouts, as
torch stores it. Epilogue: bias (one per output channel), residual (output-shaped, added), relu, gelu,
gelu_tanh, silu, cast:<dtype>, applied left to right to the fp32 accumulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autotile.errors import AutotileError
from autotile.ir.dtypes import SUPPORTED_GEMM_DTYPES, dtype
from autotile.ir.workload import Workload, _positive_int, parse_epilogue, positive_pair

LAYOUTS = ("nchw", "nhwc")


@dataclass(frozen=True)
class Conv2dWorkload(Workload):
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    layout: str = "nchw"
    dtype: str = "float32"
    epilogue: tuple[str, ...] = field(default=())
    # The weight is constant across calls (a layer's): the kernel may transform it once, ahead of the calls
    # (its packed or Winograd-transformed copy, kept while the same unchanged tensor is passed), and its
    # timings leave that out.
    const_weight: bool = False

    op = "conv2d"

    @property
    def structure(self) -> str:
        """Window, stride, dilation, grouping and layout: a 1x1 or strided conv never reaches a 3x3 one's throughput
        (Winograd's effective flops, least of all)."""
        grouping = "depthwise" if self.groups == self.c == self.k else f"g{min(self.groups, 2)}"
        (sh, sw), (dh, dw) = self.stride, self.dilation
        return f"conv2d:{self.r}x{self.s}:s{sh}x{sw}:d{dh}x{dw}:{grouping}:{self.layout}:{self.dtype}"

    def __post_init__(self):
        for name in ("n", "c", "h", "w", "k", "r", "s", "groups"):
            label = name.upper() if len(name) == 1 else name
            object.__setattr__(self, name, _positive_int(label, getattr(self, name)))
        object.__setattr__(self, "stride", positive_pair("stride", self.stride))
        object.__setattr__(self, "padding", positive_pair("padding", self.padding, minimum=0))
        object.__setattr__(self, "dilation", positive_pair("dilation", self.dilation))
        dt = dtype(self.dtype).name
        if dt not in SUPPORTED_GEMM_DTYPES:
            supported = ", ".join(SUPPORTED_GEMM_DTYPES)
            raise AutotileError(f"dtype {dt!r} is not supported by the conv2d templates yet; supported: {supported}")
        object.__setattr__(self, "dtype", dt)
        layout = str(self.layout).lower()
        if layout not in LAYOUTS:
            raise AutotileError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "epilogue", parse_epilogue(self.epilogue))
        for name, value in (("C", self.c), ("K", self.k)):
            if value % self.groups:
                raise AutotileError(f"{name}={value} is not divisible by groups={self.groups}")
        p, q = self.out_hw
        if p <= 0 or q <= 0:
            (ph, pw), (dh, dw) = self.padding, self.dilation
            raise AutotileError(
                f"output size {p}x{q} is empty: input {self.h}x{self.w} with padding {ph}x{pw} is smaller than "
                f"the dilated {self.r}x{self.s} kernel ({(self.r - 1) * dh + 1}x{(self.s - 1) * dw + 1})")
        self.check_sizes()

    # -- geometry -----------------------------------------------------------------------
    @property
    def out_hw(self) -> tuple[int, int]:
        """(P, Q): output height and width."""
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        return ((self.h + 2 * ph - (self.r - 1) * dh - 1) // sh + 1,
                (self.w + 2 * pw - (self.s - 1) * dw - 1) // sw + 1)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """The output's shape in its memory layout."""
        p, q = self.out_hw
        return (self.n, self.k, p, q) if self.layout == "nchw" else (self.n, p, q, self.k)

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w) if self.layout == "nchw" else (self.n, self.h, self.w, self.c)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.k, self.c // self.groups, self.r, self.s)

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.c == self.k

    # -- naming -------------------------------------------------------------------------
    @property
    def out_dtype(self) -> str:
        last = self.epilogue[-1] if self.epilogue else ""
        return last[5:] if last.startswith("cast:") else self.dtype

    @property
    def key(self) -> str:
        """Readable, canonical and stable: built from values only, never from hash() or repr."""
        epi = "+".join(op.replace(":", "-") for op in self.epilogue) or "none"
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        return (f"conv2d_{self.n}x{self.c}x{self.h}x{self.w}_k{self.k}x{self.r}x{self.s}_s{sh}x{sw}_p{ph}x{pw}"
                f"_d{dh}x{dw}_g{self.groups}_{self.layout}_{self.dtype}_{epi}{'_constW' if self.const_weight else ''}")

    @property
    def reduction(self) -> int:
        return self.c // self.groups * self.r * self.s

    @property
    def flops(self) -> int:
        p, q = self.out_hw
        return 2 * self.n * self.k * p * q * self.reduction

    # -- operands -----------------------------------------------------------------------
    def operand_shapes(self) -> dict[str, tuple[int, ...]]:
        """Kernel argument shapes in call order: input, weight, [bias], [residual], out."""
        shapes = {"input": self.in_shape, "weight": self.weight_shape}
        if "bias" in self.epilogue:
            shapes["bias"] = (self.k,)
        if "residual" in self.epilogue:
            shapes["residual"] = self.out_shape
        shapes["out"] = self.out_shape
        return shapes

    def input_dtype(self, name: str) -> str:
        return self.dtype if name in ("input", "weight") else "float32"

    def check_weight(self, weight_shape) -> None:
        """Clear error when a weight tensor (KCRS) does not fit this convolution."""
        got = tuple(weight_shape)
        if len(got) != 4 or got[0] != self.k or got[2:] != (self.r, self.s):
            raise AutotileError(f"{self.key}: weight has shape {got}, expected {self.weight_shape} (K x C/g x R x S)")
        if got[1] != self.c // self.groups:
            raise AutotileError(f"{self.key}: weight's second dim must be C/groups = {self.c // self.groups}, "
                                f"got {got[1]}")

    def reference(self, *inputs):
        """The float64 result in the output's layout, via torch's conv2d in NCHW."""
        import torch

        from autotile.ir.reference import apply_epilogue

        named = dict(zip(self.operand_shapes(), inputs))
        self.check_weight(named["weight"].shape)
        x = named["input"].double()
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        out = torch.nn.functional.conv2d(x, named["weight"].double(), stride=self.stride, padding=self.padding,
                                         dilation=self.dilation, groups=self.groups)
        if self.layout == "nhwc":
            out = out.permute(0, 2, 3, 1)
        if "bias" in named:  # per output channel, on the channel dim of the output layout
            bias = named["bias"].double()
            named = {**named, "bias": bias.view(-1, 1, 1) if self.layout == "nchw" else bias}
        return apply_epilogue(out, self.epilogue, named).contiguous()
