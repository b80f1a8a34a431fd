"""crnn.RNN in float64 against the numpy reference (reference.py), to 1e-10.

The whole option matrix: tanh/relu, softmax/linear, many-to-many/many-to-one,
equal/ragged lengths, float/token inputs, 1-2 layers, 1-2 directions, with and
without an initial state. Every output, final state, loss, gradient and the
initial-state gradient is compared.
"""

import numpy as np
import pytest

import crnn
from cases import D, H, K, N, T, RAGGED, Case, case_matrix, make_batch, make_model, random_params
from reference import param_shapes, rnn_reference

TOL = 1e-10


def assert_close(actual, expected, tol=TOL, what=""):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)


def run_both(case, reduction="mean", seed=0):
    params = random_params(case, seed=seed)
    X, y, lengths, h0 = make_batch(case, seed=seed + 1)
    model = make_model(crnn, case, params)
    ref = rnn_reference(params, X, y, lengths, h0, reduction=reduction, **case.ref_kwargs())
    return model, (X, y, lengths, h0), ref


@pytest.mark.parametrize("case", case_matrix(), ids=repr)
def test_forward_and_gradients_match_reference(case):
    model, (X, y, lengths, h0), ref = run_both(case)

    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    assert_close(Y, ref.Y, what="forward output")
    assert_close(state, ref.state, what="final state")
    assert Y.dtype == np.float64 and state.dtype == np.float64

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


@pytest.mark.parametrize("case", case_matrix(ragged=True, tokens=False, use_h0=True), ids=repr)
def test_sum_reduction_matches_reference(case):
    model, (X, y, lengths, h0), ref = run_both(case, reduction="sum")
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              reduction="sum", return_state_grad=True)
    assert_close(loss, ref.loss, what="loss")
    for k in ref.grads:
        assert_close(grads[k], ref.grads[k], what=f"grad {k}")
    assert_close(dstate, ref.dstate, what="initial-state gradient")


@pytest.mark.parametrize("case", case_matrix(ragged=True, use_h0=True, tokens=False,
                                             return_sequences=True), ids=repr)
def test_sum_is_mean_times_count(case):
    model, (X, y, lengths, h0), _ = run_both(case)
    lm, gm = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0)
    ls, gs = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0, reduction="sum")
    count = int(np.sum(lengths))
    assert_close(ls, lm * count)
    for k in gm:
        assert_close(gs[k], gm[k] * count, what=k)


@pytest.mark.parametrize("case", case_matrix(output=None, nonlinearity="tanh", tokens=False),
                         ids=repr)
def test_no_output_layer_returns_top_h(case):
    params = random_params(case)
    X, _, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    assert "V" not in model.params and "c" not in model.params
    ref = rnn_reference(params, X, None, lengths, h0, **case.ref_kwargs())
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    expected_shape = (N, T, H * case.dirs) if case.return_sequences else (N, H * case.dirs)
    assert Y.shape == expected_shape
    assert_close(Y, ref.Y)
    assert_close(state, ref.state)


def test_loss_and_grad_two_tuple_by_default():
    case = Case()
    model, (X, y, lengths, h0), ref = run_both(case)
    out = model.loss_and_grad(X, y)
    assert isinstance(out, tuple) and len(out) == 2
    loss, grads = out
    assert_close(loss, ref.loss)


def test_dstate_without_initial_state_is_gradient_at_zero():
    case = Case(num_layers=2, bidirectional=True, ragged=True)
    model, (X, y, lengths, _), ref = run_both(case)
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, return_state_grad=True)
    assert dstate.shape == (4, N, H)
    assert_close(dstate, ref.dstate)
    # the same as passing explicit zeros
    _, _, dstate0 = model.loss_and_grad(X, y, lengths=lengths, initial_state=np.zeros((4, N, H)),
                                        return_state_grad=True)
    assert_close(dstate0, dstate, tol=0)


@pytest.mark.parametrize("case", case_matrix(output="softmax", nonlinearity="tanh",
                                             num_layers=1, use_h0=False, tokens=False),
                         ids=repr)
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


@pytest.mark.parametrize("return_sequences", [True, False])
def test_predict_linear_and_proba_raises(return_sequences):
    case = Case(output="linear", ragged=True, return_sequences=return_sequences)
    model, (X, y, lengths, h0), ref = run_both(case)
    pred = model.predict(X, lengths=lengths)
    assert_close(pred, ref.Y)
    with pytest.raises((ValueError, TypeError, AttributeError, NotImplementedError)):
        model.predict_proba(X, lengths=lengths)


def test_probabilities_sum_to_one_and_padding_rows_zero():
    case = Case(ragged=True, num_layers=2, bidirectional=True)
    model, (X, y, lengths, h0), _ = run_both(case)
    Y = model.forward(X, lengths=lengths)
    for n in range(N):
        np.testing.assert_allclose(Y[n, : lengths[n]].sum(-1), 1.0, rtol=0, atol=1e-12)
        assert np.all(Y[n, lengths[n]:] == 0.0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_size_defaults_to_input_size(bidirectional):
    dirs = 2 if bidirectional else 1
    for output in ("softmax", "linear"):
        model = crnn.RNN(D, H, output=output, bidirectional=bidirectional, dtype="float64",
                         seed=0)
        assert model.params["V"].shape == (D, H * dirs)
        assert model.params["c"].shape == (D,)
    model = crnn.RNN(D, H, output=None, bidirectional=bidirectional, dtype="float64", seed=0)
    assert set(model.params) == set(param_shapes(D, H, None, 1, bidirectional, None))


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_param_keys_and_shapes(num_layers, bidirectional):
    model = crnn.RNN(D, H, K, num_layers=num_layers, bidirectional=bidirectional,
                     dtype="float64", seed=0)
    shapes = param_shapes(D, H, K, num_layers, bidirectional, "softmax")
    assert set(model.params) == set(shapes)
    for k, s in shapes.items():
        assert model.params[k].shape == s, k


def test_three_layers_bidirectional_match_reference():
    case = Case(num_layers=3, bidirectional=True, ragged=True, use_h0=True)
    model, (X, y, lengths, h0), ref = run_both(case)
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    assert_close(Y, ref.Y)
    assert_close(state, ref.state)
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              return_state_grad=True)
    assert_close(loss, ref.loss)
    for k in ref.grads:
        assert_close(grads[k], ref.grads[k], what=k)
    assert_close(dstate, ref.dstate)


@pytest.mark.parametrize("output", ["linear"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_linear_trailing_k1_may_be_omitted(output, return_sequences):
    case = Case(output=output, return_sequences=return_sequences, K=1, ragged=True)
    model, (X, y, lengths, h0), ref = run_both(case)
    assert y.shape[-1] == 1
    l1, g1 = model.loss_and_grad(X, y, lengths=lengths)
    l2, g2 = model.loss_and_grad(X, y[..., 0], lengths=lengths)
    assert_close(l1, ref.loss)
    assert_close(l2, ref.loss)
    for k in g1:
        assert_close(g1[k], ref.grads[k], what=k)
        assert_close(g2[k], ref.grads[k], what=k)


@pytest.mark.parametrize("int_dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64,
                                       np.uint64])
def test_token_integer_dtypes(int_dtype):
    case = Case(tokens=True, ragged=True, num_layers=2)
    model, (X, y, lengths, h0), ref = run_both(case)
    Xc = X.astype(int_dtype)
    assert_close(model.forward(Xc, lengths=lengths), ref.Y)
    loss, grads = model.loss_and_grad(Xc, y.astype(int_dtype), lengths=lengths)
    assert_close(loss, ref.loss)
    for k in grads:
        assert_close(grads[k], ref.grads[k], what=k)


def test_tokens_equal_onehot_floats():
    case = Case(tokens=True, ragged=True, bidirectional=True, use_h0=True)
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


@pytest.mark.parametrize("x_dtype", [np.float16, np.float32, np.int32])
def test_float_inputs_of_other_dtypes_are_cast(x_dtype):
    case = Case(ragged=True)
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    Xc = (X * 4).astype(x_dtype)            # int32 3-D floats: a real dtype, cast
    model = make_model(crnn, case, params)
    ref = rnn_reference(params, Xc.astype(np.float64), y, lengths, **case.ref_kwargs())
    assert_close(model.forward(Xc, lengths=lengths), ref.Y)


def test_inputs_are_not_modified():
    case = Case(ragged=True, use_h0=True, bidirectional=True)
    model, (X, y, lengths, h0), _ = run_both(case)
    copies = [a.copy() for a in (X, y, lengths, h0)]
    model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    model.loss_and_grad(X, y, lengths=lengths, initial_state=h0, return_state_grad=True)
    model.predict(X, lengths=lengths)
    for a, b in zip((X, y, lengths, h0), copies):
        np.testing.assert_array_equal(a, b)


def test_loss_and_grad_does_not_change_params_and_returns_fresh_arrays():
    case = Case(ragged=True, num_layers=2)
    model, (X, y, lengths, h0), ref = run_both(case)
    before = {k: v.copy() for k, v in model.params.items()}
    loss, grads = model.loss_and_grad(X, y, lengths=lengths)
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])
        assert not np.shares_memory(grads[k], model.params[k])
    # a second call must not overwrite the first call's gradients
    saved = {k: v.copy() for k, v in grads.items()}
    model.loss_and_grad(X[:1] * 2, y[:1], lengths=lengths[:1])
    for k in saved:
        np.testing.assert_array_equal(grads[k], saved[k])


def test_varying_batch_sizes_reuse_workspace_correctly():
    # grow, shrink and grow again: results must not depend on earlier calls
    case = Case(ragged=False, num_layers=2, bidirectional=True)
    params = random_params(case)
    model = make_model(crnn, case, params)
    rng = np.random.default_rng(7)
    for n, t in [(2, 3), (7, 9), (1, 2), (5, 4), (7, 9), (1, 11)]:
        X = rng.normal(size=(n, t, D))
        y = rng.integers(0, K, size=(n, t))
        lengths = rng.integers(1, t + 1, size=n)
        ref = rnn_reference(params, X, y, lengths, **case.ref_kwargs())
        assert_close(model.forward(X, lengths=lengths), ref.Y)
        loss, grads = model.loss_and_grad(X, y, lengths=lengths)
        assert_close(loss, ref.loss)
        for k in grads:
            assert_close(grads[k], ref.grads[k], what=k)


def test_writing_into_params_changes_the_model():
    case = Case(ragged=True, bidirectional=True)
    params = random_params(case)
    model = make_model(crnn, case, params)
    X, y, lengths, _ = make_batch(case)
    model.params["W0_reverse"][1, 2] += 0.5
    model.params["c"][:] -= 0.25
    params["W0_reverse"][1, 2] += 0.5
    params["c"] -= 0.25
    ref = rnn_reference(params, X, y, lengths, **case.ref_kwargs())
    assert_close(model.forward(X, lengths=lengths), ref.Y)
    assert_close(model.loss_and_grad(X, y, lengths=lengths)[0], ref.loss)


def test_longer_sequences_and_batch():
    # a less tiny shape, still fast for the reference
    case = Case(nonlinearity="tanh", ragged=False, num_layers=2, bidirectional=True)
    params = random_params(case, scale=0.3)
    rng = np.random.default_rng(3)
    n, t = 9, 17
    X = rng.normal(size=(n, t, D))
    y = rng.integers(0, K, size=(n, t))
    lengths = rng.integers(1, t + 1, size=n)
    lengths[0] = t
    h0 = rng.normal(size=(4, n, H))
    model = make_model(crnn, case, params)
    ref = rnn_reference(params, X, y, lengths, h0, **case.ref_kwargs())
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              return_state_grad=True)
    assert_close(loss, ref.loss)
    for k in grads:
        assert_close(grads[k], ref.grads[k], what=k)
    assert_close(dstate, ref.dstate)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_huge_logits_stay_finite(dtype, return_sequences):
    """Softmax + cross-entropy must be computed stably (log-sum-exp)."""
    case = Case(ragged=True, bidirectional=True, return_sequences=return_sequences)
    params = random_params(case)
    params["V"] = params["V"] * 300.0            # logits of several hundred
    params["c"] = params["c"] * 300.0
    X, y, lengths, _ = make_batch(case)
    ref = rnn_reference(params, X, y, lengths, **case.ref_kwargs())
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


def test_concurrent_calls_from_threads():
    """Calls on one model from several threads give the serial results."""
    import threading

    case = Case(num_layers=2, bidirectional=True, ragged=False)
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


@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed", "bigendian",
                                    "readonly", "float32"])
def test_input_memory_layouts(layout):
    """Any numpy layout of X, y, lengths and h0 gives the same result."""
    case = Case(ragged=True, bidirectional=True, num_layers=2, use_h0=True)
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

    Xc, yc, lc, hc = (convert(a) for a in (X, y, lengths, h0))
    if layout == "float32":
        ref = rnn_reference(model.params, Xc, y, lengths, hc, **case.ref_kwargs())
    Y, state = model.forward(Xc, lengths=lc, initial_state=hc, return_state=True)
    assert_close(Y, ref.Y)
    assert_close(state, ref.state)
    loss, grads, dstate = model.loss_and_grad(Xc, yc, lengths=lc, initial_state=hc,
                                              return_state_grad=True)
    assert_close(loss, ref.loss)
    for k in grads:
        assert_close(grads[k], ref.grads[k], what=k)
    assert_close(dstate, ref.dstate)
