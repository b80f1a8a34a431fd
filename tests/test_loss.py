"""The float32 softmax's vectorised exp (_fastmath.h crnn_expf)."""
import numpy as np

from crnn import _loss


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
