"""The post-grad graph pass: matched ops become torch.ops.autotile.* calls, with kernels chosen at compile time.

Inductor runs it on every forward, backward and inference graph (`post_grad_custom_post_pass`), then
compiles the rest around the new ops; the eager fallback runs it and executes the graph as is. What is replaced,
and how, is each family's pattern (autotile/ops/<op>/pattern.py); the pass runs them all alike. Its uuid covers this
package's source, the options and the database's state, so Inductor's FX graph cache never serves a graph
compiled against other kernels.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from pathlib import Path

import torch
from torch._guards import detect_fake_mode
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
from torch.utils._python_dispatch import _disable_current_modes

from autotile.dynamo import extraction, ops  # noqa: F401  (ops registers torch.ops.autotile.*)
from autotile.dynamo.counters import stats
from autotile.dynamo.match import claimed, val
from autotile.dynamo.options import Options
from autotile.dynamo.pattern import Context, Skip
from autotile.dynamo.resolve import resolver
from autotile.errors import AutotileError
from autotile.ops import families, graph_patterns, templates_for

# The ATen ops stats.left reports when they stay in a graph: those some pattern replaces.
PATTERNS = tuple(graph_patterns())
HEAVY = frozenset().union(*(p.heavy for p in PATTERNS))


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
    def __init__(self, options: Options, weight_bits: dict[int, int] | None = None, backend: str = "tvm"):
        """weight_bits: the bit width of each torchao intN weight among the graph's inputs, by input index
        (`torchao_weight_bits`); the post-grad graph holds only their int8 values."""
        self.options = options
        self.weight_bits = dict(weight_bits or {})
        self.db = str(options.db_path())
        self.backend = backend  # "tvm" or "triton": whose kernels the plans name
        self.resolver = resolver(self.db, options.tuning, backend)
        self.budget_left = options.time_budget_s

    # -- cache key ------------------------------------------------------------------------------
    def uuid(self):
        state = db_state(self.db) if self.options.tuning != "off" else None
        families_dir = Path(__file__).parents[1] / "ops"  # the families' patterns decide the rewrite too
        sources = sorted([*map(str, Path(__file__).parent.glob("*.py")),
                          *(str(families_dir / op / "pattern.py") for op in families())])
        return (get_hash_for_files(tuple(sources)).hex(), self.options.to_json(), self.db, state,
                os.environ.get("AUTOTILE_CACHE_DIR"), sorted(self.weight_bits.items()), self.backend)

    # -- the pass -------------------------------------------------------------------------------
    def __call__(self, graph: torch.fx.Graph) -> None:
        start = time.perf_counter()
        fake_mode = detect_fake_mode([val(n) for n in graph.nodes if n.op == "placeholder"])
        ctx = Context(graph, fake_mode, self.db, self.options.tuning, self.weight_bits, backend=self.backend)
        found, adopted = [], []  # (pattern, match, plan) to rewrite; workloads of ops already in the graph
        in_kernels: set = set()  # nodes the matches so far compute in their kernels: no later match takes them
        order = {node: i for i, node in enumerate(graph.nodes)}
        with claimed(in_kernels):
            for node in list(graph.nodes):
                if node.op != "call_function" or not node.users or node in in_kernels:
                    continue
                workload = self._adopt(node, ctx)
                if workload is not None:
                    adopted.append(workload)
                    continue
                for pattern in PATTERNS:
                    m = pattern.match(node)
                    if m is not None:  # the first pattern that matches owns the node, planned or not
                        plan = _plan(pattern, m, ctx)
                        if plan is not None:
                            found.append((pattern, m, plan))
                            in_kernels.update(between(node, m.last, order))
                        break
        found, taken = _fuse_prologues(found, ctx) if self.options.fuse_prologues else (found, [])
        workloads = [plan.workload for _, _, plan in found] + adopted
        if extraction.collect(workloads):  # autotile tune-model asks what would be replaced, nothing more
            return
        with _disable_current_modes():  # kernels are built, verified and tuned on real tensors
            self._prepare(workloads)
        for pattern, m, plan in found:
            self._replace(ctx, pattern, m, plan)
        for name in taken:  # computed inside another op's kernel: replaced all the same
            stats.replaced[name] += 1
            stats.fused[name] += 1
        graph.eliminate_dead_code()
        stats.left.update(str(n.target) for n in graph.nodes if n.op == "call_function" and n.target in HEAVY)
        stats.graphs += 1
        stats.pass_seconds += time.perf_counter() - start

    def _adopt(self, node, ctx: Context):
        """The workload to prepare for an autotile op a user's module put in the graph (counted as replaced), or
        None when `node` is no such op."""
        for pattern in PATTERNS:
            workload = pattern.adopt(node, ctx)
            if workload is not None:
                stats.replaced[pattern.name] += 1
                return workload
        return None

    def _prepare(self, workloads):
        """Tune what is missing (tuning="tune"), then load every kernel now, not at the first call."""
        examples = {w.key: w for w in workloads}  # dynamic dims: the bucket of the traced size
        if self.options.tuning == "tune" and examples:
            start = time.perf_counter()
            calls = Counter(w.key for w in workloads)
            self.resolver.tune_missing([(w, calls[key]) for key, w in examples.items()],
                                       self.options.trials_per_workload, self.budget_left, self.options.progress)
            if self.budget_left is not None:
                self.budget_left = max(self.budget_left - (time.perf_counter() - start), 1e-3)
        for w in examples.values():
            self.resolver.load(w)

    def _replace(self, ctx: Context, pattern, m, plan):
        with ctx.graph.inserting_before(m.last):
            new = pattern.rewrite(m, plan, ctx)
        new.meta.update({k: v for k, v in m.last.meta.items() if k not in ("val",)})
        m.last.replace_all_uses_with(new)
        ctx.renamed[m.last] = new
        stats.replaced[pattern.name] += 1


def between(first, last, order: dict) -> set:
    """The nodes on a path from `first` to `last` (both included): what one match computes in its kernel. Its
    inputs (weights, a residual from another branch) are not on such a path; only nodes in between in graph order
    are looked at."""
    lo, hi = order[first], order[last]
    ahead, todo = {first}, [first]
    while todo:
        for user in todo.pop().users:
            if user not in ahead and user in order and order[user] <= hi:
                ahead.add(user)
                todo.append(user)
    on_path, todo = {last}, [last]
    while todo:
        for node in todo.pop().all_input_nodes:
            if node not in on_path and node in ahead and order[node] >= lo:
                on_path.add(node)
                todo.append(node)
    return on_path


def _fuse_prologues(found, ctx: Context):
    """Matches whose input another match produces for them alone (a layer norm feeding a GEMM's A) take that match
    into their kernel where a template can: (the matches left to rewrite, the pattern names of those taken in)."""
    producers = {m.last: (pattern, m) for pattern, m, _ in found}
    fused, taken = [], {}  # the produced node -> its pattern's name
    for pattern, m, plan in found:
        source = pattern.prologue_source(m)
        if source in producers and len(source.users) == 1:
            producer, produced = producers[source]
            both = pattern.with_prologue(m, plan, producer.name, produced, ctx)
            if both is not None:
                m, plan = both
                taken[source] = producer.name
        fused.append((pattern, m, plan))
    return [(pattern, m, plan) for pattern, m, plan in fused if m.last not in taken], list(taken.values())


def _plan(pattern, m, ctx: Context):
    """The match's plan, or None when its shapes are outside what the templates take (left to the fallback)."""
    try:
        plan = pattern.plan(m, ctx)
        templates_for(plan.workload, backend=ctx.backend)  # an AutotileError where the backend has no template
        return plan
    except (AutotileError, Skip):
        return None
