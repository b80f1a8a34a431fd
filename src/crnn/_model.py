"""The base of every crnn model: RecurrentModel.

A model owns its parameter arrays (``model.params``) and a workspace for the
engine.  Every public method validates its arguments (``_inputs``), checks
the model's own state at the door (``_state``), calls the engine once
(``_network.run``) and turns the engine's time-major, length-sorted results
back into the user's batch order.  What a model does besides computing
(streams, sampling, files, other frameworks) is ModelServices
(``_services``); the public classes are in ``models``.
"""
import threading

import numpy as np

from . import _dropout, _inputs, _state
from ._call import Workspace
from ._network import forward, run
from ._services import OUTPUT_KINDS, ModelServices
from ._vjp import BuildingBlock
from .threads import single_threaded_blas


# The parameters every computing method documents alike, filled into their
# docstrings by _documented (as pandas and matplotlib share theirs).
_SHARED_INPUTS = """\
X : array_like or list of array_like
    Float features ``(N, T, D)``; integer token ids ``(N, T)`` in
    ``[0, input_size)``, each meaning a one-hot vector; or a list
    of N arrays ``(T_i, D)`` or ``(T_i,)`` of different lengths.
    Any real dtype and memory layout; cast to the model's dtype.
lengths : array_like of int, optional
    ``(N,)``, each in ``[1, T]``: sequence i is
    ``X[i, :lengths[i]]`` and the rest of its row is padding, which
    is never read.  Default: every sequence has T steps.  Must be
    None when `X` is a list."""


def _documented(method):
    """`method` with the shared parameter entries in place of the line
    ``%(inputs)s`` of its docstring, at that line's indentation (which
    Python 3.13 strips from docstrings, and older Pythons keep)."""
    lines = method.__doc__.split("\n")
    at = next(i for i, line in enumerate(lines) if line.strip() == "%(inputs)s")
    indent = lines[at][:len(lines[at]) - len(lines[at].lstrip())]
    lines[at:at + 1] = [indent + line for line in _SHARED_INPUTS.split("\n")]
    method.__doc__ = "\n".join(lines)
    return method


class RecurrentModel(BuildingBlock, ModelServices):
    """The base class of `crnn.RNN`, `crnn.LSTM` and `crnn.GRU`.

    It holds everything the three models share: the parameter arrays, the
    argument checks, and the methods that run the compiled driver
    (`forward`, `loss_and_grad`, `predict`, `predict_proba`, `stream`,
    `sample`, `save`, `to_torch`, `to_onnx`).  Build one of the subclasses;
    their docstrings describe the constructor's parameters.

    Notes
    -----
    For implementers of a new cell: subclasses set ``_gate_blocks`` (G, the
    weight matrices have G·H rows), ``_cell_state`` (the state is a pair
    (h, c)), ``_recurrent_bias`` (a ``bn{l}`` bias inside the recurrent
    product), ``_peephole_blocks`` (rows of a ``P{l}`` of peephole
    weights), ``_state_width`` (h's width, when a projection makes it
    narrower than the cell's) and ``_cell_kind()``.
    """

    _gate_blocks = 1
    _cell_state = False
    _recurrent_bias = False
    _peephole_blocks = 0
    # (parameter keys, lanes, buffer width): see _driver_layout
    _driver_cache = None

    def __init__(self, input_size, hidden_size, output_size=None, *,
                 num_layers=1, bidirectional=False, output="softmax",
                 return_sequences=True, dropout=0.0, recurrent_dropout=0.0,
                 output_dropout=0.0, dropout_first_layer=True,
                 dtype="float32", seed=None):
        """Build a model with freshly initialised weights.

        The parameters are described in the docstring of the class
        (`crnn.RNN`, `crnn.LSTM` or `crnn.GRU`).

        Raises
        ------
        TypeError
            A size that is not an integer, a flag that is not a bool, a
            `dtype` that is not a dtype, a `seed` that is not an int.
        ValueError
            A size below 1, an unknown `output`, an `output_size` given with
            ``output=None``, a dropout probability outside [0, 1) (or
            `output_dropout` without an output layer), a dtype other than
            float32 and float64, a negative seed, or parameters too large
            for BLAS's 32-bit sizes.
        """
        self.input_size = _inputs.check_positive_int(input_size, "input_size")
        self.hidden_size = _inputs.check_positive_int(hidden_size, "hidden_size")
        self.num_layers = _inputs.check_positive_int(num_layers, "num_layers")
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise TypeError(f"bidirectional must be True or False, got {bidirectional!r}")
        self.bidirectional = bool(bidirectional)
        if not (output is None or isinstance(output, str)) or output not in OUTPUT_KINDS:
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
        for name, value in zip(_dropout.SETTINGS, (dropout, recurrent_dropout,
                                                   output_dropout)):
            setattr(self, name, _dropout.check_probability(value, name))
        if output is None and self.output_dropout:
            raise ValueError(f"output_dropout acts before the output layer; this "
                             f"model has output=None, got {output_dropout!r}")
        if not isinstance(dropout_first_layer, (bool, np.bool_)):
            raise TypeError(f"dropout_first_layer must be True or False, "
                            f"got {dropout_first_layer!r}")
        self.dropout_first_layer = bool(dropout_first_layer)
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
        """The number of directions of every layer: 2 when the model is
        bidirectional, else 1.

        The hidden state that a layer passes up, and that the output layer
        reads, has ``hidden_size * directions`` entries; initial and final
        states have ``num_layers * directions`` rows.

        Examples
        --------
        >>> crnn.LSTM(4, 8).directions
        1
        >>> crnn.LSTM(4, 8, bidirectional=True).directions
        2
        """
        return 2 if self.bidirectional else 1

    def _lane_names(self):
        """(layer, suffix) of every lane, layer-major, direction-minor."""
        suffixes = ("", "_reverse")[:self.directions]
        return [(layer, suffix) for layer in range(self.num_layers)
                for suffix in suffixes]

    @property
    def _state_width(self):
        """S, the width of h: hidden_size, but for a projected LSTM."""
        return self.hidden_size

    def _param_shapes(self):
        """Every parameter's name and shape, in initialisation order."""
        G, H, S = self._gate_blocks, self.hidden_size, self._state_width
        shapes = {}
        for layer, suffix in self._lane_names():
            inputs = self.input_size if layer == 0 else S * self.directions
            shapes[f"U{layer}{suffix}"] = (G * H, inputs)
            shapes[f"W{layer}{suffix}"] = (G * H, S)
            shapes[f"b{layer}{suffix}"] = (G * H,)
            if self._recurrent_bias:
                shapes[f"bn{layer}{suffix}"] = (H,)
            if self._peephole_blocks:
                shapes[f"P{layer}{suffix}"] = (self._peephole_blocks, H)
            if S != H:
                shapes[f"R{layer}{suffix}"] = (S, H)
        if self.output is not None:
            shapes["V"] = (self.output_size, S * self.directions)
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
        """The model's parameter arrays, by name.

        Returns a new dict on every access.  Its values are views of the
        model's own C-contiguous arrays, in the model's dtype: writing into
        one (``model.params["W0"][...] = 0``, or an optimizer's in-place
        update) changes the model, while rebinding a key of the dict, or
        setting a view's ``shape`` or ``dtype``, does not.

        The keys, with H = `hidden_size`, G the gate blocks (1 for the RNN,
        4 for the LSTM, 3 for the GRU) and l the layer:

        - ``U{l}`` ``(G*H, D_l)``: input weights (D_0 = `input_size`, above
          it ``H * directions``);
        - ``W{l}`` ``(G*H, H)``: recurrent weights;
        - ``b{l}`` ``(G*H,)``: biases, one per gate;
        - ``bn{l}`` ``(H,)``: the GRU's recurrent bias of its candidate
          (PyTorch's ``b_hn``; only with ``reset_after=True``);
        - ``P{l}`` ``(3, H)``: an LSTM's peephole weights, rows P_i, P_o,
          P_f (ONNX's order; only with ``peepholes=True``);
        - ``R{l}`` ``(P, H)``: an LSTM's projection ``h = R m`` (PyTorch's
          ``weight_hr_l{l}``; only with ``proj_size=P > 0``, which also
          makes ``W{l}`` ``(G*H, P)``, ``U{l}`` of l > 0 and ``V`` read
          ``P * directions`` values);
        - the same with a ``_reverse`` suffix for a backward direction;
        - ``V`` ``(K, H * directions)`` and ``c`` ``(K,)``: the output
          layer, absent with ``output=None``.

        Examples
        --------
        >>> model = crnn.RNN(3, 5, 2, seed=0)
        >>> {name: array.shape for name, array in model.params.items()}
        {'U0': (5, 3), 'W0': (5, 5), 'b0': (5,), 'V': (2, 5), 'c': (2,)}
        """
        return {name: array.view() for name, array in self._params.items()}

    def set_params(self, params):
        """Copy new values into every parameter array.

        Every array is checked before any is copied, so a refused call
        changes nothing; the copy is made under the model's lock, so a
        `forward` running in another thread sees the old weights or the
        new ones, never a mix.

        Parameters
        ----------
        params : dict of array_like
            Exactly the keys of ``model.params``, each with its shape.  Any real
            dtype is accepted and cast to the model's.

        Raises
        ------
        TypeError
            `params` is not a dict, or an entry is not real numbers.
        ValueError
            A key is missing or unexpected, an array has the wrong shape,
            or a value is NaN or infinite (after the cast to the model's
            dtype).

        Examples
        --------
        >>> model = crnn.RNN(3, 5, 2, seed=0)
        >>> zeros = {name: np.zeros(a.shape) for name, a in model.params.items()}
        >>> model.set_params(zeros)
        >>> float(np.abs(model.params["W0"]).sum())
        0.0
        """
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
    def _state_shape(self, n, cell=False):
        """h's shape (cell=False) or C's for a batch of n."""
        return (self.num_layers * self.directions, n,
                self.hidden_size if cell else self._state_width)

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
        # c0 is as wide as the cells, h0 as h (narrower with a projection)
        shapes = (shape, self._state_shape(batch.size, cell=True))
        return tuple(_inputs.prepare_state(state, name, state_shape, batch, self.dtype)
                     for state, name, state_shape in zip(initial_state, ("h0", "c0"),
                                                         shapes))

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
        """The guard before compiled code: the network tuple ``run`` takes,
        holding the checked views of a _state.Door.  Per call it compares
        the lane list, V and c by identity and the settings by value (O(1));
        on any change a new Door checks every array against the settings
        again, and the tuple is built anew from its views."""
        door = self.__dict__.get("_door")
        if (door is None or door.lanes is not lanes or door.V is not V or door.c is not c
                or _state.door_settings_of(self) != door.settings):
            door = self.__dict__["_door"] = _state.Door(self, lanes, V, c)
            lanes, V, c = door.views
            self.__dict__["_door_network"] = (
                self._cell_kind(), self.hidden_size, self.num_layers,
                self.directions, lanes, V, c, OUTPUT_KINDS[self.output],
                self.return_sequences)
        return self.__dict__["_door_network"]

    # ------------------------------------------------------------ driver
    def _lane_keys(self):
        """Parameter names of every lane, in the driver's order."""
        kinds = (("U", "W", "b") + ("bn",) * bool(self._recurrent_bias)
                 + ("P",) * bool(self._peephole_blocks)
                 + ("R",) * (self._state_width != self.hidden_size))
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
        list (the order of the engine's "grads"), _lanes() and
        _buffer_width(), built on a model's first call and reused: they
        depend on the model's structure alone, and the parameter arrays keep
        their identity (set_params copies into them).  Rebuilding them cost
        a small call (T=50, B=1) about 5% of its instructions.  Copies and
        pickles build their own (__getstate__ leaves this out)."""
        layout = self._driver_cache
        if layout is None:
            # the state its lanes are read from, checked first: a missing or
            # misshapen parameter is a ValueError here, not a KeyError
            _state.Door(self)
            keys = [key for lane_keys in self._lane_keys() for key in lane_keys]
            layout = self._driver_cache = (keys, self._lanes(), self._buffer_width())
        return layout

    def _run(self, batch, h0, c0, targets=None, scale=1.0, need_grad=False,
             masks=None, keep=False):
        _, lanes, width = self._driver_layout()
        params = self._params
        network = self._check_door(lanes, params.get("V"), params.get("c"))
        # The driver's buffers are (T·B × width) and BLAS takes 32-bit sizes
        # (prepare_batch checked this before copying anything; kept here as
        # the last word before the kernels).
        _inputs.check_buffers(batch.steps, batch.size, width)
        # multiply-adds of one recurrent product per step, the call's bulk
        work = batch.steps * batch.size * width * self.hidden_size
        with self._lock, single_threaded_blas(work):
            if keep:    # the forward, keeping its call for backward (_vjp)
                result, result["call"] = forward(
                    self._workspace, network, batch.inputs, batch.lengths,
                    (h0, c0), masks)
            else:
                result = run(self._workspace, network, batch.inputs, batch.lengths,
                             (h0, c0), targets, scale, need_grad, masks)
            # outputs is a view of the workspace: copy it out under the lock
            outputs = result["outputs"]
            result["outputs"] = (batch.unsort(outputs) if self.return_sequences
                                 else batch.unsort_rows(outputs))
        return result

    # ------------------------------------------------------------ public API
    @_documented
    def forward(self, X, lengths=None, initial_state=None, return_state=False,
                training=False, return_cache=False, *, dropout_seed=None):
        """Run the model over a batch of sequences.

        Parameters
        ----------
        %(inputs)s
        initial_state : array_like or pair of array_like, optional
            ``h0`` (RNN, GRU) or ``(h0, c0)`` (LSTM), each
            ``(num_layers * directions, N, hidden_size)``, PyTorch's
            layout.  Default: zeros.
        return_state : bool, default False
            Also return the final state.
        training : bool, default False
            Whether this is a training pass: the model's dropout acts only
            there, with the masks of `dropout_seed` (as in `loss_and_grad`).
        return_cache : bool, default False
            Also return a cache for `backward`, the vector-Jacobian product
            (see `backward` for what it gives and how long the cache lasts).
        dropout_seed : int or sequence of int, optional
            Seeds the dropout masks of a training pass (see
            `loss_and_grad`); ignored otherwise.

        Returns
        -------
        Y : numpy.ndarray
            ``(N, T, K)`` with ``return_sequences=True``, where the rows
            past a sequence's length are zero; ``(N, K)`` without.  It holds
            class probabilities (``output="softmax"``), values
            (``"linear"``) or the top layer's hidden states (None; then
            K = ``hidden_size * directions``), in the model's dtype.
        state : numpy.ndarray or tuple of numpy.ndarray
            Only with `return_state`: each sequence's state after its own
            last step, shaped like `initial_state`.
        cache : Cache
            Only with `return_cache`, last.

        Raises
        ------
        TypeError, ValueError
            Bad input (see the Errors page): wrong shapes or dtypes, NaN or
            infinity, token ids or lengths out of range.

        Examples
        --------
        >>> model = crnn.LSTM(input_size=4, hidden_size=8, output_size=3, seed=0)
        >>> X = np.random.default_rng(0).normal(size=(2, 5, 4))
        >>> Y = model.forward(X, lengths=[5, 2])
        >>> Y.shape, bool(np.allclose(Y[0].sum(axis=-1), 1.0))
        ((2, 5, 3), True)
        >>> float(np.abs(Y[1, 2:]).max())        # past the length of 2
        0.0
        >>> Y, (h, c) = model.forward(X, return_state=True)
        >>> h.shape
        (1, 2, 8)
        """
        if not isinstance(return_cache, (bool, np.bool_)):
            raise TypeError(f"return_cache must be True or False, got {return_cache!r}")
        batch = _inputs.prepare_batch(X, lengths, self.input_size, self.dtype,
                                      self._driver_layout()[2])
        h0, c0 = self._prepare_state(initial_state, batch)
        masks = (None if training is False and dropout_seed is None     # inference
                 else _dropout.training_masks(self, batch, training, dropout_seed))
        if return_cache:
            ragged = ([len(x) for x in X] if isinstance(X, (list, tuple)) else None)
            return self._forward_with_cache(batch, h0, c0, return_state, ragged, masks)
        result = self._run(batch, h0, c0, masks=masks)
        if return_state:
            return result["outputs"], self._final_state(result, batch)
        return result["outputs"]

    @_documented
    def loss_and_grad(self, X, y, lengths=None, initial_state=None, *,
                      reduction="mean", return_state_grad=False,
                      return_state=False, return_outputs=False, training=False,
                      dropout_seed=None):
        """The loss on a batch and its gradient for every parameter.

        One forward pass and back-propagation through time.

        Parameters
        ----------
        %(inputs)s
        y : array_like or list of array_like
            Targets.  Softmax models: integer class ids ``(N, T)`` (or a
            list of ``(T_i,)``) with ``return_sequences=True``, ``(N,)``
            without.  Linear models: floats ``(N, T, K)`` / ``(N, K)``; a
            trailing K = 1 may be left out.  Ignored at padded positions.
        initial_state : array_like or pair of array_like, optional
            ``h0`` (RNN, GRU) or ``(h0, c0)`` (LSTM), each
            ``(num_layers * directions, N, hidden_size)``, PyTorch's
            layout.  Default: zeros.
        reduction : {"mean", "sum"}, default "mean"
            ``"mean"``: the mean over every position that has a target
            (padding excluded).  ``"sum"``: their sum.
        return_state_grad : bool, default False
            Also return the gradient with respect to the initial state
            (for zeros when `initial_state` is None), shaped like it.
        return_state, return_outputs : bool, default False
            Also return the final state and the outputs, as `forward`
            gives them (the trainer's truncated BPTT and running accuracy
            use them).
        training : bool, default False
            Apply the model's dropout (``dropout``, ``recurrent_dropout``,
            ``output_dropout``): masks drawn once per sequence and held for
            every step, the gradient exact for them.  False (the default)
            computes the model as `forward` does; `crnn.Trainer` passes True.
        dropout_seed : int or sequence of int, optional
            Seeds the masks (``numpy.random.default_rng(dropout_seed)``):
            the same seed, the same masks.  A sequence of N ints seeds each
            sequence's masks apart (the `Trainer` passes one per sequence,
            so a sequence's masks do not depend on the batch it is in).
            None draws fresh ones.

        Returns
        -------
        loss : float
            Cross-entropy (softmax) or ½‖o − y‖² summed over the K outputs
            (linear) per position, reduced by `reduction`.
        grads : dict of numpy.ndarray
            The gradient of `loss`, with exactly the keys, shapes and dtype
            of `params`.
        extras
            After `grads`, in this order and only when asked for: the
            state gradient, the final state, the outputs.

        Raises
        ------
        ValueError
            The model has no output layer (``output=None``), an unknown
            `reduction`, or bad input.
        TypeError
            Bad input types.

        Examples
        --------
        >>> model = crnn.GRU(input_size=4, hidden_size=8, output_size=3, seed=0)
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.normal(size=(2, 5, 4)), rng.integers(0, 3, size=(2, 5))
        >>> loss, grads = model.loss_and_grad(X, y)
        >>> loss > 0, sorted(grads) == sorted(model.params)
        (True, True)
        >>> total, _ = model.loss_and_grad(X, y, reduction="sum")
        >>> bool(np.isclose(total, 10 * loss))          # 10 positions
        True
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
        masks = (None if training is False and dropout_seed is None     # inference
                 else _dropout.training_masks(self, batch, training, dropout_seed))
        result = self._run(batch, h0, c0, targets, scale, True, masks)
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

    @_documented
    def predict(self, X, lengths=None):
        """Predicted classes (softmax models) or values (linear models).

        Parameters
        ----------
        %(inputs)s

        Returns
        -------
        numpy.ndarray
            Softmax models: the most likely class id of every position,
            ``(N, T)`` (``-1`` at padded positions) or ``(N,)``, as int64.
            Linear models: the outputs, as `forward` gives them.

        Raises
        ------
        ValueError
            The model has no output layer, or bad input.
        TypeError
            Bad input types.

        Examples
        --------
        >>> model = crnn.RNN(input_size=6, hidden_size=8, output_size=3, seed=0)
        >>> tokens = np.array([[0, 5, 2, 1], [3, 3, 0, 0]])
        >>> labels = model.predict(tokens, lengths=[4, 2])
        >>> labels.shape, labels[1, 2:].tolist()
        ((2, 4), [-1, -1])
        """
        if self.output is None:
            raise ValueError("predict needs an output layer; this model has output=None")
        outputs = self.forward(X, lengths)
        if self.output == "linear":
            return outputs
        labels = outputs.argmax(axis=-1)
        if self.return_sequences:
            labels[outputs.sum(axis=-1) == 0] = -1   # padding: all-zero rows
        return labels

    @_documented
    def predict_proba(self, X, lengths=None):
        """Class probabilities of a softmax model (what `forward` returns).

        Parameters
        ----------
        %(inputs)s

        Returns
        -------
        probabilities : numpy.ndarray
            ``(N, T, K)`` or ``(N, K)``, zero at padded positions.

        Raises
        ------
        ValueError
            The model's output is not ``"softmax"``, or bad input.

        Examples
        --------
        >>> model = crnn.LSTM(4, 8, 3, return_sequences=False, seed=0)
        >>> p = model.predict_proba(np.ones((2, 6, 4)))
        >>> p.shape, bool(np.allclose(p.sum(axis=1), 1))
        ((2, 3), True)
        """
        if self.output != "softmax":
            raise ValueError(
                f"predict_proba needs output='softmax', this model has output={self.output!r}")
        return self.forward(X, lengths)

    # ------------------------------------------------------------ copying
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_workspace"], state["_lock"]
        # the copy's lanes must be its own arrays: _driver_layout rebuilds them
        for cached in ("_driver_cache", "_door", "_door_network"):
            state.pop(cached, None)
        return state

    def __setstate__(self, state):
        """Restore a pickled state after checking it as ``crnn.load`` checks
        a file: every setting, and every parameter's shape, dtype and layout
        (_state.check_state).  ValueError or TypeError on anything
        inconsistent; crnn.load builds models this way too."""
        self.__dict__.update(_state.check_state(type(self), state))
        self.__dict__["_workspace"] = Workspace()
        self.__dict__["_lock"] = threading.Lock()
