"""The CLI end to end, on a temp database, JSON on stdout: as a user runs it (a real subprocess) for a first tuning
run and its cache hit, the device and bad input; the other commands in this process (click's runner), where they
share the default session's worker processes instead of starting their own (seconds each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from autotile.cli import main
from autotile.ir import GemmWorkload


def autotile(*args, db=None, check=True, gpu=True, env=None):
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # this checkout's autotile, wherever pytest runs
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # torch then sees no GPU, as on a machine without one
    if db is not None:
        env["AUTOTILE_DB"] = str(db)
    proc = subprocess.run([sys.executable, "-m", "autotile.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"autotile {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return tmp_path_factory.mktemp("cli") / "cli.db"


def cli(*args, db=None, check=True):
    """`autotile ...` in this process; the result has its stdout, stderr and exit_code."""
    result = CliRunner().invoke(main, list(args), env={"AUTOTILE_DB": str(db)} if db is not None else None)
    if check and result.exit_code != 0:
        raise AssertionError(f"autotile {' '.join(args)} failed ({result.exit_code}):\n{result.stderr}"
                             f"{result.exception!r}")
    return result


def tune(*args, db):
    """`autotile tune ... --json` on the CPU: --backend tvm, since "auto" means Triton on a machine with a GPU."""
    return cli("tune", *args, "--backend", "tvm", "--json", db=db)


def refused(result, message: str) -> bool:
    """An error the CLI reports in one line (click's usage error), not an exception escaping it."""
    return result.exit_code == 2 and message in result.stderr and isinstance(result.exception, SystemExit)


@pytest.mark.slow
def test_tune_json_then_cache_hit(db):
    args = ("tune", "gemm", "--shape", "33x40x20", "--epilogue", "bias,relu", "--trials", "6", "--backend", "tvm",
            "--json")
    first = autotile(*args, db=db)
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert result["verified"] and not result["cached"] and result["trials"] == 6
    assert result["workload"] == "gemm_b1_33x40x20_float32_nn_bias+relu"
    assert result["backend"] == "tvm" and result["gflops"] > 0 and result["device"].startswith("cpu-")
    assert "tuning" in first.stderr  # progress and tables on stderr
    second = autotile(*args, db=db)  # a new process reads the first one's record
    cached = json.loads(second.stdout.strip().splitlines()[-1])
    assert cached["cached"] and cached["config"] == result["config"] and cached["trials"] == 6
    assert cached["tuning_seconds"] == pytest.approx(result["tuning_seconds"])


@pytest.mark.slow
def test_db_list_and_show(db):
    tune("gemm", "--shape", "8x8x8", "--trials", "2", db=db)
    listed = json.loads(cli("db", "list", "--json", db=db).stdout)
    keys = {row["workload"] for row in listed}
    assert {"gemm_b1_8x8x8_float32_nn_none", "gemm_b1_33x40x20_float32_nn_bias+relu"} <= keys
    shown = cli("db", "show", "gemm_b1_8x8", db=db).stdout
    assert "gemm_b1_8x8x8_float32_nn_none" in shown and "2 measurements" in shown
    ambiguous = cli("db", "show", "gemm_b1_", db=db, check=False)
    assert refused(ambiguous, "ambiguous")


@pytest.mark.slow
def test_tune_gemm_with_a_constant_weight(db):
    """--const-b: the workload the torch.compile backend tunes for a linear (B packed once, not timed)."""
    out = json.loads(tune("gemm", "--shape", "20x40x33", "--layout", "nt", "--const-b", "--trials", "4", db=db).stdout)
    assert out["workload"] == "gemm_b1_20x40x33_float32_nt_none_constB" and out["verified"] and out["trials"] == 4


def test_tune_gemm_with_a_layernorm_prologue(db):
    """--prologue layernorm: a pre-norm block's LayerNorm and the linear after it, one workload; a batched one is
    refused by name, without a traceback."""
    args = ("gemm", "--shape", "9x40x20", "--layout", "nt", "--const-b", "--epilogue", "bias", "--prologue",
            "layernorm", "--eps", "1e-6")
    out = json.loads(tune(*args, "--trials", "3", db=db).stdout)
    assert out["workload"] == "gemm_b1_9x40x20_float32_nt_bias_constB_layernorm-eps1e-06" and out["verified"]
    bad = cli("tune", *args, "--batch", "2", "--backend", "tvm", db=db, check=False)
    assert refused(bad, "batch 1 and trans_a false")


def test_tune_gemm_of_a_bf16_linear_and_a_bad_addend_dtype(db):
    """--addend-dtype: a bfloat16 model's linear, with its bias in bfloat16, as the backend tunes it; an addend dtype
    other than float32 or the inputs' is refused by name, without a traceback."""
    args = ("gemm", "--shape", "9x40x20", "--dtype", "bf16", "--layout", "nt", "--const-b", "--epilogue", "bias")
    out = json.loads(tune(*args, "--addend-dtype", "bf16", "--trials", "2", db=db).stdout)
    assert out["workload"] == "gemm_b1_9x40x20_bfloat16_nt_bias_constB_add-bfloat16" and out["verified"]
    bad = cli("tune", *args, "--addend-dtype", "float16", "--backend", "tvm", db=db, check=False)
    assert refused(bad, "addend_dtype (bias and residual) must be float32 or the inputs' dtype bfloat16")


@pytest.mark.slow
def test_tune_bmm_is_the_batched_gemm_workload(db):
    """`tune bmm --shape BxMxNxK` and `tune gemm --batch B` name one workload: the second is a cache hit."""
    first = json.loads(tune("bmm", "--shape", "3x9x20x7", "--trials", "3", db=db).stdout)
    assert first["workload"] == "gemm_b3_9x20x7_float32_nn_none" and first["verified"]
    again = json.loads(tune("gemm", "--shape", "9x20x7", "--batch", "3", db=db).stdout)
    assert again["cached"] and again["config"] == first["config"]
    shared = json.loads(tune("bmm", "--shape", "3x9x20x7", "--shared", "b", "--trials", "2", db=db).stdout)
    assert shared["workload"] == "gemm_b3_9x20x7_float32_nn_none_sharedB" and not shared["cached"]


@pytest.mark.slow
def test_tune_qgemm(db):
    out = json.loads(tune("qgemm", "--shape", "5x24x64", "--weight-dtype", "int5", "--group-size", "32",
                          "--asymmetric", "--trials", "2", db=db).stdout)
    assert out["workload"] == "qgemm_5x24x64_float32_int5_g32_asym_none" and out["verified"]


def test_device_prints_key_and_fingerprint():
    out = autotile("device", "--json").stdout
    d = json.loads(out)
    assert d["key"].startswith("cpu-") and d["fingerprint"]["mcpu"] in d["key"]


@pytest.mark.parametrize("args, message", [
    (["--shape", "12x0x4"], "N must be a positive integer"),
    (["--shape", "12x4"], "must have the form MxNxK"),
    (["--shape", "4x4x4", "--epilogue", "bias,swish"], "unknown epilogue op 'swish'"),
    (["--shape", "4x4x4", "--dtype", "float99"], "unknown dtype 'float99'"),
    (["--shape", "4x4x4", "--backend", "triton"], "needs a CUDA GPU"),
    (["--shape", "1000000x1000000x1000000"], "operand A (1000000 x 1000000) would have 1,000,000,000,000 elements; "
                                             "kernels index operands with 32-bit integers, so one holds at most"),
])
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    proc = autotile("tune", "gemm", *args, db=tmp_path / "x.db", check=False, gpu=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["bmm", "--shape", "3x9x20"], "must have the form BxMxNxK"),
    (["conv2d", "--input", "1x3x8x8", "--weight", "4x3x3x3", "--stride", "2x"], "--stride '2x' must be N or HxW"),
    (["conv2d", "--input", "1x3x8", "--weight", "4x3x3x3"], "must have the form NxCxHxW"),
    (["qgemm", "--shape", "4x8x64", "--weight-dtype", "int4", "--act-dtype", "int8"],
     "int8 activations need int8 weights"),
    (["qgemm", "--shape", "4x8x64", "--group-size", "-1"], "--group-size must be 0"),
    (["conv2d", "--input", "64x256x2048x2048", "--weight", "64x256x3x3"], "2**31 - 1 = 2,147,483,647 elements"),
])
def test_bad_shapes_of_other_ops_are_one_clear_line(args, message, tmp_path):
    proc = autotile("tune", *args, db=tmp_path / "x.db", check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_model_quality_report(db):
    """The report is the cross-validation of the workload's recorded measurements, with the folds and k asked for."""
    from autotile.costmodel import cross_validate
    from autotile.db.store import TuningDB
    from autotile.ops import space_for

    tune("gemm", "--shape", "33x40x20", "--epilogue", "bias,relu", "--trials", "10", "--retune", db=db)
    report = json.loads(cli("db", "model-quality", "gemm_b1_33x40x20", "--folds", "2", "-k", "3", "--json",
                            db=db).stdout)
    workload = GemmWorkload(33, 40, 20, epilogue="bias,relu")
    with TuningDB(db) as database:
        records = database.measurements(workload=workload.key)
    assert len(records) == 16  # 6 trials, then 10 retuned: 8 per training fold, enough to train the model
    space = space_for(workload)
    X = [space.features(space.config_type.from_dict(r["config"])) for r in records]
    latency = [r["latency_us"] if r["status"] == "ok" else float("inf") for r in records]
    expected = cross_validate(X, latency, folds=2, k=3)
    assert report == {"workload": workload.key, "measurements": 16, **expected}
    too_few = cli("db", "model-quality", "gemm_b1_8x8x8", "--folds", "4", db=db, check=False)
    assert refused(too_few, "8 are needed for 4 folds")
