"""Vectorizable float32 erf, exp, tanh and sigmoid as plain TIR arithmetic.

LLVM lowers TVM's `erf`/`exp` intrinsics to scalar libm calls (`erff`, `expf`), 16 per
vector; these polynomial forms compile to straight-line vector FMAs instead.
"""

from tvm import tirx as tir


def _f32(value: float):
    return tir.const(value, "float32")


def let(value, body):
    """body(v) with v bound once to value: without it, nested uses copy whole expression trees
    (gelu of x uses x three times), and a chain of activations grows exponentially."""
    if isinstance(value, (tir.Var, tir.FloatImm)):
        return body(value)
    var = tir.Var("t", "float32")  # every value these functions bind is float32
    return tir.Let(var, value, body(var))


def _horner(x, coefficients):
    acc = _f32(coefficients[0])
    for c in coefficients[1:]:
        acc = acc * x + _f32(c)
    return acc


# Rational approximation of erf on [-4, 4] (Eigen's generic_fast_erf_float, also TVM's
# fast_erf); |erf(4)| rounds to 1 in float32, so clamping loses nothing. Max error ~1e-7.
_ERF_NUMERATOR = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
                  -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_DENOMINATOR = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                    -7.37332916720468e-03, -1.42647390514189e-02)


def erf(x):
    def body(x):
        return let(x * x, lambda x2: x * _horner(x2, _ERF_NUMERATOR) / _horner(x2, _ERF_DENOMINATOR))

    return let(tir.max(tir.min(x, _f32(4.0)), _f32(-4.0)), body)


# Cephes expf: exp(x) = 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2]; 2^n built in the exponent bits.
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


def exp(x):
    def reduced(x, n):
        two_n = tir.reinterpret("float32", tir.shift_left(tir.Cast("int32", n) + 127, 23))
        r = x - n * _f32(0.693359375) + n * _f32(2.12194440e-4)
        return let(r, lambda r: (_horner(r, _EXP_POLY) * r * r + r + _f32(1.0)) * two_n)

    def body(x):
        return let(tir.floor(x * _f32(1.44269504088896341) + _f32(0.5)), lambda n: reduced(x, n))

    return let(tir.max(tir.min(x, _f32(88.3762626647949)), _f32(-87.3365478515625)), body)


def sigmoid(x):
    return _f32(1.0) / (_f32(1.0) + exp(-x))


def tanh(x):
    # tanh(x) = 1 - 2 / (exp(2x) + 1); exp saturates cleanly at both ends.
    return _f32(1.0) - _f32(2.0) / (exp(x * _f32(2.0)) + _f32(1.0))


def gelu(x):
    return let(x, lambda x: _f32(0.5) * x * (_f32(1.0) + erf(x * _f32(0.7071067811865476))))


def gelu_tanh(x):
    def body(x):
        inner = _f32(0.7978845608028654) * (x + _f32(0.044715) * x * x * x)
        return _f32(0.5) * x * (_f32(1.0) + tanh(inner))

    return let(x, body)


def silu(x):
    return let(x, lambda x: x * sigmoid(x))


def relu(x):
    return tir.max(x, _f32(0.0))


ACTIVATIONS = {"relu": relu, "gelu": gelu, "gelu_tanh": gelu_tanh, "silu": silu}


def to_bfloat16(x):
    """float32 -> bfloat16, rounding to nearest even, in integer arithmetic.

    TVM legalizes a bf16 cast by repeating its operand, which breaks on let-bound epilogues;
    doing the rounding here keeps the operand used once.
    """

    def body(bits):
        rounding = tir.bitwise_and(tir.shift_right(bits, tir.const(16, "uint32")), tir.const(1, "uint32"))
        rounded = tir.shift_right(bits + rounding + tir.const(0x7FFF, "uint32"), tir.const(16, "uint32"))
        return tir.reinterpret("bfloat16", tir.Cast("uint16", rounded))

    var = tir.Var("bits", "uint32")
    return tir.Let(var, tir.reinterpret("uint32", x), body(var))


def bf16_bits(x):
    """float32 -> the bits (uint16) of the nearest bfloat16 (ties to even; infinities stay infinite)."""
    u = tir.reinterpret("uint32", x)
    one, sixteen = tir.const(1, "uint32"), tir.const(16, "uint32")
    return ((u + tir.const(0x7FFF, "uint32") + ((u >> sixteen) & one)) >> sixteen).astype("uint16")


def cast(x, dtype: str):
    return to_bfloat16(x) if dtype == "bfloat16" else x.astype(dtype)


def widen(x, dtype: str | None = None):
    """float32 of a float32, bfloat16 (its bits shifted: exact, and no bf16 legalization) or float16 value; `dtype`
    names x's type where x has none to read (a load inside TVMScript)."""
    from autotile.codegen.tvm.intrinsics import bf16_bits_to_float

    dt = dtype or str(x.dtype)
    if dt == "bfloat16":
        return bf16_bits_to_float(tir.reinterpret("uint16", x))
    return x if dt == "float32" else x.astype("float32")


def apply_epilogue(x, ops, extra: dict, channel, index, out_dtype: str = "float32"):
    """x after the fused epilogue `ops`: bias[channel], residual[index], activations in order; then cast to
    out_dtype (a "cast:" op only names it). A 16-bit bias or residual is widened as it is read."""
    for op in ops:
        if op == "bias":
            x = x + widen(extra["bias"][channel])
        elif op == "residual":
            x = x + widen(extra["residual"][index])
        elif not op.startswith("cast:"):
            x = ACTIVATIONS[op](x)
    return x if out_dtype == "float32" else cast(x, out_dtype)
