"""Training runs that tests/test_distributed.py does twice: in the test's
own process (comm=None) and under ``mpiexec -n k`` (tests/mpi_worker.py),
then compares.  Every case builds its data from fixed seeds, so every rank
and the reference see the same data.

A case is a name -> function(comm, rank) returning (trainer, history); the
function builds the model with a seed that depends on the rank, so the
broadcast at the start of fit is what makes the replicas agree.
"""
import numpy as np

import crnn


class StopAtBatch:
    """Asks to stop after batch `batch` of epoch `epoch` (on every rank;
    only rank 0's request counts)."""

    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch
        self.current = -1

    def on_epoch_begin(self, epoch, logs):
        self.current = epoch

    def on_batch_end(self, batch, logs):
        return self.current == self.epoch and batch == self.batch


class StopOnRankOne:
    """Rank 1 asks to stop at once: must be ignored (rank 0 decides)."""

    def __init__(self, rank):
        self.rank = rank

    def on_batch_end(self, batch, logs):
        return self.rank == 1


def _ragged_features(n, steps, features, seed, low=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, steps, features))
    lengths = rng.integers(low, steps + 1, size=n)
    return X, lengths


def rnn_ragged(comm, rank, dtype="float64"):
    """Vanilla RNN, ragged lengths, validation, early stopping, clipping,
    weight decay, Adam; N = 23 with batch 7 (an uneven last batch)."""
    X, lengths = _ragged_features(23, 9, 3, 1)
    y = np.random.default_rng(2).integers(0, 4, size=(23, 9))
    Xv, lv = _ragged_features(11, 9, 3, 3)
    yv = np.random.default_rng(4).integers(0, 4, size=(11, 9))
    model = crnn.RNN(3, 6, 4, dtype=dtype, seed=10 + rank)
    trainer = crnn.Trainer(model, "adam", lr=0.02, batch_size=7, clip_norm=0.5,
                           weight_decay=1e-3, seed=5, comm=comm)
    history = trainer.fit(X, y, lengths, epochs=6, validation_data=(Xv, yv, lv),
                          early_stopping=1, verbose=0)
    return trainer, history


def lstm_bptt(comm, rank, dtype="float64"):
    """LSTM on token ids, ragged, truncated BPTT every 4 steps, two layers,
    SGD with momentum, validation."""
    rng = np.random.default_rng(6)
    X = rng.integers(0, 5, size=(17, 11))
    y = rng.integers(0, 5, size=(17, 11))
    lengths = rng.integers(3, 12, size=17)
    Xv = rng.integers(0, 5, size=(5, 11))
    yv = rng.integers(0, 5, size=(5, 11))
    model = crnn.LSTM(5, 7, 5, num_layers=2, dtype=dtype, seed=20 + rank)
    trainer = crnn.Trainer(model, "momentum", lr=0.1, batch_size=6, seed=7, comm=comm)
    history = trainer.fit(X, y, lengths, epochs=3, validation_data=(Xv, yv),
                          bptt=4, verbose=0)
    return trainer, history


def gru_many_to_one(comm, rank, dtype="float64"):
    """Bidirectional GRU, many-to-one, linear output, RMSprop, validation,
    early stopping with patience 0."""
    X, lengths = _ragged_features(19, 8, 2, 8, low=1)
    y = np.random.default_rng(9).normal(size=(19, 3))
    Xv, lv = _ragged_features(7, 8, 2, 10)
    yv = np.random.default_rng(11).normal(size=(7, 3))
    model = crnn.GRU(2, 5, 3, bidirectional=True, output="linear",
                     return_sequences=False, dtype=dtype, seed=30 + rank)
    trainer = crnn.Trainer(model, "rmsprop", lr=0.01, batch_size=5, seed=12, comm=comm)
    history = trainer.fit(X, y, lengths, epochs=4, validation_data=(Xv, yv, lv),
                          early_stopping=0, verbose=0)
    return trainer, history


def lstm_float32(comm, rank):
    """The float32 LSTM: equal to the rounding of another summation order."""
    X, lengths = _ragged_features(24, 10, 4, 13)
    y = np.random.default_rng(14).integers(0, 6, size=(24, 10))
    model = crnn.LSTM(4, 16, 6, dtype="float32", seed=40 + rank)
    trainer = crnn.Trainer(model, "adam", lr=0.01, batch_size=8, seed=15, comm=comm)
    history = trainer.fit(X, y, lengths, epochs=4, validation_data=(X[:6], y[:6]),
                          verbose=0)
    return trainer, history


def rnn_callback_stop(comm, rank):
    """A callback stopping after batch 2 of epoch 1, and one on rank 1
    asking to stop at every batch (ignored: rank 0 decides)."""
    X, lengths = _ragged_features(20, 6, 3, 16)
    y = np.random.default_rng(17).integers(0, 3, size=(20, 6))
    model = crnn.RNN(3, 5, 3, dtype="float64", seed=50 + rank)
    trainer = crnn.Trainer(model, "sgd", lr=0.1, batch_size=4, seed=18, comm=comm)
    history = trainer.fit(X, y, lengths, epochs=5,
                          callbacks=[StopAtBatch(1, 2), StopOnRankOne(rank)],
                          verbose=0)
    return trainer, history


CASES = {
    "rnn_ragged": rnn_ragged,
    "lstm_bptt": lstm_bptt,
    "gru_many_to_one": gru_many_to_one,
    "lstm_float32": lstm_float32,
    "rnn_callback_stop": rnn_callback_stop,
}


def summary(trainer, history):
    """What a run is compared by: every weight, and the History."""
    out = {f"param/{k}": v.copy() for k, v in trainer.model.params.items()}
    for key, values in history.history.items():
        if key != "time":
            out[f"history/{key}"] = np.asarray(values, dtype=np.float64)
    out["history/epoch"] = np.asarray(history.epoch)
    out["history/best_epoch"] = np.asarray(
        -1 if history.best_epoch is None else history.best_epoch)
    out["history/stopped_epoch"] = np.asarray(
        -1 if history.stopped_epoch is None else history.stopped_epoch)
    out["optimizer/step"] = np.asarray(trainer.optimizer.steps)
    return out


def resume_data():
    X, lengths = _ragged_features(21, 8, 3, 19)
    y = np.random.default_rng(20).integers(0, 4, size=(21, 8))
    Xv, lv = _ragged_features(6, 8, 3, 21)
    yv = np.random.default_rng(22).integers(0, 4, size=(6, 8))
    return X, y, lengths, (Xv, yv, lv)


def resume_case(comm, rank, epochs, checkpoint=None, resume_from=None, model_seed=None):
    """An LSTM with Adam, validation and early stopping (patience 3), for
    `epochs` epochs, writing or resuming from a checkpoint."""
    X, y, lengths, validation = resume_data()
    seed = 60 + rank if model_seed is None else model_seed
    model = crnn.LSTM(3, 6, 4, dtype="float64", seed=seed)
    trainer = crnn.Trainer(model, "adam", lr=0.03, batch_size=5, clip_norm=1.0,
                           seed=None if resume_from else 23, comm=comm)
    history = trainer.fit(X, y, lengths, epochs=epochs, validation_data=validation,
                          early_stopping=3, verbose=0, checkpoint=checkpoint,
                          resume_from=resume_from)
    return trainer, history


class _FailingLSTM(crnn.LSTM):
    """Raises MemoryError in its 5th loss_and_grad on one rank."""

    fail_on = -1
    calls = 0

    def loss_and_grad(self, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls == 5 and self.fail_on:
            raise MemoryError("simulated: no memory for this share")
        return super().loss_and_grad(*args, **kwargs)


class _InfAt(crnn.RNN):
    """Feeds a huge input (1e200) to its 8th loss_and_grad on rank 1."""

    calls = 0
    rank = -1

    def loss_and_grad(self, X, *args, **kwargs):
        type(self).calls += 1
        if self.rank == 1 and type(self).calls == 8:
            X = np.array(X, copy=True)
            X[0, 0, :] = 1e200
        return super().loss_and_grad(X, *args, **kwargs)


class _RaiseAtBatch:
    def __init__(self, raise_here):
        self.raise_here = raise_here

    def on_batch_end(self, batch, logs):
        if self.raise_here and batch == 1:
            raise ValueError("simulated: a callback failed")


def faulty(job, comm, rank, args):
    """The failure runs of tests/mpi_worker.py (each must raise on every rank)."""
    X, y, lengths, validation = resume_data()
    if job == "fail":
        model = _FailingLSTM(3, 6, 4, seed=0)
        model.fail_on = rank == int(args[0])
        crnn.Trainer(model, batch_size=5, seed=0, comm=comm).fit(
            X, y, lengths, epochs=3, verbose=0)
    elif job == "raise-callback":
        model = crnn.LSTM(3, 6, 4, seed=0)
        crnn.Trainer(model, batch_size=5, seed=0, comm=comm).fit(
            X, y, lengths, epochs=2, verbose=0,
            callbacks=[_RaiseAtBatch(rank == int(args[0]))])
    elif job == "mismatch":
        model = crnn.LSTM(3, 6, 4, seed=0)
        crnn.Trainer(model, batch_size=5, seed=0, comm=comm).fit(
            X, y, lengths, epochs=3 if rank == int(args[0]) else 2, verbose=0)
    elif job == "nan":
        # rank 1's share holds a huge input at the 4th step of epoch 2: its
        # loss overflows to infinity
        X = np.random.default_rng(0).normal(size=(20, 6, 3))
        y = np.random.default_rng(1).normal(size=(20, 6, 2))
        model = _InfAt(3, 5, 2, output="linear", nonlinearity="relu",
                       dtype="float64", seed=0)
        model.rank = rank
        crnn.Trainer(model, "sgd", lr=0.1, batch_size=5, seed=0, comm=comm).fit(
            X, y, epochs=3, verbose=0)
    elif job == "bad-resume":
        model = crnn.LSTM(3, 6, 4, seed=0)
        crnn.Trainer(model, batch_size=5, seed=0, comm=comm).fit(
            X, y, lengths, epochs=2, verbose=0, resume_from=args[0])


class RecordingRows:
    """An array-like (len() and fancy indexing, no __array__) that records
    every row it was asked for: what the trainer reads lazily."""

    def __init__(self, array):
        self.array = array
        self.read = []

    def __len__(self):
        return len(self.array)

    def __getitem__(self, index):
        rows = np.asarray(index)
        assert rows.ndim == 1 and (np.diff(rows) > 0).all(), "rows must come sorted"
        self.read.extend(rows.tolist())
        return self.array[rows]


def memmap_tokens(comm, rank):
    """An LSTM on token ids held in np.memmap files (each rank its own copy
    of the same data, as on separate machines), ragged, bptt, validation."""
    import tempfile
    rng = np.random.default_rng(24)
    tokens = rng.integers(0, 6, size=(26, 12)).astype(np.uint8)
    targets = rng.integers(0, 6, size=(26, 12)).astype(np.uint16)
    lengths = rng.integers(2, 13, size=26)
    folder = tempfile.mkdtemp()
    X = np.memmap(f"{folder}/X.u8", dtype=np.uint8, mode="w+", shape=tokens.shape)
    X[:] = tokens
    y = np.memmap(f"{folder}/y.u16", dtype=np.uint16, mode="w+", shape=targets.shape)
    y[:] = targets
    model = crnn.LSTM(6, 8, 6, dtype="float64", seed=70 + rank)
    trainer = crnn.Trainer(model, "adam", lr=0.02, batch_size=7, seed=25, comm=comm)
    history = trainer.fit(X, y, lengths, epochs=3, bptt=5,
                          validation_data=(X[20:], y[20:], lengths[20:]), verbose=0)
    return trainer, history


def touched_rows(comm, rank):
    """Which rows each rank reads of an array-like data set."""
    rng = np.random.default_rng(26)
    X = RecordingRows(rng.normal(size=(40, 6, 3)))
    y = RecordingRows(rng.integers(0, 4, size=(40, 6)))
    model = crnn.RNN(3, 5, 4, dtype="float64", seed=0)
    trainer = crnn.Trainer(model, batch_size=10, seed=27, comm=comm)
    history = trainer.fit(X, y, rng.integers(1, 7, size=40), epochs=1, verbose=0)
    return trainer, history, X.read


CASES["memmap_tokens"] = memmap_tokens
