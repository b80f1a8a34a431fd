"""The same models computed by PyTorch (nn.RNN / nn.LSTM / nn.GRU + nn.Linear + loss).

Used to check both the numpy reference (test_reference_selfcheck.py, every
cell) and crnn (test_torch_parity.py). Weights come from a
crnn-style params dict:
weight_ih_l{l}{_reverse} = U{l}{_reverse}, weight_hh = W, bias_ih = b,
Linear.weight = V, Linear.bias = c, and bias_hh = 0 (RNN, LSTM: MODEL.md's
folding of b_ih + b_hh) or bias_hh = [0, 0, bn] (GRU: b_hn = bn). Ragged
batches go through pack_padded_sequence, so torch never sees the padding.
"""

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from reference import RefResult, pad_targets, to_padded


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: these problems are tiny, and torch's thread
    pool stalls badly (tens of times slower) when the cores are shared."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


TORCH_CLASSES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def build_torch(params, *, num_layers, bidirectional, output, nonlinearity="tanh",
                cell="rnn", dtype=torch.float64):
    """nn.RNN / nn.LSTM / nn.GRU (+ nn.Linear) holding ``params``."""
    H, D = params["W0"].shape[1], params["U0"].shape[1]
    dirs = 2 if bidirectional else 1
    kw = dict(nonlinearity=nonlinearity) if cell == "rnn" else {}
    rnn = TORCH_CLASSES[cell](D, H, num_layers=num_layers, bias=True, batch_first=True,
                              bidirectional=bidirectional, dtype=dtype, **kw)
    with torch.no_grad():
        for l in range(num_layers):
            for d in range(dirs):
                s = "" if d == 0 else "_reverse"
                getattr(rnn, f"weight_ih_l{l}{s}").copy_(torch.from_numpy(np.asarray(params[f"U{l}{s}"], dtype=np.float64)))
                getattr(rnn, f"weight_hh_l{l}{s}").copy_(torch.from_numpy(np.asarray(params[f"W{l}{s}"], dtype=np.float64)))
                getattr(rnn, f"bias_ih_l{l}{s}").copy_(torch.from_numpy(np.asarray(params[f"b{l}{s}"], dtype=np.float64)))
                getattr(rnn, f"bias_hh_l{l}{s}").zero_()
                if cell == "gru":
                    # b_hn sits inside r ⊙ (W_hn h + b_hn): it cannot be folded
                    getattr(rnn, f"bias_hh_l{l}{s}")[2 * H:].copy_(
                        torch.from_numpy(np.asarray(params[f"bn{l}{s}"], dtype=np.float64)))
    linear = None
    if output is not None:
        K = params["V"].shape[0]
        linear = torch.nn.Linear(H * dirs, K, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.asarray(params["V"], dtype=np.float64)))
            linear.bias.copy_(torch.from_numpy(np.asarray(params["c"], dtype=np.float64)))
    return rnn, linear


def torch_grads_as_crnn(rnn, linear, num_layers, bidirectional):
    """Map torch .grad tensors to crnn's keys (bias_ih.grad == bias_hh.grad == ∂L/∂b;
    for a GRU only on the r, z blocks, and bias_hh.grad's n block is ∂L/∂bn)."""
    dirs = 2 if bidirectional else 1
    gru = isinstance(rnn, torch.nn.GRU)
    H = rnn.hidden_size
    out = {}
    for l in range(num_layers):
        for d in range(dirs):
            s = "" if d == 0 else "_reverse"
            out[f"U{l}{s}"] = getattr(rnn, f"weight_ih_l{l}{s}").grad.double().numpy().copy()
            out[f"W{l}{s}"] = getattr(rnn, f"weight_hh_l{l}{s}").grad.double().numpy().copy()
            gih = getattr(rnn, f"bias_ih_l{l}{s}").grad.double().numpy()
            ghh = getattr(rnn, f"bias_hh_l{l}{s}").grad.double().numpy()
            # z = ... + b_ih + b_hh: both receive ∂L/∂z summed, i.e. ∂L/∂b
            tol = 1e-12 if getattr(rnn, f"bias_ih_l{l}{s}").dtype == torch.float64 else 1e-5
            folded = slice(0, 2 * H) if gru else slice(None)
            np.testing.assert_allclose(gih[folded], ghh[folded], rtol=tol, atol=tol * 1e-2)
            out[f"b{l}{s}"] = gih.copy()
            if gru:
                out[f"bn{l}{s}"] = ghh[2 * H:].copy()
    if linear is not None:
        out["V"] = linear.weight.grad.double().numpy().copy()
        out["c"] = linear.bias.grad.double().numpy().copy()
    return out


def torch_run(*args, **kwargs):
    """Like reference.reference, computed by PyTorch. Returns a RefResult
    (for an LSTM, state and dstate are pairs)."""
    with one_thread():
        return _torch_run(*args, **kwargs)


def _torch_run(params, X, y=None, lengths=None, initial_state=None, *, cell="rnn",
               num_layers=1, bidirectional=False, nonlinearity="tanh",
               output="softmax", return_sequences=True, reduction="mean",
               dtype=torch.float64):
    dirs = 2 if bidirectional else 1
    H, D = params["W0"].shape[1], params["U0"].shape[1]
    Xf, lengths = to_padded(X, lengths, D)
    N, T = Xf.shape[:2]
    rnn, linear = build_torch(params, num_layers=num_layers, bidirectional=bidirectional,
                              nonlinearity=nonlinearity, output=output, cell=cell,
                              dtype=dtype)
    x = torch.tensor(Xf, dtype=dtype)

    def leaf(value):
        if value is None:
            return torch.zeros((num_layers * dirs, N, H), dtype=dtype, requires_grad=True)
        return torch.tensor(np.asarray(value, dtype=np.float64), dtype=dtype,
                            requires_grad=True)

    if cell == "lstm":
        h0_in, c0_in = (None, None) if initial_state is None else initial_state
        h0, c0 = leaf(h0_in), leaf(c0_in)
        state_in = (h0, c0)
    else:
        h0 = leaf(initial_state)
        state_in = h0
    lens_t = torch.as_tensor(np.asarray(lengths, dtype=np.int64))
    packed = pack_padded_sequence(x, lens_t, batch_first=True, enforce_sorted=False)
    out_p, state_out = rnn(packed, state_in)
    hn = state_out[0] if cell == "lstm" else state_out
    out, _ = pad_packed_sequence(out_p, batch_first=True, total_length=T)
    mask = torch.arange(T)[None, :] < lens_t[:, None]          # (N, T)

    if return_sequences:
        feats = out                                            # (N, T, F)
    else:
        feats = hn[-1] if dirs == 1 else torch.cat([hn[-2], hn[-1]], dim=1)

    if output is None:
        Y = feats
        loss = None
    else:
        logits = linear(feats)
        if output == "softmax":
            Y = torch.softmax(logits, dim=-1)
        else:
            Y = logits
        if return_sequences:
            Y = Y * mask[:, :, None].to(dtype)
        loss = None
        if y is not None:
            yy = pad_targets(y, T if return_sequences else None)
            if output == "softmax":
                yt = torch.as_tensor(np.asarray(yy, dtype=np.int64))
                if return_sequences:
                    total = F.cross_entropy(logits[mask], yt[mask], reduction="sum")
                else:
                    total = F.cross_entropy(logits, yt, reduction="sum")
            else:
                yt = torch.tensor(np.asarray(yy, dtype=np.float64), dtype=dtype)
                if return_sequences:
                    if yt.ndim == 2:
                        yt = yt[:, :, None]
                    total = 0.5 * ((logits[mask] - yt[mask]) ** 2).sum()
                else:
                    if yt.ndim == 1:
                        yt = yt[:, None]
                    total = 0.5 * ((logits - yt) ** 2).sum()
            count = int(np.sum(lengths)) if return_sequences else N
            loss = total / count if reduction == "mean" else total
            loss.backward()

    def as_numpy(tensor):
        return tensor.detach().double().numpy().copy()

    grads = dstate = None
    if loss is not None:
        grads = torch_grads_as_crnn(rnn, linear, num_layers, bidirectional)
        dstate = h0.grad.double().numpy().copy()
        if cell == "lstm":
            dstate = (dstate, c0.grad.double().numpy().copy())
    if cell == "lstm":
        state = (as_numpy(state_out[0]), as_numpy(state_out[1]))
    else:
        state = as_numpy(state_out)
    return RefResult(
        as_numpy(Y),
        state,
        None if loss is None else float(loss.detach()),
        grads,
        dstate,
    )
