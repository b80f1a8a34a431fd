"""The models users build: crnn.RNN (and, on the same base, later cells).

A model owns its parameter arrays (``model.params``) and a workspace for the
driver.  Every public method validates its arguments (``_inputs``), calls the
generic driver once (``_sequence.run``) and turns the driver's time-major,
length-sorted results back into the user's batch order.
"""
import numbers
import threading

import numpy as np

from . import _inputs, _registry, _state, interop, io
from ._cells import CellKind
from ._sequence import OutputKind, Workspace, run
from ._stream import Stream
from .threads import single_threaded_blas

_OUTPUT_KINDS = {"softmax": OutputKind.OUTPUT_SOFTMAX,
                 "linear": OutputKind.OUTPUT_LINEAR,
                 None: OutputKind.OUTPUT_NONE}


class RecurrentModel:
    """Base of every crnn model: parameters, validation and the driver call.

    Subclasses set ``_gate_blocks`` (G: weight matrices have G·H rows),
    ``_cell_state`` (the state is a pair (h, c)), ``_recurrent_bias`` (a
    ``bn{l}`` bias inside the recurrent product) and ``_cell_kind()``.
    """

    _gate_blocks = 1
    _cell_state = False
    _recurrent_bias = False
    # (parameter keys, lanes, buffer width): see _driver_layout
    _driver_cache = None

    def __init__(self, input_size, hidden_size, output_size=None, *,
                 num_layers=1, bidirectional=False, output="softmax",
                 return_sequences=True, dtype="float32", seed=None):
        self.input_size = _inputs.check_positive_int(input_size, "input_size")
        self.hidden_size = _inputs.check_positive_int(hidden_size, "hidden_size")
        self.num_layers = _inputs.check_positive_int(num_layers, "num_layers")
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise TypeError(f"bidirectional must be True or False, got {bidirectional!r}")
        self.bidirectional = bool(bidirectional)
        if not (output is None or isinstance(output, str)) or output not in _OUTPUT_KINDS:
            raise ValueError(
                f"output must be 'softmax', 'linear' or None, got {output!r}")
        self.output = output
        if output is None:
            if output_size is not None:
                raise ValueError(
                    f"output_size must be None when output is None, got {output_size!r}")
        elif output_size is None:
            # A model whose outputs live in its input space (next-token
            # prediction, the source document's model) needs no output_size.
            output_size = self.input_size
        self.output_size = (None if output_size is None else
                            _inputs.check_positive_int(output_size, "output_size"))
        if not isinstance(return_sequences, (bool, np.bool_)):
            raise TypeError(
                f"return_sequences must be True or False, got {return_sequences!r}")
        self.return_sequences = bool(return_sequences)
        self.dtype = _inputs.check_dtype(dtype)
        if seed is not None and (isinstance(seed, (bool, np.bool_))
                                 or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0 (numpy's rule), got {seed}")
        self.seed = seed
        for name, shape in self._param_shapes().items():
            if int(np.prod(shape)) > _inputs.INT32_MAX:
                raise ValueError(
                    f"parameter {name} would have shape {shape}, more elements "
                    f"than the 32-bit sizes BLAS takes ({_inputs.INT32_MAX})")
        self._params = self._initial_params(np.random.default_rng(seed))
        self._workspace = Workspace()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ structure
    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    def _lane_names(self):
        """(layer, suffix) of every lane, layer-major, direction-minor."""
        suffixes = ("", "_reverse")[:self.directions]
        return [(layer, suffix) for layer in range(self.num_layers)
                for suffix in suffixes]

    def _param_shapes(self):
        """Every parameter's name and shape, in initialisation order."""
        G, H = self._gate_blocks, self.hidden_size
        shapes = {}
        for layer, suffix in self._lane_names():
            inputs = self.input_size if layer == 0 else H * self.directions
            shapes[f"U{layer}{suffix}"] = (G * H, inputs)
            shapes[f"W{layer}{suffix}"] = (G * H, H)
            shapes[f"b{layer}{suffix}"] = (G * H,)
            if self._recurrent_bias:
                shapes[f"bn{layer}{suffix}"] = (H,)
        if self.output is not None:
            shapes["V"] = (self.output_size, H * self.directions)
            shapes["c"] = (self.output_size,)
        return shapes

    def _initial_params(self, rng):
        # Uniform(-1/√H, 1/√H) for every weight and bias (PyTorch's rule),
        # drawn in float64 so models of either dtype from one seed agree.
        bound = 1.0 / np.sqrt(self.hidden_size)
        return {name: rng.uniform(-bound, bound, size=shape).astype(self.dtype)
                for name, shape in self._param_shapes().items()}

    # ------------------------------------------------------------ parameters
    @property
    def params(self):
        """The model's own parameter arrays by name (writing into them
        changes the model).

        Each is a fresh view of the model's array: writes reach the model,
        but setting a view's ``shape`` or ``dtype`` in place cannot change
        the layout the kernels rely on."""
        return {name: array.view() for name, array in self._params.items()}

    def set_params(self, params):
        """Copy every array of `params` in, after checking all of them."""
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict, got {type(params).__name__}")
        shapes = self._param_shapes()
        missing = sorted(set(shapes) - set(params))
        extra = sorted(set(params) - set(shapes))
        if missing or extra:
            raise ValueError(
                f"params must have exactly the keys {sorted(shapes)}; "
                f"missing {missing}, unexpected {extra}")
        checked = {}
        for name, shape in shapes.items():
            value = np.asarray(params[name])
            if value.dtype.kind not in "iuf":
                raise TypeError(
                    f"params[{name!r}] must be a real array, got dtype {value.dtype}")
            if value.shape != shape:
                raise ValueError(
                    f"params[{name!r}] must have shape {shape}, got {value.shape}")
            with np.errstate(over="ignore"):    # too big for float32: inf, refused below
                value = value.astype(self.dtype, copy=False)
            if not np.isfinite(value).all():
                raise ValueError(f"params[{name!r}] contains NaN or infinity")
            checked[name] = value
        with self._lock:    # all or nothing for a concurrent forward
            for name, value in checked.items():
                self._params[name][...] = value

    # ------------------------------------------------------------ state
    def _state_shape(self, n):
        return (self.num_layers * self.directions, n, self.hidden_size)

    def _prepare_state(self, initial_state, batch):
        """Sorted (h0, c0); c0 is None for cells without a cell state."""
        if initial_state is None:
            return None, None
        shape = self._state_shape(batch.size)
        if not self._cell_state:
            return _inputs.prepare_state(initial_state, "initial_state", shape,
                                         batch, self.dtype), None
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
            raise TypeError(
                f"initial_state of an {type(self).__name__} must be a pair "
                f"(h0, c0), got {type(initial_state).__name__}")
        return tuple(_inputs.prepare_state(state, name, shape, batch, self.dtype)
                     for state, name in zip(initial_state, ("h0", "c0")))

    def _final_state(self, result, batch):
        h_n = batch.unsort_rows(result["h_n"])
        if self._cell_state:
            return h_n, batch.unsort_rows(result["c_n"])
        return h_n

    def _state_grad(self, result, batch):
        dh0 = batch.unsort_rows(result["dh0"])
        if self._cell_state:
            return dh0, batch.unsort_rows(result["dc0"])
        return dh0

    # ------------------------------------------------------------ read-only settings
    def __setattr__(self, name, value):
        # Sizes and settings are set once, by the constructor (or by
        # __setstate__): the arrays and the compiled code rely on them.
        if name in self.__dict__ and name in _state.settings_names(type(self)):
            raise AttributeError(_state.read_only_message(self, name, value))
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        if name in _state.settings_names(type(self)):
            raise AttributeError(f"{type(self).__name__}.{name} cannot be deleted: "
                                 f"a model's sizes and settings are fixed when it is built")
        object.__delattr__(self, name)

    def _check_door(self, lanes, V, c):
        """The guard before compiled code: (lanes, V, c) to hand over, the
        checked views of a _state.Door.  Per call it compares the lane list,
        V and c by identity and the settings by value (O(1)); on any change
        a new Door checks every array against the settings again."""
        door = self.__dict__.get("_door")
        if (door is None or door.lanes is not lanes or door.V is not V or door.c is not c
                or _state.door_settings_of(self) != door.settings):
            door = self.__dict__["_door"] = _state.Door(self, lanes, V, c)
        return door.views

    # ------------------------------------------------------------ driver
    def _lane_keys(self):
        """Parameter names of every lane, in the driver's order."""
        kinds = ("U", "W", "b", "bn") if self._recurrent_bias else ("U", "W", "b")
        return [[f"{kind}{layer}{suffix}" for kind in kinds]
                for layer, suffix in self._lane_names()]

    def _lanes(self):
        return [tuple(self._params[key] for key in keys) for keys in self._lane_keys()]

    def _buffer_width(self):
        """The widest row of the driver's (T·B × width) buffers."""
        return max(self._gate_blocks * self.hidden_size, self.input_size,
                   self.hidden_size * self.directions, self.output_size or 0)

    def _driver_layout(self):
        """(keys, lanes, buffer width): every lane's parameter keys in one
        list (the order of the driver's "grads"), _lanes() and
        _buffer_width(), built on a model's first call and reused: they
        depend on the model's structure alone, and the parameter arrays keep
        their identity (set_params copies into them).  Rebuilding them cost
        a small call (T=50, B=1) about 5% of its instructions.  Copies and
        pickles build their own (__getstate__ leaves this out)."""
        layout = self._driver_cache
        if layout is None:
            keys = [key for lane_keys in self._lane_keys() for key in lane_keys]
            layout = self._driver_cache = (keys, self._lanes(), self._buffer_width())
        return layout

    def _run(self, batch, h0, c0, targets=None, scale=1.0, need_grad=False):
        _, lanes, width = self._driver_layout()
        lanes, V, c = self._check_door(lanes, self._params.get("V"), self._params.get("c"))
        # The driver's buffers are (T·B × width) and BLAS takes 32-bit sizes
        # (prepare_batch checked this before copying anything; kept here as
        # the last word before the kernels).
        _inputs.check_buffers(batch.steps, batch.size, width)
        # multiply-adds of one recurrent product per step, the call's bulk
        work = batch.steps * batch.size * width * self.hidden_size
        with self._lock, single_threaded_blas(work):
            result = run(self._workspace, self._cell_kind(), self.hidden_size,
                         self.num_layers, self.directions, lanes, V, c,
                         batch.inputs, batch.lengths, h0, c0,
                         _OUTPUT_KINDS[self.output], self.return_sequences,
                         targets, scale, need_grad)
            # outputs is a view of the workspace: copy it out under the lock
            outputs = result["outputs"]
            result["outputs"] = (batch.unsort(outputs) if self.return_sequences
                                 else batch.unsort_rows(outputs))
        return result

    # ------------------------------------------------------------ public API
    def forward(self, X, lengths=None, initial_state=None, return_state=False):
        """Outputs (N, T, K) with return_sequences (rows past a length are 0),
        else (N, K); probabilities for softmax, values for linear, the top
        layer's h for output=None.  With return_state, also the final state
        of each sequence, shaped like initial_state."""
        batch = _inputs.prepare_batch(X, lengths, self.input_size, self.dtype,
                                      self._driver_layout()[2])
        h0, c0 = self._prepare_state(initial_state, batch)
        result = self._run(batch, h0, c0)
        if return_state:
            return result["outputs"], self._final_state(result, batch)
        return result["outputs"]

    def loss_and_grad(self, X, y, lengths=None, initial_state=None, *,
                      reduction="mean", return_state_grad=False,
                      return_state=False, return_outputs=False):
        """The loss (a float) and its gradient for every parameter (a dict
        with the keys of ``params``).

        reduction: "mean" over every position with a target, or "sum".
        return_state_grad: also return ∂loss/∂initial_state (zeros initial
        state when None), shaped like initial_state.
        return_state, return_outputs: also return the final state and the
        outputs, as ``forward`` would (the trainer's truncated BPTT and
        running accuracy use them).  Extras come in this order after grads:
        state grad, state, outputs.
        """
        if self.output is None:
            raise ValueError(
                "loss_and_grad needs an output layer; this model has output=None")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        keys, _, width = self._driver_layout()
        batch = _inputs.prepare_batch(X, lengths, self.input_size, self.dtype, width)
        targets = _inputs.prepare_targets(y, batch, self.output, self.output_size,
                                          self.return_sequences, self.dtype)
        h0, c0 = self._prepare_state(initial_state, batch)
        if not self.return_sequences:
            count = batch.size
        elif batch.full:        # every length is T: no need to sum them
            count = batch.size * batch.steps
        else:
            count = int(batch.lengths.sum())
        scale = 1.0 / count if reduction == "mean" else 1.0
        result = self._run(batch, h0, c0, targets, scale, need_grad=True)
        grads = dict(zip(keys, result["grads"]))
        grads["V"] = result["dV"]
        grads["c"] = result["dc"]
        loss = float(result["loss"]) * scale
        extras = ()
        if return_state_grad:
            extras += (self._state_grad(result, batch),)
        if return_state:
            extras += (self._final_state(result, batch),)
        if return_outputs:
            extras += (result["outputs"],)
        return (loss, grads) + extras

    def predict(self, X, lengths=None):
        """Class ids (softmax; -1 at padded positions) or values (linear)."""
        if self.output is None:
            raise ValueError("predict needs an output layer; this model has output=None")
        outputs = self.forward(X, lengths)
        if self.output == "linear":
            return outputs
        labels = outputs.argmax(axis=-1)
        if self.return_sequences:
            labels[outputs.sum(axis=-1) == 0] = -1   # padding: all-zero rows
        return labels

    def predict_proba(self, X, lengths=None):
        """Class probabilities (softmax models only), like forward."""
        if self.output != "softmax":
            raise ValueError(
                f"predict_proba needs output='softmax', this model has output={self.output!r}")
        return self.forward(X, lengths)

    # ------------------------------------------------------------ streaming
    def stream(self, batch_size=1):
        """A ``Stream`` that consumes one time step per ``step(x)`` call and
        carries the state between calls (one-direction models only).  It
        uses the model's own arrays: later in-place updates are seen."""
        if self.bidirectional:
            raise ValueError(
                "a bidirectional model cannot stream: its backward direction "
                "needs the whole sequence; use forward()")
        batch_size = _inputs.check_positive_int(batch_size, "batch_size")
        # The stream's buffers are (batch_size × width), passed to BLAS as 32-bit sizes.
        if 2 * batch_size * self._buffer_width() > _inputs.INT32_MAX:
            raise ValueError(
                f"batch_size must be at most {_inputs.INT32_MAX // (2 * self._buffer_width())} "
                f"for this model (its buffers would exceed the 32-bit sizes "
                f"BLAS takes), got {batch_size}")
        # the Door's checked views: the stream holds them, and nothing else does
        lanes, V, c = _state.Door(self).views
        return Stream(int(self._cell_kind()), self.hidden_size, lanes, V, c,
                      int(_OUTPUT_KINDS[self.output]), batch_size, self.dtype)

    def sample(self, n, prime=None, temperature=1.0, seed=None):
        """Generate `n` token ids from a token model (softmax output over the
        input vocabulary), continuing from the optional `prime` sequence of
        token ids; reproducible with `seed`.  Lower temperatures sharpen the
        distribution (temperature → 0 approaches the most likely token)."""
        if self.output != "softmax" or self.output_size != self.input_size:
            raise ValueError(
                "sample needs a token model: output='softmax' with output_size "
                f"== input_size, this model has output={self.output!r}, "
                f"output_size={self.output_size}, input_size={self.input_size}")
        n = _inputs.check_positive_int(n, "n", minimum=0)
        if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, numbers.Real) \
                or not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if seed is not None and (isinstance(seed, (bool, np.bool_))
                                 or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0 (numpy's rule), got {seed}")
        rng = np.random.default_rng(seed)
        stream = self.stream(1)
        probabilities = np.full(self.output_size, 1.0 / self.output_size)
        if prime is not None:
            prime = np.asarray(prime)
            if prime.ndim != 1 or prime.dtype.kind not in "iu" or prime.size == 0:
                raise ValueError(
                    f"prime must be a non-empty 1-D sequence of token ids, got "
                    f"shape {prime.shape} and dtype {prime.dtype}")
            for token in prime:
                probabilities = stream.step(int(token))
        tokens = np.empty(n, dtype=np.int64)
        out = np.empty(self.output_size, self.dtype)
        for i in range(n):
            p = np.asarray(probabilities, dtype=np.float64)
            if temperature != 1.0:
                logits = np.log(np.maximum(p, 1e-300)) / temperature
                p = np.exp(logits - logits.max())
            token = int(rng.choice(p.size, p=p / p.sum()))
            tokens[i] = token
            if i + 1 < n:
                probabilities = stream.step(token, out=out)
        return tokens

    # ------------------------------------------------------------ files and interop
    def save(self, path):
        """Write the model to `path` (one .npz file, atomically); ``crnn.load``
        reads it back.  See crnn.io."""
        io.save(self, path)

    def to_torch(self):
        """``(module, linear)``: the equal torch.nn.RNN/LSTM/GRU and Linear
        head (None without an output layer).  See crnn.interop.to_torch."""
        return interop.to_torch(self)

    def to_onnx(self, path, **options):
        """Write the model as an ONNX graph (needs the onnx package).  See
        crnn.interop.to_onnx for the graph's inputs and `options`."""
        interop.to_onnx(self, path, **options)

    # ------------------------------------------------------------ copying
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_workspace"], state["_lock"]
        # the copy's lanes must be its own arrays: _driver_layout rebuilds them
        state.pop("_driver_cache", None)
        state.pop("_door", None)
        return state

    def __setstate__(self, state):
        """Restore a pickled state after checking it as ``crnn.load`` checks
        a file: every setting, and every parameter's shape, dtype and layout
        (_state.check_state).  ValueError or TypeError on anything
        inconsistent; crnn.load builds models this way too."""
        self.__dict__.update(_state.check_state(type(self), state))
        self.__dict__["_workspace"] = Workspace()
        self.__dict__["_lock"] = threading.Lock()

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"{self.output_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, output={self.output!r}, "
                f"return_sequences={self.return_sequences}, dtype='{self.dtype}')")


@_registry.register
class RNN(RecurrentModel):
    """The source document's vanilla RNN: h(t) = tanh(U x(t) + W h(t-1) + b),
    o(t) = V h(t) + c, trained by BPTT.  ``nonlinearity`` is "tanh" or "relu".
    """

    _gate_blocks = 1

    def __init__(self, input_size, hidden_size, output_size=None, *,
                 num_layers=1, bidirectional=False, nonlinearity="tanh",
                 output="softmax", return_sequences=True, dtype="float32",
                 seed=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, output_size,
                         num_layers=num_layers, bidirectional=bidirectional,
                         output=output, return_sequences=return_sequences,
                         dtype=dtype, seed=seed)

    def _cell_kind(self):
        return (CellKind.CELL_RNN_RELU if self.nonlinearity == "relu"
                else CellKind.CELL_RNN_TANH)


@_registry.register
class LSTM(RecurrentModel):
    """The source document's LSTM: gates i, f, a (candidate), o in one
    (4H × ·) matrix each for U and W (PyTorch's i, f, g, o order),
    C(t) = f ⊙ C(t-1) + i ⊙ a, h(t) = o ⊙ tanh(C(t)).  Its state is the pair
    (h, c), each (num_layers * directions, N, H)."""

    _gate_blocks = 4
    _cell_state = True

    def _cell_kind(self):
        return CellKind.CELL_LSTM


@_registry.register
class GRU(RecurrentModel):
    """PyTorch's GRU: gates r, z, n in one (3H × ·) matrix each for U and W,
    n = tanh(U_n x + b_n + r ⊙ (W_n h + bn)), h = (1 - z) ⊙ n + z ⊙ h_prev.
    ``bn{l}`` is PyTorch's b_hn; b holds b_ih + b_hh for r and z and b_in
    for n."""

    _gate_blocks = 3
    _recurrent_bias = True

    def _cell_kind(self):
        return CellKind.CELL_GRU
