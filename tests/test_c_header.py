"""crnn's C header (crnn/crnn.h), used as a plain C extension uses
it: examples/downstream_c, built against the installed crnn, runs an LSTM
layer forward and backward through the capsule table.  Its results are
checked against crnn's Python API (the forward) and central finite
differences of its own forward (the backward), and a short workspace must
come back as CRNN_ERROR_WORKSPACE_SIZE with nothing written."""
from pathlib import Path

import numpy as np
import pytest

import crnn
from build_example import build_example
from reference import central_differences

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "downstream_c"
FILES = ("setup.py", "pyproject.toml", "crnn_downstream_c.c")
T, B, D, H = 4, 2, 3, 3


@pytest.fixture(scope="module")
def downstream_c(tmp_path_factory):
    return build_example(EXAMPLE, FILES, "crnn_downstream_c",
                         tmp_path_factory.mktemp("downstream_c"), cython=False)


def problem(seed=0):
    rng = np.random.default_rng(seed)
    model = crnn.LSTM(D, H, output=None, dtype="float64", seed=seed)
    x = rng.normal(size=(T, B, D))
    dhs = rng.normal(size=(T, B, H))
    return model, x, dhs


def run(module, model, x, dhs, lwork=-1):
    p = model.params
    out = {"hs": np.full((T + 1, B, H), np.nan), "dU": np.zeros_like(p["U0"]),
           "dW": np.zeros_like(p["W0"]), "db": np.zeros_like(p["b0"]),
           "dx": np.full_like(x, np.nan)}
    status = module.lstm_forward_backward(
        x, p["U0"], p["W0"], p["b0"], dhs, out["hs"], out["dU"], out["dW"],
        out["db"], out["dx"], lwork)
    return status, out


def test_forward_equals_the_python_model(downstream_c):
    model, x, dhs = problem()
    status, out = run(downstream_c, model, x, dhs)
    assert status == "CRNN_OK"
    np.testing.assert_array_equal(out["hs"][0], 0)
    np.testing.assert_allclose(out["hs"][1:].transpose(1, 0, 2),
                               model.forward(x.transpose(1, 0, 2)),
                               rtol=1e-12, atol=1e-13)


def test_backward_equals_finite_differences(downstream_c):
    """dL/dU, dW, b, x for L = Σ hs[1:] · dhs, against central differences of
    the C forward itself."""
    model, x, dhs = problem(1)
    status, out = run(downstream_c, model, x, dhs)
    assert status == "CRNN_OK"

    def loss():
        status, result = run(downstream_c, model, x, dhs)
        assert status == "CRNN_OK"
        return float((result["hs"][1:] * dhs).sum())

    p = model.params
    for name, array in (("dU", p["U0"]), ("dW", p["W0"]), ("db", p["b0"]),
                        ("dx", x)):
        np.testing.assert_allclose(out[name], central_differences(loss, array),
                                   rtol=1e-6, atol=1e-8, err_msg=name)


def test_a_short_workspace_is_refused_and_nothing_is_written(downstream_c):
    model, x, dhs = problem(2)
    forward = downstream_c.workspace_size(T, B, D, H, False)
    training = downstream_c.workspace_size(T, B, D, H, True)
    assert 0 < forward < training
    # too short for the forward: nothing runs
    status, out = run(downstream_c, model, x, dhs, lwork=forward - 1)
    assert status == "CRNN_ERROR_WORKSPACE_SIZE"
    assert np.isnan(out["hs"]).all() and not out["dU"].any()
    # enough for the forward, short for the backward (which once wrote
    # past such a buffer): the forward runs, the backward is refused
    status, out = run(downstream_c, model, x, dhs, lwork=forward)
    assert status == "CRNN_ERROR_WORKSPACE_SIZE"
    assert not np.isnan(out["hs"]).any()
    assert not out["dU"].any() and np.isnan(out["dx"]).all()


def test_bad_buffers_are_refused_by_the_example(downstream_c):
    model, x, dhs = problem()
    p = model.params
    with pytest.raises(ValueError, match="float64"):
        downstream_c.lstm_forward_backward(
            x.astype(np.float32), p["U0"], p["W0"], p["b0"], dhs,
            np.empty((T + 1, B, H)), np.zeros_like(p["U0"]),
            np.zeros_like(p["W0"]), np.zeros_like(p["b0"]), np.empty_like(x))
