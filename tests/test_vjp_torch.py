"""crnn.torch: torch.nn.LSTM / GRU / RNN look-alikes that run crnn's engine.

Same state dicts as torch's modules; given the same weights, the same
outputs, final states and gradients (parameters, input, initial state) in
float64 to 1e-10, for tensors (batch first or not, batched or not) and
PackedSequences; and a torch model that swaps nn.LSTM for crnn.torch.LSTM
trains to the same weights step after step.  Skipped without torch.
"""
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import crnn.torch as crnn_torch  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

N, T, D, H = 3, 5, 4, 6
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


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("num_layers,bidirectional,bias", [(1, False, True), (2, True, True),
                                                            (2, False, False)])
def test_state_dict_layout_is_torchs(mode, num_layers, bidirectional, bias):
    reference, ours = pair(mode, num_layers=num_layers, bidirectional=bidirectional,
                           bias=bias)
    assert list(ours.state_dict()) == list(reference.state_dict())
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


CASES = list(itertools.product(MODES, [(1, False), (2, True)],
                               ["batch_first", "time_first", "packed", "unbatched"],
                               [False, True]))


@pytest.mark.parametrize("mode,layers,layout,with_state", CASES,
                         ids=lambda v: str(v))
def test_forward_and_gradients_match_torch(mode, layers, layout, with_state):
    num_layers, bidirectional = layers
    reference, ours = pair(mode, num_layers=num_layers, bidirectional=bidirectional,
                           batch_first=layout != "time_first")
    rng = np.random.default_rng(1)
    lanes = num_layers * (2 if bidirectional else 1)
    shape = (N, T, D) if layout != "time_first" else (T, N, D)
    if layout == "unbatched":
        shape = (T, D)
    X = rng.normal(size=shape)
    states = [rng.normal(size=(lanes, N, H) if layout != "unbatched" else (lanes, H))
              for _ in range(2 if mode == "LSTM" else 1)]
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
    for name in grads:
        close(grads2[name], grads[name], name)


def test_swapping_nn_lstm_trains_to_the_same_weights():
    class Tagger(torch.nn.Module):
        def __init__(self, lstm_class):
            super().__init__()
            torch.manual_seed(0)
            self.lstm = lstm_class(D, H, num_layers=2, batch_first=True,
                                   dtype=torch.float64)
            self.head = torch.nn.Linear(H, 3, dtype=torch.float64)

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


@pytest.mark.parametrize("mode", list(MODES))
def test_sorted_packs_and_no_biases(mode):
    reference, ours = pair(mode, num_layers=2, bias=False, bidirectional=True)
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


def test_refusals():
    with pytest.raises(ValueError, match="proj_size must be 0"):
        crnn_torch.LSTM(D, H, proj_size=2)
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
