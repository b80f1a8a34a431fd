"""Data sets larger than memory (issue 18): the Trainer reads np.memmap
files and other array-likes (len() and fancy indexing) batch by batch,
touching only the rows of its batches — under MPI only its own share."""
import os
import sys

import numpy as np
import pytest

import crnn
import distributed_cases
from distributed_cases import RecordingRows


def test_memmap_trains_exactly_like_the_same_arrays_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, size=(26, 12))
    targets = rng.integers(0, 6, size=(26, 12))
    lengths = rng.integers(2, 13, size=26)
    X = np.memmap(tmp_path / "X", dtype=np.uint8, mode="w+", shape=tokens.shape)
    X[:] = tokens
    y = np.memmap(tmp_path / "y", dtype=np.uint16, mode="w+", shape=targets.shape)
    y[:] = targets
    runs = []
    for data in ((tokens, targets), (X, y)):
        model = crnn.LSTM(6, 8, 6, dtype="float64", seed=1)
        trainer = crnn.Trainer(model, batch_size=7, seed=2)
        history = trainer.fit(*data, lengths, epochs=3, bptt=5, verbose=0,
                              validation_data=(data[0][20:], data[1][20:], lengths[20:]))
        runs.append((model.params, history.history))
    for name, value in runs[0][0].items():
        np.testing.assert_array_equal(runs[1][0][name], value, err_msg=name)
    assert runs[1][1]["val_loss"] == runs[0][1]["val_loss"]
    assert runs[1][1]["loss"] == runs[0][1]["loss"]


def test_an_array_like_is_read_batch_by_batch():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(40, 6, 3))
    labels = rng.integers(0, 4, size=40)
    X, y = RecordingRows(features), RecordingRows(labels)
    model = crnn.GRU(3, 5, 4, return_sequences=False, dtype="float64", seed=0)
    history = crnn.Trainer(model, batch_size=8, seed=1).fit(X, y, epochs=2, verbose=0)
    # the first rows once for the up-front checks, then each row once per epoch
    assert len(X.read) == 8 + 2 * 40 and sorted(X.read[8:]) == sorted(2 * list(range(40)))
    reference = crnn.GRU(3, 5, 4, return_sequences=False, dtype="float64", seed=0)
    expected = crnn.Trainer(reference, batch_size=8, seed=1).fit(
        features, labels, epochs=2, verbose=0)
    assert history.history["loss"] == expected.history["loss"]
    for name, value in reference.params.items():
        np.testing.assert_array_equal(model.params[name], value)


def test_bad_array_likes_are_refused_up_front():
    model = crnn.RNN(3, 4, 2, dtype="float64", seed=0)
    trainer = crnn.Trainer(model)
    X = RecordingRows(np.zeros((5, 4, 3)))
    with pytest.raises(ValueError, match="y holds 4 targets, X 5 sequences"):
        trainer.fit(X, RecordingRows(np.zeros((4, 4), dtype=int)), verbose=0)
    with pytest.raises(ValueError, match=r"lengths must be between 1 and T = 4, got "
                                         r"values from 1 to 9"):
        trainer.fit(X, RecordingRows(np.zeros((5, 4), dtype=int)),
                    np.array([1, 2, 3, 4, 9]), verbose=0)
    with pytest.raises(ValueError, match="X has 2 features, the model expects 3"):
        trainer.fit(RecordingRows(np.zeros((5, 4, 2))),
                    RecordingRows(np.zeros((5, 4), dtype=int)), verbose=0)
    with pytest.raises(TypeError, match="y must be an array-like with len"):
        trainer.fit(X, 3, verbose=0)


def test_under_mpi_each_rank_reads_only_its_share(tmp_path):
    pytest.importorskip("mpi4py", reason='needs mpi4py: pip install "crnn[mpi]"')
    from test_distributed import launch
    launch(2, tmp_path, "touched")
    reads = [np.load(tmp_path / f"touched.rank{r}.npz")["rows"] for r in range(2)]
    sample = set(range(8))                 # the up-front checks, on every rank
    shares = [set(r[8:].tolist()) for r in reads]
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(range(40))
    assert all(len(r) == 8 + len(s) for r, s in zip(reads, shares))
    assert all(10 <= len(s) <= 30 for s in shares)
