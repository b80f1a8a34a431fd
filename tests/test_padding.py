"""Padding never changes a result (MODEL.md, "Variable lengths"), for every cell.

For crnn.RNN, crnn.LSTM and crnn.GRU alike: a sequence alone gives the same
outputs, final state (h and, for the LSTM, c), initial-state gradient and
(reduction="sum") gradient contribution as the same sequence padded in a batch
with longer ones; whatever sits in the padding of X or y is ignored; batch
order does not matter; a list of arrays equals the padded array plus lengths.
"""

import numpy as np
import pytest

import crnn
import cases
from cases import D, K, N, T, Case, case_matrix, make_batch, make_model, random_params

TOL = 1e-11
CELLS = ["rnn", "lstm", "gru"]
GATED = ["lstm", "gru"]


def close(a, b, what="", tol=TOL):
    cases.close(a, b, what, tol)


def rows(state, index):
    """state[:, index] of a state array or of each half of an (h, c) pair."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(p[:, index] for p in state)
    return state[:, index]


def junk_padding(case, X, y, lengths, seed=99):
    """Fill every padded position of X and y with garbage (ignored values)."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    y = None if y is None else y.copy()
    for n, L in enumerate(lengths):
        if case.tokens:
            X[n, L:] = rng.integers(0, D, size=X[n, L:].shape)
        else:
            X[n, L:] = rng.normal(scale=1e3, size=X[n, L:].shape)
        if y is not None and case.return_sequences:
            if case.output == "softmax":
                # out of range and negative labels: padded targets are not validated
                y[n, L:] = rng.choice([-7, -1, K, K + 99], size=y[n, L:].shape)
            else:
                y[n, L:] = rng.normal(scale=1e6, size=y[n, L:].shape)
    return X, y


PAD_CASES = case_matrix(ragged=True, use_h0=True, nonlinearity="tanh") + [
    Case("relu", "softmax", True, 2, True, tokens=False, ragged=True, use_h0=True),
    Case("relu", "linear", False, 1, True, tokens=True, ragged=True, use_h0=False),
] + [c for cell in GATED for c in case_matrix(cell=cell, ragged=True, use_h0=True)] + [
    Case(cell=cell, output="softmax", return_sequences=False, num_layers=2,
         bidirectional=True, tokens=True, ragged=True, use_h0=False) for cell in GATED]


@pytest.mark.parametrize("case", PAD_CASES, ids=repr)
def test_alone_equals_padded_in_batch(case):
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    X, y = junk_padding(case, X, y, lengths)
    model = make_model(crnn, case, params)

    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              reduction="sum", return_state_grad=True)
    loss_sum = 0.0
    grad_sum = {k: np.zeros_like(v) for k, v in grads.items()}
    for n in range(N):
        L = int(lengths[n])
        Xn = X[n : n + 1, :L]
        yn = y[n : n + 1, :L] if case.return_sequences else y[n : n + 1]
        hn = rows(h0, slice(n, n + 1))
        Yn, sn = model.forward(Xn, initial_state=hn, return_state=True)
        if case.return_sequences:
            close(Y[n, :L], Yn[0], f"outputs of sequence {n}")
            assert np.all(Y[n, L:] == 0.0), "rows past the length must be exactly 0"
        else:
            close(Y[n], Yn[0], f"output of sequence {n}")
        close(rows(state, n), rows(sn, 0), f"final state of sequence {n}")
        ln, gn, dn = model.loss_and_grad(Xn, yn, initial_state=hn, reduction="sum",
                                         return_state_grad=True)
        loss_sum += ln
        for k in gn:
            grad_sum[k] += gn[k]
        close(rows(dstate, n), rows(dn, 0), f"initial-state gradient of sequence {n}")
    close(loss, loss_sum, "loss")
    for k in grads:
        close(grads[k], grad_sum[k], f"grad {k}")

    # mean = sum / number of positions with a target
    count = int(lengths.sum()) if case.return_sequences else N
    lm, gm = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0)
    close(lm, loss_sum / count, "mean loss")
    for k in gm:
        close(gm[k], grad_sum[k] / count, f"mean grad {k}")


@pytest.mark.parametrize("case", [c for cell in GATED for c in
                                  case_matrix(cell=cell, output=None, ragged=True,
                                              use_h0=True, num_layers=2)], ids=repr)
def test_no_output_layer_alone_equals_padded(case):
    params = random_params(case)
    X, _, lengths, h0 = make_batch(case)
    X, _ = junk_padding(case, X, None, lengths)
    model = make_model(crnn, case, params)
    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    for n in range(N):
        L = int(lengths[n])
        Yn, sn = model.forward(X[n : n + 1, :L], initial_state=rows(h0, slice(n, n + 1)),
                               return_state=True)
        if case.return_sequences:
            close(Y[n, :L], Yn[0], f"top h of sequence {n}")
            assert np.all(Y[n, L:] == 0.0)
        else:
            close(Y[n], Yn[0], f"final top h of sequence {n}")
        close(rows(state, n), rows(sn, 0), f"final state of sequence {n}")


@pytest.mark.parametrize("case", case_matrix(ragged=True, use_h0=False, nonlinearity="tanh",
                                             num_layers=2, return_sequences=True) +
                         [c for cell in GATED for c in
                          case_matrix(cell=cell, ragged=True, use_h0=False,
                                      num_layers=2, return_sequences=True)], ids=repr)
def test_padding_content_is_ignored(case):
    params = random_params(case)
    X, y, lengths, _ = make_batch(case)
    model = make_model(crnn, case, params)
    Xa, ya = junk_padding(case, X, y, lengths, seed=1)
    Xb, yb = junk_padding(case, X, y, lengths, seed=2)
    Ya, sa = model.forward(Xa, lengths=lengths, return_state=True)
    Yb, sb = model.forward(Xb, lengths=lengths, return_state=True)
    close(Ya, Yb, tol=1e-13)
    close(sa, sb, tol=1e-13)
    la, ga, da = model.loss_and_grad(Xa, ya, lengths=lengths, return_state_grad=True)
    lb, gb, db = model.loss_and_grad(Xb, yb, lengths=lengths, return_state_grad=True)
    close(la, lb, tol=1e-13)
    for k in ga:
        close(ga[k], gb[k], k, tol=1e-13)
    close(da, db, tol=1e-13)


@pytest.mark.parametrize("case", [
    Case("tanh", "softmax", True, 2, True, ragged=True, use_h0=True),
    Case("tanh", "linear", False, 1, True, ragged=True, use_h0=True),
    Case("relu", "softmax", False, 2, False, tokens=True, ragged=True, use_h0=False),
] + [
    Case(cell=cell, output=output, return_sequences=rs, num_layers=layers,
         bidirectional=bi, tokens=tok, ragged=True, use_h0=h0)
    for cell in GATED
    for output, rs, layers, bi, tok, h0 in [("softmax", True, 2, True, False, True),
                                            ("linear", False, 1, True, False, True),
                                            ("softmax", False, 2, False, True, False)]
], ids=repr)
def test_batch_order_does_not_matter(case):
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    perm = np.array([2, 0, 1])
    h0p = rows(h0, perm)
    Y, s = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    Yp, sp = model.forward(X[perm], lengths=lengths[perm], initial_state=h0p, return_state=True)
    close(Yp, Y[perm])
    close(sp, rows(s, perm))
    l, g, d = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                  return_state_grad=True)
    lp, gp, dp = model.loss_and_grad(X[perm], y[perm], lengths=lengths[perm],
                                     initial_state=h0p, return_state_grad=True)
    close(lp, l)
    for k in g:
        close(gp[k], g[k], k)
    close(dp, rows(d, perm))


@pytest.mark.parametrize("cell", CELLS)
def test_all_sequences_shorter_than_the_array(cell):
    case = Case(cell=cell, num_layers=2, bidirectional=True, ragged=True, use_h0=True)
    params = random_params(case)
    X, y, _, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    lengths = np.array([2, 3, 1])
    Xj, yj = junk_padding(case, X, y, lengths)
    Y, s = model.forward(Xj, lengths=lengths, initial_state=h0, return_state=True)
    Yt, st = model.forward(Xj[:, :3], lengths=lengths, initial_state=h0, return_state=True)
    assert Y.shape == (N, T, K) and Yt.shape == (N, 3, K)
    close(Y[:, :3], Yt)
    assert np.all(Y[:, 3:] == 0)
    close(s, st)
    l, g, d = model.loss_and_grad(Xj, yj, lengths=lengths, initial_state=h0,
                                  return_state_grad=True)
    lt, gt, dt = model.loss_and_grad(Xj[:, :3], yj[:, :3], lengths=lengths, initial_state=h0,
                                     return_state_grad=True)
    close(l, lt)
    for k in g:
        close(g[k], gt[k], k)
    close(d, dt)


def _as_lists(case, X, y, lengths):
    Xl = [X[n, : lengths[n]].copy() for n in range(len(lengths))]
    if case.return_sequences and case.output == "softmax":
        yl = [y[n, : lengths[n]].copy() for n in range(len(lengths))]
    else:
        yl = None
    return Xl, yl


@pytest.mark.parametrize("case", case_matrix(ragged=True, use_h0=True, nonlinearity="tanh",
                                             output="softmax", num_layers=1) +
                         [c for cell in GATED for c in
                          case_matrix(cell=cell, ragged=True, use_h0=True,
                                      output="softmax", num_layers=1)], ids=repr)
def test_list_input_equals_padded_array(case):
    params = random_params(case)
    X, y, lengths, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    Xl, yl = _as_lists(case, X, y, lengths)
    Y, s = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    Yl, sl = model.forward(Xl, initial_state=h0, return_state=True)
    close(Yl, Y)
    close(sl, s)
    l, g, d = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                  return_state_grad=True)
    # list X with array y, and (many-to-many) list X with list y
    for yy in ([y] if yl is None else [y, yl]):
        l2, g2, d2 = model.loss_and_grad(Xl, yy, initial_state=h0, return_state_grad=True)
        close(l2, l)
        for k in g:
            close(g2[k], g[k], k)
        close(d2, d)
    np.testing.assert_array_equal(model.predict(Xl), model.predict(X, lengths=lengths))
    close(model.predict_proba(Xl), model.predict_proba(X, lengths=lengths))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tokens", [False, True])
def test_list_input_linear(cell, tokens):
    case = Case(cell=cell, output="linear", num_layers=2, bidirectional=True, tokens=tokens,
                ragged=True)
    params = random_params(case)
    X, y, lengths, _ = make_batch(case)
    model = make_model(crnn, case, params)
    Xl, _ = _as_lists(case, X, y, lengths)
    close(model.forward(Xl), model.forward(X, lengths=lengths))
    l, g = model.loss_and_grad(X, y, lengths=lengths)
    l2, g2 = model.loss_and_grad(Xl, y)
    close(l2, l)
    for k in g:
        close(g2[k], g[k], k)


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_all_full_equals_no_lengths(cell):
    case = Case(cell=cell, num_layers=2, bidirectional=True, use_h0=True)
    params = random_params(case)
    X, y, _, h0 = make_batch(case)
    model = make_model(crnn, case, params)
    full = np.full(N, T)
    close(model.forward(X, lengths=full, initial_state=h0),
          model.forward(X, initial_state=h0))
    l, g = model.loss_and_grad(X, y, lengths=full, initial_state=h0)
    l2, g2 = model.loss_and_grad(X, y, initial_state=h0)
    close(l, l2)
    for k in g:
        close(g[k], g2[k], k)


def test_list_of_equal_lengths_equals_array():
    case = Case("tanh", "softmax", True, 1, False)
    params = random_params(case)
    X, y, _, _ = make_batch(case)
    model = make_model(crnn, case, params)
    close(model.forward(list(X)), model.forward(X))
    l, g = model.loss_and_grad(list(X), list(y))
    l2, g2 = model.loss_and_grad(X, y)
    close(l, l2)
    for k in g:
        close(g[k], g2[k], k)


@pytest.mark.parametrize("lengths_type", [list, tuple, np.int32, np.uint8])
def test_lengths_accepts_integer_sequences(lengths_type):
    case = Case("tanh", "softmax", True, 1, True, ragged=True)
    params = random_params(case)
    X, y, lengths, _ = make_batch(case)
    model = make_model(crnn, case, params)
    if lengths_type in (list, tuple):
        lens = lengths_type(int(v) for v in lengths)
    else:
        lens = lengths.astype(lengths_type)
    close(model.forward(X, lengths=lens), model.forward(X, lengths=lengths))


VARIANTS = [
    ("rnn", {}), ("lstm", {}), ("gru", {}), ("gru", dict(reset_after=False)),
    ("lstm", dict(peepholes=True)), ("lstm", dict(proj_size=3)),
    ("gru", dict(reset_after=False, recurrent_dropout=0.3, dropout=0.2)),
    ("lstm", dict(recurrent_dropout=0.3, output_dropout=0.2)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell,options", VARIANTS, ids=repr)
def test_scratch_memory_never_reaches_a_result(cell, options, dtype):
    """The workspace is not initialised: the engine must write every element
    it reads, padding rows included.  Filling every buffer with NaN between
    two calls must leave the second call's loss and gradients bit for bit
    those of the first (ragged lengths: rows die at different steps)."""
    model = {"rnn": crnn.RNN, "lstm": crnn.LSTM, "gru": crnn.GRU}[cell](
        5, 6, 4, num_layers=2, bidirectional=True, dtype=dtype, seed=1, **options)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(7, 9, 5))
    y = rng.integers(0, 4, size=(7, 9))
    lengths = [9, 3, 9, 1, 6, 8, 2]
    training = dict(training=True, dropout_seed=3) if "dropout" in str(options) else {}
    loss, grads = model.loss_and_grad(X, y, lengths, **training)
    for buffer in model._workspace.buffers.values():
        if buffer.dtype.kind == "f":
            buffer.fill(np.nan)
    again, grads_again = model.loss_and_grad(X, y, lengths, **training)
    assert np.isfinite(loss) and again == loss
    for key in grads:
        np.testing.assert_array_equal(grads_again[key], grads[key], err_msg=key)
