"""Streaming (model.stream, Stream.step/state/reset) and model.sample.

Stepping a sequence through a stream gives forward's outputs and final state
(every cell, 1-2 layers, float and token inputs, float32/64, batch 1 and
batch > 1, with and without an initial state, every output kind); the state
reads and writes in PyTorch's layout (a pair for the LSTM); ``out=`` is
written in place and returned; a step with ``out=`` allocates no numpy
memory; bad inputs raise ValueError/TypeError naming what was expected and
given. ``sample`` is reproducible with a seed, returns ids in range, honours
its prime (checked against greedy decoding with forward) and temperature
(checked against the distribution forward gives), and validates both.
"""

import tracemalloc

import numpy as np
import pytest

import crnn
from cases import D, H, K, T, Case, make_batch, make_model, random_params
from test_errors import assert_mentions, assert_number

ERR = (ValueError, TypeError)
CELLS = ["rnn", "lstm", "gru"]
CLASSES = {"rnn": crnn.RNN, "lstm": crnn.LSTM, "gru": crnn.GRU}
# forward and a batch-of-one stream may reach the same product through
# different BLAS routines (GEMM over all T rows, GEMV for one row): a few ulps
ULPS = {"float64": 4e-15, "float32": 2e-6}


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


def same(a, b, tol, what=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: {a.shape} != {b.shape}"
    assert a.dtype == b.dtype, f"{what}: {a.dtype} != {b.dtype}"
    if tol == 0:
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=what)


def model_and_data(cell, num_layers, tokens, dtype, batch, output="softmax",
                   return_sequences=True, use_h0=False, seed=0):
    case = Case(cell=cell, num_layers=num_layers, tokens=tokens, output=output,
                return_sequences=return_sequences, use_h0=use_h0)
    model = make_model(crnn, case, random_params(case, seed=seed), dtype=dtype)
    X, _, _, h0 = make_batch(case, seed=seed + 1, n=batch)
    return model, X, h0


def stream_through(model, X, state=None, batched=True, use_out=False):
    """Every step's output, stacked to (B, T, K), and the final stream state."""
    B = X.shape[0]
    stream = model.stream(B)
    if state is not None:
        stream.state = state
    outs = []
    for t in range(X.shape[1]):
        x = X[:, t] if batched else X[0, t]
        if use_out:
            out = np.empty((B, stream_width(model)) if batched else (stream_width(model),),
                           model.dtype)
            assert stream.step(x, out=out) is out
        else:
            out = stream.step(x)
        outs.append(out.reshape(B, -1).copy())
    return np.stack(outs, axis=1), stream.state


def stream_width(model):
    return model.output_size if model.output is not None else model.hidden_size


def _matrix():
    out = []
    for cell in CELLS:
        for num_layers in (1, 2):
            for tokens in (False, True):
                for dtype in ("float32", "float64"):
                    for batch in (1, 3):
                        out.append((cell, num_layers, tokens, dtype, batch))
    return out


@pytest.mark.parametrize("cell,num_layers,tokens,dtype,batch", _matrix())
def test_stepping_equals_forward(cell, num_layers, tokens, dtype, batch):
    """Outputs of every step and the final state, to a few ulps: a step's
    products are B-row GEMMs (a GEMV for one row), forward's are T·B-row
    GEMMs, and BLAS may sum them in another order."""
    model, X, _ = model_and_data(cell, num_layers, tokens, dtype, batch)
    Y, state = model.forward(X, return_state=True)
    tol = ULPS[dtype]
    O, s = stream_through(model, X)
    same(O, Y, tol, "outputs")
    assert len(parts(s)) == len(parts(state))
    for name, a, b in zip(("h", "c"), parts(s), parts(state)):
        same(a, b, tol, f"state {name}")
    if batch == 1:
        # a single step (D,) / token id gives a (K,) output
        O1, s1 = stream_through(model, X, batched=False)
        same(O1, O, 0, "unbatched steps")
        for a, b in zip(parts(s1), parts(s)):
            same(a, b, 0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("output", ["softmax", "linear", None])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stepping_from_an_initial_state(cell, output, dtype):
    model, X, h0 = model_and_data(cell, 2, False, dtype, 3, output=output, use_h0=True)
    Y, state = model.forward(X, initial_state=h0, return_state=True)
    O, s = stream_through(model, X, state=h0, use_out=True)
    same(O, Y, ULPS[dtype], "outputs")
    for a, b in zip(parts(s), parts(state)):
        same(a, b, ULPS[dtype], "state")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("output", ["softmax", "linear", None])
def test_many_to_one_model_last_step_is_the_output(cell, output):
    model, X, h0 = model_and_data(cell, 2, True, "float64", 3, output=output,
                                  return_sequences=False, use_h0=True)
    Y, state = model.forward(X, initial_state=h0, return_state=True)
    O, s = stream_through(model, X, state=h0)
    same(O[:, -1], Y, ULPS["float64"], "last step = many-to-one output")
    for a, b in zip(parts(s), parts(state)):
        same(a, b, ULPS["float64"])


@pytest.mark.parametrize("cell", CELLS)
def test_tokens_equal_onehot_steps(cell):
    model, X, _ = model_and_data(cell, 2, True, "float64", 3)
    onehot = np.eye(D)[X]
    O_tok, s_tok = stream_through(model, X)
    O_hot, s_hot = stream_through(model, onehot)
    same(O_tok, O_hot, 1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_state_layout_get_set_reset(cell):
    model, X, h0 = model_and_data(cell, 2, False, "float64", 3, use_h0=True)
    stream = model.stream(3)
    assert stream.batch_size == 3
    zero = stream.state
    if cell == "lstm":
        assert isinstance(zero, tuple) and len(zero) == 2
    for p in parts(zero):
        assert p.shape == (2, 3, H) and p.dtype == np.float64
        assert np.all(p == 0)
    # set, read back, and the state is a copy (writing into it changes nothing)
    stream.state = h0
    got = stream.state
    for a, b in zip(parts(got), parts(h0)):
        np.testing.assert_array_equal(a, b)
        a[...] = 7.0
    for a, b in zip(parts(stream.state), parts(h0)):
        np.testing.assert_array_equal(a, b)
    # the state set from a user array is a copy too
    saved = [p.copy() for p in parts(h0)]
    for p in parts(h0):
        p += 1.0
    for a, b in zip(parts(stream.state), saved):
        np.testing.assert_array_equal(a, b)
    # the state moves with the steps, and reset zeroes it
    stream.step(X[:, 0])
    assert not np.allclose(parts(stream.state)[0], parts(got)[0])
    stream.reset()
    for p in parts(stream.state):
        assert np.all(p == 0)
    # after reset the stream behaves like a new one
    O, s = stream_through(model, X)
    outs = np.stack([stream.step(X[:, t]).copy() for t in range(T)], axis=1)
    same(outs, O, 0)
    for a, b in zip(parts(stream.state), parts(s)):
        same(a, b, 0)


@pytest.mark.parametrize("cell", CELLS)
def test_state_carries_across_chunks(cell):
    """Two halves streamed, with the state saved and restored on a new stream,
    equal the whole sequence: the stream's state is the whole state."""
    model, X, _ = model_and_data(cell, 2, False, "float64", 3)
    Y = model.forward(X)
    first = model.stream(3)
    a = [first.step(X[:, t]).copy() for t in range(2)]
    second = model.stream(3)
    second.state = first.state
    b = [second.step(X[:, t]).copy() for t in range(2, T)]
    same(np.stack(a + b, axis=1), Y, ULPS["float64"])


@pytest.mark.parametrize("cell", CELLS)
def test_stream_sees_in_place_parameter_updates(cell):
    model, X, _ = model_and_data(cell, 1, False, "float64", 3)
    stream = model.stream(3)
    model.params["W0"][0, 0] += 0.5
    model.params["c"][:] -= 0.25
    O = np.stack([stream.step(X[:, t]).copy() for t in range(T)], axis=1)
    same(O, model.forward(X), ULPS["float64"])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch", [1, 3])
def test_out_is_written_and_returned(cell, batch):
    model, X, _ = model_and_data(cell, 2, True, "float32", batch)
    stream = model.stream(batch)
    ref_stream = model.stream(batch)
    out = np.full((batch, K), np.nan, np.float32)
    for t in range(T):
        result = stream.step(X[:, t], out=out)
        assert result is out
        np.testing.assert_array_equal(out, ref_stream.step(X[:, t]))
    if batch == 1:
        out1 = np.full(K, np.nan, np.float32)
        assert stream.step(int(X[0, 0]), out=out1) is out1
        assert np.all(np.isfinite(out1))


@pytest.mark.parametrize("cell", CELLS)
def test_out_validation(cell):
    model = CLASSES[cell](D, H, K, dtype="float64", seed=0)
    stream = model.stream(2)
    x = np.zeros((2, D))
    before = stream.state
    for bad in (np.empty((2, K + 1)), np.empty((2, K), np.float32), np.empty(2 * K),
                np.empty((K, 2)).T, np.empty((2, 2 * K))[:, ::2], "out"):
        with pytest.raises(ValueError) as exc:
            stream.step(x, out=bad)
        assert_mentions(str(exc.value), (2, K))
    ro = np.empty((2, K))
    ro.setflags(write=False)
    with pytest.raises(ValueError):
        stream.step(x, out=ro)
    # a refused step does not move the state
    for a, b in zip(parts(stream.state), parts(before)):
        np.testing.assert_array_equal(a, b)


def _peak_over_steps(step, count):
    step()
    step()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    for _ in range(count):
        step()
    current, peak = tracemalloc.get_traced_memory()
    return current - base, peak - base


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize("batch", [1, 8])
def test_step_with_out_allocates_no_numpy_memory(cell, tokens, batch):
    """Sizes are large enough that any per-step buffer (an output, gates, a
    state, an input copy) would show as tens of kilobytes of traced peak."""
    dim, hidden, classes = (48, 256, 256) if batch == 1 else (32, 64, 64)
    model = CLASSES[cell](dim, hidden, classes, num_layers=2, dtype="float64", seed=0)
    stream = model.stream(batch)
    rng = np.random.default_rng(0)
    if tokens:
        x = rng.integers(0, dim, size=batch) if batch > 1 else int(rng.integers(0, dim))
    else:
        x = rng.normal(size=(batch, dim)) if batch > 1 else rng.normal(size=dim)
    out = np.empty((batch, classes) if batch > 1 else classes)
    smallest_buffer = 8 * min(batch * hidden, out.size)
    tracemalloc.start()
    try:
        grown, peak = _peak_over_steps(lambda: stream.step(x, out=out), 200)
        # the measurement works: without out=, each step allocates its output
        _, peak_alloc = _peak_over_steps(lambda: stream.step(x), 20)
    finally:
        tracemalloc.stop()
    assert peak_alloc >= out.nbytes
    assert peak < min(4096, smallest_buffer // 2), (
        f"stepping with out= allocated: traced peak grew by {peak} bytes")
    assert grown < 1024, f"{grown} bytes still allocated after 200 steps"


# ------------------------------------------------------------------ bad input

@pytest.fixture(params=CELLS)
def streams(request):
    model = CLASSES[request.param](D, H, K, dtype="float64", seed=0)
    return model, model.stream(1), model.stream(3)


def _refused(stream, x, types=ERR):
    before = [p.copy() for p in parts(stream.state)]
    with pytest.raises(types) as exc:
        stream.step(x)
    for a, b in zip(parts(stream.state), before):
        np.testing.assert_array_equal(a, b)
    msg = str(exc.value)
    assert msg.strip()
    return msg


def test_wrong_feature_count(streams):
    _, one, three = streams
    msg = _refused(one, np.zeros(D + 1), ValueError)
    assert_number(msg, D + 1)
    assert_number(msg, D)
    msg = _refused(three, np.zeros((3, D + 2)), ValueError)
    assert_mentions(msg, (3, D + 2), (3, D))


def test_wrong_batch(streams):
    _, one, three = streams
    msg = _refused(three, np.zeros((2, D)), ValueError)
    assert_mentions(msg, (2, D), (3, D))
    # one vector or one token is not a step of a batch of 3
    msg = _refused(three, np.zeros(D), ValueError)
    assert_mentions(msg, (3, D))
    msg = _refused(three, np.array([0, 1]), ValueError)
    assert_number(msg, 3)
    assert_number(msg, 2)
    msg = _refused(one, np.zeros((2, D)), ValueError)
    assert_mentions(msg, (2, D))


@pytest.mark.parametrize("token", [1, np.int64(1), np.array(1)])
def test_one_token_is_not_a_step_of_a_batch(streams, token):
    """A stream of 3 rows needs 3 token ids; one id is refused with a
    ValueError naming the 3 expected (not an IndexError)."""
    _, _, three = streams
    msg = _refused(three, token, ValueError)
    assert_number(msg, 3)


@pytest.mark.parametrize("bad", [D, D + 5, -1])
def test_token_out_of_range(streams, bad):
    _, one, three = streams
    msg = _refused(one, bad, ValueError)
    assert_mentions(msg, bad)
    assert_number(msg, D)
    msg = _refused(three, np.array([0, bad, 1]), ValueError)
    assert_mentions(msg, bad)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features(streams, bad):
    _, one, three = streams
    x = np.zeros(D)
    x[1] = bad
    assert_mentions(_refused(one, x, ValueError), ["nan", "inf", "finite"])
    X = np.zeros((3, D))
    X[2, 0] = bad
    assert_mentions(_refused(three, X, ValueError), ["nan", "inf", "finite"])


@pytest.mark.parametrize("bad", [np.zeros(D, complex), np.array(["a"] * D), True,
                                 np.zeros(D, bool), None, np.zeros((1, 1, D))])
def test_bad_kinds(streams, bad):
    _, one, _ = streams
    _refused(one, bad)


def test_bad_dtype_named(streams):
    _, one, _ = streams
    assert_mentions(_refused(one, np.zeros(D, complex), TypeError), "complex")


def test_state_setter_validation(streams):
    model, one, three = streams
    lstm = isinstance(model, crnn.LSTM)
    good = np.zeros((1, 3, H))
    bad_shape = np.zeros((1, 2, H))
    before = [p.copy() for p in parts(three.state)]
    if lstm:
        with pytest.raises(TypeError) as exc:
            three.state = good
        assert_mentions(str(exc.value), "pair")
        with pytest.raises(ERR):
            three.state = (good, good, good)
        with pytest.raises(ValueError) as exc:
            three.state = (good, bad_shape)
        assert_mentions(str(exc.value), (1, 2, H), (1, 3, H))
        nan = good.copy()
        nan[0, 0, 0] = np.nan
        with pytest.raises(ValueError):
            three.state = (nan, good)
        with pytest.raises(TypeError):
            three.state = (good, good.astype(complex))
    else:
        with pytest.raises(ValueError) as exc:
            three.state = bad_shape
        assert_mentions(str(exc.value), (1, 2, H), (1, 3, H))
        with pytest.raises(ERR):
            three.state = (good, good)
        nan = good.copy()
        nan[0, 1, 2] = np.inf
        with pytest.raises(ValueError):
            three.state = nan
        with pytest.raises(TypeError):
            three.state = good.astype(complex)
    for a, b in zip(parts(three.state), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_refuses_to_stream(cell):
    model = CLASSES[cell](D, H, K, bidirectional=True, seed=0)
    with pytest.raises(ValueError) as exc:
        model.stream(1)
    assert_mentions(str(exc.value), "bidirectional")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad,types", [(0, ValueError), (-2, ValueError), (1.5, ERR),
                                       ("2", ERR)])
def test_bad_batch_size(cell, bad, types):
    model = CLASSES[cell](D, H, K, seed=0)
    with pytest.raises(types) as exc:
        model.stream(bad)
    assert_mentions(str(exc.value), "batch_size")


# ------------------------------------------------------------------ sample

def token_model(cell, num_layers=2, dtype="float64", seed=0, scale=1.5):
    """A token model (softmax over the input vocabulary) with peaked outputs."""
    vocab = 7
    model = CLASSES[cell](vocab, 8, num_layers=num_layers, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 100)
    model.set_params({k: rng.uniform(-scale, scale, size=v.shape)
                      for k, v in model.params.items()})
    return model


@pytest.mark.parametrize("cell", CELLS)
def test_sample_reproducible_and_in_range(cell):
    model = token_model(cell)
    before = {k: v.copy() for k, v in model.params.items()}
    a = model.sample(60, seed=3)
    b = model.sample(60, seed=3)
    c = model.sample(60, seed=4)
    assert isinstance(a, np.ndarray) and a.shape == (60,)
    assert a.dtype.kind in "iu"
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() < model.input_size
    assert len(set(a.tolist())) > 1
    with_prime = model.sample(60, prime=[1, 2, 3], seed=3)
    np.testing.assert_array_equal(with_prime, model.sample(60, prime=[1, 2, 3], seed=3))
    assert with_prime.min() >= 0 and with_prime.max() < model.input_size
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])


@pytest.mark.parametrize("cell", CELLS)
def test_sample_zero_and_one(cell):
    model = token_model(cell)
    empty = model.sample(0, seed=1)
    assert empty.shape == (0,)
    assert model.sample(1, prime=[2], seed=1).shape == (1,)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("prime", [None, [4], [0, 5, 2, 2]])
def test_sample_greedy_follows_forward(cell, prime):
    """At a tiny temperature sampling is greedy decoding: every generated token
    is forward's most likely next token given the prime and what came before.
    (Without a prime the first token has no context and is not checked.)"""
    model = token_model(cell)
    n = 12
    gen = model.sample(n, prime=prime, temperature=1e-4, seed=0)
    context = [] if prime is None else list(prime)
    seq = np.array(context + gen.tolist())[None, :]
    Y = model.forward(seq)[0]
    start = 0 if prime else 1
    for i in range(start, n):
        pos = len(context) + i - 1          # the row that predicts gen[i]
        assert gen[i] == int(np.argmax(Y[pos])), (i, Y[pos])


@pytest.mark.parametrize("cell", CELLS)
def test_sample_prime_changes_the_continuation(cell):
    model = token_model(cell)
    outs = {tuple(model.sample(10, prime=[p], temperature=1e-4, seed=0)) for p in range(7)}
    assert len(outs) > 1


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_sample_distribution_matches_forward(cell, temperature):
    """The first sampled token after a prime follows forward's probabilities,
    sharpened or flattened by the temperature: p^(1/τ), renormalised."""
    model = token_model(cell, num_layers=1, scale=0.8)
    prime = [3, 1]
    p = model.forward(np.array([prime]))[0, -1]
    q = p ** (1.0 / temperature)
    q /= q.sum()
    draws = np.array([model.sample(1, prime=prime, temperature=temperature, seed=s)[0]
                      for s in range(3000)])
    freq = np.bincount(draws, minlength=model.input_size) / len(draws)
    # 5 standard deviations of a frequency over 3000 draws
    tol = 5 * np.sqrt(q * (1 - q) / len(draws)) + 1e-3
    assert np.all(np.abs(freq - q) <= tol), (freq, q)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad", [0, 0.0, -1.0, np.nan, np.inf, "1.0", None, True])
def test_sample_temperature_validation(cell, bad):
    model = token_model(cell)
    with pytest.raises(ERR) as exc:
        model.sample(5, temperature=bad, seed=0)
    assert_mentions(str(exc.value), "temperature")


@pytest.mark.parametrize("cell", CELLS)
def test_sample_prime_validation(cell):
    model = token_model(cell)
    V = model.input_size
    for bad in ([V], [0, -1], [], [[1, 2]], [0.5, 1.0]):
        with pytest.raises(ERR):
            model.sample(3, prime=bad, seed=0)
    with pytest.raises(ValueError) as exc:
        model.sample(3, prime=[1, V + 3], seed=0)
    assert_number(str(exc.value), V + 3)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad", [-1, 2.5, "3"])
def test_sample_n_validation(cell, bad):
    model = token_model(cell)
    with pytest.raises(ERR) as exc:
        model.sample(bad, seed=0)
    assert_mentions(str(exc.value), "n")


@pytest.mark.parametrize("cell", CELLS)
def test_sample_needs_a_token_model(cell):
    cls = CLASSES[cell]
    for model in (cls(D, H, K, seed=0),                      # output_size != input_size
                  cls(D, H, D, output="linear", seed=0),
                  cls(D, H, output=None, seed=0)):
        with pytest.raises(ValueError) as exc:
            model.sample(3, seed=0)
        assert_mentions(str(exc.value), "softmax")
    with pytest.raises(ValueError):
        cls(D, H, bidirectional=True, seed=0).sample(3, seed=0)
