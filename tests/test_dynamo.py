"""torch.compile(model, backend="autotile"): outputs match eager, heavy ops really run autotile kernels.

Shapes are tiny and shared between tests, so the session's kernel cache builds each kernel once.
"""

import ast
import copy
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from models import MLP, BasicBlock, GPTBlock
from torch import nn

import autotile
import autotile.dynamo
from autotile.db.device import cpu_flags
from autotile.dynamo import compile_model, stats
from autotile.dynamo.buckets import boundaries, bucket
from autotile.dynamo.plans import AttentionPlan, Conv2dPlan, GemmPlan, LayerNormPlan, QLinearPlan
from autotile.errors import AutotileError
from autotile.ops.attention.workload import AttentionWorkload
from autotile.ops.conv2d.workload import Conv2dWorkload
from autotile.ops.gemm.workload import GemmWorkload
from autotile.ops.layernorm.workload import LayerNormWorkload
from autotile.ops.qgemm.workload import QGemmWorkload


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    stats.reset()
    yield
    torch._dynamo.reset()


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fallback", ["inductor", "eager"])
def test_mlp_matches_eager_with_fused_epilogues(fallback):
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(2, 8, 32)
    compiled = torch.compile(model, backend="autotile", options={"fallback": fallback})
    with torch.no_grad():
        close(compiled(x), model(x))
        close(compiled(x), model(x))  # second call: kernels and packed weights reused
    assert stats.replaced == {"gemm": 5}
    # x @ W^T with W a constant B, read in place (nt) and packed into the kernel's panels once
    epilogues = sorted(k.split("_float32_nt_")[-1] for k in stats.workloads)
    assert epilogues == [f"bias+{e}_constB" for e in ("gelu", "gelu_tanh", "relu", "residual", "silu")]
    assert stats.packs == 5  # each weight packed once, not per call


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_mlp_runs_autotile_gemms_with_16_bit_bias_and_residual(dtype):
    """model.bfloat16(): each linear with its bias, its decomposed activation (widened to float32 and cast back)
    and the residual, one 16-bit GEMM; compared with the float64 model, as closely as eager's own result."""
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(2, 8, 32)
    exact = copy.deepcopy(model).double()(x.double())
    narrow = model.to(dtype)
    with torch.no_grad():
        got, eager = compile_model(narrow)(x.to(dtype)), narrow(x.to(dtype))
    assert got.dtype == dtype
    assert stats.replaced == {"gemm": 5} and stats.left == {}
    name = str(dtype)[6:]
    epilogues = sorted(k.split(f"_{name}_nt_")[-1] for k in stats.workloads)
    assert epilogues == [f"bias+{e}_constB_add-{name}" for e in ("gelu", "gelu_tanh", "relu", "residual", "silu")]
    error, eager_error = (got.double() - exact).abs().max(), (eager.double() - exact).abs().max()
    assert error <= 2 * eager_error + 1e-3, (error, eager_error)


def test_autocast_linears_cast_their_float32_weights_once():
    """Under autocast each call casts the float32 weights to bfloat16: the op takes the float32 weight instead and
    casts it as it packs it, once per weight version."""
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(2, 8, 32)
    compiled = compile_model(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        eager = model(x)
        for _ in range(2):
            got = compiled(x)
    assert got.dtype == eager.dtype and stats.replaced == {"gemm": 5} and stats.packs == 5
    exact = model.double()(x.double())
    assert (got.double() - exact).abs().max() <= 2 * (eager.double() - exact).abs().max() + 1e-3


def test_gpt_block_linears_and_attention_are_replaced():
    torch.manual_seed(0)
    model, x = GPTBlock().eval(), torch.randn(2, 16, 64)
    with torch.no_grad():
        close(compile_model(model)(x), model(x))
    assert stats.replaced == {"gemm": 4, "attention": 1, "layernorm": 2}
    assert stats.left == {}  # the residual feeding the next linear once kept the old addmm alive beside it
    assert any(k.startswith("attention_b2_h4_q16_kv16_d16") and "causal-tl" in k for k in stats.workloads)


def test_a_bfloat16_gpt_block_runs_entirely_on_autotile_kernels():
    """model.bfloat16(): the linears (16-bit bias, residual, widened GELU), the flash attention over bf16 views of
    the fused qkv projection, and both layer norms (upcast to downcast) are autotile kernels, nothing is left to
    Inductor, and the block is as close to the float64 model as eager's bf16 result is."""
    torch.manual_seed(0)
    model, x = GPTBlock().eval(), torch.randn(2, 16, 64)
    exact = copy.deepcopy(model).double()(x.double())
    model, x = model.bfloat16(), x.bfloat16()
    with torch.no_grad():
        got, eager = torch.compile(model, backend="autotile")(x), model(x)
    assert stats.replaced == {"gemm": 4, "attention": 1, "layernorm": 2} and stats.left == {}
    assert "attention_b2_h4_q16_kv16_d16_kvh4_causal-tl_s0.25_bfloat16" in stats.workloads
    # with vdpbf16ps the layer norms run inside their linears' bit packs; else each is a kernel that reads and writes
    # 16 bits (the upcast to the downcast)
    fused = ["gemm_b1_32x192x64_bfloat16_nt_bias_constB_add-bfloat16_layernorm-eps1e-05",
             "gemm_b1_32x256x64_bfloat16_nt_bias+gelu_constB_add-bfloat16_layernorm-eps1e-05"]
    assert sorted(k for k in stats.workloads if "layernorm" in k) == \
        (fused if "avx512_bf16" in cpu_flags() else ["layernorm_32x64_eps1e-05_bfloat16"])
    assert got.dtype == torch.bfloat16
    error, eager_error = (got.double() - exact).abs().max(), (eager.double() - exact).abs().max()
    assert error <= 2 * eager_error + 1e-2, (error, eager_error)


def test_resnet_basic_block_convolutions_are_replaced():
    torch.manual_seed(0)
    model, x = BasicBlock().eval(), torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        close(autotile.compile(model)(x), model(x))  # the top-level spelling of compile_model
    assert stats.replaced == {"conv2d": 2}


def test_eval_batchnorm_folds_into_the_conv_and_relu_residual_fuse():
    """A ResNet basic block in eval mode: each BatchNorm becomes the conv's weight scale and bias, so the conv,
    BatchNorm, residual add and ReLU run as one autotile op; the running statistics are read every call."""
    torch.manual_seed(0)
    model, x = BasicBlock().eval(), torch.randn(1, 8, 8, 8)
    for bn in (model.bn1, model.bn2):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    compiled = compile_model(model)
    with torch.no_grad():
        close(compiled(x), model(x))
        model.bn2.running_var.mul_(3)  # what a user's own update would do: the folded values follow
        close(compiled(x), model(x))
    assert stats.replaced == {"conv2d": 2} and stats.left == {}
    epilogues = sorted(k.split("_float32_")[-1] for k in stats.workloads)
    assert epilogues == ["bias+relu_constW", "bias+residual+relu_constW"]


def test_a_downsampling_blocks_two_convs_meeting_in_one_add_each_run_once():
    """The block's second conv and its 1x1 shortcut meet in one add: the first in graph order takes the add (and
    the ReLU) into its epilogue, the shortcut's stops before it. Both taking it left two copies of the convs in the
    graph, run by torch besides the three kernels."""
    torch.manual_seed(0)
    model = BasicBlock(8, in_channels=4, stride=2).eval()
    for bn in (model.bn1, model.bn2, model.downsample[1]):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    base = torch.randn(1 + 4 * 9 * 9)
    x = base[1:].view(1, 4, 9, 9)  # odd size, at a storage offset
    with torch.no_grad():
        got = compile_model(model)(x)
        exact = copy.deepcopy(model).double()(x.double())
    torch.testing.assert_close(got.double(), exact, rtol=1e-4, atol=1e-4)
    assert stats.replaced == {"conv2d": 3} and stats.left == {}
    epilogues = sorted(k.split("_float32_")[-1] for k in stats.workloads)
    assert epilogues == ["bias+relu_constW", "bias+residual+relu_constW", "bias_constW"]


def test_conv_bias_relu_residual_fuse():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    fn = lambda x: F.relu(conv(x)) + x
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        close(compile_model(fn)(x), fn(x))
    assert stats.replaced == {"conv2d": 1}
    assert [k.split("_float32_")[-1] for k in stats.workloads] == ["bias+relu+residual_constW"]


def test_graph_break_compiles_both_graphs():
    torch.manual_seed(0)
    a, b = nn.Linear(32, 64), nn.Linear(64, 32)

    def fn(x):
        h = F.relu(a(x))
        torch._dynamo.graph_break()
        return b(h)

    x = torch.randn(16, 32)
    with torch.no_grad():
        close(compile_model(fn)(x), fn(x))
    assert stats.graphs == 2 and stats.replaced == {"gemm": 2}


def test_bucket_boundaries():
    assert boundaries(100) == [1, 2, 4, 8, 16, 24, 32, 48, 64, 96]
    assert [bucket(n) for n in (1, 3, 16, 17, 24, 25, 33, 96, 97)] == [1, 4, 16, 24, 24, 32, 48, 96, 128]


def test_dynamic_sequence_runs_each_bucket_at_and_around_its_boundaries():
    torch.manual_seed(0)
    lin = nn.Linear(32, 64)
    fn = lambda x: F.relu(lin(x))
    compiled = compile_model(fn, dynamic=True)
    with torch.no_grad():
        for seq in (15, 16, 17, 23, 24, 25):
            x = torch.randn(1, seq, 32)
            out = compiled(x)
            close(out, fn(x))
            assert out.is_contiguous()
    assert stats.replaced == {"gemm": 1}
    rows = sorted(int(k.split("_")[2].split("x")[0]) for k in stats.workloads)
    assert rows == [16, 24, 32]  # one kernel per bucket


def test_dynamic_sequence_in_a_gpt_block_pads_causal_attention_exactly():
    torch.manual_seed(0)
    model = GPTBlock().eval()
    compiled = compile_model(model, dynamic=True)
    with torch.no_grad():
        for seq in (15, 16, 17):
            x = torch.randn(1, seq, 64)
            close(compiled(x), model(x))
    assert stats.replaced == {"gemm": 4, "attention": 1, "layernorm": 2}
    assert sorted(k.split("_")[3] for k in stats.workloads if k.startswith("attention")) == ["q16", "q24"]
    # each layer norm is its linear's prologue, in each bucket's kernel
    fused = sorted(k.split("_")[2] for k in stats.workloads if k.endswith("layernorm-eps1e-05"))
    assert fused == ["16x192x64", "16x256x64", "24x192x64", "24x256x64"]


@pytest.mark.parametrize("fuse", [True, False])
def test_a_layer_norm_feeding_one_linear_runs_inside_its_gemm(fuse):
    """A pre-norm block's layer norms become their linears' prologues (LN computed as A is packed); the block
    matches eager and the float64 model, and no layer-norm kernel of its own is left. fuse_prologues=False keeps
    them kernels of their own."""
    torch.manual_seed(0)
    model, x = GPTBlock().eval(), torch.randn(2, 16, 64)
    with torch.no_grad():
        got, eager = compile_model(model, fuse_prologues=fuse)(x), model(x)
        exact = copy.deepcopy(model).double()(x.double())
    close(got, eager)
    assert (got.double() - exact).abs().max() <= 2 * (eager.double() - exact).abs().max() + 1e-5
    assert stats.replaced == {"gemm": 4, "attention": 1, "layernorm": 2}
    assert stats.fused == ({"layernorm": 2} if fuse else {}) and stats.total == (5 if fuse else 7)
    fused = sorted(k for k in stats.workloads if "layernorm" in k)
    assert fused == (["gemm_b1_32x192x64_float32_nt_bias_constB_layernorm-eps1e-05",
                      "gemm_b1_32x256x64_float32_nt_bias+gelu_constB_layernorm-eps1e-05"] if fuse
                     else ["layernorm_32x64_eps1e-05_float32"])


class SharedNorm(nn.Module):
    """Layer norms a GEMM cannot take in: one feeding two linears, one without a shift, one of a 3-D bmm input."""

    def __init__(self, d=24):
        super().__init__()
        self.shared, self.no_shift = nn.LayerNorm(d), nn.LayerNorm(d, bias=False)
        self.a, self.b, self.c = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        h = self.shared(x)
        return self.a(h) + self.b(h) + self.c(self.no_shift(x))


def test_layer_norms_a_gemm_cannot_take_in_stay_kernels_of_their_own():
    torch.manual_seed(0)
    model, x = SharedNorm().eval(), torch.randn(3, 5, 24)
    with torch.no_grad():
        close(compile_model(model)(x), model(x))
    assert stats.replaced["layernorm"] == 2 and stats.replaced["gemm"] == 3
    assert not [k for k in stats.workloads if k.startswith("gemm") and "layernorm" in k]
    assert sorted(k for k in stats.workloads if k.startswith("layernorm")) == ["layernorm_15x24_eps1e-05_float32"]


class Norms(nn.Module):
    """Every form of layer_norm: affine, weight only, none (its own eps), on a 3-D input and a 2-D view of one."""

    def __init__(self, d=40):
        super().__init__()
        self.affine, self.weight_only = nn.LayerNorm(d), nn.LayerNorm(d, bias=False)
        self.plain = nn.LayerNorm(d, elementwise_affine=False, eps=1e-3)
        for p in self.parameters():
            nn.init.normal_(p)

    def forward(self, x):
        return self.affine(x) + self.weight_only(x * 3 + 100) * self.plain(x[0])


def test_layer_norms_in_every_form_run_autotile_kernels():
    torch.manual_seed(0)
    model, x = Norms().eval(), torch.randn(2, 5, 40)
    with torch.no_grad():
        close(compile_model(model)(x), model(x))
    assert stats.replaced == {"layernorm": 3}
    assert sorted(stats.workloads) == ["layernorm_10x40_eps1e-05_float32", "layernorm_5x40_eps0.001_float32"]


def half_steps(dtype):
    """A 16-bit input for Norms in steps of 1/2: x * 3 + 100 is exact, so eager (which rounds x * 3) and a compiled
    graph (which does not) hand the layer norms the same values."""
    return torch.randint(-8, 9, (2, 5, 40)).to(dtype) / 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_16_bit_models_layer_norms_read_and_write_16_bits(dtype):
    """Its float32 math between the upcast of x and the downcast of the result is one kernel on the 16-bit
    tensors (the casts, which Inductor would fuse into its own kernel, are not left as passes of their own)."""
    torch.manual_seed(0)
    model, x = Norms().eval().to(dtype), half_steps(dtype)
    with torch.no_grad():
        out = compile_model(model)(x)
        expected = model(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=1e-1)  # a few 16-bit roundings of values up to ~10
    name = str(dtype).removeprefix("torch.")
    assert stats.replaced == {"layernorm": 3}
    assert sorted(stats.workloads) == [f"layernorm_10x40_eps1e-05_{name}", f"layernorm_5x40_eps0.001_{name}"]


def test_16_bit_layer_norms_with_float32_weights_stay_with_the_fallback():
    """A bfloat16 x normalized with float32 weight and bias gives float32 (no downcast), which the kernel does not
    write: those two stay, the layer norm without weights is replaced."""
    torch.manual_seed(0)
    model, x = Norms().eval(), half_steps(torch.bfloat16)
    with torch.no_grad():
        out = compile_model(model)(x)
        expected = model(x)
    assert out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=1e-1)
    assert stats.replaced == {"layernorm": 1} and list(stats.workloads) == ["layernorm_5x40_eps0.001_bfloat16"]


def test_training_layer_norm_stays_with_the_fallback_and_grads_match():
    torch.manual_seed(0)
    model = Norms()
    reference = copy.deepcopy(model)
    x = torch.randn(2, 5, 40)
    loss, ref_loss = compile_model(model)(x).sum(), reference(x).sum()
    loss.backward()
    ref_loss.backward()
    close(loss, ref_loss)
    for p, q in zip(model.parameters(), reference.parameters()):
        close(p.grad, q.grad)
    assert "layernorm" not in stats.replaced  # the backward reads the forward's mean and rstd


def test_training_grads_match_and_weights_repack_after_each_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
    reference = copy.deepcopy(model)
    compiled = compile_model(model)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, reference))
    x = torch.randn(16, 32)
    for _ in range(2):
        loss, ref_loss = compiled(x).square().sum(), reference(x).square().sum()
        loss.backward()
        ref_loss.backward()
        close(loss, ref_loss)
        for p, q in zip(model.parameters(), reference.parameters()):
            close(p.grad, q.grad)
        for o in (opt, ref_opt):
            o.step()
            o.zero_grad()
    # forward: 2 (bias+relu, bias); backward: 3 of the 4 (grad of the first input is not needed)
    assert stats.replaced == {"gemm": 5}
    assert stats.packs == 4  # two weights, packed again after the optimizer step changed them


def test_in_place_weight_update_is_seen():
    torch.manual_seed(0)
    lin = nn.Linear(32, 64)
    compiled = compile_model(lin)
    x = torch.randn(16, 32)
    with torch.no_grad():
        close(compiled(x), lin(x))
        lin.weight.mul_(-2.0)
        close(compiled(x), lin(x))
    assert stats.packs == 2


def test_other_dtypes_and_masked_attention_stay_with_the_fallback():
    torch.manual_seed(0)
    lin = nn.Linear(32, 64).double()
    x = torch.randn(16, 32, dtype=torch.float64)
    with torch.no_grad():
        close(compile_model(lin)(x), lin(x))
    assert stats.total == 0
    q, mask = torch.randn(1, 2, 16, 16), torch.randn(16, 16)
    fn = lambda q: F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    close(compile_model(fn)(q), fn(q))
    assert stats.total == 0
    torch._dynamo.reset()
    half = F.scaled_dot_product_attention
    q = q.half()
    torch.testing.assert_close(compile_model(half)(q, q, q), half(q, q, q))
    assert stats.total == 0  # float16 attention: no template takes it


def test_tune_records_workloads_and_a_second_compile_only_reads_them(tmp_path, monkeypatch):
    import autotile.search.isolated as isolated
    from autotile.db.store import TuningDB
    from autotile.search.measure import Measurer

    torch.manual_seed(0)
    lin = nn.Linear(32, 64)
    fn = lambda x: F.gelu(lin(x))
    x, db = torch.randn(16, 32), tmp_path / "tuned.db"
    with torch.no_grad():
        close(compile_model(fn, tuning="tune", trials_per_workload=2, db=db, progress=False)(x), fn(x))
    key = "gemm_b1_16x64x32_float32_nt_bias+gelu_constB"
    assert stats.tuned == [key]
    with TuningDB(db) as database:
        assert len(database.measurements(workload=key, status="ok")) >= 1

    def forbidden(*args, **kwargs):
        raise AssertionError("a warm compile must not build or measure candidates")

    monkeypatch.setattr(Measurer, "measure", forbidden)
    monkeypatch.setattr(isolated, "_builder", forbidden)  # the worker that would build one
    torch._dynamo.reset()
    stats.reset()
    with torch.no_grad():
        close(compile_model(fn, tuning="tune", trials_per_workload=2, db=db, progress=False)(x), fn(x))
    assert stats.tuned == [] and stats.workloads == {key: "exact"} and stats.replaced == {"gemm": 1}


def test_tune_shows_progress_and_stops_at_its_time_budget(tmp_path, capfd, virtual_clock):
    """A cold tuning compile prints what it tunes and stops when `time_budget_s` is spent. Each measurement takes
    one second of the virtual clock, so timing the first workload's default spends the whole 1 s: far fewer than
    the trials asked for are recorded, and the workload left untuned runs its default kernel."""
    from autotile.db.store import TuningDB

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 32))
    x, db = torch.randn(8, 32), tmp_path / "budget.db"
    first, second = "gemm_b1_8x48x32_float32_nt_bias+relu_constB", "gemm_b1_8x32x48_float32_nt_bias_constB"
    with torch.no_grad():
        compiled = compile_model(mlp, tuning="tune", trials_per_workload=500, time_budget_s=1.0, db=db)
        close(compiled(x), mlp(x))
    err = capfd.readouterr().err
    assert "autotile: tuning 2 workload(s) of this graph under one budget" in err
    assert "time budget spent; 1 workload(s) left untuned" in err
    assert stats.tuned == [first] and stats.replaced == {"gemm": 2}
    assert stats.workloads == {first: "exact", second: "default"}
    with TuningDB(db) as database:
        records = database.measurements()
    assert {r["workload"] for r in records} == {first} and 1 <= len(records) < 500


def test_options_are_checked():
    with pytest.raises(AutotileError, match="unknown autotile option.*'trails'"):
        compile_model(nn.Linear(2, 2), trails=3)
    with pytest.raises(AutotileError, match="tuning must be one of"):
        compile_model(nn.Linear(2, 2), tuning="always")
    with pytest.raises(AutotileError, match="fallback must be one of"):
        autotile.dynamo.Options.parse({"fallback": "tvm"})
    with pytest.raises(AutotileError, match="fuse_prologues must be True or False, got 'no'"):
        autotile.dynamo.Options.parse({"fuse_prologues": "no"})
    compiled = torch.compile(nn.Linear(2, 2), backend="autotile", options={"time_budget_s": -1})
    with pytest.raises(Exception, match="time_budget_s must be positive"):
        compiled(torch.randn(1, 2))


def test_warm_compile_hits_inductors_fx_graph_cache():
    """Inductor's own decomposition table is kept (activations are matched decomposed), so a recompile of the
    same graph with the same database loads from the FX graph cache instead of bypassing it."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(2, 8, 32)
    with torch.no_grad():
        close(compile_model(model)(x), model(x))
        torch._dynamo.reset()
        counters.clear()
        stats.reset()
        compiled = compile_model(model)
        close(compiled(x), model(x))
        with torch.profiler.profile() as prof:
            compiled(x)
    assert counters["inductor"]["fxgraph_cache_bypass"] == 0
    assert counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"] >= 1
    assert stats.graphs == 0  # served from the cache: the pass did not run again, its autotile ops did
    assert [e.name for e in prof.events()].count("autotile::gemm") == 5


@pytest.mark.parametrize("scheme", [dict(weight_dtype="int4", group_size=32, asymmetric=True),
                                    dict(weight_dtype="int8", act_dtype="int8")], ids=["int4-g32-asym", "w8a8"])
def test_quantized_linear_eager_and_compiled(scheme):
    """autotile.nn.QuantizedLinear: the same kernels eagerly and under the backend; results match the float math
    on the dequantized weight."""
    from autotile.nn import QuantizedLinear

    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(64, 96), nn.Linear(96, 32)
    model = nn.Sequential(QuantizedLinear.from_linear(fc1, **scheme), nn.GELU(),
                          QuantizedLinear.from_linear(fc2, **scheme)).eval()
    x = torch.randn(3, 5, 64)

    def float_math(x):
        h = F.gelu(F.linear(x, model[0].dequantized_weight(), fc1.bias))
        return F.linear(h, model[2].dequantized_weight(), fc2.bias)

    tolerance = dict(rtol=2e-2, atol=2e-2) if "act_dtype" in scheme else dict(rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        eager = model(x)
        torch.testing.assert_close(eager, float_math(x), **tolerance)  # W8A8 also quantizes the activations
        close(compile_model(model)(x), eager)
    assert stats.replaced == {"qlinear": 2}
    assert sorted(stats.workloads) == sorted(m.workload.__class__(**{**m.workload.__dict__, "m": 16}).key
                                             for m in (model[0], model[2]))  # 15 rows: the 16-row bucket
    with pytest.raises(AutotileError, match="expected \\(32, 96\\)"):
        model[2].load_weight(torch.randn(96, 32))


def test_same_shape_quantized_linears_each_keep_their_packed_weight():
    """Layers of one shape share a kernel; each layer's weight is packed into its layout once, not per call.
    (bf16 activations: the int4 kernel reads W and scales repacked into 16-column tiles where the CPU has
    avx512_bf16; elsewhere the fallback reads them as given and nothing is packed.)"""
    from autotile.db.device import current_device
    from autotile.nn import QuantizedLinear

    torch.manual_seed(0)
    layers = [QuantizedLinear.from_linear(nn.Linear(64, 64), weight_dtype="int4", group_size=32,
                                          act_dtype="bfloat16") for _ in range(2)]
    model = nn.Sequential(*layers).eval()
    x = torch.randn(4, 64)

    def float_math(x):  # A rounded to bf16 by the kernel; weights and sums exact
        for layer in layers:
            x = F.linear(x.bfloat16().float(), layer.dequantized_weight(), layer.bias)
        return x

    with torch.no_grad():
        for _ in range(3):
            close(model(x), float_math(x))
    packing = "avx512_bf16" in current_device("tvm").fingerprint["flags"]
    assert stats.packs == (4 if packing else 0)  # W and scales of each layer, once


def test_quantized_linear_follows_the_backends_database_and_tuning(tmp_path):
    from autotile.db.store import TuningDB
    from autotile.nn import QuantizedLinear

    torch.manual_seed(0)
    layer = QuantizedLinear.from_linear(nn.Linear(64, 32), weight_dtype="int4", group_size=32, asymmetric=True)
    x, db = torch.randn(1, 64), tmp_path / "q.db"
    with torch.no_grad():
        close(compile_model(layer, tuning="tune", trials_per_workload=1, db=db, progress=False)(x), layer(x))
    assert stats.tuned == ["qgemm_1x32x64_float32_int4_g32_asym_bias"]
    with TuningDB(db) as database:
        assert {r["workload"] for r in database.measurements(status="ok")} == set(stats.tuned)


class Int8WeightOnlyLinear(nn.Module):
    """What torchao's Int8WeightOnlyConfig leaves in the graph on CPU: x @ float(W_int8)^T * scale + bias."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        scale = linear.weight.detach().abs().amax(1) / 127
        self.register_buffer("w", torch.round(linear.weight.detach() / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("b", linear.bias.detach().clone())

    def forward(self, x):
        return torch.mm(x, self.w.t().float()) * self.scale + self.b


def test_int8_weight_only_linear_runs_the_quantized_kernel():
    torch.manual_seed(0)
    layer = Int8WeightOnlyLinear(nn.Linear(64, 48))
    fn = lambda x: F.relu(layer(x))
    x = torch.randn(10, 64)
    with torch.no_grad():
        close(compile_model(fn)(x), fn(x))
    assert stats.replaced == {"qlinear": 1} and stats.left == {}
    assert list(stats.workloads) == ["qgemm_16x48x64_float32_int8_perchannel_sym_bias+relu"]


def test_torchao_int8_weight_only_is_recognized():
    torchao = pytest.importorskip("torchao.quantization")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48)).eval()
    torchao.quantize_(model, torchao.Int8WeightOnlyConfig())
    x = torch.randn(10, 64)
    with torch.no_grad():
        close(compile_model(model)(x), model(x))
    assert stats.replaced == {"qlinear": 1}


def torchao_intx(bits: int, granularity: str, *layers, mapping="SYMMETRIC") -> nn.Module:
    """nn.Sequential(*layers), eval, its linears quantized by torchao's IntxWeightOnlyConfig (what int4 weight-only
    is on CPU in torchao 0.18); granularity "group32" or "channel"; mapping "SYMMETRIC" or "ASYMMETRIC"."""
    quantization = pytest.importorskip("torchao.quantization")
    from torchao.quantization.granularity import PerAxis, PerGroup

    model = nn.Sequential(*layers).eval()
    config = quantization.IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"),
                                               granularity=PerGroup(32) if granularity == "group32" else PerAxis(0),
                                               mapping_type=getattr(quantization.MappingType, mapping))
    quantization.quantize_(model, config)
    return model


@pytest.mark.parametrize("bits, granularity, mapping, bias, shape, activation, fallback, workload", [
    (4, "group32", "SYMMETRIC", True, (10, 64), None, "inductor", "qgemm_16x48x64_float32_int4_g32_asym_bias"),
    (4, "group32", "ASYMMETRIC", False, (2, 5, 64), nn.ReLU, "eager", "qgemm_16x48x64_float32_int4_g32_asym_relu"),
    (4, "channel", "SYMMETRIC", True, (3, 64), nn.GELU, "inductor",
     "qgemm_4x48x64_float32_int4_perchannel_asym_bias+gelu"),
    (8, "group32", "SYMMETRIC", False, (3, 64), nn.SiLU, "inductor", "qgemm_4x48x64_float32_int8_g32_asym_silu"),
])
def test_torchao_intx_weight_only_is_recognized(bits, granularity, mapping, bias, shape, activation, fallback,
                                                workload):
    """Every case checks the kernel against eager torchao; torchao's zero points are zero unless ASYMMETRIC."""
    torch.manual_seed(0)
    layers = [nn.Linear(64, 48, bias=bias), *([activation()] if activation else [])]
    model = torchao_intx(bits, granularity, *layers, mapping=mapping)
    x = torch.randn(*shape)
    with torch.no_grad():
        close(compile_model(model, fallback=fallback)(x), model(x))
    assert stats.replaced == {"qlinear": 1} and stats.left == {}
    assert list(stats.workloads) == [workload]


def test_torchao_weight_width_the_templates_refuse_stays_with_the_fallback():
    torch.manual_seed(0)
    model = torchao_intx(1, "group32", nn.Linear(64, 48))  # int1: the quantized templates take 2 to 8 bits
    x = torch.randn(3, 64)
    with torch.no_grad():
        close(compile_model(model)(x), model(x))
    assert stats.replaced == {} and stats.left == {"aten.addmm.default": 1}


class Outputs(nn.Module):
    """Each replaced op's result returned as is, so its dtype and strides are what a user observes."""

    def __init__(self):
        super().__init__()
        self.lin, self.conv = nn.Linear(16, 24), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x, img, q, k, v, a, b):
        return (self.lin(x), self.lin(x).transpose(0, 1), torch.bmm(a, b), torch.mm(a[0], b[0]).t(),
                self.conv(img), F.relu(self.conv(img.to(memory_format=torch.channels_last))),
                F.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_replaced_outputs_keep_eager_dtypes_and_strides():
    torch.manual_seed(0)
    model = Outputs().eval()
    args = (torch.randn(12, 16), torch.randn(1, 8, 10, 10), *torch.randn(3, 1, 2, 16, 8).unbind(0),
            torch.randn(3, 12, 16), torch.randn(3, 16, 20))
    compiled = torch.compile(model, backend="autotile")
    with torch.no_grad():
        want, got = model(*args), compiled(*args)
    # linear, bmm, mm, NCHW conv and both attentions replaced (the channels_last conv is left to the fallback)
    assert stats.replaced["attention"] == 2 and stats.replaced["gemm"] >= 3 and stats.replaced["conv2d"] >= 1
    for i, (w, g) in enumerate(zip(want, got)):
        close(g, w)
        assert (g.dtype, g.shape, g.stride()) == (w.dtype, w.shape, w.stride()), f"output {i}"


# --- plans: typed values, passed to the ops as stable text ------------------------------------------------------

PLANS = [
    GemmPlan("/tmp/a.db", "cached", GemmWorkload(16, 64, 32, trans_b=True, epilogue="bias,gelu", const_b=True),
             m_dim=1),
    GemmPlan("/tmp/a.db", "off", GemmWorkload(8, 24, 16, batch=3, trans_a=True), m_dim=None),
    Conv2dPlan("/tmp/a.db", "tune", Conv2dWorkload(1, 8, 8, 8, 8, 3, 3, padding=(1, 1), epilogue="bias,relu",
                                                   const_weight=True)),
    AttentionPlan("/tmp/a.db", "cached", AttentionWorkload(2, 4, 16, 16, causal=True), dynamic_batch=False,
                  dynamic_seq=True, out_layout="bshd"),
    LayerNormPlan("/tmp/a.db", "cached", LayerNormWorkload(16, 64, eps=1e-3), dynamic_rows=True),
    QLinearPlan("/tmp/a.db", "cached", QGemmWorkload(16, 48, 64, weight_dtype="int4", group_size=32, asymmetric=True),
                signed_bits=4, pack=("codes", "zeros")),
]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"{p.kind}-{p.workload.key}")
def test_plan_round_trips_through_its_encoding(plan):
    text = plan.encode()
    back = type(plan).decode(text)
    assert type(back) is type(plan) and back == plan
    assert back.encode() == text  # stable text: Inductor's FX graph cache keys on it
    assert json.loads(text)["kind"] == plan.kind


def test_plan_decoding_is_strict():
    plan = PLANS[0]
    raw = json.loads(plan.encode())
    with pytest.raises(AutotileError, match=r"gemm plan: unknown field\(s\) b_form; expected backend, db, m_dim"):
        GemmPlan.decode(json.dumps({**raw, "b_form": "t"}))
    with pytest.raises(AutotileError, match=r"gemm plan: missing field\(s\) m_dim"):
        GemmPlan.decode(json.dumps({k: v for k, v in raw.items() if k != "m_dim"}))
    with pytest.raises(AutotileError, match="expected a conv2d plan, got kind 'gemm'"):
        Conv2dPlan.decode(plan.encode())
    with pytest.raises(AutotileError, match="gemm workloads have no field"):
        GemmPlan.decode(json.dumps({**raw, "workload": {**raw["workload"], "tile": 8}}))
    with pytest.raises(AutotileError, match="must be the JSON text"):
        GemmPlan.decode("{not json")


def test_plan_fields_are_checked_when_built():
    with pytest.raises(AutotileError, match="attention plan: out_layout must be one of contiguous, bshd"):
        AttentionPlan("/tmp/a.db", "cached", AttentionWorkload(1, 2, 8, 8), dynamic_batch=False, dynamic_seq=False,
                      out_layout="nhwc")
    with pytest.raises(AutotileError, match="gemm plan: expected a gemm workload, got 'layernorm'"):
        GemmPlan("/tmp/a.db", "cached", LayerNormWorkload(4, 8), m_dim=None)
    with pytest.raises(AutotileError, match="qlinear plan: pack must name operands"):
        QLinearPlan("/tmp/a.db", "cached", PLANS[-1].workload, signed_bits=4, pack=("weight",))


def test_an_op_refuses_another_familys_plan():
    import autotile.dynamo.ops  # noqa: F401  (registers torch.ops.autotile.*)

    x, w = torch.randn(1, 8, 8, 8), torch.randn(8, 8, 3, 3)
    with pytest.raises(AutotileError, match="expected a conv2d plan, got kind 'gemm'"):
        torch.ops.autotile.conv2d(x, w, None, None, None, PLANS[0].encode())


def test_each_pattern_module_is_self_contained():
    """Each family's pattern lives in its package (ops/<op>/pattern.py) and imports dynamo's generic helpers, never
    another family's pattern; the pass tries qgemm before gemm (torchao's linears are mm / addmm too)."""
    import autotile.ops
    from autotile.dynamo.graph_pass import PATTERNS

    folder = Path(autotile.ops.__file__).parent
    modules = sorted(p.parent.name for p in folder.glob("*/pattern.py"))
    assert modules == ["attention", "conv2d", "gemm", "layernorm", "qgemm"]
    for name in modules:
        tree = ast.parse((folder / name / "pattern.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        others = [m for m in imported if m and re.match(r"autotile\.ops\.(\w+)\.pattern", m)]
        assert not others, name
    names = [p.name for p in PATTERNS]
    assert names == ["qlinear", "gemm", "attention", "conv2d", "layernorm"]
