"""The float32 kernels' vectorised exp, σ and tanh (_fastmath.h)."""
import numpy as np

from crnn import _cells, _loss


def ulps(got, want):
    """Distance in float32 units in the last place."""
    spacing = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


def test_exp_is_within_two_ulp_where_softmax_uses_it():
    # softmax calls exp(o - max(o)): arguments in (-inf, 0]
    x = np.concatenate([np.arange(-87.0, 0.0, 1e-4, dtype=np.float32),
                        np.float32([0.0, -1e-30, -1e-7, -0.5, -0.6931472])])
    got = x.copy()
    _loss._exp_shifted(got, 0.0)
    want = np.exp(x.astype(np.float64))
    assert ulps(got, want).max() <= 2.0


def test_exp_of_positive_arguments_and_the_shift():
    shifted = np.arange(5.0, 93.0, 1e-3, dtype=np.float32)
    got = shifted.copy()
    _loss._exp_shifted(got, 5.0)
    # the kernel subtracts in float32, as numpy does here
    want = np.exp((shifted - np.float32(5.0)).astype(np.float64))
    assert ulps(got, want).max() <= 2.0


def test_exp_underflows_to_zero_and_keeps_nan():
    got = np.float32([-87.5, -100.0, -1e30, -np.inf, np.nan])
    _loss._exp_shifted(got, 0.0)
    np.testing.assert_array_equal(got[:4], 0.0)
    assert np.isnan(got[4])


def test_float32_sigmoid_and_tanh_match_float64():
    """The LSTM kernel's float32 σ and tanh (_fastmath.h): within 4e-7 of
    float64 over [-40, 40] and at the special values; σ(-x) = 1 - σ(x) to
    the same accuracy."""
    x = np.concatenate([np.arange(-40.0, 40.0, 1e-3, dtype=np.float32),
                        np.float32([0.0, -0.0, 1e-30, -1e-30, 1e-7, 3e-4,
                                    -7.9e-4, 15.81, -15.82, 1e4, -1e4])])
    sigma, tanh = _cells._float32_activations(x)
    exact = x.astype(np.float64)
    assert np.abs(sigma - (0.5 + 0.5 * np.tanh(exact / 2))).max() <= 4e-7
    assert np.abs(tanh - np.tanh(exact)).max() <= 4e-7
    assert np.abs(sigma + _cells._float32_activations(-x)[0] - 1).max() <= 8e-7
    # tanh keeps tiny arguments (|x| < 4e-4) exactly, and both saturate
    np.testing.assert_array_equal(tanh[-11:-5], x[-11:-5])
    special = np.float32([np.inf, -np.inf])
    sigma, tanh = _cells._float32_activations(special)
    np.testing.assert_array_equal(sigma, [1, 0])
    np.testing.assert_array_equal(tanh, [1, -1])
    assert np.isnan(_cells._float32_activations(np.float32([np.nan]))[0][0])
