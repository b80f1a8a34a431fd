"""Property-based tests (hypothesis): random shapes, lengths, dtypes and memory
layouts, for every cell, 1-2 layers, both directions, every output kind.

1. Valid input in any layout: no crash, and forward (outputs and final
   state), the loss, every gradient and the initial-state gradient equal the
   plain-numpy reference (tests/reference.py).
2. Streaming the same sequences one step at a time (random layouts per step)
   equals forward.
3. Garbage input (random dtypes, ranks, shapes, lengths, labels, NaN/inf,
   broken initial states): every call either succeeds or raises ValueError /
   TypeError with a message, and never changes the model.

Sizes are tiny (the reference is a Python loop) and example counts bounded,
so the file runs in well under a minute.  The examples are derandomized (the
same on every run: CI stays reproducible); to explore, run with
CRNN_PROPERTY_RANDOM=1 and CRNN_PROPERTY_SCALE=10 (ten times the examples).
"""

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import crnn  # noqa: E402
from reference import param_shapes, reference  # noqa: E402

CLASSES = {"rnn": crnn.RNN, "lstm": crnn.LSTM, "gru": crnn.GRU}
SCALE = float(os.environ.get("CRNN_PROPERTY_SCALE", "1"))
SETTINGS = dict(deadline=None, print_blob=True,
                derandomize=os.environ.get("CRNN_PROPERTY_RANDOM") != "1",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# the reference's sigmoid overflows harmlessly (exp(-z) = inf gives 0)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def examples(n):
    return max(1, int(n * SCALE))


# ------------------------------------------------------------------ layouts

def _unaligned(a):
    raw = bytearray(a.nbytes + 1)
    out = np.frombuffer(raw, dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
    out[...] = a
    return out


def _readonly(a):
    b = np.array(a)
    b.setflags(write=False)
    return b


def _strided(a):
    """The same values as a view with gaps between elements on every axis."""
    if a.ndim == 0:
        return a
    big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def _transposed(a):
    """A view of a C array laid out in the reverse axis order (for X: the
    time-major (T, N, D) array a user often has, seen as (N, T, D))."""
    return np.ascontiguousarray(a.T).T


LAYOUTS = {
    "c": lambda a: np.array(a),
    "fortran": np.asfortranarray,
    "transposed": _transposed,
    "strided": _strided,
    "negative": lambda a: np.flip(np.flip(a).copy()),
    "readonly": _readonly,
    "byteswapped": lambda a: a.astype(a.dtype.newbyteorder()),
    "unaligned": lambda a: _unaligned(np.ascontiguousarray(a)),
}
layouts = st.lists(st.sampled_from(sorted(LAYOUTS)), min_size=1, max_size=2)


def apply(names, array):
    array = np.asarray(array)
    for name in names:
        array = LAYOUTS[name](array)
    return array


# ------------------------------------------------------------------ configurations

@st.composite
def configs(draw):
    cell = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    cfg = dict(
        cell=cell,
        nonlinearity=draw(st.sampled_from(["tanh", "relu"])) if cell == "rnn" else "tanh",
        num_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
        output=draw(st.sampled_from(["softmax", "linear", None])),
        return_sequences=draw(st.booleans()),
        dtype=draw(st.sampled_from(["float32", "float64"])),
        D=draw(st.integers(1, 4)),
        H=draw(st.integers(1, 4)),
        K=draw(st.integers(1, 3)),
        N=draw(st.integers(1, 4)),
        T=draw(st.integers(1, 5)),
    )
    cfg["dirs"] = 2 if cfg["bidirectional"] else 1
    return cfg


def build(cfg, seed):
    rng = np.random.default_rng(seed)
    K = None if cfg["output"] is None else cfg["K"]
    shapes = param_shapes(cfg["D"], cfg["H"], K, cfg["num_layers"], cfg["bidirectional"],
                          cfg["output"], cell=cfg["cell"])
    params = {k: rng.uniform(-0.8, 0.8, size=s) for k, s in shapes.items()}
    if cfg["dtype"] == "float32":
        params = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
    kwargs = dict(num_layers=cfg["num_layers"], bidirectional=cfg["bidirectional"],
                  output=cfg["output"], return_sequences=cfg["return_sequences"],
                  dtype=cfg["dtype"], seed=0)
    if cfg["cell"] == "rnn":
        kwargs["nonlinearity"] = cfg["nonlinearity"]
    model = CLASSES[cfg["cell"]](cfg["D"], cfg["H"], K, **kwargs)
    model.set_params(params)
    return model, params


def ref_kwargs(cfg):
    kw = dict(cell=cfg["cell"], num_layers=cfg["num_layers"],
              bidirectional=cfg["bidirectional"], output=cfg["output"],
              return_sequences=cfg["return_sequences"])
    if cfg["cell"] == "rnn":
        kw["nonlinearity"] = cfg["nonlinearity"]
    return kw


def tolerance(cfg):
    return dict(rtol=1e-9, atol=1e-10) if cfg["dtype"] == "float64" else \
        dict(rtol=2e-3, atol=2e-4)


def close(actual, expected, cfg, what):
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple), what
        for a, e, name in zip(actual, expected, "hc"):
            close(a, e, cfg, f"{what} {name}")
        return
    actual = np.asarray(actual)
    assert actual.shape == np.shape(expected), (what, actual.shape, np.shape(expected))
    assert np.isfinite(actual).all(), what
    np.testing.assert_allclose(actual, expected, err_msg=what, **tolerance(cfg))


FEATURE_DTYPES = ["float16", "float32", "float64", "int8", "int32", "uint16"]
TOKEN_DTYPES = ["int8", "uint8", "int16", "int32", "int64", "uint64"]


@st.composite
def batches(draw, cfg):
    """(X, y, lengths, h0) in plain layout, plus the layouts to apply, and the
    float64 values the reference must see (X cast to the model's dtype)."""
    N, T, D, H, K = (cfg[k] for k in "NTDHK")
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["features", "tokens", "list"]))
    ragged = draw(st.booleans())
    lengths = rng.integers(1, T + 1, size=N) if ragged else None
    if kind == "tokens" or (kind == "list" and draw(st.booleans())):
        dtype = draw(st.sampled_from(TOKEN_DTYPES))
        X = rng.integers(0, D, size=(N, T)).astype(dtype)
        X_ref = X.astype(np.int64)
    else:
        dtype = draw(st.sampled_from(FEATURE_DTYPES))
        scale = 3.0 if dtype.startswith("float") else 1.0
        X = (rng.normal(size=(N, T, D)) * scale)
        X = np.clip(np.round(X), -3, 3).astype(dtype) if not dtype.startswith("float") \
            else X.astype(dtype)
        X_ref = X.astype(cfg["dtype"]).astype(np.float64)
    if kind == "list":
        lengths_list = lengths if lengths is not None else np.full(N, T)
        X = [X[i, :lengths_list[i]] for i in range(N)]
        X_ref = [X_ref[i, :lengths_list[i]] for i in range(N)]
    if cfg["output"] == "softmax":
        y = rng.integers(0, K, size=(N, T) if cfg["return_sequences"] else (N,))
        y = y.astype(draw(st.sampled_from(["int8", "int64", "uint32", "float64"])))
        y_ref = y.astype(np.int64)
    elif cfg["output"] == "linear":
        shape = (N, T, K) if cfg["return_sequences"] else (N, K)
        y = rng.normal(size=shape).astype(draw(st.sampled_from(["float32", "float64"])))
        y_ref = y.astype(cfg["dtype"]).astype(np.float64)
    else:
        y = y_ref = None
    if kind == "list" and y is not None and cfg["return_sequences"]:
        lens = lengths if lengths is not None else np.full(N, T)
        # the model pads a list to its longest sequence, which may be < T
        y, y_ref = y[:, :lens.max()], y_ref[:, :lens.max()]
        if draw(st.booleans()):
            y = [y[i, :lens[i]] for i in range(N)]     # targets as a list too
    h0 = None
    if draw(st.booleans()):
        h0 = rng.normal(scale=0.5, size=(cfg["num_layers"] * cfg["dirs"], N, H))
        h0 = h0.astype(cfg["dtype"]).astype(np.float64)
        if cfg["cell"] == "lstm":
            c0 = rng.normal(scale=0.5, size=h0.shape).astype(cfg["dtype"]).astype(np.float64)
            h0 = (h0, c0)
    if lengths is not None and kind != "list":
        lengths = lengths.astype(draw(st.sampled_from(["int8", "int32", "int64", "uint64"])))
    else:
        lengths = None if kind == "list" else lengths
    return dict(X=X, X_ref=X_ref, y=y, y_ref=y_ref, lengths=lengths, h0=h0,
                layout_X=draw(layouts), layout_y=draw(layouts),
                layout_lengths=draw(layouts), layout_h0=draw(layouts))


def laid_out(batch):
    X = batch["X"]
    X = [apply(batch["layout_X"], s) for s in X] if isinstance(X, list) \
        else apply(batch["layout_X"], X)
    y = batch["y"]
    if isinstance(y, list):
        y = [apply(batch["layout_y"], s) for s in y]
    elif y is not None:
        y = apply(batch["layout_y"], y)
    lengths = None if batch["lengths"] is None else apply(batch["layout_lengths"],
                                                          batch["lengths"])
    h0 = batch["h0"]
    if isinstance(h0, tuple):
        h0 = tuple(apply(batch["layout_h0"], p) for p in h0)
    elif h0 is not None:
        h0 = apply(batch["layout_h0"], h0)
    return X, y, lengths, h0


# ------------------------------------------------------------------ 1. equal to the reference

@settings(max_examples=examples(300), **SETTINGS)
@given(data=st.data())
def test_any_valid_input_in_any_layout_matches_the_reference(data):
    cfg = data.draw(configs(), label="config")
    batch = data.draw(batches(cfg), label="batch")
    model, params = build(cfg, seed=data.draw(st.integers(0, 1000), label="param seed"))
    X, y, lengths, h0 = laid_out(batch)
    ref_lengths = None if batch["lengths"] is None else batch["lengths"].astype(np.int64)
    ref = reference(params, batch["X_ref"], batch["y_ref"], ref_lengths, batch["h0"],
                    **ref_kwargs(cfg))

    Y, state = model.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    assert Y.dtype == np.dtype(cfg["dtype"])
    close(Y, ref.Y, cfg, "forward output")
    close(state, ref.state, cfg, "final state")
    if cfg["output"] is None:
        return

    loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                              return_state_grad=True)
    assert isinstance(loss, float)
    close(loss, ref.loss, cfg, "loss")
    assert set(grads) == set(ref.grads)
    for k in grads:
        assert grads[k].dtype == np.dtype(cfg["dtype"]), k
        close(grads[k], ref.grads[k], cfg, f"gradient {k}")
    if h0 is not None:
        close(dstate, ref.dstate, cfg, "initial-state gradient")
    plain = model.forward(X, lengths=lengths)           # no initial state, like predict
    predicted = model.predict(X, lengths=lengths)
    if cfg["output"] == "linear":
        np.testing.assert_array_equal(predicted, plain)
    else:
        real = plain.sum(axis=-1) != 0                  # padded rows are all zero
        np.testing.assert_array_equal(predicted[real], plain.argmax(axis=-1)[real])
        assert (predicted[~real] == -1).all()


# ------------------------------------------------------------------ 2. streaming

@settings(max_examples=examples(100), **SETTINGS)
@given(data=st.data())
def test_streaming_in_any_layout_equals_forward(data):
    cfg = data.draw(configs(), label="config")
    cfg.update(bidirectional=False, dirs=1, return_sequences=True)
    model, _ = build(cfg, seed=1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    N, T, D, H = cfg["N"], cfg["T"], cfg["D"], cfg["H"]
    tokens = data.draw(st.booleans(), label="tokens")
    X = (rng.integers(0, D, size=(N, T)) if tokens
         else rng.normal(size=(N, T, D)).astype(cfg["dtype"]))
    h0 = rng.normal(scale=0.5, size=(cfg["num_layers"], N, H)).astype(cfg["dtype"])
    state = (h0, h0[::-1].copy()) if cfg["cell"] == "lstm" else h0
    expected, final = model.forward(X, initial_state=state, return_state=True)
    stream = model.stream(N)
    stream.state = (tuple(apply(data.draw(layouts), p) for p in state)
                    if cfg["cell"] == "lstm" else apply(data.draw(layouts), state))
    for t in range(T):
        step = stream.step(apply(data.draw(layouts, label=f"layout {t}"), X[:, t]))
        close(step, expected[:, t], cfg, f"step {t}")
    close(stream.state, final, cfg, "stream state")


# ------------------------------------------------------------------ 3. garbage in

ANY_DTYPES = ["float16", "float32", "float64", "int8", "int64", "uint64", "bool",
              "complex64", "complex128", "object", "U1", "S2", "datetime64[s]", "timedelta64[s]"]


@st.composite
def garbage_arrays(draw, max_rank=4):
    dtype = np.dtype(draw(st.sampled_from(ANY_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=max_rank)))
    seed = draw(st.integers(0, 2**16))
    values = np.random.default_rng(seed).normal(scale=5, size=shape)
    special = draw(st.sampled_from([None, np.nan, np.inf, -np.inf, 1e300, -1, 10**6]))
    if special is not None and values.size:
        values.flat[draw(st.integers(0, values.size - 1))] = special
    if dtype.kind in "iub":
        with np.errstate(invalid="ignore", over="ignore"):
            array = np.nan_to_num(values, nan=0, posinf=2**20, neginf=-2**20).astype(dtype)
    elif dtype.kind in "Mm":
        array = np.zeros(shape, dtype=dtype)
    else:
        with np.errstate(over="ignore"):
            array = values.astype(dtype)
    return apply(draw(layouts), array) if array.dtype.kind not in "OUSMm" else array


def anything():
    return st.one_of(
        garbage_arrays(),
        st.none(),
        st.integers(-3, 10),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=3),
        st.lists(garbage_arrays(max_rank=2), max_size=3),
        st.lists(st.integers(-2, 6), max_size=4),
    )


@settings(max_examples=examples(500), **SETTINGS)
@given(data=st.data())
def test_garbage_input_raises_value_or_type_error_and_changes_nothing(data):
    cell = data.draw(st.sampled_from(["rnn", "lstm", "gru"]), label="cell")
    model = CLASSES[cell](3, 2, 2, num_layers=data.draw(st.integers(1, 2)),
                          bidirectional=data.draw(st.booleans()),
                          output=data.draw(st.sampled_from(["softmax", "linear"])),
                          return_sequences=data.draw(st.booleans()), seed=0)
    before = {k: v.copy() for k, v in model.params.items()}
    X = data.draw(anything(), label="X")
    y = data.draw(anything(), label="y")
    lengths = data.draw(st.one_of(st.none(), anything()), label="lengths")
    state = data.draw(st.one_of(st.none(), anything(),
                                st.tuples(anything(), anything())), label="initial_state")
    calls = [
        lambda: model.forward(X, lengths=lengths, initial_state=state),
        lambda: model.loss_and_grad(X, y, lengths=lengths, initial_state=state),
        lambda: model.predict(X, lengths=lengths),
    ]
    for name, call in zip(("forward", "loss_and_grad", "predict"), calls):
        try:
            result = call()
        except (ValueError, TypeError) as error:
            assert str(error).strip(), "an error needs a message"
            event(f"{name}: {type(error).__name__}")
        else:
            event(f"{name}: accepted")
            outputs = result[0] if isinstance(result, tuple) else result
            assert np.isfinite(np.asarray(outputs, dtype=np.float64)).all()
    if not model.bidirectional:
        stream = model.stream(data.draw(st.integers(1, 3), label="batch_size"))
        try:
            stream.step(X)
        except (ValueError, TypeError) as error:
            assert str(error).strip()
        try:
            stream.state = state
        except (ValueError, TypeError) as error:
            assert str(error).strip()
        for part in (stream.state if isinstance(stream.state, tuple) else (stream.state,)):
            assert np.isfinite(part).all()
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])


# ------------------------------------------------------------------ 4. one thing wrong

CORRUPTIONS = ["x_ndim", "x_features", "x_nonfinite", "x_dtype", "tokens_out_of_range",
               "lengths", "labels", "y_shape", "state_shape", "state_nonfinite", "empty"]


@settings(max_examples=examples(300), **SETTINGS)
@given(data=st.data())
def test_one_corruption_of_a_valid_batch(data):
    """A valid batch with exactly one thing wrong: refused with ValueError or
    TypeError when the wrong thing is at a real position; accepted, with the
    clean batch's results, when it only touches padding (ignored by
    definition)."""
    cfg = data.draw(configs(), label="config")
    if cfg["output"] is None:
        cfg["output"] = "softmax"
    model, _ = build(cfg, seed=0)
    N, T, D, H, K = (cfg[k] for k in "NTDHK")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    tokens = data.draw(st.booleans(), label="tokens")
    X = rng.integers(0, D, size=(N, T)) if tokens else rng.normal(size=(N, T, D))
    lengths = rng.integers(1, T + 1, size=N)
    if cfg["output"] == "softmax":
        y = rng.integers(0, K, size=(N, T) if cfg["return_sequences"] else (N,))
    else:
        y = rng.normal(size=(N, T, K) if cfg["return_sequences"] else (N, K))
    lanes = cfg["num_layers"] * cfg["dirs"]
    h0 = rng.normal(size=(lanes, N, H))
    state = (h0, h0.copy()) if cfg["cell"] == "lstm" else h0
    clean = (X, y, lengths, state)

    corruption = data.draw(st.sampled_from(CORRUPTIONS), label="corruption")
    n, t = int(rng.integers(N)), int(rng.integers(T))
    padding = t >= lengths[n]                      # the position touched is padding
    must_raise = True
    X, y, lengths, state = (np.array(X), np.array(y), lengths.copy(),
                            tuple(np.array(p) for p in state) if isinstance(state, tuple)
                            else np.array(state))
    if corruption == "x_ndim":
        X = data.draw(st.sampled_from([X[..., None, None], X[0], X.reshape(-1)]))
    elif corruption == "x_features":
        if tokens:
            X = np.eye(D + 1)[X]                   # one-hot of the wrong width
        else:
            X = np.concatenate([X, X[..., :1]], axis=-1)
    elif corruption == "x_nonfinite":
        if tokens:                                  # features, for both batches
            X = np.eye(D)[X]
            clean = (X.copy(),) + clean[1:]
        bad = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]
                                        + ([1e300] if cfg["dtype"] == "float32" else [])))
        X[n, t, int(rng.integers(D))] = bad
        must_raise = not padding
    elif corruption == "x_dtype":
        X = X.astype(data.draw(st.sampled_from(["bool", "complex128", "object", "U3"])))
    elif corruption == "tokens_out_of_range":
        if not tokens:                              # tokens, for both batches
            X = rng.integers(0, D, size=(N, T))
            clean = (X.copy(),) + clean[1:]
        X[n, t] = data.draw(st.sampled_from([D, D + 7, -1]))
        must_raise = not padding
    elif corruption == "lengths":
        lengths = data.draw(st.sampled_from([
            np.where(np.arange(N) == n, 0, lengths), np.where(np.arange(N) == n, -1, lengths),
            np.where(np.arange(N) == n, T + 1, lengths), lengths.astype(np.float64),
            np.append(lengths, 1), lengths[:, None], lengths.astype(bool)]))
    elif corruption == "labels":
        if cfg["output"] == "linear":
            y = y.copy()
            y.flat[int(rng.integers(y.size))] = np.nan
            if cfg["return_sequences"]:
                # a NaN target in padding is ignored like any padded target
                position = np.unravel_index(np.flatnonzero(np.isnan(y))[0], y.shape)
                must_raise = position[1] < lengths[position[0]]
        else:
            y = y.astype(np.float64)
            bad = data.draw(st.sampled_from([K, -1, 0.5, np.nan]))
            if cfg["return_sequences"]:
                y[n, t] = bad
                must_raise = not padding
            else:
                y[n] = bad
    elif corruption == "y_shape":
        y = data.draw(st.sampled_from([y[:-1] if N > 1 else y[..., None, None], y[..., None, None],
                                       y.reshape(-1)[:-1] if y.size > 1 else y[None, None]]))
    elif corruption == "state_shape":
        grow = data.draw(st.sampled_from([(1, 0, 0), (0, 1, 0), (0, 0, 1)]))
        shape = (lanes + grow[0], N + grow[1], H + grow[2])
        state = (np.zeros(shape), np.zeros(shape)) if cfg["cell"] == "lstm" else np.zeros(shape)
    elif corruption == "state_nonfinite":
        part = state[-1] if isinstance(state, tuple) else state
        part[int(rng.integers(lanes)), n, int(rng.integers(H))] = np.nan
    elif corruption == "empty":
        X = data.draw(st.sampled_from([X[:0], X[:, :0]]))
    event(f"{corruption}: {'refused' if must_raise else 'in padding'}")

    before = {k: v.copy() for k, v in model.params.items()}
    calls = {
        "forward": lambda: model.forward(X, lengths=lengths, initial_state=state),
        "loss_and_grad": lambda: model.loss_and_grad(X, y, lengths=lengths,
                                                     initial_state=state),
    }
    for name, call in calls.items():
        if corruption in ("labels", "y_shape") and name == "forward":
            continue
        if must_raise:
            with pytest.raises((ValueError, TypeError)) as error:
                call()
            assert str(error.value).strip()
        else:
            X0, y0, lengths0, state0 = clean
            expected = (model.forward(X0, lengths=lengths0, initial_state=state0)
                        if name == "forward" else
                        model.loss_and_grad(X0, y0, lengths=lengths0, initial_state=state0)[0])
            got = call()
            got = got if name == "forward" else got[0]
            np.testing.assert_array_equal(got, expected)
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])
