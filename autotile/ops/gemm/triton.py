"""The GPU GEMM template in Triton: tiled GEMM / batched GEMM with a fused epilogue.

One program computes a BLOCK_M x BLOCK_N tile of C[b] by walking K in BLOCK_K steps with `tl.dot`. Knobs:
GROUP_M swizzles the tile order so consecutive programs share panels of A in L2; SPLIT_K splits the K loop
over programs that meet in a fp32 workspace, the last to arrive (a per-tile counter) summing the partials
and running the epilogue; `persistent` launches one program per SM that loops over tiles; `tma` (sm_90+)
loads A and B through tensor descriptors (TMA) instead of pointer arithmetic. Shapes are compile-time
constants, so masks disappear where a dimension divides its block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotile.codegen.triton.epilogue import epilogue_lines, store_line
from autotile.codegen.triton.program import Program, Scratch, kernel_source
from autotile.codegen.triton.tiling import grouped_tile_lines
from autotile.ir.dtypes import dtype as lookup_dtype
from autotile.ops.gemm.workload import GemmWorkload
from autotile.ops.space import Config, ConfigSpace

DEFAULT_ARCH, DEFAULT_SMS = 90, 132  # an H100 SXM: the target when no GPU is present
SPLIT_K_WORKSPACE = 256 * 2**20  # bytes of fp32 partial tiles split-K may allocate


@dataclass(frozen=True)
class TritonGemmConfig(Config):
    block_m: int = 64
    block_n: int = 64
    block_k: int = 32
    group_m: int = 8
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    persistent: bool = False
    tma: bool = False


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def pow2_at_least(x: int, floor: int = 16) -> int:
    return max(floor, 1 << max(0, math.ceil(math.log2(max(x, 1)))))


def dot_precision(dtype_name: str) -> str:
    """fp32 GEMM means IEEE fp32 products; tf32 is a separate dtype a user opts into."""
    return {"float32": ', input_precision="ieee"', "tfloat32": ', input_precision="tf32"'}.get(dtype_name, "")


def interpreter_bf16_workaround(dtype_name: str) -> bool:
    """Triton 3.9's interpreter computes tl.dot on bf16 operands wrong (errors of 1e10 on randn inputs), so
    under TRITON_INTERPRET=1 bf16 tiles are widened to fp32 first: exact, and the products of bf16 values are
    exact in fp32. Compiled kernels keep bf16 tensor-core dots."""
    import os

    return dtype_name == "bfloat16" and os.environ.get("TRITON_INTERPRET") == "1"


def shared_limit(arch: int) -> int:
    from autotile.codegen.triton.aot import SHARED_LIMIT

    return SHARED_LIMIT.get(arch, SHARED_LIMIT[90])


def arch_and_sms(fingerprint: dict | None) -> tuple[int, int]:
    """Compute capability and SM count of a CUDA fingerprint; an H100 when there is none (AOT pruning)."""
    if fingerprint and fingerprint.get("kind") == "cuda":
        cap = str(fingerprint.get("capability", "sm_90")).removeprefix("sm_").rstrip("a")
        return int(cap), int(fingerprint.get("sms", DEFAULT_SMS))
    return DEFAULT_ARCH, DEFAULT_SMS


def applies(workload: GemmWorkload, fingerprint: dict | None = None) -> bool:
    """A as it is given (a layernorm prologue runs on the CPU template only)."""
    return not workload.prologue


class TritonGemmSpace(ConfigSpace):
    config_type = TritonGemmConfig
    template = "gemm.triton"

    def __init__(self, workload: GemmWorkload, arch: int = DEFAULT_ARCH, sms: int = DEFAULT_SMS):
        self.workload, self.arch, self.sms = workload, arch, sms
        self.itemsize = max(1, lookup_dtype(workload.dtype).bits // 8)
        self.domains = {
            "block_m": [16, 32, 64, 128, 256],
            "block_n": [16, 32, 64, 128, 256],
            "block_k": [16, 32, 64, 128],
            "group_m": [1, 4, 8, 16],
            "split_k": [1, 2, 4, 8, 16],
            "num_warps": [2, 4, 8],
            "num_stages": [1, 2, 3, 4, 5],
            "persistent": [False, True],
            "tma": [False, True],
        }

    @classmethod
    def for_device(cls, workload: GemmWorkload, fingerprint: dict | None = None) -> TritonGemmSpace:
        return cls(workload, *arch_and_sms(fingerprint))

    def tma_possible(self) -> bool:
        """TMA needs sm_90 and 16-byte aligned rows in both operands (descriptor strides)."""
        w = self.workload
        rows = (w.m if w.trans_a else w.k, w.k if w.trans_b else w.n)
        return self.arch >= 90 and all(r * self.itemsize % 16 == 0 for r in rows)

    def padded_outputs(self, c: TritonGemmConfig) -> int:
        w = self.workload
        return cdiv(w.m, c.block_m) * c.block_m * cdiv(w.n, c.block_n) * c.block_n * w.batch

    def valid(self, c: TritonGemmConfig) -> bool:
        threads = 32 * c.num_warps
        if c.block_m * c.block_n > 256 * threads or c.block_m * c.block_n < 4 * threads:
            return False  # fp32 accumulators beyond 256 registers a thread, or warps with nothing to do
        if c.tma and not self.tma_possible():
            return False
        if c.persistent and c.split_k > 1:
            return False
        if c.split_k > 1 and c.split_k * self.padded_outputs(c) * 4 > SPLIT_K_WORKSPACE:
            return False
        # Pipelined operand tiles must fit in shared memory (the AOT compile checks the exact figure).
        stages = max(c.num_stages - 1, 1)
        return (c.block_m + c.block_n) * c.block_k * self.itemsize * stages <= shared_limit(self.arch)

    def canonical(self, c: TritonGemmConfig) -> TritonGemmConfig:
        """Blocks no larger than the problem (padded to 16), and knobs that cannot change the program fixed."""
        w = self.workload
        bm = min(c.block_m, pow2_at_least(w.m))
        bn = min(c.block_n, pow2_at_least(w.n))
        bk = min(c.block_k, pow2_at_least(w.k))
        k_blocks = cdiv(w.k, bk)
        split = 1
        while split * 2 <= min(c.split_k, k_blocks):
            split *= 2
        tiles_m, tiles_n = cdiv(w.m, bm), cdiv(w.n, bn)
        group = c.group_m if tiles_m > 1 and tiles_n > 1 else 1
        stages = min(c.num_stages, max(1, cdiv(k_blocks, split)) + 1)
        return TritonGemmConfig(bm, bn, bk, group, split, c.num_warps, stages, c.persistent and split == 1, c.tma)

    def default(self) -> TritonGemmConfig:
        """Large tiles for 16-bit inputs (tensor cores), smaller ones for IEEE fp32 (FMA); 16-bit inputs get TMA
        loads and a persistent grid on sm_90."""
        if self.itemsize <= 2:
            c = TritonGemmConfig(128, 128, 64, 8, 1, 8, 3 if self.arch < 90 else 4)
        elif self.workload.dtype == "tfloat32":  # fp32 operands on tf32 tensor cores: half the 16-bit K tile
            c = TritonGemmConfig(128, 128, 32, 8, 1, 8, 3)
        else:
            c = TritonGemmConfig(64, 64, 32, 8, 1, 4, 3)
        if self.itemsize <= 2 and self.tma_possible():  # fp32 FMA dots spill when fed from TMA's swizzled tiles
            c = TritonGemmConfig(**{**c.to_dict(), "tma": True, "persistent": True})
        c = self.canonical(c)
        return c if self.valid(c) else self.canonical(TritonGemmConfig())

    def features(self, c: TritonGemmConfig) -> list[float]:
        w = self.workload
        log = math.log2
        tiles = cdiv(w.m, c.block_m) * cdiv(w.n, c.block_n) * w.batch
        programs = min(tiles, self.sms) if c.persistent else tiles * c.split_k
        waste = cdiv(w.m, c.block_m) * c.block_m * cdiv(w.n, c.block_n) * c.block_n / (w.m * w.n)
        return [
            log(w.m), log(w.n), log(w.k), log(w.batch), len(w.epilogue), float(w.trans_a), float(w.trans_b),
            self.itemsize, float(w.dtype == "tfloat32"), self.arch, log(c.block_m), log(c.block_n), log(c.block_k),
            c.group_m, log(c.split_k),
            c.num_warps, c.num_stages, c.persistent, c.tma, log(tiles), programs / self.sms,
            (programs % self.sms) / self.sms, waste, c.block_m * c.block_n / (32 * c.num_warps),
            (c.block_m + c.block_n) * c.block_k * self.itemsize * c.num_stages / 1024,
        ]


# --- lowering --------------------------------------------------------------------------------------------

def _operand_lines(w: GemmWorkload, c: TritonGemmConfig) -> tuple[list[str], list[str]]:
    """(setup before the tile loop, loads of `a` and `b` for K block `kb` inside it)."""
    even_k = w.k % c.block_k == 0
    if c.tma:
        setup, loads = [], []
        for name, rows, cols, trans, shared, pos in (
            ("A", "M", "K", w.trans_a, w.broadcast == "a", ("pm * BLOCK_M", "kb * BLOCK_K")),
            ("B", "K", "N", w.trans_b, w.broadcast == "b", ("kb * BLOCK_K", "pn * BLOCK_N")),
        ):
            shape = [cols, rows] if trans else [rows, cols]
            block = [{"M": "BLOCK_M", "N": "BLOCK_N", "K": "BLOCK_K"}[d] for d in shape]
            at = list(reversed(pos)) if trans else list(pos)
            if w.batch > 1 and not shared:
                setup.append(f"{name.lower()}_desc = tl.make_tensor_descriptor({name}_ptr, shape=[BATCH, {shape[0]}, "
                             f"{shape[1]}], strides=[{shape[0]} * {shape[1]}, {shape[1]}, 1], "
                             f"block_shape=[1, {block[0]}, {block[1]}])")
                load = f"{name.lower()}_desc.load([bi, {at[0]}, {at[1]}]).reshape({block[0]}, {block[1]})"
            else:
                setup.append(f"{name.lower()}_desc = tl.make_tensor_descriptor({name}_ptr, shape=[{shape[0]}, "
                             f"{shape[1]}], strides=[{shape[1]}, 1], block_shape=[{block[0]}, {block[1]}])")
                load = f"{name.lower()}_desc.load([{at[0]}, {at[1]}])"
            loads.append(f"{name.lower()} = " + (f"tl.trans({load})" if trans else load))
        return setup, loads
    # Pointer loads: rows and columns past M / N wrap (their results are never stored), so only K is masked.
    a_strides = ("1", "M") if w.trans_a else ("K", "1")  # (row stride, k stride)
    b_strides = ("1", "K") if w.trans_b else ("N", "1")  # (k stride, column stride)
    a_batch = "" if w.broadcast == "a" or w.batch == 1 else "bi.to(tl.int64) * M * K + "
    b_batch = "" if w.broadcast == "b" or w.batch == 1 else "bi.to(tl.int64) * K * N + "
    setup = []
    loads = [
        "rk = kb * BLOCK_K + tl.arange(0, BLOCK_K)",
        f"a_ptrs = A_ptr + {a_batch}ra[:, None] * {a_strides[0]} + rk[None, :] * {a_strides[1]}",
        f"b_ptrs = B_ptr + {b_batch}rk[:, None] * {b_strides[0]} + rb[None, :] * {b_strides[1]}",
        "a = tl.load(a_ptrs)" if even_k else "a = tl.load(a_ptrs, mask=rk[None, :] < K, other=0.0)",
        "b = tl.load(b_ptrs)" if even_k else "b = tl.load(b_ptrs, mask=rk[:, None] < K, other=0.0)",
    ]
    return setup, loads


def _tile_lines(w: GemmWorkload, c: TritonGemmConfig, dot_options: str) -> list[str]:
    """The body for one output tile `tile` (and K split `kid`)."""
    _, loads = _operand_lines(w, c)
    out_offsets = "bi.to(tl.int64) * M * N + rm[:, None] * N + rn[None, :]" if w.batch > 1 else \
        "rm[:, None] * N + rn[None, :]"
    lines = [
        "bi = tile // (TILES_M * TILES_N)",
        "t = tile % (TILES_M * TILES_N)",
        *grouped_tile_lines("t"),
        "rm = pm * BLOCK_M + tl.arange(0, BLOCK_M)",
        "rn = pn * BLOCK_N + tl.arange(0, BLOCK_N)",
    ]
    if not c.tma:
        lines += ["ra = tl.max_contiguous(tl.multiple_of(rm % M, BLOCK_M), BLOCK_M)",
                  "rb = tl.max_contiguous(tl.multiple_of(rn % N, BLOCK_N), BLOCK_N)"]
    k_range = "range(kid * K_PER_SPLIT, min((kid + 1) * K_PER_SPLIT, K_BLOCKS))" if c.split_k > 1 else \
        "range(0, K_BLOCKS)"
    lines += ["acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)", f"for kb in {k_range}:"]
    lines += ["    " + line for line in loads]
    if interpreter_bf16_workaround(w.dtype):
        lines += ["    a = a.to(tl.float32)", "    b = b.to(tl.float32)"]
        dot_options = ', input_precision="ieee"'
    lines += [f"    acc = tl.dot(a, b, acc{dot_options})"]
    finish = ["mask = (rm[:, None] < M) & (rn[None, :] < N)"]
    finish += epilogue_lines(w.epilogue, "acc", "rn", "rn < N", out_offsets, "mask")
    finish += [store_line(w.out_dtype, "acc", out_offsets, "mask")]
    if c.split_k == 1:
        return lines + finish
    # Split-K: publish this split's partial tile, then the last split to arrive sums them all.
    tile_elems = "BLOCK_M * BLOCK_N"
    local = "tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]"
    lines += [
        f"part = WS_ptr + (tile * SPLIT_K).to(tl.int64) * {tile_elems} + {local}",
        f"tl.store(part + kid * {tile_elems}, acc)",
        "tl.debug_barrier()  # every thread's partial is written before the counter (one thread) releases it",
        "arrived = tl.atomic_add(LOCKS_ptr + tile, 1, sem=\"acq_rel\")",
        "if arrived == SPLIT_K - 1:",
        "    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
        "    for s in range(0, SPLIT_K):",
        f"        acc += tl.load(part + s * {tile_elems}, cache_modifier=\".cg\")",
        "    tl.store(LOCKS_ptr + tile, 0)  # ready for the next launch",
    ]
    return lines + ["    " + line for line in finish]


def program(w: GemmWorkload, c: TritonGemmConfig) -> Program:
    name = "autotile_gemm"
    tensors = tuple(w.operand_shapes())
    scratch = ()
    tiles_m, tiles_n = cdiv(w.m, c.block_m), cdiv(w.n, c.block_n)
    tiles = tiles_m * tiles_n * w.batch
    k_blocks = cdiv(w.k, c.block_k)
    if c.split_k > 1:
        partials = tiles * c.split_k * c.block_m * c.block_n
        scratch = (Scratch("WS", partials, "float32"), Scratch("LOCKS", tiles, "int32"))
    setup, _ = _operand_lines(w, c)
    body = _tile_lines(w, c, dot_precision(w.dtype))
    constexprs = {"M": w.m, "N": w.n, "K": w.k, "BATCH": w.batch, "TILES_M": tiles_m, "TILES_N": tiles_n,
                  "K_BLOCKS": k_blocks, "K_PER_SPLIT": cdiv(k_blocks, c.split_k), "BLOCK_M": c.block_m,
                  "BLOCK_N": c.block_n, "BLOCK_K": c.block_k, "GROUP_M": c.group_m, "SPLIT_K": c.split_k}
    params = [f"{t}_ptr" for t in tensors] + [f"{s.name}_ptr" for s in scratch]
    params += ["NUM_PROGRAMS"] if c.persistent else []
    params += [f"{k}: tl.constexpr" for k in constexprs]
    lines = ["pid = tl.program_id(0)"] + (["kid = tl.program_id(1)"] if c.split_k > 1 else []) + setup
    if c.persistent:
        lines += ["for tile in range(pid, TILES_M * TILES_N * BATCH, NUM_PROGRAMS):"] + ["    " + x for x in body]
    else:
        lines += ["tile = pid"] + body
    dtypes = tuple(w.input_dtype(t) for t in tensors[:-1]) + (w.out_dtype,)
    return Program(kernel_source(name, params, lines), name, tensors, (), tuple(constexprs.items()),
                   (tiles, c.split_k) if c.split_k > 1 else (tiles,), c.num_warps, c.num_stages, dtypes, scratch,
                   c.persistent)


Space = TritonGemmSpace
