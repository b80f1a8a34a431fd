"""model.forward(..., return_cache=True) and model.backward(cache, d_outputs,
d_state): the vector-Jacobian product of the whole model.

Checked in float64 three ways: <v, J u> against central differences of the
forward along a random direction u of every input at once (parameters, X,
the initial state), entry-by-entry central differences of <v, outputs> +
<w, final state>, and PyTorch's autograd on the same weights (outputs, final
state, every gradient including ∂X, ∂h0 and ∂c0) to 1e-10.  Then the
contract of the cache and the refusals of bad input.
"""
import copy
import itertools

import numpy as np
import pytest

import crnn
from reference import central_differences

N, T, D, H, K = 3, 5, 4, 6, 3
LENGTHS = np.array([3, 5, 1])
CELLS = ("rnn", "lstm", "gru", "gru_reset_before", "lstm_peephole", "lstm_proj")


def build(cell, layers=1, bidirectional=False, output=None, return_sequences=True,
          dtype="float64", seed=0, **settings):
    options = dict(num_layers=layers, bidirectional=bidirectional, output=output,
                   return_sequences=return_sequences, dtype=dtype, seed=seed, **settings)
    size = None if output is None else K
    if cell == "rnn":
        return crnn.RNN(D, H, size, **options)
    if cell == "lstm":
        return crnn.LSTM(D, H, size, **options)
    if cell == "lstm_peephole":
        return crnn.LSTM(D, H, size, peepholes=True, **options)
    if cell == "lstm_proj":     # h (and the state's h) 4 wide, C 6 wide
        return crnn.LSTM(D, H, size, proj_size=4, **options)
    return crnn.GRU(D, H, size, reset_after=cell == "gru", **options)


def pair_state(model):
    return model._cell_state


def batch(model, seed=1, ragged=False, with_state=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, T, D))
    state = None
    if with_state:
        state = rng.normal(scale=0.5, size=model._state_shape(N))
        if pair_state(model):
            state = (state, rng.normal(scale=0.5, size=model._state_shape(N, cell=True)))
    return X, (LENGTHS if ragged else None), state


def cotangents(model, outputs, final, seed=2, which="both"):
    """Random d_outputs and d_state (each None when `which` leaves it out)."""
    rng = np.random.default_rng(seed)
    d_outputs = rng.normal(size=outputs.shape) if which in ("outputs", "both") else None
    d_state = None
    if which in ("state", "both"):
        d_state = (tuple(rng.normal(size=s.shape) for s in final) if pair_state(model)
                   else rng.normal(size=final.shape))
    return d_outputs, d_state


def objective(model, X, lengths, state, d_outputs, d_state):
    """<d_outputs, outputs> + <d_state, final state> of one forward."""
    outputs, final = model.forward(X, lengths, state, return_state=True)
    total = 0.0 if d_outputs is None else float(np.sum(outputs * d_outputs))
    if d_state is not None:
        finals = final if pair_state(model) else (final,)
        parts = d_state if pair_state(model) else (d_state,)
        total += sum(float(np.sum(f * p)) for f, p in zip(finals, parts))
    return total


def flat_state(state):
    return state if isinstance(state, tuple) else (state,)


MATRIX = [dict(cell=c, layers=l, bidirectional=b, ragged=r, which=w, output=o,
               return_sequences=s)
          for c, l, b, r, w, o, s in itertools.product(
              CELLS, (1, 2), (False, True), (False, True),
              ("outputs", "state", "both"), (None, "softmax", "linear"), (True, False))
          if not (o is not None and (l == 2 and b))]     # keeps the matrix smaller


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: "-".join(map(str, c.values())))
def test_v_jacobian_u_matches_directional_differences(case):
    model = build(case["cell"], case["layers"], case["bidirectional"], case["output"],
                  case["return_sequences"])
    X, lengths, state = batch(model, ragged=case["ragged"])
    outputs, final, cache = model.forward(X, lengths, state, return_state=True,
                                          return_cache=True)
    d_outputs, d_state = cotangents(model, outputs, final, which=case["which"])
    grads = model.backward(cache, d_outputs=d_outputs, d_state=d_state)
    # a random direction in every input at once
    rng = np.random.default_rng(3)
    params = model.params
    direction = {name: rng.normal(size=a.shape) for name, a in params.items()}
    dX = rng.normal(size=X.shape)
    if lengths is not None:
        dX[np.arange(T)[None, :] >= lengths[:, None]] = 0     # padding is not an input
    dstate = tuple(rng.normal(size=s.shape) for s in flat_state(state))
    saved = {name: a.copy() for name, a in params.items()}

    def at(step):
        for name, a in params.items():
            a[...] = saved[name] + step * direction[name]
        moved = tuple(s + step * d for s, d in zip(flat_state(state), dstate))
        return objective(model, X + step * dX, lengths,
                         moved if pair_state(model) else moved[0], d_outputs, d_state)

    step = 1e-6
    numeric = (at(step) - at(-step)) / (2 * step)
    at(0.0)
    analytic = sum(float(np.sum(grads[name] * direction[name])) for name in params)
    analytic += float(np.sum(grads["X"] * dX))
    analytic += sum(float(np.sum(g * d)) for g, d in
                    zip(flat_state(grads["initial_state"]), dstate))
    assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)), (numeric, analytic)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("which", ["outputs", "state", "both"])
def test_every_gradient_entry_matches_finite_differences(cell, layers, bidirectional,
                                                         which):
    model = build(cell, layers, bidirectional)
    X, lengths, state = batch(model, ragged=True)
    outputs, final, cache = model.forward(X, lengths, state, return_state=True,
                                          return_cache=True)
    d_outputs, d_state = cotangents(model, outputs, final, which=which)
    grads = model.backward(cache, d_outputs=d_outputs, d_state=d_state)
    states = list(flat_state(state))

    def loss():
        s = tuple(states) if pair_state(model) else states[0]
        return objective(model, X, lengths, s, d_outputs, d_state)

    for name, array in model.params.items():
        np.testing.assert_allclose(grads[name], central_differences(loss, array),
                                   rtol=1e-6, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(grads["X"], central_differences(loss, X),
                               rtol=1e-6, atol=1e-8, err_msg="X")
    for got, s in zip(flat_state(grads["initial_state"]), states):
        np.testing.assert_allclose(got, central_differences(loss, s),
                                   rtol=1e-6, atol=1e-8, err_msg="initial state")


# ------------------------------------------------------------------ PyTorch
TORCH_CASES = [dict(cell=c, layers=l, bidirectional=b, ragged=r, output=o,
                    return_sequences=s)
               for c, l, b, r, o, s in itertools.product(
                   ("rnn", "lstm", "gru"), (1, 2), (False, True), (False, True),
                   (None, "softmax"), (True, False))]


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_matches_torch_autograd(case):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    from torch_helper import build_torch, one_thread, torch_grads_as_crnn
    model = build(case["cell"], case["layers"], case["bidirectional"], case["output"],
                  case["return_sequences"])
    X, lengths, state = batch(model, ragged=case["ragged"])
    outputs, final, cache = model.forward(X, lengths, state, return_state=True,
                                          return_cache=True)
    d_outputs, d_state = cotangents(model, outputs, final)
    grads = model.backward(cache, d_outputs=d_outputs, d_state=d_state)

    rnn, linear = build_torch(model.params, num_layers=model.num_layers,
                              bidirectional=model.bidirectional, output=model.output,
                              cell=case["cell"])
    x = torch.tensor(X, requires_grad=True)
    states = [torch.tensor(s, requires_grad=True) for s in flat_state(state)]
    lens = torch.as_tensor(lengths if lengths is not None else np.full(N, T))
    with one_thread():
        packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        out, last = rnn(packed, tuple(states) if pair_state(model) else states[0])
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        h_n = last[0] if pair_state(model) else last
        if not model.return_sequences:
            out = torch.cat([h_n[-model.directions + d] for d in range(model.directions)], 1)
        if linear is not None:
            out = torch.softmax(linear(out), dim=-1)
            if model.return_sequences:
                out = out * (torch.arange(T)[None, :] < lens[:, None])[..., None]
        total = (out * torch.tensor(d_outputs)).sum()
        for f, d in zip(last if pair_state(model) else (last,), flat_state(d_state)):
            total = total + (f * torch.tensor(d)).sum()
        total.backward()
    np.testing.assert_allclose(outputs, out.detach().numpy(), rtol=1e-10, atol=1e-10)
    for got, want in zip(flat_state(final), last if pair_state(model) else (last,)):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-10)
    expected = torch_grads_as_crnn(rnn, linear, model.num_layers, model.bidirectional)
    for name in model.params:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-10, atol=1e-10,
                                   err_msg=name)
    np.testing.assert_allclose(grads["X"], x.grad.numpy(), rtol=1e-10, atol=1e-10)
    for got, s in zip(flat_state(grads["initial_state"]), states):
        np.testing.assert_allclose(got, s.grad.numpy(), rtol=1e-10, atol=1e-10)


# -------------------------------------------------------- composition, inputs
@pytest.mark.parametrize("output", ["softmax", "linear"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_loss_and_grad_is_backward_of_the_loss_gradient(output, return_sequences):
    model = build("lstm", 2, True, output, return_sequences)
    X, lengths, state = batch(model, ragged=True)
    rng = np.random.default_rng(5)
    shape = (N, T) if return_sequences else (N,)
    y = (rng.integers(0, K, size=shape) if output == "softmax"
         else rng.normal(size=shape + (K,)))
    loss, expected = model.loss_and_grad(X, y, lengths, state)
    outputs, cache = model.forward(X, lengths, state, return_cache=True)
    count = LENGTHS.sum() if return_sequences else N
    mask = ((np.arange(T)[None, :] < LENGTHS[:, None])[..., None] if return_sequences
            else np.ones((N, 1), bool))
    if output == "softmax":      # ∂(mean -log p[y])/∂p
        onehot = np.eye(K)[y]
        d_outputs = np.where(mask, -onehot / np.where(outputs > 0, outputs, 1), 0) / count
    else:
        d_outputs = np.where(mask, outputs - y, 0) / count
    grads = model.backward(cache, d_outputs=d_outputs)
    for name in model.params:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_token_inputs_have_no_input_gradient_and_exact_parameter_gradients():
    model = build("gru", 2, True)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, D, size=(N, T))
    outputs, cache = model.forward(tokens, LENGTHS, return_cache=True)
    d_outputs = rng.normal(size=outputs.shape)
    grads = model.backward(cache, d_outputs)
    assert "X" not in grads
    # one-hot features give the same model: their gradients agree
    onehot = np.eye(D)[tokens]
    same, cache = model.forward(onehot, LENGTHS, return_cache=True)
    np.testing.assert_allclose(same, outputs, rtol=1e-12, atol=1e-12)
    dense = model.backward(cache, d_outputs)
    for name in model.params:
        np.testing.assert_allclose(grads[name], dense[name], rtol=1e-10, atol=1e-12)


def test_list_input_gives_a_list_of_input_gradients():
    model = build("lstm")
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(n, D)) for n in LENGTHS]
    outputs, cache = model.forward(X, return_cache=True)
    d_outputs = rng.normal(size=outputs.shape)
    grads = model.backward(cache, d_outputs)
    padded = np.zeros((N, T, D))
    for i, x in enumerate(X):
        padded[i, :len(x)] = x
    _, cache = model.forward(padded, LENGTHS, return_cache=True)
    expected = model.backward(cache, d_outputs)["X"]
    assert [g.shape for g in grads["X"]] == [x.shape for x in X]
    for i, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(grads["X"][i], expected[i, :n])
        assert not expected[i, n:].any()        # zero at padded positions


def test_defaults_are_zero_gradients_and_float32_agrees_with_float64():
    model = build("lstm", output="linear")
    X, lengths, state = batch(model, ragged=True)
    _, cache = model.forward(X, lengths, state, return_cache=True)
    zero = model.backward(cache)
    assert all(not np.any(g) for name, g in zero.items() if name != "initial_state")
    assert all(not np.any(s) for s in zero["initial_state"])
    single = build("lstm", output="linear", dtype="float32")
    single.set_params(model.params)
    outputs, cache = model.forward(X, lengths, state, return_cache=True)
    d_outputs = np.random.default_rng(0).normal(size=outputs.shape)
    double = model.backward(cache, d_outputs)
    _, cache32 = single.forward(X, lengths, state, return_cache=True)
    grads = single.backward(cache32, d_outputs)
    for name in model.params:
        assert grads[name].dtype == np.float32
        np.testing.assert_allclose(grads[name], double[name], rtol=1e-4, atol=1e-5)


def test_backward_twice_is_the_same_and_changes_nothing():
    model = build("gru", 2, True, "softmax")
    X, lengths, state = batch(model, ragged=True)
    before = {k: v.copy() for k, v in model.params.items()}
    outputs, final, cache = model.forward(X, lengths, state, return_state=True,
                                          return_cache=True)
    d_outputs, d_state = cotangents(model, outputs, final)
    first = model.backward(cache, d_outputs, d_state)
    second = model.backward(cache, d_outputs, d_state)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, before[name])
    again = model.forward(X, lengths, state)
    np.testing.assert_array_equal(again, outputs)


# ------------------------------------------------------------------ refusals
def refused(error, match, call, model, cache, expected):
    """`call` raises `error` matching `match`; the model and the cache are
    left as they were (the cache still gives `expected`)."""
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(error, match=match):
        call()
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, before[name])
    if cache is not None:
        grads = model.backward(cache, *expected[1])
        for name in expected[0]:
            np.testing.assert_array_equal(grads[name], expected[0][name])


def test_bad_gradients_are_refused_naming_expected_and_given():
    model = build("lstm", output="softmax")
    X, lengths, state = batch(model)
    outputs, final, cache = model.forward(X, lengths, state, return_state=True,
                                          return_cache=True)
    d_outputs, d_state = cotangents(model, outputs, final)
    expected = (model.backward(cache, d_outputs, d_state), (d_outputs, d_state))
    args = (model, cache, expected)
    refused(ValueError, r"shape of the forward's outputs, \(3, 5, 3\), got \(5, 3, 3\)",
            lambda: model.backward(cache, d_outputs.swapaxes(0, 1)), *args)
    refused(ValueError, r"\(3, 5, 3\), got \(3, 5\)",
            lambda: model.backward(cache, d_outputs[..., 0]), *args)
    refused(TypeError, "floats .* got an array of dtype int64",
            lambda: model.backward(cache, np.ones(outputs.shape, dtype=np.int64)), *args)
    refused(TypeError, "dtype complex128",
            lambda: model.backward(cache, d_outputs + 0j), *args)
    refused(ValueError, "NaN or infinity",
            lambda: model.backward(cache, np.full(outputs.shape, np.nan)), *args)
    refused(ValueError, "NaN or infinity",   # beyond float32? this model is float64
            lambda: model.backward(cache, d_outputs, (d_state[0], d_state[1] * np.inf)),
            *args)
    refused(TypeError, r"pair \(dh_n, dc_n\), got ndarray",
            lambda: model.backward(cache, d_outputs, d_state[0]), *args)
    refused(ValueError, r"d_state\[1\] \(dc_n\) must have the shape of the final "
            r"state, \(1, 3, 6\), got \(1, 6, 3\)",
            lambda: model.backward(cache, None, (d_state[0], d_state[1].swapaxes(1, 2))),
            *args)
    refused(TypeError, "cache must be what forward",
            lambda: model.backward({"not": "a cache"}), *args)
    refused(TypeError, "return_cache must be True or False",
            lambda: model.forward(X, return_cache="yes"), *args)


def test_d_state_needs_a_forward_that_returned_the_state():
    model = build("gru")
    X, lengths, state = batch(model)
    outputs, cache = model.forward(X, lengths, state, return_cache=True)
    d_outputs = np.ones_like(outputs)
    expected = (model.backward(cache, d_outputs), (d_outputs, None))
    refused(ValueError, "did not return the final state",
            lambda: model.backward(cache, d_outputs, np.ones((1, N, H))),
            model, cache, expected)


def test_stale_foreign_and_orphaned_caches_are_refused():
    model = build("rnn", output="linear")
    other = build("rnn", output="linear")
    X, lengths, state = batch(model)
    outputs, cache = model.forward(X, lengths, state, return_cache=True)
    d_outputs = np.ones_like(outputs)
    expected = (model.backward(cache, d_outputs), (d_outputs, None))
    refused(ValueError, "another model", lambda: other.backward(cache, d_outputs),
            model, cache, expected)
    twin = copy.deepcopy(model)
    refused(ValueError, "another model", lambda: twin.backward(cache, d_outputs),
            model, cache, expected)
    assert cache.is_current()
    model.predict(X)            # any later call on the model's workspace
    assert not cache.is_current()
    refused(ValueError, "stale: the model has run 1 more call", lambda: model.backward(
        cache, d_outputs), model, None, None)
    _, cache = model.forward(X, lengths, state, return_cache=True)
    _, newer = model.forward(X, lengths, state, return_cache=True)
    refused(ValueError, "stale", lambda: model.backward(cache, d_outputs),
            model, None, None)
    model.backward(newer, d_outputs)         # the newest one is fine
    # a model given a new workspace (as unpickling does) orphans its caches
    model.__setstate__(model.__getstate__())
    refused(ValueError, "workspace is no longer the model's",
            lambda: model.backward(newer, d_outputs), model, None, None)


def test_input_grad_false_leaves_out_the_input_gradient_only():
    model = build("lstm", 2, True)
    X, lengths, state = batch(model, ragged=True)
    outputs, cache = model.forward(X, lengths, state, return_cache=True)
    d_outputs = np.random.default_rng(0).normal(size=outputs.shape)
    full = model.backward(cache, d_outputs)
    lean = model.backward(cache, d_outputs, input_grad=False)
    assert set(full) - set(lean) == {"X"}
    for name in lean:
        if name != "initial_state":
            np.testing.assert_array_equal(lean[name], full[name])
    with pytest.raises(TypeError, match="input_grad must be True or False"):
        model.backward(cache, d_outputs, input_grad=None)


# ------------------------------------------------------------------ dropout
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "gru_reset_before",
                                  "lstm_proj"])
@pytest.mark.parametrize("output", [None, "softmax"])
def test_training_forward_and_backward_drop_with_the_seed_masks(cell, output):
    """forward(training=True, dropout_seed=s) applies the model's dropout
    (the same masks for the same seed), and backward is its exact VJP:
    <v, J u> against directional differences at those masks."""
    model = build(cell, layers=2, bidirectional=True, output=output, dropout=0.3,
                  recurrent_dropout=0.2, output_dropout=0.0 if output is None else 0.25)
    X, lengths, state = batch(model, ragged=True)
    plain = model.forward(X, lengths, state)
    kwargs = dict(return_state=True, training=True, dropout_seed=7)
    outputs, final = model.forward(X, lengths, state, **kwargs)
    assert not np.allclose(outputs, plain)                   # something dropped
    np.testing.assert_array_equal(outputs, model.forward(X, lengths, state, **kwargs)[0])
    outputs, final, cache = model.forward(X, lengths, state, return_cache=True, **kwargs)
    d_outputs, d_state = cotangents(model, outputs, final)
    grads = model.backward(cache, d_outputs=d_outputs, d_state=d_state)
    rng = np.random.default_rng(5)
    params = model.params
    direction = {name: rng.normal(size=a.shape) for name, a in params.items()}
    dX = rng.normal(size=X.shape)
    dX[np.arange(T)[None, :] >= lengths[:, None]] = 0
    saved = {name: a.copy() for name, a in params.items()}

    def at(step):
        for name, a in params.items():
            a[...] = saved[name] + step * direction[name]
        out, fin = model.forward(X + step * dX, lengths, state, **kwargs)
        parts = zip(flat_state(fin), flat_state(d_state))
        return float(np.sum(out * d_outputs)) + sum(float(np.sum(f * d)) for f, d in parts)

    step = 1e-6
    numeric = (at(step) - at(-step)) / (2 * step)
    at(0.0)
    analytic = sum(float(np.sum(grads[name] * direction[name])) for name in params)
    analytic += float(np.sum(grads["X"] * dX))
    assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)), (numeric, analytic)
