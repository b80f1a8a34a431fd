"""crnn.torch: PyTorch modules that run crnn's engine (optional; needs torch).

``crnn.torch.LSTM``, ``GRU`` and ``RNN`` are ``torch.nn.Module``\\ s with the
constructor, parameters and state-dict layout of ``torch.nn.LSTM``, ``GRU``
and ``RNN``: a model swaps one for the other, ``load_state_dict`` moves
weights across, and torch's optimizers train them.  Their forward and
backward are crnn's compiled forward and BPTT, through one
``torch.autograd.Function`` (:class:`CrnnFunction`): the forward keeps
crnn's cache, the backward is the model's ``backward`` (the vector-Jacobian
product).  CPU tensors, float32 or float64.

Importing this module imports torch; ``import crnn`` never does.
"""
import math

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import models

__all__ = ["LSTM", "GRU", "RNN", "CrnnFunction"]

_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


class CrnnFunction(torch.autograd.Function):
    """crnn's forward and BPTT as one autograd node.

    ``CrnnFunction.apply(module, keep, X, lengths, h0, c0, *weights)``:
    `keep` whether to keep crnn's cache for a backward (autograd records
    the call), X ``(N, T, D)`` batch first, lengths a numpy array or None,
    h0 ``(layers * directions, N, S)`` and c0 ``(layers * directions, N, H)``
    or None (S: ``proj_size`` for a projected LSTM, else H), the weights in
    the module's ``_flat_weights`` order.  Returns (outputs, h_n, c_n); c_n
    is an empty tensor for cells without a cell state.  The backward returns
    a gradient for every weight, ``weight_hr`` (crnn's ``R{l}``) included.
    """

    @staticmethod
    def forward(ctx, module, keep, X, lengths, h0, c0, *weights):
        model = module._take_model(X.dtype)
        module._load(model, weights)
        state = None
        if h0 is not None:
            state = ((h0.detach().numpy(), c0.detach().numpy()) if model._cell_state
                     else h0.detach().numpy())
        result = model.forward(X.detach().numpy(), lengths, state, return_state=True,
                               return_cache=keep)
        outputs, final = result[0], result[1]
        if keep:
            ctx.module, ctx.model, ctx.cache = module, model, result[2]
            ctx.dtype = X.dtype
            ctx.has_state = h0 is not None
        else:
            module._give_back(model, X.dtype)
        h_n, c_n = final if model._cell_state else (final, np.empty(0, final.dtype))
        return torch.from_numpy(outputs), torch.from_numpy(h_n), torch.from_numpy(c_n)

    @staticmethod
    def backward(ctx, d_outputs, d_h_n, d_c_n):
        model = ctx.model
        d_state = ((d_h_n.numpy(), d_c_n.numpy()) if model._cell_state
                   else d_h_n.numpy())
        grads = model.backward(ctx.cache, d_outputs.contiguous().numpy(), d_state,
                               input_grad=ctx.needs_input_grad[2])
        ctx.module._give_back(model, ctx.dtype)
        dX = torch.from_numpy(grads["X"]) if ctx.needs_input_grad[2] else None
        dh0 = dc0 = None
        if ctx.has_state:
            if model._cell_state:
                dh0, dc0 = (torch.from_numpy(s) for s in grads["initial_state"])
            else:
                dh0 = torch.from_numpy(grads["initial_state"])
        return (None, None, dX, None, dh0, dc0) + ctx.module._weight_grads(grads)


class _CrnnRNNBase(torch.nn.Module):
    """What LSTM, GRU and RNN share: torch's parameters, crnn's engine."""

    _mode = None            # torch's name of the cell
    _gate_blocks = 1

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False,
                 proj_size=0, device=None, dtype=None, nonlinearity="tanh"):
        super().__init__()
        if dropout:
            raise ValueError(
                f"crnn.torch.{self._mode} runs without dropout between layers "
                f"(dropout must be 0), got dropout={dropout!r}")
        if self._mode != "LSTM":    # torch's rule: a projection is the LSTM's
            models._check_lstm_options(self._mode, False, proj_size)
        # an int in [0, hidden_size), as torch's rule
        proj_size = models._check_proj_size(proj_size, hidden_size)
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"crnn runs on the CPU only, got device={device!r}")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.bias = num_layers, bool(bias)
        self.batch_first, self.dropout = bool(batch_first), 0.0
        self.bidirectional, self.proj_size = bool(bidirectional), proj_size
        self.nonlinearity = nonlinearity
        self.mode = self._mode
        directions = 2 if bidirectional else 1
        gates = self._gate_blocks * hidden_size
        width = proj_size or hidden_size        # h's width
        options = dict(dtype=dtype if dtype is not None else torch.get_default_dtype())
        self._flat_weights_names = []
        for layer in range(num_layers):
            for suffix in ("", "_reverse")[:directions]:
                inputs = input_size if layer == 0 else width * directions
                shapes = {f"weight_ih_l{layer}{suffix}": (gates, inputs),
                          f"weight_hh_l{layer}{suffix}": (gates, width)}
                if bias:
                    shapes[f"bias_ih_l{layer}{suffix}"] = (gates,)
                    shapes[f"bias_hh_l{layer}{suffix}"] = (gates,)
                if proj_size:       # h = weight_hr (o ⊙ tanh c): crnn's R{l}
                    shapes[f"weight_hr_l{layer}{suffix}"] = (proj_size, hidden_size)
                for name, shape in shapes.items():
                    self.register_parameter(
                        name, torch.nn.Parameter(torch.empty(shape, **options)))
                    self._flat_weights_names.append(name)
        self._pool = {}     # dtype -> idle crnn models (each its own workspace)
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's initialisation: Uniform(-1/√H, 1/√H) for every weight."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for weight in self.parameters():
                weight.uniform_(-bound, bound)

    @property
    def _flat_weights(self):
        return [getattr(self, name) for name in self._flat_weights_names]

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text

    # ------------------------------------------------------- the crnn model
    def _crnn_model(self, dtype):
        options = dict(num_layers=self.num_layers, bidirectional=self.bidirectional,
                       output=None, dtype=_DTYPES[dtype])
        if self._mode == "RNN":
            options["nonlinearity"] = self.nonlinearity
        if self.proj_size:
            options["proj_size"] = self.proj_size
        return getattr(models, self._mode)(
            self.input_size, self.hidden_size, **options)

    def _take_model(self, dtype):
        idle = self._pool.setdefault(dtype, [])
        return idle.pop() if idle else self._crnn_model(dtype)

    def _give_back(self, model, dtype):
        self._pool.setdefault(dtype, []).append(model)

    def _load(self, model, weights):
        """Copy torch's weights into the crnn model, its two biases folded
        into one (and the GRU's b_hn kept apart as bn); weight_hr is R."""
        params = model.params
        per_lane = (4 if self.bias else 2) + (1 if self.proj_size else 0)
        H = self.hidden_size
        for lane, (layer, suffix) in enumerate(model._lane_names()):
            w = [t.detach().numpy() for t in weights[lane * per_lane:(lane + 1) * per_lane]]
            params[f"U{layer}{suffix}"][...] = w[0]
            params[f"W{layer}{suffix}"][...] = w[1]
            if self.proj_size:      # last of the lane's weights, as torch's
                params[f"R{layer}{suffix}"][...] = w[-1]
            b = params[f"b{layer}{suffix}"]
            if not self.bias:
                b[...] = 0
                if model._recurrent_bias:
                    params[f"bn{layer}{suffix}"][...] = 0
            elif model._recurrent_bias:
                b[:2 * H] = w[2][:2 * H] + w[3][:2 * H]
                b[2 * H:] = w[2][2 * H:]
                params[f"bn{layer}{suffix}"][...] = w[3][2 * H:]
            else:
                np.add(w[2], w[3], out=b)

    def _weight_grads(self, grads):
        """crnn's gradients in the order of _flat_weights."""
        out = []
        H = self.hidden_size
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[:2 if self.bidirectional else 1]:
                out += [torch.from_numpy(grads[f"U{layer}{suffix}"]),
                        torch.from_numpy(grads[f"W{layer}{suffix}"])]
                if self.bias:
                    db = grads[f"b{layer}{suffix}"]
                    d_hh = db
                    if f"bn{layer}{suffix}" in grads:
                        d_hh = np.concatenate([db[:2 * H], grads[f"bn{layer}{suffix}"]])
                    out += [torch.from_numpy(db), torch.from_numpy(d_hh.copy())]
                if self.proj_size:
                    out.append(torch.from_numpy(grads[f"R{layer}{suffix}"]))
        return tuple(out)

    # ------------------------------------------------------------ forward
    def forward(self, input, hx=None):
        """torch.nn.LSTM's (GRU's, RNN's) forward: ``output, h_n`` (LSTM:
        ``output, (h_n, c_n)``), for a tensor (batched or not) or a
        PackedSequence."""
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            X, lengths_tensor = pad_packed_sequence(input, batch_first=True)
            lengths = lengths_tensor.numpy()
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"input must be a Tensor or a PackedSequence, got "
                                f"{type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(f"input must be 2-D (unbatched) or 3-D, got "
                                 f"{input.dim()}-D")
            X = input
        unbatched = X.dim() == 2
        if unbatched:
            X = X.unsqueeze(0)
        elif self.batch_first is False and not packed:
            X = X.transpose(0, 1)
        weights = self._flat_weights
        dtype = weights[0].dtype
        if X.dtype != dtype or X.device.type != "cpu":
            raise TypeError(
                f"input must be a CPU tensor of the module's dtype {dtype}, got "
                f"{X.dtype} on {X.device}")
        if dtype not in _DTYPES:
            raise TypeError(f"crnn runs float32 or float64, the module is {dtype}")
        h0, c0 = self._initial_state(hx, unbatched, X.shape[0])
        # autograd records the call (and will call backward) only then
        keep = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in [X, h0, c0] + weights)
        outputs, h_n, c_n = CrnnFunction.apply(
            self, keep, X.contiguous(), lengths, h0, c0, *weights)
        if packed:
            # PackedSequence.data: step after step, the rows alive at that
            # step in the sorted order
            order = input.sorted_indices
            if order is None:       # packed with enforce_sorted=True
                order = torch.arange(outputs.shape[0])
            alive = (torch.arange(outputs.shape[1])[:, None]
                     < lengths_tensor[order][None, :])
            data = outputs.transpose(0, 1)[:, order][alive]
            output = PackedSequence(data, input.batch_sizes, input.sorted_indices,
                                    input.unsorted_indices)
        elif unbatched:
            output, h_n = outputs[0], h_n[:, 0]
            c_n = c_n[:, 0] if self._mode == "LSTM" else c_n
        else:
            output = outputs if self.batch_first else outputs.transpose(0, 1)
        return output, ((h_n, c_n) if self._mode == "LSTM" else h_n)

    def _initial_state(self, hx, unbatched, n):
        if hx is None:
            return None, None
        parts = hx if self._mode == "LSTM" else (hx, None)
        if self._mode == "LSTM" and (not isinstance(hx, tuple) or len(hx) != 2):
            raise TypeError(f"hx of an LSTM must be a pair (h_0, c_0), got "
                            f"{type(hx).__name__}")
        lanes = self.num_layers * (2 if self.bidirectional else 1)
        states = []
        # h is proj_size wide under a projection, c hidden_size wide always
        for name, part, width in zip(("h_0", "c_0"), parts,
                                     (self.proj_size or self.hidden_size,
                                      self.hidden_size)):
            if part is None:
                states.append(None)
                continue
            shape = (lanes, n, width)
            if unbatched:
                part = part.unsqueeze(1)
            if tuple(part.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got "
                                 f"{tuple(part.shape)}")
            states.append(part.contiguous())
        return states[0], states[1]


class LSTM(_CrnnRNNBase):
    """``torch.nn.LSTM`` run by crnn: the same constructor, parameters and
    state dict (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}``, with ``proj_size`` also ``weight_hr_l{k}``;
    ``_reverse`` for a backward direction).

    Parameters
    ----------
    input_size, hidden_size, num_layers, bias, batch_first, bidirectional
        As for ``torch.nn.LSTM``.
    dropout : float, default 0.0
        Must be 0 (crnn.torch has no dropout between layers).
    proj_size : int, default 0
        PyTorch's projected LSTM when P = `proj_size` > 0 (and <
        `hidden_size`): ``h = weight_hr (o ⊙ tanh c)`` with ``weight_hr_l{k}``
        ``(P, hidden_size)`` (crnn's ``R{k}``), ``weight_hh_l{k}`` ``(4H,
        P)``, the output and h_0/h_n P wide (per direction), c_0/c_n
        `hidden_size` wide.
    device, dtype
        CPU only; float32 or float64 (default: torch's default dtype).

    Raises
    ------
    ValueError
        A nonzero `dropout`, a `proj_size` outside ``[0, hidden_size)``, a
        device other than the CPU.
    TypeError
        A `proj_size` that is not an integer.

    Examples
    --------
    >>> import torch, crnn.torch
    >>> lstm = crnn.torch.LSTM(4, 8, batch_first=True)
    >>> lstm.load_state_dict(torch.nn.LSTM(4, 8, batch_first=True).state_dict())
    <All keys matched successfully>
    >>> output, (h_n, c_n) = lstm(torch.randn(2, 5, 4))
    >>> output.shape, h_n.shape
    (torch.Size([2, 5, 8]), torch.Size([1, 2, 8]))

    With a projection of h to 3 values (c keeps 8):

    >>> lstm = crnn.torch.LSTM(4, 8, batch_first=True, proj_size=3)
    >>> lstm.weight_hr_l0.shape, lstm.weight_hh_l0.shape
    (torch.Size([3, 8]), torch.Size([32, 3]))
    >>> output, (h_n, c_n) = lstm(torch.randn(2, 5, 4))
    >>> output.shape, h_n.shape, c_n.shape
    (torch.Size([2, 5, 3]), torch.Size([1, 2, 3]), torch.Size([1, 2, 8]))
    """

    _mode, _gate_blocks = "LSTM", 4

    def __init__(self, *args, **kwargs):
        if "nonlinearity" in kwargs:
            raise TypeError("LSTM has no nonlinearity argument")
        super().__init__(*args, **kwargs)


class GRU(_CrnnRNNBase):
    """``torch.nn.GRU`` run by crnn (parameters and state dict as torch's);
    the arguments as for `LSTM` (no `proj_size`).

    Examples
    --------
    >>> import torch, crnn.torch
    >>> gru = crnn.torch.GRU(4, 8, num_layers=2, bidirectional=True)
    >>> output, h_n = gru(torch.randn(5, 3, 4))       # (T, N, D)
    >>> output.shape, h_n.shape
    (torch.Size([5, 3, 16]), torch.Size([4, 3, 8]))
    """

    _mode, _gate_blocks = "GRU", 3

    def __init__(self, *args, **kwargs):
        if "nonlinearity" in kwargs or "proj_size" in kwargs:
            raise TypeError("GRU has no nonlinearity or proj_size argument")
        super().__init__(*args, **kwargs)


class RNN(_CrnnRNNBase):
    """``torch.nn.RNN`` run by crnn (parameters and state dict as torch's):
    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity="tanh",
    bias=True, batch_first=False, dropout=0.0, bidirectional=False)``.

    Examples
    --------
    >>> import torch, crnn.torch
    >>> rnn = crnn.torch.RNN(4, 8, nonlinearity="relu", batch_first=True)
    >>> output, h_n = rnn(torch.randn(2, 5, 4))
    >>> output.shape
    torch.Size([2, 5, 8])
    """

    _mode = "RNN"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh",
                 bias=True, batch_first=False, dropout=0.0, bidirectional=False,
                 device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, device, dtype, nonlinearity)
