"""Inference on a Dask cluster (issue 18): crnn.dask on a real LocalCluster
of 2 worker processes, against the in-process results.  Skips without
dask[array,bag,distributed]."""
import os
import pickle

import numpy as np
import pytest

import crnn

da = pytest.importorskip("dask.array", reason='needs dask: pip install "crnn[dask]"')
db = pytest.importorskip("dask.bag", reason='needs dask: pip install "crnn[dask]"')
distributed = pytest.importorskip("distributed",
                                  reason='needs dask.distributed: pip install "crnn[dask]"')
import crnn.dask  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                       processes=True, dashboard_address=None,
                                       worker_class=distributed.Nanny,
                                       env={"OPENBLAS_NUM_THREADS": "1",
                                            "CRNN_NUM_THREADS": "1"})
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def ragged(n, steps, features, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, steps, features)).astype("float32")
    return X, rng.integers(1, steps + 1, size=n)


MODELS = {
    "lstm-softmax": lambda: crnn.LSTM(4, 12, 5, num_layers=2, seed=0),
    "gru-linear-many-to-one": lambda: crnn.GRU(4, 10, 3, output="linear",
                                               return_sequences=False, seed=1),
    "rnn-bidirectional": lambda: crnn.RNN(4, 9, 6, bidirectional=True, seed=2),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dask_arrays_give_the_in_process_results(client, name):
    model = MODELS[name]()
    X, lengths = ragged(53, 11, 4, 3)
    dX = da.from_array(X, chunks=(10, 11, 4))          # 6 chunks of sequences
    dlengths = da.from_array(lengths, chunks=7)        # other chunks: realigned
    methods = ["forward", "predict"] + (["predict_proba"] if model.output == "softmax" else [])
    for method in methods:
        expected = getattr(model, method)(X, lengths)
        lazy = getattr(crnn.dask, method)(model, dX, dlengths)
        assert lazy.shape == expected.shape and lazy.dtype == expected.dtype
        got = lazy.compute()
        # each chunk is the model's own call on those rows: equal to the
        # rounding of GEMMs of another row count
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)
        else:
            np.testing.assert_array_equal(got, expected)
    # the work ran on the 2 worker processes, not here
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    pids = set(client.run(os.getpid).values())
    assert os.getpid() not in pids and len(pids) == 2


def test_tokens_and_numpy_lengths(client):
    model = crnn.LSTM(7, 8, 7, seed=4)
    rng = np.random.default_rng(5)
    X = rng.integers(0, 7, size=(40, 9))
    lengths = rng.integers(1, 10, size=40)
    got = crnn.dask.predict(model, da.from_array(X, chunks=(9, 3)), lengths).compute()
    np.testing.assert_array_equal(got, model.predict(X, lengths))
    assert (got[np.arange(9) >= lengths[:, None]] == -1).all()


def test_a_bag_of_variable_length_sequences(client):
    model = crnn.LSTM(4, 12, 5, seed=6)
    X, lengths = ragged(31, 13, 4, 7)
    sequences = [X[i, :lengths[i]] for i in range(31)]
    bag = db.from_sequence(sequences, npartitions=4)
    got = crnn.dask.map_sequences(model, bag, "predict_proba").compute()
    expected = model.predict_proba(X, lengths)
    assert len(got) == 31
    for i, probabilities in enumerate(got):
        assert probabilities.shape == (lengths[i], 5)
        np.testing.assert_allclose(probabilities, expected[i, :lengths[i]],
                                   rtol=2e-5, atol=2e-6)


def test_the_model_travels_at_about_the_size_of_its_parameters():
    model = crnn.LSTM(64, 256, 64, num_layers=2, seed=0)
    parameters = sum(p.nbytes for p in model.params.values())
    pickled = len(pickle.dumps(model))
    assert parameters <= pickled <= parameters * 1.01 + 4096, (pickled, parameters)
    # and once per graph, not once per chunk
    X = da.zeros((64, 5, 64), chunks=(8, 5, 64), dtype="float32")
    graph = len(pickle.dumps(dict(crnn.dask.forward(model, X).__dask_graph__())))
    assert graph < 1.2 * pickled, (graph, pickled)


def test_bad_input_is_refused_before_any_work():
    model = crnn.LSTM(4, 6, 3, seed=0)
    with pytest.raises(TypeError, match="X must be a dask.array .* got ndarray"):
        crnn.dask.forward(model, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="X has 5 features, the model expects 4"):
        crnn.dask.forward(model, da.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"lengths must be \(N,\) = \(2,\), got shape \(3,\)"):
        crnn.dask.forward(model, da.zeros((2, 3, 4)), np.ones(3, dtype=int))
    with pytest.raises(ValueError, match="lengths must be between 1 and T = 3"):
        crnn.dask.forward(model, da.zeros((2, 3, 4)), np.array([1, 4]))
    with pytest.raises(ValueError, match="predict_proba is for softmax models"):
        crnn.dask.predict_proba(crnn.GRU(4, 5, 2, output="linear"), da.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="method must be one of"):
        crnn.dask.map_sequences(model, db.from_sequence([np.zeros((2, 4))]), "sample")
    with pytest.raises(TypeError, match="bag must be a dask.bag"):
        crnn.dask.map_sequences(model, [np.zeros((2, 4))])
