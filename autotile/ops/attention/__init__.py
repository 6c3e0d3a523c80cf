"""Scaled dot-product attention (causal or not, grouped-query heads).

Owns the workload (workload.py), the CPU template attention.flash (flash.py, flash_tvm.py), the GPU template
attention.triton (triton.py), its torch.compile graph pattern (pattern.py) and `autotile tune attention` (cli.py).
"""

from autotile.ops.family import Family, Template

P = "autotile.ops.attention."
FAMILY = Family(
    op="attention",
    workload=P + "workload:AttentionWorkload",
    templates=(
        Template("attention.flash", space=P + "flash:AttentionSpace", lowering=P + "flash_tvm:schedule"),
        Template("attention.triton", space=P + "triton:TritonAttentionSpace", lowering=P + "triton:program",
                 backend="triton"),
    ),
    shape_fields=("batch", "heads", "seq_q", "seq_kv", "kv_heads"),
    cli=P + "cli:commands",
    pattern=P + "pattern:PATTERN",
)
