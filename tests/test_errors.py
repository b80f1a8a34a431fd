"""Bad input raises ValueError/TypeError naming what was expected and given,
for every cell (the ``cell`` fixture of conftest.py: RNN, LSTM, GRU).

Messages are checked loosely: the numbers (or names) of both the expected and
the given value must appear somewhere in the message. After any refused call
the model's parameters are exactly what they were.  The shared input checks
(X, lengths, y, initial_state, constructor, atomicity) run on every cell;
then what only one cell has: the LSTM's (h0, c0) pair (not a pair, wrong
length, wrong or mismatched shapes, non-finite or non-real c0), a GRU given
a pair, the RNN's nonlinearity.
"""

import re

import numpy as np
import pytest

import crnn
from cases import D, H, K, MODEL_CLASSES, N, T
from reference import gate_blocks

ERR = (ValueError, TypeError)


def make(cell, dtype="float64", output_size=K, **kw):
    """A crnn model of `cell` with the tests' sizes."""
    return getattr(crnn, MODEL_CLASSES[cell])(D, H, output_size, dtype=dtype, seed=0, **kw)


def state_of(cell, h0, c0_shape=None):
    """`h0` as `cell`'s initial state: for an LSTM the pair (h0, c0), c0 zeros
    of the right shape (`c0_shape`, default h0's)."""
    if cell != "lstm":
        return h0
    return h0, np.zeros(h0.shape if c0_shape is None else c0_shape)


def shape_forms(shape):
    shape = tuple(int(s) for s in shape)
    inner = ", ".join(map(str, shape))
    return [str(shape), inner, "x".join(map(str, shape)), "×".join(map(str, shape)),
            "(" + ",".join(map(str, shape)) + ")"]


def assert_mentions(msg, *needles):
    """Each needle (a str, a number, a shape tuple, or a list of alternatives) is in msg."""
    for needle in needles:
        if isinstance(needle, tuple):
            alts = shape_forms(needle)
        elif isinstance(needle, list):
            alts = needle
        else:
            alts = [str(needle)]
        assert any(a.lower() in msg.lower() for a in alts), (
            f"message {msg!r} does not mention {alts}")


def assert_number(msg, number):
    """``number`` appears as a whole number (not as a digit inside another one)."""
    assert re.search(rf"(?<![\d.]){re.escape(str(number))}(?![\d])", msg), (
        f"message {msg!r} does not mention {number}")


def snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_unchanged(model, snap):
    assert set(model.params) == set(snap)
    for k in snap:
        np.testing.assert_array_equal(model.params[k], snap[k], err_msg=k)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def model(cell, dtype):
    return make(cell, dtype)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, T, D)), rng.integers(0, K, size=(N, T))


def raise_msg(fn, types=ERR):
    with pytest.raises(types) as exc:
        fn()
    msg = str(exc.value)
    assert msg.strip(), "an error needs a message"
    return msg


# For every bad X, check forward, loss_and_grad and predict all refuse it.
def all_entry_points(model, X, y=None, **kw):
    if y is None:
        y = np.zeros((N, T), dtype=np.int64)
    return [
        lambda: model.forward(X, **kw),
        lambda: model.loss_and_grad(X, y, **kw),
        lambda: model.predict(X, **kw),
    ]


# ------------------------------------------------------------------ X

@pytest.mark.parametrize("shape,given_ndim", [((N, T, D, 1), 4), ((T,), 1)])
def test_x_wrong_ndim(model, shape, given_ndim):
    X = np.zeros(shape)
    for fn in all_entry_points(model, X):
        msg = raise_msg(fn)
        assert_number(msg, given_ndim)


def test_x_scalar(model):
    raise_msg(lambda: model.forward(np.float64(1.0)))
    raise_msg(lambda: model.forward(3))


@pytest.mark.parametrize("bad_d", [D + 1, D - 1, 1])
def test_x_wrong_feature_count(model, data, bad_d):
    X = np.zeros((N, T, bad_d))
    for fn in all_entry_points(model, X):
        msg = raise_msg(fn, ValueError)
        assert_number(msg, bad_d)
        assert_number(msg, D)


@pytest.mark.parametrize("bad_token", [D, D + 3, 1000])
def test_token_out_of_range(model, bad_token):
    X = np.zeros((N, T), dtype=np.int64)
    X[1, 2] = bad_token
    for fn in all_entry_points(model, X):
        msg = raise_msg(fn, ValueError)
        assert_number(msg, bad_token)
        assert_number(msg, D)


@pytest.mark.parametrize("bad_token", [-1, -5])
def test_negative_token(model, bad_token):
    X = np.zeros((N, T), dtype=np.int64)
    X[2, 0] = bad_token
    for fn in all_entry_points(model, X):
        msg = raise_msg(fn, ValueError)
        assert_mentions(msg, bad_token)


def test_token_out_of_range_in_list(model):
    Xl = [np.array([0, 1, 2]), np.array([3, D + 2])]
    msg = raise_msg(lambda: model.forward(Xl), ValueError)
    assert_number(msg, D + 2)


def test_float_2d_input(model):
    X = np.random.default_rng(0).normal(size=(N, T))
    for fn in all_entry_points(model, X):
        msg = raise_msg(fn)
        assert_mentions(msg, "float", ["int", "token"])


def test_integral_floats_2d_are_not_tokens(model):
    X = np.zeros((N, T), dtype=np.float64)
    raise_msg(lambda: model.forward(X))


@pytest.mark.parametrize("shape", [(N, T, D), (N, T)])
def test_bool_input(model, shape):
    X = np.zeros(shape, dtype=bool)
    for fn in all_entry_points(model, X):
        msg = raise_msg(fn)
        assert_mentions(msg, "bool")


@pytest.mark.parametrize("shape", [(N, T, D), (N, T)])
def test_complex_input(model, shape):
    X = np.zeros(shape, dtype=np.complex128)
    for fn in all_entry_points(model, X):
        msg = raise_msg(fn)
        assert_mentions(msg, "complex")


def test_object_input(model):
    X = np.empty((N, T, D), dtype=object)
    X[...] = 1.0
    for fn in all_entry_points(model, X):
        msg = raise_msg(fn)
        assert_mentions(msg, "object")


@pytest.mark.parametrize("shape", [(N, T, D), (N, T)])
def test_string_input(model, shape):
    X = np.full(shape, "a")
    for fn in all_entry_points(model, X):
        msg = raise_msg(fn)
        assert_mentions(msg, ["str", "<u1", "u1", "unicode"])


@pytest.mark.parametrize("X", [None, "abc", {"x": 1}])
def test_not_an_array(model, X):
    raise_msg(lambda: model.forward(X))


@pytest.mark.parametrize("bad", [[], np.zeros((0, T, D)), np.zeros((0, T), dtype=np.int64)])
def test_empty_batch(model, bad):
    msg = raise_msg(lambda: model.forward(bad), ValueError)
    assert_mentions(msg, ["0", "empty"])
    raise_msg(lambda: model.loss_and_grad(bad, np.zeros((0, T), dtype=np.int64)), ValueError)


def test_zero_time_steps(model):
    msg = raise_msg(lambda: model.forward(np.zeros((N, 0, D))), ValueError)
    assert_mentions(msg, ["0", "empty"])


def test_list_with_mixed_feature_counts(model):
    Xl = [np.zeros((5, D)), np.zeros((3, D + 1))]
    msg = raise_msg(lambda: model.forward(Xl), ValueError)
    assert_number(msg, D + 1)
    assert_number(msg, D)


def test_list_with_mixed_kinds(model):
    Xl = [np.zeros((5, D)), np.array([0, 1, 2])]
    raise_msg(lambda: model.forward(Xl))


def test_list_with_empty_sequence(model):
    Xl = [np.zeros((5, D)), np.zeros((0, D))]
    msg = raise_msg(lambda: model.forward(Xl), ValueError)
    assert_number(msg, 0)


def test_list_of_bad_dtype(model):
    Xl = [np.zeros((5, D), dtype=np.complex64), np.zeros((3, D), dtype=np.complex64)]
    msg = raise_msg(lambda: model.forward(Xl))
    assert_mentions(msg, "complex")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x(model, data, bad):
    X, y = data
    X = X.copy()
    X[1, 3, 2] = bad
    for fn in all_entry_points(model, X, y):
        msg = raise_msg(fn, ValueError)
        assert_mentions(msg, ["nan", "inf", "finite"])


# ------------------------------------------------------------------ lengths

@pytest.mark.parametrize("bad,numbers", [
    ([5, 0, 3], [0]),
    ([5, T + 1, 3], [T + 1, T]),
    ([5, -2, 3], [-2]),
    ([5, 2, 100], [100, T]),
])
def test_lengths_out_of_range(model, data, bad, numbers):
    X, y = data
    for fn in all_entry_points(model, X, y, lengths=np.array(bad)):
        msg = raise_msg(fn, ValueError)
        for num in numbers:
            assert_mentions(msg, num)


@pytest.mark.parametrize("bad,numbers", [
    (np.array([5, 5, 5, 5]), [4, N]),
    (np.array([5, 5]), [2, N]),
    (np.array([[5], [5], [5]]), [(N, 1)]),
    (np.int64(5), []),
])
def test_lengths_wrong_shape(model, data, bad, numbers):
    X, y = data
    for fn in all_entry_points(model, X, y, lengths=bad):
        msg = raise_msg(fn)
        for num in numbers:
            assert_mentions(msg, num)


@pytest.mark.parametrize("bad", [np.array([2.5, 3.0, 1.0]), np.array(["a", "b", "c"]),
                                 np.array([1 + 1j, 2, 3])])
def test_lengths_non_integer(model, data, bad):
    X, y = data
    for fn in all_entry_points(model, X, y, lengths=bad):
        raise_msg(fn)


def test_lengths_given_with_list_input_that_disagree(model):
    Xl = [np.zeros((5, D)), np.zeros((3, D))]
    # lengths longer than a given sequence cannot be honoured
    raise_msg(lambda: model.forward(Xl, lengths=np.array([5, 5])), ValueError)


# ------------------------------------------------------------------ y

@pytest.mark.parametrize("bad_label", [K, K + 4])
def test_label_out_of_range(model, data, bad_label):
    X, y = data
    y = y.copy()
    y[0, 1] = bad_label
    msg = raise_msg(lambda: model.loss_and_grad(X, y), ValueError)
    assert_number(msg, bad_label)
    assert_number(msg, K)


def test_negative_label(model, data):
    X, y = data
    y = y.copy()
    y[2, 4] = -1
    msg = raise_msg(lambda: model.loss_and_grad(X, y), ValueError)
    assert_mentions(msg, -1)


def test_label_out_of_range_at_real_position_of_ragged_batch(model, data):
    X, y = data
    y = y.copy()
    lengths = np.array([5, 2, 4])
    y[1, 2:] = 99                   # padding: ignored
    model.loss_and_grad(X, y, lengths=lengths)
    y[1, 1] = 99                    # a real position: refused
    msg = raise_msg(lambda: model.loss_and_grad(X, y, lengths=lengths), ValueError)
    assert_number(msg, 99)


def test_fractional_labels(model, data):
    X, y = data
    yf = y.astype(np.float64)
    yf[0, 0] = 1.5
    raise_msg(lambda: model.loss_and_grad(X, yf))


@pytest.mark.parametrize("bad_y", ["complex", "bool", "str", "nan"])
def test_labels_of_bad_dtype(model, data, bad_y):
    X, y = data
    if bad_y == "complex":
        yb = y.astype(np.complex128)
    elif bad_y == "bool":
        yb = y.astype(bool)
    elif bad_y == "str":
        yb = y.astype(str)
    else:
        yb = y.astype(np.float64)
        yb[0, 0] = np.nan
    raise_msg(lambda: model.loss_and_grad(X, yb))


@pytest.mark.parametrize("shape", [(N, T + 1), (N - 1, T), (N,), (N, T, 1, 1)])
def test_labels_wrong_shape(model, data, shape):
    X, _ = data
    y = np.zeros(shape, dtype=np.int64)
    msg = raise_msg(lambda: model.loss_and_grad(X, y))
    assert_mentions(msg, shape if len(shape) > 1 else ["(3,)", "3"])


def test_labels_missing(model, data):
    X, _ = data
    raise_msg(lambda: model.loss_and_grad(X, None))


def test_many_to_one_labels(cell, dtype):
    model = make(cell, dtype, return_sequences=False)
    X = np.zeros((N, T, D))
    msg = raise_msg(lambda: model.loss_and_grad(X, np.zeros((N, T), dtype=np.int64)))
    assert_mentions(msg, (N, T))
    msg = raise_msg(lambda: model.loss_and_grad(X, np.array([0, K, 1])), ValueError)
    assert_number(msg, K)
    raise_msg(lambda: model.loss_and_grad(X, np.array([0, 1])))


@pytest.mark.parametrize("return_sequences", [True, False])
def test_linear_targets_wrong_k(cell, dtype, return_sequences):
    model = make(cell, dtype, output="linear", return_sequences=return_sequences)
    X = np.zeros((N, T, D))
    shape = (N, T, K + 1) if return_sequences else (N, K + 1)
    msg = raise_msg(lambda: model.loss_and_grad(X, np.zeros(shape)), ValueError)
    assert_number(msg, K + 1)
    assert_number(msg, K)
    # K = 3 cannot be left out (only a trailing K = 1 can)
    short = (N, T) if return_sequences else (N,)
    raise_msg(lambda: model.loss_and_grad(X, np.zeros(short)), ValueError)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_linear_targets_non_finite(cell, dtype, bad):
    model = make(cell, dtype, output="linear")
    X = np.zeros((N, T, D))
    y = np.zeros((N, T, K))
    y[1, 1, 1] = bad
    msg = raise_msg(lambda: model.loss_and_grad(X, y), ValueError)
    assert_mentions(msg, ["nan", "inf", "finite"])


def test_linear_targets_complex(cell, dtype):
    model = make(cell, dtype, output="linear")
    X = np.zeros((N, T, D))
    raise_msg(lambda: model.loss_and_grad(X, np.zeros((N, T, K), dtype=complex)))


def test_y_length_mismatch_in_list(model):
    Xl = [np.zeros((5, D)), np.zeros((3, D))]
    yl = [np.zeros(5, dtype=np.int64), np.zeros(4, dtype=np.int64)]
    raise_msg(lambda: model.loss_and_grad(Xl, yl), ValueError)


# ------------------------------------------------------------------ initial_state

@pytest.mark.parametrize("shape", [(2, N, H), (1, N + 1, H), (1, N, H + 1), (N, H),
                                   (1, 1, N, H)])
def test_initial_state_wrong_shape(cell, model, data, shape):
    X, y = data
    h0 = state_of(cell, np.zeros(shape), (1, N, H))
    for fn in all_entry_points(model, X, y, initial_state=h0)[:2]:
        msg = raise_msg(fn, ValueError)
        assert_mentions(msg, shape, (1, N, H))


def test_initial_state_wrong_shape_deep_bidirectional(cell, dtype):
    model = make(cell, dtype, num_layers=2, bidirectional=True)
    X = np.zeros((N, T, D))
    h0 = state_of(cell, np.zeros((2, N, H)), (4, N, H))
    msg = raise_msg(lambda: model.forward(X, initial_state=h0), ValueError)
    assert_mentions(msg, (2, N, H), (4, N, H))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_initial_state_non_finite(cell, model, data, bad):
    X, y = data
    h0 = np.zeros((1, N, H))
    h0[0, 1, 2] = bad
    for fn in all_entry_points(model, X, y, initial_state=state_of(cell, h0))[:2]:
        msg = raise_msg(fn, ValueError)
        assert_mentions(msg, ["nan", "inf", "finite"])


@pytest.mark.parametrize("bad_dtype", [np.complex128, bool, object])
def test_initial_state_bad_dtype(cell, model, data, bad_dtype):
    X, y = data
    h0 = np.zeros((1, N, H), dtype=bad_dtype)
    raise_msg(lambda: model.forward(X, initial_state=state_of(cell, h0, (1, N, H))))


# ------------------------------------------------------------------ other arguments

def test_bad_reduction(model, data):
    X, y = data
    msg = raise_msg(lambda: model.loss_and_grad(X, y, reduction="max"), ValueError)
    assert_mentions(msg, "max", "mean", "sum")


def test_predict_proba_refused_for_linear(cell, dtype):
    model = make(cell, dtype, output="linear")
    with pytest.raises((ValueError, TypeError, AttributeError, NotImplementedError)):
        model.predict_proba(np.zeros((N, T, D)))


# ------------------------------------------------------------------ shared checks on deeper models

@pytest.mark.parametrize("bad_d", [D + 1, 1])
def test_x_wrong_feature_count_deep(cell, dtype, bad_d):
    model = make(cell, dtype, num_layers=2)
    X = np.zeros((N, T, bad_d))
    for fn in (lambda: model.forward(X), lambda: model.predict(X),
               lambda: model.loss_and_grad(X, np.zeros((N, T), dtype=np.int64))):
        msg = raise_msg(fn, ValueError)
        assert_number(msg, bad_d)
        assert_number(msg, D)


@pytest.mark.parametrize("bad_token", [D, -1])
def test_token_out_of_range_bidirectional(cell, dtype, bad_token):
    model = make(cell, dtype, bidirectional=True)
    X = np.zeros((N, T), dtype=np.int64)
    X[1, 2] = bad_token
    msg = raise_msg(lambda: model.forward(X), ValueError)
    assert_mentions(msg, bad_token)


def test_label_out_of_range_and_lengths(cell, dtype, data):
    model = make(cell, dtype)
    X, y = data
    y = y.copy()
    y[0, 1] = K
    msg = raise_msg(lambda: model.loss_and_grad(X, y), ValueError)
    assert_number(msg, K)
    msg = raise_msg(lambda: model.forward(X, lengths=np.array([5, T + 1, 3])), ValueError)
    assert_number(msg, T + 1)


def test_loss_needs_an_output_layer(cell, dtype, data):
    model = make(cell, dtype, output_size=None, output=None)
    X, y = data
    msg = raise_msg(lambda: model.loss_and_grad(X, y), ValueError)
    assert_mentions(msg, "output")


# ------------------------------------------------------------------ constructor

@pytest.mark.parametrize("args,kwargs,needles", [
    ((D, 0, K), {}, ["hidden_size", 0]),
    ((D, -3, K), {}, ["hidden_size", -3]),
    ((0, H, K), {}, ["input_size", 0]),
    ((-1, H, K), {}, ["input_size", -1]),
    ((D, H, 0), {}, ["output_size", 0]),
    ((D, H, K), {"num_layers": 0}, ["num_layers", 0]),
    ((D, H, K), {"output": "sigmoid"}, ["sigmoid", "softmax", "linear"]),
    ((D, H, K), {"output": None}, ["output_size"]),
    ((D, H, K), {"dtype": "float16"}, ["float16", "float32", "float64"]),
    ((D, H, K), {"dtype": "int32"}, ["int32", "float32", "float64"]),
    ((D, H, K), {"dtype": np.int64}, ["int64", "float32", "float64"]),
    ((D, H, K), {"dtype": "complex128"}, ["complex128", "float32"]),
])
def test_bad_constructor_args(cell, args, kwargs, needles):
    with pytest.raises(ValueError) as exc:
        getattr(crnn, MODEL_CLASSES[cell])(*args, **kwargs)
    msg = str(exc.value)
    for nd in needles:
        assert_mentions(msg, nd)


@pytest.mark.parametrize("args,kwargs,needles", [
    ((D, H, K), {"nonlinearity": "sigmoid"}, ["sigmoid", "tanh", "relu"]),
    ((D, H, K), {"nonlinearity": "TANH "}, ["TANH", "tanh"]),
])
def test_bad_rnn_nonlinearity(args, kwargs, needles):
    with pytest.raises(ValueError) as exc:
        crnn.RNN(*args, **kwargs)
    msg = str(exc.value)
    for nd in needles:
        assert_mentions(msg, nd)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_no_nonlinearity_option(cell):
    """LSTM and GRU have API.md's signature: no nonlinearity argument."""
    with pytest.raises(TypeError):
        getattr(crnn, MODEL_CLASSES[cell])(D, H, K, nonlinearity="relu")


@pytest.mark.parametrize("args,kwargs", [
    ((D, 2.5, K), {}),
    ((D, "6", K), {}),
    ((4.0, H, K), {}),
    ((D, H, 3.5), {}),
    ((D, H, K), {"num_layers": 1.5}),
    ((D, None, K), {}),
    ((D, H, K), {"bidirectional": "yes"}),
    ((D, H, K), {"return_sequences": 1}),
])
def test_constructor_non_integer_sizes(cell, args, kwargs):
    with pytest.raises(ERR):
        getattr(crnn, MODEL_CLASSES[cell])(*args, **kwargs)


def test_constructor_accepts_numpy_integers(cell):
    model = getattr(crnn, MODEL_CLASSES[cell])(
        np.int64(D), np.int32(H), np.int16(K), num_layers=np.int64(2),
        dtype="float64", seed=np.int64(1))
    assert model.params["U0"].shape == (gate_blocks(cell) * H, D)


# ------------------------------------------------------------------ atomicity

def test_failed_calls_leave_params_unchanged(cell, dtype):
    model = make(cell, dtype, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, T, D))
    y = rng.integers(0, K, size=(N, T))
    zeros = np.zeros((4, N, H))
    state = state_of(cell, zeros)
    good_loss, good_grads = model.loss_and_grad(X, y)
    good_Y = model.forward(X)
    good_state_loss, good_state_grads = model.loss_and_grad(X, y, initial_state=state)
    good_state_Y = model.forward(X, initial_state=state)
    snap = snapshot(model)
    X_nan = X.copy()
    X_nan[2, 4, 0] = np.nan
    y_bad = y.copy()
    y_bad[2, 4] = K
    c_nan = zeros.copy()
    c_nan[3, 1, 1] = np.nan
    bad_state = (zeros, c_nan) if cell == "lstm" else c_nan
    bias_key = "bn1_reverse" if cell == "gru" else "b1_reverse"
    bad_calls = [
        lambda: model.loss_and_grad(X, y_bad),
        lambda: model.loss_and_grad(X_nan, y),
        lambda: model.loss_and_grad(X, y, lengths=np.array([5, 0, 1])),
        lambda: model.loss_and_grad(X, y, initial_state=state_of(cell, np.zeros((1, N, H)))),
        lambda: model.loss_and_grad(X, y, initial_state=bad_state),
        lambda: model.loss_and_grad(X, y, initial_state=(zeros, np.zeros((4, N, H + 1)))),
        lambda: model.loss_and_grad(np.zeros((N, T, D + 1)), y),
        lambda: model.forward(X, lengths=np.array([9, 1, 1])),
        lambda: model.forward(X_nan),
        lambda: model.forward(X, initial_state=bad_state),
        lambda: model.predict(np.zeros((N, T), dtype=np.int64) - 1),
        lambda: model.set_params({**snap, "W0": np.zeros((H, H + 1), dtype=dtype)}),
        lambda: model.set_params({**snap, bias_key: np.zeros(H + 1, dtype=dtype)}),
        lambda: model.set_params({k: v for k, v in snap.items() if k != "c"}),
        lambda: model.set_params({k: v for k, v in snap.items() if k != "W0"}),
    ]
    for fn in bad_calls:
        with pytest.raises(ERR):
            fn()
        assert_unchanged(model, snap)
    # and the model still computes the same thing afterwards
    loss, grads = model.loss_and_grad(X, y)
    assert loss == good_loss
    for k in grads:
        np.testing.assert_array_equal(grads[k], good_grads[k])
    np.testing.assert_array_equal(model.forward(X), good_Y)
    loss, grads = model.loss_and_grad(X, y, initial_state=state)
    assert loss == good_state_loss
    for k in grads:
        np.testing.assert_array_equal(grads[k], good_state_grads[k])
    np.testing.assert_array_equal(model.forward(X, initial_state=state), good_state_Y)


def test_unhashable_output_argument(cell):
    msg = raise_msg(lambda: getattr(crnn, MODEL_CLASSES[cell])(D, H, K, output=["softmax"]))
    assert_mentions(msg, "output")


def test_negative_seed_is_accepted_or_named(cell):
    try:
        getattr(crnn, MODEL_CLASSES[cell])(D, H, K, seed=-1)
    except ERR as exc:
        assert_mentions(str(exc), "seed", -1)


@pytest.mark.parametrize("bad", [[], "abc", None])
def test_lengths_odd_values(model, data, bad):
    X, y = data
    if bad is None:
        bad = np.array([None, 1, 2])
    raise_msg(lambda: model.forward(X, lengths=bad))


# ------------------------------------------------------------------ the LSTM's (h0, c0)

def lstm(dtype, **kw):
    return make("lstm", dtype, **kw)


def entry_points(model, X, y, **kw):
    """forward and loss_and_grad (the two that take initial_state)."""
    return [lambda: model.forward(X, **kw), lambda: model.loss_and_grad(X, y, **kw)]


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


# ------------------------------------------------------------------ one-array states

@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_initial_state_pair_is_refused(cell, dtype, data):
    model = make(cell, dtype)
    X, y = data
    pair = (np.zeros((1, N, H)), np.zeros((1, N, H)))
    for fn in entry_points(model, X, y, initial_state=pair):
        msg = raise_msg(fn)
        assert_mentions(msg, (1, N, H))


@pytest.mark.parametrize("shape", [(2, N, H), (1, N + 1, H), (1, N, 3 * H), (N, H)])
def test_gru_initial_state_wrong_shape(dtype, data, shape):
    model = make("gru", dtype)
    X, y = data
    for fn in entry_points(model, X, y, initial_state=np.zeros(shape)):
        msg = raise_msg(fn, ValueError)
        assert_mentions(msg, shape, (1, N, H))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_gru_initial_state_non_finite(dtype, data, bad):
    model = make("gru", dtype)
    X, y = data
    h0 = np.zeros((1, N, H))
    h0[0, 2, 5] = bad
    msg = raise_msg(lambda: model.forward(X, initial_state=h0), ValueError)
    assert_mentions(msg, ["nan", "inf", "finite"])
