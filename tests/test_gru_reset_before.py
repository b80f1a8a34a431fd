"""The original GRU, crnn.GRU(reset_after=False): the reset gate multiplies
h before the recurrent product (Cho et al.; ONNX's GRU with
linear_before_reset=0; Keras's reset_after=False), with no b_hn:

    r = σ(U_r x + W_r h + b_r)    z = σ(U_z x + W_z h + b_z)
    n = tanh(U_n x + b_n + W_n (r ⊙ h))       h' = (1 - z) ⊙ n + z ⊙ h

Checked against a float64 numpy reference written here from those lines,
against central finite differences of crnn's own float64 loss (every
parameter and the initial state), and against ONNX Runtime running an ONNX
GRU node with linear_before_reset=0 built here from crnn's parameters.
The C API's cell (CRNN_GRU_RESET_BEFORE) is in test_capi.py."""
import numpy as np
import pytest

import crnn
from variant_checks import check_finite_differences, check_threads_and_one_hot

N, T, D, H, K = 3, 5, 4, 6, 3


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def reference_lane(U, W, b, X, lengths, h0):
    """h of one direction of one layer: X (N, T, D) (each sequence in its own
    time order), h0 (N, H).  Returns (N, T, H) (zeros past a length) and
    each sequence's last h."""
    hs = np.zeros((X.shape[0], X.shape[1], W.shape[1]))
    last = np.array(h0, dtype=np.float64)
    Hh = W.shape[1]
    for i in range(X.shape[0]):
        h = np.array(h0[i], dtype=np.float64)
        for t in range(lengths[i]):
            gx = U @ X[i, t] + b
            r = sigmoid(gx[:Hh] + W[:Hh] @ h)
            z = sigmoid(gx[Hh:2 * Hh] + W[Hh:2 * Hh] @ h)
            n = np.tanh(gx[2 * Hh:] + W[2 * Hh:] @ (r * h))
            h = (1 - z) * n + z * h
            hs[i, t] = h
        last[i] = h
    return hs, last


def reference_forward(params, X, lengths, h0, layers, bidirectional):
    """The top layer's h (N, T, H·dirs) and the final states (lanes, N, H)."""
    inputs = np.asarray(X, np.float64)
    finals = []
    for layer in range(layers):
        outputs = []
        for d, suffix in enumerate(("", "_reverse")[:1 + bidirectional]):
            lane = layer * (1 + bidirectional) + d
            U, W, b = (params[f"{k}{layer}{suffix}"].astype(np.float64)
                       for k in "UWb")
            if d == 0:
                hs, last = reference_lane(U, W, b, inputs, lengths, h0[lane])
            else:
                flipped = np.zeros_like(inputs)
                for i, length in enumerate(lengths):
                    flipped[i, :length] = inputs[i, :length][::-1]
                hs_r, last = reference_lane(U, W, b, flipped, lengths, h0[lane])
                hs = np.zeros_like(hs_r)
                for i, length in enumerate(lengths):
                    hs[i, :length] = hs_r[i, :length][::-1]
            outputs.append(hs)
            finals.append(last)
        inputs = np.concatenate(outputs, axis=2)
    return inputs, np.stack(finals)


def make(layers=1, bidirectional=False, output=None, dtype="float64", seed=0):
    return crnn.GRU(D, H, K if output else None, num_layers=layers,
                    bidirectional=bidirectional, reset_after=False,
                    output=output, dtype=dtype, seed=seed)


def data(seed=1, lanes=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, T, D))
    lengths = np.array([T, 2, 4])
    h0 = rng.normal(scale=0.5, size=(lanes, N, H))
    return X, lengths, h0


def test_parameters_have_no_recurrent_bias():
    model = make(layers=2, bidirectional=True, output="softmax")
    assert not any(name.startswith("bn") for name in model.params)
    assert model.params["W1_reverse"].shape == (3 * H, H)
    assert "reset_after=False" in repr(model)
    with pytest.raises(TypeError, match="reset_after must be True or False"):
        crnn.GRU(D, H, reset_after="no")


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False),
                                                  (1, True), (2, True)])
def test_forward_matches_the_numpy_reference(layers, bidirectional):
    lanes = layers * (1 + bidirectional)
    model = make(layers, bidirectional)
    X, lengths, h0 = data(lanes=lanes)
    out, h_n = model.forward(X, lengths, initial_state=h0, return_state=True)
    expected, expected_n = reference_forward(model.params, X, lengths, h0,
                                             layers, bidirectional)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_n, expected_n, rtol=1e-12, atol=1e-13)
    # and it differs from the reset-after GRU with the same weights
    other = crnn.GRU(D, H, None, num_layers=layers, bidirectional=bidirectional,
                     output=None, dtype="float64", seed=0)
    for name, value in model.params.items():
        other.params[name][...] = value
    assert not np.allclose(other.forward(X, lengths, initial_state=h0), out)


@pytest.mark.parametrize("output,sequences", [("softmax", True), ("linear", False)])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_gradients_match_finite_differences(layers, bidirectional, output,
                                            sequences):
    lanes = layers * (1 + bidirectional)
    model = crnn.GRU(D, H, K, num_layers=layers, bidirectional=bidirectional,
                     reset_after=False, output=output,
                     return_sequences=sequences, dtype="float64", seed=3)
    X, lengths, h0 = data(seed=4, lanes=lanes)
    rng = np.random.default_rng(5)
    if output == "softmax":
        y = rng.integers(0, K, size=(N, T))
    else:
        y = rng.normal(size=(N, K))
    check_finite_differences(model, X, y, lengths, h0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_and_two_threads_agree_and_tokens_equal_one_hot(dtype):
    model = crnn.GRU(7, 40, 5, num_layers=2, reset_after=False, dtype=dtype,
                     seed=2)
    rng = np.random.default_rng(6)
    tokens = rng.integers(0, 7, size=(16, 30))
    check_threads_and_one_hot(model, tokens, rng.integers(0, 5, size=(16, 30)))


def test_stream_steps_equal_the_forward():
    model = make(layers=2, output="linear")
    X, _, _ = data()
    expected = model.forward(X)
    stream = model.stream(batch_size=N)
    for t in range(T):
        np.testing.assert_allclose(stream.step(X[:, t]), expected[:, t],
                                   rtol=1e-12, atol=1e-13)


def test_matches_onnx_runtime_gru_with_linear_before_reset_0():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    model = crnn.GRU(D, H, None, bidirectional=True, reset_after=False,
                     output=None, dtype="float32", seed=8)
    X, lengths, h0 = data(seed=9, lanes=2)
    X = X.astype(np.float32)
    p = model.params
    # crnn's gate blocks r, z, n; ONNX's z, r, h; B = [Wb, Rb] with Rb = 0
    order = [1, 0, 2]

    def onnx_blocks(a):
        return np.concatenate([a[g * H:(g + 1) * H] for g in order])

    W = np.stack([onnx_blocks(p["U0"]), onnx_blocks(p["U0_reverse"])])
    R = np.stack([onnx_blocks(p["W0"]), onnx_blocks(p["W0_reverse"])])
    B = np.stack([np.concatenate([onnx_blocks(p[name]), np.zeros(3 * H, np.float32)])
                  for name in ("b0", "b0_reverse")])
    node = helper.make_node("GRU", ["X", "W", "R", "B", "seq", "h0"], ["Y", "Y_h"],
                            hidden_size=H, direction="bidirectional",
                            linear_before_reset=0)
    graph = helper.make_graph(
        [node], "gru", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, N, D]),
                        helper.make_tensor_value_info("seq", TensorProto.INT32, [N]),
                        helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, N, H])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
         numpy_helper.from_array(B, "B")])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    session = ort.InferenceSession(onnx_model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    Y, Y_h = session.run(None, {"X": X.transpose(1, 0, 2).copy(),
                                "seq": lengths.astype(np.int32),
                                "h0": h0.astype(np.float32)})
    out, h_n = model.forward(X, lengths, initial_state=h0, return_state=True)
    # Y (T, dirs, N, H) -> (N, T, dirs·H)
    expected = Y.transpose(2, 0, 1, 3).reshape(N, T, 2 * H)
    mask = np.arange(T)[None, :, None] < lengths[:, None, None]
    np.testing.assert_allclose(out, np.where(mask, expected, 0), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(h_n, Y_h, rtol=1e-4, atol=2e-5)


def test_save_load_and_pickle_keep_the_variant(tmp_path):
    import pickle
    model = make(layers=2, bidirectional=True, output="softmax", seed=4)
    X, lengths, _ = data(seed=5)
    expected = model.forward(X, lengths)
    path = tmp_path / "gru.npz"
    model.save(path)
    for loaded in (crnn.load(path), pickle.loads(pickle.dumps(model))):
        assert isinstance(loaded, crnn.GRU) and loaded.reset_after is False
        assert not any(name.startswith("bn") for name in loaded.params)
        np.testing.assert_array_equal(loaded.forward(X, lengths), expected)
    # a reset-after file of the same sizes is not this model
    other = crnn.GRU(D, H, K, num_layers=2, bidirectional=True, dtype="float64", seed=4)
    other.save(path)
    assert crnn.load(path).reset_after is True


def test_pytorch_has_no_such_gru():
    with pytest.raises(ValueError, match="PyTorch has no GRU with reset_after=False"):
        make().to_torch()


@pytest.mark.parametrize("sequences", [True, False])
def test_to_onnx_runs_in_onnx_runtime(tmp_path, sequences):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = crnn.GRU(D, H, K, num_layers=2, bidirectional=True, reset_after=False,
                     output="softmax", return_sequences=sequences,
                     dtype="float32", seed=6)
    X, lengths, _ = data(seed=7)
    X = X.astype(np.float32)
    path = tmp_path / "gru.onnx"
    model.to_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"X": X, "lengths": lengths.astype(np.int64)})
    np.testing.assert_allclose(got, model.forward(X, lengths), rtol=1e-4, atol=2e-5)
