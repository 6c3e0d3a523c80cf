"""LayerNorm over the last dimension (with optional affine weight and bias).

Owns the workload (workload.py), the CPU template layernorm.rows (rows.py, rows_tvm.py), its torch.compile graph
pattern (pattern.py) and `autotile tune layernorm` (cli.py).
"""

from autotile.ops.family import Family, Template

P = "autotile.ops.layernorm."
FAMILY = Family(
    op="layernorm",
    workload=P + "workload:LayerNormWorkload",
    templates=(Template("layernorm.rows", space=P + "rows:LayerNormSpace", lowering=P + "rows_tvm:schedule"),),
    shape_fields=("rows",),
    cli=P + "cli:commands",
    pattern=P + "pattern:PATTERN",
)
