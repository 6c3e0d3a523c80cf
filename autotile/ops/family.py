"""What an op family is: its workload, its templates, and where its other parts live.

Every part is named by a "module:attribute" string and imported on first use, so listing the families (the CLI
does at start-up) imports no template, no TVM and no Triton.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotile.dotted import resolve


@dataclass(frozen=True)
class Template:
    """One way to compute a family's workloads: a named config space and its lowering for one backend.

    `name` is recorded with every measurement of its configs ("gemm.blis"), so a record is only ever read back
    by the template that made it. `applies(workload, fingerprint)` says where it can run; where several apply,
    they compete in tuning, and the first whose `preferred` holds (else the first) gives the untuned default.
    """

    name: str
    space: str  # "module:Class", a ConfigSpace with for_device(workload, fingerprint); its config type is its own
    lowering: str  # "module:function" (workload, config) -> TVM IRModule ("tvm") or Triton Program ("triton")
    backend: str = "tvm"
    applies: str = ""  # "module:function" (workload, fingerprint) -> bool; empty: every workload of the family
    preferred: str = ""  # "module:function" (workload) -> bool: its default beats the other templates' defaults
    # "module:function" (workload, config) -> {operand: packed shape, or (shape, dtype)} it takes packed ahead
    prepacked: str = ""
    # What its kernels need from this process before they run: "amx" asks Linux for the tile state
    # (autotile.codegen.tvm.amx_permission), and a kernel is refused, by name, where it was not granted.
    runtime_needs: tuple[str, ...] = ()
    formerly: tuple[str, ...] = ()  # names its records were made under before (a database migration re-homes them)

    def applies_to(self, workload, fingerprint: dict | None) -> bool:
        return not self.applies or bool(resolve(self.applies)(workload, fingerprint))

    def prefers(self, workload) -> bool:
        return bool(self.preferred) and bool(resolve(self.preferred)(workload))

    @property
    def space_type(self):
        return resolve(self.space)

    def space_for(self, workload, fingerprint: dict | None = None):
        return self.space_type.for_device(workload, fingerprint)

    def lower(self, workload, config):
        return resolve(self.lowering)(workload, config)

    def prepacked_operands(self, workload, config) -> dict[str, tuple[int, ...]]:
        return resolve(self.prepacked)(workload, config) if self.prepacked else {}

    @property
    def lowering_module(self) -> str:
        return self.lowering.partition(":")[0]


@dataclass(frozen=True)
class Family:
    """An op family: `op` names its workloads (`workload.op`), `workload` is their class, `templates` every way
    to compute them, in order of preference for the untuned default.

    `shape_fields`: the workload fields that set its size; two workloads equal in every other field can share a
    tuned config (an untuned shape borrows the nearest tuned one's). `builds_on`: other families whose TVM code
    its templates import; their sources key its compiled libraries too. `cli`: "module:function" returning its
    `autotile tune <op>` click command. `pattern`: "module:attr", its torch.compile graph pattern
    (autotile.dynamo.pattern.Pattern); the graph pass tries patterns in `pattern_order` (lowest first), and the
    first that matches a node owns it.
    """

    op: str
    workload: str  # "module:Class"
    templates: tuple[Template, ...]
    shape_fields: tuple[str, ...]
    builds_on: tuple[str, ...] = ()
    cli: str = ""
    pattern: str = ""
    pattern_order: int = 50

    @property
    def workload_type(self):
        return resolve(self.workload)
