"""Streaming inference: one time step at a time, the state kept between calls.

A ``Stream`` holds a one-step workspace for every layer of a one-direction
model and pointers to the model's own parameter arrays (so updates to the
model, which are always in place, are seen by the stream).  ``step`` runs,
without the GIL and without allocating (given ``out``), for each layer: the
input projection (a GEMV, or a column gather for a token), the recurrent
product and the cell's point-wise kernel (the lane's own forward, with
T = 1), then the output layer.  The buffers use the lane's layout with
T = 1: ``hs`` slot 0 is the carried state and slot 1 the new one.
"""
cimport numpy as cnp
from cython cimport floating
from libc.math cimport isfinite
from libc.string cimport memcpy

from ._arrays cimport data
from ._cells cimport cell_spec
from ._lane cimport LaneInputs, LaneStates, LaneWeights, lane_forward
from ._loss cimport OUTPUT_NONE, OUTPUT_SOFTMAX, softmax_cross_entropy
from ._parallel cimport team_gemm
from ._plan cimport LanePlan, plan_lane, plan_projection

import numpy as np

cnp.import_array()


cdef class Stream:
    """Streaming inference: one time step at a time, the state carried
    between calls.

    Made by ``model.stream(batch_size=1)``, never directly.  Each stream
    carries its own state, so a service can keep one stream per session.
    It never applies dropout.

    Attributes
    ----------
    batch_size : int
        The number of sequences stepped together (the B of ``step``).
    state : ndarray or tuple of ndarray
        The carried state in PyTorch's layout: h of shape
        ``(num_layers, batch_size, width)`` (width is ``proj_size`` for a
        projected LSTM, else ``hidden_size``), or for an LSTM a pair
        ``(h, c)`` with c ``(num_layers, batch_size, hidden_size)``.
        Reading returns a copy; assigning checks the shapes and dtype and
        copies the values in (``TypeError`` / ``ValueError`` otherwise).

    See Also
    --------
    crnn.LSTM.stream : makes a stream; its example steps one.

    Examples
    --------
    >>> import numpy as np, crnn
    >>> model = crnn.GRU(input_size=3, hidden_size=5, output_size=2, seed=0)
    >>> stream = model.stream(batch_size=2)
    >>> stream.step(np.zeros((2, 3), dtype=np.float32)).shape
    (2, 2)
    >>> stream.state.shape
    (1, 2, 5)
    >>> stream.reset()
    >>> float(abs(stream.state).max())
    0.0
    """
    cdef readonly int batch_size
    cdef int kind, hidden, layers, inputs, width, output_kind
    cdef int state_width        # S: h's width (H, or a projected LSTM's P)
    cdef bint with_c, separate, is_float
    cdef object dtype
    cdef list lanes             # per layer: (U, W, b[, bn][, P][, R]) — the model's arrays
    cdef object V, c
    cdef list hs, cs, gates, keep
    cdef object recurrent, x_buffer, token_buffer, ms
    cdef int batch_sizes[1]
    cdef int type_num           # NPY_FLOAT32 or NPY_FLOAT64
    # Data pointers of every array above, per layer, taken once: the arrays
    # live as long as the stream (it holds them) and never move.
    cdef void *U_data[64]
    cdef void *W_data[64]
    cdef void *b_data[64]
    cdef void *bn_data[64]
    cdef void *p_data[64]
    cdef void *R_data[64]
    cdef void *hs_data[64]
    cdef void *cs_data[64]
    cdef void *gates_data[64]
    cdef void *keep_data[64]
    cdef LanePlan plans[64]     # each layer's one-step plan

    def __init__(self, int kind, int hidden, list lanes, V, c, int output_kind,
                 int batch_size, dtype):
        self.kind = kind
        self.hidden = hidden
        self.layers = len(lanes)
        self.lanes = lanes
        self.V = V
        self.c = c
        self.output_kind = output_kind
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        self.is_float = self.dtype == np.float32
        self.with_c = cell_spec(kind).pair_state
        self.separate = cell_spec(kind).separate_recurrent
        self.inputs = lanes[0][0].shape[1]
        # h is as wide as W's columns: H, or a projected LSTM's P < H
        self.state_width = S = lanes[0][1].shape[1]
        self.width = V.shape[0] if V is not None else S
        cdef int GH = cell_spec(kind).gate_blocks * hidden
        B, H = batch_size, hidden
        self.hs = [np.zeros((2, B, S), self.dtype) for _ in lanes]
        self.ms = np.empty((B, H), self.dtype)      # m(t) before the projection
        self.cs = [np.zeros((2, B, H), self.dtype) if self.with_c else None
                   for _ in lanes]
        self.gates = [np.empty((B, GH), self.dtype) for _ in lanes]
        self.keep = [np.empty((B, H), self.dtype) if cell_spec(kind).keeps
                     else None for _ in lanes]
        self.recurrent = np.empty((B, GH), self.dtype)
        self.x_buffer = np.empty((B, self.inputs), self.dtype)
        self.token_buffer = np.empty(B, np.int32)
        self.batch_sizes[0] = B
        self.type_num = cnp.NPY_FLOAT32 if self.is_float else cnp.NPY_FLOAT64
        if self.layers > 64:
            raise ValueError(f"streaming supports at most 64 layers, got {self.layers}")
        for layer in range(self.layers):
            lane = lanes[layer]
            self.U_data[layer] = data(lane[0])
            self.W_data[layer] = data(lane[1])
            self.b_data[layer] = data(lane[2])
            self.bn_data[layer] = data(lane[3]) if cell_spec(kind).recurrent_bias else NULL
            # peephole weights follow U, W, b (and bn)
            extra = 3 + cell_spec(kind).recurrent_bias      # P, then R
            self.p_data[layer] = (data(lane[extra]) if cell_spec(kind).peephole_blocks
                                  else NULL)
            extra += cell_spec(kind).peephole_blocks != 0
            self.R_data[layer] = data(lane[extra]) if S != H else NULL
            self.hs_data[layer] = data(self.hs[layer])
            self.cs_data[layer] = data(self.cs[layer])
            self.gates_data[layer] = data(self.gates[layer])
            self.keep_data[layer] = data(self.keep[layer])
            plan_lane(&self.plans[layer], kind, 1, B,
                      self.inputs if layer == 0 else S, hidden, False, True)
            if S != H:
                plan_projection(&self.plans[layer], S)

    # ------------------------------------------------------------ state
    @property
    def state(self):
        h = np.stack([hs[0] for hs in self.hs])
        if self.with_c:
            return h, np.stack([cs[0] for cs in self.cs])
        return h

    @state.setter
    def state(self, value):
        shape = (self.layers, self.batch_size, self.state_width)
        if self.with_c:
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise TypeError(
                    f"an LSTM stream's state is a pair (h, c), got {type(value).__name__}")
            parts = list(value)
        else:
            parts = [value]
        checked = []
        for name, part in zip(("h", "c"), parts):
            if name == "c":     # C is H wide (h is not, with a projection)
                shape = shape[:2] + (self.hidden,)
            part = np.asarray(part)
            if part.dtype.kind not in "iuf":
                raise TypeError(f"state {name} must be real numbers, got dtype {part.dtype}")
            if part.shape != shape:
                raise ValueError(
                    f"state {name} must have shape {shape} (num_layers, "
                    f"batch_size, hidden_size), got {part.shape}")
            # cast first: a value too big for float32 becomes inf, refused here
            with np.errstate(over="ignore"):
                part = part.astype(self.dtype, copy=False)
            if not np.isfinite(part).all():
                raise ValueError(f"state {name} contains NaN or infinity")
            checked.append(part)
        for layer in range(self.layers):
            self.hs[layer][0] = checked[0][layer]
            if self.with_c:
                self.cs[layer][0] = checked[1][layer]

    def reset(self):
        """Zero the carried state, as at the start of a new sequence.

        Examples
        --------
        >>> import crnn
        >>> stream = crnn.RNN(2, 3, 2, seed=0).stream()
        >>> _ = stream.step([1.0, -1.0])
        >>> stream.reset()
        >>> stream.state.tolist()
        [[[0.0, 0.0, 0.0]]]
        """
        for layer in range(self.layers):
            self.hs[layer][0] = 0
            if self.with_c:
                self.cs[layer][0] = 0

    # ------------------------------------------------------------ stepping
    def step(self, x, out=None):
        """Consume one time step of every sequence and return its output.

        Parameters
        ----------
        x : array_like or int
            This step's input: for ``batch_size`` 1 a feature vector
            ``(input_size,)`` or one token id; for a batch, floats
            ``(batch_size, input_size)`` or token ids ``(batch_size,)``.
        out : ndarray, optional
            A C-contiguous array of the model's dtype shaped like the
            result: the output is written there and nothing is allocated
            (the fast path of a serving loop).

        Returns
        -------
        ndarray
            This step's output, ``(K,)`` for ``batch_size`` 1 or
            ``(batch_size, K)``: probabilities (``output="softmax"``),
            values (``"linear"``) or the top layer's h (no output layer,
            K = its width).  It is ``out`` when given.

        Raises
        ------
        TypeError, ValueError
            For an input or ``out`` of another shape, dtype or layout, a
            token id outside the vocabulary, or a non-finite input; the
            state is then left as it was.

        Examples
        --------
        >>> import numpy as np, crnn
        >>> model = crnn.LSTM(4, 8, 3, seed=0)
        >>> stream = model.stream()
        >>> y = stream.step(np.ones(4, dtype=np.float32))
        >>> y.shape, bool(np.isclose(y.sum(), 1.0))
        ((3,), True)
        """
        cdef bint batched, tokens
        fast = self._fast_step(x, out)
        if fast is not None:
            return fast
        if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
            if self.batch_size != 1:
                raise ValueError(
                    f"x must hold {self.batch_size} token id(s), one per stream "
                    f"row, got 1 (a single token id)")
            tokens, batched = True, False
            array = np.asarray(x).reshape(1)
        else:
            array = np.asarray(x)
            if array.dtype.kind not in "iuf":
                raise TypeError(
                    f"x must hold real numbers (or token ids), got dtype {array.dtype}")
            if array.ndim == 2 or (array.ndim == 1 and array.dtype.kind == "f"):
                tokens = False
                batched = array.ndim == 2
                expected = (self.batch_size, self.inputs)
                if not batched:
                    expected = expected[1:]
                if array.shape != expected or (not batched and self.batch_size != 1):
                    raise ValueError(
                        f"x must be one step of shape {(self.batch_size, self.inputs)}"
                        + (f" or {(self.inputs,)}" if self.batch_size == 1 else "")
                        + f" (batch_size, input_size), got shape {array.shape}")
            elif array.ndim <= 1 and array.dtype.kind in "iu":
                tokens = True
                batched = array.ndim == 1
                array = array.reshape(-1)
                if array.shape[0] != self.batch_size:
                    raise ValueError(
                        f"x must hold {self.batch_size} token id(s), one per "
                        f"stream row, got {array.shape[0]}")
            else:
                raise ValueError(
                    f"x must be a feature vector, a token id, or a batch of "
                    f"either, got shape {array.shape} and dtype {array.dtype}")
        shape = (self.batch_size, self.width)
        if not batched:
            shape = shape[1:]
        if out is None:
            out = np.empty(shape, self.dtype)
        elif not (isinstance(out, np.ndarray) and out.shape == shape
                  and out.dtype == self.dtype and out.flags.c_contiguous
                  and out.flags.writeable):
            raise ValueError(
                f"out must be a writeable C-contiguous {self.dtype} array of "
                f"shape {shape}")
        if tokens:
            self._load_tokens(array)
        else:
            if array.dtype == self.dtype:
                np.copyto(self.x_buffer.reshape(array.shape), array)
            else:
                with np.errstate(over="ignore"):    # too big for float32: inf, refused below
                    np.copyto(self.x_buffer.reshape(array.shape), array, casting="unsafe")
            if self.is_float:
                self._check_finite[float](<float *> data(self.x_buffer))
            else:
                self._check_finite[double](<double *> data(self.x_buffer))
        if self.is_float:
            self._step[float](<float *> data(out), tokens)
        else:
            self._step[double](<double *> data(out), tokens)
        return out

    cdef object _fast_step(self, x, out):
        """The common case without Python-level checks: x an aligned,
        C-contiguous array of the model's dtype shaped (D,) (batch 1) or
        (B, D), and out None or a matching writeable array.  Returns the
        output, or None, having done nothing, for anything else (the general
        path checks and reports it)."""
        if type(x) is not np.ndarray or (out is not None and type(out) is not np.ndarray):
            return None
        cdef cnp.ndarray array = <cnp.ndarray> x
        cdef int ndim = cnp.PyArray_NDIM(array)
        cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(array)
        if (cnp.PyArray_TYPE(array) != self.type_num or not cnp.PyArray_ISCARRAY_RO(array)
                or not cnp.PyArray_ISNOTSWAPPED(array)):
            return None
        if not ((ndim == 2 and dims[0] == self.batch_size and dims[1] == self.inputs)
                or (ndim == 1 and self.batch_size == 1 and dims[0] == self.inputs)):
            return None
        cdef cnp.ndarray result
        if out is None:
            shape = (self.batch_size, self.width)
            result = np.empty(shape if ndim == 2 else shape[1:], self.dtype)
        else:
            result = <cnp.ndarray> out
            if (cnp.PyArray_TYPE(result) != self.type_num or not cnp.PyArray_ISCARRAY(result)
                    or not cnp.PyArray_ISNOTSWAPPED(result)
                    or cnp.PyArray_NDIM(result) != ndim
                    or cnp.PyArray_DIMS(result)[ndim - 1] != self.width
                    or (ndim == 2 and cnp.PyArray_DIMS(result)[0] != self.batch_size)):
                return None
        cdef size_t item = 4 if self.is_float else 8
        memcpy(data(self.x_buffer), cnp.PyArray_DATA(array),
               <size_t> self.batch_size * self.inputs * item)
        if self.is_float:
            self._check_finite[float](<float *> data(self.x_buffer))
            self._step[float](<float *> cnp.PyArray_DATA(result), False)
        else:
            self._check_finite[double](<double *> data(self.x_buffer))
            self._step[double](<double *> cnp.PyArray_DATA(result), False)
        return result

    cdef _load_tokens(self, array):
        cdef Py_ssize_t i
        cdef int *target = <int *> data(self.token_buffer)
        for i in range(self.batch_size):
            value = array[i]
            if value < 0 or value >= self.inputs:
                raise ValueError(
                    f"token ids must be in [0, {self.inputs}) (input_size = "
                    f"{self.inputs}), got {value}")
            target[i] = value

    cdef _check_finite(self, floating *x):
        cdef Py_ssize_t i
        cdef bint ok = True
        for i in range(<Py_ssize_t> self.batch_size * self.inputs):
            if not isfinite(x[i]):
                ok = False
        if not ok:
            raise ValueError("x contains NaN or infinity; expected finite values")

    cdef _step(self, floating *out, bint tokens):
        cdef int layer, row, B = self.batch_size, S = self.state_width, K = self.width
        cdef Py_ssize_t state = <Py_ssize_t> B * S
        cdef Py_ssize_t cell_state = <Py_ssize_t> B * self.hidden
        cdef LaneInputs inputs
        cdef LaneWeights weights
        cdef LaneStates states
        # Every pointer was gathered at construction; the whole step runs
        # without the GIL.
        cdef floating **hs = <floating **> self.hs_data
        cdef floating **cs = <floating **> self.cs_data
        cdef floating *x = <floating *> data(self.x_buffer)
        cdef int *token_ids = <int *> data(self.token_buffer) if tokens else NULL
        cdef floating *V = <floating *> data(self.V)
        cdef floating *c = <floating *> data(self.c)
        cdef int output_kind = self.output_kind
        cdef bint with_c = self.with_c
        cdef int layers = self.layers
        inputs.batch_sizes = self.batch_sizes
        weights.U_T = weights.panels = NULL
        states.recurrent = data(self.recurrent)
        states.ms = data(self.ms)
        states.recurrent_mask = NULL    # a stream never drops
        with nogil:
            for layer in range(layers):
                # one step of the lane: Z = x @ U.T + b (a column gather for
                # a token), the recurrent product and the point-wise pass
                inputs.x = x if layer == 0 else hs[layer - 1] + state
                inputs.tokens = token_ids if layer == 0 else NULL
                weights.U, weights.W = self.U_data[layer], self.W_data[layer]
                weights.b = self.b_data[layer]
                weights.recurrent_bias = self.bn_data[layer]
                weights.peepholes, weights.R = self.p_data[layer], self.R_data[layer]
                states.gates, states.hs = self.gates_data[layer], hs[layer]
                states.cs = cs[layer] if with_c else NULL
                states.keep = self.keep_data[layer]
                lane_forward(<floating> 0, &self.plans[layer], &inputs, &weights, &states)
            if output_kind == OUTPUT_NONE:
                memcpy(out, hs[layers - 1] + state, state * sizeof(floating))
            else:
                for row in range(B):
                    memcpy(out + row * K, c, K * sizeof(floating))
                # O = h @ V.T + c   (B × K) += (B × S)(K × S)ᵀ
                team_gemm(False, True, B, K, S, 1, hs[layers - 1] + state, S,
                          V, S, 1, out, K)
                if output_kind == OUTPUT_SOFTMAX:
                    softmax_cross_entropy(B, K, out, NULL, 0, NULL)
            # the new state becomes the carried one
            for layer in range(layers):
                memcpy(hs[layer], hs[layer] + state, state * sizeof(floating))
                if with_c:
                    memcpy(cs[layer], cs[layer] + cell_state,
                           cell_state * sizeof(floating))
