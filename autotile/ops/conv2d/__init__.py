"""2-D convolution (NCHW or NHWC, groups, fused epilogues).

Owns the workload (workload.py), the CPU templates conv2d.direct (register-blocked direct, implicit-GEMM,
pointwise and depthwise kernels: direct.py, direct_tvm.py) and conv2d.winograd (F(2x2,3x3) and F(4x4,3x3) for
3x3 stride-1 convolutions: winograd.py, winograd_tvm.py), the GPU template conv2d.triton (triton.py), its
torch.compile graph pattern (pattern.py) and `autotile tune conv2d` (cli.py).
"""

from autotile.ops.family import Family, Template

P = "autotile.ops.conv2d."
FAMILY = Family(
    op="conv2d",
    workload=P + "workload:Conv2dWorkload",
    templates=(
        Template("conv2d.direct", space=P + "direct:Conv2dSpace", lowering=P + "direct_tvm:schedule",
                 prepacked=P + "direct_tvm:prepacked_operands", formerly=("conv2d.cpu",)),
        Template("conv2d.winograd", space=P + "winograd:WinogradSpace", lowering=P + "winograd_tvm:lower",
                 applies=P + "winograd:applies", preferred=P + "winograd:preferred",
                 prepacked=P + "winograd_tvm:prepacked_operands", formerly=("conv2d.cpu",)),
        Template("conv2d.triton", space=P + "triton:TritonConv2dSpace", lowering=P + "triton:program",
                 backend="triton"),
    ),
    shape_fields=("n", "c", "h", "w", "k"),
    builds_on=("gemm",),
    cli=P + "cli:commands",
    pattern=P + "pattern:PATTERN",
)
