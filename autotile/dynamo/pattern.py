"""What a graph pattern is to the graph pass, and what its steps get to work with.

A pattern (one per op family, in autotile/ops/<op>/pattern.py) finds its heavy op and the nodes that fuse into it
(`match`), turns the match into a workload and a plan (`plan`), and writes the autotile op call that replaces it
(`rewrite`). The pass runs these steps for every pattern alike, in three phases: match and plan every node, then
load every planned kernel at once, then rewrite; so a match holds graph nodes that a later rewrite may replace
(`Context.current`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.fx.experimental.symbolic_shapes import optimization_hint

from autotile.dynamo.buckets import bucket
from autotile.dynamo.match import val

aten = torch.ops.aten


class Skip(Exception):
    """A match the templates cannot take: left to the fallback."""


def static_or_bucket(size) -> tuple[int, bool]:
    """A dim's value for a workload: (its int, False), or (the bucket of its hint, True) when symbolic."""
    if isinstance(size, int):
        return size, False
    return bucket(optimization_hint(size)), True


@dataclass
class Context:
    """One run of the pass over one graph, as patterns see it."""

    graph: torch.fx.Graph
    fake_mode: object  # the graph's fake mode: new nodes get fake values under it
    db: str  # the database and tuning mode every plan of this compile names
    tuning: str
    weight_bits: dict[int, int]  # the bit width of each torchao intN weight, by graph input index
    renamed: dict = field(default_factory=dict)  # a replaced node -> its replacement
    backend: str = "tvm"  # whose kernels every plan of this compile names

    def current(self, node):
        """`node`, or what replaced it: one match's result may be another's operand (a residual add feeding the
        next linear's epilogue), and reading the old node would keep its whole chain alive beside the new op."""
        return self.renamed.get(node, node)

    def emit(self, target, *args):
        """A new call node with its fake value, so Inductor and later matches can read its metadata."""
        node = self.graph.call_function(target, args)
        with self.fake_mode:
            node.meta["val"] = target(*torch.fx.node.map_arg(args, val))
        return node

    def as_vector(self, node):
        """A bias as the kernels take it: 1-D (a (1, N) or (K, 1, 1) addend reshaped), or None."""
        if node is None or val(node).dim() == 1:
            return node
        return self.emit(aten.reshape.default, node, [val(node).numel()])

    def viewed(self, new, view):
        """The op's result in the shape of the epilogue's last view (None: as it is)."""
        return new if view is None else self.emit(aten.reshape.default, new, view.args[1])


class Pattern:
    """One op family's graph pattern. `name` is the family's key in stats.replaced; `heavy` the ATen ops it
    replaces that stats.left reports when they stay in a graph."""

    name: str
    heavy: frozenset = frozenset()

    def match(self, node):
        """A match value (with `.last`: the node whose value the new op produces) for `node`, or None."""
        raise NotImplementedError

    def plan(self, m, ctx: Context):
        """The match's plan (autotile.dynamo.plans); raises Skip or AutotileError when no template takes it."""
        raise NotImplementedError

    def rewrite(self, m, plan, ctx: Context) -> torch.fx.Node:
        """Emit (before m.last) the op call computing m.last's value; returns the node that replaces it."""
        raise NotImplementedError

    def prologue_source(self, m):
        """The node whose value the match's kernel could compute itself, as it reads its input (a GEMM's A), when
        another pattern's match produces it; None when it can take no prologue."""
        return None

    def with_prologue(self, m, plan, producer: str, produced, ctx: Context):
        """(match, plan) computing `produced` (a match of the pattern named `producer`, whose value is
        prologue_source(m) and used nowhere else) in this op's kernel; None where no template can."""
        return None

    def adopt(self, node, ctx: Context):
        """For a node that already calls this family's op (a user's module put it in): point its plan at this
        compile's database and tuning mode, and return the workload to prepare. None for any other node."""
        return None
