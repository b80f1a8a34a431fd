"""The pieces of one fit that the single-process and the team code share.

Owns the fit's settings once checked (`FitSettings`), an epoch under way
(`Epoch`: its place, its step count, its running sums, the error a failing
step raises), the callbacks' checks and calls, the Ctrl-C guard, and the
two halves of every step: running ``model.loss_and_grad`` and the checked,
clipped update (`apply_update`) that every step ends with.
"""
import math
import signal
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _dropout, _inputs, _optim, distributed
from ._data import Data
from ._history import NonFiniteError

HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
         "on_batch_end")

KEEPS = "; training stopped and the model keeps the weights from before this batch"


@dataclass
class FitSettings:
    """fit's arguments once checked (`Trainer._setup`), and, once the fit
    runs, its progress display and History."""
    data: Data
    validation: Any          # a Data, or None
    epochs: int
    shuffle: bool
    patience: Any            # int or None
    verbose: int
    callbacks: list
    bptt: Any                # int or None
    checkpoint: Any          # a path, or None
    resume_from: Any         # a path, or None
    state: Any = None        # resume_from's contents (rank 0), or None
    progress: Any = None
    history: Any = None


@dataclass
class Epoch:
    """One epoch under way: what each of its steps needs to know (where it
    is, for error messages) and the sums the steps add to."""
    number: int
    fit: FitSettings
    total: int               # steps in the epoch
    softmax: bool
    agreed: bool = False     # a team's: every rank raises its errors together
    loss_sum: float = 0.0
    positions: int = 0
    correct: int = 0
    done: int = 0
    sequences: int = 0

    def failure(self, what, batch):
        """The NonFiniteError of step `batch`, saying `what` went wrong."""
        where = (f"at epoch {self.number + 1} of {self.fit.epochs}, "
                 f"batch {batch + 1} of {self.total}")
        error = NonFiniteError(f"{what} {where}{KEEPS}", self.number, batch,
                               self.fit.history)
        return distributed.mark_agreed(error) if self.agreed else error

    def add(self, loss, count, hits, sequences):
        """Count one step: its mean loss over `count` positions, `hits`
        correct predictions, `sequences` new sequences."""
        self.loss_sum += loss * count
        self.positions += count
        self.correct += hits
        self.done += 1
        self.sequences += sequences

    def logs(self):
        """The epoch's mean loss (and accuracy, for softmax models)."""
        positions = self.positions
        logs = {"loss": self.loss_sum / positions if positions else math.nan}
        if self.softmax:
            logs["accuracy"] = self.correct / positions if positions else math.nan
        return logs


def check_optional_int(value, name, minimum):
    if value is None:
        return None
    return _inputs.check_positive_int(value, name, minimum)


def check_validation(model, validation_data):
    """fit's `validation_data` as a Data, or None."""
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
    return Data(model, X, y, lengths, "validation_data")


def check_callbacks(callbacks):
    """fit's `callbacks` as a list of objects with at least one hook."""
    if callbacks is None:
        return []
    if any(hasattr(callbacks, hook) for hook in HOOKS):
        callbacks = [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise TypeError(
            f"callbacks must be a list of objects with methods among "
            f"{', '.join(HOOKS)}; got {callbacks!r}") from None
    for callback in callbacks:
        if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
            raise TypeError(
                f"each callback must have at least one method among "
                f"{', '.join(HOOKS)}; got {callback!r}")
    return callbacks


def call_hooks(callbacks, hook, *args):
    """Run one hook of every callback; True when one asks to stop."""
    stop = False
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None and method(*args) is True:
            stop = True
    return stop


def training_options(model, rng, rows):
    """loss_and_grad's dropout options for one step on the sequences `rows`
    (their indices in the data): ``training=True`` for a crnn model, and
    where it drops anything a ``dropout_seed`` per sequence, made of one
    seed drawn from the trainer's generator and the sequence's index.  So a
    seeded trainer is bit-reproducible, a resumed one carries on, a model
    without dropout leaves the generator (and so the shuffling) as it was,
    and every rank of a team draws, for its share of a batch, the masks
    one process draws for those sequences.  Nothing for models without the
    settings."""
    settings = [getattr(model, name, None) for name in _dropout.SETTINGS]
    if any(value is None for value in settings):
        return {}
    if not any(settings):
        return {"training": True}
    seed = int(rng.integers(2 ** 32))
    return {"training": True,
            "dropout_seed": tuple((seed << 40) + int(row) for row in rows)}


def loss_and_grad(model, batch, state, need_state, softmax, **options):
    """``model.loss_and_grad`` on `batch` = (X, y, lengths); returns (loss,
    gradients, final state or None, outputs or None)."""
    X, y, lengths = batch
    result = model.loss_and_grad(X, y, lengths, initial_state=state, **options,
                                 return_state=need_state, return_outputs=softmax)
    loss, grads = result[0], result[1]
    extras = list(result[2:])
    final_state = extras.pop(0) if need_state else None
    return loss, grads, final_state, extras[0] if softmax else None


def check_names(grads, names):
    if set(grads) != set(names):
        raise ValueError(
            f"loss_and_grad returned gradients for {sorted(grads)}, the "
            f"model's parameters are {sorted(names)}")


def positions_and_hits(model, outputs, y, lengths):
    """The positions with a target in a batch, and how many of them
    `outputs` (softmax models; else None) predicts right."""
    count = int(lengths.sum()) if model.return_sequences else len(lengths)
    correct = 0
    if outputs is not None:
        hits = outputs.argmax(axis=-1) == y
        if model.return_sequences:
            hits &= np.arange(y.shape[1]) < lengths[:, None]
        correct = int(hits.sum())
    return count, correct


def apply_update(trainer, params, grad_list, epoch, batch):
    """The end of every step: refuse non-finite gradients, clip them to
    ``trainer.clip_norm``, let the optimizer update `params` (Ctrl-C held
    back); raises epoch's NonFiniteError on a fault.  Returns the norm."""
    names = list(params)
    squares = _optim.sum_squares(grad_list)
    total_squares = float(squares.sum())
    if not math.isfinite(total_squares):
        bad = [name for name, g in zip(names, grad_list) if not np.isfinite(g).all()]
        what = (f"the gradient of {bad} contains NaN or infinity" if bad else
                "the gradient norm overflows")
        raise epoch.failure(what, batch)
    norm = math.sqrt(total_squares)
    scale = 1.0
    if trainer.clip_norm is not None:
        coefficient = trainer.clip_norm / (norm + 1e-6)   # clip_grad_norm_'s rule
        if coefficient < 1.0:
            scale = coefficient
    try:
        with trainer._guard:
            trainer.optimizer.step(params, dict(zip(names, grad_list)), grad_scale=scale)
            if trainer.schedule is not None:
                trainer.schedule.update_end()
    except FloatingPointError as error:
        raise epoch.failure(error, batch) from None
    return norm


class InterruptGuard:
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

