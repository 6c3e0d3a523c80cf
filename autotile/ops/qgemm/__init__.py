"""Quantized GEMM: weight-only int2-int8 (grouped scales), W8A8 int8, fp8, block-scaled formats.

Owns the workload (workload.py) and the quantization numerics (quant.py), the CPU templates qgemm.weight_only
(weight_only.py, weight_only_tvm.py; fp8 too), qgemm.int8_amx (W8A8 on AMX tiles: int8_amx.py, int8_amx_tvm.py)
and qgemm.int8_vnni (W8A8 on VNNI: int8.py, int8_tvm.py; qgemm.int8_avx2 is the same kernel on vpmaddwd, for
CPUs without VNNI), the GPU template qgemm.triton (triton.py), its torch.compile graph pattern for torchao's
quantized linears (pattern.py) and `autotile tune qgemm` (cli.py).
"""

from autotile.ops.family import Family, Template

P = "autotile.ops.qgemm."
FAMILY = Family(
    op="qgemm",
    workload=P + "workload:QGemmWorkload",
    templates=(
        Template("qgemm.weight_only_amx", space=P + "weight_only_amx:WeightOnlyAmxSpace",
                 lowering=P + "weight_only_amx_tvm:schedule", applies=P + "weight_only_amx:applies",
                 preferred=P + "weight_only_amx:preferred", prepacked=P + "weight_only_amx_tvm:prepacked_operands",
                 runtime_needs=("amx",)),
        Template("qgemm.weight_only", space=P + "weight_only:QGemmSpace", lowering=P + "weight_only_tvm:schedule",
                 applies=P + "weight_only:applies", prepacked=P + "weight_only_tvm:prepacked_operands"),
        Template("qgemm.int8_amx", space=P + "int8_amx:Int8AmxSpace", lowering=P + "int8_amx_tvm:schedule",
                 applies=P + "int8_amx:applies", preferred=P + "int8_amx:preferred",
                 prepacked=P + "int8_amx_tvm:prepacked_operands", runtime_needs=("amx",)),
        Template("qgemm.int8_vnni", space=P + "int8:Int8GemmSpace", lowering=P + "int8_tvm:schedule",
                 applies=P + "int8:applies", prepacked=P + "int8_tvm:prepacked_operands"),
        Template("qgemm.int8_avx2", space=P + "int8:Int8Avx2Space", lowering=P + "int8_tvm:schedule",
                 applies=P + "int8:applies_without_vnni", prepacked=P + "int8_tvm:prepacked_operands"),
        Template("qgemm.triton", space=P + "triton:TritonQGemmSpace", lowering=P + "triton:program", backend="triton"),
    ),
    shape_fields=("m", "n", "k"),
    builds_on=("gemm",),
    cli=P + "cli:commands",
    pattern=P + "pattern:PATTERN",
    pattern_order=10,  # torchao's quantized linears are mm / addmm too: matched before gemm
)
