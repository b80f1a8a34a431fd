"""The numpy reference checked on its own, without crnn.

If these fail, every comparison against reference.py is meaningless, so the
oracle is checked two independent ways: against PyTorch (nn.RNN +
pack_padded_sequence) and against its own central finite differences.
"""

import numpy as np
import pytest

from cases import H, case_matrix, make_batch, random_params
from reference import rnn_reference, to_padded

ALL_CASES = case_matrix()


def _close(a, b, tol=1e-12):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", ALL_CASES, ids=repr)
def test_reference_matches_torch(case):
    torch_helper = pytest.importorskip("torch_helper")
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    ref = rnn_reference(params, X, y, lengths, h0, **case.ref_kwargs())
    tor = torch_helper.torch_run(params, X, y, lengths, h0, **case.ref_kwargs())
    _close(ref.Y, tor.Y)
    _close(ref.state, tor.state)
    _close(ref.loss, tor.loss)
    assert set(ref.grads) == set(params) == set(tor.grads)
    for k in params:
        _close(ref.grads[k], tor.grads[k])
    _close(ref.dstate, tor.dstate)


@pytest.mark.parametrize("case", case_matrix(output=None, tokens=False, use_h0=True,
                                             nonlinearity="tanh"), ids=repr)
def test_reference_no_output_matches_torch(case):
    torch_helper = pytest.importorskip("torch_helper")
    params = random_params(case)
    X, _, lengths, h0 = make_batch(case)
    ref = rnn_reference(params, X, None, lengths, h0, **case.ref_kwargs())
    tor = torch_helper.torch_run(params, X, None, lengths, h0, **case.ref_kwargs())
    assert ref.Y.shape[-1] == H * case.dirs
    _close(ref.Y, tor.Y)
    _close(ref.state, tor.state)


def _fd_check(case, reduction):
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    if h0 is None:
        h0 = np.zeros_like(make_batch(case.__class__(**{**case.__dict__, "use_h0": True}))[3])
    kw = dict(case.ref_kwargs(), reduction=reduction)
    ref = rnn_reference(params, X, y, lengths, h0, **kw)
    eps = 1e-6

    def loss_at(p, s):
        return rnn_reference(p, X, y, lengths, s, **kw).loss

    for k in params:
        num = np.zeros_like(params[k])
        for idx in np.ndindex(params[k].shape):
            p = {kk: vv.copy() for kk, vv in params.items()}
            p[k][idx] += eps
            lp = loss_at(p, h0)
            p[k][idx] -= 2 * eps
            lm = loss_at(p, h0)
            num[idx] = (lp - lm) / (2 * eps)
        err = np.linalg.norm(num - ref.grads[k]) / max(np.linalg.norm(num + ref.grads[k]), 1e-8)
        assert err < 1e-6, (k, err)
    num = np.zeros_like(h0)
    for idx in np.ndindex(h0.shape):
        s = h0.copy()
        s[idx] += eps
        lp = loss_at(params, s)
        s[idx] -= 2 * eps
        lm = loss_at(params, s)
        num[idx] = (lp - lm) / (2 * eps)
    err = np.linalg.norm(num - ref.dstate) / max(np.linalg.norm(num + ref.dstate), 1e-8)
    assert err < 1e-6, ("h0", err)


@pytest.mark.parametrize("case", [
    case_matrix(nonlinearity="tanh", output="softmax", return_sequences=True, num_layers=2,
                bidirectional=True, tokens=False, ragged=True, use_h0=True)[0],
    case_matrix(nonlinearity="tanh", output="linear", return_sequences=False, num_layers=2,
                bidirectional=True, tokens=True, ragged=True, use_h0=False)[0],
    case_matrix(nonlinearity="relu", output="softmax", return_sequences=False, num_layers=1,
                bidirectional=True, tokens=False, ragged=True, use_h0=True)[0],
], ids=repr)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reference_finite_differences(case, reduction):
    _fd_check(case, reduction)


def test_tokens_equal_onehot_in_reference():
    case = case_matrix(nonlinearity="tanh", output="softmax", return_sequences=True,
                       num_layers=1, bidirectional=False, tokens=True, ragged=True,
                       use_h0=False)[0]
    params = random_params(case)
    X, y, lengths, _ = make_batch(case)
    Xo, _ = to_padded(X, lengths, params["U0"].shape[1])
    a = rnn_reference(params, X, y, lengths, **case.ref_kwargs())
    b = rnn_reference(params, Xo, y, lengths, **case.ref_kwargs())
    _close(a.Y, b.Y)
    for k in params:
        _close(a.grads[k], b.grads[k])
