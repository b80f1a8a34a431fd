"""Checks every cell variant gets (the peephole LSTM, the projected LSTM,
the original GRU): each takes a crnn model and its data, and asserts.

Only a helper for the tests; imports crnn and tests/reference.py."""
import pickle

import numpy as np

import crnn
from reference import central_differences, reference


def lstm_batch(model, N, T, seed=1, lanes=1):
    """(X, y, (h0, c0)) for an LSTM `model`: N sequences of T steps, targets
    for its output and return_sequences, and an initial state of `lanes`
    lanes (h0 as wide as the model's h, c0 as its cells)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, T, model.input_size))
    h0 = rng.normal(scale=0.5, size=(lanes, N, model.params["W0"].shape[1]))
    c0 = rng.normal(scale=0.5, size=(lanes, N, model.hidden_size))
    K = model.output_size or 1
    rows = (N, T) if model.return_sequences else (N,)
    if model.output == "softmax":
        y = rng.integers(0, K, size=rows)
    else:
        y = rng.normal(size=rows + (K,))
    return X, y, (h0, c0)


def check_against_reference(model, X, y, lengths, state, tol):
    """Outputs, loss, every gradient, the final state and the initial-state
    gradient of ``model.loss_and_grad`` against the float64 numpy reference
    (an LSTM: `state` is (h0, c0))."""
    loss, grads, dstate, final, Y = model.loss_and_grad(
        X, y, lengths, state, return_state_grad=True, return_state=True,
        return_outputs=True)
    ref = reference(model.params, X, y, lengths, state, cell="lstm",
                    num_layers=model.num_layers, bidirectional=model.bidirectional,
                    output=model.output, return_sequences=model.return_sequences)
    np.testing.assert_allclose(Y, ref.Y, rtol=tol, atol=tol)
    assert abs(loss - ref.loss) <= tol * max(1, abs(ref.loss))
    for name in model.params:
        np.testing.assert_allclose(grads[name], ref.grads[name], rtol=tol,
                                   atol=tol, err_msg=name)
    for got, expected in zip(final + dstate, ref.state + ref.dstate):
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def check_finite_differences(model, X, y, lengths, state):
    """Every parameter's gradient and the initial state's (each array of
    `state`, h0 or (h0, c0)) against central differences of the model's own
    float64 loss."""
    states = state if isinstance(state, tuple) else (state,)
    loss, grads, dstate = model.loss_and_grad(X, y, lengths, state,
                                              return_state_grad=True)
    dstates = dstate if isinstance(dstate, tuple) else (dstate,)

    def f():
        return model.loss_and_grad(X, y, lengths, state)[0]

    for name, array in model.params.items():
        np.testing.assert_allclose(grads[name], central_differences(f, array),
                                   rtol=1e-6, atol=1e-8, err_msg=name)
    for array, gradient in zip(states, dstates):
        np.testing.assert_allclose(gradient, central_differences(f, array),
                                   rtol=1e-6, atol=1e-8)


def check_threads_and_one_hot(model, tokens, y):
    """One and two crnn threads agree (to rounding), and token inputs give
    what their one-hot vectors give."""
    previous = crnn.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            crnn.set_num_threads(threads)
            results.append(model.loss_and_grad(tokens, y))
    finally:
        crnn.set_num_threads(previous)
    (l1, g1), (l2, g2) = results
    tol = 1e-5 if model.dtype == np.float32 else 1e-12
    assert abs(l1 - l2) <= tol * abs(l1)
    for name in g1:
        np.testing.assert_allclose(g1[name], g2[name], rtol=tol, atol=tol)
    l3, g3 = model.loss_and_grad(np.eye(model.input_size)[tokens], y)
    assert abs(l1 - l3) <= tol * abs(l1)
    for name in g1:
        np.testing.assert_allclose(g1[name], g3[name], rtol=10 * tol,
                                   atol=10 * tol, err_msg=name)


def check_stream(model, X, state):
    """A stream started from `state`, fed X step by step, gives forward's
    outputs and ends in its final state."""
    expected, final = model.forward(X, initial_state=state, return_state=True)
    stream = model.stream(batch_size=X.shape[0])
    stream.state = state
    for t in range(X.shape[1]):
        np.testing.assert_allclose(stream.step(X[:, t]), expected[:, t],
                                   rtol=1e-12, atol=1e-13)
    for got, want in zip(stream.state, final):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def check_save_load(model, X, lengths, path):
    """crnn.load(model.save(path)) and a pickled copy: the same class,
    settings, parameters and outputs.  Returns the loaded models."""
    expected = model.forward(X, lengths)
    model.save(path)
    loaded = [crnn.load(path), pickle.loads(pickle.dumps(model))]
    for again in loaded:
        assert type(again) is type(model) and repr(again) == repr(model)
        for name, array in model.params.items():
            np.testing.assert_array_equal(again.params[name], array, err_msg=name)
        np.testing.assert_array_equal(again.forward(X, lengths), expected)
    return loaded


def check_trainer_learns(model, X, y, name):
    """Five epochs of the Trainer lower the loss and move parameter `name`."""
    before = model.params[name].copy()
    history = crnn.Trainer(model, lr=1e-2, seed=0).fit(X, y, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.array_equal(model.params[name], before)
