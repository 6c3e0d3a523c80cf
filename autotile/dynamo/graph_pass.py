"""The post-grad graph pass: matched ops become torch.ops.autotile.* calls, with kernels chosen at compile time.

Inductor runs it on every forward, backward and inference graph (`post_grad_custom_post_pass`), then
compiles the rest around the new ops; the eager fallback runs it and executes the graph as is. Its uuid
covers this package's source, the options and the database's state, so Inductor's FX graph cache never
serves a graph compiled against other kernels.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import torch
from torch._guards import detect_fake_mode
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
from torch.fx.experimental.symbolic_shapes import optimization_hint
from torch.utils._python_dispatch import _disable_current_modes

from autotile.dynamo import ops  # noqa: F401  (registers torch.ops.autotile.*)
from autotile.dynamo.buckets import bucket
from autotile.dynamo.counters import stats
from autotile.dynamo.match import (
    FLASH,
    layout,
    match_attention,
    match_conv,
    match_gemm,
    match_int8_weight_only,
    match_intx_weight_only,
    match_layer_norm,
    subclass_input,
    swaps_last_two,
    val,
)
from autotile.dynamo.options import Options
from autotile.dynamo.resolve import resolver

aten = torch.ops.aten
MATCHERS = (match_int8_weight_only, match_intx_weight_only, match_gemm, match_conv, match_attention,
            match_layer_norm)
HEAVY = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.convolution.default, FLASH}


def _emit(graph, fake_mode, target, *args):
    """A new call node with its fake value, so Inductor and later matches can read its metadata."""
    node = graph.call_function(target, args)
    with fake_mode:
        node.meta["val"] = target(*torch.fx.node.map_arg(args, val))
    return node


def _static_or_bucket(size) -> tuple[int, bool]:
    """A dim's value for the workload: its int, or the bucket of its hint when symbolic."""
    if isinstance(size, int):
        return size, False
    return bucket(optimization_hint(size)), True


def db_state(path: str):
    """What the database holds, by content (file times change whenever SQLite checkpoints its WAL)."""
    if not Path(path).exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            state = conn.execute("select count(*), max(id), sum(latency_us) from measurements").fetchone()
            return state if state[0] else None  # empty and missing are the same (the pass creates the file)
        finally:
            conn.close()
    except sqlite3.Error:
        return None


class AutotilePass(CustomGraphPass):
    def __init__(self, options: Options, weight_bits: dict[int, int] | None = None):
        """weight_bits: the bit width of each torchao intN weight among the graph's inputs, by input index
        (`torchao_weight_bits`); the post-grad graph holds only their int8 values."""
        self.options = options
        self.weight_bits = dict(weight_bits or {})
        self.db = str(options.db_path())
        self.resolver = resolver(self.db, options.tuning)
        self.budget_left = options.time_budget_s

    # -- cache key ------------------------------------------------------------------------------
    def uuid(self):
        state = db_state(self.db) if self.options.tuning != "off" else None
        sources = sorted(str(p) for p in Path(__file__).parent.glob("*.py"))
        return (get_hash_for_files(tuple(sources)).hex(), self.options.to_json(), self.db, state,
                os.environ.get("AUTOTILE_CACHE_DIR"), sorted(self.weight_bits.items()))

    # -- the pass -------------------------------------------------------------------------------
    def __call__(self, graph: torch.fx.Graph) -> None:
        start = time.perf_counter()
        fake_mode = detect_fake_mode([val(n) for n in graph.nodes if n.op == "placeholder"])
        matches, qlinears = [], []
        for node in list(graph.nodes):
            if node.op != "call_function" or not node.users:
                continue
            if node.target == torch.ops.autotile.qlinear.default:
                qlinears.append(self._retarget_qlinear(node))
                stats.replaced["qlinear"] += 1
                continue
            for matcher in MATCHERS:
                m = matcher(node)
                if m is not None:
                    spec = self._spec(m)
                    if spec is not None:
                        matches.append((m, spec))
                    break
        with _disable_current_modes():  # kernels are built, verified and tuned on real tensors
            self._prepare([spec for _, spec in matches] + qlinears)
        renamed: dict = {}  # a replaced node -> its replacement, for later matches that hold the old node
        for m, spec in matches:
            self._replace(graph, fake_mode, m, spec, renamed)
        graph.eliminate_dead_code()
        stats.left.update(str(n.target) for n in graph.nodes if n.op == "call_function" and n.target in HEAVY)
        stats.graphs += 1
        stats.pass_seconds += time.perf_counter() - start

    def _spec(self, m) -> dict | None:
        """The plan for a match, or None when its shapes are outside what the templates take."""
        from autotile.errors import AutotileError

        common = {"db": self.db, "tuning": self.options.tuning, "kind": m.kind}
        try:
            if m.kind == "gemm":
                return {**common, **self._gemm_spec(m)}
            if m.kind == "conv2d":
                return {**common, **self._conv_spec(m)}
            if m.kind == "qlinear":
                return {**common, **self._weight_only_spec(m)}
            if m.kind == "layernorm":
                return {**common, **self._layer_norm_spec(m)}
            return {**common, **self._attention_spec(m)}
        except (AutotileError, _Skip):
            return None

    def _gemm_spec(self, m) -> dict:
        from autotile.ops.gemm.workload import GemmWorkload

        a, b = m.anchor.args[-2:]
        av, bv = val(a), val(b)
        rows, dynamic = _static_or_bucket(av.shape[-2])
        b_arg, b_form, pack = b, "n", []
        if swaps_last_two(b) and b.args[0].op == "placeholder":
            # A linear's weight W, used as W^T: the op gets W itself (the same object every call), a constant
            # B that the kernel reads as B^T and packs into its panels once per version.
            b_arg, b_form, pack = b.args[0], "t", ["b"]
        a_layout = layout(av)
        b_layout = "t" if pack else layout(bv)
        w = GemmWorkload(rows, bv.shape[-1], bv.shape[-2], batch=av.shape[0] if av.dim() == 3 else 1,
                         trans_a=a_layout == "t", trans_b=b_layout == "t", epilogue=m.epilogue, const_b=bool(pack))
        m.args = [a, b_arg]
        return {"workload": w.to_dict(), "dynamic": {"m": av.dim() - 2} if dynamic else {}, "a": a_layout,
                "b": b_layout, "b_form": b_form, "pack": pack, "out_dtype": w.out_dtype}

    def _weight_only_spec(self, m) -> dict:
        """torchao's int8 (Int8WeightOnlyConfig: per channel, no zero point) or intN (IntxWeightOnlyConfig: per
        group or channel, zero points) weight-only linear as a quantized GEMM."""
        from autotile.ops.qgemm.workload import QGemmWorkload

        x, codes = m.args
        xv, (n, k) = val(x), val(codes).shape
        rows, dynamic = _static_or_bucket(xv.shape[0])
        bits = 8 if m.zeros is None else self.weight_bits.get(subclass_input(codes))
        if bits is None:
            raise _Skip  # not a torchao weight the backend saw, or of a dtype it does not know
        groups = val(m.scales).shape[-1] if m.zeros is not None else 1
        w = QGemmWorkload(bucket(rows), n, k, weight_dtype=f"int{bits}", group_size=k // groups,
                          asymmetric=m.zeros is not None, epilogue=m.epilogue)
        # The op reads torchao's signed values as unsigned codes around 2**(bits-1) (zero points likewise),
        # converted once per weight version.
        return {"workload": w.to_dict(), "dynamic": {"m": 0} if dynamic else {}, "signed_codes": bits,
                "pack": ["codes", "zeros"]}

    def _layer_norm_spec(self, m) -> dict:
        from autotile.ops.layernorm.workload import LayerNormWorkload

        xv = val(m.args[0])
        rows, dynamic = _static_or_bucket(xv.numel() // xv.shape[-1])
        w = LayerNormWorkload(rows, xv.shape[-1], eps=m.eps)
        return {"workload": w.to_dict(), "dynamic": {"rows": -1} if dynamic else {}}

    def _conv_spec(self, m) -> dict:
        from autotile.ops.conv2d.workload import Conv2dWorkload

        x, weight, _, stride, padding, dilation, _, _, groups = m.anchor.args
        (n, c, h, wd), (k, _, r, s) = val(x).shape, val(weight).shape
        w = Conv2dWorkload(n, c, h, wd, k, r, s, stride=tuple(stride), padding=tuple(padding),
                           dilation=tuple(dilation), groups=groups, epilogue=m.epilogue, const_weight=True)
        m.args = [x, weight]
        return {"workload": w.to_dict(), "dynamic": {}, "pack": ["weight"]}

    def _attention_spec(self, m) -> dict:
        from autotile.ops.attention.workload import AttentionWorkload

        q, k, v = m.anchor.args[:3]
        causal = bool(m.anchor.args[4]) if len(m.anchor.args) > 4 else bool(m.anchor.kwargs.get("is_causal"))
        qv, kv = val(q), val(k)
        (bsz, heads, seq_q, dim), (kv_bsz, kv_heads, seq_kv, kdim) = qv.shape, kv.shape
        if not all(isinstance(x, int) for x in (heads, dim, kv_heads, kdim)) or str(val(v).shape) != str(kv.shape):
            raise _Skip
        dynamic = {}
        if not isinstance(bsz, int):
            if str(bsz) != str(kv_bsz):
                raise _Skip
            dynamic["batch"] = 0
        if not isinstance(seq_q, int) or not isinstance(seq_kv, int):
            # Zero-padding is exact only when padded keys are hidden from real queries: top-left causal, same length.
            if not causal or str(seq_q) != str(seq_kv):
                raise _Skip
            dynamic.update(seq_q=2, seq_kv=2)
        bsz, _ = _static_or_bucket(bsz)
        seq_q, _ = _static_or_bucket(seq_q)
        seq_kv = seq_q if "seq_kv" in dynamic else seq_kv
        w = AttentionWorkload(bsz, heads, seq_q, dim, seq_kv=seq_kv, kv_heads=kv_heads, causal=causal,
                              scale=m.anchor.kwargs.get("scale"))
        out = val(m.last)
        layout = "bshd" if out.dim() == 4 and out.transpose(1, 2).is_contiguous() and not out.is_contiguous() \
            else "contiguous"
        m.args = [q, k, v]
        return {"workload": w.to_dict(), "dynamic": dynamic, "out": layout}

    def _retarget_qlinear(self, node) -> dict:
        """A QuantizedLinear's op follows this compile's database and tuning mode; returns the spec to prepare,
        its rows the bucket of the traced ones."""
        spec = {**json.loads(node.args[-1]), "db": self.db, "tuning": self.options.tuning}
        node.args = (*node.args[:-1], json.dumps(spec, sort_keys=True))
        x = val(node.args[0])
        rows, _ = _static_or_bucket(x.numel() // x.shape[-1] if x.dim() > 1 else 1)
        return {**spec, "workload": {**spec["workload"], "m": bucket(rows)}}

    def _prepare(self, specs):
        """Tune what is missing (tuning="tune"), then load every kernel now, not at the first call."""
        from autotile.ops import workload_from_dict

        examples = {}
        for spec in specs:
            w = workload_from_dict(spec["workload"])  # dynamic dims: the bucket of the traced size
            examples[w.key] = w
        if self.options.tuning == "tune" and examples:
            start = time.perf_counter()
            self.resolver.tune_missing(list(examples.values()), self.options.trials_per_workload,
                                                      self.budget_left, self.options.progress)
            if self.budget_left is not None:
                self.budget_left = max(self.budget_left - (time.perf_counter() - start), 1e-3)
        for w in examples.values():
            self.resolver.load(w)

    def _replace(self, graph, fake_mode, m, spec, renamed: dict):
        text = json.dumps(spec, sort_keys=True)
        current = lambda node: renamed.get(node, node)
        # One match's result may be another's operand (a residual add feeding the next linear's epilogue):
        # read the replacement, or the old chain stays alive and runs as well.
        m.args = [current(a) for a in m.args]
        with graph.inserting_before(m.last):
            if m.kind == "attention":
                new = _emit(graph, fake_mode, torch.ops.autotile.attention.default, *m.args, text)
            elif m.kind == "layernorm":
                new = _emit(graph, fake_mode, torch.ops.autotile.layer_norm.default, *m.args, current(m.weight),
                            current(m.bias), text)
            elif m.kind == "qlinear":
                # (N, groups) as the kernel takes them; int8's per-channel scales may come as (N,) or (1, N).
                n = val(m.anchor).shape[-1]
                scales = _emit(graph, fake_mode, aten.reshape.default, current(m.scales), [n, -1])
                bias = _as_vector(graph, fake_mode, current(m.bias))
                new = _emit(graph, fake_mode, torch.ops.autotile.qlinear.default, *m.args, scales, current(m.zeros),
                            bias, text)
            else:
                bias, residual = current(m.bias), current(m.residual)
                scale = None
                if m.affine:
                    scale, bias = fold_affine(graph, fake_mode, m.affine, val(m.args[1]).shape[0], bias)
                bias = _as_vector(graph, fake_mode, bias)
                if residual is not None and m.view is not None:
                    residual = _emit(graph, fake_mode, aten.reshape.default, residual, [-1, val(m.anchor).shape[-1]])
                if m.kind == "gemm":
                    new = _emit(graph, fake_mode, torch.ops.autotile.gemm.default, *m.args, bias, residual, text)
                else:
                    new = _emit(graph, fake_mode, torch.ops.autotile.conv2d.default, *m.args, scale, bias, residual,
                                text)
            if m.view is not None:
                new = _emit(graph, fake_mode, aten.reshape.default, new, m.view.args[1])
        new.meta.update({k: v for k, v in m.last.meta.items() if k not in ("val",)})
        m.last.replace_all_uses_with(new)
        renamed[m.last] = new
        stats.replaced[m.kind] += 1


def _as_vector(graph, fake_mode, node):
    """A bias as the kernels take it: 1-D (a (1, N) or (K, 1, 1) addend reshaped), or None."""
    if node is None or val(node).dim() == 1:
        return node
    return _emit(graph, fake_mode, aten.reshape.default, node, [val(node).numel()])


def fold_affine(graph, fake_mode, steps, channels: int, bias):
    """(scale, shift) for conv(x, weight) [+ bias] followed by per-channel sub / mul / add steps.

    The steps (an eval BatchNorm's (x - mean) * invstd * gamma + beta) make y = conv(x, weight * scale) + shift.
    scale and shift are emitted as graph ops on the K-vectors, run each call, so a changed parameter or running
    statistic is always seen; the op scales the weight itself, once per (weight version, scale values), so
    no graph op runs on the weight between two convolutions."""
    e = lambda target, *args: _emit(graph, fake_mode, target, *args)
    scale, shift = None, bias
    for step, node in steps:
        c = e(aten.reshape.default, node, [channels])
        if step == "mul":
            scale = c if scale is None else e(aten.mul.Tensor, scale, c)
            shift = None if shift is None else e(aten.mul.Tensor, shift, c)
        elif step == "add":
            shift = c if shift is None else e(aten.add.Tensor, shift, c)
        else:
            shift = e(aten.neg.default, c) if shift is None else e(aten.sub.Tensor, shift, c)
    return scale, shift


class _Skip(Exception):
    """A match the templates cannot take: left to the fallback."""
