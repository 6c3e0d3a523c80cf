"""AMX tile kernels in TVM: the tile GEMM as a tensor intrinsic, the per-task tile config, and an emulation.

AMX has eight tile registers (tmm0-7) of up to 16 rows x 64 bytes. `tdpbf16ps d, a, b` adds to the float32
tile d (16 x 16) the products of a (16 rows x 32 bfloat16) and b (16 rows of 16 columns x 2 K values, the
pairs `vdpbf16ps` reads too); `tdpbssd` / `tdpbusd` do the same for int8 (b: 16 columns x 4 K values, int32 d).

The kernels use LLVM's register-numbered intrinsics (`llvm.x86.tileloadd64(i8 tile, ptr, i64 stride)`,
`tdpbf16ps(i8, i8, i8)`, ...) through `call_llvm_intrin`, tile numbers as constant uint8: the `.internal` forms
carry LLVM's `x86_amx` type, which TIR cannot hold across statements. A tile instruction faults unless the
thread has loaded a tile config (`ldtilecfg`), so every parallel task of a kernel loads one before its first
tile instruction and releases the tiles after its last (`with_tile_config`). Every kernel uses the same config:
palette 1, all eight tiles 16 rows x 64 bytes; operands are padded to whole tiles.

Without AMX (the AMD machines), `emulate=True` lowers every tile instruction to a call into an emulation
written in LLVM IR (EMULATION_LLVM_IR): the same tile numbers, strides and config, tile registers per thread,
checks that trap where the hardware would fault (no config loaded, mismatched tile shapes). The packing,
addressing and loop structure of a kernel are then run and checked on any x86 CPU; the real instructions are
checked by compiling for `sapphirerapids` and reading the assembly, and by running on a CPU with amx_tile.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import tvm
from tvm import tirx as tir

TILE_ROWS = 16
ROW_BYTES = 64
TILES = 8


@dataclass(frozen=True)
class TileDot:
    """One tile dot product: its instruction, operand and accumulator dtypes, and K values per 4-byte group."""

    instruction: str
    a_dtype: str  # A's elements as the kernel stores them (bfloat16 as its uint16 bits)
    b_dtype: str
    acc_dtype: str
    group: int  # K values in one 32-bit group of a B row: 2 bfloat16, 4 int8

    @property
    def k_step(self) -> int:
        """K values one A tile row holds (64 bytes)."""
        return ROW_BYTES // 4 * self.group


DOTS = {
    "bf16": TileDot("tdpbf16ps", "uint16", "uint16", "float32", 2),
    "s8s8": TileDot("tdpbssd", "int8", "int8", "int32", 4),
    "u8s8": TileDot("tdpbusd", "uint8", "int8", "int32", 4),
}


def tile_budget_ok(tiles_m: int, tiles_n: int) -> bool:
    """tiles_m x tiles_n accumulators plus tiles_m A tiles and tiles_n B tiles fit in the eight registers."""
    return tiles_m >= 1 and tiles_n >= 1 and tiles_m * tiles_n + tiles_m + tiles_n <= TILES


# --- the tile config and the emulation, linked into a module as LLVM IR ----------------------------------------

BEGIN, END = "autotile_amx_begin", "autotile_amx_end"
_CONFIG = bytes([1] + [0] * 15 + [ROW_BYTES, 0] * TILES + [0] * 16 + [TILE_ROWS] * TILES + [0] * 8)
_CONFIG_IR = ", ".join(f"i8 {b}" for b in _CONFIG)


def _config_ir(emulate: bool) -> str:
    load, release = ("@autotile_emu_ldtilecfg", "@autotile_emu_tilerelease") if emulate else (
        "@llvm.x86.ldtilecfg", "@llvm.x86.tilerelease")
    declarations = "" if emulate else "declare void @llvm.x86.ldtilecfg(ptr)\ndeclare void @llvm.x86.tilerelease()\n"
    return f"""
@autotile_amx_config = linkonce_odr hidden unnamed_addr constant [64 x i8] [{_CONFIG_IR}], align 64
define linkonce_odr hidden void @{BEGIN}() #2 {{
  call void {load}(ptr @autotile_amx_config)
  ret void
}}
define linkonce_odr hidden void @{END}() #2 {{
  call void {release}()
  ret void
}}
{declarations}attributes #2 = {{ alwaysinline nounwind }}
"""


def _loop(name: str, bound: str, body: str) -> str:
    """An LLVM IR loop `for %name in [0, bound)` (i64) around body, whose last block falls through."""
    return f"""
  store i64 0, ptr %{name}.addr
  br label %{name}.cond
{name}.cond:
  %{name} = load i64, ptr %{name}.addr
  %{name}.more = icmp ult i64 %{name}, {bound}
  br i1 %{name}.more, label %{name}.body, label %{name}.end
{name}.body:{body}
  %{name}.next = add i64 %{name}, 1
  store i64 %{name}.next, ptr %{name}.addr
  br label %{name}.cond
{name}.end:"""


def _dot_ir(name: str, dot: TileDot) -> str:
    """d += a . b over the configured shapes; traps on shapes the instruction rejects."""
    floats = dot.acc_dtype == "float32"
    elem, acc, add, mul = ("i16", "float", "fadd", "fmul") if floats else ("i8", "i32", "add", "mul")

    def widened(v: str, signed: bool) -> str:
        if floats:  # bfloat16 bits -> float32: the bits shifted into the upper half, exact
            return (f"  %{v}.w = zext i16 %{v}.h to i32\n  %{v}.s = shl i32 %{v}.w, 16\n"
                    f"  %{v}.x = bitcast i32 %{v}.s to float")
        return f"  %{v}.x = {'sext' if signed else 'zext'} i8 %{v}.h to i32"

    groups = "".join(f"""
  %a{g}.i = add i64 %kg, {g}
  %b{g}.i = add i64 %ng, {g}
  %a{g}.p = getelementptr {elem}, ptr %arow, i64 %a{g}.i
  %a{g}.h = load {elem}, ptr %a{g}.p
  %b{g}.p = getelementptr {elem}, ptr %brow, i64 %b{g}.i
  %b{g}.h = load {elem}, ptr %b{g}.p
{widened(f"a{g}", dot.a_dtype != "uint8")}
{widened(f"b{g}", True)}
  %p{g} = {mul} {acc} %a{g}.x, %b{g}.x""" for g in range(dot.group))
    setup = f"  %kg = mul i64 %k, {dot.group}\n  %ng = mul i64 %n, {dot.group}"
    total = "\n".join(  # p0 + p1 (+ p2 + p3), in order
        f"  %{'sum' if g == dot.group - 1 else f's{g}'} = {add} {acc} {'%p0' if g == 1 else f'%s{g - 1}'}, %p{g}"
        for g in range(1, dot.group))
    inner = f"""
{setup}
  %arow.off = mul i64 %m, {ROW_BYTES}
  %arow = getelementptr i8, ptr %ta, i64 %arow.off
  %brow.off = mul i64 %k, {ROW_BYTES}
  %brow = getelementptr i8, ptr %tb, i64 %brow.off{groups}
{total}
  %acc.old = load {acc}, ptr %acc.addr
  %acc.new = {add} {acc} %acc.old, %sum
  store {acc} %acc.new, ptr %acc.addr"""
    per_n = f"""
  %c.off = mul i64 %m, {ROW_BYTES}
  %c.col = mul i64 %n, 4
  %c.i = add i64 %c.off, %c.col
  %c.p = getelementptr i8, ptr %td, i64 %c.i
  %c.v = load {acc}, ptr %c.p
  store {acc} %c.v, ptr %acc.addr{_loop("k", "%K", inner)}
  %c.res = load {acc}, ptr %acc.addr
  store {acc} %c.res, ptr %c.p"""
    return f"""
define linkonce_odr hidden void @autotile_emu_{name}(i8 %d, i8 %a, i8 %b) {{
entry:
  %m.addr = alloca i64
  %n.addr = alloca i64
  %k.addr = alloca i64
  %acc.addr = alloca {acc}
  call void @autotile_emu_configured()
  %M = call i64 @autotile_emu_rows(i8 %d)
  %Ma = call i64 @autotile_emu_rows(i8 %a)
  %Kb = call i64 @autotile_emu_rows(i8 %b)
  %Cd = call i64 @autotile_emu_colsb(i8 %d)
  %Ca = call i64 @autotile_emu_colsb(i8 %a)
  %Cb = call i64 @autotile_emu_colsb(i8 %b)
  %ok1 = icmp eq i64 %M, %Ma
  %ok2 = icmp eq i64 %Cd, %Cb
  %Ka = udiv i64 %Ca, 4
  %ok3 = icmp eq i64 %Ka, %Kb
  %ok12 = and i1 %ok1, %ok2
  %ok = and i1 %ok12, %ok3
  call void @autotile_emu_check(i1 %ok)
  %N = udiv i64 %Cd, 4
  %K = add i64 %Ka, 0
  %td = call ptr @autotile_emu_tile(i8 %d)
  %ta = call ptr @autotile_emu_tile(i8 %a)
  %tb = call ptr @autotile_emu_tile(i8 %b){_loop("m", "%M", _loop("n", "%N", per_n))}
  ret void
}}"""


def _config_field_ir(field: str, offset: int, llvm_type: str) -> str:
    """A tile's field of the config the calling thread loaded: rows (a byte at 48 + t) or colsb (16 bits at
    16 + 2t)."""
    width = 1 if llvm_type == "i8" else 2
    return f"""define linkonce_odr hidden i64 @autotile_emu_{field}(i8 %t) {{
  %s = call i64 @autotile_emu_slot()
  %cfg = call ptr @autotile_emu_cfg_of(i64 %s)
  %ti = zext i8 %t to i64
  %at = mul i64 %ti, {width}
  %i = add i64 %at, {offset}
  %p = getelementptr i8, ptr %cfg, i64 %i
  %v = load {llvm_type}, ptr %p
  %v64 = zext {llvm_type} %v to i64
  ret i64 %v64
}}"""


def _row_copy_ir(instruction: str, memory: str, into_tile: bool) -> str:
    """tileloadd64 / tilestored64: the configured rows, colsb bytes each, between the tile and memory rows
    `stride` bytes apart."""
    to, source = ("%tile", f"%{memory}") if into_tile else (f"%{memory}", "%tile")
    body = f"""
  %mem.off = mul i64 %r, %stride
  %tile.off = mul i64 %r, 64
  %to = getelementptr i8, ptr {to}, i64 {"%tile.off" if into_tile else "%mem.off"}
  %from = getelementptr i8, ptr {source}, i64 {"%mem.off" if into_tile else "%tile.off"}
  call void @llvm.memcpy.p0.p0.i64(ptr %to, ptr %from, i64 %C, i1 false)"""
    return f"""
define linkonce_odr hidden void @autotile_emu_{instruction}(i8 %t, ptr %{memory}, i64 %stride) {{
entry:
  %r.addr = alloca i64
  call void @autotile_emu_configured()
  %tile = call ptr @autotile_emu_tile(i8 %t)
  %R = call i64 @autotile_emu_rows(i8 %t)
  %C = call i64 @autotile_emu_colsb(i8 %t){_loop("r", "%R", body)}
  ret void
}}"""


SLOTS = 16  # threads that may hold emulated tiles at once (a thread claims a slot when it loads a config)

EMULATION_LLVM_IR = (f"""
@autotile_emu_owner = linkonce_odr hidden global [{SLOTS} x i64] zeroinitializer, align 64
@autotile_emu_cfg = linkonce_odr hidden global [{SLOTS * 64} x i8] zeroinitializer, align 64
@autotile_emu_tiles = linkonce_odr hidden global [{SLOTS * TILES * 1024} x i8] zeroinitializer, align 64
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)
declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)
declare void @llvm.trap()
declare i64 @pthread_self()

define linkonce_odr hidden void @autotile_emu_check(i1 %ok) {{
entry:
  br i1 %ok, label %fine, label %fault
fault:
  call void @llvm.trap()
  unreachable
fine:
  ret void
}}
define linkonce_odr hidden i64 @autotile_emu_find(i64 %who) {{
entry:
  %s.addr = alloca i64
  %found = alloca i64
  store i64 {SLOTS}, ptr %found{_loop("s", str(SLOTS), '''
  %o.p = getelementptr i64, ptr @autotile_emu_owner, i64 %s
  %o = load atomic i64, ptr %o.p acquire, align 8
  %mine = icmp eq i64 %o, %who
  %f.old = load i64, ptr %found
  %f.new = select i1 %mine, i64 %s, i64 %f.old
  store i64 %f.new, ptr %found''')}
  %r = load i64, ptr %found
  ret i64 %r
}}
define linkonce_odr hidden i64 @autotile_emu_slot() {{
  %self = call i64 @pthread_self()
  %s = call i64 @autotile_emu_find(i64 %self)
  %ok = icmp ult i64 %s, {SLOTS}
  call void @autotile_emu_check(i1 %ok)
  ret i64 %s
}}
define linkonce_odr hidden ptr @autotile_emu_cfg_of(i64 %s) {{
  %off = mul i64 %s, 64
  %p = getelementptr i8, ptr @autotile_emu_cfg, i64 %off
  ret ptr %p
}}
define linkonce_odr hidden void @autotile_emu_configured() {{
  %s = call i64 @autotile_emu_slot()
  %cfg = call ptr @autotile_emu_cfg_of(i64 %s)
  %p = load i8, ptr %cfg
  %ok = icmp eq i8 %p, 1
  call void @autotile_emu_check(i1 %ok)
  ret void
}}
define linkonce_odr hidden ptr @autotile_emu_tile(i8 %t) {{
  %ti = zext i8 %t to i64
  %ok = icmp ult i64 %ti, {TILES}
  call void @autotile_emu_check(i1 %ok)
  %s = call i64 @autotile_emu_slot()
  %base = mul i64 %s, {TILES * 1024}
  %in = mul i64 %ti, 1024
  %off = add i64 %base, %in
  %p = getelementptr i8, ptr @autotile_emu_tiles, i64 %off
  ret ptr %p
}}
{_config_field_ir("rows", 48, "i8")}
{_config_field_ir("colsb", 16, "i16")}
define linkonce_odr hidden void @autotile_emu_ldtilecfg(ptr %config) {{
entry:
  %s.addr = alloca i64
  %self = call i64 @pthread_self()
  %held = call i64 @autotile_emu_find(i64 %self)
  %has = icmp ult i64 %held, {SLOTS}
  br i1 %has, label %load, label %claim
claim:{_loop("s", str(SLOTS), '''
  %o.p = getelementptr i64, ptr @autotile_emu_owner, i64 %s
  %x = cmpxchg ptr %o.p, i64 0, i64 %self acq_rel acquire
  %won = extractvalue { i64, i1 } %x, 1
  br i1 %won, label %load, label %s.lost
s.lost:''')}
  call void @llvm.trap()
  unreachable
load:
  %slot = call i64 @autotile_emu_slot()
  %cfg = call ptr @autotile_emu_cfg_of(i64 %slot)
  call void @llvm.memcpy.p0.p0.i64(ptr %cfg, ptr %config, i64 64, i1 false)
  ret void
}}
define linkonce_odr hidden void @autotile_emu_tilerelease() {{
  %s = call i64 @autotile_emu_slot()
  %cfg = call ptr @autotile_emu_cfg_of(i64 %s)
  call void @llvm.memset.p0.i64(ptr %cfg, i8 0, i64 64, i1 false)
  %t0 = call ptr @autotile_emu_tile(i8 0)
  call void @llvm.memset.p0.i64(ptr %t0, i8 0, i64 {TILES * 1024}, i1 false)
  %o.p = getelementptr i64, ptr @autotile_emu_owner, i64 %s
  store atomic i64 0, ptr %o.p release, align 8
  ret void
}}
define linkonce_odr hidden void @autotile_emu_tilezero(i8 %t) {{
  call void @autotile_emu_configured()
  %tile = call ptr @autotile_emu_tile(i8 %t)
  call void @llvm.memset.p0.i64(ptr %tile, i8 0, i64 1024, i1 false)
  ret void
}}
""" + _row_copy_ir("tileloadd64", "src", into_tile=True) + _row_copy_ir("tilestored64", "dst", into_tile=False)
    + "".join(_dot_ir(dot.instruction, dot) for dot in DOTS.values()))


def llvm_ir(emulate: bool) -> str:
    """What a tile kernel links in (with `pragma_import_llvm`): the config helpers, and the emulation."""
    return _config_ir(emulate) + (EMULATION_LLVM_IR if emulate else "")


# --- tile instructions as TIR calls -----------------------------------------------------------------------------

def tile_call(instruction: str, *args, emulate: bool):
    """A tile instruction: LLVM's intrinsic, or its emulation. Tile numbers are Python ints (immediates)."""
    args = [tir.const(a, "uint8") if isinstance(a, int) else a for a in args]
    if emulate:
        return tir.call_extern("void", f"autotile_emu_{instruction}", *args)
    return tir.call_llvm_intrin("void", f"llvm.x86.{instruction}", *args)


TILE_INSTRUCTIONS = ("tileloadd64", "tilestored64", "tilezero", *(dot.instruction for dot in DOTS.values()))


@cache
def _tile_intrinsic_ids() -> frozenset[int]:
    from tvm.target import codegen

    return frozenset(codegen.llvm_lookup_intrinsic_id(f"llvm.x86.{name}") for name in TILE_INSTRUCTIONS)


def _is_tile_call(node) -> bool:
    """A tile instruction (an LLVM intrinsic, named by its id, or its emulation) or a config call."""
    if not isinstance(node, tvm.ir.expr.Call) or not node.args:
        return False
    first = node.args[0]
    if getattr(node.op, "name", "") == "tirx.call_llvm_intrin":
        return int(first.value) in _tile_intrinsic_ids()
    name = str(getattr(first, "value", ""))
    return name.startswith("autotile_emu_") or name in (BEGIN, END)


def _children(stmt) -> list:
    """The statements directly inside stmt (this TVM has no Python statement visitor)."""
    from tvm import s_tir

    if isinstance(stmt, tir.SeqStmt):
        return list(stmt.seq)
    if isinstance(stmt, s_tir.SBlockRealize):
        return [stmt.block]
    if isinstance(stmt, s_tir.SBlock):
        return [s for s in (stmt.init, stmt.body) if s is not None]
    if isinstance(stmt, tir.IfThenElse):
        return [s for s in (stmt.then_case, stmt.else_case) if s is not None]
    body = getattr(stmt, "body", None)
    return [body] if isinstance(body, tir.Stmt) else []


def uses_tiles(stmt) -> bool:
    if isinstance(stmt, tir.Evaluate):
        return _is_tile_call(stmt.value)
    return any(uses_tiles(child) for child in _children(stmt))


def _with_body(stmt, body):
    from tvm import s_tir

    if isinstance(stmt, tir.For):
        return tir.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding, stmt.annotations)
    if isinstance(stmt, s_tir.SBlock):
        return s_tir.SBlock(stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint, body, stmt.init,
                            stmt.alloc_buffers, stmt.match_buffers, stmt.annotations)
    if isinstance(stmt, s_tir.SBlockRealize):
        return s_tir.SBlockRealize(stmt.iter_values, stmt.predicate, body)
    if isinstance(stmt, tir.AttrStmt):
        return tir.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body)
    raise TypeError(f"cannot rebuild a {type(stmt).__name__} around tile instructions")


def _configured(body):
    return tir.SeqStmt([tir.Evaluate(tir.call_extern("void", BEGIN)), body,
                        tir.Evaluate(tir.call_extern("void", END))])


def _wrap_tasks(stmt, outermost: bool):
    """stmt with the tile config loaded around the body of each parallel loop that runs tile instructions
    (outermost: around each outermost loop that runs them, for a kernel without parallel tasks)."""
    if not uses_tiles(stmt):
        return stmt
    if isinstance(stmt, tir.For) and (outermost or stmt.kind == tir.ForKind.PARALLEL):
        return _with_body(stmt, _configured(stmt.body)) if not outermost else _configured(stmt)
    if isinstance(stmt, tir.SeqStmt):
        return tir.SeqStmt([_wrap_tasks(s, outermost) for s in stmt.seq])
    if isinstance(stmt, tir.Evaluate):
        raise ValueError("a tile instruction outside every loop")
    return _with_body(stmt, _wrap_tasks(stmt.body if not hasattr(stmt, "block") else stmt.block, outermost))


def _has_parallel_tiles(stmt) -> bool:
    if isinstance(stmt, tir.For) and stmt.kind == tir.ForKind.PARALLEL and uses_tiles(stmt.body):
        return True
    return any(_has_parallel_tiles(child) for child in _children(stmt))


def with_tile_config(func):
    """func with each parallel task that runs tile instructions loading the tile config first and releasing the
    tiles last (the config is per thread); without parallel tasks, around the outermost loops that run them."""
    return func.with_body(_wrap_tasks(func.body, outermost=not _has_parallel_tiles(func.body)))


# --- the tile GEMM micro-kernel as a tensor intrinsic ---------------------------------------------------------
#
# C[i, jo, ji] += widen(A[i, kq * g + kv]) * widen(B[jo, kq, ji, kv]) over a (16 tiles_m) x (16 tiles_n) block of
# C and kc values of K; g = 2 (bfloat16 pairs) or 4 (int8 quads). B is packed in 16-column panels, each K group
# contiguous: a tile of B is 16 rows of one panel (64 bytes each), exactly what tdpbf16ps / tdpb*d read. The
# intrinsic loads the C tiles from the block's buffer, runs the K loop on tiles, and stores them back.

_REGISTERED: set[str] = set()


def widen(dot: TileDot, x):
    """An operand element as the products are formed: bfloat16 bits -> float32 exactly, int8 -> int32."""
    if dot.acc_dtype == "float32":
        return tir.reinterpret("float32", tir.shift_left(x.astype("uint32"), tir.const(16, "uint32")))
    return x.astype("int32")


def tile_gemm_intrinsic(kind: str, tiles_m: int, tiles_n: int, kc: int, unroll: int, emulate: bool,
                        zero_init: bool = False, c_scope: str = "global", a_dtype: str | None = None) -> str:
    """The name of the tensor intrinsic for this micro-kernel (registered on first use). c_scope: where the C
    tiles' buffer lives ("local": on the stack, for a micro-kernel's own tiles). zero_init: the block's
    reduction starts from zero (its init is part of the intrinsic): the C tiles start with tilezero instead of
    being loaded from a zeroed buffer. a_dtype: A's buffer dtype where it is not the dot's ("bfloat16": the
    operand itself, read in place as its bits)."""
    dot = DOTS[kind]
    a_dtype = a_dtype or dot.a_dtype
    if not tile_budget_ok(tiles_m, tiles_n) or kc % (dot.k_step * unroll):
        raise ValueError(f"no tile micro-kernel {tiles_m}x{tiles_n} over K {kc} unrolled {unroll}")
    name = f"autotile_amx_{kind}_{tiles_m}x{tiles_n}_k{kc}_u{unroll}{'_zero' if zero_init else ''}" + (
        "_emu" if emulate else "") + f"_{c_scope}" + ("" if a_dtype == dot.a_dtype else f"_a{a_dtype}")
    if name not in _REGISTERED:
        from tvm.s_tir import TensorIntrin

        TensorIntrin.register(name, _desc(dot, tiles_m, tiles_n, kc, zero_init, c_scope, a_dtype),
                              _impl(dot, tiles_m, tiles_n, kc, unroll, emulate, zero_init, c_scope, a_dtype),
                              override=True)
        _REGISTERED.add(name)
    return name


def tensorize_tile_gemm(sch, loop, kind: str, tiles_m: int, tiles_n: int, kc: int, unroll: int, emulate: bool,
                        zero_init: bool = False, c_scope: str = "global", a_dtype: str | None = None):
    """Tensorize the block under `loop` with tile_gemm_intrinsic(...); returns the tensorized block. With
    zero_init, the block's own init is dropped: TVM 0.27's tensorize keeps it even though the intrinsic's
    description consumed it (the micro-kernel starts with tilezero), and it would zero the C tiles' buffer
    (a 4 KiB memset per micro-kernel) for nothing."""
    intrinsic = tile_gemm_intrinsic(kind, tiles_m, tiles_n, kc, unroll, emulate, zero_init, c_scope, a_dtype)
    block = sch.blockize(loop)
    sch.tensorize(block, intrinsic)
    stmt = sch.get(block)
    if zero_init and stmt.init is not None:
        from tvm import s_tir

        # Sound only where the micro-kernel runs the block's whole reduction (each run starts from zero).
        if any(int(v.dom.extent) != 1 for v in stmt.iter_vars if v.iter_type == tir.IterVar.CommReduce):
            raise ValueError(f"{stmt.name_hint}: a zero-init micro-kernel inside a longer reduction")
        without = s_tir.SBlock(stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint, stmt.body, None,
                               stmt.alloc_buffers, stmt.match_buffers, stmt.annotations)
        sch.state.replace(sch.get_sref(block), without, {stmt: without})
    return block


def _shapes(dot: TileDot, tiles_m: int, tiles_n: int, kc: int):
    return (TILE_ROWS * tiles_m, kc), (tiles_n, kc // dot.group, 16, dot.group), (TILE_ROWS * tiles_m, tiles_n, 16)


def _reads(T, A, B, C, zero_init: bool) -> None:
    """The micro-kernel reads A and B, and C unless it starts its tiles at zero."""
    regions = [A[0:A.shape[0], 0:A.shape[1]], B[0:B.shape[0], 0:B.shape[1], 0:16, 0:B.shape[3]]]
    T.reads(*regions if zero_init else [C[0:C.shape[0], 0:C.shape[1], 0:16], *regions])


def a_bits(dot: TileDot, A, i, k):
    """An element of A as the dot reads it: a bfloat16 A (read in place) as its uint16 bits."""
    return A[i, k] if A.dtype == dot.a_dtype else tir.reinterpret(dot.a_dtype, A[i, k])


def _desc(dot: TileDot, tiles_m: int, tiles_n: int, kc: int, zero_init: bool, c_scope: str, a_dtype: str):
    import tvm.script.ir_builder.tirx as T
    from tvm.script.ir_builder import IRBuilder

    a_shape, b_shape, c_shape = _shapes(dot, tiles_m, tiles_n, kc)
    with IRBuilder() as ib:
        with T.prim_func(s_tir=True):
            T.func_name("desc")
            a, b, c = (T.arg(n, T.handle()) for n in "abc")
            A = T.match_buffer(a, a_shape, a_dtype, offset_factor=1)
            B = T.match_buffer(b, b_shape, dot.b_dtype, offset_factor=1)
            C = T.match_buffer(c, c_shape, dot.acc_dtype, offset_factor=1, scope=c_scope)
            with T.sblock("root"):
                _reads(T, A, B, C, zero_init)
                T.writes(C[0:c_shape[0], 0:tiles_n, 0:16])
                # With one C tile across, the schedule keeps a loop of one iteration but no block axis for it.
                with T.grid(c_shape[0], tiles_n, 16, b_shape[1], dot.group) as (i, jo, ji, kq, kv):
                    with T.sblock("update"):
                        if tiles_n == 1:
                            vi, vji, vkq, vkv = T.axis.remap("SSRR", [i, ji, kq, kv])
                            vjo = 0
                        else:
                            vi, vjo, vji, vkq, vkv = T.axis.remap("SSSRR", [i, jo, ji, kq, kv])
                        T.reads(C[vi, vjo, vji], A[vi, vkq * dot.group + vkv], B[vjo, vkq, vji, vkv])
                        T.writes(C[vi, vjo, vji])
                        if zero_init:
                            with T.init():
                                T.buffer_store(C, tir.const(0, dot.acc_dtype), [vi, vjo, vji])
                        T.buffer_store(C, C[vi, vjo, vji] + widen(dot, a_bits(dot, A, vi, vkq * dot.group + vkv))
                                       * widen(dot, B[vjo, vkq, vji, vkv]), [vi, vjo, vji])
    return ib.get()


def _impl(dot: TileDot, tiles_m: int, tiles_n: int, kc: int, unroll: int, emulate: bool, zero_init: bool,
          c_scope: str, a_dtype: str):
    import tvm.script.ir_builder.tirx as T
    from tvm.script.ir_builder import IRBuilder

    a_shape, b_shape, c_shape = _shapes(dot, tiles_m, tiles_n, kc)
    item = ROW_BYTES // dot.k_step  # bytes of an A or B element
    c_tile = lambda m, n: m * tiles_n + n  # noqa: E731 - tile numbers: C tiles, then A tiles, then B tiles
    a_tile = lambda m: tiles_m * tiles_n + m  # noqa: E731
    b_tile = lambda n: tiles_m * tiles_n + tiles_m + n  # noqa: E731

    def call(instruction, *args):
        T.evaluate(tile_call(instruction, *args, emulate=emulate))

    with IRBuilder() as ib:
        with T.prim_func(s_tir=True):
            T.func_name("impl")
            a, b, c = (T.arg(n, T.handle()) for n in "abc")
            sa, sb0, sb1, sc0, sc1 = (tir.Var(n, "int32") for n in ("sa", "sb0", "sb1", "sc0", "sc1"))
            A = T.match_buffer(a, a_shape, a_dtype, offset_factor=1, strides=[sa, 1])
            B = T.match_buffer(b, b_shape, dot.b_dtype, offset_factor=1, strides=[sb0, sb1, dot.group, 1])
            C = T.match_buffer(c, c_shape, dot.acc_dtype, offset_factor=1, strides=[sc0, sc1, 1], scope=c_scope)
            c_stride, a_stride, b_stride = ((s * n).astype("int64") for s, n in ((sc0, 4), (sa, item), (sb1, item)))
            with T.sblock("root"):
                _reads(T, A, B, C, zero_init)
                T.writes(C[0:c_shape[0], 0:tiles_n, 0:16])
                c_at = lambda m, n: C.access_ptr("rw", offset=m * TILE_ROWS * sc0 + n * sc1)  # noqa: E731

                def a_at(offset):  # typed as A's bits: TVM legalizes a bfloat16 pointer's type to float32
                    pointer = A.access_ptr("r", offset=offset)
                    typed = [tir.type_annotation(dot.a_dtype), *pointer.args[1:]]
                    return tvm.ir.expr.Call(pointer.op, typed, ret_ty=pointer.ty)

                for m in range(tiles_m):
                    for n in range(tiles_n):
                        if zero_init:
                            call("tilezero", c_tile(m, n))
                        else:
                            call("tileloadd64", c_tile(m, n), c_at(m, n), c_stride)
                with T.serial(0, kc // (dot.k_step * unroll)) as s:
                    for u in range(unroll):
                        k = (s * unroll + u) * dot.k_step
                        for n in range(tiles_n):
                            call("tileloadd64", b_tile(n), B.access_ptr("r", offset=n * sb0 + k // dot.group * sb1),
                                 b_stride)
                        for m in range(tiles_m):
                            call("tileloadd64", a_tile(m), a_at(m * TILE_ROWS * sa + k), a_stride)
                            for n in range(tiles_n):
                                call(dot.instruction, c_tile(m, n), a_tile(m), b_tile(n))
                for m in range(tiles_m):
                    for n in range(tiles_n):
                        call("tilestored64", c_tile(m, n), c_at(m, n), c_stride)
    return ib.get()


# --- a tile product emitted inside a TVMScript program -----------------------------------------------------------

def emit_tile_product(kind: str, c_tiles, a_tiles, b_tiles, steps: int, emulate: bool) -> None:
    """Emit, into the TVMScript program being parsed (called as a statement there), C[m][n] = sum over `steps`
    K steps s of A[m](s) . B[n](s) on tiles: the C tiles start at zero, each step loads the B tiles, then each A
    tile and its products, and the C tiles are stored at the end. c_tiles[m][n] is (pointer, row stride in bytes);
    a_tiles[m] and b_tiles[n] are functions of the step (a TIR loop variable) returning the same. Tile numbers:
    C first, then A, then B (at most eight in all)."""
    import tvm.script.ir_builder.tirx as IB

    rows, cols = len(a_tiles), len(b_tiles)
    if rows * cols + rows + cols > TILES:
        raise ValueError(f"a {rows} x {cols} tile product needs more than {TILES} tiles")
    dot = DOTS[kind]
    c_of, a_of, b_of = (lambda m, n: m * cols + n), (lambda m: rows * cols + m), (lambda n: rows * cols + rows + n)

    def call(instruction, *args):
        IB.evaluate(tile_call(instruction, *args, emulate=emulate))

    for m in range(rows):
        for n in range(cols):
            call("tilezero", c_of(m, n))
    with IB.serial(0, steps) as s:
        for n, at in enumerate(b_tiles):
            call("tileloadd64", b_of(n), *_stride64(at(s)))
        for m, at in enumerate(a_tiles):
            call("tileloadd64", a_of(m), *_stride64(at(s)))
            for n in range(cols):
                call(dot.instruction, c_of(m, n), a_of(m), b_of(n))
    for m in range(rows):
        for n in range(cols):
            call("tilestored64", c_of(m, n), *_stride64(c_tiles[m][n]))


def _stride64(where):
    pointer, stride = where
    return pointer, tir.const(stride, "int64") if isinstance(stride, int) else stride.astype("int64")
