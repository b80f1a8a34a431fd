"""model.to_onnx: ONNX's own RNN/LSTM/GRU operators, checked by the onnx
package and run by ONNX Runtime (agreeing with crnn's forward to 1e-5 in
float32) and, for float64 graphs, by onnx's reference evaluator.
"""
import os
import sys

import numpy as np
import pytest

import crnn

onnx = pytest.importorskip("onnx")

N, T, D, H, K = 3, 6, 4, 5, 3
LENGTHS = np.array([4, 6, 1], dtype=np.int64)
KINDS = ["RNN", "RNN-relu", "LSTM", "GRU"]


@pytest.fixture
def ort():
    return pytest.importorskip("onnxruntime")


def make_model(kind, dtype="float32", num_layers=2, bidirectional=True,
               output="softmax", return_sequences=True, input_size=D):
    options = dict(num_layers=num_layers, bidirectional=bidirectional, output=output,
                   return_sequences=return_sequences, dtype=dtype, seed=5)
    if kind.startswith("RNN"):
        options["nonlinearity"] = "relu" if kind == "RNN-relu" else "tanh"
    model = getattr(crnn, kind.split("-")[0])(
        input_size, H, None if output is None else K, **options)
    rng = np.random.default_rng(6)
    for value in model.params.values():   # biases (and GRU's bn) matter
        value += rng.uniform(-0.5, 0.5, value.shape).astype(value.dtype)
    return model


def run(ort, path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["Y"], feeds)[0]


def inputs(dtype="float32"):
    return np.random.default_rng(7).standard_normal((N, T, D)).astype(dtype)


TOL = 1e-5


@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_onnx_runtime_agrees(tmp_path, ort, kind, num_layers, bidirectional,
                             return_sequences):
    model = make_model(kind, num_layers=num_layers, bidirectional=bidirectional,
                       return_sequences=return_sequences)
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    X = inputs()
    Y = run(ort, path, {"X": X, "lengths": LENGTHS})
    expected = model.forward(X, LENGTHS)
    assert Y.shape == expected.shape and Y.dtype == np.float32
    np.testing.assert_allclose(Y, expected, rtol=TOL, atol=TOL)
    if return_sequences:   # crnn's padded rows are exactly 0, ONNX's too
        assert np.all(Y[np.arange(T)[None, :] >= LENGTHS[:, None]] == 0)
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
@pytest.mark.parametrize("output", ["linear", None])
@pytest.mark.parametrize("kind", KINDS)
def test_onnx_runtime_other_outputs(tmp_path, ort, kind, output, return_sequences):
    model = make_model(kind, output=output, return_sequences=return_sequences)
    model.to_onnx(tmp_path / "m.onnx")
    X = inputs()
    np.testing.assert_allclose(run(ort, tmp_path / "m.onnx", {"X": X, "lengths": LENGTHS}),
                               model.forward(X, LENGTHS), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_without_lengths_input(tmp_path, ort, kind):
    model = make_model(kind)
    model.to_onnx(tmp_path / "m.onnx", lengths=False)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [i.name for i in graph.input] == ["X"]
    X = inputs()
    np.testing.assert_allclose(run(ort, tmp_path / "m.onnx", {"X": X}), model.forward(X),
                               rtol=TOL, atol=TOL)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_onnx_token_inputs(tmp_path, ort, kind, return_sequences):
    vocabulary = 7
    model = make_model(kind, input_size=vocabulary, return_sequences=return_sequences)
    model.to_onnx(tmp_path / "m.onnx", tokens=True)
    tokens = np.random.default_rng(8).integers(0, vocabulary, (N, T))
    Y = run(ort, tmp_path / "m.onnx", {"X": tokens, "lengths": LENGTHS})
    np.testing.assert_allclose(Y, model.forward(tokens, LENGTHS), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_float64_model_exported_as_float32(tmp_path, ort, kind):
    model = make_model(kind, "float64")
    model.to_onnx(tmp_path / "m.onnx", dtype="float32")
    X = inputs("float64")
    Y = run(ort, tmp_path / "m.onnx", {"X": X.astype(np.float32), "lengths": LENGTHS})
    np.testing.assert_allclose(Y, model.forward(X, LENGTHS), rtol=1e-4, atol=TOL)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])   # its RNN knows no Relu
def test_onnx_float64_graph_by_reference_evaluator(tmp_path, kind, return_sequences):
    # ONNX Runtime has no float64 RNN kernels; onnx's own reference
    # evaluator runs the double graph (it ignores sequence_lens: full lengths)
    from onnx.reference import ReferenceEvaluator
    model = make_model(kind, "float64", return_sequences=return_sequences)
    model.to_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    X = inputs("float64")
    full = np.full(N, T, dtype=np.int64)
    Y = ReferenceEvaluator(proto).run(["Y"], {"X": X, "lengths": full})[0]
    assert Y.dtype == np.float64
    np.testing.assert_allclose(Y, model.forward(X), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_graph_uses_onnx_operators(tmp_path, kind):
    model = make_model(kind, num_layers=3)
    model.to_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert {opset.domain for opset in proto.opset_import} == {""}
    ops = [node for node in proto.graph.node if node.op_type == kind.split("-")[0]]
    assert len(ops) == 3
    for op in ops:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in op.attribute}
        assert attributes["direction"] == b"bidirectional"
        assert attributes["hidden_size"] == H
        if kind == "GRU":
            assert attributes["linear_before_reset"] == 1
        if kind == "RNN-relu":
            assert attributes["activations"] == [b"Relu", b"Relu"]
    assert [node.op_type for node in proto.graph.node][-1] == "Mul"     # the mask
    assert "Softmax" in [node.op_type for node in proto.graph.node]
    assert [i.name for i in proto.graph.input] == ["X", "lengths"]
    assert [o.name for o in proto.graph.output] == ["Y"]
    assert proto.producer_name == "crnn"


def test_onnx_gate_order(tmp_path):
    # LSTM: crnn i, f, a, o -> ONNX i, o, f, c; GRU: r, z, n -> z, r, h
    from onnx import numpy_helper
    for kind, order in (("LSTM", [0, 3, 1, 2]), ("GRU", [1, 0, 2])):
        model = make_model(kind, num_layers=1, bidirectional=False)
        model.to_onnx(tmp_path / "m.onnx")
        proto = onnx.load(str(tmp_path / "m.onnx"))
        op = next(n for n in proto.graph.node if n.op_type == kind)
        weights = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
        W = weights[op.input[1]][0]
        for onnx_block, crnn_block in enumerate(order):
            np.testing.assert_array_equal(
                W[onnx_block * H:(onnx_block + 1) * H],
                model.params["U0"][crnn_block * H:(crnn_block + 1) * H])


def test_to_onnx_refusals(tmp_path):
    model = make_model("LSTM")
    with pytest.raises(ValueError, match="opset"):
        model.to_onnx(tmp_path / "m.onnx", opset=9)
    with pytest.raises(TypeError, match="lengths must be True or False"):
        model.to_onnx(tmp_path / "m.onnx", lengths="yes")
    with pytest.raises(ValueError, match="dtype"):
        model.to_onnx(tmp_path / "m.onnx", dtype="float16")
    with pytest.raises(TypeError):
        model.to_onnx(tmp_path / "m.onnx", unknown_option=1)
    assert os.listdir(tmp_path) == []


def test_to_onnx_without_onnx(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="needs the onnx package"):
        make_model("GRU").to_onnx(tmp_path / "m.onnx")


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_onnx_opsets(tmp_path, ort, opset):
    model = make_model("GRU")
    model.to_onnx(tmp_path / "m.onnx", opset=opset)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.opset_import[0].version == opset
    X = inputs()
    np.testing.assert_allclose(run(ort, tmp_path / "m.onnx", {"X": X, "lengths": LENGTHS}),
                               model.forward(X, LENGTHS), rtol=TOL, atol=TOL)
