"""dtypes, the params dict, seeding and set_params.

float32 agrees with float64 (same weights) to about 1e-5 relative; params are
C-contiguous arrays of the model's dtype; the same seed gives the same model;
set_params checks keys, shapes and dtype and leaves the model untouched when
it refuses.
"""

import numpy as np
import pytest

import crnn
from cases import D, H, K, N, T, Case, case_matrix, make_batch, make_model, random_params
from reference import param_shapes

F32_RTOL = 1e-5


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


F32_CASES = case_matrix(tokens=False, use_h0=True, ragged=True, nonlinearity="tanh") + [
    Case("relu", "softmax", True, 2, True, tokens=True, ragged=True, use_h0=False),
    Case("relu", "linear", False, 1, False, tokens=False, ragged=False, use_h0=True),
]


@pytest.mark.parametrize("case", F32_CASES, ids=repr)
def test_float32_agrees_with_float64(case):
    m64 = crnn.RNN(D, H, case.output_size, dtype="float64", seed=3, **case.model_kwargs())
    m32 = crnn.RNN(D, H, case.output_size, dtype="float32", seed=4, **case.model_kwargs())
    m32.set_params({k: v.astype(np.float32) for k, v in m64.params.items()})
    # the float64 model holds exactly the float32-representable weights
    m64.set_params({k: v.astype(np.float32).astype(np.float64) for k, v in m64.params.items()})
    X, y, lengths, h0 = make_batch(case)

    Y64, s64 = m64.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    Y32, s32 = m32.forward(X, lengths=lengths, initial_state=h0, return_state=True)
    assert Y32.dtype == np.float32 and s32.dtype == np.float32
    assert rel_err(Y32, Y64) < F32_RTOL
    assert rel_err(s32, s64) < F32_RTOL

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
    assert d32.dtype == np.float32
    assert rel_err(d32, d64) < F32_RTOL


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.float64,
                                   np.dtype("float32"), np.dtype("float64")])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("output", ["softmax", "linear", None])
def test_params_dtype_shape_contiguity(dtype, bidirectional, output):
    K_ = None if output is None else K
    model = crnn.RNN(D, H, K_, num_layers=2, bidirectional=bidirectional, output=output,
                     dtype=dtype, seed=0)
    expected = np.dtype(dtype)
    shapes = param_shapes(D, H, K_, 2, bidirectional, output)
    assert set(model.params) == set(shapes)
    for k, v in model.params.items():
        assert isinstance(v, np.ndarray), k
        assert v.dtype == expected, k
        assert v.shape == shapes[k], k
        assert v.flags.c_contiguous, k
        assert v.flags.writeable, k


def test_default_dtype_is_float32():
    model = crnn.RNN(D, H, K, seed=0)
    assert all(v.dtype == np.float32 for v in model.params.values())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outputs_and_grads_in_model_dtype(dtype):
    case = Case(ragged=True, use_h0=True)
    model = make_model(crnn, case, random_params(case), dtype=dtype)
    X, y, lengths, h0 = make_batch(case)
    Y, s = model.forward(X.astype(np.float64), lengths=lengths, initial_state=h0,
                         return_state=True)
    assert Y.dtype == np.dtype(dtype) and s.dtype == np.dtype(dtype)
    loss, grads, d = model.loss_and_grad(X, y, lengths=lengths, initial_state=h0,
                                         return_state_grad=True)
    assert type(loss) is float
    for k, g in grads.items():
        assert g.dtype == np.dtype(dtype), k
        assert g.shape == model.params[k].shape, k
    assert d.dtype == np.dtype(dtype) and d.shape == h0.shape


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

def _model(dtype="float64", **kw):
    return crnn.RNN(D, H, K, num_layers=2, bidirectional=True, dtype=dtype, seed=0, **kw)


def _snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def _unchanged(model, snap):
    assert set(model.params) == set(snap)
    for k in snap:
        np.testing.assert_array_equal(model.params[k], snap[k])


def test_set_params_copies_values_in():
    model = _model()
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


def test_set_params_missing_key():
    model = _model()
    snap = _snapshot(model)
    d = {k: v.copy() + 1 for k, v in model.params.items()}
    del d["W1_reverse"]
    with pytest.raises((ValueError, KeyError), match="W1_reverse"):
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


@pytest.mark.parametrize("key,bad_shape", [("U0", (H, D + 1)), ("W1", (H + 1, H)),
                                           ("b0_reverse", (H, 1)), ("V", (K, H)),
                                           ("c", (K + 2,)), ("U1", (H, H))])
def test_set_params_wrong_shape(key, bad_shape):
    model = _model()
    snap = _snapshot(model)
    d = {k: v.copy() + 1 for k, v in model.params.items()}
    d[key] = np.zeros(bad_shape)
    with pytest.raises(ValueError) as exc:
        model.set_params(d)
    msg = str(exc.value)
    assert key in msg
    # names the expected and the given shape
    assert str(bad_shape) in msg or "x".join(map(str, bad_shape)) in msg, msg
    expected = model.params[key].shape
    assert str(expected) in msg or "x".join(map(str, expected)) in msg, msg
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
