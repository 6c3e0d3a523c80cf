"""Generic helpers for reading a post-grad FX graph: node metadata, exact-call tests, and the epilogue chain.

Each family's pattern (autotile/ops/<op>/pattern.py) finds its heavy op with these and says which nodes one autotile
op replaces: the heavy op and a chain of single-user followers that the kernel's epilogue computes (bias,
activation, residual add, cast; views in between for GEMMs). They read only node metadata (fake tensors) and
never change the graph; anything they cannot prove is left alone, to the fallback.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

aten = torch.ops.aten
prims = torch.ops.prims

VIEWS = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}
TRANSPOSES = {aten.t.default, aten.permute.default, aten.transpose.int}
CASTS = {torch.float16: "float16", torch.bfloat16: "bfloat16"}


def val(node):
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def is_static(*sizes) -> bool:
    return all(isinstance(s, int) for s in sizes)


def known(expr) -> bool:
    """True only when `expr` holds for every value of the symbols in it (never adds a guard)."""
    return bool(expr) if isinstance(expr, bool) else statically_known_true(expr)


FLOATS = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def float_dtype(node) -> str | None:
    """The dtype name of a float tensor the templates take: float32 on CPU or CUDA, bfloat16 or float16 on CPU
    (the TVM templates widen them as they read them); None for anything else."""
    v = val(node)
    if not isinstance(v, torch.Tensor) or v.dtype not in FLOATS:
        return None
    if v.device.type == "cpu" or (v.device.type == "cuda" and v.dtype == torch.float32):
        return FLOATS[v.dtype]
    return None


def f32_tensor(node) -> bool:
    return float_dtype(node) == "float32"


def layout(v: torch.Tensor) -> str:
    """'n' when the last two dims are row-major in memory, 't' when they are column-major; else 'n' (a copy)."""
    rows, cols = v.shape[-2], v.shape[-1]
    if known(v.stride(-1) == 1) and known(v.stride(-2) == cols):
        return "n"
    if known(v.stride(-2) == 1) and known(v.stride(-1) == rows):
        return "t"
    return "n"


def activation(node) -> str | None:
    if node.target == aten.relu.default:
        return "relu"
    if node.target == aten.silu.default:
        return "silu"
    if node.target == aten.gelu.default:
        approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(approximate)
    return None


def is_call(node, target, *args) -> bool:
    """`node` calls `target` on exactly these args (nodes by identity, numbers within rounding)."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function" or node.target != target or node.kwargs:
        return False
    if len(node.args) != len(args):
        return False
    for got, want in zip(node.args, args):
        if isinstance(want, torch.fx.Node) or isinstance(got, torch.fx.Node):
            if got is not want:
                return False
        elif isinstance(want, (int, float)) and not isinstance(want, bool):
            if not isinstance(got, (int, float)) or abs(got - want) > 1e-9 * max(1.0, abs(want)):
                return False
        elif got != want:
            return False
    return True


def is_commutative_call(node, target, a, b) -> bool:
    return is_call(node, target, a, b) or is_call(node, target, b, a)


def user_call(node, target, *args):
    """The user of `node` that is `target(*args)`, or None."""
    return next((u for u in node.users if is_call(u, target, *args)), None)


def widened_activation(x, dtype: str) -> tuple[str, torch.fx.Node] | None:
    """(activation, the narrowing cast) when x, a 16-bit tensor, is widened to float32, the widened value's users
    are exactly a decomposed activation, and its result is cast back to x's dtype: how Inductor decomposes an
    activation of a bfloat16 / float16 model."""
    up = only_user(x)
    if up is None or up.target != prims.convert_element_type.default or up.args[1] != torch.float32:
        return None
    found = decomposed_activation(up)
    down = only_user(found[1]) if found is not None else None
    if down is None or cast_to(down) != dtype:
        return None
    return found[0], down


def decomposed_activation(x) -> tuple[str, torch.fx.Node] | None:
    """(activation, its output node) when the users of `x` are exactly Inductor's decomposition of gelu,
    gelu_tanh or silu applied to it; None otherwise. Matching the decomposed forms keeps Inductor's own
    decomposition table, whose functions its FX graph cache can key (a custom table makes it bypass)."""
    users = set(x.users)
    # gelu: (x * 0.5) * (erf(x * sqrt(1/2)) + 1)
    half, scaled = user_call(x, aten.mul.Tensor, x, 0.5), user_call(x, aten.mul.Tensor, x, 0.7071067811865476)
    if half is not None and scaled is not None and users == {half, scaled}:
        erf = only_user(scaled)
        plus = only_user(erf) if is_call(erf, aten.erf.default, scaled) else None
        out = only_user(plus) if is_call(plus, aten.add.Tensor, erf, 1) else None
        if out is not None and only_user(half) is out and is_commutative_call(out, aten.mul.Tensor, half, plus):
            return "gelu", out
    # silu: x / (exp(-x) + 1)
    neg = user_call(x, aten.neg.default, x)
    if neg is not None and len(users) == 2:
        exp = only_user(neg)
        plus = only_user(exp) if is_call(exp, aten.exp.default, neg) else None
        out = only_user(plus) if is_call(plus, aten.add.Tensor, exp, 1) else None
        if out is not None and is_call(out, aten.div.Tensor, x, plus):
            return "silu", out
    # gelu_tanh: (x * 0.5) * (tanh((x + x * x * x * 0.044715) * sqrt(2 / pi)) + 1)
    square = user_call(x, aten.mul.Tensor, x, x)
    cube = user_call(x, aten.mul.Tensor, square, x) if square is not None else None
    if half is not None and cube is not None:
        term = only_user(cube)
        inner = user_call(x, aten.add.Tensor, x, term) if is_call(term, aten.mul.Tensor, cube, 0.044715) else None
        if inner is not None and users == {half, square, cube, inner} and only_user(square) is cube:
            scaled = only_user(inner)
            tanh = only_user(scaled) if is_call(scaled, aten.mul.Tensor, inner, 0.7978845608028654) else None
            plus = only_user(tanh) if is_call(tanh, aten.tanh.default, scaled) else None
            out = only_user(plus) if is_call(plus, aten.add.Tensor, tanh, 1) else None
            if out is not None and only_user(half) is out and is_commutative_call(out, aten.mul.Tensor, half, plus):
                return "gelu_tanh", out
    return None


def cast_to(node) -> str | None:
    if node.target == prims.convert_element_type.default:
        return CASTS.get(node.args[1])
    if node.target == aten._to_copy.default and set(node.kwargs) <= {"dtype"} and len(node.args) == 1:
        return CASTS.get(node.kwargs.get("dtype"))
    return None


def same_shape(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dim() == b.dim() and all(known(x == y) for x, y in zip(a.shape, b.shape))


def swaps_last_two(node) -> bool:
    """A view that is its input with the last two dims swapped (a weight's .t() in a linear)."""
    if node.op != "call_function" or node.target not in TRANSPOSES:
        return False
    v = val(node.args[0])
    if not isinstance(v, torch.Tensor) or v.dim() < 2:
        return False
    if node.target == aten.t.default:
        return True
    if node.target == aten.transpose.int:
        return sorted(d % v.dim() for d in node.args[1:3]) == [v.dim() - 2, v.dim() - 1]
    perm = [d % v.dim() for d in node.args[1]]
    return perm == [*range(v.dim() - 2), v.dim() - 1, v.dim() - 2]


def bias_vector(v: torch.Tensor, n) -> bool:
    """A vector along a GEMM output's last dim (N): (N,), (1, N), ... (a bias)."""
    return v.dim() >= 1 and known(v.numel() == n) and known(v.shape[-1] == n)


# Nodes the graph pass's earlier matches compute inside their kernels (set by `claimed`, in the pass).
_CLAIMED: ContextVar[set | frozenset] = ContextVar("claimed", default=frozenset())


@contextmanager
def claimed(nodes: set):
    """While matching: `nodes` (updated as matches are made) belong to earlier matches, and no chain walks into
    them. Where two ops' results meet in one add (a ResNet block's conv and its downsampling shortcut), the first
    op's epilogue takes the add; the second's stops before it. Both taking it, the second kernel was dead, and the
    first read the second's result from a copy of the op the graph had to keep: two convs too many per block."""
    token = _CLAIMED.set(nodes)
    try:
        yield
    finally:
        _CLAIMED.reset(token)


def only_user(node):
    """The node's one user; None when it has several or an earlier match computes that user in its kernel."""
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0] not in _CLAIMED.get() else None


def _add_alpha_one(node) -> bool:
    return node.target == aten.add.Tensor and node.kwargs.get("alpha", 1) == 1 and len(node.args) == 2


@dataclass
class Epilogue:
    """What follows a heavy op into its kernel: the epilogue's steps and the nodes they read. Built by the
    matchers (take_addend, walk_epilogue) before a match is made, never changed after."""

    last: torch.fx.Node  # the node whose value the autotile op produces (the heavy op, or the end of the chain)
    dtype: str = "float32"  # the heavy op's output dtype: the chain's values, its bias and residual have it
    steps: list[str] = field(default_factory=list)
    bias: torch.fx.Node | None = None
    residual: torch.fx.Node | None = None
    view: torch.fx.Node | None = None  # the last view in the chain: its shape is the result's


def walk_epilogue(e: Epilogue, out_shape, allow_views: bool, bias_along_n: bool) -> Epilogue:
    """Extend e.last along single users the epilogue can compute. `out_shape` is the op's own output shape;
    `bias_along_n`: an added vector along its last dim is a bias (a GEMM's; a conv's comes from elsewhere)."""
    cur, pending_view = e.last, None
    n = out_shape[-1]
    while True:
        if e.dtype == "float32":
            decomposed = decomposed_activation(cur) if f32_tensor(cur) else None
        else:
            decomposed = widened_activation(cur, e.dtype)
        if decomposed is not None:
            e.steps.append(decomposed[0])
            cur = e.last = decomposed[1]
            e.view = pending_view
            continue
        user = only_user(cur)
        if user is None or user.op != "call_function":
            break
        v = val(user)
        if user.target in VIEWS and allow_views and isinstance(v, torch.Tensor) and known(v.shape[-1] == n):
            cur, pending_view = user, user
            continue
        step = None
        if _add_alpha_one(user):
            other = user.args[1] if user.args[0] is cur else user.args[0]
            if other is cur or float_dtype(other) != e.dtype or float_dtype(user) != e.dtype:
                break
            ov, cv = val(other), val(cur)
            if bias_along_n and "bias" not in e.steps and bias_vector(ov, n):
                step, e.bias = "bias", other
            elif e.residual is None and same_shape(ov, cv) and \
                    (pending_view is None or (len(out_shape) == 2 and is_static(n))):
                step, e.residual = "residual", other
        elif (act := activation(user)) is not None and float_dtype(user) == e.dtype:
            step = act
        elif (dt := cast_to(user)) is not None and dt != e.dtype:
            e.steps.append(f"cast:{dt}")
            e.last, e.view = user, pending_view
            break  # a cast ends the chain
        if step is None:
            break
        e.steps.append(step)
        cur = e.last = user
        e.view = pending_view
    return e


def mm_operands(node):
    """(addend, a, b) of mm(a, b) (addend None) or addmm(addend, a, b) with beta = alpha = 1; None otherwise."""
    if node.target == aten.mm.default and len(node.args) == 2 and not node.kwargs:
        return None, *node.args
    if node.target == aten.addmm.default and len(node.args) == 3 and \
            node.kwargs.get("beta", 1) == 1 and node.kwargs.get("alpha", 1) == 1:
        return node.args
    return None


def take_addend(e: Epilogue, addend, n) -> bool:
    """addmm's addend as the epilogue's bias (a vector of n) or residual (the output's shape); False when it is
    neither (a broadcast addend the epilogue has no form for). `e` is still the bare addmm."""
    if float_dtype(addend) != e.dtype:
        return False
    v = val(addend)
    if bias_vector(v, n):
        e.steps, e.bias = ["bias"], addend
    elif same_shape(v, val(e.last)):
        e.steps, e.residual = ["residual"], addend
    else:
        return False
    return True
