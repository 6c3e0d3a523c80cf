"""Kernels take any contiguous tensor, wherever it starts: views into larger tensors (`x[1:]`, `split`, `narrow`)
begin at any element, while TVM's kernels assume 64-byte aligned operands (and fault on others). Every family's
kernel, built once, is called with each operand (and the output) at every misalignment its dtype allows."""

import pytest
import torch

import autotile
from autotile.db.device import cpu_fingerprint
from autotile.ir import GemmWorkload
from autotile.ir.reference import compare, poisoned_output, random_inputs, reference
from autotile.ops.attention.workload import AttentionWorkload
from autotile.ops.conv2d.workload import Conv2dWorkload
from autotile.ops.layernorm.workload import LayerNormWorkload
from autotile.ops.qgemm.workload import QGemmWorkload

FLAGS = set(cpu_fingerprint()["flags"])
needs_bf16 = pytest.mark.skipif("avx512_bf16" not in FLAGS, reason="the bf16 kernels use vdpbf16ps, which this CPU "
                                "lacks (no avx512_bf16)")
needs_vnni = pytest.mark.skipif("avx512_vnni" not in FLAGS, reason="the W8A8 kernel uses vpdpbusd, which this CPU "
                                "lacks (no avx512_vnni)")

# Small shapes, odd in M, with rows of whole vectors: the kernels use aligned vector moves (and fault on a
# misaligned operand) only where offsets are multiples of 64 bytes.
WORKLOADS = [
    GemmWorkload(13, 64, 32, epilogue="bias,residual"),
    GemmWorkload(11, 48, 32, trans_a=True, trans_b=True, const_b=True),  # B packed ahead by pack_B
    GemmWorkload(9, 32, 16, batch=3, trans_a=True, broadcast="b"),  # bmm, tn
    GemmWorkload(13, 48, 32, trans_b=True, const_b=True, epilogue="bias", prologue="layernorm"),  # LN(A) packed
    pytest.param(GemmWorkload(13, 64, 32, dtype="bfloat16", trans_b=True, epilogue="bias"), marks=needs_bf16),
    pytest.param(GemmWorkload(13, 64, 32, dtype="bfloat16", trans_b=True, const_b=True, prologue="layernorm"),
                 marks=needs_bf16),  # LN(A) rounded to bf16 in the bits pack
    GemmWorkload(7, 48, 32, dtype="float16", epilogue="residual,cast:float32"),
    Conv2dWorkload(2, 5, 8, 16, 6, 3, 3, padding=1, epilogue="bias,residual"),
    Conv2dWorkload(1, 32, 7, 5, 32, 1, 1, layout="nhwc", const_weight=True, epilogue="bias"),
    AttentionWorkload(2, 2, 13, 32, kv_heads=1, causal=True),
    LayerNormWorkload(7, 64),
    LayerNormWorkload(7, 64, dtype="bfloat16"),
    QGemmWorkload(5, 64, 128, weight_dtype="int4", group_size=32, asymmetric=True, epilogue="bias"),
    pytest.param(QGemmWorkload(5, 64, 128, weight_dtype="int4", act_dtype="bfloat16", group_size=64,
                               asymmetric=True), marks=needs_bf16),  # vdpbf16ps: W, scales, zeros packed ahead
    QGemmWorkload(3, 32, 64, weight_dtype="int8", group_size=None, epilogue="residual"),
    pytest.param(QGemmWorkload(6, 48, 64, weight_dtype="int8", act_dtype="int8", epilogue="bias"), marks=needs_vnni),
]


def placed(t: torch.Tensor, offset: int) -> torch.Tensor:
    """A contiguous copy of `t` starting `offset` bytes past a 64-byte boundary: a view into a larger tensor,
    whose other elements hold a sentinel (NaN, or 0x5A bytes) that a kernel must leave alone."""
    size = t.element_size()
    base = torch.empty(t.numel() + 128 // size, dtype=t.dtype)
    base.view(torch.uint8).fill_(0x5A) if not t.dtype.is_floating_point else base.fill_(float("nan"))
    skip = (-base.data_ptr() % 64 + offset) // size
    view = base[skip: skip + t.numel()].view(t.shape).copy_(t)
    assert view.data_ptr() % 64 == offset and view.is_contiguous()
    return view


def untouched_outside(view: torch.Tensor) -> bool:
    base = torch.empty(0, dtype=view.dtype).set_(view.untyped_storage())
    start = view.storage_offset()
    rest = torch.cat([base[:start], base[start + view.numel():]])
    return bool(rest.isnan().all()) if rest.dtype.is_floating_point else bool((rest.view(torch.uint8) == 0x5A).all())


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.key)
def test_every_operand_at_every_misalignment(workload):
    kernel = autotile.kernel(workload)  # the default config, built and verified once
    inputs = random_inputs(workload, seed=3)
    expected = reference(workload, *inputs)
    names = list(workload.operand_shapes())

    def check(args, out, what):
        result = kernel(*args, out=out)
        assert result is out, what
        verdict = compare(workload, out, expected)
        assert verdict.ok, f"{workload.key}, {what}: {verdict.reason}"
        assert untouched_outside(out), f"{workload.key}, {what}: wrote outside the output"

    for index, name in enumerate(names):
        template = inputs[index] if index < len(inputs) else poisoned_output(workload)
        size = template.element_size()
        for offset in range(size, 64, size):  # 1..15 elements for fp32, 1..31 for bf16, 1..63 for bytes
            moved = placed(template, offset)
            if index < len(inputs):
                check([*inputs[:index], moved, *inputs[index + 1:]], placed(poisoned_output(workload), 0),
                      f"{name} at +{offset} bytes")
                assert torch.equal(moved, inputs[index])  # read, never written
            else:
                check(inputs, moved, f"out at +{offset} bytes")
    # Everything misaligned at once, the output too.
    check([placed(t, t.element_size()) for t in inputs], placed(poisoned_output(workload), 4), "all at +1 element")


def test_weights_packed_ahead_from_a_misaligned_tensor():
    """pack_operand (a layer's weight packed once) reads the weight through the same realignment."""
    w = GemmWorkload(11, 48, 32, trans_b=True, const_b=True)
    kernel = autotile.kernel(w)
    a, b = random_inputs(w, seed=4)
    expected = reference(w, a, b)
    for offset in (4, 36, 60):
        packed = kernel.pack_operand("B", placed(b, offset))
        assert packed.tensor.data_ptr() % 64 == 0
        assert compare(w, kernel(a, packed), expected).ok


def test_strided_views_at_any_address():
    """Attention reads q, k, v and writes out through strides (views of a fused qkv projection, eager's output
    layout): such views, at misaligned addresses, are read and written in place of contiguous copies."""
    w = AttentionWorkload(2, 2, 13, 32)
    kernel = autotile.kernel(w)
    q, k, v = random_inputs(w, seed=5)
    expected = reference(w, q, k, v)

    def strided(t, skip):  # (B, S, H, D + 7) storage viewed as (B, H, S, D), starting `skip` elements in
        b, h, s, d = t.shape
        view = torch.full((b, s, h, d + 7), float("nan"))[..., skip: skip + d].transpose(1, 2)
        return view.copy_(t)

    for skip in range(8):
        out = strided(torch.zeros_like(q), skip).fill_(float("nan"))
        qs, ks, vs = strided(q, skip), strided(k, 7 - skip), strided(v, skip // 2)
        assert kernel(qs, ks, vs, out=out) is out and not out.is_contiguous()
        assert compare(w, out, expected).ok, f"views {skip} elements in"


def test_strided_view_spanning_past_int32_offsets(tmp_path):
    """A view whose elements lie 2**31 or more apart (a slice of a huge tensor) is beyond the int32 offsets the
    kernel computes with: it is read through a compact copy. The huge tensor is a sparse file, mapped."""
    w = AttentionWorkload(2, 1, 8, 16)
    kernel = autotile.kernel(w)
    q, k, v = random_inputs(w, seed=6)
    path = tmp_path / "huge.bin"
    size = 2**31 + 4096
    try:
        with open(path, "wb") as f:
            f.truncate(size * 4)
        huge = torch.from_file(str(path), shared=True, size=size, dtype=torch.float32)
    except (OSError, RuntimeError) as e:
        pytest.skip(f"no 8 GiB sparse file here: {e}")
    far = huge.as_strided(q.shape, (2**31, 128, 16, 1)).copy_(q)  # batch 1 starts 8 GiB after batch 0
    assert compare(w, kernel(far, k, v), reference(w, q, k, v)).ok
    del far, huge
    path.unlink()
