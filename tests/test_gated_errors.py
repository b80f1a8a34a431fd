"""Bad input to crnn.LSTM and crnn.GRU raises ValueError/TypeError naming what
was expected and what was given, and leaves the model untouched.

The shared input checks (X, lengths, y) are exercised for the RNN in
test_errors.py; here: the LSTM's (h0, c0) pair (not a pair, wrong length,
wrong or mismatched shapes, non-finite or non-real c0), a GRU given a pair,
the gated constructors, the shared checks once per cell, and atomicity.
"""

import numpy as np
import pytest

import crnn
from cases import D, H, K, N, T
from test_errors import assert_mentions, assert_number, raise_msg

ERR = (ValueError, TypeError)
CELLS = ["lstm", "gru"]
CLASSES = {"lstm": crnn.LSTM, "gru": crnn.GRU}


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, T, D)), rng.integers(0, K, size=(N, T))


def lstm(dtype, **kw):
    return crnn.LSTM(D, H, K, dtype=dtype, seed=0, **kw)


def entry_points(model, X, y, **kw):
    """forward and loss_and_grad (the two that take initial_state)."""
    return [lambda: model.forward(X, **kw), lambda: model.loss_and_grad(X, y, **kw)]


def snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_unchanged(model, snap):
    assert set(model.params) == set(snap)
    for k in snap:
        np.testing.assert_array_equal(model.params[k], snap[k], err_msg=k)


# ------------------------------------------------------------------ LSTM initial_state

def test_lstm_initial_state_single_array(dtype, data):
    """One array is not a pair, even one of shape (2, L, N, H)."""
    model = lstm(dtype)
    X, y = data
    for bad in (np.zeros((1, N, H)), np.zeros((2, 1, N, H))):
        for fn in entry_points(model, X, y, initial_state=bad):
            msg = raise_msg(fn)
            assert_mentions(msg, "pair", ["(h0, c0)", "h0, c0"], "ndarray")


@pytest.mark.parametrize("count", [1, 3])
def test_lstm_initial_state_wrong_number_of_parts(dtype, data, count):
    model = lstm(dtype)
    X, y = data
    bad = tuple(np.zeros((1, N, H)) for _ in range(count))
    for fn in entry_points(model, X, y, initial_state=bad):
        msg = raise_msg(fn)
        assert_mentions(msg, "pair", ["(h0, c0)", "h0, c0"])


@pytest.mark.parametrize("bad", ["h0", 3.0, {"h0": 0, "c0": 0}])
def test_lstm_initial_state_not_a_sequence(dtype, data, bad):
    model = lstm(dtype)
    X, _ = data
    raise_msg(lambda: model.forward(X, initial_state=bad))


@pytest.mark.parametrize("which", [0, 1])
def test_lstm_initial_state_part_is_none(dtype, data, which):
    model = lstm(dtype)
    X, _ = data
    state = [np.zeros((1, N, H)), np.zeros((1, N, H))]
    state[which] = None
    msg = raise_msg(lambda: model.forward(X, initial_state=tuple(state)))
    assert_mentions(msg, ("h0", "c0")[which])


@pytest.mark.parametrize("shape", [(2, N, H), (1, N + 1, H), (1, N, H + 1), (N, H),
                                   (1, 1, N, H)])
def test_lstm_c0_wrong_shape(dtype, data, shape):
    model = lstm(dtype)
    X, y = data
    state = (np.zeros((1, N, H)), np.zeros(shape))
    for fn in entry_points(model, X, y, initial_state=state):
        msg = raise_msg(fn, ValueError)
        assert_mentions(msg, "c0", shape, (1, N, H))


@pytest.mark.parametrize("shape", [(2, N, H), (1, N, H + 1)])
def test_lstm_h0_wrong_shape(dtype, data, shape):
    model = lstm(dtype)
    X, y = data
    state = (np.zeros(shape), np.zeros((1, N, H)))
    for fn in entry_points(model, X, y, initial_state=state):
        msg = raise_msg(fn, ValueError)
        assert_mentions(msg, "h0", shape, (1, N, H))


def test_lstm_swapped_shapes_deep_bidirectional(dtype):
    model = lstm(dtype, num_layers=2, bidirectional=True)
    X = np.zeros((N, T, D))
    good = np.zeros((4, N, H))
    msg = raise_msg(lambda: model.forward(X, initial_state=(good, np.zeros((2, N, H)))),
                    ValueError)
    assert_mentions(msg, "c0", (2, N, H), (4, N, H))
    msg = raise_msg(lambda: model.forward(X, initial_state=(np.zeros((4, N + 1, H)), good)),
                    ValueError)
    assert_mentions(msg, "h0", (4, N + 1, H), (4, N, H))


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_lstm_state_non_finite(dtype, data, which, bad):
    model = lstm(dtype)
    X, y = data
    parts = [np.zeros((1, N, H)), np.zeros((1, N, H))]
    parts[which][0, 1, 2] = bad
    for fn in entry_points(model, X, y, initial_state=tuple(parts)):
        msg = raise_msg(fn, ValueError)
        assert_mentions(msg, ("h0", "c0")[which], ["nan", "inf", "finite"])


@pytest.mark.parametrize("bad_dtype", [np.complex128, bool, object])
def test_lstm_c0_bad_dtype(dtype, data, bad_dtype):
    model = lstm(dtype)
    X, y = data
    state = (np.zeros((1, N, H)), np.zeros((1, N, H), dtype=bad_dtype))
    msg = raise_msg(lambda: model.forward(X, initial_state=state))
    assert_mentions(msg, "c0")


def test_lstm_state_of_other_real_dtypes_is_cast(data):
    """float32 / int (h0, c0) are real arrays and accepted by a float64 model."""
    model = lstm("float64")
    X, _ = data
    h0 = np.full((1, N, H), 0.5)
    c0 = np.full((1, N, H), -1.0)
    expected = model.forward(X, initial_state=(h0, c0))
    got = model.forward(X, initial_state=(h0.astype(np.float32), c0.astype(np.int32)))
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------ GRU initial_state

def test_gru_initial_state_pair_is_refused(dtype, data):
    model = crnn.GRU(D, H, K, dtype=dtype, seed=0)
    X, y = data
    pair = (np.zeros((1, N, H)), np.zeros((1, N, H)))
    for fn in entry_points(model, X, y, initial_state=pair):
        msg = raise_msg(fn)
        assert_mentions(msg, (1, N, H))


@pytest.mark.parametrize("shape", [(2, N, H), (1, N + 1, H), (1, N, 3 * H), (N, H)])
def test_gru_initial_state_wrong_shape(dtype, data, shape):
    model = crnn.GRU(D, H, K, dtype=dtype, seed=0)
    X, y = data
    for fn in entry_points(model, X, y, initial_state=np.zeros(shape)):
        msg = raise_msg(fn, ValueError)
        assert_mentions(msg, shape, (1, N, H))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_gru_initial_state_non_finite(dtype, data, bad):
    model = crnn.GRU(D, H, K, dtype=dtype, seed=0)
    X, y = data
    h0 = np.zeros((1, N, H))
    h0[0, 2, 5] = bad
    msg = raise_msg(lambda: model.forward(X, initial_state=h0), ValueError)
    assert_mentions(msg, ["nan", "inf", "finite"])


# ------------------------------------------------------------------ shared checks, per cell

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad_d", [D + 1, 1])
def test_x_wrong_feature_count(cell, dtype, bad_d):
    model = CLASSES[cell](D, H, K, num_layers=2, dtype=dtype, seed=0)
    X = np.zeros((N, T, bad_d))
    for fn in (lambda: model.forward(X), lambda: model.predict(X),
               lambda: model.loss_and_grad(X, np.zeros((N, T), dtype=np.int64))):
        msg = raise_msg(fn, ValueError)
        assert_number(msg, bad_d)
        assert_number(msg, D)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad_token", [D, -1])
def test_token_out_of_range(cell, dtype, bad_token):
    model = CLASSES[cell](D, H, K, bidirectional=True, dtype=dtype, seed=0)
    X = np.zeros((N, T), dtype=np.int64)
    X[1, 2] = bad_token
    msg = raise_msg(lambda: model.forward(X), ValueError)
    assert_mentions(msg, bad_token)


@pytest.mark.parametrize("cell", CELLS)
def test_label_out_of_range_and_lengths(cell, dtype, data):
    model = CLASSES[cell](D, H, K, dtype=dtype, seed=0)
    X, y = data
    y = y.copy()
    y[0, 1] = K
    msg = raise_msg(lambda: model.loss_and_grad(X, y), ValueError)
    assert_number(msg, K)
    msg = raise_msg(lambda: model.forward(X, lengths=np.array([5, T + 1, 3])), ValueError)
    assert_number(msg, T + 1)


@pytest.mark.parametrize("cell", CELLS)
def test_loss_needs_an_output_layer(cell, dtype, data):
    model = CLASSES[cell](D, H, output=None, dtype=dtype, seed=0)
    X, y = data
    msg = raise_msg(lambda: model.loss_and_grad(X, y), ValueError)
    assert_mentions(msg, "output")


# ------------------------------------------------------------------ constructor

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("args,kwargs,needles", [
    ((D, 0, K), {}, ["hidden_size", 0]),
    ((0, H, K), {}, ["input_size", 0]),
    ((D, H, 0), {}, ["output_size", 0]),
    ((D, H, K), {"num_layers": 0}, ["num_layers", 0]),
    ((D, H, K), {"output": "sigmoid"}, ["sigmoid", "softmax", "linear"]),
    ((D, H, K), {"output": None}, ["output_size"]),
    ((D, H, K), {"dtype": "float16"}, ["float16", "float32", "float64"]),
])
def test_bad_constructor_args(cell, args, kwargs, needles):
    with pytest.raises(ValueError) as exc:
        CLASSES[cell](*args, **kwargs)
    for nd in needles:
        assert_mentions(str(exc.value), nd)


@pytest.mark.parametrize("cell", CELLS)
def test_no_nonlinearity_option(cell):
    """LSTM and GRU have API.md's signature: no nonlinearity argument."""
    with pytest.raises(TypeError):
        CLASSES[cell](D, H, K, nonlinearity="relu")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kwargs", [{"hidden_size": 2.5}, {"num_layers": 1.5},
                                    {"bidirectional": "yes"}, {"return_sequences": 1}])
def test_constructor_wrong_types(cell, kwargs):
    args = dict(input_size=D, hidden_size=H, output_size=K)
    args.update(kwargs)
    with pytest.raises(ERR):
        CLASSES[cell](**args)


# ------------------------------------------------------------------ atomicity

@pytest.mark.parametrize("cell", CELLS)
def test_failed_calls_leave_params_unchanged(cell, dtype):
    model = CLASSES[cell](D, H, K, num_layers=2, bidirectional=True, dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, T, D))
    y = rng.integers(0, K, size=(N, T))
    zeros = np.zeros((4, N, H))
    state = (zeros, zeros) if cell == "lstm" else zeros
    good_loss, good_grads = model.loss_and_grad(X, y, initial_state=state)
    good_Y = model.forward(X, initial_state=state)
    snap = snapshot(model)
    X_nan = X.copy()
    X_nan[2, 4, 0] = np.nan
    y_bad = y.copy()
    y_bad[2, 4] = K
    c_nan = zeros.copy()
    c_nan[3, 1, 1] = np.nan
    bad_state = (zeros, c_nan) if cell == "lstm" else c_nan
    bn_key = "bn1_reverse" if cell == "gru" else "b1_reverse"
    bad_calls = [
        lambda: model.loss_and_grad(X, y_bad),
        lambda: model.loss_and_grad(X_nan, y),
        lambda: model.loss_and_grad(X, y, initial_state=bad_state),
        lambda: model.loss_and_grad(X, y, initial_state=np.zeros((1, N, H))),
        lambda: model.loss_and_grad(X, y, initial_state=(zeros, np.zeros((4, N, H + 1)))),
        lambda: model.forward(X, lengths=np.array([9, 1, 1])),
        lambda: model.forward(X, initial_state=bad_state),
        lambda: model.set_params({**snap, bn_key: np.zeros(H + 1, dtype=dtype)}),
        lambda: model.set_params({k: v for k, v in snap.items() if k != "W0"}),
    ]
    for fn in bad_calls:
        with pytest.raises(ERR):
            fn()
        assert_unchanged(model, snap)
    loss, grads = model.loss_and_grad(X, y, initial_state=state)
    assert loss == good_loss
    for k in grads:
        np.testing.assert_array_equal(grads[k], good_grads[k])
    np.testing.assert_array_equal(model.forward(X, initial_state=state), good_Y)
