"""Real TVM builds of the GEMM template, each checked against the float64 reference."""

import random
import re

import pytest
import torch
from tvm_kernels import MCPU, assembly, check, compiled, skip_unless_cpu_has

from autotile.errors import AutotileError
from autotile.ir import GemmWorkload
from autotile.ir.reference import verify
from autotile.ops.gemm.blis import GemmConfig, GemmSpace
from autotile.search.artifacts import build_cached, kernel_path, load


@pytest.mark.parametrize("shape", [(1, 1, 1), (17, 33, 65), (127, 1, 300), (64, 96, 128), (5, 200, 7)])
def test_default_config_odd_shapes(shape):
    w = GemmWorkload(*shape)
    check(w, GemmSpace(w).default())


def test_default_blocks_hold_every_row_unless_threads_lack_column_blocks():
    """One row block (B's panels read once) where the two-tile column blocks give each thread 4; more row blocks,
    balanced, where they do not; and those defaults are correct kernels."""
    wide = GemmWorkload(128, 768, 768, epilogue="bias")  # 22 tiles of 6 rows; 12 column blocks of 64
    assert GemmSpace(wide, threads=2).default().mc_tiles == 22
    assert GemmSpace(wide, threads=4).default().mc_tiles == 11  # 16 items for 4 threads: 2 row blocks
    narrow = GemmWorkload(97, 40, 33)  # 17 row tiles, 1 column block
    for threads, mc_tiles in ((1, 5), (2, 3), (64, 1)):
        config = GemmSpace(narrow, threads=threads).default()
        assert config.mc_tiles == mc_tiles and config.nc_tiles == 2
        check(narrow, config)


def test_a_block_between_the_domain_values_mutates_to_those_around_it():
    """The default's 22-tile row block (128 rows) is no value of mc_tiles' domain: a mutation steps to the values
    around its place (12, 16, 24, 32: balanced to 11 or all 22), not anywhere from 1 to 256."""
    space = GemmSpace(GemmWorkload(128, 768, 768), threads=2)
    rng = random.Random(0)
    mutants = [space.mutate(space.default(), rng) for _ in range(400)]
    assert {c.mc_tiles for c in mutants if c.mr == 6} == {11, 22}


@pytest.mark.parametrize("seed", range(6))
def test_sampled_configs_on_odd_shapes(seed):
    rng = random.Random(seed)
    shape = [(17, 33, 65), (127, 1, 300), (40, 72, 130)][seed % 3]
    epilogue = ["", "bias,gelu", "relu,residual", "bias,silu,gelu_tanh"][seed % 4]
    w = GemmWorkload(*shape, epilogue=epilogue, trans_a=seed % 2 == 1, trans_b=seed % 3 == 1)
    space = GemmSpace(w)
    for _ in range(3):
        check(w, space.sample(rng))


@pytest.mark.parametrize("seed", range(4))
def test_layernorm_prologue_on_odd_shapes_matches_float64_torch(seed):
    """LN(A) @ B^T + epilogue, the layer norm computed as A is packed (or into a row-major copy, A unpacked),
    against F.layer_norm and matmul in float64, for rows of one element, K not a multiple of the stats' 16 lanes,
    and sampled tilings."""
    rng = random.Random(seed)
    shape = [(1, 17, 1), (17, 33, 65), (127, 5, 300), (40, 72, 16)][seed]
    w = GemmWorkload(*shape, trans_b=True, const_b=seed % 2 == 0, epilogue=["bias", "bias,gelu,residual"][seed % 2],
                     prologue="layernorm", eps=[1e-5, 1e-3][seed % 2])
    space = GemmSpace(w)
    for pack_a in (False, True):
        check(w, space.canonical(GemmConfig(**{**space.default().to_dict(), "pack_a": pack_a})))
    for config in [space.sample(rng) for _ in range(2)]:
        check(w, config)


def test_every_knob_value_builds_and_verifies():
    w = GemmWorkload(33, 70, 90, epilogue="bias,gelu,residual")
    space = GemmSpace(w)
    base = space.default()
    seen = set()
    for knob, values in space.domains.items():
        for value in values:
            config = space.canonical(GemmConfig(**{**base.to_dict(), knob: value}))
            if space.valid(config) and config.key not in seen and len(seen) < 40:
                seen.add(config.key)
                check(w, config)
    assert len(seen) > 20


@pytest.mark.parametrize("shared", ["a", "b"])
def test_batched_with_a_shared_operand(shared):
    """bmm broadcasting: one operand has no batch dim; packed or not, every batch reads the same one."""
    w = GemmWorkload(13, 37, 19, batch=3, trans_b=shared == "b", epilogue="bias,residual", broadcast=shared)
    assert len(w.operand_shapes()["A" if shared == "a" else "B"]) == 2
    space = GemmSpace(w)
    check(w, space.default())
    for pack_a, pack_b in [(True, True), (False, False)]:
        check(w, space.canonical(GemmConfig(mr=4, nr=16, vec=8, kc=8, pack_a=pack_a, pack_b=pack_b)))


def test_batched_and_transposed():
    w = GemmWorkload(9, 20, 31, batch=3, trans_a=True, trans_b=True, epilogue="bias,relu")
    space = GemmSpace(w)
    check(w, space.default())
    check(w, space.canonical(GemmConfig(mr=4, nr=16, vec=8, kc=16, pack_a=True, pack_b=False, parallel="first")))


def test_unfused_epilogue_and_cast():
    w = GemmWorkload(20, 40, 24, epilogue="bias,gelu,cast:bfloat16")
    space = GemmSpace(w)
    for fuse in range(4):
        check(w, space.canonical(GemmConfig(fuse_epilogue=fuse)))


def test_gelu_is_vectorized_without_libm_calls():
    w = GemmWorkload(64, 64, 64, epilogue="bias,gelu,gelu_tanh,silu")
    asm = assembly(w, GemmSpace(w).default())
    assert not re.search(r"\b(erff|expf|tanhf)\b", asm)
    assert re.search(r"vfmadd\w+\s+[^\n]*%zmm", asm), "expected AVX-512 FMAs"
    # The check can fail: TVM's own erf does lower to scalar erff calls.
    import tvm
    from tvm import te

    a = te.placeholder((64,), "float32", name="a")
    b = te.compute((64,), lambda i: te.erf(a[i]), name="b")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, b]))
    asm_erf = tvm.compile(sch.mod, tvm.target.Target({"kind": "llvm", "mcpu": MCPU})).mod.inspect_source("s")
    assert re.search(r"\berff\b", asm_erf)


def test_fast_math_accuracy():
    """erf within 1e-6 of the exact function, exp/tanh within float rounding, on a dense grid."""
    import numpy as np
    import tvm
    from tvm import te

    from autotile.codegen.tvm import fastmath

    xs = np.linspace(-10, 10, 200001).astype("float32")
    x = te.placeholder(xs.shape, "float32", name="x")
    def elementwise(name, f):
        return te.compute(xs.shape, lambda i: f(x[i]), name=name)

    outs = [elementwise("erf", fastmath.erf), elementwise("exp", lambda v: fastmath.exp(v / 2)),
            elementwise("tanh", fastmath.tanh)]
    lib = tvm.compile(te.create_prim_func([x, *outs]), tvm.target.Target({"kind": "llvm", "mcpu": MCPU}))
    arrays = [tvm.runtime.tensor(xs)] + [tvm.runtime.tensor(np.zeros_like(xs)) for _ in outs]
    skip_unless_cpu_has()
    lib(*arrays)
    x64 = torch.from_numpy(xs).double()
    erf, exp, tanh = (torch.from_numpy(a.numpy()).double() for a in arrays[1:])
    assert float((erf - torch.special.erf(x64)).abs().max()) <= 1e-6
    assert float(((exp - torch.exp(x64 / 2)) / torch.exp(x64 / 2)).abs().max()) <= 1e-6
    assert float((tanh - torch.tanh(x64)).abs().max()) <= 1e-6


def test_compiled_kernel_on_torch_tensors_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTILE_CACHE_DIR", str(tmp_path))
    w = GemmWorkload(8, 16, 4, epilogue="bias")
    config = GemmSpace(w).default()
    path = build_cached("cpu-test", w, config, MCPU, 2)
    assert path == kernel_path("cpu-test", w, config, MCPU) and path.exists()
    skip_unless_cpu_has()
    kernel = load(w, config, path)
    a, b, bias = torch.randn(8, 4), torch.randn(4, 16), torch.randn(16)
    out = torch.empty(8, 16)
    assert kernel(a, b, bias, out=out) is out  # written in place, no copy
    torch.testing.assert_close(out, a @ b + bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernel(a, b, bias), a @ b + bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(AutotileError, match="takes 3 inputs"):
        kernel(a, b)
    with pytest.raises(AutotileError, match=r"B has shape \(16, 4\)"):
        kernel(a, b.t().contiguous(), bias)
    with pytest.raises(AutotileError, match="must be contiguous"):
        kernel(a, b.t().contiguous().t(), bias)


@pytest.mark.parametrize("trans_b", [False, True])
def test_constant_b_is_packed_once_per_tensor_version(trans_b):
    """const_b: the library holds pack_B, run once per weight; an in-place update or another tensor repacks."""
    w = GemmWorkload(37, 45, 29, trans_b=trans_b, epilogue="bias,relu", const_b=True)
    assert w.key.endswith("_constB")
    space = GemmSpace(w)
    config = space.canonical(GemmConfig(mr=4, nr=32, kc=16, pack_b=True, korder="outer"))
    kernel = compiled(w, config)
    assert verify(w, kernel).ok  # two draws: two different B tensors, each packed
    a, b, bias = torch.randn(37, 29), torch.randn(*w.operand_shapes()["B"]), torch.randn(45)

    def expected():
        return torch.relu(a @ (b.T if trans_b else b) + bias)

    torch.testing.assert_close(kernel(a, b, bias), expected(), rtol=1e-4, atol=1e-4)
    first = kernel._packed["B"][2]
    torch.testing.assert_close(kernel(a, b, bias), expected(), rtol=1e-4, atol=1e-4)
    assert kernel._packed["B"][2] is first  # same unchanged tensor: not packed again
    b.mul_(-2)  # in place: a new version
    torch.testing.assert_close(kernel(a, b, bias), expected(), rtol=1e-4, atol=1e-4)
    assert kernel._packed["B"][2] is not first
    # A caller may keep the packed copy itself (one per weight) and pass it back in place of B.
    packed = kernel.pack_operand("B", b)
    torch.testing.assert_close(kernel(a, packed, bias), expected(), rtol=1e-4, atol=1e-4)
    other = compiled(w, space.default())
    with pytest.raises(AutotileError, match="packed for another kernel"):
        other(a, packed, bias)
    with pytest.raises(AutotileError, match="must be contiguous"):
        kernel.pack_operand("B", b.T.contiguous().T)
    # Without pack_b, the kernel reads B as given: nothing to pack.
    plain = space.canonical(GemmConfig(mr=4, nr=32, kc=16, pack_b=False))
    assert compiled(w, plain).pack_operand("B", b) is b
