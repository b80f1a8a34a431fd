"""crnn.Trainer: mini-batch training of a crnn model (fit, evaluate, History).

The trainer owns the training loop and nothing below it: it validates the
data once, plans the batches of each epoch (seeded shuffling; ragged
sequences bucketed by length), calls ``model.loss_and_grad`` once per step,
checks the loss and the gradients, clips them, and hands them to a
``crnn.optim`` optimizer that updates ``model.params`` in place.  Around that
loop: validation, early stopping, callbacks, a progress bar, truncated BPTT,
the NaN guard and Ctrl-C handling.  The user guide is docs/training.md.

Guarantees, each tested in tests/test_trainer.py:

- a step is all or nothing: the loss and every gradient are checked before
  the update; the update itself is refused if it would produce a non-finite
  weight; Ctrl-C is held back while an update is being written;
- with the same seeds (model and trainer) and one BLAS thread, two runs give
  bit-identical weights.
"""
import copy
import json
import math
import os
import signal
import sys
import threading
import time
import zlib

import numpy as np

from . import _inputs, _optim, distributed, io, optim

__all__ = ["Trainer", "History", "NonFiniteError"]

_HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
          "on_batch_end")


class NonFiniteError(FloatingPointError):
    """Training met a NaN or infinite loss, gradient or update.

    `Trainer.fit` raises it before anything of the failing step is applied:
    the model holds the weights from before that step.  It is a
    `FloatingPointError`.

    Attributes
    ----------
    epoch : int
        The epoch of the failing step, counted from 0 as in callbacks (the
        message counts from 1).
    batch : int
        The step within that epoch, counted from 0.
    history : History
        The completed epochs.
    """

    def __init__(self, message, epoch, batch, history):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.history = history


class History:
    """The record of one `Trainer.fit`, which returns it.

    Attributes
    ----------
    history : dict of list
        Per-epoch values: ``"loss"``, ``"accuracy"`` (softmax models),
        ``"val_loss"`` and ``"val_accuracy"`` (with validation data) and
        ``"time"`` (seconds, validation included).
    epoch : list of int
        The recorded epochs, counted from 0.
    params : dict
        The fit's settings (epochs, batch_size, bptt, samples).
    best_epoch : int or None
        With early stopping, the epoch whose weights the model holds.
    stopped_epoch : int or None
        The epoch after which training stopped early (early stopping or a
        callback), else None.
    interrupted : bool
        True when Ctrl-C ended the fit.

    Examples
    --------
    >>> model = crnn.RNN(3, 8, 2, seed=0)
    >>> X = np.random.default_rng(0).normal(size=(6, 5, 3))
    >>> y = np.random.default_rng(1).integers(0, 2, size=(6, 5))
    >>> history = crnn.Trainer(model, seed=0).fit(X, y, epochs=2, verbose=0)
    >>> history
    History(epochs=2, keys=[loss, accuracy, time])
    >>> history.epoch, history.interrupted
    ([0, 1], False)
    """

    def __init__(self, params=None):
        self.history = {}
        self.epoch = []
        self.params = dict(params or {})
        self.best_epoch = None
        self.stopped_epoch = None
        self.interrupted = False

    def _record(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, keys=[{keys}])"


class _InterruptGuard:
    """Hold back Ctrl-C while the weights are being written.

    ``install`` (at the start of fit, in the main thread, when SIGINT has
    Python's default handler) puts in a handler that raises
    KeyboardInterrupt as the default one does, except inside ``with guard:``
    blocks, where it only records the signal and raises when the block ends.
    So an update, and the optimizer's step count with it, is applied whole
    or not at all.  One handler for the whole fit: entering a block costs
    two attribute writes.  Elsewhere (other threads never receive
    KeyboardInterrupt; custom handlers are left alone) it does nothing.
    """

    def __init__(self):
        self.previous = None
        self.writing = False
        self.pending = False

    def install(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handle(self, signum, frame):
        if self.writing:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self):
        self.writing = True
        return self

    def __exit__(self, kind, error, traceback):
        self.writing = False
        if self.pending:
            self.pending = False
            if kind is None:
                raise KeyboardInterrupt
        return False


class _Data:
    """A validated data set in the user's layout, padded, ready to slice.

    X        (N, T, D) floats of the model's dtype or (N, T) token ids
    y        (N, T) / (N, T, K) / (N, T) targets, or (N,) / (N, K) for
             many-to-one (softmax labels as integers)
    lengths  (N,) int64
    """

    def __init__(self, model, X, y, lengths, name):
        if _is_lazy(X):
            self._init_lazy(model, X, y, lengths, name)
            return
        self.lazy = False
        try:
            # The model's own checks, once for the whole set, so that every
            # error comes before any computation and reads like the model's.
            batch = _inputs.prepare_batch(X, lengths, model.input_size, model.dtype)
            _inputs.prepare_targets(y, batch, model.output, model.output_size,
                                    model.return_sequences, model.dtype)
        except (TypeError, ValueError) as error:
            if name:
                raise type(error)(f"{name}: {error}") from None
            raise
        if isinstance(X, (list, tuple)):
            X, lengths = _inputs._pad_list(X, "X")
        X = np.asarray(X)
        if X.dtype.kind == "f" or X.ndim == 3:
            X = X.astype(model.dtype, copy=False)
        self.X = X
        steps = X.shape[1]
        self.lengths = (np.full(len(X), steps, dtype=np.int64) if lengths is None
                        else np.asarray(lengths).astype(np.int64))
        if (model.return_sequences and isinstance(y, (list, tuple)) and len(y)
                and not np.isscalar(y[0])):
            y, _ = _inputs._pad_list(y, "y")
            if y.shape[1] < steps:
                pad = np.zeros((len(y), steps - y.shape[1]) + y.shape[2:], dtype=y.dtype)
                y = np.concatenate([y, pad], axis=1)
        y = np.asarray(y)
        if model.output == "linear":
            expected_ndim = 3 if model.return_sequences else 2
            if y.ndim == expected_ndim - 1:       # trailing K = 1 left out
                y = y[..., None]
        if model.return_sequences:
            # Padded targets may hold anything (they are ignored): zero them
            # so that casts and arithmetic on them stay quiet.
            mask = np.arange(steps) < self.lengths[:, None]
            y = np.where(mask.reshape(mask.shape + (1,) * (y.ndim - 2)), y, 0)
        self.y = (y.astype(np.int64) if model.output == "softmax"
                  else y.astype(model.dtype, copy=False))
        self.size = len(X)
        self.sequences = model.return_sequences
        self.ragged = bool(self.lengths.min() != self.lengths.max())
        self.shape, self.y_shape, self.x_dtype = X.shape, self.y.shape, X.dtype

    #: rows of a lazy data set checked with the model's own checks up front
    SAMPLE = 8

    def _init_lazy(self, model, X, y, lengths, name):
        """An array-like data set (np.memmap, or anything with __len__ and
        fancy indexing): nothing is read but the rows of each batch."""
        self.lazy = True
        self.model = model
        where = f"{name}: " if name else ""
        n = len(X)
        if n == 0:
            raise ValueError(f"{where}X must hold at least one sequence, got none")
        try:
            y_count = len(y)
        except TypeError:
            raise TypeError(f"{where}y must be an array-like with len() when X is "
                            f"one, got {type(y).__name__}") from None
        if y_count != n:
            raise ValueError(f"{where}y holds {y_count} targets, X {n} sequences: "
                             f"one each")
        first = np.asarray(_fetch(X, np.arange(min(n, self.SAMPLE)), 0, None))
        if first.ndim not in (2, 3):
            raise ValueError(
                f"{where}X must be (N, T, D) float features or (N, T) integer "
                f"tokens, got rows of shape {first.shape[1:]}")
        steps = first.shape[1]
        self.X, self.y = X, y
        self.size = n
        self.sequences = model.return_sequences
        if lengths is None:
            self.lengths = np.full(n, steps, dtype=np.int64)
        else:
            self.lengths = np.asarray(lengths)
            if self.lengths.shape != (n,) or self.lengths.dtype.kind not in "iu":
                raise ValueError(f"{where}lengths must be (N,) = ({n},) integers, got "
                                 f"shape {self.lengths.shape} of {self.lengths.dtype}")
            if self.lengths.min() < 1 or self.lengths.max() > steps:
                raise ValueError(f"{where}lengths must be between 1 and T = {steps}, "
                                 f"got values from {self.lengths.min()} to "
                                 f"{self.lengths.max()}")
            self.lengths = self.lengths.astype(np.int64)
        self.ragged = bool(self.lengths.min() != self.lengths.max())
        sample = np.arange(min(n, self.SAMPLE))
        ls = self.lengths[sample]
        end = int(ls.max())
        ys = np.asarray(_fetch(y, sample, 0, end) if self.sequences
                        else _fetch(y, sample, None, None))
        Xs, ys = self._layout(first[:, :end], ys, ls)
        try:
            # the model's own checks, on the first rows (the others are
            # checked batch by batch, by loss_and_grad)
            batch = _inputs.prepare_batch(Xs, ls, model.input_size, model.dtype)
            _inputs.prepare_targets(ys, batch, model.output, model.output_size,
                                    model.return_sequences, model.dtype)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{where}{error}") from None
        self.shape = (n,) + first.shape[1:]
        self.y_shape = (n,) + np.asarray(ys).shape[1:]
        self.x_dtype = first.dtype

    def take(self, rows, start=0, stop=None):
        """(X, y, lengths) of sequences `rows`, steps [start, stop), cut to
        the longest of them; every row must have a step at `start`."""
        lengths = self.lengths[rows] - start
        if stop is not None:
            lengths = np.minimum(lengths, stop - start)
        end = start + int(lengths.max())
        if self.lazy:
            return self._take_lazy(rows, start, end, lengths)
        X = self.X[rows, start:end]
        y = self.y[rows, start:end] if self.sequences else self.y[rows]
        return X, y, lengths

    def _take_lazy(self, rows, start, end, lengths):
        """Read rows `rows` (in increasing order, then put back in the asked
        order), steps [start, end), and lay them out as _Data does."""
        order = np.argsort(rows, kind="stable")
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        ascending = np.asarray(rows)[order]
        X = np.asarray(_fetch(self.X, ascending, start, end))[back]
        if self.sequences:
            y = np.asarray(_fetch(self.y, ascending, start, end))[back]
        else:
            y = np.asarray(_fetch(self.y, ascending, None, None))[back]
        X, y = self._layout(X, y, lengths)
        return X, y, lengths

    def _layout(self, X, y, lengths):
        """Rows read from a lazy data set, as the eager path lays them out."""
        model = self.model
        if X.dtype.kind == "f" or X.ndim == 3:
            X = X.astype(model.dtype, copy=False)
        if model.output == "linear":
            expected_ndim = 3 if self.sequences else 2
            if y.ndim == expected_ndim - 1:
                y = y[..., None]
        if self.sequences and self.ragged:
            mask = np.arange(y.shape[1]) < lengths[:, None]
            y = np.where(mask.reshape(mask.shape + (1,) * (y.ndim - 2)), y, 0)
        y = (y.astype(np.int64) if model.output == "softmax"
             else y.astype(model.dtype, copy=False))
        return X, y


def _is_lazy(X):
    """Data the trainer reads batch by batch instead of all at once: an
    np.memmap, or an array-like (len() and fancy indexing) that numpy would
    have to copy whole."""
    if isinstance(X, np.memmap):
        return True
    if isinstance(X, (np.ndarray, list, tuple)):
        return False
    return (hasattr(X, "__len__") and hasattr(X, "__getitem__")
            and not hasattr(X, "__array__") and not hasattr(X, "__array_interface__"))


def _fetch(array, rows, start, end):
    """array[rows, start:end] (rows increasing), for numpy arrays and for
    array-likes that only take one index at a time."""
    if isinstance(array, np.ndarray):
        if start is None:
            return array[rows]
        return array[rows, start:end]
    block = array[rows]
    return block if start is None else np.asarray(block)[:, start:end]


class _Progress:
    """verbose=1: a live progress bar on stderr (when it is a terminal)
    plus one line per epoch; verbose=2: the line per epoch only."""

    WIDTH = 24
    INTERVAL = 0.1    # seconds between redraws

    def __init__(self, verbose, epochs):
        self.verbose = verbose
        self.epochs = epochs
        stream = sys.stderr
        self.live = verbose == 1 and bool(getattr(stream, "isatty", lambda: False)())
        self.drawn = False

    def _write(self, text):
        sys.stderr.write(text)
        sys.stderr.flush()

    def begin_epoch(self, epoch, total):
        self.epoch, self.total = epoch, total
        self.start = self.last = time.perf_counter()

    def update(self, done, loss, sequences):
        if not self.live:
            return
        now = time.perf_counter()
        if now - self.last < self.INTERVAL and done < self.total:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        filled = int(self.WIDTH * done / max(self.total, 1))
        bar = "=" * filled + (">" if filled < self.WIDTH else "") + \
            "." * max(self.WIDTH - filled - 1, 0)
        eta = elapsed / max(done, 1) * (self.total - done)
        self._write(f"\rEpoch {self.epoch + 1}/{self.epochs} {done}/{self.total} "
                    f"[{bar}] loss {loss:.4f}  {sequences / elapsed:.0f} seq/s  "
                    f"ETA {_clock(eta)}  ")
        self.drawn = True

    def end_epoch(self, done, sequences, logs):
        if not self.verbose:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        metrics = "  ".join(f"{key} {value:.4f}" for key, value in logs.items()
                            if key != "time")
        self._write(f"{self._clear()}Epoch {self.epoch + 1}/{self.epochs} "
                    f"{done}/{self.total}  {elapsed:.1f}s  "
                    f"{sequences / elapsed:.0f} seq/s  {metrics}\n")

    def note(self, text):
        if self.verbose:
            self._write(f"{self._clear()}{text}\n")

    def _clear(self):
        if self.drawn:
            self.drawn = False
            return "\r\033[K"
        return ""


def _clock(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours
            else f"{rest // 60}:{rest % 60:02d}")


def _number(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _json_array(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def _shape_config(model):
    """A model's kind and constructor arguments, its seed left out."""
    kind, config = io.model_config(model)
    config.pop("seed", None)
    return kind, sorted(config.items())


def _check_optional_int(value, name, minimum):
    if value is None:
        return None
    return _inputs.check_positive_int(value, name, minimum)


class Trainer:
    """Trains a crnn model by mini-batch gradient descent.

    Each step computes ``model.loss_and_grad`` on a batch, checks the loss
    and gradients, clips them and hands them to an optimizer that updates
    ``model.params`` in place.

    Parameters
    ----------
    model : crnn.RNN, crnn.LSTM or crnn.GRU
        The model to train, with an output layer (``"softmax"`` or
        ``"linear"``).
    optimizer : str or crnn.optim.Optimizer, default "adam"
        ``"sgd"``, ``"momentum"`` (SGD with momentum 0.9), ``"adam"``,
        ``"rmsprop"`` or ``"adagrad"`` (any case), built with `lr` and
        `weight_decay`; or an optimizer object, which brings its own
        settings (`lr` and `weight_decay` must then stay at their
        defaults).
    lr : float, default 1e-3
        The learning rate of a named optimizer.
    batch_size : int, default 32
        Sequences per step (the last batch of an epoch may be smaller).
    clip_norm : float, optional
        When the global L2 norm of all gradients exceeds it, scale them
        down to it (PyTorch's ``clip_grad_norm_``).
    weight_decay : float, default 0.0
        An L2 penalty added to the gradient of every parameter.
    seed : int, optional
        Seeds the shuffling of the batches; None draws fresh randomness.
    comm : mpi4py communicator, optional
        For synchronous data-parallel training (``MPI.COMM_WORLD`` or any
        sub-communicator): every rank runs the same script, `batch_size` is
        the global batch, and the result is that of one process (see
        docs/distributed.md).  None trains in this process alone.

    Attributes
    ----------
    model
        The model being trained.
    optimizer : crnn.optim.Optimizer
        Its ``lr`` may be changed between steps (from a callback).
    history : History or None
        The last fit's record.
    stop_training : bool
        Set it to True from a callback to stop after the current step.
    comm, rank, size
        The communicator, this process's rank and the number of ranks (None,
        0 and 1 without a communicator).

    Raises
    ------
    TypeError
        `model` is not a crnn model, or a wrongly typed argument.
    ValueError
        The model has no output layer, an unknown optimizer name, a
        value out of range, or `lr` / `weight_decay` given with an
        optimizer object.

    See Also
    --------
    crnn.optim : the optimizers.

    Examples
    --------
    >>> model = crnn.LSTM(4, 16, 3, seed=0)
    >>> X = np.random.default_rng(0).normal(size=(32, 10, 4))
    >>> y = (X[..., 0] > 0).astype(int) + (X[..., 1] > 0)   # classes 0, 1, 2
    >>> trainer = crnn.Trainer(model, optimizer="adam", lr=1e-2, batch_size=8,
    ...                        clip_norm=5.0, seed=0)
    >>> history = trainer.fit(X, y, epochs=5, validation_data=(X, y), verbose=0)
    >>> history.history["val_loss"][-1] < history.history["val_loss"][0]
    True
    >>> sorted(trainer.evaluate(X, y))
    ['accuracy', 'loss']
    """

    #: Ragged data is bucketed by length within pools of this many batches
    #: (as torchtext's BucketIterator does): batches carry little padding
    #: yet change composition from epoch to epoch.
    bucket_pool = 100

    #: With a communicator: the ranks whose fit prints (progress bar, epoch
    #: lines, notes); the others are silent.  Set it on an instance, e.g.
    #: ``trainer.verbose_ranks = range(trainer.size)`` to hear every rank.
    verbose_ranks = (0,)

    def __init__(self, model, optimizer="adam", lr=1e-3, batch_size=32,
                 clip_norm=None, weight_decay=0.0, seed=None, comm=None):
        if not (hasattr(model, "loss_and_grad") and hasattr(model, "params")
                and hasattr(model, "return_sequences")):
            raise TypeError(
                f"model must be a crnn model (crnn.RNN, LSTM or GRU), got "
                f"{type(model).__name__}")
        if model.output is None:
            raise ValueError(
                "the Trainer needs a model with an output layer (output="
                "'softmax' or 'linear'); this model has output=None")
        self.model = model
        self.batch_size = _inputs.check_positive_int(batch_size, "batch_size")
        if clip_norm is not None:
            clip_norm = optim._check_number(clip_norm, "clip_norm", above=0)
        self.clip_norm = clip_norm
        lr = optim._check_number(lr, "lr", minimum=0)
        weight_decay = optim._check_number(weight_decay, "weight_decay", minimum=0)
        if isinstance(optimizer, optim.Optimizer) and (lr != 1e-3 or weight_decay != 0):
            raise ValueError(
                f"lr and weight_decay are set on the optimizer object "
                f"({optimizer!r}); got lr={lr:g}, weight_decay={weight_decay:g} "
                f"as well: leave them at their defaults (1e-3, 0)")
        self.optimizer = optim.get(optimizer, lr, weight_decay)
        if seed is not None and (isinstance(seed, (bool, np.bool_))
                                 or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.stop_training = False
        self.history = None
        self._guard = _InterruptGuard()
        self._collectives_left = False
        self._pending_error = None
        self._pending_stop = False
        # seconds in (and calls of) the steps' Allreduce in the last fit,
        # waiting for the slowest rank included (benchmarks/bench_scaling.py)
        self.allreduce_seconds, self.allreduce_calls = 0.0, 0
        self.comm = None if comm is None else distributed.check_comm(comm)
        self._team = None if comm is None else distributed.Team(comm)
        self.rank = 0 if comm is None else self._team.rank
        self.size = 1 if comm is None else self._team.size

    # ============================================================ fit
    def fit(self, X, y, lengths=None, epochs=1, validation_data=None,
            shuffle=True, early_stopping=None, callbacks=(), verbose=1,
            bptt=None, checkpoint=None, resume_from=None):
        """Train for a number of passes over the data.

        Every epoch the sequences are shuffled (seeded) and cut into batches;
        sequences of different lengths are bucketed by length so batches
        carry little padding.  Each batch is one step: ``loss_and_grad``,
        the NaN guard, clipping, the optimizer's update.

        Parameters
        ----------
        X, y, lengths
            The data, as ``model.loss_and_grad`` takes it.  It is checked
            once, before training starts.
        epochs : int, default 1
            Passes over the data.
        validation_data : tuple, optional
            ``(Xv, yv)`` or ``(Xv, yv, lengths_v)``, evaluated after every
            epoch (``val_loss``, and ``val_accuracy`` for softmax models).
        shuffle : bool, default True
            Reshuffle the sequences every epoch.  False keeps their order
            (sorted by length, stably, when the lengths differ).
        early_stopping : int, optional
            A patience: stop once the monitored loss (``val_loss``, or the
            training loss without validation data) has not improved for
            this many epochs.  The best epoch's weights are restored when
            fit ends.
        callbacks : object or sequence of objects, default ()
            Objects with any of ``on_train_begin(logs)``,
            ``on_epoch_begin(epoch, logs)``, ``on_batch_end(batch, logs)``,
            ``on_epoch_end(epoch, logs)`` and ``on_train_end(logs)``.  A
            hook that returns True (or sets ``trainer.stop_training``)
            stops training.
        verbose : {0, 1, 2}, default 1
            1: a progress bar on stderr when it is a terminal, and a line
            per epoch; 2: only the line per epoch; 0: nothing.
        bptt : int, optional
            Truncated back-propagation through time: cut the sequences into
            chunks of this many steps, one update per chunk, the state
            carried from chunk to chunk without a gradient.  Needs a
            many-to-many, one-direction model.
        checkpoint : str or os.PathLike, optional
            After every epoch, write a checkpoint there (``save_checkpoint``)
            that `resume_from` continues.
        resume_from : str or os.PathLike, optional
            A checkpoint written by `checkpoint` or ``save_checkpoint``:
            continue from it (weights, optimizer state, epoch counter, the
            trainer's random stream, History, early-stopping state) up to
            `epochs` epochs in all.

        Returns
        -------
        History
            The per-epoch losses (and accuracies) and how training ended.

        Raises
        ------
        crnn.trainer.NonFiniteError
            A NaN or infinite loss, gradient or update; the model keeps the
            weights from before that step, and the error's ``history`` the
            completed epochs.
        TypeError, ValueError
            Bad data or arguments, before any training.

        Notes
        -----
        Ctrl-C ends fit after the last completed step and returns the
        History so far, with ``interrupted`` True; an update being written
        when it arrives is completed first.  With the same seeds (model and
        trainer), the same data and BLAS on one thread, two runs give
        bit-identical weights.  With ``comm`` (see the class), every rank
        calls fit with the same arguments; the result is that of one
        process (docs/distributed.md).

        Examples
        --------
        >>> model = crnn.GRU(input_size=6, hidden_size=16, seed=0)
        >>> text = np.random.default_rng(0).integers(0, 6, size=(8, 41))
        >>> X, y = text[:, :-1], text[:, 1:]          # next-token targets
        >>> trainer = crnn.Trainer(model, lr=1e-2, batch_size=4, seed=0)
        >>> history = trainer.fit(X, y, epochs=3, bptt=10, verbose=0)
        >>> len(history.history["loss"]), history.params["bptt"]
        (3, 10)
        """
        arguments = dict(X=X, y=y, lengths=lengths, epochs=epochs,
                         validation_data=validation_data, shuffle=shuffle,
                         early_stopping=early_stopping, callbacks=callbacks,
                         verbose=verbose, bptt=bptt, checkpoint=checkpoint,
                         resume_from=resume_from)
        team = self._team
        if team is None:
            return self._run(self._setup(**arguments))
        # Every rank checks its own arguments; one collective then compares
        # a fingerprint of them and shares any error, so that all ranks
        # raise together, before any other communication.
        setup, error = None, None
        try:
            setup = self._setup(**arguments)
        except Exception as caught:       # shared with the other ranks below
            error = caught
        self._agree_on_setup(setup, error)
        self._collectives_left = True
        try:
            return self._run(setup)
        except BaseException as caught:
            if self._collectives_left and team.size > 1 and \
                    not getattr(caught, "_crnn_agreed", False):
                # an error the other ranks cannot hear of (Ctrl-C, an error
                # outside the agreed points): end the job, never a hang
                team.abort(caught)
            raise
        finally:
            self._collectives_left = False

    def _setup(self, X, y, lengths, epochs, validation_data, shuffle,
               early_stopping, callbacks, verbose, bptt, checkpoint, resume_from):
        """Check fit's arguments (and read `resume_from`); raises on the
        first problem, before anything changes."""
        model = self.model
        epochs = _inputs.check_positive_int(epochs, "epochs")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        patience = _check_optional_int(early_stopping, "early_stopping", 0)
        if isinstance(verbose, (bool, np.bool_)):
            verbose = int(verbose)
        if verbose not in (0, 1, 2) or not isinstance(verbose, (int, np.integer)):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        callbacks = self._check_callbacks(callbacks)
        bptt = _check_optional_int(bptt, "bptt", 1)
        if bptt is not None and not model.return_sequences:
            raise ValueError(
                "bptt needs a model with return_sequences=True (a target at "
                "every step); this model has return_sequences=False, train "
                "it with bptt=None")
        if bptt is not None and model.bidirectional:
            raise ValueError(
                "bptt needs a unidirectional model: the backward direction of "
                "a bidirectional model cannot carry its state from one chunk "
                "to the next; train it with bptt=None")
        for name, value in (("checkpoint", checkpoint), ("resume_from", resume_from)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path (str or os.PathLike) or "
                                f"None, got {type(value).__name__}")
        data = _Data(model, X, y, lengths, "")
        validation = self._check_validation(validation_data)
        setup = dict(data=data, validation=validation, epochs=epochs,
                     shuffle=bool(shuffle), patience=patience, verbose=verbose,
                     callbacks=callbacks, bptt=bptt, checkpoint=checkpoint,
                     resume_from=resume_from, state=None)
        # Only rank 0 reads the checkpoint (the other ranks get its contents
        # from rank 0's broadcast, so the file need not be on their disks).
        if resume_from is not None and self.rank == 0:
            setup["state"] = self._read_resume(resume_from)
        return setup

    def _run(self, s):
        model = self.model
        team = self._team
        epochs, patience, callbacks = s["epochs"], s["patience"], s["callbacks"]
        data, validation = s["data"], s["validation"]
        self.stop_training = False
        self._pending_error = None
        self._pending_stop = False
        self.allreduce_seconds, self.allreduce_calls = 0.0, 0
        progress = _Progress(s["verbose"] if self.rank in self.verbose_ranks else 0,
                             epochs)
        history = History({"epochs": epochs, "batch_size": self.batch_size,
                           "bptt": s["bptt"], "samples": data.size})
        monitor = "val_loss" if validation is not None else "loss"
        state = {"epoch": 0, "best_loss": math.inf, "waited": 0,
                 "best_params": None, "stopped": False}
        if s["state"] is not None:                   # resume_from (rank 0)
            state = self._apply_resume(s["state"], history)
        if team is not None:
            state = self._share_rank0_state(state, history)
        self.history = history
        self._fit_state = state
        self._fit_state["history"] = history
        self._fit_state["monitor"] = monitor
        if s["state"] is not None or state["epoch"]:
            progress.note(f"Resuming after epoch {state['epoch']}")

        single = team is None
        if single:
            self._guard.install()
        try:
            stop = self._call_agreed(callbacks, "on_train_begin", {})
            if state["stopped"]:
                stop = True        # the checkpointed run had already stopped
            for epoch in range(state["epoch"], epochs):
                if stop or self.stop_training:
                    break
                stop = self._call_agreed(callbacks, "on_epoch_begin", epoch, {})
                if stop or self.stop_training:
                    break
                started = time.perf_counter()
                train_epoch = self._train_epoch if single else self._train_epoch_team
                logs, stop, done, sequences = train_epoch(
                    data, epoch, epochs, s["shuffle"], s["bptt"], callbacks,
                    progress, history)
                if single:
                    if validation is not None:
                        scores = self._evaluate(validation, self.batch_size)
                        logs.update({f"val_{key}": value for key, value in scores.items()})
                    logs["time"] = time.perf_counter() - started
                else:
                    scores, logs["time"], stop_now = self._team_epoch_end(
                        validation, started)
                    stop = stop or stop_now
                    if scores is not None:
                        logs.update({f"val_{key}": value for key, value in scores.items()})
                history._record(epoch, logs)
                progress.end_epoch(done, sequences, logs)

                if patience is not None:
                    if logs[monitor] < state["best_loss"]:
                        state["best_loss"], state["waited"] = logs[monitor], 0
                        state["best_params"] = {k: v.copy() for k, v in model.params.items()}
                        history.best_epoch = epoch
                    else:
                        state["waited"] += 1
                        if state["waited"] >= patience:
                            progress.note(
                                f"Early stopping: {monitor} has not improved for "
                                f"{state['waited']} epoch(s) since epoch "
                                f"{history.best_epoch + 1}")
                            stop = True
                state["epoch"] = epoch + 1
                state["stopped"] = bool(stop) and epoch < epochs - 1
                if s["checkpoint"] is not None:
                    self._guarded(self.save_checkpoint, s["checkpoint"])
                stop = self._call_agreed(callbacks, "on_epoch_end", epoch, dict(logs)) or stop
                if (stop or self.stop_training) and epoch < epochs - 1:
                    history.stopped_epoch = epoch
            self._collectives_left = False
            best_params = state["best_params"]
            if best_params is not None and history.epoch and \
                    history.best_epoch != history.epoch[-1]:
                with self._guard:
                    model.set_params(best_params)
                progress.note(f"Restored the weights of epoch {history.best_epoch + 1} "
                              f"({monitor} {state['best_loss']:.4f})")
            self._call(callbacks, "on_train_end", {})
        except KeyboardInterrupt:
            if not single:
                raise                    # under MPI: the job ends (see fit)
            history.interrupted = True
            progress.note("Interrupted: the model holds the weights after the "
                          "last completed step")
        except NonFiniteError as error:
            progress.note(f"Stopped: {error}")
            raise
        finally:
            if single:
                self._guard.uninstall()
        return history

    # ------------------------------------------------------------ agreement
    def _guarded(self, function, *args):
        """Run `function`; alone, raise its error; in a team, keep the error
        for the next collective, where every rank learns of it."""
        if self._team is None:
            return function(*args)
        if self._pending_error is not None:
            return None
        try:
            return function(*args)
        except Exception as error:
            self._pending_error = error
            return None

    def _call_agreed(self, callbacks, hook, *args):
        """Run a hook of every callback; True when training must stop.  In a
        team, rank 0's answer (its callbacks' or its stop_training) is
        every rank's, and an error on any rank is raised on all."""
        if self._team is None:
            return self._call(callbacks, hook, *args)
        stop = self._guarded(self._call, callbacks, hook, *args)
        stop = bool(stop or self.stop_training) if self.rank == 0 else False
        error = self._pending_error
        self._pending_error = None
        flags = np.array([stop, error is not None], dtype=np.float64)
        flags = self._team.allreduce(flags)
        if flags[1]:
            self._team.raise_agreed(error, int(flags[1]))
        self.stop_training = bool(flags[0])
        return self.stop_training

    def _fingerprint(self, s):
        """(name, value, how to show it) of what every rank must agree on."""
        model, data = self.model, s["data"]
        shape = data.shape
        validation = s["validation"]
        optimizer = self.optimizer.state_dict()
        settings = {key: value for key, value in optimizer.items()
                    if key == "type" or not (key == "step" or "." in key)}
        model_config = repr(_shape_config(model))   # rank-dependent seeds are fine
        return [
            ("the number of sequences N", data.size, "value"),
            ("the number of steps T", shape[1], "value"),
            ("the features D", shape[2] if len(shape) == 3 else 0, "value"),
            ("dtype of X", zlib.crc32(str(data.x_dtype).encode()), "hash"),
            ("the total of lengths", int(data.lengths.sum()), "value"),
            ("shape of y", zlib.crc32(str(data.y_shape).encode()), "hash"),
            ("the validation sequences", -1 if validation is None else validation.size,
             "value"),
            ("the validation positions", -1 if validation is None
             else int(validation.lengths.sum()), "value"),
            ("batch_size", self.batch_size, "value"),
            ("epochs", s["epochs"], "value"),
            ("bptt", s["bptt"] or 0, "value"),
            ("shuffle", int(s["shuffle"]), "value"),
            ("early_stopping", -1 if s["patience"] is None else s["patience"], "value"),
            ("clip_norm", -1.0 if self.clip_norm is None else self.clip_norm, "value"),
            ("model configuration", zlib.crc32(model_config.encode()), "hash"),
            ("optimizer or optimizer settings", zlib.crc32(repr(sorted(
                (k, str(v)) for k, v in settings.items())).encode()), "hash"),
            ("resume_from (given or not)", int(s["resume_from"] is not None), "value"),
        ]

    def _agree_on_setup(self, setup, error):
        """The collective at the start of fit: one all-gather of every
        rank's error flag and fingerprint; raises the same error on all."""
        team = self._team
        fields = None
        if setup is not None:
            try:
                fields = self._fingerprint(setup)
            except Exception as caught:
                error = caught
        width = 1 + self._FINGERPRINT_WIDTH
        row = np.zeros(width)
        if error is not None:
            row[0] = 1
        else:
            row[1:] = [value for _, value, _ in fields]
        table = team.gather_rows(row)
        failed = int(table[:, 0].sum())
        if failed:
            team.raise_agreed(error, failed)
        for rank in range(1, team.size):
            for column, (name, _, how) in enumerate(fields, start=1):
                mine, first = table[rank, column], table[0, column]
                if mine != first:
                    given = (f"a different {name} from rank 0's" if how == "hash" else
                             f"{name} = {_number(mine)}, rank 0 {_number(first)}")
                    raise distributed.mark_agreed(ValueError(
                        f"rank {rank} of {team.size} was given {given}: every "
                        f"rank must call fit with the same data and arguments "
                        f"(found at the start of fit, on every rank; nothing "
                        f"was trained)"))

    _FINGERPRINT_WIDTH = 17

    def _share_rank0_state(self, state, history):
        """Rank 0's weights, optimizer state, random stream and progress on
        every rank (one broadcast)."""
        team = self._team
        payload = None
        if self.rank == 0:
            payload = {"params": {k: v.copy() for k, v in self.model.params.items()},
                       "optimizer": self.optimizer.state_dict(),
                       "rng": self._rng.bit_generator.state,
                       "state": state,
                       "history": (history.history, history.epoch, history.best_epoch,
                                   history.stopped_epoch)}
        payload = team.broadcast_object(payload)
        if self.rank != 0:
            def apply():
                self.optimizer.load_state_dict(payload["optimizer"])
                with self._guard:
                    self.model.set_params(payload["params"])
                self._rng.bit_generator.state = payload["rng"]
                (history.history, history.epoch, history.best_epoch,
                 history.stopped_epoch) = payload["history"]
            self._guarded(apply)
            state = payload["state"]
        return state

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path, extra=None):
        """Write a checkpoint that ``fit(..., resume_from=path)`` continues.

        It holds the model, the optimizer's state, the number of completed
        epochs, and in ``extra["trainer"]`` the trainer's random stream,
        History and early-stopping state, so that the resumed run is the
        run that would have gone on.  Meant for the end of an epoch
        (``on_epoch_end``, or ``fit(checkpoint=path)``, which calls it).

        Parameters
        ----------
        path : str or os.PathLike
            The file, written atomically.
        extra : dict, optional
            Your own JSON-serialisable data, kept beside the trainer's.

        Returns
        -------
        bool
            True when this process wrote the file: with ``comm`` only rank
            0 writes, and the others return False at once.

        Raises
        ------
        TypeError
            `extra` is not a dict.
        RuntimeError
            No fit has started: there is no progress to record.
        """
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
        if self.rank != 0:
            return False
        state = getattr(self, "_fit_state", None)
        if state is None:
            raise RuntimeError("save_checkpoint needs a fit in progress or done: "
                               "it records the trainer's progress through fit")
        history = state["history"]
        trainer = {
            "format": 1,
            "rng": json.dumps(self._rng.bit_generator.state, default=_json_array),
            "history": {key: list(values) for key, values in history.history.items()},
            "history_epoch": list(history.epoch),
            "best_epoch": history.best_epoch,
            "stopped_epoch": history.stopped_epoch,
            "best_loss": float(state["best_loss"]),
            "waited": int(state["waited"]),
            "best_params": state["best_params"],
            "stopped": bool(state["stopped"]),
            "batch_size": self.batch_size,
        }
        contents = dict(extra or {})
        contents["trainer"] = trainer
        io.save_checkpoint(path, self.model, optimizer_state=self.optimizer.state_dict(),
                           epoch=int(state["epoch"]), extra=contents)
        return True

    def _read_resume(self, path):
        """The contents of checkpoint `path`, checked against this trainer's
        model and optimizer; nothing is applied yet."""
        checkpoint = io.load_checkpoint(path)
        saved, ours = checkpoint["model"], self.model
        if _shape_config(saved) != _shape_config(ours):
            raise ValueError(
                f"resume_from {os.fspath(path)!r} holds {saved!r}, the trainer's "
                f"model is {ours!r}: resume with a model of the same shape")
        extra = checkpoint["extra"]
        trainer = extra.get("trainer") if isinstance(extra, dict) else None
        if not isinstance(trainer, dict) or trainer.get("format") != 1 or \
                checkpoint["epoch"] is None or checkpoint["optimizer_state"] is None:
            raise ValueError(
                f"resume_from {os.fspath(path)!r} is a crnn file without the "
                f"trainer's state; resume needs a checkpoint written by "
                f"fit(checkpoint=...) or Trainer.save_checkpoint")
        # the optimizer's own checks, on a scratch copy: nothing changes yet
        trial = copy.deepcopy(self.optimizer)
        trial.load_state_dict(checkpoint["optimizer_state"])
        return {"checkpoint": checkpoint, "trainer": trainer, "optimizer": trial}

    def _apply_resume(self, resume, history):
        checkpoint, trainer = resume["checkpoint"], resume["trainer"]
        self.optimizer.load_state_dict(resume["optimizer"].state_dict())
        with self._guard:
            self.model.set_params(checkpoint["model"].params)
        self._rng.bit_generator.state = json.loads(trainer["rng"])
        history.history = {key: list(values) for key, values in trainer["history"].items()}
        history.epoch = list(trainer["history_epoch"])
        history.best_epoch = trainer["best_epoch"]
        history.stopped_epoch = trainer["stopped_epoch"]
        best_params = trainer["best_params"]
        return {"epoch": int(checkpoint["epoch"]), "best_loss": float(trainer["best_loss"]),
                "waited": int(trainer["waited"]),
                "best_params": None if best_params is None else dict(best_params),
                "stopped": bool(trainer["stopped"])}

    def _train_epoch(self, data, epoch, epochs, shuffle, bptt, callbacks,
                     progress, history):
        """One pass over the data; returns (logs, stop, steps done,
        sequences seen)."""
        softmax = self.model.output == "softmax"
        batches = self._plan(data.lengths, shuffle)
        if bptt is None:
            total = len(batches)
        else:
            total = sum(-(-int(data.lengths[rows].max()) // bptt) for rows in batches)
        progress.begin_epoch(epoch, total)
        loss_sum, positions, correct = 0.0, 0, 0
        done, sequences = 0, 0
        stop = False
        for rows in batches:
            chunks = [(0, None)] if bptt is None else [
                (start, start + bptt)
                for start in range(0, int(data.lengths[rows].max()), bptt)]
            state, alive = None, None
            for start, stop_step in chunks:
                live = rows if start == 0 else rows[data.lengths[rows] > start]
                if state is not None and len(live) < len(alive):
                    # sequences that ended in the last chunk drop out
                    keep = np.isin(alive, live)
                    state = (tuple(s[:, keep] for s in state)
                             if isinstance(state, tuple) else state[:, keep])
                Xb, yb, lb = data.take(live, start, stop_step)
                last_chunk = stop_step is None or stop_step >= data.lengths[live].max()
                loss, count, hits, state, norm = self._step(
                    Xb, yb, lb, state, not last_chunk, softmax, epoch, epochs,
                    done, total, history)
                alive = live
                loss_sum += loss * count
                positions += count
                correct += hits
                done += 1
                sequences += len(live) if start == 0 else 0
                batch_logs = {"loss": loss, "size": len(live), "positions": count,
                              "grad_norm": norm}
                if bptt is not None:
                    batch_logs["chunk"] = start // bptt
                progress.update(done, loss_sum / positions, sequences)
                stop = self._call(callbacks, "on_batch_end", done - 1,
                                  batch_logs) or stop
                if stop or self.stop_training:
                    break
            if stop or self.stop_training:
                break
        logs = {"loss": loss_sum / positions}
        if softmax:
            logs["accuracy"] = correct / positions
        return logs, stop, done, sequences

    def _step(self, X, y, lengths, state, need_state, softmax, epoch, epochs,
              batch, total, history):
        """One checked update; returns (loss, positions, correct, state, norm)."""
        model = self.model
        result = model.loss_and_grad(X, y, lengths, initial_state=state,
                                     return_state=need_state,
                                     return_outputs=softmax)
        loss, grads = result[0], result[1]
        extras = list(result[2:])
        final_state = extras.pop(0) if need_state else None
        where = f"at epoch {epoch + 1} of {epochs}, batch {batch + 1} of {total}"
        keeps = ("; training stopped and the model keeps the weights from before "
                 "this batch")
        if not math.isfinite(loss):
            raise NonFiniteError(f"the loss is {loss} {where}{keeps}",
                                 epoch, batch, history)
        params = model.params
        names = list(params)
        if set(grads) != set(names):
            raise ValueError(
                f"loss_and_grad returned gradients for {sorted(grads)}, the "
                f"model's parameters are {sorted(names)}")
        grad_list = [np.ascontiguousarray(grads[name], dtype=params[name].dtype)
                     for name in names]
        squares = _optim.sum_squares(grad_list)
        total_squares = float(squares.sum())
        if not math.isfinite(total_squares):
            bad = [name for name, g in zip(names, grad_list) if not np.isfinite(g).all()]
            what = (f"the gradient of {bad} contains NaN or infinity" if bad else
                    "the gradient norm overflows")
            raise NonFiniteError(f"{what} {where}{keeps}", epoch, batch, history)
        norm = math.sqrt(total_squares)
        scale = 1.0
        if self.clip_norm is not None:
            coefficient = self.clip_norm / (norm + 1e-6)   # clip_grad_norm_'s rule
            if coefficient < 1.0:
                scale = coefficient
        try:
            with self._guard:
                self.optimizer.step(params, dict(zip(names, grad_list)), grad_scale=scale)
        except FloatingPointError as error:
            raise NonFiniteError(f"{error} {where}{keeps}", epoch, batch,
                                 history) from None
        count = int(lengths.sum()) if model.return_sequences else len(lengths)
        correct = 0
        if softmax:
            predicted = extras[0].argmax(axis=-1)
            hits = predicted == y
            if model.return_sequences:
                hits &= np.arange(y.shape[1]) < lengths[:, None]
            correct = int(hits.sum())
        return loss, count, correct, final_state, norm

    def _plan(self, lengths, shuffle):
        """The batches of one epoch, as arrays of sequence indices."""
        n, size = len(lengths), self.batch_size
        order = self._rng.permutation(n) if shuffle else np.arange(n)
        if lengths.min() == lengths.max():
            return [order[i:i + size] for i in range(0, n, size)]
        # Bucketing: sort each pool of sequences by length (ties keep the
        # shuffled order), cut it into batches, then shuffle the batches.
        batches = []
        pool = size * self.bucket_pool
        for begin in range(0, n, pool):
            members = order[begin:begin + pool]
            members = members[np.argsort(lengths[members], kind="stable")]
            batches.extend(members[i:i + size] for i in range(0, len(members), size))
        if shuffle:
            batches = [batches[i] for i in self._rng.permutation(len(batches))]
        return batches

    # ============================================================ team
    def _buffers(self, params, steps):
        """The flat send and receive buffers of a team step: every gradient
        (in the order of ``params``), then loss, positions, correct
        predictions, rank 0's stop request and the error count."""
        sizes = [p.size for p in params.values()]
        total = sum(sizes)
        dtype = np.dtype(self.model.dtype)
        if dtype == np.float32 and self.batch_size * max(steps, 1) > 2 ** 24:
            dtype = np.dtype(np.float64)   # counts must stay exact
        key = (tuple(params), tuple(sizes), dtype, self._team.size)
        if getattr(self, "_team_buffers", (None,))[0] != key:
            send = np.zeros(total + 5, dtype=dtype)
            recv = np.zeros(total + 5, dtype=dtype)
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
            self._team_buffers = (key, send, recv, offsets)
        return self._team_buffers[1:]

    def _train_epoch_team(self, data, epoch, epochs, shuffle, bptt, callbacks,
                          progress, history):
        """_train_epoch for a team: the same batches on every rank, each rank
        computing its own share of every batch (see docs/distributed.md)."""
        team = self._team
        softmax = self.model.output == "softmax"
        batches = self._plan(data.lengths, shuffle)
        if bptt is None:
            total = len(batches)
        else:
            total = sum(-(-int(data.lengths[rows].max()) // bptt) for rows in batches)
        progress.begin_epoch(epoch, total)
        loss_sum, positions, correct = 0.0, 0, 0
        done, sequences = 0, 0
        stop = False
        for rows in batches:
            bounds = distributed.split(data.lengths[rows], team.size)
            mine = rows[bounds[team.rank]:bounds[team.rank + 1]]
            longest = int(data.lengths[rows].max())
            chunks = [(0, None)] if bptt is None else [
                (start, start + bptt) for start in range(0, longest, bptt)]
            state, alive = None, None
            for start, stop_step in chunks:
                live = mine if start == 0 else mine[data.lengths[mine] > start]
                if state is not None and len(live) < len(alive):
                    keep = np.isin(alive, live)
                    state = (tuple(s[:, keep] for s in state)
                             if isinstance(state, tuple) else state[:, keep])
                everyone = int(np.count_nonzero(data.lengths[rows] > start))
                last_chunk = stop_step is None or stop_step >= longest
                result = self._team_step(data, live, start, stop_step, state,
                                         not last_chunk, softmax, epoch, epochs,
                                         done, total, history)
                if result is None:      # rank 0 asked to stop after the last step
                    stop = True
                    break
                loss, count, hits, state, norm = result
                alive = live
                loss_sum += loss * count
                positions += count
                correct += hits
                done += 1
                sequences += everyone if start == 0 else 0
                batch_logs = {"loss": loss, "size": everyone, "positions": count,
                              "grad_norm": norm}
                if bptt is not None:
                    batch_logs["chunk"] = start // bptt
                progress.update(done, loss_sum / positions, sequences)
                asked = self._guarded(self._call, callbacks, "on_batch_end", done - 1,
                                      batch_logs)
                if self.rank == 0 and (asked or self.stop_training):
                    self._pending_stop = True     # told to all in the next collective
            if stop:
                break
        logs = {"loss": loss_sum / positions if positions else math.nan}
        if softmax:
            logs["accuracy"] = correct / positions if positions else math.nan
        return logs, stop, done, sequences

    def _team_step(self, data, live, start, stop_step, state, need_state,
                   softmax, epoch, epochs, batch, total, history):
        """One update from the team's shares of a batch: local sums, one
        Allreduce, then the same checked update on every rank.  Returns
        (loss, positions, correct, state, norm), or None when rank 0 asked
        to stop (nothing is applied)."""
        model, team = self.model, self._team
        params = model.params
        names = list(params)
        send, recv, offsets = self._buffers(params, data.shape[1])
        n = offsets[-1]
        error = self._pending_error
        self._pending_error = None
        final_state = None
        loss, count, hits = 0.0, 0, 0
        if error is None and len(live):
            try:
                X, y, lengths = data.take(live, start, stop_step)
                result = model.loss_and_grad(X, y, lengths, initial_state=state,
                                             reduction="sum", return_state=need_state,
                                             return_outputs=softmax)
                loss, grads = result[0], result[1]
                extras = list(result[2:])
                final_state = extras.pop(0) if need_state else None
                if set(grads) != set(names):
                    raise ValueError(
                        f"loss_and_grad returned gradients for {sorted(grads)}, "
                        f"the model's parameters are {sorted(names)}")
                for i, name in enumerate(names):
                    send[offsets[i]:offsets[i + 1]] = np.ravel(grads[name])
                count = int(lengths.sum()) if model.return_sequences else len(lengths)
                if softmax:
                    hit = extras[0].argmax(axis=-1) == y
                    if model.return_sequences:
                        hit &= np.arange(y.shape[1]) < lengths[:, None]
                    hits = int(hit.sum())
            except Exception as caught:
                error = caught
        if error is not None or not len(live):
            send[:n] = 0
            loss, count, hits = 0.0, 0, 0
        send[n:] = (loss, count, hits, self.rank == 0 and self._pending_stop,
                    error is not None)
        began = time.perf_counter()
        team.allreduce(send, recv)
        self.allreduce_seconds += time.perf_counter() - began
        self.allreduce_calls += 1
        if recv[n + 4]:
            team.raise_agreed(error, int(recv[n + 4]))
        if recv[n + 3]:
            self._pending_stop = False
            return None
        count = int(round(float(recv[n + 1])))
        loss = float(recv[n]) / count
        hits = int(round(float(recv[n + 2])))
        where = f"at epoch {epoch + 1} of {epochs}, batch {batch + 1} of {total}"
        keeps = ("; training stopped and the model keeps the weights from before "
                 "this batch")
        if not math.isfinite(loss):
            raise distributed.mark_agreed(NonFiniteError(
                f"the loss is {loss} {where}{keeps}", epoch, batch, history))
        flat = recv[:n]
        np.multiply(flat, 1.0 / count, out=flat)
        grad_list = [np.ascontiguousarray(flat[offsets[i]:offsets[i + 1]].reshape(
            params[name].shape), dtype=params[name].dtype)
            for i, name in enumerate(names)]
        squares = _optim.sum_squares(grad_list)
        total_squares = float(squares.sum())
        if not math.isfinite(total_squares):
            bad = [name for name, g in zip(names, grad_list) if not np.isfinite(g).all()]
            what = (f"the gradient of {bad} contains NaN or infinity" if bad else
                    "the gradient norm overflows")
            raise distributed.mark_agreed(NonFiniteError(
                f"{what} {where}{keeps}", epoch, batch, history))
        norm = math.sqrt(total_squares)
        scale = 1.0
        if self.clip_norm is not None:
            coefficient = self.clip_norm / (norm + 1e-6)
            if coefficient < 1.0:
                scale = coefficient
        try:
            with self._guard:
                self.optimizer.step(params, dict(zip(names, grad_list)), grad_scale=scale)
        except FloatingPointError as caught:
            raise distributed.mark_agreed(NonFiniteError(
                f"{caught} {where}{keeps}", epoch, batch, history)) from None
        return loss, count, hits, final_state, norm

    def _team_epoch_end(self, validation, started):
        """The collective that ends a team's epoch: validation split across
        the ranks and summed, rank 0's epoch time and stop request.
        Returns (scores or None, time, stop)."""
        team = self._team
        sums = (0.0, 0, 0)
        if validation is not None:
            order = np.argsort(validation.lengths, kind="stable")
            bounds = distributed.split(validation.lengths[order], team.size)
            mine = order[bounds[team.rank]:bounds[team.rank + 1]]
            result = self._guarded(self._evaluate_rows, validation, mine, self.batch_size)
            if result is not None:
                sums = result
        error = self._pending_error
        self._pending_error = None
        if error is not None:
            sums = (0.0, 0, 0)
        elapsed = time.perf_counter() - started if self.rank == 0 else 0.0
        vector = np.array(list(sums) + [elapsed, self.rank == 0 and (
            self._pending_stop or self.stop_training), error is not None],
            dtype=np.float64)
        total = team.allreduce(vector)
        if total[5]:
            team.raise_agreed(error, int(total[5]))
        self._pending_stop = False
        scores = None
        if validation is not None:
            scores = self._scores(float(total[0]), int(round(total[1])),
                                  int(round(total[2])))
        return scores, float(total[3]), bool(total[4])

    # ============================================================ evaluate
    def evaluate(self, X, y, lengths=None, batch_size=None):
        """The model's loss (and accuracy) on a data set, without training.

        Parameters
        ----------
        X, y, lengths
            The data, as ``model.loss_and_grad`` takes it.
        batch_size : int, optional
            Sequences per forward pass; default: the trainer's.

        Returns
        -------
        dict
            ``{"loss": ..., "accuracy": ...}`` for softmax models,
            ``{"loss": ...}`` for linear ones.  The loss is the model's:
            the mean over positions with a target of the cross-entropy, or
            of ½‖o − y‖² summed over the outputs; the accuracy is the
            fraction of those positions whose most likely class is the
            target.

        Raises
        ------
        TypeError, ValueError
            Bad data or `batch_size`.

        Examples
        --------
        >>> model = crnn.RNN(3, 8, 2, seed=0)
        >>> X = np.random.default_rng(0).normal(size=(6, 5, 3))
        >>> y = np.random.default_rng(1).integers(0, 2, size=(6, 5))
        >>> scores = crnn.Trainer(model).evaluate(X, y)
        >>> bool(np.isclose(scores["loss"], model.loss_and_grad(X, y)[0]))
        True
        >>> 0 <= scores["accuracy"] <= 1
        True
        """
        batch_size = (self.batch_size if batch_size is None
                      else _inputs.check_positive_int(batch_size, "batch_size"))
        return self._evaluate(_Data(self.model, X, y, lengths, ""), batch_size)

    def _evaluate(self, data, batch_size):
        order = np.argsort(data.lengths, kind="stable")
        return self._scores(*self._evaluate_rows(data, order, batch_size))

    def _evaluate_rows(self, data, order, batch_size):
        """(loss sum, positions, correct) over sequences `order`, forward
        only, in batches of `batch_size`."""
        model = self.model
        loss_sum, positions, correct = 0.0, 0, 0
        for begin in range(0, len(order), batch_size):
            rows = order[begin:begin + batch_size]
            X, y, lengths = data.take(rows)
            outputs = model.forward(X, lengths)
            if model.return_sequences:
                mask = np.arange(X.shape[1]) < lengths[:, None]
            else:
                mask = np.ones(len(rows), dtype=bool)
            if model.output == "softmax":
                labels = np.where(mask, y, 0)
                chosen = np.take_along_axis(outputs, labels[..., None], axis=-1)[..., 0]
                # -log of the probability; a probability that underflowed
                # to 0 counts as the smallest positive one of the dtype.
                tiny = np.finfo(outputs.dtype).tiny
                nll = -np.log(np.maximum(chosen.astype(np.float64), tiny))
                loss_sum += float(nll[mask].sum())
                correct += int(((outputs.argmax(axis=-1) == y) & mask).sum())
            else:
                difference = outputs.astype(np.float64) - y
                squared = 0.5 * np.sum(difference * difference, axis=-1)
                loss_sum += float(squared[mask].sum())
            positions += int(mask.sum())
        return loss_sum, positions, correct

    def _scores(self, loss_sum, positions, correct):
        scores = {"loss": loss_sum / positions}
        if self.model.output == "softmax":
            scores["accuracy"] = correct / positions
        return scores

    # ============================================================ helpers
    def _check_validation(self, validation_data):
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)) or \
                len(validation_data) not in (2, 3):
            raise TypeError(
                f"validation_data must be a tuple (X, y) or (X, y, lengths), "
                f"got {type(validation_data).__name__}"
                f"{' of length ' + str(len(validation_data)) if isinstance(validation_data, (tuple, list)) else ''}")
        X, y = validation_data[:2]
        lengths = validation_data[2] if len(validation_data) == 3 else None
        return _Data(self.model, X, y, lengths, "validation_data")

    @staticmethod
    def _check_callbacks(callbacks):
        if callbacks is None:
            return []
        if any(hasattr(callbacks, hook) for hook in _HOOKS):
            callbacks = [callbacks]
        try:
            callbacks = list(callbacks)
        except TypeError:
            raise TypeError(
                f"callbacks must be a list of objects with methods among "
                f"{', '.join(_HOOKS)}; got {callbacks!r}") from None
        for callback in callbacks:
            if not any(callable(getattr(callback, hook, None)) for hook in _HOOKS):
                raise TypeError(
                    f"each callback must have at least one method among "
                    f"{', '.join(_HOOKS)}; got {callback!r}")
        return callbacks

    @staticmethod
    def _call(callbacks, hook, *args):
        """Run one hook of every callback; True when one asks to stop."""
        stop = False
        for callback in callbacks:
            method = getattr(callback, hook, None)
            if method is not None and method(*args) is True:
                stop = True
        return stop

    def __repr__(self):
        team = "" if self._team is None else f", rank={self.rank} of {self.size}"
        return (f"Trainer({self.model!r}, optimizer={self.optimizer!r}, "
                f"batch_size={self.batch_size}, clip_norm={self.clip_norm}{team})")
