"""What a fit reports: `History`, `NonFiniteError` and the progress display.

Owns the record a `crnn.Trainer.fit` returns (per-epoch values, how the fit
ended), the error it raises on a NaN or infinite loss, gradient or update,
and the progress bar and epoch lines it writes on stderr.  Both public
classes are documented and imported as ``crnn.trainer.History`` and
``crnn.trainer.NonFiniteError``, their public home (hence their
``__module__``); nothing here knows of the trainer.
"""
import sys
import time

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

    __module__ = "crnn.trainer"     # its public home (tracebacks, pickles)

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

    __module__ = "crnn.trainer"     # its public home (pickles, docs)

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


class Progress:
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
                    f"ETA {clock(eta)}  ")
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


def clock(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours
            else f"{rest // 60}:{rest % 60:02d}")

