"""crnn.from_onnx: ONNX graphs into crnn models.

Round trips to_onnx -> from_onnx for every cell (exact parameters, same
outputs), graphs built here with onnx.helper (both ONNX biases non-zero,
run by ONNX Runtime and by the imported crnn model), and the refusals of
what crnn cannot compute, each naming the attribute."""
import numpy as np
import pytest

import crnn

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

N, T, D, H, K = 3, 5, 4, 6, 3
LENGTHS = np.array([5, 2, 4])
# crnn's gate blocks in ONNX's order (interop's table, written out here)
ONNX_ORDER = {"RNN": [0], "LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2]}

CELLS = {
    "rnn_tanh": (crnn.RNN, {}), "rnn_relu": (crnn.RNN, {"nonlinearity": "relu"}),
    "lstm": (crnn.LSTM, {}), "lstm_peephole": (crnn.LSTM, {"peepholes": True}),
    "gru": (crnn.GRU, {}), "gru_reset_before": (crnn.GRU, {"reset_after": False}),
}


@pytest.mark.parametrize("output,sequences", [("softmax", True), ("linear", False),
                                              (None, True)])
@pytest.mark.parametrize("cell", CELLS)
def test_round_trip_through_to_onnx(tmp_path, cell, output, sequences):
    cls, options = CELLS[cell]
    model = cls(D, H, K if output else None, num_layers=2, bidirectional=True,
                output=output, return_sequences=sequences, dtype="float64",
                seed=1, **options)
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    back = crnn.from_onnx(path)
    assert type(back) is cls and repr(back) == repr(model)
    assert sorted(back.params) == sorted(model.params)
    for name, array in model.params.items():
        np.testing.assert_array_equal(back.params[name], array, err_msg=name)
    X = np.random.default_rng(2).normal(size=(N, T, D))
    np.testing.assert_array_equal(back.forward(X, LENGTHS), model.forward(X, LENGTHS))


def graph_file(tmp_path, op, W, R, B, extra_inputs=(), head=None,
               final_state=False, **attributes):
    """An ONNX file with one `op` node on X (T, N, D) and its outputs: Y as
    (N, T, dirs·H) (or Y_h as (N, dirs·H) with `final_state`), then
    `head` = (V_T, c, softmax) if given."""
    dirs, H = R.shape[0], R.shape[2]
    initializers = [numpy_helper.from_array(a, name)
                    for a, name in ((W, "W"), (R, "R"), (B, "B"))]
    inputs = ["X", "W", "R", "B"]
    for name, array in extra_inputs:
        if array is not None:
            initializers.append(numpy_helper.from_array(array, name))
        inputs.append(name if array is not None else "")
    outputs = ["", "Y_h"] if final_state else ["Y"]
    nodes = [helper.make_node(op, inputs, outputs, name="rec", hidden_size=H,
                              **attributes)]
    shape = helper.make_tensor(name="shape", data_type=TensorProto.INT64,
                               dims=[2 if final_state else 3],
                               vals=[0, -1] if final_state else [0, 0, -1])
    initializers.append(shape)
    if final_state:
        nodes += [helper.make_node("Transpose", ["Y_h"], ["t"], perm=[1, 0, 2]),
                  helper.make_node("Reshape", ["t", "shape"], ["h"])]
    else:
        nodes += [helper.make_node("Transpose", ["Y"], ["t"], perm=[2, 0, 1, 3]),
                  helper.make_node("Reshape", ["t", "shape"], ["h"])]
    top = "h"
    if head is not None:
        V_T, c, softmax = head
        initializers += [numpy_helper.from_array(V_T, "V_T"),
                         numpy_helper.from_array(c, "c")]
        nodes += [helper.make_node("MatMul", ["h", "V_T"], ["o"]),
                  helper.make_node("Add", ["o", "c"], ["logits"])]
        top = "logits"
        if softmax:
            nodes.append(helper.make_node("Softmax", ["logits"], ["p"], axis=-1))
            top = "p"
    nodes.append(helper.make_node("Identity", [top], ["out"]))
    float_type = helper.np_dtype_to_tensor_dtype(W.dtype)
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", float_type, [T, N, W.shape[2]])],
        [helper.make_tensor_value_info("out", float_type, None)], initializers)
    path = tmp_path / "graph.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]),
              path)
    return path


def random_weights(op, dirs, G, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    W = rng.normal(scale=0.4, size=(dirs, G * H, D)).astype(dtype)
    R = rng.normal(scale=0.4, size=(dirs, G * H, H)).astype(dtype)
    B = rng.normal(scale=0.4, size=(dirs, 2 * G * H)).astype(dtype)
    return W, R, B


def run_onnx(path, X):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": np.ascontiguousarray(X.transpose(1, 0, 2))})[0]


@pytest.mark.parametrize("op,G,attributes,extra,expected", [
    ("LSTM", 4, {}, "P", {"peepholes": True}),
    ("LSTM", 4, {}, None, {"peepholes": False}),
    ("GRU", 3, {"linear_before_reset": 1}, None, {"reset_after": True}),
    ("GRU", 3, {"linear_before_reset": 0}, None, {"reset_after": False}),
    ("RNN", 1, {"activations": ["Relu", "Relu"]}, None, {"nonlinearity": "relu"}),
    ("RNN", 1, {}, None, {"nonlinearity": "tanh"}),
])
@pytest.mark.parametrize("head", [None, "softmax", "linear"])
def test_graphs_built_with_onnx_helper(tmp_path, op, G, attributes, extra,
                                       expected, head):
    """Both ONNX biases non-zero (crnn folds them; the GRU's candidate Rb
    becomes bn), a bidirectional node, a head or none: the imported model
    gives what ONNX Runtime gives."""
    W, R, B = random_weights(op, 2, G, seed=len(op) + G)
    rng = np.random.default_rng(5)
    extra_inputs = []
    if extra == "P":
        extra_inputs = [("", None), ("", None), ("", None),
                        ("P", rng.normal(size=(2, 3 * H)).astype(np.float32))]
    head_arrays = None
    if head is not None:
        head_arrays = (rng.normal(size=(2 * H, K)).astype(np.float32),
                       rng.normal(size=K).astype(np.float32), head == "softmax")
    path = graph_file(tmp_path, op, W, R, B, extra_inputs, head_arrays,
                      direction="bidirectional", **attributes)
    model = crnn.from_onnx(path)
    assert type(model).__name__ == op and model.bidirectional
    assert model.output == head and model.return_sequences
    for name, value in expected.items():
        assert getattr(model, name) == value
    X = rng.normal(size=(N, T, D)).astype(np.float32)
    np.testing.assert_allclose(model.forward(X), run_onnx(path, X), rtol=1e-4,
                               atol=2e-5)


def test_many_to_one_from_the_final_state(tmp_path):
    W, R, B = random_weights("LSTM", 1, 4, seed=3)
    rng = np.random.default_rng(6)
    head = (rng.normal(size=(H, K)).astype(np.float32),
            rng.normal(size=K).astype(np.float32), False)
    path = graph_file(tmp_path, "LSTM", W, R, B, head=head, final_state=True)
    model = crnn.from_onnx(path)
    assert model.return_sequences is False and model.output == "linear"
    X = rng.normal(size=(N, T, D)).astype(np.float32)
    np.testing.assert_allclose(model.forward(X), run_onnx(path, X), rtol=1e-4,
                               atol=2e-5)


def test_float64_weights_give_a_float64_model(tmp_path):
    W, R, B = random_weights("GRU", 1, 3, dtype=np.float64)
    path = graph_file(tmp_path, "GRU", W, R, B, linear_before_reset=1)
    model = crnn.from_onnx(path)
    assert model.dtype == np.float64
    np.testing.assert_array_equal(model.params["bn0"], B[0, -H:])


@pytest.mark.parametrize("attributes,message", [
    ({"clip": 3.0}, "clip=3.0"),
    ({"input_forget": 1}, "input_forget=1"),
    ({"activations": ["Sigmoid", "Tanh", "Relu"]}, "activations="),
    ({"activations": ["HardSigmoid", "Tanh", "Tanh"], "activation_alpha": [0.2]},
     "activation_alpha"),
    ({"direction": "reverse"}, "direction='reverse'"),
])
def test_what_crnn_cannot_compute_is_refused_by_name(tmp_path, attributes, message):
    W, R, B = random_weights("LSTM", 1, 4)
    path = graph_file(tmp_path, "LSTM", W, R, B, **attributes)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        crnn.from_onnx(path)


def test_inputs_crnn_cannot_take_are_refused(tmp_path):
    W, R, B = random_weights("GRU", 1, 3)
    h0 = np.ones((1, N, H), np.float32)
    path = graph_file(tmp_path, "GRU", W, R, B, [("", None), ("h0", h0)])
    with pytest.raises(ValueError, match="constant non-zero initial_h"):
        crnn.from_onnx(path)
    # zeros are crnn's own initial state
    path = graph_file(tmp_path, "GRU", W, R, B, [("", None), ("h0", 0 * h0)])
    assert crnn.from_onnx(path).hidden_size == H
    # a weight computed in the graph, not a constant
    proto = onnx.load(path)
    proto.graph.initializer.remove(next(t for t in proto.graph.initializer
                                        if t.name == "R"))
    proto.graph.input.append(helper.make_tensor_value_info("R", TensorProto.FLOAT, None))
    onnx.save(proto, path)
    with pytest.raises(ValueError, match=r"input R \('R'\) is not a constant"):
        crnn.from_onnx(path)
    # no recurrent node at all
    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["out"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(ValueError, match="has no RNN, LSTM or GRU node"):
        crnn.from_onnx(path)


def test_half_precision_is_refused(tmp_path):
    W, R, B = random_weights("RNN", 1, 1, dtype=np.float16)
    path = graph_file(tmp_path, "RNN", W, R, B)
    with pytest.raises(ValueError, match="float32 or float64, its W and R are float16"):
        crnn.from_onnx(path)
