"""The custom ops that replace matched ATen ops, and what they do when called: torch.ops.autotile.*.

Each op takes its tensors and its family's plan (autotile.dynamo.plans) as the text `plan.encode()` writes, and
reads it back with the family's `decode`: the workload, what of operand layouts and dynamic dims the kernel must
know, which operands are weights to pack once, and the database the kernel comes from. Fake (meta)
implementations give Inductor shapes, dtypes and strides without running anything.
"""

from __future__ import annotations

import weakref
from functools import cache

import torch
import torch.nn.functional as F

from autotile.dynamo.buckets import bucket
from autotile.dynamo.counters import stats
from autotile.dynamo.plans import AttentionPlan, Conv2dPlan, GemmPlan, LayerNormPlan, QLinearPlan
from autotile.dynamo.resolve import resolver
from autotile.ops.qgemm.quant import pack_bits


class PackCache:
    """An operand converted to the kernel's layout, kept while the same tensor is unchanged.

    Keyed by the tensor object itself (a parameter is passed as the same object every call); a new version
    (in-place update, optimizer step) or new storage (`param.data = ...`) repacks. Checking costs a lookup.
    """

    def __init__(self):
        self._entries: dict[int, tuple] = {}

    def get(self, tensor: torch.Tensor, convert, values: torch.Tensor | None = None):
        """convert(tensor), kept while the tensor is unchanged and `values` (a small tensor the conversion also
        reads, e.g. a per-channel scale computed each call) holds the same numbers."""
        if tensor.is_inference():  # no version counter to trust: convert every call
            return convert(tensor)
        key = id(tensor)
        entry = self._entries.get(key)
        stamp = (tensor._version, tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if (entry is not None and entry[0]() is tensor and entry[1] == stamp
                and (values is None or torch.equal(entry[3], values))):
            return entry[2]
        packed = convert(tensor)
        if packed is tensor:
            return packed  # already in the kernel's layout: nothing to keep
        stats.packs += 1
        if isinstance(packed, torch.Tensor):
            packed = packed.detach()
        ref = weakref.ref(tensor, lambda _r, k=key, s=self._entries: s.pop(k, None))
        self._entries[key] = (ref, stamp, packed, None if values is None else values.detach().clone())
        return packed


def to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """A logical (..., R, C) matrix as the kernel reads it: 'n' row-major, 't' its transpose row-major."""
    if layout == "t":
        t = t.transpose(-1, -2)
    return t if t.is_contiguous() else t.contiguous()


def pad_dim(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """`t` zero-padded at the end of `dim` to `size` (a new contiguous tensor)."""
    dim = dim % t.dim()
    extra = size - t.shape[dim]
    if extra == 0:
        return t
    return F.pad(t, [0, 0] * (t.dim() - 1 - dim) + [0, extra])


class Kernels:
    """A plan's kernels (one per bucket of its dynamic dims) and its packed weights, in this process."""

    def __init__(self, plan):
        self.plan = plan
        self.resolver = resolver(plan.db, plan.tuning, plan.backend)
        self.packs: dict[tuple, PackCache] = {}  # (operand, kernel variant) -> the packed copies
        self._kernels: dict[tuple, object] = {}

    def kernel(self, sizes: dict | None = None):
        key = tuple(sorted((sizes or {}).items()))
        kern = self._kernels.get(key)
        if kern is None:
            kern = self._kernels[key] = self.resolver.load(self.plan.resized(sizes or {})).kernel
        return kern

    def operand(self, name: str, t: torch.Tensor, convert, variant=None, values=None):
        """`t` converted for the kernel; a weight's conversion is kept per tensor version and per kernel
        `variant` (the bucket: each bucket's kernel may pack it differently)."""
        if not self.plan.packs(name):
            return convert(t)
        cache = self.packs.get((name, variant))
        if cache is None:
            cache = self.packs[(name, variant)] = PackCache()
        return cache.get(t, convert, values)


@cache  # one per plan text: its kernels and packed weights live as long as the process
def kernels(plan_type, text: str) -> Kernels:
    return Kernels(plan_type.decode(text))


# The graph ops run only inside compiled graphs, which AOTAutograd calls with grad off: they are defined with a
# CPU kernel alone. torch.library.custom_op would wrap each call in autograd and dispatch layers that cost about
# 10 us, more than a small kernel (measured: 11.7 us against 2.0 us for an op that returns its input).
_GRAPH_OPS = torch.library.Library("autotile", "FRAGMENT")


class GraphOp:
    """autotile::<name> with `fn` as its CPU kernel, its schema read from fn's annotations."""

    def __init__(self, fn):
        self.name = f"autotile::{fn.__name__}"
        _GRAPH_OPS.define(fn.__name__ + torch.library.infer_schema(fn, mutates_args=()))
        _GRAPH_OPS.impl(fn.__name__, fn, "CPU")
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)

    def register_fake(self, fake):
        torch.library.register_fake(self.name, fake, lib=_GRAPH_OPS)
        return fake


# --- gemm: C = epilogue(A @ B); b is B itself, or W with B = W^T when the plan says b_is_weight (a linear's) ---

@GraphOp
def gemm(a: torch.Tensor, b: torch.Tensor, ln_weight: torch.Tensor | None, ln_bias: torch.Tensor | None,
         bias: torch.Tensor | None, residual: torch.Tensor | None, plan: str) -> torch.Tensor:
    p = kernels(GemmPlan, plan)
    gp = p.plan
    # A weight is W (B = W^T), in float32 under autocast: cast to the GEMM's dtype as it is packed.
    logical_b = (lambda t: t.to(a.dtype).transpose(-1, -2)) if gp.b_is_weight else (lambda t: t)
    m = a.shape[-2]
    sizes = {} if gp.m_dim is None else {"m": bucket(a.shape[gp.m_dim])}
    size = sizes.get("m")
    kern = p.kernel(sizes)
    a_k = p.operand("a", a, lambda t: to_layout(t, gp.a_layout))
    # A weight is packed once per version into the panels the kernel reads (when its config packs B).
    b_k = p.operand("b", b, lambda t: kern.pack_operand("B", to_layout(logical_b(t), gp.b_layout)),
                    variant=tuple(sorted(sizes.items())))
    args = [a_k, b_k]
    if ln_weight is not None:  # a layernorm prologue's scale and shift, read as they are
        args += [ln_weight.contiguous(), ln_bias.contiguous()]
    if bias is not None:
        args.append(bias if bias.is_contiguous() else bias.contiguous())
    if residual is not None:
        args.append(residual if residual.is_contiguous() else residual.contiguous())
    if size is not None and size != m:
        args[0] = pad_dim(a_k, -1 if gp.a_layout == "t" else -2, size)
        if residual is not None:
            args[-1] = pad_dim(args[-1], -2, size)
        out = kern(*args)[..., :m, :]
        return out if out.is_contiguous() else out.contiguous()  # 2-D row slices are contiguous already
    return kern(*args)


@gemm.register_fake
def _gemm_fake(a, b, ln_weight, ln_bias, bias, residual, plan):
    gp = GemmPlan.decode(plan)
    n = b.shape[-2] if gp.b_is_weight else b.shape[-1]
    out_dtype = getattr(torch, gp.workload.out_dtype)
    return a.new_empty((*a.shape[:-1], n), dtype=out_dtype)


# --- conv2d: out = epilogue(conv2d(x, weight)), NCHW, weight KCRS --------------------------------------------

@GraphOp
def conv2d(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None,
           residual: torch.Tensor | None, plan: str) -> torch.Tensor:
    """scale: a folded BatchNorm's per-output-channel factor. The op convolves with weight * scale, packed (or
    Winograd-transformed) for the kernel once per (weight version, scale values)."""
    p = kernels(Conv2dPlan, plan)
    kern = p.kernel()

    def convert(t):
        t = t if scale is None else t * scale.reshape(-1, *[1] * (t.dim() - 1))
        return kern.pack_operand("weight", t if t.is_contiguous() else t.contiguous())

    args = [t if t.is_contiguous() else t.contiguous() for t in (x, weight, bias, residual) if t is not None]
    args[1] = p.operand("weight", weight, convert, values=scale)
    return kern(*args)


@conv2d.register_fake
def _conv2d_fake(x, weight, scale, bias, residual, plan):
    w = Conv2dPlan.decode(plan).workload
    return x.new_empty(w.out_shape, dtype=getattr(torch, w.out_dtype))


# --- attention: softmax(scale q k^T [+ causal mask]) v, (B, H, S, D) ----------------------------------------

def _attention_out(q: torch.Tensor, layout: str) -> torch.Tensor:
    """An empty output with the strides eager's CPU flash attention returns ("bshd": (B, S, H, D) storage)."""
    b, h, s, d = q.shape
    if layout == "bshd":
        return q.new_empty((b, s, h, d)).transpose(1, 2)
    return q.new_empty((b, h, s, d))


@GraphOp
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: str) -> torch.Tensor:
    p = kernels(AttentionPlan, plan)
    batch, s = q.shape[0], q.shape[2]
    sizes = {}
    if p.plan.dynamic_batch:
        sizes["batch"] = bucket(batch)
    if p.plan.dynamic_seq:
        sizes["seq_q"] = sizes["seq_kv"] = bucket(s)
    kern = p.kernel(sizes)
    # The kernel takes strided views (a fused qkv projection's q, k, v) and writes eager's output layout.
    args = [t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v)]
    out = _attention_out(q, p.plan.out_layout)
    if sizes.get("batch", batch) == batch and sizes.get("seq_q", s) == s:
        return kern(*args, out=out)
    # Zero padding: extra batches are independent; extra rows and keys are exact for top-left causal only,
    # which the pass checks before it makes the sequence dynamic.
    if sizes.get("batch", batch) != batch:
        args = [pad_dim(t, 0, sizes["batch"]) for t in args]
    if sizes.get("seq_q", s) != s:
        args = [pad_dim(t, 2, sizes["seq_q"]) for t in args]
    return out.copy_(kern(*args)[:batch, :, :s])


@attention.register_fake
def _attention_fake(q, k, v, plan):
    return _attention_out(q, AttentionPlan.decode(plan).out_layout)


# --- layer_norm over the last dim: keeps the code between two GEMMs on TVM's thread pool --------------------------

@cache
def _filled(value: float, n: int, dtype: torch.dtype) -> torch.Tensor:
    """A constant vector standing in for an absent weight (ones) or bias (zeros), in x's dtype; only ever read."""
    return torch.full((n,), value, dtype=dtype)


@GraphOp
def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
               plan: str) -> torch.Tensor:
    p = kernels(LayerNormPlan, plan)
    cols = x.shape[-1]
    rows = x.reshape(-1, cols)
    rows = rows if rows.is_contiguous() else rows.contiguous()
    m = rows.shape[0]
    sizes = {"rows": bucket(m)} if p.plan.dynamic_rows else {}
    kern = p.kernel(sizes)
    weight = _filled(1.0, cols, x.dtype) if weight is None else weight
    bias = _filled(0.0, cols, x.dtype) if bias is None else bias
    out = kern(pad_dim(rows, 0, sizes.get("rows", m)), weight, bias)
    return (out if out.shape[0] == m else out[:m]).reshape(x.shape)


@layer_norm.register_fake
def _layer_norm_fake(x, weight, bias, plan):
    return x.new_empty(x.shape)


# --- qlinear: y = epilogue(x @ dequantize(W)^T), W quantized (autotile.nn.QuantizedLinear) ----------------------

@torch.library.custom_op("autotile::qlinear", mutates_args=())
def qlinear(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
            bias: torch.Tensor | None, plan: str) -> torch.Tensor:
    p = kernels(QLinearPlan, plan)
    rows = x.reshape(-1, x.shape[-1])
    rows = rows if rows.is_contiguous() else rows.contiguous()
    m = rows.shape[0]
    sizes = {"m": bucket(m)}  # one kernel per bucket of rows: decode (1 row) and prefill alike
    kern = p.kernel(sizes)

    def weight(key: str, name: str, t: torch.Tensor, before=lambda u: u):
        """A weight operand in the kernel's layout, made once per tensor version and bucket."""
        return p.operand(key, t, lambda u: kern.pack_operand(name, before(u)), variant=tuple(sizes.items()))

    bits = p.plan.signed_bits
    if bits:  # torchao's signed int8 values of `bits` bits: the kernel reads packed unsigned codes around 2**(bits-1)
        codes = weight("codes", "W", codes, lambda w: pack_bits(w.to(torch.int16) + (1 << (bits - 1)), bits))
        zeros = None if zeros is None else weight("zeros", "zeros", zeros,
                                                  lambda z: z.to(torch.int32) + (1 << (bits - 1)))
    else:
        codes = weight("codes", "W", codes)
        zeros = None if zeros is None else weight("zeros", "zeros", zeros)
    scales = weight("scales", "scales", scales)
    args = [pad_dim(rows, 0, sizes["m"]), codes, scales] + [t for t in (zeros, bias) if t is not None]
    out = kern(*args)
    out = out if out.shape[0] == m else out[:m]
    return out.reshape(*x.shape[:-1], out.shape[-1])


@qlinear.register_fake
def _qlinear_fake(x, codes, scales, zeros, bias, plan):
    n = QLinearPlan.decode(plan).workload.n
    return x.new_empty((*x.shape[:-1], n))
