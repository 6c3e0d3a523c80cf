"""Find the heavy ATen ops of a post-grad FX graph and the neighbours that fuse into them.

A match says which nodes one autotile op replaces: the heavy op (mm, addmm, bmm, convolution, CPU flash
attention) and a chain of single-user followers that the kernel's epilogue computes (bias, activation,
residual add, cast; views in between for GEMMs). It reads only node metadata (fake tensors) and never
changes the graph; anything it cannot prove it leaves alone, to the fallback.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

aten = torch.ops.aten
prims = torch.ops.prims

VIEWS = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}
TRANSPOSES = {aten.t.default, aten.permute.default, aten.transpose.int}
CASTS = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
FLASH = aten._scaled_dot_product_flash_attention_for_cpu.default


def val(node):
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def is_static(*sizes) -> bool:
    return all(isinstance(s, int) for s in sizes)


def known(expr) -> bool:
    """True only when `expr` holds for every value of the symbols in it (never adds a guard)."""
    return bool(expr) if isinstance(expr, bool) else statically_known_true(expr)


def f32_cpu(node) -> bool:
    v = val(node)
    return isinstance(v, torch.Tensor) and v.dtype == torch.float32 and v.device.type == "cpu"


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


def _is(node, target, *args) -> bool:
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


def _is_commutative(node, target, a, b) -> bool:
    return _is(node, target, a, b) or _is(node, target, b, a)


def _user(node, target, *args):
    """The user of `node` that is `target(*args)`, or None."""
    return next((u for u in node.users if _is(u, target, *args)), None)


def decomposed_activation(x) -> tuple[str, torch.fx.Node] | None:
    """(activation, its output node) when the users of `x` are exactly Inductor's decomposition of gelu,
    gelu_tanh or silu applied to it; None otherwise. Matching the decomposed forms keeps Inductor's own
    decomposition table, whose functions its FX graph cache can key (a custom table makes it bypass)."""
    users = set(x.users)
    # gelu: (x * 0.5) * (erf(x * sqrt(1/2)) + 1)
    half, scaled = _user(x, aten.mul.Tensor, x, 0.5), _user(x, aten.mul.Tensor, x, 0.7071067811865476)
    if half is not None and scaled is not None and users == {half, scaled}:
        erf = only_user(scaled)
        plus = only_user(erf) if _is(erf, aten.erf.default, scaled) else None
        out = only_user(plus) if _is(plus, aten.add.Tensor, erf, 1) else None
        if out is not None and only_user(half) is out and _is_commutative(out, aten.mul.Tensor, half, plus):
            return "gelu", out
    # silu: x / (exp(-x) + 1)
    neg = _user(x, aten.neg.default, x)
    if neg is not None and len(users) == 2:
        exp = only_user(neg)
        plus = only_user(exp) if _is(exp, aten.exp.default, neg) else None
        out = only_user(plus) if _is(plus, aten.add.Tensor, exp, 1) else None
        if out is not None and _is(out, aten.div.Tensor, x, plus):
            return "silu", out
    # gelu_tanh: (x * 0.5) * (tanh((x + x * x * x * 0.044715) * sqrt(2 / pi)) + 1)
    square = _user(x, aten.mul.Tensor, x, x)
    cube = _user(x, aten.mul.Tensor, square, x) if square is not None else None
    if half is not None and cube is not None:
        term = only_user(cube)
        inner = _user(x, aten.add.Tensor, x, term) if _is(term, aten.mul.Tensor, cube, 0.044715) else None
        if inner is not None and users == {half, square, cube, inner} and only_user(square) is cube:
            scaled = only_user(inner)
            tanh = only_user(scaled) if _is(scaled, aten.mul.Tensor, inner, 0.7978845608028654) else None
            plus = only_user(tanh) if _is(tanh, aten.tanh.default, scaled) else None
            out = only_user(plus) if _is(plus, aten.add.Tensor, tanh, 1) else None
            if out is not None and only_user(half) is out and _is_commutative(out, aten.mul.Tensor, half, plus):
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


def only_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _add_alpha_one(node) -> bool:
    return node.target == aten.add.Tensor and node.kwargs.get("alpha", 1) == 1 and len(node.args) == 2


@dataclass
class Match:
    kind: str  # "gemm", "conv2d", "attention", "qlinear", "layernorm"
    anchor: torch.fx.Node  # the heavy op
    last: torch.fx.Node  # the node whose value the autotile op produces (anchor or the end of the chain)
    epilogue: list[str] = field(default_factory=list)
    bias: torch.fx.Node | None = None
    residual: torch.fx.Node | None = None
    view: torch.fx.Node | None = None  # the last view in the chain: its shape is the result's
    args: list = field(default_factory=list)  # the op's leading tensor arguments, set when its plan is made
    # conv only: per-output-channel steps (("sub" | "mul" | "add"), node) right after the conv, as an eval
    # BatchNorm decomposes; the pass folds them into the weight (scale) and the bias (shift).
    affine: list = field(default_factory=list)
    scales: torch.fx.Node | None = None  # qlinear only: the weight's scales, one per output channel or group
    zeros: torch.fx.Node | None = None  # qlinear only: torchao's signed zero points (None: symmetric)
    weight: torch.fx.Node | None = None  # layernorm only: its scale vector (bias is its shift), when it has one
    eps: float = 0.0  # layernorm only


def per_channel(node, channels) -> bool:
    """A float32 tensor holding one value per output channel, broadcast over an NCHW output: (K, 1, 1)."""
    v = val(node)
    return f32_cpu(node) and v.dim() in (3, 4) and known(v.numel() == channels) and \
        known(v.shape[-3] == channels)


def walk_affine(m: Match, channels: int) -> None:
    """Extend a conv match over the per-channel sub / mul / add chain of an eval-mode BatchNorm."""
    steps = {aten.sub.Tensor: "sub", aten.mul.Tensor: "mul", aten.add.Tensor: "add"}
    cur = m.last
    while (user := only_user(cur)) is not None and user.op == "call_function" and user.target in steps \
            and not user.kwargs and len(user.args) == 2 and f32_cpu(user):
        step = steps[user.target]
        other = user.args[1] if user.args[0] is cur else user.args[0]
        if other is cur or (step == "sub" and user.args[0] is not cur) or not per_channel(other, channels):
            break
        m.affine.append((step, other))
        cur = m.last = user
    if any(step != "mul" for step, _ in m.affine) and "bias" not in m.epilogue:
        m.epilogue.append("bias")  # the folded shift


def walk_epilogue(m: Match, out_shape, allow_views: bool) -> Match:
    """Extend m.last along single users the epilogue can compute. `out_shape` is the op's own output shape."""
    cur, pending_view = m.last, None
    n = out_shape[-1]
    while True:
        decomposed = decomposed_activation(cur) if f32_cpu(cur) else None
        if decomposed is not None:
            m.epilogue.append(decomposed[0])
            cur = m.last = decomposed[1]
            m.view = pending_view
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
            if other is cur or not f32_cpu(other) or not f32_cpu(user):
                break
            ov, cv = val(other), val(cur)
            # A vector along the last dim is a GEMM's bias; a conv's comes from its own arg or walk_affine.
            if m.kind in ("gemm", "qlinear") and "bias" not in m.epilogue and bias_vector(ov, n):
                step, m.bias = "bias", other
            elif m.residual is None and same_shape(ov, cv) and \
                    (pending_view is None or (len(out_shape) == 2 and is_static(n))):
                step, m.residual = "residual", other
        elif (act := activation(user)) is not None and f32_cpu(user):
            step = act
        elif (dt := cast_to(user)) is not None:
            m.epilogue.append(f"cast:{dt}")
            m.last, m.view = user, pending_view
            break  # a cast ends the chain
        if step is None:
            break
        m.epilogue.append(step)
        cur = m.last = user
        m.view = pending_view
    return m


def mm_operands(node):
    """(addend, a, b) of mm(a, b) (addend None) or addmm(addend, a, b) with beta = alpha = 1; None otherwise."""
    if node.target == aten.mm.default and len(node.args) == 2 and not node.kwargs:
        return None, *node.args
    if node.target == aten.addmm.default and len(node.args) == 3 and \
            node.kwargs.get("beta", 1) == 1 and node.kwargs.get("alpha", 1) == 1:
        return node.args
    return None


def take_addend(m: Match, addend, n) -> bool:
    """addmm's addend as the epilogue's bias (a vector of n) or residual (the output's shape); False when it is
    neither (a broadcast addend the epilogue has no form for)."""
    if not f32_cpu(addend):
        return False
    v = val(addend)
    if bias_vector(v, n):
        m.epilogue, m.bias = ["bias"], addend
    elif same_shape(v, val(m.anchor)):
        m.epilogue, m.residual = ["residual"], addend
    else:
        return False
    return True


def match_gemm(node) -> Match | None:
    """mm, addmm (beta = alpha = 1) and bmm on float32 CPU tensors; N, K and the batch static, M may be symbolic."""
    if node.target == aten.bmm.default:
        inp, (a, b) = None, node.args[:2]
    elif (operands := mm_operands(node)) is not None:
        inp, a, b = operands
    else:
        return None
    if not all(f32_cpu(x) for x in (a, b, node)):
        return None
    av, bv, ov = val(a), val(b), val(node)
    if not is_static(*bv.shape, av.shape[-1], *av.shape[:-2]):
        return None
    m = Match("gemm", node, node)
    if inp is not None and not take_addend(m, inp, bv.shape[-1]):
        return None
    return walk_epilogue(m, ov.shape, allow_views=av.dim() == 2)


def _float(node):
    """x behind convert_element_type(x, float32) (Inductor's graphs) or _to_copy(x, dtype=float32) (AOTAutograd's
    for the eager fallback), else None."""
    if not isinstance(node, torch.fx.Node) or len(node.args) < 1:
        return None
    x = node.args[0]
    if _is(node, prims.convert_element_type.default, x, torch.float32):
        return x
    to_float = node.target == aten._to_copy.default and len(node.args) == 1 and node.kwargs == {"dtype": torch.float32}
    return x if to_float else None


def _int8_weight(node):
    """The int8 (N, K) placeholder behind `float(permute(W, [1, 0]))` (`_float`), else None."""
    t = _float(node)
    if t is None or not swaps_last_two(t) or t.args[0].op != "placeholder":
        return None
    w = val(t.args[0])
    return t.args[0] if isinstance(w, torch.Tensor) and w.dtype == torch.int8 and w.dim() == 2 else None


def _qlinear(m: Match, x, codes, scales, zeros=None) -> Match | None:
    """A weight-only quantized linear's match (args: x, codes) extended over its epilogue; None when the epilogue
    takes a residual, which the quantized op has no operand for (left to the float path)."""
    m.args, m.scales, m.zeros = [x, codes], scales, zeros
    walk_epilogue(m, val(m.anchor).shape, allow_views=True)
    return None if "residual" in m.epilogue else m


def match_int8_weight_only(node) -> Match | None:
    """torchao's int8 weight-only linear as it reaches the post-grad graph on CPU (Int8WeightOnlyConfig):
    mm(x, float(W_int8^T)) * scale[N] [+ bias, activation]. args: x, W; `scales` holds the scale node."""
    if node.target != aten.mm.default or not f32_cpu(node.args[0]):
        return None
    weight = _int8_weight(node.args[1])
    if weight is None or not is_static(*val(node.args[1]).shape):
        return None
    n = val(node).shape[-1]
    scale = only_user(node)
    if scale is None or scale.target != aten.mul.Tensor or len(scale.args) != 2 or scale.kwargs:
        return None
    other = scale.args[1] if scale.args[0] is node else scale.args[0]
    if other is node or not f32_cpu(other) or not known(val(other).numel() == n):
        return None
    return _qlinear(Match("qlinear", node, scale), node.args[0], weight, other)


def _placeholder(node, dtype, shape):
    """`node` when it is a graph input of this dtype and static shape, else None."""
    v = val(node)
    ok = isinstance(v, torch.Tensor) and node.op == "placeholder" and v.dtype == dtype and list(v.shape) == shape
    return node if ok else None


def _unview(node):
    """(what `node` views, its shape as a list): through one reshape / view, if there is one."""
    inner = node.args[0] if isinstance(node, torch.fx.Node) and node.target in VIEWS else node
    v = val(node)
    return inner, list(v.shape) if isinstance(v, torch.Tensor) else None


def _operands(node, target):
    """The two args of a binary `target` call (aten.sub.Tensor, aten.mul.Tensor) without alpha, else None."""
    ok = isinstance(node, torch.fx.Node) and node.target == target and len(node.args) == 2 and not node.kwargs
    return node.args if ok else None


def intx_weight(node):
    """(qdata, scale, zero_point), the graph inputs a torchao IntxUnpackedToInt8Tensor flattens to, when `node`
    is its dequantized float (N, K) weight as torchao 0.18 computes it on CPU (each reshape may be absent):
        per group (G groups of g):  reshape((float(reshape(qdata, [N, G, g])) - float(reshape(zero_point, [N, G, 1])))
                                            * reshape(scale, [N, G, 1]), [N, K])
        per channel (G = 1):        (float(qdata) - float(zero_point)) * scale, zero_point and scale (N, 1).
    qdata int8 (N, K) holds signed values of the tensor's bit width; None when `node` is anything else."""
    v = val(node)
    if not f32_cpu(node) or v.dim() != 2 or not is_static(*v.shape):
        return None
    n, k = v.shape
    mul, _ = _unview(node)
    if (factors := _operands(mul, aten.mul.Tensor)) is None:
        return None
    sub, scale_view = factors
    terms = _operands(sub, aten.sub.Tensor)
    if terms is None or (q_view := _float(terms[0])) is None or (z_view := _float(terms[1])) is None:
        return None
    (qdata, q_shape), (scale, s_shape), (zero_point, z_shape) = map(_unview, (q_view, scale_view, z_view))
    groups = val(scale).shape[-1] if isinstance(val(scale), torch.Tensor) else None
    if not isinstance(groups, int) or groups < 1 or k % groups:
        return None
    # The shapes that broadcast one scale and zero point over each group of K: (N, G, g) by (N, G, 1), or, with
    # one group, (N, K) by (N, 1).
    grouped = ([n, groups, k // groups], [n, groups, 1]) if len(q_shape or ()) == 3 else ([n, k], [n, 1])
    if (q_shape, s_shape) != grouped or z_shape != grouped[1] or val(mul).shape != val(q_view).shape:
        return None
    inputs = (_placeholder(qdata, torch.int8, [n, k]), _placeholder(scale, torch.float32, [n, groups]),
              _placeholder(zero_point, torch.int8, [n, groups]))
    return None if None in inputs else inputs


def subclass_input(node) -> int | None:
    """The index of the graph input (a tensor subclass) that placeholder `node` is the `qdata` of, as
    AOTAutograd's descriptor records it; None for any other placeholder."""
    desc = node.meta.get("desc")
    base = getattr(desc, "base", None)
    index = getattr(base, "idx", None)
    return index if getattr(desc, "attr", None) == "qdata" and type(base).__name__ == "PlainAOTInput" else None


def match_intx_weight_only(node) -> Match | None:
    """torchao's intN weight-only linear on CPU (IntxWeightOnlyConfig, N = 1..8, per group or per channel):
    mm / addmm(bias, x, dequantize(W)^T) [+ activation]. args: x, qdata; `scales`, `zeros` hold scale and zero
    point. The bit width is not in the graph: the pass reads it from the subclass (`subclass_input`)."""
    operands = mm_operands(node)
    if operands is None:
        return None
    addend, x, w_t = operands
    if not f32_cpu(x) or not swaps_last_two(w_t) or (weight := intx_weight(w_t.args[0])) is None:
        return None
    if subclass_input(weight[0]) is None:
        return None  # plain int8 buffers, not a torchao tensor: no bit width to read, left to match_gemm
    m = Match("qlinear", node, node)
    if addend is not None and not take_addend(m, addend, val(node).shape[-1]):
        return None
    return _qlinear(m, x, *weight)


def match_conv(node) -> Match | None:
    """2-D, non-transposed, float32 NCHW-contiguous convolutions of static shape; bias, activation, residual."""
    if node.target != aten.convolution.default or len(node.args) != 9:
        return None
    x, w, bias, stride, padding, dilation, transposed, output_padding, groups = node.args
    if transposed or not all(f32_cpu(t) for t in (x, w, node)) or (bias is not None and not f32_cpu(bias)):
        return None
    xv, wv = val(x), val(w)
    if xv.dim() != 4 or wv.dim() != 4 or not is_static(*xv.shape, *wv.shape) or not xv.is_contiguous():
        return None
    if len(stride) != 2 or len(padding) != 2 or len(dilation) != 2 or any(output_padding):
        return None
    m = Match("conv2d", node, node)
    if bias is not None:
        m.epilogue, m.bias = ["bias"], bias
    walk_affine(m, wv.shape[0])
    return walk_epilogue(m, val(node).shape, allow_views=False)


def _row_contiguous(v: torch.Tensor) -> bool:
    """Contiguous, proven for every value of its symbolic sizes (never adds a guard)."""
    expected = 1
    for size, stride in reversed(list(zip(v.shape, v.stride()))):
        if not known(stride == expected):
            return False
        expected = expected * size
    return True


def _getitem(node, index: int):
    return next((u for u in node.users if u.target == operator.getitem and u.args[1] == index), None)


def match_layer_norm(node) -> Match | None:
    """Inductor's decomposition of layer_norm over the last dim of a contiguous float32 tensor, inference only:
    var, mean = var_mean(x, [-1], correction=0, keepdim=True); (x - mean) * rsqrt(var + eps) [* weight] [+ bias].
    args: x. In training the mean and rsqrt have more users (the backward's) and nothing matches."""
    if node.target != aten.var_mean.correction or len(node.args) != 2 or not f32_cpu(node.args[0]):
        return None
    x, dims = node.args
    xv = val(x)
    if xv.dim() < 2 or [d % xv.dim() for d in dims] != [xv.dim() - 1] or not is_static(xv.shape[-1]) \
            or node.kwargs != {"correction": 0, "keepdim": True} or not _row_contiguous(xv):
        return None
    var, mean = _getitem(node, 0), _getitem(node, 1)
    if var is None or mean is None or len(node.users) != 2:
        return None
    centered, shifted = only_user(mean), only_user(var)
    if not _is(centered, aten.sub.Tensor, x, mean) or shifted is None or shifted.target != aten.add.Tensor \
            or shifted.kwargs or len(shifted.args) != 2 or shifted.args[0] is not var \
            or not isinstance(shifted.args[1], float):
        return None
    rstd = only_user(shifted)
    normed = only_user(rstd) if _is(rstd, aten.rsqrt.default, shifted) else None
    if normed is None or only_user(centered) is not normed or not _is_commutative(normed, aten.mul.Tensor, centered,
                                                                                     rstd):
        return None
    m = Match("layernorm", node, normed, args=[x])
    m.eps = shifted.args[1]
    cols = xv.shape[-1]
    for target in (aten.mul.Tensor, aten.add.Tensor):  # the affine scale, then the shift, each optional
        user = only_user(m.last)
        if user is None or user.target != target or user.kwargs or len(user.args) != 2:
            continue
        other = user.args[1] if user.args[0] is m.last else user.args[0]
        v = val(other)
        if other is m.last or not f32_cpu(other) or v.dim() != 1 or not known(v.shape[0] == cols):
            continue
        if target == aten.mul.Tensor:
            m.weight = other
        else:
            m.bias = other
        m.last = user
    return m


def match_attention(node) -> Match | None:
    """CPU flash attention with no mask, no dropout, whose logsumexp nobody uses (inference)."""
    if node.target != FLASH:
        return None
    users = list(node.users)
    if not users or any(u.target != operator.getitem or u.args[1] != 0 for u in users) or len(users) != 1:
        return None
    q, k, v = node.args[:3]
    dropout = node.args[3] if len(node.args) > 3 else node.kwargs.get("dropout_p", 0.0)
    if dropout != 0.0 or node.kwargs.get("attn_mask") is not None or not all(f32_cpu(t) for t in (q, k, v)):
        return None
    if any(val(t).dim() != 4 for t in (q, k, v)):
        return None
    return Match("attention", node, users[0])
