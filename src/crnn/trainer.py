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
import math
import signal
import sys
import threading
import time

import numpy as np

from . import _inputs, _optim, optim

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

    def take(self, rows, start=0, stop=None):
        """(X, y, lengths) of sequences `rows`, steps [start, stop), cut to
        the longest of them; every row must have a step at `start`."""
        lengths = self.lengths[rows] - start
        if stop is not None:
            lengths = np.minimum(lengths, stop - start)
        end = start + int(lengths.max())
        X = self.X[rows, start:end]
        y = self.y[rows, start:end] if self.sequences else self.y[rows]
        return X, y, lengths


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

    def __init__(self, model, optimizer="adam", lr=1e-3, batch_size=32,
                 clip_norm=None, weight_decay=0.0, seed=None):
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

    # ============================================================ fit
    def fit(self, X, y, lengths=None, epochs=1, validation_data=None,
            shuffle=True, early_stopping=None, callbacks=(), verbose=1,
            bptt=None):
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
        bit-identical weights.

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
        data = _Data(model, X, y, lengths, "")
        validation = self._check_validation(validation_data)

        self.stop_training = False
        progress = _Progress(verbose, epochs)
        history = History({"epochs": epochs, "batch_size": self.batch_size,
                           "bptt": bptt, "samples": data.size})
        self.history = history
        monitor = "val_loss" if validation is not None else "loss"
        best_loss, best_params, waited = math.inf, None, 0

        self._guard.install()
        try:
            stop = self._call(callbacks, "on_train_begin", {})
            for epoch in range(epochs):
                if stop or self.stop_training:
                    break
                stop = self._call(callbacks, "on_epoch_begin", epoch, {})
                if stop or self.stop_training:
                    break
                started = time.perf_counter()
                logs, stop, done, sequences = self._train_epoch(
                    data, epoch, epochs, shuffle, bptt, callbacks, progress, history)
                if validation is not None:
                    scores = self._evaluate(validation, self.batch_size)
                    logs.update({f"val_{key}": value for key, value in scores.items()})
                logs["time"] = time.perf_counter() - started
                history._record(epoch, logs)
                progress.end_epoch(done, sequences, logs)

                if patience is not None:
                    if logs[monitor] < best_loss:
                        best_loss, waited = logs[monitor], 0
                        best_params = {k: v.copy() for k, v in model.params.items()}
                        history.best_epoch = epoch
                    else:
                        waited += 1
                        if waited >= patience:
                            progress.note(
                                f"Early stopping: {monitor} has not improved for "
                                f"{waited} epoch(s) since epoch {history.best_epoch + 1}")
                            stop = True
                stop = self._call(callbacks, "on_epoch_end", epoch, dict(logs)) or stop
                if (stop or self.stop_training) and epoch < epochs - 1:
                    history.stopped_epoch = epoch
            if best_params is not None and history.best_epoch != history.epoch[-1]:
                with self._guard:
                    model.set_params(best_params)
                progress.note(f"Restored the weights of epoch {history.best_epoch + 1} "
                              f"({monitor} {best_loss:.4f})")
            self._call(callbacks, "on_train_end", {})
        except KeyboardInterrupt:
            history.interrupted = True
            progress.note("Interrupted: the model holds the weights after the "
                          "last completed step")
        except NonFiniteError as error:
            progress.note(f"Stopped: {error}")
            raise
        finally:
            self._guard.uninstall()
        return history

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
        model = self.model
        order = np.argsort(data.lengths, kind="stable")
        loss_sum, positions, correct = 0.0, 0, 0
        for begin in range(0, data.size, batch_size):
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
        scores = {"loss": loss_sum / positions}
        if model.output == "softmax":
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
        return (f"Trainer({self.model!r}, optimizer={self.optimizer!r}, "
                f"batch_size={self.batch_size}, clip_norm={self.clip_norm})")
