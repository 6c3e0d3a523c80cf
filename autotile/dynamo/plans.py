"""The plans the graph pass hands the autotile ops: one frozen, typed value per op family.

A plan is everything an op needs besides its tensors: the workload (a symbolic dim holds the bucket of its
traced size), what of its operands' layout and dynamic dims the kernel must know, and the database and tuning
mode its kernels come from. It is self-contained, so a graph loaded from Inductor's cache in a new process runs.

A custom op's schema takes only serializable arguments, and Inductor's FX graph cache keys on them, so an op
receives `plan.encode()`: stable JSON (sorted keys, the family's `kind` included). `PlanType.decode(text)` reads
it back strictly: another family's plan, or an unknown or missing field, is an error, never a silent default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cache
from typing import ClassVar

from autotile.dynamo.options import TUNING
from autotile.errors import AutotileError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise AutotileError(message)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Plan:
    """What every family's plan holds. Subclasses set `kind` (their encoding's tag) and `workload_op` (the op of
    the autotile.ir workload they take) and add their own fields."""

    kind: ClassVar[str]
    workload_op: ClassVar[str]

    db: str  # the tuning database the kernels come from
    tuning: str  # the backend's tuning mode ("cached", "tune", "off")
    workload: object  # an autotile.ir workload of `workload_op`
    backend: str = field(default="tvm", kw_only=True)  # whose kernels run it: "tvm" (CPU) or "triton"

    def __post_init__(self):
        _require(isinstance(self.db, str), f"{self.kind} plan: db must be a path string, got {self.db!r}")
        _require(self.tuning in TUNING, f"{self.kind} plan: tuning must be one of {', '.join(TUNING)}, "
                                        f"got {self.tuning!r}")
        _require(self.backend in ("tvm", "triton"), f"{self.kind} plan: backend must be tvm or triton, "
                                                    f"got {self.backend!r}")
        op = getattr(self.workload, "op", None)
        _require(op == self.workload_op, f"{self.kind} plan: expected a {self.workload_op} workload, got {op!r}")

    def packs(self, operand: str) -> bool:
        """Whether `operand` is a weight the op converts to the kernel's layout once per tensor version."""
        return False

    def resized(self, sizes: dict[str, int]):
        """The workload with these fields (dynamic dims, each a bucket) set: what one bucket's kernel runs."""
        if not sizes:
            return self.workload
        from autotile.ops import workload_from_dict

        return workload_from_dict({**self.workload.to_dict(), **sizes})

    def encode(self) -> str:
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body = {k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}
        body["workload"] = self.workload.to_dict()
        return json.dumps({"kind": self.kind, **body}, sort_keys=True)

    @classmethod
    def decode(cls, text: str):
        """The plan `text` encodes; an AutotileError naming the problem when it is not exactly one of `cls`."""
        return _decode(cls, text)


@cache  # an op decodes its plan on every call: once per distinct text
def _decode(cls, text: str):
    try:
        raw = json.loads(text)
    except (TypeError, json.JSONDecodeError) as e:
        raise AutotileError(f"a {cls.kind} plan must be the JSON text of Plan.encode(): {e}") from None
    _require(isinstance(raw, dict), f"a {cls.kind} plan must be a JSON object, got {type(raw).__name__}")
    kind = raw.pop("kind", None)
    _require(kind == cls.kind, f"expected a {cls.kind} plan, got kind {kind!r}")
    names = {f.name for f in fields(cls)}
    unknown, missing = sorted(set(raw) - names), sorted(names - set(raw))
    _require(not unknown, f"{cls.kind} plan: unknown field(s) {', '.join(unknown)}; "
                          f"expected {', '.join(sorted(names))}")
    _require(not missing, f"{cls.kind} plan: missing field(s) {', '.join(missing)}")
    _require(isinstance(raw["workload"], dict), f"{cls.kind} plan: workload must be an object")
    from autotile.ops import workload_from_dict

    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    values["workload"] = workload_from_dict(raw["workload"])
    return cls(**values)


@dataclass(frozen=True)
class GemmPlan(Plan):
    """C = epilogue(A @ B). The workload says the rest: A's and B's layouts (trans_a, trans_b) and whether B is
    a linear's weight W, passed as is and read as W^T, packed once per version (const_b)."""

    kind: ClassVar[str] = "gemm"
    workload_op: ClassVar[str] = "gemm"

    m_dim: int | None  # the dim of A holding M when M is symbolic (its bucket picks the kernel); else None

    def __post_init__(self):
        super().__post_init__()
        _require(self.m_dim is None or _is_int(self.m_dim), f"gemm plan: m_dim must be a dim or None, "
                                                            f"got {self.m_dim!r}")

    @property
    def a_layout(self) -> str:
        return "t" if self.workload.trans_a else "n"

    @property
    def b_layout(self) -> str:
        return "t" if self.workload.trans_b else "n"

    @property
    def b_is_weight(self) -> bool:
        return self.workload.const_b

    def packs(self, operand: str) -> bool:
        return operand == "b" and self.b_is_weight


@dataclass(frozen=True)
class Conv2dPlan(Plan):
    """out = epilogue(conv2d(x, weight * scale)), NCHW, static shapes; the weight is packed once per version."""

    kind: ClassVar[str] = "conv2d"
    workload_op: ClassVar[str] = "conv2d"

    def packs(self, operand: str) -> bool:
        return operand == "weight"


ATTENTION_OUTPUTS = ("contiguous", "bshd")


@dataclass(frozen=True)
class AttentionPlan(Plan):
    """softmax(scale q k^T [+ causal mask]) v on (B, H, S, D) tensors."""

    kind: ClassVar[str] = "attention"
    workload_op: ClassVar[str] = "attention"

    dynamic_batch: bool  # the batch is symbolic: q's dim 0 picks the bucket, extra batches zero-padded
    dynamic_seq: bool  # seq_q = seq_kv is symbolic (top-left causal only): q's dim 2 picks the bucket
    out_layout: str  # the output's storage as eager returns it: "contiguous" or "bshd" ((B, S, H, D) storage)

    def __post_init__(self):
        super().__post_init__()
        for name in ("dynamic_batch", "dynamic_seq"):
            _require(isinstance(getattr(self, name), bool), f"attention plan: {name} must be a bool")
        _require(self.out_layout in ATTENTION_OUTPUTS, f"attention plan: out_layout must be one of "
                                                       f"{', '.join(ATTENTION_OUTPUTS)}, got {self.out_layout!r}")


@dataclass(frozen=True)
class LayerNormPlan(Plan):
    """layer_norm over the last dim of a contiguous tensor, seen as (rows, cols)."""

    kind: ClassVar[str] = "layernorm"
    workload_op: ClassVar[str] = "layernorm"

    dynamic_rows: bool  # the row count is symbolic: its bucket picks the kernel, extra rows zero-padded

    def __post_init__(self):
        super().__post_init__()
        _require(isinstance(self.dynamic_rows, bool), "layernorm plan: dynamic_rows must be a bool")


QLINEAR_OPERANDS = ("codes", "scales", "zeros")


@dataclass(frozen=True)
class QLinearPlan(Plan):
    """y = epilogue(x @ dequantize(W)^T); the rows are always bucketed (decode and prefill share kernels)."""

    kind: ClassVar[str] = "qlinear"
    workload_op: ClassVar[str] = "qgemm"

    # torchao's codes are signed values of this many bits, read by the kernel as unsigned codes around
    # 2**(bits-1) (zero points likewise); None: the codes are already the kernel's (autotile.nn.QuantizedLinear).
    signed_bits: int | None
    pack: tuple[str, ...]  # the weight operands ("codes", "scales", "zeros") converted once per tensor version

    def __post_init__(self):
        super().__post_init__()
        _require(self.signed_bits is None or (_is_int(self.signed_bits) and 1 <= self.signed_bits <= 8),
                 f"qlinear plan: signed_bits must be 1 to 8 or None, got {self.signed_bits!r}")
        _require(isinstance(self.pack, tuple) and set(self.pack) <= set(QLINEAR_OPERANDS),
                 f"qlinear plan: pack must name operands among {', '.join(QLINEAR_OPERANDS)}, got {self.pack!r}")

    def packs(self, operand: str) -> bool:
        return operand in self.pack
