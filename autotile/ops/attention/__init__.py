"""Scaled dot-product attention (causal or not, grouped-query heads).

Owns the workload (workload.py), the CPU templates attention.flash (flash.py, flash_tvm.py) and attention.flash_amx
(bfloat16 on AMX tiles: flash_amx.py, flash_amx_tvm.py), the GPU template
attention.triton (triton.py), its torch.compile graph pattern (pattern.py) and `autotile tune attention` (cli.py).
"""

from autotile.ops.family import Family, Template

P = "autotile.ops.attention."
FAMILY = Family(
    op="attention",
    workload=P + "workload:AttentionWorkload",
    templates=(
        Template("attention.flash_amx", space=P + "flash_amx:AmxAttentionSpace", lowering=P + "flash_amx_tvm:schedule",
                 applies=P + "flash_amx:applies", preferred=P + "flash_amx:preferred", runtime_needs=("amx",)),
        Template("attention.flash", space=P + "flash:AttentionSpace", lowering=P + "flash_tvm:schedule"),
        Template("attention.triton", space=P + "triton:TritonAttentionSpace", lowering=P + "triton:program",
                 backend="triton"),
    ),
    shape_fields=("batch", "heads", "seq_q", "seq_kv", "kv_heads"),
    cli=P + "cli:commands",
    pattern=P + "pattern:PATTERN",
)
