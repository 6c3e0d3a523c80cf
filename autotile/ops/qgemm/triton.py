"""The GPU quantized-GEMM template in Triton: C = epilogue(A @ dequantize(W)^T), A given in float32.

- W8A8 (int8 x int8): the program first finds the absmax of its BLOCK_M rows of A, then quantizes each A
  tile to int8 on the fly exactly as `ir.quant.quantize_rows_int8` does (IEEE division, round half to even),
  multiplies on int8 tensor cores with int32 accumulation, and scales by scale_a[i] * scale_w[j] after.
- Weight-only int2..int8: W is a little-endian bitstream per row (ir/quant.py); each B tile's codes are
  extracted from the bytes that hold them (two bytes where a code straddles), dequantized in registers
  ((code - zero) * scale of its group) and fed to an IEEE fp32 dot. W is never expanded in memory.
- fp8 (sm_89+): A and W are fp8 bit codes (e4m3 or e5m2) with float32 scales per tensor or per row, fed to
  fp8 tensor cores with fp32 accumulation; sm_80 has no fp8 dot and fails to compile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.codegen.triton.epilogue import epilogue_lines, store_line
from autotile.codegen.triton.program import TL_TYPES, Program, kernel_source
from autotile.codegen.triton.tiling import grouped_tile_lines
from autotile.errors import AutotileError
from autotile.ops.gemm.triton import arch_and_sms, cdiv, pow2_at_least, shared_limit
from autotile.ops.qgemm.workload import QGemmWorkload
from autotile.ops.space import Config, ConfigSpace

RNE = 12582912.0  # 1.5 * 2**23: (y + RNE) - RNE rounds |y| < 2**22 half to even in fp32


@dataclass(frozen=True)
class TritonQGemmConfig(Config):
    block_m: int = 64
    block_n: int = 64
    block_k: int = 64
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3


class TritonQGemmSpace(ConfigSpace):
    config_type = TritonQGemmConfig
    template = "qgemm.triton"

    def __init__(self, workload: QGemmWorkload, arch: int = 90, sms: int = 132):
        self.workload, self.arch, self.sms = workload, arch, sms
        self.domains = {
            "block_m": [16, 32, 64, 128, 256],
            "block_n": [16, 32, 64, 128, 256],
            "block_k": [16, 32, 64, 128, 256],
            "group_m": [1, 4, 8, 16],
            "num_warps": [2, 4, 8],
            "num_stages": [1, 2, 3, 4],
        }

    @classmethod
    def for_device(cls, workload: QGemmWorkload, fingerprint: dict | None = None) -> TritonQGemmSpace:
        arch, sms = arch_and_sms(fingerprint)
        if getattr(workload, "fp8", False) and arch < 89:
            raise AutotileError(f"{workload.key}: fp8 GEMMs need sm_89 or newer (fp8 tensor cores), this GPU is "
                                f"sm_{arch}")
        if getattr(workload, "outlier_threshold", 0):  # refused before any trial, not by every build
            raise AutotileError(f"{workload.key}: the LLM.int8 outlier decomposition is not in the Triton template "
                                "yet (the tvm backend has it); tune this workload without --outlier-threshold on a GPU")
        return cls(workload, arch, sms)

    @property
    def tensor_cores(self) -> bool:
        """W8A8 and fp8 multiply 1-byte operands on tensor cores; weight-only dequantizes for an FMA dot."""
        return self.workload.w8a8 or getattr(self.workload, "fp8", False)

    def valid(self, c: TritonQGemmConfig) -> bool:
        threads = 32 * c.num_warps
        tile = c.block_m * c.block_n / threads
        if tile > (128 if self.tensor_cores else 64) or c.block_m * c.block_n < 4 * threads:
            return False
        if self.workload.w8a8 and (c.block_m * c.block_k + c.block_m * c.block_n) / threads > 64:
            return False  # the fp32 A tile being quantized and the int32 accumulators share the registers
        if not self.tensor_cores and c.block_k * c.block_n / threads > 64:
            return False  # the dequantized fp32 B tile lives in registers
        item_a, item_b = (4 if self.workload.w8a8 else 1, 1) if self.tensor_cores else (4, 4)
        smem = (c.block_m * item_a + c.block_n * item_b) * c.block_k * max(c.num_stages - 1, 1)
        return smem <= shared_limit(self.arch)

    def canonical(self, c: TritonQGemmConfig) -> TritonQGemmConfig:
        w = self.workload
        bm, bn, bk = (min(c.block_m, pow2_at_least(w.m)), min(c.block_n, pow2_at_least(w.n)),
                      min(c.block_k, pow2_at_least(w.k)))
        group = c.group_m if cdiv(w.m, bm) > 1 and cdiv(w.n, bn) > 1 else 1
        return TritonQGemmConfig(bm, bn, bk, group, c.num_warps, min(c.num_stages, cdiv(w.k, bk) + 1))

    def default(self) -> TritonQGemmConfig:
        if self.workload.w8a8:
            c = TritonQGemmConfig(128, 64, 32, 8, 8, 3)
        elif self.tensor_cores:  # fp8
            c = TritonQGemmConfig(128, 128, 64, 8, 8, 3)
        else:
            c = TritonQGemmConfig(32, 64, 32, 8, 4, 3)
        c = self.canonical(c)
        return c if self.valid(c) else self.canonical(TritonQGemmConfig(32, 32, 32, 8, 4, 2))

    def features(self, c: TritonQGemmConfig) -> list[float]:
        w = self.workload
        log = math.log2
        tiles = cdiv(w.m, c.block_m) * cdiv(w.n, c.block_n)
        return [log(w.m), log(w.n), log(w.k), w.bits, w.w8a8, w.asymmetric, log(w.group_size or w.k), self.arch,
                log(c.block_m), log(c.block_n), log(c.block_k), c.group_m, c.num_warps, c.num_stages, log(tiles),
                tiles / self.sms, c.block_m * c.block_n / (32 * c.num_warps)]


# --- lowering --------------------------------------------------------------------------------------------

def _tile_order() -> list[str]:
    return [
        "pid = tl.program_id(0)",
        *grouped_tile_lines("pid"),
        "rm = pm * BLOCK_M + tl.arange(0, BLOCK_M)",
        "rn = pn * BLOCK_N + tl.arange(0, BLOCK_N)",
        "ra = rm % M  # rows and columns past the edge wrap; they are never stored",
        "rb = rn % N",
    ]


def _w8a8_lines() -> list[str]:
    return [
        "amax = tl.zeros((BLOCK_M,), dtype=tl.float32)",
        "for k0 in range(0, K, BLOCK_K):",
        "    rk = k0 + tl.arange(0, BLOCK_K)",
        "    a = tl.load(A_ptr + ra[:, None] * K + rk[None, :], mask=rk[None, :] < K, other=0.0)",
        "    amax = tl.maximum(amax, tl.max(tl.abs(a), 1))",
        "scale_a = tl.math.div_rn(amax, 127.0)",
        "scale_a = tl.where(scale_a > 0, scale_a, 1.0)",
        "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)",
        "for k0 in range(0, K, BLOCK_K):",
        "    rk = k0 + tl.arange(0, BLOCK_K)",
        "    a = tl.load(A_ptr + ra[:, None] * K + rk[None, :], mask=rk[None, :] < K, other=0.0)",
        f"    q = (tl.math.div_rn(a, scale_a[:, None]) + {RNE}) - {RNE}",
        "    q = tl.minimum(tl.maximum(q, -127.0), 127.0).to(tl.int8)",
        "    w = tl.load(W_ptr + rb[None, :] * K + rk[:, None], mask=rk[:, None] < K, other=0)",
        "    acc = tl.dot(q, w, acc, out_dtype=tl.int32)",
        "acc = acc.to(tl.float32) * scale_a[:, None] * tl.load(scales_ptr + rb)[None, :]",
    ]


def _weight_only_lines(w: QGemmWorkload) -> list[str]:
    bits = w.bits
    row_bytes = -(-w.k * bits // 8)
    code = [
        f"bit = rk * {bits}",
        f"at = W_ptr + rb[None, :] * {row_bytes} + (bit >> 3)[:, None]",
        "word = tl.load(at, mask=rk[:, None] < K, other=0).to(tl.int32)",
    ]
    if 8 % bits:  # codes may straddle two bytes
        code.append(f"word = word | (tl.load(at + 1, mask=((bit >> 3) + 1 < {row_bytes})[:, None], "
                    "other=0).to(tl.int32) << 8)")
    code.append(f"codes = (word >> (bit & 7)[:, None]) & {(1 << bits) - 1}")
    group = w.group_size or w.k
    meta = f"rb[None, :] * {w.groups} + (rk // {group})[:, None]"
    in_k = "mask=rk[:, None] < K, other=0"  # past K the group index would leave the row
    zero = f"tl.load(zeros_ptr + {meta}, {in_k}).to(tl.float32)" if w.asymmetric else f"{1 << (bits - 1)}.0"
    lines = ["acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)", "for k0 in range(0, K, BLOCK_K):",
             "    rk = k0 + tl.arange(0, BLOCK_K)"]
    lines += ["    " + line for line in code]
    lines += [
        f"    b = (codes.to(tl.float32) - {zero}) * tl.load(scales_ptr + {meta}, {in_k})",
        "    b = tl.where(rk[:, None] < K, b, 0.0)",
        "    a = tl.load(A_ptr + ra[:, None] * K + rk[None, :], mask=rk[None, :] < K, other=0.0)",
        '    acc = tl.dot(a, b, acc, input_precision="ieee")',
    ]
    return lines


def _assemble(name: str, tensors, dtypes, shape: tuple[int, int, int], c: TritonQGemmConfig, body: list[str],
              epilogue) -> Program:
    m, n, k = shape
    constexprs = {"M": m, "N": n, "K": k, "TILES_M": cdiv(m, c.block_m), "TILES_N": cdiv(n, c.block_n),
                  "BLOCK_M": c.block_m, "BLOCK_N": c.block_n, "BLOCK_K": c.block_k, "GROUP_M": c.group_m}
    out_offsets = "rm[:, None] * N + rn[None, :]"
    body = body + ["mask = (rm[:, None] < M) & (rn[None, :] < N)"]
    body += epilogue_lines(epilogue, "acc", "rn", "rn < N", out_offsets, "mask")
    body += [store_line("float32", "acc", out_offsets, "mask")]
    params = [f"{t}_ptr" for t in tensors] + [f"{k}: tl.constexpr" for k in constexprs]
    return Program(kernel_source(name, params, _tile_order() + body), name, tuple(tensors), (),
                   tuple(constexprs.items()), (cdiv(m, c.block_m) * cdiv(n, c.block_n),), c.num_warps,
                   c.num_stages, tuple(dtypes))


def program(w: QGemmWorkload, c: TritonQGemmConfig) -> Program:
    if getattr(w, "outlier_threshold", 0):
        raise AutotileError(f"{w.key}: the LLM.int8 outlier decomposition is not in the Triton template yet")
    if getattr(w, "fp8", False):
        return fp8_program(w.m, w.n, w.k, w.act_dtype, c, w.epilogue, per_row=w.fp8_scales == "row",
                           weight_format=w.weight_dtype)
    tensors = tuple(w.operand_shapes())
    dtypes = tuple(w.input_dtype(t) for t in tensors[:-1]) + ("float32",)
    body = _w8a8_lines() if w.w8a8 else _weight_only_lines(w)
    return _assemble("autotile_qgemm", tensors, dtypes, (w.m, w.n, w.k), c, body, w.epilogue)


def fp8_program(m: int, n: int, k: int, fmt: str, c: TritonQGemmConfig, epilogue=(), per_row: bool = False,
                weight_format: str | None = None) -> Program:
    """fp8 x fp8 GEMM: C = epilogue((A @ W^T) * scale_a * scale_w), scales per tensor (shape (1,)) or per row
    of A and of W. Operands as QGemmWorkload orders them: A (M, K) and W (N, K) as fp8 bit codes (uint8,
    reinterpreted in the kernel), scale_a, scales (float32), [bias], [residual], C."""
    wfmt = weight_format or fmt
    scale_a = "tl.load(scale_a_ptr + ra)[:, None]" if per_row else "tl.load(scale_a_ptr)"
    scale_w = "tl.load(scales_ptr + rb)[None, :]" if per_row else "tl.load(scales_ptr)"
    body = [
        "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
        "for k0 in range(0, K, BLOCK_K):",
        "    rk = k0 + tl.arange(0, BLOCK_K)",
        "    a = tl.load(A_ptr + ra[:, None] * K + rk[None, :], mask=rk[None, :] < K, other=0)",
        "    w = tl.load(W_ptr + rb[None, :] * K + rk[:, None], mask=rk[:, None] < K, other=0)",
        f"    acc = tl.dot(a.to({TL_TYPES[fmt]}, bitcast=True), w.to({TL_TYPES[wfmt]}, bitcast=True), acc)",
        f"acc = acc * {scale_a} * {scale_w}",
    ]
    tensors = ["A", "scale_a", "W", "scales"] + [op for op in ("bias", "residual") if op in epilogue] + ["C"]
    dtypes = ["uint8", "float32", "uint8"] + ["float32"] * (len(tensors) - 3)
    return _assemble("autotile_fp8_gemm", tensors, dtypes, (m, n, k), c, body, epilogue)


Space = TritonQGemmSpace
