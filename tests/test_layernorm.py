"""Layer norm: the workload, its reference, the config space, real TVM builds against the reference, the CLI."""

import random

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from tvm_kernels import check

from autotile.cli import main
from autotile.db.store import TuningDB
from autotile.errors import AutotileError
from autotile.ir.reference import random_inputs
from autotile.ops import space_for, workload_from_dict
from autotile.ops.layernorm.rows import LayerNormConfig, LayerNormSpace
from autotile.ops.layernorm.workload import LayerNormWorkload


def test_key_and_round_trip():
    w = LayerNormWorkload(128, 768)
    assert w.key == "layernorm_128x768_eps1e-05_float32"
    assert workload_from_dict(w.to_dict()) == w
    assert LayerNormWorkload(4, 8, eps=1e-6).key == "layernorm_4x8_eps1e-06_float32"
    bf16 = LayerNormWorkload(4, 8, dtype="bf16")
    assert bf16.key == "layernorm_4x8_eps1e-05_bfloat16" and workload_from_dict(bf16.to_dict()) == bf16


@pytest.mark.parametrize("kwargs, message", [
    (dict(rows=0, cols=8), "rows must be a positive integer"),
    (dict(rows=2, cols=8, eps=-1.0), "eps must be a finite number >= 0"),
    (dict(rows=2, cols=8, eps=float("nan")), "eps must be a finite number >= 0"),
    (dict(rows=2, cols=8, dtype="int8"), "not supported by the layernorm template"),
])
def test_bad_workloads_are_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(AutotileError, match=message):
        LayerNormWorkload(**kwargs)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_reference_is_torchs_layer_norm_in_float64(dtype):
    w = LayerNormWorkload(6, 50, eps=1e-3, dtype=dtype)
    x, weight, bias = random_inputs(w, 0)
    assert x.dtype == weight.dtype == bias.dtype == getattr(torch, dtype)
    expected = F.layer_norm(x.double(), (50,), weight.double(), bias.double(), eps=1e-3)
    torch.testing.assert_close(w.reference(x, weight, bias), expected, rtol=1e-12, atol=1e-12)


def test_canonical_configs_fit_the_row():
    space = LayerNormSpace(LayerNormWorkload(3, 40))
    c = space.canonical(LayerNormConfig(vec=16, unroll=8, grain=32))
    assert (c.vec, c.unroll, c.grain) == (16, 2, 3)  # 2 whole vectors of 16, 3 rows
    assert space.canonical(LayerNormConfig(vec=16, unroll=4, grain=1)).vec == 16
    assert LayerNormSpace(LayerNormWorkload(2, 5)).default().vec == 4


@pytest.mark.parametrize("rows, cols", [(128, 768), (7, 40), (3, 5), (1, 1)])
def test_default_kernel_matches_the_reference(rows, cols):
    w = LayerNormWorkload(rows, cols)
    check(w, space_for(w).default())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sampled_configs_match_the_reference(dtype):
    w = LayerNormWorkload(9, 200, eps=1e-2, dtype=dtype)  # whole vectors plus a tail, rows not a multiple of the grain
    space = LayerNormSpace(w)
    rng = random.Random(0)
    configs = {space.sample(rng) for _ in range(12)}
    assert len(configs) >= 4
    for config in configs:
        check(w, config)


# Half a unit in the last place, relative: the most one round-to-nearest of the output may add.
HALF_ULP = {"bfloat16": 2.0**-8, "float16": 2.0**-11}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("rows, cols", [(128, 768), (13, 97), (1, 131), (5, 1)])
def test_16_bit_kernels_round_the_exact_layer_norm_once(dtype, rows, cols):
    """x, weight, bias and out in the 16-bit type, the math in float32: the output is the float64 layer norm of the
    16-bit values, rounded once (truncating, or rounding twice, would miss by up to a whole unit)."""
    w = LayerNormWorkload(rows, cols, dtype=dtype)
    kernel = check(w, space_for(w).default())
    x, weight, bias = random_inputs(w, 0)
    storage = torch.empty(rows * cols + 1, dtype=x.dtype)
    x = storage[1:].view(rows, cols).copy_(x)  # a view 2 bytes into its storage: misaligned for the kernel
    out = kernel(x, weight, bias)
    assert out.dtype == x.dtype
    exact = F.layer_norm(x.double(), (cols,), weight.double(), bias.double(), eps=w.eps)
    error = (out.double() - exact).abs()
    assert (error <= HALF_ULP[dtype] * exact.abs() + 1e-4).all(), float((error / exact.abs()).max())


def test_kernel_refuses_wrong_shapes():
    w = LayerNormWorkload(4, 16)
    kernel = check(w, space_for(w).default())
    with pytest.raises(AutotileError, match="weight has shape"):
        kernel(torch.randn(4, 16), torch.randn(8), torch.randn(16))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cli_tunes_a_layer_norm_into_the_database(tmp_path, dtype):
    db = tmp_path / "t.db"
    result = CliRunner().invoke(main, ["tune", "layernorm", "--shape", "8x48", "--dtype", dtype, "--trials", "3",
                                       "--backend", "tvm", "--db", str(db)])
    assert result.exit_code == 0, result.output
    with TuningDB(db) as database:
        rows = database.measurements(status="ok")
    assert {r["workload"] for r in rows} == {f"layernorm_8x48_eps1e-05_{dtype}"} and rows
    bad = CliRunner().invoke(main, ["tune", "layernorm", "--shape", "8x0", "--db", str(db)])
    assert bad.exit_code != 0 and "C must be a positive integer" in bad.output
