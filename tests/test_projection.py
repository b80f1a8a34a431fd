"""crnn.LSTM(proj_size=P): PyTorch's projected LSTM,

    m(t) = o ⊙ tanh(C(t))    h(t) = R m(t)    R{l}: (P, H),  W{l}: (4H, P)

Checked against torch.nn.LSTM(proj_size=P) at float64 (outputs, final
states, loss, every gradient and the initial-state gradients, ragged
batches through pack_padded_sequence; the weights cross through
from_torch), against the float64 numpy reference (tests/reference.py, which
takes R), central finite differences of crnn's own float64 loss, one and
two threads, the stream, save/load and pickling, and the argument checks."""
import numpy as np
import pytest

import crnn
from variant_checks import (check_against_reference, lstm_batch, check_finite_differences,
                            check_save_load, check_stream,
                            check_threads_and_one_hot, check_trainer_learns)

N, T, D, H, P, K = 4, 6, 3, 7, 4, 2
LENGTHS = np.array([6, 2, 4, 1])


def make(layers=1, bidirectional=False, output="softmax", sequences=True,
         dtype="float64", seed=0, peepholes=False):
    return crnn.LSTM(D, H, K if output else None, num_layers=layers,
                     bidirectional=bidirectional, proj_size=P, peepholes=peepholes,
                     output=output, return_sequences=sequences, dtype=dtype,
                     seed=seed)


def batch(seed=1, lanes=1, output="softmax", sequences=True):
    """X, y and an initial state (h0, c0) for a model of these sizes."""
    return lstm_batch(make(output=output, sequences=sequences), N, T, seed, lanes)


def test_parameters_states_and_settings():
    model = make(layers=2, bidirectional=True)
    p = model.params
    assert p["W0"].shape == (4 * H, P) and p["R1_reverse"].shape == (P, H)
    assert p["U1"].shape == (4 * H, 2 * P) and p["V"].shape == (K, 2 * P)
    assert "proj_size=4" in repr(model) and "R0" not in crnn.LSTM(D, H).params
    X, _, _ = batch()
    Y, (h_n, c_n) = model.forward(X, return_state=True)
    assert h_n.shape == (4, N, P) and c_n.shape == (4, N, H)
    none = make(output=None)
    assert none.forward(X).shape == (N, T, P)
    with pytest.raises(AttributeError, match="read-only"):
        model.proj_size = 0


@pytest.mark.parametrize("value,error,message", [
    (H, ValueError, r"proj_size must be in \[0, hidden_size\) = \[0, 7\).*got 7"),
    (H + 3, ValueError, r"got 10"),
    (-1, ValueError, r"got -1"),
    (2.0, TypeError, r"proj_size must be an integer, got 2.0"),
    (True, TypeError, r"proj_size must be an integer, got True"),
])
def test_bad_proj_size(value, error, message):
    with pytest.raises(error, match=message):
        crnn.LSTM(D, H, proj_size=value)


@pytest.mark.parametrize("cls", [crnn.RNN, crnn.GRU])
def test_only_the_lstm_has_a_projection(cls):
    with pytest.raises(ValueError, match=rf"proj_size must be 0 for a "
                                         rf"crnn.{cls.__name__} .*got 3"):
        cls(D, H, proj_size=3)
    assert cls(D, H, proj_size=0).proj_size == 0


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 2e-5)])
@pytest.mark.parametrize("output,sequences", [("softmax", True), ("linear", False)])
@pytest.mark.parametrize("layers,bidirectional,peepholes", [
    (1, False, False), (2, False, False), (2, True, False), (2, True, True)])
def test_matches_the_numpy_reference(layers, bidirectional, peepholes, output,
                                     sequences, dtype, tol):
    lanes = layers * (1 + bidirectional)
    model = make(layers, bidirectional, output, sequences, dtype, peepholes=peepholes)
    X, y, state = batch(lanes=lanes, output=output, sequences=sequences)
    check_against_reference(model, X, y, LENGTHS, state, tol)


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_gradients_match_finite_differences(layers, bidirectional):
    lanes = layers * (1 + bidirectional)
    model = make(layers, bidirectional, "linear", seed=3)
    X, y, state = batch(seed=4, lanes=lanes, output="linear")
    check_finite_differences(model, X, y, LENGTHS, state)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_and_two_threads_agree_and_tokens_equal_one_hot(dtype):
    model = crnn.LSTM(7, 40, K, num_layers=2, proj_size=24, dtype=dtype, seed=2)
    rng = np.random.default_rng(6)
    tokens = rng.integers(0, 7, size=(16, 30))
    check_threads_and_one_hot(model, tokens, rng.integers(0, K, size=(16, 30)))


def test_stream_steps_equal_the_forward():
    model = make(layers=2, output="linear")
    X, _, (h0, c0) = batch(lanes=2)
    with pytest.raises(ValueError, match=r"state c must have shape \(2, 4, 7\)"):
        model.stream(batch_size=N).state = (h0, h0)
    check_stream(model, X, (h0, c0))


def test_initial_state_shapes_are_checked():
    model = make()
    X, y, (h0, c0) = batch()
    with pytest.raises(ValueError, match="c0"):
        model.forward(X, initial_state=(h0, h0))
    with pytest.raises(ValueError, match="h0"):
        model.forward(X, initial_state=(c0, c0))


def test_save_load_and_pickle_keep_the_projection(tmp_path):
    model = make(layers=2, bidirectional=True, seed=4)
    X, _, _ = batch(seed=5)
    for loaded in check_save_load(model, X, LENGTHS, tmp_path / "lstm.npz"):
        assert loaded.proj_size == P and "R1_reverse" in loaded.params


def test_trainer_learns_the_projection():
    X, y, _ = batch(seed=8, output="linear")
    check_trainer_learns(make(output="linear", seed=7), X, y, "R0")


def test_onnx_has_no_projection(tmp_path):
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="ONNX's LSTM has no projection.*proj_size=4"):
        make().to_onnx(tmp_path / "x.onnx")


# ------------------------------------------------------------ PyTorch

def torch_model(layers, bidirectional, seed):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(D, H, num_layers=layers, bidirectional=bidirectional,
                         proj_size=P, batch_first=True, dtype=torch.float64)
    linear = torch.nn.Linear(P * (1 + bidirectional), K, dtype=torch.float64)
    return torch, lstm, linear


@pytest.mark.parametrize("sequences", [True, False])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False), (2, True)])
def test_matches_pytorch_at_float64(layers, bidirectional, sequences):
    """Outputs, h_n and c_n, the loss, every gradient and the initial-state
    gradients, on a ragged batch (packed for torch) with an initial state."""
    torch, lstm, linear = torch_model(layers, bidirectional, seed=layers)
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    model = crnn.from_torch(lstm, linear, output="linear", return_sequences=sequences)
    assert model.proj_size == P
    lanes = layers * (1 + bidirectional)
    X, y, (h0, c0) = batch(seed=9, lanes=lanes, output="linear", sequences=sequences)
    Xt = torch.tensor(X)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    packed = pack_padded_sequence(Xt, torch.tensor(LENGTHS), batch_first=True,
                                  enforce_sorted=False)
    out, (h_n, c_n) = lstm(packed, (h0t, c0t))
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    mask = torch.tensor(np.arange(T)[None, :] < LENGTHS[:, None])
    if sequences:
        Yt = linear(out) * mask[..., None]
        count = int(LENGTHS.sum())
    else:
        top = h_n[-1] if not bidirectional else torch.cat([h_n[-2], h_n[-1]], 1)
        Yt = linear(top)
        count = N
    diff = Yt - torch.tensor(y)
    if sequences:
        diff = diff * mask[..., None]
    loss_t = 0.5 * (diff ** 2).sum() / count
    loss_t.backward()

    loss, grads, (dh0, dc0), (hn, cn), Y = model.loss_and_grad(
        X, y, LENGTHS, (h0, c0), return_state_grad=True, return_state=True,
        return_outputs=True)
    tol = 1e-10
    np.testing.assert_allclose(Y, Yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(hn, h_n.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(cn, c_n.detach().numpy(), rtol=tol, atol=tol)
    assert abs(loss - loss_t.item()) <= tol
    for layer in range(layers):
        for suffix in ("", "_reverse")[:1 + bidirectional]:
            torch_suffix = f"_l{layer}{suffix}"
            for key, name in (("U", "weight_ih"), ("W", "weight_hh"),
                              ("R", "weight_hr"), ("b", "bias_ih")):
                np.testing.assert_allclose(
                    grads[f"{key}{layer}{suffix}"],
                    getattr(lstm, name + torch_suffix).grad.numpy(),
                    rtol=tol, atol=tol, err_msg=f"{key}{layer}{suffix}")
    np.testing.assert_allclose(grads["V"], linear.weight.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grads["c"], linear.bias.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dc0, c0t.grad.numpy(), rtol=tol, atol=tol)


def test_to_torch_and_back_are_exact():
    torch = pytest.importorskip("torch")
    model = make(layers=2, bidirectional=True, output="linear", seed=11)
    module, linear = model.to_torch()
    assert module.proj_size == P and linear.in_features == 2 * P
    again = crnn.from_torch(module, linear, output="linear")
    for name, array in model.params.items():
        np.testing.assert_array_equal(again.params[name], array, err_msg=name)
    X, _, _ = batch(seed=12)
    with torch.no_grad():
        expected = linear(module(torch.tensor(X))[0]).numpy()
    np.testing.assert_allclose(model.forward(X), expected, rtol=1e-12, atol=1e-12)
    # a head that reads hidden_size values does not fit a projected LSTM
    with pytest.raises(ValueError, match=r"proj_size \* directions = 4 \* 2 = 8"):
        crnn.from_torch(module, torch.nn.Linear(2 * H, K, dtype=torch.float64))


def test_a_state_whose_proj_size_does_not_fit_is_refused():
    """A pickled (or loaded) state is checked as the constructor checks it."""
    state = make().__getstate__()
    for value, message in ((H, "proj_size=7; it must be below hidden_size=7"),
                           (2, r"parameter 'W0' must be float64 of shape \(28, 2\)")):
        bad = dict(state, proj_size=value)
        with pytest.raises(ValueError, match=message):
            crnn.LSTM.__new__(crnn.LSTM).__setstate__(bad)
