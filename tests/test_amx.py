"""The bfloat16 GEMM on AMX tiles (gemm.amx) and what every AMX kernel relies on.

Where the CPU has no AMX (the AMD machines), the kernels run with their tile instructions emulated
(AUTOTILE_AMX_EMULATE=1: same tile numbers, strides and config, with traps where the hardware would fault), which
checks the packing, addressing and loops against the reference; the real instructions are checked in the assembly
of the kernels built ahead of time for `sapphirerapids`, and run only where this CPU has amx_tile.
"""

import json
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_cli import autotile
from tvm_kernels import MCPU, amx_assembly, amx_build, check, check_emulated, missing_cpu_flags, requires_cpu_flags

from autotile.codegen.tvm import amx, amx_permission
from autotile.db.device import cpu_fingerprint
from autotile.errors import AutotileError
from autotile.ir import GemmWorkload
from autotile.ops import templates_for
from autotile.ops.gemm import amx_tvm
from autotile.ops.gemm.amx import AmxGemmSpace
from autotile.ops.qgemm.weight_only_amx import unpacks_int4_here
from autotile.ops.space import has_bf16_dot
from autotile.search import artifacts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setenv(amx_permission.EMULATE_ENV, "1")


def configs(w, n, seed=0):
    """The default and n configs sampled from the space (seeded)."""
    space, rng = AmxGemmSpace(w), random.Random(seed)
    return [space.default(), *(space.sample(rng) for _ in range(n))]


def emulated_check(w, config):
    return check_emulated(amx_tvm.schedule, w, config)


@pytest.mark.parametrize("shape, epilogue, layout", [
    ((37, 45, 70), "bias,gelu", {}),
    ((1, 50, 3), "residual", {"addend_dtype": "bfloat16"}),
    ((33, 17, 129), "silu,cast:float32", {"trans_a": True}),
    ((64, 96, 200), "bias,relu", {"trans_b": True}),
    ((16, 16, 32), "", {}),
])
def test_emulated_tiles_match_the_reference(emulated, shape, epilogue, layout):
    """Odd and prime sizes, size 1, both transposes, 16-bit addends: each config's kernel against the reference."""
    w = GemmWorkload(*shape, dtype="bfloat16", epilogue=epilogue, **layout)
    for config in configs(w, 3, seed=sum(shape)):
        emulated_check(w, config)


def test_every_tile_split_and_loop_order(emulated):
    """Each tile split the eight registers allow, K chunks outside and inside the block, each parallel split."""
    w = GemmWorkload(50, 70, 150, dtype="bfloat16", epilogue="bias,gelu")
    space = AmxGemmSpace(w)
    splits = [(m, n) for m in (1, 2, 3) for n in (1, 2, 3) if amx.tile_budget_ok(m, n)]
    assert sorted(splits) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1)]
    for n, (tiles_m, tiles_n) in enumerate(splits):
        korder = ("inner", "outer")[n % 2]
        config = space.canonical(space.config_type(
            tiles_m=tiles_m, tiles_n=tiles_n, kc=64, unroll_k=1 + n % 2, mc_tiles=2, nc_tiles=1, korder=korder,
            epilogue_at=("tile", "block")[n % 2], parallel=("both", "first", "none")[n % 3], outer="ji"))
        assert config.korder == korder and config.kc < 160
        emulated_check(w, config)


def test_constant_weight_is_packed_once(emulated):
    """A linear's weight: packed ahead into K pairs by pack_B, reused while it is the same tensor, packed again
    for a new one; inputs that are views at an odd storage offset are read correctly (compared in float64)."""
    w = GemmWorkload(19, 40, 35, dtype="bfloat16", trans_b=True, const_b=True, epilogue="bias,gelu,residual",
                     addend_dtype="bfloat16")
    config = AmxGemmSpace(w).default()
    assert amx_tvm.prepacked_operands(w, config) == {"B": ((4, 32, 16, 2), "uint16")}
    kernel = emulated_check(w, config)
    g = torch.Generator().manual_seed(3)

    def draw(*shape):
        return torch.randn(*shape, generator=g).to(torch.bfloat16)

    a_storage = draw(19 * 35 + 1)
    a = a_storage[1:].view(19, 35)  # 2 bytes past an aligned start
    bias, residual = draw(40), draw(19, 40)
    for weight in (draw(40, 35), draw(40, 35)):
        for _ in range(2):
            out = kernel(a, weight, bias, residual).double()
            x = a.double() @ weight.double().T + bias.double()
            want = torch.nn.functional.gelu(x) + residual.double()
            assert torch.allclose(out, want, rtol=2e-2, atol=2e-2 * want.abs().max().item())


@pytest.mark.parametrize("shape, knobs", [
    ((64, 45, 64), {}),
    ((16, 17, 32), dict(tiles_m=1, tiles_n=1)),
    ((96, 50, 128), dict(tiles_m=3, tiles_n=1, mc_tiles=2, kc=64, korder="outer", parallel="both")),
    ((32, 33, 96), dict(tiles_m=1, tiles_n=3, mc_tiles=2, kc=32, unroll_k=1, epilogue_at="block", outer="ji")),
])
def test_a_row_major_a_without_padding_is_read_in_place(emulated, shape, knobs):
    """M whole blocks and K whole chunks: the tiles read A itself (no Apack stage), one K step and one tile row at
    the least, K chunks around the block, parallel blocks; A a view 64 bytes into NaN-filled storage (read in
    place: any read past its rows or K would show) and at an odd offset (copied first)."""
    w = GemmWorkload(*shape, dtype="bfloat16", epilogue="bias,gelu")
    config = AmxGemmSpace(w).canonical(AmxGemmSpace(w).config_type(**knobs))
    assert amx_tvm.reads_a_in_place(w, config), config
    assert "Apack" not in amx_tvm.schedule(w, config, emulate=True)["main"].script()
    kernel = emulated_check(w, config)
    m, n, k = shape
    g = torch.Generator().manual_seed(m + n + k)
    b, bias = torch.randn(k, n, generator=g).to(torch.bfloat16), torch.randn(n, generator=g)
    for offset in (32, 1):
        storage = torch.full((offset + m * k + 64,), float("nan"), dtype=torch.bfloat16)
        a = storage[offset:offset + m * k].view(m, k)
        a.copy_(torch.randn(m, k, generator=g))
        want = torch.nn.functional.gelu(a.double() @ b.double() + bias.double())
        out = kernel(a, b, bias).double()
        assert torch.allclose(out, want, rtol=2e-2, atol=2e-2 * want.abs().max().item()), offset


@pytest.mark.parametrize("shape", [(1, 17, 1), (37, 45, 70), (64, 45, 64)])
def test_layernorm_prologue_in_the_bits_pack(emulated, shape):
    """LN(A) rounded to bf16 as A's bits are packed (never read in place, even where A could be), against
    F.layer_norm and matmul in float64."""
    w = GemmWorkload(*shape, dtype="bfloat16", trans_b=True, const_b=True, epilogue="bias,gelu",
                     addend_dtype="bfloat16", prologue="layernorm")
    for config in configs(w, 2, seed=sum(shape)):
        assert not amx_tvm.reads_a_in_place(w, config)
        emulated_check(w, config)


def test_a_is_packed_where_tiles_would_read_past_it():
    """M or K short of whole blocks or chunks, a transposed A, a single row: A is packed, zero padded."""
    for shape, layout in (((37, 45, 70), {}), ((64, 45, 70), {}), ((63, 45, 64), {}), ((64, 45, 64), {"trans_a": True}),
                          ((1, 50, 64), {})):
        w = GemmWorkload(*shape, dtype="bfloat16", **layout)
        assert not amx_tvm.reads_a_in_place(w, AmxGemmSpace(w).default()), (shape, layout)


def test_the_real_instructions_in_the_assembly():
    """Built ahead of time for sapphirerapids: the tile config is loaded before the first tile instruction and
    released after the last, and the K loop runs on tileloadd / tdpbf16ps / tilestored."""
    w = GemmWorkload(64, 96, 200, dtype="bfloat16", trans_b=True, const_b=True, epilogue="bias,relu")
    for config in configs(w, 2, seed=5):
        asm = amx_assembly(amx_tvm.schedule, w, config)
        ops = re.findall(r"^\s+(ldtilecfg|tileloadd|tdpbf16ps|tilestored|tilerelease|callq\s+\S*emu\S*)\b", asm,
                         re.MULTILINE)
        assert ops and ops[0] == "ldtilecfg" and ops[-1] == "tilerelease", (config, ops[:3], ops[-3:])
        counts = {name: ops.count(name) for name in ("ldtilecfg", "tileloadd", "tdpbf16ps", "tilestored")}
        assert counts["ldtilecfg"] == ops.count("tilerelease") and counts["tdpbf16ps"] >= 1, counts
        assert counts["tileloadd"] > counts["tdpbf16ps"] / 4 and counts["tilestored"] >= 1, counts
        assert not any("emu" in op for op in ops)


def test_a_zero_init_micro_kernel_does_not_zero_its_tiles_buffer(emulated):
    """All of K in one chunk: each micro-kernel starts its C tiles with tilezero, so neither the scheduled TIR (no
    init block, no store of 0 to the tiles' buffer) nor the sapphirerapids assembly (no memset, which is what the
    4 KiB zeroing loop became) zeroes the buffer first; with K in chunks the buffer is zeroed once per block."""
    w = GemmWorkload(37, 45, 70, dtype="bfloat16", epilogue="bias,gelu")
    space = AmxGemmSpace(w)
    for config, zeroed in ((space.default(), False), (space.canonical(space.config_type(kc=32, korder="outer")), True)):
        script = amx_tvm.schedule(w, config, emulate=False)["main"].script()
        assert ("tilezero" in script) != zeroed and "T.init()" not in script, config
        assert bool(re.search(r"mm_(local|global)\[[^\]]*\] = T\.float32\(0", script)) == zeroed, config
        asm = amx_assembly(amx_tvm.schedule, w, config)
        assert ("memset" in asm) == zeroed and ("tilezero" in asm) != zeroed, config
        emulated_check(w, config)


@requires_cpu_flags("amx_tile", "amx_bf16")
def test_real_tiles_match_the_reference():
    w = GemmWorkload(37, 45, 70, dtype="bfloat16", epilogue="bias,gelu")
    assert amx_permission.status().usable, amx_permission.status().reason
    for config in configs(w, 4, seed=7):
        check(w, config, amx_build(amx_tvm.schedule, w, config, emulate=False))


@pytest.mark.parametrize("configured", [True, False])
def test_emulation_traps_where_the_hardware_faults(tmp_path, configured):
    """A tile instruction with no config loaded kills the process (as the hardware's fault would), never computes
    garbage; the same load after the config runs."""
    load = 'T.evaluate(amx.tile_call("tileloadd64", 1, T.address_of(A[0, 0]), T.int64(64), emulate=True))'
    body = [load] if not configured else [f'T.evaluate(T.call_extern("void", "{amx.BEGIN}"))', load,
                                          f'T.evaluate(T.call_extern("void", "{amx.END}"))']
    script = textwrap.dedent("""
        import numpy as np
        import tvm
        from tvm.script import tirx as T
        from autotile.codegen.tvm import amx
        from autotile.codegen.tvm.build import compile_module

        @T.prim_func
        def main(A: T.Buffer((16, 32), "uint16")):
            T.func_attr({"global_symbol": "main"})
            for i in range(1):
                T.attr(0, "pragma_import_llvm", amx.llvm_ir(True))
                BODY

        lib = compile_module(tvm.IRModule({"main": main}), "x86-64", 1)
        lib["main"](tvm.runtime.tensor(np.zeros((16, 32), "uint16")))
        print("survived")
    """).replace("BODY", "\n        ".join(body))
    (tmp_path / "tile.py").write_text(script)  # TVMScript reads its source: a file, not -c
    proc = subprocess.run([sys.executable, str(tmp_path / "tile.py")], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if configured:
        assert proc.returncode == 0 and "survived" in proc.stdout, proc.stderr[-2000:]
    else:
        assert proc.returncode < 0 and "survived" not in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_amx_is_offered_only_where_it_runs(monkeypatch):
    w = GemmWorkload(64, 64, 64, dtype="bfloat16")
    amd = {"flags": ["avx512f", "avx512_bf16"]}
    xeon = {"flags": ["avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]}
    monkeypatch.delenv(amx_permission.EMULATE_ENV, raising=False)
    assert "gemm.amx" not in [t.name for t in templates_for(w, amd)]
    offered = [t.name for t in templates_for(w, xeon)]
    assert ("gemm.amx" in offered) == amx_permission.status().usable  # the flags and this process's grant
    assert "gemm.amx" not in [t.name for t in templates_for(GemmWorkload(64, 64, 64, dtype="float16"), xeon)]
    monkeypatch.setenv(amx_permission.EMULATE_ENV, "1")
    assert [t.name for t in templates_for(w, amd)][0] == "gemm.amx"  # emulated: offered first, everywhere


def test_permission_status_names_its_reason():
    """The real request (arch_prctl): granted where the CPU has AMX, else refused with the reason."""
    state = amx_permission.status()
    if missing_cpu_flags("amx_tile"):
        assert not state.usable and "amx_tile" in state.reason
        assert amx_permission.request_tile_state() != 0  # Linux refuses XTILEDATA on a CPU without it
        assert not amx_permission.tile_state_granted()
    else:
        assert state.usable == amx_permission.tile_state_granted(), state.reason


def test_a_kernel_is_refused_by_name_where_tiles_cannot_run(monkeypatch):
    monkeypatch.delenv(amx_permission.EMULATE_ENV, raising=False)
    if amx_permission.status().usable:
        pytest.skip("this process holds the AMX tile state: nothing is refused")
    w = GemmWorkload(32, 32, 32, dtype="bfloat16")
    config = AmxGemmSpace(w).default()
    executable = amx_build(amx_tvm.schedule, w, config, emulate=False)
    with pytest.raises(AutotileError, match=r"gemm_b1_32x32x32_bfloat16.*AMX tile instructions.*amx_tile"):
        artifacts.compiled(w, config, executable)


def test_the_permission_is_asked_before_a_kernel_first_runs():
    """In a fresh process: nothing asked at import; loading an AMX kernel asks (and, on an AMX CPU, holds the
    grant) before its first call."""
    script = textwrap.dedent(f"""
        import os
        os.environ["{amx_permission.EMULATE_ENV}"] = "1"
        from autotile.codegen.tvm import amx_permission
        from autotile.codegen.tvm.build import compile_module
        from autotile.ir import GemmWorkload
        from autotile.ops.gemm import amx_tvm
        from autotile.ops.gemm.amx import AmxGemmSpace
        from autotile.search import artifacts
        before = amx_permission.status.cache_info().currsize
        w = GemmWorkload(16, 16, 32, dtype="bfloat16")
        c = AmxGemmSpace(w).default()
        kernel = artifacts.compiled(w, c, compile_module(amx_tvm.schedule(w, c, emulate=True), "{MCPU}", 1))
        print(before, amx_permission.status.cache_info().currsize, amx_permission.tile_state_granted())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after, granted = proc.stdout.split()
    assert (before, after) == ("0", "1")
    assert granted == str(not missing_cpu_flags("amx_tile"))


@pytest.mark.slow
def test_tuning_picks_among_amx_and_avx512_templates(tmp_path):
    """`autotile tune gemm` on a bf16 workload with AMX offered (emulated here): both kinds of template are
    measured, every result verified, and the JSON names the winner's template."""
    proc = autotile("tune", "gemm", "--shape", "20x33x40", "--dtype", "bfloat16", "--trials", "6", "--backend",
                    "tvm", "--json", db=tmp_path / "amx.db", env={amx_permission.EMULATE_ENV: "1"})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["verified"] and result["template"] in ("gemm.amx", "gemm.lowp")
    shown = json.loads(autotile("db", "show", result["workload"], "--json", db=tmp_path / "amx.db").stdout)
    templates = {m["template"] for m in shown["measurements"] if m["status"] == "ok"}
    assert "gemm.amx" in templates, templates


def test_autotile_device_says_whether_amx_kernels_are_offered_and_why():
    shown = json.loads(autotile("device", "--json").stdout)
    assert shown["amx"] == {"usable": amx_permission.status().usable, "reason": amx_permission.status().reason}
    assert amx_permission.describe() in autotile("device").stdout


BACKEND_SCRIPT = """
import copy, json, os, sys
import torch
from torch import nn
sys.path.insert(0, sys.argv[1])
from models import GPTBlock
import autotile
from autotile.dynamo.counters import stats
from autotile.nn import QuantizedLinear

torch.manual_seed(0)
model, x = GPTBlock(d_model=64, heads=2).eval(), torch.randn(2, 16, 64)  # head_dim 32: whole tile rows
exact = copy.deepcopy(model).double()(x.double())
model, x = model.bfloat16(), x.bfloat16()
with torch.no_grad():
    got, eager = torch.compile(model, backend="autotile")(x), model(x)
block = {"templates": stats.templates, "error": float((got.double() - exact).abs().max()),
         "eager_error": float((eager.double() - exact).abs().max())}
stats.reset()
fc = nn.Linear(64, 48)
for scheme in (dict(weight_dtype="int8", act_dtype="int8"),
               dict(weight_dtype="int4", group_size=32, act_dtype="bfloat16")):
    layer = QuantizedLinear.from_linear(fc, **scheme).eval()
    xq = torch.randn(20, 64)
    with torch.no_grad():
        block[scheme["weight_dtype"]] = float((layer(xq) - torch.compile(layer, backend="autotile")(xq)).abs().max())
block["quantized_templates"] = stats.templates
print(json.dumps(block))
"""


@pytest.mark.slow
def test_the_backend_runs_bf16_blocks_and_quantized_linears_on_amx_kernels(tmp_path):
    """With AMX offered (emulated here), torch.compile(backend="autotile") runs a bf16 GPT block's linears and
    attention on the AMX templates by default, as close to the float64 model as eager bf16 is, and
    QuantizedLinear's W8A8 and int4-with-bf16-activations layers (16 rows and more) on theirs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), amx_permission.EMULATE_ENV: "1",
           "AUTOTILE_DB": str(tmp_path / "x.db"), "AUTOTILE_CACHE_DIR": str(tmp_path / "kernels")}
    proc = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, str(ROOT / "tests")], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    templates = out["templates"]
    assert sorted(t for k, t in templates.items() if k.startswith("gemm")) == ["gemm.amx"] * 4, templates
    # the layer norms in the A pack, where fusing keeps the GEMM every template: gemm.lowp takes them only on
    # vdpbf16ps (AVX512_BF16); without it (Zen 3) they run on their own
    fused = 2 if has_bf16_dot(cpu_fingerprint()) else 0
    assert len([k for k in templates if k.endswith("layernorm-eps1e-05")]) == fused, templates
    on_their_own = set() if fused else {"layernorm.rows"}  # both norms are one workload (32 x 64)
    assert {t for k, t in templates.items() if k.startswith("layernorm")} == on_their_own, templates
    assert [t for k, t in templates.items() if k.startswith("attention")] == ["attention.flash_amx"], templates
    assert out["error"] <= 2 * out["eager_error"] + 1e-2, out
    # the int4 unpacking is AVX-512BW code: with the tiles emulated on an AVX2 CPU, int4 runs on qgemm.weight_only
    int4_template = "qgemm.weight_only_amx" if unpacks_int4_here(cpu_fingerprint()) else "qgemm.weight_only"
    assert sorted(out["quantized_templates"].values()) == ["qgemm.int8_amx", int4_template], out
    assert out["int8"] < 1e-3 and out["int4"] < 1e-3, out  # the backend's kernel is the eager layer's
