"""crnn.from_torch / model.to_torch against PyTorch itself.

Every torch.nn.RNN (tanh, relu) / LSTM / GRU configuration (layers,
directions, batch_first, bias, dtype, a Linear head or none) imports to a
crnn model whose forward agrees with torch (ragged batches through
pack_padded_sequence) to 1e-10 in float64, 1e-5 in float32; crnn → torch →
crnn is exact; what crnn or torch cannot represent is refused clearly.
"""
import sys

import numpy as np
import pytest

import crnn
import crnn.interop

TOL = {"float32": 1e-5, "float64": 1e-10}
N, T, D, H, K = 3, 6, 4, 5, 3
LENGTHS = np.array([4, 6, 1])


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def torch_dtype(torch, dtype):
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def make_torch(torch, kind, dtype="float64", num_layers=2, bidirectional=True,
               batch_first=True, bias=True, head=True, head_bias=True, seed=0):
    torch.manual_seed(seed)
    options = dict(num_layers=num_layers, bidirectional=bidirectional,
                   batch_first=batch_first, bias=bias, dtype=torch_dtype(torch, dtype))
    if kind.startswith("RNN"):
        options["nonlinearity"] = "relu" if kind == "RNN-relu" else "tanh"
    module = getattr(torch.nn, kind.split("-")[0])(D, H, **options)
    # PyTorch's init leaves the biases small; make b_hh matter
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.startswith("bias"):
                parameter.uniform_(-0.5, 0.5)
    linear = None
    if head:
        dirs = 2 if bidirectional else 1
        linear = torch.nn.Linear(H * dirs, K, bias=head_bias,
                                 dtype=torch_dtype(torch, dtype))
    return module, linear


def torch_forward(torch, module, linear, X, lengths, output="softmax",
                  return_sequences=True, initial_state=None):
    """What crnn's forward returns, computed by torch: padded positions 0."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    x = torch.from_numpy(X)
    if not module.batch_first:
        x = x.transpose(0, 1)
    packed = pack_padded_sequence(x, torch.from_numpy(lengths),
                                  batch_first=module.batch_first, enforce_sorted=False)
    with torch.no_grad():
        if initial_state is None:
            out, state = module(packed)
        else:
            out, state = module(packed, initial_state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=X.shape[1])
        h_n = state[0] if isinstance(state, tuple) else state
        dirs = 2 if module.bidirectional else 1
        h = out if return_sequences else torch.cat(list(h_n[-dirs:]), dim=-1)
        if linear is not None:
            h = linear(h)
            if output == "softmax":
                h = torch.softmax(h, dim=-1)
        Y = h.numpy().copy()
    if return_sequences:
        Y[np.arange(X.shape[1])[None, :] >= lengths[:, None]] = 0
    return Y, state


def inputs(dtype, seed=1):
    return np.random.default_rng(seed).standard_normal((N, T, D)).astype(dtype)


def close(a, b, dtype, what=""):
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype], err_msg=what)


# ---------------------------------------------------------------- from_torch
KINDS = ["RNN", "RNN-relu", "LSTM", "GRU"]
CONFIGS = [  # num_layers, bidirectional, batch_first, bias
    (1, False, True, True), (2, True, False, True), (3, False, False, True),
    (2, True, True, False)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_from_torch_forward_agrees(torch, kind, config, dtype):
    num_layers, bidirectional, batch_first, bias = config
    module, linear = make_torch(torch, kind, dtype, num_layers, bidirectional,
                                batch_first, bias)
    model = crnn.from_torch(module, linear)
    assert type(model) is getattr(crnn, kind.split("-")[0])
    assert str(model.dtype) == dtype
    assert (model.num_layers, model.bidirectional) == (num_layers, bidirectional)
    assert (model.input_size, model.hidden_size, model.output_size) == (D, H, K)
    if kind.startswith("RNN"):
        assert model.nonlinearity == ("relu" if kind == "RNN-relu" else "tanh")
    X = inputs(dtype)
    expected, _ = torch_forward(torch, module, linear, X, LENGTHS)
    close(model.forward(X, LENGTHS), expected, dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_from_torch_states_agree(torch, kind):
    module, linear = make_torch(torch, kind, "float64", 2, True, True)
    model = crnn.from_torch(module, linear)
    X = inputs("float64")
    rng = np.random.default_rng(2)
    h0 = rng.standard_normal((4, N, H))
    c0 = rng.standard_normal((4, N, H))
    crnn_state = (h0, c0) if kind == "LSTM" else h0
    torch_state = (tuple(map(torch.from_numpy, (h0, c0))) if kind == "LSTM"
                   else torch.from_numpy(h0))
    expected, expected_state = torch_forward(torch, module, linear, X, LENGTHS,
                                             initial_state=torch_state)
    Y, state = model.forward(X, LENGTHS, initial_state=crnn_state, return_state=True)
    close(Y, expected, "float64")
    if kind == "LSTM":
        close(state[0], expected_state[0].numpy(), "float64", "h_n")
        close(state[1], expected_state[1].numpy(), "float64", "c_n")
    else:
        close(state, expected_state.numpy(), "float64", "h_n")


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_from_torch_many_to_one(torch, kind, bidirectional):
    module, linear = make_torch(torch, kind, "float64", 2, bidirectional)
    model = crnn.from_torch(module, linear, return_sequences=False)
    assert model.return_sequences is False
    X = inputs("float64")
    expected, _ = torch_forward(torch, module, linear, X, LENGTHS, return_sequences=False)
    close(model.forward(X, LENGTHS), expected, "float64")


@pytest.mark.parametrize("kind", KINDS)
def test_from_torch_linear_output_and_no_head(torch, kind):
    module, linear = make_torch(torch, kind, "float64", 1, True, head_bias=False)
    X = inputs("float64")
    model = crnn.from_torch(module, linear, output="linear")
    assert model.output == "linear"
    np.testing.assert_array_equal(model.params["c"], 0)   # a head without bias
    expected, _ = torch_forward(torch, module, linear, X, LENGTHS, output="linear")
    close(model.forward(X, LENGTHS), expected, "float64")

    bare = crnn.from_torch(module)            # no head: outputs are h
    assert bare.output is None and bare.output_size is None
    assert "V" not in bare.params
    expected, _ = torch_forward(torch, module, None, X, LENGTHS)
    close(bare.forward(X, LENGTHS), expected, "float64")
    assert crnn.from_torch(module, output=None).output is None


def test_from_torch_bias_folding(torch):
    module, _ = make_torch(torch, "GRU", "float64", 1, False, head=False)
    model = crnn.from_torch(module)
    b_ih, b_hh = module.bias_ih_l0.detach().numpy(), module.bias_hh_l0.detach().numpy()
    np.testing.assert_array_equal(model.params["b0"][:2 * H], b_ih[:2 * H] + b_hh[:2 * H])
    np.testing.assert_array_equal(model.params["b0"][2 * H:], b_ih[2 * H:])
    np.testing.assert_array_equal(model.params["bn0"], b_hh[2 * H:])
    module, _ = make_torch(torch, "LSTM", "float64", 1, False, head=False)
    model = crnn.from_torch(module)
    np.testing.assert_array_equal(
        model.params["b0"], (module.bias_ih_l0 + module.bias_hh_l0).detach().numpy())


def test_from_torch_accepts_dropout_and_copies(torch):
    module = torch.nn.LSTM(D, H, num_layers=2, dropout=0.3, dtype=torch.float64)
    model = crnn.from_torch(module)
    module.eval()
    X = inputs("float64")
    expected, _ = torch_forward(torch, module, None, X, LENGTHS)
    close(model.forward(X, LENGTHS), expected, "float64")
    with torch.no_grad():
        module.weight_ih_l0.zero_()             # the model owns copies
    assert np.any(model.params["U0"] != 0)


# ---------------------------------------------------------------- to_torch
def crnn_model(kind, dtype="float64", num_layers=2, bidirectional=True,
               output="softmax", return_sequences=True):
    options = dict(num_layers=num_layers, bidirectional=bidirectional, output=output,
                   return_sequences=return_sequences, dtype=dtype, seed=3)
    if kind.startswith("RNN"):
        options["nonlinearity"] = "relu" if kind == "RNN-relu" else "tanh"
    model = getattr(crnn, kind.split("-")[0])(D, H, None if output is None else K, **options)
    rng = np.random.default_rng(4)
    for value in model.params.values():     # biases and bn away from init
        value += rng.uniform(-0.5, 0.5, value.shape).astype(value.dtype)
    return model


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("output", ["softmax", "linear", None])
@pytest.mark.parametrize("kind", KINDS)
def test_to_torch_round_trip_is_exact(torch, kind, output, dtype):
    model = crnn_model(kind, dtype, output=output)
    module, linear = model.to_torch()
    assert module.batch_first and module.bidirectional
    assert module.num_layers == 2 and module.hidden_size == H
    assert all(p.dtype == torch_dtype(torch, dtype) for p in module.parameters())
    assert (linear is None) == (output is None)
    back = crnn.from_torch(module, linear, output=output or "softmax")
    assert type(back) is type(model) and back.output == output
    assert sorted(back.params) == sorted(model.params)
    for name, value in model.params.items():
        assert back.params[name].dtype == value.dtype
        np.testing.assert_array_equal(back.params[name], value, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_to_torch_biases(torch, kind):
    model = crnn_model(kind, num_layers=1, bidirectional=False)
    module, _ = model.to_torch()
    b_hh = module.bias_hh_l0.detach().numpy()
    np.testing.assert_array_equal(module.bias_ih_l0.detach().numpy(), model.params["b0"])
    if kind == "GRU":
        np.testing.assert_array_equal(b_hh[:2 * H], 0)
        np.testing.assert_array_equal(b_hh[2 * H:], model.params["bn0"])
    else:
        np.testing.assert_array_equal(b_hh, 0)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_to_torch_forward_agrees(torch, kind, return_sequences):
    model = crnn_model(kind, return_sequences=return_sequences)
    module, linear = model.to_torch()
    X = inputs("float64")
    expected, _ = torch_forward(torch, module, linear, X, LENGTHS,
                                return_sequences=return_sequences)
    close(model.forward(X, LENGTHS), expected, "float64")


@pytest.mark.parametrize("kind", KINDS)
def test_torch_crnn_torch_gives_the_same_function(torch, kind):
    module, linear = make_torch(torch, kind, "float64", 2, True)
    again, again_linear = crnn.from_torch(module, linear).to_torch()
    X = inputs("float64")
    close(torch_forward(torch, again, again_linear, X, LENGTHS)[0],
          torch_forward(torch, module, linear, X, LENGTHS)[0], "float64")


def test_proj_size_is_converted(torch):
    """(test_projection.py checks the outputs and gradients)"""
    module = torch.nn.LSTM(D, H, proj_size=2)
    model = crnn.from_torch(module)
    assert model.proj_size == 2
    np.testing.assert_array_equal(model.params["R0"],
                                  module.weight_hr_l0.detach().numpy())


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("make, match", [
    (lambda torch: torch.nn.LSTMCell(D, H), "cells"),
    (lambda torch: torch.nn.Linear(D, H), "torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU"),
    (lambda torch: object(), "got builtins.object"),
])
def test_refuses_other_modules(torch, make, match):
    with pytest.raises(TypeError, match=match):
        crnn.from_torch(make(torch))


def test_refuses_mismatched_head(torch):
    module, _ = make_torch(torch, "LSTM", "float64", 1, True)
    with pytest.raises(ValueError, match=r"takes 5 features.*5 \* 2 = 10"):
        crnn.from_torch(module, torch.nn.Linear(H, K, dtype=torch.float64))
    with pytest.raises(TypeError, match="must be a torch.nn.Linear"):
        crnn.from_torch(module, torch.nn.Conv1d(2 * H, K, 1))
    with pytest.raises(TypeError, match="convert one"):
        crnn.from_torch(module, torch.nn.Linear(2 * H, K, dtype=torch.float32))


def test_refuses_contradictory_output(torch):
    module, linear = make_torch(torch, "GRU", "float64", 1, False)
    with pytest.raises(ValueError, match="linear head was given with output=None"):
        crnn.from_torch(module, linear, output=None)
    with pytest.raises(ValueError, match="output='linear' needs"):
        crnn.from_torch(module, output="linear")
    with pytest.raises(ValueError, match="output must be"):
        crnn.from_torch(module, linear, output="sigmoid")


def test_refuses_other_dtypes(torch):
    module = torch.nn.GRU(D, H, dtype=torch.float16)
    with pytest.raises(TypeError, match="float32 or float64.*float16"):
        crnn.from_torch(module)


def test_clear_error_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # import torch fails
    model = crnn.LSTM(D, H, K)
    with pytest.raises(ImportError, match="needs PyTorch"):
        model.to_torch()
    with pytest.raises(ImportError, match="needs PyTorch"):
        crnn.from_torch(object())
