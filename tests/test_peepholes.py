"""crnn.LSTM(peepholes=True): ONNX's LSTM with peepholes,

    i = σ(z_i + P_i ⊙ C(t-1))   f = σ(z_f + P_f ⊙ C(t-1))   o = σ(z_o + P_o ⊙ C(t))

with P{l} (3, H) in ONNX's row order i, o, f.  Checked against the float64
numpy reference (tests/reference.py, which takes P), central finite
differences of crnn's own float64 loss, the engine's fast paths switched off
one at a time, one and two threads, the stream, save/load and pickling, and
ONNX Runtime running crnn's export and a graph built here with
onnx.helper.  The C API's cell (CRNN_LSTM_PEEPHOLE) is in test_capi.py;
crnn.from_onnx in test_onnx_import.py."""
import numpy as np
import pytest

import crnn
from fast_paths import fast_path
from variant_checks import (check_against_reference, lstm_batch, check_finite_differences,
                            check_save_load, check_stream,
                            check_threads_and_one_hot, check_trainer_learns)

N, T, D, H, K = 4, 6, 3, 5, 2
LENGTHS = np.array([6, 2, 4, 1])


def make(layers=1, bidirectional=False, output="softmax", sequences=True,
         dtype="float64", seed=0, hidden=H, inputs=D):
    model = crnn.LSTM(inputs, hidden, K if output else None, num_layers=layers,
                      bidirectional=bidirectional, peepholes=True, output=output,
                      return_sequences=sequences, dtype=dtype, seed=seed)
    # peepholes large enough to matter (the initial ones are ±1/√H)
    for name, array in model.params.items():
        if name.startswith("P"):
            array *= 3
    return model


def batch(seed=1, lanes=1, output="softmax", sequences=True):
    """X, y and an initial state (h0, c0) for a model of these sizes."""
    return lstm_batch(make(output=output, sequences=sequences), N, T, seed, lanes)


def test_parameters_and_settings():
    model = make(layers=2, bidirectional=True)
    assert model.params["P0"].shape == model.params["P1_reverse"].shape == (3, H)
    assert model.peepholes is True and "peepholes=True" in repr(model)
    assert "peepholes" not in repr(crnn.LSTM(D, H))
    assert "P0" not in crnn.LSTM(D, H).params
    with pytest.raises(TypeError, match="peepholes must be True or False, got 'yes'"):
        crnn.LSTM(D, H, peepholes="yes")
    for cls in (crnn.RNN, crnn.GRU):
        with pytest.raises(ValueError, match=rf"peepholes must be False for a "
                                             rf"crnn.{cls.__name__} .*got True"):
            cls(D, H, peepholes=True)
    with pytest.raises(AttributeError, match="read-only"):
        model.peepholes = False


def test_zero_peepholes_are_the_plain_lstm():
    model = make()
    plain = crnn.LSTM(D, H, K, dtype="float64", seed=0)
    for name, array in plain.params.items():
        model.params[name][...] = array
    X, y, state = batch()
    model.params["P0"][...] = 0
    np.testing.assert_array_equal(model.forward(X, LENGTHS, state),
                                  plain.forward(X, LENGTHS, state))
    loss, grads = model.loss_and_grad(X, y, LENGTHS, state)
    plain_loss, plain_grads = plain.loss_and_grad(X, y, LENGTHS, state)
    assert loss == plain_loss
    for name, value in plain_grads.items():
        np.testing.assert_array_equal(grads[name], value)
    assert np.abs(grads["P0"]).max() > 1e-4        # and P still learns


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 2e-5)])
@pytest.mark.parametrize("output,sequences", [("softmax", True), ("linear", False)])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False), (2, True)])
def test_matches_the_numpy_reference(layers, bidirectional, output, sequences,
                                     dtype, tol):
    lanes = layers * (1 + bidirectional)
    model = make(layers, bidirectional, output, sequences, dtype)
    X, y, state = batch(lanes=lanes, output=output, sequences=sequences)
    check_against_reference(model, X, y, LENGTHS, state, tol)


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_gradients_match_finite_differences(layers, bidirectional):
    lanes = layers * (1 + bidirectional)
    model = make(layers, bidirectional, "linear", seed=3)
    X, y, state = batch(seed=4, lanes=lanes, output="linear")
    check_finite_differences(model, X, y, LENGTHS, state)


@pytest.mark.parametrize("path", ["packed_gemm", "fused_inputs",
                                  "merged_weight_gradients", "outputs_in_step",
                                  "bias_sums_in_steps"])
def test_each_fast_path_gives_the_same_gradients(path):
    """Sizes where every path is taken (T >= 4, B > 1, G·H >= 256)."""
    model = make(hidden=64, inputs=8, seed=5)
    rng = np.random.default_rng(6)
    X = rng.normal(size=(16, 20, 8))
    y = rng.integers(0, K, size=(16, 20))
    lengths = rng.integers(1, 21, size=16)
    lengths[0] = 20
    results = []
    for enabled in (True, False):
        previous = fast_path(path)(enabled)
        try:
            results.append(model.loss_and_grad(X, y, lengths))
        finally:
            fast_path(path)(previous)
    (l1, g1), (l2, g2) = results
    assert abs(l1 - l2) <= 1e-12 * abs(l1)
    for name in g1:
        np.testing.assert_allclose(g1[name], g2[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_and_two_threads_agree_and_tokens_equal_one_hot(dtype):
    model = make(layers=2, dtype=dtype, hidden=40, inputs=7, seed=2)
    rng = np.random.default_rng(6)
    tokens = rng.integers(0, 7, size=(16, 30))
    check_threads_and_one_hot(model, tokens, rng.integers(0, K, size=(16, 30)))


def test_stream_steps_equal_the_forward():
    model = make(layers=2, output="linear")
    X, _, state = batch(lanes=2)
    check_stream(model, X, state)


def test_save_load_and_pickle_keep_the_variant(tmp_path):
    model = make(layers=2, bidirectional=True, seed=4)
    X, _, _ = batch(seed=5)
    path = tmp_path / "lstm.npz"
    for loaded in check_save_load(model, X, LENGTHS, path):
        assert loaded.peepholes is True and "P1_reverse" in loaded.params
    # a plain LSTM's file of the same sizes is a plain LSTM
    crnn.LSTM(D, H, K, num_layers=2, bidirectional=True, dtype="float64").save(path)
    assert crnn.load(path).peepholes is False


def test_trainer_learns_the_peepholes():
    X, y, _ = batch(seed=8, output="linear")
    check_trainer_learns(make(output="linear", seed=7), X, y, "P0")


def test_pytorch_has_no_peepholes():
    with pytest.raises(ValueError, match="PyTorch's LSTM has no peephole"):
        make().to_torch()


@pytest.mark.parametrize("sequences", [True, False])
def test_to_onnx_exports_P_and_runs_in_onnx_runtime(tmp_path, sequences):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = make(layers=2, bidirectional=True, sequences=sequences,
                 dtype="float32", seed=6)
    X, _, _ = batch(seed=7)
    X = X.astype(np.float32)
    path = tmp_path / "lstm.onnx"
    for lengths in (True, False):
        model.to_onnx(path, lengths=lengths)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {"X": X, "lengths": LENGTHS.astype(np.int64)} if lengths else {"X": X}
        (got,) = session.run(None, feeds)
        np.testing.assert_allclose(got, model.forward(X, LENGTHS if lengths else None),
                                   rtol=1e-4, atol=2e-5)


def test_matches_an_onnx_lstm_node_built_with_onnx_helper():
    """ONNX Runtime's LSTM with P, initial states and sequence lengths,
    from crnn's parameters reordered by hand (ONNX's gate blocks i, o, f, c)."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    model = make(bidirectional=True, output=None, dtype="float32", seed=9)
    X, _, (h0, c0) = batch(seed=10, lanes=2)
    X, h0, c0 = (a.astype(np.float32) for a in (X, h0, c0))
    p = model.params
    order = [0, 3, 1, 2]        # crnn's blocks i, f, a, o -> ONNX's i, o, f, c

    def blocks(a):
        return np.concatenate([a[g * H:(g + 1) * H] for g in order])

    suffixes = ("", "_reverse")
    W = np.stack([blocks(p[f"U0{s}"]) for s in suffixes])
    R = np.stack([blocks(p[f"W0{s}"]) for s in suffixes])
    B = np.stack([np.concatenate([blocks(p[f"b0{s}"]), np.zeros(4 * H, np.float32)])
                  for s in suffixes])
    P = np.stack([p[f"P0{s}"].reshape(-1) for s in suffixes])
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "seq", "h0", "c0", "P"],
                            ["Y", "Y_h", "Y_c"], hidden_size=H,
                            direction="bidirectional")
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, N, D]),
              helper.make_tensor_value_info("seq", TensorProto.INT32, [N]),
              helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, N, H]),
              helper.make_tensor_value_info("c0", TensorProto.FLOAT, [2, N, H])]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
               for name in ("Y", "Y_h", "Y_c")]
    graph = helper.make_graph([node], "lstm", inputs, outputs, [
        numpy_helper.from_array(a, name) for a, name in ((W, "W"), (R, "R"), (B, "B"),
                                                          (P, "P"))])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    session = ort.InferenceSession(onnx_model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    Y, Y_h, Y_c = session.run(None, {"X": X.transpose(1, 0, 2).copy(),
                                     "seq": LENGTHS.astype(np.int32), "h0": h0, "c0": c0})
    out, (h_n, c_n) = model.forward(X, LENGTHS, (h0, c0), return_state=True)
    expected = Y.transpose(2, 0, 1, 3).reshape(N, T, 2 * H)
    mask = np.arange(T)[None, :, None] < LENGTHS[:, None, None]
    np.testing.assert_allclose(out, np.where(mask, expected, 0), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(h_n, Y_h, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(c_n, Y_c, rtol=1e-4, atol=2e-5)
