"""The data a fit reads: checked once, then read batch by batch.

Owns `Data` (a validated data set in the user's layout: numpy arrays, or
an np.memmap / array-like read only a batch of rows at a time), the
batches of an epoch (`plan_batches`: seeded shuffling, ragged sequences
bucketed by length) and forward-only scoring (`evaluate_rows`, `scores`),
which `Trainer.evaluate` and validation use.  Nothing here trains.
"""
import numpy as np

from . import _inputs

class Data:
    """A validated data set in the user's layout, padded, ready to slice.

    X        (N, T, D) floats of the model's dtype or (N, T) token ids
    y        (N, T) / (N, T, K) / (N, T) targets, or (N,) / (N, K) for
             many-to-one (softmax labels as integers)
    lengths  (N,) int64
    """

    def __init__(self, model, X, y, lengths, name):
        if is_lazy(X):
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
        first = np.asarray(fetch(X, np.arange(min(n, self.SAMPLE)), 0, None))
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
        ys = np.asarray(fetch(y, sample, 0, end) if self.sequences
                        else fetch(y, sample, None, None))
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
        order), steps [start, end), and lay them out as Data does."""
        order = np.argsort(rows, kind="stable")
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        ascending = np.asarray(rows)[order]
        X = np.asarray(fetch(self.X, ascending, start, end))[back]
        if self.sequences:
            y = np.asarray(fetch(self.y, ascending, start, end))[back]
        else:
            y = np.asarray(fetch(self.y, ascending, None, None))[back]
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


def is_lazy(X):
    """Data the trainer reads batch by batch instead of all at once: an
    np.memmap, or an array-like (len() and fancy indexing) that numpy would
    have to copy whole."""
    if isinstance(X, np.memmap):
        return True
    if isinstance(X, (np.ndarray, list, tuple)):
        return False
    return (hasattr(X, "__len__") and hasattr(X, "__getitem__")
            and not hasattr(X, "__array__") and not hasattr(X, "__array_interface__"))


def fetch(array, rows, start, end):
    """array[rows, start:end] (rows increasing), for numpy arrays and for
    array-likes that only take one index at a time."""
    if isinstance(array, np.ndarray):
        if start is None:
            return array[rows]
        return array[rows, start:end]
    block = array[rows]
    return block if start is None else np.asarray(block)[:, start:end]


def plan_batches(rng, lengths, size, pool_batches, shuffle):
    """The batches of one epoch, as arrays of sequence indices: `size`
    sequences each, drawn from `rng` when `shuffle`; ragged data is
    bucketed by length within pools of `pool_batches` batches."""
    n = len(lengths)
    order = rng.permutation(n) if shuffle else np.arange(n)
    if lengths.min() == lengths.max():
        return [order[i:i + size] for i in range(0, n, size)]
    # Bucketing: sort each pool of sequences by length (ties keep the
    # shuffled order), cut it into batches, then shuffle the batches.
    batches = []
    pool = size * pool_batches
    for begin in range(0, n, pool):
        members = order[begin:begin + pool]
        members = members[np.argsort(lengths[members], kind="stable")]
        batches.extend(members[i:i + size] for i in range(0, len(members), size))
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def evaluate_rows(model, data, order, batch_size):
    """(loss sum, positions, correct) of `model` over sequences `order` of
    `data`, forward only, in batches of `batch_size`."""
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


def scores(model, loss_sum, positions, correct):
    """The mean loss (and accuracy, for softmax models) from the sums."""
    result = {"loss": loss_sum / positions}
    if model.output == "softmax":
        result["accuracy"] = correct / positions
    return result
