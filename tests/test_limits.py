"""Shapes too large for the kernels are refused up front with an error naming the limit: operands past the 32-bit
indices kernels use (TVM would fail deep in its compiler, or build a kernel whose offsets wrap around), buffers a
config would allocate past them, and operands larger than the memory of the device that would run them."""

import pytest

import autotile
import autotile.backends.fit
from autotile.errors import AutotileError
from autotile.ir import GemmWorkload
from autotile.ir.workload import MAX_OPERAND_ELEMENTS
from autotile.ops import space_for, tvm_schedule
from autotile.ops.attention.workload import AttentionWorkload
from autotile.ops.conv2d.workload import Conv2dWorkload
from autotile.ops.layernorm.workload import LayerNormWorkload
from autotile.ops.qgemm.workload import QGemmWorkload

LIMIT = "at most 2**31 - 1 = 2,147,483,647 elements"


@pytest.mark.parametrize("make, operand", [
    (lambda: GemmWorkload(10**6, 10**6, 10**6), "operand A (1000000 x 1000000) would have 1,000,000,000,000 elements"),
    (lambda: GemmWorkload(16, 65536, 32768, trans_b=True), "operand B (65536 x 32768) would have 2,147,483,648"),
    (lambda: GemmWorkload(65536, 32768, 16), "operand C (65536 x 32768)"),
    (lambda: GemmWorkload(1024, 1024, 64, batch=2048, broadcast="b"), "operand C (2048 x 1024 x 1024)"),
    (lambda: GemmWorkload(1024, 1024, 64, batch=2048, epilogue="residual", dtype="bf16"), "operand residual"),
    (lambda: Conv2dWorkload(64, 256, 2048, 2048, 64, 3, 3, padding=1), "operand input (64 x 256 x 2048 x 2048)"),
    (lambda: Conv2dWorkload(1, 16, 4, 4, 2**20, 48, 48, padding=24), "operand weight (1048576 x 16 x 48 x 48)"),
    (lambda: AttentionWorkload(1, 8, 16, 128, seq_kv=2**21), "operand k (1 x 8 x 2097152 x 128)"),
    (lambda: LayerNormWorkload(2**21, 1024), "operand x (2097152 x 1024)"),
    (lambda: QGemmWorkload(8, 2**20, 2**13, weight_dtype="int8", act_dtype="int8"), "operand W (1048576 x 8192)"),
    (lambda: QGemmWorkload(8, 2**18, 2**13, weight_dtype="int4", group_size=1), "operand scales (262144 x 8192)"),
])
def test_operands_past_32_bit_indices_are_refused(make, operand):
    with pytest.raises(AutotileError, match="32-bit integers") as error:
        make()
    assert operand in str(error.value) and LIMIT in str(error.value)


def test_shapes_up_to_the_limit_are_workloads():
    assert GemmWorkload(65535, 16, 32768).operand_shapes()["A"] == (65535, 32768)  # 2**31 - 32768 elements
    assert LayerNormWorkload(MAX_OPERAND_ELEMENTS, 1).rows == MAX_OPERAND_ELEMENTS
    assert QGemmWorkload(8, 2**19 - 1, 2**13, weight_dtype="int4").operand_shapes()["W"] == (2**19 - 1, 2**12)
    AttentionWorkload(1, 8, 16, 128, seq_kv=2**21 - 1)


def test_the_kernel_api_refuses_the_issue_shape(tmp_path):
    with pytest.raises(AutotileError, match="operand A .* 1,000,000,000,000 elements"):
        autotile.kernel(GemmWorkload(10**6, 10**6, 10**6), db=tmp_path / "x.db")


def test_operands_larger_than_the_device_memory_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(autotile.backends.fit, "device_memory", lambda kind: 2**30)
    w = GemmWorkload(16384, 16384, 8192)  # 512 MiB + 512 MiB in, 1 GiB out
    db = tmp_path / "x.db"
    for call in (lambda: autotile.kernel(w, db=db), lambda: autotile.tune(w, trials=1, db=db)):
        with pytest.raises(AutotileError, match=r"operands take 2\.0 GiB, more than the 1\.0 GiB of memory"):
            call()


def test_this_machine_memory_is_known():
    assert autotile.backends.fit.device_memory("cpu") > 2**30


def test_a_config_whose_padded_buffers_pass_32_bit_indices_is_a_clear_error():
    """Operands under the limit, but the accumulator the default config pads to whole tiles is over it."""
    w = GemmWorkload(65535, 32767, 16)
    with pytest.raises(AutotileError, match=r"needs a buffer mm \(65538 x 32768\) of 2,147,549,184 elements"):
        tvm_schedule(w, space_for(w).default())
