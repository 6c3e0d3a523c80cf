"""GPU quantized-GEMM benchmark: autotile's tuned Triton W8A8, int4 weight-only and fp8 GEMMs against torch's
library kernels.

    .venv/bin/python bench/gpu_quant.py [--shapes MxNxK,...] [--trials 64] [--quick] [--json out.json]

Peers: W8A8 -> per-row int8 quantization of A in torch + torch._int_mm (cuBLASLt int8; it takes only
M > 16, so smaller M is padded to 32 zero rows, column torch_int_mm_pad32) + scaling; int4
weight-only (group 128) -> unpack and dequantize in torch on the GPU, then cuBLAS fp32 matmul; fp8 e4m3
(sm_89+, per-tensor scales) -> torch._scaled_mm on the same codes and scales. Ratios are peer time / autotile time.
Exits with a message without a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import gpu_common  # noqa: E402

SHAPES = "16x4096x4096,256x4096x4096,4096x4096x4096"
# torch._int_mm on CUDA takes only M > 16 rows ("self.size(0) needs to be greater than 16"); smaller M is
# padded to INT_MM_PAD_ROWS rows of zeros, and the padding is timed with it.
INT_MM_MIN_ROWS, INT_MM_PAD_ROWS = 16, 32


def bench_shape(spec: str, args, torch) -> list[dict]:
    from autotile.ops.qgemm.quant import quantize_rows_int8
    from autotile.ops.qgemm.workload import QGemmWorkload

    rows = []
    m, n, k = (int(x) for x in spec.split("x"))
    # W8A8
    w8 = QGemmWorkload(m, n, k, "int8", "int8")
    kernel, result = gpu_common.tuned_kernel(w8, args.trials)
    a, w, scales = gpu_common.cuda_inputs(w8)
    out = torch.empty(m, n, device="cuda")

    def int_mm(a=a, w=w, scales=scales):
        qa, sa = quantize_rows_int8(a)
        if m <= INT_MM_MIN_ROWS:  # cuBLASLt's int8 GEMM refuses M <= 16: zero rows in, their results dropped
            qa = torch.nn.functional.pad(qa, (0, 0, 0, INT_MM_PAD_ROWS - m))
        return torch._int_mm(qa, w.t())[:m].float() * sa[:, None] * scales[None, :]

    peer = "torch_int_mm_us" if m > INT_MM_MIN_ROWS else f"torch_int_mm_pad{INT_MM_PAD_ROWS}_us"
    rows.append({"workload": w8.key, "config": result.config,
                 "autotile_us": gpu_common.cuda_us(lambda: kernel(a, w, scales, out=out)),
                 peer: gpu_common.cuda_us(int_mm)})
    # int4 weight-only, group 128
    w4 = QGemmWorkload(m, n, k, "int4", group_size=128)
    kernel4, result4 = gpu_common.tuned_kernel(w4, args.trials)
    a4, packed, scales4 = gpu_common.cuda_inputs(w4)
    group_scales = scales4.repeat_interleave(128, dim=1)[:, :k]

    def dequant_mm():  # torch on the GPU: unpack the nibbles (low first), dequantize, cuBLAS fp32
        codes = torch.stack((packed & 15, packed >> 4), dim=-1).reshape(n, -1)[:, :k]
        return a4 @ ((codes.float() - 8.0) * group_scales).t()

    rows.append({"workload": w4.key, "config": result4.config,
                 "autotile_us": gpu_common.cuda_us(lambda: kernel4(a4, packed, scales4, out=out)),
                 "torch_dequant_then_cublas_us": gpu_common.cuda_us(dequant_mm)})
    # fp8 e4m3 with per-tensor scales, sm_89+
    if torch.cuda.get_device_capability() >= (8, 9):
        f8 = QGemmWorkload(m, n, k, "float8_e4m3", "float8_e4m3")
        kernel8, result8 = gpu_common.tuned_kernel(f8, args.trials)
        codes_a, scale_a, codes_w, scale_w = gpu_common.cuda_inputs(f8)
        a8, w8t = (x.view(torch.float8_e4m3fn) for x in (codes_a, codes_w))

        def scaled_mm():  # cuBLASLt fp8, the same codes and scales
            return torch._scaled_mm(a8, w8t.t(), scale_a=scale_a, scale_b=scale_w, out_dtype=torch.float32)

        rows.append({"workload": f8.key, "config": result8.config,
                     "autotile_us": gpu_common.cuda_us(lambda: kernel8(codes_a, scale_a, codes_w, scale_w, out=out)),
                     "torch_scaled_mm_us": gpu_common.cuda_us(scaled_mm)})
    return rows


def main():
    gpu_common.run("bench/gpu_quant.py", __doc__, SHAPES, "Quantized GEMM (time ratios peer/autotile)", bench_shape)


if __name__ == "__main__":
    main()
