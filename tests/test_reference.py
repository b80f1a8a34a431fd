"""crnn.RNN, crnn.LSTM and crnn.GRU in float64 against the numpy reference
(reference.py), to 1e-10.

The whole option matrix for every cell: tanh/relu (RNN), softmax/linear/none,
many-to-many/many-to-one, equal/ragged lengths, float/token inputs, 1-2
layers, 1-2 directions, with and without an initial state ((h0, c0) for the
LSTM). Every output, final state, loss, gradient and initial-state gradient
is compared with reference.py (itself checked against PyTorch and finite
differences in test_reference_selfcheck.py).
"""

import numpy as np
import pytest

import crnn
from cases import (D, H, K, N, T, Case, case_matrix, make_batch, make_model, random_params,
                   zero_state)
from reference import param_shapes, reference

TOL = 1e-10
CELLS = ["rnn", "lstm", "gru"]
GATED = ["lstm", "gru"]
CLASSES = {"rnn": crnn.RNN, "lstm": crnn.LSTM, "gru": crnn.GRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def assert_close(actual, expected, tol=TOL, what=""):
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected) == 2, (
            f"{what}: expected a pair (h, c), got {type(actual).__name__}")
        for name, a, e in zip(("h", "c"), actual, expected):
            assert_close(a, e, tol, f"{what} {name}")
        return
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)


def assert_matches(model, ref, X, y, lengths, state):
    """forward (outputs, final state) and loss_and_grad (loss, every
    gradient, the initial state's gradient) against a reference run."""
    Y, final = model.forward(X, lengths=lengths, initial_state=state, return_state=True)
    assert_close(Y, ref.Y)
    assert_close(final, ref.state)
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=state,
                                              return_state_grad=True)
    assert_close(loss, ref.loss)
    assert set(grads) == set(ref.grads)
    for k in grads:
        assert_close(grads[k], ref.grads[k], what=k)
    assert_close(dstate, ref.dstate)


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


def run_both(case, reduction="mean", seed=0):
    params = random_params(case, seed=seed)
    X, y, lengths, h0 = make_batch(case, seed=seed + 1)
    model = make_model(crnn, case, params)
    ref = reference(params, X, y, lengths, h0, reduction=reduction, **case.ref_kwargs())
    return model, (X, y, lengths, h0), ref


def matrix(cells=CELLS, **fixed):
    """case_matrix for each cell (the RNN's also over tanh/relu unless fixed)."""
    return [c for cell in cells for c in
            case_matrix(cell=cell, **({k: v for k, v in fixed.items() if k != "nonlinearity"}
                                      if cell != "rnn" else fixed))]


@pytest.mark.parametrize("case", matrix(), ids=repr)
def test_forward_and_gradients_match_reference(case):
    model, (X, y, lengths, h0), ref = run_both(case)

    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    assert_close(Y, ref.Y, what="forward output")
    assert_close(state, ref.state, what="final state")
    assert Y.dtype == np.float64
    for p in parts(state):
        assert p.dtype == np.float64

    out = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0, return_state_grad=True)
    assert len(out) == 3
    loss, grads, dstate = out
    assert isinstance(loss, float)
    assert_close(loss, ref.loss, what="loss")
    assert set(grads) == set(model.params) == set(ref.grads)
    for k in ref.grads:
        assert grads[k].dtype == np.float64, k
        assert_close(grads[k], ref.grads[k], what=f"grad {k}")
    assert_close(dstate, ref.dstate, what="initial-state gradient")


@pytest.mark.parametrize("case", matrix(ragged=True, tokens=False, use_h0=True), ids=repr)
def test_sum_reduction_matches_reference(case):
    model, (X, y, lengths, h0), ref = run_both(case, reduction="sum")
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              reduction="sum", return_state_grad=True)
    assert_close(loss, ref.loss, what="loss")
    for k in ref.grads:
        assert_close(grads[k], ref.grads[k], what=f"grad {k}")
    assert_close(dstate, ref.dstate, what="initial-state gradient")


@pytest.mark.parametrize("case", matrix(ragged=True, use_h0=True, tokens=False,
                                        return_sequences=True), ids=repr)
def test_sum_is_mean_times_count(case):
    model, (X, y, lengths, h0), _ = run_both(case)
    lm, gm = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0)
    ls, gs = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0, reduction="sum")
    count = int(np.sum(lengths))
    assert_close(ls, lm * count)
    for k in gm:
        assert_close(gs[k], gm[k] * count, what=k)


@pytest.mark.parametrize("case", matrix(["rnn"], output=None, nonlinearity="tanh", tokens=False) +
                         matrix(GATED, output=None, use_h0=True), ids=repr)
def test_no_output_layer_returns_top_h(case):
    params = random_params(case)
    X, _, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    assert "V" not in model.params and "c" not in model.params
    ref = reference(params, X, None, lengths, h0, **case.ref_kwargs())
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    expected_shape = (N, T, H * case.dirs) if case.return_sequences else (N, H * case.dirs)
    assert Y.shape == expected_shape
    assert_close(Y, ref.Y)
    assert_close(state, ref.state)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("return_sequences", [True, False])
def test_no_output_top_h_is_the_final_state(cell, return_sequences):
    """output=None: many-to-one gives PyTorch's [h_n[-2], h_n[-1]]; many-to-many's
    last real row (forward half) and row 0 (backward half) are those too."""
    case = Case(cell=cell, output=None, return_sequences=return_sequences, num_layers=2,
                bidirectional=True, ragged=True, use_h0=True)
    params = random_params(case)
    X, _, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    h_n = parts(state)[0]
    for n in range(N):
        feat = Y[n] if not return_sequences else np.concatenate(
            [Y[n, lengths[n] - 1, :H], Y[n, 0, H:]])
        assert_close(feat, np.concatenate([h_n[-2, n], h_n[-1, n]]), tol=0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("use_h0", [False, True])
def test_loss_and_grad_two_tuple_by_default(cell, use_h0):
    case = Case(cell=cell, use_h0=use_h0)
    model, (X, y, lengths, h0), ref = run_both(case)
    out = model.loss_and_grad(X, y, initial_state=h0)
    assert isinstance(out, tuple) and len(out) == 2
    loss, grads = out
    assert_close(loss, ref.loss)


@pytest.mark.parametrize("cell", CELLS)
def test_dstate_without_initial_state_is_gradient_at_zero(cell):
    case = Case(cell=cell, num_layers=2, bidirectional=True, ragged=True)
    model, (X, y, lengths, _), ref = run_both(case)
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, return_state_grad=True)
    for p in parts(dstate):
        assert p.shape == (4, N, H)
    assert_close(dstate, ref.dstate)
    # the same as passing explicit zeros
    _, _, dstate0 = model.loss_and_grad(X, y, lengths=lengths, initial_state=zero_state(case),
                                        return_state_grad=True)
    assert_close(dstate0, dstate, tol=0)
    # and so is the forward pass
    Y0, s0 = model.forward(X, lengths=lengths, initial_state=zero_state(case),
                           return_state=True)
    Y, s = model.forward(X, lengths=lengths, return_state=True)
    assert_close(Y0, Y, tol=0)
    assert_close(s0, s, tol=0)


def test_lstm_state_is_a_pair_of_distinct_arrays():
    case = Case(cell="lstm", num_layers=2, bidirectional=True, ragged=True, use_h0=True)
    model, (X, y, lengths, h0), ref = run_both(case)
    _, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    assert isinstance(state, tuple) and len(state) == 2
    h, c = state
    assert h.shape == c.shape == (4, N, H)
    assert not np.shares_memory(h, c)
    # h = o ⊙ tanh(C): |h| < 1, and C is a different array
    assert np.all(np.abs(h) < 1) and not np.allclose(h, c)
    _, _, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                       return_state_grad=True)
    assert isinstance(dstate, tuple) and len(dstate) == 2
    assert not np.allclose(dstate[0], dstate[1])


@pytest.mark.parametrize("cell,initial_state_type", [("lstm", tuple), ("lstm", list),
                                                      ("gru", None)])
def test_initial_state_list_or_tuple(cell, initial_state_type):
    """An LSTM accepts (h0, c0) as a tuple or a list; a GRU takes one array."""
    case = Case(cell=cell, num_layers=2, ragged=True, use_h0=True)
    model, (X, y, lengths, h0), ref = run_both(case)
    if cell == "lstm":
        h0 = initial_state_type(h0)
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    assert_close(Y, ref.Y)
    assert_close(state, ref.state)


@pytest.mark.parametrize("cell", CELLS)
def test_return_state_and_outputs_extras(cell):
    """loss_and_grad's extras (state grad, state, outputs) agree with forward."""
    case = Case(cell=cell, num_layers=2, bidirectional=True, ragged=True, use_h0=True)
    model, (X, y, lengths, h0), ref = run_both(case)
    loss, grads, dstate, state, outputs = model.loss_and_grad(
        X, y, lengths=lengths, initial_state=h0, return_state_grad=True, return_state=True,
        return_outputs=True)
    assert_close(loss, ref.loss)
    assert_close(dstate, ref.dstate)
    assert_close(state, ref.state)
    assert_close(outputs, ref.Y)


@pytest.mark.parametrize("case", matrix(output="softmax", nonlinearity="tanh", num_layers=1,
                                        use_h0=False, tokens=False), ids=repr)
def test_predict_softmax(case):
    model, (X, y, lengths, h0), ref = run_both(case)
    pred = model.predict(X, lengths=lengths)
    assert pred.dtype == np.int64
    if case.return_sequences:
        assert pred.shape == (N, T)
        lens = lengths if lengths is not None else np.full(N, T)
        for n in range(N):
            np.testing.assert_array_equal(pred[n, : lens[n]], ref.Y[n, : lens[n]].argmax(-1))
            assert np.all(pred[n, lens[n]:] == -1)
    else:
        assert pred.shape == (N,)
        np.testing.assert_array_equal(pred, ref.Y.argmax(-1))
    proba = model.predict_proba(X, lengths=lengths)
    assert_close(proba, ref.Y)
    assert_close(proba, model.forward(X, lengths=lengths), tol=0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("return_sequences", [True, False])
def test_predict_linear_and_proba_raises(cell, return_sequences):
    case = Case(cell=cell, output="linear", ragged=True, return_sequences=return_sequences)
    model, (X, y, lengths, h0), ref = run_both(case)
    assert_close(model.predict(X, lengths=lengths), ref.Y)
    with pytest.raises((ValueError, TypeError, AttributeError, NotImplementedError)):
        model.predict_proba(X, lengths=lengths)


@pytest.mark.parametrize("cell", CELLS)
def test_probabilities_sum_to_one_and_padding_rows_zero(cell):
    case = Case(cell=cell, ragged=True, num_layers=2, bidirectional=True)
    model, (X, y, lengths, h0), _ = run_both(case)
    Y = model.forward(X, lengths=lengths)
    for n in range(N):
        np.testing.assert_allclose(Y[n, : lengths[n]].sum(-1), 1.0, rtol=0, atol=1e-12)
        assert np.all(Y[n, lengths[n]:] == 0.0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("output", ["softmax", "linear", None])
def test_param_keys_and_shapes(cell, num_layers, bidirectional, output):
    K_ = None if output is None else K
    model = CLASSES[cell](D, H, K_, num_layers=num_layers, bidirectional=bidirectional,
                          output=output, dtype="float64", seed=0)
    shapes = param_shapes(D, H, K_, num_layers, bidirectional, output, cell=cell)
    assert set(model.params) == set(shapes)
    G = GATES[cell]
    for k, s in shapes.items():
        assert model.params[k].shape == s, k
    assert model.params["W0"].shape == (G * H, H)
    if cell == "gru":
        assert model.params["bn0"].shape == (H,)
    else:
        assert not any(k.startswith("bn") for k in model.params)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_size_defaults_to_input_size(cell, bidirectional):
    cls = CLASSES[cell]
    dirs = 2 if bidirectional else 1
    for output in ("softmax", "linear"):
        model = cls(D, H, output=output, bidirectional=bidirectional, dtype="float64", seed=0)
        assert model.params["V"].shape == (D, H * dirs)
        assert model.params["c"].shape == (D,)
    model = cls(D, H, output=None, bidirectional=bidirectional, dtype="float64", seed=0)
    assert set(model.params) == set(param_shapes(D, H, None, 1, bidirectional, None, cell=cell))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("return_sequences", [True, False])
def test_three_layers_bidirectional_match_reference(cell, return_sequences):
    case = Case(cell=cell, num_layers=3, bidirectional=True, ragged=True, use_h0=True,
                return_sequences=return_sequences)
    model, (X, y, lengths, h0), ref = run_both(case)
    assert_matches(model, ref, X, y, lengths, h0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("return_sequences", [True, False])
def test_linear_trailing_k1_may_be_omitted(cell, return_sequences):
    case = Case(cell=cell, output="linear", return_sequences=return_sequences, K=1,
                ragged=True)
    model, (X, y, lengths, h0), ref = run_both(case)
    assert y.shape[-1] == 1
    l1, g1 = model.loss_and_grad(X, y, lengths=lengths)
    l2, g2 = model.loss_and_grad(X, y[..., 0], lengths=lengths)
    assert_close(l1, ref.loss)
    assert_close(l2, ref.loss)
    for k in g1:
        assert_close(g1[k], ref.grads[k], what=k)
        assert_close(g2[k], ref.grads[k], what=k)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_tokens_equal_onehot_floats(cell, num_layers):
    case = Case(cell=cell, tokens=True, ragged=True, bidirectional=True, num_layers=num_layers,
                use_h0=True)
    model, (X, y, lengths, h0), ref = run_both(case)
    onehot = np.eye(D)[X]
    l1, g1, s1 = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                     return_state_grad=True)
    l2, g2, s2 = model.loss_and_grad(onehot, y, lengths=lengths, initial_state=h0,
                                     return_state_grad=True)
    assert_close(l1, l2)
    for k in g1:
        assert_close(g1[k], g2[k], what=k)
    assert_close(s1, s2)
    assert_close(model.forward(X, lengths=lengths, initial_state=h0),
                 model.forward(onehot, lengths=lengths, initial_state=h0))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("int_dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64,
                                       np.uint64])
def test_token_integer_dtypes(cell, int_dtype):
    case = Case(cell=cell, tokens=True, ragged=True, num_layers=2)
    model, (X, y, lengths, h0), ref = run_both(case)
    assert_close(model.forward(X.astype(int_dtype), lengths=lengths), ref.Y)
    loss, grads = model.loss_and_grad(X.astype(int_dtype), y.astype(int_dtype),
                                      lengths=lengths)
    assert_close(loss, ref.loss)
    for k in grads:
        assert_close(grads[k], ref.grads[k], what=k)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("x_dtype", [np.float16, np.float32, np.int32])
def test_float_inputs_of_other_dtypes_are_cast(cell, x_dtype):
    case = Case(cell=cell, ragged=True)
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    Xc = (X * 4).astype(x_dtype)            # int32 3-D floats: a real dtype, cast
    model = make_model(crnn, case, params)
    ref = reference(params, Xc.astype(np.float64), y, lengths, **case.ref_kwargs())
    assert_close(model.forward(Xc, lengths=lengths), ref.Y)


@pytest.mark.parametrize("cell", CELLS)
def test_inputs_are_not_modified(cell):
    case = Case(cell=cell, ragged=True, use_h0=True, bidirectional=True)
    model, (X, y, lengths, h0), _ = run_both(case)
    arrays = [X, y, lengths] + parts(h0)
    copies = [a.copy() for a in arrays]
    model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    model.loss_and_grad(X, y, lengths=lengths, initial_state=h0, return_state_grad=True)
    model.predict(X, lengths=lengths)
    for a, b in zip(arrays, copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("use_h0", [False, True])
def test_loss_and_grad_does_not_change_params_and_returns_fresh_arrays(cell, use_h0):
    case = Case(cell=cell, ragged=True, num_layers=2, use_h0=use_h0)
    model, (X, y, lengths, h0), ref = run_both(case)
    before = {k: v.copy() for k, v in model.params.items()}
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              return_state_grad=True)
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])
        assert not np.shares_memory(grads[k], model.params[k])
    # a second call must not overwrite the first call's results
    saved = {k: v.copy() for k, v in grads.items()}
    saved_state = [p.copy() for p in parts(dstate)]
    if h0 is None:
        h0_small = None
    else:
        h0_small = tuple(p[:, :1] * 2 for p in parts(h0))
        h0_small = h0_small if cell == "lstm" else h0_small[0]
    model.loss_and_grad(X[:1] * 2, y[:1], lengths=lengths[:1], initial_state=h0_small,
                        return_state_grad=True)
    for k in saved:
        np.testing.assert_array_equal(grads[k], saved[k])
    for a, b in zip(parts(dstate), saved_state):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("with_state", [False, True])
def test_varying_batch_sizes_reuse_workspace_correctly(cell, with_state):
    # grow, shrink and grow again: results must not depend on earlier calls
    case = Case(cell=cell, ragged=False, num_layers=2, bidirectional=True)
    params = random_params(case)
    model = make_model(crnn, case, params)
    rng = np.random.default_rng(7)
    for n, t in [(2, 3), (7, 9), (1, 2), (5, 4), (7, 9), (1, 11)]:
        X = rng.normal(size=(n, t, D))
        y = rng.integers(0, K, size=(n, t))
        lengths = rng.integers(1, t + 1, size=n)
        state = None
        if with_state:
            h0 = rng.normal(size=(4, n, H))
            state = (h0, rng.normal(size=(4, n, H))) if cell == "lstm" else h0
        ref = reference(params, X, y, lengths, state, **case.ref_kwargs())
        assert_matches(model, ref, X, y, lengths, state)


# in-place edits of model.params, per cell: (key, index, delta)
PARAM_EDITS = {
    "rnn": [("W0_reverse", (1, 2), 0.5), ("c", slice(None), -0.25)],
    "lstm": [("W0_reverse", (3 * H - 1, 2), 0.5),     # a row of the last-but-one block
             ("b0_reverse", 1, -0.75)],
    "gru": [("W0_reverse", (3 * H - 1, 2), 0.5), ("bn0_reverse", 1, -0.75)],
}


@pytest.mark.parametrize("cell", CELLS)
def test_writing_into_params_changes_the_model(cell):
    case = Case(cell=cell, ragged=True, bidirectional=True)
    params = random_params(case)
    model = make_model(crnn, case, params)
    X, y, lengths, _ = make_batch(case)
    for key, index, delta in PARAM_EDITS[cell]:
        model.params[key][index] += delta
        params[key][index] += delta
    ref = reference(params, X, y, lengths, **case.ref_kwargs())
    assert_close(model.forward(X, lengths=lengths), ref.Y)
    assert_close(model.loss_and_grad(X, y, lengths=lengths)[0], ref.loss)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("return_sequences", [True, False])
def test_longer_sequences_and_batch(cell, return_sequences):
    # a less tiny shape, still fast for the reference
    case = Case(cell=cell, ragged=False, num_layers=2, bidirectional=True,
                return_sequences=return_sequences)
    params = random_params(case, scale=0.3)
    rng = np.random.default_rng(3)
    n, t = 9, 17
    X = rng.normal(size=(n, t, D))
    y = rng.integers(0, K, size=(n, t) if return_sequences else n)
    lengths = rng.integers(1, t + 1, size=n)
    lengths[0] = t
    h0 = rng.normal(size=(4, n, H))
    state = (h0, rng.normal(size=(4, n, H))) if cell == "lstm" else h0
    model = make_model(crnn, case, params)
    ref = reference(params, X, y, lengths, state, **case.ref_kwargs())
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=state,
                                              return_state_grad=True)
    assert_close(loss, ref.loss)
    for k in grads:
        assert_close(grads[k], ref.grads[k], what=k)
    assert_close(dstate, ref.dstate)


# the LSTM's top h (o ⊙ tanh(C)) is smaller: it needs a bigger V, c for big logits
LOGIT_SCALE = {"rnn": 300.0, "lstm": 600.0, "gru": 300.0}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_huge_logits_stay_finite(cell, dtype, return_sequences):
    """Softmax + cross-entropy must be computed stably (log-sum-exp)."""
    case = Case(cell=cell, ragged=True, bidirectional=True, return_sequences=return_sequences)
    params = random_params(case)
    scale = LOGIT_SCALE[cell]
    params["V"] = params["V"] * scale            # logits of several hundred
    params["c"] = params["c"] * scale
    X, y, lengths, _ = make_batch(case)
    ref = reference(params, X, y, lengths, **case.ref_kwargs())
    assert np.isfinite(ref.loss) and ref.loss > 50
    model = make_model(crnn, case, params, dtype=dtype)
    Y = model.forward(X, lengths=lengths)
    loss, grads = model.loss_and_grad(X, y, lengths=lengths)
    assert np.all(np.isfinite(Y)) and np.isfinite(loss)
    tol = TOL if dtype == "float64" else 1e-4
    assert abs(loss - ref.loss) <= tol * abs(ref.loss)
    for k in grads:
        assert np.all(np.isfinite(grads[k])), k
        err = np.linalg.norm(grads[k] - ref.grads[k]) / max(np.linalg.norm(ref.grads[k]), 1e-30)
        assert err < (1e-9 if dtype == "float64" else 1e-3), (k, err)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_saturated_gates_stay_finite(cell, dtype):
    """Large pre-activations (gates at 0 or 1, tanh at ±1) give finite results
    that still match the reference: sigmoid must be computed stably."""
    case = Case(cell=cell, ragged=True, bidirectional=True, use_h0=True)
    params = random_params(case)
    for k in params:
        if k[0] in "UWb":
            params[k] = params[k] * 60.0       # pre-activations of about ±100
    X, y, lengths, h0 = make_batch(case)
    ref = reference(params, X, y, lengths, h0, **case.ref_kwargs())
    model = make_model(crnn, case, params, dtype=dtype)
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              return_state_grad=True)
    assert np.all(np.isfinite(Y)) and np.isfinite(loss)
    for p in parts(state) + parts(dstate) + list(grads.values()):
        assert np.all(np.isfinite(p))
    tol = TOL if dtype == "float64" else 2e-4
    assert abs(loss - ref.loss) <= tol * max(abs(ref.loss), 1)
    assert_close(Y, ref.Y, tol=tol * 10 if dtype == "float32" else TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_concurrent_calls_from_threads(cell):
    """Calls on one model from several threads give the serial results."""
    import threading

    case = Case(cell=cell, num_layers=2, bidirectional=True, ragged=False)
    params = random_params(case)
    model = make_model(crnn, case, params)
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(6):
        n, t = int(rng.integers(1, 9)), int(rng.integers(1, 12))
        X = rng.normal(size=(n, t, D))
        y = rng.integers(0, K, size=(n, t))
        lengths = rng.integers(1, t + 1, size=n)
        jobs.append((X, y, lengths))
    expected = [model.loss_and_grad(X, y, lengths=L) for X, y, L in jobs]
    failures = []

    def worker(j):
        X, y, L = jobs[j]
        for _ in range(30):
            loss, grads = model.loss_and_grad(X, y, lengths=L)
            if loss != expected[j][0] or any(
                    not np.array_equal(grads[k], expected[j][1][k]) for k in grads):
                failures.append(j)
                return

    threads = [threading.Thread(target=worker, args=(j,)) for j in range(len(jobs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not failures, f"threads {failures} saw results differing from serial calls"


@pytest.mark.parametrize("cell", CELLS)
def test_same_seed_same_model_and_init_bound(cell):
    cls = CLASSES[cell]
    hidden = 16
    a = cls(D, hidden, K, num_layers=2, bidirectional=True, dtype="float64", seed=5)
    b = cls(D, hidden, K, num_layers=2, bidirectional=True, dtype="float64", seed=5)
    c = cls(D, hidden, K, num_layers=2, bidirectional=True, dtype="float64", seed=6)
    bound = 1.0 / np.sqrt(hidden)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
        assert not np.array_equal(a.params[k], c.params[k]), k
        assert np.all(np.abs(a.params[k]) <= bound), k


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed", "bigendian",
                                    "readonly", "float32"])
def test_input_memory_layouts(cell, layout):
    """Any numpy layout of X, y, lengths and h0 gives the same result."""
    case = Case(cell=cell, ragged=True, bidirectional=True, num_layers=2, use_h0=True)
    model, (X, y, lengths, h0), ref = run_both(case)

    def convert(a):
        if layout == "fortran":
            return np.asfortranarray(a)
        if layout == "strided":
            return np.repeat(a, 2, axis=-1)[..., ::2]
        if layout == "reversed":
            return np.ascontiguousarray(a[::-1])[::-1]
        if layout == "bigendian":
            return a.astype(a.dtype.newbyteorder(">"))
        if layout == "readonly":
            b = a.copy()
            b.setflags(write=False)
            return b
        return a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.int32)

    Xc, yc, lc = (convert(a) for a in (X, y, lengths))
    hc = tuple(convert(p) for p in h0) if isinstance(h0, tuple) else convert(h0)
    if layout == "float32":
        ref = reference(model.params, Xc, y, lengths, hc, **case.ref_kwargs())
    assert_matches(model, ref, Xc, yc, lc, hc)
