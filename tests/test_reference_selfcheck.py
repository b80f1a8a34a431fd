"""The numpy reference (reference.py) checked on its own, without crnn, for
every cell (RNN, LSTM, GRU).

Every crnn test compares against reference.py, so if these fail every such
comparison is meaningless.  The oracle is checked two independent ways:
against PyTorch (nn.RNN / nn.LSTM / nn.GRU + pack_padded_sequence, every
option of the matrix, to 1e-12) and against its own central finite
differences (parameters, h0 and, for the LSTM, c0); plus single steps of the
gated cells spelled out by hand.
"""

import numpy as np
import pytest

from cases import D, H, N, Case, case_matrix, make_batch, random_params, zero_state
from reference import CELLS, central_differences, reference, to_padded


def _close(a, b, tol=1e-12, what=""):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b) == 2, what
        for i, (u, v) in enumerate(zip(a, b)):
            _close(u, v, tol, f"{what}[{i}]")
        return
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=what)


def _matrix(**fixed):
    """case_matrix for every cell (the RNN's includes both nonlinearities)."""
    return [c for cell in CELLS for c in case_matrix(cell=cell, **fixed)]


# ------------------------------------------------------------------ against PyTorch

@pytest.mark.parametrize("case", _matrix(), ids=repr)
def test_reference_matches_torch(case):
    torch_helper = pytest.importorskip("torch_helper")
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    ref = reference(params, X, y, lengths, h0, **case.ref_kwargs())
    tor = torch_helper.torch_run(params, X, y, lengths, h0, **case.ref_kwargs())
    _close(ref.Y, tor.Y, what="Y")
    _close(ref.state, tor.state, what="state")
    _close(ref.loss, tor.loss, what="loss")
    assert set(ref.grads) == set(params) == set(tor.grads)
    for k in params:
        _close(ref.grads[k], tor.grads[k], what=k)
    _close(ref.dstate, tor.dstate, what="dstate")


def _no_output_cases():
    # the RNN's with its default nonlinearity, as before the merge
    return [c for c in _matrix(output=None, tokens=False, use_h0=True)
            if c.cell != "rnn" or c.nonlinearity == "tanh"]


@pytest.mark.parametrize("case", _no_output_cases(), ids=repr)
def test_reference_no_output_matches_torch(case):
    torch_helper = pytest.importorskip("torch_helper")
    params = random_params(case)
    X, _, lengths, h0 = make_batch(case)
    ref = reference(params, X, None, lengths, h0, **case.ref_kwargs())
    tor = torch_helper.torch_run(params, X, None, lengths, h0, **case.ref_kwargs())
    assert ref.Y.shape[-1] == H * case.dirs
    _close(ref.Y, tor.Y)
    _close(ref.state, tor.state)


@pytest.mark.parametrize("cell", CELLS)
def test_reference_matches_torch_with_split_biases(cell):
    """torch with b_ih + b_hh = b (GRU: on the r, z blocks; b_in = b_n, b_hn = bn),
    neither part zero, computes what the reference computes."""
    torch = pytest.importorskip("torch")
    import torch_helper
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    case = Case(cell=cell, num_layers=2, bidirectional=True, ragged=True, use_h0=True)
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    ref = reference(params, X, y, lengths, h0, **case.ref_kwargs())
    rnn, linear = torch_helper.build_torch(params, num_layers=2, bidirectional=True,
                                           output="softmax", cell=cell)
    rng = np.random.default_rng(3)
    with torch_helper.one_thread(), torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith("bias_hh"):
                r = torch.from_numpy(rng.normal(size=p.shape))
                if cell == "gru":
                    r[2 * H:] = 0          # b_hn is bn itself, not a share of b
                p.add_(r)
                getattr(rnn, name.replace("bias_hh", "bias_ih")).sub_(r)
        lens = torch.as_tensor(lengths)
        packed = pack_padded_sequence(torch.tensor(X), lens, batch_first=True,
                                      enforce_sorted=False)
        state = ((torch.tensor(h0[0]), torch.tensor(h0[1])) if cell == "lstm"
                 else torch.tensor(h0))
        out, _ = rnn(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=X.shape[1])
        mask = torch.arange(X.shape[1])[None] < lens[:, None]
        loss = torch.nn.functional.cross_entropy(linear(out)[mask],
                                                 torch.as_tensor(y)[mask])
    _close(ref.loss, float(loss))


# ------------------------------------------------------------------ finite differences

FD_STEP = 1e-6
FD_ALL = None            # every entry of every tensor (the RNN's small cases)
FD_ENTRIES = 8           # sampled entries per parameter tensor: the gated reference is slow
FD_STATE_ENTRIES = 24    # sampled entries of h0 and of c0


def _rel(a, n):
    a, n = np.ravel(a), np.ravel(n)
    return np.linalg.norm(a - n) / max(np.linalg.norm(a), np.linalg.norm(n), 1e-8)


def _rel_sum(a, n):
    """The RNN checks' measure (before the merge): |a - n| / |a + n|."""
    a, n = np.ravel(a), np.ravel(n)
    return np.linalg.norm(n - a) / max(np.linalg.norm(n + a), 1e-8)


def _state_parts(case, s):
    return list(s) if case.cell == "lstm" else [s]


def _with_part(case, s, j, value):
    if case.cell != "lstm":
        return value
    parts = list(s)
    parts[j] = value
    return tuple(parts)


def _param_indices(rng, shape, entries):
    if entries is FD_ALL:
        return list(np.ndindex(shape))
    size = int(np.prod(shape))
    pick = rng.choice(size, min(size, entries), replace=False)
    return [np.unravel_index(i, shape) for i in pick]


def _state_indices(rng, shape, entries):
    if entries is FD_ALL:
        return list(np.ndindex(shape))
    # the same number of entries from every layer-direction lane
    lanes, rows = shape[0], int(np.prod(shape[1:]))
    per_lane = min(rows, -(-FD_STATE_ENTRIES // lanes))
    return [(lane,) + np.unravel_index(r, shape[1:])
            for lane in range(lanes) for r in rng.choice(rows, per_lane, replace=False)]


def _fd_check(case, reduction, entries):
    params = {k: v.copy() for k, v in random_params(case).items()}
    X, y, lengths, h0 = make_batch(case)
    if h0 is None:
        h0 = zero_state(case)
    kw = dict(case.ref_kwargs(), reduction=reduction)
    ref = reference(params, X, y, lengths, h0, **kw)
    rng = np.random.default_rng(7)
    state = [h0]

    def loss_at():
        return reference(params, X, y, lengths, state[0], **kw).loss

    for k in params:
        idx = _param_indices(rng, params[k].shape, entries)
        num = central_differences(loss_at, params[k], idx, FD_STEP)
        ana = np.array([ref.grads[k][i] for i in idx])
        assert np.linalg.norm(ana) > 1e-6, k
        assert _rel(ana, num) < 1e-6, (k, _rel(ana, num))
        assert _rel_sum(ana, num) < 1e-6, (k, _rel_sum(ana, num))
    for j, (part, dpart) in enumerate(zip(_state_parts(case, h0),
                                          _state_parts(case, ref.dstate))):
        part = part.copy()
        state[0] = _with_part(case, h0, j, part)
        idx = _state_indices(rng, part.shape, entries)
        num = central_differences(loss_at, part, idx, FD_STEP)
        ana = np.array([dpart[i] for i in idx])
        assert np.linalg.norm(ana) > 1e-6, ("state", j)
        assert _rel(ana, num) < 1e-6, (("h0", "c0")[j], _rel(ana, num))
        assert _rel_sum(ana, num) < 1e-6, (("h0", "c0")[j], _rel_sum(ana, num))
    state[0] = h0


FD_CASES = [
    (Case(cell="rnn", nonlinearity="tanh", output="softmax", return_sequences=True,
          num_layers=2, bidirectional=True, tokens=False, ragged=True, use_h0=True), FD_ALL),
    (Case(cell="rnn", nonlinearity="tanh", output="linear", return_sequences=False,
          num_layers=2, bidirectional=True, tokens=True, ragged=True, use_h0=False), FD_ALL),
    (Case(cell="rnn", nonlinearity="relu", output="softmax", return_sequences=False,
          num_layers=1, bidirectional=True, tokens=False, ragged=True, use_h0=True), FD_ALL),
    (Case(cell="lstm", output="softmax", return_sequences=True, num_layers=2,
          bidirectional=True, tokens=False, ragged=True, use_h0=True), FD_ENTRIES),
    (Case(cell="lstm", output="linear", return_sequences=False, num_layers=2,
          bidirectional=True, tokens=True, ragged=True, use_h0=False), FD_ENTRIES),
    (Case(cell="gru", output="softmax", return_sequences=True, num_layers=2,
          bidirectional=True, tokens=False, ragged=True, use_h0=True), FD_ENTRIES),
    (Case(cell="gru", output="linear", return_sequences=False, num_layers=1,
          bidirectional=True, tokens=True, ragged=True, use_h0=True), FD_ENTRIES),
]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case,entries", FD_CASES, ids=lambda x: repr(x) if x else "all")
def test_reference_finite_differences(case, entries, reduction):
    _fd_check(case, reduction, entries)


# ------------------------------------------------------------------ tokens, by hand

TOKEN_CASES = ([Case(cell=cell, tokens=True, ragged=True, bidirectional=True, use_h0=True)
                for cell in CELLS]
               + [Case(cell="rnn", tokens=True, ragged=True)])   # the RNN's plain case


@pytest.mark.parametrize("case", TOKEN_CASES, ids=repr)
def test_tokens_equal_onehot_in_reference(case):
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    Xo, _ = to_padded(X, lengths, D)
    a = reference(params, X, y, lengths, h0, **case.ref_kwargs())
    b = reference(params, Xo, y, lengths, h0, **case.ref_kwargs())
    _close(a.Y, b.Y)
    for k in params:
        _close(a.grads[k], b.grads[k])
    if h0 is not None:
        _close(a.dstate, b.dstate)


def test_lstm_reference_single_step_by_hand():
    """One LSTM step of one sequence, spelled out from MODEL.md with scalars."""
    rng = np.random.default_rng(0)
    Hs, Ds = 2, 3
    U, W, b = rng.normal(size=(4 * Hs, Ds)), rng.normal(size=(4 * Hs, Hs)), rng.normal(size=4 * Hs)
    x, h0, c0 = rng.normal(size=Ds), rng.normal(size=Hs), rng.normal(size=Hs)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h_exp, c_exp = np.zeros(Hs), np.zeros(Hs)
    for j in range(Hs):
        z = [U[g * Hs + j] @ x + W[g * Hs + j] @ h0 + b[g * Hs + j] for g in range(4)]
        i, f, a, o = sig(z[0]), sig(z[1]), np.tanh(z[2]), sig(z[3])
        c_exp[j] = f * c0[j] + i * a
        h_exp[j] = o * np.tanh(c_exp[j])
    ref = reference({"U0": U, "W0": W, "b0": b}, x[None, None], None, None,
                    (h0[None, None], c0[None, None]), cell="lstm", output=None)
    _close(ref.Y[0, 0], h_exp, 1e-14)
    _close(ref.state[0][0, 0], h_exp, 1e-14)
    _close(ref.state[1][0, 0], c_exp, 1e-14)


def test_gru_reference_single_step_by_hand():
    """One GRU step of one sequence, from PyTorch's documented equations."""
    rng = np.random.default_rng(1)
    Hs, Ds = 2, 3
    U, W, b = rng.normal(size=(3 * Hs, Ds)), rng.normal(size=(3 * Hs, Hs)), rng.normal(size=3 * Hs)
    bn = rng.normal(size=Hs)
    x, h0 = rng.normal(size=Ds), rng.normal(size=Hs)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h_exp = np.zeros(Hs)
    for j in range(Hs):
        r = sig(U[j] @ x + b[j] + W[j] @ h0)
        z = sig(U[Hs + j] @ x + b[Hs + j] + W[Hs + j] @ h0)
        n = np.tanh(U[2 * Hs + j] @ x + b[2 * Hs + j] + r * (W[2 * Hs + j] @ h0 + bn[j]))
        h_exp[j] = (1 - z) * n + z * h0[j]
    ref = reference({"U0": U, "W0": W, "b0": b, "bn0": bn}, x[None, None], None, None,
                    h0[None, None], cell="gru", output=None)
    _close(ref.Y[0, 0], h_exp, 1e-14)
    _close(ref.state[0, 0], h_exp, 1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_reference_state_layout_n(cell):
    """N in the state shape is the batch (guards the zero_state helper)."""
    s = zero_state(Case(cell=cell, num_layers=2, bidirectional=True))
    for part in (s if cell == "lstm" else (s,)):
        assert part.shape == (4, N, H)
