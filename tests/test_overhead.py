"""The per-call shortcuts of the Python facade and the driver's glue.

Small calls skip work that is provably redundant: the model's lane lists are
built once, a batch without lengths reuses its (order, lengths) arrays, the
driver copies final states and gradients with memcpy and sums dc itself.
These tests pin what each shortcut must keep: fresh result arrays, the
model's own arrays after copies, the same numbers as the long way, the same
errors."""
import copy
import pickle

import numpy as np
import pytest

import crnn
from crnn import _inputs

CELLS = [crnn.RNN, crnn.LSTM, crnn.GRU]


def batch(seed=0, n=3, steps=7, features=5, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, steps, features)).astype(dtype)
    y = rng.integers(0, 4, size=(n, steps))
    return X, y


@pytest.mark.parametrize("cell", CELLS)
def test_results_are_fresh_arrays(cell):
    """Outputs, states and gradients are the caller's: a second call does
    not write into the first call's arrays."""
    model = cell(5, 6, 4, seed=0)
    X, y = batch()
    first = model.loss_and_grad(X, y, return_state=True, return_state_grad=True,
                                return_outputs=True)
    kept = copy.deepcopy(first)
    X2, y2 = batch(seed=1)
    second = model.loss_and_grad(X2, y2, return_state=True,
                                 return_state_grad=True, return_outputs=True)
    for name, grad in first[1].items():
        np.testing.assert_array_equal(grad, kept[1][name])
        assert not np.shares_memory(grad, second[1][name])
    for got, want in zip(first[2:], kept[2:]):
        for a, b in zip(*(x if isinstance(x, tuple) else (x,) for x in (got, want))):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_layout_follows_set_params_and_copies(cell):
    """The cached lanes are the model's own arrays: set_params reaches them,
    and a copy or an unpickled model runs on its own parameters."""
    model = cell(5, 6, 4, seed=0)
    X, y = batch()
    model.forward(X)                        # builds the cache
    other = cell(5, 6, 4, seed=1)
    model.set_params(other.params)
    np.testing.assert_array_equal(model.forward(X), other.forward(X))
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        twin.set_params(cell(5, 6, 4, seed=2).params)
        np.testing.assert_array_equal(model.forward(X), other.forward(X))
        assert not np.array_equal(twin.forward(X), model.forward(X))
    assert list(model.loss_and_grad(X, y)[1]) == list(model.params)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_final_state_is_each_sequences_last_step(cell, bidirectional):
    """h_n (and c_n) copied row by row equal the state after each
    sequence's own last step, in the user's order."""
    model = cell(5, 6, num_layers=2, bidirectional=bidirectional,
                 output=None, seed=0)
    X, _ = batch(n=4)
    lengths = np.array([3, 7, 1, 5])
    _, state = model.forward(X, lengths, return_state=True)
    states = state if isinstance(state, tuple) else (state,)
    for i, length in enumerate(lengths):
        _, alone = model.forward(X[i:i + 1, :length], return_state=True)
        alone = alone if isinstance(alone, tuple) else (alone,)
        for full, single in zip(states, alone):
            np.testing.assert_allclose(full[:, i], single[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("outputs", [1, 2, 7])
def test_output_bias_gradient_is_the_float64_row_sum(dtype, outputs):
    """dc is Σ_rows ∂L/∂o summed in float64, as numpy sums it, for K = 1
    (numpy's own call) and K > 1 (the driver's loop)."""
    model = crnn.LSTM(5, 6, outputs, output="linear", dtype=dtype, seed=0)
    X, _ = batch(n=3, steps=40, dtype=dtype)
    rng = np.random.default_rng(3)
    y = rng.standard_normal((3, 40, outputs))
    _, grads, outputs_ = model.loss_and_grad(X, y, reduction="sum",
                                             return_outputs=True)
    dlogits = (outputs_ - y.astype(dtype)).reshape(-1, outputs)
    expected = dlogits.sum(axis=0, dtype=np.float64).astype(dtype)
    np.testing.assert_allclose(grads["c"], expected, rtol=1e-5, atol=1e-6)
    assert grads["c"].dtype == np.dtype(dtype) and grads["c"].shape == (outputs,)


def test_full_layout_is_shared_read_only():
    X, _ = batch()
    first = _inputs.prepare_batch(X, None, 5, np.dtype(np.float32))
    second = _inputs.prepare_batch(X, None, 5, np.dtype(np.float32))
    assert first.lengths is second.lengths and first.order is second.order
    assert not first.lengths.flags.writeable and not first.order.flags.writeable
    np.testing.assert_array_equal(first.lengths, [7, 7, 7])
    np.testing.assert_array_equal(first.order, [0, 1, 2])
    with pytest.raises(ValueError):
        first.lengths[0] = 1
    for n in range(2 * _inputs._MAX_FULL_LAYOUTS):     # the cache stays bounded
        _inputs._full_layout(n + 1, 3)
    assert len(_inputs._FULL_LAYOUTS) <= _inputs._MAX_FULL_LAYOUTS


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "i8", ">i4", ">i8",
                                   "u1", "u2", "u4", "u8", "f4", "f8"])
def test_class_id_range_check_every_dtype(dtype):
    """One maximum on the unsigned view for native int32/int64; min and max
    otherwise: the same errors either way."""
    model = crnn.LSTM(5, 6, 100, seed=0)
    X, _ = batch(n=2, steps=3)
    good = np.array([[0, 99, 5], [1, 2, 3]]).astype(dtype)
    model.loss_and_grad(X, good)
    for bad_value in (100, 127, -1, -100):
        y = np.array([[0, 1, 2], [3, 4, 5]]).astype(dtype)
        with np.errstate(over="ignore"):
            value = np.array([bad_value]).astype(dtype)[0]
        if 0 <= value < 100:
            continue                         # wrapped into range by the cast
        y[1, 2] = value
        with pytest.raises(ValueError, match=r"class ids in y must be in \[0, 100\)"):
            model.loss_and_grad(X, y)


def test_non_finite_inputs_still_refused():
    model = crnn.GRU(5, 6, 4, seed=0)
    X, y = batch()
    for bad in (np.nan, np.inf, -np.inf):
        X_bad = X.copy()
        X_bad[2, 6, 4] = bad
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            model.loss_and_grad(X_bad, y)
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        model.forward(np.full((1, 2, 5), 1e300))      # inf in float32
