"""Hardening (issue 9) beyond test_errors.py / test_stream.py:

- sizes whose products overflow BLAS's 32-bit integers, refused from the
  shapes alone (broadcast arrays: huge shapes, no memory) and, with a tiny
  limit monkeypatched in, on every entry point;
- values finite in float64 but too big for a float32 model (X, y, initial
  state, params, stream input and state): a ValueError, not a silent inf and
  not a RuntimeWarning;
- numpy masked arrays (np.asarray would drop the mask): refused;
- lengths given as a ragged nested list or an empty list: named;
- the arrays ``model.params`` hands out cannot change the model's layout
  (setting ``.shape`` / ``.dtype`` in place once corrupted the heap);
- unaligned, byte-swapped, read-only, Fortran, strided and negatively strided
  arrays on the entry points test_reference.py's layout test does not
  reach: stream.step and stream.state, set_params, sample, predict,
  Trainer.fit / evaluate — each result equal to the C-contiguous one;
- sample's seed and temperature, from_torch with non-finite weights.
"""

import tracemalloc
import warnings

import numpy as np
import pytest

import crnn
from cases import D, H, K, N, T
from test_errors import assert_mentions, assert_number, raise_msg

ERR = (ValueError, TypeError)
CLASSES = {"rnn": crnn.RNN, "lstm": crnn.LSTM, "gru": crnn.GRU}
CELLS = list(CLASSES)
INT32_MAX = 2**31 - 1


def model_of(cell, dtype="float64", **kw):
    return CLASSES[cell](D, H, kw.pop("output_size", K), dtype=dtype, seed=0, **kw)


def state_of(cell, h0):
    return (h0, h0 * 0.5) if cell == "lstm" else h0


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


def assert_same(a, b):
    for x, y_ in zip(parts(a), parts(b)):
        np.testing.assert_array_equal(x, y_)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, T, D)), rng.integers(0, K, size=(N, T))


# ------------------------------------------------------------------ layouts

def unaligned(a):
    """A copy of `a` whose data starts one byte past an aligned address."""
    a = np.ascontiguousarray(a)
    raw = bytearray(a.nbytes + 1)
    out = np.frombuffer(raw, dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


LAYOUTS = {
    "fortran": np.asfortranarray,
    "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2] if a.ndim else a,
    "negative": lambda a: np.flip(np.flip(a).copy()),
    "byteswapped": lambda a: a.astype(a.dtype.newbyteorder()),
    "readonly": lambda a: _readonly(a),
    "unaligned": unaligned,
}


def _readonly(a):
    b = np.array(a)
    b.setflags(write=False)
    return b


def check_layout(name, array):
    """The layout really is what it claims (so a test cannot pass vacuously)."""
    if name == "fortran" and array.ndim > 1:
        assert not array.flags.c_contiguous
    if name == "negative" and array.size > 1:
        assert any(s < 0 for s in array.strides)
    if name == "byteswapped" and array.dtype.itemsize > 1:
        assert not array.dtype.isnative
    if name == "readonly":
        assert not array.flags.writeable
    return array


def relayout(name, array):
    return check_layout(name, LAYOUTS[name](np.asarray(array)))


# ------------------------------------------------------------------ 32-bit sizes

def broadcast(shape, dtype=np.float64):
    """An array of `shape` that costs one element of memory."""
    return np.broadcast_to(np.zeros((1,) * len(shape), dtype=dtype), shape)


@pytest.mark.parametrize("cell", CELLS)
def test_x_too_big_for_32_bit_blas_is_refused_without_allocating(cell):
    model = model_of(cell, "float32")
    cases = [
        broadcast((2**16, 2**16, D)),                  # N·T·D = 2^34 floats
        broadcast((2**16, 2**16), np.int64),           # N·T = 2^32 tokens
        broadcast((2**31, 1, D)),                      # N alone past 2^31
    ]
    tracemalloc.start()
    try:
        for X in cases:
            elements = int(np.prod(X.shape[:2])) * (D if X.ndim == 3 else 1)
            for call in (lambda: model.forward(X), lambda: model.predict(X),
                         lambda: model.loss_and_grad(X, broadcast(X.shape[:2], np.int64))):
                msg = raise_msg(call, ValueError)
                assert_number(msg, elements)
                assert_number(msg, INT32_MAX)
                assert_mentions(msg, "32-bit")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"refusing a huge X allocated {peak} bytes"


@pytest.mark.parametrize("cell", CELLS)
def test_driver_buffers_too_big_are_refused_before_copying_x(cell):
    """X itself fits (2^26 floats) but the gate buffers ((T+1)·N × 4H for an
    LSTM) would not: refused from the shapes, before X is copied."""
    model = CLASSES[cell](1, 64, 2, dtype="float32", seed=0)
    X = broadcast((2**13, 2**13, 1))
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    needed = (2**13 + 1) * 2**13 * G * 64
    tracemalloc.start()
    try:
        for call in (lambda: model.forward(X), lambda: model.predict(X),
                     lambda: model.loss_and_grad(X, broadcast((2**13, 2**13), np.int64))):
            msg = raise_msg(call, ValueError)
            assert_number(msg, needed)
            assert_number(msg, INT32_MAX)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"refusing the batch allocated {peak} bytes"


def test_stream_batch_size_too_big_for_32_bit_blas():
    model = model_of("lstm")
    msg = raise_msg(lambda: model.stream(2**40), ValueError)
    assert_mentions(msg, "batch_size", 2**40)


@pytest.mark.parametrize("cell", CELLS)
def test_every_entry_point_honours_the_blas_limit(cell, monkeypatch, data):
    """With the limit monkeypatched down to 100 elements, ordinary small
    batches cross it: every entry point refuses them, naming the sizes."""
    X, y = data
    model = model_of(cell)
    snap = {k: v.copy() for k, v in model.params.items()}
    monkeypatch.setattr(crnn._inputs, "INT32_MAX", 100)
    # (T+1)·N·max(G·H, D, K) = 6·3·6·G > 100 for every cell; N·T·D = 60 is not
    for call in (lambda: model.forward(X), lambda: model.predict(X),
                 lambda: model.predict_proba(X), lambda: model.loss_and_grad(X, y),
                 lambda: model.forward(list(X))):
        msg = raise_msg(call, ValueError)
        assert_number(msg, 100)
    msg = raise_msg(lambda: model.stream(100), ValueError)
    assert_mentions(msg, "batch_size", 100)
    msg = raise_msg(lambda: CLASSES[cell](D, 64, K), ValueError)
    assert_number(msg, 100)
    trainer = crnn.Trainer(model, "sgd", lr=0.1, batch_size=N)
    raise_msg(lambda: trainer.fit(X, y, verbose=0), ValueError)
    for k in snap:
        np.testing.assert_array_equal(model.params[k], snap[k])
    monkeypatch.undo()
    model.forward(X)                # the same batch is fine with the real limit


# ------------------------------------------------------------------ too big for float32

def _no_warning(call, types=ValueError):
    """`call` raises `types`, and no RuntimeWarning (even under -W error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return raise_msg(call, types)


@pytest.mark.parametrize("cell", CELLS)
def test_values_too_big_for_float32_are_refused(cell, data):
    X, y = data
    model = model_of(cell, "float32")
    linear = model_of(cell, "float32", output="linear")
    big = X.copy()
    big[1, 2, 3] = 1e300                    # finite in float64, inf in float32
    assert_mentions(_no_warning(lambda: model.forward(big)), ["nan", "inf", "finite"])
    assert_mentions(_no_warning(lambda: model.loss_and_grad(big, y)), ["inf", "finite"])
    yl = np.zeros((N, T, K))
    yl[0, 0, 0] = -1e300
    assert_mentions(_no_warning(lambda: linear.loss_and_grad(X, yl)), "y", "finite")
    h0 = np.zeros((1, N, H))
    h0[0, 1, 1] = 1e39
    assert_mentions(_no_warning(lambda: model.forward(X, initial_state=state_of(cell, h0))),
                    "finite")
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    params["W0"][0, 0] = 1e300
    snap = {k: v.copy() for k, v in model.params.items()}
    assert_mentions(_no_warning(lambda: model.set_params(params)), "W0", "inf")
    for k in snap:
        np.testing.assert_array_equal(model.params[k], snap[k])


@pytest.mark.parametrize("cell", CELLS)
def test_stream_values_too_big_for_float32_are_refused(cell):
    model = model_of(cell, "float32")
    stream = model.stream(1)
    stream.step(np.ones(D))
    before = [p.copy() for p in parts(stream.state)]
    x = np.zeros(D)
    x[0] = 1e300
    assert_mentions(_no_warning(lambda: stream.step(x)), ["inf", "finite"])
    h = np.zeros((1, 1, H))
    h[0, 0, 2] = 1e300
    msg = _no_warning(lambda: setattr(stream, "state", state_of(cell, h)))
    assert_mentions(msg, ["nan", "inf", "finite"])
    for a, b in zip(parts(stream.state), before):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()


# ------------------------------------------------------------------ masked arrays, lengths

def test_masked_arrays_are_refused(data):
    X, y = data
    model = model_of("lstm")
    masked = np.ma.masked_array(X, mask=X > 1)
    msg = raise_msg(lambda: model.forward(masked), TypeError)
    assert_mentions(msg, "masked", "lengths")
    raise_msg(lambda: model.loss_and_grad(X, np.ma.masked_array(y)), TypeError)
    h0 = np.ma.masked_array(np.zeros((1, N, H)))
    raise_msg(lambda: model.forward(X, initial_state=(h0, h0)), TypeError)
    raise_msg(lambda: model.forward(X, lengths=np.ma.masked_array([1, 2, 3])), TypeError)


def test_ragged_and_empty_lengths_are_named(data):
    X, y = data
    model = model_of("gru")
    msg = raise_msg(lambda: model.forward(X, lengths=[[1], [1, 2], 3]), ValueError)
    assert_mentions(msg, "lengths", N)
    msg = raise_msg(lambda: model.forward(X, lengths=[]), ValueError)
    assert_mentions(msg, "lengths", (N,), (0,))


# ------------------------------------------------------------------ params views

@pytest.mark.parametrize("cell", CELLS)
def test_params_cannot_change_the_models_layout(cell, data):
    """ndarray.shape and .dtype can be set in place; doing so on what
    ``params`` returns must not reach the arrays the kernels read (it once
    made the driver read and write out of bounds)."""
    X, y = data
    model = model_of(cell, "float32")
    expected = model.forward(X)
    loss, grads = model.loss_and_grad(X, y)
    stream = model.stream(1)
    step = stream.step(X[0, 0])
    stream.reset()

    params = model.params
    with warnings.catch_warnings():
        # NumPy 2.5 deprecates setting .dtype and .shape in place; a NumPy
        # that refuses it protects the model by itself
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            params["U0"].dtype = np.float64   # (G·H, D) float32 -> (G·H, D/2) float64
            params["W0"].shape = (1, params["W0"].size)
        except (AttributeError, TypeError, ValueError):
            pass
    params["V"].setflags(write=False)
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes["U0"][1] == D and model.params["U0"].dtype == np.float32
    assert model.params["V"].flags.writeable

    np.testing.assert_array_equal(model.forward(X), expected)
    loss2, grads2 = model.loss_and_grad(X, y)
    assert loss2 == loss
    for k in grads:
        np.testing.assert_array_equal(grads2[k], grads[k])
    np.testing.assert_array_equal(stream.step(X[0, 0]), step)


@pytest.mark.parametrize("cell", CELLS)
def test_params_views_still_write_through(cell, data):
    X, _ = data
    model = model_of(cell)
    params = model.params
    params["c"][...] = 100.0 * np.arange(K)
    Y = model.forward(X)
    assert (Y.argmax(axis=-1) == K - 1).all()
    assert np.shares_memory(model.params["W0"], model.params["W0"])


# ------------------------------------------------------------------ other layouts

@pytest.mark.parametrize("cell", CELLS)
def test_unaligned_inputs(cell):
    """One sequence of the model's dtype is handed to the driver without a
    copy: an unaligned one must be copied first (typed C pointers)."""
    rng = np.random.default_rng(3)
    model = model_of(cell, "float32", output="linear")
    X1 = rng.normal(size=(1, T, D)).astype(np.float32)
    tokens = rng.integers(0, D, size=(1, T)).astype(np.int32)
    y1 = rng.normal(size=(1, T, K)).astype(np.float32)
    h0 = rng.normal(size=(1, 1, H)).astype(np.float32)
    state = state_of(cell, h0)
    state_u = tuple(unaligned(p) for p in state) if cell == "lstm" else unaligned(h0)
    assert_same(model.forward(unaligned(X1), initial_state=state_u, return_state=True),
                model.forward(X1, initial_state=state, return_state=True))
    np.testing.assert_array_equal(model.forward(unaligned(tokens)), model.forward(tokens))
    l1, g1 = model.loss_and_grad(unaligned(X1), unaligned(y1),
                                 lengths=unaligned(np.array([T])))
    l2, g2 = model.loss_and_grad(X1, y1)
    assert l1 == l2
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_stream_step_and_state_layouts(cell, layout):
    rng = np.random.default_rng(4)
    model = model_of(cell)
    xs = rng.normal(size=(T, 3, D))
    h = rng.normal(size=(1, 3, H))
    plain, other = model.stream(3), model.stream(3)
    plain.state = state_of(cell, h)
    other.state = (tuple(relayout(layout, p) for p in state_of(cell, h)) if cell == "lstm"
                   else relayout(layout, h))
    for x in xs:
        np.testing.assert_array_equal(other.step(relayout(layout, x)), plain.step(x))
    assert_same(other.state, plain.state)
    # token ids too
    one, two = model.stream(3), model.stream(3)
    for ids in rng.integers(0, D, size=(T, 3)):
        np.testing.assert_array_equal(two.step(relayout(layout, ids)), one.step(ids))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_set_params_layouts(cell, layout):
    model, other = model_of(cell), model_of(cell)
    rng = np.random.default_rng(5)
    new = {k: rng.normal(size=v.shape) for k, v in model.params.items()}
    model.set_params(new)
    other.set_params({k: relayout(layout, v) for k, v in new.items()})
    for k in new:
        np.testing.assert_array_equal(other.params[k], model.params[k])
        assert other.params[k].flags.c_contiguous and other.params[k].dtype.isnative


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_predict_and_sample_layouts(layout):
    rng = np.random.default_rng(6)
    model = crnn.LSTM(D, H, seed=1, dtype="float64")       # a token model
    X = rng.normal(size=(N, T, D))
    lengths = np.array([T, 2, 4])
    expected = model.predict(X, lengths=lengths)
    got = model.predict(relayout(layout, X), lengths=relayout(layout, lengths))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(
        model.predict_proba(relayout(layout, X), lengths=relayout(layout, lengths)),
        model.predict_proba(X, lengths=lengths))
    prime = rng.integers(0, D, size=7)
    np.testing.assert_array_equal(model.sample(5, prime=relayout(layout, prime), seed=3),
                                  model.sample(5, prime=prime, seed=3))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_trainer_layouts_give_identical_weights(layout):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(8, T, D))
    y = rng.integers(0, K, size=(8, T))
    lengths = rng.integers(1, T + 1, size=8)
    weights, scores = [], []
    for convert in (lambda a: a, lambda a: relayout(layout, a)):
        model = crnn.GRU(D, H, K, seed=0, dtype="float64")
        trainer = crnn.Trainer(model, "adam", lr=0.01, batch_size=3, seed=0)
        trainer.fit(convert(X), convert(y), lengths=convert(lengths), epochs=2,
                    validation_data=(convert(X), convert(y), convert(lengths)), verbose=0)
        weights.append(model.params)
        scores.append(trainer.evaluate(convert(X), convert(y), lengths=convert(lengths)))
    for k in weights[0]:
        np.testing.assert_array_equal(weights[1][k], weights[0][k])
    assert scores[0] == scores[1]


# ------------------------------------------------------------------ sample, from_torch

def test_sample_seed_and_temperature_arguments():
    model = crnn.GRU(D, H, seed=0)
    for bad in ("x", 1.5, True, [1, 2]):
        msg = raise_msg(lambda: model.sample(3, seed=bad), TypeError)
        assert_mentions(msg, "seed", repr(bad))
    msg = raise_msg(lambda: model.sample(3, seed=-1), ValueError)
    assert_mentions(msg, "seed", -1)
    # numpy scalars are numbers like any other
    np.testing.assert_array_equal(model.sample(4, temperature=np.int64(2), seed=np.int64(1)),
                                  model.sample(4, temperature=2, seed=1))
    np.testing.assert_array_equal(model.sample(4, temperature=np.float32(0.5), seed=1),
                                  model.sample(4, temperature=0.5, seed=1))
    for bad in (0, -1.0, np.nan, np.inf, "hot", None, np.bool_(True)):
        msg = raise_msg(lambda: model.sample(3, temperature=bad), ValueError)
        assert_mentions(msg, "temperature")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_from_torch_refuses_non_finite_weights(bad):
    torch = pytest.importorskip("torch")
    module = torch.nn.LSTM(D, H, batch_first=True)
    with torch.no_grad():
        module.weight_hh_l0[1, 2] = bad
    msg = raise_msg(lambda: crnn.from_torch(module), ValueError)
    assert_mentions(msg, "W0", ["nan", "inf"])


@pytest.mark.parametrize("cell", CELLS)
def test_constructor_seed_type(cell):
    for bad in ("x", 1.5, True, [1]):
        msg = raise_msg(lambda: CLASSES[cell](D, H, K, seed=bad), TypeError)
        assert_mentions(msg, "seed", repr(bad))


# ------------------------------------------------------------------ faults

class Failing(crnn.GRU):
    """A GRU whose `fail_at`-th loss_and_grad call (1-based) raises, as a
    fault deep in a step would (MemoryError, a bug, a dying worker)."""

    fail_at = None
    calls = 0

    def loss_and_grad(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise MemoryError("injected fault")
        return super().loss_and_grad(*args, **kwargs)


def test_a_fault_inside_fit_leaves_the_last_completed_step():
    """Any exception other than Ctrl-C (handled) and NonFiniteError
    (test_trainer.py) propagates out of fit; the model holds the weights of
    the last completed step, the optimizer's step count agrees, and the same
    trainer trains on afterwards."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(12, T, D))
    y = rng.integers(0, K, size=(12, T))
    model = Failing(D, H, K, seed=0)
    model.fail_at = 5                                  # epoch 2, batch 1 of 4
    after = []
    recorder = type("Recorder", (), {"on_batch_end": lambda self, batch, logs:
                                     after.append({k: v.copy() for k, v in
                                                   model.params.items()})})()
    trainer = crnn.Trainer(model, "adam", lr=0.01, batch_size=3, seed=0)
    with pytest.raises(MemoryError, match="injected fault"):
        trainer.fit(X, y, epochs=3, callbacks=[recorder], verbose=0)
    assert len(after) == 4 and trainer.optimizer.steps == 4
    for k in after[-1]:
        np.testing.assert_array_equal(model.params[k], after[-1][k])
    history = trainer.fit(X, y, epochs=1, verbose=0)
    assert len(history.epoch) == 1 and trainer.optimizer.steps == 8
    assert all(np.isfinite(v).all() for v in model.params.values())
