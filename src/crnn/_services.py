"""What a crnn model does besides computing: streams, sampling, files and
other frameworks (ModelServices, a base of RecurrentModel), and the table
of output kinds.  Below it: the stream (``_stream``), ``io`` and
``interop``; it never imports the model classes.
"""
import numbers

import numpy as np

from . import _dropout, _inputs, _state, interop, io
from ._loss import OutputKind
from ._stream import Stream

# the engine's OutputKind of each `output` setting
OUTPUT_KINDS = {"softmax": OutputKind.OUTPUT_SOFTMAX,
                "linear": OutputKind.OUTPUT_LINEAR,
                None: OutputKind.OUTPUT_NONE}


class ModelServices:
    """Streaming, sampling, saving and converting, for RecurrentModel
    (which documents the model; these methods read its settings and
    parameters and call ``forward``-level machinery only through them)."""

    # ------------------------------------------------------------ streaming
    def stream(self, batch_size=1):
        """A stream that runs the model one time step at a time.

        The stream carries the state from one ``step`` to the next, for
        online inference and generation.  It reads the model's own
        parameter arrays, so in-place updates to the model are seen by the
        next step.  Fed a sequence step by step, it gives what `forward`
        gives for the whole sequence, to a few units in the last place.

        Parameters
        ----------
        batch_size : int, default 1
            The number of sequences stepped together.

        Returns
        -------
        crnn._stream.Stream
            ``stream.step(x, out=None)`` takes one step: for
            ``batch_size=1`` a feature vector ``(D,)`` or one token id,
            returning ``(K,)``; otherwise ``(B, D)`` features or ``(B,)``
            token ids, returning ``(B, K)``.  ``stream.state`` reads or sets
            the state (``(num_layers, B, H)``, a pair for the LSTM), and
            ``stream.reset()`` zeroes it.

        Raises
        ------
        ValueError
            The model is bidirectional (its backward direction needs the
            whole sequence), or `batch_size` is below 1 or too large.
        TypeError
            `batch_size` is not an integer.

        Examples
        --------
        >>> model = crnn.LSTM(input_size=4, hidden_size=8, output_size=3, seed=0)
        >>> X = np.random.default_rng(0).normal(size=(1, 6, 4))
        >>> stream = model.stream()
        >>> outputs = [stream.step(X[0, t]) for t in range(6)]
        >>> bool(np.allclose(outputs, model.forward(X)[0], atol=1e-5))
        True
        >>> stream.reset()
        >>> float(np.abs(stream.state[0]).max())
        0.0
        """
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
                      int(OUTPUT_KINDS[self.output]), batch_size, self.dtype)

    def sample(self, n, prime=None, temperature=1.0, seed=None):
        """Generate a sequence of tokens from a token model.

        The model must predict its own vocabulary (``output="softmax"``
        and ``output_size == input_size``).  It reads `prime` first, then
        draws each token from its predicted distribution and feeds it back
        as the next input.

        Parameters
        ----------
        n : int
            The number of tokens to draw (0 gives an empty array).
        prime : sequence of int, optional
            Token ids to read before drawing.  Without it, the first token
            is drawn uniformly from the vocabulary.
        temperature : float, default 1.0
            Divides the log-probabilities: below 1 sharpens the
            distribution (towards the most likely token), above 1 flattens
            it.
        seed : int, optional
            Seeds the draws; None draws fresh randomness.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` int64 token ids (`prime` not included).

        Raises
        ------
        ValueError
            Not a token model, a negative `n`, a `temperature` that is not
            a finite number above 0, a negative seed, or a `prime` that is
            not a non-empty 1-D sequence of valid token ids.
        TypeError
            `n` or `seed` is not an integer.

        Examples
        --------
        >>> model = crnn.LSTM(input_size=5, hidden_size=8, seed=0)
        >>> tokens = model.sample(10, prime=[0, 1], temperature=0.5, seed=0)
        >>> tokens.shape, bool(((0 <= tokens) & (tokens < 5)).all())
        ((10,), True)
        >>> bool((model.sample(10, seed=3) == model.sample(10, seed=3)).all())
        True
        """
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
        """Write the model to a file; `crnn.load` reads it back.

        The file is a numpy ``.npz`` archive of the parameters and a JSON
        header with the model's settings.  It is written to a temporary
        file that replaces `path` only once it is complete, so an
        interrupted save leaves the previous file.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write, exactly (no suffix is added).

        Raises
        ------
        OSError
            The file cannot be written.

        Examples
        --------
        >>> import os, tempfile
        >>> model = crnn.GRU(4, 8, 3, seed=0)
        >>> path = os.path.join(tempfile.mkdtemp(), "gru.npz")
        >>> model.save(path)
        >>> loaded = crnn.load(path)
        >>> loaded
        GRU(4, 8, 3, num_layers=1, bidirectional=False, output='softmax', return_sequences=True, dtype='float32')
        >>> all(np.array_equal(loaded.params[k], model.params[k]) for k in model.params)
        True
        """
        io.save(self, path)

    def to_torch(self):
        """The same network as PyTorch modules (needs PyTorch).

        Returns
        -------
        module : torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU
            With ``batch_first=True``, in the model's dtype; the bias goes
            into ``b_ih`` and ``b_hh`` is zero (the GRU's ``bn`` into the
            candidate's block of ``b_hh``).
        linear : torch.nn.Linear or None
            The output layer, giving logits (apply a softmax yourself);
            None without an output layer.

        Raises
        ------
        ImportError
            PyTorch is not installed.
        ValueError
            PyTorch has no such network (``GRU(reset_after=False)``).

        See Also
        --------
        crnn.from_torch : the other way.
        """
        return interop.to_torch(self)

    def to_onnx(self, path, **options):
        """Write the model as an ONNX graph (needs the ``onnx`` package).

        Parameters
        ----------
        path : str or os.PathLike
            The ``.onnx`` file to write.
        **options
            ``lengths=True`` (a ``lengths`` input; False: every sequence
            is T long), ``tokens=False`` (True: the input is int64 token
            ids), ``dtype=None`` (the graph's float type; default the
            model's), ``opset=17``.  See `crnn.interop.to_onnx`.

        Raises
        ------
        ImportError
            The onnx package is not installed.
        """
        interop.to_onnx(self, path, **options)

    def __repr__(self):
        # the constructor's call, with the dropout settings that are set
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"{self.output_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, output={self.output!r}, "
                f"return_sequences={self.return_sequences}, "
                + "".join(f"{name}={getattr(self, name)!r}, "
                          for name in _dropout.SETTINGS if getattr(self, name))
                + ("" if self.dropout_first_layer or not self.dropout
                   else "dropout_first_layer=False, ")
                + f"dtype='{self.dtype}')")
