"""crnn's C-level API (crnn/api.pxd), used as a downstream extension uses it.

The module fixture builds examples/downstream (its own setup.py, a .pyx that
does ``cimport crnn.api``) against the installed crnn with
``python setup.py build_ext --inplace`` in a temporary directory, imports it,
and every test checks what its nogil calls return against crnn's Python API:
forward outputs and final states, loss_and_grad's parameter and
initial-state gradients, a stream's steps.  Needs Cython, setuptools and a C
compiler; without them the tests that build skip, saying which is missing.
"""
import threading
from pathlib import Path

import numpy as np
import pytest

import crnn
from build_example import build_example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "downstream"
EXAMPLE_FILES = ("setup.py", "pyproject.toml", "crnn_downstream.pyx")
TOL = {np.float32: 1e-5, np.float64: 1e-10}
DTYPES = (np.float32, np.float64)
CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before",
         "lstm_peephole")
PAIR = ("lstm", "lstm_peephole")          # cells whose state is (h, c)
N, T, D, H, K = 4, 6, 3, 5, 2
LENGTHS = np.array([4, 6, 1, 3])          # unsorted, includes 1 and T
SHORT = np.array([4, 2, 1, 3])            # every sequence shorter than T


# ------------------------------------------------------------ the build

@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    return build_example(EXAMPLE, EXAMPLE_FILES, "crnn_downstream",
                         tmp_path_factory.mktemp("downstream"), cython=True)


def test_get_include_holds_the_header_beside_the_public_pxd():
    include = Path(crnn.get_include())
    assert include == Path(crnn.__file__).parent      # the package, not site-packages
    assert (include / "crnn.h").is_file()
    api = include / "api.pxd"
    assert api.is_file()
    code = [line.split("#")[0] for line in
            api.read_text(encoding="utf-8").splitlines()]
    # functions and plain structs only, and self-contained
    assert not any("cdef class" in line for line in code)
    assert not any("cimport" in line for line in code)
    assert any("crnn_forward_f64(" in line for line in code)


# ------------------------------------------------------------ helpers

def make_model(cell, dtype, *, output="linear", return_sequences=True,
               num_layers=1, seed=0):
    kwargs = dict(num_layers=num_layers, output=output,
                  return_sequences=return_sequences, dtype=dtype, seed=seed)
    size = K if output is not None else None
    if cell.startswith("rnn"):
        return crnn.RNN(D, H, size, nonlinearity=cell[4:], **kwargs)
    if cell == "gru_reset_before":
        return crnn.GRU(D, H, size, reset_after=False, **kwargs)
    if cell == "lstm_peephole":
        return crnn.LSTM(D, H, size, peepholes=True, **kwargs)
    return (crnn.LSTM if cell == "lstm" else crnn.GRU)(D, H, size, **kwargs)


def lane(model, layer=0):
    """U, W, b and the cell's extra parameter the C API takes as bn: the
    GRU's bn, the peephole LSTM's P (None for the others)."""
    p = model.params
    return (p[f"U{layer}"], p[f"W{layer}"], p[f"b{layer}"],
            p.get(f"bn{layer}", p.get(f"P{layer}")))


class Batch:
    """A random batch in the user's layout and in the C API's: time-major,
    sorted by length, longest first."""

    def __init__(self, dtype, num_layers=1, seed=1, lengths=LENGTHS):
        rng = np.random.default_rng(seed)
        self.all_lengths = lengths
        self.dtype = dtype
        self.X = rng.normal(size=(N, T, D)).astype(dtype)
        self.y = rng.normal(size=(N, T, K)).astype(dtype)
        self.y_last = rng.normal(size=(N, K)).astype(dtype)
        self.h0 = rng.normal(scale=0.5, size=(num_layers, N, H)).astype(dtype)
        self.c0 = rng.normal(scale=0.5, size=(num_layers, N, H)).astype(dtype)
        self.order = np.argsort(-lengths, kind="stable")
        self.inverse = np.argsort(self.order)
        self.lengths = lengths[self.order]
        self.x = self.time_major(self.X)
        self.mask = np.arange(T)[None, :] < lengths[:, None]     # (N, T)

    def time_major(self, a):
        """(N, T, ·) user order → (T, N, ·) sorted, C-contiguous."""
        return np.ascontiguousarray(a[self.order].transpose(1, 0, 2), self.dtype)

    def user(self, a):
        """(T, N, ·) sorted → (N, T, ·) user order."""
        return a.transpose(1, 0, 2)[self.inverse]

    def rows(self, a):
        """(N, ·) user order → sorted, C-contiguous."""
        return np.ascontiguousarray(a[self.order], self.dtype)


def close(actual, expected, dtype, what):
    tol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)


def state_pair(cell, state):
    """(h, c or None) of a model's state / state gradient."""
    return state if cell in PAIR else (state, None)


# ------------------------------------------------------------ the example

def test_example_lstm_forward(downstream):
    model = make_model("lstm", np.float64, output=None)
    batch = Batch(np.float64)
    U, W, b, _ = lane(model)
    full = np.ascontiguousarray(batch.X.transpose(1, 0, 2))      # every length T
    hs = downstream.lstm_forward(full, U, W, b)
    close(hs[1:].transpose(1, 0, 2), model.forward(batch.X), np.float64,
          "lstm_forward vs LSTM.forward")
    assert not hs[0].any()


# ------------------------------------------------------------ sequences

@pytest.mark.parametrize("lengths", [LENGTHS, SHORT], ids=["ragged", "short"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_many_to_many_forward_and_backward(downstream, cell, dtype, lengths):
    """Ragged lengths (or all shorter than T) and an initial state: outputs,
    final states, the loss, every parameter gradient and the initial-state
    gradients."""
    model = make_model(cell, dtype)
    batch = Batch(dtype, lengths=lengths)
    U, W, b, bn = lane(model)
    V, c = model.params["V"], model.params["c"]
    initial = (batch.h0, batch.c0) if cell in PAIR else batch.h0
    lstm = cell in PAIR

    status, hs, h_n, c_n, work = downstream.forward(
        cell, batch.x, U, W, b, bn, lengths=batch.lengths,
        h0=batch.rows(batch.h0[0]), c0=batch.rows(batch.c0[0]) if lstm else None)
    assert status == downstream.STATUS["ok"]

    Y, state = model.forward(batch.X, lengths, initial, return_state=True)
    hidden = batch.user(hs[1:])                                   # (N, T, H)
    outputs = (hidden @ V.T + c) * batch.mask[..., None]
    close(outputs, Y, dtype, "outputs")
    h_state, c_state = state_pair(cell, state)
    close(h_n[batch.inverse], h_state[0], dtype, "h_n")
    if lstm:
        close(c_n[batch.inverse], c_state[0], dtype, "c_n")
    assert not hidden[~batch.mask].any(), "rows past a length must be zero"

    loss, grads, state_grad = model.loss_and_grad(
        batch.X, batch.y, lengths, initial, return_state_grad=True)
    count = lengths.sum()
    diff = (outputs - batch.y) * batch.mask[..., None]
    close(0.5 * np.sum(diff.astype(np.float64) ** 2) / count, loss, dtype, "loss")
    dhs = batch.time_major((diff / count) @ V)                    # ∂L/∂h(t)
    status, cgrads, dx, dh0, dc0 = downstream.backward(
        cell, batch.x, U, W, hs, work, dhs=dhs, want_dx=False)
    assert status == downstream.STATUS["ok"]
    assert dx is None
    for name, value in cgrads.items():
        close(value, grads[f"{name}0"], dtype, f"d{name}")
    dh_state, dc_state = state_pair(cell, state_grad)
    close(dh0[batch.inverse], dh_state[0], dtype, "dh0")
    if lstm:
        close(dc0[batch.inverse], dc_state[0], dtype, "dc0")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_many_to_one_backward_from_final_state(downstream, cell, dtype):
    """return_sequences=False: the gradient enters through dh_n only."""
    model = make_model(cell, dtype, return_sequences=False)
    batch = Batch(dtype)
    U, W, b, bn = lane(model)
    V, c = model.params["V"], model.params["c"]

    status, hs, h_n, _, work = downstream.forward(
        cell, batch.x, U, W, b, bn, lengths=batch.lengths)
    assert status == downstream.STATUS["ok"]
    outputs = h_n[batch.inverse] @ V.T + c
    close(outputs, model.forward(batch.X, LENGTHS), dtype, "outputs")

    loss, grads = model.loss_and_grad(batch.X, batch.y_last, LENGTHS)
    dh_n = batch.rows(((outputs - batch.y_last) / N) @ V)
    status, cgrads, _, _, _ = downstream.backward(
        cell, batch.x, U, W, hs, work, dh_n=dh_n, want_dx=False)
    assert status == downstream.STATUS["ok"]
    for name, value in cgrads.items():
        close(value, grads[f"{name}0"], dtype, f"d{name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_two_stacked_layers_through_dx(downstream, cell, dtype):
    """Layer 1 reads layer 0's hs[1:]; layer 1's dx is layer 0's dhs."""
    model = make_model(cell, dtype, num_layers=2)
    batch = Batch(dtype)
    V, c = model.params["V"], model.params["c"]
    U0, W0, b0, bn0 = lane(model, 0)
    U1, W1, b1, bn1 = lane(model, 1)

    status0, hs0, _, _, work0 = downstream.forward(
        cell, batch.x, U0, W0, b0, bn0, lengths=batch.lengths)
    x1 = hs0[1:]
    status1, hs1, _, _, work1 = downstream.forward(
        cell, x1, U1, W1, b1, bn1, lengths=batch.lengths)
    assert status0 == status1 == downstream.STATUS["ok"]
    outputs = (batch.user(hs1[1:]) @ V.T + c) * batch.mask[..., None]
    close(outputs, model.forward(batch.X, LENGTHS), dtype, "outputs")

    loss, grads = model.loss_and_grad(batch.X, batch.y, LENGTHS)
    count = LENGTHS.sum()
    dhs1 = batch.time_major(((outputs - batch.y) * batch.mask[..., None] / count) @ V)
    status1, grads1, dx1, _, _ = downstream.backward(
        cell, x1, U1, W1, hs1, work1, dhs=dhs1)
    status0, grads0, _, _, _ = downstream.backward(
        cell, batch.x, U0, W0, hs0, work0, dhs=dx1, want_dx=False)
    assert status0 == status1 == downstream.STATUS["ok"]
    for layer, cgrads in ((0, grads0), (1, grads1)):
        for name, value in cgrads.items():
            close(value, grads[f"{name}{layer}"], dtype, f"d{name}{layer}")


def test_lstm_cell_state_gradient(downstream):
    """dc_n, which the Python API never feeds: L = Σ G ⊙ c_n, checked by
    central differences of the C API's own forward (float64)."""
    rng = np.random.default_rng(3)
    model = make_model("lstm", np.float64)
    batch = Batch(np.float64)
    U, W, b, _ = lane(model)
    G = rng.normal(size=(N, H))

    def loss(W):
        status, _, _, c_n, _ = downstream.forward(
            "lstm", batch.x, U, W, b, lengths=batch.lengths)
        assert status == 0
        return np.sum(G * c_n)

    status, hs, _, _, work = downstream.forward(
        "lstm", batch.x, U, W, b, lengths=batch.lengths)
    status, cgrads, _, _, _ = downstream.backward(
        "lstm", batch.x, U, W, hs, work, dc_n=G, want_dx=False)
    assert status == 0
    eps = 1e-6
    for index in [(0, 0), (5, 2), (4 * H - 1, H - 1), (2 * H + 1, 3)]:
        step = np.zeros_like(W)
        step[index] = eps
        numeric = (loss(W + step) - loss(W - step)) / (2 * eps)
        assert abs(cgrads["W"][index] - numeric) < 1e-7, index


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell,hidden", [("lstm", 64), ("gru", 86), ("gru_reset_before", 86),
                                         ("rnn_tanh", 256), ("lstm_peephole", 64)])
def test_backward_with_dU_and_dW_in_one_product(downstream, cell, hidden,
                                                threads):
    """At sizes where dU and dW share one product (G·H >= 256; 640 rows:
    the LSTM and GRU take it in chunks of 32 steps, the RNN's larger block
    once after the loop), the C API's backward runs it in the workspace's
    last region, and its gradients equal those of two products (the switch
    off, float64, ragged lengths)."""
    from fast_paths import fast_path
    steps, batch, inputs = 40, 16, 8
    G = downstream.gate_blocks(cell)
    rng = np.random.default_rng(hidden)
    x = rng.normal(size=(steps, batch, inputs))
    U = rng.normal(scale=0.2, size=(G * hidden, inputs))
    W = rng.normal(scale=0.2, size=(G * hidden, hidden))
    b = rng.normal(scale=0.2, size=G * hidden)
    bn = {"gru": rng.normal(scale=0.2, size=hidden),
          "lstm_peephole": rng.normal(scale=0.2, size=(3, hidden))}.get(cell)
    lengths = np.sort(rng.integers(1, steps + 1, batch))[::-1].copy()
    lengths[0] = steps
    dhs = rng.normal(size=(steps, batch, hidden))
    # the region merged_room reserves: the block and every row [x | h]
    room = (G * hidden + steps * batch) * (inputs + hidden)
    previous_threads = crnn.get_num_threads()
    results = {}
    try:
        crnn.set_num_threads(threads)
        for merged in (True, False):
            previous = fast_path("merged_weight_gradients")(merged)
            try:
                status, hs, _, _, work = downstream.forward(
                    cell, x, U, W, b, bn, lengths=lengths)
                assert status == downstream.STATUS["ok"]
                status, grads, dx, dh0, _ = downstream.backward(
                    cell, x, U, W, hs, work, dhs=dhs)
                assert status == downstream.STATUS["ok"]
            finally:
                fast_path("merged_weight_gradients")(previous)
            # the scratch is used with the switch on, untouched with it off
            assert work[-room:].any() == merged
            results[merged] = (grads, dx, dh0)
    finally:
        crnn.set_num_threads(previous_threads)
    (grads1, dx1, dh01), (grads0, dx0, dh00) = results[True], results[False]
    for name in grads1:
        np.testing.assert_allclose(grads1[name], grads0[name], rtol=1e-11,
                                   atol=1e-13, err_msg=name)
    np.testing.assert_array_equal(dx1, dx0)
    np.testing.assert_array_equal(dh01, dh00)


# ------------------------------------------------------------ streaming

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_step_matches_stream(downstream, cell, dtype):
    model = make_model(cell, dtype)
    batch = Batch(dtype)
    U, W, b, bn = lane(model)
    V, c = model.params["V"], model.params["c"]
    stream = model.stream(batch_size=N)
    h = np.zeros((N, H), dtype)
    cell_state = np.zeros((N, H), dtype) if cell in PAIR else None
    for t in range(T):
        x_t = np.ascontiguousarray(batch.X[:, t])
        status = downstream.step(cell, x_t, U, W, b, bn, h, cell_state)
        assert status == downstream.STATUS["ok"]
        close(h @ V.T + c, stream.step(x_t), dtype, f"step {t}")


# ------------------------------------------------------------ contract

def test_sizes_and_status_codes(downstream):
    assert [downstream.gate_blocks(cell) for cell in CELLS] == [1, 1, 4, 3, 3, 4]
    # workspace sizes: forward-only is a prefix of forward + backward
    for cell in CELLS:
        forward = downstream.workspace_size(cell, T, N, D, H)
        training = downstream.workspace_size(cell, T, N, D, H, backward=True)
        assert 0 < forward < training
        assert downstream.workspace_size(cell, T, N, D, H, step=True) > 0
        assert downstream.workspace_size(cell, T, N, D, 0) == -1
        assert downstream.workspace_size(cell, 0, N, D, H) == -1

    model = make_model("gru", np.float64)
    batch = Batch(np.float64)
    U, W, b, bn = lane(model)
    status = downstream.STATUS
    # lengths must be in [1, T] and sorted longest first
    for lengths in (LENGTHS, [6, 4, 3, 0], [7, 4, 3, 1]):
        result = downstream.forward("gru", batch.x, U, W, b, bn,
                                    lengths=np.array(lengths))
        assert result[0] == status["lengths"], lengths
    # the GRU needs its recurrent bias
    assert downstream.forward("gru", batch.x, U, W, b, None)[0] == status["null"]
    h = np.zeros((N, H))
    x_t = np.ascontiguousarray(batch.X[:, 0])
    assert downstream.step("gru", x_t, U, W, b, None, h) == status["null"]
    # the peephole LSTM needs its P (in bn's place)
    peephole = make_model("lstm_peephole", np.float64)
    Up, Wp, bp, P = lane(peephole)
    assert downstream.forward("lstm_peephole", batch.x, Up, Wp, bp, None)[0] == \
        status["null"]
    assert downstream.step("lstm_peephole", x_t, Up, Wp, bp, None, h,
                           np.zeros((N, H))) == status["null"]
    # backward without its forward in the workspace
    _, hs, _, _, work = downstream.forward("gru", batch.x, U, W, b, bn)
    work[:] = 0
    result = downstream.backward("gru", batch.x, U, W, hs, work,
                                 dhs=np.ones_like(hs[1:]))
    assert result[0] == status["workspace"]


def test_calls_run_concurrently_without_the_gil(downstream):
    """Threads on separate workspaces give the single-threaded answer."""
    model = make_model("lstm", np.float64)
    batch = Batch(np.float64)
    U, W, b, _ = lane(model)
    expected = downstream.forward("lstm", batch.x, U, W, b,
                                  lengths=batch.lengths)[1]
    results = [None] * 4

    def run(i):
        results[i] = downstream.forward("lstm", batch.x, U, W, b,
                                        lengths=batch.lengths)[1]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_workspace_is_refused_before_anything_is_written(downstream, cell,
                                                               dtype):
    """lwork below the size a call needs: CRNN_ERROR_WORKSPACE_SIZE, and
    neither the workspace nor an output is touched.  The case that wrote
    past the buffer before lwork: a forward-sized workspace handed to the
    backward (T=3, B=2)."""
    status = downstream.STATUS
    x = np.random.default_rng(0).normal(size=(3, 2, D)).astype(dtype)
    U, W, b, bn = lane(make_model(cell, dtype, output=None))
    forward_size = downstream.workspace_size(cell, 3, 2, D, H)
    training_size = downstream.workspace_size(cell, 3, 2, D, H, backward=True)
    # forward with one element too few
    result = downstream.forward(cell, x, U, W, b, bn, lwork=forward_size - 1,
                                backward=False)
    assert result[0] == status["workspace_size"]
    assert not result[4].any() and not result[1].any()
    # a forward-only workspace is enough for the forward ...
    st, hs, _, _, work = downstream.forward(cell, x, U, W, b, bn, backward=False)
    assert st == status["ok"] and work.shape[0] == forward_size < training_size
    # ... and refused by the backward, which would write past it
    before = work.copy()
    st, grads, dx, dh0, _ = downstream.backward(cell, x, U, W, hs, work,
                                                dhs=np.ones_like(hs[1:]))
    assert st == status["workspace_size"]
    np.testing.assert_array_equal(work, before)
    assert all(not g.any() for g in grads.values()) and np.isnan(dh0).all()
    # the step
    h = np.zeros((2, H), dtype)
    c = np.zeros((2, H), dtype) if cell in PAIR else None
    step_size = downstream.workspace_size(cell, 1, 2, D, H, step=True)
    assert downstream.step(cell, x[0], U, W, b, bn, h, c,
                           lwork=step_size - 1) == status["workspace_size"]
    assert not h.any()
    assert downstream.step(cell, x[0], U, W, b, bn, h, c) == status["ok"]


def test_status_names_and_version(downstream):
    names = {code: downstream.status_name(code)
             for code in downstream.STATUS.values()}
    assert names[downstream.STATUS["workspace_size"]] == "CRNN_ERROR_WORKSPACE_SIZE"
    assert names[downstream.STATUS["ok"]] == "CRNN_OK"
    assert len(set(names.values())) == len(names)
    assert downstream.status_name(99) == "unknown status"
    assert downstream.API_VERSION == 2


def test_length_order_sorts_longest_first_and_is_stable(downstream):
    lengths = np.array([3, 7, 3, 9, 1, 7])
    order = downstream.length_order(lengths)
    np.testing.assert_array_equal(order, np.argsort(-lengths, kind="stable"))
    assert (np.diff(lengths[order]) <= 0).all()

