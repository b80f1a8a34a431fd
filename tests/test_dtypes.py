"""dtypes, the params dict, seeding and set_params, for every cell.

For crnn.RNN, crnn.LSTM and crnn.GRU: with the same (float32-representable)
weights, a float32 model agrees with a float64 one to about 1e-5 relative on
outputs, final states (h and, for the LSTM, c), loss, every gradient and the
initial-state gradients; results come back in the model's dtype; params are
C-contiguous arrays of the model's dtype; the same seed gives the same model;
set_params checks keys (each cell's own: G·H rows, the GRU's bn{l}), shapes
and dtype and leaves the model untouched when it refuses.
"""

import numpy as np
import pytest

import crnn
from cases import D, H, K, Case, case_matrix, make_batch, make_model, random_params
from reference import param_shapes

F32_RTOL = 1e-5
CELLS = ["rnn", "lstm", "gru"]
GATED = ["lstm", "gru"]
CLASSES = {"rnn": crnn.RNN, "lstm": crnn.LSTM, "gru": crnn.GRU}


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


F32_CASES = case_matrix(tokens=False, use_h0=True, ragged=True, nonlinearity="tanh") + [
    Case("relu", "softmax", True, 2, True, tokens=True, ragged=True, use_h0=False),
    Case("relu", "linear", False, 1, False, tokens=False, ragged=False, use_h0=True),
] + [c for cell in GATED for c in
     case_matrix(cell=cell, tokens=False, use_h0=True, ragged=True)] + [
    Case(cell=cell, output="softmax", return_sequences=True, num_layers=2, bidirectional=True,
         tokens=True, ragged=True, use_h0=False) for cell in GATED] + [
    Case(cell=cell, output="linear", return_sequences=False, num_layers=1,
         bidirectional=False, tokens=True, ragged=False, use_h0=True) for cell in GATED] + [
    Case(cell=cell, output=None, return_sequences=rs, num_layers=2, bidirectional=True,
         ragged=True, use_h0=True) for cell in GATED for rs in (True, False)]


@pytest.mark.parametrize("case", F32_CASES, ids=repr)
def test_float32_agrees_with_float64(case):
    cls = CLASSES[case.cell]
    m64 = cls(D, H, case.output_size, dtype="float64", seed=3, **case.model_kwargs())
    m32 = cls(D, H, case.output_size, dtype="float32", seed=4, **case.model_kwargs())
    m32.set_params({k: v.astype(np.float32) for k, v in m64.params.items()})
    # the float64 model holds exactly the float32-representable weights
    m64.set_params({k: v.astype(np.float32).astype(np.float64) for k, v in m64.params.items()})
    X, y, lengths, h0 = make_batch(case)

    Y64, s64 = m64.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    Y32, s32 = m32.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    assert Y32.dtype == np.float32
    assert rel_err(Y32, Y64) < F32_RTOL
    assert len(parts(s32)) == len(parts(s64)) == (2 if case.cell == "lstm" else 1)
    for a, b in zip(parts(s32), parts(s64)):
        assert a.dtype == np.float32
        assert rel_err(a, b) < F32_RTOL
    if case.output is None:
        return

    l64, g64, d64 = m64.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                      return_state_grad=True)
    l32, g32, d32 = m32.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                      return_state_grad=True)
    assert isinstance(l32, float)
    assert abs(l32 - l64) / abs(l64) < F32_RTOL
    for k in g64:
        assert g32[k].dtype == np.float32, k
        assert g32[k].shape == g64[k].shape, k
        assert rel_err(g32[k], g64[k]) < F32_RTOL, (k, rel_err(g32[k], g64[k]))
    for name, a, b in zip(("h0", "c0"), parts(d32), parts(d64)):
        assert a.dtype == np.float32, name
        assert rel_err(a, b) < F32_RTOL, (name, rel_err(a, b))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.float64,
                                   np.dtype("float32"), np.dtype("float64")])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("output", ["softmax", "linear", None])
def test_params_dtype_shape_contiguity(cell, dtype, bidirectional, output):
    K_ = None if output is None else K
    model = CLASSES[cell](D, H, K_, num_layers=2, bidirectional=bidirectional, output=output,
                          dtype=dtype, seed=0)
    expected = np.dtype(dtype)
    shapes = param_shapes(D, H, K_, 2, bidirectional, output, cell=cell)
    assert set(model.params) == set(shapes)
    for k, v in model.params.items():
        assert isinstance(v, np.ndarray), k
        assert v.dtype == expected, k
        assert v.shape == shapes[k], k
        assert v.flags.c_contiguous, k
        assert v.flags.writeable, k


@pytest.mark.parametrize("cell", CELLS)
def test_default_dtype_is_float32(cell):
    model = CLASSES[cell](D, H, K, seed=0)
    assert all(v.dtype == np.float32 for v in model.params.values())


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outputs_and_grads_in_model_dtype(cell, dtype):
    case = Case(cell=cell, ragged=True, use_h0=True)
    model = make_model(crnn, case, random_params(case), dtype=dtype)
    X, y, lengths, h0 = make_batch(case)
    Y, s = model.forward(X.astype(np.float64), lengths=lengths, initial_state=h0,
                         return_state=True)
    assert Y.dtype == np.dtype(dtype)
    for p in parts(s):
        assert p.dtype == np.dtype(dtype)
    loss, grads, d = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                         return_state_grad=True)
    assert type(loss) is float
    for k, g in grads.items():
        assert g.dtype == np.dtype(dtype), k
        assert g.shape == model.params[k].shape, k
    for p, q in zip(parts(d), parts(h0)):
        assert p.dtype == np.dtype(dtype) and p.shape == q.shape


@pytest.mark.parametrize("cell", GATED)
def test_float32_and_float64_models_from_one_seed_agree(cell):
    """MODEL.md: the initial weights are drawn in one way for both dtypes."""
    a = CLASSES[cell](D, H, K, num_layers=2, bidirectional=True, dtype="float64", seed=9)
    b = CLASSES[cell](D, H, K, num_layers=2, bidirectional=True, dtype="float32", seed=9)
    for k in a.params:
        np.testing.assert_array_equal(b.params[k], a.params[k].astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_model(dtype):
    kw = dict(num_layers=2, bidirectional=True, dtype=dtype)
    a = crnn.RNN(D, H, K, seed=123, **kw)
    b = crnn.RNN(D, H, K, seed=123, **kw)
    assert set(a.params) == set(b.params)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
        assert not np.shares_memory(a.params[k], b.params[k])


def test_different_seeds_differ():
    a = crnn.RNN(D, H, K, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    b = crnn.RNN(D, H, K, num_layers=2, bidirectional=True, dtype="float64", seed=2)
    for k in a.params:
        assert not np.array_equal(a.params[k], b.params[k]), k


def test_seed_none_differs_between_models():
    a = crnn.RNN(D, H, K, dtype="float64")
    b = crnn.RNN(D, H, K, dtype="float64")
    assert any(not np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_init_is_uniform_in_plus_minus_one_over_sqrt_h():
    hidden = 32
    model = crnn.RNN(16, hidden, 10, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    bound = 1.0 / np.sqrt(hidden)
    allv = np.concatenate([v.ravel() for v in model.params.values()])
    for k, v in model.params.items():
        assert np.all(np.abs(v) <= bound), k
        assert np.abs(v).max() > 0.5 * bound, k          # not all tiny / zero
    # Uniform(-a, a): mean 0, std a/√3
    assert abs(allv.mean()) < 0.05 * bound
    assert abs(allv.std() - bound / np.sqrt(3)) < 0.05 * bound


# ------------------------------------------------------------------ set_params

def _model(dtype="float64", cell="rnn", **kw):
    return CLASSES[cell](D, H, K, num_layers=2, bidirectional=True, dtype=dtype, seed=0, **kw)


def _snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def _unchanged(model, snap):
    assert set(model.params) == set(snap)
    for k in snap:
        np.testing.assert_array_equal(model.params[k], snap[k])


@pytest.mark.parametrize("cell", CELLS)
def test_set_params_copies_values_in(cell):
    model = _model(cell=cell)
    rng = np.random.default_rng(0)
    new = {k: rng.normal(size=v.shape) for k, v in model.params.items()}
    model.set_params(new)
    for k in new:
        np.testing.assert_array_equal(model.params[k], new[k])
        assert not np.shares_memory(model.params[k], new[k])
        assert model.params[k].flags.c_contiguous
    # later changes to the source dict do not reach the model
    saved = _snapshot(model)
    for v in new.values():
        v += 1.0
    _unchanged(model, saved)


def test_set_params_accepts_non_contiguous_arrays():
    model = _model()
    rng = np.random.default_rng(1)
    new = {k: np.asfortranarray(rng.normal(size=v.shape)) for k, v in model.params.items()}
    new["W0"] = rng.normal(size=(H, H)).T          # a transposed view
    model.set_params(new)
    for k in new:
        np.testing.assert_array_equal(model.params[k], new[k])
        assert model.params[k].flags.c_contiguous


@pytest.mark.parametrize("cell,key", [("rnn", "W1_reverse"), ("lstm", "W1_reverse"),
                                      ("gru", "bn1_reverse"), ("gru", "bn0")])
def test_set_params_missing_key(cell, key):
    model = _model(cell=cell)
    snap = _snapshot(model)
    d = {k: v.copy() + 1 for k, v in model.params.items()}
    del d[key]
    with pytest.raises((ValueError, KeyError), match=key):
        model.set_params(d)
    _unchanged(model, snap)


def test_set_params_unknown_key():
    model = _model()
    snap = _snapshot(model)
    d = {k: v.copy() + 1 for k, v in model.params.items()}
    d["U7"] = np.zeros((H, D))
    with pytest.raises((ValueError, KeyError), match="U7"):
        model.set_params(d)
    _unchanged(model, snap)


def test_set_params_lstm_refuses_gru_key():
    model = _model(cell="lstm")
    snap = {k: v.copy() for k, v in model.params.items()}
    d = {k: v.copy() + 1 for k, v in model.params.items()}
    d["bn0"] = np.zeros(H)
    with pytest.raises((ValueError, KeyError), match="bn0"):
        model.set_params(d)
    _unchanged(model, snap)


@pytest.mark.parametrize("cell,key,bad_shape", [
    ("rnn", "U0", (H, D + 1)),
    ("rnn", "W1", (H + 1, H)),
    ("rnn", "b0_reverse", (H, 1)),
    ("rnn", "V", (K, H)),
    ("rnn", "c", (K + 2,)),
    ("rnn", "U1", (H, H)),
    ("lstm", "U0", (H, D)),               # an RNN's shape: G = 1 instead of 4
    ("lstm", "W1", (3 * H, H)),           # a GRU's shape
    ("lstm", "b0_reverse", (4 * H + 1,)),
    ("gru", "W0", (4 * H, H)),            # an LSTM's shape
    ("gru", "U1", (3 * H, D)),            # layer 1 reads 2H features
    ("gru", "bn0", (3 * H,)),
    ("gru", "bn1_reverse", (H, 1)),
])
def test_set_params_wrong_shape(cell, key, bad_shape):
    model = _model(cell=cell)
    snap = _snapshot(model)
    d = {k: v.copy() + 1 for k, v in model.params.items()}
    d[key] = np.zeros(bad_shape)
    with pytest.raises(ValueError) as exc:
        model.set_params(d)
    msg = str(exc.value)
    assert key in msg
    # names the expected and the given shape
    assert str(bad_shape) in msg, msg
    assert str(model.params[key].shape) in msg, msg
    _unchanged(model, snap)


@pytest.mark.parametrize("model_dtype", ["float32", "float64"])
@pytest.mark.parametrize("bad_dtype", [np.complex64, np.complex128, np.bool_, object, str])
def test_set_params_non_real_dtype(model_dtype, bad_dtype):
    model = _model(model_dtype)
    snap = _snapshot(model)
    d = {k: v.copy() + 1 for k, v in model.params.items()}
    d["W0"] = np.ones((H, H), dtype=bad_dtype)
    with pytest.raises((ValueError, TypeError)) as exc:
        model.set_params(d)
    msg = str(exc.value)
    given = np.dtype(bad_dtype)
    assert "W0" in msg, msg
    assert str(given) in msg or given.name in msg or given.kind in ("O", "U"), msg
    _unchanged(model, snap)


@pytest.mark.parametrize("model_dtype,other", [
    ("float32", np.float64), ("float64", np.float32), ("float64", np.int64),
    ("float32", np.int32), ("float64", np.float16),
])
def test_set_params_other_real_dtype_is_cast_or_refused(model_dtype, other):
    """API.md: set_params "checks" the dtype. Whether another *real* dtype is
    refused or cast is not pinned down; either way the outcome must be clean:
    a refusal leaves the model untouched, a cast stores exactly astype(model dtype)
    and keeps the model's own dtype."""
    model = _model(model_dtype)
    snap = _snapshot(model)
    d = {k: v.copy() for k, v in model.params.items()}
    d["W0"] = (np.arange(H * H).reshape(H, H) % 7 - 3).astype(other)
    try:
        model.set_params(d)
    except (ValueError, TypeError) as exc:
        assert "W0" in str(exc)
        _unchanged(model, snap)
    else:
        assert model.params["W0"].dtype == np.dtype(model_dtype)
        np.testing.assert_array_equal(model.params["W0"], d["W0"].astype(model_dtype))
        assert model.params["W0"].flags.c_contiguous


def test_set_params_non_dict():
    model = _model()
    snap = _snapshot(model)
    with pytest.raises(TypeError):
        model.set_params([np.zeros(3)])
    _unchanged(model, snap)


def test_set_params_nan_is_refused_or_kept_verbatim():
    # not specified which; but the model must stay consistent: either the call
    # raises and nothing changes, or every value is stored as given.
    model = _model()
    snap = _snapshot(model)
    d = {k: v.copy() + 1 for k, v in model.params.items()}
    d["c"][0] = np.nan
    try:
        model.set_params(d)
    except (ValueError, TypeError):
        _unchanged(model, snap)
    else:
        for k in d:
            np.testing.assert_array_equal(model.params[k], d[k])
