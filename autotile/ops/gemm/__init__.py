"""GEMM (batched, fused epilogues): C[b] = epilogue(op(A[b]) @ op(B[b])).

Owns the workload (workload.py), the CPU templates gemm.blis (fp32, BLIS-style packed panels: blis.py, blis_tvm.py)
gemm.lowp (bfloat16/float16 inputs: lowp.py, lowp_tvm.py) and gemm.amx (bfloat16 on AMX tiles: amx.py,
amx_tvm.py), the GPU template gemm.triton (triton.py), its
torch.compile graph pattern (pattern.py) and `autotile tune gemm` / `tune bmm` (cli.py).
"""

from autotile.ops.family import Family, Template

P = "autotile.ops.gemm."
FAMILY = Family(
    op="gemm",
    workload=P + "workload:GemmWorkload",
    templates=(
        Template("gemm.blis", space=P + "blis:GemmSpace", lowering=P + "blis_tvm:schedule",
                 applies=P + "blis:applies", prepacked=P + "blis_tvm:prepacked_operands"),
        Template("gemm.amx", space=P + "amx:AmxGemmSpace", lowering=P + "amx_tvm:schedule", applies=P + "amx:applies",
                 preferred=P + "amx:preferred", prepacked=P + "amx_tvm:prepacked_operands", runtime_needs=("amx",)),
        Template("gemm.lowp", space=P + "lowp:LowpGemmSpace", lowering=P + "lowp_tvm:schedule",
                 applies=P + "lowp:applies", prepacked=P + "lowp_tvm:prepacked_operands"),
        Template("gemm.triton", space=P + "triton:TritonGemmSpace", lowering=P + "triton:program", backend="triton",
                 applies=P + "triton:applies"),
    ),
    shape_fields=("m", "n", "k", "batch"),
    cli=P + "cli:commands",
    pattern=P + "pattern:PATTERN",
    pattern_order=20,  # right after qgemm, whose matches would otherwise be taken as plain GEMMs
)
