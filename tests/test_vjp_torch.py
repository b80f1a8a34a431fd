"""crnn.torch: torch.nn.LSTM / GRU / RNN look-alikes that run crnn's engine.

Same state dicts as torch's modules; given the same weights, the same
outputs, final states and gradients (parameters, input, initial state) in
float64 to 1e-10, for tensors (batch first or not, batched or not) and
PackedSequences; and a torch model that swaps nn.LSTM for crnn.torch.LSTM
trains to the same weights step after step.  All of it again for the
projected LSTM (proj_size: weight_hr_l{k}, h P wide, c H wide).  Skipped
without torch.
"""
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import crnn.torch as crnn_torch  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

N, T, D, H = 3, 5, 4, 6
P = 3               # proj_size of the projected LSTM
LENGTHS = torch.tensor([3, 5, 1])
MODES = {"LSTM": (torch.nn.LSTM, crnn_torch.LSTM), "GRU": (torch.nn.GRU, crnn_torch.GRU),
         "RNN": (torch.nn.RNN, crnn_torch.RNN)}


@pytest.fixture(autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def pair(mode, **options):
    """(torch's module, crnn's) with the same float64 weights."""
    reference_class, crnn_class = MODES[mode]
    torch.manual_seed(0)
    reference = reference_class(D, H, dtype=torch.float64, **options)
    ours = crnn_class(D, H, dtype=torch.float64, **options)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def close(a, b, what):
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10,
                               atol=1e-10, err_msg=what)


# (mode, proj_size): every cell, and the LSTM with a projection
VARIANTS = [(mode, 0) for mode in MODES] + [("LSTM", P)]


def variant_id(value):
    return f"{value[0]}-proj{value[1]}" if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("num_layers,bidirectional,bias", [(1, False, True), (2, True, True),
                                                            (2, False, False)])
def test_state_dict_layout_is_torchs(variant, num_layers, bidirectional, bias):
    mode, proj_size = variant
    options = dict(proj_size=proj_size) if proj_size else {}
    reference, ours = pair(mode, num_layers=num_layers, bidirectional=bidirectional,
                           bias=bias, **options)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert any("weight_hr" in name for name in ours.state_dict()) == bool(proj_size)
    assert ours.proj_size == reference.proj_size and repr(ours) == repr(reference)
    for (name, a), (_, b) in zip(ours.state_dict().items(),
                                 reference.state_dict().items()):
        assert a.shape == b.shape and a.dtype == b.dtype, name
    # and back: torch's module takes crnn.torch's state dict
    reference.load_state_dict(ours.state_dict())
    assert [n for n, _ in ours.named_parameters()] == \
        [n for n, _ in reference.named_parameters()]


def cotangent(tensor):
    """A random tensor shaped like `tensor`, the same for the same shape."""
    rng = np.random.default_rng(list(tensor.shape))
    return torch.tensor(rng.normal(size=tuple(tensor.shape)))


LAYOUTS = ["batch_first", "time_first", "packed", "unbatched"]
CASES = list(itertools.product(MODES, [(1, False), (2, True)], LAYOUTS, [False, True]))
# the projected LSTM: 1-2 layers, each direction
PROJECTED_CASES = list(itertools.product([(1, False), (1, True), (2, False), (2, True)],
                                         LAYOUTS, [False, True]))


@pytest.mark.parametrize("mode,layers,layout,with_state", CASES,
                         ids=lambda v: str(v))
def test_forward_and_gradients_match_torch(mode, layers, layout, with_state):
    check_against_torch(mode, layers, layout, with_state)


@pytest.mark.parametrize("layers,layout,with_state", PROJECTED_CASES,
                         ids=lambda v: str(v))
def test_projected_lstm_matches_torch(layers, layout, with_state):
    # outputs, h_n (P wide), c_n (H wide) and the gradients of X, h_0, c_0
    # and every weight, weight_hr_l{k} included
    check_against_torch("LSTM", layers, layout, with_state, proj_size=P)


def check_against_torch(mode, layers, layout, with_state, proj_size=0):
    """Outputs, final state and every gradient of crnn.torch's module against
    torch's, on the same float64 weights, input and cotangents."""
    num_layers, bidirectional = layers
    options = dict(proj_size=proj_size) if proj_size else {}
    reference, ours = pair(mode, num_layers=num_layers, bidirectional=bidirectional,
                           batch_first=layout != "time_first", **options)
    rng = np.random.default_rng(1)
    lanes = num_layers * (2 if bidirectional else 1)
    shape = (N, T, D) if layout != "time_first" else (T, N, D)
    if layout == "unbatched":
        shape = (T, D)
    X = rng.normal(size=shape)
    widths = [proj_size or H, H][:2 if mode == "LSTM" else 1]     # h's, c's
    states = [rng.normal(size=(lanes, N, w) if layout != "unbatched" else (lanes, w))
              for w in widths]
    results = []
    for module in (reference, ours):
        module.zero_grad()
        x = torch.tensor(X, requires_grad=True)
        hx = [torch.tensor(s, requires_grad=True) for s in states]
        inputs = (pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
                  if layout == "packed" else x)
        output, final = module(inputs, (tuple(hx) if mode == "LSTM" else hx[0])
                               if with_state else None)
        if layout == "packed":
            data = output.data
        else:
            data = output
        finals = final if mode == "LSTM" else (final,)
        loss = (data * cotangent(data)).sum() + sum((f * cotangent(f)).sum()
                                                    for f in finals)
        loss.backward()
        results.append((data, finals, x.grad, [h.grad for h in hx],
                        {n: p.grad for n, p in module.named_parameters()}))
    (data, finals, dx, dhx, grads), (data2, finals2, dx2, dhx2, grads2) = results
    close(data2, data, "outputs")
    for a, b in zip(finals2, finals):
        close(a, b, "final state")
    close(dx2, dx, "input gradient")
    if with_state:
        for a, b in zip(dhx2, dhx):
            close(a, b, "initial state gradient")
    assert set(grads2) == set(grads)
    for name in grads:
        close(grads2[name], grads[name], name)


@pytest.mark.parametrize("proj_size", [0, P])
def test_swapping_nn_lstm_trains_to_the_same_weights(proj_size):
    class Tagger(torch.nn.Module):
        def __init__(self, lstm_class):
            super().__init__()
            torch.manual_seed(0)
            self.lstm = lstm_class(D, H, num_layers=2, batch_first=True,
                                   dtype=torch.float64, proj_size=proj_size)
            self.head = torch.nn.Linear(proj_size or H, 3, dtype=torch.float64)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    reference, ours = Tagger(torch.nn.LSTM), Tagger(crnn_torch.LSTM)
    ours.load_state_dict(reference.state_dict())
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (reference, ours)]
    rng = np.random.default_rng(0)
    for step in range(8):
        x = torch.tensor(rng.normal(size=(N, T, D)))
        y = torch.tensor(rng.integers(0, 3, size=(N, T)))
        for model, optimizer in zip((reference, ours), optimizers):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 3), y.reshape(-1))
            loss.backward()
            optimizer.step()
        for (name, a), (_, b) in zip(reference.state_dict().items(),
                                     ours.state_dict().items()):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-10, atol=1e-10,
                                       err_msg=f"step {step}: {name}")


def test_two_forwards_before_one_backward():
    reference, ours = pair("GRU", batch_first=True)
    rng = np.random.default_rng(0)
    first, second = (torch.tensor(rng.normal(size=(N, T, D))) for _ in range(2))
    for module in (reference, ours):
        module.zero_grad()
        (module(first)[0].sum() + 2 * module(second)[1].sum()).backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), ours.named_parameters()):
        close(b.grad, a.grad, name)
    with torch.no_grad():         # no cache kept: the model goes back to the pool
        ours(first)
    assert sum(len(idle) for idle in ours._pool.values()) == 2


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_sorted_packs_and_no_biases(variant):
    mode, proj_size = variant
    options = dict(proj_size=proj_size) if proj_size else {}
    reference, ours = pair(mode, num_layers=2, bias=False, bidirectional=True, **options)
    x = torch.tensor(np.random.default_rng(0).normal(size=(T, N, D)))
    lengths = torch.tensor([5, 3, 2])           # sorted: enforce_sorted=True
    outputs = []
    for module in (reference, ours):
        module.zero_grad()
        output, final = module(torch.nn.utils.rnn.pack_padded_sequence(x, lengths))
        assert output.sorted_indices is None
        (output.data * cotangent(output.data)).sum().backward()
        outputs.append((output.data, {n: p.grad for n, p in module.named_parameters()}))
    close(outputs[1][0], outputs[0][0], "outputs")
    for name, grad in outputs[0][1].items():
        close(outputs[1][1][name], grad, name)


def test_float32_runs_and_agrees_with_torch_roughly():
    torch.manual_seed(0)
    reference = torch.nn.LSTM(D, H, batch_first=True)
    ours = crnn_torch.LSTM(D, H, batch_first=True)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(N, T, D)
    np.testing.assert_allclose(ours(x)[0].detach().numpy(),
                               reference(x)[0].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_float32_projected_lstm_agrees_with_torch_roughly():
    torch.manual_seed(0)
    reference = torch.nn.LSTM(D, H, batch_first=True, proj_size=P)
    ours = crnn_torch.LSTM(D, H, batch_first=True, proj_size=P)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(N, T, D)
    for a, b in zip((ours(x)[0],) + ours(x)[1], (reference(x)[0],) + reference(x)[1]):
        assert a.dtype == torch.float32 and a.shape == b.shape
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("proj_size", [H, H + 1, -1])
def test_refuses_a_proj_size_outside_0_to_hidden_size(proj_size):
    with pytest.raises(ValueError):             # torch refuses it too
        torch.nn.LSTM(D, H, proj_size=proj_size)
    with pytest.raises(ValueError, match=rf"proj_size must be in \[0, hidden_size\) = "
                                         rf"\[0, {H}\).*got {proj_size}"):
        crnn_torch.LSTM(D, H, proj_size=proj_size)


def test_projected_lstm_refusals():
    with pytest.raises(TypeError, match="proj_size must be an integer, got 2.5"):
        crnn_torch.LSTM(D, H, proj_size=2.5)
    with pytest.raises(TypeError, match="proj_size"):
        crnn_torch.GRU(D, H, proj_size=P)
    # by position too (where torch.nn.GRU would build a GRU with a proj_size)
    with pytest.raises(ValueError, match=f"proj_size must be 0 for a crnn.GRU .*got {P}"):
        crnn_torch.GRU(D, H, 1, True, False, 0.0, False, P)
    lstm = crnn_torch.LSTM(D, H, proj_size=P, dtype=torch.float64)
    x = torch.randn(T, N, D, dtype=torch.float64)
    h0, c0 = torch.zeros(1, N, P, dtype=torch.float64), torch.zeros(1, N, H, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"h_0 must have shape \(1, 3, {P}\), got \(1, 3, {H}\)"):
        lstm(x, (c0, c0))
    with pytest.raises(ValueError, match=rf"c_0 must have shape \(1, 3, {H}\), got \(1, 3, {P}\)"):
        lstm(x, (h0, h0))
    output, (h_n, c_n) = lstm(x, (h0, c0))
    assert output.shape == (T, N, P) and h_n.shape == (1, N, P) and c_n.shape == (1, N, H)


def test_refusals():
    with pytest.raises(ValueError, match="dropout must be 0"):
        crnn_torch.GRU(D, H, num_layers=2, dropout=0.5)
    with pytest.raises(ValueError, match="CPU only"):
        crnn_torch.RNN(D, H, device="cuda")
    lstm = crnn_torch.LSTM(D, H, dtype=torch.float64)
    with pytest.raises(TypeError, match="module's dtype torch.float64, got torch.float32"):
        lstm(torch.randn(T, N, D))
    with pytest.raises(TypeError, match="pair"):
        lstm(torch.randn(T, N, D, dtype=torch.float64),
             torch.zeros(1, N, H, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(1, 3, 6\), got \(1, 2, 6\)"):
        lstm(torch.randn(T, N, D, dtype=torch.float64),
             (torch.zeros(1, 2, H, dtype=torch.float64),) * 2)
