"""crnn.RNN, crnn.LSTM and crnn.GRU against PyTorch (nn.RNN / nn.LSTM / nn.GRU
+ nn.Linear + cross_entropy / MSE).

Same weights in both (RNN, LSTM: bias_ih = b, bias_hh = 0, MODEL.md's folding;
GRU: bias_ih = b, bias_hh = [0, 0, bn]); ragged batches go through
pack_padded_sequence. float64 agrees to 1e-10 on outputs, final states
(h_n and, for the LSTM, c_n), loss, every gradient and the initial-state
gradients; float32 to about 1e-5. Skipped cleanly when torch is not installed.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import crnn  # noqa: E402
import cases  # noqa: E402
from cases import H, T, Case, case_matrix, make_batch, make_model, random_params  # noqa: E402
from torch_helper import build_torch, one_thread, torch_grads_as_crnn, torch_run  # noqa: E402

TOL = 1e-10
CELLS = ["rnn", "lstm", "gru"]
GATED = ["lstm", "gru"]
CLASSES = {"rnn": crnn.RNN, "lstm": crnn.LSTM, "gru": crnn.GRU}


def close(a, b, what="", tol=TOL):
    cases.close(a, b, what, tol)


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


PARITY_CASES = case_matrix(tokens=False, ragged=True, use_h0=True) + [
    Case("tanh", "softmax", True, 2, True, tokens=True, ragged=True, use_h0=False),
    Case("tanh", "softmax", False, 2, True, tokens=False, ragged=False, use_h0=False),
    Case("relu", "linear", False, 2, True, tokens=True, ragged=False, use_h0=True),
    Case("tanh", "linear", True, 1, False, tokens=False, ragged=False, use_h0=False),
] + [c for cell in GATED for c in
       case_matrix(cell=cell, tokens=False, ragged=True, use_h0=True)] + [
    Case(cell=cell, output=output, return_sequences=rs, num_layers=layers, bidirectional=bi,
         tokens=tok, ragged=ragged, use_h0=h0)
    for cell in GATED
    for output, rs, layers, bi, tok, ragged, h0 in [
        ("softmax", True, 2, True, True, True, False),
        ("softmax", False, 2, True, False, False, False),
        ("linear", False, 2, True, True, False, True),
        ("linear", True, 1, False, False, False, False),
        ("softmax", False, 1, False, True, True, True),
    ]]


@pytest.mark.parametrize("case", PARITY_CASES, ids=repr)
def test_parity_float64(case):
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    tor = torch_run(params, X, y, lengths, h0, **case.ref_kwargs())

    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    close(Y, tor.Y, "outputs")
    close(state, tor.state, "final state (h_n, c_n)")
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              return_state_grad=True)
    close(loss, tor.loss, "loss")
    assert set(grads) == set(tor.grads)
    for k in tor.grads:
        close(grads[k], tor.grads[k], f"grad {k}")
    close(dstate, tor.dstate, "initial-state grad")


@pytest.mark.parametrize("case", [
    Case("tanh", "softmax", True, 2, True, ragged=True, use_h0=True),
    Case("relu", "linear", False, 2, True, ragged=True, use_h0=True),
] + [
    Case(cell=cell, output=output, return_sequences=rs, num_layers=2, bidirectional=True,
         ragged=True, use_h0=True)
    for cell in GATED for output, rs in [("softmax", True), ("linear", False)]], ids=repr)
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


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("tokens", [False, True])
def test_parity_no_output_layer(cell, return_sequences, tokens):
    case = Case(cell=cell, output=None, return_sequences=return_sequences, num_layers=2,
                bidirectional=True, tokens=tokens, ragged=True, use_h0=True)
    params = random_params(case)
    X, _, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    tor = torch_run(params, X, None, lengths, h0, **case.ref_kwargs())
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    close(Y, tor.Y)
    close(state, tor.state)


@pytest.mark.parametrize("cell", CELLS)
def test_split_torch_biases_sum_to_b(cell):
    """A torch model with b_ih + b_hh = b (neither zero; for the GRU on the r, z
    blocks, with b_in = b_n and b_hn = bn) computes what crnn computes."""
    case = Case(cell=cell, num_layers=2, bidirectional=True, ragged=True, use_h0=True)
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    rnn, linear = build_torch(params, num_layers=2, bidirectional=True, output="softmax",
                              cell=cell)
    rng = np.random.default_rng(4)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith("bias_hh"):
                r = torch.from_numpy(rng.normal(size=p.shape))
                if cell == "gru":
                    r[2 * H:] = 0
                p.add_(r)
                getattr(rnn, name.replace("bias_hh", "bias_ih")).sub_(r)
    lens = torch.as_tensor(lengths)
    with one_thread():
        packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(X), lens,
                                                         batch_first=True, enforce_sorted=False)
        state = ((torch.tensor(h0[0]), torch.tensor(h0[1])) if cell == "lstm"
                 else torch.tensor(h0))
        out, _ = rnn(packed, state)
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
    Y = model.forward(X, lengths=lengths, initial_state=h0)
    probs = torch.softmax(logits, -1) * mask[:, :, None]
    close(Y, probs.detach().numpy())


F32_CASES = [
    Case("tanh", "softmax", True, 2, True, ragged=True, use_h0=True),
    Case("relu", "linear", True, 1, False, ragged=True, use_h0=True),
    Case("tanh", "softmax", False, 2, True, tokens=True, ragged=True, use_h0=False),
] + [
    Case(cell=cell, output=output, return_sequences=rs, num_layers=layers, bidirectional=bi,
         tokens=tok, ragged=ragged, use_h0=h0)
    for cell in GATED
    for output, rs, layers, bi, tok, ragged, h0 in [
        ("softmax", True, 2, True, False, True, True),
        ("linear", True, 1, False, False, True, True),
        ("softmax", False, 2, True, True, True, False),
        ("linear", False, 2, False, True, False, True),
    ]]


def _rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30)


def _f32(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(p.astype(np.float32) for p in state)
    return state.astype(np.float32)


@pytest.mark.parametrize("case", F32_CASES, ids=repr)
def test_parity_float32(case):
    params = {k: v.astype(np.float32) for k, v in random_params(case).items()}
    X, y, lengths, h0 = make_batch(case)
    h0 = _f32(h0)
    if not case.tokens:
        X = X.astype(np.float32)
    model = make_model(crnn, case, params, dtype="float32")
    tor = torch_run(params, X, y, lengths, h0, dtype=torch.float32, **case.ref_kwargs())
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    assert _rel(Y, tor.Y) < 1e-5
    for a, b in zip(parts(state), parts(tor.state)):
        assert _rel(a, b) < 1e-5
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              return_state_grad=True)
    assert abs(loss - tor.loss) / abs(tor.loss) < 1e-5
    for k in grads:
        assert _rel(grads[k], tor.grads[k]) < 1e-5, (k, _rel(grads[k], tor.grads[k]))
    for a, b in zip(parts(dstate), parts(tor.dstate)):
        assert _rel(a, b) < 1e-5


# per cell: T, D, H, K and the weights' range (the gated cells, with 3-4 times
# the weights per unit, use a smaller H)
BIG_SHAPES = {"rnn": (29, 19, 70, 11, 0.15), "lstm": (23, 19, 40, 11, 0.2),
              "gru": (23, 19, 40, 11, 0.2)}


@pytest.mark.parametrize("cell,nonlinearity", [("rnn", "tanh"), ("rnn", "relu"),
                                               ("lstm", None), ("gru", None)])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("n", [37, 1])
def test_parity_bigger_shapes(cell, nonlinearity, return_sequences, n):
    """Sizes where BLAS blocking and many live-row prefixes come into play;
    n = 1 exercises a batch-of-one (gemv) path."""
    t, d, h, k, scale = BIG_SHAPES[cell]
    rng = np.random.default_rng(12)
    cell_kw = dict(nonlinearity=nonlinearity) if cell == "rnn" else {}
    model = CLASSES[cell](d, h, k, num_layers=2, bidirectional=True,
                          return_sequences=return_sequences, dtype="float64", seed=0, **cell_kw)
    params = {key: rng.uniform(-scale, scale, size=v.shape) for key, v in model.params.items()}
    model.set_params(params)
    X = rng.normal(size=(n, t, d))
    lengths = rng.integers(1, t + 1, size=n)
    lengths[n // 2] = t
    y = rng.integers(0, k, size=(n, t) if return_sequences else (n,))
    h0 = rng.normal(scale=0.3, size=(4, n, h))
    state0 = (h0, rng.normal(scale=0.3, size=(4, n, h))) if cell == "lstm" else h0
    kw = dict(num_layers=2, bidirectional=True, output="softmax",
              return_sequences=return_sequences, **cell_kw)
    if cell != "rnn":
        kw["cell"] = cell
    tor = torch_run(params, X, y, lengths, state0, **kw)
    Y, state = model.forward(X, lengths=lengths, initial_state=state0, return_state=True)
    close(Y, tor.Y, "outputs")
    close(state, tor.state, "state")
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=state0,
                                              return_state_grad=True)
    close(loss, tor.loss, "loss")
    for key in grads:
        close(grads[key], tor.grads[key], key)
    close(dstate, tor.dstate, "initial-state grad")
