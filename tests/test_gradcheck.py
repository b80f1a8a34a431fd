"""Finite-difference checks of crnn's analytic gradients (float64), for every cell.

Central differences, step 1e-6, of the loss returned by loss_and_grad against
its gradients, for every parameter tensor (every entry of small ones, a random
subset of 40 entries of bigger ones) and for the initial state h0 (and, for
the LSTM, c0). The cases sample the option matrix so that every option
appears at least once per cell (crnn.RNN, crnn.LSTM, crnn.GRU), under both
reductions; for the gated cells every gate block is also checked on its own.

Error measure, per tensor (over the checked entries a = analytic, n = numeric):

    err = ‖a - n‖₂ / max(‖a‖₂, ‖n‖₂, 1e-8)       and
    err_inf = max|a - n| / max(max|a|, max|n|, 1e-8)

Why not the per-entry |a_i - n_i| / max(|a_i|, |n_i|): central differences
carry a rounding error of about ε_machine·|L|/step ≈ 1e-10·|L| (plus a
truncation error of order step² ≈ 1e-12) on every entry. Entries whose true
value is that small (weak couplings, saturated units, relu's dead units) would
show per-entry errors of order one though the gradient is right. Scaling by
the tensor's norm measures the error against the gradient's own size, which
is what a wrong formula disturbs; a wrong term in a single entry still shows
through the max-norm ratio. The 1e-8 floor only avoids dividing by zero; every
tensor checked here has a gradient far above it (asserted).
"""

import numpy as np
import pytest

import crnn
from cases import Case, make_batch, make_model, random_params, zero_state
from reference import central_differences

STEP = 1e-6
RTOL = 1e-6
MAX_ENTRIES = 40


def _cases(cell):
    """Gated-cell cases (no nonlinearity option)."""
    return [
        Case(cell=cell, output="softmax", return_sequences=True, num_layers=1,
             bidirectional=False, tokens=False, ragged=True, use_h0=True),
        Case(cell=cell, output="softmax", return_sequences=True, num_layers=2,
             bidirectional=True, tokens=False, ragged=True, use_h0=True),
        Case(cell=cell, output="softmax", return_sequences=False, num_layers=2,
             bidirectional=True, tokens=True, ragged=True, use_h0=True),
        Case(cell=cell, output="linear", return_sequences=False, num_layers=2,
             bidirectional=True, tokens=True, ragged=True, use_h0=False),
        Case(cell=cell, output="linear", return_sequences=True, num_layers=1,
             bidirectional=True, tokens=False, ragged=False, use_h0=True),
        Case(cell=cell, output="linear", return_sequences=True, num_layers=2,
             bidirectional=False, tokens=False, ragged=True, use_h0=True),
        Case(cell=cell, output="softmax", return_sequences=False, num_layers=1,
             bidirectional=False, tokens=True, ragged=False, use_h0=True),
    ]


RNN_CASES = [
    Case("tanh", "softmax", True, 1, False, tokens=False, ragged=True, use_h0=True),
    Case("tanh", "softmax", True, 2, True, tokens=False, ragged=True, use_h0=True),
    Case("tanh", "softmax", False, 2, True, tokens=True, ragged=True, use_h0=True),
    Case("tanh", "linear", False, 2, True, tokens=True, ragged=True, use_h0=False),
    Case("tanh", "linear", True, 1, True, tokens=False, ragged=False, use_h0=True),
    Case("relu", "softmax", True, 1, True, tokens=False, ragged=False, use_h0=True),
    Case("relu", "linear", True, 2, False, tokens=False, ragged=True, use_h0=True),
    Case("relu", "softmax", False, 1, False, tokens=True, ragged=True, use_h0=True),
]

CASES = RNN_CASES + _cases("lstm") + _cases("gru")

# entries per tensor checked through set_params (slower: a full copy each time)
SET_PARAMS_ENTRIES = {"rnn": 8, "lstm": 6, "gru": 6}


def rel_errors(a, n):
    a = np.ravel(a)
    n = np.ravel(n)
    err2 = np.linalg.norm(a - n) / max(np.linalg.norm(a), np.linalg.norm(n), 1e-8)
    errinf = np.max(np.abs(a - n)) / max(np.max(np.abs(a)), np.max(np.abs(n)), 1e-8)
    return err2, errinf


def entries(shape, rng):
    size = int(np.prod(shape))
    flat = np.arange(size) if size <= MAX_ENTRIES else rng.choice(size, MAX_ENTRIES,
                                                                  replace=False)
    return [np.unravel_index(i, shape) for i in flat]


def check(analytic, numeric, what):
    assert np.linalg.norm(analytic) > 1e-6, f"{what}: gradient too small to check"
    err2, errinf = rel_errors(analytic, numeric)
    assert err2 < RTOL and errinf < RTOL, f"{what}: err2={err2:.3g} errinf={errinf:.3g}"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_parameter_gradients(case, reduction):
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    kw = dict(lengths=lengths, initial_state=h0, reduction=reduction)
    _, grads = model.loss_and_grad(X, y, **kw)
    assert set(grads) == set(params)
    rng = np.random.default_rng(11)

    def loss():
        return model.loss_and_grad(X, y, **kw)[0]

    for k in sorted(params):
        p = model.params[k]          # the model's own array: writing perturbs the model
        idx = entries(p.shape, rng)
        numeric = central_differences(loss, p, idx, STEP)
        analytic = np.array([grads[k][i] for i in idx])
        check(analytic, numeric, k)
    # the perturbations were undone exactly
    for k in params:
        np.testing.assert_array_equal(model.params[k], params[k])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_initial_state_gradient(case, reduction):
    params = random_params(case)
    X, y, lengths, state = make_batch(case)
    if state is None:
        state = zero_state(case)
    lstm = case.cell == "lstm"
    parts = list(state) if lstm else [state]
    model = make_model(crnn, case, params)
    kw = dict(lengths=lengths, reduction=reduction)
    _, _, dstate = model.loss_and_grad(X, y, initial_state=state, return_state_grad=True, **kw)
    if lstm:
        assert isinstance(dstate, tuple) and len(dstate) == 2
    dparts = list(dstate) if lstm else [dstate]

    def loss_with(j, value):
        s = list(parts)
        s[j] = value
        return model.loss_and_grad(X, y, initial_state=tuple(s) if lstm else s[0], **kw)[0]

    for j, (part, dpart) in enumerate(zip(parts, dparts)):
        name = ("h0", "c0")[j]
        assert dpart.shape == part.shape, name
        numeric = np.zeros_like(part)
        for i in np.ndindex(part.shape):
            s = part.copy()
            s[i] += STEP
            lp = loss_with(j, s)
            s[i] -= 2 * STEP
            lm = loss_with(j, s)
            numeric[i] = (lp - lm) / (2 * STEP)
        check(dpart, numeric, name)
        # per layer and direction too, so a small block cannot hide in a big one
        for lane in range(part.shape[0]):
            check(dpart[lane], numeric[lane], f"{name}[{lane}]")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradients_via_set_params(cell):
    """The same check, perturbing through set_params instead of in place."""
    case = Case(cell=cell, nonlinearity="tanh", output="softmax", return_sequences=True, num_layers=2,
                bidirectional=True, tokens=False, ragged=True, use_h0=True)
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    _, grads = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0)
    rng = np.random.default_rng(5)
    for k in sorted(params):
        idx = entries(params[k].shape, rng)[:SET_PARAMS_ENTRIES[cell]]
        numeric = np.empty(len(idx))
        for j, i in enumerate(idx):
            vals = []
            for sign in (1, -1):
                p = {kk: vv.copy() for kk, vv in params.items()}
                p[k][i] += sign * STEP
                model.set_params(p)
                vals.append(model.loss_and_grad(X, y, lengths=lengths, initial_state=h0)[0])
            numeric[j] = (vals[0] - vals[1]) / (2 * STEP)
        analytic = np.array([grads[k][i] for i in idx])
        check(analytic, numeric, k)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_gate_block_gets_gradient(cell):
    """Each gate block (i, f, a, o / r, z, n) of U, W and b is checked on its own,
    so a swapped or dropped block cannot hide among the others."""
    case = Case(cell=cell, output="softmax", return_sequences=True, num_layers=1,
                bidirectional=True, tokens=False, ragged=True, use_h0=True)
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    _, grads = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0)
    H = params["W0"].shape[1]
    G = params["W0"].shape[0] // H
    rng = np.random.default_rng(2)
    for k in ("U0", "W0", "b0", "U0_reverse", "W0_reverse", "b0_reverse"):
        p = model.params[k]
        for g in range(G):
            block = [i for i in np.ndindex(p.shape) if g * H <= i[0] < (g + 1) * H]
            pick = [block[i] for i in rng.choice(len(block), min(8, len(block)),
                                                 replace=False)]
            numeric = np.empty(len(pick))
            for j, i in enumerate(pick):
                orig = p[i]
                p[i] = orig + STEP
                lp = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0)[0]
                p[i] = orig - STEP
                lm = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0)[0]
                p[i] = orig
                numeric[j] = (lp - lm) / (2 * STEP)
            check(np.array([grads[k][i] for i in pick]), numeric, f"{k} block {g}")
