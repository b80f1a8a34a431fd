"""crnn.RNN against PyTorch (nn.RNN + nn.Linear + cross_entropy / MSE).

Same weights in both (bias_ih = b, bias_hh = 0); ragged batches go through
pack_padded_sequence. float64 agrees to 1e-10 on outputs, final state, loss,
every gradient and the h0 gradient; float32 to about 1e-5.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import crnn  # noqa: E402
from cases import D, H, K, N, T, Case, case_matrix, make_batch, make_model, random_params  # noqa: E402
from torch_helper import build_torch, torch_grads_as_crnn, torch_run  # noqa: E402

TOL = 1e-10


def close(a, b, what="", tol=TOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: {a.shape} != {b.shape}"
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=what)


PARITY_CASES = case_matrix(tokens=False, ragged=True, use_h0=True) + [
    Case("tanh", "softmax", True, 2, True, tokens=True, ragged=True, use_h0=False),
    Case("tanh", "softmax", False, 2, True, tokens=False, ragged=False, use_h0=False),
    Case("relu", "linear", False, 2, True, tokens=True, ragged=False, use_h0=True),
    Case("tanh", "linear", True, 1, False, tokens=False, ragged=False, use_h0=False),
]


@pytest.mark.parametrize("case", PARITY_CASES, ids=repr)
def test_parity_float64(case):
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    tor = torch_run(params, X, y, lengths, h0, **case.ref_kwargs())

    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    close(Y, tor.Y, "outputs")
    close(state, tor.state, "final state (h_n)")
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              return_state_grad=True)
    close(loss, tor.loss, "loss")
    assert set(grads) == set(tor.grads)
    for k in tor.grads:
        close(grads[k], tor.grads[k], f"grad {k}")
    close(dstate, tor.dstate, "h0 grad")


@pytest.mark.parametrize("case", [
    Case("tanh", "softmax", True, 2, True, ragged=True, use_h0=True),
    Case("relu", "linear", False, 2, True, ragged=True, use_h0=True),
], ids=repr)
def test_parity_sum_reduction(case):
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    tor = torch_run(params, X, y, lengths, h0, reduction="sum", **case.ref_kwargs())
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              reduction="sum", return_state_grad=True)
    close(loss, tor.loss)
    for k in tor.grads:
        close(grads[k], tor.grads[k], k)
    close(dstate, tor.dstate)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_parity_no_output_layer(return_sequences):
    case = Case("tanh", None, return_sequences, 2, True, ragged=True, use_h0=True)
    params = random_params(case)
    X, _, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    tor = torch_run(params, X, None, lengths, h0, **case.ref_kwargs())
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    close(Y, tor.Y)
    close(state, tor.state)


def test_split_torch_biases_sum_to_b():
    """A torch model with b_ih + b_hh = b (neither zero) computes the same thing."""
    case = Case("tanh", "softmax", True, 2, True, ragged=True, use_h0=True)
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    rnn, linear = build_torch(params, num_layers=2, bidirectional=True, nonlinearity="tanh",
                              output="softmax")
    rng = np.random.default_rng(4)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith("bias_hh"):
                r = torch.from_numpy(rng.normal(size=p.shape))
                p.copy_(r)
                getattr(rnn, name.replace("bias_hh", "bias_ih")).sub_(r)
    x = torch.tensor(X)
    lens = torch.as_tensor(lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lens, batch_first=True,
                                                     enforce_sorted=False)
    out, hn = rnn(packed, torch.tensor(h0))
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    mask = torch.arange(T)[None] < lens[:, None]
    logits = linear(out)
    loss = torch.nn.functional.cross_entropy(logits[mask], torch.as_tensor(y)[mask])
    loss.backward()
    tgrads = torch_grads_as_crnn(rnn, linear, 2, True)
    crnn_loss, grads = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0)
    close(crnn_loss, float(loss.detach()))
    for k in grads:
        close(grads[k], tgrads[k], k)


F32_CASES = [
    Case("tanh", "softmax", True, 2, True, ragged=True, use_h0=True),
    Case("relu", "linear", True, 1, False, ragged=True, use_h0=True),
    Case("tanh", "softmax", False, 2, True, tokens=True, ragged=True, use_h0=False),
]


def _rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30)


@pytest.mark.parametrize("case", F32_CASES, ids=repr)
def test_parity_float32(case):
    params = {k: v.astype(np.float32) for k, v in random_params(case).items()}
    X, y, lengths, h0 = make_batch(case)
    if h0 is not None:
        h0 = h0.astype(np.float32)
    if not case.tokens:
        X = X.astype(np.float32)
    model = make_model(crnn, case, params, dtype="float32")
    tor = torch_run(params, X, y, lengths, h0, dtype=torch.float32, **case.ref_kwargs())
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    assert _rel(Y, tor.Y) < 1e-5
    assert _rel(state, tor.state) < 1e-5
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              return_state_grad=True)
    assert abs(loss - tor.loss) / abs(tor.loss) < 1e-5
    for k in grads:
        assert _rel(grads[k], tor.grads[k]) < 1e-5, (k, _rel(grads[k], tor.grads[k]))
    assert _rel(dstate, tor.dstate) < 1e-5


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("n", [37, 1])
def test_parity_bigger_shapes(nonlinearity, return_sequences, n):
    """Sizes where BLAS blocking and many live-row prefixes come into play;
    n = 1 exercises a batch-of-one (gemv) path."""
    t, d, h, k = 29, 19, 70, 11
    rng = np.random.default_rng(12)
    model = crnn.RNN(d, h, k, num_layers=2, bidirectional=True, nonlinearity=nonlinearity,
                     return_sequences=return_sequences, dtype="float64", seed=0)
    params = {key: rng.uniform(-0.15, 0.15, size=v.shape) for key, v in model.params.items()}
    model.set_params(params)
    X = rng.normal(size=(n, t, d))
    lengths = rng.integers(1, t + 1, size=n)
    lengths[n // 2] = t
    y = rng.integers(0, k, size=(n, t) if return_sequences else (n,))
    h0 = rng.normal(scale=0.3, size=(4, n, h))
    kw = dict(num_layers=2, bidirectional=True, nonlinearity=nonlinearity, output="softmax",
              return_sequences=return_sequences)
    tor = torch_run(params, X, y, lengths, h0, **kw)
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    close(Y, tor.Y, "outputs")
    close(state, tor.state, "state")
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              return_state_grad=True)
    close(loss, tor.loss, "loss")
    for key in grads:
        close(grads[key], tor.grads[key], key)
    close(dstate, tor.dstate, "h0 grad")
