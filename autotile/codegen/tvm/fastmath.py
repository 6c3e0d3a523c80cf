"""Vectorizable float32 erf, exp, tanh and sigmoid as plain TIR arithmetic.

LLVM lowers TVM's `erf`/`exp` intrinsics to scalar libm calls (`erff`, `expf`), 16 per
vector; these polynomial forms compile to straight-line vector FMAs instead.
"""

from tvm import tirx as tir


def _f32(value: float):
    return tir.const(value, "float32")


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
    x = tir.max(tir.min(x, _f32(4.0)), _f32(-4.0))
    x2 = x * x
    return x * _horner(x2, _ERF_NUMERATOR) / _horner(x2, _ERF_DENOMINATOR)


# Cephes expf: exp(x) = 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2]; 2^n built in the exponent bits.
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


def exp(x):
    x = tir.max(tir.min(x, _f32(88.3762626647949)), _f32(-87.3365478515625))
    n = tir.floor(x * _f32(1.44269504088896341) + _f32(0.5))
    r = x - n * _f32(0.693359375) + n * _f32(2.12194440e-4)
    p = _horner(r, _EXP_POLY) * r * r + r + _f32(1.0)
    two_n = tir.reinterpret("float32", tir.shift_left(tir.Cast("int32", n) + 127, 23))
    return p * two_n


def sigmoid(x):
    return _f32(1.0) / (_f32(1.0) + exp(-x))


def tanh(x):
    # tanh(x) = 1 - 2 / (exp(2x) + 1); exp saturates cleanly at both ends.
    return _f32(1.0) - _f32(2.0) / (exp(x * _f32(2.0)) + _f32(1.0))


def gelu(x):
    return _f32(0.5) * x * (_f32(1.0) + erf(x * _f32(0.7071067811865476)))


def gelu_tanh(x):
    inner = _f32(0.7978845608028654) * (x + _f32(0.044715) * x * x * x)
    return _f32(0.5) * x * (_f32(1.0) + tanh(inner))


def silu(x):
    return x * sigmoid(x)


def relu(x):
    return tir.max(x, _f32(0.0))


ACTIVATIONS = {"relu": relu, "gelu": gelu, "gelu_tanh": gelu_tanh, "silu": silu}
